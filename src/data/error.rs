//! [`DataError`]: what went wrong with data, and where.

use std::fmt;
use std::path::Path;

/// Why data could not be read or used.
#[derive(Clone, Debug, PartialEq)]
pub struct DataError {
    /// The file concerned (`None` for arrays handed in by a program).
    pub file: Option<Box<Path>>,
    /// The array concerned, when there is one.
    pub array: Option<String>,
    /// What is wrong, in a sentence.
    pub message: String,
    /// How to fix it, when kiln can tell.
    pub help: Option<String>,
    /// Reading the file failed (exit code 2) rather than its contents being wrong (1).
    pub io: bool,
    /// Further problems found in the same pass, so that one run reports them all.
    pub also: Box<[DataError]>,
    /// The fix, for a front end to phrase in its own terms.
    pub remedy: Option<Box<crate::types::Remedy>>,
}

impl DataError {
    /// An error about `file` (or about arrays handed in, when `None`).
    pub fn new(file: Option<&Path>, message: impl Into<String>) -> DataError {
        DataError {
            file: file.map(Box::from),
            array: None,
            message: message.into(),
            help: None,
            io: false,
            also: Box::default(),
            remedy: None,
        }
    }

    /// The first of `errors` carrying the rest; `Ok` when there are none.
    pub(super) fn all(mut errors: Vec<DataError>) -> Result<(), DataError> {
        if errors.is_empty() {
            return Ok(());
        }
        let mut first = errors.remove(0);
        let mut also = std::mem::take(&mut first.also).into_vec();
        also.extend(errors);
        first.also = also.into_boxed_slice();
        Err(first)
    }
    pub(super) fn array(mut self, name: &str) -> DataError {
        self.array = Some(name.to_string());
        self
    }
    pub(super) fn help(mut self, h: impl Into<String>) -> DataError {
        self.help = Some(h.into());
        self
    }
    pub(super) fn remedy(mut self, r: crate::types::Remedy) -> DataError {
        self.remedy = Some(Box::new(r));
        self
    }
    /// The process exit code (DESIGN §3): 2 for I/O, 1 for wrong data.
    pub fn exit_code(&self) -> i32 {
        if self.io { 2 } else { 1 }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.file {
            write!(f, "{}: ", p.display())?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = &self.help {
            write!(f, "\n  help: {h}")?;
        }
        for e in &self.also {
            write!(f, "\nerror: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DataError {}
