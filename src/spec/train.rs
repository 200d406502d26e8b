//! The `train:` section: targets, loss, optimizer (with learning-rate schedules and
//! clipping), metrics, fit settings, data and callbacks — Keras's names and defaults,
//! resolved to their [`crate::catalog`] entries.

use std::ops::Range;

use super::{TensorDecl, parse_tensors};
use crate::args::{self, ArgKind, ArgSpec, Args, Default, FRACTION, Value, arg, int, named};
use crate::catalog::callbacks::{CALLBACKS, CallbackKind};
use crate::catalog::losses::{LOSSES, LossKind};
use crate::catalog::metrics::{METRICS, MetricKind};
use crate::catalog::optimizers::{self, CLIPPING, OPTIMIZERS, OptimizerKind};
use crate::catalog::{self, Entry};
use crate::diag::{Diagnostic, did_you_mean};
use crate::yaml::Node;

/// A catalog entry as the spec names it, with its validated arguments (a loss,
/// optimizer, callback).
#[derive(Debug, PartialEq)]
pub struct Named<K: 'static> {
    pub kind: &'static K,
    /// The name as written (for labels).
    pub span: Range<usize>,
    pub args: Args,
}

// Not derived: that would ask for `K: Clone`, and entries are never copied.
impl<K> Clone for Named<K> {
    fn clone(&self) -> Self {
        Named {
            kind: self.kind,
            span: self.span.clone(),
            args: self.args.clone(),
        }
    }
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
    pub loss: Option<Named<LossKind>>,
    pub optimizer: Named<OptimizerKind>,
    /// Metrics as written (`acc` is `accuracy`), with spans.
    pub metrics: Vec<(&'static MetricKind, Range<usize>)>,
    /// batch_size, epochs, seed, shuffle, validation_split.
    pub fit: Args,
    pub data: Option<DataDecl>,
    pub callbacks: Vec<Named<CallbackKind>>,
}

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

/// Looks a name up in a registry and validates its arguments. `kind` names the family
/// in messages ("loss", "callback").
fn lookup<K: Entry>(
    registry: &'static [&'static K],
    v: &Node,
    kind: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Named<K>> {
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
                let first = catalog::names(registry).next().unwrap_or("…");
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
    let Some(k) = catalog::find(registry, &name.to_lowercase()) else {
        diags.push(catalog::unknown::<K>(
            name,
            span,
            &format!("a {kind}"),
            kind,
            catalog::names(registry),
        ));
        return None;
    };
    let a = args::validate(k.args(), args, k.name(), span.clone(), diags)?;
    Some(Named {
        kind: k,
        span,
        args: a,
    })
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
    let fit = fit_settings(v, entries, diags);
    let mut broken_targets = Vec::new();
    let (targets, targets_span) = match v.entry("targets") {
        Some((k, t)) => (
            parse_tensors(t, "targets", true, &mut broken_targets, diags),
            Some(k.span.clone()),
        ),
        None => (Vec::new(), None),
    };
    let loss = match v.get("loss") {
        Some(l) => lookup(LOSSES, l, "loss", diags),
        None => {
            diags.push(
                Diagnostic::error("E0604", "`train` has no `loss`")
                    .label(v.span.start..v.span.start, "add `loss: …` to this section")
                    .help("add a loss, e.g. `loss: {sparse_categorical_crossentropy: {from_logits: true}}`"),
            );
            None
        }
    };
    let optimizer = optimizer(v, diags)?;
    let (metrics, metrics_failed) = metrics(v, diags);
    let data = v.get("data").and_then(|d| data(d, diags));
    let callbacks = callbacks(v, diags);
    let has_val = fit
        .as_ref()
        .is_some_and(|f| f.float("validation_split") > 0.0)
        || data.as_ref().is_some_and(|d| d.validation_split > 0.0);
    check_monitors(&callbacks, &metrics, metrics_failed, has_val, diags);
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

/// The fit settings: every key of `train` that is not a section. Unknown keys get
/// suggestions from both the settings and the sections.
fn fit_settings(v: &Node, entries: &[(Node, Node)], diags: &mut Vec<Diagnostic>) -> Option<Args> {
    let rest: Vec<(Node, Node)> = entries
        .iter()
        .filter(|(k, _)| !k.as_str().is_some_and(|s| SPECIAL.contains(&s)))
        .cloned()
        .collect();
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
    fit
}

/// `train.optimizer`, Keras's RMSprop when absent. `None` stops parsing `train` (the
/// optimizer is not a name or a mapping); a wrong name or argument is only reported.
fn optimizer(v: &Node, diags: &mut Vec<Diagnostic>) -> Option<Option<Named<OptimizerKind>>> {
    let Some(o) = v.get("optimizer") else {
        // Keras's `compile` defaults to RMSprop.
        let kind = optimizers::DEFAULT;
        let a = args::validate(kind.args, None, kind.name, v.span.clone(), diags);
        return Some(a.map(|a| Named {
            kind,
            span: v.span.start..v.span.start,
            args: a,
        }));
    };
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
    let Some(kind) = optimizers::lookup(&name.to_lowercase()) else {
        diags.push(catalog::unknown::<optimizers::OptimizerKind>(
            name,
            span,
            "an optimizer",
            "optimizer",
            catalog::names(OPTIMIZERS),
        ));
        return Some(None);
    };
    let Some(args) = args::validate(kind.args, a, kind.name, span.clone(), diags) else {
        return Some(None);
    };
    let set: Vec<&str> = CLIPPING.into_iter().filter(|n| args.is_given(n)).collect();
    if set.len() > 1 {
        let mut d = Diagnostic::error(
            "E0603",
            format!(
                "only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set, but this sets {}",
                set.join(" and ")
            ),
        );
        for (i, n) in set.iter().enumerate() {
            let at = args.span(n).unwrap_or(span.clone());
            d = if i == 0 {
                d.label(at, "set here")
            } else {
                d.secondary(at, "and here")
            };
        }
        diags.push(d.help("keep one clipping rule"));
    }
    Some(Some(Named { kind, span, args }))
}

/// `train.metrics`, canonicalized; also whether any was wrong (reported).
fn metrics(
    v: &Node,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<(&'static MetricKind, Range<usize>)>, bool) {
    let mut metrics: Vec<(&'static MetricKind, Range<usize>)> = Vec::new();
    // A metric listed again: the index of its first listing, the second, and how many.
    let mut repeats: Vec<(usize, Range<usize>, usize)> = Vec::new();
    let mut failed = false;
    let Some(m) = v.get("metrics") else {
        return (metrics, failed);
    };
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
            failed = true;
            continue;
        };
        match catalog::find(METRICS, &s.to_lowercase()) {
            Some(k) => match metrics.iter().position(|(m, _)| std::ptr::eq(*m, k)) {
                Some(first) => match repeats.iter_mut().find(|(f, _, _)| *f == first) {
                    Some((_, _, n)) => *n += 1,
                    None => repeats.push((first, it.span.clone(), 2)),
                },
                None => metrics.push((k, it.span.clone())),
            },
            None => {
                failed = true;
                if let Some(d) = crate::diag::keras::not_yet(
                    crate::diag::keras::Family::Metric,
                    s,
                    it.span.clone(),
                    catalog::all_names(METRICS),
                ) {
                    diags.push(d);
                    continue;
                }
                diags.push(
                    Diagnostic::error("E0605", format!("`{s}` is not a metric kiln knows"))
                        .label(it.span.clone(), "unknown metric")
                        .help({
                            let all = catalog::all_names(METRICS).collect::<Vec<_>>().join(", ");
                            match did_you_mean(s, catalog::all_names(METRICS)) {
                                Some(c) => format!("did you mean `{c}`? kiln's metrics: {all}"),
                                None => format!("kiln's metrics: {all}"),
                            }
                        }),
                )
            }
        }
    }
    for (first, again, times) in repeats {
        let (k, first_span) = &metrics[first];
        diags.push(
            Diagnostic::error(
                "E0613",
                format!("`{}` is listed {times} times in `metrics`", k.name),
            )
            .label(again, "listed again here")
            .secondary(first_span.clone(), "first listed here")
            .help("list each metric once: training reports one value per metric"),
        );
    }
    (metrics, failed)
}

/// `train.data`: a path, or `{path, validation_split, target_column}`.
fn data(d: &Node, diags: &mut Vec<Diagnostic>) -> Option<DataDecl> {
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
}

/// `train.callbacks`: a list of callbacks.
fn callbacks(v: &Node, diags: &mut Vec<Diagnostic>) -> Vec<Named<CallbackKind>> {
    let Some(c) = v.get("callbacks") else {
        return Vec::new();
    };
    let Some(items) = c.as_seq() else {
        diags.push(
            Diagnostic::error(
                "E0606",
                format!("`callbacks` must be a list, but this is {}", c.describe()),
            )
            .label(
                c.span.clone(),
                "expected a list like `[{early_stopping: {patience: 3}}]`",
            )
            .help("write the callbacks as a list, even a single one: `callbacks: [{…}]`"),
        );
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|it| lookup(CALLBACKS, it, "callback", diags))
        .collect()
}

/// Monitored quantities must be ones training will report (`loss`, the metrics, and
/// their `val_` forms with a validation split).
fn check_monitors(
    callbacks: &[Named<CallbackKind>],
    metrics: &[(&'static MetricKind, Range<usize>)],
    metrics_failed: bool,
    has_val: bool,
    diags: &mut Vec<Diagnostic>,
) {
    let mut known: Vec<String> = vec!["loss".into()];
    for (m, _) in metrics {
        // Once each: a metric listed 30,000 times must not make every check below slow.
        if !known.iter().any(|k| k == m.name) {
            known.push(m.name.to_string());
        }
    }
    let with_val: Vec<String> = known.iter().map(|k| format!("val_{k}")).collect();
    known.extend(with_val);
    for cb in callbacks {
        let Some(mon) = cb.args.opt_str("monitor") else {
            continue;
        };
        let name = cb.kind.name;
        let span = cb.args.span("monitor").unwrap_or(cb.span.clone());
        // A misspelled metric (already reported) may be the one monitored.
        if !known.iter().any(|k| k == mon) && !metrics_failed {
            // `val_accuracy` without `accuracy` among the metrics.
            let metric =
                catalog::find(METRICS, mon.strip_prefix("val_").unwrap_or(mon)).map(|k| k.name);
            diags.push(
                Diagnostic::error(
                    "E0607",
                    format!("`{name}` monitors `{mon}`, which training does not report"),
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
                    format!("`{name}` monitors `{mon}` by default, but no validation split is set"),
                )
                .label(cb.span.clone(), "this callback")
                .help("set `validation_split` (or `data.validation_split`), or `monitor: loss`"),
            );
        }
    }
}
