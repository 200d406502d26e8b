//! Keras 3's weight and activity regularizers (`keras/src/regularizers/`), each one
//! entry: name, aliases, schema, and its penalty as IR.
//!
//! A layer's `kernel_regularizer`, `bias_regularizer` (and `embeddings_regularizer`,
//! …) put `penalty(weight)` into the loss; its `activity_regularizer` puts
//! `penalty(output) / batch size` (Keras's `Layer.__call__`). The training step and
//! evaluation add every such term to the loss, as Keras's `compute_loss` adds
//! `model.losses`.
//!
//! Keras's string identifiers build the class with its own defaults: `l1` is
//! `L1(l1=0.01)`, `l2` is `L2(l2=0.01)`, and `l1l2` (the only string Keras accepts for
//! it; kiln also takes `l1_l2`, its function's name) is `L1L2(l1=0.0, l2=0.0)`, a
//! penalty of zero unless its factors are given (`{l1_l2: {l1: 0.01, l2: 0.01}}`).

use std::ops::Range;

use super::{entry, find, names, unknown};
use crate::args::{
    ArgKind, ArgSpec, Args, CatalogArg, Default, NON_NEGATIVE_FLOAT, Value, arg, named, type_error,
    validate,
};
use crate::diag::Diagnostic;
use crate::ir::{Cmp, Func, Id, ReduceOp, Result};
use crate::yaml::Node;

/// A regularizer of the catalog.
pub struct RegularizerKind {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub args: &'static [ArgSpec],
    /// `(l1, l2)` factors from validated arguments (defaults filled in).
    pub factors: fn(&Args) -> (f64, f64),
}
entry!(RegularizerKind, Regularizer);

impl RegularizerKind {
    /// Keras's penalty of `x`: `l1 * sum(|x|) + l2 * sum(x²)`, a term only where its
    /// factor is not zero (as Keras's `L1L2.__call__`), a scalar.
    pub fn penalty(&self, f: &mut Func, args: &Args, x: Id) -> Result<Id> {
        let (l1, l2) = (self.factors)(args);
        let axes: Vec<usize> = (0..f.ty(x).rank()).collect();
        let mut total = f.scalar(0.0);
        if l1 != 0.0 {
            let a = abs_jax(f, x)?;
            let s = f.reduce(ReduceOp::Sum, a, axes.clone())?;
            let t = f.mul_c(s, l1)?;
            total = f.add(total, t)?;
        }
        if l2 != 0.0 {
            let sq = f.mul(x, x)?;
            let s = f.reduce(ReduceOp::Sum, sq, axes)?;
            let t = f.mul_c(s, l2)?;
            total = f.add(total, t)?;
        }
        Ok(total)
    }
}

/// `|x|` whose gradient is JAX's (Keras's backend here): +1 at 0, where the sign's
/// would be 0. At zero-initialized biases this decides the first step of an `l1`
/// penalty: `x · s` with `s = 1 where x ≥ 0, else -1`, `s` a constant of the graph.
fn abs_jax(f: &mut Func, x: Id) -> Result<Id> {
    let zero = f.scalar(0.0);
    let nonneg = f.cmp(Cmp::Ge, x, zero)?;
    let one = f.scalar(1.0);
    let minus = f.scalar(-1.0);
    let s = f.select(nonneg, one, minus)?;
    f.mul(x, s)
}

const FACTOR: ArgKind = NON_NEGATIVE_FLOAT;

pub static L1: RegularizerKind = RegularizerKind {
    name: "l1",
    aliases: &[],
    args: &[arg("l1", FACTOR, Default::Float(0.01))],
    factors: |a| (a.float("l1"), 0.0),
};
pub static L2: RegularizerKind = RegularizerKind {
    name: "l2",
    aliases: &[],
    args: &[arg("l2", FACTOR, Default::Float(0.01))],
    factors: |a| (0.0, a.float("l2")),
};
pub static L1_L2: RegularizerKind = RegularizerKind {
    name: "l1_l2",
    aliases: &["l1l2"],
    args: &[
        arg("l1", FACTOR, Default::Float(0.0)),
        arg("l2", FACTOR, Default::Float(0.0)),
    ],
    factors: |a| (a.float("l1"), a.float("l2")),
};

/// Every regularizer, with Keras's arguments.
pub static REGULARIZERS: &[&RegularizerKind] = &[&L1, &L2, &L1_L2];

/// The regularizer called `name` (or an alias), exactly as written.
pub fn lookup(name: &str) -> Option<&'static RegularizerKind> {
    find(REGULARIZERS, name)
}

/// The kind of a `…_regularizer:` argument: `null`, a regularizer name (any case, as
/// Keras's class names `L1`, `L2`, `L1L2`), or `{name: {arguments}}`.
pub static ARG: CatalogArg = CatalogArg {
    what: "regularizer",
    example: "l2",
    default: |s| Value::Named(s.to_string(), Box::default()),
    check: check_regularizer,
};
/// [`ARG`] as a schema kind.
pub const REGULARIZER: ArgKind = ArgKind::Catalog(&ARG);

/// The layer arguments that take a regularizer (default none), shared by the layers
/// that accept them in Keras.
pub const KERNEL: ArgSpec = arg("kernel_regularizer", REGULARIZER, Default::Null);
pub const BIAS: ArgSpec = arg("bias_regularizer", REGULARIZER, Default::Null);
pub const ACTIVITY: ArgSpec = arg("activity_regularizer", REGULARIZER, Default::Null);
pub const RECURRENT: ArgSpec = arg("recurrent_regularizer", REGULARIZER, Default::Null);
pub const DEPTHWISE: ArgSpec = arg("depthwise_regularizer", REGULARIZER, Default::Null);
pub const POINTWISE: ArgSpec = arg("pointwise_regularizer", REGULARIZER, Default::Null);

/// The suffix of a layer argument that regularizes weights: Keras pairs
/// `X_regularizer` with `X_initializer` in each `add_weight` call (`kernel_regularizer`
/// on every kernel of the layer: a multi_head_attention's `query/kernel`, …;
/// `depthwise_regularizer` on a depthwise convolution's `kernel`), and so does a
/// layer's `Param::regularizer`.
pub const SUFFIX: &str = "_regularizer";
/// The argument that regularizes the layer's output instead of a weight.
pub const ACTIVITY_ARG: &str = "activity_regularizer";

fn check_regularizer(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    if v.is_null() {
        return Some(Value::Null);
    }
    let Some((name, name_span, args)) = named(v) else {
        diags.push(type_error(
            spec,
            v,
            what,
            "a regularizer name (`l1`, `l2`, `l1_l2`) or `{name: {arguments}}`",
        ));
        return None;
    };
    let kind = find_or_report(name, name_span.clone(), diags)?;
    let a = validate(kind.args, args, kind.name, name_span, diags)?;
    Some(Value::Named(kind.name.to_string(), Box::new(a)))
}

fn find_or_report(
    name: &str,
    span: Range<usize>,
    diags: &mut Vec<Diagnostic>,
) -> Option<&'static RegularizerKind> {
    let k = lookup(&name.to_lowercase());
    if k.is_none() {
        diags.push(unknown::<RegularizerKind>(
            name,
            span,
            "a regularizer",
            "regularizer",
            names(REGULARIZERS),
        ));
    }
    k
}

/// The penalty of a validated regularizer argument (`Value::Named`) on `x`; `None`
/// for `null`.
pub fn penalty(f: &mut Func, v: &Value, x: Id) -> Result<Option<Id>> {
    let Value::Named(name, args) = v else {
        return Ok(None);
    };
    let kind =
        lookup(name).ok_or_else(|| crate::ir::IrError(format!("unknown regularizer {name}")))?;
    let mut a = (**args).clone();
    for spec in kind.args {
        if matches!(a.get(spec.name), Value::Null)
            && let Default::Float(d) = spec.default
        {
            a.set(spec.name, Value::Float(d));
        }
    }
    kind.penalty(f, &a, x).map(Some)
}
