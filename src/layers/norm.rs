//! Normalization: batch_normalization and layer_normalization (Keras's defaults:
//! axis -1, epsilon 1e-3, momentum 0.99).

use super::{Arity, Ctx, Inferred, LayerKind, Param};
use crate::args::{ArgKind, Default, FRACTION, POSITIVE_FLOAT, arg, int};

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
            ArgKind::Initializer,
            Default::Str("zeros"),
        ),
        arg(
            "gamma_initializer",
            ArgKind::Initializer,
            Default::Str("ones"),
        ),
        arg(
            "moving_mean_initializer",
            ArgKind::Initializer,
            Default::Str("zeros"),
        ),
        arg(
            "moving_variance_initializer",
            ArgKind::Initializer,
            Default::Str("ones"),
        ),
    ],
    arity: Arity::One,
    infer: batch_norm,
};

fn batch_norm(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
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
            ArgKind::Initializer,
            Default::Str("zeros"),
        ),
        arg(
            "gamma_initializer",
            ArgKind::Initializer,
            Default::Str("ones"),
        ),
    ],
    arity: Arity::One,
    infer: layer_norm,
};

fn layer_norm(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    let rank = cx.input().rank();
    let axes = cx.args.ints("axis").to_vec();
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
    // the axes are listed.
    let mut shape = Vec::new();
    for &a in &resolved {
        shape.push(cx.known(&cx.input().shape[a].clone(), "size on the normalized axes")?);
    }
    let mut params = Vec::new();
    if cx.args.bool("scale") {
        params.push(cx.param("gamma", shape.clone(), "gamma_initializer"));
    }
    if cx.args.bool("center") {
        params.push(cx.param("beta", shape, "beta_initializer"));
    }
    Some(Inferred {
        output: cx.input().clone(),
        params,
    })
}
