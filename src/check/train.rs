//! The train section against the model: each target matched to an output, its shape
//! and dtype against the loss, logits against probabilities, and `accuracy` resolved
//! to Keras's variant.

use std::ops::Range;

use super::{Checker, Graph, Layer, Source, Target, Train, tensor_type};
use crate::catalog::losses::{LossKind, Targets};
use crate::diag::{Diagnostic, did_you_mean};
use crate::dim::{Dim, fmt_shape};
use crate::layers::TensorType;
use crate::spec::TensorDecl;
use crate::spec::train::{PerOutput, TrainDecl};

/// What a target is checked against: the loss (name, `from_logits`, span) and the
/// output it is compared with.
struct Against<'g> {
    loss: &'static LossKind,
    from_logits: bool,
    loss_span: Range<usize>,
    g: &'g Graph,
    out: Source,
}

impl Checker<'_> {
    /// The checked train section; `None` when a target is wrong (reported).
    pub(super) fn train(&mut self, t: &TrainDecl, g: &Graph) -> Option<Train> {
        let loss = t.loss.as_ref()?;
        if t.losses_broken {
            return None;
        }
        let errors_before = self.diags.iter().filter(|d| d.is_error()).count();
        if t.targets_broken {
            // A target declaration is wrong and already reported.
            return None;
        }
        if t.targets.is_empty() {
            if t.targets_span.is_some() {
                // `targets:` is written but none of it parsed: already reported.
                return None;
            }
            let first = loss.values()[0];
            let example = target_example(first.kind, g.type_of(g.outputs[0]));
            self.diags.push(
                Diagnostic::error(
                    "E0608",
                    "`train` declares no `targets`: the labels the loss compares the output with",
                )
                .label(
                    first.span.clone(),
                    "this loss has nothing to compare the output with",
                )
                .help(format!("for this model and loss: `targets: {example}`")),
            );
            return None;
        }
        let mut matched = Vec::new();
        for pos in 0..t.targets.len() {
            match self.target_output(t, pos, g) {
                Ok(k) => matched.push((pos, k)),
                Err(Stop::Target) => continue,
                Err(Stop::Section) => return None,
            }
        }
        let outs: Vec<usize> = matched.iter().map(|&(_, k)| k).collect();
        let losses = self.output_losses(t, &outs, g)?;
        let mut targets = Vec::new();
        for (&(pos, out_idx), (loss, loss_weight)) in matched.iter().zip(losses) {
            let d = &t.targets[pos];
            let ty = tensor_type(d);
            let against = Against {
                loss: loss.kind,
                from_logits: loss.args.bool("from_logits"),
                loss_span: loss.span.clone(),
                g,
                out: g.outputs[out_idx],
            };
            self.check_target(d, &ty, &against);
            targets.push(Target {
                name: d.name.clone(),
                ty,
                output: out_idx,
                loss,
                loss_weight,
            });
        }
        let errors_after = self.diags.iter().filter(|d| d.is_error()).count();
        if errors_after > errors_before {
            return None;
        }
        let metrics = self.output_metrics(t, &targets, g)?;
        if !self.sample_weights(t, &targets, g) {
            return None;
        }
        let train = Train {
            decl: t.clone(),
            output_losses: g.outputs.len() > 1,
            weighted: t.sample_weight.is_some() || t.class_weight.is_some(),
            targets,
            metrics,
        };
        let parser_checked = g.outputs.len() == 1
            && matches!(t.loss, Some(PerOutput::All(_)))
            && matches!(t.metrics, PerOutput::All(_))
            && matches!(t.weighted_metrics, PerOutput::All(_));
        if !parser_checked {
            self.monitors(t, &train, g);
        }
        Some(train)
    }

    /// The index into `g.outputs` of the output that target `pos` is compared with: the
    /// one it names, or the one in the same position when there are as many targets as
    /// outputs.
    fn target_output(&mut self, t: &TrainDecl, pos: usize, g: &Graph) -> Result<usize, Stop> {
        let d = &t.targets[pos];
        let n_out = g.outputs.len();
        match &d.output {
            Some((n, span)) => match g.outputs.iter().position(|&s| g.name_of(s) == n) {
                Some(k) => Ok(k),
                None => {
                    let names: Vec<&str> = g.outputs.iter().map(|&s| g.name_of(s)).collect();
                    self.diags.push(
                        Diagnostic::error(
                            "E0612",
                            format!(
                                "the target `{}` is for `{n}`, which is not a model output",
                                d.name
                            ),
                        )
                        .label(span.clone(), "not an output")
                        .help(
                            match did_you_mean(n, names.iter().copied()) {
                                Some(s) => format!(
                                    "did you mean `{s}`? the outputs are: {}",
                                    names.join(", ")
                                ),
                                None => format!("the outputs are: {}", names.join(", ")),
                            },
                        ),
                    );
                    Err(Stop::Target)
                }
            },
            None if t.targets.len() == n_out => Ok(pos),
            None => {
                // Point at the first target without an output when there are too many.
                let (span, label) = match t.targets.get(n_out) {
                    Some(extra) => (extra.name_span.clone(), "no output is left for this target"),
                    None => (d.name_span.clone(), "which output is this for?"),
                };
                let mut diag = Diagnostic::error(
                    "E0611",
                    format!(
                        "the model has {n_out} output{}, but `train` declares {} targets",
                        if n_out == 1 { "" } else { "s" },
                        t.targets.len()
                    ),
                )
                .label(span, label);
                for &o in &g.outputs {
                    diag = diag.secondary(origin(g, o), format!("output `{}`", g.name_of(o)));
                }
                self.diags.push(diag.help("declare one target per output, in the order of `outputs`, or say `output: NAME` in each target"));
                Err(Stop::Section)
            }
        }
    }

    /// A target against its loss and output: shape (E0609), dtype (E0610), then logits
    /// against probabilities (W0602, W0603). Stops at the first error.
    fn check_target(&mut self, d: &TensorDecl, ty: &TensorType, a: &Against) {
        let oty = a.g.type_of(a.out);
        let int_labels = a.loss.targets == Targets::SparseLabels;
        let want: Vec<Dim> = if int_labels {
            oty.shape[..oty.rank().saturating_sub(1)].to_vec()
        } else {
            oty.shape.clone()
        };
        if !shape_fits(ty, &want) {
            self.target_shape_error(d, ty, &want, a);
            return;
        }
        if self.target_dtype_error(d, ty, int_labels, a) {
            return;
        }
        if let Some(m) = a.g.mask_of(a.out)
            && !crate::layers::steps_of(m, &oty.shape)
        {
            self.loss_mask_error(m.len(), a);
            return;
        }
        // Logits vs probabilities: the mistakes Keras only warns about at run time.
        if let Source::Layer(i) = a.out {
            self.logits_warning(output_activation(&a.g.layers[i]), a);
        }
    }

    /// E0522: the output carries the mask on attention scores (an axis per score axis),
    /// which Keras's loss cannot weight its per-step values by.
    fn loss_mask_error(&mut self, mask_rank: usize, a: &Against) {
        let oname = a.g.name_of(a.out).to_string();
        let rank = a.g.type_of(a.out).rank();
        self.diags.push(
            Diagnostic::error(
                "E0522",
                format!(
                    "`{}` cannot weight its values by the Keras mask of `{oname}`: the mask has {mask_rank} axes and the output {rank} (Keras's loss needs a mask per step, one axis fewer)",
                    a.loss.name
                ),
            )
            .label(a.loss_span.clone(), "this loss")
            .help("attention scores carry the attention mask; train on a value that carries no mask (add a layer that drops masks, e.g. `reshape`), or remove the masks that reach the attention"),
        );
    }

    /// E0609: the target's shape is not the one the loss needs for this output.
    fn target_shape_error(&mut self, d: &TensorDecl, ty: &TensorType, want: &[Dim], a: &Against) {
        let kind = a.loss;
        let loss = kind.name;
        let int_labels = kind.targets == Targets::SparseLabels;
        let oty = a.g.type_of(a.out);
        let oname = a.g.name_of(a.out);
        let why = match kind.targets {
            Targets::SparseLabels => format!(
                "`{loss}` takes one class index per example, so the target's shape is the output's without its class axis: {}",
                fmt_shape(want)
            ),
            Targets::Dense { .. } => format!(
                "`{loss}` compares the target with the output element by element, so their shapes must be equal"
            ),
        };
        self.diags.push(
            Diagnostic::error(
                "E0609",
                format!(
                    "the target `{}` is {}, but `{loss}` on the output `{oname}` ({}) needs {}",
                    d.name,
                    fmt_shape(&ty.shape),
                    fmt_shape(&oty.shape),
                    fmt_shape(want)
                ),
            )
            .label(
                d.shape_span.clone(),
                format!("expected {}", fmt_shape(want)),
            )
            .secondary(
                origin(a.g, a.out),
                format!("`{oname}` is {}", fmt_shape(&oty.shape)),
            )
            .secondary(a.loss_span.clone(), "this loss")
            .help(format!(
                "{why}{}",
                match kind.counterpart {
                    Some(c) if !int_labels && ty.rank() + 1 == oty.rank() =>
                        format!("; for integer class labels use `{}`", c.name),
                    Some(c) if int_labels && ty.rank() == oty.rank() =>
                        format!("; for one-hot targets use `{}`", c.name),
                    _ => String::new(),
                }
            )),
        );
    }

    /// E0610: integer labels where the loss takes f32, or the other way round. Returns
    /// whether it was reported.
    fn target_dtype_error(
        &mut self,
        d: &TensorDecl,
        ty: &TensorType,
        int_labels: bool,
        a: &Against,
    ) -> bool {
        let kind = a.loss;
        let loss = kind.name;
        if int_labels && !ty.dtype.is_int() {
            self.diags.push(
                Diagnostic::error(
                    "E0610",
                    format!(
                        "`{loss}` takes integer class indices, but the target `{}` is f32",
                        d.name
                    ),
                )
                .label(d.shape_span.clone(), "declared f32 (the default)")
                .secondary(a.loss_span.clone(), "this loss")
                .help(format!(
                    "declare it as `{}: {{shape: {}, dtype: i32}}`",
                    d.name,
                    fmt_shape(&ty.shape)
                )),
            );
            return true;
        }
        if kind.targets == (Targets::Dense { ints_ok: false }) && ty.dtype.is_int() {
            let help = match kind.counterpart {
                Some(c) => format!(
                    "integer labels need `{}`; `{loss}` takes one-hot f32 targets",
                    c.name
                ),
                None => "declare the target as f32".to_string(),
            };
            self.diags.push(
                Diagnostic::error(
                    "E0610",
                    format!(
                        "`{loss}` takes f32 targets, but `{}` is {}",
                        d.name,
                        ty.dtype.name()
                    ),
                )
                .label(d.shape_span.clone(), "integer target")
                .secondary(a.loss_span.clone(), "this loss")
                .help(help),
            );
            return true;
        }
        false
    }

    /// W0602/W0603: a cross-entropy told `from_logits` on probabilities, or not told on
    /// logits (an output layer ending in `act`).
    fn logits_warning(&mut self, act: &str, a: &Against) {
        let loss = a.loss.name;
        let oname = a.g.name_of(a.out);
        let probs = matches!(act, "softmax" | "sigmoid");
        let ce = a.loss.cross_entropy;
        if ce && a.from_logits && probs {
            self.diags.push(
                Diagnostic::warning(
                    "W0602",
                    format!("`{loss}` is told `from_logits: true`, but `{oname}` ends in a {act}"),
                )
                .label(a.loss_span.clone(), "expects raw scores (logits)")
                .secondary(
                    origin(a.g, a.out),
                    format!("`{oname}` already outputs probabilities"),
                )
                .help(format!(
                    "remove the {act} from `{oname}`, or set `from_logits: false`"
                )),
            );
        } else if ce && !a.from_logits && act == "linear" {
            self.diags.push(
                Diagnostic::warning("W0603", format!("`{loss}` expects probabilities, but `{oname}` has no activation (it outputs logits)"))
                    .label(a.loss_span.clone(), "`from_logits` is false (Keras's default)")
                    .secondary(origin(a.g, a.out), format!("`{oname}` outputs unbounded scores"))
                    .help("set `from_logits: true` in the loss (recommended), or give the layer a softmax/sigmoid activation"),
            );
        }
    }
}

/// Why a target's output could not be found: skip this target, or stop checking the
/// train section (the count of targets is wrong).
enum Stop {
    Target,
    Section,
}

/// Where an output is defined: its input declaration or its layer's type.
fn origin(g: &Graph, o: Source) -> Range<usize> {
    match o {
        Source::Input(i) => g.inputs[i].span.clone(),
        Source::Layer(i) | Source::Part(i, _) => g.layers[i].span.clone(),
    }
}

/// Does a target of type `ty` fit an output whose target shape is `want`?
pub(super) fn shape_fits(ty: &TensorType, want: &[Dim]) -> bool {
    ty.shape == want
        // Keras squeezes a trailing size-1 axis on either side.
        || (ty.rank() + 1 == want.len() && want.last().and_then(Dim::as_const) == Some(1) && ty.shape[..] == want[..want.len() - 1])
        || (ty.rank() == want.len() + 1 && ty.last().as_const() == Some(1) && ty.shape[..want.len()] == *want)
}

/// The activation a layer ends with, for the logits/probabilities check.
/// An activation layer (`softmax`, `sigmoid`, …) ends in the activation of its own
/// name; a layer with an `activation` argument ends in that (a recurrent layer's
/// `activation` is its cell's, not its output's).
fn output_activation(l: &Layer) -> &str {
    if crate::catalog::activations::lookup(l.kind.name).is_some() {
        l.kind.name
    } else if l.kind.args.iter().any(|a| a.name == "activation") && l.kind.facts.cell.is_none() {
        l.args.str("activation")
    } else {
        "other"
    }
}

/// A `targets:` line that fits a loss and an output, for help texts.
fn target_example(loss: &LossKind, out: &TensorType) -> String {
    match loss.targets {
        Targets::SparseLabels => {
            format!(
                "{{label: {{shape: {}, dtype: i32}}}}",
                fmt_shape(&out.shape[..out.rank().saturating_sub(1)])
            )
        }
        _ => format!("{{target: {}}}", fmt_shape(&out.shape)),
    }
}
