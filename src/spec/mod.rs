//! The spec language (DESIGN §1): YAML text → a spanned AST.
//!
//! This module reads the spanned YAML tree ([`crate::yaml`]) and checks the *structure*
//! of a spec: top-level sections (here), tensor declarations (`tensor`), the shape of
//! each layer entry and its references written as `input:`/`inputs:` (`layer`), the
//! train section's schema (`train`). The meaning — names, shapes, targets — is checked
//! in [`crate::check`].

mod layer;
mod tensor;
pub mod train;
mod train_options;

pub use tensor::{parse_shape, parse_tensors};

use std::collections::HashMap;
use std::ops::Range;

use crate::diag::{Diagnostic, did_you_mean};
use crate::dim::Dim;
use crate::yaml::{self, Kind, Node, Scalar};

pub use crate::types::DType;

/// A dimension as written, with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct DimDecl {
    pub dim: Dim,
    pub span: Range<usize>,
}

/// A tensor declaration (`inputs:` or `train.targets:`).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    pub name: String,
    pub name_span: Range<usize>,
    pub shape: Vec<DimDecl>,
    pub shape_span: Range<usize>,
    pub dtype: DType,
    /// For targets: which output this target is for (`output: NAME`), if written.
    pub output: Option<(String, Range<usize>)>,
}

/// A name written in the spec, with its span.
pub type Ref = (String, Range<usize>);

/// One entry of `layers:`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerDecl {
    /// The layer type as written (`dense`), and its span — the anchor of layer-level
    /// diagnostics.
    pub type_name: String,
    pub type_span: Range<usize>,
    /// The layer's own arguments (`name`, `input` and `inputs` removed), as a mapping
    /// node, or `None` for a bare layer. A node that is not a mapping was already
    /// reported (E0215).
    pub args: Option<Node>,
    /// The span of the argument mapping (for "missing argument" labels).
    pub args_span: Range<usize>,
    pub name: Option<Ref>,
    /// Inputs written with `input:` or `inputs:`; `None` means "the previous layer". An
    /// empty list means they were written wrongly (and that is already reported).
    pub inputs: Option<Vec<Ref>>,
}

/// A parsed spec (structure checked, meaning not yet).
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: Option<Ref>,
    pub inputs: Vec<TensorDecl>,
    pub inputs_span: Range<usize>,
    pub layers: Vec<LayerDecl>,
    pub layers_span: Range<usize>,
    pub outputs: Option<Vec<Ref>>,
    pub train: Option<train::TrainDecl>,
    /// Names of inputs whose declarations are wrong (already reported): references to
    /// them are not reported again.
    pub broken_inputs: Vec<String>,
}

const TOP_KEYS: &[&str] = &["name", "inputs", "layers", "outputs", "train"];

/// Largest spec file kiln reads; specs are a few hundred bytes.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// Parses spec text. Returns the spec (if its structure allowed building one) and every
/// diagnostic found.
pub fn parse(src: &str) -> (Option<Spec>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    if src.len() > MAX_SPEC_BYTES {
        diags.push(
            Diagnostic::error(
                "E0106",
                format!(
                    "the spec is {} bytes; kiln reads specs of at most {} bytes",
                    src.len(),
                    MAX_SPEC_BYTES
                ),
            )
            .help("a model spec is a few hundred bytes; is this the right file?"),
        );
        return (None, diags);
    }
    let root = match yaml::parse(src) {
        Ok(n) => n,
        Err(d) => {
            diags.push(d);
            return (None, diags);
        }
    };
    check_duplicate_keys(&root, &mut diags);
    let Some(entries) = root.as_map() else {
        diags.push(not_a_mapping(&root));
        return (None, diags);
    };
    check_sections(entries, &mut diags);
    let name = parse_name(&root, &mut diags);
    let mut broken_inputs = Vec::new();
    let (inputs, inputs_span) = inputs_section(&root, &mut broken_inputs, &mut diags);
    let (layers, layers_span) = layers_section(&root, &mut diags);
    let outputs = section(&root, "outputs").and_then(|(_, v)| parse_refs(v, "outputs", &mut diags));
    let n_outputs = outputs.as_ref().map_or(1, Vec::len);
    let train = section(&root, "train").and_then(|(_, v)| train::parse(v, n_outputs, &mut diags));
    let spec = Spec {
        name,
        inputs,
        inputs_span,
        layers,
        layers_span,
        outputs,
        train,
        broken_inputs,
    };
    (Some(spec), diags)
}

/// E0201 for a document that is not a mapping: empty, a list (usually the layers
/// without their section), or a single value.
fn not_a_mapping(root: &Node) -> Diagnostic {
    if root.is_null() {
        Diagnostic::error("E0201", "the spec is empty")
            .label(0..0, "no `inputs:` or `layers:` in this file")
            .help("a spec needs at least `inputs:` and `layers:`; see specs/mlp.yaml")
    } else if root.as_seq().is_some() {
        // Usually the layer list written without its section.
        Diagnostic::error("E0201", "a spec is a YAML mapping, but this file is a list")
            .label(root.span.clone(), "expected `inputs: …`, `layers: …`")
            .help("if these are the layers, put them under `layers:` and declare the inputs above, e.g. `inputs: {x: [batch, 784]}`")
    } else {
        Diagnostic::error(
            "E0201",
            format!(
                "a spec is a YAML mapping, but this file is {}",
                root.describe()
            ),
        )
        .label(root.span.clone(), "expected `inputs: …`, `layers: …`")
        .help("a spec needs at least `inputs:` and `layers:`; see specs/mlp.yaml")
    }
}

/// Reports top-level keys that are not sections (E0202).
fn check_sections(entries: &[(Node, Node)], diags: &mut Vec<Diagnostic>) {
    for (k, _) in entries {
        match k.as_str() {
            Some(key) if TOP_KEYS.contains(&key) => {}
            other => {
                let key = other.unwrap_or("?");
                diags.push(
                    Diagnostic::error("E0202", format!("`{key}` is not a spec section"))
                        .label(k.span.clone(), "unknown section")
                        .help(match did_you_mean(key, TOP_KEYS.iter().copied()) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!("the sections are: {}", TOP_KEYS.join(", ")),
                        }),
                );
            }
        }
    }
}

/// The model's `name:`, if written as a string.
fn parse_name(root: &Node, diags: &mut Vec<Diagnostic>) -> Option<Ref> {
    root.get("name").and_then(|n| match n.as_str() {
        Some(s) => match too_long_name(s, n.span.clone()) {
            Some(d) => {
                diags.push(d);
                None
            }
            None => Some((s.to_string(), n.span.clone())),
        },
        None => {
            diags.push(
                Diagnostic::error(
                    "E0203",
                    format!("`name` must be a string, but this is {}", n.describe()),
                )
                .label(n.span.clone(), "expected a name")
                .help("write the model's name as text, e.g. `name: mnist_mlp`"),
            );
            None
        }
    })
}

/// A top-level section's key and value. A misspelled section (`layer:`) was reported by
/// [`check_sections`]; its contents are checked as if it were spelled right rather than
/// also reporting the section as missing.
fn section<'a>(root: &'a Node, want: &str) -> Option<(&'a Node, &'a Node)> {
    root.entry(want).or_else(|| {
        root.as_map()?
            .iter()
            .find(|(k, _)| {
                k.as_str().is_some_and(|s| {
                    !TOP_KEYS.contains(&s)
                        && did_you_mean(s, TOP_KEYS.iter().copied()) == Some(want)
                })
            })
            .map(|(k, v)| (k, v))
    })
}

/// The span of a top-level key as written (exact spelling only).
fn key_span(root: &Node, name: &str) -> Option<Range<usize>> {
    root.entry(name).map(|(k, _)| k.span.clone())
}

/// `inputs:` and its span (from the key to the end of the value); E0204 if missing.
fn inputs_section(
    root: &Node,
    broken_inputs: &mut Vec<String>,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<TensorDecl>, Range<usize>) {
    match section(root, "inputs") {
        None => {
            let (span, label) = match key_span(root, "layers") {
                Some(s) => (s, "declare `inputs:` before `layers:`"),
                None => (0..0, "inputs are declared at the top level"),
            };
            diags.push(
                Diagnostic::error("E0204", "the spec has no `inputs` section")
                    .label(span, label)
                    .help("declare the model's inputs, e.g. `inputs: {image: [batch, 8, 8, 1]}`"),
            );
            (Vec::new(), 0..0)
        }
        Some((k, v)) => (
            parse_tensors(v, "inputs", false, broken_inputs, diags),
            k.span.start..v.span.end,
        ),
    }
}

/// `layers:` and the span of its key; E0205 if missing.
fn layers_section(root: &Node, diags: &mut Vec<Diagnostic>) -> (Vec<LayerDecl>, Range<usize>) {
    match section(root, "layers") {
        None => {
            let (span, label) = match key_span(root, "inputs") {
                Some(s) => (s, "nothing takes these inputs: add a `layers:` section"),
                None => (0..0, "layers are listed at the top level"),
            };
            diags.push(
                Diagnostic::error("E0205", "the spec has no `layers` section")
                    .label(span, label)
                    .help("list the layers, e.g. `layers: [flatten, {dense: {units: 10}}]`"),
            );
            (Vec::new(), 0..0)
        }
        Some((k, v)) => (layer::parse_layers(v, diags), k.span.clone()),
    }
}

/// Reports keys written twice in one mapping, anywhere in the tree.
fn check_duplicate_keys(root: &Node, diags: &mut Vec<Diagnostic>) {
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        match &n.kind {
            Kind::Map(entries) => {
                // First occurrence of each key (a map: a scan per key would be quadratic).
                let mut seen: HashMap<&str, &Node> = HashMap::new();
                for (k, v) in entries {
                    if let Some(key) = k.as_str()
                        && let Some(first) = seen.get(key).copied().or_else(|| {
                            seen.insert(key, k); // the first time: remember it
                            None
                        })
                    {
                        diags.push(
                            Diagnostic::error(
                                "E0206",
                                format!("`{key}` is written twice in the same mapping"),
                            )
                            .label(k.span.clone(), "second time")
                            .secondary(first.span.clone(), "first time")
                            .help("keep one of them; YAML does not merge repeated keys"),
                        );
                    }
                    stack.push(v);
                }
            }
            Kind::Seq(items) => stack.extend(items.iter()),
            Kind::Scalar(_) => {}
        }
    }
}

/// Longest name a spec may use (a model, input, target, layer or symbol), in characters.
pub const MAX_NAME_CHARS: usize = 256;

/// E0208 for a name longer than [`MAX_NAME_CHARS`], if `s` is one.
pub(crate) fn too_long_name(s: &str, span: Range<usize>) -> Option<Diagnostic> {
    let chars = s.chars().count();
    (chars > MAX_NAME_CHARS).then(|| {
        Diagnostic::error(
            "E0208",
            format!("this name is {chars} characters long; names have at most {MAX_NAME_CHARS}"),
        )
        .label(span, "name too long")
        .help("use a short name, e.g. `hidden_1`")
    })
}

/// Is `s` usable as a layer, input or symbol name? (At most [`MAX_NAME_CHARS`] long.)
pub fn is_identifier(s: &str) -> bool {
    if s.len() > MAX_NAME_CHARS {
        return false;
    }
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A scalar as a person would write it back into a spec, for help texts.
fn scalar_text(n: &Node) -> String {
    match &n.kind {
        Kind::Scalar(Scalar::Null) => "null".into(),
        Kind::Scalar(Scalar::Bool(b)) => b.to_string(),
        Kind::Scalar(Scalar::Int(i)) => i.to_string(),
        Kind::Scalar(Scalar::BigInt(s)) | Kind::Scalar(Scalar::Str(s)) => s.clone(),
        Kind::Scalar(Scalar::Float(f)) => f.to_string(),
        _ => "…".into(),
    }
}

/// Parses a name or a list of names.
fn parse_refs(v: &Node, what: &str, diags: &mut Vec<Diagnostic>) -> Option<Vec<Ref>> {
    if let Some(s) = v.as_str() {
        return Some(vec![(s.to_string(), v.span.clone())]);
    }
    let bad = |n: &Node| {
        Diagnostic::error(
            "E0211",
            format!(
                "`{what}` takes a name or a list of names, but this is {}",
                n.describe()
            ),
        )
        .label(n.span.clone(), "expected a layer or input name")
        .help(format!(
            "write one name, `{what}: hidden`, or a list of names, `{what}: [a, b]`"
        ))
    };
    let Some(items) = v.as_seq() else {
        diags.push(bad(v));
        return None;
    };
    let mut out = Vec::new();
    for it in items {
        match it.as_str() {
            Some(s) => out.push((s.to_string(), it.span.clone())),
            None => {
                diags.push(bad(it));
                return None;
            }
        }
    }
    if out.is_empty() {
        diags.push(
            Diagnostic::error("E0211", format!("`{what}` is an empty list"))
                .label(v.span.clone(), "no names here")
                .help(if what == "outputs" {
                    "list the layers the model returns, e.g. `outputs: [logits]`, or remove `outputs` to return the last layer"
                } else {
                    "list the layers or inputs this layer takes, e.g. `inputs: [a, b]`"
                }),
        );
        return None;
    }
    Some(out)
}
