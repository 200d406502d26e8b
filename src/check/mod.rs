//! The checker: a parsed spec becomes a [`Graph`] whose every tensor has a symbolic
//! shape and whose every layer has Keras's parameters — or a list of diagnostics.
//!
//! Invariants: the checker never panics on any input; one root cause gives one error
//! (a layer whose inputs or arguments are already wrong is not checked further, so
//! mistakes do not cascade); every error points at the user's own text.
//!
//! The steps run in order, one file each: names (inputs, layer types, Keras's
//! automatic names, definitions) in `names`, references (inputs of each layer,
//! cycles, outputs, unused layers) in `refs`, shape inference in `shapes`, the train
//! section against the model in `train`. `graph` holds the result's types.

mod graph;
mod names;
mod outputs;
mod refs;
mod shapes;
mod train;

pub use graph::{Graph, Input, Layer, MAX_PARAMS, MetricUse, Part, Source, Target, Train};

use std::ops::Range;

use crate::args::{self, Args};
use crate::diag::Diagnostic;
use crate::layers::{LayerKind, TensorType};
use crate::spec::{self, Spec, TensorDecl};

/// Checks spec text. `default_name` is used when the spec has no `name` (the file stem).
/// Returns the graph when there is no error, and every diagnostic (warnings too).
pub fn check(src: &str, default_name: &str) -> (Option<Graph>, Vec<Diagnostic>) {
    let (spec, mut diags) = spec::parse(src);
    let graph = spec.and_then(|spec| Checker::new(&spec, &mut diags).run(default_name));
    // Report in the order of the text, as a reader goes through the file.
    diags.sort_by_key(|d| d.primary_span().map(|s| s.start).unwrap_or(0));
    limit(&mut diags);
    if diags.iter().any(Diagnostic::is_error) {
        return (None, diags);
    }
    (graph, diags)
}

/// Most errors, and separately most warnings, reported for one spec (javac stops at 100
/// errors too). Every hand-written spec is far below it; without it, junk such as
/// 40,000 layers each naming an unknown input would take quadratic time and memory to
/// report (each error searches and lists every name, and each rendering copies and
/// scans the whole source).
pub const MAX_REPORTED: usize = 100;

/// Keeps the first [`MAX_REPORTED`] errors and warnings, in text order, and says so
/// when more were found.
fn limit(diags: &mut Vec<Diagnostic>) {
    let mut errors = 0;
    let mut warnings = 0;
    let mut dropped: [Option<Diagnostic>; 2] = [None, None];
    diags.retain(|d| {
        let (n, slot) = if d.is_error() {
            (&mut errors, 0)
        } else {
            (&mut warnings, 1)
        };
        *n += 1;
        if *n > MAX_REPORTED && dropped[slot].is_none() {
            dropped[slot] = Some(d.clone());
        }
        *n <= MAX_REPORTED
    });
    for (slot, first) in dropped.into_iter().enumerate() {
        let Some(first) = first else { continue };
        let what = if slot == 0 { "errors" } else { "warnings" };
        let message = format!(
            "this spec has more than {MAX_REPORTED} {what}; only the first {MAX_REPORTED} are shown"
        );
        let mut d = if slot == 0 {
            Diagnostic::error("E0108", message)
        } else {
            Diagnostic::warning("W0108", message)
        };
        if let Some(span) = first.primary_span() {
            d = d.label(span, format!("the next of the {what} not shown"));
        }
        diags.push(d.help(format!("fix the {what} above and check again")));
    }
}

/// The state of one check: the spec, the diagnostics so far, and the layers' names.
struct Checker<'a> {
    spec: &'a Spec,
    diags: &'a mut Vec<Diagnostic>,
    names: Vec<String>,
    /// How many of `diags` have been looked at by [`Checker::full`], and how many of
    /// those are errors.
    counted: usize,
    errors: usize,
}

/// Where each name is defined, for reference resolution.
#[derive(Clone)]
struct Def {
    source: Source,
    span: Range<usize>,
}

/// What is known of each layer before shape inference; `None` where it is wrong (and
/// reported).
struct Resolved {
    kinds: Vec<Option<&'static LayerKind>>,
    args: Vec<Option<Args>>,
    /// Each layer's inputs.
    refs: Vec<Option<Vec<Source>>>,
    /// The names of each layer's outputs when it has several (empty otherwise).
    parts: Vec<&'static [&'static str]>,
}

impl<'a> Checker<'a> {
    fn new(spec: &'a Spec, diags: &'a mut Vec<Diagnostic>) -> Self {
        Checker {
            spec,
            diags,
            names: Vec::new(),
            counted: 0,
            errors: 0,
        }
    }

    /// More errors are known than will be reported ([`MAX_REPORTED`]): checking stops
    /// (the layers not looked at count as unresolved, so nothing cascades). Linear over
    /// any number of calls: each diagnostic is counted once.
    fn full(&mut self) -> bool {
        let new = &self.diags[self.counted.min(self.diags.len())..];
        self.errors += new.iter().filter(|d| d.is_error()).count();
        self.counted = self.diags.len();
        self.errors > MAX_REPORTED
    }

    /// Runs the steps in order; the graph only when every layer and output resolved.
    fn run(mut self, default_name: &str) -> Option<Graph> {
        let spec = self.spec;
        let inputs = self.inputs();
        let kinds: Vec<Option<&'static LayerKind>> = spec
            .layers
            .iter()
            .map(|l| if self.full() { None } else { self.kind(l) })
            .collect();
        let mut args = self.layer_args(&kinds);
        self.names = self.layer_names(&kinds, &mut args);
        let defs = self.definitions(&inputs);
        let parts: Vec<&'static [&'static str]> = kinds
            .iter()
            .zip(&args)
            .map(|(k, a)| match (k, a) {
                (Some(k), Some(a)) => (k.facts.parts)(a),
                _ => &[],
            })
            .collect();
        let refs = self.references(&kinds, &args, &defs, &parts);
        let resolved = Resolved {
            kinds,
            args,
            refs,
            parts,
        };
        let shapes::Shapes {
            types,
            mut params,
            parts: part_types,
            masks,
            part_masks,
        } = self.shapes(&inputs, &resolved);
        self.check_total(&params);

        let outputs = self.outputs(&defs, &resolved.parts);
        if let Some(outs) = &outputs {
            self.unused(outs, &resolved.refs, &inputs);
        }

        // Build the graph only if everything resolved.
        let Resolved {
            kinds,
            args,
            refs,
            parts,
        } = resolved;
        let layers: Option<Vec<Layer>> = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Some(Layer {
                    name: self.names[i].clone(),
                    kind: kinds[i]?,
                    args: args[i].clone()?,
                    inputs: refs[i].clone()?,
                    output: types[i].clone()?,
                    parts: parts[i]
                        .iter()
                        .zip(&part_types[i])
                        .enumerate()
                        .map(|(k, (p, ty))| Part {
                            name: format!("{}.{p}", self.names[i]),
                            ty: ty.clone(),
                            mask: match part_masks[i].get(k) {
                                Some(m) => m.clone(),
                                None => masks[i].clone(),
                            },
                        })
                        .collect(),
                    mask: masks[i].clone(),
                    params: std::mem::take(&mut params[i]),
                    span: d.type_span.clone(),
                })
            })
            .collect();
        let graph = Graph {
            name: spec
                .name
                .as_ref()
                .map(|n| n.0.clone())
                .unwrap_or_else(|| default_name.to_string()),
            inputs,
            layers: layers?,
            outputs: outputs?,
            train: None,
        };
        let train = match &spec.train {
            Some(t) => Some(self.train(t, &graph)?),
            None => None,
        };
        Some(Graph { train, ..graph })
    }

    /// Each layer's arguments validated against its kind's schema.
    fn layer_args(&mut self, kinds: &[Option<&'static LayerKind>]) -> Vec<Option<Args>> {
        self.spec
            .layers
            .iter()
            .zip(kinds)
            .map(|(l, k)| {
                let k = (*k)?;
                // Arguments that are not a mapping were reported while parsing (E0215).
                if l.args.as_ref().is_some_and(|a| a.as_map().is_none()) {
                    return None;
                }
                args::validate(
                    k.args,
                    l.args.as_ref(),
                    k.name,
                    l.args_span.clone(),
                    self.diags,
                )
            })
            .collect()
    }
}

/// A declaration's type, its dimensions as written.
fn tensor_type(d: &TensorDecl) -> TensorType {
    TensorType::new(d.shape.iter().map(|x| x.dim.clone()).collect(), d.dtype)
}
