//! Metrics with Keras's formulas (keras.metrics), accumulated over an epoch as Keras's
//! metric objects accumulate them: a metric's [`Stat`] says what one batch adds to its
//! state (sums that add up across batches) and how the state becomes the value logged.
//! Mean metrics (accuracies, `mae`, …) keep a weighted total and a count, so the
//! epoch's value is the mean over examples; `precision`, `recall` and `auc` keep
//! confusion counts, so their epoch value is computed once from the epoch's counts, not
//! averaged over batches.

use super::losses::{LossKind, one_hot};
use super::{align, entry, find};
use crate::args::{ArgKind, ArgSpec, Args, Default, FRACTION, Value, arg};
use crate::dim::Dim;
use crate::ir::{Cmp, Func, Id, Op, ReduceOp, Result, Type, Unary};

/// A counting metric's update: `(f, args, pred, target, weight)` → state arrays.
pub type CountsUpdate = fn(&mut Func, &Args, Id, Id, Option<Id>) -> Result<Vec<Id>>;

/// How a metric accumulates over batches and what it reports.
pub enum Stat {
    /// Keras's `MeanMetricWrapper`: per-example values (`fn(f, args, pred, target)`,
    /// averaged over any axes after the example axis), state `[Σ w·v, Σ w]` (`w` the
    /// sample weight, 1 without), value `Σ w·v / Σ w`.
    Mean(fn(&mut Func, &Args, Id, Id) -> Result<Id>),
    /// Keras's `RootMeanSquaredError`: the square root of the mean of squared errors.
    RootMean(fn(&mut Func, &Args, Id, Id) -> Result<Id>),
    /// Counts (confusion matrices at thresholds): `update(f, args, pred, target,
    /// weight)` gives arrays whose elements, in order and summed over batches, are the
    /// state; `result(args, state)` the value.
    Counts {
        update: CountsUpdate,
        result: fn(&Args, &[f64]) -> f64,
    },
}

/// A metric.
pub struct MetricKind {
    /// The name in logs (`accuracy`, `mae`, …).
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// Keras's arguments of the metric's class (`k` of top-k accuracy, …).
    pub args: &'static [ArgSpec],
    pub stat: Stat,
    /// Compares with integer class indices (the output's shape without its class axis)
    /// rather than targets of the output's shape.
    pub sparse_labels: bool,
    /// Keras's `accuracy` is not one metric: it becomes the accuracy that fits the loss
    /// and the shapes (`resolve(loss, output, target)`), as Keras's `compile` decides.
    pub resolve: Option<fn(&LossKind, &Type, &Type) -> &'static MetricKind>,
}
entry!(MetricKind, Metric);

impl MetricKind {
    /// Whether the metric is a (weighted) mean of per-step values, so that a mask over
    /// the steps can weight it (Keras's `MeanMetricWrapper` under a mask).
    pub fn takes_step_weights(&self) -> bool {
        matches!(self.stat, Stat::Mean(_) | Stat::RootMean(_))
    }

    /// What one batch adds to the metric's state: arrays whose elements, in order, are
    /// [`MetricKind::state_len`] sums. `weight`: the batch's sample weights `[batch]`.
    pub fn update(
        &self,
        f: &mut Func,
        args: &Args,
        pred: Id,
        target: Id,
        weight: Option<Id>,
    ) -> Result<Vec<Id>> {
        match &self.stat {
            Stat::Mean(v) | Stat::RootMean(v) => {
                let values = v(f, args, pred, target)?;
                mean_update(f, values, weight)
            }
            Stat::Counts { update, .. } => update(f, args, pred, target, weight),
        }
    }

    /// The value of a state (sums over the epoch's batches).
    pub fn result(&self, args: &Args, state: &[f64]) -> f64 {
        match &self.stat {
            Stat::Mean(_) => divide_no_nan(state[0], state[1]),
            Stat::RootMean(_) => divide_no_nan(state[0], state[1]).sqrt(),
            Stat::Counts { result, .. } => result(args, state),
        }
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

/// Keras's `divide_no_nan`: 0 where the divisor is 0.
fn divide_no_nan(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// The state of a mean metric for one batch: `[Σ w·v, Σ w]` with `v` the per-example
/// values averaged over the axes after the first (Keras's `reduce_to_samplewise_values`).
fn mean_update(f: &mut Func, values: Id, weight: Option<Id>) -> Result<Vec<Id>> {
    let shape = f.ty(values).shape.clone();
    // The weights cover the leading axes (`[batch]`, or `[batch, steps]` under a mask);
    // the values are averaged over the rest.
    let k = weight
        .map_or(1, |w| f.ty(w).rank())
        .clamp(1, shape.len().max(1));
    let per_example = if shape.len() > k {
        let inner: Vec<usize> = (k..shape.len()).collect();
        let s = f.reduce(ReduceOp::Sum, values, inner)?;
        let n =
            crate::dim::product(&shape[k..]).map_err(|_| crate::ir::IrError("overflow".into()))?;
        let c = f.dim_size(&n);
        f.div(s, c)?
    } else {
        values
    };
    let lead: Vec<usize> = (0..k.min(shape.len())).collect();
    match weight {
        Some(w) => {
            let wv = f.mul(per_example, w)?;
            let total = f.reduce(ReduceOp::Sum, wv, lead.clone())?;
            let count = f.reduce(ReduceOp::Sum, w, lead)?;
            Ok(vec![total, count])
        }
        None => {
            let total = f.reduce(ReduceOp::Sum, per_example, vec![0])?;
            let count = f.dim_size(&shape[0]);
            Ok(vec![total, count])
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

/// Keras's `in_top_k(labels, pred, k)` (jax): 1.0 where fewer than `k` classes score
/// strictly higher than the label's class. `labels`: class indices, `pred`'s shape
/// without its last axis.
fn in_top_k(f: &mut Func, labels: Id, pred: Id, k: i64) -> Result<Id> {
    let shape = f.ty(pred).shape.clone();
    let r = shape.len();
    let is_label = one_hot(f, labels, pred)?;
    let low = f.scalar(f64::from(f32::MIN));
    let at = f.select(is_label, pred, low)?;
    let at_label = f.reduce_keep(ReduceOp::Max, at, &[r - 1])?;
    let dims: Vec<usize> = (0..r).collect();
    let at_label = f.broadcast(at_label, &shape, &dims)?;
    let higher = f.cmp(Cmp::Gt, pred, at_label)?;
    let count = f.reduce(ReduceOp::Sum, higher, vec![r - 1])?;
    let k = f.scalar(k as f64);
    f.cmp(Cmp::Lt, count, k)
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
    stat: Stat::Mean(|f, args, pred, target| {
        let m = accuracy_by_shape(f.ty(pred), f.ty(target));
        match &m.stat {
            Stat::Mean(v) => v(f, args, pred, target),
            _ => crate::ir::err("accuracy resolves to a mean metric"),
        }
    }),
    sparse_labels: false,
    resolve: Some(accuracy_for),
};

pub static SPARSE_CATEGORICAL_ACCURACY: MetricKind = MetricKind {
    name: "sparse_categorical_accuracy",
    aliases: &[],
    args: &[],
    stat: Stat::Mean(|f, _, pred, target| {
        let labels = align(f, target, pred, true)?;
        let am = argmax(f, pred)?;
        f.cmp(Cmp::Eq, am, labels)
    }),
    sparse_labels: true,
    resolve: None,
};

pub static CATEGORICAL_ACCURACY: MetricKind = MetricKind {
    name: "categorical_accuracy",
    aliases: &[],
    args: &[],
    stat: Stat::Mean(|f, _, pred, target| {
        let t = align(f, target, pred, false)?;
        let a = argmax(f, pred)?;
        let b = argmax(f, t)?;
        f.cmp(Cmp::Eq, a, b)
    }),
    sparse_labels: false,
    resolve: None,
};

pub static BINARY_ACCURACY: MetricKind = MetricKind {
    name: "binary_accuracy",
    aliases: &[],
    args: &[arg("threshold", FRACTION, Default::Float(0.5))],
    stat: Stat::Mean(|f, args, pred, target| {
        let t = align(f, target, pred, false)?;
        let thr = f.scalar(threshold(args, "threshold"));
        let p = f.cmp(Cmp::Gt, pred, thr)?;
        f.cmp(Cmp::Eq, p, t)
    }),
    sparse_labels: false,
    resolve: None,
};

/// A threshold argument, 0.5 when absent (`accuracy` resolved to this one has none).
fn threshold(args: &Args, name: &str) -> f64 {
    match args.get(name) {
        Value::Float(v) => *v,
        Value::Int(v) => *v as f64,
        _ => 0.5,
    }
}

const TOP_K: &[ArgSpec] = &[arg(
    "k",
    ArgKind::Int {
        min: 1,
        max: 1 << 30,
    },
    Default::Int(5),
)];

pub static TOP_K_CATEGORICAL_ACCURACY: MetricKind = MetricKind {
    name: "top_k_categorical_accuracy",
    aliases: &[],
    args: TOP_K,
    stat: Stat::Mean(|f, args, pred, target| {
        let t = align(f, target, pred, false)?;
        let labels = argmax(f, t)?;
        in_top_k(f, labels, pred, args.int("k"))
    }),
    sparse_labels: false,
    resolve: None,
};

pub static SPARSE_TOP_K_CATEGORICAL_ACCURACY: MetricKind = MetricKind {
    name: "sparse_top_k_categorical_accuracy",
    aliases: &[],
    args: TOP_K,
    stat: Stat::Mean(|f, args, pred, target| {
        let labels = align(f, target, pred, true)?;
        in_top_k(f, labels, pred, args.int("k"))
    }),
    sparse_labels: true,
    resolve: None,
};

/// `pred - target`, the target brought to the output's shape.
fn error(f: &mut Func, pred: Id, target: Id) -> Result<Id> {
    let t = align(f, target, pred, false)?;
    f.sub(pred, t)
}

pub static MAE: MetricKind = MetricKind {
    name: "mae",
    aliases: &["mean_absolute_error"],
    args: &[],
    stat: Stat::Mean(|f, _, pred, target| {
        let e = error(f, pred, target)?;
        f.unary(Unary::Abs, e)
    }),
    sparse_labels: false,
    resolve: None,
};

pub static MSE: MetricKind = MetricKind {
    name: "mse",
    aliases: &["mean_squared_error"],
    args: &[],
    stat: Stat::Mean(|f, _, pred, target| {
        let e = error(f, pred, target)?;
        f.mul(e, e)
    }),
    sparse_labels: false,
    resolve: None,
};

pub static ROOT_MEAN_SQUARED_ERROR: MetricKind = MetricKind {
    name: "root_mean_squared_error",
    aliases: &[],
    args: &[],
    stat: Stat::RootMean(|f, _, pred, target| {
        let e = error(f, pred, target)?;
        f.mul(e, e)
    }),
    sparse_labels: false,
    resolve: None,
};

/// Targets and predictions for confusion counts: the target as 1/0 (Keras casts it to
/// bool: any nonzero value is a positive) at the output's shape, and the weight of
/// each element (the example's sample weight, or 1).
fn confusion_inputs(
    f: &mut Func,
    pred: Id,
    target: Id,
    weight: Option<Id>,
) -> Result<(Id, Id, Id)> {
    let shape = f.ty(pred).shape.clone();
    let t = align(f, target, pred, false)?;
    let zero = f.scalar(0.0);
    let truth = f.cmp(Cmp::Ne, t, zero)?;
    let w = match weight {
        Some(w) => f.broadcast(w, &shape, &[0])?,
        None => f.full(1.0, &shape)?,
    };
    Ok((pred, truth, w))
}

/// Σ over every element of `x`.
fn sum_all(f: &mut Func, x: Id) -> Result<Id> {
    let axes: Vec<usize> = (0..f.ty(x).rank()).collect();
    f.reduce(ReduceOp::Sum, x, axes)
}

/// True and false positives at one threshold (a prediction above it is positive), and
/// the weighted count of true labels: Keras's confusion update with one threshold.
fn counts_at(
    f: &mut Func,
    args: &Args,
    pred: Id,
    target: Id,
    weight: Option<Id>,
) -> Result<[Id; 3]> {
    let (p, truth, w) = confusion_inputs(f, pred, target, weight)?;
    let thr = f.scalar(threshold(args, "thresholds"));
    let pos = f.cmp(Cmp::Gt, p, thr)?;
    let tw = f.mul(truth, w)?;
    let not = f.rsub_c(1.0, truth)?;
    let fw = f.mul(not, w)?;
    let tp = f.mul(pos, tw)?;
    let fp = f.mul(pos, fw)?;
    Ok([sum_all(f, tp)?, sum_all(f, fp)?, sum_all(f, tw)?])
}

const THRESHOLD: &[ArgSpec] = &[arg("thresholds", FRACTION, Default::Null)];

pub static PRECISION: MetricKind = MetricKind {
    name: "precision",
    aliases: &[],
    args: THRESHOLD,
    // State: true positives, false positives.
    stat: Stat::Counts {
        update: |f, args, pred, target, weight| {
            let [tp, fp, _] = counts_at(f, args, pred, target, weight)?;
            Ok(vec![tp, fp])
        },
        result: |_, s| divide_no_nan(s[0], s[0] + s[1]),
    },
    sparse_labels: false,
    resolve: None,
};

pub static RECALL: MetricKind = MetricKind {
    name: "recall",
    aliases: &[],
    args: THRESHOLD,
    // State: true positives, weighted true labels (tp + fn).
    stat: Stat::Counts {
        update: |f, args, pred, target, weight| {
            let [tp, _, t] = counts_at(f, args, pred, target, weight)?;
            Ok(vec![tp, t])
        },
        result: |_, s| divide_no_nan(s[0], s[1]),
    },
    sparse_labels: false,
    resolve: None,
};

/// Keras's AUC update with evenly spaced thresholds (`-ε, 1/(n-1), …, 1+ε`): each
/// prediction, clipped to [0, 1], falls in bucket `max(ceil(p·(n-1)) - 1, 0)` and is
/// positive at every threshold up to its bucket. State: true positives, false
/// positives, true negatives and false negatives, `n` each.
fn auc_update(
    f: &mut Func,
    args: &Args,
    pred: Id,
    target: Id,
    weight: Option<Id>,
) -> Result<Vec<Id>> {
    let n = args.int("num_thresholds");
    let p = if args.bool("from_logits") {
        f.unary(Unary::Sigmoid, pred)?
    } else {
        pred
    };
    let p = super::losses::clip(f, p, 0.0, 1.0)?;
    let (p, truth, w) = confusion_inputs(f, p, target, weight)?;
    let scaled = f.mul_c(p, (n - 1) as f64)?;
    // ceil(x) = -floor(-x)
    let neg = f.unary(Unary::Neg, scaled)?;
    let fl = f.unary(Unary::Floor, neg)?;
    let ceil = f.unary(Unary::Neg, fl)?;
    let b = f.add_c(ceil, -1.0)?;
    let zero = f.scalar(0.0);
    let bucket = f.max(b, zero)?;
    let tw = f.mul(truth, w)?;
    let not = f.rsub_c(1.0, truth)?;
    let fw = f.mul(not, w)?;
    // [n, …]: element positive at threshold i when its bucket is at least i.
    let shape = f.ty(p).shape.clone();
    let mut big = vec![Dim::from(n)];
    big.extend(shape.iter().cloned());
    let dims: Vec<usize> = (1..big.len()).collect();
    let bb = f.broadcast(bucket, &big, &dims)?;
    let iota = f.push_typed(Op::Iota { axis: 0 }, &[], Type::f32(big.clone()));
    let pos = f.cmp(Cmp::Ge, bb, iota)?;
    let rest: Vec<usize> = (1..big.len()).collect();
    let twb = f.broadcast(tw, &big, &dims)?;
    let fwb = f.broadcast(fw, &big, &dims)?;
    let tpv = f.mul(pos, twb)?;
    let fpv = f.mul(pos, fwb)?;
    let tp = f.reduce(ReduceOp::Sum, tpv, rest.clone())?;
    let fp = f.reduce(ReduceOp::Sum, fpv, rest)?;
    let total_true = sum_all(f, tw)?;
    let total_false = sum_all(f, fw)?;
    let tn = {
        let tf = f.broadcast(total_false, &[Dim::from(n)], &[])?;
        f.sub(tf, fp)?
    };
    let fneg = {
        let tt = f.broadcast(total_true, &[Dim::from(n)], &[])?;
        f.sub(tt, tp)?
    };
    Ok(vec![tp, fp, tn, fneg])
}

/// Keras's AUC of the ROC curve from its state: recall against the false-positive
/// rate at each threshold, summed as trapezoids (`interpolation`) or as rectangles of
/// the lower (`minoring`) or higher (`majoring`) height.
fn auc_result(args: &Args, s: &[f64]) -> f64 {
    let n = args.int("num_thresholds") as usize;
    let (tp, fp, tn, fneg) = (&s[..n], &s[n..2 * n], &s[2 * n..3 * n], &s[3 * n..4 * n]);
    let y: Vec<f64> = (0..n)
        .map(|i| divide_no_nan(tp[i], tp[i] + fneg[i]))
        .collect();
    let x: Vec<f64> = (0..n)
        .map(|i| divide_no_nan(fp[i], fp[i] + tn[i]))
        .collect();
    let method = args.str("summation_method");
    (0..n - 1)
        .map(|i| {
            let h = match method {
                "minoring" => y[i].min(y[i + 1]),
                "majoring" => y[i].max(y[i + 1]),
                _ => (y[i] + y[i + 1]) / 2.0,
            };
            (x[i] - x[i + 1]) * h
        })
        .sum()
}

pub static AUC: MetricKind = MetricKind {
    name: "auc",
    aliases: &[],
    args: &[
        arg(
            "num_thresholds",
            ArgKind::Int {
                min: 2,
                max: 1 << 16,
            },
            Default::Int(200),
        ),
        arg("curve", ArgKind::Choice(&["ROC"]), Default::Str("ROC")),
        arg(
            "summation_method",
            ArgKind::Choice(&["interpolation", "minoring", "majoring"]),
            Default::Str("interpolation"),
        ),
        arg("from_logits", ArgKind::Bool, Default::Bool(false)),
    ],
    stat: Stat::Counts {
        update: auc_update,
        result: auc_result,
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
    &TOP_K_CATEGORICAL_ACCURACY,
    &SPARSE_TOP_K_CATEGORICAL_ACCURACY,
    &MAE,
    &MSE,
    &ROOT_MEAN_SQUARED_ERROR,
    &PRECISION,
    &RECALL,
    &AUC,
];

/// The metric called `name` (or an alias), exactly as written.
pub fn lookup(name: &str) -> Option<&'static MetricKind> {
    find(METRICS, name)
}
