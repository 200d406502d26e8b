//! The kernel as the plan's runtime call for `Rnn` and `RnnGrad` nodes, with two
//! per-thread caches for one call of the compiled function:
//! - a training step's forward pass keeps its trace for the layer's gradient (which
//!   then does not run the forward pass again). A forward pass keeps it only once a
//!   gradient of that node has been seen on this thread (so inference keeps nothing),
//!   and only up to [`TRACE_BYTES`];
//! - the four `RnnGrad` nodes of a layer (input, kernel, recurrent kernel, bias) share
//!   their operands: the first runs back-propagation through time once for all four,
//!   the others copy theirs without even gathering the operands again.

use std::cell::RefCell;
use std::collections::HashSet;

use ndarray::ArrayViewD;

use super::super::frame::{CALL_ID, FrameLayout, access_parts, operand};
use super::super::plan::CallKernel;
use super::super::scratch::Buf;
use super::fwd::Trace;
use crate::ir::{Id, Node, Op, RnnAttrs, interp};

/// The most trace memory kept between a forward pass and its gradient.
const TRACE_BYTES: usize = 1 << 28;

/// A recurrent node by its operands and attributes.
type Key = (Vec<Id>, RnnAttrs);

#[derive(Default)]
struct Cache {
    /// The call the entries belong to.
    call: u64,
    /// Traces by the `Rnn` node's operands and attributes.
    traces: Vec<(Key, Trace)>,
    /// The four gradients of the last layer back-propagated, by the `RnnGrad` nodes'
    /// operands.
    grads: Option<(Vec<Id>, Vec<Buf>)>,
    /// `Rnn` nodes (by operands and attributes) whose gradient has run on this thread.
    wanted: HashSet<Key>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    let call = CALL_ID.with(|c| c.get());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.call != call {
            c.call = call;
            c.traces.clear();
            c.grads = None;
        }
        f(&mut c)
    })
}

/// Runs `node` if it is a recurrent layer or its gradient (returns false otherwise):
/// gathers the operands, runs the kernel and writes the output buffer.
pub(in crate::jit) fn call(
    frame: &[i64],
    fl: FrameLayout,
    node: &Node,
    call: &CallKernel,
) -> Result<bool, String> {
    let (attrs, wrt) = match &node.op {
        Op::Rnn(a) => (a, None),
        Op::RnnGrad { attrs, wrt } => (attrs, Some(*wrt)),
        _ => return Ok(false),
    };
    let size = |s: &[crate::jit::plan::Slot]| -> Vec<usize> {
        s.iter().map(|&x| frame[x] as usize).collect()
    };
    let out_shape = size(&call.out_shape);
    let n: usize = out_shape.iter().product();
    // SAFETY: the output buffer holds the output's element count.
    let out = unsafe { std::slice::from_raw_parts_mut(frame[fl.sizes + call.out] as *mut f32, n) };
    if let Some(w) = wrt {
        let hit = with_cache(|c| match &c.grads {
            Some((ids, g)) if *ids == node.args => g.get(w).map(|g| copy(g, out)),
            _ => None,
        });
        if let Some(r) = hit {
            return r.map(|()| true);
        }
    }
    let arg_shapes: Vec<Vec<usize>> = call.arg_shapes.iter().map(|s| size(s)).collect();
    let shapes: Vec<&[usize]> = arg_shapes.iter().map(Vec::as_slice).collect();
    let bytes = interp::working_bytes(node, &out_shape, &shapes, 4);
    let what = format!("the runtime routine of {}", crate::ir::op_name(&node.op));
    interp::reserve(bytes, &what).map_err(|e| e.0)?;
    let mut args = Vec::new();
    for (a, shape) in call.args.iter().zip(&arg_shapes) {
        let (p, o, s) = access_parts(frame, fl, a);
        // SAFETY: the access lies within its buffer (plan invariant), and operand buffers
        // are not written while a call runs.
        args.push(unsafe { operand(p, o, &s, shape) }.map_err(|e| e.0)?);
    }
    let refs: Vec<ArrayViewD<f32>> = args.iter().map(|a| a.view()).collect();
    let Some(w) = wrt else {
        let key = (node.args.clone(), attrs.clone());
        let keep = with_cache(|c| c.wanted.contains(&key));
        if let Some(tr) = super::forward(attrs, &refs, out, keep)? {
            let kept: usize = with_cache(|c| c.traces.iter().map(|(_, t)| t.bytes()).sum());
            if kept + tr.bytes() <= TRACE_BYTES {
                with_cache(|c| c.traces.push((key, tr)));
            }
        }
        return Ok(true);
    };
    let ids = &node.args[..node.args.len().saturating_sub(1)];
    let key = (ids.to_vec(), attrs.clone());
    let trace = with_cache(|c| {
        let i = c.traces.iter().position(|(k, _)| *k == key);
        c.wanted.insert(key);
        let i = i?;
        Some(c.traces.swap_remove(i).1)
    });
    let all = super::grads(attrs, &refs, trace)?;
    let g = all.get(w).ok_or("recurrent gradient index")?;
    copy(g, out)?;
    with_cache(|c| c.grads = Some((node.args.clone(), all)));
    Ok(true)
}

fn copy(g: &[f32], out: &mut [f32]) -> Result<(), String> {
    if g.len() == out.len() {
        out.copy_from_slice(g);
        Ok(())
    } else {
        Err("recurrent gradient of the wrong size".into())
    }
}
