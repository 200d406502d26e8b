//! The forward steps as generated code (`codegen::rnn_cell`): one Cranelift function
//! per layer shape and options ([`CellSpec`]), compiled the first time a layer of
//! that shape runs and cached for the process (every later layer, call and batch size
//! of the same shape reuses it). A batch slice projects its inputs with one GEMM
//! (`fwd::project`), then one call of the function runs all its steps. The same cache
//! holds back-propagation through time's step walk (`codegen::rnn_grad`, run by
//! `generated_grad.rs`): one more function per shape, the same bits as `bwd::slice`.
//!
//! The path is selectable: the Rust kernels (`fwd::slice`, `bwd::slice`) run the steps
//! unless generated code is chosen, by [`set_generated`] on a thread or
//! `KILN_RNN_KERNEL=generated` for the process; it stays off by default because on
//! this x86 host Cranelift emits at most f32x4 and a register copy per multiply-add
//! (its `fma` lowering is always the destructive 213 form), and its two-row blocks
//! fetch each line of `U` twice as often as the Rust kernel's four-row ones: measured
//! interleaved on the shared 2-core machine, specs/lstm.yaml's forward at batch 32,
//! length 32 takes 2.2× the Rust kernel's time (up to 5× while other builds loaded
//! the machine), its train step 1.2–1.5×, batch 1's forward 1.2–1.3×. With the
//! backward walk generated too, the train step (batch 32, length 32, 5 interleaved
//! pairs, machine shared) took 1.20× the Rust kernels' time (median; 0.79–1.35): the
//! generated walks themselves ran at about the Rust walk's speed (per-kernel profile:
//! LSTM 0.97–1.19×, GRU 0.69–1.17×, each including the weight products), so the
//! remaining cost is the forward's.
//! Activations other than tanh and sigmoid always stay on the Rust kernel.

use std::cell::Cell as StdCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use cranelift_codegen::ir::{AbiParam, UserFuncName};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};

use super::super::codegen::{self, CellAct, CellKind, CellSpec, rnn_arg as arg};
use super::super::compile::{host_has_fma, isa};
use super::{Layer, zeros};
use crate::ir::Cell;

/// Keeps a module's code mapped for the life of the process.
struct Holder(#[allow(dead_code)] JITModule);
// SAFETY: the module is never used after its functions are finalized; it is only kept
// so their code stays mapped.
unsafe impl Send for Holder {}

#[derive(Default)]
struct Cache {
    fns: HashMap<CellSpec, usize>,
    /// Back-propagation's step walks (`codegen::rnn_grad`), by the same spec.
    grads: HashMap<CellSpec, usize>,
    modules: Vec<Holder>,
}

fn cache() -> &'static Mutex<Cache> {
    static C: OnceLock<Mutex<Cache>> = OnceLock::new();
    C.get_or_init(Mutex::default)
}

/// Slices run through generated code (all threads, since the process started):
/// forward steps, and back-propagation's step walks.
static RUNS: AtomicUsize = AtomicUsize::new(0);
pub(super) static GRAD_RUNS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static CHOICE: StdCell<Option<bool>> = const { StdCell::new(None) };
}

/// Chooses for this thread's later calls whether recurrent layers run their steps as
/// generated code (`Some(true)`), on the Rust kernel (`Some(false)`), or as the
/// process decides (`None`: generated only with `KILN_RNN_KERNEL=generated`).
pub fn set_generated(choice: Option<bool>) {
    CHOICE.with(|c| c.set(choice));
}

pub(super) fn enabled() -> bool {
    static ENV: OnceLock<bool> = OnceLock::new();
    CHOICE.with(|c| c.get()).unwrap_or_else(|| {
        *ENV.get_or_init(|| std::env::var("KILN_RNN_KERNEL").is_ok_and(|v| v == "generated"))
    })
}

/// What the generated path has done: the shapes compiled (one function each) and the
/// batch slices run, forward steps and back-propagation's step walks.
#[derive(Clone, Debug)]
pub struct Stats {
    pub compiled: Vec<CellSpec>,
    pub runs: usize,
    pub compiled_grads: Vec<CellSpec>,
    pub grad_runs: usize,
}

pub fn stats() -> Stats {
    let (compiled, compiled_grads) = cache()
        .lock()
        .map(|c| {
            (
                c.fns.keys().copied().collect(),
                c.grads.keys().copied().collect(),
            )
        })
        .unwrap_or_default();
    Stats {
        compiled,
        runs: RUNS.load(Ordering::Relaxed),
        compiled_grads,
        grad_runs: GRAD_RUNS.load(Ordering::Relaxed),
    }
}

/// The spec of `l`'s forward steps, if generated code can run them.
pub(super) fn spec(l: &Layer, trace: bool) -> Option<CellSpec> {
    let a = l.a;
    let kind = match (a.cell, a.reset_after) {
        (Cell::Simple, _) => CellKind::Simple,
        (Cell::Lstm, _) => CellKind::Lstm,
        (Cell::Gru, true) => CellKind::GruAfter,
        (Cell::Gru, false) => CellKind::GruBefore,
    };
    let masked = l.i.mask.is_some();
    Some(CellSpec {
        kind,
        act: CellAct::of(&a.activation)?,
        ract: CellAct::of(&a.recurrent_activation)?,
        units: l.d.u,
        go_backwards: a.go_backwards,
        return_sequences: a.return_sequences,
        trace,
        masked,
        zero_output: a.zero_output && masked,
        hkeep: l.i.hkeep.is_some(),
        fma: host_has_fma(),
    })
}

/// The generated function for `l`'s steps (compiled now if its shape is new), or
/// `None` when the Rust kernel runs them.
pub(super) fn function(l: &Layer, trace: bool) -> Result<Option<usize>, String> {
    if !enabled() || l.d.u == 0 {
        return Ok(None);
    }
    let Some(spec) = spec(l, trace) else {
        return Ok(None);
    };
    cached(&spec, false).map(Some)
}

/// The function for `spec`'s forward steps, or with `grad` its back-propagation's
/// step walk, compiled now if new.
pub(super) fn cached(spec: &CellSpec, grad: bool) -> Result<usize, String> {
    let mut c = cache()
        .lock()
        .map_err(|_| "the recurrent kernel cache is poisoned")?;
    let known = if grad { &c.grads } else { &c.fns };
    if let Some(&f) = known.get(spec) {
        return Ok(f);
    }
    let (f, module) = compile(spec, grad)?;
    if grad {
        c.grads.insert(*spec, f);
    } else {
        c.fns.insert(*spec, f);
    }
    c.modules.push(module);
    Ok(f)
}

fn compile(spec: &CellSpec, grad: bool) -> Result<(usize, Holder), String> {
    let isa = isa().map_err(|e| e.0)?;
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let ptr = module.target_config().pointer_type();
    let mut ctx = module.make_context();
    ctx.func.signature.params.push(AbiParam::new(ptr));
    let which = if grad { "grad" } else { "fwd" };
    let name = format!("kiln_rnn_{which}_{:?}_{}", spec.kind, spec.units);
    let id = module
        .declare_function(&name, Linkage::Local, &ctx.func.signature)
        .map_err(|e| format!("cranelift: {e}"))?;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let args = b.block_params(entry)[0];
        let mut g = codegen::Gen {
            b,
            sizes: 0,
            frame: args,
            ptr,
            fma: spec.fma,
            range: None,
        };
        if grad {
            g.emit_rnn_grad(spec);
        } else {
            g.emit_rnn_forward(spec);
        }
        g.b.finalize(module.target_config());
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| format!("cranelift could not compile {name}: {e:?}"))?;
    module
        .finalize_definitions()
        .map_err(|e| format!("cranelift: {e}"))?;
    let f = module.get_finalized_function(id) as usize;
    Ok((f, Holder(module)))
}

/// The output and trace buffers of the whole layer, as the forward pass holds them.
pub(super) struct Bufs {
    pub out: *mut f32,
    pub a: *mut f32,
    pub hp: *mut f32,
    pub cp: *mut f32,
    pub cn: *mut f32,
    pub ex: *mut f32,
}

/// Batch rows `lo..hi` through every step with the generated function `f`, their
/// projections `z` (`[rows, T, n]`) already formed.
///
/// # Safety
/// `f` is the function [`function`] gave for `l` and `trace`; `z` and the rows
/// `lo..hi` of every buffer in `bufs` (trace buffers when `trace`) belong to this
/// part alone and have the layer's sizes.
pub(super) unsafe fn run(
    l: &Layer,
    f: usize,
    trace: bool,
    (lo, hi): (usize, usize),
    z: &mut [f32],
    bufs: &Bufs,
) -> Result<(), String> {
    let d = l.d;
    let (nb, t, u, n, g) = (hi - lo, d.t, d.u, d.n, d.g);
    let mut h0 = zeros(nb * u)?;
    let mut h1 = zeros(nb * u)?;
    let lstm = l.a.cell == Cell::Lstm;
    let mut c = zeros(if lstm { nb * u } else { 0 })?;
    let mut scratch = zeros(if trace { 0 } else { nb * n })?;
    let mut hs = zeros(if l.i.hkeep.is_some() { 4 * g * u } else { 0 })?;
    let mut v = zeros(if l.late_candidate() { nb * u } else { 0 })?;
    let mut rb = zeros(4 * n)?;
    // Addresses only (never dereferenced unless the spec uses the buffer).
    let at = |p: *const f32, off: usize| p.wrapping_add(off) as i64;
    let ys = if l.a.return_sequences { t } else { 1 };
    let mut args = [0i64; arg::LEN];
    args[arg::Z] = z.as_mut_ptr() as i64;
    args[arg::U] = l.i.rk.as_ptr() as i64;
    args[arg::H0] = h0.as_mut_ptr() as i64;
    args[arg::H1] = h1.as_mut_ptr() as i64;
    args[arg::C] = c.as_mut_ptr() as i64;
    args[arg::OUT] = at(bufs.out, lo * ys * u);
    args[arg::A] = if trace {
        at(bufs.a, lo * t * n)
    } else {
        scratch.as_mut_ptr() as i64
    };
    args[arg::HP] = at(bufs.hp, lo * t * u);
    args[arg::CP] = at(bufs.cp, lo * t * u);
    args[arg::CN] = at(bufs.cn, lo * t * u);
    args[arg::EX] = at(bufs.ex, lo * t * u);
    args[arg::MASK] = l.i.mask.map_or(0, |m| at(m.as_ptr(), lo * t));
    args[arg::HKEEP] = l.i.hkeep.map_or(0, |k| at(k.as_ptr(), lo * g * u));
    args[arg::BR] = l.i.br.as_ref().map_or(0, |b| b.as_ptr() as i64);
    args[arg::HS] = hs.as_mut_ptr() as i64;
    args[arg::V] = v.as_mut_ptr() as i64;
    args[arg::R] = rb.as_mut_ptr() as i64;
    args[arg::NB] = nb as i64;
    args[arg::T] = t as i64;
    // SAFETY: `f` was compiled as `fn(args)` for this spec; the table points at
    // buffers of the sizes the spec's code reads and writes (the caller's contract).
    let func: extern "C" fn(*const i64) = unsafe { std::mem::transmute(f) };
    func(args.as_ptr());
    RUNS.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
