//! The validator: a mapping's keys against the schema, one conversion per written
//! value, then defaults for the rest.

use std::ops::Range;

use super::values::{
    as_int, check_choice, check_float, check_float_list, check_int, check_int_tuple, example_args,
    type_error,
};
use super::{ArgKind, ArgSpec, Args, Default, Value};
use crate::diag::keras::{self, Family};
use crate::diag::{Diagnostic, did_you_mean};
use crate::yaml::{Kind, Node, Scalar};

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
    if let Some(why) = keras::lookup(Family::Argument, key).map(|e| e.instead) {
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
            ArgKind::Catalog(c) => (c.default)(s),
            _ => Value::Str(s.to_string()),
        },
        Default::Ints(v) => Value::Ints(v.to_vec()),
        Default::SameAs(other) => args.values.get(other).cloned().unwrap_or(Value::Null),
    })
}

/// Converts and checks one argument value.
fn convert(spec: &ArgSpec, v: &Node, what: &str, diags: &mut Vec<Diagnostic>) -> Option<Value> {
    // An explicit null means Keras's None where the default is None.
    if v.is_null() && matches!(spec.default, Default::Null) {
        return Some(Value::Null);
    }
    // A choice of Keras's None (`bidirectional`'s `merge_mode`) lists it as `none`.
    if v.is_null() && matches!(spec.kind, ArgKind::Choice(c) if c.contains(&"none")) {
        return Some(Value::Str("none".to_string()));
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
        ArgKind::Catalog(c) => (c.check)(spec, v, what, diags),
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
        ArgKind::Tensor => match v.as_str() {
            Some(s) => Some(Value::Str(s.to_string())),
            None => {
                diags.push(type_error(spec, v, what, "the name of an input or a layer"));
                None
            }
        },
        ArgKind::Str => match v.as_str() {
            Some(s) => Some(Value::Str(s.to_string())),
            None => {
                diags.push(type_error(spec, v, what, "a string"));
                None
            }
        },
        ArgKind::File { extensions } => match v.as_str() {
            Some(s) if extensions.iter().any(|e| s.ends_with(e)) => Some(Value::Str(s.to_string())),
            Some(s) => {
                diags.push(file_extension_error(spec, v, what, s, extensions));
                None
            }
            None => {
                diags.push(type_error(spec, v, what, "a file name"));
                None
            }
        },
    }
}

/// E0420: a file kiln would write in another format than its name says.
fn file_extension_error(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    s: &str,
    extensions: &[&str],
) -> Diagnostic {
    let stem = std::path::Path::new(s)
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.split('.').next().unwrap_or(n))
        .filter(|n| !n.is_empty())
        .unwrap_or("model");
    let want = extensions.join(" or ");
    let dir = s
        .rsplit_once('/')
        .map(|(d, _)| format!("{d}/"))
        .unwrap_or_default();
    Diagnostic::error(
        "E0420",
        format!(
            "`{}` of `{what}` is `{}`, but kiln writes {want} files",
            spec.name,
            crate::diag::shorten(s.to_string())
        ),
    )
    .label(v.span.clone(), format!("not a {want} name"))
    .help(format!(
        "name it `{dir}{stem}{}`; Keras's `.keras` and `.h5` formats are not written by kiln",
        extensions[0]
    ))
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
