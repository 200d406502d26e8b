//! The one resolver of a run's settings (epochs, batch size, seed, shuffling,
//! validation split): an explicit value (a `FitOptions` field or a CLI flag) wins, then
//! a checkpoint's recorded value when resuming, then the spec's `train:` section, then
//! Keras's default. `fit`, `Net::evaluate` and the CLI all ask this module, so the
//! rules live in one place. The argument schema already guarantees the spec's values
//! are in range; values given by a library caller are checked here, once.

use serde::{Deserialize, Serialize};

use crate::check::Graph;

/// Values given explicitly (`None`: not given).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// Passes over the training data.
    pub epochs: Option<usize>,
    /// Examples per training step.
    pub batch_size: Option<usize>,
    /// The seed of initialization, shuffling and dropout.
    pub seed: Option<u64>,
    /// Whether each epoch visits the examples in a new random order.
    pub shuffle: Option<bool>,
    /// The fraction of the data, taken from its end, held out for validation.
    pub validation_split: Option<f64>,
}

/// The settings a run uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Passes over the training data.
    pub epochs: usize,
    /// Examples per training step.
    pub batch_size: usize,
    /// The seed of initialization, shuffling and dropout.
    pub seed: u64,
    /// Whether each epoch visits the examples in a new random order.
    pub shuffle: bool,
    /// f64 bits (checkpoints store it exactly).
    pub validation_split: u64,
}

impl Settings {
    /// Resolves every setting: `given`, then `ckpt`, then the spec, then Keras's
    /// default. Fails only on explicit values out of range.
    pub fn resolve(
        graph: &Graph,
        given: &Overrides,
        ckpt: Option<&Settings>,
    ) -> Result<Settings, String> {
        if given.batch_size == Some(0) {
            return Err("the batch size must be at least 1".into());
        }
        if given.epochs == Some(0) {
            return Err("the number of epochs must be at least 1".into());
        }
        if let Some(v) = given.validation_split
            && !(0.0..1.0).contains(&v)
        {
            return Err(format!(
                "the validation split must be in [0, 1), but it is {}",
                crate::diag::short_number(v)
            ));
        }
        let fit = graph.train.as_ref().map(|t| &t.decl.fit);
        let spec_int = |k: &str| fit.and_then(|f| f.opt_int(k));
        Ok(Settings {
            epochs: given
                .epochs
                .or(ckpt.map(|c| c.epochs))
                .unwrap_or_else(|| spec_int("epochs").map_or(1, |e| e as usize)),
            batch_size: given
                .batch_size
                .or(ckpt.map(|c| c.batch_size))
                .unwrap_or_else(|| spec_batch_size(graph)),
            seed: given
                .seed
                .or(ckpt.map(|c| c.seed))
                .unwrap_or_else(|| spec_int("seed").map_or(0, |s| s as u64)),
            shuffle: given
                .shuffle
                .or(ckpt.map(|c| c.shuffle))
                .unwrap_or_else(|| fit.is_none_or(|f| f.bool("shuffle"))),
            validation_split: given
                .validation_split
                .map(f64::to_bits)
                .or(ckpt.map(|c| c.validation_split))
                .unwrap_or_else(|| spec_validation_split(graph).to_bits()),
        })
    }

    /// The validation fraction as a number.
    pub fn validation_split(&self) -> f64 {
        f64::from_bits(self.validation_split)
    }
}

/// The spec's batch size, else Keras's default 32 (the schema keeps it ≥ 1).
pub fn spec_batch_size(graph: &Graph) -> usize {
    graph
        .train
        .as_ref()
        .and_then(|t| t.decl.fit.opt_int("batch_size"))
        .map_or(32, |b| b as usize)
}

/// The validation fraction the spec asks for: `validation_split`, else
/// `data.validation_split`, else none.
fn spec_validation_split(graph: &Graph) -> f64 {
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

/// The metrics' names as training logs them (`accuracy`, `out_b_accuracy`), in the
/// order of [`crate::StepOutput::metrics`].
pub fn metric_names(graph: &Graph) -> Vec<String> {
    graph
        .train
        .as_ref()
        .map(|t| t.metrics.iter().map(|m| m.name.clone()).collect())
        .unwrap_or_default()
}

/// The spec's validation data file (`train.validation_data`), as written (relative to
/// the spec's folder).
pub fn spec_validation_data(graph: &Graph) -> Option<&str> {
    let t = graph.train.as_ref()?;
    t.decl.validation_data.as_ref().map(|(p, _)| p.as_str())
}
