//! Products with few rows as generated code: the output row blocked in registers
//! (up to 32 columns in eight f32x4 accumulators over the whole `k` loop), the fused
//! epilogue applied before each store.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::Variable;

use super::expr::compute;
use super::{Gen, flags};
use crate::jit::mathfn::Math;
use crate::jit::plan::{Access, Epilogue, Expr, LoopKernel, Sink};

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

impl Gen<'_> {
    /// A product with few rows, `C[b, i, :] = Σ_k A[b, i, k] · B[b, k, :]`, over the
    /// columns `self.range` (all when `None`), with the output row blocked in
    /// registers: 32 columns (eight f32x4 accumulators, enough independent chains to
    /// keep both FMA pipes busy) at a time over the whole `k` loop, then 16, 8 and 4,
    /// then the last few; each accumulator is stored once. The loop kernel's accesses give
    /// the strides.
    pub(super) fn emit_small_gemm(&mut self, k: &LoopKernel, epi: Option<&Epilogue>) {
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
        self.small_gemm_tail(g, a_row, b_base, c_row, col);
    }

    /// The row's last 1–3 columns from `col`: one more 4-column block ending at the
    /// range's end when the range is that wide (it recomputes a few columns with the same
    /// operations in the same order, so it stores the same bits), else single columns.
    fn small_gemm_tail(
        &mut self,
        g: &SmallGemm,
        a_row: Value,
        b_base: Value,
        c_row: (Value, &[Value]),
        col: Variable,
    ) {
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
}
