//! E08: names Keras has that kiln does not support yet.

use super::{CodeInfo, Example};

pub(super) const CODES: &[CodeInfo] = &[CodeInfo {
    code: "E0801",
    title: "a Keras feature kiln does not support yet",
    explanation: "\
The name is Keras's own — a layer, loss, metric, optimizer, schedule, initializer,
activation, callback or regularizer — but kiln does not implement it yet. It is not a
typo, so kiln does not guess another name; the help gives the closest thing kiln has
when there is a real one, and otherwise lists what kiln has. The Keras names kiln knows
of are in one table, `src/diag/keras.rs`.
",
    wrong: Example::Spec(include_str!(
        "../../../specs/errors/keras_loss_not_supported.yaml"
    )),
    fixed: Example::Spec(
        "\
inputs:
  x: [batch, 8]
layers:
  - dense: {units: 1}
train:
  targets: {y: [batch, 1]}
  loss: huber
  optimizer: adam
",
    ),
}];
