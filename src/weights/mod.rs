//! Weights: Keras's initializers, and safetensors files (DESIGN §2, §4).
//!
//! A weight's key is `{layer}/{param}` (`dense_1/kernel`,
//! `lstm/lstm_cell/recurrent_kernel`), its shape and initializer are Keras's, as the
//! checker lists them in [`crate::layers::Param`]. [`init()`] draws every weight of a
//! graph from a seed; [`save`] writes them atomically; [`load`] reads a file without
//! trusting it; [`check_against`] compares a file's weights with what a model expects.
//!
//! Randomness: each weight has its own Philox stream named by its key (see [`crate::rng`]), so
//! a weight's values depend only on the global seed (or the initializer's own `seed`
//! argument, which then replaces it, as in Keras) and its key — not on the other layers
//! of the model, nor on their order.

pub mod init;
pub mod safetensors;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use ndarray::ArrayD;

use crate::check::{Graph, Layer};
use crate::diag::did_you_mean;
use crate::layers::Param;
pub use crate::rng::Rng;
pub use init::Initializer;

/// Metadata keys kiln writes (safetensors metadata maps strings to strings).
pub const META_MODEL: &str = "kiln.model";
/// The global seed the weights were drawn with (by `kiln init`).
pub const META_SEED: &str = "kiln.seed";
/// The kiln version that wrote the file.
pub const META_VERSION: &str = "kiln.version";

/// Named f32 arrays in a fixed order (a model's layer order, or a file's), plus string
/// metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    tensors: Vec<(String, ArrayD<f32>)>,
    index: HashMap<String, usize>,
    /// Free-form string metadata (safetensors `__metadata__`).
    pub metadata: BTreeMap<String, String>,
}

impl Weights {
    /// No tensors and no metadata.
    pub fn new() -> Weights {
        Weights::default()
    }
    /// Adds a tensor at the end, or replaces one of the same key in its place; returns
    /// the replaced array.
    pub fn insert(&mut self, key: impl Into<String>, value: ArrayD<f32>) -> Option<ArrayD<f32>> {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => Some(std::mem::replace(&mut self.tensors[i].1, value)),
            None => {
                self.index.insert(key.clone(), self.tensors.len());
                self.tensors.push((key, value));
                None
            }
        }
    }
    /// The tensor stored under `key`.
    pub fn get(&self, key: &str) -> Option<&ArrayD<f32>> {
        self.index.get(key).map(|&i| &self.tensors[i].1)
    }
    /// The tensor stored under `key`, to change in place.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut ArrayD<f32>> {
        self.index.get(key).map(|&i| &mut self.tensors[i].1)
    }
    /// Whether a tensor is stored under `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }
    /// Removes a tensor, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<ArrayD<f32>> {
        let i = self.index.remove(key)?;
        let (_, a) = self.tensors.remove(i);
        for (_, j) in self.index.iter_mut() {
            if *j > i {
                *j -= 1;
            }
        }
        Some(a)
    }
    /// How many tensors there are.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    /// Tensors in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArrayD<f32>)> {
        self.tensors.iter().map(|(k, a)| (k.as_str(), a))
    }
    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(k, _)| k.as_str())
    }
    /// Total number of values.
    pub fn count(&self) -> usize {
        self.tensors.iter().map(|(_, a)| a.len()).sum()
    }
    /// Same keys in the same order, same shapes, same bits (NaNs included), same
    /// metadata.
    pub fn bit_identical(&self, other: &Weights) -> bool {
        self.metadata == other.metadata
            && self.len() == other.len()
            && self.iter().zip(other.iter()).all(|((ka, a), (kb, b))| {
                ka == kb
                    && a.shape() == b.shape()
                    && a.iter()
                        .zip(b.iter())
                        .all(|(x, y)| x.to_bits() == y.to_bits())
            })
    }
}

/// One way a weights file does not fit a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The model has this weight; the file does not.
    Missing {
        /// The weight's key (Keras's name, e.g. `dense/kernel`).
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// The file has this tensor; the model has no such weight.
    Extra {
        /// The tensor's key in the file.
        key: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// A key of the model that is close (did-you-mean).
        suggestion: Option<String>,
    },
    /// Both have it, in different shapes.
    Shape {
        /// The weight's key.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
}

fn dims(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

impl Mismatch {
    /// The key of the weight or tensor concerned.
    pub fn key(&self) -> &str {
        match self {
            Mismatch::Missing { key, .. }
            | Mismatch::Extra { key, .. }
            | Mismatch::Shape { key, .. } => key,
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Missing { key, expected } => write!(
                f,
                "`{key}` is missing (the model expects a weight of shape {})",
                dims(expected)
            ),
            Mismatch::Extra {
                key,
                found,
                suggestion,
            } => {
                write!(
                    f,
                    "`{key}` (shape {}) is not a weight of this model",
                    dims(found)
                )?;
                match suggestion {
                    Some(s) => write!(f, "; did you mean `{s}`?"),
                    None => Ok(()),
                }
            }
            Mismatch::Shape {
                key,
                expected,
                found,
            } => write!(
                f,
                "`{key}` has shape {}, but the model expects {}",
                dims(found),
                dims(expected)
            ),
        }
    }
}

/// Why weights could not be read, written or used.
#[derive(Debug)]
pub enum WeightsError {
    /// Reading or writing failed (exit code 2).
    Io {
        /// The file.
        path: PathBuf,
        /// `read` or `write`.
        action: &'static str,
        /// The operating system's error.
        error: io::Error,
    },
    /// The file is not a safetensors file kiln can use (exit code 1).
    Format {
        /// The file.
        path: PathBuf,
        /// The tensor concerned, when there is one.
        key: Option<String>,
        /// What is wrong, in a sentence.
        message: String,
    },
    /// A weights file given where a checkpoint is wanted: it has no training state
    /// (exit code 1).
    NotACheckpoint {
        /// The file.
        path: PathBuf,
    },
    /// The file's weights do not fit the model (exit code 1).
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Every way the file and the model disagree.
        problems: Vec<Mismatch>,
    },
}

impl WeightsError {
    /// The process exit code (DESIGN §3): 2 for I/O, 1 for wrong data.
    pub fn exit_code(&self) -> i32 {
        match self {
            WeightsError::Io { .. } => 2,
            _ => 1,
        }
    }
    /// The file concerned.
    pub fn path(&self) -> &Path {
        match self {
            WeightsError::Io { path, .. }
            | WeightsError::Format { path, .. }
            | WeightsError::NotACheckpoint { path }
            | WeightsError::Mismatch { path, .. } => path,
        }
    }
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsError::Io {
                path,
                action,
                error,
            } => write!(f, "{}: cannot {action} the file: {error}", path.display()),
            WeightsError::Format { path, message, .. } => {
                write!(f, "{}: {message}", path.display())
            }
            WeightsError::NotACheckpoint { path } => write!(
                f,
                "{}: this is a weights file, not a checkpoint (it has no training state): \
                 start training from these weights instead of resuming from them",
                path.display()
            ),
            WeightsError::Mismatch { path, problems } => {
                for (i, p) in problems.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{}: {p}", path.display())?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for WeightsError {}

/// The metadata key of a checkpoint's training state (written by `crate::fit`); a
/// weights file has none.
pub const META_TRAIN_STATE: &str = "kiln.train_state";

/// Whether a tensor key of a checkpoint belongs to the training state (optimizer
/// slots, callbacks' saved weights) rather than to the model.
pub fn is_state_key(k: &str) -> bool {
    k.starts_with("optimizer/") || k.starts_with("callback/")
}

/// Reads a safetensors file of f32 tensors, checking every claim it makes.
pub fn load(path: impl AsRef<Path>) -> Result<Weights, WeightsError> {
    let path = path.as_ref();
    let bytes = safetensors::read_file(path)?;
    safetensors::parse(&bytes).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        key: e.key,
        message: e.message,
    })
}

/// Reads a weights file and checks it against a model: every weight present, no other
/// tensor, every shape right.
pub fn load_for(graph: &Graph, path: impl AsRef<Path>) -> Result<Weights, WeightsError> {
    let path = path.as_ref();
    let w = load(path)?;
    check_against(graph, &w).map_err(|problems| WeightsError::Mismatch {
        path: path.to_path_buf(),
        problems,
    })?;
    Ok(w)
}

/// Writes weights as safetensors, atomically: to a temporary file in the same
/// directory, synced, then renamed over `path`. On any error the old file (if any) is
/// untouched and the temporary file is removed.
pub fn save(path: impl AsRef<Path>, w: &Weights) -> Result<(), WeightsError> {
    let path = path.as_ref();
    safetensors::validate(w).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        key: e.key,
        message: e.message,
    })?;
    write_atomic(path, |out| safetensors::write(w, out)).map_err(|error| WeightsError::Io {
        path: path.to_path_buf(),
        action: "write",
        error,
    })
}

/// Atomic writing lives with the other output-path rules (`crate::paths`); it is
/// reached from here too, as weights were its first user.
pub(crate) use crate::paths::write_atomic;

/// Every weight of the graph as `(key, shape)`, in layer order.
pub fn expected(graph: &Graph) -> Vec<(String, Vec<usize>)> {
    graph
        .layers
        .iter()
        .flat_map(|l| {
            l.params.iter().map(move |p| {
                (
                    key(l, p),
                    p.shape.iter().map(|&d| d.max(0) as usize).collect(),
                )
            })
        })
        .collect()
}

/// A weight's key: `{layer}/{param}`.
pub fn key(layer: &Layer, param: &Param) -> String {
    format!("{}/{}", layer.name, param.name)
}

/// Compares weights with what the model expects. Problems come in the model's order
/// (missing and wrong shapes), then the file's extra tensors.
pub fn check_against(graph: &Graph, w: &Weights) -> Result<(), Vec<Mismatch>> {
    let want = expected(graph);
    let mut problems = Vec::new();
    for (key, shape) in &want {
        match w.get(key) {
            None => problems.push(Mismatch::Missing {
                key: key.clone(),
                expected: shape.clone(),
            }),
            Some(a) if a.shape() != shape.as_slice() => problems.push(Mismatch::Shape {
                key: key.clone(),
                expected: shape.clone(),
                found: a.shape().to_vec(),
            }),
            Some(_) => {}
        }
    }
    let wanted: std::collections::HashSet<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    let missing: Vec<&str> = want
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !w.contains_key(k))
        .collect();
    for (key, a) in w.iter() {
        if wanted.contains(key) {
            continue;
        }
        // Prefer a key the file lacks (a renamed layer), then any key of the model.
        let suggestion = did_you_mean(key, missing.iter().copied())
            .or_else(|| did_you_mean(key, want.iter().map(|(k, _)| k.as_str())))
            .map(str::to_string);
        problems.push(Mismatch::Extra {
            key: key.to_string(),
            found: a.shape().to_vec(),
            suggestion,
        });
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Why weights could not be initialized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitError {
    /// The weight's key.
    pub key: String,
    /// Why, in a sentence.
    pub message: String,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot initialize `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for InitError {}

/// Draws every weight of the graph, in layer order, with Keras's initializers, from
/// `seed`. Metadata records the model's name, the seed and kiln's version. Fails only
/// when a weight does not fit in memory (or an initializer is malformed, which a
/// checked graph never has).
pub fn init(graph: &Graph, seed: u64) -> Result<Weights, InitError> {
    let mut w = Weights::new();
    for layer in &graph.layers {
        for p in &layer.params {
            w.insert(key(layer, p), init_param(layer, p, seed)?);
        }
    }
    w.metadata.insert(META_MODEL.into(), graph.name.clone());
    w.metadata.insert(META_SEED.into(), seed.to_string());
    w.metadata
        .insert(META_VERSION.into(), env!("CARGO_PKG_VERSION").into());
    Ok(w)
}

/// Draws one weight of a layer. An LSTM with `unit_forget_bias` (Keras's default) gets
/// its bias as Keras builds it: the bias initializer on `[u]` for the i gate, ones for
/// the f gate, the bias initializer on `[2u]` for the c and o gates.
pub fn init_param(layer: &Layer, param: &Param, seed: u64) -> Result<ArrayD<f32>, InitError> {
    let key = key(layer, param);
    let fail = |message: String| InitError {
        key: key.clone(),
        message,
    };
    let (initializer, init_seed) = Initializer::from_value(&param.init).map_err(fail)?;
    let shape: Vec<usize> = param
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| fail(format!("negative size {d}"))))
        .collect::<Result<_, _>>()?;
    let mut rng = Rng::for_weight(seed, &key, init_seed);
    let forget_bias = layer.kind.facts.cell.is_some_and(|c| c.unit_forget_bias)
        && param.name.ends_with("/bias")
        && layer.args.bool("unit_forget_bias");
    if let ([n], true) = (shape.as_slice(), forget_bias)
        && n % 4 == 0
    {
        let u = n / 4;
        let i = initializer.sample(&[u], &mut rng).map_err(fail)?;
        let co = initializer.sample(&[2 * u], &mut rng).map_err(fail)?;
        let mut data = Vec::new();
        data.try_reserve_exact(*n)
            .map_err(|_| fail("it does not fit in memory".into()))?;
        data.extend(i.iter().copied());
        data.extend(std::iter::repeat_n(1.0f32, u));
        data.extend(co.iter().copied());
        return ArrayD::from_shape_vec(ndarray::IxDyn(&shape), data)
            .map_err(|e| fail(e.to_string()));
    }
    initializer.sample(&shape, &mut rng).map_err(fail)
}

/// The default seed of `kiln init`: the spec's `train.seed`, else 0.
pub fn default_seed(graph: &Graph) -> u64 {
    graph
        .train
        .as_ref()
        .and_then(|t| t.decl.fit.opt_int("seed"))
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(0)
}

/// `12 weights, 235,146 values` for messages.
pub fn describe(w: &Weights) -> String {
    format!(
        "{} weight{}, {} values",
        w.len(),
        if w.len() == 1 { "" } else { "s" },
        crate::layers::group_digits(w.count() as i64)
    )
}

#[cfg(test)]
mod tests;
