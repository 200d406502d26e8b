//! Declarative argument schemas, shared by layers, losses, optimizers, schedules,
//! initializers and callbacks.
//!
//! Each of those declares its arguments once as a table of [`ArgSpec`] (Keras's name,
//! type, range and default). One validator turns a YAML mapping into typed [`Args`],
//! reporting every unknown key (with did-you-mean), wrong type, out-of-range value and
//! missing required argument at its exact span.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::catalog::{self, initializers, schedules};
use crate::diag::{Diagnostic, did_you_mean};
use crate::yaml::{Kind, Node, Scalar};

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
    /// A Keras activation name.
    Activation,
    /// A Keras initializer: a name, or `{name: {args}}`.
    Initializer,
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
    /// A number, or a learning-rate schedule `{name: {args}}`.
    LearningRate,
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

/// Keras activation names (and aliases) kiln accepts wherever Keras accepts an
/// activation: the activation catalog's.
pub static ACTIVATIONS: &[&str] = &crate::catalog::activations::NAMES;

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

/// Keys that a Keras user may write but kiln does not support yet, with why.
pub const UNSUPPORTED: &[(&str, &str)] = &[
    ("kernel_regularizer", "regularizers are not supported yet"),
    ("bias_regularizer", "regularizers are not supported yet"),
    ("activity_regularizer", "regularizers are not supported yet"),
    (
        "recurrent_regularizer",
        "regularizers are not supported yet",
    ),
    ("kernel_constraint", "constraints are not supported yet"),
    ("bias_constraint", "constraints are not supported yet"),
    ("recurrent_constraint", "constraints are not supported yet"),
    ("dtype", "layers compute in f32; set dtypes on `inputs`"),
    (
        "input_shape",
        "shapes are declared under `inputs:`, e.g. `inputs: {x: [batch, 784]}`",
    ),
    (
        "data_format",
        "kiln is channels_last only, as Keras's default",
    ),
    ("trainable", "freezing layers is not supported yet"),
    (
        "return_state",
        "layers return one tensor; use `return_sequences`",
    ),
    ("stateful", "stateful recurrent layers are not supported"),
    (
        "recurrent_dropout",
        "dropout inside recurrent cells is not supported yet; add a `dropout` layer instead",
    ),
    ("mask_zero", "masking is not supported yet"),
    ("amsgrad", "AMSGrad is not supported yet"),
    ("use_ema", "weight averaging (EMA) is not supported yet"),
];

/// Validates a mapping of arguments against a schema. `what` names the owner for
/// messages ("dense", "adam", …); `owner_span` is where missing arguments are reported.
/// Returns `None` when any error was found (all of them are pushed to `diags`).
pub fn validate(
    schema: &[ArgSpec],
    node: Option<&Node>,
    what: &str,
    owner_span: Range<usize>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Args> {
    // Unknown keys are reported but do not stop the layer from being checked further;
    // a value that failed to convert or a missing required argument does.
    let mut failed = false;
    let mut args = Args::default();
    // Arguments that an unknown key was probably meant to be (`unit` → `units`): the
    // typo is reported once, not again as a missing argument.
    let mut meant: Vec<&str> = Vec::new();
    let entries = arg_entries(schema, node, what, diags)?;
    for (k, v) in entries {
        let Some(spec) = arg_spec(schema, k, what, &mut meant, diags) else {
            continue;
        };
        match convert(spec, v, what, diags) {
            Some(value) => {
                args.values.insert(spec.name, value);
                args.spans.insert(spec.name, v.span.clone());
            }
            None => failed = true,
        }
    }
    for spec in schema {
        if args.values.contains_key(spec.name) || args.spans.contains_key(spec.name) {
            continue;
        }
        let Some(value) = default_value(spec, &args) else {
            failed = true;
            if !entries.iter().any(|(k, _)| k.as_str() == Some(spec.name))
                && !meant.contains(&spec.name)
            {
                diags.push(
                    Diagnostic::error(
                        "E0406",
                        format!("`{what}` needs the argument `{}`", spec.name),
                    )
                    .label(
                        owner_span.clone(),
                        format!("`{}` is missing here", spec.name),
                    )
                    .help(example_args(schema, what)),
                );
            }
            continue;
        };
        args.values.insert(spec.name, value);
    }
    (!failed).then_some(args)
}

/// The written `key: value` pairs (none for a bare owner or `null`); E0403 when the
/// arguments are not a mapping.
fn arg_entries<'a>(
    schema: &[ArgSpec],
    node: Option<&'a Node>,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<&'a [(Node, Node)]> {
    match node {
        None => Some(&[]),
        Some(n) if n.is_null() => Some(&[]),
        Some(n) => match n.as_map() {
            Some(m) => Some(m),
            None => {
                diags.push(
                    Diagnostic::error(
                        "E0403",
                        format!(
                            "the arguments of `{what}` must be a mapping, but this is {}",
                            n.describe()
                        ),
                    )
                    .label(n.span.clone(), "expected `{argument: value, …}`")
                    .help(example_args(schema, what)),
                );
                None
            }
        },
    }
}

/// The schema entry a key names; a key that is not a word, a Keras argument kiln does
/// not support, or an unknown one is reported (an unknown key's likely meaning goes to
/// `meant`).
fn arg_spec<'s>(
    schema: &'s [ArgSpec],
    k: &Node,
    what: &str,
    meant: &mut Vec<&'s str>,
    diags: &mut Vec<Diagnostic>,
) -> Option<&'s ArgSpec> {
    let Some(key) = k.as_str() else {
        diags.push(
            Diagnostic::error(
                "E0401",
                format!(
                    "argument names of `{what}` are words, but this is {}",
                    k.describe()
                ),
            )
            .label(k.span.clone(), "not an argument name")
            .help(example_args(schema, what)),
        );
        return None;
    };
    if let Some(spec) = schema.iter().find(|s| s.name == key) {
        return Some(spec);
    }
    if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == key) {
        diags.push(
            Diagnostic::error(
                "E0402",
                format!("`{key}` is a Keras argument that kiln does not support: {why}"),
            )
            .label(k.span.clone(), "not supported")
            .help("remove this argument"),
        );
        return None;
    }
    let suggestion = did_you_mean(key, schema.iter().map(|s| s.name));
    meant.extend(suggestion);
    let names: Vec<&str> = schema.iter().map(|s| s.name).collect();
    let help = match suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None if names.is_empty() => format!("`{what}` takes no arguments"),
        None => format!("`{what}` takes: {}", names.join(", ")),
    };
    diags.push(
        Diagnostic::error("E0401", format!("`{what}` has no argument `{key}`"))
            .label(k.span.clone(), "unknown argument")
            .help(help),
    );
    None
}

/// The value of an argument that was not written; `None` for a required one.
fn default_value(spec: &ArgSpec, args: &Args) -> Option<Value> {
    Some(match spec.default {
        Default::Required => return None,
        Default::Null => Value::Null,
        Default::Int(i) => match spec.kind {
            ArgKind::IntTuple { n, .. } => Value::Ints(vec![i; n]),
            _ => Value::Int(i),
        },
        Default::Float(f) => Value::Float(f),
        Default::Bool(b) => Value::Bool(b),
        Default::Str(s) => match spec.kind {
            ArgKind::Initializer => Value::Named(s.to_string(), Box::default()),
            _ => Value::Str(s.to_string()),
        },
        Default::Ints(v) => Value::Ints(v.to_vec()),
        Default::SameAs(other) => args.values.get(other).cloned().unwrap_or(Value::Null),
    })
}

/// `e.g. dense: {units: 64}` built from the required arguments.
fn example_args(schema: &[ArgSpec], what: &str) -> String {
    let required: Vec<String> = schema
        .iter()
        .filter(|s| matches!(s.default, Default::Required))
        .map(|s| format!("{}: {}", s.name, example(s)))
        .collect();
    if required.is_empty() {
        format!("write `{what}` alone, or `{what}: {{argument: value}}`")
    } else {
        format!("for example `{what}: {{{}}}`", required.join(", "))
    }
}

/// An example value for an argument: its default where it has one.
fn example(spec: &ArgSpec) -> String {
    match spec.default {
        Default::Int(i) => i.to_string(),
        Default::Float(f) => format!("{f:?}"),
        Default::Bool(b) => b.to_string(),
        Default::Str(s) => s.to_string(),
        _ => match spec.kind {
            ArgKind::Int { min, .. } if min > 64 => min.to_string(),
            ArgKind::Float { min, max, .. } if max <= 1.0 && min >= 0.0 => "0.5".into(),
            k => example_value(k).to_string(),
        },
    }
}

fn example_value(kind: ArgKind) -> &'static str {
    match kind {
        ArgKind::Int { .. } => "64",
        ArgKind::Float { .. } | ArgKind::LearningRate => "0.1",
        ArgKind::Bool => "true",
        ArgKind::Activation => "relu",
        ArgKind::IntTuple { .. } => "3",
        ArgKind::IntList { .. } | ArgKind::Axes => "[1, 2]",
        ArgKind::FloatList => "[0.1, 0.01]",
        _ => "…",
    }
}

fn type_error(spec: &ArgSpec, v: &Node, what: &str, expected: &str) -> Diagnostic {
    Diagnostic::error(
        "E0403",
        format!(
            "`{}` of `{what}` must be {expected}, but this is {}",
            spec.name,
            v.describe()
        ),
    )
    .label(v.span.clone(), format!("expected {expected}"))
    .help(format!(
        "write {expected} here, e.g. `{}: {}`",
        spec.name,
        example(spec)
    ))
}

fn range_error(spec: &ArgSpec, v: &Node, what: &str, rule: String) -> Diagnostic {
    Diagnostic::error("E0404", format!("`{}` of `{what}` {rule}", spec.name))
        .label(v.span.clone(), "out of range")
        .help(format!(
            "use a value in range, e.g. `{}: {}`",
            spec.name,
            example(spec)
        ))
}

fn as_int(v: &Node) -> Option<Result<i64, ()>> {
    match &v.kind {
        Kind::Scalar(Scalar::Int(i)) => Some(Ok(*i)),
        Kind::Scalar(Scalar::BigInt(_)) => Some(Err(())),
        _ => None,
    }
}

fn as_float(v: &Node) -> Option<f64> {
    match &v.kind {
        Kind::Scalar(Scalar::Int(i)) => Some(*i as f64),
        Kind::Scalar(Scalar::BigInt(s)) => s.parse().ok(),
        Kind::Scalar(Scalar::Float(f)) => Some(*f),
        _ => None,
    }
}

fn check_int(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    min: i64,
    max: i64,
    diags: &mut Vec<Diagnostic>,
) -> Option<i64> {
    match as_int(v) {
        None => {
            let mut d = type_error(spec, v, what, "an integer");
            if let Some(f) = as_float(v)
                && f.is_finite()
                && f.fract() == 0.0
                && f.abs() < 1e15
            {
                d = d.help(format!(
                    "write it without a decimal point or exponent: `{}`",
                    f as i64
                ));
            }
            diags.push(d);
            None
        }
        Some(Err(())) => {
            diags.push(range_error(
                spec,
                v,
                what,
                format!("must be at most {max}, but this does not even fit in 64 bits"),
            ));
            None
        }
        Some(Ok(i)) if i < min => {
            diags.push(range_error(
                spec,
                v,
                what,
                format!("must be at least {min}, but it is {i}"),
            ));
            None
        }
        Some(Ok(i)) if i > max => {
            diags.push(range_error(
                spec,
                v,
                what,
                format!("must be at most {max}, but it is {i}"),
            ));
            None
        }
        Some(Ok(i)) => Some(i),
    }
}

/// Converts and checks one argument value.
fn convert(spec: &ArgSpec, v: &Node, what: &str, diags: &mut Vec<Diagnostic>) -> Option<Value> {
    // An explicit null means Keras's None where the default is None.
    if v.is_null() && matches!(spec.default, Default::Null) {
        return Some(Value::Null);
    }
    match spec.kind {
        ArgKind::Int { min, max } => check_int(spec, v, what, min, max, diags).map(Value::Int),
        ArgKind::Float {
            min,
            max,
            min_open,
            max_open,
        } => check_float(spec, v, what, (min, min_open), (max, max_open), diags),
        ArgKind::Bool => match &v.kind {
            Kind::Scalar(Scalar::Bool(b)) => Some(Value::Bool(*b)),
            _ => {
                diags.push(type_error(spec, v, what, "`true` or `false`"));
                None
            }
        },
        ArgKind::Choice(choices) => check_choice(spec, v, what, choices, diags),
        ArgKind::Activation => {
            if v.is_null() {
                return Some(Value::Str("linear".into()));
            }
            let Some(s) = v.as_str() else {
                diags.push(type_error(spec, v, what, "an activation name"));
                return None;
            };
            check_activation(s, v.span.clone(), diags).map(Value::Str)
        }
        ArgKind::Initializer => check_initializer(spec, v, what, diags),
        ArgKind::IntTuple { n, min } => check_int_tuple(spec, v, what, n, min, diags),
        ArgKind::IntList { min, max } => {
            let Some(items) = v.as_seq() else {
                diags.push(type_error(spec, v, what, "a list of integers"));
                return None;
            };
            let mut out = Vec::new();
            let mut ok = true;
            for it in items {
                match check_int(spec, it, what, min, max, diags) {
                    Some(i) => out.push(i),
                    None => ok = false,
                }
            }
            ok.then_some(Value::Ints(out))
        }
        ArgKind::FloatList => check_float_list(spec, v, what, diags),
        ArgKind::Axes => {
            if as_int(v).is_some() {
                return check_int(spec, v, what, -64, 64, diags).map(|i| Value::Ints(vec![i]));
            }
            let Some(items) = v.as_seq() else {
                diags.push(type_error(spec, v, what, "an axis or a list of axes"));
                return None;
            };
            let mut out = Vec::new();
            for it in items {
                out.push(check_int(spec, it, what, -64, 64, diags)?);
            }
            Some(Value::Ints(out))
        }
        ArgKind::Str => match v.as_str() {
            Some(s) => Some(Value::Str(s.to_string())),
            None => {
                diags.push(type_error(spec, v, what, "a string"));
                None
            }
        },
        ArgKind::LearningRate => {
            if let Some(f) = as_float(v) {
                if !(f.is_finite() && f > 0.0) {
                    diags.push(range_error(
                        spec,
                        v,
                        what,
                        format!("must be greater than 0, but it is {f}"),
                    ));
                    return None;
                }
                return Some(Value::Float(f));
            }
            check_schedule(v, diags)
        }
    }
}

/// A number within `[min, max]`, each bound open when its flag says so.
fn check_float(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    (min, min_open): (f64, bool),
    (max, max_open): (f64, bool),
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    let Some(f) = as_float(v) else {
        diags.push(type_error(spec, v, what, "a number"));
        return None;
    };
    let low_ok = if min_open { f > min } else { f >= min };
    let high_ok = if max_open { f < max } else { f <= max };
    if !f.is_finite() || !low_ok || !high_ok {
        let rule = match (min == f64::MIN, max.is_infinite() || max == f64::MAX) {
            (_, _) if !f.is_finite() => "must be a finite number".to_string(),
            (false, true) => format!(
                "must be {} {min}, but it is {f}",
                if min_open { "greater than" } else { "at least" }
            ),
            _ => format!(
                "must be in {}{min}, {max}{}, but it is {f}",
                if min_open { "(" } else { "[" },
                if max_open { ")" } else { "]" }
            ),
        };
        diags.push(range_error(spec, v, what, rule));
        return None;
    }
    Some(Value::Float(f))
}

/// One of a fixed set of words, matched without regard to case.
fn check_choice(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    choices: &[&str],
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    let Some(s) = v.as_str() else {
        diags.push(type_error(
            spec,
            v,
            what,
            &format!("one of {}", choices.join(", ")),
        ));
        return None;
    };
    let lower = s.to_lowercase();
    if let Some(c) = choices.iter().find(|c| **c == lower) {
        return Some(Value::Str(c.to_string()));
    }
    diags.push(
        Diagnostic::error(
            "E0405",
            format!(
                "`{}` of `{what}` must be one of {}, not `{s}`",
                spec.name,
                list(choices)
            ),
        )
        .label(v.span.clone(), "not a valid choice")
        .help(match did_you_mean(s, choices.iter().copied()) {
            Some(c) => format!("did you mean `{c}`?"),
            None => format!(
                "write one of {}, e.g. `{}: {}`",
                list(choices),
                spec.name,
                example(spec)
            ),
        }),
    );
    None
}

/// An int for every one of `n` axes, or a list of `n` ints, each ≥ `min`.
fn check_int_tuple(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    n: usize,
    min: i64,
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    if as_int(v).is_some() {
        let i = check_int(spec, v, what, min, MAX_SIZE, diags)?;
        return Some(Value::Ints(vec![i; n]));
    }
    let Some(items) = v.as_seq() else {
        diags.push(type_error(
            spec,
            v,
            what,
            &format!("an integer or a list of {n} integers"),
        ));
        return None;
    };
    if items.len() != n {
        diags.push(
            Diagnostic::error(
                "E0404",
                format!(
                    "`{}` of `{what}` needs {n} integers, but this list has {}",
                    spec.name,
                    items.len()
                ),
            )
            .label(v.span.clone(), format!("expected {n} values"))
            .help(format!(
                "write one integer for all {n} axes, or a list of {n}"
            )),
        );
        return None;
    }
    let mut out = Vec::new();
    for it in items {
        out.push(check_int(spec, it, what, min, MAX_SIZE, diags)?);
    }
    Some(Value::Ints(out))
}

/// A list of finite numbers; the first bad one is reported.
fn check_float_list(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    let Some(items) = v.as_seq() else {
        diags.push(type_error(spec, v, what, "a list of numbers"));
        return None;
    };
    let mut out = Vec::new();
    for it in items {
        match as_float(it) {
            Some(f) if f.is_finite() => out.push(f),
            _ => {
                diags.push(type_error(spec, it, what, "a finite number"));
                return None;
            }
        }
    }
    Some(Value::Floats(out))
}

fn list(choices: &[&str]) -> String {
    choices
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks an activation name, reporting an unknown one with a suggestion.
pub fn check_activation(
    s: &str,
    span: Range<usize>,
    diags: &mut Vec<Diagnostic>,
) -> Option<String> {
    let lower = s.to_lowercase();
    if ACTIVATIONS.contains(&lower.as_str()) {
        return Some(lower);
    }
    diags.push(
        Diagnostic::error("E0407", format!("`{s}` is not an activation kiln knows"))
            .label(span, "unknown activation")
            .help(match did_you_mean(s, ACTIVATIONS.iter().copied()) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!("known activations: {}", ACTIVATIONS.join(", ")),
            }),
    );
    None
}

/// A single-key mapping `{name: args}` or a bare name: returns (name, name span, args node).
pub fn named(v: &Node) -> Option<(&str, Range<usize>, Option<&Node>)> {
    if let Some(s) = v.as_str() {
        return Some((s, v.span.clone(), None));
    }
    let m = v.as_map()?;
    if m.len() != 1 {
        return None;
    }
    let (k, a) = &m[0];
    Some((k.as_str()?, k.span.clone(), Some(a)))
}

fn check_initializer(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    let Some((name, name_span, args)) = named(v) else {
        diags.push(type_error(
            spec,
            v,
            what,
            "an initializer name or `{name: {arguments}}`",
        ));
        return None;
    };
    let canonical = name.to_lowercase();
    let Some(kind) = initializers::lookup(&canonical) else {
        let names = catalog::names(initializers::INITIALIZERS);
        diags.push(
            Diagnostic::error(
                "E0408",
                format!("`{name}` is not an initializer kiln knows"),
            )
            .label(name_span, "unknown initializer")
            .help(
                match did_you_mean(name, names.clone()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    // PyTorch's names for the same initializers.
                    None if canonical.contains("xavier") || canonical.contains("kaiming") => {
                        let family = if canonical.contains("xavier") { "glorot" } else { "he" };
                        let dist = if canonical.contains("normal") { "normal" } else { "uniform" };
                        format!(
                            "Keras calls {} initialization `{family}_…`: did you mean `{family}_{dist}`?",
                            if family == "glorot" { "Xavier" } else { "Kaiming" }
                        )
                    }
                    None => format!(
                        "known initializers: {}",
                        names.collect::<Vec<_>>().join(", ")
                    ),
                },
            ),
        );
        return None;
    };
    let a = validate(kind.args, args, kind.name, name_span, diags)?;
    Some(Value::Named(kind.name.to_string(), Box::new(a)))
}

/// Validates a learning-rate schedule (`{exponential_decay: {…}}`) against the
/// schedule catalog.
pub fn check_schedule(v: &Node, diags: &mut Vec<Diagnostic>) -> Option<Value> {
    let Some((name, span, args)) = named(v) else {
        diags.push(
            Diagnostic::error(
                "E0403",
                format!(
                    "`learning_rate` must be a number or a schedule, but this is {}",
                    v.describe()
                ),
            )
            .label(
                v.span.clone(),
                "expected e.g. `0.001` or `{exponential_decay: {…}}`",
            ),
        );
        return None;
    };
    let Some(kind) = schedules::lookup(&name.to_lowercase()) else {
        let names = catalog::names(schedules::SCHEDULES);
        diags.push(catalog::unknown(
            name,
            span,
            "a learning-rate schedule",
            "learning-rate schedule",
            names,
        ));
        return None;
    };
    let a = validate(kind.args, args, kind.name, span.clone(), diags)?;
    if let Err(d) = (kind.check)(&a, span) {
        diags.push(d);
        return None;
    }
    Some(Value::Named(kind.name.to_string(), Box::new(a)))
}
