//! Training: Keras's `fit` loop around the compiled training step.
//!
//! One epoch walks the training data in a seeded order (a fresh permutation per epoch
//! from `(seed, epoch)`, or in order without shuffling) in batches of `batch_size`, the
//! last one partial. Each batch is one call of the compiled step, which returns the
//! loss, the metrics, the new parameters and the new optimizer state. The random key of
//! dropout comes from `(seed, step)`, the learning rate from the schedule at `step` (or
//! the current rate, which reduce-LR-on-plateau may lower), where `step` counts the
//! optimizer's iterations as Keras's `optimizer.iterations` does. So a run is a
//! function of its seed, data and settings: the same inputs give bit-identical weights,
//! and a checkpoint (which stores the step, the epoch, the batch within it, the
//! running sums, the callbacks' state and the history) continues exactly.
//!
//! The loss and metrics shown per epoch are Keras's running averages: batch means
//! weighted by batch size. After each epoch the held-out validation data is evaluated
//! in inference mode, then the callbacks run in the order the spec lists them.

pub mod callbacks;
pub mod checkpoint;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ndarray::ArrayD;

use crate::args::Value;
use crate::catalog::schedules as schedule;
use crate::check::Graph;
use crate::data::{self, Dataset};
use crate::net::{Net, NetError, scalar, scalar_array};
use crate::weights::Weights;
use callbacks::{Callback, CsvLog};

/// Named scalar results (`loss`, `accuracy`, `val_loss`, …) in the order they were set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Logs {
    entries: Vec<(String, f64)>,
}

impl Logs {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
    /// Sets a value, replacing one of the same name in its place.
    pub fn set(&mut self, name: &str, v: f64) {
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(e) => e.1 = v,
            None => self.entries.push((name.to_string(), v)),
        }
    }
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|(n, _)| n.clone()).collect()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), *v))
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Keras's display order: training values by name, then `val_` values by name.
    pub fn sorted(&self) -> Vec<(&str, f64)> {
        let mut v: Vec<(&str, f64)> = self.iter().collect();
        v.sort_by(|a, b| (a.0.starts_with("val_"), a.0).cmp(&(b.0.starts_with("val_"), b.0)));
        v
    }
}

/// Settings of a `fit` call; `None` takes the spec's value (or, when resuming, the
/// checkpoint's), then Keras's default.
#[derive(Clone, Debug, Default)]
pub struct FitOptions {
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub seed: Option<u64>,
    pub shuffle: Option<bool>,
    /// The last fraction of the data held out for validation (Keras's
    /// `validation_split`) [default: the spec's `validation_split`, else its
    /// `data.validation_split`, else none].
    pub validation_split: Option<f64>,
    /// Validation data given separately (then no split is taken).
    pub validation_data: Option<Dataset>,
    /// A resumable checkpoint written at the end of every epoch and when interrupted
    /// (never over a good one with a diverged state).
    pub checkpoint: Option<PathBuf>,
    /// A CSV log of the per-epoch values (as the `csv_logger` callback).
    pub csv_log: Option<PathBuf>,
    /// Ignore the spec's callbacks.
    pub no_callbacks: bool,
    /// Set from another thread (a Ctrl-C handler) to stop after the current batch.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// Why training stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    /// Every epoch ran.
    Completed,
    /// The early-stopping callback stopped after this epoch (0-based).
    EarlyStopping { epoch: usize },
    /// Interrupted after `batch` batches of `epoch` (0-based); the checkpoint written.
    Interrupted {
        epoch: usize,
        batch: usize,
        checkpoint: Option<PathBuf>,
    },
    /// The loss became NaN or infinite at this batch; the weights and optimizer state
    /// were rolled back to the end of the last good epoch (`good_epochs` epochs).
    NonFinite {
        epoch: usize,
        batch: usize,
        step: u64,
        loss: f32,
        good_epochs: usize,
    },
}

/// What `fit` did.
#[derive(Clone, Debug)]
pub struct FitReport {
    /// The logs of every epoch (those before a resume included).
    pub history: Vec<Logs>,
    /// Optimizer iterations done in total.
    pub steps: u64,
    pub stop: Stop,
    /// The epoch (0-based) whose weights early stopping restored.
    pub restored_best: Option<usize>,
    /// Seconds spent in each epoch's training batches (this run's epochs only).
    pub epoch_seconds: Vec<f64>,
}

/// Progress reports from `fit` (the CLI draws a bar and Keras's epoch lines).
pub trait Observer {
    fn on_train_begin(&mut self, _train_examples: usize, _val_examples: Option<usize>) {}
    fn on_epoch_begin(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// After each batch: batches done in this epoch and the running averages.
    fn on_batch_end(&mut self, _done: usize, _steps: usize, _logs: &Logs) {}
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _epochs: usize,
        _steps: usize,
        _logs: &Logs,
        _seconds: f64,
    ) {
    }
    /// A callback's message (`Epoch 5: early stopping`, a warning).
    fn on_message(&mut self, _msg: &str) {}
}

/// An observer that reports nothing.
pub struct Silent;
impl Observer for Silent {}

/// The spec's batch size (Keras's default 32).
pub fn spec_batch_size(graph: &Graph) -> usize {
    graph
        .train
        .as_ref()
        .and_then(|t| t.decl.fit.opt_int("batch_size"))
        .map(|b| b.max(1) as usize)
        .unwrap_or(32)
}

/// The metrics' names as the spec writes them (`accuracy`, `mae`).
pub fn metric_names(graph: &Graph) -> Vec<String> {
    graph
        .train
        .as_ref()
        .map(|t| {
            t.decl
                .metrics
                .iter()
                .map(|(m, _)| m.name.to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The validation fraction the spec asks for: `validation_split`, else
/// `data.validation_split`.
pub fn spec_validation_split(graph: &Graph) -> f64 {
    let Some(t) = &graph.train else {
        return 0.0;
    };
    let v = t.decl.fit.float("validation_split");
    if v > 0.0 {
        v
    } else {
        t.decl.data.as_ref().map_or(0.0, |d| d.validation_split)
    }
}

/// The settings a run uses, resolved from the options, a checkpoint and the spec.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub shuffle: bool,
    /// f64 bits.
    pub validation_split: u64,
}

impl Settings {
    fn resolve(graph: &Graph, o: &FitOptions, ckpt: Option<&Settings>) -> Settings {
        let fit = graph.train.as_ref().map(|t| &t.decl.fit);
        let spec_int = |k: &str, d: i64| fit.and_then(|f| f.opt_int(k)).unwrap_or(d);
        Settings {
            epochs: o
                .epochs
                .or(ckpt.map(|c| c.epochs))
                .unwrap_or(spec_int("epochs", 1).max(1) as usize),
            batch_size: o
                .batch_size
                .or(ckpt.map(|c| c.batch_size))
                .unwrap_or(spec_int("batch_size", 32).max(1) as usize)
                .max(1),
            seed: o
                .seed
                .or(ckpt.map(|c| c.seed))
                .unwrap_or(spec_int("seed", 0).max(0) as u64),
            shuffle: o
                .shuffle
                .or(ckpt.map(|c| c.shuffle))
                .unwrap_or_else(|| fit.is_none_or(|f| f.bool("shuffle"))),
            validation_split: o
                .validation_split
                .map(f64::to_bits)
                .or(ckpt.map(|c| c.validation_split))
                .unwrap_or_else(|| spec_validation_split(graph).to_bits()),
        }
    }
}

/// The random key of dropout at optimizer step `step`: 24 bits of a hash of
/// `(seed, step)`, exact in the f32 scalar the step takes.
pub fn rng_key(seed: u64, step: u64) -> f32 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    b[8..].copy_from_slice(&step.to_le_bytes());
    (crate::rng::hash64(0x6b69_6c6e_2f64_726f, &b) >> 40) as f32
}

/// Running sums of an epoch: examples seen, loss × batch size, metrics × batch size.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Sums {
    pub count: f64,
    pub values: Vec<f64>,
}

impl Sums {
    fn new(metrics: usize) -> Sums {
        Sums {
            count: 0.0,
            values: vec![0.0; 1 + metrics],
        }
    }
    fn logs(&self, names: &[String]) -> Logs {
        let mut l = Logs::default();
        let c = self.count.max(1.0);
        l.set("loss", self.values[0] / c);
        for (k, n) in names.iter().enumerate() {
            l.set(n, self.values[k + 1] / c);
        }
        l
    }
}

/// What is rolled back when the loss diverges: the state at the end of the last good
/// epoch.
#[derive(Clone)]
struct Snapshot {
    weights: Weights,
    opt: crate::net::OptState,
    epoch: usize,
    history_len: usize,
    callbacks: Vec<Callback>,
}

/// Builds the zero optimizer slots the step expects, keeping any already there.
fn ensure_slots(net: &mut Net, state_keys: &[String]) -> Result<(), NetError> {
    for k in state_keys {
        if net.opt.slots.contains_key(k) {
            continue;
        }
        let param = k
            .strip_prefix("optimizer/")
            .and_then(|r| r.rsplit_once('/'))
            .map(|(p, _)| p)
            .ok_or_else(|| NetError::Internal(format!("bad optimizer state key `{k}`")))?;
        let shape = net
            .weights
            .get(param)
            .map(|a| a.shape().to_vec())
            .ok_or_else(|| NetError::Internal(format!("no parameter `{param}` for `{k}`")))?;
        net.opt
            .slots
            .insert(k.clone(), ArrayD::zeros(ndarray::IxDyn(&shape)));
    }
    Ok(())
}

/// Keras's `fit`. See the module documentation.
pub fn run(
    net: &mut Net,
    data: &Dataset,
    opts: &FitOptions,
    obs: &mut dyn Observer,
) -> Result<FitReport, NetError> {
    let graph = net.graph.clone();
    let Some(train) = graph.train.as_ref() else {
        return Err(NetError::Invalid(format!(
            "the spec of `{}` has no `train` section",
            graph.name
        )));
    };
    if data.targets.len() != train.targets.len() {
        return Err(NetError::Invalid(format!(
            "training needs the targets ({}), and {} has none",
            train
                .targets
                .iter()
                .map(|t| format!("`{}`", t.name))
                .collect::<Vec<_>>()
                .join(", "),
            data.source
        )));
    }
    let resume = net.resume.take();
    let ckpt_settings = resume.as_ref().and_then(|r| r.meta.settings.clone());
    let s = Settings::resolve(&graph, opts, ckpt_settings.as_ref());
    let split = f64::from_bits(s.validation_split);
    let (train_data, val_data) = match &opts.validation_data {
        Some(v) => (data.clone(), Some(v.clone())),
        None => data.split(split)?,
    };
    if let Some(r) = &resume
        && let Some((n, fp)) = r.meta.data
        && (n != train_data.len() || fp != train_data.fingerprint())
    {
        obs.on_message(&format!(
            "warning: the checkpoint was trained on other data ({n} training examples, now {}); the run will not match an uninterrupted one",
            train_data.len()
        ));
    }

    let tk = net.train_kernel()?;
    ensure_slots(net, &tk.layout.state)?;
    let lr_value = train.decl.optimizer.args.get("learning_rate").clone();
    let is_schedule = matches!(lr_value, Value::Named(..));
    if net.opt.lr.is_none() {
        net.opt.lr = Some(schedule::lr_at(&lr_value, 0) as f32);
    }

    let mut cbs: Vec<Callback> = if opts.no_callbacks {
        Vec::new()
    } else {
        train
            .decl
            .callbacks
            .iter()
            .map(callbacks::from_spec)
            .collect()
    };
    if is_schedule
        && cbs
            .iter()
            .any(|c| matches!(c, Callback::ReduceLrOnPlateau { .. }))
    {
        return Err(NetError::Invalid(
            "`reduce_lr_on_plateau` sets the learning rate, but the optimizer's `learning_rate` is a schedule, which decides it (Keras refuses this too): use a number as the learning rate, or drop one of them".into(),
        ));
    }

    let names = metric_names(&graph);
    let mut history: Vec<Logs> = Vec::new();
    let mut start_epoch = 0usize;
    let mut start_batch = 0usize;
    let mut sums = Sums::new(names.len());
    if let Some(r) = resume {
        if !Callback::load_states(&mut cbs, &r.meta.callbacks) {
            obs.on_message("warning: the checkpoint's callbacks differ from the spec's; their state starts afresh");
        } else {
            let mut bw = r.best_weights.into_iter();
            for c in cbs.iter_mut() {
                if let Callback::EarlyStopping { state, .. } = c {
                    state.best_weights = bw.next().flatten().map(callbacks::Snapshot::new);
                }
            }
        }
        history = r.meta.history_logs();
        start_epoch = r.meta.epoch;
        start_batch = r.meta.batch;
        if start_batch > 0 && r.meta.sums.len() == sums.values.len() + 1 {
            sums.count = f64::from_bits(r.meta.sums[0]);
            for (k, b) in r.meta.sums[1..].iter().enumerate() {
                sums.values[k] = f64::from_bits(*b);
            }
        } else {
            start_batch = 0;
        }
    }
    let mut csv_logs: Vec<CsvLog> = Vec::new();
    let open_csv = |path: PathBuf, sep: &str, append: bool, hist: &[Logs]| {
        CsvLog::open(path.clone(), sep, append, hist).map_err(|error| NetError::Io { path, error })
    };
    for c in &cbs {
        if let Callback::CsvLogger {
            filename,
            separator,
            append,
        } = c
        {
            csv_logs.push(open_csv(
                crate::net::join_clean(&net.spec_dir, std::path::Path::new(filename)),
                separator,
                *append,
                &history,
            )?);
        }
    }
    if let Some(p) = &opts.csv_log {
        csv_logs.push(open_csv(p.clone(), ",", false, &history)?);
    }

    let n = train_data.len();
    let bs = s.batch_size;
    let steps = data::num_batches(n, bs);
    obs.on_train_begin(n, val_data.as_ref().map(Dataset::len));
    let mut snapshot = Snapshot {
        weights: net.weights.clone(),
        opt: net.opt.clone(),
        epoch: start_epoch,
        history_len: history.len(),
        callbacks: cbs.clone(),
    };
    let mut stop = Stop::Completed;
    let mut epoch_seconds = Vec::new();
    let interrupted = || {
        opts.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    };

    let mut epoch = start_epoch;
    'epochs: while epoch < s.epochs {
        obs.on_epoch_begin(epoch, s.epochs, steps);
        let order: Vec<usize> = if s.shuffle {
            data::permutation(n, s.seed, epoch as u64)
        } else {
            (0..n).collect()
        };
        let t0 = Instant::now();
        let first = if epoch == start_epoch { start_batch } else { 0 };
        if first == 0 {
            sums = Sums::new(names.len());
        }
        for b in first..steps {
            let idx = data::batch_indices(&order, bs, b);
            let (xs, ys) = train_data.gather(idx);
            let step = net.opt.step;
            let lr = if is_schedule {
                schedule::lr_at(&lr_value, step) as f32
            } else {
                net.opt.lr.unwrap_or(0.001)
            };
            let key = scalar_array(rng_key(s.seed, step));
            let step_a = scalar_array(step as f32);
            let lr_a = scalar_array(lr);
            // Parameters and optimizer state move into the step and come back updated
            // in place where the backend does that (the JIT's donated buffers).
            let n_x = xs.len();
            let n_y = ys.len();
            let mut args: Vec<ArrayD<f32>> = xs;
            for k in &tk.layout.params {
                let w = net
                    .weights
                    .get_mut(k)
                    .ok_or_else(|| NetError::Internal(format!("no weight `{k}`")))?;
                args.push(std::mem::take(w));
            }
            args.push(key);
            args.extend(ys);
            for k in &tk.layout.state {
                match net.opt.slots.get_mut(k) {
                    Some(a) => args.push(std::mem::take(a)),
                    None => return Err(NetError::Internal(format!("no optimizer state `{k}`"))),
                }
            }
            args.push(step_a);
            args.push(lr_a);
            let result = tk.kernel.run_inplace(&mut args);
            // Give the arrays back whatever happened (updated on success).
            let state_at = n_x + tk.layout.params.len() + 1 + n_y;
            for (j, k) in tk.layout.params.iter().enumerate() {
                if let Some(w) = net.weights.get_mut(k) {
                    *w = std::mem::take(&mut args[n_x + j]);
                }
            }
            for (j, k) in tk.layout.state.iter().enumerate() {
                if let Some(a) = net.opt.slots.get_mut(k) {
                    *a = std::mem::take(&mut args[state_at + j]);
                }
            }
            drop(args);
            let mut outs = result?;
            let loss = outs[tk.loss].as_ref().map_or(f32::NAN, scalar);
            if !loss.is_finite() {
                let good = snapshot.epoch;
                net.weights = snapshot.weights.clone();
                net.opt = snapshot.opt.clone();
                history.truncate(snapshot.history_len);
                stop = Stop::NonFinite {
                    epoch,
                    batch: b,
                    step,
                    loss,
                    good_epochs: good,
                };
                break 'epochs;
            }
            // Outputs the backend did not write in place replace the old arrays.
            for (key, &o) in tk.layout.params.iter().zip(&tk.new_params) {
                if let (Some(a), Some(w)) = (outs[o].take(), net.weights.get_mut(key)) {
                    *w = a;
                }
            }
            for (key, &o) in tk.layout.state.iter().zip(&tk.new_state) {
                if let (Some(a), Some(s)) = (outs[o].take(), net.opt.slots.get_mut(key)) {
                    *s = a;
                }
            }
            net.opt.step += 1;
            let w = idx.len() as f64;
            sums.count += w;
            sums.values[0] += f64::from(loss) * w;
            for (k, &m) in tk.metrics.iter().enumerate() {
                let v = outs[m].as_ref().map_or(f32::NAN, scalar);
                sums.values[k + 1] += f64::from(v) * w;
            }
            obs.on_batch_end(b + 1, steps, &sums.logs(&names));
            if interrupted() && b + 1 < steps {
                let path = opts.checkpoint.clone();
                if let Some(p) = &path {
                    let meta = checkpoint::Meta::new(
                        net,
                        &s,
                        &train_data,
                        epoch,
                        b + 1,
                        &sums,
                        &cbs,
                        &history,
                    );
                    checkpoint::save(net, p, &meta, &cbs)?;
                }
                stop = Stop::Interrupted {
                    epoch,
                    batch: b + 1,
                    checkpoint: path,
                };
                break 'epochs;
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        epoch_seconds.push(seconds);
        let mut logs = sums.logs(&names);
        if let Some(v) = &val_data {
            let vl = net.evaluate(v, Some(bs))?;
            for (k, x) in vl.iter() {
                logs.set(&format!("val_{k}"), x);
            }
        }
        let lr_now = net.opt.lr.unwrap_or(0.001);
        let decision = callbacks::on_epoch_end(
            &mut cbs,
            epoch,
            &mut logs,
            lr_now,
            &net.weights,
            &net.spec_dir,
        );
        if let Some(l) = decision.new_lr {
            net.opt.lr = Some(l);
        }
        for c in &mut csv_logs {
            c.row(epoch, &logs).map_err(|error| NetError::Io {
                path: PathBuf::from("csv log"),
                error,
            })?;
        }
        history.push(logs.clone());
        obs.on_epoch_end(epoch, s.epochs, steps, &logs, seconds);
        for m in &decision.messages {
            obs.on_message(m);
        }
        epoch += 1;
        let meta = checkpoint::Meta::new(net, &s, &train_data, epoch, 0, &sums, &cbs, &history);
        for p in decision.save.iter().chain(opts.checkpoint.iter()) {
            checkpoint::save(net, p, &meta, &cbs)?;
        }
        snapshot = Snapshot {
            weights: net.weights.clone(),
            opt: net.opt.clone(),
            epoch,
            history_len: history.len(),
            callbacks: cbs.clone(),
        };
        if decision.stop {
            stop = Stop::EarlyStopping { epoch: epoch - 1 };
            break;
        }
        if interrupted() {
            stop = Stop::Interrupted {
                epoch,
                batch: 0,
                checkpoint: opts.checkpoint.clone(),
            };
            break;
        }
    }
    if let Stop::NonFinite { .. } = stop {
        cbs = snapshot.callbacks.clone();
    }

    // on_train_end: early stopping's messages and best weights.
    let mut restored_best = None;
    if !matches!(stop, Stop::Interrupted { .. }) {
        for c in &cbs {
            if let Callback::EarlyStopping {
                restore_best_weights,
                state,
                ..
            } = c
            {
                if state.stopped_epoch > 0 && matches!(stop, Stop::EarlyStopping { .. }) {
                    obs.on_message(&format!(
                        "Epoch {}: early stopping",
                        state.stopped_epoch + 1
                    ));
                }
                if *restore_best_weights && let Some(w) = callbacks::best_weights(state) {
                    obs.on_message(&format!(
                        "Restoring model weights from the end of the best epoch: {}.",
                        state.best_epoch + 1
                    ));
                    net.weights = w.clone();
                    restored_best = Some(state.best_epoch);
                }
            }
        }
    }
    Ok(FitReport {
        history,
        steps: net.opt.step,
        stop,
        restored_best,
        epoch_seconds,
    })
}
