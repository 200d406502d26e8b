//! Per-output training options against the model's outputs, as Keras's `compile`
//! matches them: a loss, a loss weight and metrics for each output (by output name or
//! in the order of the outputs), Keras's log names (`OUTPUT_loss`, `OUTPUT_METRIC`),
//! and the sample-weight options (`class_weight` with one output, never with
//! `sample_weight`; weights per example, so not with per-step losses).

use std::ops::Range;

use super::{Checker, Graph, MetricUse, Target};
use crate::catalog::losses::LossKind;
use crate::diag::{Diagnostic, did_you_mean};
use crate::spec::train::{self as spec_train, MetricDecl, Named, PerOutput, TrainDecl};

/// What a per-output option is called in messages, and an example value.
struct Opt {
    key: &'static str,
    example: &'static str,
}

const LOSS: Opt = Opt {
    key: "loss",
    example: "mse",
};
const LOSS_WEIGHTS: Opt = Opt {
    key: "loss_weights",
    example: "1.0",
};

impl Checker<'_> {
    /// Index into `g.outputs` of each name of a `Named` option; E0630 for a name that
    /// is not an output. `None` when one is not.
    fn output_indices<T>(&mut self, p: &PerOutput<T>, key: &str, g: &Graph) -> Option<Vec<usize>> {
        let PerOutput::Named(m) = p else {
            return Some(Vec::new());
        };
        let names: Vec<&str> = g.outputs.iter().map(|&s| g.name_of(s)).collect();
        let mut idx = Vec::new();
        let mut ok = true;
        for (n, span, _) in m {
            match names.iter().position(|o| o == n) {
                Some(i) => idx.push(i),
                None => {
                    ok = false;
                    let hint = match did_you_mean(n, names.iter().copied()) {
                        Some(s) => {
                            format!("did you mean `{s}`? the outputs are: {}", names.join(", "))
                        }
                        None => format!("the outputs are: {}", names.join(", ")),
                    };
                    self.diags.push(
                        Diagnostic::error(
                            "E0630",
                            format!("`{key}` names `{n}`, which is not a model output"),
                        )
                        .label(span.clone(), "not an output")
                        .help(hint),
                    );
                }
            }
        }
        ok.then_some(idx)
    }

    /// E0632: a per-output option does not give a value for every output.
    fn per_output_mismatch(&mut self, opt: &Opt, span: Range<usize>, why: String, g: &Graph) {
        let names: Vec<&str> = g.outputs.iter().map(|&s| g.name_of(s)).collect();
        let example: Vec<String> = names
            .iter()
            .map(|n| format!("{n}: {}", opt.example))
            .collect();
        self.diags.push(
            Diagnostic::error("E0632", why)
                .label(span, format!("`{}` for {} output(s)", opt.key, names.len()))
                .help(format!(
                    "give one per output, by name: `{}: {{{}}}`",
                    opt.key,
                    example.join(", ")
                )),
        );
    }

    /// The value of a per-output option for output `o`: `None` after an error
    /// (reported once per option through `reported`).
    fn for_output<'t, T>(
        &mut self,
        p: &'t PerOutput<T>,
        idx: &[usize],
        o: usize,
        opt: &Opt,
        reported: &mut bool,
        g: &Graph,
    ) -> Option<&'t T> {
        let n = g.outputs.len();
        let found = match p {
            PerOutput::All(v) => return Some(v),
            PerOutput::Named(m) => match idx.iter().position(|&i| i == o) {
                Some(k) => return Some(&m[k].2),
                None => (
                    m.first().map_or(0..0, |e| e.1.clone()),
                    format!(
                        "`{}` has no entry for the output `{}`",
                        opt.key,
                        g.name_of(g.outputs[o])
                    ),
                ),
            },
            PerOutput::Listed(l, span) if l.len() == n => return l.get(o),
            PerOutput::Listed(l, span) => (
                span.clone(),
                format!(
                    "`{}` lists {} value{}, but the model has {n} output{}",
                    opt.key,
                    l.len(),
                    if l.len() == 1 { "" } else { "s" },
                    if n == 1 { "" } else { "s" }
                ),
            ),
        };
        if !*reported {
            *reported = true;
            self.per_output_mismatch(opt, found.0, found.1, g);
        }
        None
    }

    /// Each target's output's loss and loss weight; `None` after an error (reported).
    pub(super) fn output_losses(
        &mut self,
        t: &TrainDecl,
        outputs: &[usize],
        g: &Graph,
    ) -> Option<Vec<(Named<LossKind>, Option<f64>)>> {
        let loss = t.loss.as_ref()?;
        let idx = self.output_indices(loss, "loss", g)?;
        let widx = match &t.loss_weights {
            Some(w) => Some(self.output_indices(w, "loss_weights", g)?),
            None => None,
        };
        let (mut r1, mut r2) = (false, false);
        let mut out = Vec::new();
        for &o in outputs {
            let l = self.for_output(loss, &idx, o, &LOSS, &mut r1, g);
            let w = match (&t.loss_weights, &widx) {
                (Some(w), Some(wi)) => self
                    .for_output(w, wi, o, &LOSS_WEIGHTS, &mut r2, g)
                    .map(|x| Some(*x)),
                _ => Some(None),
            };
            if let (Some(l), Some(w)) = (l, w) {
                out.push((l.clone(), w));
            }
        }
        (!r1 && !r2).then_some(out)
    }

    /// The metrics of each output (`metrics`, then `weighted_metrics`), named as Keras
    /// logs them; E0634 for a metric that does not fit its output's targets.
    pub(super) fn output_metrics(
        &mut self,
        t: &TrainDecl,
        targets: &[Target],
        g: &Graph,
    ) -> Option<Vec<MetricUse>> {
        let plain = self.metrics_per_output(&t.metrics, "metrics", g)?;
        let weighted = self.metrics_per_output(&t.weighted_metrics, "weighted_metrics", g)?;
        let many = g.outputs.len() > 1;
        let mut uses = Vec::new();
        let mut weighted_uses = Vec::new();
        for (k, target) in targets.iter().enumerate() {
            let o = target.output;
            let prefix = if many {
                format!("{}_", g.name_of(g.outputs[o]))
            } else {
                String::new()
            };
            let names = spec_train::metric_log_names(&prefix, &plain[o], &weighted[o]);
            let (pn, wn) = names.split_at(plain[o].len());
            for (list, names, into, w) in [
                (&plain[o], pn, &mut uses, false),
                (&weighted[o], wn, &mut weighted_uses, true),
            ] {
                for (m, name) in list.iter().zip(names) {
                    let kind = self.metric_fits(m, target, g)?;
                    into.push(MetricUse {
                        name: name.clone(),
                        kind,
                        args: m.args.clone(),
                        target: k,
                        weighted: w,
                    });
                }
            }
        }
        uses.extend(weighted_uses);
        Some(uses)
    }

    /// `metrics` (or `weighted_metrics`) spread over the outputs, as Keras's
    /// `CompileMetrics` does: one output takes every metric; several take a list with
    /// one entry per output, or a mapping by output name.
    fn metrics_per_output(
        &mut self,
        p: &PerOutput<Vec<MetricDecl>>,
        key: &'static str,
        g: &Graph,
    ) -> Option<Vec<Vec<MetricDecl>>> {
        let n = g.outputs.len();
        let idx = self.output_indices(p, key, g)?;
        let mut per: Vec<Vec<MetricDecl>> = vec![Vec::new(); n];
        match p {
            PerOutput::All(list) if n == 1 => per[0] = list.clone(),
            PerOutput::Listed(lists, _) if n == 1 => {
                per[0] = lists.iter().flatten().cloned().collect();
            }
            PerOutput::All(list) if list.is_empty() => {}
            PerOutput::All(list) if list.len() == n => {
                for (o, m) in list.iter().enumerate() {
                    per[o].push(m.clone());
                }
            }
            PerOutput::Listed(lists, _) if lists.len() == n => per = lists.clone(),
            PerOutput::Named(m) => {
                for ((_, _, list), &o) in m.iter().zip(&idx) {
                    per[o] = list.clone();
                }
            }
            PerOutput::All(list) => {
                let span = list[0].span.start..list[list.len() - 1].span.end;
                self.per_output_mismatch(
                    &Opt { key, example: "[accuracy]" },
                    span,
                    format!(
                        "the model has {n} outputs, so `{key}` lists one entry per output or maps output names to metrics, but it lists {}",
                        list.len()
                    ),
                    g,
                );
                return None;
            }
            PerOutput::Listed(lists, span) => {
                self.per_output_mismatch(
                    &Opt {
                        key,
                        example: "[accuracy]",
                    },
                    span.clone(),
                    format!(
                        "`{key}` lists {} entries, but the model has {n} outputs",
                        lists.len()
                    ),
                    g,
                );
                return None;
            }
        }
        Some(per)
    }

    /// E0634: a metric that compares with class indices on one-hot targets, or the
    /// other way round. Returns the metric (`accuracy` resolved).
    fn metric_fits(
        &mut self,
        m: &MetricDecl,
        target: &Target,
        g: &Graph,
    ) -> Option<&'static crate::catalog::metrics::MetricKind> {
        let out = g.type_of(g.outputs[target.output]);
        let kind = m.kind.resolved(target.loss.kind, out, &target.ty);
        let want = if kind.sparse_labels {
            out.shape[..out.rank().saturating_sub(1)].to_vec()
        } else {
            out.shape.clone()
        };
        if super::train::shape_fits(&target.ty, &want) {
            return Some(kind);
        }
        let oname = g.name_of(g.outputs[target.output]);
        self.diags.push(
            Diagnostic::error(
                "E0634",
                format!(
                    "`{}` compares `{oname}` {} with {}, but the target `{}` is {}",
                    kind.name,
                    crate::dim::fmt_shape(&out.shape),
                    if kind.sparse_labels {
                        format!("class indices {}", crate::dim::fmt_shape(&want))
                    } else {
                        format!("targets of its shape {}", crate::dim::fmt_shape(&want))
                    },
                    target.name,
                    crate::dim::fmt_shape(&target.ty.shape)
                ),
            )
            .label(m.span.clone(), "this metric")
            .help(if kind.sparse_labels {
                "this metric takes one class index per example; for one-hot targets use its categorical form (`top_k_categorical_accuracy`, `categorical_accuracy`)"
            } else {
                "this metric takes targets of the output's shape (one-hot for classes); for class indices use its sparse form, or `accuracy`"
            }),
        );
        None
    }

    /// `class_weight` and `sample_weight` against the model: E0633 for class weights
    /// with several outputs or next to sample weights (Keras refuses both), E0635 for
    /// an output whose loss has a value per step (weights are per example).
    pub(super) fn sample_weights(&mut self, t: &TrainDecl, targets: &[Target], g: &Graph) -> bool {
        let mut ok = true;
        if let Some(cw) = &t.class_weight {
            if targets.len() > 1 {
                ok = false;
                self.diags.push(
                    Diagnostic::error("E0633", format!("`class_weight` is for a model with one output, and this one has {}", targets.len()))
                        .label(cw.span.clone(), "class weights")
                        .help("weight the examples with `sample_weight: ARRAY` instead (an array of one weight per example in the data)"),
                );
            }
            if let Some((_, span)) = &t.sample_weight {
                ok = false;
                self.diags.push(
                    Diagnostic::error("E0633", "`class_weight` and `sample_weight` are both set; Keras takes one or the other")
                        .label(cw.span.clone(), "class weights")
                        .secondary(span.clone(), "sample weights")
                        .help("fold the class weights into the sample weights array, and drop `class_weight`"),
                );
            }
        }
        let what = match (&t.sample_weight, &t.class_weight) {
            (Some((_, s)), _) => Some(("sample_weight", s.clone())),
            (None, Some(cw)) => Some(("class_weight", cw.span.clone())),
            (None, None) => None,
        };
        if let Some((what, span)) = what {
            for target in targets {
                let out = g.type_of(g.outputs[target.output]);
                if out.rank() > 2 {
                    ok = false;
                    let oname = g.name_of(g.outputs[target.output]);
                    self.diags.push(
                        Diagnostic::error(
                            "E0635",
                            format!(
                                "`{what}` gives one weight per example, but `{}` on `{oname}` {} has a value per step of each example",
                                target.loss.kind.name,
                                crate::dim::fmt_shape(&out.shape)
                            ),
                        )
                        .label(span.clone(), "one weight per example")
                        .help("Keras multiplies the per-example weights with the loss's values, which needs one value per example: weight a model whose outputs are [batch, units]"),
                    );
                }
            }
        }
        ok
    }

    /// The callbacks' monitors against every name training logs (several outputs:
    /// the parser could not know the names).
    pub(super) fn monitors(&mut self, t: &TrainDecl, train: &super::Train, g: &Graph) {
        let has_val = t.fit.float("validation_split") > 0.0
            || t.data.as_ref().is_some_and(|d| d.validation_split > 0.0)
            || t.validation_data.is_some();
        spec_train::check_monitors(
            &t.callbacks,
            &train.log_names(g),
            t.metrics_broken,
            has_val,
            self.diags,
        );
    }
}
