//! The primitives the JIT runs as runtime routines that an object file generates
//! instead, as plain loops in the entry function (sizes fixed at build time): the
//! counter-based random numbers of dropout and noise (`ir::elementwise::rng_uniform`,
//! bit for bit), concatenation, gather (embedding lookups) and its gradient
//! scatter-add. An index out of range sets the function's result to 1 and reads row 0.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, Value, types};

use super::{EntryGen, Layout, flags};
use crate::ir::Op;
use crate::jit::plan::{Access, CallKernel, Kernel};

/// Whether the object generates this primitive (else it is refused).
pub(super) fn supported(op: &Op) -> bool {
    matches!(
        op,
        Op::Rng { .. } | Op::Concat { .. } | Op::Gather | Op::ScatterAdd
    )
}

/// Row-major strides of a shape.
fn row_major(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1] as i64;
    }
    s
}

impl EntryGen<'_, '_> {
    /// Element offsets of the row-major index `i` over `shape` in each of the
    /// `strides` lists (each with its starting offset).
    fn offsets(&mut self, i: Value, shape: &[usize], strides: &[(&[i64], i64)]) -> Vec<Value> {
        let mut offs: Vec<Value> = strides
            .iter()
            .map(|&(_, o)| self.b.ins().iconst(types::I64, o))
            .collect();
        let mut rem = i;
        for d in (0..shape.len()).rev() {
            let ext = shape[d] as i64;
            let q = self.b.ins().udiv_imm_u(rem, ext);
            let r = self.b.ins().imul_imm_s(q, ext);
            let r = self.b.ins().isub(rem, r);
            for (k, &(s, _)) in strides.iter().enumerate() {
                let t = self.b.ins().imul_imm_s(r, s[d]);
                offs[k] = self.b.ins().iadd(offs[k], t);
            }
            rem = q;
        }
        offs
    }

    /// The address of element `off` (a value, in elements) of buffer `base`.
    fn elem(&mut self, base: Value, off: Value) -> Value {
        let b = self.b.ins().ishl_imm_u(off, 2);
        self.b.ins().iadd(base, b)
    }

    fn access(&self, l: &Layout, a: &Access) -> (Value, Vec<i64>, i64) {
        let base = self.bufs[a.buf].expect("every buffer's address is computed first");
        let strides = a.strides.iter().map(|&s| l.sizes[s]).collect();
        (base, strides, l.sizes[a.offset])
    }

    /// The kernel `ki` of the plan, a call of a supported primitive, as loops.
    pub(super) fn routine(&mut self, l: &Layout, ki: usize) {
        let Kernel::Call(c) = &l.plan.kernels[ki] else {
            return;
        };
        let shape =
            |s: &[usize]| -> Vec<usize> { s.iter().map(|&x| l.sizes[x] as usize).collect() };
        let out_shape = shape(&c.out_shape);
        let out = self.bufs[c.out].expect("every buffer's address is computed first");
        let op = &l.plan.func.nodes[c.node].op;
        match op {
            Op::Rng { salt } => self.rng(l, c, *salt, out, &out_shape),
            Op::Concat { axis } => {
                let ostr = row_major(&out_shape);
                let mut at = 0i64;
                for (a, s) in c.args.iter().zip(&c.arg_shapes) {
                    let s = shape(s);
                    let (src, st, off) = self.access(l, a);
                    let n: i64 = s.iter().map(|&d| d as i64).product();
                    let start = at * ostr[*axis];
                    if n > 0 {
                        self.counted(n, &mut |g, i| {
                            let o = g.offsets(i, &s, &[(&st, off), (&ostr, start)]);
                            let p = g.elem(src, o[0]);
                            let v = g.b.ins().load(types::F32, flags(), p, 0);
                            let q = g.elem(out, o[1]);
                            g.b.ins().store(flags(), v, q, 0);
                        });
                    }
                    at += s[*axis] as i64;
                }
            }
            Op::Gather => {
                let (tshape, ishape) = (shape(&c.arg_shapes[0]), shape(&c.arg_shapes[1]));
                let (table, ts, toff) = self.access(l, &c.args[0]);
                let (idx, is, ioff) = self.access(l, &c.args[1]);
                let (rows, d) = (tshape[0] as i64, tshape[1] as i64);
                let n: i64 = ishape.iter().map(|&x| x as i64).product();
                if n > 0 && d > 0 {
                    self.counted(n, &mut |g, k| {
                        let o = g.offsets(k, &ishape, &[(&is, ioff)]);
                        let row = g.index(idx, o[0], rows);
                        let r = g.b.ins().imul_imm_s(row, ts[0]);
                        let base = g.b.ins().iadd_imm_s(r, toff);
                        let dst = g.b.ins().imul_imm_s(k, d);
                        g.counted(d, &mut |g, j| {
                            let t = g.b.ins().imul_imm_s(j, ts[1]);
                            let t = g.b.ins().iadd(base, t);
                            let p = g.elem(table, t);
                            let v = g.b.ins().load(types::F32, flags(), p, 0);
                            let q = g.b.ins().iadd(dst, j);
                            let q = g.elem(out, q);
                            g.b.ins().store(flags(), v, q, 0);
                        });
                    });
                }
            }
            Op::ScatterAdd => self.scatter_add(l, c, out, &out_shape),
            _ => {}
        }
    }

    /// A row index read from float element `off` of `idx`: a whole number in
    /// `0..rows`, else row 0 with the function's result set to 1.
    fn index(&mut self, idx: Value, off: Value, rows: i64) -> Value {
        let p = self.elem(idx, off);
        let v = self.b.ins().load(types::F32, flags(), p, 0);
        let i = self.b.ins().fcvt_to_sint_sat(types::I64, v);
        let back = self.b.ins().fcvt_from_sint(types::F32, i);
        let whole = self.b.ins().fcmp(FloatCC::Equal, back, v);
        let lo = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, i, 0);
        let hi = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, i, rows);
        let ok = self.b.ins().band(whole, lo);
        let ok = self.b.ins().band(ok, hi);
        let zero = self.b.ins().iconst(types::I64, 0);
        let row = self.b.ins().select(ok, i, zero);
        if let Some(st) = self.status {
            let old = self.b.ins().stack_load(self.ptr, types::I32, st, 0);
            let bad = self.b.ins().bxor_imm_s(ok, 1);
            let bad = self.b.ins().uextend(types::I32, bad);
            let s = self.b.ins().bor(old, bad);
            self.b.ins().stack_store(self.ptr, s, st, 0);
        }
        row
    }

    /// `ir::elementwise::rng_uniform(key, salt, i)` for each element `i`, the key read
    /// from the call's first operand.
    fn rng(&mut self, l: &Layout, c: &CallKernel, salt: u64, out: Value, shape: &[usize]) {
        let (kp, _, koff) = self.access(l, &c.args[0]);
        let kp = self.b.ins().iadd_imm_s(kp, koff * 4);
        let kf = self.b.ins().load(types::F32, flags(), kp, 0);
        let key = self.b.ins().fcvt_to_uint_sat(types::I64, kf);
        let base = self
            .b
            .ins()
            .imul_imm_s(key, 0x9E37_79B9_7F4A_7C15u64 as i64);
        let base = self
            .b
            .ins()
            .iadd_imm_s(base, salt.wrapping_mul(0xD1B5_4A32_D192_ED03) as i64);
        let n: i64 = shape.iter().map(|&d| d as i64).product();
        if n == 0 {
            return;
        }
        self.counted(n, &mut |g, i| {
            let z = g.b.ins().imul_imm_s(i, 0x94D0_49BB_1331_11EBu64 as i64);
            let z = g.b.ins().iadd(base, z);
            let z = g.mix64(z);
            let z = g.b.ins().ushr_imm_u(z, 40);
            let v = g.b.ins().fcvt_from_uint(types::F32, z);
            let scale = g.b.ins().f32const(1.0 / (1u32 << 24) as f32);
            let v = g.b.ins().fmul(v, scale);
            let p = g.elem(out, i);
            g.b.ins().store(flags(), v, p, 0);
        });
    }

    /// `out[idx[k], :] += upd[k, :]` over a zeroed `[rows, d]` output.
    fn scatter_add(&mut self, l: &Layout, c: &CallKernel, out: Value, out_shape: &[usize]) {
        let shape =
            |s: &[usize]| -> Vec<usize> { s.iter().map(|&x| l.sizes[x] as usize).collect() };
        let (ishape, ushape) = (shape(&c.arg_shapes[0]), shape(&c.arg_shapes[1]));
        let (idx, is, ioff) = self.access(l, &c.args[0]);
        let (upd, us, uoff) = self.access(l, &c.args[1]);
        let (rows, d) = (out_shape[0] as i64, out_shape[1] as i64);
        let zero = self.b.ins().f32const(0.0);
        if rows * d > 0 {
            self.counted(rows * d, &mut |g, i| {
                let p = g.elem(out, i);
                g.b.ins().store(flags(), zero, p, 0);
            });
        }
        let n: i64 = ishape.iter().map(|&x| x as i64).product();
        if n == 0 || d == 0 {
            return;
        }
        self.counted(n, &mut |g, k| {
            let o = g.offsets(k, &ishape, &[(&is, ioff)]);
            let row = g.index(idx, o[0], rows);
            let dst = g.b.ins().imul_imm_s(row, d);
            let first = g.b.ins().imul_imm_s(k, d);
            g.counted(d, &mut |g, j| {
                let e = g.b.ins().iadd(first, j);
                let o = g.offsets(e, &ushape, &[(&us, uoff)]);
                let p = g.elem(upd, o[0]);
                let v = g.b.ins().load(types::F32, flags(), p, 0);
                let q = g.b.ins().iadd(dst, j);
                let q = g.elem(out, q);
                let old = g.b.ins().load(types::F32, flags(), q, 0);
                let s = g.b.ins().fadd(old, v);
                g.b.ins().store(flags(), s, q, 0);
            });
        });
    }
}
