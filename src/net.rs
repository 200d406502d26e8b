//! The library's compiled model (DESIGN §5): a checked spec made executable.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = kiln::Model::from_path("specs/digits_cnn.yaml")?; // parse + check
//! let mut net = model.compile(&kiln::Options::default())?;      // compile
//! let data = net.load_data("data/digits.npz")?;                 // checked against the spec
//! let report = net.fit(&data, &kiln::FitOptions::default())?;   // Keras's fit
//! net.save_weights("weights.safetensors")?;
//! let x = data.inputs[0].1.clone();
//! let logits = net.predict(&[("image", x.view())])?;           // ndarray in, ndarray out
//! # Ok(()) }
//! ```
//!
//! Every function of a [`Net`] goes through [`crate::runtime::compile`] and the
//! [`Kernel`] trait, so it runs on whichever backend the [`Options`] chose. Arrays
//! handed in are checked against the spec (names, dtypes, shapes, symbols) before any
//! compiled code runs. A `Net` can be shared across threads for inference.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::check::Graph;
use crate::data::{DataError, Dataset, LoadOptions};
use crate::fit::{self, FitOptions, FitReport, Logs, Observer};
use crate::ir::IrError;
use crate::runtime::{self, Backend, Kernel, RunError};
use crate::weights::{self, Weights, WeightsError};
use crate::{Model, lower};

/// How to compile a model.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Which executor runs the compiled functions (native code by default).
    pub backend: Backend,
    /// The seed of the initial weights [default: the spec's `train.seed`, else 0].
    pub seed: Option<u64>,
}

/// Why a [`Net`] operation failed.
#[derive(Debug)]
pub enum NetError {
    /// Data does not fit the model, or could not be read.
    Data(DataError),
    /// Weights or a checkpoint could not be read, written or used.
    Weights(WeightsError),
    /// A file could not be written or read.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The request does not make sense for this model (exit code 1).
    Invalid(String),
    /// Compiling or running failed (a bug, reported rather than a crash).
    Internal(String),
}

impl NetError {
    /// The process exit code (DESIGN §3).
    pub fn exit_code(&self) -> i32 {
        match self {
            NetError::Data(e) => e.exit_code(),
            NetError::Weights(e) => e.exit_code(),
            NetError::Invalid(_) => 1,
            NetError::Io { .. } | NetError::Internal(_) => 2,
        }
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Data(e) => e.fmt(f),
            NetError::Weights(e) => e.fmt(f),
            NetError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            NetError::Invalid(m) | NetError::Internal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for NetError {}

/// So that `miette::Result` users get a code and the help line.
impl miette::Diagnostic for NetError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(match self {
            NetError::Data(_) => "kiln::data",
            NetError::Weights(_) => "kiln::weights",
            NetError::Io { .. } => "kiln::io",
            NetError::Invalid(_) => "kiln::invalid",
            NetError::Internal(_) => "kiln::internal",
        }))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        match self {
            NetError::Data(e) => e
                .help
                .as_ref()
                .map(|h| Box::new(h) as Box<dyn fmt::Display>),
            _ => None,
        }
    }
}

impl From<DataError> for NetError {
    fn from(e: DataError) -> Self {
        NetError::Data(e)
    }
}
impl From<WeightsError> for NetError {
    fn from(e: WeightsError) -> Self {
        NetError::Weights(e)
    }
}
impl From<IrError> for NetError {
    fn from(e: IrError) -> Self {
        NetError::Internal(e.to_string())
    }
}
impl From<RunError> for NetError {
    fn from(e: RunError) -> Self {
        NetError::Internal(e.to_string())
    }
}

/// The compiled training step with the positions of its inputs and outputs.
pub(crate) struct TrainKernel {
    pub kernel: Arc<dyn Kernel>,
    pub layout: lower::train::Layout,
    pub loss: usize,
    pub metrics: Vec<usize>,
    pub new_params: Vec<usize>,
    pub new_state: Vec<usize>,
}

/// The compiled evaluation function (inference-mode forward + loss + metrics).
pub(crate) struct EvalKernel {
    pub kernel: Arc<dyn Kernel>,
    pub loss: usize,
    pub metrics: Vec<usize>,
}

/// The optimizer's state between `fit` calls (as Keras keeps it on the model).
#[derive(Clone, Debug, Default)]
pub(crate) struct OptState {
    /// `optimizer/{param}/{slot}` → array.
    pub slots: Weights,
    /// Iterations done (Keras's `optimizer.iterations`).
    pub step: u64,
    /// The current learning rate when it is a number (reduce-LR-on-plateau changes
    /// it); `None` until training starts.
    pub lr: Option<f32>,
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
    pub(crate) train: Option<Arc<TrainKernel>>,
    eval: Mutex<Option<Arc<EvalKernel>>>,
    pub(crate) opt: OptState,
    /// Where a loaded checkpoint left off (consumed by the next `fit`).
    pub(crate) resume: Option<fit::checkpoint::Resume>,
}

impl Model {
    /// Compiles the model's forward pass and initializes its weights (Keras's
    /// initializers, from `opts.seed` or the spec's seed). Training and evaluation
    /// functions are compiled when first used.
    pub fn compile(&self, opts: &Options) -> Result<Net, NetError> {
        let seed = opts
            .seed
            .unwrap_or_else(|| weights::default_seed(&self.graph));
        let w = weights::init(&self.graph, seed).map_err(|e| NetError::Invalid(e.to_string()))?;
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
            resume: None,
        })
    }
}

/// Reorders weights into the model's order and drops anything else (a checkpoint's
/// optimizer state), after checking them against the model.
fn model_weights(graph: &Graph, path: &Path, mut w: Weights) -> Result<Weights, WeightsError> {
    let is_ckpt = w.metadata.contains_key(fit::checkpoint::META_STATE);
    if is_ckpt {
        let keep: Vec<String> = w
            .keys()
            .filter(|k| fit::checkpoint::is_state_key(k))
            .map(str::to_string)
            .collect();
        for k in keep {
            w.remove(&k);
        }
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
    /// Optimizer iterations done so far.
    pub fn step(&self) -> u64 {
        self.opt.step
    }

    /// Replaces the weights (checked against the model: every key, every shape).
    pub fn set_weights(&mut self, w: Weights) -> Result<(), NetError> {
        self.weights = model_weights(&self.graph, Path::new("weights"), w)?;
        Ok(())
    }

    /// Loads weights from a safetensors file: a weights file, or a checkpoint (whose
    /// optimizer state is ignored; use [`Net::load_checkpoint`] to resume training).
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<(), NetError> {
        let path = path.as_ref();
        let w = weights::load(path)?;
        self.weights = model_weights(&self.graph, path, w)?;
        Ok(())
    }

    /// Writes the weights (safetensors, atomically).
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<(), NetError> {
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

    /// Loads a checkpoint written by training: weights, optimizer state and where
    /// training stopped. The next [`Net::fit`] continues from there exactly.
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<(), NetError> {
        fit::checkpoint::load(self, path.as_ref())
    }

    /// Writes a checkpoint of the current state (weights and optimizer state; between
    /// `fit` calls it resumes at the start of a new `fit`).
    pub fn save_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<(), NetError> {
        fit::checkpoint::save_idle(self, path.as_ref())
    }

    /// Reads a data file (`.npz`, `.npy`, `.csv`) and checks it against the model,
    /// with targets when the spec has a `train` section. A relative path is taken as
    /// given (relative to the working directory).
    pub fn load_data(&self, path: impl AsRef<Path>) -> Result<Dataset, NetError> {
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

    /// Runs the forward pass (inference mode) on named inputs and returns the model's
    /// single output. Inputs are checked against the spec first.
    pub fn predict(&self, inputs: &[(&str, ArrayViewD<f32>)]) -> Result<ArrayD<f32>, NetError> {
        let mut outs = self.predict_all(inputs)?;
        if outs.len() != 1 {
            return Err(NetError::Invalid(format!(
                "the model has {} outputs; use `predict_all`",
                outs.len()
            )));
        }
        Ok(outs.remove(0).1)
    }

    /// Runs the forward pass and returns every output by name, in the spec's order.
    pub fn predict_all(
        &self,
        inputs: &[(&str, ArrayViewD<f32>)],
    ) -> Result<Vec<(String, ArrayD<f32>)>, NetError> {
        let with_types: Vec<(&str, ArrayViewD<f32>, Option<crate::data::Dtype>)> =
            inputs.iter().map(|(n, a)| (*n, a.view(), None)).collect();
        crate::data::check_predict_inputs(&self.graph, &with_types, &|_| None)?;
        self.predict_checked(inputs)
    }

    /// The forward pass on inputs already checked.
    pub(crate) fn predict_checked(
        &self,
        inputs: &[(&str, ArrayViewD<f32>)],
    ) -> Result<Vec<(String, ArrayD<f32>)>, NetError> {
        let mut args: Vec<ArrayViewD<f32>> = Vec::new();
        for i in &self.graph.inputs {
            let a = inputs
                .iter()
                .find(|(n, _)| *n == i.name)
                .map(|(_, a)| a.view())
                .ok_or_else(|| NetError::Invalid(format!("the input `{}` is missing", i.name)))?;
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

    /// The compiled training step (compiled on first use).
    pub(crate) fn train_kernel(&mut self) -> Result<Arc<TrainKernel>, NetError> {
        if let Some(t) = &self.train {
            return Ok(t.clone());
        }
        if self.graph.train.is_none() {
            return Err(NetError::Invalid(format!(
                "the spec of `{}` has no `train` section: add one with targets, a loss and an optimizer",
                self.graph.name
            )));
        }
        let step = lower::train::build(&self.graph)?;
        // Parameters and optimizer state are updated in place: offer each input whose
        // updated value is an output (`KEY` → `new/KEY`) to the backend.
        let donate = lower::train::carried(&step.func);
        let kernel = runtime::compile_donating(&step.func, self.backend, &donate)?;
        let f = kernel.func();
        let l = &step.layout;
        // Inputs, by position (lower::train::build's order), checked by name.
        let mut expect: Vec<String> = l.model_inputs.clone();
        expect.extend(l.params.iter().cloned());
        expect.push("rng_key".into());
        expect.extend(l.targets.iter().cloned());
        expect.extend(l.state.iter().cloned());
        expect.push("step".into());
        expect.push("lr".into());
        let got: Vec<&str> = f.inputs.iter().map(|i| i.name.as_str()).collect();
        if got != expect.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(NetError::Internal(format!(
                "the training step's inputs are {got:?}, expected {expect:?}"
            )));
        }
        let out = |name: &str| -> Result<usize, NetError> {
            f.outputs
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| NetError::Internal(format!("the training step has no `{name}`")))
        };
        let t = TrainKernel {
            loss: out("loss")?,
            metrics: l
                .metrics
                .iter()
                .map(|m| out(&format!("metric/{m}")))
                .collect::<Result<_, _>>()?,
            new_params: l
                .params
                .iter()
                .map(|p| out(&format!("new/{p}")))
                .collect::<Result<_, _>>()?,
            new_state: l
                .state
                .iter()
                .map(|s| out(&format!("new/{s}")))
                .collect::<Result<_, _>>()?,
            layout: step.layout.clone(),
            kernel: kernel.clone(),
        };
        let t = Arc::new(t);
        self.train = Some(t.clone());
        Ok(t)
    }

    /// The compiled evaluation function (compiled on first use).
    pub(crate) fn eval_kernel(&self) -> Result<Arc<EvalKernel>, NetError> {
        let mut slot = self
            .eval
            .lock()
            .map_err(|_| NetError::Internal("a thread panicked while compiling".into()))?;
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        if self.graph.train.is_none() {
            return Err(NetError::Invalid(format!(
                "the spec of `{}` has no `train` section, so there is no loss to evaluate",
                self.graph.name
            )));
        }
        let step = lower::eval::build(&self.graph)?;
        let kernel = runtime::compile(&step.func, self.backend)?;
        let f = kernel.func();
        let out = |name: &str| -> Result<usize, NetError> {
            f.outputs
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| NetError::Internal(format!("the eval function has no `{name}`")))
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
    /// `batch_size` (the spec's by default), averaged weighted by batch size, in
    /// inference mode. Keys: `loss` and each metric as the spec names it.
    pub fn evaluate(&self, data: &Dataset, batch_size: Option<usize>) -> Result<Logs, NetError> {
        if data.targets.is_empty() {
            return Err(NetError::Invalid(
                "evaluation needs targets, and this data has none".into(),
            ));
        }
        let bs = batch_size.unwrap_or_else(|| fit::spec_batch_size(&self.graph));
        let e = self.eval_kernel()?;
        let names = fit::metric_names(&self.graph);
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

    /// Keras's `fit` on `data`, silently. See [`Net::fit_with`].
    pub fn fit(&mut self, data: &Dataset, opts: &FitOptions) -> Result<FitReport, NetError> {
        self.fit_with(data, opts, &mut fit::Silent)
    }

    /// Keras's `fit`, reporting progress to `observer`: epochs and batches from the
    /// options or the spec, the spec's callbacks, validation on the held-out split.
    pub fn fit_with(
        &mut self,
        data: &Dataset,
        opts: &FitOptions,
        observer: &mut dyn Observer,
    ) -> Result<FitReport, NetError> {
        fit::run(self, data, opts, observer)
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
