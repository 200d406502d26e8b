//! The library's compiled model (DESIGN §5): a checked spec made executable.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = kiln::Model::from_path("specs/digits_cnn.yaml")?; // parse + check
//! let mut net = model.compile(&kiln::Options::default())?;      // compile
//! let data = net.load_data("data/digits.npz")?;                 // checked against the spec
//! let report = net.fit(&data, &kiln::FitOptions::default())?;   // Keras's fit (crate::fit)
//! net.save_weights("weights.safetensors")?;
//! let x = data.inputs[0].1.clone();
//! let logits = net.predict(&[("image", x.view())])?;           // ndarray in, ndarray out
//! # Ok(()) }
//! ```
//!
//! A `Net` is the compiled model only: predict, evaluate, one training step, weights
//! and optimizer state in and out. The fit loop, callbacks and checkpoints sit above it
//! (`crate::fit`) and use nothing but its public methods.
//!
//! Every function of a [`Net`] goes through [`crate::runtime::compile`] and the
//! [`Kernel`] trait, so it runs on whichever backend the [`Options`] chose. Arrays
//! handed in are checked against the spec (names, dtypes, shapes, symbols) before any
//! compiled code runs. A `Net` can be shared across threads for inference.

mod input;
mod logs;
mod split;
mod step;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::budget::{self, Estimate, Work};
use crate::check::Graph;
use crate::data::{Dataset, LoadOptions};
use crate::error::Error;
use crate::runtime::{self, Backend, Kernel};
use crate::weights::{self, Weights, WeightsError};
use crate::{Model, lower, settings};

pub use input::Input;
pub use logs::{Logs, Tally};
pub use split::{ShardGradients, SplitStep};
use step::{EvalKernel, TrainKernel};
pub use step::{OptState, StepOutput, rng_key};

/// How to compile a model.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Which executor runs the compiled functions (native code by default).
    pub backend: Backend,
    /// The seed of the initial weights [default: the spec's `train.seed`, else 0].
    pub seed: Option<u64>,
    /// The memory budget in bytes [default: `KILN_MEMORY_LIMIT`, else 3/4 of the
    /// available memory]: a model estimated to need more is refused with
    /// [`Error::Budget`] before anything is allocated for it.
    pub memory_limit: Option<u64>,
}

/// A model compiled for a backend, with its weights.
pub struct Net {
    pub(crate) graph: Graph,
    /// The spec's folder: relative paths in the spec (data, callbacks) start here.
    pub(crate) spec_dir: PathBuf,
    pub(crate) backend: Backend,
    /// Every parameter, in the model's order.
    pub(crate) weights: Weights,
    predict: Arc<dyn Kernel>,
    train: Option<Arc<TrainKernel>>,
    eval: Mutex<Option<Arc<EvalKernel>>>,
    opt: OptState,
    /// The seed the `Net` was compiled with: weights, and dropout's keys in
    /// [`Net::train_on_batch`].
    seed: u64,
    /// [`Options::memory_limit`], checked again before the training step is compiled.
    memory_limit: Option<u64>,
}

/// The library's one memory-budget check (issue 14): estimates what `work` needs for
/// `graph` at batch size `batch`, other symbols bound by `dims` (1 when absent), and
/// refuses it with [`Error::Budget`] when over `limit` (`None`: `KILN_MEMORY_LIMIT`,
/// else 3/4 of the available memory). [`Model::compile`] and the first training step
/// check here before they allocate; so does the command line, with its
/// `--memory-limit`, once more when the data's sizes are known.
pub fn check_budget(
    graph: &Graph,
    work: Work,
    batch: usize,
    dims: &HashMap<String, i64>,
    limit: Option<u64>,
) -> Result<Estimate, Error> {
    let limit = budget::limit(limit).map_err(Error::Invalid)?;
    match budget::check(graph, work, batch, dims, limit)? {
        Ok(estimate) => Ok(estimate),
        Err(over) => Err(Error::from(over)),
    }
}

impl Model {
    /// Compiles the model's forward pass and initializes its weights (Keras's
    /// initializers, from `opts.seed` or the spec's seed). Training and evaluation
    /// functions are compiled when first used.
    ///
    /// Before anything is allocated, the parameters and the forward pass at the spec's
    /// batch size are checked against the memory budget ([`check_budget`]).
    pub fn compile(&self, opts: &Options) -> Result<Net, Error> {
        let batch = settings::spec_batch_size(&self.graph);
        check_budget(
            &self.graph,
            Work::Infer,
            batch,
            &HashMap::new(),
            opts.memory_limit,
        )?;
        let seed = opts
            .seed
            .unwrap_or_else(|| weights::default_seed(&self.graph));
        let w = weights::init(&self.graph, seed).map_err(|e| Error::Invalid(e.to_string()))?;
        let f = lower::predict_func(&self.graph)?;
        let predict = runtime::compile(&f, opts.backend)?;
        let spec_dir = self
            .path
            .as_ref()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Net {
            graph: self.graph.clone(),
            spec_dir,
            backend: opts.backend,
            weights: w,
            predict,
            train: None,
            eval: Mutex::new(None),
            opt: OptState::default(),
            seed,
            memory_limit: opts.memory_limit,
        })
    }
}

/// Reorders weights into the model's order and drops anything else (a checkpoint's
/// optimizer state), after checking them against the model.
fn model_weights(graph: &Graph, path: &Path, mut w: Weights) -> Result<Weights, WeightsError> {
    let is_checkpoint = w.metadata.contains_key(weights::META_TRAIN_STATE);
    let state: Vec<String> = w
        .keys()
        .filter(|k| is_checkpoint && weights::is_state_key(k))
        .map(str::to_string)
        .collect();
    for k in state {
        w.remove(&k);
    }
    weights::check_against(graph, &w).map_err(|problems| WeightsError::Mismatch {
        path: path.to_path_buf(),
        problems,
    })?;
    let mut out = Weights::new();
    for (key, _) in weights::expected(graph) {
        if let Some(a) = w.remove(&key) {
            out.insert(key, a);
        }
    }
    out.metadata = w.metadata;
    Ok(out)
}

impl Net {
    /// The checked model.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    /// The backend the functions run on.
    pub fn backend(&self) -> Backend {
        self.backend
    }
    /// The current weights, in the model's order.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }
    /// The seed the `Net` was compiled with ([`Options::seed`], else the spec's).
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Optimizer iterations done so far.
    pub fn step(&self) -> u64 {
        self.opt.step
    }
    /// The spec's folder: relative paths inside the spec (its data, callbacks' files)
    /// are taken from here.
    pub fn spec_dir(&self) -> &Path {
        &self.spec_dir
    }

    /// Replaces the weights (checked against the model: every key, every shape).
    pub fn set_weights(&mut self, w: Weights) -> Result<(), Error> {
        self.weights = model_weights(&self.graph, Path::new("weights"), w)?;
        Ok(())
    }

    /// Loads weights from a safetensors file: a weights file, or a checkpoint (whose
    /// optimizer state is ignored; use [`Net::load_checkpoint`] to resume training).
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let w = weights::load(path)?;
        self.weights = model_weights(&self.graph, path, w)?;
        Ok(())
    }

    /// Writes the weights (safetensors, atomically).
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let mut w = self.weights.clone();
        w.metadata.clear();
        w.metadata
            .insert(weights::META_MODEL.into(), self.graph.name.clone());
        w.metadata.insert(
            weights::META_VERSION.into(),
            env!("CARGO_PKG_VERSION").into(),
        );
        weights::save(path, &w)?;
        Ok(())
    }

    /// Reads a data file (`.npz`, `.npy`, `.csv`) and checks it against the model,
    /// with targets when the spec has a `train` section. A relative path is taken as
    /// given (relative to the working directory).
    pub fn load_data(&self, path: impl AsRef<Path>) -> Result<Dataset, Error> {
        let opts = LoadOptions {
            targets: self.graph.train.is_some(),
            ..LoadOptions::default()
        };
        Ok(Dataset::load(path.as_ref(), &self.graph, &opts)?)
    }

    /// The spec's own data (`train.data`, relative to the spec file), if it names one.
    pub fn spec_data_path(&self) -> Option<PathBuf> {
        let d = self.graph.train.as_ref()?.decl.data.as_ref()?;
        Some(join_clean(&self.spec_dir, Path::new(&d.path)))
    }

    /// The spec's validation data (`train.validation_data`, relative to the spec
    /// file), if it names one.
    pub fn spec_validation_data_path(&self) -> Option<PathBuf> {
        let p = crate::settings::spec_validation_data(&self.graph)?;
        Some(join_clean(&self.spec_dir, Path::new(p)))
    }

    /// Runs the forward pass (inference mode) on named inputs and returns the model's
    /// single output. Inputs are checked against the spec first.
    pub fn predict(&self, inputs: &[(&str, ArrayViewD<f32>)]) -> Result<ArrayD<f32>, Error> {
        let mut outs = self.predict_all(inputs)?;
        if outs.len() != 1 {
            return Err(Error::Invalid(format!(
                "the model has {} outputs; use `predict_all`",
                outs.len()
            )));
        }
        Ok(outs.remove(0).1)
    }

    /// The inference function with the current weights as an ONNX model (opset 17,
    /// serialized): what `kiln export --format onnx` writes. A model using something
    /// ONNX cannot express is refused, naming it ([`crate::onnx`]).
    pub fn to_onnx(&self) -> Result<Vec<u8>, Error> {
        let f = crate::lower::predict_func(&self.graph)?;
        crate::onnx::export(&f, &self.weights, &self.graph.name).map_err(|e| {
            Error::Invalid(format!("cannot export `{}` to ONNX: {e}", self.graph.name))
        })
    }

    /// Runs the forward pass and returns every output by name, in the spec's order.
    pub fn predict_all(
        &self,
        inputs: &[(&str, ArrayViewD<f32>)],
    ) -> Result<Vec<(String, ArrayD<f32>)>, Error> {
        let with_types: Vec<(&str, ArrayViewD<f32>, Option<crate::data::Dtype>)> =
            inputs.iter().map(|(n, a)| (*n, a.view(), None)).collect();
        crate::data::check_predict_inputs(&self.graph, &with_types, &|_| None)?;
        self.predict_checked(inputs)
    }

    /// The forward pass on inputs already checked.
    pub(crate) fn predict_checked(
        &self,
        inputs: &[(&str, ArrayViewD<f32>)],
    ) -> Result<Vec<(String, ArrayD<f32>)>, Error> {
        let mut args: Vec<ArrayViewD<f32>> = Vec::new();
        for i in &self.graph.inputs {
            let a = inputs
                .iter()
                .find(|(n, _)| *n == i.name)
                .map(|(_, a)| a.view())
                .ok_or_else(|| Error::Invalid(format!("the input `{}` is missing", i.name)))?;
            args.push(a);
        }
        for (_, w) in self.weights.iter() {
            args.push(w.view());
        }
        let outs = self.predict.run(&args)?;
        Ok(self
            .predict
            .func()
            .outputs
            .iter()
            .map(|(n, _)| n.clone())
            .zip(outs)
            .collect())
    }
}

/// `dir/rel` with `x/..` pairs and `.` removed lexically (`specs/../data/x.npz` →
/// `data/x.npz`), for paths relative to the spec.
pub(crate) fn join_clean(dir: &Path, rel: &Path) -> PathBuf {
    use std::path::Component;
    let joined = dir.join(rel);
    let mut out: Vec<Component> = Vec::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

/// The value of a scalar array (NaN when it is not one).
pub(crate) fn scalar(a: &ArrayD<f32>) -> f32 {
    a.iter().next().copied().unwrap_or(f32::NAN)
}

/// A scalar array.
pub(crate) fn scalar_array(v: f32) -> ArrayD<f32> {
    ArrayD::from_elem(IxDyn(&[]), v)
}
