//! The training step in two functions, for data-parallel training (issue 12): `grad`
//! runs the forward pass in training mode, the loss, the metrics and the gradients of
//! one shard of a batch; `update` applies clipping, weight decay and the optimizer's
//! rule to gradients given as inputs. Between them the caller sums the gradients of
//! every shard, each weighted by its number of examples, so that the update sees the
//! gradient of the whole batch's mean loss. With one process the whole step stays one
//! function ([`super::train::build`]); this pair is what K > 1 processes compile.
//!
//! `grad`'s inputs are the whole step's up to the targets (model inputs, parameters,
//! `rng_key`, targets, `sample_weight`); its outputs `loss`, `loss/NAME`,
//! `metric/NAME/i` as the whole step's, `grad/{key}` for every trainable parameter,
//! and `new/{key}` for every parameter the forward pass updates itself (batch-norm's
//! moving statistics). `update`'s inputs are, per trainable parameter in order, the
//! parameter and `grad/{key}`, then the optimizer state, `step` and `lr`; its outputs
//! `new/{key}` and `new/{state key}`.

use super::train::{Layout, objective};
use super::{Mode, forward};
use crate::catalog::optimizers;
use crate::check::Graph;
use crate::ir::{Func, Result, Type, autodiff, err};

/// The two functions and where their values are.
#[derive(Clone, Debug)]
pub struct SplitStep {
    pub grad: Func,
    pub update: Func,
    /// The whole step's layout (inputs, metrics, parameters, optimizer state).
    pub layout: Layout,
    /// Trainable parameter keys: `grad`'s `grad/{key}` outputs and `update`'s
    /// parameters, in this order.
    pub trainable: Vec<String>,
    /// Parameters `grad` updates itself (`new/{key}`).
    pub updated: Vec<String>,
}

/// Builds the pair for `graph` (which has a `train` section).
pub fn build_split(graph: &Graph) -> Result<SplitStep> {
    let Some(train) = &graph.train else {
        return err("the spec has no train section");
    };
    let mut lw = forward(graph, Mode::Train, "grad_step")?;
    let obj = objective(&mut lw, graph, train)?;
    let mut trainable_flags = Vec::new();
    let mut trainable = Vec::new();
    let mut shapes = Vec::new();
    for l in &graph.layers {
        for p in &l.params {
            trainable_flags.push(p.trainable);
            if p.trainable {
                trainable.push(format!("{}/{}", l.name, p.name));
                shapes.push(Type::f32(p.shape.iter().map(|&d| d.into()).collect()));
            }
        }
    }
    let ids: Vec<_> = trainable.iter().map(|k| lw.params[k]).collect();
    let grads = autodiff::grad(&mut lw.f, obj.total, &ids)?;
    let (metrics, metric_parts, metric_sizes) = obj.output(&mut lw.f)?;
    for (k, g) in trainable.iter().zip(&grads) {
        lw.f.output(&format!("grad/{k}"), *g);
    }
    let mut updated = Vec::new();
    for (key, v) in lw.updates.clone() {
        lw.f.output(&format!("new/{key}"), v);
        updated.push(key);
    }

    let opt = &train.decl.optimizer;
    let slots = (opt.kind.slots)(&opt.args);
    let mut u = Func::new("update_step");
    let mut ws = Vec::new();
    let mut gs = Vec::new();
    for (k, ty) in trainable.iter().zip(&shapes) {
        ws.push(u.input(k, ty.clone()));
        gs.push(u.input(&format!("grad/{k}"), ty.clone()));
    }
    let mut state_keys = Vec::new();
    let mut state_ids = Vec::new();
    for (k, ty) in trainable.iter().zip(&shapes) {
        let mut v = Vec::new();
        for s in &slots {
            let sk = format!("optimizer/{k}/{s}");
            v.push(u.input(&sk, ty.clone()));
            state_keys.push(sk);
        }
        state_ids.push(v);
    }
    let step = u.input("step", Type::f32(vec![]));
    let lr = u.input("lr", Type::f32(vec![]));
    let gs = optimizers::clip(&mut u, &opt.args, &gs)?;
    let t = u.add_c(step, 1.0)?;
    let mut new_state = Vec::new();
    for (i, k) in trainable.iter().enumerate() {
        let var = optimizers::Var {
            w: ws[i],
            g: gs[i],
            state: &state_ids[i],
            t,
            lr,
        };
        let (w, s) = opt.kind.update(&mut u, &opt.args, var)?;
        u.output(&format!("new/{k}"), w);
        new_state.extend(s);
    }
    for (k, v) in state_keys.iter().zip(new_state) {
        u.output(&format!("new/{k}"), v);
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
    Ok(SplitStep {
        grad: lw.cx.f,
        update: u,
        layout,
        trainable,
        updated,
    })
}
