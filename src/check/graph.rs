//! What the checker produces: a [`Graph`] of inputs and layers with their symbolic
//! types and Keras parameters, its outputs, and the checked train section.

use std::ops::Range;

use crate::args::Args;
use crate::catalog::losses::LossKind;
use crate::catalog::metrics::MetricKind;
use crate::dim::Dim;
use crate::layers::{LayerKind, MaskUse, Param, TensorType, mask_flow};
use crate::spec::train::{Named, TrainDecl};

/// Where a tensor comes from: a model input, a layer's output, or one output of a
/// layer with several (`bi.backward`: layer, index into its [`Layer::parts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Input(usize),
    Layer(usize),
    Part(usize, usize),
}

impl Source {
    /// The layer it comes from, if any.
    pub fn layer(self) -> Option<usize> {
        match self {
            Source::Input(_) => None,
            Source::Layer(i) | Source::Part(i, _) => Some(i),
        }
    }
}

/// One output of a layer with several.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// How a spec names it, and its name as a model output: `bi.backward`.
    pub name: String,
    pub ty: TensorType,
    /// The shape of the Keras mask it carries, if any.
    pub mask: Option<Vec<Dim>>,
}

/// A model input.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub name: String,
    pub ty: TensorType,
    pub span: Range<usize>,
}

/// A checked layer.
#[derive(Clone, Debug)]
pub struct Layer {
    pub name: String,
    pub kind: &'static LayerKind,
    pub args: Args,
    pub inputs: Vec<Source>,
    /// Its output; for a layer with several, the first of them.
    pub output: TensorType,
    /// Each of its outputs when it has several (Keras returns a list), else empty.
    pub parts: Vec<Part>,
    /// The shape of its output's Keras mask, if it carries one.
    pub mask: Option<Vec<Dim>>,
    pub params: Vec<Param>,
    /// The layer's type key in the spec.
    pub span: Range<usize>,
}

/// A training target, matched to the output it is compared with, and that output's
/// loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub name: String,
    pub ty: TensorType,
    /// Index into [`Graph::outputs`].
    pub output: usize,
    /// The output's loss.
    pub loss: Named<LossKind>,
    /// Keras's `loss_weights` for the output (none: 1).
    pub loss_weight: Option<f64>,
}

/// A metric on one output, as training computes and logs it.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricUse {
    /// The name in logs (`accuracy`, `out_b_accuracy`, `weighted_mae`).
    pub name: String,
    /// The metric, `accuracy` resolved to its Keras variant (sparse/categorical/binary).
    pub kind: &'static MetricKind,
    pub args: Args,
    /// Index into [`Train::targets`].
    pub target: usize,
    /// One of `weighted_metrics`: weighted by the sample weights.
    pub weighted: bool,
}

/// The checked train section.
#[derive(Clone, Debug, PartialEq)]
pub struct Train {
    pub decl: TrainDecl,
    pub targets: Vec<Target>,
    /// Every metric of every output, in Keras's order (metrics, then weighted ones).
    pub metrics: Vec<MetricUse>,
    /// Each output's loss is logged too (`OUTPUT_loss`): the model has several.
    pub output_losses: bool,
    /// Training takes a sample weight per example (`sample_weight` or
    /// `class_weight`).
    pub weighted: bool,
}

impl Train {
    /// The name of target `k`'s loss in logs (`OUTPUT_loss`), when outputs' losses are
    /// logged.
    pub fn output_loss_name(&self, k: usize, g: &Graph) -> Option<String> {
        self.output_losses
            .then(|| format!("{}_loss", g.name_of(g.outputs[self.targets[k].output])))
    }

    /// Every name training logs, in order: `loss`, the outputs' losses, the metrics.
    pub fn log_names(&self, g: &Graph) -> Vec<String> {
        let mut v = vec!["loss".to_string()];
        v.extend((0..self.targets.len()).filter_map(|k| self.output_loss_name(k, g)));
        v.extend(self.metrics.iter().map(|m| m.name.clone()));
        v
    }
}

/// A checked model: inputs, layers in order, outputs, training setup.
#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    pub inputs: Vec<Input>,
    pub layers: Vec<Layer>,
    pub outputs: Vec<Source>,
    pub train: Option<Train>,
}

impl Graph {
    pub fn type_of(&self, s: Source) -> &TensorType {
        match s {
            Source::Input(i) => &self.inputs[i].ty,
            Source::Layer(i) => &self.layers[i].output,
            Source::Part(i, p) => &self.layers[i].parts[p].ty,
        }
    }
    pub fn name_of(&self, s: Source) -> &str {
        match s {
            Source::Input(i) => &self.inputs[i].name,
            Source::Layer(i) => &self.layers[i].name,
            Source::Part(i, p) => &self.layers[i].parts[p].name,
        }
    }
    /// The shape of the Keras mask a value carries, if any (model inputs carry none).
    pub fn mask_of(&self, s: Source) -> Option<&[Dim]> {
        match s {
            Source::Input(_) => None,
            Source::Layer(i) => self.layers[i].mask.as_deref(),
            Source::Part(i, p) => self.layers[i].parts[p].mask.as_deref(),
        }
    }

    /// Each layer's use of Keras masks and whether its output carries one, in layer
    /// order, from each kind's mask facts (model inputs carry none). Every output of a
    /// layer with several carries its mask, as Keras's `Bidirectional` gives each,
    /// except where the layer gives a part its own (attention scores).
    pub fn masks(&self) -> Vec<(MaskUse, bool)> {
        let mut out: Vec<(MaskUse, bool)> = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let ins: Vec<bool> = l
                .inputs
                .iter()
                .map(|&s| self.mask_of(s).is_some())
                .collect();
            let in_shape = l
                .inputs
                .first()
                .map_or(&[][..], |&s| &self.type_of(s).shape);
            out.push(mask_flow(l.kind, &l.args, &ins, in_shape, &l.output.shape));
        }
        out
    }

    /// (total, trainable, non-trainable) parameter counts.
    pub fn param_counts(&self) -> (i64, i64, i64) {
        let mut t = 0i64;
        let mut n = 0i64;
        for l in &self.layers {
            for p in &l.params {
                if p.trainable {
                    t = t.saturating_add(p.count());
                } else {
                    n = n.saturating_add(p.count());
                }
            }
        }
        (t.saturating_add(n), t, n)
    }
}

/// Largest number of parameters a model may have (every count fits in i64 with room).
pub const MAX_PARAMS: i64 = 1 << 40;
