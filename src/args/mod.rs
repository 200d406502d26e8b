//! Declarative argument schemas, shared by layers, losses, optimizers, schedules,
//! initializers and callbacks.
//!
//! Each of those declares its arguments once as a table of [`ArgSpec`] (Keras's name,
//! type, range and default). One validator turns a YAML mapping into typed [`Args`],
//! reporting every unknown key (with did-you-mean), wrong type, out-of-range value and
//! missing required argument at its exact span.
//!
//! `args` sits below the catalog: kinds whose values a catalog family defines
//! (activations, initializers, learning rates) are [`ArgKind::Catalog`] hooks that the
//! catalog fills in, so nothing here imports it. `mod.rs` holds the schema and value
//! types, `validate.rs` the validator, `values.rs` the per-kind checks and messages.

mod validate;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use crate::diag::Diagnostic;
use crate::yaml::Node;

pub use validate::{named, validate};
pub use values::{as_float, range_error, type_error};

/// What values an argument takes.
#[derive(Clone, Copy, Debug)]
pub enum ArgKind {
    Int {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
        max: f64,
        min_open: bool,
        max_open: bool,
    },
    Bool,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A value a catalog family defines: an activation name, an initializer (a name
    /// or `{name: {args}}`), a learning rate (a number or a schedule `{name: {args}}`).
    Catalog(&'static CatalogArg),
    /// An int, or a list of `n` ints (kernel_size, strides, …), each ≥ `min`.
    IntTuple {
        n: usize,
        min: i64,
    },
    /// A list of ints (any length ≥ 1), each in `[min, max]`.
    IntList {
        min: i64,
        max: i64,
    },
    /// A list of numbers.
    FloatList,
    /// An int or a list of ints (axes; negative counts from the end).
    Axes,
    /// Free text (file paths, monitored quantities).
    Str,
    /// The name of a model input or layer whose output the layer takes as one more
    /// input (a tensor Keras passes when calling the layer: `attention_mask`); the
    /// checker appends it to the layer's inputs, after those of `inputs:`.
    Tensor,
    /// A file kiln writes, in a format its extension names: one of `extensions`
    /// (`.safetensors`), so that a Keras `.keras` or `.h5` name is refused rather than
    /// filled with another format.
    File {
        extensions: &'static [&'static str],
    },
}

/// How the catalog checks the values of one [`ArgKind::Catalog`] kind.
pub struct CatalogArg {
    /// The kind, for debugging output ("activation", "initializer", …).
    pub what: &'static str,
    /// The value shown in messages for an argument of this kind with no default.
    pub example: &'static str,
    /// The value of a [`Default::Str`] default (a name, as written in the schema).
    pub default: fn(&'static str) -> Value,
    /// Converts and checks a written value: `(spec, value, owner name, diagnostics)`.
    /// Returns `None` after pushing every error found.
    pub check: fn(&ArgSpec, &Node, &str, &mut Vec<Diagnostic>) -> Option<Value>,
}

impl fmt::Debug for CatalogArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

/// A default value.
#[derive(Clone, Copy, Debug)]
pub enum Default {
    Required,
    /// No value (Keras's `None`).
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'static str),
    Ints(&'static [i64]),
    /// The value of another argument (pooling strides default to pool_size).
    SameAs(&'static str),
}

/// One argument of a layer (or loss, optimizer, …), as Keras names it.
#[derive(Clone, Copy, Debug)]
pub struct ArgSpec {
    pub name: &'static str,
    pub kind: ArgKind,
    pub default: Default,
}

/// Shorthand constructors keep the schema tables one line per argument.
pub const fn arg(name: &'static str, kind: ArgKind, default: Default) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        default,
    }
}
pub const fn int(min: i64) -> ArgKind {
    ArgKind::Int { min, max: MAX_SIZE }
}
pub const fn float_range(min: f64, max: f64) -> ArgKind {
    ArgKind::Float {
        min,
        max,
        min_open: false,
        max_open: false,
    }
}
pub const POSITIVE_FLOAT: ArgKind = ArgKind::Float {
    min: 0.0,
    max: f64::INFINITY,
    min_open: true,
    max_open: false,
};
pub const NON_NEGATIVE_FLOAT: ArgKind = float_range(0.0, f64::INFINITY);
pub const FRACTION: ArgKind = ArgKind::Float {
    min: 0.0,
    max: 1.0,
    min_open: false,
    max_open: true,
};

/// Largest size a count argument (units, filters, …) may take: kiln indexes with i32
/// inside kernels, and a larger layer would not fit in memory anyway.
pub const MAX_SIZE: i64 = i32::MAX as i64;

/// A validated value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    /// A named thing with its own validated arguments (initializer, LR schedule).
    Named(String, Box<Args>),
}

/// Validated arguments: every argument of the schema has a value (given or default).
#[derive(Clone, Debug, PartialEq, core::default::Default)]
pub struct Args {
    values: BTreeMap<&'static str, Value>,
    /// Value spans of the arguments that were written in the spec.
    spans: BTreeMap<&'static str, Range<usize>>,
}

impl Args {
    pub fn get(&self, name: &str) -> &Value {
        self.values.get(name).unwrap_or(&Value::Null)
    }
    /// The span of an argument's value, if the spec wrote it.
    pub fn span(&self, name: &str) -> Option<Range<usize>> {
        self.spans.get(name).cloned()
    }
    pub fn is_given(&self, name: &str) -> bool {
        self.spans.contains_key(name)
    }
    pub fn int(&self, name: &str) -> i64 {
        match self.get(name) {
            Value::Int(i) => *i,
            _ => 0,
        }
    }
    pub fn opt_int(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn float(&self, name: &str) -> f64 {
        match self.get(name) {
            Value::Float(f) => *f,
            Value::Int(i) => *i as f64,
            _ => 0.0,
        }
    }
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Value::Bool(true))
    }
    pub fn str(&self, name: &str) -> &str {
        match self.get(name) {
            Value::Str(s) => s,
            Value::Named(s, _) => s,
            _ => "",
        }
    }
    pub fn opt_str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Value::Str(s) => Some(s),
            Value::Named(s, _) => Some(s),
            _ => None,
        }
    }
    pub fn ints(&self, name: &str) -> &[i64] {
        match self.get(name) {
            Value::Ints(v) => v,
            _ => &[],
        }
    }
    /// Sets a value the schema does not get from YAML (used for derived defaults).
    pub fn set(&mut self, name: &'static str, v: Value) {
        self.values.insert(name, v);
    }
    /// Arguments in schema order, for printing.
    pub fn iter(&self) -> impl Iterator<Item = (&&'static str, &Value)> {
        self.values.iter()
    }
}
