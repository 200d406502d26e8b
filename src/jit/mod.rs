//! The Cranelift JIT: a function in graph IR becomes one native function.
//!
//! `plan` groups the graph into kernels (fused loops, GEMM calls, runtime routines);
//! `codegen` emits CLIF for the whole plan; this file builds the ISA from the host's
//! detected features (so FMA/AVX encodings are used), runs the code with a frame of
//! evaluated sizes and buffer pointers, and plans the arena per set of symbol values
//! (liveness-based reuse; one compiled function serves every batch size).

pub mod codegen;
pub mod mathfn;
pub mod plan;
pub mod team;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cranelift_codegen::ir::{AbiParam, UserFuncName};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::ir::{Func, Node, Op, PoolKind, WindowAttrs, interp};
use crate::runtime::{Kernel as RunKernel, RunError, validate};
use plan::{Access, BufKind, Kernel, Plan};

/// A compiled function and everything its code points at.
pub struct JitKernel {
    plan: Plan,
    entry: extern "C" fn(*mut i64),
    /// Descriptors the code passes to runtime routines (never moved after codegen: the
    /// vector is not modified, so element addresses stay valid).
    _descs: Vec<Desc>,
    /// The code's memory; kept alive, never touched after finalization.
    _module: ModuleHolder,
    /// The kernel that first writes each buffer (arena lifetimes start there).
    first_def: Vec<usize>,
    /// Arena layouts per set of symbol values.
    layouts: Mutex<HashMap<Vec<i64>, Arc<Layout>>>,
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

/// Concrete sizes and arena offsets for one set of symbol values.
struct Layout {
    sizes: Vec<i64>,
    /// Element offset of each arena buffer.
    offsets: Vec<usize>,
    arena_len: usize,
}

/// What a runtime routine needs: the frame's layout and its operands' descriptions.
struct Desc {
    fl: FrameLayout,
    kind: DescKind,
    /// A GEMM's epilogue function `(frame, row_lo, row_hi)`, once finalized (0: none).
    epilogue: std::sync::atomic::AtomicUsize,
}

enum DescKind {
    Gemm(plan::GemmKernel),
    Call { node: Node, call: plan::CallKernel },
    None,
}

/// Layout of the frame the native function reads.
#[derive(Clone, Copy)]
struct FrameLayout {
    sizes: usize,
    bufs: usize,
}

impl FrameLayout {
    fn env_slot(&self) -> usize {
        self.sizes + self.bufs
    }
    fn len(&self) -> usize {
        self.sizes + self.bufs + 2
    }
}

/// A call's id, the `RnnGrad` operands and the four gradients.
type RnnGrads = (u64, Vec<crate::ir::Id>, Vec<ArrayD<f32>>);

thread_local! {
    /// Counts this thread's calls into compiled code (keys per-call caches).
    static CALL_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The four gradients of the last recurrent layer back-propagated in this call, by
    /// call and the `RnnGrad` nodes' operands (the four nodes of one layer share them).
    static RNN_GRADS: RefCell<Option<RnnGrads>> = const { RefCell::new(None) };
    /// An error raised inside a runtime routine during the current call.
    static CALL_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn set_error(msg: String) {
    CALL_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        if e.is_none() {
            *e = Some(msg);
        }
    });
}

/// Whether Cranelift's verifier checks every function before codegen.
static VERIFY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(cfg!(debug_assertions));

/// Turns Cranelift's IR verifier on or off for later compiles. It is off in release
/// builds (it costs a fifth to a quarter of compile time) and on in debug builds; the JIT
/// tests turn it on, so every function they compile is verified.
pub fn set_verifier(on: bool) {
    VERIFY.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the host CPU has fused multiply-add (Cranelift then emits `vfmadd`).
fn host_has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Builds the host ISA with its detected features and `opt_level=speed`.
fn isa() -> Result<Arc<dyn cranelift_codegen::isa::TargetIsa>, RunError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| RunError(format!("cranelift flag {k}: {e}")))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    let verify = if VERIFY.load(std::sync::atomic::Ordering::Relaxed) {
        "true"
    } else {
        "false"
    };
    set(&mut flags, "enable_verifier", verify)?;
    let builder = cranelift_native::builder()
        .map_err(|e| RunError(format!("this CPU is not supported by Cranelift: {e}")))?;
    builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| RunError(format!("cranelift ISA: {e}")))
}

/// Plans and compiles `f` (which should already have been through the graph passes).
pub fn compile(f: &Func) -> Result<JitKernel, RunError> {
    build(f, &[], false)
}

/// Like [`compile`], keeping the CLIF text in [`JitKernel::clif`].
pub fn compile_with_clif(f: &Func) -> Result<JitKernel, RunError> {
    build(f, &[], true)
}

/// Plans and compiles `f`, letting the `(input, output)` pairs in `donate` update the
/// input's memory in place where that is safe (see [`plan::Plan::donate`]).
pub fn compile_donating(f: &Func, donate: &[(usize, usize)]) -> Result<JitKernel, RunError> {
    build(f, donate, false)
}

fn build(f: &Func, donate: &[(usize, usize)], keep_clif: bool) -> Result<JitKernel, RunError> {
    // Start the thread team now, so the first calls don't pay for spawning it.
    team::team();
    let mut plan = plan::plan(f);
    let donated = plan.donate(donate);
    let isa = isa()?;
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let ptr = module.target_config().pointer_type();
    let mut ctx = module.make_context();
    ctx.func.signature.params.push(AbiParam::new(ptr));
    let id = module
        .declare_function(&f.name, Linkage::Local, &ctx.func.signature)
        .map_err(|e| RunError(format!("cranelift: {e}")))?;
    ctx.func.name = UserFuncName::user(0, id.as_u32());

    let fl = FrameLayout {
        sizes: plan.sizes.len(),
        bufs: plan.bufs.len(),
    };
    let descs: Vec<Desc> = plan
        .kernels
        .iter()
        .map(|k| {
            let kind = match k {
                Kernel::Gemm(g) => DescKind::Gemm(g.clone()),
                Kernel::Call(c) => DescKind::Call {
                    node: plan.func.nodes[c.node].clone(),
                    call: c.clone(),
                },
                Kernel::Loop(_) => DescKind::None,
            };
            Desc {
                fl,
                kind,
                epilogue: std::sync::atomic::AtomicUsize::new(0),
            }
        })
        .collect();
    let callees = codegen::Callees {
        gemm: kiln_gemm as *const () as usize,
        call: kiln_call as *const () as usize,
        parallel: kiln_parallel as *const () as usize,
        descs: descs.iter().map(|d| d as *const Desc as usize).collect(),
    };
    let mut fctx = FunctionBuilderContext::new();
    let mut clif = String::new();
    // Kernels large enough to split across cores get a function of their own, run over
    // a range of their outermost axis.
    // Per kernel: a function of its own over a range (loops split across cores run
    // over their outermost axis, small products over their columns), and for products
    // with an epilogue, the epilogue as a loop over a range of rows.
    let mut kernel_ids = Vec::new();
    let mut epilogue_ids = Vec::new();
    for (ki, k) in plan.kernels.iter().enumerate() {
        let (main, epi) = match k {
            Kernel::Loop(l) if codegen::splittable(l) => (Some((l, None, false)), None),
            Kernel::Gemm(g) => {
                let small = g
                    .small
                    .as_ref()
                    .filter(|l| codegen::is_axpy_form(l))
                    .map(|l| (l, g.epilogue.as_deref(), true));
                (small, g.epilogue.as_ref().map(|e| &e.kernel))
            }
            _ => (None, None),
        };
        let mut define = |name: String,
                          what: (&plan::LoopKernel, Option<&plan::Epilogue>, bool)|
         -> Result<cranelift_module::FuncId, RunError> {
            let mut kctx = module.make_context();
            for t in [
                ptr,
                cranelift_codegen::ir::types::I64,
                cranelift_codegen::ir::types::I64,
            ] {
                kctx.func.signature.params.push(AbiParam::new(t));
            }
            let kid = module
                .declare_function(&name, Linkage::Local, &kctx.func.signature)
                .map_err(|e| RunError(format!("cranelift: {e}")))?;
            kctx.func.name = UserFuncName::user(0, kid.as_u32());
            {
                let mut b = FunctionBuilder::new(&mut kctx.func, &mut fctx);
                let entry = b.create_block();
                b.append_block_params_for_function_params(entry);
                b.switch_to_block(entry);
                b.seal_block(entry);
                let params = b.block_params(entry).to_vec();
                let mut g = codegen::Gen {
                    b,
                    plan: &plan,
                    frame: params[0],
                    ptr,
                    fma: host_has_fma(),
                    range: Some((params[1], params[2])),
                    kernel_fns: Vec::new(),
                    epilogue_fns: Vec::new(),
                };
                let (l, e, small) = what;
                if small {
                    g.emit_small_gemm_fn(l, e);
                } else {
                    g.emit_kernel_fn(l);
                }
                g.b.finalize(module.target_config());
            }
            if keep_clif {
                clif.push_str(&kctx.func.display().to_string());
            }
            module
                .define_function(kid, &mut kctx)
                .map_err(|e| RunError(format!("cranelift could not compile {name}: {e:?}")))?;
            Ok(kid)
        };
        kernel_ids.push(match main {
            Some(w) => Some(define(format!("{}_k{ki}", f.name), w)?),
            None => None,
        });
        epilogue_ids.push(match epi {
            Some(l) => Some(define(
                format!("{}_k{ki}_epilogue", f.name),
                (l, None, false),
            )?),
            None => None,
        });
    }
    {
        let kernel_fns = kernel_ids
            .iter()
            .map(|id| id.map(|id| module.declare_func_in_func(id, &mut ctx.func)))
            .collect();
        let epilogue_fns = epilogue_ids
            .iter()
            .map(|id| id.map(|id| module.declare_func_in_func(id, &mut ctx.func)))
            .collect();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let frame = b.block_params(entry)[0];
        let mut g = codegen::Gen {
            b,
            plan: &plan,
            frame,
            ptr,
            fma: host_has_fma(),
            range: None,
            kernel_fns,
            epilogue_fns,
        };
        g.emit(&callees);
        g.b.finalize(module.target_config());
    }
    if keep_clif {
        clif.push_str(&ctx.func.display().to_string());
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| RunError(format!("cranelift could not compile {}: {e:?}", f.name)))?;
    module.clear_context(&mut ctx);
    module
        .finalize_definitions()
        .map_err(|e| RunError(format!("cranelift: {e}")))?;
    for (d, eid) in descs.iter().zip(&epilogue_ids) {
        if let Some(eid) = eid {
            let addr = module.get_finalized_function(*eid) as usize;
            d.epilogue.store(addr, std::sync::atomic::Ordering::Release);
        }
    }
    let code = module.get_finalized_function(id);
    // SAFETY: the function was declared with one pointer parameter and no results and
    // finalized above; it lives as long as `module`, which the kernel owns.
    let entry: extern "C" fn(*mut i64) = unsafe { std::mem::transmute(code) };
    let mut first_def = vec![usize::MAX; plan.bufs.len()];
    for (ki, k) in plan.kernels.iter().enumerate() {
        for b in plan::writes(k) {
            first_def[b] = first_def[b].min(ki);
        }
    }
    Ok(JitKernel {
        plan,
        entry,
        _descs: descs,
        _module: ModuleHolder(module),
        first_def,
        layouts: Mutex::new(HashMap::new()),
        arenas: Mutex::new(Vec::new()),
        donated,
        clif,
    })
}

impl JitKernel {
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn frame_layout(&self) -> FrameLayout {
        FrameLayout {
            sizes: self.plan.sizes.len(),
            bufs: self.plan.bufs.len(),
        }
    }

    /// Evaluates the size table and lays out the arena (first fit, by liveness).
    fn layout(&self, env: &interp::Env) -> Result<Arc<Layout>, RunError> {
        let key: Vec<i64> = {
            let mut k: Vec<(&String, &i64)> = env.iter().collect();
            k.sort();
            k.into_iter().map(|(_, v)| *v).collect()
        };
        if let Ok(cache) = self.layouts.lock()
            && let Some(l) = cache.get(&key)
        {
            return Ok(l.clone());
        }
        let mut sizes = Vec::with_capacity(self.plan.sizes.len());
        for d in &self.plan.sizes {
            sizes.push(
                d.eval(env)
                    .ok_or_else(|| RunError(format!("cannot evaluate size {d}")))?,
            );
        }
        // (offset, len, free after kernel) blocks; first fit over kernel order.
        let mut offsets = vec![0usize; self.plan.bufs.len()];
        let mut order: Vec<usize> = (0..self.plan.bufs.len())
            .filter(|&b| matches!(self.plan.bufs[b], BufKind::Arena { .. }))
            .collect();
        order.sort_by_key(|&b| self.first_def[b]);
        let mut live: Vec<(usize, usize, usize)> = Vec::new(); // (offset, len, last_use)
        let mut arena_len = 0usize;
        for b in order {
            let BufKind::Arena { len } = self.plan.bufs[b] else {
                continue;
            };
            let n =
                usize::try_from(sizes[len]).map_err(|_| RunError("negative buffer size".into()))?;
            let n = n.div_ceil(16) * 16 + 16; // aligned, with room for a vector over-read
            let start = self.first_def[b];
            live.retain(|&(_, _, last)| last >= start);
            live.sort();
            let mut at = 0usize;
            for &(o, l, _) in &live {
                if at + n <= o {
                    break;
                }
                at = at.max(o + l);
            }
            offsets[b] = at;
            arena_len = arena_len.max(at + n);
            live.push((at, n, self.plan.last_use[b]));
        }
        let layout = Arc::new(Layout {
            sizes,
            offsets,
            arena_len,
        });
        if let Ok(mut cache) = self.layouts.lock()
            && cache.len() < 64
        {
            cache.insert(key, layout.clone());
        }
        Ok(layout)
    }
}

/// Copies a strided view out of raw memory into an owned array (a straight copy when
/// the view is contiguous, else an odometer over the axes).
///
/// # Safety
/// `base` must point to memory covering every element the access reaches.
unsafe fn gather(base: *const f32, offset: i64, strides: &[i64], shape: &[usize]) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut expect = 1i64;
    let mut contiguous = true;
    for d in (0..shape.len()).rev() {
        if shape[d] != 1 && strides[d] != expect {
            contiguous = false;
        }
        expect *= shape[d] as i64;
    }
    if contiguous {
        // SAFETY: a contiguous access covers `n` elements from `offset`.
        let src = unsafe { std::slice::from_raw_parts(base.offset(offset as isize), n) };
        out.extend_from_slice(src);
    } else if n > 0 {
        let r = shape.len();
        let mut ix = vec![0usize; r];
        let mut o = offset;
        for _ in 0..n {
            // SAFETY: every index stays within the access (caller's contract).
            out.push(unsafe { *base.offset(o as isize) });
            // Advance the odometer.
            let mut d = r;
            while d > 0 {
                d -= 1;
                ix[d] += 1;
                o += strides[d];
                if ix[d] < shape[d] {
                    break;
                }
                o -= strides[d] * shape[d] as i64;
                ix[d] = 0;
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(shape), out).expect("element count matches the shape")
}

fn access_parts(frame: &[i64], fl: FrameLayout, a: &Access) -> (*const f32, i64, Vec<i64>) {
    let base = frame[fl.sizes + a.buf] as *const f32;
    let strides = a.strides.iter().map(|&s| frame[s]).collect();
    (base, frame[a.offset], strides)
}

/// Runs `f(frame, lo, hi)` over `0..n` split into one part per thread of the team, the
/// inner boundaries on multiples of `grain`. The parts write disjoint outputs (see
/// `codegen::splittable` and `codegen::emit_small_gemm`).
extern "C" fn kiln_parallel(frame: *mut i64, f: usize, n: i64, grain: i64) {
    // SAFETY: `f` is the address of a finalized kernel function with this signature,
    // owned by the running kernel.
    let kernel: extern "C" fn(*mut i64, i64, i64) = unsafe { std::mem::transmute(f) };
    let t = team::team();
    let units = (n.max(0) + grain.max(1) - 1) / grain.max(1);
    let parts = (t.size() as i64).clamp(1, units.max(1)) as usize;
    if parts == 1 {
        kernel(frame, 0, n);
        return;
    }
    let frame = frame as usize;
    // Kernel functions do not panic (they are straight-line loops), so `run` cannot
    // report a failure here.
    t.run(parts, &|p| {
        let (lo, hi) = team::split(n, parts, p, grain);
        if lo < hi {
            kernel(frame as *mut i64, lo, hi);
        }
    });
}

/// Products with fewer multiply-adds than this run on one thread (measured: below it
/// the hand-off costs more than the second core saves).
const GEMM_PARALLEL_MIN_MACS: usize = 1 << 16;

/// Row or column blocks of a split product are multiples of this (matrixmultiply's
/// micro-kernel tile).
const GEMM_GRAIN: i64 = 16;

/// GEMM over the batch axes, with the operands' strides (transposes are free). Large
/// products are split across the team: by batch entry when there are enough, else
/// into blocks of rows or columns, whichever makes the parts repack less (splitting
/// rows repacks B in every part, splitting columns repacks A).
extern "C" fn kiln_gemm(frame: *mut i64, desc: *const Desc) {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: `desc` points at a descriptor owned by the running kernel.
        let d = unsafe { &*desc };
        let DescKind::Gemm(g) = &d.kind else {
            return Err("bad gemm descriptor".to_string());
        };
        let fl = d.fl;
        let frame_ptr = frame as usize;
        // SAFETY: the frame has `fl.len()` slots, written by `run` for this call.
        let frame = unsafe { std::slice::from_raw_parts(frame, fl.len()) };
        let (m, k, n) = (
            frame[g.m] as usize,
            frame[g.k] as usize,
            frame[g.n] as usize,
        );
        let batch: Vec<usize> = g.batch.iter().map(|&s| frame[s] as usize).collect();
        let (pa, oa, sa) = access_parts(frame, fl, &g.a);
        let (pb, ob, sb) = access_parts(frame, fl, &g.b);
        let pc = frame[fl.sizes + g.c] as usize;
        let (pa, pb) = (pa as usize, pb as usize);
        let r = batch.len();
        let total: usize = batch.iter().product();
        // One batch entry, rows `rows` and columns `cols` of it.
        let block = |bi: usize, rows: (usize, usize), cols: (usize, usize)| {
            let mut rem = bi;
            let (mut off_a, mut off_b) = (oa, ob);
            for d in (0..r).rev() {
                let i = (rem % batch[d]) as i64;
                rem /= batch[d];
                off_a += i * sa[d];
                off_b += i * sb[d];
            }
            off_a += rows.0 as i64 * sa[r];
            off_b += cols.0 as i64 * sb[r + 1];
            let off_c = bi * m * n + rows.0 * n + cols.0;
            // SAFETY: offsets and strides come from the plan for these buffers; the
            // output is a contiguous [batch…, m, n] arena region and the block lies
            // within it.
            unsafe {
                matrixmultiply::sgemm(
                    rows.1 - rows.0,
                    k,
                    cols.1 - cols.0,
                    1.0,
                    (pa as *const f32).offset(off_a as isize),
                    sa[r] as isize,
                    sa[r + 1] as isize,
                    (pb as *const f32).offset(off_b as isize),
                    sb[r] as isize,
                    sb[r + 1] as isize,
                    0.0,
                    (pc as *mut f32).add(off_c),
                    n as isize,
                    1,
                );
            }
        };
        // The fused epilogue over rows `lo..hi` (products with an epilogue have no
        // batch axes).
        let epi = d.epilogue.load(std::sync::atomic::Ordering::Acquire);
        let epilogue = |lo: usize, hi: usize| {
            if epi != 0 && lo < hi {
                // SAFETY: `epi` is a finalized `(frame, lo, hi)` kernel function owned by
                // the running kernel; it reads the product rows computed above.
                let f: extern "C" fn(*mut i64, i64, i64) = unsafe { std::mem::transmute(epi) };
                f(frame_ptr as *mut i64, lo as i64, hi as i64);
            }
        };
        let t = team::team();
        let macs = total.saturating_mul(m).saturating_mul(k).saturating_mul(n);
        if t.size() == 1 || macs < GEMM_PARALLEL_MIN_MACS || m == 0 || n == 0 {
            for bi in 0..total {
                block(bi, (0, m), (0, n));
            }
            epilogue(0, m);
            return Ok(());
        }
        let ok = if total >= t.size() {
            let parts = t.size().min(team::MAX_PARTS);
            let ok = t.run(parts, &|p| {
                let (lo, hi) = team::split(total as i64, parts, p, 1);
                for bi in lo as usize..hi as usize {
                    block(bi, (0, m), (0, n));
                }
            });
            epilogue(0, m);
            ok
        } else {
            let per = t.size().div_ceil(total).min(team::MAX_PARTS / total);
            let by_rows = n < m || epi != 0 && total == 1 && n < 2 * m;
            let extent = if by_rows { m } else { n } as i64;
            let units = (extent + GEMM_GRAIN - 1) / GEMM_GRAIN;
            let per = per.min(units as usize).max(1);
            t.run(total * per, &|p| {
                let (bi, q) = (p / per, p % per);
                let (lo, hi) = team::split(extent, per, q, GEMM_GRAIN);
                let range = (lo as usize, hi as usize);
                if range.0 < range.1 {
                    if by_rows {
                        block(bi, range, (0, n));
                        // The rows are still in this core's cache.
                        epilogue(range.0, range.1);
                    } else {
                        block(bi, (0, m), range);
                    }
                }
            }) && (by_rows
                || epi == 0
                || t.run(t.size(), &|p| {
                    let (lo, hi) = team::split(m as i64, t.size(), p, 1);
                    epilogue(lo as usize, hi as usize);
                }))
        };
        if ok {
            Ok(())
        } else {
            Err("a panic inside gemm".to_string())
        }
    });
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => set_error(e),
        Err(_) => set_error("a panic inside gemm".into()),
    }
}

/// Max pooling's gradient on the call's buffers in place (no copies), split across
/// the team by batch entry. Returns false (the generic path runs instead) for a
/// rank-0 input.
fn max_pool_grad(
    frame: &[i64],
    fl: FrameLayout,
    call: &plan::CallKernel,
    attrs: &WindowAttrs,
) -> Result<bool, String> {
    let shape = |s: &[plan::Slot]| -> Vec<usize> { s.iter().map(|&x| frame[x] as usize).collect() };
    let (xs, ys) = (shape(&call.arg_shapes[0]), shape(&call.arg_shapes[1]));
    if xs.is_empty() {
        return Ok(false);
    }
    // Each operand straight from its buffer when contiguous, else a contiguous copy
    // (dy is often a view into a padded gradient buffer).
    let operand = |a: &Access, shape: &[usize]| -> (usize, Option<ArrayD<f32>>) {
        let (p, o, strides) = access_parts(frame, fl, a);
        let mut expect = 1i64;
        let contiguous = (0..shape.len()).rev().all(|d| {
            let ok = shape[d] == 1 || strides[d] == expect;
            expect *= shape[d] as i64;
            ok
        });
        if contiguous {
            // SAFETY: a contiguous access from its offset (plan invariant).
            (unsafe { p.offset(o as isize) } as usize, None)
        } else {
            // SAFETY: the access lies within its buffer (plan invariant).
            let copy = unsafe { gather(p, o, &strides, shape) };
            (copy.as_ptr() as usize, Some(copy))
        }
    };
    let (px, _x_copy) = operand(&call.args[0], &xs);
    let (pdy, _dy_copy) = operand(&call.args[1], &ys);
    let pdx = frame[fl.sizes + call.out] as usize;
    let batch = xs[0];
    let (xper, yper) = (
        xs[1..].iter().product::<usize>(),
        ys[1..].iter().product::<usize>(),
    );
    let t = team::team();
    let parts = t.size().min(batch).max(1);
    let ok = t.run(parts, &|p| {
        let (lo, hi) = team::split(batch as i64, parts, p, 1);
        let (lo, hi) = (lo as usize, hi as usize);
        if lo == hi {
            return;
        }
        let (mut xs, mut ys) = (xs.clone(), ys.clone());
        xs[0] = hi - lo;
        ys[0] = hi - lo;
        // SAFETY: each part reads and writes only its own batch entries of buffers
        // holding `batch` entries.
        let (x, dy, dx) = unsafe {
            (
                std::slice::from_raw_parts((px as *const f32).add(lo * xper), (hi - lo) * xper),
                std::slice::from_raw_parts((pdy as *const f32).add(lo * yper), (hi - lo) * yper),
                std::slice::from_raw_parts_mut((pdx as *mut f32).add(lo * xper), (hi - lo) * xper),
            )
        };
        crate::ir::window::max_pool_grad(&xs, &ys, attrs, x, dy, dx);
    });
    if ok {
        Ok(true)
    } else {
        Err("a panic inside max pooling's gradient".into())
    }
}

/// One gradient of a recurrent layer. Its four `RnnGrad` nodes (x, kernel,
/// recurrent, bias) take the same operands, so the first one of a call runs
/// back-propagation through time once for all four and the others take theirs from
/// the cache.
fn rnn_grad(
    node: &Node,
    attrs: &crate::ir::RnnAttrs,
    wrt: usize,
    args: &[&ArrayD<f32>],
    shape: &[usize],
) -> Result<ArrayD<f32>, String> {
    let call = CALL_ID.with(|c| c.get());
    let cached = RNN_GRADS.with(|g| {
        g.borrow()
            .as_ref()
            .filter(|(c, ids, _)| *c == call && *ids == node.args)
            .and_then(|(_, _, v)| v.get(wrt).cloned())
    });
    let g = match cached {
        Some(g) => g,
        None => {
            let all = crate::ir::rnn::grads(attrs, args).map_err(|e| e.0)?;
            let g = all
                .get(wrt)
                .cloned()
                .ok_or_else(|| "rnn grad index".to_string())?;
            RNN_GRADS.with(|c| *c.borrow_mut() = Some((call, node.args.clone(), all)));
            g
        }
    };
    g.into_shape_with_order(IxDyn(shape))
        .map_err(|e| e.to_string())
}

/// Runs a complex primitive (conv, pooling, recurrent cell, gather, …) with the
/// reference implementation on the call's buffers.
extern "C" fn kiln_call(frame: *mut i64, desc: *const Desc) {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: `desc` points at a descriptor owned by the running kernel.
        let d = unsafe { &*desc };
        let DescKind::Call { node, call } = &d.kind else {
            return Err("bad call descriptor".to_string());
        };
        let fl = d.fl;
        // SAFETY: the frame has `fl.len()` slots, written by `run` for this call.
        let frame = unsafe { std::slice::from_raw_parts(frame, fl.len()) };
        if let Op::PoolGrad {
            kind: PoolKind::Max,
            attrs,
        } = &node.op
            && max_pool_grad(frame, fl, call, attrs)?
        {
            return Ok(());
        }
        // SAFETY: slot `env_slot` holds a pointer to the Env that `run` keeps alive.
        let env = unsafe { &*(frame[fl.env_slot()] as *const interp::Env) };
        let mut args = Vec::new();
        for (a, shape) in call.args.iter().zip(&call.arg_shapes) {
            let (p, o, s) = access_parts(frame, fl, a);
            let shape: Vec<usize> = shape.iter().map(|&x| frame[x] as usize).collect();
            // SAFETY: the access lies within its buffer (plan invariant).
            args.push(unsafe { gather(p, o, &s, &shape) });
        }
        let arg_refs: Vec<&ArrayD<f32>> = args.iter().collect();
        let shape: Vec<usize> = call.out_shape.iter().map(|&x| frame[x] as usize).collect();
        let dimv = |d: &crate::dim::Dim| {
            d.eval(env)
                .ok_or_else(|| crate::ir::IrError(format!("unbound {d}")))
        };
        let out = match &node.op {
            Op::RnnGrad { attrs, wrt } => rnn_grad(node, attrs, *wrt, &arg_refs, &shape)?,
            _ => interp::eval_node::<f32>(node, &shape, &arg_refs, &dimv).map_err(|e| e.0)?,
        };
        let dst = frame[fl.sizes + call.out] as *mut f32;
        let out = out.as_standard_layout();
        let values = out
            .as_slice()
            .ok_or("a routine returned a non-contiguous array")?;
        // SAFETY: the output buffer holds the output's element count.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), dst, values.len()) };
        Ok(())
    });
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => set_error(e),
        Err(_) => set_error("a panic inside a runtime routine".into()),
    }
}

impl RunKernel for JitKernel {
    fn func(&self) -> &Func {
        &self.plan.func
    }

    fn run(&self, inputs: &[ArrayViewD<f32>]) -> Result<Vec<ArrayD<f32>>, RunError> {
        // Donated inputs are written to: run on private copies of them.
        let mut owned: Vec<Option<ArrayD<f32>>> = vec![None; inputs.len()];
        for &(i, _) in &self.donated {
            owned[i] = Some(inputs[i].as_standard_layout().into_owned());
        }
        let outs = self.execute(inputs, &mut owned)?;
        Ok(outs
            .into_iter()
            .enumerate()
            .map(|(o, v)| match v {
                Some(v) => v,
                None => {
                    let i = self
                        .donated
                        .iter()
                        .find(|p| p.1 == o)
                        .map(|p| p.0)
                        .unwrap_or(0);
                    owned[i].take().unwrap_or_default()
                }
            })
            .collect())
    }

    fn donated(&self) -> &[(usize, usize)] {
        &self.donated
    }

    fn run_inplace(
        &self,
        inputs: &mut [ArrayD<f32>],
    ) -> Result<Vec<Option<ArrayD<f32>>>, RunError> {
        let mut owned: Vec<Option<ArrayD<f32>>> = vec![None; inputs.len()];
        for &(i, _) in &self.donated {
            let a = std::mem::take(&mut inputs[i]);
            owned[i] = Some(if a.is_standard_layout() {
                a
            } else {
                a.as_standard_layout().into_owned()
            });
        }
        let result = {
            let views: Vec<ArrayViewD<f32>> = inputs.iter().map(|a| a.view()).collect();
            self.execute(&views, &mut owned)
        };
        // The donated arrays go back to the caller (updated on success).
        for &(i, _) in &self.donated {
            if let Some(a) = owned[i].take() {
                inputs[i] = a;
            }
        }
        result
    }
}

impl JitKernel {
    /// Runs the native function. `owned[i]` replaces input `i` (donated inputs, which
    /// the code writes); outputs written into a donated input come back as `None`.
    fn execute(
        &self,
        inputs: &[ArrayViewD<f32>],
        owned: &mut [Option<ArrayD<f32>>],
    ) -> Result<Vec<Option<ArrayD<f32>>>, RunError> {
        let env = {
            let mut views: Vec<ArrayViewD<f32>> = inputs.to_vec();
            for (i, o) in owned.iter().enumerate() {
                if let Some(a) = o {
                    views[i] = a.view();
                }
            }
            validate(&self.plan.func, &views)?
        };
        let layout = self.layout(&env)?;
        let fl = self.frame_layout();
        // Read-only inputs (borrowed, made contiguous if needed) and writable donated
        // ones (owned, standard layout).
        let contiguous: Vec<_> = inputs.iter().map(|a| a.as_standard_layout()).collect();
        let mut ptrs: Vec<i64> = contiguous.iter().map(|a| a.as_ptr() as i64).collect();
        for (i, o) in owned.iter_mut().enumerate() {
            if let Some(a) = o {
                ptrs[i] = a.as_mut_ptr() as i64;
            }
        }
        let need = layout.arena_len.max(1);
        let mut arena = self
            .arenas
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default();
        if arena.len() < need {
            arena = vec![0f32; need];
        }
        let mut frame = vec![0i64; fl.len()];
        frame[..layout.sizes.len()].copy_from_slice(&layout.sizes);
        for (b, kind) in self.plan.bufs.iter().enumerate() {
            frame[fl.sizes + b] = match kind {
                BufKind::Input(i) => ptrs[*i],
                // SAFETY: offsets are within the arena (laid out above).
                BufKind::Arena { .. } => unsafe {
                    arena.as_mut_ptr().add(layout.offsets[b]) as i64
                },
            };
        }
        frame[fl.env_slot()] = &env as *const interp::Env as i64;
        CALL_ERROR.with(|e| *e.borrow_mut() = None);
        CALL_ID.with(|c| c.set(c.get().wrapping_add(1)));
        // The code writes donated inputs through the mutable pointers taken above.
        (self.entry)(frame.as_mut_ptr());
        if let Some(e) = CALL_ERROR.with(|e| e.borrow_mut().take()) {
            return Err(RunError(e));
        }
        let sizes = &layout.sizes;
        let outs = self
            .plan
            .outputs
            .iter()
            .enumerate()
            .map(|(o, (a, shape))| {
                if self.donated.iter().any(|p| p.1 == o) {
                    return None;
                }
                let shape: Vec<usize> = shape.iter().map(|&s| sizes[s] as usize).collect();
                let strides: Vec<i64> = a.strides.iter().map(|&s| sizes[s]).collect();
                let base = frame[fl.sizes + a.buf] as *const f32;
                // SAFETY: the output access lies within its buffer, alive until here.
                Some(unsafe { gather(base, sizes[a.offset], &strides, &shape) })
            })
            .collect();
        drop(contiguous);
        if let Ok(mut pool) = self.arenas.lock()
            && pool.len() < 4
        {
            pool.push(arena);
        }
        Ok(outs)
    }
}

/// Compiles `f` into a runtime kernel (with in-place `(input, output)` pairs).
pub fn compile_kernel(f: &Func, donate: &[(usize, usize)]) -> Result<Arc<dyn RunKernel>, RunError> {
    Ok(Arc::new(compile_donating(f, donate)?))
}
