//! Ahead-of-time code: the same kernel functions the JIT compiles, written into a
//! relocatable object file (Cranelift's object backend) with a generated entry function
//! per exported C function that does what `jit::steps` does at run time — fill each
//! kernel's local frame (on its stack), run the kernels in order over their whole range
//! on one thread, copy the outputs out. Sizes are fixed when the object is built, the
//! intermediate buffers live in a static arena laid out by liveness (as `jit::arena`
//! does), and weights and optimizer state are data objects. Products run as the
//! generated few-rows code whatever their row count (never matrixmultiply); the few
//! runtime routines with a simple loop form are generated in the entry (`calls`).
//! Nothing in the object calls back into kiln: a plan that needs another runtime
//! routine is refused, naming the primitive ([`ObjError::Unsupported`]). Exported
//! functions return an `int32` status (1: an index out of range).

mod calls;

use std::collections::HashMap;
use std::sync::Arc;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, UserFuncName, Value,
    types,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module, default_libcall_names};
use cranelift_object::{ObjectBuilder, ObjectModule};

use super::codegen;
use super::local::localize;
use super::plan::{self, Access, BufKind, Epilogue, Kernel, LoopKernel, Plan, Sink};
use crate::exec::RunError;
use crate::ir::{Func, ReduceOp, interp::Env, op_name};

/// Why a function cannot go into an object file.
#[derive(Debug)]
pub enum ObjError {
    /// The plan needs something only the JIT's runtime has (the primitive's name).
    Unsupported(String),
    /// Code generation failed (a bug).
    Failed(RunError),
}

impl From<RunError> for ObjError {
    fn from(e: RunError) -> Self {
        ObjError::Failed(e)
    }
}

/// A data object of the module.
#[derive(Clone, Copy, Debug)]
pub struct DataRef(DataId);

/// Where an input of an exported function comes from.
#[derive(Clone, Copy, Debug)]
pub enum Src {
    /// The C function's pointer argument `i`.
    Arg(usize),
    /// A data object, from this element on.
    Data(DataRef, usize),
    /// The `u64` counter in this data object, as an f32 (the step number).
    StepF32(DataRef),
    /// `net::rng_key(seed, step)` for the counter in this data object: `h` is the
    /// hash state after the seed's word (see [`rng_key_state`]).
    RngKey { counter: DataRef, h: u64 },
}

/// Where an output of an exported function goes (contiguous, row-major).
#[derive(Clone, Copy, Debug)]
pub enum Dst {
    Arg(usize),
    Data(DataRef, usize),
}

/// One exported C function `void symbol(float *arg0, …)` running `func`.
pub struct Entry<'a> {
    pub symbol: String,
    /// The function after the graph passes.
    pub func: &'a Func,
    /// Values of its symbolic dimensions.
    pub env: &'a Env,
    /// Number of pointer arguments.
    pub args: usize,
    /// One per input of `func`.
    pub inputs: Vec<Src>,
    /// One per output of `func` (`None`: not kept).
    pub outputs: Vec<Option<Dst>>,
    /// A `u64` counter incremented after the kernels ran (the step number).
    pub bump: Option<DataRef>,
}

/// What an exported function needs in static memory.
#[derive(Clone, Copy, Debug)]
pub struct EntryInfo {
    /// The arena's length in bytes.
    pub arena_bytes: usize,
    /// The number of kernel calls the function makes.
    pub kernels: usize,
}

/// An object file being filled.
pub struct ObjectCode {
    module: ObjectModule,
    fctx: FunctionBuilderContext,
    ptr: Type,
    fma: bool,
    /// Distinct kernel functions by their local form's key.
    known: HashMap<String, FuncId>,
    prefix: String,
}

fn cranelift(e: impl std::fmt::Display) -> RunError {
    RunError(format!("cranelift: {e}"))
}

/// The host ISA (its detected features, as the JIT) for position-independent code, so
/// that the object links into position-independent executables.
fn isa() -> Result<Arc<dyn cranelift_codegen::isa::TargetIsa>, RunError> {
    let mut flags = settings::builder();
    for (k, v) in [
        ("opt_level", "speed"),
        ("is_pic", "true"),
        (
            "enable_verifier",
            if cfg!(debug_assertions) {
                "true"
            } else {
                "false"
            },
        ),
    ] {
        flags
            .set(k, v)
            .map_err(|e| RunError(format!("cranelift flag {k}: {e}")))?;
    }
    let builder = cranelift_native::builder()
        .map_err(|e| RunError(format!("this CPU is not supported by Cranelift: {e}")))?;
    builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| RunError(format!("cranelift ISA: {e}")))
}

/// The state of `rng::hash64` over `seed ‖ step` after the seed's word: what
/// [`Src::RngKey`] continues from at run time.
pub fn rng_key_state(domain: u64, seed: u64) -> u64 {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let h = mix64(domain ^ 16u64.wrapping_mul(GOLDEN));
    mix64(h ^ seed).wrapping_add(GOLDEN)
}

/// `rng::mix64` (SplitMix64's finalizer).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Whether a plan can run without the JIT's runtime: `Err` names the first primitive
/// that cannot.
pub fn check_plan(p: &Plan) -> Result<(), String> {
    for k in &p.kernels {
        match k {
            Kernel::Call(c) if !calls::supported(&p.func.nodes[c.node].op) => {
                return Err(op_name(&p.func.nodes[c.node].op));
            }
            Kernel::Gemm(g) if g.groups().iter().any(|c| c.small.is_none()) => {
                return Err(format!(
                    "{} (operand layout without a generated form)",
                    op_name(&p.func.nodes[g.node].op)
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A kernel of the entry: which function, where its local frame starts (in slots of
/// the entry's frame), and what to run.
enum Call {
    /// Fill `len` floats (rounded up to 4) of buffer `buf` with `value`.
    Fill { buf: usize, len: i64, value: f32 },
    /// `f(local, 0, hi)`.
    Range { f: FuncId, local: usize, hi: i64 },
    /// Kernel `i` of the plan, a primitive generated in place (`calls`).
    Routine(usize),
}

impl ObjectCode {
    /// An empty object named `name`; exported symbols are the callers' names, local
    /// ones start with `prefix`.
    pub fn new(name: &str, prefix: &str) -> Result<ObjectCode, RunError> {
        let isa = isa()?;
        let builder = ObjectBuilder::new(isa, name, default_libcall_names()).map_err(cranelift)?;
        let module = ObjectModule::new(builder);
        Ok(ObjectCode {
            ptr: module.target_config().pointer_type(),
            module,
            fctx: FunctionBuilderContext::new(),
            fma: super::compile::host_has_fma(),
            known: HashMap::new(),
            prefix: prefix.to_string(),
        })
    }

    /// A data object: `bytes`, or `zeros` zero bytes when `bytes` is `None`; exported
    /// under `symbol` or local.
    pub fn data(
        &mut self,
        symbol: &str,
        export: bool,
        writable: bool,
        bytes: Option<Vec<u8>>,
        zeros: usize,
    ) -> Result<DataRef, RunError> {
        let linkage = if export {
            Linkage::Export
        } else {
            Linkage::Local
        };
        let id = self
            .module
            .declare_data(symbol, linkage, writable, false)
            .map_err(cranelift)?;
        let mut d = DataDescription::new();
        match bytes {
            Some(b) => d.define(b.into_boxed_slice()),
            None => d.define_zeroinit(zeros.max(1)),
        }
        d.set_align(64);
        self.module.define_data(id, &d).map_err(cranelift)?;
        Ok(DataRef(id))
    }

    /// The object file's bytes.
    pub fn finish(self) -> Result<Vec<u8>, RunError> {
        self.module.finish().emit().map_err(cranelift)
    }

    /// A kernel function (loop or few-rows product) in local form, compiled once per
    /// distinct form: its id and the local frame's slots (whole-frame indices).
    fn kernel_fn(
        &mut self,
        small: bool,
        l: &LoopKernel,
        epi: Option<&Epilogue>,
        frame_sizes: usize,
    ) -> Result<(FuncId, Vec<usize>), RunError> {
        let local = localize(l, epi, frame_sizes);
        let key = local.key(small as u8);
        if let Some(&id) = self.known.get(&key) {
            return Ok((id, local.map));
        }
        let name = format!("{}k{}", self.prefix, self.known.len());
        let mut ctx = self.module.make_context();
        for t in [self.ptr, types::I64, types::I64] {
            ctx.func.signature.params.push(AbiParam::new(t));
        }
        let id = self
            .module
            .declare_function(&name, Linkage::Local, &ctx.func.signature)
            .map_err(cranelift)?;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let params = b.block_params(entry).to_vec();
            let mut g = codegen::Gen {
                b,
                sizes: local.sizes,
                frame: params[0],
                ptr: self.ptr,
                fma: self.fma,
                range: Some((params[1], params[2])),
            };
            if small {
                g.emit_small_gemm_fn(&local.kernel, local.epilogue.as_ref());
            } else {
                g.emit_kernel_fn(&local.kernel);
            }
            g.b.finalize(self.module.target_config());
        }
        self.module
            .define_function(id, &mut ctx)
            .map_err(|e| RunError(format!("cranelift could not compile {name}: {e:?}")))?;
        self.known.insert(key, id);
        Ok((id, local.map))
    }
}

/// A reduction's arena output is filled with its identity first.
fn init_of(p: &Plan, sizes: &[i64], l: &LoopKernel) -> Option<Call> {
    let Sink::Reduce(op, out) = &l.sink else {
        return None;
    };
    let BufKind::Arena { len } = p.bufs[out.buf] else {
        return None;
    };
    let value = if *op == ReduceOp::Sum {
        0.0
    } else {
        f32::NEG_INFINITY
    };
    Some(Call::Fill {
        buf: out.buf,
        len: sizes[len],
        value,
    })
}

/// Each arena buffer's element offset, first fit by liveness (the same layout as
/// `jit::arena`), and the arena's length in elements.
fn arena_layout(p: &Plan, sizes: &[i64]) -> Result<(Vec<usize>, usize), RunError> {
    super::arena::first_fit(p, &super::arena::first_defs(p), sizes)
}

impl ObjectCode {
    /// Adds the exported function `e` (and the kernels it calls).
    pub fn entry(&mut self, e: &Entry) -> Result<EntryInfo, ObjError> {
        let p = plan::plan_generated(e.func);
        check_plan(&p).map_err(ObjError::Unsupported)?;
        let mut sizes = Vec::with_capacity(p.sizes.len());
        for d in &p.sizes {
            sizes.push(
                d.eval(e.env)
                    .ok_or_else(|| RunError(format!("cannot evaluate size {d}")))?,
            );
        }
        let (offsets, arena_len) = arena_layout(&p, &sizes)?;
        let arena = self.data(
            &format!("{}arena_{}", self.prefix, e.symbol),
            false,
            true,
            None,
            arena_len * 4,
        )?;
        let scalars = self.data(
            &format!("{}scalars_{}", self.prefix, e.symbol),
            false,
            true,
            None,
            e.inputs.len() * 4,
        )?;
        // The kernels in order, their local frames' slots appended to `local`.
        let mut local: Vec<usize> = Vec::new();
        let mut calls: Vec<Call> = Vec::new();
        let fs = p.sizes.len();
        let mut range = |oc: &mut Self, small: bool, l: &LoopKernel, epi, hi| {
            let (f, map) = oc.kernel_fn(small, l, epi, fs)?;
            let at = local.len();
            local.extend(map);
            Ok::<Call, RunError>(Call::Range { f, local: at, hi })
        };
        let first = |s: &[usize]| s.first().map_or(0, |&s| sizes[s]);
        for (ki, k) in p.kernels.iter().enumerate() {
            match k {
                Kernel::Loop(l) => {
                    calls.extend(init_of(&p, &sizes, l));
                    calls.push(range(self, false, l, None, first(&l.space))?);
                }
                Kernel::Gemm(g) => {
                    let own = std::iter::once((&g.small, g.epilogue.as_deref()));
                    let also = g.also.iter().map(|c| (&c.small, c.epilogue.as_deref()));
                    for (small, epi) in own.chain(also) {
                        let Some(l) = small else { continue };
                        if codegen::is_axpy_form(l) {
                            let hi = sizes[l.space[l.space.len() - 1]];
                            calls.push(range(self, true, l, epi, hi)?);
                        } else {
                            calls.extend(init_of(&p, &sizes, l));
                            calls.push(range(self, false, l, None, first(&l.space))?);
                            if let Some(ep) = epi {
                                calls.push(range(self, false, &ep.kernel, None, sizes[g.m])?);
                            }
                        }
                    }
                }
                Kernel::Call(_) => calls.push(Call::Routine(ki)),
                Kernel::Attention(_) | Kernel::Norm(_) => {
                    unreachable!("plan_generated plans no in-process kernels")
                }
            }
        }
        let layout = Layout {
            plan: &p,
            sizes: &sizes,
            offsets: &offsets,
            arena,
            scalars,
        };
        self.emit_entry(e, &layout, &local, &calls)?;
        Ok(EntryInfo {
            arena_bytes: arena_len * 4,
            kernels: calls.len(),
        })
    }
}

/// What the entry function's body reads: the plan, its evaluated sizes, where each
/// arena buffer is, the arena's and the scalar inputs' data objects.
struct Layout<'a> {
    plan: &'a Plan,
    sizes: &'a [i64],
    offsets: &'a [usize],
    arena: DataRef,
    scalars: DataRef,
}

/// The entry function's builder with its module's data at hand.
struct EntryGen<'a, 'm> {
    b: FunctionBuilder<'a>,
    module: &'m mut ObjectModule,
    ptr: Type,
    args: Vec<Value>,
    /// Each buffer's address, computed once.
    bufs: Vec<Option<Value>>,
    /// The function's result (`int32`): 0, or 1 once an index was out of range.
    status: Option<cranelift_codegen::ir::StackSlot>,
}

impl EntryGen<'_, '_> {
    /// The entry's outputs copied out: to the caller's arrays first, then into data
    /// objects (weights, optimizer state), which the step may still have been reading.
    fn copy_outputs(&mut self, e: &Entry, l: &Layout) {
        let mut order: Vec<usize> = (0..e.outputs.len()).collect();
        order.sort_by_key(|&o| matches!(e.outputs[o], Some(Dst::Data(..))));
        for o in order {
            let Some(dst) = e.outputs[o] else { continue };
            let (a, shape) = &l.plan.outputs[o];
            let shape: Vec<usize> = shape.iter().map(|&s| l.sizes[s] as usize).collect();
            let to = match dst {
                Dst::Arg(i) => self.args[i],
                Dst::Data(d, at) => self.data_addr(d, at),
            };
            self.copy_out(l, a, &shape, to);
        }
    }

    fn data_addr(&mut self, d: DataRef, elem: usize) -> Value {
        let gv = self.module.declare_data_in_func(d.0, self.b.func);
        let base = self.b.ins().symbol_value(self.ptr, gv);
        self.b.ins().iadd_imm_s(base, (elem * 4) as i64)
    }

    fn load_counter(&mut self, d: DataRef) -> Value {
        let p = self.data_addr(d, 0);
        self.b.ins().load(types::I64, flags(), p, 0)
    }

    /// `for i in 0..n { body(i) }` (n > 0 known statically).
    fn counted(&mut self, n: i64, body: &mut dyn FnMut(&mut Self, Value)) {
        let head = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(head, types::I64);
        let zero = self.b.ins().iconst(types::I64, 0);
        self.b.ins().jump(head, &[zero.into()]);
        self.b.switch_to_block(head);
        let i = self.b.block_params(head)[0];
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, 1);
        let go = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, next, n);
        self.b.ins().brif(go, head, &[next.into()], exit, &[]);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// The value of a scalar input computed from a counter (step, dropout key).
    fn scalar(&mut self, src: Src) -> Option<Value> {
        let step = match src {
            Src::StepF32(c) | Src::RngKey { counter: c, .. } => self.load_counter(c),
            _ => return None,
        };
        let v = match src {
            Src::RngKey { h, .. } => {
                let x = self.b.ins().bxor_imm_s(step, h as i64);
                let x = self.mix64(x);
                let x = self.b.ins().iadd_imm_s(x, 0x9E37_79B9_7F4A_7C15u64 as i64);
                let x = self.mix64(x);
                let x = self.b.ins().ushr_imm_u(x, 40);
                self.b.ins().fcvt_from_uint(types::F32, x)
            }
            _ => self.b.ins().fcvt_from_uint(types::F32, step),
        };
        Some(v)
    }

    fn mix64(&mut self, z: Value) -> Value {
        let mut z = z;
        for (shift, mul) in [(30, 0xBF58_476D_1CE4_E5B9u64), (27, 0x94D0_49BB_1331_11EB)] {
            let s = self.b.ins().ushr_imm_u(z, shift);
            let x = self.b.ins().bxor(z, s);
            z = self.b.ins().imul_imm_s(x, mul as i64);
        }
        let s = self.b.ins().ushr_imm_u(z, 31);
        self.b.ins().bxor(z, s)
    }

    /// Copies an output view (constant sizes and strides) into contiguous memory.
    fn copy_out(&mut self, l: &Layout, a: &Access, shape: &[usize], dst: Value) {
        let src = self.bufs[a.buf].expect("every buffer's address is computed first");
        let strides: Vec<i64> = a.strides.iter().map(|&s| l.sizes[s]).collect();
        let offset = l.sizes[a.offset];
        let n: i64 = shape.iter().map(|&d| d as i64).product();
        if n == 0 {
            return;
        }
        // Contiguous element index `i` → source offset by div/mod over the axes.
        self.counted(n, &mut |g, i| {
            let mut rem = i;
            let mut off = g.b.ins().iconst(types::I64, offset);
            for d in (0..shape.len()).rev() {
                let ext = shape[d] as i64;
                let q = g.b.ins().udiv_imm_u(rem, ext);
                let r = g.b.ins().imul_imm_s(q, ext);
                let r = g.b.ins().isub(rem, r);
                let t = g.b.ins().imul_imm_s(r, strides[d]);
                off = g.b.ins().iadd(off, t);
                rem = q;
            }
            let sb = g.b.ins().ishl_imm_u(off, 2);
            let sp = g.b.ins().iadd(src, sb);
            let v = g.b.ins().load(types::F32, flags(), sp, 0);
            let db = g.b.ins().ishl_imm_u(i, 2);
            let dp = g.b.ins().iadd(dst, db);
            g.b.ins().store(flags(), v, dp, 0);
        });
    }
}

impl ObjectCode {
    /// A function `void symbol(float *p)` copying `len` floats between `p` and data
    /// object `d` (into `d` when `into_data`): reading or replacing the weights.
    pub fn copy_fn(
        &mut self,
        symbol: &str,
        d: DataRef,
        len: usize,
        into_data: bool,
    ) -> Result<(), RunError> {
        let mut ctx = self.module.make_context();
        ctx.func.signature.params.push(AbiParam::new(self.ptr));
        let id = self
            .module
            .declare_function(symbol, Linkage::Export, &ctx.func.signature)
            .map_err(cranelift)?;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let arg = b.block_params(entry)[0];
            let mut g = EntryGen {
                b,
                module: &mut self.module,
                ptr: self.ptr,
                args: vec![arg],
                bufs: Vec::new(),
                status: None,
            };
            let data = g.data_addr(d, 0);
            let (from, to) = if into_data { (arg, data) } else { (data, arg) };
            if len > 0 {
                g.counted(len as i64, &mut |g, i| {
                    let o = g.b.ins().ishl_imm_u(i, 2);
                    let s = g.b.ins().iadd(from, o);
                    let v = g.b.ins().load(types::F32, flags(), s, 0);
                    let t = g.b.ins().iadd(to, o);
                    g.b.ins().store(flags(), v, t, 0);
                });
            }
            g.b.ins().return_(&[]);
            g.b.finalize(self.module.target_config());
        }
        self.module
            .define_function(id, &mut ctx)
            .map_err(|e| RunError(format!("cranelift could not compile {symbol}: {e:?}")))
    }

    /// The exported function: scalar inputs computed, local frames filled on the
    /// stack, the kernels called in order, outputs copied, the counter bumped.
    fn emit_entry(
        &mut self,
        e: &Entry,
        l: &Layout,
        local: &[usize],
        calls: &[Call],
    ) -> Result<(), RunError> {
        let mut ctx = self.module.make_context();
        for _ in 0..e.args {
            ctx.func.signature.params.push(AbiParam::new(self.ptr));
        }
        ctx.func.signature.returns.push(AbiParam::new(types::I32));
        let id = self
            .module
            .declare_function(&e.symbol, Linkage::Export, &ctx.func.signature)
            .map_err(cranelift)?;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        let mut refs = HashMap::new();
        for c in calls {
            if let Call::Range { f, .. } = c {
                refs.entry(*f)
                    .or_insert_with(|| self.module.declare_func_in_func(*f, &mut ctx.func));
            }
        }
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let args = b.block_params(entry).to_vec();
            let slot = b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                (local.len().max(1) * 8) as u32,
                3,
            ));
            let status =
                b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 8, 3));
            let zero = b.ins().iconst(types::I32, 0);
            b.ins().stack_store(self.ptr, zero, status, 0);
            let mut g = EntryGen {
                b,
                module: &mut self.module,
                ptr: self.ptr,
                args,
                bufs: vec![None; l.plan.bufs.len()],
                status: Some(status),
            };
            // Scalar inputs computed from the counter, into their static slots.
            for (i, src) in e.inputs.iter().enumerate() {
                if let Some(v) = g.scalar(*src) {
                    let p = g.data_addr(l.scalars, i);
                    g.b.ins().store(flags(), v, p, 0);
                }
            }
            for (bi, kind) in l.plan.bufs.iter().enumerate() {
                let v = match kind {
                    BufKind::Input(i) => match e.inputs[*i] {
                        Src::Arg(a) => g.args[a],
                        Src::Data(d, at) => g.data_addr(d, at),
                        _ => g.data_addr(l.scalars, *i),
                    },
                    BufKind::Arena { .. } => g.data_addr(l.arena, l.offsets[bi]),
                };
                g.bufs[bi] = Some(v);
            }
            // The local frames: sizes as constants, buffers' addresses.
            let fs = l.plan.sizes.len();
            for (j, &w) in local.iter().enumerate() {
                let v = if w < fs {
                    g.b.ins().iconst(types::I64, l.sizes[w])
                } else {
                    g.bufs[w - fs].expect("every buffer's address is computed")
                };
                g.b.ins().stack_store(g.ptr, v, slot, (j * 8) as i32);
            }
            for c in calls {
                match *c {
                    Call::Fill { buf, len, value } => {
                        let p = g.bufs[buf].expect("every buffer's address is computed");
                        let v = g.b.ins().f32const(value);
                        let n = (len.max(0) + 3) / 4 * 4;
                        if n > 0 {
                            g.counted(n, &mut |g, i| {
                                let o = g.b.ins().ishl_imm_u(i, 2);
                                let a = g.b.ins().iadd(p, o);
                                g.b.ins().store(flags(), v, a, 0);
                            });
                        }
                    }
                    Call::Routine(ki) => g.routine(l, ki),
                    Call::Range { f, local: at, hi } => {
                        let fp = g.b.ins().stack_addr(g.ptr, slot, (at * 8) as i32);
                        let lo = g.b.ins().iconst(types::I64, 0);
                        let hi = g.b.ins().iconst(types::I64, hi);
                        g.b.ins().call(refs[&f], &[fp, lo, hi]);
                    }
                }
            }
            g.copy_outputs(e, l);
            if let Some(c) = e.bump {
                let p = g.data_addr(c, 0);
                let v = g.b.ins().load(types::I64, flags(), p, 0);
                let v = g.b.ins().iadd_imm_s(v, 1);
                g.b.ins().store(flags(), v, p, 0);
            }
            let st = g.b.ins().stack_load(g.ptr, types::I32, status, 0);
            g.b.ins().return_(&[st]);
            g.b.finalize(self.module.target_config());
        }
        self.module
            .define_function(id, &mut ctx)
            .map_err(|e2| RunError(format!("cranelift could not compile {}: {e2:?}", e.symbol)))
    }
}
