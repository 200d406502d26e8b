//! Losses with Keras's formulas (keras.losses), reduced as Keras's "sum over batch
//! size": per-example values summed and divided by their count.

use super::metrics::{self, MetricKind};
use super::{EPSILON, align, entry, find, mean_all};
use crate::args::{ArgKind, ArgSpec, Args, Default, POSITIVE_FLOAT, arg, float_range, int};
use crate::dim::Dim;
use crate::ir::{Cmp, Func, Id, Op, ReduceOp, Result, Type, Unary};

/// What targets a loss compares the output with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// The output's shape, f32 (`ints_ok`: integer targets are accepted and cast).
    Dense { ints_ok: bool },
    /// One integer class index per example: the output's shape without its class axis.
    SparseLabels,
}

/// A loss.
pub struct LossKind {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub args: &'static [ArgSpec],
    /// Keras's per-example values (before the mean over the batch).
    pub per_example: fn(&mut Func, &Args, Id, Id) -> Result<Id>,
    pub targets: Targets,
    /// A cross-entropy: compares probabilities, or logits with `from_logits: true`.
    pub cross_entropy: bool,
    /// The accuracy Keras's `accuracy` metric means with this loss (`None`: chosen by
    /// the shapes of output and target).
    pub accuracy: Option<&'static MetricKind>,
    /// The same loss for the other form of labels (one-hot ↔ class indices), which
    /// help texts suggest when the targets have that form.
    pub counterpart: Option<&'static LossKind>,
}
entry!(LossKind, Loss);

impl LossKind {
    /// The loss as a scalar: the per-example values, then their mean.
    pub fn lower(&self, f: &mut Func, args: &Args, pred: Id, target: Id) -> Result<Id> {
        self.lower_weighted(f, args, pred, target, None)
    }

    /// The loss as Keras's `Loss.__call__` reduces it (`sum_over_batch_size`): the
    /// per-example values times the sample weights (`[batch]` along the first axis, or
    /// `[batch, steps]` for a masked sequence),
    /// summed and divided by the number of values — not by the sum of the weights.
    pub fn lower_weighted(
        &self,
        f: &mut Func,
        args: &Args,
        pred: Id,
        target: Id,
        weight: Option<Id>,
    ) -> Result<Id> {
        let per_example = (self.per_example)(f, args, pred, target)?;
        let values = match weight {
            Some(w) => {
                // `[batch]`, or `[batch, steps]` for a masked sequence.
                let shape = f.ty(per_example).shape.clone();
                let dims: Vec<usize> = (0..f.ty(w).rank()).collect();
                let wb = f.broadcast(w, &shape, &dims)?;
                f.mul(per_example, wb)?
            }
            None => per_example,
        };
        mean_all(f, values)
    }
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

pub(crate) fn clip(f: &mut Func, p: Id, lo: f64, hi: f64) -> Result<Id> {
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
        super::activations::log_softmax(f, pred, last)?
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

/// `pred - target` with the target aligned, then `op` on it, averaged over the last axis.
fn regression(
    f: &mut Func,
    pred: Id,
    target: Id,
    op: impl FnOnce(&mut Func, Id) -> Result<Id>,
) -> Result<Id> {
    let t = align(f, target, pred, false)?;
    let e = f.sub(pred, t)?;
    let v = op(f, e)?;
    mean_last(f, v)
}

const CE_ARGS: &[ArgSpec] = &[
    arg("from_logits", ArgKind::Bool, Default::Bool(false)),
    arg(
        "label_smoothing",
        float_range(0.0, 1.0),
        Default::Float(0.0),
    ),
    arg("axis", int(-64), Default::Int(-1)),
];

const REGRESSION: Targets = Targets::Dense { ints_ok: false };

pub static MEAN_SQUARED_ERROR: LossKind = LossKind {
    name: "mean_squared_error",
    aliases: &["mse"],
    args: &[],
    per_example: |f, _, pred, target| regression(f, pred, target, |f, e| f.mul(e, e)),
    targets: REGRESSION,
    cross_entropy: false,
    accuracy: None,
    counterpart: None,
};

pub static MEAN_ABSOLUTE_ERROR: LossKind = LossKind {
    name: "mean_absolute_error",
    aliases: &["mae"],
    args: &[],
    per_example: |f, _, pred, target| regression(f, pred, target, |f, e| f.unary(Unary::Abs, e)),
    targets: REGRESSION,
    cross_entropy: false,
    accuracy: None,
    counterpart: None,
};

pub static HUBER: LossKind = LossKind {
    name: "huber",
    aliases: &["huber_loss"],
    args: &[arg("delta", POSITIVE_FLOAT, Default::Float(1.0))],
    per_example: |f, args, pred, target| {
        let d = args.float("delta");
        regression(f, pred, target, |f, e| {
            let a = f.unary(Unary::Abs, e)?;
            let e2 = f.mul(e, e)?;
            let quad = f.mul_c(e2, 0.5)?;
            let lin0 = f.mul_c(a, d)?;
            let lin = f.add_c(lin0, -0.5 * d * d)?;
            let dd = f.scalar(d);
            let small = f.cmp(Cmp::Le, a, dd)?;
            f.select(small, quad, lin)
        })
    },
    targets: REGRESSION,
    cross_entropy: false,
    accuracy: None,
    counterpart: None,
};

fn binary_crossentropy(f: &mut Func, args: &Args, pred: Id, target: Id) -> Result<Id> {
    let t = align(f, target, pred, false)?;
    let s = args.float("label_smoothing");
    let t = if s > 0.0 {
        let a = f.mul_c(t, 1.0 - s)?;
        f.add_c(a, 0.5 * s)?
    } else {
        t
    };
    let v = if args.bool("from_logits") {
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
    mean_last(f, v)
}

pub static BINARY_CROSSENTROPY: LossKind = LossKind {
    name: "binary_crossentropy",
    aliases: &[],
    args: CE_ARGS,
    per_example: binary_crossentropy,
    targets: Targets::Dense { ints_ok: true },
    cross_entropy: true,
    accuracy: Some(&metrics::BINARY_ACCURACY),
    counterpart: None,
};

pub static CATEGORICAL_CROSSENTROPY: LossKind = LossKind {
    name: "categorical_crossentropy",
    aliases: &[],
    args: CE_ARGS,
    per_example: |f, args, pred, target| {
        let t = align(f, target, pred, false)?;
        let classes = f.ty(pred).last().clone();
        let t = smooth(f, t, args.float("label_smoothing"), &classes)?;
        cce(f, t, pred, args.bool("from_logits"))
    },
    targets: Targets::Dense { ints_ok: false },
    cross_entropy: true,
    accuracy: Some(&metrics::CATEGORICAL_ACCURACY),
    counterpart: Some(&SPARSE_CATEGORICAL_CROSSENTROPY),
};

pub static SPARSE_CATEGORICAL_CROSSENTROPY: LossKind = LossKind {
    name: "sparse_categorical_crossentropy",
    aliases: &[],
    args: &[arg("from_logits", ArgKind::Bool, Default::Bool(false))],
    per_example: |f, args, pred, target| {
        let labels = align(f, target, pred, true)?;
        let t = one_hot(f, labels, pred)?;
        cce(f, t, pred, args.bool("from_logits"))
    },
    targets: Targets::SparseLabels,
    cross_entropy: true,
    accuracy: Some(&metrics::SPARSE_CATEGORICAL_ACCURACY),
    counterpart: Some(&CATEGORICAL_CROSSENTROPY),
};

/// Every loss, with Keras's argument names and defaults.
pub static LOSSES: &[&LossKind] = &[
    &MEAN_SQUARED_ERROR,
    &MEAN_ABSOLUTE_ERROR,
    &HUBER,
    &BINARY_CROSSENTROPY,
    &CATEGORICAL_CROSSENTROPY,
    &SPARSE_CATEGORICAL_CROSSENTROPY,
];

/// The loss called `name` (or an alias), exactly as written.
pub fn lookup(name: &str) -> Option<&'static LossKind> {
    find(LOSSES, name)
}
