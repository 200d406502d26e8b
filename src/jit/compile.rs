//! Compilation: the host ISA, the plan turned into steps (`jit::steps`) and Cranelift
//! functions (one function over a range per distinct loop kernel, small product or
//! GEMM epilogue in local form, see `jit::local`), finalized into a [`JitKernel`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cranelift_codegen::ir::{AbiParam, Type, UserFuncName, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

use super::frame::{Desc, DescKind, FrameLayout};
use super::local::{Local, localize};
use super::plan::{self, BufKind, Epilogue, Kernel, LoopKernel, Plan, Sink};
use super::steps::{Init, KernelFn, Small, Step, Steps};
use super::{JitKernel, ModuleHolder, arena, codegen, team};
use crate::exec::RunError;
use crate::ir::{Func, ReduceOp};

/// Whether Cranelift's verifier checks every function before codegen.
static VERIFY: AtomicBool = AtomicBool::new(cfg!(debug_assertions));

/// Turns Cranelift's IR verifier on or off for later compiles. It is off in release
/// builds (it costs a fifth to a quarter of compile time) and on in debug builds; the JIT
/// tests turn it on, so every function they compile is verified.
pub fn set_verifier(on: bool) {
    VERIFY.store(on, Ordering::Relaxed);
}

/// Whether the host CPU has fused multiply-add (Cranelift then emits `vfmadd`).
pub(super) fn host_has_fma() -> bool {
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
pub(super) fn isa() -> Result<Arc<dyn cranelift_codegen::isa::TargetIsa>, RunError> {
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
    build(f.clone(), &[], false)
}

/// Like [`compile`], keeping the CLIF text in [`JitKernel::clif`].
pub fn compile_with_clif(f: &Func) -> Result<JitKernel, RunError> {
    build(f.clone(), &[], true)
}

/// Plans and compiles `f`, letting the `(input, output)` pairs in `donate` update the
/// input's memory in place where that is safe (see [`plan::Plan::donate`]).
pub fn compile_donating(f: &Func, donate: &[(usize, usize)]) -> Result<JitKernel, RunError> {
    build(f.clone(), donate, false)
}

/// Like [`compile_donating`], taking the function (no copy of it is made).
pub fn compile_donating_owned(f: Func, donate: &[(usize, usize)]) -> Result<JitKernel, RunError> {
    build(f, donate, false)
}

/// What a function over a range `(frame, lo, hi)` runs: a loop kernel over a range of
/// its outermost axis, or a small product over a range of columns (with its epilogue).
#[derive(Clone, Copy, PartialEq)]
enum FnKind {
    Loop,
    SmallGemm,
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
                Kernel::Attention(a) => DescKind::Attention(a.clone()),
                Kernel::Norm(n) => DescKind::Norm(n.clone()),
                Kernel::Loop(_) => DescKind::None,
            };
            Desc {
                fl,
                kind,
                epilogues: Vec::new(),
            }
        })
        .collect()
}

fn cranelift(e: impl std::fmt::Display) -> RunError {
    RunError(format!("cranelift: {e}"))
}

/// The module being filled with one plan's distinct kernel functions.
struct Emitter<'p> {
    module: JITModule,
    fctx: FunctionBuilderContext,
    plan: &'p Plan,
    ptr: Type,
    /// The functions' CLIF text, when kept.
    clif: Option<String>,
    /// Each distinct function (by its local form's key): its index in `ids`.
    known: HashMap<String, usize>,
    ids: Vec<FuncId>,
    /// The whole frame's length; local frames follow it.
    frame_len: usize,
    /// Where each local frame slot is copied from.
    local_map: Vec<usize>,
}

impl Emitter<'_> {
    /// The function running `l` (a small product: with its epilogue `epi`) on a local
    /// frame: compiled the first time its local form is seen, shared after that.
    fn kernel_fn(
        &mut self,
        kind: FnKind,
        l: &LoopKernel,
        epi: Option<&Epilogue>,
    ) -> Result<KernelFn, RunError> {
        let local = localize(l, epi, self.plan.sizes.len());
        let key = local.key(kind as u8);
        let func = match self.known.get(&key) {
            Some(&i) => i,
            None => {
                let name = format!("{}_f{}", self.plan.func.name, self.ids.len());
                let id = self.define_range_fn(name, kind, &local)?;
                self.ids.push(id);
                self.known.insert(key, self.ids.len() - 1);
                self.ids.len() - 1
            }
        };
        let at = self.frame_len + self.local_map.len();
        self.local_map.extend_from_slice(&local.map);
        Ok(KernelFn { func, local: at })
    }

    /// Declares, emits and defines a function `(frame, lo, hi)` over a range.
    fn define_range_fn(
        &mut self,
        name: String,
        kind: FnKind,
        local: &Local,
    ) -> Result<FuncId, RunError> {
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
                sizes: local.sizes,
                frame: params[0],
                ptr,
                fma: host_has_fma(),
                range: Some((params[1], params[2])),
            };
            match kind {
                FnKind::SmallGemm => g.emit_small_gemm_fn(&local.kernel, local.epilogue.as_ref()),
                FnKind::Loop => g.emit_kernel_fn(&local.kernel),
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

    /// A reduction's output filled with its identity first (arena buffers only).
    fn init(&self, l: &LoopKernel) -> Option<Init> {
        let Sink::Reduce(op, out) = &l.sink else {
            return None;
        };
        let BufKind::Arena { len } = self.plan.bufs[out.buf] else {
            return None;
        };
        let value = if *op == ReduceOp::Sum {
            0.0
        } else {
            f32::NEG_INFINITY
        };
        Some(Init {
            buf: out.buf,
            len,
            value,
        })
    }

    /// Kernel `k` as a step, with the functions it needs (a product's epilogue function
    /// goes into its descriptor `d`, for GEMM to call).
    fn step(&mut self, ki: usize, k: &Kernel, d: &mut Desc) -> Result<Step, RunError> {
        Ok(match k {
            Kernel::Loop(l) => Step::Loop {
                f: self.kernel_fn(FnKind::Loop, l, None)?,
                init: self.init(l),
                space: l.space.clone(),
                split: codegen::splittable(l),
            },
            Kernel::Gemm(g) => {
                let mut smalls = Vec::new();
                let mut epilogues = Vec::new();
                for c in g.groups() {
                    let epilogue = match &c.epilogue {
                        Some(e) => Some(self.kernel_fn(FnKind::Loop, &e.kernel, None)?),
                        None => None,
                    };
                    d.epilogues
                        .push((AtomicUsize::new(0), epilogue.map_or(0, |e| e.local)));
                    epilogues.push(epilogue.map(|e| e.func));
                    smalls.push(match &c.small {
                        Some(l) if codegen::is_axpy_form(l) => Some(Small::Columns {
                            f: self.kernel_fn(FnKind::SmallGemm, l, c.epilogue.as_deref())?,
                            space: l.space.clone(),
                        }),
                        Some(l) => Some(Small::Nest {
                            f: self.kernel_fn(FnKind::Loop, l, None)?,
                            init: self.init(l),
                            space: l.space.clone(),
                            epilogue,
                        }),
                        None => None,
                    });
                }
                // The generated form runs only when every product of the call has one.
                let small: Option<Vec<Small>> = smalls.into_iter().collect();
                Step::Gemm {
                    desc: ki,
                    small: small.map(|s| (g.m, s)),
                    epilogues,
                }
            }
            Kernel::Call(_) => Step::Call { desc: ki },
            Kernel::Attention(_) => Step::Attention { desc: ki },
            Kernel::Norm(_) => Step::Norm { desc: ki },
        })
    }
}

fn build(f: Func, donate: &[(usize, usize)], keep_clif: bool) -> Result<JitKernel, RunError> {
    // Start the thread team now, so the first calls don't pay for spawning it.
    team::team();
    let mut plan = plan::plan_owned(f);
    let donated = plan.donate(donate);
    let isa = isa()?;
    let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let mut descs = descs(&plan);
    let frame_len = descs.first().map_or(
        FrameLayout {
            sizes: plan.sizes.len(),
            bufs: plan.bufs.len(),
        }
        .len(),
        |d| d.fl.len(),
    );
    let mut e = Emitter {
        ptr: module.target_config().pointer_type(),
        module,
        fctx: FunctionBuilderContext::new(),
        plan: &plan,
        clif: keep_clif.then(String::new),
        known: HashMap::new(),
        ids: Vec::new(),
        frame_len,
        local_map: Vec::new(),
    };
    let mut steps = Vec::with_capacity(plan.kernels.len());
    for (ki, (k, d)) in plan.kernels.iter().zip(descs.iter_mut()).enumerate() {
        steps.push(e.step(ki, k, d)?);
    }
    let Emitter {
        mut module,
        clif,
        ids,
        local_map,
        ..
    } = e;
    module.finalize_definitions().map_err(cranelift)?;
    let addrs: Vec<usize> = ids
        .iter()
        .map(|&id| module.get_finalized_function(id) as usize)
        .collect();
    for (d, s) in descs.iter().zip(&steps) {
        if let Step::Gemm { epilogues, .. } = s {
            for (slot, f) in d.epilogues.iter().zip(epilogues) {
                if let Some(f) = f {
                    slot.0.store(addrs[*f], Ordering::Release);
                }
            }
        }
    }
    let first_def = arena::first_defs(&plan);
    let steps = Steps {
        adapt: Default::default(),
        steps,
        addrs,
        frame_len,
        local_map,
        sizes: plan.sizes.len(),
    };
    Ok(JitKernel {
        plan,
        steps,
        _descs: descs,
        _module: ModuleHolder(module),
        first_def,
        layouts: Mutex::new(HashMap::new()),
        arenas: Mutex::new(Vec::new()),
        donated,
        clif: clif.unwrap_or_default(),
    })
}
