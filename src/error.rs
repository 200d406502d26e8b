//! kiln's one library error type. Every fallible public function returns
//! [`Error`]; the cause of a wrapped failure stays reachable through
//! [`std::error::Error::source`], and spec errors are miette diagnostics with the
//! spec's text attached. [`Error::exit_code`] is the one mapping to the process exit
//! codes of DESIGN §3 (1: the spec or the data is wrong; 2: usage, I/O or an internal
//! failure).

use std::fmt;
use std::path::PathBuf;

use crate::data::DataError;
use crate::diag::{self, Diagnostic};
use crate::ir::IrError;
use crate::runtime::RunError;
use crate::weights::WeightsError;

/// Why a kiln operation failed.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read or written (exit code 2).
    Io {
        /// The file.
        path: PathBuf,
        /// `read` or `write`.
        action: &'static str,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The spec is wrong: every diagnostic, with the source to show them against
    /// (exit code 1).
    Spec(SpecError),
    /// Data does not fit the model, or could not be read.
    Data(DataError),
    /// Weights or a checkpoint could not be read, written or used.
    Weights(WeightsError),
    /// The request does not make sense for this model (exit code 1).
    Invalid(String),
    /// The model would need more memory than the budget allows (exit code 1), found
    /// before anything was allocated for it.
    Budget(Box<crate::budget::OverBudget>),
    /// Compiling or running failed: a bug in kiln, reported rather than a crash
    /// (exit code 2). The failing stage's own error is the source.
    Internal {
        /// What failed, in words.
        message: String,
        /// The failing stage's error, when there is one.
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

/// A spec's diagnostics together with its text.
#[derive(Debug)]
pub struct SpecError {
    /// The file name to show.
    pub file: String,
    /// The spec's text, which the diagnostics' spans point into.
    pub source: String,
    /// Every problem found, in the order of the text.
    pub diagnostics: Vec<Diagnostic>,
}

impl SpecError {
    /// Renders every diagnostic the way `kiln check` prints them.
    pub fn render(&self, color: bool) -> String {
        let src = diag::Source {
            name: &self.file,
            text: &self.source,
        };
        diag::render(&src, &self.diagnostics, color)
    }
    /// The JSON form of `kiln check --format json`.
    pub fn to_json(&self) -> String {
        let src = diag::Source {
            name: &self.file,
            text: &self.source,
        };
        diag::to_json(&src, &self.diagnostics)
    }
}

impl Error {
    /// An internal failure described by `message` alone.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::Internal {
            message: message.into(),
            source: None,
        }
    }

    /// The process exit code for this error (DESIGN §3).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec(_) | Error::Invalid(_) | Error::Budget(_) => 1,
            Error::Data(e) => e.exit_code(),
            Error::Weights(e) => e.exit_code(),
            Error::Io { .. } | Error::Internal { .. } => 2,
        }
    }

    /// The fix, when the library knows one, for a front end to phrase in its own terms
    /// (the CLI names the flag); the message itself says it in the library's terms.
    pub fn remedy(&self) -> Option<crate::types::Remedy> {
        use crate::types::Remedy;
        match self {
            Error::Data(e) => e.remedy.as_deref().cloned(),
            Error::Budget(_) => Some(Remedy::RaiseMemoryLimit),
            Error::Weights(crate::weights::WeightsError::NotACheckpoint { .. }) => {
                Some(Remedy::InitFromWeights)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                path,
                action,
                error,
            } => write!(f, "cannot {action} {}: {error}", path.display()),
            Error::Spec(e) => f.write_str(&e.render(false)),
            Error::Data(e) => e.fmt(f),
            Error::Weights(e) => e.fmt(f),
            Error::Invalid(m) => f.write_str(m),
            Error::Budget(e) => e.fmt(f),
            Error::Internal { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { error, .. } => Some(error),
            Error::Data(e) => Some(e),
            Error::Weights(e) => Some(e),
            Error::Budget(e) => Some(e.as_ref()),
            Error::Internal {
                source: Some(s), ..
            } => Some(s.as_ref()),
            _ => None,
        }
    }
}

/// So that `miette::Result` users get a code, the help line and, for spec errors,
/// every diagnostic drawn against the spec's text.
impl miette::Diagnostic for Error {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(match self {
            Error::Spec(e) => e.diagnostics.first().map_or("kiln::spec", |d| d.code),
            Error::Data(_) => "kiln::data",
            Error::Weights(_) => "kiln::weights",
            Error::Io { .. } => "kiln::io",
            Error::Invalid(_) => "kiln::invalid",
            Error::Budget(_) => "kiln::budget",
            Error::Internal { .. } => "kiln::internal",
        }))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        match self {
            Error::Data(e) => e
                .help
                .as_ref()
                .map(|h| Box::new(h) as Box<dyn fmt::Display>),
            Error::Spec(e) => e
                .diagnostics
                .first()
                .and_then(|d| d.help.as_ref())
                .map(|h| Box::new(h) as Box<dyn fmt::Display>),
            _ => None,
        }
    }
    /// The spec's text, so that a miette handler draws the labels in it.
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        match self {
            Error::Spec(e) => Some(&e.source),
            _ => None,
        }
    }
    /// The first diagnostic's labels (the rendered message holds every diagnostic).
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let Error::Spec(e) = self else {
            return None;
        };
        let d = e.diagnostics.first()?;
        Some(Box::new(diag::labeled_spans(d, e.source.len())))
    }
}

impl From<SpecError> for Error {
    fn from(e: SpecError) -> Self {
        Error::Spec(e)
    }
}
impl From<DataError> for Error {
    fn from(e: DataError) -> Self {
        Error::Data(e)
    }
}
impl From<WeightsError> for Error {
    fn from(e: WeightsError) -> Self {
        Error::Weights(e)
    }
}
/// A weight that cannot be drawn (it does not fit in memory) is a property of the
/// spec: exit code 1, from every command.
impl From<crate::weights::InitError> for Error {
    fn from(e: crate::weights::InitError) -> Self {
        Error::Invalid(e.to_string())
    }
}
impl From<crate::budget::OverBudget> for Error {
    fn from(e: crate::budget::OverBudget) -> Self {
        Error::Budget(Box::new(e))
    }
}
impl From<IrError> for Error {
    fn from(e: IrError) -> Self {
        Error::Internal {
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}
impl From<RunError> for Error {
    fn from(e: RunError) -> Self {
        Error::Internal {
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}
