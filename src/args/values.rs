//! Per-kind conversions and the messages they share: type and range errors, and the
//! example values those messages suggest.

use super::{ArgKind, ArgSpec, Default, MAX_SIZE, Value};
use crate::diag::{Diagnostic, did_you_mean};
use crate::yaml::{Kind, Node, Scalar};

/// `e.g. dense: {units: 64}` built from the required arguments.
pub(super) fn example_args(schema: &[ArgSpec], what: &str) -> String {
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
        ArgKind::Float { .. } => "0.1",
        ArgKind::Bool => "true",
        ArgKind::Catalog(c) => c.example,
        ArgKind::IntTuple { .. } => "3",
        ArgKind::IntList { .. } | ArgKind::Axes => "[1, 2]",
        ArgKind::FloatList => "[0.1, 0.01]",
        _ => "…",
    }
}

/// E0403: `spec`'s value `v` is not `expected` ("an integer", …).
pub fn type_error(spec: &ArgSpec, v: &Node, what: &str, expected: &str) -> Diagnostic {
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

/// E0404: `spec`'s value `v` breaks `rule` ("must be at least 1, but it is 0").
pub fn range_error(spec: &ArgSpec, v: &Node, what: &str, rule: String) -> Diagnostic {
    Diagnostic::error("E0404", format!("`{}` of `{what}` {rule}", spec.name))
        .label(v.span.clone(), "out of range")
        .help(format!(
            "use a value in range, e.g. `{}: {}`",
            spec.name,
            example(spec)
        ))
}

pub(super) fn as_int(v: &Node) -> Option<Result<i64, ()>> {
    match &v.kind {
        Kind::Scalar(Scalar::Int(i)) => Some(Ok(*i)),
        Kind::Scalar(Scalar::BigInt(_)) => Some(Err(())),
        _ => None,
    }
}

/// A number (an int, a float, or an int too big for 64 bits), if `v` is one.
pub fn as_float(v: &Node) -> Option<f64> {
    match &v.kind {
        Kind::Scalar(Scalar::Int(i)) => Some(*i as f64),
        Kind::Scalar(Scalar::BigInt(s)) => s.parse().ok(),
        Kind::Scalar(Scalar::Float(f)) => Some(*f),
        _ => None,
    }
}

pub(super) fn check_int(
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

/// A number within `[min, max]`, each bound open when its flag says so.
pub(super) fn check_float(
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
pub(super) fn check_choice(
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
pub(super) fn check_int_tuple(
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
pub(super) fn check_float_list(
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
