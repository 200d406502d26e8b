//! The training options of `train:` that Keras's `compile` and `fit` take per output or
//! per example: losses and loss weights per output, metrics (with arguments, per
//! output, weighted or not), `class_weight`, `sample_weight` and `validation_data`.
//! Output names are matched to the model's outputs by the checker (`check::train`).

use std::ops::Range;

use crate::args::{self, Args, named};
use crate::catalog::losses::{self, LossKind};
use crate::catalog::metrics::{METRICS, MetricKind};
use crate::catalog::{self, Entry};
use crate::diag::{Diagnostic, did_you_mean};
use crate::yaml::{Kind, Node, Scalar};

use super::train::Named;

/// A value given once for every output, or per output.
#[derive(Clone, Debug, PartialEq)]
pub enum PerOutput<T> {
    /// One for every output (`loss: mse`, `metrics: [mae]`).
    All(T),
    /// `{output: value}` in the order written, with each output name's span.
    Named(Vec<(String, Range<usize>, T)>),
    /// `[value, …]`: one per output in the order of `outputs`; the list's span.
    Listed(Vec<T>, Range<usize>),
}

impl<T> PerOutput<T> {
    /// Every value given, in the order written.
    pub fn values(&self) -> Vec<&T> {
        match self {
            PerOutput::All(v) => vec![v],
            PerOutput::Named(m) => m.iter().map(|(_, _, v)| v).collect(),
            PerOutput::Listed(l, _) => l.iter().collect(),
        }
    }
}

/// A metric as the spec names it, with its validated arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricDecl {
    pub kind: &'static MetricKind,
    pub args: Args,
    /// The name as written.
    pub span: Range<usize>,
}

/// `class_weight: {class: weight}`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassWeight {
    pub weights: Vec<(i64, f64)>,
    pub span: Range<usize>,
}

/// `loss:`: one loss (`mse`, `{huber: {delta: 0.5}}`), a mapping from output names to
/// losses, or a list of losses in the order of the outputs. Also whether any was
/// wrong (reported).
pub(super) fn losses(
    v: &Node,
    lookup: impl Fn(&Node, &mut Vec<Diagnostic>) -> Option<Named<LossKind>>,
    diags: &mut Vec<Diagnostic>,
) -> (Option<PerOutput<Named<LossKind>>>, bool) {
    let one_loss = |m: &[(Node, Node)]| {
        m.len() == 1
            && m[0]
                .0
                .as_str()
                .is_some_and(|k| losses::lookup(&k.to_lowercase()).is_some())
    };
    match &v.kind {
        Kind::Map(m) if !one_loss(m) && !m.is_empty() => {
            let mut out = Vec::new();
            let mut failed = false;
            for (k, l) in m {
                let Some(name) = output_key(k, "loss", diags) else {
                    failed = true;
                    continue;
                };
                match lookup(l, diags) {
                    Some(n) => out.push((name, k.span.clone(), n)),
                    None => failed = true,
                }
            }
            (Some(PerOutput::Named(out)), failed)
        }
        Kind::Seq(items) if !items.is_empty() => {
            let got: Vec<Option<Named<LossKind>>> =
                items.iter().map(|l| lookup(l, diags)).collect();
            let failed = got.iter().any(Option::is_none);
            (
                Some(PerOutput::Listed(
                    got.into_iter().flatten().collect(),
                    v.span.clone(),
                )),
                failed,
            )
        }
        _ => {
            let l = lookup(v, diags);
            let failed = l.is_none();
            (l.map(PerOutput::All), failed)
        }
    }
}

/// A key of a per-output mapping: an output's name.
fn output_key(k: &Node, what: &str, diags: &mut Vec<Diagnostic>) -> Option<String> {
    match k.as_str() {
        Some(s) => Some(s.to_string()),
        None => {
            diags.push(
                Diagnostic::error(
                    "E0631",
                    format!(
                        "the keys of a per-output `{what}` mapping are output names, but this is {}",
                        k.describe()
                    ),
                )
                .label(k.span.clone(), "expected an output's name")
                .help(format!(
                    "write `{what}: {{OUTPUT: …}}` with the names of the model's outputs"
                )),
            );
            None
        }
    }
}

/// A number (an integer or a float).
fn number(v: &Node) -> Option<f64> {
    match &v.kind {
        Kind::Scalar(Scalar::Int(i)) => Some(*i as f64),
        Kind::Scalar(Scalar::Float(f)) => Some(*f),
        _ => None,
    }
}

/// A finite number, or an error (E0631) naming `what`.
fn weight_value(v: &Node, what: &str, diags: &mut Vec<Diagnostic>) -> Option<f64> {
    match number(v) {
        Some(x) if x.is_finite() => Some(x),
        _ => {
            diags.push(
                Diagnostic::error(
                    "E0631",
                    format!(
                        "a weight in `{what}` is a number, but this is {}",
                        v.describe()
                    ),
                )
                .label(v.span.clone(), "expected a number")
                .help(format!(
                    "write the weight as a number, e.g. `{what}: {{…: 0.5}}`"
                )),
            );
            None
        }
    }
}

/// `loss_weights:` a number (one output), `{output: weight}` or `[weight, …]`.
pub(super) fn loss_weights(v: &Node, diags: &mut Vec<Diagnostic>) -> Option<PerOutput<f64>> {
    match &v.kind {
        Kind::Map(m) => {
            let mut out = Vec::new();
            for (k, w) in m {
                let name = output_key(k, "loss_weights", diags)?;
                out.push((
                    name,
                    k.span.clone(),
                    weight_value(w, "loss_weights", diags)?,
                ));
            }
            Some(PerOutput::Named(out))
        }
        Kind::Seq(items) => {
            let ws: Option<Vec<f64>> = items
                .iter()
                .map(|w| weight_value(w, "loss_weights", diags))
                .collect();
            Some(PerOutput::Listed(ws?, v.span.clone()))
        }
        _ => weight_value(v, "loss_weights", diags).map(PerOutput::All),
    }
}

/// `metrics:` or `weighted_metrics:` (`what`): a metric, a list of metrics (one list
/// per output when items are lists), or `{output: metrics}`. A metric is a name or
/// `{name: {arguments}}`. Also whether any was wrong (reported).
pub(super) fn metrics(
    v: &Node,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> (PerOutput<Vec<MetricDecl>>, bool) {
    let mut failed = false;
    let out = match &v.kind {
        Kind::Map(m) => {
            let mut out = Vec::new();
            for (k, ms) in m {
                let Some(name) = output_key(k, what, diags) else {
                    failed = true;
                    continue;
                };
                out.push((
                    name,
                    k.span.clone(),
                    metric_list(ms, what, &mut failed, diags),
                ));
            }
            PerOutput::Named(out)
        }
        Kind::Seq(items) if items.iter().any(|i| i.as_seq().is_some()) => PerOutput::Listed(
            items
                .iter()
                .map(|i| metric_list(i, what, &mut failed, diags))
                .collect(),
            v.span.clone(),
        ),
        _ => PerOutput::All(metric_list(v, what, &mut failed, diags)),
    };
    // A metric listed again is reported once and kept once.
    let out = match out {
        PerOutput::All(l) => PerOutput::All(once(l, what, diags)),
        PerOutput::Named(m) => PerOutput::Named(
            m.into_iter()
                .map(|(n, s, l)| (n, s, once(l, what, diags)))
                .collect(),
        ),
        PerOutput::Listed(ls, s) => {
            PerOutput::Listed(ls.into_iter().map(|l| once(l, what, diags)).collect(), s)
        }
    };
    (out, failed)
}

/// The list with each metric once (E0613 for the others).
fn once(mut list: Vec<MetricDecl>, what: &str, diags: &mut Vec<Diagnostic>) -> Vec<MetricDecl> {
    repeated(&list, what, diags);
    let mut seen: Vec<&'static MetricKind> = Vec::new();
    list.retain(|m| {
        let new = !seen.iter().any(|k| std::ptr::eq(*k, m.kind));
        if new {
            seen.push(m.kind);
        }
        new
    });
    list
}

/// One metric or a list of them; `null` is none (Keras's `None` for an output).
fn metric_list(
    v: &Node,
    what: &str,
    failed: &mut bool,
    diags: &mut Vec<Diagnostic>,
) -> Vec<MetricDecl> {
    if v.is_null() {
        return Vec::new();
    }
    let items: Vec<&Node> = match v.as_seq() {
        Some(s) => s.iter().collect(),
        None => vec![v],
    };
    items
        .into_iter()
        .filter_map(|it| {
            let m = metric(it, what, diags);
            *failed |= m.is_none();
            m
        })
        .collect()
}

/// One metric: a name or `{name: {arguments}}`.
fn metric(it: &Node, what: &str, diags: &mut Vec<Diagnostic>) -> Option<MetricDecl> {
    let Some((s, span, a)) = named(it) else {
        diags.push(
            Diagnostic::error(
                "E0605",
                format!(
                    "a metric is a name or `{{name: {{arguments}}}}`, but this is {}",
                    it.describe()
                ),
            )
            .label(it.span.clone(), "expected a metric")
            .help(format!(
                "metrics are names, e.g. `{what}: [accuracy]`, or names with arguments, `{what}: [{{top_k_categorical_accuracy: {{k: 3}}}}]`"
            )),
        );
        return None;
    };
    let Some(kind) = catalog::find(METRICS, &s.to_lowercase()) else {
        if let Some(d) = crate::diag::keras::not_yet(
            crate::diag::keras::Family::Metric,
            s,
            span.clone(),
            catalog::all_names(METRICS),
        ) {
            diags.push(d);
            return None;
        }
        diags.push(
            Diagnostic::error("E0605", format!("`{s}` is not a metric kiln knows"))
                .label(span, "unknown metric")
                .help({
                    let all = catalog::all_names(METRICS).collect::<Vec<_>>().join(", ");
                    match did_you_mean(s, catalog::all_names(METRICS)) {
                        Some(c) => format!("did you mean `{c}`? kiln's metrics: {all}"),
                        None => format!("kiln's metrics: {all}"),
                    }
                }),
        );
        return None;
    };
    let args = args::validate(kind.args(), a, kind.name, span.clone(), diags)?;
    Some(MetricDecl { kind, args, span })
}

/// E0613: a metric listed again for the same output.
fn repeated(list: &[MetricDecl], what: &str, diags: &mut Vec<Diagnostic>) {
    // A metric listed again: the index of its first listing, the second, and how many.
    let mut repeats: Vec<(usize, Range<usize>, usize)> = Vec::new();
    let mut firsts: Vec<usize> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        match firsts
            .iter()
            .copied()
            .find(|&f| std::ptr::eq(list[f].kind, m.kind))
        {
            Some(first) => match repeats.iter_mut().find(|(f, _, _)| *f == first) {
                Some((_, _, n)) => *n += 1,
                None => repeats.push((first, m.span.clone(), 2)),
            },
            None => firsts.push(i),
        }
    }
    for (first, again, times) in repeats {
        let m = &list[first];
        diags.push(
            Diagnostic::error(
                "E0613",
                format!("`{}` is listed {times} times in `{what}`", m.kind.name),
            )
            .label(again, "listed again here")
            .secondary(m.span.clone(), "first listed here")
            .help("list each metric once: training reports one value per metric"),
        );
    }
}

/// `class_weight: {class index: weight}` (Keras's `fit(class_weight=…)`).
pub(super) fn class_weight(v: &Node, diags: &mut Vec<Diagnostic>) -> Option<ClassWeight> {
    let Some(m) = v.as_map() else {
        diags.push(
            Diagnostic::error(
                "E0631",
                format!(
                    "`class_weight` maps class indices to weights, but this is {}",
                    v.describe()
                ),
            )
            .label(v.span.clone(), "expected `{class: weight}`")
            .help("write e.g. `class_weight: {0: 1.0, 1: 5.0}`"),
        );
        return None;
    };
    let mut weights = Vec::new();
    for (k, w) in m {
        let Kind::Scalar(Scalar::Int(c)) = k.kind else {
            diags.push(
                Diagnostic::error(
                    "E0631",
                    format!(
                        "the keys of `class_weight` are class indices, but this is {}",
                        k.describe()
                    ),
                )
                .label(k.span.clone(), "expected a class index (0, 1, …)")
                .help("write e.g. `class_weight: {0: 1.0, 1: 5.0}`"),
            );
            return None;
        };
        weights.push((c, weight_value(w, "class_weight", diags)?));
    }
    Some(ClassWeight {
        weights,
        span: v.span.clone(),
    })
}

/// A name or path given as a string (`sample_weight`, `validation_data`).
pub(super) fn string(
    v: &Node,
    what: &str,
    example: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<(String, Range<usize>)> {
    match v.as_str() {
        Some(s) if !s.is_empty() => Some((s.to_string(), v.span.clone())),
        _ => {
            diags.push(
                Diagnostic::error(
                    "E0631",
                    format!("`{what}` is a name, but this is {}", v.describe()),
                )
                .label(v.span.clone(), "expected a name")
                .help(format!("write e.g. `{what}: {example}`")),
            );
            None
        }
    }
}
