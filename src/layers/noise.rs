//! Random regularization layers, active in training only (identity at inference, as
//! Keras): spatial_dropout1d/2d/3d (whole channels dropped; 2d and 3d take Keras's
//! `data_format`), gaussian_noise (additive
//! N(0, stddev²)) and gaussian_dropout (multiplicative N(1, rate/(1-rate))). They draw
//! from the training step's random key as `dropout` does: Keras's distributions,
//! kiln's own stream.

use super::core::identity;
use super::layout::{self, DATA_FORMAT};
use super::lower::{Call, LowerCx, Mode};
use super::{Arity, Ctx, Facts, Inferred, LayerKind, Mask, NO_FACTS, PASSES_MASK};
use crate::args::{ArgSpec, Default, FRACTION, arg, float_range, int};
use crate::dim::Dim;
use crate::ir::{Cmp, Func, Id, IrError, Op, Result, Type, Unary};

pub const SPATIAL_DROPOUT1D: LayerKind = LayerKind {
    name: "spatial_dropout1d",
    class: "SpatialDropout1D",
    args: &[
        arg("rate", FRACTION, Default::Required),
        arg("seed", int(0), Default::Null),
    ],
    arity: Arity::One,
    infer: spatial1d,
    lower: lower_spatial_dropout,
    facts: Facts {
        spatial: Some(1),
        mask: Mask::Propagates,
        ..NO_FACTS
    },
};

/// Keras's SpatialDropout2D and 3D: `rate`, `data_format`, `seed`.
const SPATIAL_ND_ARGS: [ArgSpec; 3] = [
    arg("rate", FRACTION, Default::Required),
    DATA_FORMAT,
    arg("seed", int(0), Default::Null),
];

pub const SPATIAL_DROPOUT2D: LayerKind = LayerKind {
    name: "spatial_dropout2d",
    class: "SpatialDropout2D",
    args: &SPATIAL_ND_ARGS,
    arity: Arity::One,
    infer: |cx| layout::infer(cx, spatial2d),
    lower: |lw, l, x| layout::lower(lw, l, x, lower_spatial_dropout),
    facts: Facts {
        spatial: Some(2),
        mask: Mask::Propagates,
        ..NO_FACTS
    },
};

pub const SPATIAL_DROPOUT3D: LayerKind = LayerKind {
    name: "spatial_dropout3d",
    class: "SpatialDropout3D",
    args: &SPATIAL_ND_ARGS,
    arity: Arity::One,
    infer: |cx| layout::infer(cx, spatial3d),
    lower: |lw, l, x| layout::lower(lw, l, x, lower_spatial_dropout),
    facts: Facts {
        spatial: Some(3),
        mask: Mask::Propagates,
        ..NO_FACTS
    },
};

fn spatial1d(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_rank(&[3], "[batch, steps, channels]")?;
    identity(cx)
}

fn spatial2d(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_rank(&[4], "[batch, height, width, channels]")?;
    identity(cx)
}

fn spatial3d(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_rank(&[5], "[batch, depth, height, width, channels]")?;
    identity(cx)
}

pub const GAUSSIAN_NOISE: LayerKind = LayerKind {
    name: "gaussian_noise",
    class: "GaussianNoise",
    // Keras refuses a stddev outside [0, 1].
    args: &[
        arg("stddev", float_range(0.0, 1.0), Default::Required),
        arg("seed", int(0), Default::Null),
    ],
    arity: Arity::One,
    infer: identity,
    lower: lower_gaussian_noise,
    facts: PASSES_MASK,
};

pub const GAUSSIAN_DROPOUT: LayerKind = LayerKind {
    name: "gaussian_dropout",
    class: "GaussianDropout",
    args: &[
        arg("rate", FRACTION, Default::Required),
        arg("seed", int(0), Default::Null),
    ],
    arity: Arity::One,
    infer: identity,
    lower: lower_gaussian_dropout,
    facts: PASSES_MASK,
};

/// Uniform numbers in [0, 1) of `shape` from the step's key, a fresh salt per layer.
fn uniform(lw: &mut LowerCx, shape: Vec<Dim>, what: &str) -> Result<Id> {
    let key = lw
        .rng_key
        .ok_or_else(|| IrError(format!("{what} needs a random key")))?;
    let salt = lw.next_salt();
    Ok(lw.f.push_typed(Op::Rng { salt }, &[key], Type::f32(shape)))
}

/// Keras's `backend.random.dropout` with `noise_shape` [batch, 1…, channels]: one draw
/// per example and channel, kept channels scaled by 1/(1-rate).
fn lower_spatial_dropout(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let rate = l.args.float("rate");
    let x = x[0];
    if lw.mode == Mode::Infer || rate == 0.0 {
        return Ok(x);
    }
    let shape = lw.f.ty(x).shape.clone();
    let r = shape.len();
    let mut noise = vec![Dim::konst(1); r];
    noise[0] = shape[0].clone();
    noise[r - 1] = shape[r - 1].clone();
    let u = uniform(lw, noise, l.kind.name)?;
    let th = lw.f.scalar(rate);
    let keep = lw.f.cmp(Cmp::Ge, u, th)?;
    let one = lw.f.scalar(1.0 / (1.0 - rate));
    let zero = lw.f.scalar(0.0);
    let mask = lw.f.select(keep, one, zero)?;
    let dims: Vec<usize> = (0..r).collect();
    let mask = lw.f.broadcast(mask, &shape, &dims)?;
    lw.f.mul(x, mask)
}

/// `x + N(0, stddev²)` in training.
fn lower_gaussian_noise(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let stddev = l.args.float("stddev");
    if lw.mode == Mode::Infer || stddev == 0.0 {
        return Ok(x[0]);
    }
    let shape = lw.f.ty(x[0]).shape.clone();
    let u = uniform(lw, shape, l.kind.name)?;
    let z = standard_normal(&mut lw.f, u)?;
    let n = lw.f.mul_c(z, stddev)?;
    lw.f.add(x[0], n)
}

/// `x · N(1, rate/(1-rate))` in training.
fn lower_gaussian_dropout(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let rate = l.args.float("rate");
    if lw.mode == Mode::Infer || rate == 0.0 {
        return Ok(x[0]);
    }
    let stddev = (rate / (1.0 - rate)).sqrt();
    let shape = lw.f.ty(x[0]).shape.clone();
    let u = uniform(lw, shape, l.kind.name)?;
    let z = standard_normal(&mut lw.f, u)?;
    let s = lw.f.mul_c(z, stddev)?;
    let m = lw.f.add_c(s, 1.0)?;
    lw.f.mul(x[0], m)
}

// Acklam's rational approximation of the standard normal quantile (relative error
// below 1.15e-9): a central rational function of p - 1/2, and a tail one of
// sqrt(-2 log p).
const A: [f64; 6] = [
    -3.969_683_028_665_376e1,
    2.209_460_984_245_205e2,
    -2.759_285_104_469_687e2,
    1.383_577_518_672_69e2,
    -3.066_479_806_614_716e1,
    2.506_628_277_459_239,
];
const B: [f64; 6] = [
    -5.447_609_879_822_406e1,
    1.615_858_368_580_409e2,
    -1.556_989_798_598_866e2,
    6.680_131_188_771_972e1,
    -1.328_068_155_288_572e1,
    1.0,
];
const C: [f64; 6] = [
    -7.784_894_002_430_293e-3,
    -3.223_964_580_411_365e-1,
    -2.400_758_277_161_838,
    -2.549_732_539_343_734,
    4.374_664_141_464_968,
    2.938_163_982_698_783,
];
const D: [f64; 5] = [
    7.784_695_709_041_462e-3,
    3.224_671_290_700_398e-1,
    2.445_134_137_142_996,
    3.754_408_661_907_416,
    1.0,
];
const P_LOW: f64 = 0.02425;

/// Horner's rule: `c[0]·xⁿ + … + c[n]`.
fn poly(f: &mut Func, x: Id, c: &[f64]) -> Result<Id> {
    let mut acc = f.full(c[0], &f.ty(x).shape.clone())?;
    for &k in &c[1..] {
        acc = f.mul(acc, x)?;
        acc = f.add_c(acc, k)?;
    }
    Ok(acc)
}

/// Standard normal numbers from uniform ones in [0, 1) on kiln's 2⁻²⁴ grid, by the
/// inverse of the normal CDF at the cell centres `p = u + 2⁻²⁵` (never 0 or 1, so no
/// draw is infinite, and the draws are symmetric about 0).
pub(super) fn standard_normal(f: &mut Func, u: Id) -> Result<Id> {
    let half_cell = 2f64.powi(-25);
    // p - 1/2, and min(p, 1 - p) computed exactly in f32 from the grid value.
    let centered = f.add_c(u, half_cell - 0.5)?;
    let lo = f.add_c(u, half_cell)?;
    let one_minus = f.rsub_c(1.0, u)?;
    let hi = f.add_c(one_minus, -half_cell)?;
    let m = f.min(lo, hi)?;
    // Central region.
    let r = f.mul(centered, centered)?;
    let num = poly(f, r, &A)?;
    let num = f.mul(num, centered)?;
    let den = poly(f, r, &B)?;
    let central = f.div(num, den)?;
    // Tails: the lower tail's value at m, negated for the upper tail.
    let lg = f.unary(Unary::Log, m)?;
    let q2 = f.mul_c(lg, -2.0)?;
    let q = f.unary(Unary::Sqrt, q2)?;
    let tn = poly(f, q, &C)?;
    let td = poly(f, q, &D)?;
    let lower = f.div(tn, td)?;
    let upper = f.unary(Unary::Neg, lower)?;
    let half = f.scalar(0.5);
    let is_lower = f.cmp(Cmp::Lt, u, half)?;
    let tail = f.select(is_lower, lower, upper)?;
    let p_low = f.scalar(P_LOW);
    let in_tail = f.cmp(Cmp::Lt, m, p_low)?;
    f.select(in_tail, tail, central)
}
