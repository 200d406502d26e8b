//! The Cranelift JIT: a function in graph IR becomes native code.
//!
//! `plan` groups the graph into kernels (fused loops, GEMM calls, runtime routines);
//! `local` puts each loop kernel in a form independent of its place in the plan (its
//! own numbering of sizes and buffers), so kernels that differ only in which buffers
//! they touch share one function; `codegen` emits CLIF for each distinct kernel;
//! `compile` builds the ISA from the host's detected features (so FMA/AVX encodings are
//! used), the functions, and the `steps` (the kernels in order, as data); `run`
//! executes the steps with a `frame` of evaluated sizes and buffer pointers (then the
//! kernels' local frames) in an `arena` laid out per set of symbol values
//! (liveness-based reuse; one compiled plan serves every batch size); `trampoline`
//! holds the routines the code calls (GEMM, the parallel split, reference
//! implementations of complex primitives). Compile time grows with the number of
//! distinct kernels, and every pass over the plan is linear in its size.
//!
//! The JIT implements [`crate::exec::Kernel`] and depends on `ir` and `exec` only;
//! choosing it as a backend happens in `crate::runtime`.

mod codegen;
mod mathfn;
pub mod plan;
pub mod profile;
pub mod team;

mod adapt;
mod arena;
mod attention;
mod compile;
mod frame;
mod gemm;
mod local;
mod norm;
pub mod object;
mod rnn;
mod routine;
mod run;
mod scratch;
mod steps;
mod trampoline;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cranelift_jit::JITModule;

pub use arena::planned_memory;
pub use codegen::{CellAct, CellKind, CellSpec};
pub use compile::{
    compile, compile_donating, compile_donating_owned, compile_with_clif, set_verifier,
};
use frame::Desc;
use plan::Plan;
pub use rnn::{GeneratedStats, generated_stats, set_generated};

/// A compiled function and everything its code points at.
pub struct JitKernel {
    plan: Plan,
    /// The kernels in order: compiled functions, GEMM and routine calls.
    steps: steps::Steps,
    /// Descriptors the code passes to runtime routines (never moved after codegen: the
    /// vector is not modified, so element addresses stay valid).
    _descs: Vec<Desc>,
    /// The code's memory; kept alive, never touched after finalization.
    _module: ModuleHolder,
    /// The kernel that first writes each buffer (arena lifetimes start there).
    first_def: Vec<usize>,
    /// Arena layouts per set of symbol values.
    layouts: Mutex<HashMap<Vec<i64>, Arc<arena::Layout>>>,
    /// Arenas kept between calls: no allocation, zeroing or page faults per call (every
    /// kernel writes a buffer before anything reads it, so stale contents never leak).
    arenas: Mutex<Vec<Vec<f32>>>,
    /// The CLIF text, for `kiln ir --stage clif` (empty unless compiled with
    /// [`compile_with_clif`]).
    pub clif: String,
    /// `(input, output)` pairs whose output is written into the input's memory.
    donated: Vec<(usize, usize)>,
}

struct ModuleHolder(#[allow(dead_code)] JITModule);
// SAFETY: the module is only kept alive so its finalized code stays mapped; no method is
// called on it after construction, so sharing the holder across threads is sound.
unsafe impl Send for ModuleHolder {}
unsafe impl Sync for ModuleHolder {}

impl JitKernel {
    /// The kernel plan the code was generated from.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}
