//! The error of a compiled model's operations.

use std::fmt;
use std::path::PathBuf;

use crate::data::DataError;
use crate::ir::IrError;
use crate::runtime::RunError;
use crate::weights::WeightsError;

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
