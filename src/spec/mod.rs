//! The spec language (DESIGN §1): YAML text → a spanned AST.
//!
//! This module owns everything that knows about YAML. It checks the *structure* of a
//! spec (top-level keys, input declarations, the shape of each layer entry, references
//! written as `input:`/`inputs:`, the train section's schema); the meaning — names,
//! shapes, targets — is checked in [`crate::check`].

pub mod train;

use std::collections::HashMap;
use std::ops::Range;

use crate::diag::{Diagnostic, did_you_mean};
use crate::dim::Dim;
use crate::yaml::{self, Kind, Node, Scalar};

/// Element types of tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I32,
    I64,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::I64 => "i64",
        }
    }
    pub fn is_int(self) -> bool {
        !matches!(self, DType::F32)
    }
    /// Parses kiln's names and the NumPy/Keras spellings.
    pub fn parse(s: &str) -> Option<DType> {
        match s {
            "f32" | "float32" | "float" => Some(DType::F32),
            "i32" | "int32" => Some(DType::I32),
            "i64" | "int64" | "int" => Some(DType::I64),
            _ => None,
        }
    }
}

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
        let d = if root.is_null() {
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
        };
        diags.push(d);
        return (None, diags);
    };
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

    let name = root.get("name").and_then(|n| match n.as_str() {
        Some(s) => Some((s.to_string(), n.span.clone())),
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
    });

    // A misspelled section (`layer:`) was reported above; check its contents as if it
    // were spelled right rather than also reporting the section as missing.
    let section = |want: &str| {
        root.entry(want).or_else(|| {
            entries
                .iter()
                .find(|(k, _)| {
                    k.as_str().is_some_and(|s| {
                        !TOP_KEYS.contains(&s)
                            && did_you_mean(s, TOP_KEYS.iter().copied()) == Some(want)
                    })
                })
                .map(|(k, v)| (k, v))
        })
    };
    let key_span = |name: &str| root.entry(name).map(|(k, _)| k.span.clone());

    let mut broken_inputs = Vec::new();
    let (inputs, inputs_span) = match section("inputs") {
        None => {
            let (span, label) = match key_span("layers") {
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
            parse_tensors(v, "inputs", false, &mut broken_inputs, &mut diags),
            k.span.start..v.span.end,
        ),
    };

    let (layers, layers_span) = match section("layers") {
        None => {
            let (span, label) = match key_span("inputs") {
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
        Some((k, v)) => (parse_layers(v, &mut diags), k.span.clone()),
    };

    let outputs = section("outputs").and_then(|(_, v)| parse_refs(v, "outputs", &mut diags));
    let train = section("train").and_then(|(_, v)| train::parse(v, &mut diags));

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

/// Is `s` usable as a layer, input or symbol name?
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Help for an unknown dtype: never suggest an integer type for a float one.
fn dtype_help(written: &str) -> String {
    let lower = written.to_lowercase();
    if lower.starts_with('f')
        || lower.starts_with("bf")
        || ["double", "half"].contains(&lower.as_str())
    {
        "kiln's float tensors are f32: write `dtype: f32`, or leave `dtype` out".to_string()
    } else if lower.starts_with('i') || lower.starts_with('u') || lower == "long" {
        "integer tensors are `i32` or `i64`".to_string()
    } else {
        match did_you_mean(written, ["f32", "i32", "i64"]) {
            Some(s) => format!("did you mean `{s}`? dtypes are f32, i32 and i64"),
            None => "dtypes are f32 (default), i32 and i64".to_string(),
        }
    }
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

/// Parses a shape list `[batch, 8, 8, 1]`.
pub fn parse_shape(v: &Node, what: &str, diags: &mut Vec<Diagnostic>) -> Option<Vec<DimDecl>> {
    let Some(items) = v.as_seq() else {
        diags.push(
            Diagnostic::error(
                "E0301",
                format!(
                    "the shape of `{what}` must be a list of dimensions, but this is {}",
                    v.describe()
                ),
            )
            .label(v.span.clone(), "expected a list like `[batch, 8, 8, 1]`")
            .help(match &v.kind {
                Kind::Scalar(Scalar::Int(n)) => {
                    format!("write the shape as a list, batch axis first: `{what}: [batch, {n}]`")
                }
                _ => format!(
                    "write the shape as a list, batch axis first, e.g. `{what}: [batch, 8, 8, 1]`"
                ),
            }),
        );
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for it in items {
        match &it.kind {
            Kind::Scalar(Scalar::Int(i)) if *i > 0 && *i <= crate::args::MAX_SIZE => {
                out.push(DimDecl {
                    dim: Dim::konst(*i),
                    span: it.span.clone(),
                })
            }
            Kind::Scalar(Scalar::Int(i)) if *i <= 0 => {
                ok = false;
                diags.push(
                    Diagnostic::error("E0302", format!("a dimension must be positive, but `{what}` has {i}"))
                        .label(it.span.clone(), "not a positive size")
                        .help(if *i == -1 {
                            "kiln writes a size known only at run time as a name, not -1: use `batch` (or any identifier)"
                        } else {
                            "sizes are positive integers; use a name such as `batch` for a size known only at run time"
                        }),
                );
            }
            Kind::Scalar(Scalar::Int(_)) | Kind::Scalar(Scalar::BigInt(_)) => {
                ok = false;
                diags.push(
                    Diagnostic::error(
                        "E0302",
                        format!(
                            "a dimension of `{what}` is larger than {}",
                            crate::args::MAX_SIZE
                        ),
                    )
                    .label(it.span.clone(), "too large")
                    .help("no tensor axis can be this long; check the number"),
                );
            }
            Kind::Scalar(Scalar::Str(s)) if is_identifier(s) => out.push(DimDecl {
                dim: Dim::sym(s),
                span: it.span.clone(),
            }),
            _ => {
                ok = false;
                let written = match it.as_str() {
                    Some(s) => format!("`{s}`"),
                    None => it.describe().to_string(),
                };
                // `28*28`: kiln does not evaluate arithmetic, but can say what it equals.
                let product = it.as_str().and_then(|s| {
                    s.split('*')
                        .map(|f| f.trim().parse::<i64>().ok().filter(|&x| x > 0))
                        .try_fold(1i64, |acc, f| acc.checked_mul(f?))
                        .filter(|_| s.contains('*'))
                });
                diags.push(
                    Diagnostic::error(
                        "E0303",
                        format!("a dimension must be a positive integer or a name, but `{what}` has {written}"),
                    )
                    .label(it.span.clone(), "not a dimension")
                    .help(match product {
                        Some(p) => format!("shapes are not evaluated as arithmetic; write the size itself: `{p}`"),
                        None => "write a size like `8` or a symbol like `batch`".to_string(),
                    }),
                );
            }
        }
    }
    ok.then_some(out)
}

/// Parses `inputs:` or `targets:`: a mapping from names to shapes (short form) or
/// `{shape, dtype}` (long form). Targets may also say `output: NAME`. The names of
/// declarations that are wrong (and reported) go to `broken`.
pub fn parse_tensors(
    v: &Node,
    section: &str,
    targets: bool,
    broken: &mut Vec<String>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<TensorDecl> {
    let Some(entries) = v.as_map() else {
        diags.push(
            Diagnostic::error(
                "E0207",
                format!(
                    "`{section}` must map names to shapes, but this is {}",
                    v.describe()
                ),
            )
            .label(v.span.clone(), "expected `name: [dims…]`")
            .help(match v.as_seq() {
                // A bare shape: the name is what is missing.
                Some(items) if items.iter().all(|i| matches!(i.kind, Kind::Scalar(_))) => {
                    let dims: Vec<String> = items.iter().map(scalar_text).collect();
                    format!("give it a name: `{section}: {{x: [{}]}}`", dims.join(", "))
                }
                _ => format!("for example `{section}: {{x: [batch, 4]}}`"),
            }),
        );
        return Vec::new();
    };
    if entries.is_empty() {
        diags.push(
            Diagnostic::error("E0207", format!("`{section}` is empty"))
                .label(v.span.clone(), "nothing declared")
                .help(format!("for example `{section}: {{x: [batch, 4]}}`")),
        );
    }
    let mut out = Vec::new();
    for (k, val) in entries {
        let Some(name) = k.as_str().filter(|s| is_identifier(s)) else {
            diags.push(
                Diagnostic::error(
                    "E0208",
                    "names are identifiers (letters, digits and `_`, not starting with a digit)",
                )
                .label(k.span.clone(), "not a valid name")
                .help(match k.as_str() {
                    Some(s) => {
                        let fixed: String = s
                            .chars()
                            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                            .collect();
                        if is_identifier(&fixed) {
                            format!("for example `{fixed}`")
                        } else {
                            format!("for example `x_{fixed}`")
                        }
                    }
                    None => "for example `image` or `x_1`".to_string(),
                }),
            );
            broken.extend(k.as_str().map(str::to_string));
            continue;
        };
        if out.iter().any(|d: &TensorDecl| d.name == name) || broken.iter().any(|b| b == name) {
            // Written twice: reported as a duplicate key; the first one counts.
            continue;
        }
        let (shape_node, dtype_node, output_node) = if let Some(m) = val.as_map() {
            let mut keys = vec!["shape", "dtype"];
            if targets {
                keys.push("output");
            }
            for (mk, _) in m {
                let key = mk.as_str().unwrap_or("?");
                if !keys.contains(&key) {
                    diags.push(
                        Diagnostic::error(
                            "E0209",
                            format!("`{key}` is not a field of a tensor declaration"),
                        )
                        .label(mk.span.clone(), "unknown field")
                        .help(
                            match did_you_mean(key, keys.iter().copied()) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => format!("the fields are: {}", keys.join(", ")),
                            },
                        ),
                    );
                }
            }
            // A misspelled field (`type:`) was reported above; use its value as the field
            // it was meant to be, so that the mistake is not reported twice.
            let field = |want: &str| {
                val.get(want).or_else(|| {
                    m.iter()
                        .find(|(mk, _)| {
                            mk.as_str().is_some_and(|k| {
                                !keys.contains(&k)
                                    && did_you_mean(k, keys.iter().copied()) == Some(want)
                            })
                        })
                        .map(|(_, v)| v)
                })
            };
            match field("shape") {
                Some(s) => (s, field("dtype"), field("output")),
                None => {
                    diags.push(
                        Diagnostic::error("E0209", format!("`{name}` needs a `shape`"))
                            .label(val.span.clone(), "no `shape` here")
                            .help(format!(
                                "for example `{name}: {{shape: [batch, 4], dtype: f32}}`"
                            )),
                    );
                    broken.push(name.to_string());
                    continue;
                }
            }
        } else {
            (val, None, None)
        };
        let Some(shape) = parse_shape(shape_node, name, diags) else {
            broken.push(name.to_string());
            continue;
        };
        let dtype = match dtype_node {
            None => DType::F32,
            Some(d) => match d.as_str().and_then(DType::parse) {
                Some(t) => t,
                None => {
                    let written = d.as_str().unwrap_or("?");
                    diags.push(
                        Diagnostic::error(
                            "E0210",
                            format!("`{written}` is not a dtype kiln knows"),
                        )
                        .label(d.span.clone(), "unknown dtype")
                        .help(dtype_help(written)),
                    );
                    broken.push(name.to_string());
                    continue;
                }
            },
        };
        let output = output_node.and_then(|o| match o.as_str() {
            Some(s) => Some((s.to_string(), o.span.clone())),
            None => {
                diags.push(
                    Diagnostic::error("E0209", "`output` must name one of the model's outputs")
                        .label(o.span.clone(), "expected a name")
                        .help("write the output layer's name, e.g. `output: logits`"),
                );
                broken.push(name.to_string());
                None
            }
        });
        if broken.last().is_some_and(|b| b == name) {
            continue;
        }
        out.push(TensorDecl {
            name: name.to_string(),
            name_span: k.span.clone(),
            shape,
            shape_span: shape_node.span.clone(),
            dtype,
            output,
        });
    }
    out
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

fn parse_layers(v: &Node, diags: &mut Vec<Diagnostic>) -> Vec<LayerDecl> {
    let Some(items) = v.as_seq() else {
        diags.push(
            Diagnostic::error(
                "E0212",
                format!("`layers` must be a list, but this is {}", v.describe()),
            )
            .label(v.span.clone(), "expected a list of layers")
            .help(
                "write each layer on its own line starting with `- `, e.g. `- dense: {units: 10}`",
            ),
        );
        return Vec::new();
    };
    if items.is_empty() {
        diags.push(
            Diagnostic::error("E0212", "`layers` is empty")
                .label(v.span.clone(), "no layers")
                .help("add at least one layer, e.g. `- dense: {units: 10}`"),
        );
    }
    items
        .iter()
        .filter_map(|it| parse_layer(it, diags))
        .collect()
}

fn parse_layer(it: &Node, diags: &mut Vec<Diagnostic>) -> Option<LayerDecl> {
    if let Some(s) = it.as_str() {
        return Some(LayerDecl {
            type_name: s.to_string(),
            type_span: it.span.clone(),
            args: None,
            args_span: it.span.clone(),
            name: None,
            inputs: None,
        });
    }
    // An empty mapping (`- {}`) has no type either.
    let Some(m) = it.as_map().filter(|m| !m.is_empty()) else {
        let what = if it.as_map().is_some() {
            "an empty mapping"
        } else {
            it.describe()
        };
        diags.push(
            Diagnostic::error(
                "E0213",
                format!("a layer is a name or `type: {{arguments}}`, but this is {what}"),
            )
            .label(it.span.clone(), "not a layer")
            .help("for example `- dense: {units: 10}` or `- flatten`"),
        );
        return None;
    };
    if m.len() != 1 {
        let keys: Vec<String> = m
            .iter()
            .map(|(k, _)| format!("`{}`", k.as_str().unwrap_or("?")))
            .collect();
        let mut d = Diagnostic::error(
            "E0214",
            format!(
                "a layer entry has one key, its type, but this one has {}: {}",
                m.len(),
                keys.join(", ")
            ),
        )
        .label(m[1].0.span.clone(), "this key is at the layer's level");
        d = d.secondary(m[0].0.span.clone(), "the layer's type");
        let args: Vec<String> = m[1..]
            .iter()
            .map(|(k, _)| format!("{}: …", k.as_str().unwrap_or("?")))
            .collect();
        d = d.help(format!(
            "indent the arguments further than the type, or write them inline: `- {}: {{{}}}`",
            m[0].0.as_str().unwrap_or("dense"),
            args.join(", ")
        ));
        diags.push(d);
        return None;
    }
    let (k, v) = &m[0];
    let Some(type_name) = k.as_str() else {
        diags.push(
            Diagnostic::error("E0213", "a layer's type must be a name")
                .label(k.span.clone(), "not a name")
                .help("for example `- dense: {units: 10}` or `- flatten`"),
        );
        return None;
    };
    let mut decl = LayerDecl {
        type_name: type_name.to_string(),
        type_span: k.span.clone(),
        args: None,
        args_span: if v.is_null() {
            k.span.clone()
        } else {
            v.span.clone()
        },
        name: None,
        inputs: None,
    };
    if v.is_null() {
        return Some(decl);
    }
    let Some(args) = v.as_map() else {
        diags.push(
            Diagnostic::error(
                "E0215",
                format!(
                    "the arguments of `{type_name}` must be a mapping, but this is {}",
                    v.describe()
                ),
            )
            .label(v.span.clone(), "expected `{argument: value, …}`")
            .help(args_help(type_name, v)),
        );
        // Keep the value so that the checker knows the arguments were written (and are
        // already reported), rather than reporting required arguments as missing.
        decl.args = Some(v.clone());
        return Some(decl);
    };
    let mut rest = Vec::new();
    let mut input_key: Option<&Node> = None;
    for (ak, av) in args {
        match ak.as_str() {
            Some("name") => match av.as_str() {
                Some(s) if is_identifier(s) => decl.name = Some((s.to_string(), av.span.clone())),
                other => {
                    // Keep an invalid name, so references to it do not fail a second time.
                    if let Some(s) = other {
                        decl.name = Some((s.to_string(), av.span.clone()));
                    }
                    diags.push(
                    Diagnostic::error("E0208", "a layer name is an identifier (letters, digits and `_`, not starting with a digit)")
                        .label(av.span.clone(), "not a valid name")
                        .help("for example `name: logits`"),
                    )
                }
            },
            Some(key @ ("input" | "inputs")) => {
                if let Some(prev) = input_key {
                    diags.push(
                        Diagnostic::error("E0216", "a layer takes `input` or `inputs`, not both")
                            .label(ak.span.clone(), "second one")
                            .secondary(prev.span.clone(), "first one")
                            .help(
                                "keep one: `input: a` for one input, `inputs: [a, b]` for several",
                            ),
                    );
                    // Which one was meant is unknown: do not check this layer's inputs.
                    decl.inputs = Some(Vec::new());
                    continue;
                }
                input_key = Some(ak);
                // A reference list that failed to parse is already reported; an empty
                // list keeps the layer from silently taking the previous layer instead.
                decl.inputs = Some(parse_refs(av, key, diags).unwrap_or_default());
            }
            _ => rest.push((ak.clone(), av.clone())),
        }
    }
    decl.args = Some(Node {
        kind: Kind::Map(rest),
        span: v.span.clone(),
    });
    Some(decl)
}

/// Help for `- dense: 64`: name the value after the layer's first required argument.
fn args_help(type_name: &str, v: &Node) -> String {
    let required = crate::layers::lookup(type_name).and_then(|k| {
        k.args
            .iter()
            .find(|a| matches!(a.default, crate::args::Default::Required))
    });
    let written = match &v.kind {
        Kind::Scalar(_) => Some(scalar_text(v)),
        Kind::Seq(items) if items.iter().all(|i| matches!(i.kind, Kind::Scalar(_))) => {
            let parts: Vec<String> = items.iter().map(scalar_text).collect();
            Some(format!("[{}]", parts.join(", ")))
        }
        _ => None,
    };
    match (required, written) {
        (Some(a), Some(w)) => format!(
            "arguments are written by name: `- {type_name}: {{{}: {w}}}`",
            a.name
        ),
        (Some(a), None) => format!(
            "arguments are written by name, e.g. `- {type_name}: {{{}: …}}`",
            a.name
        ),
        (None, _) => {
            format!("arguments are written by name, e.g. `- {type_name}: {{name: my_layer}}`")
        }
    }
}
