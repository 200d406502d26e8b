//! The fit loop in named steps: [`Run::start`] resolves the settings, the split, the
//! resumed position and the callbacks; [`Run::epoch`] runs one epoch's batches;
//! [`Run::end_epoch`] validates, runs the callbacks, logs and checkpoints;
//! [`Run::finish`] applies early stopping's last word. It reaches the model only
//! through [`Net`]'s public methods.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::callbacks::{self, Callback, CsvLog};
use super::shard::Ranks;
use super::{FitOptions, FitReport, Logs, Observer, Settings, Stop, checkpoint};
use crate::data::{self, Dataset};
use crate::dist::Comm;
use crate::error::Error;
use crate::net::{Net, OptState, rng_key};
use crate::settings::spec_validation_data;
use crate::weights::Weights;

/// Running sums of an epoch (Keras's metric states): see [`crate::net::Tally`].
pub(crate) type Sums = crate::net::Tally;

/// What is rolled back when the loss diverges: the state at the end of the last good
/// epoch.
#[derive(Clone)]
struct Snapshot {
    weights: Weights,
    opt: OptState,
    epoch: usize,
    history_len: usize,
    callbacks: Vec<Callback>,
}

/// One `fit` call in progress.
struct Run<'a> {
    net: &'a mut Net,
    opts: &'a FitOptions,
    obs: &'a mut dyn Observer,
    s: Settings,
    train: Dataset,
    /// The training examples and their fingerprint, for checkpoints.
    train_id: (usize, u64),
    val: Option<Dataset>,
    cbs: Vec<Callback>,
    csv_logs: Vec<CsvLog>,
    history: Vec<Logs>,
    sums: Sums,
    start_epoch: usize,
    start_batch: usize,
    snapshot: Snapshot,
    epoch_seconds: Vec<f64>,
    /// The processes of the run (one, or several under MPI).
    ranks: Ranks<'a>,
    /// With several processes: whether any was asked to stop, as of the last batch.
    agreed_stop: bool,
}

/// Keras's `fit`. See the module documentation.
pub fn run(
    net: &mut Net,
    data: &Dataset,
    opts: &FitOptions,
    obs: &mut dyn Observer,
) -> Result<FitReport, Error> {
    run_on(net, data, opts, obs, &crate::dist::Single)
}

/// Keras's `fit` as one of the processes of `comm` (data-parallel training, see
/// `shard.rs`); every process calls it with the same data and options, and only rank 0
/// writes checkpoints and logs.
pub fn run_on(
    net: &mut Net,
    data: &Dataset,
    opts: &FitOptions,
    obs: &mut dyn Observer,
    comm: &dyn Comm,
) -> Result<FitReport, Error> {
    let mut r = Run::start(net, data, opts, obs, comm)?;
    let mut stop = Stop::Completed;
    let mut epoch = r.start_epoch;
    while epoch < r.s.epochs {
        if let Some(s) = r.epoch(epoch)? {
            stop = s;
            break;
        }
        epoch += 1;
        if let Some(s) = r.end_epoch(epoch)? {
            stop = s;
            break;
        }
    }
    r.finish(stop)
}

impl<'a> Run<'a> {
    fn start(
        net: &'a mut Net,
        data: &Dataset,
        opts: &'a FitOptions,
        obs: &'a mut dyn Observer,
        comm: &'a dyn Comm,
    ) -> Result<Run<'a>, Error> {
        let graph = net.graph().clone();
        let Some(train) = graph.train.as_ref() else {
            return Err(Error::Invalid(format!(
                "the spec of `{}` has no `train` section",
                graph.name
            )));
        };
        if data.target_count() != train.targets.len() {
            return Err(Error::Invalid(format!(
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
        let resume = opts.resume.clone();
        let ckpt_settings = resume.as_ref().and_then(|r| r.meta.settings.clone());
        let s = Settings::resolve(&graph, &opts.overrides(), ckpt_settings.as_ref())
            .map_err(Error::Invalid)?;
        let (train_data, val_data) = match (&opts.validation_data, spec_validation_data(&graph)) {
            (Some(v), _) => (data.clone(), Some(v.clone())),
            // Keras: `validation_data` wins over `validation_split`.
            (None, Some(p)) => {
                let path = crate::net::join_clean(net.spec_dir(), Path::new(p));
                let opts = data::LoadOptions {
                    targets: true,
                    ..data::LoadOptions::default()
                };
                (data.clone(), Some(Dataset::open(&path, &graph, &opts)?))
            }
            (None, None) => data.split(s.validation_split())?,
        };
        let train_data = net.with_class_weights(train_data)?;
        let train_id = (train_data.len(), train_data.fingerprint()?);
        let ranks = Ranks::new(net, comm, s.batch_size)?;
        ranks.check_same_data(train_id)?;
        if let Some(r) = &resume
            && let Some(id) = r.meta.data
            && id != train_id
        {
            obs.on_message(&format!(
                "warning: the checkpoint was trained on other data ({} training examples, now {}); the run will not match an uninterrupted one",
                id.0,
                train_data.len()
            ));
        }
        // Compiles the step and checks the optimizer state now, before any epoch.
        net.optimizer_state_keys()?;
        net.start_learning_rate();
        super::adapt::adapt(net, data)?;
        let cbs = spec_callbacks(net, opts, net.learning_rate_is_schedule())?;
        let sums = net.tally()?;
        let snapshot = Snapshot {
            weights: net.weights().clone(),
            opt: net.optimizer_state().clone(),
            epoch: 0,
            history_len: 0,
            callbacks: cbs.clone(),
        };
        let mut r = Run {
            net,
            opts,
            obs,
            s,
            train: train_data,
            train_id,
            val: val_data,
            sums,
            cbs,
            csv_logs: Vec::new(),
            history: Vec::new(),
            start_epoch: 0,
            start_batch: 0,
            snapshot,
            epoch_seconds: Vec::new(),
            ranks,
            agreed_stop: false,
        };
        if let Some(res) = resume {
            r.resume(res);
        }
        r.open_csv_logs()?;
        r.obs
            .on_train_begin(r.train.len(), r.val.as_ref().map(Dataset::len));
        r.take_snapshot(r.start_epoch);
        Ok(r)
    }

    /// Continues from a checkpoint's position: callbacks' state, history, the epoch
    /// and batch, and the running sums of a partly done epoch.
    fn resume(&mut self, r: checkpoint::Resume) {
        if !Callback::load_states(&mut self.cbs, &r.meta.callbacks) {
            self.obs.on_message(
                "warning: the checkpoint's callbacks differ from the spec's; their state starts afresh",
            );
        } else {
            let mut bw = r.best_weights.into_iter();
            for c in self.cbs.iter_mut() {
                if let Callback::EarlyStopping { state, .. } = c {
                    state.best_weights = bw.next().flatten().map(callbacks::Snapshot::new);
                }
            }
        }
        self.history = r.meta.history_logs();
        self.start_epoch = r.meta.epoch;
        self.start_batch = r.meta.batch;
        if self.start_batch > 0 && r.meta.sums.len() == self.sums.values.len() + 1 {
            self.sums.count = f64::from_bits(r.meta.sums[0]);
            for (k, b) in r.meta.sums[1..].iter().enumerate() {
                self.sums.values[k] = f64::from_bits(*b);
            }
        } else {
            self.start_batch = 0;
        }
    }

    /// The CSV logs: the spec's `csv_logger` callbacks and `FitOptions::csv_log` (rank
    /// 0's only).
    fn open_csv_logs(&mut self) -> Result<(), Error> {
        if !self.ranks.speaks() {
            return Ok(());
        }
        let open = |path: PathBuf, sep: &str, append: bool, hist: &[Logs]| {
            CsvLog::open(path.clone(), sep, append, hist).map_err(|error| Error::Io {
                path,
                action: "write",
                error,
            })
        };
        for c in &self.cbs {
            if let Callback::CsvLogger {
                filename,
                separator,
                append,
            } = c
            {
                let path = crate::net::join_clean(self.net.spec_dir(), Path::new(filename));
                self.csv_logs
                    .push(open(path, separator, *append, &self.history)?);
            }
        }
        if let Some(p) = &self.opts.csv_log {
            self.csv_logs
                .push(open(p.clone(), ",", false, &self.history)?);
        }
        Ok(())
    }

    fn take_snapshot(&mut self, epoch: usize) {
        self.snapshot = Snapshot {
            weights: self.net.weights().clone(),
            opt: self.net.optimizer_state().clone(),
            epoch,
            history_len: self.history.len(),
            callbacks: self.cbs.clone(),
        };
    }

    /// Whether training was asked to stop (with several processes: whether any was, as
    /// of the last batch's sums).
    fn interrupted(&self) -> bool {
        if self.ranks.distributed() {
            return self.agreed_stop;
        }
        self.local_interrupt()
    }

    fn local_interrupt(&self) -> bool {
        self.opts
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Runs the batches of `epoch`; `Some` when training stops inside it.
    fn epoch(&mut self, epoch: usize) -> Result<Option<Stop>, Error> {
        let (n, bs) = (self.train.len(), self.s.batch_size);
        let steps = data::num_batches(n, bs);
        self.obs.on_epoch_begin(epoch, self.s.epochs, steps);
        let order: Vec<usize> = if self.s.shuffle {
            data::permutation(n, self.s.seed, epoch as u64)
        } else {
            (0..n).collect()
        };
        let t0 = Instant::now();
        let first = if epoch == self.start_epoch {
            self.start_batch
        } else {
            0
        };
        if first == 0 {
            self.sums.reset();
        }
        for b in first..steps {
            let idx = data::batch_indices(&order, bs, b);
            let step = self.net.optimizer_state().step;
            let lr = self.net.learning_rate();
            let loss = if self.ranks.distributed() {
                let stop = self.local_interrupt();
                let r = self.ranks.step(
                    self.net,
                    &self.train,
                    idx,
                    self.s.seed,
                    lr,
                    &mut self.sums,
                    stop,
                )?;
                self.agreed_stop = r.stop;
                r.loss
            } else {
                let (xs, ys) = self.train.gather(idx)?;
                let w = self.train.gather_weights(idx)?;
                let out =
                    self.net
                        .train_step_weighted(xs, ys, w, lr, rng_key(self.s.seed, step))?;
                if out.loss.is_finite() {
                    self.sums
                        .add(out.loss, &out.output_losses, &out.metric_states, idx.len());
                }
                out.loss
            };
            if !loss.is_finite() {
                return Ok(Some(self.roll_back(epoch, b, step, loss)?));
            }
            self.obs
                .on_batch_end(b + 1, steps, &self.net.tally_logs(&self.sums));
            if self.interrupted() && b + 1 < steps {
                return Ok(Some(self.interrupt(epoch, b + 1)?));
            }
        }
        self.epoch_seconds.push(t0.elapsed().as_secs_f64());
        Ok(None)
    }

    /// The loss diverged: back to the end of the last good epoch.
    fn roll_back(
        &mut self,
        epoch: usize,
        batch: usize,
        step: u64,
        loss: f32,
    ) -> Result<Stop, Error> {
        self.net.set_weights(self.snapshot.weights.clone())?;
        self.net.set_optimizer_state(self.snapshot.opt.clone());
        self.history.truncate(self.snapshot.history_len);
        self.cbs = self.snapshot.callbacks.clone();
        Ok(Stop::NonFinite {
            epoch,
            batch,
            step,
            loss,
            good_epochs: self.snapshot.epoch,
        })
    }

    /// Interrupted after `batch` batches of `epoch`: write the checkpoint.
    fn interrupt(&mut self, epoch: usize, batch: usize) -> Result<Stop, Error> {
        let path = self.opts.checkpoint.clone();
        if let Some(p) = path.as_ref().filter(|_| self.ranks.speaks()) {
            let meta = self.meta(epoch, batch);
            checkpoint::save(self.net, p, &meta, &self.cbs)?;
        }
        Ok(Stop::Interrupted {
            epoch,
            batch,
            checkpoint: path,
        })
    }

    fn meta(&self, epoch: usize, batch: usize) -> checkpoint::Meta {
        let mut m = checkpoint::Meta::new(
            self.net,
            &self.s,
            self.train_id,
            epoch,
            batch,
            &self.sums,
            &self.cbs,
            &self.history,
        );
        m.run = self.opts.run_files.clone();
        m
    }

    /// After `epochs_done` epochs: validation, callbacks, logs, checkpoints; `Some`
    /// when training stops here.
    fn end_epoch(&mut self, epochs_done: usize) -> Result<Option<Stop>, Error> {
        let epoch = epochs_done - 1;
        let steps = data::num_batches(self.train.len(), self.s.batch_size);
        let seconds = self.epoch_seconds.last().copied().unwrap_or(0.0);
        let mut logs = self.net.tally_logs(&self.sums);
        if let Some(v) = &self.val {
            let vl = self.ranks.validate(self.net, v, self.s.batch_size)?;
            for (k, x) in vl.iter() {
                logs.set(&format!("val_{k}"), x);
            }
        }
        let lr_now = self.net.optimizer_state().lr.unwrap_or(0.001);
        let decision = callbacks::on_epoch_end(
            &mut self.cbs,
            epoch,
            &mut logs,
            lr_now,
            self.net.weights(),
            self.net.spec_dir(),
        );
        if let Some(l) = decision.new_lr {
            self.net.set_learning_rate(Some(l));
        }
        for c in &mut self.csv_logs {
            c.row(epoch, &logs).map_err(|error| Error::Io {
                path: PathBuf::from("csv log"),
                action: "write",
                error,
            })?;
        }
        self.history.push(logs.clone());
        self.obs
            .on_epoch_end(epoch, self.s.epochs, steps, &logs, seconds);
        for m in &decision.messages {
            self.obs.on_message(m);
        }
        let meta = self.meta(epochs_done, 0);
        let saves = decision.save.iter().chain(self.opts.checkpoint.iter());
        for p in saves.filter(|_| self.ranks.speaks()) {
            checkpoint::save(self.net, p, &meta, &self.cbs)?;
        }
        self.take_snapshot(epochs_done);
        if decision.stop {
            return Ok(Some(Stop::EarlyStopping { epoch }));
        }
        let stop = self.local_interrupt();
        if self.ranks.any(stop) {
            return Ok(Some(Stop::Interrupted {
                epoch: epochs_done,
                batch: 0,
                checkpoint: self.opts.checkpoint.clone(),
            }));
        }
        Ok(None)
    }

    /// on_train_end: early stopping's messages and best weights; the report.
    fn finish(self, stop: Stop) -> Result<FitReport, Error> {
        let mut restored_best = None;
        if !matches!(stop, Stop::Interrupted { .. }) {
            for c in &self.cbs {
                if let Callback::EarlyStopping {
                    restore_best_weights,
                    state,
                    ..
                } = c
                {
                    if state.stopped_epoch > 0 && matches!(stop, Stop::EarlyStopping { .. }) {
                        self.obs.on_message(&format!(
                            "Epoch {}: early stopping",
                            state.stopped_epoch + 1
                        ));
                    }
                    if *restore_best_weights && let Some(w) = callbacks::best_weights(state) {
                        self.obs.on_message(&format!(
                            "Restoring model weights from the end of the best epoch: {}.",
                            state.best_epoch + 1
                        ));
                        self.net.set_weights(w.clone())?;
                        restored_best = Some(state.best_epoch);
                    }
                }
            }
        }
        Ok(FitReport {
            history: self.history,
            steps: self.net.optimizer_state().step,
            stop,
            restored_best,
            epoch_seconds: self.epoch_seconds,
        })
    }
}

/// The spec's callbacks (none with `no_callbacks`), refusing reduce-LR-on-plateau
/// next to a learning-rate schedule as Keras does.
fn spec_callbacks(net: &Net, opts: &FitOptions, is_schedule: bool) -> Result<Vec<Callback>, Error> {
    if opts.no_callbacks {
        return Ok(Vec::new());
    }
    let train = net.graph().train.as_ref();
    let cbs: Vec<Callback> = train
        .map(|t| t.decl.callbacks.iter().map(callbacks::from_spec).collect())
        .unwrap_or_default();
    if is_schedule
        && cbs
            .iter()
            .any(|c| matches!(c, Callback::ReduceLrOnPlateau { .. }))
    {
        return Err(Error::Invalid(
            "`reduce_lr_on_plateau` sets the learning rate, but the optimizer's `learning_rate` is a schedule, which decides it (Keras refuses this too): use a number as the learning rate, or drop one of them".into(),
        ));
    }
    Ok(cbs)
}
