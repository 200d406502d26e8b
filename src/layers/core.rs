//! Core layers: dense, embedding, dropout and the activation layers.

use super::{Arity, Ctx, Inferred, LayerKind, TensorType};
use crate::args::{ArgKind, ArgSpec, Default, FRACTION, NON_NEGATIVE_FLOAT, arg, float_range, int};

const KERNEL_INIT: ArgSpec = arg(
    "kernel_initializer",
    ArgKind::Initializer,
    Default::Str("glorot_uniform"),
);
const BIAS_INIT: ArgSpec = arg(
    "bias_initializer",
    ArgKind::Initializer,
    Default::Str("zeros"),
);

pub const DENSE: LayerKind = LayerKind {
    name: "dense",
    class: "Dense",
    args: &[
        arg("units", int(1), Default::Required),
        arg("activation", ArgKind::Activation, Default::Str("linear")),
        arg("use_bias", ArgKind::Bool, Default::Bool(true)),
        KERNEL_INIT,
        BIAS_INIT,
    ],
    arity: Arity::One,
    infer: dense,
};

/// Dense contracts the last axis, on any rank ≥ 2 (as Keras).
fn dense(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    let rank = cx.input().rank();
    if rank < 2 {
        return cx.shape_error(
            "E0501",
            format!(
                "`dense` expects an input of rank 2 or more, but `{}` is {} (rank {rank})",
                cx.inputs[0].name,
                cx.input().describe()
            ),
            "declare the input with a batch axis, e.g. [batch, 4]",
        );
    }
    let fan_in = cx.known(
        &cx.input().last().clone(),
        "last axis (the number of input features)",
    )?;
    let units = cx.args.int("units");
    let mut shape = cx.input().shape.clone();
    *shape.last_mut()? = units.into();
    let mut params = vec![cx.param("kernel", vec![fan_in, units], "kernel_initializer")];
    if cx.args.bool("use_bias") {
        params.push(cx.param("bias", vec![units], "bias_initializer"));
    }
    Some(Inferred {
        output: TensorType::f32(shape),
        params,
    })
}

pub const EMBEDDING: LayerKind = LayerKind {
    name: "embedding",
    class: "Embedding",
    args: &[
        arg("input_dim", int(1), Default::Required),
        arg("output_dim", int(1), Default::Required),
        arg(
            "embeddings_initializer",
            ArgKind::Initializer,
            Default::Str("random_uniform"),
        ),
    ],
    arity: Arity::One,
    infer: embedding,
};

fn embedding(cx: &mut Ctx) -> Option<Inferred> {
    if !cx.input().dtype.is_int() {
        let name = cx.inputs[0].name.to_string();
        let ty = cx.input().describe();
        return cx.shape_error(
            "E0502",
            format!("`embedding` looks up integer indices, but `{name}` is {ty}"),
            "declare the input with an integer dtype, e.g. `tokens: {shape: [batch, seq], dtype: i32}`",
        );
    }
    let mut shape = cx.input().shape.clone();
    let (n, d) = (cx.args.int("input_dim"), cx.args.int("output_dim"));
    shape.push(d.into());
    let params = vec![cx.param("embeddings", vec![n, d], "embeddings_initializer")];
    Some(Inferred {
        output: TensorType::f32(shape),
        params,
    })
}

pub const DROPOUT: LayerKind = LayerKind {
    name: "dropout",
    class: "Dropout",
    args: &[
        arg("rate", FRACTION, Default::Required),
        arg("seed", int(0), Default::Null),
    ],
    arity: Arity::One,
    infer: identity,
};

/// Layers that keep their input's shape and have no weights.
pub fn identity(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    Some(Inferred {
        output: cx.input().clone(),
        params: Vec::new(),
    })
}

pub const ACTIVATION: LayerKind = LayerKind {
    name: "activation",
    class: "Activation",
    args: &[arg("activation", ArgKind::Activation, Default::Required)],
    arity: Arity::One,
    infer: identity,
};

pub const RELU: LayerKind = LayerKind {
    name: "relu",
    class: "ReLU",
    args: &[
        arg("max_value", NON_NEGATIVE_FLOAT, Default::Null),
        arg("negative_slope", NON_NEGATIVE_FLOAT, Default::Float(0.0)),
        arg(
            "threshold",
            float_range(f64::MIN, f64::MAX),
            Default::Float(0.0),
        ),
    ],
    arity: Arity::One,
    infer: identity,
};

pub const LEAKY_RELU: LayerKind = LayerKind {
    name: "leaky_relu",
    class: "LeakyReLU",
    // The LeakyReLU layer class defaults to 0.3 (the activation function to 0.2).
    args: &[arg(
        "negative_slope",
        NON_NEGATIVE_FLOAT,
        Default::Float(0.3),
    )],
    arity: Arity::One,
    infer: identity,
};

pub const ELU: LayerKind = LayerKind {
    name: "elu",
    class: "ELU",
    args: &[arg(
        "alpha",
        float_range(f64::MIN, f64::MAX),
        Default::Float(1.0),
    )],
    arity: Arity::One,
    infer: identity,
};

pub const SIGMOID: LayerKind = LayerKind {
    name: "sigmoid",
    class: "Activation",
    args: &[],
    arity: Arity::One,
    infer: identity,
};

pub const TANH: LayerKind = LayerKind {
    name: "tanh",
    class: "Activation",
    args: &[],
    arity: Arity::One,
    infer: identity,
};

pub const SOFTMAX: LayerKind = LayerKind {
    name: "softmax",
    class: "Softmax",
    args: &[arg("axis", int(-64), Default::Int(-1))],
    arity: Arity::One,
    infer: softmax,
};

fn softmax(cx: &mut Ctx) -> Option<Inferred> {
    let rank = cx.input().rank();
    cx.axis("axis", cx.args.int("axis"), rank)?;
    identity(cx)
}

pub const GELU: LayerKind = LayerKind {
    name: "gelu",
    class: "Activation",
    args: &[arg("approximate", ArgKind::Bool, Default::Bool(false))],
    arity: Arity::One,
    infer: identity,
};

pub const SILU: LayerKind = LayerKind {
    name: "silu",
    class: "Activation",
    args: &[],
    arity: Arity::One,
    infer: identity,
};
