//! The runtime: a lowered function made executable by a backend. Every backend takes
//! the same inputs (f32 arrays, integer tensors held exactly as f32) and validates
//! them — shapes, and the consistency of symbolic dims — before any code runs.
//!
//! Backends: `Interp` (the reference interpreter, `ir::interp`) and `Jit` (native code
//! from Cranelift, `crate::jit`, when available).

use std::fmt;
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD};

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

/// A run-time failure: bad inputs (named, with expected vs found) or an internal error.
#[derive(Clone, Debug, PartialEq)]
pub struct RunError(pub String);

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for RunError {}

/// An executable function. Shared across threads for inference.
pub trait Kernel: Send + Sync {
    /// The function it runs (its inputs and outputs name what `run` takes and returns).
    fn func(&self) -> &Func;
    /// Runs on `inputs` (in the function's input order) and returns its outputs.
    fn run(&self, inputs: &[ArrayViewD<f32>]) -> Result<Vec<ArrayD<f32>>, RunError>;

    /// The `(input, output)` pairs that [`Kernel::run_inplace`] updates in place.
    fn donated(&self) -> &[(usize, usize)] {
        &[]
    }

    /// Like `run`, but each donated input's array receives its paired output's value
    /// (an in-place update, e.g. of parameters and optimizer state), and that output
    /// comes back as `None`. Backends without in-place support return every output.
    fn run_inplace(
        &self,
        inputs: &mut [ArrayD<f32>],
    ) -> Result<Vec<Option<ArrayD<f32>>>, RunError> {
        let views: Vec<ArrayViewD<f32>> = inputs.iter().map(|a| a.view()).collect();
        Ok(self.run(&views)?.into_iter().map(Some).collect())
    }
}

/// Checks inputs against the function's signature: count, rank, constant sizes and the
/// consistency of symbols. Errors name the input and give expected vs found.
pub fn validate(f: &Func, inputs: &[ArrayViewD<f32>]) -> Result<interp::Env, RunError> {
    if inputs.len() != f.inputs.len() {
        return Err(RunError(format!(
            "expected {} inputs, got {}",
            f.inputs.len(),
            inputs.len()
        )));
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|a| a.shape()).collect();
    interp::bind(f, &shapes).map_err(|e| RunError(e.0))
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
    match backend {
        Backend::Interp => Ok(Arc::new(Interpreted { func: f })),
        Backend::Jit => crate::jit::compile_kernel(&f, donate),
    }
}
