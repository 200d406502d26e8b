//! Learning-rate schedules (keras.optimizers.schedules), evaluated on the host at each
//! step and fed to the training step as a scalar (so callbacks such as
//! reduce-LR-on-plateau can change it too).

use std::ops::Range;

use super::{entry, find, names, unknown};
use crate::args::{
    ArgKind, ArgSpec, Args, CatalogArg, Default, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, Value, arg,
    as_float, float_range, int, named, range_error, validate,
};
use crate::diag::Diagnostic;
use crate::yaml::Node;

/// A learning-rate schedule.
pub struct ScheduleKind {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub args: &'static [ArgSpec],
    /// The learning rate at optimizer iteration `step` (0-based, as Keras's
    /// `iterations`), from validated arguments.
    pub lr: fn(&Args, f64) -> f64,
    /// Checks between arguments that the schema cannot express; `span` is the
    /// schedule's name, for errors without a better place.
    pub check: fn(&Args, Range<usize>) -> Result<(), Diagnostic>,
}
entry!(ScheduleKind, Schedule);

fn no_check(_: &Args, _: Range<usize>) -> Result<(), Diagnostic> {
    Ok(())
}

const INITIAL: ArgSpec = arg(
    "initial_learning_rate",
    NON_NEGATIVE_FLOAT,
    Default::Required,
);
const DECAY_STEPS: ArgSpec = arg("decay_steps", int(1), Default::Required);
const DECAY_RATE: ArgSpec = arg("decay_rate", POSITIVE_FLOAT, Default::Required);
const STAIRCASE: ArgSpec = arg("staircase", ArgKind::Bool, Default::Bool(false));

/// `step / decay_steps`, floored with `staircase`.
fn progress(a: &Args, s: f64) -> f64 {
    let p = s / a.int("decay_steps").max(1) as f64;
    if a.bool("staircase") { p.floor() } else { p }
}

pub static EXPONENTIAL_DECAY: ScheduleKind = ScheduleKind {
    name: "exponential_decay",
    aliases: &[],
    args: &[INITIAL, DECAY_STEPS, DECAY_RATE, STAIRCASE],
    lr: |a, s| a.float("initial_learning_rate") * a.float("decay_rate").powf(progress(a, s)),
    check: no_check,
};

pub static INVERSE_TIME_DECAY: ScheduleKind = ScheduleKind {
    name: "inverse_time_decay",
    aliases: &[],
    args: &[INITIAL, DECAY_STEPS, DECAY_RATE, STAIRCASE],
    lr: |a, s| a.float("initial_learning_rate") / (1.0 + a.float("decay_rate") * progress(a, s)),
    check: no_check,
};

pub static POLYNOMIAL_DECAY: ScheduleKind = ScheduleKind {
    name: "polynomial_decay",
    aliases: &[],
    args: &[
        INITIAL,
        DECAY_STEPS,
        arg(
            "end_learning_rate",
            NON_NEGATIVE_FLOAT,
            Default::Float(0.0001),
        ),
        arg("power", POSITIVE_FLOAT, Default::Float(1.0)),
        arg("cycle", ArgKind::Bool, Default::Bool(false)),
    ],
    lr: |a, s| {
        let lr0 = a.float("initial_learning_rate");
        let ds = a.int("decay_steps").max(1) as f64;
        let end = a.float("end_learning_rate");
        let (s, ds) = if a.bool("cycle") {
            let mult = if s == 0.0 { 1.0 } else { (s / ds).ceil() };
            (s, ds * mult)
        } else {
            (s.min(ds), ds)
        };
        (lr0 - end) * (1.0 - s / ds).powf(a.float("power")) + end
    },
    check: no_check,
};

pub static COSINE_DECAY: ScheduleKind = ScheduleKind {
    name: "cosine_decay",
    aliases: &[],
    args: &[
        INITIAL,
        DECAY_STEPS,
        arg("alpha", float_range(0.0, 1.0), Default::Float(0.0)),
        arg("warmup_target", POSITIVE_FLOAT, Default::Null),
        arg("warmup_steps", int(0), Default::Int(0)),
    ],
    lr: |a, s| {
        let lr0 = a.float("initial_learning_rate");
        let ds = a.int("decay_steps").max(1) as f64;
        let alpha = a.float("alpha");
        let decay = |step: f64, from: f64| {
            let c = 0.5 * (1.0 + (std::f64::consts::PI * step / ds).cos());
            from * ((1.0 - alpha) * c + alpha)
        };
        match a.get("warmup_target") {
            Value::Float(target) => {
                let ws = a.int("warmup_steps") as f64;
                let s = s.min(ds + ws);
                if s < ws {
                    (target - lr0) * (s / ws) + lr0
                } else {
                    decay(s - ws, *target)
                }
            }
            _ => decay(s.min(ds), lr0),
        }
    },
    check: no_check,
};

fn piecewise_values(a: &Args) -> &[f64] {
    match a.get("values") {
        Value::Floats(v) => v,
        _ => &[],
    }
}

pub static PIECEWISE_CONSTANT_DECAY: ScheduleKind = ScheduleKind {
    name: "piecewise_constant_decay",
    aliases: &[],
    args: &[
        arg(
            "boundaries",
            ArgKind::IntList {
                min: 0,
                max: i64::MAX,
            },
            Default::Required,
        ),
        arg("values", ArgKind::FloatList, Default::Required),
    ],
    lr: |a, s| {
        let i = a
            .ints("boundaries")
            .iter()
            .take_while(|&&x| s > x as f64)
            .count();
        piecewise_values(a).get(i).copied().unwrap_or(0.0)
    },
    check: |a, span| {
        let b = a.ints("boundaries").len();
        let vals = piecewise_values(a).len();
        if vals == b + 1 {
            return Ok(());
        }
        Err(Diagnostic::error(
            "E0603",
            format!("`piecewise_constant_decay` needs one more value than boundaries, but has {b} boundaries and {vals} values"),
        )
        .label(a.span("values").unwrap_or(span.clone()), "wrong number of values")
        .secondary(a.span("boundaries").unwrap_or(span), format!("{b} boundaries make {} intervals", b + 1))
        .help(format!(
            "give one learning rate per interval: {} values for {b} boundaries (before the first boundary, between each pair, and after the last)",
            b + 1
        )))
    },
};

/// Every learning-rate schedule (keras.optimizers.schedules), by snake_case name.
pub static SCHEDULES: &[&ScheduleKind] = &[
    &EXPONENTIAL_DECAY,
    &INVERSE_TIME_DECAY,
    &POLYNOMIAL_DECAY,
    &COSINE_DECAY,
    &PIECEWISE_CONSTANT_DECAY,
];

/// The schedule called `name` (or an alias), exactly as written.
pub fn lookup(name: &str) -> Option<&'static ScheduleKind> {
    find(SCHEDULES, name)
}

/// The kind of an optimizer's `learning_rate:` argument: a number greater than 0, or a
/// schedule `{name: {arguments}}`.
pub static ARG: CatalogArg = CatalogArg {
    what: "learning rate",
    example: "0.1",
    default: |s| Value::Str(s.to_string()),
    check: check_learning_rate,
};
/// [`ARG`] as a schema kind.
pub const LEARNING_RATE: ArgKind = ArgKind::Catalog(&ARG);

fn check_learning_rate(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
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
    let Some(kind) = lookup(&name.to_lowercase()) else {
        diags.push(unknown::<ScheduleKind>(
            name,
            span,
            "a learning-rate schedule",
            "learning-rate schedule",
            names(SCHEDULES),
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

/// The learning rate at optimizer iteration `step` of a validated `learning_rate`
/// argument: a number, or a schedule (`Value::Named`).
pub fn lr_at(lr: &Value, step: u64) -> f64 {
    match lr {
        Value::Float(f) => *f,
        Value::Int(i) => *i as f64,
        Value::Named(name, a) => lookup(name).map_or(0.001, |k| (k.lr)(a, step as f64)),
        _ => 0.001,
    }
}
