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
    /// The backend named `jit` or `interp` (as the CLI's `--backend` takes it).
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
        let bytes = inputs.iter().map(|a| a.len() as u128 * 4).sum();
        interp::reserve(bytes, "a copy of the inputs").map_err(|e| RunError(e.0))?;
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
        Backend::Jit => Arc::new(crate::jit::compile_donating_owned(f, donate)?),
    })
}
