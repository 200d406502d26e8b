//! E0630–E0639: training options per output and per example (losses, loss weights and
//! metrics by output; `class_weight`, `sample_weight`).

use super::{CodeInfo, Example};

const TWO_HEADS: &str = "\
inputs:
  x: [batch, 4]
layers:
  - dense: {units: 8, activation: relu, name: h}
  - dense: {units: 2, name: out_a, input: h}
  - dense: {units: 1, name: out_b, input: h}
outputs: [out_a, out_b]
train:
  targets: {ya: [batch, 2], yb: [batch, 1]}
  loss: {out_a: mse, out_b: {binary_crossentropy: {from_logits: true}}}
";

pub(super) const CODES: &[CodeInfo] = &[
    CodeInfo {
        code: "E0630",
        title: "a per-output option names something that is not an output",
        explanation: "\
`loss`, `loss_weights`, `metrics` and `weighted_metrics` can be given per output, as a
mapping from the model's output names (the names of the layers listed in `outputs`) to
values, as Keras's `compile` takes them. A key that is not an output's name is a typo
or a layer that is not an output.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/loss_for_unknown_output.yaml"
        )),
        fixed: Example::Spec(TWO_HEADS),
    },
    CodeInfo {
        code: "E0631",
        title: "a training option has the wrong form",
        explanation: "\
`class_weight` maps class indices to weights (`{0: 1.0, 1: 5.0}`), `loss_weights` is a
number, a list or a mapping from output names to numbers, `sample_weight` names the
data array holding each example's weight, and `validation_data` is a data file's path.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/class_weight_not_a_mapping.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 4]
layers:
  - dense: {units: 3}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  class_weight: {0: 1.0, 1: 5.0, 2: 1.0}
",
        ),
    },
    CodeInfo {
        code: "E0632",
        title: "a per-output option does not cover the outputs",
        explanation: "\
With several outputs, Keras's `compile` wants one loss per output: a mapping with every
output's name, or a list with one entry per output in the order of `outputs`. The same
holds for `loss_weights`. `metrics` is a mapping from output names to metric lists, or a
list with one entry (a metric or a list of metrics) per output.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/loss_missing_for_output.yaml"
        )),
        fixed: Example::Spec(TWO_HEADS),
    },
    CodeInfo {
        code: "E0633",
        title: "class weights where Keras refuses them",
        explanation: "\
Keras's `fit` turns `class_weight` into per-example weights from the labels of the one
output, so it refuses class weights for a model with several outputs, and next to
`sample_weight`. Give the weights per example with `sample_weight` instead.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/class_weight_two_outputs.yaml"
        )),
        fixed: Example::Spec(TWO_HEADS),
    },
    CodeInfo {
        code: "E0634",
        title: "a metric does not fit the targets",
        explanation: "\
Some metrics compare the output with one class index per example
(`sparse_categorical_accuracy`, `sparse_top_k_categorical_accuracy`), others with
targets of the output's own shape (`categorical_accuracy`,
`top_k_categorical_accuracy`, `auc`, `precision`, `recall`, `mae`, …). Use the form
that fits the targets; `accuracy` picks the right one itself.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/metric_wrong_labels.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 16]
layers:
  - dense: {units: 10}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  metrics: [{sparse_top_k_categorical_accuracy: {k: 3}}]
",
        ),
    },
    CodeInfo {
        code: "E0635",
        title: "weights per example on a loss with a value per step",
        explanation: "\
`sample_weight` and `class_weight` give one weight per example. Keras multiplies them
with the loss's values, which works when the loss has one value per example (outputs
`[batch, units]`); for a sequence output the loss has one value per step, and Keras
cannot broadcast a weight per example over it.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/sample_weight_per_step.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  tokens: {shape: [batch, seq], dtype: i32}
layers:
  - embedding: {input_dim: 50, output_dim: 8}
  - dense: {units: 50}
train:
  targets: {next: {shape: [batch, seq], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
",
        ),
    },
];
