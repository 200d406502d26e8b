//! CLIF emission: one native function per plan, `fn(frame: *mut i64)`.
//!
//! The frame holds the evaluated size table (slots `0..sizes`) and then one pointer per
//! buffer. Loop kernels are emitted inline as loop nests whose innermost axis runs in
//! f32x4 lanes (unrolled twice) with a scalar tail; values that do not change along the
//! inner axis are hoisted out of it. GEMM and runtime routines are called through
//! function pointers with the frame and a descriptor.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, FuncRef, InstBuilder, MemFlagsData, Signature, Type, Value, types,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, Variable};

use super::mathfn::Math;
use super::plan::{Access, Epilogue, Expr, Kernel, LoopKernel, Plan, Sink};
use crate::ir::{Binary, Cmp, ReduceOp, Unary};

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

/// What the small-product loops share: the operand accesses and row bases, the
/// extents, the byte strides along `k`, and the column range.
struct SmallGemm<'x> {
    accs: &'x [Access; 3],
    bases: &'x [Value],
    ext: &'x [Value],
    sa_k: Value,
    sb_k: Value,
    kn: Value,
    cols: (Value, Value),
    /// A fused epilogue and its operands' and sink's bases (loads, then the sink).
    epi: Option<&'x Epilogue>,
    epi_bases: &'x [Value],
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
                    Some(small) => {
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
                },
                Kernel::Call(_) => self.emit_call(callees.call, callees.descs[ki]),
            }
        }
        self.b.ins().return_(&[]);
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

    /// A product with few rows, `C[b, i, :] = Σ_k A[b, i, k] · B[b, k, :]`, over the
    /// columns `self.range` (all when `None`), with the output row blocked in
    /// registers: 32 columns (eight f32x4 accumulators, enough independent chains to
    /// keep both FMA pipes busy) at a time over the whole `k` loop, then 16, 8 and 4,
    /// then the last few; each accumulator is stored once. The loop kernel's accesses give
    /// the strides.
    fn emit_small_gemm(&mut self, k: &LoopKernel, epi: Option<&Epilogue>) {
        let r = k.space.len();
        let nb = r - 3; // batch axes
        let ext: Vec<Value> = k.space.iter().map(|&s| self.slot(s)).collect();
        let Sink::Reduce(_, c_acc) = &k.sink else {
            return;
        };
        let accs = [k.loads[0].clone(), k.loads[1].clone(), c_acc.clone()];
        let bases: Vec<Value> = accs.iter().map(|a| self.base(a)).collect();
        let sa_k = self.stride(&accs[0], nb + 1);
        let sb_k = self.stride(&accs[1], nb + 1);
        let sa_k = self.b.ins().ishl_imm_u(sa_k, 2);
        let sb_k = self.b.ins().ishl_imm_u(sb_k, 2);
        let cols = match self.range {
            Some(r) => r,
            None => {
                let zero = self.b.ins().iconst(types::I64, 0);
                (zero, ext[nb + 2])
            }
        };
        // The epilogue's operands and sink, at offset.
        let epi_bases: Vec<Value> = epi
            .map(|e| {
                e.kernel
                    .loads
                    .iter()
                    .chain([e.kernel.sink_access()])
                    .map(|a| self.base(a))
                    .collect()
            })
            .unwrap_or_default();
        let g = SmallGemm {
            accs: &accs,
            bases: &bases,
            ext: &ext,
            sa_k,
            sb_k,
            kn: ext[nb + 1],
            cols,
            epi,
            epi_bases: &epi_bases,
        };
        self.small_gemm_rows(k, &g, 0, Vec::new());
    }

    fn small_gemm_rows(&mut self, k: &LoopKernel, g: &SmallGemm, axis: usize, idx: Vec<Value>) {
        let nb = k.space.len() - 3;
        if axis <= nb {
            // Loops over the batch axes and the rows (axis nb is m).
            self.counted_loop(g.ext[axis], 1, |gg, i| {
                let mut idx = idx.clone();
                idx.push(i);
                gg.small_gemm_rows(k, g, axis + 1, idx);
            });
            return;
        }
        // Row pointers for A and C, and B's batch base.
        let rows: Vec<Value> = g
            .accs
            .iter()
            .zip(g.bases)
            .map(|(a, &base)| self.advance(base, a, &idx))
            .collect();
        let (a_row, b_base, c_row) = (rows[0], rows[1], rows[2]);
        // With an epilogue (no batch axes): its operands' and sink's row pointers.
        let mut epi_rows = Vec::new();
        if let Some(e) = g.epi {
            let accesses: Vec<&Access> = e
                .kernel
                .loads
                .iter()
                .chain([e.kernel.sink_access()])
                .collect();
            for (a, &base) in accesses.into_iter().zip(g.epi_bases) {
                epi_rows.push(self.advance(base, a, &idx));
            }
        }
        let c_row = (c_row, &epi_rows[..]);
        // Column blocks of 32, 16, 8 and 4 while they fit.
        let col = self.b.declare_var(types::I64);
        self.b.def_var(col, g.cols.0);
        for lanes in [8usize, 4, 2, 1] {
            let width = 4 * lanes as i64;
            let header = self.b.create_block();
            let body = self.b.create_block();
            let exit = self.b.create_block();
            self.b.ins().jump(header, &[]);
            self.b.switch_to_block(header);
            let j = self.b.use_var(col);
            let end = self.b.ins().iadd_imm_s(j, width);
            let go = self
                .b
                .ins()
                .icmp(IntCC::SignedLessThanOrEqual, end, g.cols.1);
            self.b.ins().brif(go, body, &[], exit, &[]);
            self.b.switch_to_block(body);
            let j = self.b.use_var(col);
            self.small_gemm_block(g, a_row, b_base, c_row, j, lanes);
            let j = self.b.use_var(col);
            let next = self.b.ins().iadd_imm_s(j, width);
            self.b.def_var(col, next);
            self.b.ins().jump(header, &[]);
            self.b.seal_block(body);
            self.b.seal_block(header);
            self.b.switch_to_block(exit);
            self.b.seal_block(exit);
        }
        // The last 1–3 columns: one more 4-column block ending at the range's end when
        // the range is that wide (it recomputes a few columns with the same operations
        // in the same order, so it stores the same bits), else single columns.
        let j = self.b.use_var(col);
        let left = self.b.ins().icmp(IntCC::SignedLessThan, j, g.cols.1);
        let width = self.b.ins().isub(g.cols.1, g.cols.0);
        let wide = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, width, 4);
        let (overlap_b, single_b, done) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        let check_b = self.b.create_block();
        self.b.ins().brif(left, check_b, &[], done, &[]);
        self.b.switch_to_block(check_b);
        self.b.seal_block(check_b);
        self.b.ins().brif(wide, overlap_b, &[], single_b, &[]);
        self.b.switch_to_block(overlap_b);
        self.b.seal_block(overlap_b);
        let start = self.b.ins().iadd_imm_s(g.cols.1, -4);
        self.small_gemm_block(g, a_row, b_base, c_row, start, 1);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(single_b);
        self.b.seal_block(single_b);
        let j = self.b.use_var(col);
        self.counted_loop_from(j, g.cols.1, 1, |gg, j| {
            gg.small_gemm_block(g, a_row, b_base, c_row, j, 0);
        });
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
    }

    /// One block of the row's columns from `j`: `lanes` f32x4 accumulators (a single
    /// f32 when 0) over the whole `k` loop, then stored.
    fn small_gemm_block(
        &mut self,
        g: &SmallGemm,
        a_row: Value,
        b_base: Value,
        (c_row, epi_rows): (Value, &[Value]),
        j: Value,
        lanes: usize,
    ) {
        let jbytes = self.b.ins().ishl_imm_u(j, 2);
        let b_col = self.b.ins().iadd(b_base, jbytes);
        let ty = if lanes == 0 { types::F32 } else { types::F32X4 };
        let acc: Vec<Variable> = (0..lanes.max(1)).map(|_| self.b.declare_var(ty)).collect();
        let z = self.b.ins().f32const(0.0);
        let zv = if lanes == 0 {
            z
        } else {
            self.b.ins().splat(types::F32X4, z)
        };
        for &v in &acc {
            self.b.def_var(v, zv);
        }
        // Pointers into A's row and B's column block, advanced by one k per step.
        let ap = self.b.declare_var(self.ptr);
        let bp = self.b.declare_var(self.ptr);
        self.b.def_var(ap, a_row);
        self.b.def_var(bp, b_col);
        let (fma, sa_k, sb_k) = (self.fma, g.sa_k, g.sb_k);
        self.counted_loop(g.kn, 1, |gg, _| {
            let a = gg.b.use_var(ap);
            let av = gg.b.ins().load(types::F32, flags(), a, 0);
            let av = if lanes == 0 {
                av
            } else {
                gg.b.ins().splat(types::F32X4, av)
            };
            let bptr = gg.b.use_var(bp);
            for (q, &v) in acc.iter().enumerate() {
                let bv = gg.b.ins().load(ty, flags(), bptr, (16 * q) as i32);
                let old = gg.b.use_var(v);
                let new = if fma {
                    gg.b.ins().fma(av, bv, old)
                } else {
                    let m = gg.b.ins().fmul(av, bv);
                    gg.b.ins().fadd(m, old)
                };
                gg.b.def_var(v, new);
            }
            let a2 = gg.b.ins().iadd(a, sa_k);
            gg.b.def_var(ap, a2);
            let b2 = gg.b.ins().iadd(bptr, sb_k);
            gg.b.def_var(bp, b2);
        });
        let Some(e) = g.epi else {
            let cp = self.b.ins().iadd(c_row, jbytes);
            for (q, &v) in acc.iter().enumerate() {
                let val = self.b.use_var(v);
                self.b.ins().store(flags(), val, cp, (16 * q) as i32);
            }
            return;
        };
        // The fused epilogue on each accumulator, stored to its sink.
        let sink = epi_rows[epi_rows.len() - 1];
        let sp = self.b.ins().iadd(sink, jbytes);
        for (q, &v) in acc.iter().enumerate() {
            let val = self.b.use_var(v);
            let out = self.epilogue_value(e, epi_rows, jbytes, (16 * q) as i32, val, ty);
            self.b.ins().store(flags(), out, sp, (16 * q) as i32);
        }
    }

    /// The epilogue's value for the product `acc` (of type `ty`) at the columns
    /// `jbytes + off` of the current row (`rows`: the operands' row pointers).
    fn epilogue_value(
        &mut self,
        e: &Epilogue,
        rows: &[Value],
        jbytes: Value,
        off: i32,
        acc: Value,
        ty: Type,
    ) -> Value {
        let mut vals: Vec<Option<Value>> = vec![None; e.kernel.expr.len()];
        for (i, ex) in e.kernel.expr.iter().enumerate() {
            let v = match ex {
                Expr::Load(l) if *l == e.acc => acc,
                Expr::Load(l) => {
                    if e.kernel.loads[*l].known[1] == Some(0) {
                        let x = self.b.ins().load(types::F32, flags(), rows[*l], 0);
                        if ty == types::F32 {
                            x
                        } else {
                            self.b.ins().splat(ty, x)
                        }
                    } else {
                        let p = self.b.ins().iadd(rows[*l], jbytes);
                        self.b.ins().load(ty, flags(), p, off)
                    }
                }
                Expr::Const(c) => {
                    let x = self.b.ins().f32const(*c as f32);
                    if ty == types::F32 {
                        x
                    } else {
                        self.b.ins().splat(ty, x)
                    }
                }
                _ => {
                    let fma = self.fma;
                    let mut m = Math {
                        b: &mut self.b,
                        ty,
                        fma,
                    };
                    compute(&mut m, ex, &|x| vals[x].expect("operand computed"))
                }
            };
            vals[i] = Some(v);
        }
        vals[e.kernel.expr.len() - 1].expect("result")
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

    /// `for var in 0..n { body }` with the loop index in a Variable.
    fn counted_loop(
        &mut self,
        n: Value,
        step: i64,
        body: impl FnOnce(&mut Self, Value),
    ) -> Variable {
        let zero = self.b.ins().iconst(types::I64, 0);
        self.counted_loop_from(zero, n, step, body)
    }

    /// `for var in start..n { body }`.
    fn counted_loop_from(
        &mut self,
        start: Value,
        n: Value,
        step: i64,
        body: impl FnOnce(&mut Self, Value),
    ) -> Variable {
        let var = self.b.declare_var(types::I64);
        self.b.def_var(var, start);
        let header = self.b.create_block();
        let body_b = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let i = self.b.use_var(var);
        let next = self.b.ins().iadd_imm_s(i, step);
        let cond = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, next, n);
        self.b.ins().brif(cond, body_b, &[], exit, &[]);
        self.b.switch_to_block(body_b);
        let i = self.b.use_var(var);
        body(self, i);
        let i = self.b.use_var(var);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(var, next);
        self.b.ins().jump(header, &[]);
        self.b.seal_block(body_b);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        var
    }

    /// Continues a loop variable from its current value up to `n` (step 1): the tail.
    fn tail_loop(&mut self, var: Variable, n: Value, body: impl FnOnce(&mut Self, Value)) {
        let header = self.b.create_block();
        let body_b = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let i = self.b.use_var(var);
        let cond = self.b.ins().icmp(IntCC::SignedLessThan, i, n);
        self.b.ins().brif(cond, body_b, &[], exit, &[]);
        self.b.switch_to_block(body_b);
        let i = self.b.use_var(var);
        body(self, i);
        let i = self.b.use_var(var);
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(var, next);
        self.b.ins().jump(header, &[]);
        self.b.seal_block(body_b);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    fn emit_loop(&mut self, k: &LoopKernel) {
        self.emit_reduce_init(k);
        self.emit_loop_nest(k);
    }

    /// Reductions first fill their output with the identity.
    fn emit_reduce_init(&mut self, k: &LoopKernel) {
        if let Sink::Reduce(op, out) = &k.sink {
            let init = if *op == ReduceOp::Sum {
                0.0
            } else {
                f32::NEG_INFINITY
            };
            let len = match &self.plan.bufs[out.buf] {
                super::plan::BufKind::Arena { len } => *len,
                super::plan::BufKind::Input(_) => return,
            };
            // Whole vectors up to the length rounded up to 4: arena buffers have room
            // past their end (see the arena layout).
            let n = self.slot(len);
            let n = self.b.ins().iadd_imm_s(n, 3);
            let base = self.buf_ptr(out.buf);
            let v = self.b.ins().f32const(init);
            let v = self.b.ins().splat(types::F32X4, v);
            self.counted_loop(n, 4, |g, i| {
                let a = g.b.ins().ishl_imm_u(i, 2);
                let p = g.b.ins().iadd(base, a);
                g.b.ins().store(flags(), v, p, 0);
            });
        }
    }

    /// The loop nest itself (over `self.range` of the outermost axis when set).
    fn emit_loop_nest(&mut self, k: &LoopKernel) {
        let rank = k.space.len();
        let extents: Vec<Value> = k.space.iter().map(|&s| self.slot(s)).collect();
        let sink_access = k.sink_access().clone();
        // Bases (element pointers at offset) for every access.
        let mut accesses: Vec<Access> = k.loads.clone();
        accesses.push(sink_access.clone());
        let bases: Vec<Value> = accesses.iter().map(|a| self.base(a)).collect();
        let levels = levels(k, rank);
        // Kernel-invariant scalars.
        let mut scalar: Vec<Option<Value>> = vec![None; k.expr.len()];
        for (i, e) in k.expr.iter().enumerate() {
            if levels[i] == 0 {
                let v = self.expr_scalar(e, &scalar, &[], &[], &bases);
                scalar[i] = Some(v);
            }
        }
        if rank == 0 {
            let v = self.expr_all(k, &mut scalar.clone(), &[], None, &bases, false);
            self.sink_scalar(&k.sink, bases[bases.len() - 1], v);
            return;
        }
        self.outer(
            k,
            &extents,
            &bases,
            &accesses,
            &levels,
            &scalar,
            0,
            Vec::new(),
        );
    }

    /// Emits loops over the outer axes, then the inner axis.
    #[allow(clippy::too_many_arguments)]
    fn outer(
        &mut self,
        k: &LoopKernel,
        extents: &[Value],
        bases: &[Value],
        accesses: &[Access],
        levels: &[u8],
        scalar0: &[Option<Value>],
        axis: usize,
        idx: Vec<Value>,
    ) {
        let rank = k.space.len();
        if axis + 1 < rank {
            let n = extents[axis];
            let (ext, bs, acc, lv, sc) = (
                extents.to_vec(),
                bases.to_vec(),
                accesses.to_vec(),
                levels.to_vec(),
                scalar0.to_vec(),
            );
            let (start, n) = match (axis, self.range) {
                (0, Some((lo, hi))) => (lo, hi),
                _ => (self.b.ins().iconst(types::I64, 0), n),
            };
            self.counted_loop_from(start, n, 1, |g, i| {
                let mut idx = idx.clone();
                idx.push(i);
                g.outer(k, &ext, &bs, &acc, &lv, &sc, axis + 1, idx);
            });
            return;
        }
        // Row bases: base + Σ idx_d * stride_d over the outer axes.
        let mut row: Vec<Value> = Vec::new();
        for (a, &base) in accesses.iter().zip(bases) {
            let mut off: Option<Value> = None;
            for (d, &i) in idx.iter().enumerate() {
                if a.known[d] == Some(0) {
                    continue;
                }
                let s = self.stride(a, d);
                let t = self.b.ins().imul(i, s);
                off = Some(match off {
                    None => t,
                    Some(o) => self.b.ins().iadd(o, t),
                });
            }
            row.push(match off {
                None => base,
                Some(o) => {
                    let bytes = self.b.ins().ishl_imm_u(o, 2);
                    self.b.ins().iadd(base, bytes)
                }
            });
        }
        let inner = rank - 1;
        let n = extents[inner];
        let sink_idx = accesses.len() - 1;
        let vectorizable = accesses
            .iter()
            .all(|a| matches!(a.known[inner], Some(0) | Some(1)));
        // Row-invariant scalars (level ≤ 1).
        let mut scalar = scalar0.to_vec();
        for (e, &lvl) in levels.iter().enumerate() {
            if lvl == 1 {
                let v = self.expr_scalar(&k.expr[e], &scalar, &idx, &[], &row);
                scalar[e] = Some(v);
            }
        }
        let reduce_inner =
            matches!(k.sink, Sink::Reduce(..)) && accesses[sink_idx].known[inner] == Some(0);
        let op = match &k.sink {
            Sink::Reduce(op, _) => Some(*op),
            Sink::Store(_) => None,
        };
        // Scalar accumulator for reductions along the inner axis.
        let acc_var = self.b.declare_var(types::F32);
        let ident = self.b.ins().f32const(if op == Some(ReduceOp::Max) {
            f32::NEG_INFINITY
        } else {
            0.0
        });
        self.b.def_var(acc_var, ident);
        let var = if vectorizable {
            let vacc = self.b.declare_var(types::F32X4);
            let vid = self.b.ins().splat(types::F32X4, ident);
            self.b.def_var(vacc, vid);
            // Splat the row-invariant values once.
            let mut vecs: Vec<Option<Value>> = vec![None; k.expr.len()];
            for (e, &lvl) in levels.iter().enumerate() {
                if lvl <= 1 {
                    let s = scalar[e].expect("invariant computed");
                    vecs[e] = Some(self.b.ins().splat(types::F32X4, s));
                }
            }
            let row2 = row.clone();
            let var = self.counted_loop(n, 4 * UNROLL, |g, i| {
                for u in 0..UNROLL {
                    let j = g.b.ins().iadd_imm_s(i, 4 * u);
                    let mut vals = vecs.clone();
                    let term = g.fused_term(k, &mut vals, types::F32X4);
                    let v = g.expr_all(k, &mut vals, &idx, Some(j), &row2, true);
                    let term = term.map(|(x, y)| (vals[x].expect("x"), vals[y].expect("y")));
                    let addr = |g: &mut Self, a: usize| {
                        let off = g.b.ins().ishl_imm_u(j, 2);
                        g.b.ins().iadd(row2[a], off)
                    };
                    match (&k.sink, reduce_inner) {
                        (Sink::Store(_), _) => {
                            let p = addr(g, sink_idx);
                            g.b.ins().store(flags(), v, p, 0);
                        }
                        (Sink::Reduce(op, _), true) => {
                            let a = g.b.use_var(vacc);
                            let r = g.accumulate(*op, a, v, term);
                            g.b.def_var(vacc, r);
                        }
                        (Sink::Reduce(op, _), false) => {
                            let p = addr(g, sink_idx);
                            let old = g.b.ins().load(types::F32X4, flags(), p, 0);
                            let r = g.accumulate(*op, old, v, term);
                            g.b.ins().store(flags(), r, p, 0);
                        }
                    }
                }
            });
            if reduce_inner {
                // Horizontal combine of the vector accumulator into the scalar one.
                let v = self.b.use_var(vacc);
                let mut s = self.b.use_var(acc_var);
                for lane in 0..4u8 {
                    let x = self.b.ins().extractlane(v, lane);
                    s = combine(&mut self.b, op.unwrap_or(ReduceOp::Sum), s, x);
                }
                self.b.def_var(acc_var, s);
            }
            var
        } else {
            let var = self.b.declare_var(types::I64);
            let zero = self.b.ins().iconst(types::I64, 0);
            self.b.def_var(var, zero);
            var
        };
        // Scalar tail (the whole row when not vectorizable).
        let row2 = row.clone();
        let strides: Vec<Value> = accesses.iter().map(|a| self.stride(a, inner)).collect();
        self.tail_loop(var, n, |g, i| {
            let mut vals = scalar.clone();
            for (e, &lvl) in levels.iter().enumerate() {
                if lvl > 1 {
                    vals[e] = None;
                }
            }
            let ptrs: Vec<Value> = row2
                .iter()
                .zip(&strides)
                .map(|(&r, &s)| {
                    let o = g.b.ins().imul(i, s);
                    let bytes = g.b.ins().ishl_imm_u(o, 2);
                    g.b.ins().iadd(r, bytes)
                })
                .collect();
            let term = g.fused_term(k, &mut vals, types::F32);
            let v = g.expr_tail(k, &mut vals, &idx, i, &ptrs);
            let term = term.map(|(x, y)| (vals[x].expect("x"), vals[y].expect("y")));
            match (&k.sink, reduce_inner) {
                (Sink::Store(_), _) => {
                    g.b.ins().store(flags(), v, ptrs[sink_idx], 0);
                }
                (Sink::Reduce(op, _), true) => {
                    let a = g.b.use_var(acc_var);
                    let r = g.accumulate(*op, a, v, term);
                    g.b.def_var(acc_var, r);
                }
                (Sink::Reduce(op, _), false) => {
                    let old = g.b.ins().load(types::F32, flags(), ptrs[sink_idx], 0);
                    let r = g.accumulate(*op, old, v, term);
                    g.b.ins().store(flags(), r, ptrs[sink_idx], 0);
                }
            }
        });
        if reduce_inner {
            let p = row[sink_idx];
            let old = self.b.ins().load(types::F32, flags(), p, 0);
            let a = self.b.use_var(acc_var);
            let r = combine(&mut self.b, op.unwrap_or(ReduceOp::Sum), old, a);
            self.b.ins().store(flags(), r, p, 0);
            if let Some(e) = &k.epilogue {
                // The row's element is final: the fused epilogue stores its value.
                self.reduce_epilogue(e, &idx, r);
            }
        }
    }

    /// A reduction's epilogue at the outer indices `idx` of a finished element `r`.
    fn reduce_epilogue(&mut self, e: &Epilogue, idx: &[Value], r: Value) {
        let at = |g: &mut Self, a: &Access| -> Value {
            let p = g.base(a);
            g.advance(p, a, idx)
        };
        let mut vals: Vec<Option<Value>> = vec![None; e.kernel.expr.len()];
        for (i, ex) in e.kernel.expr.iter().enumerate() {
            let v = match ex {
                Expr::Load(l) if *l == e.acc => r,
                Expr::Load(l) => {
                    let p = at(self, &e.kernel.loads[*l]);
                    self.b.ins().load(types::F32, flags(), p, 0)
                }
                _ => self.expr_scalar(ex, &vals, idx, &[], &[]),
            };
            vals[i] = Some(v);
        }
        let out = vals[e.kernel.expr.len() - 1].expect("result");
        let p = at(self, e.kernel.sink_access());
        self.b.ins().store(flags(), out, p, 0);
    }

    /// For a sum of products with FMA available: marks the final product as computed
    /// (with a placeholder) and returns its operands, so the sink can fuse `acc + a*b`.
    fn fused_term(
        &mut self,
        k: &LoopKernel,
        vals: &mut [Option<Value>],
        ty: Type,
    ) -> Option<(usize, usize)> {
        let last = k.expr.len() - 1;
        match (&k.sink, &k.expr[last]) {
            (Sink::Reduce(ReduceOp::Sum, _), Expr::Binary(Binary::Mul, x, y))
                if self.fma && vals[last].is_none() =>
            {
                let zero = self.b.ins().f32const(0.0);
                vals[last] = Some(if ty == types::F32X4 {
                    self.b.ins().splat(ty, zero)
                } else {
                    zero
                });
                Some((*x, *y))
            }
            _ => None,
        }
    }

    /// `acc ⊕ v`, or `fma(a, b, acc)` for a fused product.
    fn accumulate(
        &mut self,
        op: ReduceOp,
        acc: Value,
        v: Value,
        term: Option<(Value, Value)>,
    ) -> Value {
        match term {
            Some((a, b)) => self.b.ins().fma(a, b, acc),
            None => combine(&mut self.b, op, acc, v),
        }
    }

    fn sink_scalar(&mut self, sink: &Sink, p: Value, v: Value) {
        match sink {
            Sink::Store(_) => {
                self.b.ins().store(flags(), v, p, 0);
            }
            Sink::Reduce(op, _) => {
                let old = self.b.ins().load(types::F32, flags(), p, 0);
                let r = combine(&mut self.b, *op, old, v);
                self.b.ins().store(flags(), r, p, 0);
            }
        }
    }

    /// Evaluates the whole expression, using precomputed values where present. In
    /// vector mode `j` is the inner index of lane 0 and loads read 4 lanes at `row`.
    fn expr_all(
        &mut self,
        k: &LoopKernel,
        vals: &mut [Option<Value>],
        idx: &[Value],
        j: Option<Value>,
        row: &[Value],
        vector: bool,
    ) -> Value {
        for e in 0..k.expr.len() {
            if vals[e].is_some() {
                continue;
            }
            let v = if vector {
                self.expr_vector(&k.expr[e], vals, j.expect("vector index"), row)
            } else {
                self.expr_scalar(&k.expr[e], vals, idx, &[], row)
            };
            vals[e] = Some(v);
        }
        vals[k.expr.len() - 1].expect("result")
    }

    fn expr_tail(
        &mut self,
        k: &LoopKernel,
        vals: &mut [Option<Value>],
        idx: &[Value],
        i: Value,
        ptrs: &[Value],
    ) -> Value {
        let mut full = idx.to_vec();
        full.push(i);
        for e in 0..k.expr.len() {
            if vals[e].is_some() {
                continue;
            }
            let v = self.expr_scalar(&k.expr[e], vals, &full, ptrs, &[]);
            vals[e] = Some(v);
        }
        vals[k.expr.len() - 1].expect("result")
    }

    /// One expression node in scalar form. `ptrs` are per-element pointers (tail) or
    /// empty, in which case loads read at `row` (row-invariant loads).
    fn expr_scalar(
        &mut self,
        e: &Expr,
        vals: &[Option<Value>],
        idx: &[Value],
        ptrs: &[Value],
        row: &[Value],
    ) -> Value {
        let fma = self.fma;
        let mut m = Math {
            b: &mut self.b,
            ty: types::F32,
            fma,
        };
        let get = |i: usize| vals[i].expect("operand computed");
        match e {
            Expr::Load(l) => {
                let p = if ptrs.is_empty() { row[*l] } else { ptrs[*l] };
                m.b.ins().load(types::F32, flags(), p, 0)
            }
            Expr::Const(c) => m.c(*c as f32),
            Expr::Size(s) => {
                let v =
                    m.b.ins()
                        .load(types::I64, flags(), self.frame, (*s * 8) as i32);
                m.b.ins().fcvt_from_sint(types::F32, v)
            }
            Expr::Index(axis) => {
                let i = idx[*axis];
                m.b.ins().fcvt_from_sint(types::F32, i)
            }
            _ => compute(&mut m, e, &get),
        }
    }

    fn expr_vector(&mut self, e: &Expr, vals: &[Option<Value>], j: Value, row: &[Value]) -> Value {
        let fma = self.fma;
        let mut m = Math {
            b: &mut self.b,
            ty: types::F32X4,
            fma,
        };
        let get = |i: usize| vals[i].expect("operand computed");
        match e {
            Expr::Load(l) => {
                let off = m.b.ins().ishl_imm_u(j, 2);
                let p = m.b.ins().iadd(row[*l], off);
                m.b.ins().load(types::F32X4, flags(), p, 0)
            }
            Expr::Index(_) => {
                // Only the inner axis varies here: lanes j, j+1, j+2, j+3.
                let j32 = m.b.ins().ireduce(types::I32, j);
                let s = m.b.ins().splat(types::I32X4, j32);
                let lanes = lane_ids(m.b);
                let v = m.b.ins().iadd(s, lanes);
                m.b.ins().fcvt_from_sint(types::F32X4, v)
            }
            Expr::Const(_) | Expr::Size(_) => unreachable!("invariant values are hoisted"),
            _ => compute(&mut m, e, &get),
        }
    }
}

/// The operations on already computed operands, the same for scalars and vectors.
fn compute(m: &mut Math, e: &Expr, get: &dyn Fn(usize) -> Value) -> Value {
    match e {
        Expr::Unary(u, a) => unary(m, *u, get(*a)),
        Expr::Binary(op, a, b) => binary(m, *op, get(*a), get(*b)),
        Expr::Cmp(c, a, b) => {
            let mask = m.mask(float_cc(*c), get(*a), get(*b));
            m.mask_to_float(mask)
        }
        Expr::Select(c, a, b) => {
            let zero = m.c(0.0);
            let mask = m.mask(FloatCC::NotEqual, get(*c), zero);
            m.pick(mask, get(*a), get(*b))
        }
        Expr::Trunc(a) => m.b.ins().trunc(get(*a)),
        Expr::Load(_) | Expr::Const(_) | Expr::Size(_) | Expr::Index(_) => {
            unreachable!("leaves are handled by the caller")
        }
    }
}

fn lane_ids(b: &mut FunctionBuilder) -> Value {
    let z = b.ins().iconst(types::I32, 0);
    let v = b.ins().splat(types::I32X4, z);
    let mut v = v;
    for lane in 1..4u8 {
        let c = b.ins().iconst(types::I32, lane as i64);
        v = b.ins().insertlane(v, c, lane);
    }
    v
}

fn combine(b: &mut FunctionBuilder, op: ReduceOp, a: Value, x: Value) -> Value {
    match op {
        ReduceOp::Sum => b.ins().fadd(a, x),
        ReduceOp::Max => b.ins().fmax(a, x),
    }
}

fn float_cc(c: Cmp) -> FloatCC {
    match c {
        Cmp::Lt => FloatCC::LessThan,
        Cmp::Le => FloatCC::LessThanOrEqual,
        Cmp::Gt => FloatCC::GreaterThan,
        Cmp::Ge => FloatCC::GreaterThanOrEqual,
        Cmp::Eq => FloatCC::Equal,
        Cmp::Ne => FloatCC::NotEqual,
    }
}

fn unary(m: &mut Math, u: Unary, a: Value) -> Value {
    match u {
        Unary::Neg => m.b.ins().fneg(a),
        Unary::Exp => m.exp(a),
        Unary::Log => m.log(a),
        Unary::Log1p => m.log1p(a),
        Unary::Tanh => m.tanh(a),
        Unary::Sqrt => m.b.ins().sqrt(a),
        Unary::Rsqrt => {
            let s = m.b.ins().sqrt(a);
            let one = m.c(1.0);
            m.b.ins().fdiv(one, s)
        }
        Unary::Abs => m.b.ins().fabs(a),
        Unary::Sign => m.sign(a),
        Unary::Erf => m.erf(a),
        Unary::Sigmoid => m.sigmoid(a),
        Unary::Floor => m.b.ins().floor(a),
    }
}

fn binary(m: &mut Math, op: Binary, a: Value, b: Value) -> Value {
    match op {
        Binary::Add => m.b.ins().fadd(a, b),
        Binary::Sub => m.b.ins().fsub(a, b),
        Binary::Mul => m.b.ins().fmul(a, b),
        Binary::Div => m.b.ins().fdiv(a, b),
        Binary::Max => m.b.ins().fmax(a, b),
        Binary::Min => m.b.ins().fmin(a, b),
        Binary::Pow => {
            let l = m.log(a);
            let t = m.b.ins().fmul(b, l);
            m.exp(t)
        }
    }
}

/// How often each expression node changes: 0 never (constants, sizes), 1 once per row
/// (outer indices, loads constant along the inner axis), 2 per element.
fn levels(k: &LoopKernel, rank: usize) -> Vec<u8> {
    let inner = rank.checked_sub(1);
    let mut lv = vec![0u8; k.expr.len()];
    for (i, e) in k.expr.iter().enumerate() {
        lv[i] = match e {
            Expr::Const(_) | Expr::Size(_) => 0,
            Expr::Index(a) => {
                if Some(*a) == inner {
                    2
                } else {
                    1
                }
            }
            Expr::Load(l) => {
                let a = &k.loads[*l];
                match inner {
                    None => 1,
                    // Constant along the inner axis: once per row.
                    Some(inn) if a.known[inn] == Some(0) => 1,
                    _ => 2,
                }
            }
            Expr::Unary(_, a) | Expr::Trunc(a) => lv[*a],
            Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => lv[*a].max(lv[*b]),
            Expr::Select(c, a, b) => lv[*c].max(lv[*a]).max(lv[*b]),
        };
    }
    if rank == 0 {
        // Straight-line code: everything is "invariant".
        for l in &mut lv {
            if *l == 1 {
                *l = 0;
            }
        }
    }
    lv
}
