//! Metrics with Keras's formulas (keras.metrics), each the mean over examples.

use super::losses::LossKind;
use super::{align, entry, find, mean_all};
use crate::args::ArgSpec;
use crate::dim::Dim;
use crate::ir::{Cmp, Func, Id, Op, ReduceOp, Result, Type, Unary};

/// A metric.
pub struct MetricKind {
    /// The name in logs (`accuracy`, `mae`, …).
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// Always empty: metrics are written by name.
    pub args: &'static [ArgSpec],
    /// Per-example values, 1.0/0.0 for accuracies (before the mean over the batch).
    pub per_example: fn(&mut Func, Id, Id) -> Result<Id>,
    /// Compares with integer class indices (the output's shape without its class axis)
    /// rather than targets of the output's shape.
    pub sparse_labels: bool,
    /// Keras's `accuracy` is not one metric: it becomes the accuracy that fits the loss
    /// and the shapes (`resolve(loss, output, target)`), as Keras's `compile` decides.
    pub resolve: Option<fn(&LossKind, &Type, &Type) -> &'static MetricKind>,
}
entry!(MetricKind, Metric);

impl MetricKind {
    /// The metric as a scalar: the mean over every example.
    pub fn lower(&self, f: &mut Func, pred: Id, target: Id) -> Result<Id> {
        let v = (self.per_example)(f, pred, target)?;
        mean_all(f, v)
    }

    /// The metric training reports for this one with `loss` on an output of type `out`
    /// and targets of type `target` (itself, except for `accuracy`).
    pub fn resolved(
        &'static self,
        loss: &LossKind,
        out: &Type,
        target: &Type,
    ) -> &'static MetricKind {
        match self.resolve {
            Some(r) => r(loss, out, target),
            None => self,
        }
    }
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

/// Keras's choice of accuracy by shapes: a single output unit is binary, targets with
/// fewer axes than the output are class indices, else one-hot.
fn accuracy_by_shape(out: &Type, target: &Type) -> &'static MetricKind {
    if out.shape.last().and_then(Dim::as_const) == Some(1) {
        &BINARY_ACCURACY
    } else if target.rank() < out.rank() {
        &SPARSE_CATEGORICAL_ACCURACY
    } else {
        &CATEGORICAL_ACCURACY
    }
}

/// The loss's own accuracy, else the one the shapes call for.
fn accuracy_for(loss: &LossKind, out: &Type, target: &Type) -> &'static MetricKind {
    loss.accuracy
        .unwrap_or_else(|| accuracy_by_shape(out, target))
}

pub static ACCURACY: MetricKind = MetricKind {
    name: "accuracy",
    aliases: &["acc"],
    args: &[],
    // Lowered as the accuracy the shapes call for (a loss's own choice is made by
    // `resolved` before lowering).
    per_example: |f, pred, target| {
        let m = accuracy_by_shape(f.ty(pred), f.ty(target));
        (m.per_example)(f, pred, target)
    },
    sparse_labels: false,
    resolve: Some(accuracy_for),
};

pub static SPARSE_CATEGORICAL_ACCURACY: MetricKind = MetricKind {
    name: "sparse_categorical_accuracy",
    aliases: &[],
    args: &[],
    per_example: |f, pred, target| {
        let labels = align(f, target, pred, true)?;
        let am = argmax(f, pred)?;
        f.cmp(Cmp::Eq, am, labels)
    },
    sparse_labels: true,
    resolve: None,
};

pub static CATEGORICAL_ACCURACY: MetricKind = MetricKind {
    name: "categorical_accuracy",
    aliases: &[],
    args: &[],
    per_example: |f, pred, target| {
        let t = align(f, target, pred, false)?;
        let a = argmax(f, pred)?;
        let b = argmax(f, t)?;
        f.cmp(Cmp::Eq, a, b)
    },
    sparse_labels: false,
    resolve: None,
};

pub static BINARY_ACCURACY: MetricKind = MetricKind {
    name: "binary_accuracy",
    aliases: &[],
    args: &[],
    per_example: |f, pred, target| {
        let t = align(f, target, pred, false)?;
        let half = f.scalar(0.5);
        let p = f.cmp(Cmp::Gt, pred, half)?;
        f.cmp(Cmp::Eq, p, t)
    },
    sparse_labels: false,
    resolve: None,
};

pub static MAE: MetricKind = MetricKind {
    name: "mae",
    aliases: &["mean_absolute_error"],
    args: &[],
    per_example: |f, pred, target| {
        let t = align(f, target, pred, false)?;
        let e = f.sub(pred, t)?;
        f.unary(Unary::Abs, e)
    },
    sparse_labels: false,
    resolve: None,
};

pub static MSE: MetricKind = MetricKind {
    name: "mse",
    aliases: &["mean_squared_error"],
    args: &[],
    per_example: |f, pred, target| {
        let t = align(f, target, pred, false)?;
        let e = f.sub(pred, t)?;
        f.mul(e, e)
    },
    sparse_labels: false,
    resolve: None,
};

/// Every metric; names in logs are the entries' names.
pub static METRICS: &[&MetricKind] = &[
    &ACCURACY,
    &SPARSE_CATEGORICAL_ACCURACY,
    &CATEGORICAL_ACCURACY,
    &BINARY_ACCURACY,
    &MAE,
    &MSE,
];

/// The metric called `name` (or an alias), exactly as written.
pub fn lookup(name: &str) -> Option<&'static MetricKind> {
    find(METRICS, name)
}
