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

mod adapt;
pub mod callbacks;
pub mod checkpoint;
mod shard;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::data::Dataset;
use crate::error::Error;
pub use crate::net::Logs;
use crate::net::Net;
use crate::settings::Overrides;
pub use crate::settings::Settings;

/// Settings of a `fit` call; `None` takes the spec's value (or, when resuming, the
/// checkpoint's), then Keras's default.
#[derive(Clone, Debug, Default)]
pub struct FitOptions {
    /// Passes over the training data.
    pub epochs: Option<usize>,
    /// Examples per training step.
    pub batch_size: Option<usize>,
    /// The seed of shuffling and dropout.
    pub seed: Option<u64>,
    /// Whether each epoch visits the examples in a new random order.
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
    /// Continue exactly where a checkpoint stopped ([`Net::load_checkpoint`]).
    pub resume: Option<checkpoint::Resume>,
    /// The run's files, recorded in its checkpoints ([`checkpoint::RunFiles`]).
    pub run_files: Option<checkpoint::RunFiles>,
}

impl FitOptions {
    /// The settings given explicitly, for [`Settings::resolve`].
    pub fn overrides(&self) -> Overrides {
        Overrides {
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed: self.seed,
            shuffle: self.shuffle,
            validation_split: self.validation_split,
        }
    }
}

impl Net {
    /// Keras's `fit` on `data`, silently. See [`Net::fit_with`].
    pub fn fit(&mut self, data: &Dataset, opts: &FitOptions) -> Result<FitReport, Error> {
        self.fit_with(data, opts, &mut Silent)
    }

    /// Keras's `fit`, reporting progress to `observer`: epochs and batches from the
    /// options or the spec, the spec's callbacks, validation on the held-out split.
    pub fn fit_with(
        &mut self,
        data: &Dataset,
        opts: &FitOptions,
        observer: &mut dyn Observer,
    ) -> Result<FitReport, Error> {
        run(self, data, opts, observer)
    }

    /// [`Net::fit_with`] as one of the processes of `comm` (data-parallel training:
    /// the spec's `batch_size` is the global batch, each process computes its share,
    /// gradients are summed over the processes; rank 0 alone writes checkpoints and
    /// logs). Every process calls it with the same data and options. With
    /// [`crate::dist::Single`] it is [`Net::fit_with`].
    pub fn fit_on(
        &mut self,
        data: &Dataset,
        opts: &FitOptions,
        observer: &mut dyn Observer,
        comm: &dyn crate::dist::Comm,
    ) -> Result<FitReport, Error> {
        run::run_on(self, data, opts, observer, comm)
    }
}

/// Why training stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    /// Every epoch ran.
    Completed,
    /// The early-stopping callback stopped after this epoch (0-based).
    EarlyStopping {
        /// The last epoch run (0-based).
        epoch: usize,
    },
    /// Interrupted after `batch` batches of `epoch` (0-based); the checkpoint written.
    Interrupted {
        /// The epoch (0-based).
        epoch: usize,
        /// Batches done in it.
        batch: usize,
        /// The checkpoint written, if the run writes them.
        checkpoint: Option<PathBuf>,
    },
    /// The loss became NaN or infinite at this batch; the weights and optimizer state
    /// were rolled back to the end of the last good epoch (`good_epochs` epochs).
    NonFinite {
        /// The epoch (0-based).
        epoch: usize,
        /// The batch within it (0-based).
        batch: usize,
        /// The optimizer iteration.
        step: u64,
        /// The loss the batch gave.
        loss: f32,
        /// Epochs completed before it, whose weights were kept.
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
    /// Why training stopped.
    pub stop: Stop,
    /// The epoch (0-based) whose weights early stopping restored.
    pub restored_best: Option<usize>,
    /// Seconds spent in each epoch's training batches (this run's epochs only).
    pub epoch_seconds: Vec<f64>,
}

/// Progress reports from `fit` (the CLI draws a bar and Keras's epoch lines).
pub trait Observer {
    /// Before the first epoch: how many examples train and validate.
    fn on_train_begin(&mut self, _train_examples: usize, _val_examples: Option<usize>) {}
    /// Before each epoch: its index (0-based), the number of epochs and of batches.
    fn on_epoch_begin(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// After each batch: batches done in this epoch and the running averages.
    fn on_batch_end(&mut self, _done: usize, _steps: usize, _logs: &Logs) {}
    /// After each epoch: its logs (validation included) and its training time.
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

mod run;
pub use run::{run, run_on};
