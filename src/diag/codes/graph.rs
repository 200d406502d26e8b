//! E07 and W07: names, references and the graph they form.

use super::{CodeInfo, Example};

pub(super) const CODES: &[CodeInfo] = &[
    CodeInfo {
        code: "E0701",
        title: "unknown layer type",
        explanation: "\
Layer types are Keras's layer names in snake_case (`dense`, `conv2d`, `max_pooling2d`,
`batch_normalization`, …). Keras class names (`MaxPooling2D`), PyTorch names
(`MaxPool2d`, `Linear`) and Python calls are not layer types; the help names the
closest one.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/unknown_layer_type.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  image: [batch, 28, 28, 1]
layers:
  - conv2d: {filters: 32, kernel_size: 3, activation: relu}
  - max_pooling2d: {pool_size: 2}
  - flatten
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0702",
        title: "a name is used twice",
        explanation: "\
Inputs and layers share one namespace, and each name is used once: layers refer to
each other by name, and weights are stored under them (`hidden/kernel`). Layers without
a `name` get Keras's automatic names (`dense`, `dense_1`, …).
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/duplicate_layer_name.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 256, activation: relu, name: hidden_1}
  - dense: {units: 128, activation: relu, name: hidden_2}
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0703",
        title: "a layer takes a name that does not exist",
        explanation: "\
`input:` and `inputs:` name inputs or layers of the same spec, including the automatic
names of unnamed layers (`dense_1`). The help names the closest existing name.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/unknown_reference.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 32]
layers:
  - dense: {units: 32, activation: relu, name: hidden}
  - add: {inputs: [x, hidden]}
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0704",
        title: "a layer takes a layer defined after it",
        explanation: "\
Layers run in the order they are written, so a layer can take only inputs and the
layers above it. Move the layer it takes above it.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/forward_reference.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 32]
layers:
  - dense: {units: 32, activation: relu, name: body}
  - dense: {units: 32, input: x, name: skip}
  - add: {inputs: [body, skip]}
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0705",
        title: "layers form a cycle",
        explanation: "\
A model is a graph without cycles: each layer takes inputs or layers that do not depend
on it. Recurrence over time is written with a recurrent layer (`lstm`, `gru`,
`simple_rnn`), not by wiring layers in a loop.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/layer_cycle.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 16]
layers:
  - dense: {units: 16, input: x, name: a}
  - dense: {units: 16, input: a, name: b}
outputs: [b]
",
        ),
    },
    CodeInfo {
        code: "E0706",
        title: "a layer is given the wrong number of inputs",
        explanation: "\
Merge layers (`add`, `concatenate`, …) take at least two inputs, `multi_head_attention`
two or three, and the other layers exactly one. A layer without `input:` or `inputs:`
takes only the previous layer, so a merge must name what it joins.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/merge_given_one_input.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 32]
layers:
  - dense: {units: 32, activation: relu, name: h}
  - add: {inputs: [x, h]}
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0707",
        title: "an output is unknown or listed twice",
        explanation: "`outputs:` lists the inputs or layers the model returns, each once, by name.\n",
        wrong: Example::Spec(include_str!("../../../specs/errors/unknown_output.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 128, activation: relu}
  - dense: {units: 10, name: logits}
outputs: [logits]
",
        ),
    },
    CodeInfo {
        code: "E0708",
        title: "the first layer does not say which of several inputs it takes",
        explanation: "\
A layer without `input:` takes the layer before it; the first layer has none, and with
one input it takes that input. With several inputs it must say which one (or which
ones) it takes.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/first_layer_which_input.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  image: [batch, 28, 28, 1]
  meta: [batch, 4]
layers:
  - conv2d: {filters: 8, kernel_size: 3, input: image}
  - global_average_pooling2d
  - concatenate: {inputs: [global_average_pooling2d, meta]}
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0709",
        title: "a reference does not pick one output of a layer with several",
        explanation: "\
A layer with several outputs (`bidirectional` with `merge_mode: null` returns its
forward and backward outputs unmerged, as Keras returns a list) is named with the
output it means: `LAYER.PART` (`bi.forward`, `bi.backward`) or `LAYER.INDEX` in Keras's
order (`bi.0`, `bi.1`). Its name alone, or a layer after it that takes it implicitly,
does not say which; a layer with one output has no parts. A model's `outputs:` may list
each part; without `outputs:`, a last layer with several outputs gives them all.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/bidirectional_two_outputs_bare.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 10, 8]
layers:
  - bidirectional: {layer: {lstm: {units: 4, return_sequences: true}}, merge_mode: null, name: bi}
  - concatenate: {inputs: [bi.forward, bi.backward]}
  - global_average_pooling1d
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "W0701",
        title: "a layer does not contribute to any output",
        explanation: "\
The layer's result is never used: no layer takes it and it is not an output. This is
usually a wiring mistake, such as a later layer's `input:` that skips it. The layer is
still checked, but has no effect on the model.
",
        wrong: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 128, activation: relu, name: hidden}
  - dropout: {rate: 0.5}
  - dense: {units: 10, input: hidden}
",
        ),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 128, activation: relu, name: hidden}
  - dropout: {rate: 0.5}
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "W0702",
        title: "an input is not used by any output",
        explanation: "\
No output depends on this input, so whatever is fed to it is ignored. Take it in a
layer with `input:` or `inputs:`, or remove it.
",
        wrong: Example::Spec(
            "\
inputs:
  image: [batch, 28, 28, 1]
  meta: [batch, 4]
layers:
  - flatten: {input: image}
  - dense: {units: 10}
",
        ),
        fixed: Example::Spec(
            "\
inputs:
  image: [batch, 28, 28, 1]
  meta: [batch, 4]
layers:
  - flatten: {input: image}
  - concatenate: {inputs: [flatten, meta]}
  - dense: {units: 10}
",
        ),
    },
];
