//! Checkpoints: one safetensors file holding everything a run needs to continue
//! exactly, written atomically (temporary file, fsync, rename).
//!
//! Tensors: every weight under its key (so a checkpoint also loads as weights), the
//! optimizer state under `optimizer/{param}/{slot}` (the training step's own input
//! names), and early stopping's best weights under `callback/{i}/best/{param}`.
//! Metadata: `kiln.step`, `kiln.epoch` (readable), and `kiln.train_state`, a JSON
//! record of the rest — the batch within the epoch, the learning rate, the settings
//! (seed, batch size, shuffling, validation split, epochs), a fingerprint of the
//! training data, the epoch's running sums, the callbacks' state and the history.
//! Floats in the JSON are stored as their bits, so nothing is rounded on the way.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::callbacks::{Callback, States};
use super::run::Sums;
use super::{Logs, Settings};
use crate::error::Error;
use crate::net::{Net, OptState};
use crate::weights::{self, Weights, WeightsError};

/// The metadata key of the JSON record.
pub const META_STATE: &str = weights::META_TRAIN_STATE;
/// Readable copies of the position.
pub const META_STEP: &str = "kiln.step";
/// The epoch's readable copy (see [`META_STEP`]).
pub const META_EPOCH: &str = "kiln.epoch";

/// The JSON record of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The version of this record's layout.
    pub format: u32,
    /// Optimizer iterations done.
    pub step: u64,
    /// The epoch to continue in (0-based): epochs done when `batch` is 0.
    pub epoch: usize,
    /// Batches already done in `epoch`.
    pub batch: usize,
    /// The current learning rate (f32 bits), when it is a number.
    pub lr: Option<u32>,
    /// The run's settings (`None` for a checkpoint written between runs).
    pub settings: Option<Settings>,
    /// Training examples and their fingerprint.
    pub data: Option<(usize, u64)>,
    /// Running sums of the epoch in progress (f64 bits): count, loss, metrics.
    pub sums: Vec<u64>,
    /// Each callback's state (early stopping's best value and patience, …).
    pub callbacks: States,
    /// Per-epoch logs so far (f64 bits).
    pub history: Vec<Vec<(String, u64)>>,
    /// The files the run read and wrote, so that `--resume CKPT` alone continues it
    /// (absent in checkpoints of library runs that did not say).
    #[serde(default)]
    pub run: Option<RunFiles>,
}

/// Where a run reads its data and writes its results, as its caller gave them
/// (absolute paths when the caller made them so), kept in its checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFiles {
    /// The training data.
    pub data: Option<std::path::PathBuf>,
    /// The target's column, for `.csv` data.
    pub target_column: Option<String>,
    /// Where the trained weights go.
    pub out: Option<std::path::PathBuf>,
    /// The per-epoch CSV log.
    pub log: Option<std::path::PathBuf>,
    /// The training-curve plot.
    pub plot: Option<std::path::PathBuf>,
}

impl Meta {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        net: &Net,
        s: &Settings,
        train: (usize, u64),
        epoch: usize,
        batch: usize,
        sums: &Sums,
        cbs: &[Callback],
        history: &[Logs],
    ) -> Meta {
        let mut sv = vec![sums.count.to_bits()];
        sv.extend(sums.values.iter().map(|v| v.to_bits()));
        Meta {
            format: 1,
            step: net.optimizer_state().step,
            epoch,
            batch,
            lr: net.optimizer_state().lr.map(f32::to_bits),
            settings: Some(s.clone()),
            data: Some(train),
            sums: if batch > 0 { sv } else { Vec::new() },
            callbacks: Callback::save_states(cbs),
            history: history
                .iter()
                .map(|l| {
                    l.iter()
                        .map(|(k, v)| (k.to_string(), v.to_bits()))
                        .collect()
                })
                .collect(),
            run: None,
        }
    }

    /// The history as logs.
    pub fn history_logs(&self) -> Vec<Logs> {
        self.history
            .iter()
            .map(|e| {
                let mut l = Logs::default();
                for (k, b) in e {
                    l.set(k, f64::from_bits(*b));
                }
                l
            })
            .collect()
    }
}

/// A loaded checkpoint's position, consumed by the next `fit`.
#[derive(Clone, Debug)]
pub struct Resume {
    /// Where the run stood.
    pub meta: Meta,
    /// Early stopping's best weights, one entry per early-stopping callback.
    pub best_weights: Vec<Option<Weights>>,
}

/// Writes a checkpoint of `net` at the position `meta` describes.
pub(crate) fn save(net: &Net, path: &Path, meta: &Meta, cbs: &[Callback]) -> Result<(), Error> {
    let mut w = Weights::new();
    for (k, a) in net.weights().iter() {
        w.insert(k, a.clone());
    }
    for (k, a) in net.optimizer_state().slots.iter() {
        w.insert(k, a.clone());
    }
    let mut i = 0;
    for c in cbs {
        if let Callback::EarlyStopping { state, .. } = c {
            if let Some(b) = super::callbacks::best_weights(state) {
                for (k, a) in b.iter() {
                    w.insert(format!("callback/{i}/best/{k}"), a.clone());
                }
            }
            i += 1;
        }
    }
    w.metadata
        .insert(weights::META_MODEL.into(), net.graph().name.clone());
    w.metadata.insert(
        weights::META_VERSION.into(),
        env!("CARGO_PKG_VERSION").into(),
    );
    w.metadata.insert(META_STEP.into(), meta.step.to_string());
    w.metadata.insert(META_EPOCH.into(), meta.epoch.to_string());
    let json = serde_json::to_string(meta)
        .map_err(|e| Error::internal(format!("cannot encode the checkpoint: {e}")))?;
    w.metadata.insert(META_STATE.into(), json);
    weights::save(path, &w)?;
    Ok(())
}

/// Writes a checkpoint between runs: weights and optimizer state; a `fit` resumed from
/// it starts at epoch 0 with the optimizer's state and step.
fn save_idle(net: &mut Net, path: &Path) -> Result<(), Error> {
    let meta = Meta {
        format: 1,
        step: net.optimizer_state().step,
        epoch: 0,
        batch: 0,
        lr: net.optimizer_state().lr.map(f32::to_bits),
        settings: None,
        data: None,
        sums: Vec::new(),
        callbacks: States::default(),
        history: Vec::new(),
        run: None,
    };
    save(net, path, &meta, &[])
}

impl Net {
    /// Loads a checkpoint written by training: weights and optimizer state now, and
    /// where training stopped as the returned [`Resume`]; pass it as
    /// [`FitOptions::resume`](super::FitOptions::resume) and the next `fit` continues
    /// exactly.
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<Resume, Error> {
        load(self, path.as_ref())
    }

    /// Writes a checkpoint of the current state (weights and optimizer state; between
    /// `fit` calls it resumes at the start of a new `fit`).
    pub fn save_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<(), Error> {
        save_idle(self, path.as_ref())
    }
}

/// Loads a checkpoint into `net`: weights, optimizer state and position.
fn load(net: &mut Net, path: &Path) -> Result<Resume, Error> {
    let mut w = weights::load(path)?;
    check_finite(path, &w)?;
    let bad = |m: String| {
        Error::Weights(WeightsError::Format {
            path: path.to_path_buf(),
            key: None,
            message: m,
        })
    };
    let Some(json) = w.metadata.get(META_STATE).cloned() else {
        return Err(Error::Weights(WeightsError::NotACheckpoint {
            path: path.to_path_buf(),
        }));
    };
    let meta: Meta = serde_json::from_str(&json)
        .map_err(|e| bad(format!("the checkpoint's training state is corrupt: {e}")))?;
    if meta.format != 1 {
        return Err(bad(format!(
            "checkpoint format {} is not one this kiln reads",
            meta.format
        )));
    }
    // Split the tensors: optimizer slots, best weights, model weights.
    let mut slots = Weights::new();
    let mut best: Vec<Option<Weights>> = vec![None; meta.callbacks.early.len()];
    let keys: Vec<String> = w.keys().map(str::to_string).collect();
    for k in keys {
        if k.starts_with("optimizer/") {
            if let Some(a) = w.remove(&k) {
                slots.insert(k, a);
            }
        } else if let Some(rest) = k.strip_prefix("callback/") {
            let a = w.remove(&k);
            let (i, key) = rest
                .split_once("/best/")
                .and_then(|(i, key)| Some((i.parse::<usize>().ok()?, key)))
                .ok_or_else(|| bad(format!("unknown checkpoint tensor `{k}`")))?;
            let slot = best
                .get_mut(i)
                .ok_or_else(|| bad(format!("checkpoint tensor `{k}` has no callback")))?;
            if let Some(a) = a {
                slot.get_or_insert_with(Weights::new).insert(key, a);
            }
        }
    }
    net.set_weights(w).map_err(|e| match e {
        Error::Weights(WeightsError::Mismatch { problems, .. }) => {
            Error::Weights(WeightsError::Mismatch {
                path: path.to_path_buf(),
                problems,
            })
        }
        e => e,
    })?;
    for b in best.iter_mut().flatten() {
        let ordered = order_like(net.weights(), b);
        if ordered.len() != net.weights().len() {
            return Err(bad("early stopping's best weights are incomplete".into()));
        }
        *b = ordered;
    }
    // Optimizer slots must match the parameters' shapes.
    for (k, a) in slots.iter() {
        let param = k
            .strip_prefix("optimizer/")
            .and_then(|r| r.rsplit_once('/'))
            .map(|(p, _)| p)
            .unwrap_or("");
        match net.weights().get(param) {
            Some(p) if p.shape() == a.shape() => {}
            _ => {
                return Err(bad(format!(
                    "the optimizer state `{k}` does not fit a parameter of this model"
                )));
            }
        }
    }
    if let Ok(keys) = net.optimizer_state_keys() {
        let missing: Vec<&String> = keys.iter().filter(|k| !slots.contains_key(k)).collect();
        if !missing.is_empty() && !slots.is_empty() {
            return Err(bad(format!(
                "the checkpoint's optimizer state does not match the spec's optimizer (missing `{}`)",
                missing[0]
            )));
        }
    }
    net.set_optimizer_state(OptState {
        slots,
        step: meta.step,
        lr: meta.lr.map(f32::from_bits),
    });
    Ok(Resume {
        meta,
        best_weights: best,
    })
}

/// Refuses weights (or a checkpoint's tensors) holding NaN or infinite values, naming
/// the file, the tensor and the first such value: kiln writes neither weights nor
/// checkpoints from a run whose loss stopped being finite, so such a file is damaged,
/// and training or predicting from it would only give NaN.
pub fn check_finite(path: &Path, w: &Weights) -> Result<(), Error> {
    for (k, a) in w.iter() {
        let Some(first) = a.iter().position(|v| !v.is_finite()) else {
            continue;
        };
        let nan = a.iter().filter(|v| v.is_nan()).count();
        let inf = a.iter().filter(|v| v.is_infinite()).count();
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let what = match (nan, inf) {
            (n, 0) => format!("{n} NaN value{}", plural(n)),
            (0, i) => format!("{i} infinite value{}", plural(i)),
            (n, i) => format!("{n} NaN and {i} infinite value{}", plural(i)),
        };
        return Err(Error::Weights(WeightsError::Format {
            path: path.to_path_buf(),
            key: Some(k.to_string()),
            message: format!(
                "the tensor `{k}` holds {what}, the first at {}: the file is damaged (kiln never writes non-finite weights); use an earlier checkpoint, or other weights",
                position(first, a.shape())
            ),
        }));
    }
    Ok(())
}

/// The position of flat index `i` in `shape`, as `[a, b]`.
fn position(mut i: usize, shape: &[usize]) -> String {
    let mut ix = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            ix[k] = i % d;
            i /= d;
        }
    }
    let p: Vec<String> = ix.iter().map(usize::to_string).collect();
    format!("[{}]", p.join(", "))
}

/// `b`'s tensors in the order of `like`.
fn order_like(like: &Weights, b: &Weights) -> Weights {
    let mut out = Weights::new();
    for (k, _) in like.iter() {
        if let Some(a) = b.get(k) {
            out.insert(k, a.clone());
        }
    }
    out
}
