//! E02: the structure of a spec: its sections, tensor declarations and layer entries.

use super::{CodeInfo, Example};

pub(super) const CODES: &[CodeInfo] = &[
    CodeInfo {
        code: "E0201",
        title: "the spec is empty or not a mapping",
        explanation: "\
A spec is a YAML mapping of sections: `inputs:` and `layers:` at least, and optionally
`name:`, `outputs:` and `train:`. This error is given for an empty file (or one holding
only comments), and for a file whose top level is a list or a single value, most often
a layer list written without its section.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/spec_is_a_list.yaml")),
        fixed: Example::Spec(
            "\
# The layer list under `layers:`, with the inputs declared above it.
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 64, activation: relu}
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0202",
        title: "unknown section",
        explanation: "\
The top level of a spec has the sections `name`, `inputs`, `layers`, `outputs` and
`train`, and nothing else. Another key is usually a misspelled section; the help names
the closest one.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/unknown_section_typo.yaml"
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
        code: "E0203",
        title: "the model's `name` is not a string",
        explanation: "\
`name` is the model's name, a single word of text, shown in the summary and in
`kiln check`'s one-line report. Without it, the model is named after the spec file.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/name_not_a_string.yaml")),
        fixed: Example::Spec(
            "\
name: mnist
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0204",
        title: "the spec has no `inputs` section",
        explanation: "\
Every model declares its inputs, with names and shapes, under `inputs:`; shapes are not
given to the first layer as in Keras's `input_shape`. Dimensions known only at run time,
such as the batch size, are written as names.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/missing_inputs.yaml")),
        fixed: Example::Spec(
            "\
name: classifier
inputs:
  features: [batch, 32]
layers:
  - dense: {units: 64, activation: relu}
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0205",
        title: "the spec has no `layers` section",
        explanation: "\
A model is its list of layers, under `layers:`; a spec without it has nothing to
compute.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/missing_layers.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 13]
layers:
  - dense: {units: 32, activation: relu}
  - dense: {units: 1}
train:
  targets: {price: [batch, 1]}
  loss: mse
",
        ),
    },
    CodeInfo {
        code: "E0206",
        title: "a key is written twice in one mapping",
        explanation: "\
A YAML mapping holds each key once. Parsers that accept a repeated key keep only one of
the values, silently; kiln reports it instead, pointing at both places. It happens with
layer arguments and with inputs declared twice.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/duplicate_key.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 20]
layers:
  - dense:
      units: 64
      activation: relu
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0207",
        title: "`inputs` or `targets` is not a mapping of names to shapes",
        explanation: "\
`inputs:` (and `targets:` under `train:`) map names to tensor declarations:
`x: [batch, 784]`, or `x: {shape: [batch, 784], dtype: f32}` in the long form. A list,
a single value or an empty mapping is not a declaration of named tensors.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/inputs_not_a_mapping.yaml"
        )),
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
        code: "E0208",
        title: "a name is not an identifier, or is too long",
        explanation: "\
Names of inputs, targets and layers are identifiers: letters, digits and `_`, not
starting with a digit. They become weight keys (`dense_1/kernel`) and array names in
data files, so dashes, spaces and dots are not allowed. Every name, the model's too,
has at most 256 characters.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/input_name_invalid.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  input_1: [batch, 784]
layers:
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0209",
        title: "a tensor declaration has an unknown or missing field",
        explanation: "\
The long form of a tensor declaration is a mapping with `shape` (required), `dtype`
(`f32` by default) and, for targets, `output` (the model output the target is for, by
name). This error is given for any other field, for a declaration without `shape`, and
for an `output` that is not a name.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/tensor_unknown_field.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  tokens: {shape: [batch, seq], dtype: i32}
layers:
  - embedding: {input_dim: 1000, output_dim: 16}
  - global_average_pooling1d
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0210",
        title: "unknown dtype",
        explanation: "\
kiln's tensors are `f32` (the default), `i32` or `i64`. Floating-point data is computed
in f32, as Keras does by default: write `dtype: f32` (or leave it out) for float64 data,
which is converted when it is loaded. Integer tensors hold indices, for `embedding`
layers and sparse labels.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/unknown_dtype.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: {shape: [batch, 8], dtype: f32}
layers:
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0211",
        title: "`outputs` or a layer's `inputs` is not a list of names",
        explanation: "\
`outputs:` and a layer's `inputs:` take a name or a list of names of inputs and layers,
and the list may not be empty. Leave `outputs` out to return the last layer.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/outputs_empty.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 4]
layers:
  - dense: {units: 1, name: y}
outputs: [y]
",
        ),
    },
    CodeInfo {
        code: "E0212",
        title: "`layers` is not a list of layers, or is empty",
        explanation: "\
`layers:` is a YAML list, one layer per item, each starting with `- `. The layers run in
order; a layer takes the previous one unless it says `input:` or `inputs:`.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/layers_not_a_list.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 13]
layers:
  - dense: {units: 64, activation: relu}
",
        ),
    },
    CodeInfo {
        code: "E0213",
        title: "a layer entry is not a layer",
        explanation: "\
Each item of `layers:` is either a layer type alone (`- flatten`) or a mapping with one
key, the layer type, whose value holds the arguments (`- dense: {units: 10}`). A list,
a number, or a type that is not a name is not a layer.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/layer_entry_not_a_layer.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  image: [batch, 28, 28, 1]
layers:
  - conv2d: {filters: 32, kernel_size: 3}
  - flatten
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0214",
        title: "a layer entry has more than one key",
        explanation: "\
A layer entry is a mapping with exactly one key, the layer type. Arguments written at
the same indentation as the type become keys of the entry itself instead of arguments
of the layer. Indent them further than the type, or write them inline in braces.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/layer_entry_multiple_keys.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense:
      units: 64
      activation: relu
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0215",
        title: "a layer's arguments are not a mapping",
        explanation: "\
Layer arguments are written by name, as a mapping: `- dense: {units: 64}`. Keras's
positional arguments (`Dense(64)`) have no equivalent; a bare value or a list after the
layer type is not accepted.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/layer_args_not_mapping.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 64}
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0216",
        title: "a layer has both `input` and `inputs`",
        explanation: "\
A layer names what it takes with `input: a` (one tensor) or `inputs: [a, b]` (several),
not both.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/input_and_inputs.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  a: [batch, 8]
  b: [batch, 8]
layers:
  - add: {inputs: [a, b]}
  - dense: {units: 1}
",
        ),
    },
];
