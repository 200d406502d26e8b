//! One whole training step as a single function: forward in training mode, loss and
//! metrics, reverse-mode gradients, clipping, weight decay and the optimizer update,
//! batch-norm moving statistics included.

use super::{Mode, forward};
use crate::catalog::{metrics, optimizers};
use crate::check::Graph;
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
    /// Metric names (outputs `metric/NAME`).
    pub metrics: Vec<String>,
}

impl Layout {
    /// The step's inputs in order: model inputs, parameters, `rng_key`, targets,
    /// optimizer state, `step`, `lr`. [`build`] declares them in this order and
    /// [`StepArgs`] assembles arguments in it; nothing else writes it down.
    pub fn input_names(&self) -> Vec<String> {
        let mut v = self.model_inputs.clone();
        v.extend(self.params.iter().cloned());
        v.push("rng_key".into());
        v.extend(self.targets.iter().cloned());
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
        let out = |name: &str| -> Result<usize> {
            f.outputs
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| crate::ir::IrError(format!("the training step has no `{name}`")))
        };
        let all = |keys: &[String], prefix: &str| -> Result<Vec<usize>> {
            keys.iter().map(|k| out(&format!("{prefix}{k}"))).collect()
        };
        Ok(StepOutputs {
            loss: out("loss")?,
            metrics: all(&self.metrics, "metric/")?,
            new_params: all(&self.params, "new/")?,
            new_state: all(&self.state, "new/")?,
        })
    }
}

/// Where a compiled training step writes each result.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutputs {
    pub loss: usize,
    /// One per [`Layout::metrics`].
    pub metrics: Vec<usize>,
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
    /// Assembles the arguments; `params` and `state` in the layout's order.
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

/// Declares the targets as inputs and replaces the forward function's outputs with the
/// loss (summed over outputs, as Keras sums multi-output losses) and the metrics.
/// Shared by the training step and the evaluation function.
pub(crate) fn objective(
    lw: &mut super::Lower,
    train: &crate::check::Train,
) -> Result<(Id, Vec<(String, Id)>)> {
    let loss_decl = train
        .decl
        .loss
        .as_ref()
        .ok_or_else(|| crate::ir::IrError("no loss".into()))?;
    let mut targets = Vec::new();
    for t in &train.targets {
        targets.push(lw.f.input(&t.name, t.ty.clone()));
    }
    let outputs: Vec<Id> = lw.f.outputs.iter().map(|(_, id)| *id).collect();
    lw.f.outputs.clear();
    let mut total = lw.f.scalar(0.0);
    for (k, t) in train.targets.iter().enumerate() {
        let mask = lw.mask(lw.graph.outputs[t.output]);
        let l = match mask {
            Some(m) => masked_loss(&mut lw.f, loss_decl, outputs[t.output], targets[k], m)?,
            None => {
                loss_decl
                    .kind
                    .lower(&mut lw.f, &loss_decl.args, outputs[t.output], targets[k])?
            }
        };
        total = lw.f.add(total, l)?;
    }
    let mut metrics = Vec::new();
    for m in &train.metrics {
        let t = &train.targets[0];
        let kind =
            metrics::lookup(m).ok_or_else(|| crate::ir::IrError(format!("unknown metric {m}")))?;
        let value = match lw.mask(lw.graph.outputs[t.output]) {
            Some(mask) => masked_metric(&mut lw.f, kind, outputs[t.output], targets[0], mask)?,
            None => kind.lower(&mut lw.f, outputs[t.output], targets[0])?,
        };
        metrics.push((m.clone(), value));
    }
    Ok((total, metrics))
}

/// A loss on an output that carries a Keras mask (`[batch, steps]`): Keras weights each
/// step's loss by `total / valid` where valid and 0 where masked, then takes the mean
/// over all steps, so the loss is the mean over the valid steps (0 when none is). When
/// the per-example values are not per step, the mask does not apply (plain mean).
fn masked_loss(
    f: &mut Func,
    loss: &crate::spec::train::Named<crate::catalog::losses::LossKind>,
    pred: Id,
    target: Id,
    mask: Id,
) -> Result<Id> {
    let per_example = (loss.kind.per_example)(f, &loss.args, pred, target)?;
    if f.ty(per_example).shape != f.ty(mask).shape {
        return loss.kind.lower(f, &loss.args, pred, target);
    }
    let weights = mask_weights(f, mask)?;
    let weighted = f.mul(per_example, weights)?;
    let axes: Vec<usize> = (0..f.ty(weighted).rank()).collect();
    let sum = f.reduce(crate::ir::ReduceOp::Sum, weighted, axes)?;
    let shape = f.ty(mask).shape.clone();
    let n = crate::dim::product(&shape).map_err(|_| crate::ir::IrError("size overflow".into()))?;
    let total = f.dim_size(&n);
    f.div(sum, total)
}

/// A metric on an output that carries a Keras mask: Keras weights each step's value by
/// the mask, so the metric is the mean over the valid steps (0 when none is); per-example
/// values that are not per step take the plain mean.
fn masked_metric(
    f: &mut Func,
    kind: &crate::catalog::metrics::MetricKind,
    pred: Id,
    target: Id,
    mask: Id,
) -> Result<Id> {
    let mut v = (kind.per_example)(f, pred, target)?;
    let steps = f.ty(mask).shape.clone();
    let shape = f.ty(v).shape.clone();
    if shape.len() > steps.len() && shape[..steps.len()] == steps[..] {
        // Elementwise values (mae, mse): Keras's metric functions average the last axis.
        let extra: Vec<usize> = (steps.len()..shape.len()).collect();
        let n = crate::dim::product(&shape[steps.len()..])
            .map_err(|_| crate::ir::IrError("size overflow".into()))?;
        let s = f.reduce(crate::ir::ReduceOp::Sum, v, extra)?;
        let n = f.dim_size(&n);
        v = f.div(s, n)?;
    }
    if f.ty(v).shape != steps {
        return kind.lower(f, pred, target);
    }
    let weighted = f.mul(v, mask)?;
    let axes: Vec<usize> = (0..f.ty(mask).rank()).collect();
    let sum = f.reduce(crate::ir::ReduceOp::Sum, weighted, axes.clone())?;
    let count = f.reduce(crate::ir::ReduceOp::Sum, mask, axes)?;
    let zero = f.scalar(0.0);
    let none = f.cmp(crate::ir::Cmp::Eq, count, zero)?;
    let one = f.scalar(1.0);
    let safe = f.select(none, one, count)?;
    let mean = f.div(sum, safe)?;
    f.select(none, zero, mean)
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
    f.inputs
        .iter()
        .enumerate()
        .filter_map(|(i, inp)| {
            let name = format!("new/{}", inp.name);
            f.outputs
                .iter()
                .position(|(n, _)| *n == name)
                .map(|o| (i, o))
        })
        .collect()
}

/// Builds the training step of a checked graph with a `train` section.
///
/// Inputs: model inputs, params, `rng_key`, targets, optimizer state, `step`
/// (iterations so far), `lr`. Outputs: `loss`, `metric/NAME`…, `new/{param}` for every
/// parameter, `new/{state key}` for every state slot.
pub fn build(graph: &Graph) -> Result<TrainStep> {
    let Some(train) = &graph.train else {
        return err("the spec has no train section");
    };
    let mut lw = forward(graph, Mode::Train, "train_step")?;
    let (total, metric_vals) = objective(&mut lw, train)?;

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

    lw.f.output("loss", total);
    for (m, v) in &metric_vals {
        lw.f.output(&format!("metric/{m}"), *v);
    }
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
        metrics: train.metrics.clone(),
    };
    Ok(TrainStep {
        func: lw.cx.f,
        layout,
    })
}
