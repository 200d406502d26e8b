//! E03 and E04: dimensions, and the arguments of layers, losses, optimizers and callbacks.

use super::{CodeInfo, Example};

pub(super) const CODES: &[CodeInfo] = &[
    CodeInfo {
        code: "E0301",
        title: "a shape is not a list of dimensions",
        explanation: "\
A tensor's shape is a list of dimensions, batch axis first: `[batch, 784]`. A bare
number is not a shape, even for a vector.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/shape_not_a_list.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0302",
        title: "a dimension is zero, negative or too large",
        explanation: "\
A dimension written as a number is a positive size of at most 2,147,483,647. A size
known only at run time is written as a name (`batch`, `seq`), never as `-1` or `None`
as in NumPy and Keras; two different names are never assumed equal.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/dim_negative_batch.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  image: [batch, 28, 28, 1]
layers:
  - flatten
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0303",
        title: "a dimension is neither a size nor a name",
        explanation: "\
A dimension is a positive integer or a name. Shapes are not evaluated, so `28*28` is
neither; write the size itself. Sizes that layers compute from a symbol (after a
pooling, say) are derived by kiln, not written in the spec.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/dim_expression.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  pixels: [batch, 784]
layers:
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0401",
        title: "unknown argument",
        explanation: "\
The layer, loss, optimizer, schedule or callback has no argument of this name (or the
`train` section no setting of this name). Arguments have Keras's names; the help names
the closest one when the word looks like a typo. Argument names are words, so a number
or a list in a key's place gives this error too.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/unknown_argument_typo.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 128, activation: relu}
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0402",
        title: "a Keras argument kiln does not support",
        explanation: "\
The argument exists in Keras but not in kiln. Some have another place in a spec
(`input_shape` is declared under `inputs:`); others, such as regularizers and
constraints, are not supported yet. The message says which. Remove the argument.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/keras_input_shape.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 128, activation: relu}
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0403",
        title: "an argument has the wrong type",
        explanation: "\
Each argument has a kind: an integer, a number, a boolean, a string, a list of integers,
or a mapping. A count such as `units` is an integer, written without a decimal point or
exponent (`128`, not `128.0` or `1e2`). The same code is given when the arguments of a
loss, optimizer, schedule or callback are not a mapping, and when `learning_rate` is
neither a number nor a schedule.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/dense_units_not_int.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 128, activation: relu}
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0404",
        title: "an argument is out of range",
        explanation: "\
The value has the right kind but lies outside the range the argument allows, given in
the message: a rate in [0, 1), a positive count, a batch size of at least 1. The same
code is given when a list argument (`kernel_size: [3, 3]`, `strides`) has the wrong
number of entries for the layer.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/dropout_rate_out_of_range.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 128, activation: relu}
  - dropout: {rate: 0.5}
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0405",
        title: "an argument is not one of its choices",
        explanation: "\
The argument takes one of a fixed set of words, listed in the message, and this is not
one of them. Choices depend on the layer: `padding: causal` exists only for `conv1d`.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/conv_padding_bad_choice.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  image: [batch, 28, 28, 1]
layers:
  - conv2d: {filters: 32, kernel_size: 3, padding: same}
  - flatten
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0406",
        title: "a required argument is missing",
        explanation: "\
The argument has no default, in Keras either: `units` of `dense`, `filters` and
`kernel_size` of a convolution, `rate` of `dropout`. Give it a value.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/conv_missing_kernel_size.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  image: [batch, 28, 28, 1]
layers:
  - conv2d: {filters: 32, kernel_size: 3, activation: relu}
  - flatten
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0407",
        title: "unknown activation",
        explanation: "\
Activations are written as Keras's activation strings, in snake_case: `relu`,
`leaky_relu`, `sigmoid`, `softmax`, `gelu`, … Keras class names (`LeakyReLU`) and
PyTorch names are not activation strings; the help names the closest one.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/unknown_activation.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 128, activation: leaky_relu}
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0408",
        title: "unknown initializer",
        explanation: "\
Initializers are Keras's names in snake_case: `glorot_uniform` (the default for
kernels), `he_normal`, `zeros`, `orthogonal`, … Other libraries' names for the same
thing (PyTorch's `xavier_uniform`, `kaiming_normal`) are not accepted; the help gives
Keras's name.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/unknown_initializer.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 128, kernel_initializer: glorot_uniform}
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0420",
        title: "a file name in a format kiln does not write",
        explanation: "\
kiln writes weights and checkpoints as safetensors. A file name whose extension names
another format — Keras's `.keras` or `.h5` — would hold safetensors under a misleading
name, which Keras and other tools then fail to open. Name the file with the extension
kiln writes (`.safetensors`).
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/checkpoint_keras_extension.yaml"
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
  callbacks:
    - model_checkpoint: {filepath: checkpoints/best.safetensors, monitor: loss, save_best_only: true}
",
        ),
    },
];
