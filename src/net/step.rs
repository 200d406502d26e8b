//! A compiled model's training step and evaluation function: compiled on first use,
//! run with the arguments laid out by [`lower::train::StepArgs`], with the optimizer's
//! state owned by the [`Net`].

use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD};

use super::{Logs, Net, Tally, scalar, scalar_array};
use crate::args::Value;
use crate::catalog::schedules;
use crate::data::Dataset;
use crate::error::Error;
use crate::lower::{self, train::StepArgs, train::StepOutputs};
use crate::runtime::{self, Kernel};
use crate::settings;
use crate::weights::Weights;

/// The compiled training step with the positions of its outputs.
pub(super) struct TrainKernel {
    pub kernel: Arc<dyn Kernel>,
    pub layout: lower::train::Layout,
    pub outputs: StepOutputs,
}

/// The compiled evaluation function (inference-mode forward + loss + metrics).
pub(super) struct EvalKernel {
    pub kernel: Arc<dyn Kernel>,
    pub loss: usize,
    pub output_losses: Vec<usize>,
    pub metrics: Vec<Vec<usize>>,
    pub parts: Vec<usize>,
    pub sample_weight: bool,
}

/// The optimizer's state (as Keras keeps it on the model): its slots, its iteration
/// count and its current learning rate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptState {
    /// `optimizer/{param}/{slot}` → array.
    pub slots: Weights,
    /// Iterations done (Keras's `optimizer.iterations`).
    pub step: u64,
    /// The current learning rate when it is a number (reduce-LR-on-plateau lowers
    /// it); `None` until training starts.
    pub lr: Option<f32>,
}

/// What one training step computed (before the update).
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutput {
    /// The batch's loss.
    pub loss: f32,
    /// The batch's metrics alone (as Keras's `train_on_batch` returns them), in the
    /// order of [`crate::settings::metric_names`].
    pub metrics: Vec<f32>,
    /// Each output's own loss when the model has several (`OUTPUT_loss`), in the
    /// order of the targets.
    pub output_losses: Vec<f32>,
    /// Each metric's state for this batch: values that sum over batches to the
    /// state of an epoch ([`Tally`]).
    pub metric_states: Vec<Vec<f32>>,
}

impl Net {
    /// The optimizer's state.
    pub fn optimizer_state(&self) -> &OptState {
        &self.opt
    }

    /// Replaces the optimizer's state (a checkpoint's, or a snapshot taken before a
    /// step that diverged). Slots are checked when the next step runs.
    pub fn set_optimizer_state(&mut self, opt: OptState) {
        self.opt = opt;
    }

    /// Sets the current learning rate (used by steps when the optimizer's
    /// `learning_rate` is a number; a schedule decides it otherwise).
    pub fn set_learning_rate(&mut self, lr: Option<f32>) {
        self.opt.lr = lr;
    }

    /// The optimizer's `learning_rate` as the spec gives it (a number or a schedule).
    fn spec_learning_rate(&self) -> Option<&Value> {
        let t = self.graph.train.as_ref()?;
        Some(t.decl.optimizer.args.get("learning_rate"))
    }

    /// Whether the optimizer's learning rate is a schedule (which then decides every
    /// step's rate; reduce-LR-on-plateau cannot set it).
    pub fn learning_rate_is_schedule(&self) -> bool {
        matches!(self.spec_learning_rate(), Some(Value::Named(..)))
    }

    /// Sets the current learning rate to the spec's (its schedule's first value)
    /// unless one is set already: what training starts from.
    pub fn start_learning_rate(&mut self) {
        if self.opt.lr.is_none()
            && let Some(v) = self.spec_learning_rate()
        {
            self.opt.lr = Some(schedules::lr_at(v, 0) as f32);
        }
    }

    /// The learning rate of the next step: the schedule's at [`Net::step`], else the
    /// current rate (Keras's 0.001 before one is set).
    pub fn learning_rate(&self) -> f32 {
        match self.spec_learning_rate() {
            Some(v @ Value::Named(..)) => schedules::lr_at(v, self.opt.step) as f32,
            _ => self.opt.lr.unwrap_or(0.001),
        }
    }

    /// The optimizer state's keys in the training step's order (compiles the step).
    pub fn optimizer_state_keys(&mut self) -> Result<Vec<String>, Error> {
        Ok(self.train_kernel()?.layout.state.clone())
    }

    /// The compiled training step (compiled on first use).
    fn train_kernel(&mut self) -> Result<Arc<TrainKernel>, Error> {
        if let Some(t) = &self.train {
            return Ok(t.clone());
        }
        if self.graph.train.is_none() {
            return Err(Error::Invalid(format!(
                "the spec of `{}` has no `train` section: add one with targets, a loss and an optimizer",
                self.graph.name
            )));
        }
        // The optimizer's state and the step's values, before either is allocated.
        super::check_budget(
            &self.graph,
            crate::budget::Work::Train,
            settings::spec_batch_size(&self.graph),
            &std::collections::HashMap::new(),
            self.memory_limit,
        )?;
        let step = lower::train::build(&self.graph)?;
        // Parameters and optimizer state are updated in place: offer each input whose
        // updated value is an output (`KEY` → `new/KEY`) to the backend.
        let donate = lower::train::carried(&step.func);
        let kernel = runtime::compile_donating(&step.func, self.backend, &donate)?;
        let outputs = step.layout.bind(kernel.func())?;
        let t = Arc::new(TrainKernel {
            kernel,
            layout: step.layout,
            outputs,
        });
        self.train = Some(t.clone());
        Ok(t)
    }

    /// Builds the zero optimizer slots the step expects, keeping any already there.
    pub(super) fn ensure_slots(&mut self, keys: &[String]) -> Result<(), Error> {
        for k in keys {
            if self.opt.slots.contains_key(k) {
                continue;
            }
            let param = k
                .strip_prefix("optimizer/")
                .and_then(|r| r.rsplit_once('/'))
                .map(|(p, _)| p)
                .ok_or_else(|| Error::internal(format!("bad optimizer state key `{k}`")))?;
            let shape = self
                .weights
                .get(param)
                .map(|a| a.shape().to_vec())
                .ok_or_else(|| Error::internal(format!("no parameter `{param}` for `{k}`")))?;
            self.opt
                .slots
                .insert(k.clone(), ArrayD::zeros(ndarray::IxDyn(&shape)));
        }
        Ok(())
    }

    /// One training step on a batch: forward in training mode, loss, gradients,
    /// clipping and the optimizer's update, applied to the weights and optimizer state
    /// in place. `inputs` and `targets` are in the model's declaration order and
    /// already checked (a [`Dataset`]'s arrays); `lr` is this step's learning rate and
    /// `rng_key` dropout's random key. The step counter advances by one.
    ///
    /// A non-finite loss is returned as it is: the weights have been updated with it,
    /// and undoing that (restoring a snapshot) is the caller's choice.
    pub fn train_step(
        &mut self,
        inputs: Vec<ArrayD<f32>>,
        targets: Vec<ArrayD<f32>>,
        lr: f32,
        rng_key: f32,
    ) -> Result<StepOutput, Error> {
        self.train_step_weighted(inputs, targets, None, lr, rng_key)
    }

    /// [`Net::train_step`] with each example's weight in the loss (and weighted
    /// metrics), Keras's `sample_weight`: `[batch]`, ones when `None`. Weights are
    /// taken only by a spec with `sample_weight` or `class_weight`.
    pub fn train_step_weighted(
        &mut self,
        inputs: Vec<ArrayD<f32>>,
        mut targets: Vec<ArrayD<f32>>,
        sample_weight: Option<ArrayD<f32>>,
        lr: f32,
        rng_key: f32,
    ) -> Result<StepOutput, Error> {
        let tk = self.train_kernel()?;
        let batch = inputs
            .first()
            .map_or(0, |a| a.shape().first().copied().unwrap_or(0));
        weights_arg(tk.layout.sample_weight, sample_weight, batch, &mut targets)?;
        self.ensure_slots(&tk.layout.state)?;
        let l = &tk.layout;
        // Parameters and optimizer state move into the step and come back updated in
        // place where the backend does that (the JIT's donated buffers).
        let take = |w: &mut Weights, keys: &[String], what: &str| {
            keys.iter()
                .map(|k| {
                    w.get_mut(k)
                        .map(std::mem::take)
                        .ok_or_else(|| Error::internal(format!("no {what} `{k}`")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let params = take(&mut self.weights, &l.params, "weight")?;
        let state = match take(&mut self.opt.slots, &l.state, "optimizer state") {
            Ok(s) => s,
            Err(e) => {
                self.give_back(&l.params, params, &[], Vec::new());
                return Err(e);
            }
        };
        let mut args = StepArgs::new(
            inputs,
            params,
            scalar_array(rng_key),
            targets,
            state,
            scalar_array(self.opt.step as f32),
            scalar_array(lr),
        );
        let result = tk.kernel.run_inplace(&mut args.args);
        // Give the arrays back whatever happened (updated on success).
        let params = args.params_mut().iter_mut().map(std::mem::take).collect();
        let state = args.state_mut().iter_mut().map(std::mem::take).collect();
        self.give_back(&l.params, params, &l.state, state);
        let mut outs = result?;
        let o = &tk.outputs;
        // Outputs the backend did not write in place replace the old arrays.
        for (key, &i) in l.params.iter().zip(&o.new_params) {
            if let (Some(a), Some(w)) = (outs[i].take(), self.weights.get_mut(key)) {
                *w = a;
            }
        }
        for (key, &i) in l.state.iter().zip(&o.new_state) {
            if let (Some(a), Some(s)) = (outs[i].take(), self.opt.slots.get_mut(key)) {
                *s = a;
            }
        }
        self.opt.step += 1;
        let value = |i: usize| outs[i].as_ref().map_or(f32::NAN, scalar);
        let metric_states: Vec<Vec<f32>> = o
            .metrics
            .iter()
            .map(|ids| {
                ids.iter()
                    .flat_map(|&i| outs[i].as_ref().map(state_values).unwrap_or_default())
                    .collect()
            })
            .collect();
        let mut step = StepOutput {
            loss: value(o.loss),
            metrics: Vec::new(),
            output_losses: o.output_losses.iter().map(|&i| value(i)).collect(),
            metric_states,
        };
        step.metrics = self.metric_values(&step.metric_states);
        Ok(step)
    }

    /// Each metric's value from its state (a batch's, or summed over batches).
    pub(super) fn metric_values(&self, states: &[Vec<f32>]) -> Vec<f32> {
        let Some(t) = &self.graph.train else {
            return Vec::new();
        };
        t.metrics
            .iter()
            .zip(states)
            .map(|(m, s)| {
                let s: Vec<f64> = s.iter().map(|&v| f64::from(v)).collect();
                m.kind.result(&m.args, &s) as f32
            })
            .collect()
    }

    /// The data with the spec's `class_weight` turned into its sample weights, as
    /// Keras's `fit(class_weight=…)` does (unchanged without class weights).
    pub fn with_class_weights(&self, mut data: Dataset) -> Result<Dataset, Error> {
        if let Some(cw) = self
            .graph
            .train
            .as_ref()
            .and_then(|t| t.decl.class_weight.as_ref())
        {
            data.set_class_weights(&cw.weights)?;
        }
        Ok(data)
    }

    /// Empty running sums for this model's loss, output losses and metrics (compiles
    /// the training step).
    pub fn tally(&mut self) -> Result<Tally, Error> {
        let tk = self.train_kernel()?;
        Ok(Tally::new(
            tk.layout.output_losses.len(),
            tk.layout.metric_sizes.clone(),
        ))
    }

    /// The logs of running sums: `loss`, each output's loss, each metric (its value
    /// computed from its state), named as Keras logs them.
    pub fn tally_logs(&self, tally: &Tally) -> Logs {
        let Some(t) = &self.graph.train else {
            return Logs::default();
        };
        let names = t.log_names(&self.graph);
        tally.logs(&names[1..], |i, s| {
            t.metrics
                .get(i)
                .map_or(f64::NAN, |m| m.kind.result(&m.args, s))
        })
    }

    /// Keras's `train_on_batch(x, y)`: one training step on named inputs and targets,
    /// checked against the spec first (names, dtypes, shapes, integer values), with the
    /// `Net`'s current learning rate (the optimizer's `learning_rate` schedule at
    /// [`Net::step`], else the number set last) and dropout's key
    /// [`rng_key`]`(`[`Net::seed`]`, step)` — as [`Net::fit`] would run this batch.
    /// Returns the batch's loss and metrics (before the update).
    pub fn train_on_batch(
        &mut self,
        inputs: &[(&str, ArrayViewD<f32>)],
        targets: &[(&str, ArrayViewD<f32>)],
    ) -> Result<StepOutput, Error> {
        if self.graph.train.is_none() {
            return Err(Error::Invalid(format!(
                "the spec of `{}` has no `train` section: add one with targets, a loss and an optimizer",
                self.graph.name
            )));
        };
        let arrays = inputs
            .iter()
            .chain(targets)
            .map(|(n, a)| (n.to_string(), a.to_owned()))
            .collect();
        let data = Dataset::from_arrays(&self.graph, arrays)?;
        if data.targets.is_empty() {
            return Err(Error::Invalid(
                "training needs targets, and none were given".into(),
            ));
        }
        if data.is_empty() {
            return Err(Error::Invalid("the batch is empty".into()));
        }
        self.start_learning_rate();
        let lr = self.learning_rate();
        let key = rng_key(self.seed, self.opt.step);
        let data = self.with_class_weights(data)?;
        let w = data.sample_weight.clone();
        let xs = data.inputs.into_iter().map(|(_, a)| a).collect();
        let ys = data.targets.into_iter().map(|(_, a)| a).collect();
        self.train_step_weighted(xs, ys, w, lr, key)
    }

    fn give_back(
        &mut self,
        param_keys: &[String],
        params: Vec<ArrayD<f32>>,
        state_keys: &[String],
        state: Vec<ArrayD<f32>>,
    ) {
        for (k, a) in param_keys.iter().zip(params) {
            if let Some(w) = self.weights.get_mut(k) {
                *w = a;
            }
        }
        for (k, a) in state_keys.iter().zip(state) {
            if let Some(s) = self.opt.slots.get_mut(k) {
                *s = a;
            }
        }
    }

    /// The compiled evaluation function (compiled on first use).
    fn eval_kernel(&self) -> Result<Arc<EvalKernel>, Error> {
        let mut slot = self
            .eval
            .lock()
            .map_err(|_| Error::internal("a thread panicked while compiling"))?;
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        if self.graph.train.is_none() {
            return Err(Error::Invalid(format!(
                "the spec of `{}` has no `train` section, so there is no loss to evaluate",
                self.graph.name
            )));
        }
        let step = lower::eval::build(&self.graph)?;
        let kernel = runtime::compile(&step.func, self.backend)?;
        let f = kernel.func();
        let out = |name: &str| -> Result<usize, Error> {
            f.outputs
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| Error::internal(format!("the eval function has no `{name}`")))
        };
        let l = &step.layout;
        let e = Arc::new(EvalKernel {
            loss: out("loss")?,
            output_losses: l
                .output_losses
                .iter()
                .map(|n| out(&format!("loss/{n}")))
                .collect::<Result<_, _>>()?,
            metrics: lower::train::metric_outputs(&l.metrics, &l.metric_parts, |n| {
                out(n).map_err(|e| crate::ir::IrError(e.to_string()))
            })?,
            parts: l.metric_sizes.clone(),
            sample_weight: l.sample_weight,
            kernel: kernel.clone(),
        });
        *slot = Some(e.clone());
        Ok(e)
    }

    /// Keras's `evaluate`: the loss and metrics over `data` in batches of
    /// `batch_size` (the spec's by default, as `kiln eval` does), averaged weighted by
    /// batch size, in inference mode. Keys: `loss` and each metric as the spec names
    /// it.
    pub fn evaluate(&self, data: &Dataset, batch_size: Option<usize>) -> Result<Logs, Error> {
        Ok(self.tally_logs(&self.evaluate_tally(data, batch_size)?))
    }

    /// [`Net::evaluate`]'s running sums before they become logs ([`Net::tally_logs`]):
    /// sums over parts of the data add up to the sums over the whole.
    pub fn evaluate_tally(
        &self,
        data: &Dataset,
        batch_size: Option<usize>,
    ) -> Result<Tally, Error> {
        if !data.has_targets() {
            return Err(Error::Invalid(
                "evaluation needs targets, and this data has none".into(),
            ));
        }
        if batch_size == Some(0) {
            return Err(Error::Invalid("the batch size must be at least 1".into()));
        }
        let bs = batch_size.unwrap_or_else(|| settings::spec_batch_size(&self.graph));
        let e = self.eval_kernel()?;
        let mut tally = Tally::new(e.output_losses.len(), e.parts.clone());
        let order: Vec<usize> = (0..data.len()).collect();
        for b in 0..crate::data::num_batches(data.len(), bs) {
            let idx = crate::data::batch_indices(&order, bs, b);
            let (xs, mut ys) = data.gather(idx)?;
            weights_arg(
                e.sample_weight,
                data.gather_weights(idx)?,
                idx.len(),
                &mut ys,
            )?;
            let mut args: Vec<ArrayViewD<f32>> = xs.iter().map(|a| a.view()).collect();
            args.extend(self.weights.iter().map(|(_, w)| w.view()));
            args.extend(ys.iter().map(|a| a.view()));
            let outs = e.kernel.run(&args)?;
            let states: Vec<Vec<f32>> = e
                .metrics
                .iter()
                .map(|ids| ids.iter().flat_map(|&i| state_values(&outs[i])).collect())
                .collect();
            let losses: Vec<f32> = e.output_losses.iter().map(|&i| scalar(&outs[i])).collect();
            tally.add(scalar(&outs[e.loss]), &losses, &states, idx.len());
        }
        Ok(tally)
    }
}

/// A state output's values in order (a scalar is one value).
fn state_values(a: &ArrayD<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

/// Appends the sample weights to a step's targets when it takes them (ones when none
/// are given); refuses weights for a step that takes none.
fn weights_arg(
    takes: bool,
    w: Option<ArrayD<f32>>,
    batch: usize,
    targets: &mut Vec<ArrayD<f32>>,
) -> Result<(), Error> {
    match (takes, w) {
        (true, Some(w)) => targets.push(w),
        (true, None) => targets.push(ArrayD::ones(ndarray::IxDyn(&[batch]))),
        (false, Some(_)) => {
            return Err(Error::Invalid(
                "sample weights were given, but the spec sets neither `sample_weight` nor `class_weight`".into(),
            ));
        }
        (false, None) => {}
    }
    Ok(())
}

/// The random key of dropout at optimizer step `step` of a run seeded `seed`: 24 bits
/// of a hash of `(seed, step)`, exact in the f32 scalar the step takes.
pub fn rng_key(seed: u64, step: u64) -> f32 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    b[8..].copy_from_slice(&step.to_le_bytes());
    (crate::rng::hash64(0x6b69_6c6e_2f64_726f, &b) >> 40) as f32
}
