//! One whole training step as a single function: forward in training mode, loss and
//! metrics, reverse-mode gradients, clipping, weight decay and the optimizer update,
//! batch-norm moving statistics included.

use super::{Mode, forward};
use crate::catalog::{optimizers, regularizers};
use crate::check::{Graph, Source};
use crate::ir::{Func, Id, Result, Type, autodiff, err};

/// Where each value of the training step lives: input names in declaration order and
/// output names, grouped by role.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub model_inputs: Vec<String>,
    pub targets: Vec<String>,
    /// Every parameter key in layer order; `trainable[i]` says whether it is trained.
    pub params: Vec<String>,
    pub trainable: Vec<bool>,
    /// Optimizer state keys: `optimizer/{param}/{slot}`.
    pub state: Vec<String>,
    /// Whether the step takes `sample_weight` (one weight per example) after the
    /// targets.
    pub sample_weight: bool,
    /// The logged names of the outputs' own losses (outputs `loss/NAME`), when the
    /// model has several.
    pub output_losses: Vec<String>,
    /// Metric names as logged; metric `i`'s state is the outputs `metric/NAME/0`, …,
    /// `metric/NAME/{metric_parts[i] - 1}` (see [`crate::catalog::metrics::Stat`]).
    pub metrics: Vec<String>,
    pub metric_parts: Vec<usize>,
    /// The number of values in each metric's state (all its outputs' elements).
    pub metric_sizes: Vec<usize>,
}

impl Layout {
    /// The step's inputs in order: model inputs, parameters, `rng_key`, targets (and
    /// `sample_weight`), optimizer state, `step`, `lr`. [`build`] declares them in
    /// this order and [`StepArgs`] assembles arguments in it; nothing else writes it
    /// down.
    pub fn input_names(&self) -> Vec<String> {
        let mut v = self.model_inputs.clone();
        v.extend(self.params.iter().cloned());
        v.push("rng_key".into());
        v.extend(self.targets.iter().cloned());
        if self.sample_weight {
            v.push(SAMPLE_WEIGHT.into());
        }
        v.extend(self.state.iter().cloned());
        v.push("step".into());
        v.push("lr".into());
        v
    }

    /// Checks that `f` (the compiled step) has exactly this layout's inputs, and finds
    /// the position of each output.
    pub fn bind(&self, f: &Func) -> Result<StepOutputs> {
        let want = self.input_names();
        let got: Vec<&str> = f.inputs.iter().map(|i| i.name.as_str()).collect();
        if got != want.iter().map(String::as_str).collect::<Vec<_>>() {
            return err(format!(
                "the training step's inputs are {got:?}, expected {want:?}"
            ));
        }
        let positions = output_positions(f);
        let out = |name: &str| -> Result<usize> {
            positions
                .get(name)
                .copied()
                .ok_or_else(|| crate::ir::IrError(format!("the training step has no `{name}`")))
        };
        let all = |keys: &[String], prefix: &str| -> Result<Vec<usize>> {
            keys.iter().map(|k| out(&format!("{prefix}{k}"))).collect()
        };
        Ok(StepOutputs {
            loss: out("loss")?,
            output_losses: all(&self.output_losses, "loss/")?,
            metrics: metric_outputs(&self.metrics, &self.metric_parts, out)?,
            new_params: all(&self.params, "new/")?,
            new_state: all(&self.state, "new/")?,
        })
    }
}

/// Where a compiled training step writes each result.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutputs {
    pub loss: usize,
    /// One per [`Layout::output_losses`].
    pub output_losses: Vec<usize>,
    /// One list of state outputs per [`Layout::metrics`].
    pub metrics: Vec<Vec<usize>>,
    /// One per [`Layout::params`].
    pub new_params: Vec<usize>,
    /// One per [`Layout::state`].
    pub new_state: Vec<usize>,
}

/// The arguments of one training step, in [`Layout::input_names`] order, with the
/// parameters and optimizer state reachable by role (they move in and come back).
pub struct StepArgs<T> {
    pub args: Vec<T>,
    params_at: usize,
    n_params: usize,
    state_at: usize,
    n_state: usize,
}

impl<T> StepArgs<T> {
    /// Assembles the arguments; `params` and `state` in the layout's order, `targets`
    /// followed by the sample weights when the layout takes them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inputs: Vec<T>,
        params: Vec<T>,
        rng_key: T,
        targets: Vec<T>,
        state: Vec<T>,
        step: T,
        lr: T,
    ) -> StepArgs<T> {
        let params_at = inputs.len();
        let n_params = params.len();
        let n_state = state.len();
        let mut args = inputs;
        args.extend(params);
        args.push(rng_key);
        args.extend(targets);
        let state_at = args.len();
        args.extend(state);
        args.push(step);
        args.push(lr);
        StepArgs {
            args,
            params_at,
            n_params,
            state_at,
            n_state,
        }
    }

    /// The parameters, in the layout's order.
    pub fn params_mut(&mut self) -> &mut [T] {
        &mut self.args[self.params_at..self.params_at + self.n_params]
    }

    /// The optimizer state, in the layout's order.
    pub fn state_mut(&mut self) -> &mut [T] {
        &mut self.args[self.state_at..self.state_at + self.n_state]
    }
}

/// The compiled-to-IR training step.
#[derive(Clone, Debug)]
pub struct TrainStep {
    pub func: Func,
    pub layout: Layout,
}

/// The name of the step's sample-weight input.
pub const SAMPLE_WEIGHT: &str = "sample_weight";

/// The positions of each metric's state outputs (`metric/NAME/i`).
pub(crate) fn metric_outputs(
    names: &[String],
    parts: &[usize],
    out: impl Fn(&str) -> Result<usize>,
) -> Result<Vec<Vec<usize>>> {
    names
        .iter()
        .zip(parts)
        .map(|(n, &p)| (0..p).map(|i| out(&format!("metric/{n}/{i}"))).collect())
        .collect()
}

/// What training computes from the outputs and targets: the loss (each output's loss
/// times its weight, summed, as Keras's `CompileLoss`), each output's own loss (logged
/// when there are several) and each metric's state for the batch.
pub(crate) struct Objective {
    pub total: Id,
    pub output_losses: Vec<(String, Id)>,
    pub metrics: Vec<(String, Vec<Id>)>,
    /// Whether `sample_weight` is an input.
    pub sample_weight: bool,
}

impl Objective {
    /// Declares the objective's values as the function's outputs (`loss`,
    /// `loss/NAME`, `metric/NAME/i`); returns the metric names, their numbers of
    /// outputs and their numbers of state values.
    pub(crate) fn output(&self, f: &mut Func) -> Result<(Vec<String>, Vec<usize>, Vec<usize>)> {
        f.output("loss", self.total);
        for (n, v) in &self.output_losses {
            f.output(&format!("loss/{n}"), *v);
        }
        let mut names = Vec::new();
        let mut parts = Vec::new();
        let mut sizes = Vec::new();
        for (m, ids) in &self.metrics {
            let mut size = 0;
            for (i, v) in ids.iter().enumerate() {
                f.output(&format!("metric/{m}/{i}"), *v);
                let n = crate::dim::product(&f.ty(*v).shape)
                    .ok()
                    .and_then(|d| d.as_const())
                    .ok_or_else(|| {
                        crate::ir::IrError(format!("metric `{m}` has a state of unknown size"))
                    })?;
                size += n as usize;
            }
            names.push(m.clone());
            parts.push(ids.len());
            sizes.push(size);
        }
        Ok((names, parts, sizes))
    }

    pub(crate) fn output_loss_names(&self) -> Vec<String> {
        self.output_losses.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// Declares the targets (and the sample weights) as inputs and replaces the forward
/// function's outputs with the [`Objective`]. Shared by the training step and the
/// evaluation function.
pub(crate) fn objective(
    lw: &mut super::Lower,
    graph: &Graph,
    train: &crate::check::Train,
) -> Result<Objective> {
    let mut targets = Vec::new();
    for t in &train.targets {
        targets.push(lw.f.input(&t.name, t.ty.clone()));
    }
    let weight = if train.weighted {
        let batch = train.targets[0].ty.shape[0].clone();
        Some(lw.f.input(SAMPLE_WEIGHT, Type::f32(vec![batch])))
    } else {
        None
    };
    let outputs: Vec<Id> = lw.f.outputs.iter().map(|(_, id)| *id).collect();
    lw.f.outputs.clear();
    let mut total = lw.f.scalar(0.0);
    let mut output_losses = Vec::new();
    for (k, t) in train.targets.iter().enumerate() {
        let out = outputs[t.output];
        // A masked output: Keras's apply_mask weights each valid step.
        let w = match lw.mask(lw.graph.outputs[t.output]) {
            Some(m) => loss_weights_with_mask(&mut lw.f, &t.loss, out, targets[k], m, weight)?,
            None => weight,
        };
        let l = t
            .loss
            .kind
            .lower_weighted(&mut lw.f, &t.loss.args, out, targets[k], w)?;
        if let Some(name) = train.output_loss_name(k, graph) {
            output_losses.push((name, l));
        }
        let l = match t.loss_weight {
            Some(w) => lw.f.mul_c(l, w)?,
            None => l,
        };
        total = lw.f.add(total, l)?;
    }
    let total = regularization(lw, total)?;
    let mut metrics = Vec::new();
    for m in &train.metrics {
        let t = &train.targets[m.target];
        let out = outputs[t.output];
        let mut w = if m.weighted { weight } else { None };
        // A masked output: Keras's metric wrappers weight each step by the mask.
        if let Some(mask) = lw.mask(lw.graph.outputs[t.output])
            && m.kind.takes_step_weights()
            && lw.f.ty(out).rank() > lw.f.ty(mask).rank()
        {
            w = Some(times_sample_weights(&mut lw.f, mask, w)?);
        }
        let state = m
            .kind
            .update(&mut lw.f, &m.args, out, targets[m.target], w)?;
        metrics.push((m.name.clone(), state));
    }
    Ok(Objective {
        total,
        output_losses,
        metrics,
        sample_weight: weight.is_some(),
    })
}

/// Adds Keras's `model.losses` to `total`: each layer's weight regularizers
/// (`kernel_regularizer` on its trainable `kernel`s, `recurrent_regularizer` on
/// `recurrent_kernel`, `embeddings_regularizer` on `embeddings`, …) and its activity
/// regularizer (on its output, divided by the batch size, as Keras's `Layer.__call__`),
/// and the same for the layers a wrapper holds (their weights under the wrapper's
/// prefix; the activity of those Keras calls itself).
fn regularization(lw: &mut super::Lower, mut total: Id) -> Result<Id> {
    let graph = lw.graph;
    for (i, l) in graph.layers.iter().enumerate() {
        let out = lw.value(Source::Layer(i));
        let mut scopes = vec![(l.kind, l.args.clone(), String::new(), Some(out))];
        while let Some((kind, args, prefix, output)) = scopes.pop() {
            let held = crate::layers::held_layers(kind, &args);
            let inner: Vec<String> = held
                .iter()
                .map(|h| format!("{prefix}{}/", h.prefix))
                .collect();
            let scope = Scope {
                layer: l,
                args: &args,
                prefix: &prefix,
                inner: &inner,
                output,
            };
            total = scope_penalties(lw, &scope, total)?;
            for h in held {
                let at = format!("{}/{prefix}{}", l.name, h.prefix);
                let output = (output.is_some() && h.called)
                    .then(|| lw.inner_outputs.iter().find(|(k, _)| *k == at).map(|p| p.1))
                    .flatten();
                scopes.push((h.kind, h.args, format!("{prefix}{}/", h.prefix), output));
            }
        }
    }
    Ok(total)
}

/// One layer's regularizer arguments, or those of a layer a wrapper holds.
struct Scope<'a> {
    layer: &'a crate::check::Layer,
    args: &'a crate::args::Args,
    /// Its parameters' prefix inside the graph layer's (`forward_lstm/`), and those of
    /// the layers it holds in turn (left to their own scopes).
    prefix: &'a str,
    inner: &'a [String],
    /// The value its activity regularizer applies to (none where Keras adds none).
    output: Option<Id>,
}

fn scope_penalties(lw: &mut super::Lower, s: &Scope, mut total: Id) -> Result<Id> {
    for (&arg, v) in s.args.iter() {
        if !arg.ends_with(regularizers::SUFFIX) {
            continue;
        }
        if arg == regularizers::ACTIVITY_ARG {
            let Some(y) = s.output else { continue };
            if let Some(mut term) = regularizers::penalty(&mut lw.f, v, y)? {
                if let Some(batch) = lw.f.ty(y).shape.first().cloned() {
                    let n = lw.f.dim_size(&batch);
                    term = lw.f.div(term, n)?;
                }
                total = lw.f.add(total, term)?;
            }
            continue;
        }
        for p in &s.layer.params {
            let ours = p.name.starts_with(s.prefix)
                && !s.inner.iter().any(|q| p.name.starts_with(q.as_str()));
            if !ours || !p.trainable || p.regularizer != arg {
                continue;
            }
            let w = lw.params[&format!("{}/{}", s.layer.name, p.name)];
            if let Some(term) = regularizers::penalty(&mut lw.f, v, w)? {
                total = lw.f.add(total, term)?;
            }
        }
    }
    Ok(total)
}

/// The loss weights of an output that carries a Keras mask: Keras's `apply_mask` (each
/// valid step weighted by steps / valid steps, so the loss is the mean over the valid
/// steps) times the sample weights. When the loss's values are not per step, the
/// sample weights alone.
fn loss_weights_with_mask(
    f: &mut Func,
    loss: &crate::spec::train::Named<crate::catalog::losses::LossKind>,
    pred: Id,
    target: Id,
    mask: Id,
    weight: Option<Id>,
) -> Result<Option<Id>> {
    let per_example = (loss.kind.per_example)(f, &loss.args, pred, target)?;
    if f.ty(per_example).shape != f.ty(mask).shape {
        return Ok(weight);
    }
    let mw = mask_weights(f, mask)?;
    times_sample_weights(f, mw, weight).map(Some)
}

/// Per-step weights `[batch, steps]` times the sample weights `[batch]`, if any.
fn times_sample_weights(f: &mut Func, step_weights: Id, weight: Option<Id>) -> Result<Id> {
    match weight {
        Some(w) => {
            let shape = f.ty(step_weights).shape.clone();
            let wb = f.broadcast(w, &shape, &[0])?;
            f.mul(step_weights, wb)
        }
        None => Ok(step_weights),
    }
}

/// Keras's `apply_mask` for a mean: `total / valid` where the mask is set, 0 elsewhere
/// (`divide_no_nan`: 0 when no step is valid).
fn mask_weights(f: &mut Func, mask: Id) -> Result<Id> {
    let shape = f.ty(mask).shape.clone();
    let axes: Vec<usize> = (0..shape.len()).collect();
    let valid = f.reduce(crate::ir::ReduceOp::Sum, mask, axes)?;
    let n = crate::dim::product(&shape).map_err(|_| crate::ir::IrError("size overflow".into()))?;
    let total = f.dim_size(&n);
    let zero = f.scalar(0.0);
    let none = f.cmp(crate::ir::Cmp::Eq, valid, zero)?;
    let one = f.scalar(1.0);
    let safe = f.select(none, one, valid)?;
    let w = f.div(total, safe)?;
    let w = f.select(none, zero, w)?;
    let set = f.cmp(crate::ir::Cmp::Ne, mask, zero)?;
    f.select(set, w, zero)
}

/// The `(input, output)` pairs of a training step whose output is the input's next
/// value (`KEY` → `new/KEY`): parameters, optimizer state and batch-norm statistics,
/// which the backend may update in place and a training loop feeds back.
pub fn carried(f: &crate::ir::Func) -> Vec<(usize, usize)> {
    let positions = output_positions(f);
    f.inputs
        .iter()
        .enumerate()
        .filter_map(|(i, inp)| {
            positions
                .get(format!("new/{}", inp.name).as_str())
                .map(|&o| (i, o))
        })
        .collect()
}

/// Each output name's first position (one lookup per name, not a scan: a step has an
/// output per parameter and optimizer slot).
fn output_positions(f: &crate::ir::Func) -> std::collections::HashMap<&str, usize> {
    let mut positions = std::collections::HashMap::new();
    for (o, (n, _)) in f.outputs.iter().enumerate() {
        positions.entry(n.as_str()).or_insert(o);
    }
    positions
}

/// Builds the training step of a checked graph with a `train` section.
///
/// Inputs: model inputs, params, `rng_key`, targets (and `sample_weight`), optimizer
/// state, `step` (iterations so far), `lr`. Outputs: `loss`, `loss/OUTPUT_loss`…,
/// `metric/NAME/i`…, `new/{param}` for every
/// parameter, `new/{state key}` for every state slot.
pub fn build(graph: &Graph) -> Result<TrainStep> {
    let Some(train) = &graph.train else {
        return err("the spec has no train section");
    };
    let mut lw = forward(graph, Mode::Train, "train_step")?;
    let obj = objective(&mut lw, graph, train)?;
    let total = obj.total;

    let opt = &train.decl.optimizer;
    let slots = (opt.kind.slots)(&opt.args);
    let mut state_keys = Vec::new();
    let mut state_ids = Vec::new();
    let mut trainable_flags = Vec::new();
    let mut trainable_ids = Vec::new();
    let mut trainable_keys = Vec::new();
    for l in &graph.layers {
        for p in &l.params {
            let key = format!("{}/{}", l.name, p.name);
            trainable_flags.push(p.trainable);
            if p.trainable {
                trainable_ids.push(lw.params[&key]);
                trainable_keys.push(key.clone());
                let ty = Type::f32(p.shape.iter().map(|&d| d.into()).collect());
                let mut ids = Vec::new();
                for s in &slots {
                    let sk = format!("optimizer/{key}/{s}");
                    ids.push(lw.f.input(&sk, ty.clone()));
                    state_keys.push(sk);
                }
                state_ids.push(ids);
            }
        }
    }
    let step = lw.f.input("step", Type::f32(vec![]));
    let lr = lw.f.input("lr", Type::f32(vec![]));

    let grads = autodiff::grad(&mut lw.f, total, &trainable_ids)?;
    let grads = optimizers::clip(&mut lw.f, &opt.args, &grads)?;
    let t = lw.f.add_c(step, 1.0)?;
    let mut new_params = std::collections::HashMap::new();
    let mut new_state = Vec::new();
    for (i, key) in trainable_keys.iter().enumerate() {
        let var = optimizers::Var {
            w: trainable_ids[i],
            g: grads[i],
            state: &state_ids[i],
            t,
            lr,
        };
        let (w, s) = opt.kind.update(&mut lw.f, &opt.args, var)?;
        new_params.insert(key.clone(), w);
        new_state.extend(s);
    }
    for (key, v) in lw.updates.clone() {
        new_params.insert(key, v);
    }

    let (metrics, metric_parts, metric_sizes) = obj.output(&mut lw.f)?;
    for key in &lw.param_order.clone() {
        let v = new_params.get(key).copied().unwrap_or(lw.params[key]);
        lw.f.output(&format!("new/{key}"), v);
    }
    for (k, v) in state_keys.iter().zip(new_state) {
        lw.f.output(&format!("new/{k}"), v);
    }
    let layout = Layout {
        model_inputs: graph.inputs.iter().map(|i| i.name.clone()).collect(),
        targets: train.targets.iter().map(|t| t.name.clone()).collect(),
        params: lw.param_order.clone(),
        trainable: trainable_flags,
        state: state_keys,
        sample_weight: obj.sample_weight,
        output_losses: obj.output_loss_names(),
        metrics,
        metric_parts,
        metric_sizes,
    };
    Ok(TrainStep {
        func: lw.cx.f,
        layout,
    })
}
