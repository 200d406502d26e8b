//! The training step in two halves on a [`Net`], for data-parallel training (issue
//! 12): each process computes the gradients of its shard of a batch
//! ([`SplitStep::gradients`]), the processes sum them (one contiguous buffer, each
//! shard's gradient weighted by its number of examples), and every process applies
//! the sum ([`SplitStep::apply`]) — clipping, weight decay and the optimizer's rule
//! then see the gradient of the whole batch's mean loss, as one process training on
//! the whole batch does. The optimizer state's keys are the whole step's, so a
//! checkpoint moves between the two.

use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD};

use super::step::StepOutput;
use super::{Net, scalar, scalar_array};
use crate::error::Error;
use crate::lower;
use crate::runtime::{self, Kernel};

/// The two compiled halves of a model's training step.
pub struct SplitStep {
    grad: Arc<dyn Kernel>,
    update: Arc<dyn Kernel>,
    meta: lower::split::SplitStep,
}

/// What one shard of a batch computed.
#[derive(Clone, Debug)]
pub struct ShardGradients {
    /// The shard's loss and metrics (their states sum over shards as over batches).
    pub output: StepOutput,
    /// The gradient of the shard's mean loss times its number of examples, every
    /// trainable parameter's one after another in the layout's order: one buffer, so
    /// that shards are summed with one reduction.
    pub grads: Vec<f32>,
    /// The shard's examples.
    pub examples: usize,
    /// The new values of the parameters the forward pass updates (batch-norm's moving
    /// statistics), one after another; processes average them.
    pub updated: Vec<f32>,
}

fn position(k: &dyn Kernel, name: &str) -> Result<usize, Error> {
    k.func()
        .outputs
        .iter()
        .position(|(n, _)| n == name)
        .ok_or_else(|| Error::internal(format!("the split step has no `{name}`")))
}

impl SplitStep {
    /// Compiles the two halves of `net`'s training step.
    pub fn new(net: &Net) -> Result<SplitStep, Error> {
        let meta = lower::split::build_split(&net.graph)?;
        let grad = runtime::compile(&meta.grad, net.backend)?;
        let update = runtime::compile(&meta.update, net.backend)?;
        Ok(SplitStep { grad, update, meta })
    }

    /// The lengths of [`ShardGradients::grads`] and [`ShardGradients::updated`] for
    /// `net` (what a process with no examples in a batch contributes: zeros).
    pub fn buffer_lens(&self, net: &Net) -> (usize, usize) {
        let len = |keys: &[String]| {
            keys.iter()
                .filter_map(|k| net.weights.get(k))
                .map(|w| w.len())
                .sum()
        };
        (len(&self.meta.trainable), len(&self.meta.updated))
    }

    /// The gradient half on one shard: `inputs` and `targets` in the model's order,
    /// each example's weight when the spec takes them, dropout's key.
    pub fn gradients(
        &self,
        net: &Net,
        inputs: &[ArrayD<f32>],
        targets: &[ArrayD<f32>],
        sample_weight: Option<&ArrayD<f32>>,
        rng_key: f32,
    ) -> Result<ShardGradients, Error> {
        let l = &self.meta.layout;
        let examples = inputs
            .first()
            .map_or(0, |a| a.shape().first().copied().unwrap_or(0));
        let key = scalar_array(rng_key);
        let ones = ArrayD::ones(ndarray::IxDyn(&[examples]));
        let mut args: Vec<ArrayViewD<f32>> = inputs.iter().map(|a| a.view()).collect();
        for k in &l.params {
            let w = net
                .weights
                .get(k)
                .ok_or_else(|| Error::internal(format!("no weight `{k}`")))?;
            args.push(w.view());
        }
        args.push(key.view());
        args.extend(targets.iter().map(|a| a.view()));
        match (l.sample_weight, sample_weight) {
            (true, w) => args.push(w.unwrap_or(&ones).view()),
            (false, Some(_)) => {
                return Err(Error::Invalid(
                    "sample weights were given, but the spec sets neither `sample_weight` nor `class_weight`".into(),
                ));
            }
            (false, None) => {}
        }
        let outs = self.grad.run(&args)?;
        let k = self.grad.as_ref();
        let value = |name: &str| position(k, name).map(|i| scalar(&outs[i]));
        let mut metric_states = Vec::new();
        for (m, &parts) in l.metrics.iter().zip(&l.metric_parts) {
            let mut s = Vec::new();
            for i in 0..parts {
                let at = position(k, &format!("metric/{m}/{i}"))?;
                s.extend(outs[at].iter().copied());
            }
            metric_states.push(s);
        }
        let mut output = StepOutput {
            loss: value("loss")?,
            metrics: Vec::new(),
            output_losses: l
                .output_losses
                .iter()
                .map(|n| value(&format!("loss/{n}")))
                .collect::<Result<_, _>>()?,
            metric_states,
        };
        output.metrics = net.metric_values(&output.metric_states);
        let mut grads = Vec::new();
        for key in &self.meta.trainable {
            let g = &outs[position(k, &format!("grad/{key}"))?];
            grads.extend(g.iter().map(|v| v * examples as f32));
        }
        let mut updated = Vec::new();
        for key in &self.meta.updated {
            updated.extend(outs[position(k, &format!("new/{key}"))?].iter().copied());
        }
        Ok(ShardGradients {
            output,
            grads,
            examples,
            updated,
        })
    }

    /// Applies the summed gradients of a batch of `examples` examples (the sum of
    /// every shard's [`ShardGradients::grads`]) and the parameters the forward pass
    /// updates (`updated`, averaged over the shards), at learning rate `lr`. The step
    /// counter advances by one.
    pub fn apply(
        &self,
        net: &mut Net,
        grads: &[f32],
        examples: usize,
        updated: &[f32],
        lr: f32,
    ) -> Result<(), Error> {
        let l = &self.meta.layout;
        net.ensure_slots(&l.state)?;
        let scale = 1.0 / examples.max(1) as f32;
        let mut owned: Vec<ArrayD<f32>> = Vec::new();
        let mut at = 0;
        for key in &self.meta.trainable {
            let w = net
                .weights
                .get(key)
                .ok_or_else(|| Error::internal(format!("no weight `{key}`")))?;
            let n = w.len();
            let g = grads
                .get(at..at + n)
                .ok_or_else(|| Error::internal("the gradient buffer is too short"))?;
            at += n;
            let g = ArrayD::from_shape_vec(w.raw_dim(), g.iter().map(|v| v * scale).collect())
                .map_err(|e| Error::internal(e.to_string()))?;
            owned.push(w.clone());
            owned.push(g);
        }
        for k in &l.state {
            let s = net
                .opt
                .slots
                .get(k)
                .ok_or_else(|| Error::internal(format!("no optimizer state `{k}`")))?;
            owned.push(s.clone());
        }
        owned.push(scalar_array(net.opt.step as f32));
        owned.push(scalar_array(lr));
        let args: Vec<ArrayViewD<f32>> = owned.iter().map(|a| a.view()).collect();
        let mut outs = self.update.run(&args)?;
        let u = self.update.as_ref();
        for key in &self.meta.trainable {
            let i = position(u, &format!("new/{key}"))?;
            net.weights
                .insert(key.clone(), std::mem::take(&mut outs[i]));
        }
        for k in &l.state {
            let i = position(u, &format!("new/{k}"))?;
            net.opt
                .slots
                .insert(k.clone(), std::mem::take(&mut outs[i]));
        }
        let mut at = 0;
        for key in &self.meta.updated {
            if let Some(w) = net.weights.get_mut(key) {
                let n = w.len();
                let v = updated
                    .get(at..at + n)
                    .ok_or_else(|| Error::internal("the updated-parameter buffer is too short"))?;
                w.iter_mut().zip(v).for_each(|(a, b)| *a = *b);
                at += n;
            }
        }
        net.opt.step += 1;
        Ok(())
    }
}
