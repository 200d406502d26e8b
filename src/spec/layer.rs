//! Layer entries (`layers:`): a type, its arguments, and the `name`/`input`/`inputs`
//! keys that are the spec's rather than the layer's.

use super::{LayerDecl, is_identifier, parse_refs, scalar_text, too_long_name};
use crate::diag::Diagnostic;
use crate::yaml::{Kind, Node};

pub(super) fn parse_layers(v: &Node, diags: &mut Vec<Diagnostic>) -> Vec<LayerDecl> {
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
        diags.push(several_keys(m));
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
    let rest = layer_args(&mut decl, args, diags);
    decl.args = Some(Node {
        kind: Kind::Map(rest),
        span: v.span.clone(),
    });
    Some(decl)
}

/// E0214 for a layer entry with several keys: usually arguments indented as deep as the
/// type.
fn several_keys(m: &[(Node, Node)]) -> Diagnostic {
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
    d.help(format!(
        "indent the arguments further than the type, or write them inline: `- {}: {{{}}}`",
        m[0].0.as_str().unwrap_or("dense"),
        args.join(", ")
    ))
}

/// Takes `name`, `input` and `inputs` out of a layer's argument mapping into `decl`;
/// returns the layer's own arguments.
fn layer_args(
    decl: &mut LayerDecl,
    args: &[(Node, Node)],
    diags: &mut Vec<Diagnostic>,
) -> Vec<(Node, Node)> {
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
                    let long = other.and_then(|s| too_long_name(s, av.span.clone()));
                    diags.push(long.unwrap_or_else(|| {
                        Diagnostic::error("E0208", "a layer name is an identifier (letters, digits and `_`, not starting with a digit)")
                            .label(av.span.clone(), "not a valid name")
                            .help("for example `name: logits`")
                    }))
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
    rest
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
