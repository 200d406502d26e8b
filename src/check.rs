//! The checker: a parsed spec becomes a [`Graph`] whose every tensor has a symbolic
//! shape and whose every layer has Keras's parameters — or a list of diagnostics.
//!
//! Invariants: the checker never panics on any input; one root cause gives one error
//! (a layer whose inputs or arguments are already wrong is not checked further, so
//! mistakes do not cascade); every error points at the user's own text.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use crate::args::{self, Args};
use crate::catalog::losses::{LossKind, Targets};
use crate::diag::{Diagnostic, did_you_mean};
use crate::dim::{Dim, fmt_shape, product};
use crate::layers::{self, Arity, Ctx, In, LayerKind, Param, TensorType};
use crate::spec::train::TrainDecl;
use crate::spec::{self, Spec, TensorDecl};

/// Where a tensor comes from: a model input or a layer's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Input(usize),
    Layer(usize),
}

/// A model input.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub name: String,
    pub ty: TensorType,
    pub span: Range<usize>,
}

/// A checked layer.
#[derive(Clone, Debug)]
pub struct Layer {
    pub name: String,
    pub kind: &'static LayerKind,
    pub args: Args,
    pub inputs: Vec<Source>,
    pub output: TensorType,
    pub params: Vec<Param>,
    /// The layer's type key in the spec.
    pub span: Range<usize>,
}

/// A training target, matched to the output it is compared with.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub name: String,
    pub ty: TensorType,
    /// Index into [`Graph::outputs`].
    pub output: usize,
}

/// The checked train section.
#[derive(Clone, Debug, PartialEq)]
pub struct Train {
    pub decl: TrainDecl,
    pub targets: Vec<Target>,
    /// Metrics with `accuracy` resolved to its Keras variant (sparse/categorical/binary).
    pub metrics: Vec<String>,
}

/// A checked model: inputs, layers in order, outputs, training setup.
#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    pub inputs: Vec<Input>,
    pub layers: Vec<Layer>,
    pub outputs: Vec<Source>,
    pub train: Option<Train>,
}

impl Graph {
    pub fn type_of(&self, s: Source) -> &TensorType {
        match s {
            Source::Input(i) => &self.inputs[i].ty,
            Source::Layer(i) => &self.layers[i].output,
        }
    }
    pub fn name_of(&self, s: Source) -> &str {
        match s {
            Source::Input(i) => &self.inputs[i].name,
            Source::Layer(i) => &self.layers[i].name,
        }
    }
    /// (total, trainable, non-trainable) parameter counts.
    pub fn param_counts(&self) -> (i64, i64, i64) {
        let mut t = 0i64;
        let mut n = 0i64;
        for l in &self.layers {
            for p in &l.params {
                if p.trainable {
                    t = t.saturating_add(p.count());
                } else {
                    n = n.saturating_add(p.count());
                }
            }
        }
        (t.saturating_add(n), t, n)
    }
}

/// Largest number of parameters a model may have (every count fits in i64 with room).
pub const MAX_PARAMS: i64 = 1 << 40;

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

    fn run(mut self, default_name: &str) -> Option<Graph> {
        let spec = self.spec;
        let inputs = self.inputs();
        let kinds: Vec<Option<&'static LayerKind>> = spec
            .layers
            .iter()
            .map(|l| if self.full() { None } else { self.kind(l) })
            .collect();
        let args: Vec<Option<Args>> = spec
            .layers
            .iter()
            .zip(&kinds)
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
            .collect();
        self.names = self.layer_names(&kinds);
        let defs = self.definitions(&inputs);
        let refs = self.references(&kinds, &defs);

        // Shape inference, in order.
        let mut types: Vec<Option<TensorType>> = Vec::new();
        let mut params: Vec<Vec<Param>> = Vec::new();
        let origin = |s: Source| -> Range<usize> {
            match s {
                Source::Input(i) => inputs[i].span.clone(),
                Source::Layer(j) => spec.layers[j].type_span.clone(),
            }
        };
        for (i, decl) in spec.layers.iter().enumerate() {
            let full = self.full();
            let result = (|| {
                if full {
                    return None;
                }
                let kind = kinds[i]?;
                let a = args[i].as_ref()?;
                let srcs = refs[i].as_ref()?;
                let mut ins = Vec::new();
                for &s in srcs {
                    let (name, ty) = match s {
                        Source::Input(k) => (inputs[k].name.as_str(), Some(&inputs[k].ty)),
                        Source::Layer(j) => (self.names[j].as_str(), types[j].as_ref()),
                    };
                    ins.push(In {
                        name,
                        ty: ty?,
                        origin: origin(s),
                    });
                }
                let mut cx = Ctx {
                    layer: &self.names[i],
                    kind,
                    span: decl.type_span.clone(),
                    args: a,
                    inputs: ins,
                    diags: self.diags,
                };
                let inferred = (kind.infer)(&mut cx)?;
                let count = inferred.params.iter().try_fold(0i64, |acc, p| {
                    p.shape
                        .iter()
                        .try_fold(1i64, |x, &d| x.checked_mul(d))
                        .and_then(|c| acc.checked_add(c))
                });
                if count.is_none_or(|c| c > MAX_PARAMS) {
                    self.diags.push(
                        Diagnostic::error(
                            "E0513",
                            match count {
                                Some(c) => format!(
                                    "`{}` would have {} parameters, more than kiln's limit of {}",
                                    self.names[i],
                                    layers::group_digits(c),
                                    layers::group_digits(MAX_PARAMS)
                                ),
                                None => format!(
                                    "`{}` would have more than {} parameters",
                                    self.names[i],
                                    layers::group_digits(MAX_PARAMS)
                                ),
                            },
                        )
                        .label(decl.type_span.clone(), "this layer is too large")
                        .help("check `units`/`filters` and the sizes of its input"),
                    );
                    return None;
                }
                if let Err(e) = product(&inferred.output.shape) {
                    let mut cx = Ctx {
                        layer: &self.names[i],
                        kind,
                        span: decl.type_span.clone(),
                        args: a,
                        inputs: Vec::new(),
                        diags: self.diags,
                    };
                    cx.overflow(e);
                    return None;
                }
                Some(inferred)
            })();
            match result {
                Some(inf) => {
                    types.push(Some(inf.output));
                    params.push(inf.params);
                }
                None => {
                    types.push(None);
                    params.push(Vec::new());
                }
            }
        }
        let total: Option<i64> = params
            .iter()
            .flatten()
            .try_fold(0i64, |acc, p| acc.checked_add(p.count()));
        if total.is_none_or(|t| t > MAX_PARAMS) {
            self.diags.push(
                Diagnostic::error(
                    "E0513",
                    format!(
                        "the model would have more than {} parameters",
                        layers::group_digits(MAX_PARAMS)
                    ),
                )
                .label(
                    spec.layers_span.clone(),
                    "these layers are too large together",
                )
                .help("reduce `units`/`filters`"),
            );
        }

        let outputs = self.outputs(&defs);
        if let Some(outs) = &outputs {
            self.unused(outs, &refs, &inputs);
        }

        // Build the graph only if everything resolved.
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

    fn inputs(&mut self) -> Vec<Input> {
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

    fn kind(&mut self, l: &spec::LayerDecl) -> Option<&'static LayerKind> {
        if let Some(k) = layers::lookup(&l.type_name) {
            return Some(k);
        }
        let names = layers::REGISTRY.iter().map(|k| k.name);
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
            _ if args::ACTIVATIONS.contains(&written) => format!(
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
    /// skipping names already taken.
    fn layer_names(&mut self, kinds: &[Option<&'static LayerKind>]) -> Vec<String> {
        let mut taken: HashSet<String> = self.spec.inputs.iter().map(|i| i.name.clone()).collect();
        for l in &self.spec.layers {
            if let Some((n, _)) = &l.name {
                taken.insert(n.clone());
            }
        }
        let mut counters: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::new();
        for (l, k) in self.spec.layers.iter().zip(kinds) {
            if let Some((n, _)) = &l.name {
                out.push(n.clone());
                continue;
            }
            let base = k.map(|k| k.name).unwrap_or(l.type_name.as_str());
            let c = counters.entry(base).or_insert(0);
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

    fn definitions(&mut self, inputs: &[Input]) -> HashMap<String, Def> {
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

    /// Resolves each layer's inputs; `None` for a layer whose references are wrong.
    fn references(
        &mut self,
        kinds: &[Option<&'static LayerKind>],
        defs: &HashMap<String, Def>,
    ) -> Vec<Option<Vec<Source>>> {
        let spec = self.spec;
        let mut out = Vec::new();
        // Explicit references as layer indices (for cycle detection), forward ones included.
        let explicit: Vec<Vec<usize>> = spec
            .layers
            .iter()
            .map(|l| {
                l.inputs
                    .iter()
                    .flatten()
                    .filter_map(|(n, _)| match defs.get(n)?.source {
                        Source::Layer(j) => Some(j),
                        Source::Input(_) => None,
                    })
                    .collect()
            })
            .collect();
        for (i, l) in spec.layers.iter().enumerate() {
            if self.full() {
                out.push(None);
                continue;
            }
            let resolved: Option<Vec<Source>> = match &l.inputs {
                // Written, but wrongly: already reported while parsing.
                Some(names) if names.is_empty() => None,
                Some(names) => {
                    let mut srcs = Vec::new();
                    let mut ok = true;
                    for (n, span) in names {
                        if self.full() {
                            ok = false;
                            break;
                        }
                        match defs.get(n) {
                            // An input whose declaration is wrong: already reported.
                            None if spec.broken_inputs.contains(n) => ok = false,
                            None => {
                                ok = false;
                                // In the spec's order, so that ties resolve the same way
                                // every run (a HashMap's order changes from run to run).
                                let known = spec.inputs.iter().map(|x| x.name.as_str());
                                let known = known.chain(self.names.iter().map(String::as_str));
                                let help = match did_you_mean(n, known) {
                                    Some(s) => format!("did you mean `{s}`?"),
                                    None => {
                                        let mut avail: Vec<&str> =
                                            spec.inputs.iter().map(|x| x.name.as_str()).collect();
                                        avail.extend(self.names[..i].iter().map(String::as_str));
                                        format!("available here: {}", avail.join(", "))
                                    }
                                };
                                self.diags.push(
                                    Diagnostic::error(
                                        "E0703",
                                        format!("`{n}` is not an input or a layer name"),
                                    )
                                    .label(span.clone(), "unknown name")
                                    .help(help),
                                );
                            }
                            Some(d) => match d.source {
                                Source::Layer(j) if j >= i => {
                                    ok = false;
                                    self.forward_ref(i, j, n, span, d, &explicit);
                                }
                                s => srcs.push(s),
                            },
                        }
                    }
                    ok.then_some(srcs)
                }
                None if i > 0 => Some(vec![Source::Layer(i - 1)]),
                // Inputs whose declarations are wrong count, but cannot be taken.
                None => match spec.inputs.len() + spec.broken_inputs.len() {
                    0 => None,
                    1 if spec.inputs.len() == 1 => Some(vec![Source::Input(0)]),
                    1 => None,
                    _ => {
                        let names: Vec<&str> = spec
                            .inputs
                            .iter()
                            .map(|x| x.name.as_str())
                            .chain(spec.broken_inputs.iter().map(String::as_str))
                            .collect();
                        self.diags.push(
                            Diagnostic::error(
                                "E0708",
                                format!("the model has {} inputs, so the first layer must say which one it takes", names.len()),
                            )
                            .label(l.type_span.clone(), "takes which input?")
                            .help(format!("add `input: {}` (or `inputs: [{}]`)", names[0], names.join(", "))),
                        );
                        None
                    }
                },
            };
            let resolved = resolved.and_then(|srcs| {
                let kind = kinds[i]?;
                let (min, max) = match kind.arity {
                    Arity::One => (1, 1),
                    Arity::Range(a, b) => (a, b),
                };
                if srcs.len() >= min && srcs.len() <= max {
                    return Some(srcs);
                }
                let span = l.inputs.as_ref().map(|v| {
                    let a = v.first().map(|x| x.1.start).unwrap_or(l.type_span.start);
                    let b = v.last().map(|x| x.1.end).unwrap_or(l.type_span.end);
                    a..b
                });
                let want = if min == max {
                    format!("{min} input{}", if min == 1 { "" } else { "s" })
                } else if max == usize::MAX {
                    format!("at least {min} inputs")
                } else {
                    format!("{min} to {max} inputs")
                };
                let help = if min > 1 && l.inputs.is_none() {
                    format!("name them: `- {}: {{inputs: [a, b]}}`", kind.name)
                } else if max == 1 {
                    format!(
                        "`{}` takes one input; join several first with `concatenate` or `add`",
                        kind.name
                    )
                } else {
                    format!("`{}` takes {want}", kind.name)
                };
                let d = Diagnostic::error(
                    "E0706",
                    format!(
                        "`{}` takes {want}, but it is given {}",
                        kind.name,
                        srcs.len()
                    ),
                );
                let d = match span {
                    Some(s) => d
                        .label(s, format!("{} given", srcs.len()))
                        .secondary(l.type_span.clone(), "this layer"),
                    None => d.label(
                        l.type_span.clone(),
                        "only the previous layer's output comes in here",
                    ),
                };
                self.diags.push(d.help(help));
                None
            });
            out.push(resolved);
        }
        out
    }

    fn forward_ref(
        &mut self,
        i: usize,
        j: usize,
        n: &str,
        span: &Range<usize>,
        d: &Def,
        explicit: &[Vec<usize>],
    ) {
        // Is there a path of explicit references from j back to i? Then it is a cycle.
        let mut path = vec![j];
        let mut stack = vec![(j, 0usize)];
        let mut seen = vec![false; explicit.len()];
        let mut cycle = None;
        if j == i {
            cycle = Some(vec![i, i]);
        }
        while cycle.is_none() {
            let Some((node, k)) = stack.pop() else { break };
            path.truncate(stack.len() + 1);
            if k < explicit[node].len() {
                stack.push((node, k + 1));
                let next = explicit[node][k];
                if next == i {
                    let mut p = vec![i];
                    p.extend(path.iter().copied());
                    p.push(i);
                    cycle = Some(p);
                    break;
                }
                if !seen[next] {
                    seen[next] = true;
                    path.push(next);
                    stack.push((next, 0));
                }
            }
        }
        if let Some(c) = cycle {
            let chain: Vec<String> = c.iter().map(|&x| format!("`{}`", self.names[x])).collect();
            self.diags.push(
                Diagnostic::error(
                    "E0705",
                    format!("these layers form a cycle: {}", chain.join(" → ")),
                )
                .label(
                    span.clone(),
                    format!("`{}` takes `{n}` here", self.names[i]),
                )
                .secondary(d.span.clone(), format!("`{n}` is defined here"))
                .help(
                    "a model is a graph without cycles: each layer takes inputs or earlier layers",
                ),
            );
        } else {
            self.diags.push(
                Diagnostic::error(
                    "E0704",
                    format!("`{}` takes `{n}`, which is defined later", self.names[i]),
                )
                .label(span.clone(), "used before it is defined")
                .secondary(d.span.clone(), format!("`{n}` is defined here"))
                .help(format!(
                    "layers run in order: move `{n}` above `{}`",
                    self.names[i]
                )),
            );
        }
    }

    fn outputs(&mut self, defs: &HashMap<String, Def>) -> Option<Vec<Source>> {
        let spec = self.spec;
        match &spec.outputs {
            None => {
                let n = spec.layers.len();
                (n > 0).then(|| vec![Source::Layer(n - 1)])
            }
            Some(names) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (n, span) in names {
                    if self.full() {
                        return None;
                    }
                    match defs.get(n) {
                        Some(d) => {
                            if out.contains(&d.source) {
                                self.diags.push(
                                    Diagnostic::error(
                                        "E0707",
                                        format!("`{n}` is listed twice in `outputs`"),
                                    )
                                    .label(span.clone(), "listed again")
                                    .help("list each output once"),
                                );
                                ok = false;
                            }
                            out.push(d.source)
                        }
                        None => {
                            ok = false;
                            self.diags.push(
                                Diagnostic::error(
                                    "E0707",
                                    format!("the output `{n}` is not an input or a layer name"),
                                )
                                .label(span.clone(), "unknown name")
                                .help(
                                    // In the spec's order: ties resolve the same way every run.
                                    match did_you_mean(
                                        n,
                                        spec.inputs
                                            .iter()
                                            .map(|x| x.name.as_str())
                                            .chain(self.names.iter().map(String::as_str)),
                                    ) {
                                        Some(s) => format!("did you mean `{s}`?"),
                                        None => {
                                            let mut names: Vec<&str> =
                                                defs.keys().map(String::as_str).collect();
                                            names.sort_unstable();
                                            format!(
                                                "outputs name layers or inputs: {}",
                                                names.join(", ")
                                            )
                                        }
                                    },
                                ),
                            );
                        }
                    }
                }
                ok.then_some(out)
            }
        }
    }

    /// Warns about layers and inputs that no output depends on.
    fn unused(&mut self, outputs: &[Source], refs: &[Option<Vec<Source>>], inputs: &[Input]) {
        let mut live_layers = vec![false; refs.len()];
        let mut live_inputs = vec![false; inputs.len()];
        let mut stack: Vec<Source> = outputs.to_vec();
        while let Some(s) = stack.pop() {
            match s {
                Source::Input(i) => live_inputs[i] = true,
                Source::Layer(i) => {
                    if !live_layers[i] {
                        live_layers[i] = true;
                        stack.extend(refs[i].iter().flatten().copied());
                    }
                }
            }
        }
        // A layer whose references failed already has an error; do not pile on.
        if refs.iter().any(Option::is_none) {
            return;
        }
        for (i, live) in live_layers.iter().enumerate() {
            if !live {
                self.diags.push(
                    Diagnostic::warning(
                        "W0701",
                        format!("`{}` does not contribute to any output", self.names[i]),
                    )
                    .label(
                        self.spec.layers[i].type_span.clone(),
                        "its result is never used",
                    )
                    .help("use it as another layer's input, list it in `outputs`, or remove it"),
                );
            }
        }
        for (i, live) in live_inputs.iter().enumerate() {
            if !live {
                self.diags.push(
                    Diagnostic::warning(
                        "W0702",
                        format!("the input `{}` is not used by any output", inputs[i].name),
                    )
                    .label(inputs[i].span.clone(), "never used")
                    .help(format!(
                        "take it in a layer with `input: {}`, or remove it",
                        inputs[i].name
                    )),
                );
            }
        }
    }

    fn train(&mut self, t: &TrainDecl, g: &Graph) -> Option<Train> {
        let loss = t.loss.as_ref()?;
        let errors_before = self.diags.iter().filter(|d| d.is_error()).count();
        if t.targets_broken {
            // A target declaration is wrong and already reported.
            return None;
        }
        if t.targets.is_empty() {
            if t.targets_span.is_some() {
                // `targets:` is written but none of it parsed: already reported.
                return None;
            }
            let example = target_example(loss.kind, g.type_of(g.outputs[0]));
            self.diags.push(
                Diagnostic::error(
                    "E0608",
                    "`train` declares no `targets`: the labels the loss compares the output with",
                )
                .label(
                    loss.span.clone(),
                    "this loss has nothing to compare the output with",
                )
                .help(format!("for this model and loss: `targets: {example}`")),
            );
            return None;
        }
        let n_out = g.outputs.len();
        let mut targets = Vec::new();
        for (pos, d) in t.targets.iter().enumerate() {
            let out_idx = match &d.output {
                Some((n, span)) => match g.outputs.iter().position(|&s| g.name_of(s) == n) {
                    Some(k) => k,
                    None => {
                        let names: Vec<&str> = g.outputs.iter().map(|&s| g.name_of(s)).collect();
                        self.diags.push(
                            Diagnostic::error(
                                "E0612",
                                format!(
                                    "the target `{}` is for `{n}`, which is not a model output",
                                    d.name
                                ),
                            )
                            .label(span.clone(), "not an output")
                            .help(
                                match did_you_mean(n, names.iter().copied()) {
                                    Some(s) => format!(
                                        "did you mean `{s}`? the outputs are: {}",
                                        names.join(", ")
                                    ),
                                    None => format!("the outputs are: {}", names.join(", ")),
                                },
                            ),
                        );
                        continue;
                    }
                },
                None if t.targets.len() == n_out => pos,
                None => {
                    // Point at the first target without an output when there are too many.
                    let (span, label) = match t.targets.get(n_out) {
                        Some(extra) => {
                            (extra.name_span.clone(), "no output is left for this target")
                        }
                        None => (d.name_span.clone(), "which output is this for?"),
                    };
                    let mut diag = Diagnostic::error(
                        "E0611",
                        format!(
                            "the model has {n_out} output{}, but `train` declares {} targets",
                            if n_out == 1 { "" } else { "s" },
                            t.targets.len()
                        ),
                    )
                    .label(span, label);
                    for &o in &g.outputs {
                        let origin = match o {
                            Source::Input(i) => g.inputs[i].span.clone(),
                            Source::Layer(i) => g.layers[i].span.clone(),
                        };
                        diag = diag.secondary(origin, format!("output `{}`", g.name_of(o)));
                    }
                    self.diags.push(diag.help("declare one target per output, in the order of `outputs`, or say `output: NAME` in each target"));
                    return None;
                }
            };
            let out = g.outputs[out_idx];
            let ty = tensor_type(d);
            self.check_target(
                loss.kind,
                loss.args.bool("from_logits"),
                d,
                &ty,
                g,
                out,
                loss.span.clone(),
            );
            targets.push(Target {
                name: d.name.clone(),
                ty,
                output: out_idx,
            });
        }
        let errors_after = self.diags.iter().filter(|d| d.is_error()).count();
        if errors_after > errors_before {
            return None;
        }
        let metrics = t
            .metrics
            .iter()
            .map(|(m, _)| {
                let out = g.type_of(g.outputs[targets[0].output]);
                m.resolved(loss.kind, out, &targets[0].ty).name.to_string()
            })
            .collect();
        Some(Train {
            decl: t.clone(),
            targets,
            metrics,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn check_target(
        &mut self,
        kind: &LossKind,
        from_logits: bool,
        d: &TensorDecl,
        ty: &TensorType,
        g: &Graph,
        out: Source,
        loss_span: Range<usize>,
    ) {
        let oty = g.type_of(out).clone();
        let oname = g.name_of(out).to_string();
        let origin = match out {
            Source::Input(i) => g.inputs[i].span.clone(),
            Source::Layer(i) => g.layers[i].span.clone(),
        };
        let shape_ok = |want: &[Dim]| -> bool {
            ty.shape == want
                // Keras squeezes a trailing size-1 axis on either side.
                || (ty.rank() + 1 == want.len() && want.last().and_then(Dim::as_const) == Some(1) && ty.shape[..] == want[..want.len() - 1])
                || (ty.rank() == want.len() + 1 && ty.last().as_const() == Some(1) && ty.shape[..want.len()] == *want)
        };
        let loss = kind.name;
        let int_labels = kind.targets == Targets::SparseLabels;
        let want: Vec<Dim> = if int_labels {
            oty.shape[..oty.rank().saturating_sub(1)].to_vec()
        } else {
            oty.shape.clone()
        };
        if !shape_ok(&want) {
            let why = match kind.targets {
                Targets::SparseLabels => format!(
                    "`{loss}` takes one class index per example, so the target's shape is the output's without its class axis: {}",
                    fmt_shape(&want)
                ),
                Targets::Dense { .. } => format!(
                    "`{loss}` compares the target with the output element by element, so their shapes must be equal"
                ),
            };
            self.diags.push(
                Diagnostic::error(
                    "E0609",
                    format!(
                        "the target `{}` is {}, but `{loss}` on the output `{oname}` ({}) needs {}",
                        d.name,
                        fmt_shape(&ty.shape),
                        fmt_shape(&oty.shape),
                        fmt_shape(&want)
                    ),
                )
                .label(
                    d.shape_span.clone(),
                    format!("expected {}", fmt_shape(&want)),
                )
                .secondary(
                    origin.clone(),
                    format!("`{oname}` is {}", fmt_shape(&oty.shape)),
                )
                .secondary(loss_span.clone(), "this loss")
                .help(format!(
                    "{why}{}",
                    match kind.counterpart {
                        Some(c) if !int_labels && ty.rank() + 1 == oty.rank() =>
                            format!("; for integer class labels use `{}`", c.name),
                        Some(c) if int_labels && ty.rank() == oty.rank() =>
                            format!("; for one-hot targets use `{}`", c.name),
                        _ => String::new(),
                    }
                )),
            );
            return;
        }
        if int_labels && !ty.dtype.is_int() {
            self.diags.push(
                Diagnostic::error(
                    "E0610",
                    format!(
                        "`{loss}` takes integer class indices, but the target `{}` is f32",
                        d.name
                    ),
                )
                .label(d.shape_span.clone(), "declared f32 (the default)")
                .secondary(loss_span, "this loss")
                .help(format!(
                    "declare it as `{}: {{shape: {}, dtype: i32}}`",
                    d.name,
                    fmt_shape(&ty.shape)
                )),
            );
            return;
        }
        if kind.targets == (Targets::Dense { ints_ok: false }) && ty.dtype.is_int() {
            let help = match kind.counterpart {
                Some(c) => format!(
                    "integer labels need `{}`; `{loss}` takes one-hot f32 targets",
                    c.name
                ),
                None => "declare the target as f32".to_string(),
            };
            self.diags.push(
                Diagnostic::error(
                    "E0610",
                    format!(
                        "`{loss}` takes f32 targets, but `{}` is {}",
                        d.name,
                        ty.dtype.name()
                    ),
                )
                .label(d.shape_span.clone(), "integer target")
                .secondary(loss_span, "this loss")
                .help(help),
            );
            return;
        }
        // Logits vs probabilities: the mistakes Keras only warns about at run time.
        if let Source::Layer(i) = out {
            let act = output_activation(&g.layers[i]);
            let probs = matches!(act, "softmax" | "sigmoid");
            let ce = kind.cross_entropy;
            if ce && from_logits && probs {
                self.diags.push(
                    Diagnostic::warning(
                        "W0602",
                        format!(
                            "`{loss}` is told `from_logits: true`, but `{oname}` ends in a {act}"
                        ),
                    )
                    .label(loss_span, "expects raw scores (logits)")
                    .secondary(origin, format!("`{oname}` already outputs probabilities"))
                    .help(format!(
                        "remove the {act} from `{oname}`, or set `from_logits: false`"
                    )),
                );
            } else if ce && !from_logits && act == "linear" {
                self.diags.push(
                    Diagnostic::warning("W0603", format!("`{loss}` expects probabilities, but `{oname}` has no activation (it outputs logits)"))
                        .label(loss_span, "`from_logits` is false (Keras's default)")
                        .secondary(origin, format!("`{oname}` outputs unbounded scores"))
                        .help("set `from_logits: true` in the loss (recommended), or give the layer a softmax/sigmoid activation"),
                );
            }
        }
    }
}

/// The activation a layer ends with, for the logits/probabilities check.
fn output_activation(l: &Layer) -> &str {
    match l.kind.name {
        "softmax" | "sigmoid" => l.kind.name,
        "activation" => l.args.str("activation"),
        "dense" | "conv1d" | "conv2d" => l.args.str("activation"),
        _ => "other",
    }
}

fn tensor_type(d: &TensorDecl) -> TensorType {
    TensorType::new(d.shape.iter().map(|x| x.dim.clone()).collect(), d.dtype)
}

/// A `targets:` line that fits a loss and an output, for help texts.
fn target_example(loss: &LossKind, out: &TensorType) -> String {
    match loss.targets {
        Targets::SparseLabels => {
            format!(
                "{{label: {{shape: {}, dtype: i32}}}}",
                fmt_shape(&out.shape[..out.rank().saturating_sub(1)])
            )
        }
        _ => format!("{{target: {}}}", fmt_shape(&out.shape)),
    }
}
