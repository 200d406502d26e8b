//! Normalization: batch_normalization and layer_normalization (Keras's defaults:
//! axis -1, epsilon 1e-3, momentum 0.99).

use super::PASSES_MASK;
use super::lower::{Call, LowerCx, Mode, mean, norm_axis};
use super::masking::{input_mask, masked_moments};
use super::{Arity, Ctx, Inferred, LayerKind, Param};
use crate::args::{ArgKind, ArgSpec, Default, FRACTION, POSITIVE_FLOAT, arg, int};
use crate::catalog::{initializers, regularizers};
use crate::ir::{Id, Result, Unary};

const BETA_REG: ArgSpec = arg("beta_regularizer", regularizers::REGULARIZER, Default::Null);
const GAMMA_REG: ArgSpec = arg(
    "gamma_regularizer",
    regularizers::REGULARIZER,
    Default::Null,
);

pub const BATCH_NORMALIZATION: LayerKind = LayerKind {
    name: "batch_normalization",
    class: "BatchNormalization",
    args: &[
        arg("axis", int(-64), Default::Int(-1)),
        arg("momentum", FRACTION, Default::Float(0.99)),
        arg("epsilon", POSITIVE_FLOAT, Default::Float(1e-3)),
        arg("center", ArgKind::Bool, Default::Bool(true)),
        arg("scale", ArgKind::Bool, Default::Bool(true)),
        arg(
            "beta_initializer",
            initializers::INITIALIZER,
            Default::Str("zeros"),
        ),
        arg(
            "gamma_initializer",
            initializers::INITIALIZER,
            Default::Str("ones"),
        ),
        arg(
            "moving_mean_initializer",
            initializers::INITIALIZER,
            Default::Str("zeros"),
        ),
        arg(
            "moving_variance_initializer",
            initializers::INITIALIZER,
            Default::Str("ones"),
        ),
        BETA_REG,
        GAMMA_REG,
    ],
    arity: Arity::One,
    infer: batch_norm,
    lower: lower_batch_norm,
    facts: PASSES_MASK,
};

fn batch_norm(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    cx.expect_step_mask()?;
    let rank = cx.input().rank();
    let axis = cx.axis("axis", cx.args.int("axis"), rank)?;
    let c = cx.known(
        &cx.input().shape[axis].clone(),
        "size on the normalized axis",
    )?;
    let mut params = Vec::new();
    if cx.args.bool("scale") {
        params.push(cx.param("gamma", vec![c], "gamma_initializer"));
    }
    if cx.args.bool("center") {
        params.push(cx.param("beta", vec![c], "beta_initializer"));
    }
    for (name, init) in [
        ("moving_mean", "moving_mean_initializer"),
        ("moving_variance", "moving_variance_initializer"),
    ] {
        params.push(Param {
            trainable: false,
            ..cx.param(name, vec![c], init)
        });
    }
    Some(Inferred {
        output: cx.input().clone(),
        params,
    })
}

pub const LAYER_NORMALIZATION: LayerKind = LayerKind {
    name: "layer_normalization",
    class: "LayerNormalization",
    args: &[
        arg("axis", ArgKind::Axes, Default::Ints(&[-1])),
        arg("epsilon", POSITIVE_FLOAT, Default::Float(1e-3)),
        arg("center", ArgKind::Bool, Default::Bool(true)),
        arg("scale", ArgKind::Bool, Default::Bool(true)),
        arg(
            "beta_initializer",
            initializers::INITIALIZER,
            Default::Str("zeros"),
        ),
        arg(
            "gamma_initializer",
            initializers::INITIALIZER,
            Default::Str("ones"),
        ),
        BETA_REG,
        GAMMA_REG,
        // Keras 3 still takes it (deprecated, through `**kwargs`): x / sqrt(var + eps)
        // times gamma, without centering, and no beta.
        arg("rms_scaling", ArgKind::Bool, Default::Bool(false)),
    ],
    arity: Arity::One,
    infer: layer_norm,
    lower: lower_layer_norm,
    facts: PASSES_MASK,
};

fn layer_norm(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    let rank = cx.input().rank();
    let axes = keras_sorted_axes(cx.args);
    let mut resolved: Vec<usize> = Vec::new();
    for a in axes {
        let r = cx.axis("axis", a, rank)?;
        if resolved.contains(&r) {
            return cx.arg_error(
                "axis",
                "E0508",
                format!("axis {a} is listed twice"),
                "list each axis once",
            );
        }
        resolved.push(r);
    }
    // Keras: the weight shape is the input's sizes on the normalized axes, in the order
    // of the sorted `axis` values.
    let mut shape = Vec::new();
    for &a in &resolved {
        shape.push(cx.known(&cx.input().shape[a].clone(), "size on the normalized axes")?);
    }
    let rms = cx.args.bool("rms_scaling");
    let mut params = Vec::new();
    if cx.args.bool("scale") || rms {
        params.push(cx.param("gamma", shape.clone(), "gamma_initializer"));
    }
    if cx.args.bool("center") && !rms {
        params.push(cx.param("beta", shape, "beta_initializer"));
    }
    Some(Inferred {
        output: cx.input().clone(),
        params,
    })
}

/// Batch normalization: batch mean and biased variance in training (and the moving
/// averages updated as Keras does); the moving statistics at inference.
fn lower_batch_norm(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let x = x[0];
    let shape = lw.f.ty(x).shape.clone();
    let rank = shape.len();
    let axis = norm_axis(l.args.int("axis"), rank);
    let reduce: Vec<usize> = (0..rank).filter(|&i| i != axis).collect();
    let eps = l.args.float("epsilon");
    let momentum = l.args.float("momentum");
    let mm = l.param(lw, "moving_mean")?;
    let mv = l.param(lw, "moving_variance")?;
    let (m, v) = if lw.mode == Mode::Train {
        let (m, v) = match input_mask(lw) {
            // Keras: the batch statistics of the valid steps only.
            Some(mask) => masked_moments(lw, x, mask, axis)?,
            None => {
                let m = mean(lw, x, &reduce)?;
                let mb = lw.f.broadcast(m, &shape, &[axis])?;
                let d = lw.f.sub(x, mb)?;
                let d2 = lw.f.mul(d, d)?;
                (m, mean(lw, d2, &reduce)?)
            }
        };
        for (key, stat, batch) in [("moving_mean", mm, m), ("moving_variance", mv, v)] {
            let old = lw.f.mul_c(stat, momentum)?;
            let new = lw.f.mul_c(batch, 1.0 - momentum)?;
            let upd = lw.f.add(old, new)?;
            lw.updates.push((format!("{}/{key}", l.name), upd));
        }
        (m, v)
    } else {
        (mm, mv)
    };
    let ve = lw.f.add_c(v, eps)?;
    let inv = lw.f.unary(Unary::Rsqrt, ve)?;
    let mut scale = inv;
    if l.args.bool("scale") {
        let g = l.param(lw, "gamma")?;
        scale = lw.f.mul(scale, g)?;
    }
    let mb = lw.f.broadcast(m, &shape, &[axis])?;
    let sb = lw.f.broadcast(scale, &shape, &[axis])?;
    let d = lw.f.sub(x, mb)?;
    let mut y = lw.f.mul(d, sb)?;
    if l.args.bool("center") {
        let b = l.param(lw, "beta")?;
        let bb = lw.f.broadcast(b, &shape, &[axis])?;
        y = lw.f.add(y, bb)?;
    }
    Ok(y)
}

/// Keras's `axis` as it builds with it: the values as written, sorted (so `[-1, -2]`
/// is `[-2, -1]`, and `[1, -1]` is `[-1, 1]`: negative values sort first).
fn keras_sorted_axes(args: &crate::args::Args) -> Vec<i64> {
    let mut axes = args.ints("axis").to_vec();
    axes.sort_unstable();
    axes
}

/// Layer normalization over `axis` (biased variance), gamma/beta on those axes; with
/// `rms_scaling`, Keras's x / sqrt(var + eps) · gamma.
fn lower_layer_norm(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let x = x[0];
    let shape = lw.f.ty(x).shape.clone();
    let rank = shape.len();
    let axes: Vec<usize> = keras_sorted_axes(l.args)
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect();
    let mut sorted = axes.clone();
    sorted.sort();
    let kept: Vec<usize> = (0..rank).filter(|i| !sorted.contains(i)).collect();
    let eps = l.args.float("epsilon");
    let rms = l.args.bool("rms_scaling");
    let m = mean(lw, x, &sorted)?;
    let mb = lw.f.broadcast(m, &shape, &kept)?;
    let d = lw.f.sub(x, mb)?;
    let d2 = lw.f.mul(d, d)?;
    let v = mean(lw, d2, &sorted)?;
    let ve = lw.f.add_c(v, eps)?;
    let inv = lw.f.unary(Unary::Rsqrt, ve)?;
    let ib = lw.f.broadcast(inv, &shape, &kept)?;
    let mut y = lw.f.mul(if rms { x } else { d }, ib)?;
    // Keras reshapes the weights (sizes in the sorted `axis` order) onto the input's
    // axes in the input's order: a reshape, not a transpose, as Keras does it.
    let place = |lw: &mut LowerCx, w: Id| -> Result<Id> {
        let onto: Vec<_> = sorted.iter().map(|&a| shape[a].clone()).collect();
        let wt = if lw.f.ty(w).shape == onto {
            w
        } else {
            lw.f.reshape(w, onto)?
        };
        lw.f.broadcast(wt, &shape, &sorted)
    };
    if l.args.bool("scale") || rms {
        let g = l.param(lw, "gamma")?;
        let gb = place(lw, g)?;
        y = lw.f.mul(y, gb)?;
    }
    if l.args.bool("center") && !rms {
        let b = l.param(lw, "beta")?;
        let bb = place(lw, b)?;
        y = lw.f.add(y, bb)?;
    }
    Ok(y)
}
