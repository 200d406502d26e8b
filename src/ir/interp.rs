//! The reference interpreter: evaluates a [`Func`] on ndarray values, in f32 or f64.
//! It is the oracle the compiled code is tested against, and a backend of its own.
//! Integer tensors (labels, token ids) are held exactly in the float type.

use std::collections::HashMap;

use ndarray::ArrayD;

use super::real::Real;
use super::{Func, Op, Result, err};
use crate::dim::Dim;

/// Symbol bindings (`batch` → 32).
pub type Env = HashMap<String, i64>;

/// Binds the symbols of the inputs' declared shapes to the given arrays' sizes,
/// checking constant sizes and the consistency of repeated symbols.
pub fn bind(f: &Func, shapes: &[&[usize]]) -> Result<Env> {
    if shapes.len() != f.inputs.len() {
        return err(format!(
            "{} expects {} inputs, got {}",
            f.name,
            f.inputs.len(),
            shapes.len()
        ));
    }
    let mut env = Env::new();
    // Plain symbols first, then compound dims are checked once everything is bound.
    for pass in 0..2 {
        for (inp, shape) in f.inputs.iter().zip(shapes) {
            if inp.ty.shape.len() != shape.len() {
                return err(format!(
                    "input `{}` should have rank {}, got {:?}",
                    inp.name,
                    inp.ty.rank(),
                    shape
                ));
            }
            for (d, &n) in inp.ty.shape.iter().zip(shape.iter()) {
                let n = n as i64;
                match (d.as_sym(), pass) {
                    (Some(s), 0) => match env.get(s) {
                        Some(&v) if v != n => {
                            return err(format!(
                                "input `{}`: `{s}` is {v} elsewhere but {n} here",
                                inp.name
                            ));
                        }
                        _ => {
                            env.insert(s.to_string(), n);
                        }
                    },
                    (None, 1) => match d.eval(&env) {
                        Some(v) if v == n => {}
                        Some(v) => {
                            return err(format!(
                                "input `{}`: expected size {d} = {v}, got {n}",
                                inp.name
                            ));
                        }
                        None => return err(format!("input `{}`: cannot evaluate {d}", inp.name)),
                    },
                    _ => {}
                }
            }
        }
    }
    Ok(env)
}

fn concrete(shape: &[Dim], env: &Env) -> Result<Vec<usize>> {
    shape
        .iter()
        .map(|d| match d.eval(env) {
            Some(v) if v >= 0 => Ok(v as usize),
            Some(v) => err(format!("size {d} evaluates to {v}")),
            None => err(format!("size {d} has an unbound symbol")),
        })
        .collect()
}

/// Evaluates `f` on `inputs` and returns its outputs in order.
///
/// Memory is asked for before each node runs ([`reserve`] of its [`working_bytes`]), so
/// a size the system cannot give is an error, never an abort; each value is dropped
/// after its last use.
pub fn eval<T: Real>(f: &Func, inputs: &[ArrayD<T>]) -> Result<Vec<ArrayD<T>>> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|a| a.shape()).collect();
    let env = bind(f, &shapes)?;
    let live = super::passes::live(f);
    let mut last_use: Vec<usize> = (0..f.nodes.len()).collect();
    for (i, n) in f.nodes.iter().enumerate() {
        for &a in &n.args {
            last_use[a] = last_use[a].max(i);
        }
    }
    for (_, o) in &f.outputs {
        last_use[*o] = usize::MAX;
    }
    let mut vals: Vec<Option<ArrayD<T>>> = vec![None; f.nodes.len()];
    let dimv = |d: &Dim| -> Result<i64> {
        d.eval(&env)
            .ok_or_else(|| super::IrError(format!("unbound {d}")))
    };
    for (i, n) in f.nodes.iter().enumerate() {
        if !live[i] {
            continue;
        }
        let shape = concrete(&n.ty.shape, &env)?;
        let args: Vec<&ArrayD<T>> = n
            .args
            .iter()
            .map(|&a| {
                vals[a]
                    .as_ref()
                    .ok_or_else(|| super::IrError(format!("%{a} used before it is computed")))
            })
            .collect::<Result<_>>()?;
        let arg_shapes: Vec<&[usize]> = args.iter().map(|a| a.shape()).collect();
        let bytes = working_bytes(n, &shape, &arg_shapes, std::mem::size_of::<T>());
        reserve(bytes, &format!("%{i} ({})", super::op_name(&n.op)))?;
        let v = match &n.op {
            Op::Input(k) => inputs[*k].clone(),
            _ => eval_node(n, &shape, &args, &dimv)?,
        };
        if v.shape() != shape.as_slice() {
            return err(format!(
                "%{i} = {:?} produced shape {:?}, its type says {:?}",
                n.op,
                v.shape(),
                shape
            ));
        }
        vals[i] = Some(v);
        for &a in &n.args {
            if last_use[a] == i {
                vals[a] = None;
            }
        }
    }
    // Each output moved out, copied only when it is named again further on.
    (0..f.outputs.len())
        .map(|k| {
            let (name, id) = &f.outputs[k];
            let again = f.outputs[k + 1..].iter().any(|(_, o)| o == id);
            let v = if again {
                vals[*id].clone()
            } else {
                vals[*id].take()
            };
            v.ok_or_else(|| super::IrError(format!("output {name} not computed")))
        })
        .collect()
}

/// Allocations below this are not asked for ahead.
const SMALL: u128 = 1 << 20;

/// Asks the system for `bytes` and gives them back: a size it refuses (or past what an
/// allocation may be) is an error naming `what`, where allocating it for real would
/// abort the process.
pub fn reserve(bytes: u128, what: &str) -> Result<()> {
    if bytes < SMALL {
        return Ok(());
    }
    let refused = || {
        super::IrError(format!(
            "cannot allocate {bytes} bytes for {what}: out of memory (lower the batch size or the model's sizes)"
        ))
    };
    let n = usize::try_from(bytes)
        .ok()
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(refused)?;
    Vec::<u8>::new().try_reserve_exact(n).map_err(|_| refused())
}

/// The memory evaluating node `n` allocates, in bytes of `elem`-byte values, at its
/// output shape and its arguments' shapes: the output, a copy of each argument (the
/// reference code and the runtime routines copy their operands), and the largest
/// scratch of the primitive (a convolution's im2col patches and their index, a
/// recurrent cell's saved gates per step). An estimate of the same order as what is
/// allocated, never below the output itself.
pub fn working_bytes(n: &super::Node, shape: &[usize], args: &[&[usize]], elem: usize) -> u128 {
    let count = |s: &[usize]| s.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128));
    let out = count(shape);
    let operands = args.iter().fold(0u128, |a, s| a.saturating_add(count(s)));
    // A convolution's patches: rows (output positions) × taps × input channels per
    // group, and one index per row and tap.
    let conv = |ks: &[usize], ys: &[usize]| {
        let n = ks.len().saturating_sub(2);
        let rows = count(&ys[..ys.len().saturating_sub(1)]);
        let taps = count(&ks[..n]);
        let cg = ks.get(n).copied().unwrap_or(1) as u128;
        rows.saturating_mul(taps)
            .saturating_mul(cg)
            .saturating_add(rows.saturating_mul(taps).saturating_mul(2))
    };
    let scratch = match (&n.op, args) {
        (Op::Conv(_), [_, k]) => conv(k, shape),
        (Op::ConvInputGrad(_), [dy, k]) => conv(k, dy),
        (Op::ConvKernelGrad(_), [_, dy]) => conv(shape, dy),
        // The steps' outputs before they are stacked; back-propagation through time
        // keeps each step's gates (four per unit at most) and states.
        (Op::Rnn(_), _) => out,
        (Op::RnnGrad { .. }, _) => args
            .iter()
            .map(|s| count(s))
            .max()
            .unwrap_or(0)
            .saturating_mul(6),
        _ => 0,
    };
    out.saturating_mul(2)
        .saturating_add(operands)
        .saturating_add(scratch)
        .saturating_mul(elem as u128)
}

/// Evaluates one non-input node on its arguments (shared with the JIT's runtime
/// routines, so both backends run the same reference code for complex primitives).
pub fn eval_node<T: Real>(
    n: &super::Node,
    shape: &[usize],
    args: &[&ArrayD<T>],
    dimv: &dyn Fn(&Dim) -> Result<i64>,
) -> Result<ArrayD<T>> {
    Ok(match &n.op {
        Op::Input(_) => return err("inputs are not evaluated"),
        Op::Const(_)
        | Op::DimSize(_)
        | Op::Iota { .. }
        | Op::Rng { .. }
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Cmp(_)
        | Op::Select
        | Op::Cast(_) => {
            let d = match &n.op {
                Op::DimSize(d) => Some(d.clone()),
                _ => None,
            };
            super::elementwise::eval(&n.op, shape, args, || match &d {
                Some(d) => dimv(d),
                None => Ok(0),
            })?
        }
        Op::Broadcast { .. }
        | Op::Reshape
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Concat { .. } => super::structural::eval(&n.op, shape, args, dimv)?,
        Op::Reduce { .. } => super::reduce::eval(&n.op, args)?,
        Op::MatMul { .. } => super::matmul::eval(&n.op, shape, args)?,
        Op::Conv(_)
        | Op::ConvInputGrad(_)
        | Op::ConvKernelGrad(_)
        | Op::Pool { .. }
        | Op::PoolGrad { .. } => super::window::eval(&n.op, shape, args)?,
        Op::Gather | Op::ScatterAdd => super::gather::eval(&n.op, shape, args)?,
        Op::Rnn(_) | Op::RnnGrad { .. } => super::rnn::eval(&n.op, shape, args)?,
    })
}
