//! The `train:` section: targets, loss, optimizer (with learning-rate schedules and
//! clipping), metrics, fit settings, data and callbacks — Keras's names and defaults.

use std::ops::Range;

use super::{TensorDecl, parse_tensors};
use crate::args::{
    self, ArgKind, ArgSpec, Args, Default, FRACTION, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, Value,
    arg, float_range, int, named,
};
use crate::diag::{Diagnostic, did_you_mean};
use crate::yaml::Node;

/// A named thing with validated arguments (a loss, optimizer, callback, schedule).
#[derive(Clone, Debug, PartialEq)]
pub struct Named {
    pub name: String,
    pub span: Range<usize>,
    pub args: Args,
}

/// `train.data`.
#[derive(Clone, Debug, PartialEq)]
pub struct DataDecl {
    pub path: String,
    pub path_span: Range<usize>,
    pub validation_split: f64,
    pub target_column: Option<String>,
}

/// The parsed `train:` section.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainDecl {
    pub span: Range<usize>,
    pub targets: Vec<TensorDecl>,
    pub targets_span: Option<Range<usize>>,
    /// Some target declaration is wrong (already reported): targets are not matched to
    /// outputs, so that the mistake is not reported again as a count mismatch.
    pub targets_broken: bool,
    pub loss: Option<Named>,
    pub optimizer: Named,
    /// Metrics as written, canonicalized (`acc` → `accuracy`), with spans.
    pub metrics: Vec<(String, Range<usize>)>,
    /// batch_size, epochs, seed, shuffle, validation_split.
    pub fit: Args,
    pub data: Option<DataDecl>,
    pub callbacks: Vec<Named>,
}

const CE_ARGS: &[ArgSpec] = &[
    arg("from_logits", ArgKind::Bool, Default::Bool(false)),
    arg(
        "label_smoothing",
        float_range(0.0, 1.0),
        Default::Float(0.0),
    ),
    arg("axis", int(-64), Default::Int(-1)),
];

/// Losses, with Keras's argument names and defaults.
pub const LOSSES: &[(&str, &[ArgSpec])] = &[
    ("mean_squared_error", &[]),
    ("mean_absolute_error", &[]),
    (
        "huber",
        &[arg("delta", POSITIVE_FLOAT, Default::Float(1.0))],
    ),
    ("binary_crossentropy", CE_ARGS),
    ("categorical_crossentropy", CE_ARGS),
    (
        "sparse_categorical_crossentropy",
        &[arg("from_logits", ArgKind::Bool, Default::Bool(false))],
    ),
];

fn loss_alias(name: &str) -> &str {
    match name {
        "mse" => "mean_squared_error",
        "mae" => "mean_absolute_error",
        "huber_loss" => "huber",
        other => other,
    }
}

const CLIP: [ArgSpec; 4] = [
    arg("clipnorm", POSITIVE_FLOAT, Default::Null),
    arg("clipvalue", POSITIVE_FLOAT, Default::Null),
    arg("global_clipnorm", POSITIVE_FLOAT, Default::Null),
    arg("weight_decay", NON_NEGATIVE_FLOAT, Default::Null),
];
const LR: fn(f64) -> ArgSpec = |d| arg("learning_rate", ArgKind::LearningRate, Default::Float(d));
const BETA: ArgKind = ArgKind::Float {
    min: 0.0,
    max: 1.0,
    min_open: false,
    max_open: true,
};

/// Optimizers, with Keras's argument names and defaults.
pub fn optimizer_schema(name: &str) -> Option<Vec<ArgSpec>> {
    let mut s = match name {
        "sgd" => vec![
            LR(0.01),
            arg("momentum", float_range(0.0, 1.0), Default::Float(0.0)),
            arg("nesterov", ArgKind::Bool, Default::Bool(false)),
        ],
        "adam" | "adamw" => vec![
            LR(0.001),
            arg("beta_1", BETA, Default::Float(0.9)),
            arg("beta_2", BETA, Default::Float(0.999)),
            arg("epsilon", POSITIVE_FLOAT, Default::Float(1e-7)),
        ],
        "rmsprop" => vec![
            LR(0.001),
            arg("rho", BETA, Default::Float(0.9)),
            arg("momentum", float_range(0.0, 1.0), Default::Float(0.0)),
            arg("epsilon", POSITIVE_FLOAT, Default::Float(1e-7)),
            arg("centered", ArgKind::Bool, Default::Bool(false)),
        ],
        _ => return None,
    };
    s.extend(CLIP);
    if name == "adamw" {
        let wd = s.iter_mut().find(|a| a.name == "weight_decay")?;
        wd.default = Default::Float(0.004);
    }
    Some(s)
}
pub const OPTIMIZERS: &[&str] = &["sgd", "adam", "adamw", "rmsprop"];

const DECAY: [ArgSpec; 3] = [
    arg(
        "initial_learning_rate",
        NON_NEGATIVE_FLOAT,
        Default::Required,
    ),
    arg("decay_steps", int(1), Default::Required),
    arg("decay_rate", POSITIVE_FLOAT, Default::Required),
];

/// Learning-rate schedules (keras.optimizers.schedules), by snake_case name.
pub const SCHEDULES: &[(&str, &[ArgSpec])] = &[
    (
        "exponential_decay",
        &[
            DECAY[0],
            DECAY[1],
            DECAY[2],
            arg("staircase", ArgKind::Bool, Default::Bool(false)),
        ],
    ),
    (
        "inverse_time_decay",
        &[
            DECAY[0],
            DECAY[1],
            DECAY[2],
            arg("staircase", ArgKind::Bool, Default::Bool(false)),
        ],
    ),
    (
        "polynomial_decay",
        &[
            DECAY[0],
            DECAY[1],
            arg(
                "end_learning_rate",
                NON_NEGATIVE_FLOAT,
                Default::Float(0.0001),
            ),
            arg("power", POSITIVE_FLOAT, Default::Float(1.0)),
            arg("cycle", ArgKind::Bool, Default::Bool(false)),
        ],
    ),
    (
        "cosine_decay",
        &[
            DECAY[0],
            DECAY[1],
            arg("alpha", float_range(0.0, 1.0), Default::Float(0.0)),
            arg("warmup_target", POSITIVE_FLOAT, Default::Null),
            arg("warmup_steps", int(0), Default::Int(0)),
        ],
    ),
    (
        "piecewise_constant_decay",
        &[
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
    ),
];

const MONITOR: ArgSpec = arg("monitor", ArgKind::Str, Default::Str("val_loss"));
const MODE: ArgSpec = arg(
    "mode",
    ArgKind::Choice(&["auto", "min", "max"]),
    Default::Str("auto"),
);

/// Callbacks (keras.callbacks), by snake_case name.
pub const CALLBACKS: &[(&str, &[ArgSpec])] = &[
    (
        "early_stopping",
        &[
            MONITOR,
            arg("min_delta", NON_NEGATIVE_FLOAT, Default::Float(0.0)),
            arg("patience", int(0), Default::Int(0)),
            MODE,
            arg("baseline", float_range(f64::MIN, f64::MAX), Default::Null),
            arg("restore_best_weights", ArgKind::Bool, Default::Bool(false)),
            arg("start_from_epoch", int(0), Default::Int(0)),
        ],
    ),
    (
        "model_checkpoint",
        &[
            arg("filepath", ArgKind::Str, Default::Required),
            MONITOR,
            arg("save_best_only", ArgKind::Bool, Default::Bool(false)),
            MODE,
        ],
    ),
    (
        "reduce_lr_on_plateau",
        &[
            MONITOR,
            arg(
                "factor",
                ArgKind::Float {
                    min: 0.0,
                    max: 1.0,
                    min_open: true,
                    max_open: true,
                },
                Default::Float(0.1),
            ),
            arg("patience", int(0), Default::Int(10)),
            MODE,
            arg("min_delta", NON_NEGATIVE_FLOAT, Default::Float(1e-4)),
            arg("cooldown", int(0), Default::Int(0)),
            arg("min_lr", NON_NEGATIVE_FLOAT, Default::Float(0.0)),
        ],
    ),
    (
        "csv_logger",
        &[
            arg("filename", ArgKind::Str, Default::Required),
            arg("separator", ArgKind::Str, Default::Str(",")),
            arg("append", ArgKind::Bool, Default::Bool(false)),
        ],
    ),
    ("terminate_on_nan", &[]),
];

const FIT: &[ArgSpec] = &[
    arg("batch_size", int(1), Default::Int(32)),
    arg(
        "epochs",
        ArgKind::Int {
            min: 1,
            max: 1_000_000,
        },
        Default::Int(1),
    ),
    arg("seed", int(0), Default::Int(0)),
    arg("shuffle", ArgKind::Bool, Default::Bool(true)),
    arg("validation_split", FRACTION, Default::Float(0.0)),
];

const DATA: &[ArgSpec] = &[
    arg("path", ArgKind::Str, Default::Required),
    arg("validation_split", FRACTION, Default::Float(0.0)),
    arg("target_column", ArgKind::Str, Default::Null),
];

const SPECIAL: &[&str] = &[
    "targets",
    "loss",
    "optimizer",
    "metrics",
    "data",
    "callbacks",
];

/// Metric names Keras accepts, with their canonical kiln name.
pub const METRICS: &[(&str, &str)] = &[
    ("accuracy", "accuracy"),
    ("acc", "accuracy"),
    ("sparse_categorical_accuracy", "sparse_categorical_accuracy"),
    ("categorical_accuracy", "categorical_accuracy"),
    ("binary_accuracy", "binary_accuracy"),
    ("mae", "mae"),
    ("mean_absolute_error", "mae"),
    ("mse", "mse"),
    ("mean_squared_error", "mse"),
];

/// Looks up a name in a table of (name, schema) and validates its arguments.
fn lookup(
    table: &[(&str, &[ArgSpec])],
    v: &Node,
    kind: &str,
    alias: fn(&str) -> &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Named> {
    let Some((name, span, args)) = named(v) else {
        diags.push(
            Diagnostic::error(
                "E0601",
                format!(
                    "a {kind} is a name or `{{name: {{arguments}}}}`, but this is {}",
                    v.describe()
                ),
            )
            .label(v.span.clone(), format!("expected a {kind}"))
            .help({
                let first = table.first().map_or("…", |(n, _)| *n);
                let one = if v.as_seq().is_some() {
                    format!("give one {kind}, not a list: ")
                } else {
                    String::new()
                };
                format!("{one}write it by name, `{first}`, or with arguments, `{{{first}: {{…}}}}`")
            }),
        );
        return None;
    };
    let lower = name.to_lowercase();
    let canonical = alias(&lower);
    let Some((n, schema)) = table.iter().find(|(n, _)| *n == canonical) else {
        let names = table.iter().map(|(n, _)| *n);
        diags.push(
            Diagnostic::error("E0602", format!("`{name}` is not a {kind} kiln knows"))
                .label(span, format!("unknown {kind}"))
                .help(match did_you_mean(name, names.clone()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("known: {}", names.collect::<Vec<_>>().join(", ")),
                }),
        );
        return None;
    };
    let a = args::validate(schema, args, n, span.clone(), diags)?;
    Some(Named {
        name: n.to_string(),
        span,
        args: a,
    })
}

/// Validates a learning-rate schedule (`{exponential_decay: {…}}`).
pub fn check_schedule(v: &Node, diags: &mut Vec<Diagnostic>) -> Option<Value> {
    if named(v).is_none() {
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
    }
    let n = lookup(SCHEDULES, v, "learning-rate schedule", |s| s, diags)?;
    if n.name == "piecewise_constant_decay" {
        let b = n.args.ints("boundaries").len();
        let vals = match n.args.get("values") {
            Value::Floats(f) => f.len(),
            _ => 0,
        };
        if vals != b + 1 {
            diags.push(
                Diagnostic::error(
                    "E0603",
                    format!("`piecewise_constant_decay` needs one more value than boundaries, but has {b} boundaries and {vals} values"),
                )
                .label(n.args.span("values").unwrap_or(n.span.clone()), "wrong number of values")
                .secondary(n.args.span("boundaries").unwrap_or(n.span.clone()), format!("{b} boundaries make {} intervals", b + 1))
                .help(format!(
                    "give one learning rate per interval: {} values for {b} boundaries (before the first boundary, between each pair, and after the last)",
                    b + 1
                )),
            );
            return None;
        }
    }
    Some(Value::Named(n.name, Box::new(n.args)))
}

/// Parses `train:`.
pub fn parse(v: &Node, diags: &mut Vec<Diagnostic>) -> Option<TrainDecl> {
    let Some(entries) = v.as_map() else {
        diags.push(
            Diagnostic::error(
                "E0600",
                format!("`train` must be a mapping, but this is {}", v.describe()),
            )
            .label(v.span.clone(), "expected `loss: …`, `optimizer: …`, …")
            .help("write the training settings under `train:`, e.g. `train: {targets: {y: [batch, 1]}, loss: mse, optimizer: adam}`"),
        );
        return None;
    };
    let rest: Vec<(Node, Node)> = entries
        .iter()
        .filter(|(k, _)| !k.as_str().is_some_and(|s| SPECIAL.contains(&s)))
        .cloned()
        .collect();
    // Unknown keys get suggestions from both the fit arguments and the sections.
    let mut fit_diags = Vec::new();
    let rest_node = Node {
        kind: crate::yaml::Kind::Map(rest),
        span: v.span.clone(),
    };
    let fit = args::validate(
        FIT,
        Some(&rest_node),
        "train",
        v.span.clone(),
        &mut fit_diags,
    );
    for mut d in fit_diags {
        if d.code == "E0401"
            && let Some(l) = d.labels.first()
        {
            let word = d.message.rsplit('`').nth(1).unwrap_or("").to_string();
            let all = FIT.iter().map(|a| a.name).chain(SPECIAL.iter().copied());
            d = Diagnostic::error("E0401", format!("`train` has no setting `{word}`"))
                .label(l.span.clone(), "unknown setting")
                .help(match did_you_mean(&word, all.clone()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("the settings are: {}", all.collect::<Vec<_>>().join(", ")),
                });
        }
        diags.push(d);
    }

    let mut broken_targets = Vec::new();
    let (targets, targets_span) = match v.entry("targets") {
        Some((k, t)) => (
            parse_tensors(t, "targets", true, &mut broken_targets, diags),
            Some(k.span.clone()),
        ),
        None => (Vec::new(), None),
    };
    let loss = match v.get("loss") {
        Some(l) => lookup(LOSSES, l, "loss", loss_alias, diags),
        None => {
            diags.push(
                Diagnostic::error("E0604", "`train` has no `loss`")
                    .label(v.span.start..v.span.start, "add `loss: …` to this section")
                    .help("add a loss, e.g. `loss: {sparse_categorical_crossentropy: {from_logits: true}}`"),
            );
            None
        }
    };
    let optimizer = match v.get("optimizer") {
        Some(o) => {
            let Some((name, span, a)) = named(o) else {
                diags.push(
                    Diagnostic::error(
                        "E0601",
                        format!(
                            "an optimizer is a name or `{{name: {{arguments}}}}`, but this is {}",
                            o.describe()
                        ),
                    )
                    .label(o.span.clone(), "expected an optimizer")
                    .help("write it by name, `optimizer: adam`, or with arguments, `optimizer: {adam: {learning_rate: 0.001}}`"),
                );
                return None;
            };
            let lower = name.to_lowercase();
            match optimizer_schema(&lower) {
                Some(schema) => {
                    let a = args::validate(&schema, a, &lower, span.clone(), diags);
                    a.map(|a| Named {
                        name: lower,
                        span,
                        args: a,
                    })
                }
                None => {
                    diags.push(
                        Diagnostic::error(
                            "E0602",
                            format!("`{name}` is not an optimizer kiln knows"),
                        )
                        .label(span, "unknown optimizer")
                        .help(
                            match did_you_mean(name, OPTIMIZERS.iter().copied()) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => format!("known: {}", OPTIMIZERS.join(", ")),
                            },
                        ),
                    );
                    None
                }
            }
        }
        // Keras's `compile` defaults to RMSprop.
        None => {
            let schema = optimizer_schema("rmsprop").unwrap_or_default();
            args::validate(&schema, None, "rmsprop", v.span.clone(), diags).map(|a| Named {
                name: "rmsprop".into(),
                span: v.span.start..v.span.start,
                args: a,
            })
        }
    };
    if let Some(o) = &optimizer {
        let set: Vec<&str> = ["clipnorm", "clipvalue", "global_clipnorm"]
            .into_iter()
            .filter(|n| o.args.is_given(n))
            .collect();
        if set.len() > 1 {
            let mut d = Diagnostic::error(
                "E0603",
                format!(
                    "only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set, but this sets {}",
                    set.join(" and ")
                ),
            );
            for (i, n) in set.iter().enumerate() {
                let span = o.args.span(n).unwrap_or(o.span.clone());
                d = if i == 0 {
                    d.label(span, "set here")
                } else {
                    d.secondary(span, "and here")
                };
            }
            diags.push(d.help("keep one clipping rule"));
        }
    }

    let mut metrics = Vec::new();
    let mut metrics_failed = false;
    if let Some(m) = v.get("metrics") {
        let items: Vec<&Node> = match m.as_seq() {
            Some(s) => s.iter().collect(),
            None => vec![m],
        };
        for it in items {
            let Some(s) = it.as_str() else {
                diags.push(
                    Diagnostic::error(
                        "E0605",
                        format!("a metric is a name, but this is {}", it.describe()),
                    )
                    .label(it.span.clone(), "expected a metric name")
                    .help("metrics are names, e.g. `metrics: [accuracy]`"),
                );
                metrics_failed = true;
                continue;
            };
            match METRICS.iter().find(|(n, _)| *n == s.to_lowercase()) {
                Some((_, canonical)) => metrics.push((canonical.to_string(), it.span.clone())),
                None => {
                    metrics_failed = true;
                    diags.push(
                        Diagnostic::error("E0605", format!("`{s}` is not a metric kiln knows"))
                            .label(it.span.clone(), "unknown metric")
                            .help(match did_you_mean(s, METRICS.iter().map(|(n, _)| *n)) {
                                Some(c) => format!("did you mean `{c}`?"),
                                None => "known metrics: accuracy, mae, mse".to_string(),
                            }),
                    )
                }
            }
        }
    }

    let data = v.get("data").and_then(|d| {
        let node_span = d.span.clone();
        let a = if let Some(s) = d.as_str() {
            // `data: path.npz` is short for `data: {path: path.npz}`.
            let mut a = args::validate(DATA, None, "data", node_span.clone(), &mut Vec::new())
                .unwrap_or_default();
            a.set("path", Value::Str(s.to_string()));
            a.set("validation_split", Value::Float(0.0));
            return Some(DataDecl {
                path: s.to_string(),
                path_span: node_span,
                validation_split: 0.0,
                target_column: None,
            })
            .filter(|_| a.is_given("path") || !s.is_empty());
        } else {
            args::validate(DATA, Some(d), "data", node_span.clone(), diags)?
        };
        Some(DataDecl {
            path: a.str("path").to_string(),
            path_span: a.span("path").unwrap_or(node_span),
            validation_split: a.float("validation_split"),
            target_column: a.opt_str("target_column").map(str::to_string),
        })
    });

    let mut callbacks = Vec::new();
    if let Some(c) = v.get("callbacks") {
        match c.as_seq() {
            None => diags.push(
                Diagnostic::error(
                    "E0606",
                    format!("`callbacks` must be a list, but this is {}", c.describe()),
                )
                .label(
                    c.span.clone(),
                    "expected a list like `[{early_stopping: {patience: 3}}]`",
                )
                .help("write the callbacks as a list, even a single one: `callbacks: [{…}]`"),
            ),
            Some(items) => {
                for it in items {
                    if let Some(n) = lookup(CALLBACKS, it, "callback", |s| s, diags) {
                        callbacks.push(n);
                    }
                }
            }
        }
    }
    // Monitored quantities must be ones training will report.
    let has_val = fit
        .as_ref()
        .is_some_and(|f| f.float("validation_split") > 0.0)
        || data.as_ref().is_some_and(|d| d.validation_split > 0.0);
    let mut known: Vec<String> = vec!["loss".into()];
    for (m, _) in &metrics {
        // Once each: a metric listed 30,000 times must not make every check below slow.
        if !known.contains(m) {
            known.push(m.clone());
        }
    }
    let with_val: Vec<String> = known.iter().map(|k| format!("val_{k}")).collect();
    known.extend(with_val);
    for cb in &callbacks {
        if let Some(mon) = cb.args.opt_str("monitor") {
            let span = cb.args.span("monitor").unwrap_or(cb.span.clone());
            // A misspelled metric (already reported) may be the one monitored.
            if !known.iter().any(|k| k == mon) && !metrics_failed {
                // `val_accuracy` without `accuracy` among the metrics.
                let metric = METRICS
                    .iter()
                    .find(|(n, _)| *n == mon.strip_prefix("val_").unwrap_or(mon))
                    .map(|(_, c)| *c);
                diags.push(
                    Diagnostic::error(
                        "E0607",
                        format!(
                            "`{}` monitors `{mon}`, which training does not report",
                            cb.name
                        ),
                    )
                    .label(span, "unknown quantity")
                    .help(
                        match (metric, did_you_mean(mon, known.iter().map(String::as_str))) {
                            (Some(m), _) => format!(
                                "`{mon}` is reported when `{m}` is one of the `metrics`: add it there, or monitor one of: {}",
                                known.join(", ")
                            ),
                            (None, Some(s)) => format!(
                                "did you mean `{s}`? training reports: {}",
                                known.join(", ")
                            ),
                            (None, None) => format!("training reports: {}", known.join(", ")),
                        },
                    ),
                );
            } else if mon.starts_with("val_") && !has_val && !cb.args.is_given("monitor") {
                diags.push(
                    Diagnostic::warning(
                        "W0601",
                        format!(
                            "`{}` monitors `{mon}` by default, but no validation split is set",
                            cb.name
                        ),
                    )
                    .label(cb.span.clone(), "this callback")
                    .help(
                        "set `validation_split` (or `data.validation_split`), or `monitor: loss`",
                    ),
                );
            }
        }
    }

    Some(TrainDecl {
        span: v.span.clone(),
        targets,
        targets_span,
        targets_broken: !broken_targets.is_empty(),
        loss,
        optimizer: optimizer?,
        metrics,
        fit: fit?,
        data,
        callbacks,
    })
}
