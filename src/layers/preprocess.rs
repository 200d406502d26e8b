//! Preprocessing inside the model: rescaling and normalization (Keras's
//! `keras.layers`), and keras_hub's `PositionEmbedding` (learned positions, so a
//! transformer needs one input).
//!
//! `normalization` without `mean` and `variance` holds them as non-trainable weights
//! (`mean`, `variance`, `count`, as Keras names them), which `fit` computes from the
//! training data before the first step when they are still the initial ones (Keras's
//! `adapt`, through [`Facts::adapt`]).

use ndarray::{ArrayD, Axis, IxDyn};

use super::core::identity;
use super::lower::{Call, LowerCx, norm_axis};
use super::{
    Adapt, Adapted, Arity, Ctx, Facts, Inferred, LayerKind, Mask, NO_FACTS, PASSES_MASK, Param,
    TensorType,
};
use crate::args::{
    ArgKind, ArgSpec, Args, CatalogArg, Default, Value, arg, as_float, float_range, int, type_error,
};
use crate::catalog::initializers;
use crate::diag::Diagnostic;
use crate::dim::Dim;
use crate::ir::{Func, Id, Op, Result, Type, Unary};
use crate::types::DType;
use crate::yaml::Node;

const ANY: ArgKind = float_range(f64::MIN, f64::MAX);

pub const RESCALING: LayerKind = LayerKind {
    name: "rescaling",
    class: "Rescaling",
    args: &[
        arg("scale", ANY, Default::Required),
        arg("offset", ANY, Default::Float(0.0)),
    ],
    arity: Arity::One,
    infer: rescaling,
    lower: lower_rescaling,
    facts: PASSES_MASK,
};

/// Keras casts the input to the layer's float dtype: integer inputs (pixels) are fine.
fn rescaling(cx: &mut Ctx) -> Option<Inferred> {
    Some(Inferred {
        output: TensorType::f32(cx.input().shape.clone()),
        params: Vec::new(),
    })
}

/// `cast(x) * scale + offset`.
fn lower_rescaling(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let mut x = x[0];
    if lw.f.ty(x).dtype != DType::F32 {
        x = lw.f.push(Op::Cast(DType::F32), &[x])?;
    }
    let y = lw.f.mul_c(x, l.args.float("scale"))?;
    lw.f.add_c(y, l.args.float("offset"))
}

/// `mean` and `variance` of `normalization`: a number, or a list of numbers (one per
/// position on the last normalized axis), as Keras's broadcastable arrays.
static NUMBERS: CatalogArg = CatalogArg {
    what: "number or list of numbers",
    example: "[0.5, 2.0]",
    default: |_| Value::Null,
    check: check_numbers,
};

fn check_numbers(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    let want = "a number or a list of numbers";
    if let Some(f) = as_float(v).filter(|f| f.is_finite()) {
        return Some(Value::Float(f));
    }
    let Some(items) = v.as_seq() else {
        diags.push(type_error(spec, v, what, want));
        return None;
    };
    let mut out = Vec::new();
    for it in items {
        match as_float(it).filter(|f| f.is_finite()) {
            Some(f) => out.push(f),
            None => {
                diags.push(type_error(spec, it, what, "a finite number"));
                return None;
            }
        }
    }
    Some(Value::Floats(out))
}

/// `axis` of `normalization`: an axis, a list of axes, or `null` (Keras's `None`: one
/// statistic over every axis, as an empty list).
static AXES: CatalogArg = CatalogArg {
    what: "axes",
    example: "-1",
    default: |_| Value::Ints(vec![-1]),
    check: check_axes,
};

fn check_axes(spec: &ArgSpec, v: &Node, what: &str, diags: &mut Vec<Diagnostic>) -> Option<Value> {
    if v.is_null() {
        return Some(Value::Ints(Vec::new()));
    }
    let one = |n: &Node| as_float(n).filter(|f| f.fract() == 0.0 && f.abs() <= 64.0);
    if let Some(a) = one(v) {
        return Some(Value::Ints(vec![a as i64]));
    }
    let items = v
        .as_seq()
        .map(|items| items.iter().map(one).collect::<Option<Vec<_>>>());
    match items {
        Some(Some(axes)) => Some(Value::Ints(axes.into_iter().map(|a| a as i64).collect())),
        _ => {
            diags.push(type_error(
                spec,
                v,
                what,
                "an axis, a list of axes, or null",
            ));
            None
        }
    }
}

pub const NORMALIZATION: LayerKind = LayerKind {
    name: "normalization",
    class: "Normalization",
    args: &[
        arg("axis", ArgKind::Catalog(&AXES), Default::Ints(&[-1])),
        arg("mean", ArgKind::Catalog(&NUMBERS), Default::Null),
        arg("variance", ArgKind::Catalog(&NUMBERS), Default::Null),
        arg("invert", ArgKind::Bool, Default::Bool(false)),
    ],
    arity: Arity::One,
    infer: normalization,
    lower: lower_normalization,
    facts: Facts {
        adapt: Some(&ADAPT),
        mask: Mask::Propagates,
        ..NO_FACTS
    },
};

/// The kept (normalized-per-position) axes, sorted, as Keras's `_keep_axis`.
fn kept_axes(args: &Args, rank: usize) -> Vec<usize> {
    let mut k: Vec<usize> = args
        .ints("axis")
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect();
    k.sort_unstable();
    k.dedup();
    k
}

/// The values of `mean` or `variance` as written: one number or a list.
fn given(args: &Args, name: &str) -> Option<Vec<f64>> {
    match args.get(name) {
        Value::Float(f) => Some(vec![*f]),
        Value::Int(i) => Some(vec![*i as f64]),
        Value::Floats(v) => Some(v.clone()),
        _ => None,
    }
}

fn normalization(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    let rank = cx.input().rank();
    for &a in cx.args.ints("axis").to_vec().iter() {
        let r = cx.axis("axis", a, rank)?;
        if r == 0 {
            return cx.arg_error(
                "axis",
                "E0508",
                "`normalization` keeps statistics per position on `axis`, which cannot be the batch axis".into(),
                "use a feature axis, e.g. `axis: -1`",
            );
        }
    }
    let kept = kept_axes(cx.args, rank);
    let mut shape = Vec::new();
    for &a in &kept {
        shape.push(cx.known(&cx.input().shape[a].clone(), "size on the normalized axes")?);
    }
    let (m, v) = (given(cx.args, "mean"), given(cx.args, "variance"));
    match (&m, &v) {
        (None, None) => {}
        (Some(m), Some(v)) => {
            let last = shape.last().copied().unwrap_or(1);
            for (name, vals) in [("mean", m), ("variance", v)] {
                let n = vals.len() as i64;
                let scalar = matches!(cx.args.get(name), Value::Float(_) | Value::Int(_));
                if !scalar && n != last {
                    return cx.arg_error(
                        name,
                        "E0404",
                        format!("`{name}` has {n} values, but the last normalized axis has {last} positions"),
                        "give one number for every position, or a single number for all",
                    );
                }
            }
            return Some(Inferred {
                output: cx.input().clone(),
                params: Vec::new(),
            });
        }
        _ => {
            let missing = if m.is_none() { "mean" } else { "variance" };
            let other = if m.is_none() { "variance" } else { "mean" };
            return cx.arg_error(
                other,
                "E0603",
                format!("`normalization` got `{other}` without `{missing}`: give both, or neither to compute them from the training data"),
                format!("add `{missing}`, or remove `{other}`"),
            );
        }
    }
    let weight = |name: &str, shape: Vec<i64>, init: &str| Param {
        name: name.to_string(),
        shape,
        trainable: false,
        init: Value::Named(init.to_string(), Box::default()),
        regularizer: String::new(),
    };
    Some(Inferred {
        output: cx.input().clone(),
        params: vec![
            weight("mean", shape.clone(), "zeros"),
            weight("variance", shape, "ones"),
            weight("count", Vec::new(), "zeros"),
        ],
    })
}

/// A constant of the given values placed on the last kept axis, broadcast to `shape`.
fn constant(f: &mut Func, vals: &[f64], shape: &[Dim], kept: &[usize]) -> Result<Id> {
    if vals.len() == 1 {
        let c = f.scalar(vals[0]);
        return f.broadcast(c, shape, &[]);
    }
    let mut parts = Vec::new();
    for &v in vals {
        let c = f.scalar(v);
        parts.push(f.reshape(c, vec![Dim::konst(1)])?);
    }
    let vec = f.push(Op::Concat { axis: 0 }, &parts)?;
    let last = *kept
        .last()
        .ok_or_else(|| crate::ir::IrError("no kept axis".into()))?;
    f.broadcast(vec, shape, &[last])
}

/// `(x - mean) / max(sqrt(variance), ε)`, or with `invert` `mean + x · max(…)`.
fn lower_normalization(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let x = x[0];
    let shape = lw.f.ty(x).shape.clone();
    let kept = kept_axes(l.args, shape.len());
    let (mean, var) = match (given(l.args, "mean"), given(l.args, "variance")) {
        (Some(m), Some(v)) => (
            constant(&mut lw.f, &m, &shape, &kept)?,
            constant(&mut lw.f, &v, &shape, &kept)?,
        ),
        _ => {
            let m = l.param(lw, "mean")?;
            let v = l.param(lw, "variance")?;
            (
                lw.f.broadcast(m, &shape, &kept)?,
                lw.f.broadcast(v, &shape, &kept)?,
            )
        }
    };
    let sd = lw.f.unary(Unary::Sqrt, var)?;
    let eps = lw.f.scalar(crate::catalog::EPSILON);
    let denom = lw.f.max(sd, eps)?;
    if l.args.bool("invert") {
        let s = lw.f.mul(x, denom)?;
        return lw.f.add(mean, s);
    }
    let d = lw.f.sub(x, mean)?;
    lw.f.div(d, denom)
}

static ADAPT: Adapt = Adapt {
    wanted: |a| matches!(a.get("mean"), Value::Null),
    compute: adapt_normalization,
};

/// Keras's `adapt` on one array: the mean and the (biased) variance over every axis but
/// the kept ones, computed in f64 and rounded once; `count` stays 0, as in Keras.
fn adapt_normalization(args: &Args, data: &ArrayD<f32>) -> Vec<Adapted> {
    let rank = data.ndim();
    let kept = kept_axes(args, rank);
    let mut x = data.mapv(f64::from);
    // Reduce the other axes from the last so that the kept ones keep their order.
    for ax in (0..rank).rev().filter(|a| !kept.contains(a)) {
        x = x.sum_axis(Axis(ax)).insert_axis(Axis(ax));
    }
    let n: usize = (0..rank)
        .filter(|a| !kept.contains(a))
        .map(|a| data.shape()[a])
        .product();
    let n = n.max(1) as f64;
    let mean_b = x.mapv(|s| s / n);
    let mut sq = data.mapv(f64::from);
    sq.zip_mut_with(&mean_b, |v, m| *v = (*v - m) * (*v - m));
    for ax in (0..rank).rev().filter(|a| !kept.contains(a)) {
        sq = sq.sum_axis(Axis(ax)).insert_axis(Axis(ax));
    }
    let stat_shape: Vec<usize> = kept.iter().map(|&a| data.shape()[a]).collect();
    let squeeze = |a: ArrayD<f64>| -> ArrayD<f32> {
        let v: Vec<f32> = a.iter().map(|&s| s as f32).collect();
        ArrayD::from_shape_vec(IxDyn(&stat_shape), v)
            .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&stat_shape)))
    };
    let mean = squeeze(mean_b);
    let var = squeeze(sq.mapv(|s| s / n));
    vec![("mean", mean), ("variance", var)]
}

pub const POSITION_EMBEDDING: LayerKind = LayerKind {
    name: "position_embedding",
    class: "PositionEmbedding",
    args: &[
        arg("sequence_length", int(1), Default::Required),
        arg(
            "initializer",
            initializers::INITIALIZER,
            Default::Str("glorot_uniform"),
        ),
    ],
    arity: Arity::One,
    infer: position_embedding,
    lower: lower_position_embedding,
    facts: NO_FACTS,
};

/// keras_hub: `[…, seq, d]` in, the same shape out; weight `embeddings`
/// `[sequence_length, d]`.
fn position_embedding(cx: &mut Ctx) -> Option<Inferred> {
    let rank = cx.input().rank();
    if rank < 3 {
        cx.expect_rank(&[3], "[batch, steps, features]")?;
    }
    identity(cx)?;
    let shape = cx.input().shape.clone();
    let d = cx.known(&shape[rank - 1], "last axis (the number of features)")?;
    let n = cx.args.int("sequence_length");
    if let Some(seq) = shape[rank - 2].as_const()
        && seq > n
    {
        return cx.arg_error(
            "sequence_length",
            "E0404",
            format!("`position_embedding` has {n} positions, but its input has {seq} steps"),
            format!("set `sequence_length` to at least {seq}"),
        );
    }
    Some(Inferred {
        output: cx.input().clone(),
        params: vec![cx.param("embeddings", vec![n, d], "initializer")],
    })
}

/// The rows for positions 0…seq-1, broadcast over the leading axes.
fn lower_position_embedding(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let shape = lw.f.ty(x[0]).shape.clone();
    let table = l.param(lw, "embeddings")?;
    position_rows(lw, table, &shape)
}

/// The first `seq` rows of a position table, broadcast to `shape` `[…, seq, d]`.
fn position_rows(lw: &mut LowerCx, table: Id, shape: &[Dim]) -> Result<Id> {
    let r = shape.len();
    let rows = match shape[r - 2].as_const() {
        Some(seq) => lw.f.slice(table, 0, 0, seq)?,
        None => {
            let pos = lw.f.push_typed(
                Op::Iota { axis: 0 },
                &[],
                Type::f32(vec![shape[r - 2].clone()]),
            );
            let idx = lw.f.push(Op::Cast(DType::I32), &[pos])?;
            lw.f.push(Op::Gather, &[table, idx])?
        }
    };
    lw.f.broadcast(rows, shape, &[r - 2, r - 1])
}
