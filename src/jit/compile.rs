//! Compilation: the host ISA, the plan turned into Cranelift functions (the entry, plus
//! a function over a range for each kernel split across cores or run as a small
//! product, and for each GEMM's epilogue), finalized into a [`JitKernel`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cranelift_codegen::Context;
use cranelift_codegen::ir::{AbiParam, Type, UserFuncName, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

use super::frame::{Desc, DescKind, FrameLayout};
use super::plan::{self, Epilogue, Kernel, LoopKernel, Plan};
use super::routine::kiln_call;
use super::trampoline::{kiln_gemm, kiln_parallel};
use super::{JitKernel, ModuleHolder, arena, codegen, team};
use crate::exec::RunError;
use crate::ir::Func;

/// Whether Cranelift's verifier checks every function before codegen.
static VERIFY: AtomicBool = AtomicBool::new(cfg!(debug_assertions));

/// Turns Cranelift's IR verifier on or off for later compiles. It is off in release
/// builds (it costs a fifth to a quarter of compile time) and on in debug builds; the JIT
/// tests turn it on, so every function they compile is verified.
pub fn set_verifier(on: bool) {
    VERIFY.store(on, Ordering::Relaxed);
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
    let verify = if VERIFY.load(Ordering::Relaxed) {
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

/// What a function over a range `(frame, lo, hi)` runs: a loop kernel over a range of
/// its outermost axis, or a small product over a range of columns (with its epilogue).
#[derive(Clone, Copy)]
enum RangeFn<'p> {
    Loop(&'p LoopKernel),
    SmallGemm(&'p LoopKernel, Option<&'p Epilogue>),
}

/// The functions over a range that kernel `k` gets: its own (loops split across cores,
/// small products), and a GEMM epilogue's.
fn range_fns(k: &Kernel) -> (Option<RangeFn<'_>>, Option<&LoopKernel>) {
    match k {
        Kernel::Loop(l) if codegen::splittable(l) => (Some(RangeFn::Loop(l)), None),
        Kernel::Gemm(g) => {
            let small = g
                .small
                .as_ref()
                .filter(|l| codegen::is_axpy_form(l))
                .map(|l| RangeFn::SmallGemm(l, g.epilogue.as_deref()));
            (small, g.epilogue.as_ref().map(|e| &e.kernel))
        }
        _ => (None, None),
    }
}

/// One descriptor per kernel: what a runtime routine needs to run it.
fn descs(plan: &Plan) -> Vec<Desc> {
    let fl = FrameLayout {
        sizes: plan.sizes.len(),
        bufs: plan.bufs.len(),
    };
    plan.kernels
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
                epilogue: AtomicUsize::new(0),
            }
        })
        .collect()
}

fn cranelift(e: impl std::fmt::Display) -> RunError {
    RunError(format!("cranelift: {e}"))
}

/// Per kernel: the id of one of its functions over a range, if it has one.
type FnIds = Vec<Option<FuncId>>;

/// The module being filled with one plan's functions.
struct Emitter<'p> {
    module: JITModule,
    fctx: FunctionBuilderContext,
    plan: &'p Plan,
    ptr: Type,
    /// The functions' CLIF text, when kept.
    clif: Option<String>,
}

impl Emitter<'_> {
    /// Declares, emits and defines a function `(frame, lo, hi)` over a range.
    fn define_range_fn(&mut self, name: String, what: RangeFn) -> Result<FuncId, RunError> {
        let ptr = self.ptr;
        let mut kctx = self.module.make_context();
        for t in [ptr, types::I64, types::I64] {
            kctx.func.signature.params.push(AbiParam::new(t));
        }
        let kid = self
            .module
            .declare_function(&name, Linkage::Local, &kctx.func.signature)
            .map_err(cranelift)?;
        kctx.func.name = UserFuncName::user(0, kid.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut kctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let params = b.block_params(entry).to_vec();
            let mut g = codegen::Gen {
                b,
                plan: self.plan,
                frame: params[0],
                ptr,
                fma: host_has_fma(),
                range: Some((params[1], params[2])),
                kernel_fns: Vec::new(),
                epilogue_fns: Vec::new(),
            };
            match what {
                RangeFn::SmallGemm(l, e) => g.emit_small_gemm_fn(l, e),
                RangeFn::Loop(l) => g.emit_kernel_fn(l),
            }
            g.b.finalize(self.module.target_config());
        }
        if let Some(clif) = &mut self.clif {
            clif.push_str(&kctx.func.display().to_string());
        }
        self.module
            .define_function(kid, &mut kctx)
            .map_err(|e| RunError(format!("cranelift could not compile {name}: {e:?}")))?;
        Ok(kid)
    }

    /// Every kernel's functions over a range: its own and its epilogue's, per kernel.
    fn define_kernel_fns(&mut self, name: &str) -> Result<(FnIds, FnIds), RunError> {
        let plan = self.plan;
        let mut kernel_ids = Vec::new();
        let mut epilogue_ids = Vec::new();
        for (ki, k) in plan.kernels.iter().enumerate() {
            let (main, epi) = range_fns(k);
            kernel_ids.push(match main {
                Some(w) => Some(self.define_range_fn(format!("{name}_k{ki}"), w)?),
                None => None,
            });
            epilogue_ids.push(match epi {
                Some(l) => {
                    Some(self.define_range_fn(format!("{name}_k{ki}_epilogue"), RangeFn::Loop(l))?)
                }
                None => None,
            });
        }
        Ok((kernel_ids, epilogue_ids))
    }

    /// Emits and defines the entry function `(frame)`, which runs every kernel in order.
    fn define_entry(
        &mut self,
        ctx: &mut Context,
        id: FuncId,
        (kernel_ids, epilogue_ids): (&[Option<FuncId>], &[Option<FuncId>]),
        callees: &codegen::Callees,
    ) -> Result<(), RunError> {
        let kernel_fns = kernel_ids
            .iter()
            .map(|id| id.map(|id| self.module.declare_func_in_func(id, &mut ctx.func)))
            .collect();
        let epilogue_fns = epilogue_ids
            .iter()
            .map(|id| id.map(|id| self.module.declare_func_in_func(id, &mut ctx.func)))
            .collect();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let frame = b.block_params(entry)[0];
            let mut g = codegen::Gen {
                b,
                plan: self.plan,
                frame,
                ptr: self.ptr,
                fma: host_has_fma(),
                range: None,
                kernel_fns,
                epilogue_fns,
            };
            g.emit(callees);
            g.b.finalize(self.module.target_config());
        }
        if let Some(clif) = &mut self.clif {
            clif.push_str(&ctx.func.display().to_string());
        }
        let name = &self.plan.func.name;
        self.module
            .define_function(id, ctx)
            .map_err(|e| RunError(format!("cranelift could not compile {name}: {e:?}")))?;
        self.module.clear_context(ctx);
        Ok(())
    }
}

fn build(f: &Func, donate: &[(usize, usize)], keep_clif: bool) -> Result<JitKernel, RunError> {
    // Start the thread team now, so the first calls don't pay for spawning it.
    team::team();
    let mut plan = plan::plan(f);
    let donated = plan.donate(donate);
    let isa = isa()?;
    let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let mut e = Emitter {
        ptr: module.target_config().pointer_type(),
        module,
        fctx: FunctionBuilderContext::new(),
        plan: &plan,
        clif: keep_clif.then(String::new),
    };
    let mut ctx = e.module.make_context();
    ctx.func.signature.params.push(AbiParam::new(e.ptr));
    let id = e
        .module
        .declare_function(&f.name, Linkage::Local, &ctx.func.signature)
        .map_err(cranelift)?;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    let descs = descs(&plan);
    let callees = codegen::Callees {
        gemm: kiln_gemm as *const () as usize,
        call: kiln_call as *const () as usize,
        parallel: kiln_parallel as *const () as usize,
        descs: descs.iter().map(|d| d as *const Desc as usize).collect(),
    };
    let (kernel_ids, epilogue_ids) = e.define_kernel_fns(&f.name)?;
    e.define_entry(&mut ctx, id, (&kernel_ids, &epilogue_ids), &callees)?;
    let Emitter {
        mut module, clif, ..
    } = e;
    module.finalize_definitions().map_err(cranelift)?;
    for (d, eid) in descs.iter().zip(&epilogue_ids) {
        if let Some(eid) = eid {
            let addr = module.get_finalized_function(*eid) as usize;
            d.epilogue.store(addr, Ordering::Release);
        }
    }
    let code = module.get_finalized_function(id);
    // SAFETY: the function was declared with one pointer parameter and no results and
    // finalized above; it lives as long as `module`, which the kernel owns.
    let entry: extern "C" fn(*mut i64) = unsafe { std::mem::transmute(code) };
    let first_def = arena::first_defs(&plan);
    Ok(JitKernel {
        plan,
        entry,
        _descs: descs,
        _module: ModuleHolder(module),
        first_def,
        layouts: Mutex::new(HashMap::new()),
        arenas: Mutex::new(Vec::new()),
        donated,
        clif: clif.unwrap_or_default(),
    })
}
