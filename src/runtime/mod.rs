//! The runtime: a lowered function made executable by a backend. Every backend takes
//! the same inputs (f32 arrays, integer tensors held exactly as f32) and validates
//! them — shapes, and the consistency of symbolic dims — before any code runs.
//!
//! Backends: `Interp` (the reference interpreter, `ir::interp`, run by [`Interpreted`]
//! here) and `Jit` (native code from Cranelift, `crate::jit`). [`compile_donating`] is
//! the one place that chooses and builds a backend for a function. The [`Kernel`]
//! trait, [`RunError`] and [`validate`] live in `crate::exec`, below both backends, and
//! are re-exported here: `ir` ← `exec` ← `jit` ← `runtime`, so `jit` never imports
//! `runtime`.

use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD};

pub use crate::exec::{Kernel, RunError, validate};
use crate::ir::{Func, interp};

/// Which executor runs compiled functions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// Native code generated with Cranelift.
    #[default]
    Jit,
    /// The reference interpreter (slow, exact oracle).
    Interp,
}

impl Backend {
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "jit" => Some(Backend::Jit),
            "interp" => Some(Backend::Interp),
            _ => None,
        }
    }
}

/// The interpreter as a backend.
pub struct Interpreted {
    func: Func,
}

impl Kernel for Interpreted {
    fn func(&self) -> &Func {
        &self.func
    }
    fn run(&self, inputs: &[ArrayViewD<f32>]) -> Result<Vec<ArrayD<f32>>, RunError> {
        validate(&self.func, inputs)?;
        let owned: Vec<ArrayD<f32>> = inputs.iter().map(|a| a.to_owned()).collect();
        interp::eval::<f32>(&self.func, &owned).map_err(|e| RunError(e.0))
    }
}

/// Makes `f` executable with `backend` (after the graph passes).
pub fn compile(f: &Func, backend: Backend) -> Result<Arc<dyn Kernel>, RunError> {
    compile_donating(f, backend, &[])
}

/// Like [`compile`], offering `(input, output)` pairs for in-place updates; the backend
/// accepts those it can do safely (see [`Kernel::donated`]).
pub fn compile_donating(
    f: &Func,
    backend: Backend,
    donate: &[(usize, usize)],
) -> Result<Arc<dyn Kernel>, RunError> {
    let f = crate::ir::passes::optimize(f);
    Ok(match backend {
        Backend::Interp => Arc::new(Interpreted { func: f }),
        Backend::Jit => Arc::new(crate::jit::compile_donating(&f, donate)?),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The `crate::` paths a source file (or every file under a folder) names outside
    /// comments.
    fn imports(path: &Path, found: &mut Vec<(String, String)>) {
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .expect("readable source folder")
                .map(|e| e.expect("folder entry").path())
                .collect();
            entries.sort();
            for p in entries {
                imports(&p, found);
            }
            return;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            return;
        }
        let text = std::fs::read_to_string(path).expect("readable source file");
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push((path.display().to_string(), name));
            }
        }
    }

    /// The back end's floors: `ir` ← `exec` ← `jit` ← `runtime`. `exec` names neither
    /// backend, and `jit` never names `runtime` (backend selection lives here only).
    #[test]
    fn backend_modules_depend_one_way() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        imports(&src.join("exec.rs"), &mut found);
        imports(&src.join("jit"), &mut found);
        assert!(found.len() > 10, "the scan saw the back end's imports");
        let wrong: Vec<_> = found
            .iter()
            .filter(|(file, name)| {
                name == "runtime" || (file.ends_with("exec.rs") && name == "jit")
            })
            .collect();
        assert!(wrong.is_empty(), "imports against the floors: {wrong:?}");
    }
}
