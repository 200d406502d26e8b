//! CLIF emission: one native function per plan, `fn(frame: *mut i64)`.
//!
//! The frame holds the evaluated size table (slots `0..sizes`) and then one pointer per
//! buffer. Loop kernels are emitted inline as loop nests whose innermost axis runs in
//! f32x4 lanes (unrolled twice) with a scalar tail; values that do not change along the
//! inner axis are hoisted out of it. GEMM and runtime routines are called through
//! function pointers with the frame and a descriptor.
//!
//! Rooms: this file holds the generator's state, frame access and the calls between
//! kernels (GEMM, routines, the parallel trampoline); `loops` counted loops, `nest` loop
//! kernels as loop nests, `small_gemm` products with few rows, `expr` the fused
//! expressions.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, FuncRef, InstBuilder, MemFlagsData, Signature, Type, Value, types,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;

use super::plan::{Access, Epilogue, GemmKernel, Kernel, LoopKernel, Plan, Sink};
use crate::ir::ReduceOp;

mod expr;
mod loops;
mod nest;
mod small_gemm;

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Addresses of the runtime routines the code calls, and each call's descriptor.
pub struct Callees {
    pub gemm: usize,
    pub call: usize,
    pub parallel: usize,
    /// Per kernel: the address of its descriptor (0 for loop kernels).
    pub descs: Vec<usize>,
}

pub struct Gen<'a, 'b> {
    pub b: FunctionBuilder<'b>,
    pub plan: &'a Plan,
    pub frame: Value,
    pub ptr: Type,
    /// The host has FMA: products accumulated into sums fuse into one instruction.
    pub fma: bool,
    /// In a kernel function: the range of the outermost axis it covers.
    pub range: Option<(Value, Value)>,
    /// Per kernel: the function that runs it over a range of its outermost axis, for
    /// kernels large enough to split across cores.
    pub kernel_fns: Vec<Option<FuncRef>>,
    /// Per kernel: a product's fused epilogue as a function over a range of rows.
    pub epilogue_fns: Vec<Option<FuncRef>>,
}

/// Is a small-product loop kernel in the `[batch…, m, k, n]` form with B and C
/// contiguous along `n` (what `emit_small_gemm` handles)?
pub fn is_axpy_form(k: &LoopKernel) -> bool {
    let r = k.space.len();
    let Sink::Reduce(ReduceOp::Sum, c) = &k.sink else {
        return false;
    };
    r >= 3
        && k.loads.len() == 2
        && k.loads[0].known[r - 1] == Some(0)
        && k.loads[1].known[r - 1] == Some(1)
        && c.known[r - 1] == Some(1)
        && c.known[r - 2] == Some(0)
}

/// Loop kernels with at least this many elements are split across cores.
pub const PARALLEL_MIN_ELEMENTS: i64 = 1 << 14;

/// Small products with at least this many multiply-adds are split across cores (by
/// columns).
pub const SMALL_GEMM_PARALLEL_MIN_MACS: i64 = 1 << 14;

/// Can a loop kernel run its outermost axis in parallel? Stores always can; reductions
/// only when the outermost axis is kept (each part writes its own outputs).
pub fn splittable(k: &LoopKernel) -> bool {
    k.space.len() >= 2
        && match &k.sink {
            Sink::Store(_) => true,
            Sink::Reduce(_, a) => a.known[0] != Some(0),
        }
}

/// Unroll factor of the vector loop (in f32x4 vectors).
const UNROLL: i64 = 2;

impl<'a, 'b> Gen<'a, 'b> {
    fn slot(&mut self, s: usize) -> Value {
        self.b
            .ins()
            .load(types::I64, flags(), self.frame, (s * 8) as i32)
    }
    fn buf_ptr(&mut self, buf: usize) -> Value {
        let off = (self.plan.sizes.len() + buf) * 8;
        self.b.ins().load(self.ptr, flags(), self.frame, off as i32)
    }
    /// The address of an access's first element (its buffer at its offset).
    fn base(&mut self, a: &Access) -> Value {
        let p = self.buf_ptr(a.buf);
        let off = self.slot(a.offset);
        let bytes = self.b.ins().ishl_imm_u(off, 2);
        self.b.ins().iadd(p, bytes)
    }

    /// `p` advanced to the outer indices `idx` of access `a` (axes with a known zero
    /// stride skipped).
    fn advance(&mut self, mut p: Value, a: &Access, idx: &[Value]) -> Value {
        for (d, &i) in idx.iter().enumerate() {
            if a.known[d] == Some(0) {
                continue;
            }
            let s = self.stride(a, d);
            let t = self.b.ins().imul(i, s);
            let bytes = self.b.ins().ishl_imm_u(t, 2);
            p = self.b.ins().iadd(p, bytes);
        }
        p
    }

    /// A stride as a value: a constant when known statically.
    fn stride(&mut self, a: &Access, axis: usize) -> Value {
        match a.known[axis] {
            Some(k) => self.b.ins().iconst(types::I64, k),
            None => self.slot(a.strides[axis]),
        }
    }

    /// Emits the whole function body.
    pub fn emit(&mut self, callees: &Callees) {
        for (ki, k) in self.plan.kernels.iter().enumerate() {
            match k {
                Kernel::Loop(l) => match self.kernel_fns[ki] {
                    None => self.emit_loop(l),
                    Some(fref) => self.emit_split(l, fref, callees.parallel),
                },
                Kernel::Gemm(g) => match &g.small {
                    None => self.emit_call(callees.gemm, callees.descs[ki]),
                    Some(small) => self.emit_gemm_or_small(ki, g, small, callees),
                },
                Kernel::Call(_) => self.emit_call(callees.call, callees.descs[ki]),
            }
        }
        self.b.ins().return_(&[]);
    }

    /// A product that has a generated loop: the loop when there are few rows (at run
    /// time), otherwise GEMM.
    fn emit_gemm_or_small(
        &mut self,
        ki: usize,
        g: &GemmKernel,
        small: &LoopKernel,
        callees: &Callees,
    ) {
        // Few rows: the generated loop; otherwise GEMM.
        let m = self.slot(g.m);
        let few = self.b.ins().icmp_imm_s(
            IntCC::SignedLessThanOrEqual,
            m,
            super::plan::SMALL_GEMM_MAX_ROWS,
        );
        let (then_b, else_b, merge) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        self.b.ins().brif(few, then_b, &[], else_b, &[]);
        self.b.switch_to_block(then_b);
        self.b.seal_block(then_b);
        match self.kernel_fns[ki] {
            // The small-product function applies the epilogue itself.
            Some(fref) => self.emit_small_gemm_call(small, fref, callees.parallel),
            None => {
                self.emit_loop(small);
                if let Some(efn) = self.epilogue_fns[ki] {
                    let zero = self.b.ins().iconst(types::I64, 0);
                    self.b.ins().call(efn, &[self.frame, zero, m]);
                }
            }
        }
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(else_b);
        self.b.seal_block(else_b);
        self.emit_call(callees.gemm, callees.descs[ki]);
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(merge);
        self.b.seal_block(merge);
    }

    /// Runs a kernel function over its outermost axis: directly when small, else through
    /// the parallel trampoline, which splits the range across cores.
    fn emit_split(&mut self, k: &LoopKernel, fref: FuncRef, parallel: usize) {
        self.emit_reduce_init(k);
        let extents: Vec<Value> = k.space.iter().map(|&s| self.slot(s)).collect();
        self.call_maybe_parallel(&extents, PARALLEL_MIN_ELEMENTS, fref, parallel, 0, 1);
    }

    /// Runs a small-product kernel function over all columns: split across the team
    /// when the product is large enough, else directly.
    fn emit_small_gemm_call(&mut self, k: &LoopKernel, fref: FuncRef, parallel: usize) {
        let ext: Vec<Value> = k.space.iter().map(|&s| self.slot(s)).collect();
        let cols = ext.len() - 1;
        self.call_maybe_parallel(&ext, SMALL_GEMM_PARALLEL_MIN_MACS, fref, parallel, cols, 16);
    }

    /// Calls `fref(frame, 0, extents[axis])`, through the parallel trampoline (inner
    /// boundaries on multiples of `grain`) when the product of the extents (the work)
    /// reaches `min_work`.
    fn call_maybe_parallel(
        &mut self,
        extents: &[Value],
        min_work: i64,
        fref: FuncRef,
        parallel: usize,
        axis: usize,
        grain: i64,
    ) {
        let mut work = extents[0];
        for &e in &extents[1..] {
            work = self.b.ins().imul(work, e);
        }
        let n = extents[axis];
        let big = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, work, min_work);
        let (par_b, seq_b, merge) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        self.b.ins().brif(big, par_b, &[], seq_b, &[]);
        self.b.switch_to_block(par_b);
        self.b.seal_block(par_b);
        self.call_parallel(parallel, fref, n, grain);
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(seq_b);
        self.b.seal_block(seq_b);
        let zero = self.b.ins().iconst(types::I64, 0);
        self.b.ins().call(fref, &[self.frame, zero, n]);
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(merge);
        self.b.seal_block(merge);
    }

    /// Calls the parallel trampoline: `fref` over `0..n` split across the team, with
    /// inner boundaries on multiples of `grain`.
    fn call_parallel(&mut self, parallel: usize, fref: FuncRef, n: Value, grain: i64) {
        let mut sig = Signature::new(CallConv::SystemV);
        for _ in 0..4 {
            sig.params.push(AbiParam::new(self.ptr));
        }
        let sref = self.b.import_signature(sig);
        let callee = self.b.ins().iconst(self.ptr, parallel as i64);
        let addr = self.b.ins().func_addr(self.ptr, fref);
        let grain = self.b.ins().iconst(types::I64, grain);
        let frame = self.frame;
        self.b
            .ins()
            .call_indirect(sref, callee, &[frame, addr, n, grain]);
    }

    /// The body of a small-product kernel function: its columns `self.range`.
    pub fn emit_small_gemm_fn(&mut self, k: &LoopKernel, epi: Option<&Epilogue>) {
        self.emit_small_gemm(k, epi);
        self.b.ins().return_(&[]);
    }

    /// The body of a kernel function: the loop nest over `self.range`.
    pub fn emit_kernel_fn(&mut self, k: &LoopKernel) {
        self.emit_loop_nest(k);
        self.b.ins().return_(&[]);
    }

    fn emit_call(&mut self, f: usize, desc: usize) {
        let mut sig = Signature::new(CallConv::SystemV);
        sig.params.push(AbiParam::new(self.ptr));
        sig.params.push(AbiParam::new(self.ptr));
        let sref = self.b.import_signature(sig);
        let callee = self.b.ins().iconst(self.ptr, f as i64);
        let d = self.b.ins().iconst(self.ptr, desc as i64);
        let frame = self.frame;
        self.b.ins().call_indirect(sref, callee, &[frame, d]);
    }
}
