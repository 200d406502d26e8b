//! Back-propagation through time's step walk as one generated function (the backward
//! counterpart of `rnn_cell`): for a slice of batch rows, every step from the last
//! processed to the first, per row the output gradient's share added into `dh` and,
//! where the step is valid, the gate gradients (the step's deltas `dz`, and GRU
//! reset_after's recurrent deltas `dr`); for GRU without reset_after then the
//! candidate's `drh = dz_h·U_hᵀ` and the reset and update gates' deltas; then, two rows
//! at a time over sixteen columns (then four, then one), the next `dh = dhp + dr·Uᵀ`
//! (per gate times its keep mask under recurrent dropout) for the rows whose step is
//! valid.
//!
//! Like the forward it is `fn(args)` over the table of [`arg`] slots, the units and
//! every option compiled in ([`CellSpec`]), the batch rows and steps read at run time.
//! It computes exactly what `jit::rnn::bwd`'s per-slice walk computes, in the same
//! order: the products sum over `k` from zero one term after the other (fused where
//! `small::gemm` fuses) and add that sum to the running value once at the end; tanh's
//! and sigmoid's derivatives come from the activation alone (`Act::grad`); so the same
//! bits. The weight and input gradients stay products over all rows (`bwd::weights`).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::Variable;

use super::rnn_cell::{CellAct, CellKind, CellSpec, Cx};
use super::{Gen, flags};

/// The argument table's slots (each 8 bytes). Buffers are the slice's own: row `i` is
/// the slice's `i`-th batch row. `DY` the output gradient (`[nb, T, u]` with
/// return_sequences, else `[nb, u]`); `DZ` `[nb, T, n]` the deltas (zeros at entry,
/// written at valid steps); `DR` GRU reset_after's recurrent deltas `[nb, T, n]` (else
/// the same buffer as `DZ`); `UT` the recurrent kernel transposed, `[n, u]`; `A`
/// `[nb, T, n]`, `HP`, `CP`, `EX` `[nb, T, u]` the forward's trace; `MASK` `[nb, T]`;
/// `HKEEP` `[nb, g, u]`; `DH` and `DC` `[nb, u]` (zeros at entry) the gradients flowing
/// into the step's output and cell state; `DHP`, `DZG`, `DRH` `[nb, u]` scratch (the
/// next `dh` being formed; GRU's update-gate output gradient and `dz_h·U_hᵀ`).
pub mod arg {
    pub const DY: usize = 0;
    pub const DZ: usize = 1;
    pub const DR: usize = 2;
    pub const UT: usize = 3;
    pub const A: usize = 4;
    pub const HP: usize = 5;
    pub const CP: usize = 6;
    pub const EX: usize = 7;
    pub const MASK: usize = 8;
    pub const HKEEP: usize = 9;
    pub const DH: usize = 10;
    pub const DC: usize = 11;
    pub const DHP: usize = 12;
    pub const DZG: usize = 13;
    pub const DRH: usize = 14;
    pub const NB: usize = 15;
    pub const T: usize = 16;
    pub const LEN: usize = 17;
}

/// The step being generated: its index `k` in processing order and time step `t`.
#[derive(Clone, Copy)]
struct Step {
    k: Value,
    t: Value,
}

/// One row's byte addresses for this step (trace and delta rows at step `t`).
#[derive(Clone, Copy)]
struct Row {
    dz: Value,
    dr: Value,
    a: Value,
    hp: Value,
    cp: Value,
    ex: Value,
    dh: Value,
    dc: Value,
    dhp: Value,
    dzg: Value,
    drh: Value,
    keep: Value,
    /// The step's mask value (f32), when masked.
    mask: Option<Value>,
}

impl Gen<'_> {
    /// The whole function body for `spec`'s back-propagation through time.
    pub fn emit_rnn_grad(&mut self, spec: &CellSpec) {
        let a = (0..arg::LEN).map(|i| self.slot(i)).collect();
        let s = &Cx { spec, a };
        let (nb, tt) = (s.a[arg::NB], s.a[arg::T]);
        self.counted_loop(tt, 1, |g, q| {
            let last = g.b.ins().iadd_imm_s(tt, -1);
            let k = g.b.ins().isub(last, q);
            // go_backwards processed step k at time T − 1 − k = q.
            let t = if s.go_backwards { q } else { k };
            let st = Step { k, t };
            g.counted_loop(nb, 1, |g, i| g.grad_row_pass(s, st, i));
            if s.kind == CellKind::GruBefore {
                g.grad_row_blocks(s, st, &|g, rs| g.late_product(s, rs));
                g.counted_loop(nb, 1, |g, i| g.late_row_pass(s, st, i));
            }
            g.grad_row_blocks(s, st, &|g, rs| g.back_product(s, rs));
        });
        self.b.ins().return_(&[]);
    }

    /// Slice row `i`'s addresses at this step.
    fn grad_row(&mut self, s: &Cx, st: Step, i: Value) -> Row {
        let (u, n) = (s.units, s.gates() * s.units);
        let [dz, dr, a] =
            [arg::DZ, arg::DR, arg::A].map(|x| self.at_step(s.a[arg::T], s.a[x], i, st.t, n));
        let [hp, cp, ex] =
            [arg::HP, arg::CP, arg::EX].map(|x| self.at_step(s.a[arg::T], s.a[x], i, st.t, u));
        let [dh, dc, dhp, dzg, drh] =
            [arg::DH, arg::DC, arg::DHP, arg::DZG, arg::DRH].map(|x| self.offset(s.a[x], i, u));
        let keep = self.offset(s.a[arg::HKEEP], i, n);
        let mask = if s.masked {
            let p = self.at_step(s.a[arg::T], s.a[arg::MASK], i, st.t, 1);
            Some(self.b.ins().load(types::F32, flags(), p, 0))
        } else {
            None
        };
        Row {
            dz,
            dr,
            a,
            hp,
            cp,
            ex,
            dh,
            dc,
            dhp,
            dzg,
            drh,
            keep,
            mask,
        }
    }

    /// `body` on pairs of slice rows, then on the last row alone when `nb` is odd.
    fn grad_row_blocks(&mut self, s: &Cx, st: Step, body: &dyn Fn(&mut Self, &[Row])) {
        let nb = s.a[arg::NB];
        let var = self.counted_loop(nb, 2, |g, i0| {
            let rs: Vec<Row> = (0..2)
                .map(|r| {
                    let i = g.b.ins().iadd_imm_s(i0, r);
                    g.grad_row(s, st, i)
                })
                .collect();
            body(g, &rs);
        });
        self.tail_loop(var, nb, |g, i| {
            let r = g.grad_row(s, st, i);
            body(g, &[r]);
        });
    }

    /// `body` when `cond` (an i8 truth value) holds, always without one.
    fn when(&mut self, cond: Option<Value>, body: impl FnOnce(&mut Self)) {
        let Some(c) = cond else {
            return body(self);
        };
        let then = self.b.create_block();
        let merge = self.b.create_block();
        self.b.ins().brif(c, then, &[], merge, &[]);
        self.b.switch_to_block(then);
        self.b.seal_block(then);
        body(self);
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(merge);
        self.b.seal_block(merge);
    }

    /// Whether a step is valid (its mask value is not zero), as an i8.
    fn valid_flag(&mut self, mask: Option<Value>) -> Option<Value> {
        mask.map(|m| {
            let zero = self.b.ins().f32const(0.0);
            self.b.ins().fcmp(FloatCC::NotEqual, m, zero)
        })
    }

    /// `body(byte offset, type)` per block of four units, then each last unit alone.
    fn unit_loop(&mut self, u: usize, body: &dyn Fn(&mut Self, Value, Type)) {
        let full = (u / 4 * 4) as i64;
        for (lo, hi, step, ty) in [(0, full, 4, types::F32X4), (full, u as i64, 1, types::F32)] {
            self.blocks(lo, hi, step, |g, j| {
                let jb = g.b.ins().ishl_imm_u(j, 2);
                body(g, jb, ty)
            });
        }
    }

    /// `body(column, float offsets of its vectors, type)` over `u` columns: sixteen at a
    /// time (four f32x4 each), then four, then one.
    #[allow(clippy::type_complexity)]
    fn col_blocks(&mut self, u: usize, body: &dyn Fn(&mut Self, Value, &[usize], Type)) {
        let w16 = (u / 16 * 16) as i64;
        let w4 = (u / 4 * 4) as i64;
        for (lo, hi, step, vecs, ty) in [
            (0, w16, 16, 4, types::F32X4),
            (w16, w4, 4, 1, types::F32X4),
            (w4, u as i64, 1, 1, types::F32),
        ] {
            let offs: Vec<usize> = (0..vecs).map(|v| 4 * v).collect();
            self.blocks(lo, hi, step, |g, j| body(g, j, &offs, ty));
        }
    }

    /// `g · act'` given the activation's value `a`, as `Act::grad` evaluates it:
    /// tanh `g·(1 − a·a)`, sigmoid `g·(a·(1 − a))`.
    fn act_grad(&mut self, f: CellAct, a: Value, g: Value, ty: Type) -> Value {
        let one = self.math(ty).c(1.0);
        let d = match f {
            CellAct::Tanh => {
                let aa = self.b.ins().fmul(a, a);
                self.b.ins().fsub(one, aa)
            }
            CellAct::Sigmoid => {
                let c = self.b.ins().fsub(one, a);
                self.b.ins().fmul(a, c)
            }
        };
        self.b.ins().fmul(g, d)
    }

    /// Slice row `i` at this step: the output gradient's share into `dh` (when the step
    /// has an output and, under zero_output, is valid), then at a valid step its gate
    /// gradients.
    fn grad_row_pass(&mut self, s: &Cx, st: Step, i: Value) {
        let r = self.grad_row(s, st, i);
        let valid = self.valid_flag(r.mask);
        let dy = s.a[arg::DY];
        let (share, mut cond) = if s.return_sequences {
            (self.at_step(s.a[arg::T], dy, i, st.k, s.units), None)
        } else {
            let last = self.b.ins().iadd_imm_s(s.a[arg::T], -1);
            let at_last = self.b.ins().icmp(IntCC::Equal, st.k, last);
            (self.offset(dy, i, s.units), Some(at_last))
        };
        if s.zero_output
            && let Some(v) = valid
        {
            cond = Some(match cond {
                Some(c) => self.b.ins().band(c, v),
                None => v,
            });
        }
        self.when(cond, |g| {
            g.unit_loop(s.units, &|g, jb, ty| {
                let dh = g.load_at(r.dh, jb, 0, ty);
                let y = g.load_at(share, jb, 0, ty);
                let v = g.b.ins().fadd(dh, y);
                g.store_at(v, r.dh, jb, 0);
            })
        });
        self.when(valid, |g| {
            g.unit_loop(s.units, &|g, jb, ty| g.gate_block(s, &r, jb, ty))
        });
    }

    /// A valid row's gate gradients for four units (or one): its deltas, and the part
    /// of the next `dh` that does not go through `U` (GRU).
    fn gate_block(&mut self, s: &Cx, r: &Row, jb: Value, ty: Type) {
        let dh = self.load_at(r.dh, jb, 0, ty);
        match s.kind {
            CellKind::Simple => {
                let a = self.load_at(r.a, jb, 0, ty);
                let dz = self.act_grad(s.act, a, dh, ty);
                self.store_at(dz, r.dz, jb, 0);
            }
            CellKind::Lstm => self.lstm_block(s, r, (jb, dh), ty),
            CellKind::GruAfter | CellKind::GruBefore => self.gru_block(s, r, (jb, dh), ty),
        }
    }

    /// LSTM: the cell state's gradient `dct = dc + act'(c)·dh·o`, the four gates'
    /// deltas through their activations, and `dc = dct·f` for the step before.
    fn lstm_block(&mut self, s: &Cx, r: &Row, (jb, dh): (Value, Value), ty: Type) {
        let u = s.units;
        let a: Vec<Value> = (0..4).map(|q| self.load_at(r.a, jb, q * u, ty)).collect();
        let ex = self.load_at(r.ex, jb, 0, ty);
        let cp = self.load_at(r.cp, jb, 0, ty);
        let dc = self.load_at(r.dc, jb, 0, ty);
        let dho = self.b.ins().fmul(dh, a[3]);
        let dcx = self.act_grad(s.act, ex, dho, ty);
        let dct = self.b.ins().fadd(dc, dcx);
        let outs = [
            self.b.ins().fmul(dct, a[2]),
            self.b.ins().fmul(dct, cp),
            self.b.ins().fmul(dct, a[0]),
            self.b.ins().fmul(dh, ex),
        ];
        let dcn = self.b.ins().fmul(dct, a[1]);
        self.store_at(dcn, r.dc, jb, 0);
        for (q, &o) in outs.iter().enumerate() {
            let f = if q == 2 { s.act } else { s.ract };
            let d = self.act_grad(f, a[q], o, ty);
            self.store_at(d, r.dz, jb, q * u);
        }
    }

    /// GRU: `dhp = dh·z`, the candidate's delta; with reset_after the update and reset
    /// gates' deltas and the recurrent deltas too, else the update gate's output
    /// gradient for [`Self::late_block`].
    fn gru_block(&mut self, s: &Cx, r: &Row, (jb, dh): (Value, Value), ty: Type) {
        let u = s.units;
        let zg = self.load_at(r.a, jb, 0, ty);
        let hh = self.load_at(r.a, jb, 2 * u, ty);
        let hp = self.load_at(r.hp, jb, 0, ty);
        let dhz = self.b.ins().fmul(dh, zg);
        self.store_at(dhz, r.dhp, jb, 0);
        let dhh = self.b.ins().fsub(dh, dhz);
        let da = self.act_grad(s.act, hh, dhh, ty);
        self.store_at(da, r.dz, jb, 2 * u);
        let d = self.b.ins().fsub(hp, hh);
        let dzg = self.b.ins().fmul(dh, d);
        if s.kind == CellKind::GruBefore {
            self.store_at(dzg, r.dzg, jb, 0);
            return;
        }
        let rg = self.load_at(r.a, jb, u, ty);
        let ex = self.load_at(r.ex, jb, 0, ty);
        let dz0 = self.act_grad(s.ract, zg, dzg, ty);
        let dax = self.b.ins().fmul(da, ex);
        let dz1 = self.act_grad(s.ract, rg, dax, ty);
        let dr2 = self.b.ins().fmul(da, rg);
        for (v, off) in [(dz0, 0), (dz1, u)] {
            self.store_at(v, r.dz, jb, off);
            self.store_at(v, r.dr, jb, off);
        }
        self.store_at(dr2, r.dr, jb, 2 * u);
    }

    /// `Σ_q lhs_r[q] · B[q, j + off]` over `q < k` for each row `r` and offset, from
    /// zero in order of `q` (as `small::gemm` sums); `b` is `B`'s address, `ldb` its
    /// row length in floats.
    fn grad_product(
        &mut self,
        lhs: &[Value],
        b: Value,
        j: Value,
        (k, ldb): (usize, usize),
        offs: &[usize],
        ty: Type,
    ) -> Vec<Vec<Value>> {
        let zero = self.math(ty).c(0.0);
        let acc: Vec<Vec<Variable>> = lhs
            .iter()
            .map(|_| {
                offs.iter()
                    .map(|_| {
                        let v = self.b.declare_var(ty);
                        self.b.def_var(v, zero);
                        v
                    })
                    .collect()
            })
            .collect();
        let jb = self.b.ins().ishl_imm_u(j, 2);
        let b0 = self.b.ins().iadd(b, jb);
        let bp = self.b.declare_var(self.ptr);
        self.b.def_var(bp, b0);
        let ptr = self.ptr;
        let aps: Vec<Variable> = lhs
            .iter()
            .map(|&p| {
                let v = self.b.declare_var(ptr);
                self.b.def_var(v, p);
                v
            })
            .collect();
        let kn = self.imm(k as i64);
        let fma = self.fma;
        self.counted_loop(kn, 1, |g, _| {
            let bptr = g.b.use_var(bp);
            let bv: Vec<Value> = offs
                .iter()
                .map(|&off| g.b.ins().load(ty, flags(), bptr, (4 * off) as i32))
                .collect();
            for (&ap, acc) in aps.iter().zip(&acc) {
                let p = g.b.use_var(ap);
                let a = g.b.ins().load(types::F32, flags(), p, 0);
                let next = g.b.ins().iadd_imm_s(p, 4);
                g.b.def_var(ap, next);
                let a = if ty == types::F32 {
                    a
                } else {
                    g.b.ins().splat(ty, a)
                };
                for (&var, &bx) in acc.iter().zip(&bv) {
                    let old = g.b.use_var(var);
                    let new = if fma {
                        g.b.ins().fma(a, bx, old)
                    } else {
                        let m = g.b.ins().fmul(a, bx);
                        g.b.ins().fadd(m, old)
                    };
                    g.b.def_var(var, new);
                }
            }
            let next = g.b.ins().iadd_imm_s(bptr, (4 * ldb) as i64);
            g.b.def_var(bp, next);
        });
        acc.iter()
            .map(|r| r.iter().map(|&v| self.b.use_var(v)).collect())
            .collect()
    }

    /// GRU without reset_after: `drh = dz_h · U_hᵀ` for the rows (every row: an
    /// invalid step's deltas are zeros).
    fn late_product(&mut self, s: &Cx, rs: &[Row]) {
        let u = s.units;
        let lhs: Vec<Value> = rs
            .iter()
            .map(|r| self.b.ins().iadd_imm_s(r.dz, (4 * 2 * u) as i64))
            .collect();
        let ut = self
            .b
            .ins()
            .iadd_imm_s(s.a[arg::UT], (4 * 2 * u * u) as i64);
        self.col_blocks(u, &|g, j, offs, ty| {
            let accs = g.grad_product(&lhs, ut, j, (u, u), offs, ty);
            let jb = g.b.ins().ishl_imm_u(j, 2);
            for (r, acc) in rs.iter().zip(&accs) {
                for (&v, &off) in acc.iter().zip(offs) {
                    g.store_at(v, r.drh, jb, off);
                }
            }
        });
    }

    /// GRU without reset_after, slice row `i` once `drh` is known: at a valid step the
    /// reset and update gates' deltas and the candidate's path into the next `dh`.
    fn late_row_pass(&mut self, s: &Cx, st: Step, i: Value) {
        let r = self.grad_row(s, st, i);
        let valid = self.valid_flag(r.mask);
        self.when(valid, |g| {
            g.unit_loop(s.units, &|g, jb, ty| g.late_block(s, &r, jb, ty))
        });
    }

    /// `dz_z = σ'·dzg`, `dz_r = σ'·(drh·h·keep_h)`, `dhp += drh·r·keep_h` (fused where
    /// the Rust kernel's `ma` fuses).
    fn late_block(&mut self, s: &Cx, r: &Row, jb: Value, ty: Type) {
        let u = s.units;
        let drh = self.load_at(r.drh, jb, 0, ty);
        let dzg = self.load_at(r.dzg, jb, 0, ty);
        let zg = self.load_at(r.a, jb, 0, ty);
        let rg = self.load_at(r.a, jb, u, ty);
        let hp = self.load_at(r.hp, jb, 0, ty);
        let dhp = self.load_at(r.dhp, jb, 0, ty);
        let keep = s.hkeep.then(|| self.load_at(r.keep, jb, 2 * u, ty));
        let dz0 = self.act_grad(s.ract, zg, dzg, ty);
        self.store_at(dz0, r.dz, jb, 0);
        let mut x = self.b.ins().fmul(drh, hp);
        if let Some(k) = keep {
            x = self.b.ins().fmul(x, k);
        }
        let dz1 = self.act_grad(s.ract, rg, x, ty);
        self.store_at(dz1, r.dz, jb, u);
        let m = self.b.ins().fmul(drh, rg);
        // Without a keep mask the Rust kernel's `ma(m, 1.0, dhp)` is `m + dhp` exactly.
        let v = match keep {
            Some(k) => self.math(ty).mul_add(m, k, dhp),
            None => self.b.ins().fadd(m, dhp),
        };
        self.store_at(v, r.dhp, jb, 0);
    }

    /// The next `dh` of the rows: `dhp + Σ_g dr_g·U_gᵀ` as one sum over the gates whose
    /// product takes `h` directly, or under keep masks `dhp + (dr_g·U_gᵀ)·keep_g` gate
    /// after gate; stored into `dh` where the step is valid (non-GRU cells start from a
    /// zero `dhp`).
    fn back_product(&mut self, s: &Cx, rs: &[Row]) {
        let u = s.units;
        let ng = if s.kind == CellKind::GruBefore {
            2
        } else {
            s.gates()
        };
        // (first gate, gates summed together, keep mask's gate)
        let groups: Vec<(usize, usize, Option<usize>)> = if s.hkeep {
            (0..ng).map(|g| (g, 1, Some(g))).collect()
        } else {
            vec![(0, ng, None)]
        };
        let gru = matches!(s.kind, CellKind::GruAfter | CellKind::GruBefore);
        self.col_blocks(u, &|g, j, offs, ty| {
            let jb = g.b.ins().ishl_imm_u(j, 2);
            for (x, &(g0, gn, keep)) in groups.iter().enumerate() {
                let lhs: Vec<Value> = rs
                    .iter()
                    .map(|r| g.b.ins().iadd_imm_s(r.dr, (4 * g0 * u) as i64))
                    .collect();
                let b = g.b.ins().iadd_imm_s(s.a[arg::UT], (4 * g0 * u * u) as i64);
                let accs = g.grad_product(&lhs, b, j, (gn * u, u), offs, ty);
                let last = x + 1 == groups.len();
                for (r, acc) in rs.iter().zip(&accs) {
                    for (&sum, &off) in acc.iter().zip(offs) {
                        let old = if x == 0 && !gru {
                            g.math(ty).c(0.0)
                        } else {
                            g.load_at(r.dhp, jb, off, ty)
                        };
                        let add = match keep {
                            Some(kg) => {
                                let k = g.load_at(r.keep, jb, kg * u + off, ty);
                                g.b.ins().fmul(sum, k)
                            }
                            None => sum,
                        };
                        let v = g.b.ins().fadd(old, add);
                        if last {
                            g.store_dh(r, (jb, off), v, ty);
                        } else {
                            g.store_at(v, r.dhp, jb, off);
                        }
                    }
                }
            }
        });
    }

    /// `dh = v` where the row's step is valid (always without a mask).
    fn store_dh(&mut self, r: &Row, (jb, off): (Value, usize), v: Value, ty: Type) {
        let v = match r.mask {
            None => v,
            Some(m) => {
                let old = self.load_at(r.dh, jb, off, ty);
                let mut mm = self.math(ty);
                let m = if ty == types::F32 {
                    m
                } else {
                    mm.b.ins().splat(ty, m)
                };
                let zero = mm.c(0.0);
                let ok = mm.mask(FloatCC::NotEqual, m, zero);
                mm.pick(ok, v, old)
            }
        };
        self.store_at(v, r.dh, jb, off);
    }
}
