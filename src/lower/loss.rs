//! Losses and metrics with Keras's formulas (keras.losses / keras.metrics), reduced as
//! Keras's "sum over batch size": per-example values summed and divided by their count.

use crate::args::Args;
use crate::dim::{Dim, product};
use crate::ir::{Cmp, Func, Id, Op, ReduceOp, Result, Type, Unary, err};

/// Keras's `epsilon()`, used to clip probabilities.
pub const EPSILON: f64 = 1e-7;

/// Mean over every element of `x` (symbolic sizes divide at run time).
pub fn mean_all(f: &mut Func, x: Id) -> Result<Id> {
    let shape = f.ty(x).shape.clone();
    let n = product(&shape).map_err(|_| crate::ir::IrError("overflow".into()))?;
    let axes: Vec<usize> = (0..shape.len()).collect();
    let s = f.reduce(ReduceOp::Sum, x, axes)?;
    let c = f.dim_size(&n);
    f.div(s, c)
}

/// Mean over the last axis.
fn mean_last(f: &mut Func, x: Id) -> Result<Id> {
    let shape = f.ty(x).shape.clone();
    let last = shape.len() - 1;
    let s = f.reduce(ReduceOp::Sum, x, vec![last])?;
    let c = f.dim_size(&shape[last]);
    f.div(s, c)
}

fn sum_last(f: &mut Func, x: Id) -> Result<Id> {
    let last = f.ty(x).rank() - 1;
    f.reduce(ReduceOp::Sum, x, vec![last])
}

/// Brings a target to the output's shape (Keras squeezes or expands a trailing 1), or
/// for sparse labels to the output's shape without its class axis.
pub fn align(f: &mut Func, target: Id, pred: Id, sparse: bool) -> Result<Id> {
    let p = f.ty(pred).shape.clone();
    let want: Vec<Dim> = if sparse { p[..p.len() - 1].to_vec() } else { p };
    let t = f.push(Op::Cast(crate::spec::DType::F32), &[target])?;
    f.reshape(t, want)
}

fn clip(f: &mut Func, p: Id, lo: f64, hi: f64) -> Result<Id> {
    let l = f.scalar(lo);
    let h = f.scalar(hi);
    let a = f.max(p, l)?;
    f.min(a, h)
}

/// One-hot encoding of integer labels along a new last axis matching `like`.
pub fn one_hot(f: &mut Func, labels: Id, like: Id) -> Result<Id> {
    let shape = f.ty(like).shape.clone();
    let r = shape.len();
    let iota = f.push_typed(Op::Iota { axis: r - 1 }, &[], Type::f32(shape.clone()));
    let dims: Vec<usize> = (0..r - 1).collect();
    let lb = f.broadcast(labels, &shape, &dims)?;
    f.cmp(Cmp::Eq, iota, lb)
}

/// Categorical cross-entropy of (one-hot or smoothed) `t` against `pred` per example.
fn cce(f: &mut Func, t: Id, pred: Id, from_logits: bool) -> Result<Id> {
    let last = f.ty(pred).rank() - 1;
    let logp = if from_logits {
        super::activation::log_softmax(f, pred, last)?
    } else {
        let s = f.reduce_keep(ReduceOp::Sum, pred, &[last])?;
        let shape = f.ty(pred).shape.clone();
        let dims: Vec<usize> = (0..shape.len()).collect();
        let sb = f.broadcast(s, &shape, &dims)?;
        let p = f.div(pred, sb)?;
        let p = clip(f, p, EPSILON, 1.0 - EPSILON)?;
        f.unary(Unary::Log, p)?
    };
    let tl = f.mul(t, logp)?;
    let s = sum_last(f, tl)?;
    f.unary(Unary::Neg, s)
}

fn smooth(f: &mut Func, t: Id, s: f64, classes: &Dim) -> Result<Id> {
    if s == 0.0 {
        return Ok(t);
    }
    let a = f.mul_c(t, 1.0 - s)?;
    let c = f.dim_size(classes);
    let sc = f.scalar(s);
    let add = f.div(sc, c)?;
    f.add(a, add)
}

/// The loss as a scalar: Keras's per-example formula, then the mean.
pub fn loss(f: &mut Func, name: &str, args: &Args, pred: Id, target: Id) -> Result<Id> {
    let from_logits = args.bool("from_logits");
    let per_example = match name {
        "mean_squared_error" | "mean_absolute_error" | "huber" => {
            let t = align(f, target, pred, false)?;
            let e = f.sub(pred, t)?;
            let v = match name {
                "mean_squared_error" => f.mul(e, e)?,
                "mean_absolute_error" => f.unary(Unary::Abs, e)?,
                _ => {
                    let d = args.float("delta");
                    let a = f.unary(Unary::Abs, e)?;
                    let e2 = f.mul(e, e)?;
                    let quad = f.mul_c(e2, 0.5)?;
                    let lin0 = f.mul_c(a, d)?;
                    let lin = f.add_c(lin0, -0.5 * d * d)?;
                    let dd = f.scalar(d);
                    let small = f.cmp(Cmp::Le, a, dd)?;
                    f.select(small, quad, lin)?
                }
            };
            mean_last(f, v)?
        }
        "binary_crossentropy" => {
            let t = align(f, target, pred, false)?;
            let s = args.float("label_smoothing");
            let t = if s > 0.0 {
                let a = f.mul_c(t, 1.0 - s)?;
                f.add_c(a, 0.5 * s)?
            } else {
                t
            };
            let v = if from_logits {
                // max(x, 0) - x t + log1p(exp(-|x|))
                let zero = f.scalar(0.0);
                let pos = f.max(pred, zero)?;
                let xt = f.mul(pred, t)?;
                let a = f.unary(Unary::Abs, pred)?;
                let na = f.unary(Unary::Neg, a)?;
                let e = f.unary(Unary::Exp, na)?;
                let l = f.unary(Unary::Log1p, e)?;
                let d = f.sub(pos, xt)?;
                f.add(d, l)?
            } else {
                let p = clip(f, pred, EPSILON, 1.0 - EPSILON)?;
                let lp = f.unary(Unary::Log, p)?;
                let q = f.rsub_c(1.0, p)?;
                let lq = f.unary(Unary::Log, q)?;
                let a = f.mul(t, lp)?;
                let omt = f.rsub_c(1.0, t)?;
                let b = f.mul(omt, lq)?;
                let s = f.add(a, b)?;
                f.unary(Unary::Neg, s)?
            };
            mean_last(f, v)?
        }
        "categorical_crossentropy" => {
            let t = align(f, target, pred, false)?;
            let classes = f.ty(pred).last().clone();
            let t = smooth(f, t, args.float("label_smoothing"), &classes)?;
            cce(f, t, pred, from_logits)?
        }
        "sparse_categorical_crossentropy" => {
            let labels = align(f, target, pred, true)?;
            let t = one_hot(f, labels, pred)?;
            cce(f, t, pred, from_logits)?
        }
        other => return err(format!("unknown loss {other}")),
    };
    mean_all(f, per_example)
}

/// The index of the first maximum along the last axis.
fn argmax(f: &mut Func, x: Id) -> Result<Id> {
    let shape = f.ty(x).shape.clone();
    let r = shape.len();
    let m = f.reduce_keep(ReduceOp::Max, x, &[r - 1])?;
    let dims: Vec<usize> = (0..r).collect();
    let mb = f.broadcast(m, &shape, &dims)?;
    let is_max = f.cmp(Cmp::Eq, x, mb)?;
    let iota = f.push_typed(Op::Iota { axis: r - 1 }, &[], Type::f32(shape.clone()));
    let neg = f.unary(Unary::Neg, iota)?;
    let low = f.scalar(-1e9);
    let cand = f.select(is_max, neg, low)?;
    let best = f.reduce(ReduceOp::Max, cand, vec![r - 1])?;
    f.unary(Unary::Neg, best)
}

/// A metric as a scalar (the mean over examples).
pub fn metric(f: &mut Func, name: &str, pred: Id, target: Id) -> Result<Id> {
    let v = match name {
        "sparse_categorical_accuracy" => {
            let labels = align(f, target, pred, true)?;
            let am = argmax(f, pred)?;
            f.cmp(Cmp::Eq, am, labels)?
        }
        "categorical_accuracy" => {
            let t = align(f, target, pred, false)?;
            let a = argmax(f, pred)?;
            let b = argmax(f, t)?;
            f.cmp(Cmp::Eq, a, b)?
        }
        "binary_accuracy" => {
            let t = align(f, target, pred, false)?;
            let half = f.scalar(0.5);
            let p = f.cmp(Cmp::Gt, pred, half)?;
            f.cmp(Cmp::Eq, p, t)?
        }
        "mae" | "mse" => {
            let t = align(f, target, pred, false)?;
            let e = f.sub(pred, t)?;
            if name == "mae" {
                f.unary(Unary::Abs, e)?
            } else {
                f.mul(e, e)?
            }
        }
        other => return err(format!("unknown metric {other}")),
    };
    mean_all(f, v)
}
