//! Pooling: max and average pooling 1d/2d/3d and global pooling (channels_last, or
//! channels_first through `layout`). The
//! window arithmetic is the convolutions' (`conv::spatial_out`).

use super::conv::{spatial_input, spatial_out, tuple};
use super::layout::{self, DATA_FORMAT};
use super::lower::{Call, LowerCx, mean};
use super::masking::{input_mask, masked_mean_steps};
use super::{Arity, Ctx, Inferred, LayerKind, TensorType};
use super::{Facts, Mask, NO_FACTS};
use crate::args::Value;
use crate::args::{ArgKind, ArgSpec, Default, arg};
use crate::dim::Dim;
use crate::ir::{Id, Op, Padding, PoolKind, ReduceOp, Result, WindowAttrs};

/// Keras's pooling arguments; `pool_size` defaults to 2 for max pooling and has no
/// default for average pooling (`default`: `Default::Required`).
const fn pool_args(n: usize, default: Default) -> [ArgSpec; 4] {
    [
        arg("pool_size", ArgKind::IntTuple { n, min: 1 }, default),
        arg("strides", ArgKind::IntTuple { n, min: 1 }, Default::Null),
        arg(
            "padding",
            ArgKind::Choice(&["valid", "same"]),
            Default::Str("valid"),
        ),
        DATA_FORMAT,
    ]
}
const POOL1D_ARGS: [ArgSpec; 4] = pool_args(1, Default::Int(2));
const POOL2D_ARGS: [ArgSpec; 4] = pool_args(2, Default::Int(2));
const POOL3D_ARGS: [ArgSpec; 4] = pool_args(3, Default::Int(2));
const AVG1D_ARGS: [ArgSpec; 4] = pool_args(1, Default::Required);
const AVG2D_ARGS: [ArgSpec; 4] = pool_args(2, Default::Required);
const AVG3D_ARGS: [ArgSpec; 4] = pool_args(3, Default::Required);

pub const MAX_POOLING1D: LayerKind = LayerKind {
    name: "max_pooling1d",
    class: "MaxPooling1D",
    args: &POOL1D_ARGS,
    arity: Arity::One,
    infer: pool,
    lower: lower_pool,
    facts: Facts {
        spatial: Some(1),
        pool: Some(PoolKind::Max),
        ..NO_FACTS
    },
};
pub const MAX_POOLING2D: LayerKind = LayerKind {
    name: "max_pooling2d",
    class: "MaxPooling2D",
    args: &POOL2D_ARGS,
    arity: Arity::One,
    infer: pool,
    lower: lower_pool,
    facts: Facts {
        spatial: Some(2),
        pool: Some(PoolKind::Max),
        ..NO_FACTS
    },
};
pub const MAX_POOLING3D: LayerKind = LayerKind {
    name: "max_pooling3d",
    class: "MaxPooling3D",
    args: &POOL3D_ARGS,
    arity: Arity::One,
    infer: pool,
    lower: lower_pool,
    facts: Facts {
        spatial: Some(3),
        pool: Some(PoolKind::Max),
        ..NO_FACTS
    },
};
pub const AVERAGE_POOLING1D: LayerKind = LayerKind {
    name: "average_pooling1d",
    class: "AveragePooling1D",
    args: &AVG1D_ARGS,
    arity: Arity::One,
    infer: pool,
    lower: lower_pool,
    facts: Facts {
        spatial: Some(1),
        pool: Some(PoolKind::Avg),
        ..NO_FACTS
    },
};
pub const AVERAGE_POOLING2D: LayerKind = LayerKind {
    name: "average_pooling2d",
    class: "AveragePooling2D",
    args: &AVG2D_ARGS,
    arity: Arity::One,
    infer: pool,
    lower: lower_pool,
    facts: Facts {
        spatial: Some(2),
        pool: Some(PoolKind::Avg),
        ..NO_FACTS
    },
};

pub const AVERAGE_POOLING3D: LayerKind = LayerKind {
    name: "average_pooling3d",
    class: "AveragePooling3D",
    args: &AVG3D_ARGS,
    arity: Arity::One,
    infer: pool,
    lower: lower_pool,
    facts: Facts {
        spatial: Some(3),
        pool: Some(PoolKind::Avg),
        ..NO_FACTS
    },
};

fn pool(cx: &mut Ctx) -> Option<Inferred> {
    layout::infer(cx, pool_last)
}

fn pool_last(cx: &mut Ctx) -> Option<Inferred> {
    let n = spatial_input(cx)?;
    let k = tuple(cx, "pool_size", "pool_size", n);
    // Keras: strides default to pool_size.
    let s = tuple(cx, "strides", "pool_size", n);
    let padding = cx.args.str("padding").to_string();
    let mut shape = vec![cx.input().shape[0].clone()];
    shape.extend(spatial_out(cx, n, &k, &s, &vec![1; n], &padding, "pool")?);
    shape.push(cx.input().last().clone());
    Some(Inferred {
        output: TensorType::f32(shape),
        params: Vec::new(),
    })
}

const GLOBAL_ARGS: &[ArgSpec] = &[
    DATA_FORMAT,
    arg("keepdims", ArgKind::Bool, Default::Bool(false)),
];

pub const GLOBAL_AVERAGE_POOLING1D: LayerKind = LayerKind {
    name: "global_average_pooling1d",
    class: "GlobalAveragePooling1D",
    args: GLOBAL_ARGS,
    arity: Arity::One,
    infer: global_pool,
    lower: lower_global_pool,
    facts: Facts {
        spatial: Some(1),
        pool: Some(PoolKind::Avg),
        mask: Mask::Consumes,
        ..NO_FACTS
    },
};
pub const GLOBAL_AVERAGE_POOLING2D: LayerKind = LayerKind {
    name: "global_average_pooling2d",
    class: "GlobalAveragePooling2D",
    args: GLOBAL_ARGS,
    arity: Arity::One,
    infer: global_pool,
    lower: lower_global_pool,
    facts: Facts {
        spatial: Some(2),
        pool: Some(PoolKind::Avg),
        ..NO_FACTS
    },
};
pub const GLOBAL_MAX_POOLING1D: LayerKind = LayerKind {
    name: "global_max_pooling1d",
    class: "GlobalMaxPooling1D",
    args: GLOBAL_ARGS,
    arity: Arity::One,
    infer: global_pool,
    lower: lower_global_pool,
    facts: Facts {
        spatial: Some(1),
        pool: Some(PoolKind::Max),
        ..NO_FACTS
    },
};
pub const GLOBAL_MAX_POOLING2D: LayerKind = LayerKind {
    name: "global_max_pooling2d",
    class: "GlobalMaxPooling2D",
    args: GLOBAL_ARGS,
    arity: Arity::One,
    infer: global_pool,
    lower: lower_global_pool,
    facts: Facts {
        spatial: Some(2),
        pool: Some(PoolKind::Max),
        ..NO_FACTS
    },
};

pub const GLOBAL_AVERAGE_POOLING3D: LayerKind = LayerKind {
    name: "global_average_pooling3d",
    class: "GlobalAveragePooling3D",
    args: GLOBAL_ARGS,
    arity: Arity::One,
    infer: global_pool,
    lower: lower_global_pool,
    facts: Facts {
        spatial: Some(3),
        pool: Some(PoolKind::Avg),
        ..NO_FACTS
    },
};
pub const GLOBAL_MAX_POOLING3D: LayerKind = LayerKind {
    name: "global_max_pooling3d",
    class: "GlobalMaxPooling3D",
    args: GLOBAL_ARGS,
    arity: Arity::One,
    infer: global_pool,
    lower: lower_global_pool,
    facts: Facts {
        spatial: Some(3),
        pool: Some(PoolKind::Max),
        ..NO_FACTS
    },
};

fn global_pool(cx: &mut Ctx) -> Option<Inferred> {
    layout::infer(cx, global_pool_last)
}

fn global_pool_last(cx: &mut Ctx) -> Option<Inferred> {
    let n = spatial_input(cx)?;
    let inp = cx.input();
    let mut shape = vec![inp.shape[0].clone()];
    if cx.args.bool("keepdims") {
        shape.extend(std::iter::repeat_n(Dim::konst(1), n));
    }
    shape.push(inp.last().clone());
    Some(Inferred {
        output: TensorType::f32(shape),
        params: Vec::new(),
    })
}

fn pool_kind(l: &Call) -> Result<PoolKind> {
    l.kind
        .facts
        .pool
        .ok_or_else(|| crate::ir::IrError(format!("`{}` has no pooling kind", l.kind.name)))
}

fn lower_pool(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    layout::lower(lw, l, x, lower_pool_last)
}

fn lower_pool_last(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let a = l.args;
    let window = a.ints("pool_size").to_vec();
    let strides = match a.get("strides") {
        Value::Ints(s) => s.clone(),
        _ => window.clone(),
    };
    let attrs = WindowAttrs {
        window,
        strides,
        padding: Padding::parse(a.str("padding")),
    };
    let kind = pool_kind(l)?;
    lw.f.push(Op::Pool { kind, attrs }, &[x[0]])
}

fn lower_global_pool(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    layout::lower(lw, l, x, lower_global_pool_last)
}

fn lower_global_pool_last(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let rank = lw.f.ty(x[0]).rank();
    let axes: Vec<usize> = (1..rank - 1).collect();
    let y = match pool_kind(l)? {
        PoolKind::Max => lw.f.reduce(ReduceOp::Max, x[0], axes)?,
        PoolKind::Avg => match input_mask(lw) {
            Some(m) if l.kind.facts.mask == Mask::Consumes => masked_mean_steps(lw, x[0], m)?,
            _ => mean(lw, x[0], &axes)?,
        },
    };
    lw.f.reshape(y, l.output.shape.clone())
}
