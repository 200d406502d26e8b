//! What running a compiled function means, below every backend: the [`Kernel`] trait
//! each backend implements, [`RunError`], and the input validation every backend does
//! before any code runs.
//!
//! Layering: `ir` ← `exec` ← `jit` ← `runtime`. This module knows the IR only; the JIT
//! implements [`Kernel`] here without knowing `runtime`, and `runtime` (the one place
//! that picks a backend for a function) sits above both.

use std::fmt;

use ndarray::{ArrayD, ArrayViewD};

use crate::ir::{Func, interp};

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
    let env = interp::bind(f, &shapes).map_err(|e| RunError(e.0))?;
    no_negative_sizes(f, &env)?;
    Ok(env)
}

/// Every size the function computes is at least zero for these inputs: a symbolic
/// length that a layer shortens (`seq - 4` after a cropping or a valid window) can go
/// below zero on inputs that are too short, which is the inputs' fault, not a crash.
fn no_negative_sizes(f: &Func, env: &interp::Env) -> Result<(), RunError> {
    for n in &f.nodes {
        for d in n.ty.shape.iter().filter(|d| !d.is_const()) {
            if let Some(v) = d.eval(env).filter(|&v| v < 0) {
                return Err(RunError(format!(
                    "these inputs are too short: an axis of length `{d}` would be {v} long (a window, cropping or stride shortens it); give longer inputs"
                )));
            }
        }
    }
    Ok(())
}
