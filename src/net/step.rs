//! A compiled model's training step and evaluation function: compiled on first use,
//! run with the arguments laid out by [`lower::train::StepArgs`], with the optimizer's
//! state owned by the [`Net`].

use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD};

use super::{Logs, Net, scalar, scalar_array};
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
    pub metrics: Vec<usize>,
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
    /// The batch's metrics, in the spec's order ([`crate::settings::metric_names`]).
    pub metrics: Vec<f32>,
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
    fn ensure_slots(&mut self, keys: &[String]) -> Result<(), Error> {
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
        let tk = self.train_kernel()?;
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
        Ok(StepOutput {
            loss: value(o.loss),
            metrics: o.metrics.iter().map(|&i| value(i)).collect(),
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
        let xs = data.inputs.into_iter().map(|(_, a)| a).collect();
        let ys = data.targets.into_iter().map(|(_, a)| a).collect();
        self.train_step(xs, ys, lr, key)
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
        let e = Arc::new(EvalKernel {
            loss: out("loss")?,
            metrics: step
                .layout
                .metrics
                .iter()
                .map(|m| out(&format!("metric/{m}")))
                .collect::<Result<_, _>>()?,
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
        if data.targets.is_empty() {
            return Err(Error::Invalid(
                "evaluation needs targets, and this data has none".into(),
            ));
        }
        if batch_size == Some(0) {
            return Err(Error::Invalid("the batch size must be at least 1".into()));
        }
        let bs = batch_size.unwrap_or_else(|| settings::spec_batch_size(&self.graph));
        let e = self.eval_kernel()?;
        let names = settings::metric_names(&self.graph);
        let mut sums = vec![0.0f64; 1 + names.len()];
        let order: Vec<usize> = (0..data.len()).collect();
        for b in 0..crate::data::num_batches(data.len(), bs) {
            let idx = crate::data::batch_indices(&order, bs, b);
            let (xs, ys) = data.gather(idx);
            let mut args: Vec<ArrayViewD<f32>> = xs.iter().map(|a| a.view()).collect();
            args.extend(self.weights.iter().map(|(_, w)| w.view()));
            args.extend(ys.iter().map(|a| a.view()));
            let outs = e.kernel.run(&args)?;
            let n = idx.len() as f64;
            sums[0] += f64::from(scalar(&outs[e.loss])) * n;
            for (k, &m) in e.metrics.iter().enumerate() {
                sums[k + 1] += f64::from(scalar(&outs[m])) * n;
            }
        }
        let n = data.len() as f64;
        let mut logs = Logs::default();
        logs.set("loss", sums[0] / n);
        for (k, name) in names.iter().enumerate() {
            logs.set(name, sums[k + 1] / n);
        }
        Ok(logs)
    }
}

/// The random key of dropout at optimizer step `step` of a run seeded `seed`: 24 bits
/// of a hash of `(seed, step)`, exact in the f32 scalar the step takes.
pub fn rng_key(seed: u64, step: u64) -> f32 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    b[8..].copy_from_slice(&step.to_le_bytes());
    (crate::rng::hash64(0x6b69_6c6e_2f64_726f, &b) >> 40) as f32
}
