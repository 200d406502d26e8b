//! kiln: a declarative model compiler. A YAML spec in the spirit of Keras is parsed,
//! shape-checked with symbolic dimensions, lowered to a graph IR, differentiated and
//! JIT-compiled with Cranelift. See ARCHITECTURE.md for the map of this crate.
//!
//! What a program embedding kiln needs is re-exported here: [`Model`] (a checked spec),
//! [`Net`] (a compiled model: predict, evaluate, one training step, weights), `fit`
//! ([`FitOptions`], [`FitReport`]), [`Dataset`], [`Error`], and the `ndarray` crate the
//! arrays come from. The modules below are the compiler's floors (ARCHITECTURE.md,
//! "Floors"), public for tools and tests that work on the IR; the command line is not
//! part of the library.

pub mod args;
pub mod bench;
pub mod budget;
pub mod catalog;
pub mod check;
pub mod data;
pub mod diag;
pub mod dim;
pub mod error;
pub mod exec;
pub mod fit;
pub mod ir;
pub mod jit;
pub mod layers;
pub mod lower;
pub mod net;
pub mod paths;
#[cfg(feature = "cli")]
pub mod plot;
pub mod rng;
pub mod runtime;
pub mod settings;
pub mod spec;
pub mod summary;
pub mod types;
pub mod weights;
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
