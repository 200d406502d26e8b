//! References: the inputs each layer takes (named, or the previous layer), how many
//! it may take, references to later layers and cycles, the model's outputs, and the
//! layers and inputs no output depends on.

use std::collections::HashMap;
use std::ops::Range;

use super::{Checker, Def, Input, Source};
use crate::args::{ArgKind, Args};
use crate::diag::{Diagnostic, did_you_mean};
use crate::layers::{Arity, LayerKind};
use crate::spec::{LayerDecl, Ref};

/// Each layer's output parts ([`crate::layers::Facts::parts`]; empty: one output).
pub(super) type Parts = [&'static [&'static str]];

/// What a reference names, when it is not a plain definition's name.
enum Miss {
    /// No input or layer by that name: the caller reports it.
    Unknown,
    /// Reported here (E0709): a layer with several outputs named bare, or a part it
    /// does not have.
    Reported,
}

impl Checker<'_> {
    /// Resolves each layer's inputs; `None` for a layer whose references are wrong.
    pub(super) fn references(
        &mut self,
        kinds: &[Option<&'static LayerKind>],
        args: &[Option<Args>],
        defs: &HashMap<String, Def>,
        parts: &Parts,
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
                    .filter_map(|(n, _)| defs.get(base_name(n))?.source.layer())
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
                Some(names) => self.named_inputs(i, names, defs, parts, &explicit),
                None => self.implicit_input(i, l, parts),
            };
            let resolved = resolved.and_then(|srcs| self.arity(kinds[i]?, l, srcs));
            let resolved = resolved.and_then(|mut srcs| {
                // Arguments that are wrong are reported already; their tensors are not
                // taken.
                if let (Some(k), Some(a)) = (kinds[i], &args[i]) {
                    srcs.extend(self.tensor_args(i, k, a, defs, parts, &explicit)?);
                }
                Some(srcs)
            });
            out.push(resolved);
        }
        out
    }

    /// The inputs layer `i` names with `input:`/`inputs:`; unknown names, inputs whose
    /// declaration is wrong and layers not defined yet make it `None`.
    fn named_inputs(
        &mut self,
        i: usize,
        names: &[Ref],
        defs: &HashMap<String, Def>,
        parts: &Parts,
        explicit: &[Vec<usize>],
    ) -> Option<Vec<Source>> {
        let mut srcs = Vec::new();
        let mut ok = true;
        for (n, span) in names {
            if self.full() {
                ok = false;
                break;
            }
            match self.resolve(n, span, defs, parts) {
                // An input whose declaration is wrong: already reported.
                Err(Miss::Unknown) if self.spec.broken_inputs.contains(n) => ok = false,
                Err(Miss::Unknown) => {
                    ok = false;
                    self.unknown_input(i, n, span);
                }
                Err(Miss::Reported) => ok = false,
                Ok((s, d)) => match s.layer() {
                    Some(j) if j >= i => {
                        ok = false;
                        self.forward_ref(i, j, n, span, d, explicit);
                    }
                    _ => srcs.push(s),
                },
            }
        }
        ok.then_some(srcs)
    }

    /// The inputs layer `i` takes through tensor arguments ([`ArgKind::Tensor`]), in
    /// its schema's order, resolved like `inputs:`.
    fn tensor_args(
        &mut self,
        i: usize,
        kind: &LayerKind,
        args: &Args,
        defs: &HashMap<String, Def>,
        parts: &Parts,
        explicit: &[Vec<usize>],
    ) -> Option<Vec<Source>> {
        let named: Vec<Ref> = kind
            .args
            .iter()
            .filter(|a| matches!(a.kind, ArgKind::Tensor))
            .filter_map(|a| Some((args.opt_str(a.name)?.to_string(), args.span(a.name)?)))
            .collect();
        self.named_inputs(i, &named, defs, parts, explicit)
    }

    /// E0703: layer `i` names something that is neither an input nor a layer.
    fn unknown_input(&mut self, i: usize, n: &str, span: &Range<usize>) {
        let spec = self.spec;
        // In the spec's order, so that ties resolve the same way every run (a HashMap's
        // order changes from run to run).
        let known = spec.inputs.iter().map(|x| x.name.as_str());
        let known = known.chain(self.names.iter().map(String::as_str));
        let help = match did_you_mean(n, known) {
            Some(s) => format!("did you mean `{s}`?"),
            None => {
                let mut avail: Vec<&str> = spec.inputs.iter().map(|x| x.name.as_str()).collect();
                avail.extend(self.names[..i].iter().map(String::as_str));
                format!("available here: {}", avail.join(", "))
            }
        };
        self.diags.push(
            Diagnostic::error("E0703", format!("`{n}` is not an input or a layer name"))
                .label(span.clone(), "unknown name")
                .help(help),
        );
    }

    /// The input of layer `i` when it names none: the previous layer, or for the first
    /// layer the model's only input (E0708 when there are several).
    fn implicit_input(&mut self, i: usize, l: &LayerDecl, parts: &Parts) -> Option<Vec<Source>> {
        let spec = self.spec;
        if i > 0 && !parts[i - 1].is_empty() {
            let prev = &self.names[i - 1];
            let d = Diagnostic::error(
                "E0709",
                format!(
                    "`{}` takes the layer before it, `{prev}`, which has several outputs",
                    self.names[i]
                ),
            )
            .label(l.type_span.clone(), "takes which output?")
            .secondary(
                spec.layers[i - 1].type_span.clone(),
                outputs_label(prev, parts[i - 1]),
            );
            self.diags.push(d.help(pick_help(true, prev, parts[i - 1])));
            return None;
        }
        if i > 0 {
            return Some(vec![Source::Layer(i - 1)]);
        }
        // Inputs whose declarations are wrong count, but cannot be taken.
        match spec.inputs.len() + spec.broken_inputs.len() {
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
        }
    }

    /// The inputs if their number fits the layer kind's arity; E0706 if not.
    fn arity(&mut self, kind: &LayerKind, l: &LayerDecl, srcs: Vec<Source>) -> Option<Vec<Source>> {
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
    }

    /// Layer `i` takes layer `j` (`n`), defined at or after it: a cycle (E0705) if `j`
    /// reaches back to `i` through explicit references, otherwise a use before its
    /// definition (E0704).
    fn forward_ref(
        &mut self,
        i: usize,
        j: usize,
        n: &str,
        span: &Range<usize>,
        d: &Def,
        explicit: &[Vec<usize>],
    ) {
        if let Some(c) = find_cycle(i, j, explicit) {
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

    /// The model's outputs: the last layer, or the names listed in `outputs:` (E0707
    /// for one listed twice or unknown).
    /// The last layer's outputs are all the model's when it has several, as in Keras.
    pub(super) fn outputs(
        &mut self,
        defs: &HashMap<String, Def>,
        parts: &Parts,
    ) -> Option<Vec<Source>> {
        let spec = self.spec;
        let Some(names) = &spec.outputs else {
            let n = spec.layers.len();
            return match n.checked_sub(1).map(|j| (j, parts[j].len())) {
                None => None,
                Some((j, 0)) => Some(vec![Source::Layer(j)]),
                Some((j, k)) => Some((0..k).map(|p| Source::Part(j, p)).collect()),
            };
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (n, span) in names {
            if self.full() {
                return None;
            }
            match self.resolve(n, span, defs, parts) {
                Ok((source, _)) => {
                    if out.contains(&source) {
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
                    out.push(source)
                }
                Err(Miss::Reported) => ok = false,
                Err(Miss::Unknown) => {
                    ok = false;
                    self.unknown_output(n, span, defs);
                }
            }
        }
        ok.then_some(out)
    }

    /// E0707: `outputs:` lists a name that is neither an input nor a layer.
    fn unknown_output(&mut self, n: &str, span: &Range<usize>, defs: &HashMap<String, Def>) {
        // In the spec's order: ties resolve the same way every run.
        let known = self.spec.inputs.iter().map(|x| x.name.as_str());
        let known = known.chain(self.names.iter().map(String::as_str));
        let help = match did_you_mean(n, known) {
            Some(s) => format!("did you mean `{s}`?"),
            None => {
                let mut names: Vec<&str> = defs.keys().map(String::as_str).collect();
                names.sort_unstable();
                format!("outputs name layers or inputs: {}", names.join(", "))
            }
        };
        self.diags.push(
            Diagnostic::error(
                "E0707",
                format!("the output `{n}` is not an input or a layer name"),
            )
            .label(span.clone(), "unknown name")
            .help(help),
        );
    }

    /// Warns about layers and inputs that no output depends on.
    pub(super) fn unused(
        &mut self,
        outputs: &[Source],
        refs: &[Option<Vec<Source>>],
        inputs: &[Input],
    ) {
        let mut live_layers = vec![false; refs.len()];
        let mut live_inputs = vec![false; inputs.len()];
        let mut stack: Vec<Source> = outputs.to_vec();
        while let Some(s) = stack.pop() {
            match s {
                Source::Input(i) => live_inputs[i] = true,
                Source::Layer(i) | Source::Part(i, _) => {
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
}

impl Checker<'_> {
    /// Resolves a reference: the name of an input or a layer with one output, or
    /// `LAYER.PART` (`bi.backward`, or by position `bi.1`) for one output of a layer
    /// with several. The definition returned is the layer's.
    fn resolve<'d>(
        &mut self,
        n: &str,
        span: &Range<usize>,
        defs: &'d HashMap<String, Def>,
        parts: &Parts,
    ) -> Result<(Source, &'d Def), Miss> {
        let (base, part) = match n.split_once('.') {
            Some((b, p)) => (b, Some(p)),
            None => (n, None),
        };
        let d = defs.get(base).ok_or(Miss::Unknown)?;
        let names: &[&str] = d.source.layer().map_or(&[], |j| parts[j]);
        let d_part = match part {
            None if names.is_empty() => return Ok((d.source, d)),
            None => Err(format!(
                "`{base}` has several outputs; a reference picks one of them"
            )),
            Some(_) if names.is_empty() => Err(format!(
                "`{base}` has one output, so `{n}` names no output of it"
            )),
            Some(p) => names
                .iter()
                .position(|x| *x == p)
                .or_else(|| p.parse::<usize>().ok().filter(|&k| k < names.len()))
                .ok_or_else(|| format!("`{base}` has no output `{p}`")),
        };
        match (d_part, d.source.layer()) {
            (Ok(k), Some(j)) => Ok((Source::Part(j, k), d)),
            // Only a layer has parts.
            (Ok(_), None) => Err(Miss::Unknown),
            (Err(message), _) => {
                let label = if names.is_empty() {
                    format!("`{base}` is defined here")
                } else {
                    outputs_label(base, names)
                };
                let help = if names.is_empty() {
                    format!("write `{base}`")
                } else {
                    pick_help(false, base, names)
                };
                self.diags.push(
                    Diagnostic::error("E0709", message)
                        .label(span.clone(), "which output?")
                        .secondary(d.span.clone(), label)
                        .help(help),
                );
                Err(Miss::Reported)
            }
        }
    }
}

/// The name a reference starts with: `bi` of `bi.backward`.
fn base_name(n: &str) -> &str {
    n.split_once('.').map_or(n, |(b, _)| b)
}

/// "`bi` returns `bi.forward` and `bi.backward`".
fn outputs_label(layer: &str, parts: &[&str]) -> String {
    let list: Vec<String> = parts.iter().map(|p| format!("`{layer}.{p}`")).collect();
    format!("`{layer}` returns {}", list.join(" and "))
}

/// How to pick one of a layer's outputs: by name or by position.
fn pick_help(implicit: bool, layer: &str, parts: &[&str]) -> String {
    let by_name: Vec<String> = parts.iter().map(|p| format!("`{layer}.{p}`")).collect();
    let by_pos: Vec<String> = (0..parts.len()).map(|k| format!("`{layer}.{k}`")).collect();
    let what = if implicit {
        "name the output this layer takes with `input:`"
    } else {
        "name one output"
    };
    format!(
        "{what}: {} (or by position, {}); a merge such as `concatenate` can take several",
        by_name.join(", "),
        by_pos.join(", ")
    )
}

/// A path of explicit references from layer `j` back to layer `i`, as the cycle
/// `i, j, …, i`; `None` if there is none. Iterative and linear in the references.
fn find_cycle(i: usize, j: usize, explicit: &[Vec<usize>]) -> Option<Vec<usize>> {
    if j == i {
        return Some(vec![i, i]);
    }
    let mut path = vec![j];
    let mut stack = vec![(j, 0usize)];
    let mut seen = vec![false; explicit.len()];
    while let Some((node, k)) = stack.pop() {
        path.truncate(stack.len() + 1);
        if k < explicit[node].len() {
            stack.push((node, k + 1));
            let next = explicit[node][k];
            if next == i {
                let mut p = vec![i];
                p.extend(path.iter().copied());
                p.push(i);
                return Some(p);
            }
            if !seen[next] {
                seen[next] = true;
                path.push(next);
                stack.push((next, 0));
            }
        }
    }
    None
}
