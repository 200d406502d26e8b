//! Names: model inputs, layer types, Keras's automatic layer names (`dense`,
//! `dense_1`, …), and where each name is defined.

use std::collections::{HashMap, HashSet};

use super::{Checker, Def, Input, Source, tensor_type};
use crate::args;
use crate::diag::{Diagnostic, did_you_mean};
use crate::layers::{self, LayerKind};
use crate::spec;

impl Checker<'_> {
    /// The model inputs; a name declared twice is reported (E0702).
    pub(super) fn inputs(&mut self) -> Vec<Input> {
        let mut out: Vec<Input> = Vec::new();
        for d in &self.spec.inputs {
            if let Some(prev) = out.iter().find(|i| i.name == d.name) {
                self.diags.push(
                    Diagnostic::error("E0702", format!("the input `{}` is declared twice", d.name))
                        .label(d.name_span.clone(), "second declaration")
                        .secondary(prev.span.clone(), "first declaration")
                        .help("names are unique in a model; rename or remove one of them"),
                );
                continue;
            }
            out.push(Input {
                name: d.name.clone(),
                ty: tensor_type(d),
                span: d.name_span.clone(),
            });
        }
        out
    }

    /// A layer's kind from its type name; an unknown one is reported (E0701) with the
    /// likely fix (a typo, a Python call, an activation written as a layer).
    pub(super) fn kind(&mut self, l: &spec::LayerDecl) -> Option<&'static LayerKind> {
        if let Some(k) = layers::lookup(&l.type_name) {
            return Some(k);
        }
        let names = layers::REGISTRY.iter().map(|k| k.name);
        if let Some(d) = crate::diag::keras::not_yet(
            crate::diag::keras::Family::Layer,
            &l.type_name,
            l.type_span.clone(),
            names.clone(),
        ) {
            self.diags.push(d);
            return None;
        }
        // `Dense(10)`: a Python call written as a layer type.
        let (written, call) = match l.type_name.split_once('(') {
            Some((base, rest)) => (base.trim(), Some(rest.trim_end_matches(')').trim())),
            None => (l.type_name.as_str(), None),
        };
        let suggestion = did_you_mean(written, names.clone()).or_else(|| {
            layers::REGISTRY
                .iter()
                .find(|k| k.class.eq_ignore_ascii_case(written))
                .map(|k| k.name)
        });
        let help = match (suggestion, call) {
            (Some(s), Some(inner)) => {
                let required = layers::lookup(s).and_then(|k| {
                    k.args
                        .iter()
                        .find(|a| matches!(a.default, args::Default::Required))
                });
                // `128, activation='relu'` → `units: 128, activation: relu`.
                let mut pairs = Vec::new();
                let mut simple = !inner.contains(['(', '[', '{']);
                for (i, part) in inner.split(',').map(str::trim).enumerate() {
                    let unquote = |v: &str| v.trim().trim_matches(['\'', '"']).to_string();
                    match (part.split_once('='), required) {
                        (Some((k, v)), _) => pairs.push(format!("{}: {}", k.trim(), unquote(v))),
                        (None, Some(a)) if i == 0 && !part.is_empty() => {
                            pairs.push(format!("{}: {}", a.name, unquote(part)))
                        }
                        _ => simple = false,
                    }
                }
                if inner.is_empty() {
                    format!("a spec is YAML, not Python: write `- {s}`")
                } else if simple {
                    format!(
                        "a spec is YAML, not Python: write `- {s}: {{{}}}`",
                        pairs.join(", ")
                    )
                } else {
                    format!("a spec is YAML, not Python: write `- {s}: {{argument: value, …}}`")
                }
            }
            _ if crate::catalog::activations::NAMES.contains(&written) => format!(
                "`{written}` is an activation, not a layer: write `- activation: {{activation: {written}}}`, or pass `activation: {written}` to the layer before"
            ),
            (Some(s), None) => format!("did you mean `{s}`?"),
            (None, _) => format!("kiln's layers: {}", names.collect::<Vec<_>>().join(", ")),
        };
        self.diags.push(
            Diagnostic::error(
                "E0701",
                format!("`{}` is not a layer type kiln knows", l.type_name),
            )
            .label(l.type_span.clone(), "unknown layer type")
            .help(help),
        );
        None
    }

    /// Explicit names, then Keras's automatic names (`dense`, `dense_1`, …) for the rest,
    /// skipping names already taken. Layers held by a wrapper (`bidirectional: {layer:
    /// {lstm: …}}`) draw their names from the same counters, just before their wrapper,
    /// as Keras creates them; the names are kept in their arguments.
    pub(super) fn layer_names(
        &mut self,
        kinds: &[Option<&'static LayerKind>],
        args: &mut [Option<args::Args>],
    ) -> Vec<String> {
        let mut taken: HashSet<String> = self.spec.inputs.iter().map(|i| i.name.clone()).collect();
        for l in &self.spec.layers {
            if let Some((n, _)) = &l.name {
                taken.insert(n.clone());
            }
        }
        let mut counters: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for ((l, k), a) in self.spec.layers.iter().zip(kinds).zip(args.iter_mut()) {
            if let (Some(k), Some(a)) = (k, a.as_mut()) {
                layers::name_inner_layers(k, a, &mut |base| {
                    let c = counters.entry(base.to_string()).or_insert(0);
                    let name = if *c == 0 {
                        base.to_string()
                    } else {
                        format!("{base}_{c}")
                    };
                    *c += 1;
                    name
                });
            }
            if let Some((n, _)) = &l.name {
                out.push(n.clone());
                continue;
            }
            let base = k.map(|k| k.name).unwrap_or(l.type_name.as_str());
            let c = counters.entry(base.to_string()).or_insert(0);
            let name = loop {
                let candidate = if *c == 0 {
                    base.to_string()
                } else {
                    format!("{base}_{c}")
                };
                *c += 1;
                if !taken.contains(&candidate) {
                    break candidate;
                }
            };
            taken.insert(name.clone());
            out.push(name);
        }
        out
    }

    /// Every name's definition; a name defined twice is reported (E0702).
    pub(super) fn definitions(&mut self, inputs: &[Input]) -> HashMap<String, Def> {
        let mut defs: HashMap<String, Def> = HashMap::new();
        for (i, inp) in inputs.iter().enumerate() {
            defs.insert(
                inp.name.clone(),
                Def {
                    source: Source::Input(i),
                    span: inp.span.clone(),
                },
            );
        }
        for (i, l) in self.spec.layers.iter().enumerate() {
            let span = l
                .name
                .as_ref()
                .map(|n| n.1.clone())
                .unwrap_or(l.type_span.clone());
            if let Some(prev) = defs.get(&self.names[i]) {
                let what = if matches!(prev.source, Source::Input(_)) {
                    "an input"
                } else {
                    "another layer"
                };
                self.diags.push(
                    Diagnostic::error(
                        "E0702",
                        format!("the name `{}` is already used by {what}", self.names[i]),
                    )
                    .label(span, "used again here")
                    .secondary(prev.span.clone(), "first used here")
                    .help("names are unique in a model; rename one of them"),
                );
                continue;
            }
            defs.insert(
                self.names[i].clone(),
                Def {
                    source: Source::Layer(i),
                    span,
                },
            );
        }
        defs
    }
}
