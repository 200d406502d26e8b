//! Tensor declarations (`inputs:` and `train.targets:`): names, shapes and dtypes.

use super::{
    DType, DimDecl, MAX_NAME_CHARS, TensorDecl, is_identifier, scalar_text, too_long_name,
};
use crate::diag::{Diagnostic, did_you_mean};
use crate::dim::Dim;
use crate::yaml::{Kind, Node, Scalar};

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
            Kind::Scalar(Scalar::Str(s)) if s.chars().count() > MAX_NAME_CHARS => {
                ok = false;
                diags.extend(too_long_name(s, it.span.clone()));
            }
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
            diags.push(invalid_name(k));
            broken.extend(k.as_str().map(str::to_string));
            continue;
        };
        if out.iter().any(|d: &TensorDecl| d.name == name) || broken.iter().any(|b| b == name) {
            // Written twice: reported as a duplicate key; the first one counts.
            continue;
        }
        match parse_tensor(name, k, val, targets, diags) {
            Some(d) => out.push(d),
            None => broken.push(name.to_string()),
        }
    }
    out
}

/// E0208 for a declared name that is not an identifier, with a fixed spelling.
fn invalid_name(k: &Node) -> Diagnostic {
    if let Some(d) = k.as_str().and_then(|s| too_long_name(s, k.span.clone())) {
        return d;
    }
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
    })
}

/// One declaration `name: [dims]` or `name: {shape, dtype, output}` (the key `k` holds
/// `name`); `None` when it is wrong (and reported).
fn parse_tensor(
    name: &str,
    k: &Node,
    val: &Node,
    targets: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<TensorDecl> {
    let (shape_node, dtype_node, output_node) = tensor_fields(name, val, targets, diags)?;
    let shape = parse_shape(shape_node, name, diags)?;
    let dtype = match dtype_node {
        None => DType::F32,
        Some(d) => match d.as_str().and_then(DType::parse) {
            Some(t) => t,
            None => {
                let written = d.as_str().unwrap_or("?");
                diags.push(
                    Diagnostic::error("E0210", format!("`{written}` is not a dtype kiln knows"))
                        .label(d.span.clone(), "unknown dtype")
                        .help(dtype_help(written)),
                );
                return None;
            }
        },
    };
    let output = match output_node {
        None => None,
        Some(o) => match o.as_str() {
            Some(s) => Some((s.to_string(), o.span.clone())),
            None => {
                diags.push(
                    Diagnostic::error("E0209", "`output` must name one of the model's outputs")
                        .label(o.span.clone(), "expected a name")
                        .help("write the output layer's name, e.g. `output: logits`"),
                );
                return None;
            }
        },
    };
    Some(TensorDecl {
        name: name.to_string(),
        name_span: k.span.clone(),
        shape,
        shape_span: shape_node.span.clone(),
        dtype,
        output,
    })
}

/// The nodes of a declaration's shape, dtype and (for targets) output. The short form
/// is the shape alone; the long form's unknown fields are reported, and `None` means it
/// has no shape (reported).
fn tensor_fields<'a>(
    name: &str,
    val: &'a Node,
    targets: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<(&'a Node, Option<&'a Node>, Option<&'a Node>)> {
    let Some(m) = val.as_map() else {
        return Some((val, None, None));
    };
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
                .help(match did_you_mean(key, keys.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("the fields are: {}", keys.join(", ")),
                }),
            );
        }
    }
    // A misspelled field (`type:`) was reported above; use its value as the field it
    // was meant to be, so that the mistake is not reported twice.
    let field = |want: &str| {
        val.get(want).or_else(|| {
            m.iter()
                .find(|(mk, _)| {
                    mk.as_str().is_some_and(|k| {
                        !keys.contains(&k) && did_you_mean(k, keys.iter().copied()) == Some(want)
                    })
                })
                .map(|(_, v)| v)
        })
    };
    match field("shape") {
        Some(s) => Some((s, field("dtype"), field("output"))),
        None => {
            diags.push(
                Diagnostic::error("E0209", format!("`{name}` needs a `shape`"))
                    .label(val.span.clone(), "no `shape` here")
                    .help(format!(
                        "for example `{name}: {{shape: [batch, 4], dtype: f32}}`"
                    )),
            );
            None
        }
    }
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
