//! E01 and W0108: reading the spec file and its YAML, and the report limits.

use super::{CodeInfo, Example};

pub(super) const CODES: &[CodeInfo] = &[
    CodeInfo {
        code: "E0101",
        title: "the spec is not valid YAML",
        explanation: "\
kiln reads a spec as YAML, and the YAML parser could not read this file. The usual
causes are a `[` or `{` that is never closed, a tab used for indentation, or a line
indented differently from the lines it belongs with. The label is where the parser
stopped, which can be a line or more after the mistake itself; when a bracket was left
open, the help points at it.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/yaml_unclosed_bracket.yaml"
        )),
        fixed: Example::Spec(
            "\
# The shape list, closed.
inputs:
  x: [batch, 784]
layers:
  - dense: {units: 128, activation: relu}
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0102",
        title: "the spec file holds more than one YAML document",
        explanation: "\
A line `---` starts a new YAML document, and a spec is exactly one document: one model.
Two models pasted into one file, or a `---` used as a separator inside a spec, give this
error. Keep one document per file.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/two_documents.yaml")),
        fixed: Example::Spec(
            "\
# One model per file.
inputs:
  x: [batch, 4]
layers:
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0103",
        title: "an alias refers to an anchor that is not defined before it",
        explanation: "\
In YAML, `&name` marks a value (an anchor) and `*name` repeats it (an alias). An alias
can only repeat an anchor that appears earlier in the file. Put the anchor on the first
use and the aliases on the later ones.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/alias_used_before_anchor.yaml"
        )),
        fixed: Example::Spec(
            "\
# The anchor `&block` comes before its alias.
inputs:
  x: [batch, 32]
layers:
  - dense: &block {units: 64, activation: relu}
  - dense: *block
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0104",
        title: "the spec nests too deeply",
        explanation: "\
kiln reads specs nested at most 64 levels deep; a model spec needs four or five. The
limit keeps a malformed or generated file from exhausting the stack. The same code is
given when the YAML parser's own nesting limit is reached first.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/nesting_too_deep.yaml")),
        fixed: Example::Spec(
            "\
# The shape written as a flat list.
inputs:
  x: [batch, 1]
layers:
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0105",
        title: "the spec expands to too many YAML nodes or bytes",
        explanation: "\
Aliases (`*name`) repeat what their anchor holds, and kiln counts every repetition: a
spec may expand to at most 200,000 YAML nodes and 16 MiB (16,777,216 bytes) of text.
Anchors that repeat other aliases grow exponentially (the \"billion laughs\" file), and
an alias of a long string copies all of it, so a few short lines can pass a limit.
Use aliases for repeated layer arguments, not to generate structure.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/alias_bomb.yaml")),
        fixed: Example::Spec(
            "\
# An alias used the way specs use them: to repeat one layer's arguments.
inputs:
  x: [batch, 32]
layers:
  - dense: &hidden {units: 64, activation: relu}
  - dense: *hidden
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0106",
        title: "the spec file is too large",
        explanation: "\
kiln reads spec files of at most 1 MiB (1,048,576 bytes), and stops reading a file at
that size rather than loading it whole. A model spec is a few hundred bytes: this is
usually the wrong file (a data file or a checkpoint given as the spec), or a generator
that wrote far more layers than intended. Text handed to the library
(`Model::from_source`) has the same limit.
",
        wrong: Example::Repeated {
            head: "\
inputs:
  x: [batch, 4]
layers:
",
            line: "  - dense: {units: 4, activation: relu}\n",
            times: 30_000,
            tail: "  - dense: {units: 1}\n",
        },
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 4]
layers:
  - dense: {units: 4, activation: relu}
  - dense: {units: 4, activation: relu}
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0107",
        title: "the spec file is not UTF-8 text",
        explanation: "\
A spec file must be UTF-8. This error is reported when kiln reads the file
(`kiln check FILE`, `Model::from_path`), at the first byte that is not valid UTF-8:
usually a file saved in Latin-1 or UTF-16 by an editor, or a binary file given as the
spec. In the example, `\\xE9` stands for one byte, `é` in Latin-1. Save the file as
UTF-8.
",
        wrong: Example::File(
            b"\
# Caf\xe9 menu model, saved as Latin-1.
inputs:
  x: [batch, 4]
layers:
  - dense: {units: 1}
",
        ),
        fixed: Example::File(
            b"\
# Caf\xc3\xa9 menu model, saved as UTF-8.
inputs:
  x: [batch, 4]
layers:
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0108",
        title: "the spec has more errors than kiln reports",
        explanation: "\
kiln reports at most 100 errors for one spec, in the order of the text; this error
stands for the rest and points at the first one not shown. A spec with this many
errors is usually generated, or not a spec at all. Fix the errors shown and check
again. Warnings have their own limit, W0108.
",
        wrong: Example::Repeated {
            head: "\
inputs:
  x: [batch, 4]
layers:
",
            line: "  - dense: {units: 8, activation: rel}\n",
            times: 101,
            tail: "",
        },
        fixed: Example::Repeated {
            head: "\
inputs:
  x: [batch, 4]
layers:
",
            line: "  - dense: {units: 8, activation: relu}\n",
            times: 101,
            tail: "",
        },
    },
    CodeInfo {
        code: "W0108",
        title: "the spec has more warnings than kiln reports",
        explanation: "\
kiln reports at most 100 warnings for one spec, in the order of the text; this warning
stands for the rest and points at the first one not shown. Errors have their own limit,
E0108. Here every layer takes the input `x` directly, so none but the last is used.
",
        wrong: Example::Repeated {
            head: "\
inputs:
  x: [batch, 4]
layers:
",
            line: "  - dense: {units: 8, input: x}\n",
            times: 101,
            tail: "  - dense: {units: 1, input: x}\n",
        },
        fixed: Example::Repeated {
            head: "\
inputs:
  x: [batch, 4]
layers:
",
            line: "  - dense: {units: 8}\n",
            times: 101,
            tail: "  - dense: {units: 1}\n",
        },
    },
];
