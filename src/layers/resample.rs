//! Spatial resampling: up_sampling1d/2d/3d, zero_padding1d/2d/3d and cropping1d/2d/3d
//! (channels_last, or channels_first through `layout`), lowered onto structural primitives (reshape, broadcast, slice, pad,
//! concat) and scalar weights, so every one is exact, has its gradient already, and
//! works on symbolic lengths.
//!
//! Nearest up-sampling repeats each element (Keras's `ops.repeat`). Bilinear is
//! `jax.image.resize` with an integer factor `s`: output `i` samples the input at
//! `(i + 0.5) / s - 0.5` between its two neighbours, the edges clamped; output
//! `p * s + r` weighs input `p` and the neighbour on the side of that offset.

use super::conv::{spatial_input, tuple};
use super::layout::{self, DATA_FORMAT};
use super::lower::{Call, LowerCx, overflow};
use super::{Arity, Ctx, Facts, Inferred, LayerKind, NO_FACTS, TensorType};
use crate::args::{ArgKind, ArgSpec, CatalogArg, Default, MAX_SIZE, Value, arg, int};
use crate::args::{range_error, type_error};
use crate::diag::Diagnostic;
use crate::dim::Dim;
use crate::ir::{Id, Op, Result};
use crate::yaml::{Kind, Node, Scalar};

/// Amounts before and after each spatial axis (`padding`, `cropping`): stored as
/// `[before₀, after₀, before₁, after₁, ...]`. One axis: an int (both sides) or
/// `[before, after]`; two or three axes: an int (every side), one int per axis
/// (`[height, width]`, symmetric per axis) or one pair per axis
/// (`[[top, bottom], [left, right]]`), as Keras reads them.
pub static AMOUNTS_1D: CatalogArg = CatalogArg {
    what: "amounts per side",
    example: "[1, 2]",
    default: |s| amounts_default(s, 1),
    check: |spec, v, what, diags| check_amounts(spec, v, what, 1, diags),
};
pub static AMOUNTS_2D: CatalogArg = CatalogArg {
    what: "amounts per side",
    example: "[[1, 1], [2, 2]]",
    default: |s| amounts_default(s, 2),
    check: |spec, v, what, diags| check_amounts(spec, v, what, 2, diags),
};
pub static AMOUNTS_3D: CatalogArg = CatalogArg {
    what: "amounts per side",
    example: "[[1, 1], [2, 2], [0, 1]]",
    default: |s| amounts_default(s, 3),
    check: |spec, v, what, diags| check_amounts(spec, v, what, 3, diags),
};

/// A default written as one int for every side.
fn amounts_default(s: &str, n: usize) -> Value {
    Value::Ints(vec![s.parse().unwrap_or(0); 2 * n])
}

/// One amount: an int in `[0, MAX_SIZE]`.
fn amount(spec: &ArgSpec, v: &Node, what: &str, diags: &mut Vec<Diagnostic>) -> Option<i64> {
    match &v.kind {
        Kind::Scalar(Scalar::Int(i)) if (0..=MAX_SIZE).contains(i) => Some(*i),
        Kind::Scalar(Scalar::Int(_) | Scalar::BigInt(_)) => {
            diags.push(range_error(
                spec,
                v,
                what,
                format!("must be between 0 and {MAX_SIZE}"),
            ));
            None
        }
        _ => {
            diags.push(type_error(spec, v, what, "an integer"));
            None
        }
    }
}

fn check_amounts(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    n: usize,
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    let forms = match n {
        1 => "an integer or a list of 2 integers [before, after]",
        2 => {
            "an integer, a list of 2 integers [height, width], or 2 pairs [[top, bottom], [left, right]]"
        }
        _ => {
            "an integer, a list of 3 integers [depth, height, width], or 3 pairs [[before, after], [before, after], [before, after]]"
        }
    };
    if matches!(v.kind, Kind::Scalar(Scalar::Int(_) | Scalar::BigInt(_))) {
        let p = amount(spec, v, what, diags)?;
        return Some(Value::Ints(vec![p; 2 * n]));
    }
    let want = if n == 1 { 2 } else { n };
    let items = match v.as_seq() {
        Some(items) if items.len() == want => items,
        _ => {
            diags.push(type_error(spec, v, what, forms));
            return None;
        }
    };
    let mut out = Vec::new();
    if n == 1 {
        for it in items {
            out.push(amount(spec, it, what, diags)?);
        }
    } else if items.iter().all(|it| it.as_seq().is_none()) {
        for it in items {
            let p = amount(spec, it, what, diags)?;
            out.extend([p, p]);
        }
    } else {
        for it in items {
            match it.as_seq() {
                Some(pair) if pair.len() == 2 => {
                    for p in pair {
                        out.push(amount(spec, p, what, diags)?);
                    }
                }
                _ => {
                    diags.push(type_error(spec, v, what, forms));
                    return None;
                }
            }
        }
    }
    Some(Value::Ints(out))
}

const SIZE1D_ARGS: &[ArgSpec] = &[arg("size", int(1), Default::Int(2))];
const SIZE2D_ARGS: &[ArgSpec] = &[
    arg("size", ArgKind::IntTuple { n: 2, min: 1 }, Default::Int(2)),
    DATA_FORMAT,
    arg(
        "interpolation",
        ArgKind::Choice(&["nearest", "bilinear"]),
        Default::Str("nearest"),
    ),
];
const SIZE3D_ARGS: &[ArgSpec] = &[
    arg("size", ArgKind::IntTuple { n: 3, min: 1 }, Default::Int(2)),
    DATA_FORMAT,
];
const PAD1D_ARGS: &[ArgSpec] = &[
    arg("padding", ArgKind::Catalog(&AMOUNTS_1D), Default::Str("1")),
    DATA_FORMAT,
];
const PAD2D_ARGS: &[ArgSpec] = &[
    arg("padding", ArgKind::Catalog(&AMOUNTS_2D), Default::Str("1")),
    DATA_FORMAT,
];
const PAD3D_ARGS: &[ArgSpec] = &[
    arg("padding", ArgKind::Catalog(&AMOUNTS_3D), Default::Str("1")),
    DATA_FORMAT,
];
const CROP1D_ARGS: &[ArgSpec] = &[arg(
    "cropping",
    ArgKind::Catalog(&AMOUNTS_1D),
    Default::Str("1"),
)];
const CROP2D_ARGS: &[ArgSpec] = &[
    arg("cropping", ArgKind::Catalog(&AMOUNTS_2D), Default::Str("0")),
    DATA_FORMAT,
];
const CROP3D_ARGS: &[ArgSpec] = &[
    arg("cropping", ArgKind::Catalog(&AMOUNTS_3D), Default::Str("1")),
    DATA_FORMAT,
];

const fn spatial(n: usize) -> Facts {
    Facts {
        spatial: Some(n),
        ..NO_FACTS
    }
}

pub const UP_SAMPLING1D: LayerKind = LayerKind {
    name: "up_sampling1d",
    class: "UpSampling1D",
    args: SIZE1D_ARGS,
    arity: Arity::One,
    infer: up_sampling,
    lower: lower_up_sampling,
    facts: spatial(1),
};
pub const UP_SAMPLING2D: LayerKind = LayerKind {
    name: "up_sampling2d",
    class: "UpSampling2D",
    args: SIZE2D_ARGS,
    arity: Arity::One,
    infer: up_sampling,
    lower: lower_up_sampling,
    facts: spatial(2),
};
pub const UP_SAMPLING3D: LayerKind = LayerKind {
    name: "up_sampling3d",
    class: "UpSampling3D",
    args: SIZE3D_ARGS,
    arity: Arity::One,
    infer: up_sampling,
    lower: lower_up_sampling,
    facts: spatial(3),
};
pub const ZERO_PADDING1D: LayerKind = LayerKind {
    name: "zero_padding1d",
    class: "ZeroPadding1D",
    args: PAD1D_ARGS,
    arity: Arity::One,
    infer: zero_padding,
    lower: lower_zero_padding,
    facts: spatial(1),
};
pub const ZERO_PADDING2D: LayerKind = LayerKind {
    name: "zero_padding2d",
    class: "ZeroPadding2D",
    args: PAD2D_ARGS,
    arity: Arity::One,
    infer: zero_padding,
    lower: lower_zero_padding,
    facts: spatial(2),
};
pub const ZERO_PADDING3D: LayerKind = LayerKind {
    name: "zero_padding3d",
    class: "ZeroPadding3D",
    args: PAD3D_ARGS,
    arity: Arity::One,
    infer: zero_padding,
    lower: lower_zero_padding,
    facts: spatial(3),
};
pub const CROPPING1D: LayerKind = LayerKind {
    name: "cropping1d",
    class: "Cropping1D",
    args: CROP1D_ARGS,
    arity: Arity::One,
    infer: cropping,
    lower: lower_cropping,
    facts: spatial(1),
};
pub const CROPPING2D: LayerKind = LayerKind {
    name: "cropping2d",
    class: "Cropping2D",
    args: CROP2D_ARGS,
    arity: Arity::One,
    infer: cropping,
    lower: lower_cropping,
    facts: spatial(2),
};

pub const CROPPING3D: LayerKind = LayerKind {
    name: "cropping3d",
    class: "Cropping3D",
    args: CROP3D_ARGS,
    arity: Arity::One,
    infer: cropping,
    lower: lower_cropping,
    facts: spatial(3),
};

/// The up-sampling factor of each spatial axis.
fn factors(args: &crate::args::Args, n: usize) -> Vec<i64> {
    match args.get("size") {
        Value::Int(s) => vec![*s; n],
        Value::Ints(v) if v.len() == n => v.clone(),
        _ => vec![1; n],
    }
}

/// An output with the input's batch and channels and `f(axis, length)` on each
/// spatial axis; no weights.
fn spatial_map(
    cx: &mut Ctx,
    n: usize,
    f: impl Fn(usize, &Dim) -> std::result::Result<Dim, crate::dim::Overflow>,
) -> Option<Inferred> {
    let mut shape = cx.input().shape.clone();
    for i in 0..n {
        match f(i, &shape[1 + i]) {
            Ok(d) => shape[1 + i] = d,
            Err(e) => return cx.overflow(e),
        }
    }
    Some(Inferred {
        output: TensorType::f32(shape),
        params: Vec::new(),
    })
}

fn up_sampling(cx: &mut Ctx) -> Option<Inferred> {
    layout::infer(cx, up_sampling_last)
}

fn up_sampling_last(cx: &mut Ctx) -> Option<Inferred> {
    let n = spatial_input(cx)?;
    let s = factors(cx.args, n);
    spatial_map(cx, n, |i, len| len.scale(s[i]))
}

fn zero_padding(cx: &mut Ctx) -> Option<Inferred> {
    layout::infer(cx, zero_padding_last)
}

fn zero_padding_last(cx: &mut Ctx) -> Option<Inferred> {
    let n = spatial_input(cx)?;
    let p = tuple(cx, "padding", "padding", 2 * n);
    spatial_map(cx, n, |i, len| {
        len.add_const(p[2 * i])?.add_const(p[2 * i + 1])
    })
}

fn cropping(cx: &mut Ctx) -> Option<Inferred> {
    layout::infer(cx, cropping_last)
}

fn cropping_last(cx: &mut Ctx) -> Option<Inferred> {
    let n = spatial_input(cx)?;
    let c = tuple(cx, "cropping", "cropping", 2 * n);
    for i in 0..n {
        let len = cx.input().shape[1 + i].clone();
        let (lo, hi) = (c[2 * i], c[2 * i + 1]);
        if let Some(l) = len.as_const()
            && lo.saturating_add(hi) >= l
        {
            let name = cx.inputs[0].name.to_string();
            let ty = cx.input().describe();
            cx.arg_error(
                "cropping",
                "E0404",
                format!(
                    "`cropping` removes {lo} + {hi} elements from axis {} of `{name}` ({ty}), which is only {l} long (Keras requires something left)",
                    1 + i
                ),
                "crop less, or crop after fewer pooling or strided layers",
            );
            return None;
        }
    }
    spatial_map(cx, n, |i, len| {
        len.add_const(-c[2 * i])?.add_const(-c[2 * i + 1])
    })
}

fn lower_zero_padding(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    layout::lower(lw, l, x, lower_zero_padding_last)
}

fn lower_zero_padding_last(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let p = l.args.ints("padding");
    let mut y = x[0];
    for i in 0..p.len() / 2 {
        if p[2 * i] != 0 || p[2 * i + 1] != 0 {
            let op = Op::Pad {
                axis: 1 + i,
                low: Dim::konst(p[2 * i]),
                high: Dim::konst(p[2 * i + 1]),
            };
            y = lw.f.push(op, &[y])?;
        }
    }
    Ok(y)
}

/// Elements `start..end` of `x` along `axis`.
fn slice(lw: &mut LowerCx, x: Id, axis: usize, start: Dim, end: Dim) -> Result<Id> {
    lw.f.push(Op::Slice { axis, start, end }, &[x])
}

fn lower_cropping(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    layout::lower(lw, l, x, lower_cropping_last)
}

fn lower_cropping_last(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let c = l.args.ints("cropping");
    let mut y = x[0];
    for i in 0..c.len() / 2 {
        if c[2 * i] != 0 || c[2 * i + 1] != 0 {
            let len = lw.f.ty(y).shape[1 + i].clone();
            let end = len.add_const(-c[2 * i + 1]).map_err(overflow)?;
            y = slice(lw, y, 1 + i, Dim::konst(c[2 * i]), end)?;
        }
    }
    Ok(y)
}

fn lower_up_sampling(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    layout::lower(lw, l, x, lower_up_sampling_last)
}

fn lower_up_sampling_last(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let n = lw.f.ty(x[0]).rank() - 2;
    let bilinear = l.args.str("interpolation") == "bilinear";
    let mut y = x[0];
    for (i, s) in factors(l.args, n).into_iter().enumerate() {
        y = if bilinear {
            bilinear_axis(lw, y, 1 + i, s)?
        } else {
            repeat_axis(lw, y, 1 + i, s)?
        };
    }
    Ok(y)
}

/// `x` with a unit axis inserted after `axis`.
fn unit_after(lw: &mut LowerCx, x: Id, axis: usize) -> Result<Id> {
    let mut shape = lw.f.ty(x).shape.clone();
    shape.insert(axis + 1, Dim::konst(1));
    lw.f.reshape(x, shape)
}

/// `[.., L, s, ..]` → `[.., L * s, ..]` (the axis after `axis` merged into it).
fn merge_after(lw: &mut LowerCx, x: Id, axis: usize) -> Result<Id> {
    let mut shape = lw.f.ty(x).shape.clone();
    let s = shape.remove(axis + 1);
    shape[axis] = shape[axis].mul(&s).map_err(overflow)?;
    lw.f.reshape(x, shape)
}

/// Each element repeated `s` times along `axis`.
fn repeat_axis(lw: &mut LowerCx, x: Id, axis: usize, s: i64) -> Result<Id> {
    if s == 1 {
        return Ok(x);
    }
    let u = unit_after(lw, x, axis)?;
    let mut shape = lw.f.ty(u).shape.clone();
    shape[axis + 1] = Dim::konst(s);
    let dims: Vec<usize> = (0..shape.len()).collect();
    let b = lw.f.broadcast(u, &shape, &dims)?;
    merge_after(lw, b, axis)
}

/// Bilinear up-sampling by `s` along `axis` (half-pixel centres, edges clamped).
fn bilinear_axis(lw: &mut LowerCx, x: Id, axis: usize, s: i64) -> Result<Id> {
    if s == 1 {
        return Ok(x);
    }
    let len = lw.f.ty(x).shape[axis].clone();
    let last = len.add_const(-1).map_err(overflow)?;
    let first = slice(lw, x, axis, Dim::konst(0), Dim::konst(1))?;
    let end = slice(lw, x, axis, last.clone(), len.clone())?;
    // Each element's neighbours, the edges repeating themselves.
    let before = lw.f.push(Op::Concat { axis }, &[first, x])?;
    let prev = slice(lw, before, axis, Dim::konst(0), len.clone())?;
    let after = lw.f.push(Op::Concat { axis }, &[x, end])?;
    let next = slice(
        lw,
        after,
        axis,
        Dim::konst(1),
        len.add_const(1).map_err(overflow)?,
    )?;
    let mut phases = Vec::new();
    for r in 0..s {
        let off = (r as f64 + 0.5) / s as f64 - 0.5;
        let (other, w) = if off < 0.0 { (prev, -off) } else { (next, off) };
        let out = if w == 0.0 {
            x
        } else {
            let a = lw.f.mul_c(x, 1.0 - w)?;
            let b = lw.f.mul_c(other, w)?;
            lw.f.add(a, b)?
        };
        phases.push(unit_after(lw, out, axis)?);
    }
    let all = lw.f.push(Op::Concat { axis: axis + 1 }, &phases)?;
    merge_after(lw, all, axis)
}
