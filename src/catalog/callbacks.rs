//! Keras's callbacks, with Keras 3's semantics (keras/src/callbacks/*.py): early
//! stopping (with `restore_best_weights`), model checkpoints (every epoch or the best
//! only), reduce-LR-on-plateau, a CSV log and terminate-on-NaN. Each entry builds its
//! [`Callback`] from its arguments; the fit loop runs them through [`Host`], the little
//! of the loop a callback may see and do.
//!
//! Each callback's state (counters, best values, best weights) is part of a
//! checkpoint, so that a resumed run makes exactly the decisions an uninterrupted one
//! would.

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{entry, find};
use crate::args::{
    ArgKind, ArgSpec, Args, Default, NON_NEGATIVE_FLOAT, Value, arg, float_range, int,
};

/// What a callback sees of the training loop at the end of an epoch, and what it may
/// do to it.
pub trait Host {
    /// A value of the epoch's logs (`loss`, `val_accuracy`, …).
    fn log(&self, name: &str) -> Option<f64>;
    fn set_log(&mut self, name: &str, v: f64);
    fn log_names(&self) -> Vec<String>;
    /// The optimizer's learning rate (f32, as Keras's variable).
    fn lr(&self) -> f32;
    fn set_lr(&mut self, lr: f32);
    /// Stop training after this epoch.
    fn stop(&mut self);
    /// A copy of the current weights.
    fn snapshot(&self) -> Snapshot;
    /// Where a checkpoint named by `template` (Python's format: `{epoch:02d}`,
    /// `{val_loss:.2f}`) goes this epoch.
    fn checkpoint_path(&self, template: &str) -> Result<PathBuf, String>;
    /// Write a full checkpoint (weights, optimizer, state) to `path` after this epoch.
    fn save(&mut self, path: PathBuf);
    /// A message to show (Keras's verbose callback lines).
    fn message(&mut self, m: String);
}

/// A copy of the weights, opaque to the catalog (the training loop owns their type).
#[derive(Clone)]
pub struct Snapshot(Arc<dyn Any + Send + Sync>);

impl Snapshot {
    pub fn new<T: Any + Send + Sync>(weights: T) -> Snapshot {
        Snapshot(Arc::new(weights))
    }
    /// The weights, if they are a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

/// Whether smaller or larger is better for a monitored quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    Min,
    Max,
}

/// EarlyStopping's rule for `mode: auto` (Keras 3): `loss` and the error metrics go
/// down, accuracies go up.
fn early_stopping_direction(mode: &str, monitor: &str) -> Direction {
    match mode {
        "min" => Direction::Min,
        "max" => Direction::Max,
        _ => {
            let m = monitor.strip_prefix("val_").unwrap_or(monitor);
            if m.contains("accuracy") || m == "acc" {
                Direction::Max
            } else {
                Direction::Min
            }
        }
    }
}

/// ModelCheckpoint's and ReduceLROnPlateau's rule for `mode: auto`: "acc" in the name
/// means larger is better.
fn acc_direction(mode: &str, monitor: &str) -> Direction {
    match mode {
        "min" => Direction::Min,
        "max" => Direction::Max,
        _ if monitor.contains("acc") => Direction::Max,
        _ => Direction::Min,
    }
}

/// State of `early_stopping`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EarlyState {
    pub wait: u64,
    pub best: Option<u64>,
    pub best_epoch: usize,
    pub stopped_epoch: usize,
    #[serde(skip)]
    pub best_weights: Option<Snapshot>,
    pub has_best_weights: bool,
}

/// State of `reduce_lr_on_plateau`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlateauState {
    pub wait: u64,
    pub cooldown_counter: u64,
    /// f64 bits of the best value so far.
    pub best: u64,
}

/// State of `model_checkpoint`: the best value so far (f64 bits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub best: u64,
}

/// One callback: its arguments and its state.
#[derive(Clone, Debug)]
pub enum Callback {
    EarlyStopping {
        monitor: String,
        direction: Direction,
        /// Signed as Keras makes it: negative for `min`.
        min_delta: f64,
        patience: u64,
        baseline: Option<f64>,
        restore_best_weights: bool,
        start_from_epoch: usize,
        state: EarlyState,
    },
    ModelCheckpoint {
        filepath: String,
        monitor: String,
        direction: Direction,
        save_best_only: bool,
        state: CheckpointState,
    },
    ReduceLrOnPlateau {
        monitor: String,
        direction: Direction,
        factor: f64,
        patience: u64,
        min_delta: f64,
        cooldown: u64,
        min_lr: f64,
        state: PlateauState,
    },
    CsvLogger {
        filename: String,
        separator: String,
        append: bool,
    },
    TerminateOnNan,
}

/// The serialized state of every callback, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct States {
    pub early: Vec<EarlyState>,
    pub plateau: Vec<PlateauState>,
    pub checkpoint: Vec<CheckpointState>,
}

fn bits(v: f64) -> u64 {
    v.to_bits()
}
fn unbits(b: u64) -> f64 {
    f64::from_bits(b)
}

/// A callback of the catalog.
pub struct CallbackKind {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub args: &'static [ArgSpec],
    /// The callback with its state, from validated arguments.
    pub build: fn(&Args) -> Callback,
}
entry!(CallbackKind, Callback);

const MONITOR: ArgSpec = arg("monitor", ArgKind::Str, Default::Str("val_loss"));
const MODE: ArgSpec = arg(
    "mode",
    ArgKind::Choice(&["auto", "min", "max"]),
    Default::Str("auto"),
);

fn monitor(a: &Args) -> String {
    a.opt_str("monitor").unwrap_or("val_loss").to_string()
}
fn mode(a: &Args) -> &str {
    a.opt_str("mode").unwrap_or("auto")
}
/// The worst value for a direction: the first epoch always improves on it.
fn worst(direction: Direction) -> u64 {
    bits(if direction == Direction::Min {
        f64::INFINITY
    } else {
        f64::NEG_INFINITY
    })
}

pub static EARLY_STOPPING: CallbackKind = CallbackKind {
    name: "early_stopping",
    aliases: &[],
    args: &[
        MONITOR,
        arg("min_delta", NON_NEGATIVE_FLOAT, Default::Float(0.0)),
        arg("patience", int(0), Default::Int(0)),
        MODE,
        arg("baseline", float_range(f64::MIN, f64::MAX), Default::Null),
        arg("restore_best_weights", ArgKind::Bool, Default::Bool(false)),
        arg("start_from_epoch", int(0), Default::Int(0)),
    ],
    build: |a| {
        let monitor = monitor(a);
        let direction = early_stopping_direction(mode(a), &monitor);
        let md = a.float("min_delta").abs();
        Callback::EarlyStopping {
            monitor,
            direction,
            min_delta: if direction == Direction::Min { -md } else { md },
            patience: a.int("patience").max(0) as u64,
            baseline: match a.get("baseline") {
                Value::Float(f) => Some(*f),
                Value::Int(i) => Some(*i as f64),
                _ => None,
            },
            restore_best_weights: a.bool("restore_best_weights"),
            start_from_epoch: a.int("start_from_epoch").max(0) as usize,
            state: EarlyState::default(),
        }
    },
};

pub static MODEL_CHECKPOINT: CallbackKind = CallbackKind {
    name: "model_checkpoint",
    aliases: &[],
    args: &[
        arg(
            "filepath",
            ArgKind::File {
                extensions: &[".safetensors"],
            },
            Default::Required,
        ),
        MONITOR,
        arg("save_best_only", ArgKind::Bool, Default::Bool(false)),
        MODE,
    ],
    build: |a| {
        let monitor = monitor(a);
        let direction = acc_direction(mode(a), &monitor);
        Callback::ModelCheckpoint {
            filepath: a.str("filepath").to_string(),
            monitor,
            direction,
            save_best_only: a.bool("save_best_only"),
            state: CheckpointState {
                best: worst(direction),
            },
        }
    },
};

pub static REDUCE_LR_ON_PLATEAU: CallbackKind = CallbackKind {
    name: "reduce_lr_on_plateau",
    aliases: &[],
    args: &[
        MONITOR,
        arg(
            "factor",
            ArgKind::Float {
                min: 0.0,
                max: 1.0,
                min_open: true,
                max_open: true,
            },
            Default::Float(0.1),
        ),
        arg("patience", int(0), Default::Int(10)),
        MODE,
        arg("min_delta", NON_NEGATIVE_FLOAT, Default::Float(1e-4)),
        arg("cooldown", int(0), Default::Int(0)),
        arg("min_lr", NON_NEGATIVE_FLOAT, Default::Float(0.0)),
    ],
    build: |a| {
        let monitor = monitor(a);
        let direction = acc_direction(mode(a), &monitor);
        Callback::ReduceLrOnPlateau {
            monitor,
            direction,
            factor: a.float("factor"),
            patience: a.int("patience").max(0) as u64,
            min_delta: a.float("min_delta"),
            cooldown: a.int("cooldown").max(0) as u64,
            min_lr: a.float("min_lr"),
            state: PlateauState {
                wait: 0,
                cooldown_counter: 0,
                best: worst(direction),
            },
        }
    },
};

pub static CSV_LOGGER: CallbackKind = CallbackKind {
    name: "csv_logger",
    aliases: &[],
    args: &[
        arg("filename", ArgKind::Str, Default::Required),
        arg("separator", ArgKind::Str, Default::Str(",")),
        arg("append", ArgKind::Bool, Default::Bool(false)),
    ],
    build: |a| Callback::CsvLogger {
        filename: a.str("filename").to_string(),
        separator: a.opt_str("separator").unwrap_or(",").to_string(),
        append: a.bool("append"),
    },
};

pub static TERMINATE_ON_NAN: CallbackKind = CallbackKind {
    name: "terminate_on_nan",
    aliases: &[],
    args: &[],
    build: |_| Callback::TerminateOnNan,
};

/// Every callback (keras.callbacks), by snake_case name.
pub static CALLBACKS: &[&CallbackKind] = &[
    &EARLY_STOPPING,
    &MODEL_CHECKPOINT,
    &REDUCE_LR_ON_PLATEAU,
    &CSV_LOGGER,
    &TERMINATE_ON_NAN,
];

/// The callback called `name` (or an alias), exactly as written.
pub fn lookup(name: &str) -> Option<&'static CallbackKind> {
    find(CALLBACKS, name)
}

impl Callback {
    /// The state of the callbacks, for a checkpoint.
    pub fn save_states(cbs: &[Callback]) -> States {
        let mut s = States::default();
        for c in cbs {
            match c {
                Callback::EarlyStopping { state, .. } => {
                    let mut st = state.clone();
                    st.has_best_weights = st.best_weights.is_some();
                    st.best_weights = None;
                    s.early.push(st)
                }
                Callback::ReduceLrOnPlateau { state, .. } => s.plateau.push(state.clone()),
                Callback::ModelCheckpoint { state, .. } => s.checkpoint.push(state.clone()),
                _ => {}
            }
        }
        s
    }

    /// Restores the callbacks' states from a checkpoint (best weights are restored by
    /// the caller). Returns false when the checkpoint's callbacks differ from these.
    pub fn load_states(cbs: &mut [Callback], s: &States) -> bool {
        let (mut e, mut p, mut k) = (0, 0, 0);
        for c in cbs.iter_mut() {
            match c {
                Callback::EarlyStopping { state, .. } => {
                    let Some(x) = s.early.get(e) else {
                        return false;
                    };
                    *state = x.clone();
                    e += 1;
                }
                Callback::ReduceLrOnPlateau { state, .. } => {
                    let Some(x) = s.plateau.get(p) else {
                        return false;
                    };
                    *state = x.clone();
                    p += 1;
                }
                Callback::ModelCheckpoint { state, .. } => {
                    let Some(x) = s.checkpoint.get(k) else {
                        return false;
                    };
                    *state = x.clone();
                    k += 1;
                }
                _ => {}
            }
        }
        e == s.early.len() && p == s.plateau.len() && k == s.checkpoint.len()
    }
}

/// Runs every callback's `on_epoch_end` in order (Keras's order: the list as written).
/// When a plateau callback is present, `learning_rate` is added to the logs before
/// later callbacks see them, as Keras does.
pub fn on_epoch_end(cbs: &mut [Callback], epoch: usize, host: &mut dyn Host) {
    for c in cbs.iter_mut() {
        match c {
            Callback::EarlyStopping { .. } => early_stopping_end(c, epoch, host),
            Callback::ReduceLrOnPlateau { .. } => plateau_end(c, epoch, host),
            Callback::ModelCheckpoint { .. } => checkpoint_end(c, epoch, host),
            Callback::CsvLogger { .. } | Callback::TerminateOnNan => {}
        }
    }
}

/// Early stopping: stop when the monitored value has not improved for `patience` epochs.
fn early_stopping_end(c: &mut Callback, epoch: usize, host: &mut dyn Host) {
    let Callback::EarlyStopping {
        monitor,
        direction,
        min_delta,
        patience,
        baseline,
        restore_best_weights,
        start_from_epoch,
        state,
    } = c
    else {
        return;
    };
    let Some(current) = host.log(monitor) else {
        host.message(format!(
            "warning: early stopping monitors `{monitor}`, which is not available; available: {}",
            host.log_names().join(", ")
        ));
        return;
    };
    if epoch < *start_from_epoch {
        return;
    }
    if *restore_best_weights && state.best_weights.is_none() {
        state.best_weights = Some(host.snapshot());
        state.best_epoch = epoch;
    }
    state.wait += 1;
    let better = |v: f64, reference: Option<f64>| match reference {
        None => true,
        Some(r) => match direction {
            Direction::Min => v - *min_delta < r,
            Direction::Max => v - *min_delta > r,
        },
    };
    if better(current, state.best.map(unbits)) {
        state.best = Some(bits(current));
        state.best_epoch = epoch;
        if *restore_best_weights {
            state.best_weights = Some(host.snapshot());
        }
        if baseline.is_none() || better(current, *baseline) {
            state.wait = 0;
        }
        return;
    }
    if state.wait >= *patience && epoch > 0 {
        state.stopped_epoch = epoch;
        host.stop();
    }
}

/// Reduce-LR-on-plateau: scale the learning rate down when the monitored value stalls.
fn plateau_end(c: &mut Callback, epoch: usize, host: &mut dyn Host) {
    let Callback::ReduceLrOnPlateau {
        monitor,
        direction,
        factor,
        patience,
        min_delta,
        cooldown,
        min_lr,
        state,
    } = c
    else {
        return;
    };
    host.set_log("learning_rate", f64::from(host.lr()));
    let Some(current) = host.log(monitor) else {
        host.message(format!(
            "warning: reduce_lr_on_plateau monitors `{monitor}`, which is not available; available: {}",
            host.log_names().join(", ")
        ));
        return;
    };
    if state.cooldown_counter > 0 {
        state.cooldown_counter -= 1;
        state.wait = 0;
    }
    let best = unbits(state.best);
    let improved = match direction {
        Direction::Min => current < best - *min_delta,
        Direction::Max => current > best + *min_delta,
    };
    if improved {
        state.best = bits(current);
        state.wait = 0;
    } else if state.cooldown_counter == 0 {
        state.wait += 1;
        let lr_now = host.lr();
        if state.wait >= *patience && lr_now > *min_lr as f32 {
            let new = (f64::from(lr_now) * *factor).max(*min_lr) as f32;
            host.set_lr(new);
            host.message(format!(
                "Epoch {}: ReduceLROnPlateau reducing learning rate to {new}.",
                epoch + 1
            ));
            state.cooldown_counter = *cooldown;
            state.wait = 0;
        }
    }
}

/// Model checkpoint: save every epoch, or when the monitored value improves.
fn checkpoint_end(c: &mut Callback, epoch: usize, host: &mut dyn Host) {
    let Callback::ModelCheckpoint {
        filepath,
        monitor,
        direction,
        save_best_only,
        state,
    } = c
    else {
        return;
    };
    let path = match host.checkpoint_path(filepath) {
        Ok(p) => p,
        Err(e) => {
            host.message(format!("warning: model_checkpoint: {e}"));
            return;
        }
    };
    if !*save_best_only {
        host.save(path);
        return;
    }
    let Some(current) = host.log(monitor) else {
        host.message(format!(
            "warning: model_checkpoint can save the best model only with `{monitor}` available, skipping"
        ));
        return;
    };
    let best = unbits(state.best);
    let better = match direction {
        Direction::Min => current < best,
        Direction::Max => current > best,
    };
    if better {
        host.message(format!(
            "Epoch {}: {monitor} improved from {} to {}, saving model to {}",
            epoch + 1,
            fmt5(best),
            fmt5(current),
            path.display()
        ));
        state.best = bits(current);
        host.save(path);
    }
}

fn fmt5(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:.5}")
    }
}
