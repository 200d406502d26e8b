//! Core layers: dense, embedding, dropout, the activation layers, identity and
//! repeat_vector.

use super::lower::{Call, LowerCx, dropout};
use super::{Arity, Ctx, Inferred, LayerKind, TensorType};
use super::{Facts, Mask, NO_FACTS, PASSES_MASK};
use crate::args::Value;
use crate::args::{ArgKind, ArgSpec, Default, FRACTION, NON_NEGATIVE_FLOAT, arg, float_range, int};
use crate::catalog::activations as activation;
use crate::catalog::{initializers, regularizers};
use crate::ir::{Id, Op, Result};
use crate::types::DType;

const KERNEL_INIT: ArgSpec = arg(
    "kernel_initializer",
    initializers::INITIALIZER,
    Default::Str("glorot_uniform"),
);
const BIAS_INIT: ArgSpec = arg(
    "bias_initializer",
    initializers::INITIALIZER,
    Default::Str("zeros"),
);

pub const DENSE: LayerKind = LayerKind {
    name: "dense",
    class: "Dense",
    args: &[
        arg("units", int(1), Default::Required),
        arg("activation", activation::ACTIVATION, Default::Str("linear")),
        arg("use_bias", ArgKind::Bool, Default::Bool(true)),
        KERNEL_INIT,
        BIAS_INIT,
        regularizers::KERNEL,
        regularizers::BIAS,
        regularizers::ACTIVITY,
    ],
    arity: Arity::One,
    infer: dense,
    lower: lower_dense,
    facts: PASSES_MASK,
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
            initializers::INITIALIZER,
            Default::Str("random_uniform"),
        ),
        arg(
            "embeddings_regularizer",
            regularizers::REGULARIZER,
            Default::Null,
        ),
        regularizers::ACTIVITY,
        arg("mask_zero", ArgKind::Bool, Default::Bool(false)),
    ],
    arity: Arity::One,
    infer: embedding,
    lower: lower_embedding,
    facts: Facts {
        looks_up: Some("input_dim"),
        mask: Mask::Produces(Some("mask_zero")),
        ..NO_FACTS
    },
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
    lower: lower_dropout,
    facts: PASSES_MASK,
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
    args: &[arg("activation", activation::ACTIVATION, Default::Required)],
    arity: Arity::One,
    infer: identity,
    lower: lower_activation,
    facts: PASSES_MASK,
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
    lower: lower_relu,
    facts: PASSES_MASK,
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
    lower: lower_leaky_relu,
    facts: PASSES_MASK,
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
    lower: lower_elu,
    facts: PASSES_MASK,
};

pub const SIGMOID: LayerKind = LayerKind {
    name: "sigmoid",
    class: "Activation",
    args: &[],
    arity: Arity::One,
    infer: identity,
    lower: lower_named_activation,
    facts: PASSES_MASK,
};

pub const TANH: LayerKind = LayerKind {
    name: "tanh",
    class: "Activation",
    args: &[],
    arity: Arity::One,
    infer: identity,
    lower: lower_named_activation,
    facts: PASSES_MASK,
};

pub const SOFTMAX: LayerKind = LayerKind {
    name: "softmax",
    class: "Softmax",
    args: &[arg("axis", int(-64), Default::Int(-1))],
    arity: Arity::One,
    infer: softmax,
    lower: lower_softmax,
    facts: PASSES_MASK,
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
    lower: lower_gelu,
    facts: PASSES_MASK,
};

pub const SILU: LayerKind = LayerKind {
    name: "silu",
    class: "Activation",
    args: &[],
    arity: Arity::One,
    infer: identity,
    lower: lower_named_activation,
    facts: PASSES_MASK,
};

/// Dense contracts the last axis; leading axes are flattened into one.
fn lower_dense(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let shape = lw.f.ty(x[0]).shape.clone();
    let r = shape.len();
    let lead = crate::dim::product(&shape[..r - 1]).map_err(super::lower::overflow)?;
    let x2 = lw.f.reshape(x[0], vec![lead, shape[r - 1].clone()])?;
    let k = l.param(lw, "kernel")?;
    let mut y = lw.f.matmul(x2, k, false, false)?;
    if l.args.bool("use_bias") {
        let b = l.param(lw, "bias")?;
        y = lw.f.add(y, b)?;
    }
    let mut out = shape[..r - 1].to_vec();
    out.push(lw.f.ty(y).last().clone());
    let y = lw.f.reshape(y, out)?;
    activation::apply(&mut lw.f, l.args.str("activation"), y)
}

fn lower_embedding(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let table = l.param(lw, "embeddings")?;
    let idx = lw.f.push(Op::Cast(DType::I32), &[x[0]])?;
    if l.args.bool("mask_zero") {
        // Keras's mask_zero: index 0 is padding, a masked step.
        let xf = lw.f.push(Op::Cast(DType::F32), &[x[0]])?;
        let zero = lw.f.scalar(0.0);
        lw.mask_out = Some(lw.f.cmp(crate::ir::Cmp::Ne, xf, zero)?);
    }
    lw.f.push(Op::Gather, &[table, idx])
}

fn lower_dropout(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    dropout(lw, x[0], l.args.float("rate"))
}

fn lower_activation(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    activation::apply(&mut lw.f, l.args.str("activation"), x[0])
}

fn lower_relu(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let a = l.args;
    let max = match a.get("max_value") {
        Value::Float(v) => Some(*v),
        Value::Int(v) => Some(*v as f64),
        _ => None,
    };
    let (slope, threshold) = (a.float("negative_slope"), a.float("threshold"));
    activation::relu_layer(&mut lw.f, x[0], max, slope, threshold)
}

fn lower_leaky_relu(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    activation::leaky(&mut lw.f, x[0], l.args.float("negative_slope"))
}

fn lower_elu(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    activation::elu(&mut lw.f, x[0], l.args.float("alpha"))
}

/// Activation layers whose name is also the name of their activation function.
fn lower_named_activation(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    activation::apply(&mut lw.f, l.kind.name, x[0])
}

fn lower_gelu(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    activation::gelu(&mut lw.f, x[0], l.args.bool("approximate"))
}

fn lower_softmax(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let rank = lw.f.ty(x[0]).rank();
    let axis = super::lower::norm_axis(l.args.int("axis"), rank);
    activation::softmax(&mut lw.f, x[0], axis)
}

pub const IDENTITY: LayerKind = LayerKind {
    name: "identity",
    class: "Identity",
    args: &[],
    arity: Arity::One,
    infer: pass_through,
    lower: lower_identity,
    facts: PASSES_MASK,
};

/// Keras's `Identity` passes any tensor through, integer ones included.
fn pass_through(cx: &mut Ctx) -> Option<Inferred> {
    Some(Inferred {
        output: cx.input().clone(),
        params: Vec::new(),
    })
}

fn lower_identity(_: &mut LowerCx, _: &Call, x: &[Id]) -> Result<Id> {
    Ok(x[0])
}

pub const REPEAT_VECTOR: LayerKind = LayerKind {
    name: "repeat_vector",
    class: "RepeatVector",
    args: &[arg("n", int(1), Default::Required)],
    arity: Arity::One,
    infer: repeat_vector,
    lower: lower_repeat_vector,
    facts: NO_FACTS,
};

/// [batch, features] → [batch, n, features].
fn repeat_vector(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    cx.expect_rank(&[2], "[batch, features]")?;
    let mut shape = cx.input().shape.clone();
    shape.insert(1, cx.args.int("n").into());
    Some(Inferred {
        output: TensorType::f32(shape),
        params: Vec::new(),
    })
}

fn lower_repeat_vector(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    lw.f.broadcast(x[0], &l.output.shape, &[0, 2])
}
