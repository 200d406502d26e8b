//! kiln: a declarative model compiler. A YAML spec in the spirit of Keras is parsed,
//! shape-checked with symbolic dimensions, lowered to a graph IR, differentiated and
//! JIT-compiled with Cranelift.
//!
//! # A guide
//!
//! A [`Model`] is a spec that parsed and checked clean; every mistake is a diagnostic
//! at its line, all of them at once:
//!
//! ```
//! let spec = "
//! inputs: {x: [batch, 3]}
//! layers:
//!   - dense: {units: 4, activation: relu}
//!   - dense: {units: 1, name: y_hat}
//! outputs: [y_hat]
//! train:
//!   targets: {y: [batch, 1]}
//!   loss: mse
//!   optimizer: {sgd: {learning_rate: 0.1}}
//! ";
//! let model = kiln::Model::from_source(spec, "regression", "regression.yaml")?;
//! assert_eq!(model.graph.name, "regression");
//!
//! // A mistake is reported against the text, with Keras's rule stated.
//! let wrong = spec.replace("units: 1", "units: 0");
//! let err = kiln::Model::from_source(&wrong, "regression", "regression.yaml").unwrap_err();
//! assert_eq!(err.exit_code(), 1);
//! assert!(err.to_string().contains("regression.yaml"));
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! [`Model::compile`] gives a [`Net`]: the model compiled to native code, with its
//! weights (initialized as Keras initializes them, from the spec's seed) and the
//! optimizer's state. It predicts on named `ndarray` arrays, and trains one step at a
//! time or with Keras's `fit`:
//!
//! ```
//! use kiln::ndarray::{ArrayD, IxDyn};
//! # let spec = "
//! # inputs: {x: [batch, 3]}
//! # layers:
//! #   - dense: {units: 4, activation: relu}
//! #   - dense: {units: 1, name: y_hat}
//! # outputs: [y_hat]
//! # train:
//! #   targets: {y: [batch, 1]}
//! #   loss: mse
//! #   optimizer: {sgd: {learning_rate: 0.1}}
//! # ";
//! let model = kiln::Model::from_source(spec, "regression", "regression.yaml")?;
//! let mut net = model.compile(&kiln::Options::default())?;
//!
//! // y = x0 + 2 x1 - x2 on eight examples.
//! let x = ArrayD::from_shape_fn(IxDyn(&[8, 3]), |i| ((i[0] * 3 + i[1]) % 5) as f32 / 4.0);
//! let y = ArrayD::from_shape_fn(IxDyn(&[8, 1]), |i| {
//!     x[[i[0], 0]] + 2.0 * x[[i[0], 1]] - x[[i[0], 2]]
//! });
//!
//! // Predict: inputs by name, any batch size.
//! let before = net.predict(&[("x", x.view())])?;
//! assert_eq!(before.shape(), &[8, 1]);
//!
//! // One training step, as Keras's `train_on_batch`: the loss before the update.
//! let first = net.train_on_batch(&[("x", x.view())], &[("y", y.view())])?;
//! for _ in 0..50 {
//!     net.train_on_batch(&[("x", x.view())], &[("y", y.view())])?;
//! }
//! let last = net.train_on_batch(&[("x", x.view())], &[("y", y.view())])?;
//! assert!(last.loss < first.loss);
//!
//! // Keras's fit over a dataset checked against the spec (a file works the same way:
//! // `net.load_data("data.npz")`).
//! let data = kiln::Dataset::from_arrays(
//!     &model.graph,
//!     vec![("x".into(), x.clone()), ("y".into(), y.clone())],
//! )?;
//! let fit = kiln::FitOptions { epochs: Some(2), batch_size: Some(4), ..Default::default() };
//! let report = net.fit(&data, &fit)?;
//! assert_eq!(report.steps, 52 + 2 * 2); // the steps above, then 2 epochs of 2 batches
//! assert_eq!(report.history.len(), 2);
//! let logs = net.evaluate(&data, None)?;
//! assert!(logs.get("loss").is_some());
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! A compiled [`Net`] is `Send + Sync`: many threads may call [`Net::predict`] on one
//! `Net` at once, each with its own scratch memory, and get the same bits as one
//! thread (`examples/serve.rs`).
//!
//! Paths: [`Net::load_data`] and [`Net::load_weights`] take a path as given (relative
//! to the working directory); the spec's own `train.data` and `validation_data` are
//! relative to the spec file ([`Net::spec_data_path`]). Every fallible call returns
//! [`Error`], a [`miette::Diagnostic`] whose [`Error::exit_code`] is the one the
//! command line uses (1: the spec or data is wrong; 2: I/O or usage).
//!
//! # What is public
//!
//! The items documented here are the library's API: [`Model`], [`Net`] (module
//! [`net`]), [`fit`], [`data`], [`weights`], [`settings`], [`runtime`], [`budget`],
//! [`error`], [`onnx`] (ONNX export), and the [`ndarray`] crate the arrays come from.
//! The compiler's other floors (spec, checker, IR, JIT, catalog; ARCHITECTURE.md,
//! "Floors") are public only so that kiln's own command line, tests and benchmarks can
//! reach them; they are hidden from these docs and carry no stability promise.

#![warn(missing_docs)]

/// `kiln build`: a model as a standalone object file with C functions.
pub mod aot;
#[doc(hidden)]
pub mod args;
#[doc(hidden)]
pub mod bench;
pub mod budget;
#[doc(hidden)]
pub mod catalog;
#[doc(hidden)]
pub mod check;
pub mod data;
#[doc(hidden)]
pub mod diag;
#[doc(hidden)]
pub mod dim;
pub mod dist;
pub mod error;
#[doc(hidden)]
pub mod exec;
pub mod fit;
#[doc(hidden)]
pub mod ir;
#[doc(hidden)]
pub mod jit;
#[doc(hidden)]
pub mod layers;
#[doc(hidden)]
pub mod lower;
pub mod net;
pub mod onnx;
#[doc(hidden)]
pub mod paths;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod plot;
#[doc(hidden)]
pub mod rng;
pub mod runtime;
pub mod settings;
#[doc(hidden)]
pub mod spec;
#[doc(hidden)]
pub mod summary;
#[doc(hidden)]
pub mod types;
pub mod weights;
#[doc(hidden)]
pub mod yaml;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use check::Graph;
pub use data::Dataset;
pub use diag::Diagnostic;
pub use error::{Error, SpecError};
pub use fit::{FitOptions, FitReport, Logs};
pub use ndarray;
pub use net::{Input, Net, OptState, Options, StepOutput};
pub use runtime::Backend;
pub use settings::Settings;
pub use weights::Weights;

/// A spec that parsed and checked clean.
#[derive(Debug)]
pub struct Model {
    /// Where the spec came from (`None` for text handed in directly).
    pub path: Option<PathBuf>,
    /// The spec's text, for diagnostics.
    pub source: String,
    /// The checked graph.
    pub graph: Graph,
    /// Warnings found while checking (a valid spec may still have some).
    pub warnings: Vec<Diagnostic>,
}

/// Reads a spec file: bounded in size, and with non-UTF-8 bytes reported as a
/// diagnostic at their place rather than as an I/O failure.
pub fn read_spec(path: &Path) -> Result<String, Error> {
    let io = |error| Error::Io {
        path: path.to_path_buf(),
        action: "read",
        error,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(spec::MAX_SPEC_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let file_name = path.display().to_string();
    if bytes.len() > spec::MAX_SPEC_BYTES {
        // A device or a pipe has no size: say what was read.
        let size = std::fs::metadata(path)
            .map(|m| m.len())
            .ok()
            .filter(|&n| n >= bytes.len() as u64)
            .map_or(format!("more than {}", spec::MAX_SPEC_BYTES), |n| {
                n.to_string()
            });
        return Err(Error::Spec(SpecError {
            file: file_name,
            source: String::new(),
            diagnostics: vec![
                Diagnostic::error(
                    "E0106",
                    format!(
                        "the spec is {size} bytes; kiln reads specs of at most {} bytes",
                        spec::MAX_SPEC_BYTES
                    ),
                )
                .help("a model spec is a few hundred bytes; is this the right file?"),
            ],
        }));
    }
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let end = lossy[at..]
                .char_indices()
                .nth(1)
                .map(|(i, _)| at + i)
                .unwrap_or(lossy.len());
            Err(Error::Spec(SpecError {
                file: file_name,
                diagnostics: vec![
                    Diagnostic::error("E0107", "the spec is not UTF-8 text")
                        .label(at..end, "this byte is not valid UTF-8")
                        .help("save the file as UTF-8"),
                ],
                source: lossy,
            }))
        }
    }
}

impl Model {
    /// Reads, parses and checks a spec file. The model's default name is the file stem.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Model, Error> {
        let path = path.as_ref();
        let text = read_spec(path)?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
        let mut m = Model::from_source(&text, stem, &path.display().to_string())?;
        m.path = Some(path.to_path_buf());
        Ok(m)
    }

    /// Parses and checks spec text; `name` is the default model name, `file` is what
    /// diagnostics call the source.
    pub fn from_source(text: &str, name: &str, file: &str) -> Result<Model, Error> {
        let (graph, diags) = check::check(text, name);
        match graph {
            Some(graph) => Ok(Model {
                path: None,
                source: text.to_string(),
                graph,
                warnings: diags,
            }),
            None => Err(Error::Spec(SpecError {
                file: file.to_string(),
                source: text.to_string(),
                diagnostics: diags,
            })),
        }
    }

    /// Renders this model's warnings.
    pub fn render_warnings(&self, color: bool) -> String {
        let file = self
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "spec".into());
        let src = diag::Source {
            name: &file,
            text: &self.source,
        };
        diag::render(&src, &self.warnings, color)
    }
}
