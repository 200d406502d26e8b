//! A recurrent layer's forward steps as one generated function: for a slice of batch
//! rows, every step in turn and two rows at a time, the recurrent product `h·U` (four
//! f32x4 accumulators per row over sixteen columns of `U` for the whole `k` loop, then
//! narrower blocks; per gate under recurrent dropout) into a small buffer, then per
//! four units (the last `units % 4` as scalars) the gates, the polynomial
//! nonlinearities of `mathfn`, Keras's mask, the state update, the output and the
//! trace.
//!
//! The function is `fn(args)`: `args` is the table of [`arg`] slots (pointers and the
//! slice's batch rows and steps). The units and every option are compiled in
//! ([`CellSpec`]); the batch and the number of steps are read at run time, so one
//! function serves every layer of the same shape. It computes exactly what
//! `jit::rnn::fwd` computes (same operations in the same order, so the same bits) and
//! stores the same trace.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::Variable;

use super::{Gen, flags};
use crate::jit::mathfn::Math;

/// Which cell: GRU split by where its candidate's recurrent product comes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CellKind {
    Simple,
    Lstm,
    /// GRU with reset_after: `r ⊙ (h·U_h + b_h)`.
    GruAfter,
    /// GRU without: `(r ⊙ h)·U_h`, a second product after the gates.
    GruBefore,
}

/// The activations generated code evaluates (others stay on the Rust kernel).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CellAct {
    Tanh,
    Sigmoid,
}

impl CellAct {
    pub fn of(name: &str) -> Option<CellAct> {
        match name {
            "tanh" => Some(CellAct::Tanh),
            "sigmoid" => Some(CellAct::Sigmoid),
            _ => None,
        }
    }
}

/// Everything compiled into one function: the layer's shape and options.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CellSpec {
    pub kind: CellKind,
    pub act: CellAct,
    pub ract: CellAct,
    pub units: usize,
    pub go_backwards: bool,
    pub return_sequences: bool,
    /// Store the trace back-propagation reads (`a`, `hp`, `cp`, `cn`, `ex`).
    pub trace: bool,
    pub masked: bool,
    /// Masked steps output zeros (else the previous output).
    pub zero_output: bool,
    /// Recurrent dropout's keep mask on `h`.
    pub hkeep: bool,
    /// Multiply-adds fused (the host has FMA).
    pub fma: bool,
}

impl CellSpec {
    pub fn gates(&self) -> usize {
        match self.kind {
            CellKind::Simple => 1,
            CellKind::Lstm => 4,
            CellKind::GruAfter | CellKind::GruBefore => 3,
        }
    }
    /// Rows whose products share each load of `U` (accumulators: rows · gates).
    /// Two rows of four f32x4 accumulators each, plus the four loads of `U` they
    /// share and a broadcast, fill the sixteen xmm registers without spilling.
    fn rows(&self) -> i64 {
        2
    }
}

/// The argument table's slots (each 8 bytes). Buffers are the slice's own: row `i` is
/// the slice's `i`-th batch row. `Z` `[nb, T, n]` holds the input projections and gets
/// the full pre-activations; `H0`/`H1` `[nb, u]` the state (H0 zeros at entry, the
/// result in H0 for an even number of steps, else H1); `C` `[nb, u]` LSTM's cell state
/// (zeros at entry); `OUT` the output rows; `A` the activations `[nb, T, n]` with a
/// trace, else `[nb, n]` scratch; `HP`, `CP`, `CN`, `EX` `[nb, T, u]` the trace;
/// `MASK` `[nb, T]`; `HKEEP` `[nb, g, u]`; `BR` GRU's recurrent bias `[n]`; `HS`
/// scratch `[rows, g, u]`; `V` scratch `[nb, u]`; `R` the block's recurrent products
/// `[rows, n]` (rows ≤ 4).
pub mod arg {
    pub const Z: usize = 0;
    pub const U: usize = 1;
    pub const H0: usize = 2;
    pub const H1: usize = 3;
    pub const C: usize = 4;
    pub const OUT: usize = 5;
    pub const A: usize = 6;
    pub const HP: usize = 7;
    pub const CP: usize = 8;
    pub const CN: usize = 9;
    pub const EX: usize = 10;
    pub const MASK: usize = 11;
    pub const HKEEP: usize = 12;
    pub const BR: usize = 13;
    pub const HS: usize = 14;
    pub const V: usize = 15;
    pub const NB: usize = 16;
    pub const T: usize = 17;
    pub const R: usize = 18;
    pub const LEN: usize = 19;
}

/// The step being generated: its index `k` in processing order and time step `t`, the
/// current and next state buffers.
#[derive(Clone, Copy)]
struct Step {
    k: Value,
    t: Value,
    hcur: Value,
    hnext: Value,
}

/// One row's pointers for this step (byte addresses of the row's first unit).
#[derive(Clone, Copy)]
struct Row {
    i: Value,
    z: Value,
    a: Value,
    hold: Value,
    hnew: Value,
    c: Value,
    out: Value,
    /// Trace rows (`hp`, `cp`, `cn`, `ex`), when kept.
    tr: Option<[Value; 4]>,
    /// The step's mask value (f32), when masked.
    mask: Option<Value>,
    /// Per gate, where the product's left operand row starts.
    lhs: [Value; 4],
}

/// The spec and the argument table's values (loaded once at entry); the forward's
/// and back-propagation's generators share it.
pub(super) struct Cx<'s> {
    pub(super) spec: &'s CellSpec,
    pub(super) a: Vec<Value>,
}

impl std::ops::Deref for Cx<'_> {
    type Target = CellSpec;
    fn deref(&self) -> &CellSpec {
        self.spec
    }
}

/// What a column block's product gave: per row, per gate, the accumulator.
type Accs = Vec<Vec<Value>>;

impl<'g> Gen<'g> {
    pub(super) fn imm(&mut self, v: i64) -> Value {
        self.b.ins().iconst(types::I64, v)
    }
    pub(super) fn math(&mut self, ty: Type) -> Math<'_, 'g> {
        let fma = self.fma;
        Math {
            b: &mut self.b,
            ty,
            fma,
        }
    }

    /// The whole function body for `s`.
    pub fn emit_rnn_forward(&mut self, spec: &CellSpec) {
        let a = (0..arg::LEN).map(|i| self.slot(i)).collect();
        let s = &Cx { spec, a };
        let (nb, tt) = (s.a[arg::NB], s.a[arg::T]);
        let hcur = self.b.declare_var(self.ptr);
        let hnext = self.b.declare_var(self.ptr);
        let (h0, h1) = (s.a[arg::H0], s.a[arg::H1]);
        self.b.def_var(hcur, h0);
        self.b.def_var(hnext, h1);
        let rows = s.rows();
        self.counted_loop(tt, 1, |g, k| {
            let t = if s.go_backwards {
                let last = g.b.ins().iadd_imm_s(tt, -1);
                g.b.ins().isub(last, k)
            } else {
                k
            };
            let st = Step {
                k,
                t,
                hcur: g.b.use_var(hcur),
                hnext: g.b.use_var(hnext),
            };
            let var = g.counted_loop(nb, rows, |g, i| g.rnn_rows(s, st, i, rows as usize));
            g.tail_loop(var, nb, |g, i| g.rnn_rows(s, st, i, 1));
            g.b.def_var(hcur, st.hnext);
            g.b.def_var(hnext, st.hcur);
        });
        self.b.ins().return_(&[]);
    }

    /// `base + (i·T + t)·w` floats, as a byte address (`tt` is `T`).
    pub(super) fn at_step(
        &mut self,
        tt: Value,
        base: Value,
        i: Value,
        t: Value,
        w: usize,
    ) -> Value {
        let r = self.b.ins().imul(i, tt);
        let r = self.b.ins().iadd(r, t);
        self.offset(base, r, w)
    }
    /// `base + r·w` floats, as a byte address.
    pub(super) fn offset(&mut self, base: Value, r: Value, w: usize) -> Value {
        let o = self.b.ins().imul_imm_s(r, 4 * w as i64);
        self.b.ins().iadd(base, o)
    }

    /// The pointers of slice row `i` for this step (and, with recurrent dropout, `h`
    /// times each gate's keep mask into its scratch row `slot`).
    fn row(&mut self, s: &Cx, st: Step, i: Value, slot: usize) -> Row {
        let (u, g) = (s.units, s.gates());
        let n = g * u;
        let z = s.a[arg::Z];
        let z = self.at_step(s.a[arg::T], z, i, st.t, n);
        let a = s.a[arg::A];
        let a = if s.trace {
            self.at_step(s.a[arg::T], a, i, st.t, n)
        } else {
            self.offset(a, i, n)
        };
        let hold = self.offset(st.hcur, i, u);
        let hnew = self.offset(st.hnext, i, u);
        let c = s.a[arg::C];
        let c = self.offset(c, i, u);
        let out = s.a[arg::OUT];
        let out = if s.return_sequences {
            self.at_step(s.a[arg::T], out, i, st.k, u)
        } else {
            self.offset(out, i, u)
        };
        let tr = if s.trace {
            let mut v = [hold; 4];
            for (o, slot) in v.iter_mut().zip([arg::HP, arg::CP, arg::CN, arg::EX]) {
                let base = s.a[slot];
                *o = self.at_step(s.a[arg::T], base, i, st.t, u);
            }
            Some(v)
        } else {
            None
        };
        let mask = if s.masked {
            let m = s.a[arg::MASK];
            let p = self.at_step(s.a[arg::T], m, i, st.t, 1);
            Some(self.b.ins().load(types::F32, flags(), p, 0))
        } else {
            None
        };
        let mut lhs = [hold; 4];
        if s.hkeep {
            let keep = s.a[arg::HKEEP];
            let keep = self.offset(keep, i, g * u);
            let hs = s.a[arg::HS];
            let scaled = if s.kind == CellKind::GruBefore { 2 } else { g };
            for (gate, l) in lhs.iter_mut().enumerate().take(scaled) {
                let dst = self
                    .b
                    .ins()
                    .iadd_imm_s(hs, (4 * (slot * g + gate) * u) as i64);
                let kp = self.b.ins().iadd_imm_s(keep, (4 * gate * u) as i64);
                self.scale_row(dst, hold, kp, u);
                *l = dst;
            }
        }
        Row {
            i,
            z,
            a,
            hold,
            hnew,
            c,
            out,
            tr,
            mask,
            lhs,
        }
    }

    /// `dst[q] = x[q] · k[q]` for `q < u` (byte addresses).
    fn scale_row(&mut self, dst: Value, x: Value, k: Value, u: usize) {
        let un = self.imm(u as i64);
        self.counted_loop(un, 1, |g, q| {
            let o = g.b.ins().ishl_imm_u(q, 2);
            let xp = g.b.ins().iadd(x, o);
            let kp = g.b.ins().iadd(k, o);
            let xv = g.b.ins().load(types::F32, flags(), xp, 0);
            let kv = g.b.ins().load(types::F32, flags(), kp, 0);
            let v = g.b.ins().fmul(xv, kv);
            let dp = g.b.ins().iadd(dst, o);
            g.b.ins().store(flags(), v, dp, 0);
        });
    }

    /// `rows` slice rows from `i0` through this step.
    fn rnn_rows(&mut self, s: &Cx, st: Step, i0: Value, rows: usize) {
        let rs: Vec<Row> = (0..rows)
            .map(|r| {
                let i = self.b.ins().iadd_imm_s(i0, r as i64);
                self.row(s, st, i, r)
            })
            .collect();
        let g = s.gates();
        if s.kind == CellKind::GruBefore {
            self.unit_blocks(s, &rs, 0..2, &|gg, rs, j, ty, accs| {
                gg.gru_gates(s, rs, j, ty, accs)
            });
            // The candidate's product reads `v = r ⊙ h ⊙ keep` (the gates' pass).
            let v = s.a[arg::V];
            let rs2: Vec<Row> = rs
                .iter()
                .map(|r| {
                    let lhs = self.offset(v, r.i, s.units);
                    Row {
                        lhs: [lhs; 4],
                        ..*r
                    }
                })
                .collect();
            self.unit_blocks(s, &rs2, 2..3, &|gg, rs, j, ty, accs| {
                gg.gru_candidate(s, rs, j, ty, accs)
            });
        } else {
            self.unit_blocks(s, &rs, 0..g, &|gg, rs, j, ty, accs| {
                gg.cell_epilogue(s, rs, j, ty, accs)
            });
        }
    }

    /// The rows' recurrent products for `gates` into `R`, then, per block of four
    /// units (then each last unit alone), `epi` on them read back. The products run
    /// first over whole cache lines of `U` (sixteen columns, four f32x4 accumulators
    /// per row; then four, then single columns) when every gate shares the rows' left
    /// operand, else per block of units with one accumulator per gate. Keeping the
    /// products' loop nest apart keeps it free of the epilogue's register pressure.
    #[allow(clippy::type_complexity)]
    fn unit_blocks(
        &mut self,
        s: &Cx,
        rs: &[Row],
        gates: std::ops::Range<usize>,
        epi: &dyn Fn(&mut Self, &[Row], Value, Type, &Accs),
    ) {
        let u = s.units;
        let n = s.gates() * u;
        let rb = s.a[arg::R];
        let store = |gg: &mut Self, j: Value, offs: &[(usize, usize)], accs: &Accs| {
            let jb = gg.b.ins().ishl_imm_u(j, 2);
            for (r, acc) in accs.iter().enumerate() {
                for (x, &(off, _)) in offs.iter().enumerate() {
                    gg.store_at(acc[x], rb, jb, r * n + off);
                }
            }
        };
        let full = (u / 4 * 4) as i64;
        if s.hkeep {
            let offs: Vec<(usize, usize)> = gates.clone().map(|g| (g * u, g)).collect();
            self.blocks(0, full, 4, |gg, j| {
                let accs = gg.product(s, rs, &offs, j, types::F32X4);
                store(gg, j, &offs, &accs);
            });
            self.blocks(full, u as i64, 1, |gg, j| {
                let accs = gg.product(s, rs, &offs, j, types::F32);
                store(gg, j, &offs, &accs);
            });
        } else {
            let (c0, c1) = ((gates.start * u) as i64, (gates.end * u) as i64);
            let w16 = c0 + (c1 - c0) / 16 * 16;
            let w4 = w16 + (c1 - w16) / 4 * 4;
            for (lo, hi, step, vecs, ty) in [
                (c0, w16, 16, 4, types::F32X4),
                (w16, w4, 4, 1, types::F32X4),
                (w4, c1, 1, 1, types::F32),
            ] {
                let offs: Vec<(usize, usize)> = (0..vecs).map(|v| (4 * v, 0)).collect();
                self.blocks(lo, hi, step, |gg, j| {
                    let accs = gg.product(s, rs, &offs, j, ty);
                    store(gg, j, &offs, &accs);
                });
            }
        }
        for (lo, hi, step, ty) in [(0, full, 4, types::F32X4), (full, u as i64, 1, types::F32)] {
            self.blocks(lo, hi, step, |gg, j| {
                let jb = gg.b.ins().ishl_imm_u(j, 2);
                let accs: Accs = (0..rs.len())
                    .map(|r| {
                        gates
                            .clone()
                            .map(|gate| gg.load_at(rb, jb, r * n + gate * u, ty))
                            .collect()
                    })
                    .collect();
                epi(gg, rs, j, ty, &accs);
            });
        }
    }

    /// `for j in (lo..hi).step_by(step)` (nothing when empty).
    pub(super) fn blocks(
        &mut self,
        lo: i64,
        hi: i64,
        step: i64,
        body: impl FnOnce(&mut Self, Value),
    ) {
        if lo < hi {
            let (lo, hi) = (self.imm(lo), self.imm(hi));
            self.counted_loop_from(lo, hi, step, body);
        }
    }

    /// `Σ_q lhs[r][which][q] · U[q, j + off]` for each row and each `(off, which)`, in
    /// order of `q` from zero (as the Rust kernel sums).
    fn product(&mut self, s: &Cx, rs: &[Row], offs: &[(usize, usize)], j: Value, ty: Type) -> Accs {
        let (u, n) = (s.units, s.gates() * s.units);
        let zero = self.b.ins().f32const(0.0);
        let zero = if ty == types::F32 {
            zero
        } else {
            self.b.ins().splat(ty, zero)
        };
        let acc: Vec<Vec<Variable>> = rs
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
        let ub = s.a[arg::U];
        let jb = self.b.ins().ishl_imm_u(j, 2);
        let b0 = self.b.ins().iadd(ub, jb);
        let bp = self.b.declare_var(self.ptr);
        self.b.def_var(bp, b0);
        // One pointer per row and left operand, advanced along `q`.
        let mut whiches: Vec<usize> = offs.iter().map(|o| o.1).collect();
        whiches.dedup();
        let ptr = self.ptr;
        let aps: Vec<Vec<Variable>> = rs
            .iter()
            .map(|row| {
                whiches
                    .iter()
                    .map(|&w| {
                        let v = self.b.declare_var(ptr);
                        self.b.def_var(v, row.lhs[w]);
                        v
                    })
                    .collect()
            })
            .collect();
        let un = self.imm(u as i64);
        let fma = self.fma;
        self.counted_loop(un, 1, |gg, _| {
            let bptr = gg.b.use_var(bp);
            let bv: Vec<Value> = offs
                .iter()
                .map(|&(off, _)| gg.b.ins().load(ty, flags(), bptr, (4 * off) as i32))
                .collect();
            for (r, ap) in aps.iter().enumerate() {
                let mut av: Option<(usize, Value)> = None;
                for (x, &(_, which)) in offs.iter().enumerate() {
                    let a = match av {
                        Some((w, a)) if w == which => a,
                        _ => {
                            let slot = ap[whiches.iter().position(|&w| w == which).unwrap_or(0)];
                            let p = gg.b.use_var(slot);
                            let a = gg.b.ins().load(types::F32, flags(), p, 0);
                            let next = gg.b.ins().iadd_imm_s(p, 4);
                            gg.b.def_var(slot, next);
                            let a = if ty == types::F32 {
                                a
                            } else {
                                gg.b.ins().splat(ty, a)
                            };
                            av = Some((which, a));
                            a
                        }
                    };
                    let old = gg.b.use_var(acc[r][x]);
                    let new = if fma {
                        gg.b.ins().fma(a, bv[x], old)
                    } else {
                        let m = gg.b.ins().fmul(a, bv[x]);
                        gg.b.ins().fadd(m, old)
                    };
                    gg.b.def_var(acc[r][x], new);
                }
            }
            let next = gg.b.ins().iadd_imm_s(bptr, (4 * n) as i64);
            gg.b.def_var(bp, next);
        });
        acc.iter()
            .map(|r| r.iter().map(|&v| self.b.use_var(v)).collect())
            .collect()
    }

    pub(super) fn load_at(&mut self, base: Value, jb: Value, off: usize, ty: Type) -> Value {
        let p = self.b.ins().iadd(base, jb);
        self.b.ins().load(ty, flags(), p, (4 * off) as i32)
    }
    pub(super) fn store_at(&mut self, v: Value, base: Value, jb: Value, off: usize) {
        let p = self.b.ins().iadd(base, jb);
        self.b.ins().store(flags(), v, p, (4 * off) as i32);
    }
    fn act(&mut self, a: CellAct, x: Value, ty: Type) -> Value {
        let mut m = self.math(ty);
        match a {
            CellAct::Tanh => m.tanh(x),
            CellAct::Sigmoid => m.sigmoid(x),
        }
    }

    /// Simple, LSTM and GRU (reset_after): pre-activations, activations, new state.
    fn cell_epilogue(&mut self, s: &Cx, rs: &[Row], j: Value, ty: Type, accs: &Accs) {
        let u = s.units;
        let jb = self.b.ins().ishl_imm_u(j, 2);
        for (row, acc) in rs.iter().zip(accs) {
            let hold = self.load_at(row.hold, jb, 0, ty);
            let (hn, lstm) = match s.kind {
                CellKind::Simple => {
                    let z = self.load_at(row.z, jb, 0, ty);
                    let z = self.b.ins().fadd(z, acc[0]);
                    self.store_at(z, row.z, jb, 0);
                    let a = self.act(s.act, z, ty);
                    self.store_at(a, row.a, jb, 0);
                    (a, None)
                }
                CellKind::Lstm => {
                    let mut a = [hold; 4];
                    for (gate, a) in a.iter_mut().enumerate() {
                        let z = self.load_at(row.z, jb, gate * u, ty);
                        let z = self.b.ins().fadd(z, acc[gate]);
                        self.store_at(z, row.z, jb, gate * u);
                        let f = if gate == 2 { s.act } else { s.ract };
                        *a = self.act(f, z, ty);
                        self.store_at(*a, row.a, jb, gate * u);
                    }
                    let c = self.load_at(row.c, jb, 0, ty);
                    let ig = self.b.ins().fmul(a[0], a[2]);
                    let cn = self.math(ty).mul_add(a[1], c, ig);
                    let ex = self.act(s.act, cn, ty);
                    let hn = self.b.ins().fmul(a[3], ex);
                    (hn, Some((c, cn, ex)))
                }
                CellKind::GruAfter | CellKind::GruBefore => {
                    let br = s.a[arg::BR];
                    let mut a = [hold; 2];
                    for (gate, a) in a.iter_mut().enumerate() {
                        let z = self.load_at(row.z, jb, gate * u, ty);
                        let b = self.load_at(br, jb, gate * u, ty);
                        let rb = self.b.ins().fadd(acc[gate], b);
                        let z = self.b.ins().fadd(z, rb);
                        self.store_at(z, row.z, jb, gate * u);
                        *a = self.act(s.ract, z, ty);
                        self.store_at(*a, row.a, jb, gate * u);
                    }
                    let b = self.load_at(br, jb, 2 * u, ty);
                    let ex = self.b.ins().fadd(acc[2], b);
                    let zh = self.load_at(row.z, jb, 2 * u, ty);
                    let zh = self.math(ty).mul_add(a[1], ex, zh);
                    self.store_at(zh, row.z, jb, 2 * u);
                    let hn = self.gru_out(s, row, jb, (a[0], zh, hold), ty);
                    if let Some(tr) = row.tr {
                        self.store_at(ex, tr[3], jb, 0);
                    }
                    (hn, None)
                }
            };
            self.finish(s, row, jb, (hold, hn), lstm, ty);
        }
    }

    /// GRU's candidate activation (stored) and new output, `zg·(h − ĥ) + ĥ`.
    fn gru_out(
        &mut self,
        s: &Cx,
        row: &Row,
        jb: Value,
        (zg, zh, hold): (Value, Value, Value),
        ty: Type,
    ) -> Value {
        let hh = self.act(s.act, zh, ty);
        self.store_at(hh, row.a, jb, 2 * s.units);
        let d = self.b.ins().fsub(hold, hh);
        self.math(ty).mul_add(zg, d, hh)
    }

    /// GRU without reset_after, first pass: the update and reset gates, and
    /// `v = r ⊙ h (⊙ keep_h)` for the candidate's product.
    fn gru_gates(&mut self, s: &Cx, rs: &[Row], j: Value, ty: Type, accs: &Accs) {
        let u = s.units;
        let jb = self.b.ins().ishl_imm_u(j, 2);
        let v = s.a[arg::V];
        for (row, acc) in rs.iter().zip(accs) {
            let mut rg = None;
            for (gate, &acc) in acc.iter().enumerate() {
                let z = self.load_at(row.z, jb, gate * u, ty);
                let z = self.b.ins().fadd(z, acc);
                self.store_at(z, row.z, jb, gate * u);
                let a = self.act(s.ract, z, ty);
                self.store_at(a, row.a, jb, gate * u);
                rg = Some(a);
            }
            let hold = self.load_at(row.hold, jb, 0, ty);
            let mut x = self.b.ins().fmul(rg.expect("two gates"), hold);
            if s.hkeep {
                let keep = s.a[arg::HKEEP];
                let keep = self.offset(keep, row.i, 3 * u);
                let k = self.load_at(keep, jb, 2 * u, ty);
                x = self.b.ins().fmul(x, k);
            }
            let vr = self.offset(v, row.i, u);
            self.store_at(x, vr, jb, 0);
        }
    }

    /// GRU without reset_after, second pass: the candidate and the new state.
    fn gru_candidate(&mut self, s: &Cx, rs: &[Row], j: Value, ty: Type, accs: &Accs) {
        let u = s.units;
        let jb = self.b.ins().ishl_imm_u(j, 2);
        for (row, acc) in rs.iter().zip(accs) {
            let z = self.load_at(row.z, jb, 2 * u, ty);
            let z = self.b.ins().fadd(z, acc[0]);
            self.store_at(z, row.z, jb, 2 * u);
            let zg = self.load_at(row.a, jb, 0, ty);
            let hold = self.load_at(row.hold, jb, 0, ty);
            let hn = self.gru_out(s, row, jb, (zg, z, hold), ty);
            self.finish(s, row, jb, (hold, hn), None, ty);
        }
    }

    /// The trace, Keras's mask, the new state and the output for one row's units.
    fn finish(
        &mut self,
        s: &Cx,
        row: &Row,
        jb: Value,
        (hold, hn): (Value, Value),
        lstm: Option<(Value, Value, Value)>,
        ty: Type,
    ) {
        if let Some(tr) = row.tr {
            self.store_at(hold, tr[0], jb, 0);
            if let Some((c, cn, ex)) = lstm {
                self.store_at(c, tr[1], jb, 0);
                self.store_at(cn, tr[2], jb, 0);
                self.store_at(ex, tr[3], jb, 0);
            }
        }
        let (h, c, out) = match row.mask {
            None => (hn, lstm.map(|l| l.1), hn),
            Some(m) => {
                let mut mm = self.math(ty);
                let m = if ty == types::F32 {
                    m
                } else {
                    mm.b.ins().splat(ty, m)
                };
                let zero = mm.c(0.0);
                let valid = mm.mask(FloatCC::NotEqual, m, zero);
                let h = mm.pick(valid, hn, hold);
                let c = lstm.map(|(c, cn, _)| mm.pick(valid, cn, c));
                let other = if s.zero_output { zero } else { hold };
                let out = mm.pick(valid, hn, other);
                (h, c, out)
            }
        };
        self.store_at(h, row.hnew, jb, 0);
        if let Some(c) = c {
            self.store_at(c, row.c, jb, 0);
        }
        self.store_at(out, row.out, jb, 0);
    }
}
