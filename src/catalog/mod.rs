//! The catalog: every loss, metric, optimizer, learning-rate schedule, initializer,
//! activation and callback kiln knows, each as one typed value that carries all its
//! facts — Keras's name and aliases, its argument schema, and its behaviour (IR
//! lowering, optimizer state and update, host-side learning rate, sampler, callback).
//!
//! One file per family, one registry per family (`losses::LOSSES`, …). Nothing outside
//! an entry matches on its name: the spec parser resolves a name to its entry once
//! (`find`), and everything after that calls the entry's functions.
//!
//! The catalog sits low: it imports only `ir`, `args`, `dim`, `types`, `diag`, `rng`
//! and `yaml`. `args` never imports it: the catalog fills `args`'s `ArgKind::Catalog`
//! hooks (`activations::ARG`, `initializers::ARG`, `schedules::ARG`).

pub mod activations;
pub mod callbacks;
pub mod initializers;
pub mod losses;
pub mod metrics;
pub mod optimizers;
pub mod schedules;

use crate::args::ArgSpec;
use crate::diag::keras::{self, Family};
use crate::diag::{Diagnostic, did_you_mean};
use crate::ir::{Func, Id, Op, ReduceOp, Result};

/// What every catalog entry has.
pub trait Entry: Sync + 'static {
    /// Keras's snake_case name.
    fn name(&self) -> &'static str;
    /// Other names Keras accepts for it (`mse`, `acc`, `swish`, …).
    fn aliases(&self) -> &'static [&'static str];
    /// Keras's arguments and defaults.
    fn args(&self) -> &'static [ArgSpec];
    /// The family, for messages and Keras's table of names ([`crate::diag::keras`]).
    const FAMILY: Family;
}

/// Implements [`Entry`], and equality and `Debug` by name (entries hold functions,
/// which neither compare nor print meaningfully).
macro_rules! entry {
    ($t:ty, $family:ident) => {
        impl $crate::catalog::Entry for $t {
            const FAMILY: $crate::diag::keras::Family = $crate::diag::keras::Family::$family;
            fn name(&self) -> &'static str {
                self.name
            }
            fn aliases(&self) -> &'static [&'static str] {
                self.aliases
            }
            fn args(&self) -> &'static [$crate::args::ArgSpec] {
                self.args
            }
        }
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.name == other.name
            }
        }
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.name)
            }
        }
    };
}
pub(crate) use entry;

/// The entry called `name` or one of its aliases, exactly as written (callers
/// lower-case where Keras is case-insensitive).
pub fn find<K: Entry>(registry: &[&'static K], name: &str) -> Option<&'static K> {
    registry
        .iter()
        .copied()
        .find(|k| k.name() == name || k.aliases().contains(&name))
}

/// The registry's names, in order (for suggestions and lists of known names).
pub fn names<K: Entry>(
    registry: &'static [&'static K],
) -> impl Iterator<Item = &'static str> + Clone {
    registry.iter().map(|k| k.name())
}

/// Every name and alias, each entry's name before its aliases, in registry order.
pub fn all_names<K: Entry>(
    registry: &'static [&'static K],
) -> impl Iterator<Item = &'static str> + Clone {
    registry
        .iter()
        .flat_map(|k| std::iter::once(k.name()).chain(k.aliases().iter().copied()))
}

/// The error for a name that is not in a registry: a Keras name kiln lacks is said to
/// be one (E0801); otherwise `what` is the family with its article ("a loss", "an
/// optimizer"), `kind` the family alone, and the help suggests the closest of `names`,
/// else lists them.
pub fn unknown<K: Entry>(
    name: &str,
    span: std::ops::Range<usize>,
    what: &str,
    kind: &str,
    names: impl Iterator<Item = &'static str> + Clone,
) -> Diagnostic {
    if let Some(d) = keras::not_yet(K::FAMILY, name, span.clone(), names.clone()) {
        return d;
    }
    Diagnostic::error("E0602", format!("`{name}` is not {what} kiln knows"))
        .label(span, format!("unknown {kind}"))
        .help(match did_you_mean(name, names.clone()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("known: {}", names.collect::<Vec<_>>().join(", ")),
        })
}

// Numerics shared by losses and metrics.

/// Keras's `epsilon()`, used to clip probabilities.
pub const EPSILON: f64 = 1e-7;

/// Mean over every element of `x` (symbolic sizes divide at run time).
pub fn mean_all(f: &mut Func, x: Id) -> Result<Id> {
    let shape = f.ty(x).shape.clone();
    let n = crate::dim::product(&shape).map_err(|_| crate::ir::IrError("overflow".into()))?;
    let axes: Vec<usize> = (0..shape.len()).collect();
    let s = f.reduce(ReduceOp::Sum, x, axes)?;
    let c = f.dim_size(&n);
    f.div(s, c)
}

/// Brings a target to the output's shape (Keras squeezes or expands a trailing 1), or
/// for sparse labels to the output's shape without its class axis; as f32.
pub fn align(f: &mut Func, target: Id, pred: Id, sparse: bool) -> Result<Id> {
    let p = f.ty(pred).shape.clone();
    let want = if sparse { p[..p.len() - 1].to_vec() } else { p };
    // f32's dtype, reached through the IR's type (the catalog does not import `spec`).
    let f32_dtype = crate::types::DType::F32;
    let t = f.push(Op::Cast(f32_dtype), &[target])?;
    f.reshape(t, want)
}
