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
        let l = loss_decl
            .kind
            .lower(&mut lw.f, &loss_decl.args, outputs[t.output], targets[k])?;
        total = lw.f.add(total, l)?;
    }
    let mut metrics = Vec::new();
    for m in &train.metrics {
        let t = &train.targets[0];
        let kind =
            metrics::lookup(m).ok_or_else(|| crate::ir::IrError(format!("unknown metric {m}")))?;
        metrics.push((
            m.clone(),
            kind.lower(&mut lw.f, outputs[t.output], targets[0])?,
        ));
    }
    Ok((total, metrics))
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
    Ok(TrainStep { func: lw.f, layout })
}
