//! Keras's activation functions (keras.activations, with their defaults), each one
//! entry: its name, aliases and IR lowering. Layers' `activation:` arguments and the
//! activation layers apply them; the helpers below also serve layers with arguments
//! (`leaky_relu`'s slope, `elu`'s alpha, `gelu`'s approximation, `relu`'s clipping).

use std::ops::Range;

use super::{entry, find};
use crate::args::{ArgKind, ArgSpec, CatalogArg, Value, type_error};
use crate::diag::{Diagnostic, did_you_mean};
use crate::ir::{Cmp, Func, Id, ReduceOp, Result, Unary, err};
use crate::yaml::Node;

/// An activation function.
pub struct ActivationKind {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// Always empty: an activation is written by name only.
    pub args: &'static [ArgSpec],
    /// The function as IR (softmax and log_softmax over the last axis).
    pub lower: fn(&mut Func, Id) -> Result<Id>,
}
entry!(ActivationKind, Activation);

macro_rules! activation {
    ($id:ident, $name:literal, [$($alias:literal),*], $lower:expr) => {
        pub static $id: ActivationKind = ActivationKind {
            name: $name,
            aliases: &[$($alias),*],
            args: &[],
            lower: $lower,
        };
    };
}

activation!(LINEAR, "linear", [], |_, x| Ok(x));
activation!(RELU, "relu", [], |f, x| {
    let zero = f.scalar(0.0);
    f.max(x, zero)
});
activation!(RELU6, "relu6", [], |f, x| {
    let zero = f.scalar(0.0);
    let six = f.scalar(6.0);
    let r = f.max(x, zero)?;
    f.min(r, six)
});
activation!(LEAKY_RELU, "leaky_relu", [], |f, x| leaky(f, x, 0.2));
activation!(ELU, "elu", [], |f, x| elu(f, x, 1.0));
activation!(SELU, "selu", [], |f, x| {
    let e = elu(f, x, SELU_ALPHA)?;
    f.mul_c(e, SELU_SCALE)
});
activation!(SIGMOID, "sigmoid", [], |f, x| f.unary(Unary::Sigmoid, x));
activation!(HARD_SIGMOID, "hard_sigmoid", [], hard_sigmoid);
activation!(TANH, "tanh", [], |f, x| f.unary(Unary::Tanh, x));
activation!(SOFTMAX, "softmax", [], |f, x| {
    let last = f.ty(x).rank().saturating_sub(1);
    softmax(f, x, last)
});
activation!(LOG_SOFTMAX, "log_softmax", [], |f, x| {
    let last = f.ty(x).rank().saturating_sub(1);
    log_softmax(f, x, last)
});
activation!(SOFTPLUS, "softplus", [], softplus);
activation!(SOFTSIGN, "softsign", [], |f, x| {
    let a = f.unary(Unary::Abs, x)?;
    let d = f.add_c(a, 1.0)?;
    f.div(x, d)
});
activation!(GELU, "gelu", [], |f, x| gelu(f, x, false));
activation!(SILU, "silu", ["swish"], |f, x| {
    let s = f.unary(Unary::Sigmoid, x)?;
    f.mul(x, s)
});
activation!(HARD_SILU, "hard_silu", ["hard_swish"], |f, x| {
    let s = hard_sigmoid(f, x)?;
    f.mul(x, s)
});
activation!(EXPONENTIAL, "exponential", [], |f, x| f
    .unary(Unary::Exp, x));
activation!(MISH, "mish", [], |f, x| {
    let sp = softplus(f, x)?;
    let t = f.unary(Unary::Tanh, sp)?;
    f.mul(x, t)
});

/// Every activation, in Keras's documentation order.
pub static ACTIVATIONS: &[&ActivationKind] = &[
    &LINEAR,
    &RELU,
    &RELU6,
    &LEAKY_RELU,
    &ELU,
    &SELU,
    &SIGMOID,
    &HARD_SIGMOID,
    &TANH,
    &SOFTMAX,
    &LOG_SOFTMAX,
    &SOFTPLUS,
    &SOFTSIGN,
    &GELU,
    &SILU,
    &HARD_SILU,
    &EXPONENTIAL,
    &MISH,
];

const fn count_names(reg: &[&ActivationKind]) -> usize {
    let (mut n, mut i) = (0, 0);
    while i < reg.len() {
        n += 1 + reg[i].aliases.len();
        i += 1;
    }
    n
}

/// Every activation name and alias (each name before its aliases), as written in specs.
pub static NAMES: [&str; count_names(ACTIVATIONS)] = {
    let mut out = [""; count_names(ACTIVATIONS)];
    let (mut i, mut k) = (0, 0);
    while i < ACTIVATIONS.len() {
        out[k] = ACTIVATIONS[i].name;
        k += 1;
        let mut j = 0;
        while j < ACTIVATIONS[i].aliases.len() {
            out[k] = ACTIVATIONS[i].aliases[j];
            k += 1;
            j += 1;
        }
        i += 1;
    }
    out
};

/// The activation called `name` (or an alias), exactly as written.
pub fn lookup(name: &str) -> Option<&'static ActivationKind> {
    find(ACTIVATIONS, name)
}

/// The kind of an `activation:` argument: an activation name or alias, in any case;
/// an explicit null is `linear`.
pub static ARG: CatalogArg = CatalogArg {
    what: "activation",
    example: "relu",
    default: |s| Value::Str(s.to_string()),
    check: check_arg,
};
/// [`ARG`] as a schema kind.
pub const ACTIVATION: ArgKind = ArgKind::Catalog(&ARG);

fn check_arg(spec: &ArgSpec, v: &Node, what: &str, diags: &mut Vec<Diagnostic>) -> Option<Value> {
    if v.is_null() {
        return Some(Value::Str("linear".into()));
    }
    let Some(s) = v.as_str() else {
        diags.push(type_error(spec, v, what, "an activation name"));
        return None;
    };
    check_name(s, v.span.clone(), diags).map(Value::Str)
}

/// Checks an activation name, reporting an unknown one with a suggestion; returns it
/// lower-cased.
pub fn check_name(s: &str, span: Range<usize>, diags: &mut Vec<Diagnostic>) -> Option<String> {
    let lower = s.to_lowercase();
    if NAMES.contains(&lower.as_str()) {
        return Some(lower);
    }
    if let Some(d) = crate::diag::keras::not_yet(
        crate::diag::keras::Family::Activation,
        s,
        span.clone(),
        NAMES.iter().copied(),
    ) {
        diags.push(d);
        return None;
    }
    diags.push(
        Diagnostic::error("E0407", format!("`{s}` is not an activation kiln knows"))
            .label(span, "unknown activation")
            .help(match did_you_mean(s, NAMES.iter().copied()) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!("known activations: {}", NAMES.join(", ")),
            }),
    );
    None
}

/// Applies the activation called `name` (a name the checker accepted).
pub fn apply(f: &mut Func, name: &str, x: Id) -> Result<Id> {
    match lookup(name) {
        Some(a) => (a.lower)(f, x),
        None => err(format!("unknown activation {name}")),
    }
}

const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

/// `x` with `axis` reduced and kept as size 1, broadcast back to `x`'s shape.
fn reduce_back(f: &mut Func, op: ReduceOp, x: Id, axis: usize) -> Result<Id> {
    let r = f.reduce_keep(op, x, &[axis])?;
    let shape = f.ty(x).shape.clone();
    let dims: Vec<usize> = (0..shape.len()).collect();
    f.broadcast(r, &shape, &dims)
}

/// Softmax over `axis`, shifted by the maximum for stability.
pub fn softmax(f: &mut Func, x: Id, axis: usize) -> Result<Id> {
    let m = reduce_back(f, ReduceOp::Max, x, axis)?;
    let z = f.sub(x, m)?;
    let e = f.unary(Unary::Exp, z)?;
    let s = reduce_back(f, ReduceOp::Sum, e, axis)?;
    f.div(e, s)
}

/// log(softmax(x)) computed as `x - max - log(sum(exp(x - max)))`.
pub fn log_softmax(f: &mut Func, x: Id, axis: usize) -> Result<Id> {
    let m = reduce_back(f, ReduceOp::Max, x, axis)?;
    let z = f.sub(x, m)?;
    let e = f.unary(Unary::Exp, z)?;
    let s = reduce_back(f, ReduceOp::Sum, e, axis)?;
    let ls = f.unary(Unary::Log, s)?;
    f.sub(z, ls)
}

/// softplus(x) = max(x, 0) + log1p(exp(-|x|)), stable for large |x|.
pub fn softplus(f: &mut Func, x: Id) -> Result<Id> {
    let zero = f.scalar(0.0);
    let pos = f.max(x, zero)?;
    let a = f.unary(Unary::Abs, x)?;
    let na = f.unary(Unary::Neg, a)?;
    let e = f.unary(Unary::Exp, na)?;
    let l = f.unary(Unary::Log1p, e)?;
    f.add(pos, l)
}

/// `x` where `x > 0`, else `slope * x`.
pub fn leaky(f: &mut Func, x: Id, slope: f64) -> Result<Id> {
    let zero = f.scalar(0.0);
    let pos = f.cmp(Cmp::Gt, x, zero)?;
    let neg = f.mul_c(x, slope)?;
    f.select(pos, x, neg)
}

/// `x` where `x > 0`, else `alpha * (exp(x) - 1)`.
pub fn elu(f: &mut Func, x: Id, alpha: f64) -> Result<Id> {
    let zero = f.scalar(0.0);
    let pos = f.cmp(Cmp::Gt, x, zero)?;
    // exp of min(x, 0) so the unused branch cannot overflow.
    let xm = f.min(x, zero)?;
    let e = f.unary(Unary::Exp, xm)?;
    let em1 = f.add_c(e, -1.0)?;
    let neg = f.mul_c(em1, alpha)?;
    f.select(pos, x, neg)
}

/// relu6(x + 3) / 6.
pub fn hard_sigmoid(f: &mut Func, x: Id) -> Result<Id> {
    let x3 = f.add_c(x, 3.0)?;
    let zero = f.scalar(0.0);
    let six = f.scalar(6.0);
    let r = f.max(x3, zero)?;
    let r6 = f.min(r, six)?;
    f.mul_c(r6, 1.0 / 6.0)
}

/// Exact gelu: `0.5 x (1 + erf(x / √2))`; approximate: the tanh form.
pub fn gelu(f: &mut Func, x: Id, approximate: bool) -> Result<Id> {
    let inner = if approximate {
        let x2 = f.mul(x, x)?;
        let x3 = f.mul(x2, x)?;
        let c = f.mul_c(x3, 0.044715)?;
        let s = f.add(x, c)?;
        let k = f.mul_c(s, (2.0 / std::f64::consts::PI).sqrt())?;
        f.unary(Unary::Tanh, k)?
    } else {
        let k = f.mul_c(x, std::f64::consts::FRAC_1_SQRT_2)?;
        f.unary(Unary::Erf, k)?
    };
    let one_plus = f.add_c(inner, 1.0)?;
    let h = f.mul(x, one_plus)?;
    f.mul_c(h, 0.5)
}

/// Keras's ReLU layer (`keras.activations.relu` with `negative_slope`, `max_value`,
/// `threshold`), following Keras's formula term by term.
pub fn relu_layer(
    f: &mut Func,
    x: Id,
    max_value: Option<f64>,
    slope: f64,
    threshold: f64,
) -> Result<Id> {
    let zero = f.scalar(0.0);
    let mut y = if threshold != 0.0 {
        let th = f.scalar(threshold);
        let above = f.cmp(Cmp::Gt, x, th)?;
        f.mul(x, above)?
    } else {
        f.max(x, zero)?
    };
    if let Some(m) = max_value {
        let mv = f.scalar(m);
        let lo = f.max(y, zero)?;
        y = f.min(lo, mv)?;
    }
    if slope != 0.0 {
        let d = f.rsub_c(threshold, x)?;
        let neg = f.max(d, zero)?;
        let t = f.mul_c(neg, slope)?;
        y = f.sub(y, t)?;
    }
    Ok(y)
}
