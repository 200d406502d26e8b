//! Runtime routines: gather, its scatter-add, max pooling's gradient and random numbers
//! run in place on the call's buffers, split across the team; recurrent layers call the
//! tuned kernel of `rnn/`; any other primitive the plan leaves as a call (windows with
//! unknown sizes, …) runs its reference implementation on the call's buffers.

use ndarray::ArrayD;

use super::frame::{Desc, DescKind, FrameLayout, access_parts, gather, set_error};
use super::plan::{self, Access};
use super::team;
use crate::ir::{Op, PoolKind, WindowAttrs, interp};

/// An operand straight from its buffer when contiguous (its address), else a
/// contiguous copy (kept alive by the second value).
fn contiguous(
    frame: &[i64],
    fl: FrameLayout,
    a: &Access,
    shape: &[usize],
) -> Result<(usize, Option<ArrayD<f32>>), String> {
    let (p, o, strides) = access_parts(frame, fl, a);
    let mut expect = 1i64;
    let dense = (0..shape.len()).rev().all(|d| {
        let ok = shape[d] == 1 || strides[d] == expect;
        expect *= shape[d] as i64;
        ok
    });
    if dense {
        // SAFETY: a contiguous access from its offset (plan invariant).
        Ok((unsafe { p.offset(o as isize) } as usize, None))
    } else {
        // SAFETY: the access lies within its buffer (plan invariant).
        let copy = unsafe { gather(p, o, &strides, shape) }.map_err(|e| e.0)?;
        Ok((copy.as_ptr() as usize, Some(copy)))
    }
}

/// Below this many elements moved, a gather or scatter-add runs on one core.
const PARALLEL_ELEMENTS: usize = 1 << 14;

/// The table rows `m` indices (f32 values, as every buffer holds them) name, checked
/// as the reference checks them.
fn rows(idx: usize, m: usize, n: usize) -> Result<Vec<usize>, String> {
    // SAFETY: the index operand holds `m` contiguous values.
    let idx = unsafe { std::slice::from_raw_parts(idx as *const f32, m) };
    idx.iter()
        .map(|&v| {
            let i = f64::from(v);
            if i < 0.0 || i >= n as f64 || i.fract() != 0.0 {
                Err(format!("index {i} is out of range for a table of {n} rows"))
            } else {
                Ok(i as usize)
            }
        })
        .collect()
}

/// Gather (an embedding lookup) on the call's buffers: table rows copied into the
/// output, the indices split across the team.
fn gather_rows(frame: &[i64], fl: FrameLayout, call: &plan::CallKernel) -> Result<(), String> {
    let shape = |s: &[plan::Slot]| -> Vec<usize> { s.iter().map(|&x| frame[x] as usize).collect() };
    let (ts, is) = (shape(&call.arg_shapes[0]), shape(&call.arg_shapes[1]));
    let (n, d) = (ts[0], ts[1]);
    let m: usize = is.iter().product();
    let (pt, _t_copy) = contiguous(frame, fl, &call.args[0], &ts)?;
    let (pi, _i_copy) = contiguous(frame, fl, &call.args[1], &is)?;
    let rows = rows(pi, m, n)?;
    let out = frame[fl.sizes + call.out] as usize;
    let t = team::team();
    let parts = if m * d < PARALLEL_ELEMENTS {
        1
    } else {
        t.size().min(m).max(1)
    };
    let ok = t.run(parts, &|p| {
        let (lo, hi) = team::split(m as i64, parts, p, 1);
        for (k, &r) in rows.iter().enumerate().take(hi as usize).skip(lo as usize) {
            // SAFETY: row `r` < n of the [n, d] table; output row `k` < m of the [m, d]
            // output, written by this part only.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (pt as *const f32).add(r * d),
                    (out as *mut f32).add(k * d),
                    d,
                );
            }
        }
    });
    if ok {
        Ok(())
    } else {
        Err("a panic inside gather".into())
    }
}

/// Scatter-add (gather's gradient) on the call's buffers: the output zeroed and each
/// update row added to its table row in the order of the indices, as the reference
/// adds them (the same bits); the columns split across the team, so no two parts
/// write one element.
fn scatter_add_rows(frame: &[i64], fl: FrameLayout, call: &plan::CallKernel) -> Result<(), String> {
    let shape = |s: &[plan::Slot]| -> Vec<usize> { s.iter().map(|&x| frame[x] as usize).collect() };
    let (is, us, os) = (
        shape(&call.arg_shapes[0]),
        shape(&call.arg_shapes[1]),
        shape(&call.out_shape),
    );
    let (n, d) = (os[0], os[1]);
    let m: usize = is.iter().product();
    let (pi, _i_copy) = contiguous(frame, fl, &call.args[0], &is)?;
    let (pu, _u_copy) = contiguous(frame, fl, &call.args[1], &us)?;
    let rows = rows(pi, m, n)?;
    let out = frame[fl.sizes + call.out] as usize;
    let t = team::team();
    // Parts of at least 8 columns.
    let parts = if m * d < PARALLEL_ELEMENTS {
        1
    } else {
        t.size().min(d / 8).max(1)
    };
    let ok = t.run(parts, &|p| {
        let (lo, hi) = team::split(d as i64, parts, p, 1);
        let (lo, hi) = (lo as usize, hi as usize);
        if lo == hi {
            return;
        }
        // SAFETY: this part writes only columns lo..hi of the [n, d] output and reads
        // the [m, d] updates.
        unsafe {
            for r in 0..n {
                std::ptr::write_bytes((out as *mut f32).add(r * d + lo), 0, hi - lo);
            }
            for (k, &r) in rows.iter().enumerate() {
                let dst =
                    std::slice::from_raw_parts_mut((out as *mut f32).add(r * d + lo), hi - lo);
                let src = std::slice::from_raw_parts((pu as *const f32).add(k * d + lo), hi - lo);
                for (o, u) in dst.iter_mut().zip(src) {
                    *o += *u;
                }
            }
        }
    });
    if ok {
        Ok(())
    } else {
        Err("a panic inside scatter-add".into())
    }
}

/// Max pooling's gradient on the call's buffers in place (no copies), split across
/// the team by batch entry. Returns false (the generic path runs instead) for a
/// rank-0 input.
fn max_pool_grad(
    frame: &[i64],
    fl: FrameLayout,
    call: &plan::CallKernel,
    attrs: &WindowAttrs,
) -> Result<bool, String> {
    let shape = |s: &[plan::Slot]| -> Vec<usize> { s.iter().map(|&x| frame[x] as usize).collect() };
    let (xs, ys) = (shape(&call.arg_shapes[0]), shape(&call.arg_shapes[1]));
    if xs.is_empty() {
        return Ok(false);
    }
    // Each operand straight from its buffer when contiguous, else a contiguous copy
    // (dy is often a view into a padded gradient buffer).
    let (px, _x_copy) = contiguous(frame, fl, &call.args[0], &xs)?;
    let (pdy, _dy_copy) = contiguous(frame, fl, &call.args[1], &ys)?;
    let pdx = frame[fl.sizes + call.out] as usize;
    let batch = xs[0];
    let (xper, yper) = (
        xs[1..].iter().product::<usize>(),
        ys[1..].iter().product::<usize>(),
    );
    let t = team::team();
    let parts = t.size().min(batch).max(1);
    let ok = t.run(parts, &|p| {
        let (lo, hi) = team::split(batch as i64, parts, p, 1);
        let (lo, hi) = (lo as usize, hi as usize);
        if lo == hi {
            return;
        }
        let (mut xs, mut ys) = (xs.clone(), ys.clone());
        xs[0] = hi - lo;
        ys[0] = hi - lo;
        // SAFETY: each part reads and writes only its own batch entries of buffers
        // holding `batch` entries.
        let (x, dy, dx) = unsafe {
            (
                std::slice::from_raw_parts((px as *const f32).add(lo * xper), (hi - lo) * xper),
                std::slice::from_raw_parts((pdy as *const f32).add(lo * yper), (hi - lo) * yper),
                std::slice::from_raw_parts_mut((pdx as *mut f32).add(lo * xper), (hi - lo) * xper),
            )
        };
        crate::ir::window::max_pool_grad(&xs, &ys, attrs, x, dy, dx);
    });
    if ok {
        Ok(true)
    } else {
        Err("a panic inside max pooling's gradient".into())
    }
}

/// Random numbers (`rng_uniform`, dropout's masks) on the call's buffer in place:
/// element `i` is `rng_uniform(key, salt, i)` as the reference computes it (the same
/// bits on any thread count), the elements split across the team.
fn rng_fill(
    frame: &[i64],
    fl: FrameLayout,
    call: &plan::CallKernel,
    salt: u64,
) -> Result<(), String> {
    let shape = |s: &[plan::Slot]| -> Vec<usize> { s.iter().map(|&x| frame[x] as usize).collect() };
    let key_elems: usize = shape(&call.arg_shapes[0]).iter().product();
    let key = if key_elems == 0 {
        0
    } else {
        let (p, o, _) = access_parts(frame, fl, &call.args[0]);
        // SAFETY: the key operand holds at least one element at its offset.
        f64::from(unsafe { *p.offset(o as isize) }) as u64
    };
    let n: usize = shape(&call.out_shape).iter().product();
    let out = frame[fl.sizes + call.out] as usize;
    let t = team::team();
    let parts = if n < PARALLEL_ELEMENTS {
        1
    } else {
        t.size().min(n).max(1)
    };
    let ok = t.run(parts, &|p| {
        let (lo, hi) = team::split(n as i64, parts, p, 1);
        for i in lo as usize..hi as usize {
            let v = crate::ir::elementwise::rng_uniform(key, salt, i as u64) as f32;
            // SAFETY: element `i` < n of the output, written by this part only.
            unsafe { *(out as *mut f32).add(i) = v };
        }
    });
    if ok {
        Ok(())
    } else {
        Err("a panic inside rng_uniform".into())
    }
}

/// Whether a call to `op` runs as a tuned routine split across the thread team (what
/// `kiln_call` dispatches before the reference fallback), as `kiln ir --stage
/// kernels` names it.
pub(crate) fn on_team(op: &Op) -> bool {
    matches!(
        op,
        Op::Gather
            | Op::ScatterAdd
            | Op::Rng { .. }
            | Op::Rnn(_)
            | Op::RnnGrad { .. }
            | Op::PoolGrad {
                kind: PoolKind::Max,
                ..
            }
    )
}

/// Runs a complex primitive (conv, pooling, recurrent cell, gather, …) with the
/// reference implementation on the call's buffers.
pub(super) extern "C" fn kiln_call(frame: *mut i64, desc: *const Desc) {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: `desc` points at a descriptor owned by the running kernel.
        let d = unsafe { &*desc };
        let DescKind::Call { node, call } = &d.kind else {
            return Err("bad call descriptor".to_string());
        };
        let fl = d.fl;
        // SAFETY: the frame has `fl.len()` slots, written by `run` for this call.
        let frame = unsafe { std::slice::from_raw_parts(frame, fl.len()) };
        if let Op::PoolGrad {
            kind: PoolKind::Max,
            attrs,
        } = &node.op
            && max_pool_grad(frame, fl, call, attrs)?
        {
            return Ok(());
        }
        match node.op {
            Op::Gather => return gather_rows(frame, fl, call),
            Op::ScatterAdd => return scatter_add_rows(frame, fl, call),
            Op::Rng { salt } => return rng_fill(frame, fl, call, salt),
            _ => {}
        }
        if super::rnn::call(frame, fl, node, call)? {
            return Ok(());
        }
        // SAFETY: slot `env_slot` holds a pointer to the Env that `run` keeps alive.
        let env = unsafe { &*(frame[fl.env_slot()] as *const interp::Env) };
        // The routine's copies of its operands and its own memory, asked for first:
        // memory the system refuses is the call's error, not an abort.
        let arg_shapes: Vec<Vec<usize>> = call
            .arg_shapes
            .iter()
            .map(|s| s.iter().map(|&x| frame[x] as usize).collect())
            .collect();
        let out_shape: Vec<usize> = call.out_shape.iter().map(|&x| frame[x] as usize).collect();
        let shapes: Vec<&[usize]> = arg_shapes.iter().map(Vec::as_slice).collect();
        let bytes = interp::working_bytes(node, &out_shape, &shapes, 4);
        let what = format!("the runtime routine of {}", crate::ir::op_name(&node.op));
        interp::reserve(bytes, &what).map_err(|e| e.0)?;
        let mut args = Vec::new();
        for (a, shape) in call.args.iter().zip(&call.arg_shapes) {
            let (p, o, s) = access_parts(frame, fl, a);
            let shape: Vec<usize> = shape.iter().map(|&x| frame[x] as usize).collect();
            // SAFETY: the access lies within its buffer (plan invariant).
            args.push(unsafe { gather(p, o, &s, &shape) }.map_err(|e| e.0)?);
        }
        let arg_refs: Vec<&ArrayD<f32>> = args.iter().collect();
        let shape: Vec<usize> = call.out_shape.iter().map(|&x| frame[x] as usize).collect();
        let dimv = |d: &crate::dim::Dim| {
            d.eval(env)
                .ok_or_else(|| crate::ir::IrError(format!("unbound {d}")))
        };
        let out = interp::eval_node::<f32>(node, &shape, &arg_refs, &dimv).map_err(|e| e.0)?;
        let dst = frame[fl.sizes + call.out] as *mut f32;
        let out = out.as_standard_layout();
        let values = out
            .as_slice()
            .ok_or("a routine returned a non-contiguous array")?;
        // SAFETY: the output buffer holds the output's element count.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), dst, values.len()) };
        Ok(())
    });
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => set_error(e),
        Err(_) => set_error("a panic inside a runtime routine".into()),
    }
}
