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
pub fn eval<T: Real>(f: &Func, inputs: &[ArrayD<T>]) -> Result<Vec<ArrayD<T>>> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|a| a.shape()).collect();
    let env = bind(f, &shapes)?;
    let live = super::passes::live(f);
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
    }
    f.outputs
        .iter()
        .map(|(name, id)| {
            vals[*id]
                .clone()
                .ok_or_else(|| super::IrError(format!("output {name} not computed")))
        })
        .collect()
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
