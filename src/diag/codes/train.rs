//! E06 and W06: the `train` section against the model.

use super::{CodeInfo, Example};

pub(super) const CODES: &[CodeInfo] = &[
    CodeInfo {
        code: "E0600",
        title: "`train` is not a mapping",
        explanation: "\
`train:` holds the training settings as a mapping: `targets`, `loss`, `optimizer`,
`metrics`, `callbacks`, `data` and the settings of Keras's `fit` (`batch_size`,
`epochs`, …). A spec without `train:` can still be checked, summarized and run.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/train_not_a_mapping.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 8]
layers:
  - dense: {units: 1}
train:
  targets: {y: [batch, 1]}
  loss: mse
  optimizer: adam
",
        ),
    },
    CodeInfo {
        code: "E0601",
        title: "a loss, optimizer, schedule or callback is not a name",
        explanation: "\
A loss, an optimizer, a learning-rate schedule or a callback is written as its name
(`loss: mse`) or as a mapping from its name to its arguments
(`loss: {huber: {delta: 0.5}}`). A loss for each of several outputs is a mapping
from output names to losses, or a list of losses in the order of the outputs.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/loss_not_a_name.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 8]
layers:
  - dense: {units: 1}
train:
  targets: {y: [batch, 1]}
  loss: mse
",
        ),
    },
    CodeInfo {
        code: "E0602",
        title: "unknown loss, optimizer, schedule or callback",
        explanation: "\
The name is not one kiln knows. Names are Keras's, in snake_case
(`sparse_categorical_crossentropy`, `adam`, `exponential_decay`, `early_stopping`),
with Keras's aliases (`mse`, `mae`); the help names the closest one, or lists them all.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/unknown_loss.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 10}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
",
        ),
    },
    CodeInfo {
        code: "E0603",
        title: "arguments that conflict",
        explanation: "\
Each argument is valid alone, but together they are not: an optimizer may clip
gradients by one rule only (`clipnorm`, `clipvalue` or `global_clipnorm`), and
`piecewise_constant_decay` needs one more value than boundaries (a value before the
first boundary, between each pair, and after the last).
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/optimizer_clip_conflict.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 8]
layers:
  - dense: {units: 1}
train:
  targets: {y: [batch, 1]}
  loss: mse
  optimizer: {adam: {learning_rate: 0.001, clipnorm: 1.0}}
",
        ),
    },
    CodeInfo {
        code: "E0604",
        title: "`train` has no loss",
        explanation: "\
Training minimizes a loss, so a `train:` section names one. The optimizer has a default
(`rmsprop`, as Keras's `compile`); the loss has none.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/train_without_loss.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 8]
layers:
  - dense: {units: 1}
train:
  targets: {y: [batch, 1]}
  loss: mse
  optimizer: adam
  epochs: 10
",
        ),
    },
    CodeInfo {
        code: "E0605",
        title: "unknown metric",
        explanation: "\
Metrics are names: `accuracy` (binary, categorical or sparse, chosen from the loss as
Keras does), `mae` and `mse`, and Keras's longer names for them. A metric with
arguments or a misspelled name is not accepted.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/unknown_metric.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 10}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  metrics: [accuracy]
",
        ),
    },
    CodeInfo {
        code: "E0606",
        title: "`callbacks` is not a list",
        explanation: "\
`callbacks:` is a list, even when it holds one callback:
`callbacks: [{early_stopping: {patience: 3}}]`.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/callbacks_not_a_list.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 8]
layers:
  - dense: {units: 1}
train:
  targets: {y: [batch, 1]}
  loss: mse
  validation_split: 0.2
  callbacks: [{early_stopping: {patience: 3}}]
",
        ),
    },
    CodeInfo {
        code: "E0607",
        title: "a callback monitors a quantity training does not report",
        explanation: "\
Training reports `loss`, each metric by name, and with a validation split the same
with a `val_` prefix. A callback's `monitor` must be one of these: `val_accuracy`
exists only when `accuracy` is among the metrics and a validation split is set.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/callback_monitors_unknown.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 10}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  metrics: [accuracy]
  validation_split: 0.1
  callbacks: [{early_stopping: {monitor: val_accuracy, patience: 3}}]
",
        ),
    },
    CodeInfo {
        code: "E0608",
        title: "`train` declares no targets",
        explanation: "\
The loss compares each output with a target, the labels the data provides. `targets:`
declares them like inputs, with names and shapes, in the order of the model's outputs;
the help gives the declaration that fits the model and loss.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/train_without_targets.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 10}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  optimizer: adam
",
        ),
    },
    CodeInfo {
        code: "E0609",
        title: "a target's shape does not fit its output and loss",
        explanation: "\
Most losses compare the target with the output element by element, so their shapes are
equal (Keras's squeezing of a trailing axis of size 1 is allowed).
`sparse_categorical_crossentropy` takes one class index per example instead: the
target is the output's shape without its class axis. One-hot targets go with
`categorical_crossentropy`.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/target_shape_one_hot_sparse.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 10}
train:
  targets: {label: [batch, 10]}
  loss: {categorical_crossentropy: {from_logits: true}}
",
        ),
    },
    CodeInfo {
        code: "E0610",
        title: "a target's dtype does not fit the loss",
        explanation: "\
`sparse_categorical_crossentropy` takes integer class indices (`dtype: i32` or `i64`),
`binary_crossentropy` takes f32 or integer labels, and the other losses take f32
targets. A target declared without a dtype is f32.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/target_dtype_sparse_f32.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 10}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
",
        ),
    },
    CodeInfo {
        code: "E0611",
        title: "the number of targets differs from the number of outputs",
        explanation: "\
Each output has one target. Targets are matched to outputs in the order of `outputs:`,
or by name when a target says `output: NAME`.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/targets_outputs_count.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 16]
layers:
  - dense: {units: 1, name: price}
  - dense: {units: 1, input: x, name: volume}
outputs: [price, volume]
train:
  targets: {price_true: [batch, 1], volume_true: [batch, 1]}
  loss: mse
",
        ),
    },
    CodeInfo {
        code: "E0612",
        title: "a target names an output that does not exist",
        explanation: "\
A target's `output:` names the model output it is compared with; that name must be one
of the outputs (the last layer, or those listed in `outputs:`).
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/target_output_unknown.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 16]
layers:
  - dense: {units: 8, name: hidden}
  - dense: {units: 1, name: price}
train:
  targets: {y: {shape: [batch, 1], output: price}}
  loss: mse
",
        ),
    },
    CodeInfo {
        code: "E0613",
        title: "a metric is listed twice",
        explanation: "\
Each metric is computed and reported once per epoch under its name, so `metrics:` lists
each one once. An alias counts as the metric it names: `acc` is `accuracy`, `mae` is
`mean_absolute_error`. Remove the repetition.
",
        wrong: Example::Spec(
            "\
inputs:
  x: [batch, 16]
layers:
  - dense: {units: 3}
train:
  targets: {y: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  metrics: [accuracy, acc]
",
        ),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 16]
layers:
  - dense: {units: 3}
train:
  targets: {y: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  metrics: [accuracy]
",
        ),
    },
    CodeInfo {
        code: "W0601",
        title: "a callback monitors a validation quantity, but nothing is held out",
        explanation: "\
`early_stopping`, `reduce_lr_on_plateau` and `model_checkpoint` monitor `val_loss` by
default, which exists only when part of the data is held out for validation. Without a
validation split the callback has nothing to watch. Set `validation_split` (or
`data.validation_split`), or monitor `loss`.
",
        wrong: Example::Spec(
            "\
inputs:
  x: [batch, 8]
layers:
  - dense: {units: 1}
train:
  targets: {y: [batch, 1]}
  loss: mse
  callbacks: [{early_stopping: {patience: 3}}]
",
        ),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 8]
layers:
  - dense: {units: 1}
train:
  targets: {y: [batch, 1]}
  loss: mse
  validation_split: 0.2
  callbacks: [{early_stopping: {patience: 3}}]
",
        ),
    },
    CodeInfo {
        code: "W0602",
        title: "`from_logits: true` on an output that ends in a softmax",
        explanation: "\
`from_logits: true` tells the loss that the output holds raw scores (logits) and that
the loss applies the softmax or sigmoid itself. An output that already ends in one has
it applied twice, and the loss no longer measures what it should. Remove the
activation (recommended: the loss computes it more accurately itself), or set
`from_logits: false`.
",
        wrong: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 10, activation: softmax}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
",
        ),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 10}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
",
        ),
    },
    CodeInfo {
        code: "W0603",
        title: "a loss expecting probabilities on an output of logits",
        explanation: "\
Crossentropy losses expect probabilities unless told `from_logits: true` (Keras's
default is false). An output with no activation holds unbounded scores, which the loss
would wrongly read as probabilities. Set `from_logits: true` (recommended), or end the
output in a softmax or sigmoid.
",
        wrong: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 10}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: sparse_categorical_crossentropy
",
        ),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 10}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
",
        ),
    },
];
