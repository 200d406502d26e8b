//! Loop kernels as loop nests: the outer axes as counted loops, the inner axis in
//! f32x4 lanes (unrolled) with a scalar tail, values hoisted to the level where they
//! change, reductions accumulated in registers along the inner axis.

use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::Variable;

use super::expr::combine;
use super::{Gen, UNROLL, flags};
use crate::ir::{Binary, ReduceOp};
use crate::jit::plan::{Access, Epilogue, Expr, LoopKernel, Sink};
use columns::column_width;

mod columns;

/// What every row of a loop nest shares: the kernel, its extents, the accesses
/// (loads, then the sink) and their base pointers, how often each expression node
/// changes (`levels`) and the kernel-invariant values.
struct Nest<'x> {
    k: &'x LoopKernel,
    extents: Vec<Value>,
    bases: Vec<Value>,
    accesses: Vec<Access>,
    levels: Vec<u8>,
    scalar: Vec<Option<Value>>,
}

/// One row of a nest (the inner axis at outer indices `idx`): the accesses' row
/// pointers, the row-invariant values, the inner extent, and for a reduction along the
/// inner axis its operation and scalar accumulator.
struct Row<'x> {
    nest: &'x Nest<'x>,
    idx: &'x [Value],
    row: Vec<Value>,
    scalar: Vec<Option<Value>>,
    n: Value,
    inner: usize,
    sink_idx: usize,
    reduce_inner: bool,
    op: Option<ReduceOp>,
    acc_var: Variable,
}

impl Gen<'_> {
    /// The loop nest itself (over `self.range` of the outermost axis when set).
    pub(super) fn emit_loop_nest(&mut self, k: &LoopKernel) {
        let rank = k.space.len();
        let extents: Vec<Value> = k.space.iter().map(|&s| self.slot(s)).collect();
        let sink_access = k.sink_access().clone();
        // Bases (element pointers at offset) for every access.
        let mut accesses: Vec<Access> = k.loads.clone();
        accesses.push(sink_access.clone());
        accesses.extend(k.also.iter().map(|s| s.access.clone()));
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
            let mut vals = scalar.clone();
            let v = self.expr_all(k, &mut vals, &[], None, &bases, false);
            let sink_idx = k.loads.len();
            self.sink_scalar(&k.sink, bases[sink_idx], v);
            self.also_stores(k, &vals, &bases[sink_idx + 1..]);
            return;
        }
        let nest = Nest {
            k,
            extents,
            bases,
            accesses,
            levels,
            scalar,
        };
        match column_width(k) {
            Some(w) => self.columns_or_rows(&nest, w),
            None => self.outer(&nest, 0, Vec::new()),
        }
    }

    /// Emits loops over the outer axes, then the inner axis.
    fn outer(&mut self, nest: &Nest, axis: usize, idx: Vec<Value>) {
        let rank = nest.k.space.len();
        if axis + 1 < rank {
            let n = nest.extents[axis];
            let (start, n) = match (axis, self.range) {
                (0, Some((lo, hi))) => (lo, hi),
                _ => (self.b.ins().iconst(types::I64, 0), n),
            };
            self.counted_loop_from(start, n, 1, |g, i| {
                let mut idx = idx.clone();
                idx.push(i);
                g.outer(nest, axis + 1, idx);
            });
            return;
        }
        self.inner_row(nest, &idx);
    }

    /// Row pointers: each access's base + Σ idx_d * stride_d over the outer axes.
    fn row_bases(&mut self, nest: &Nest, idx: &[Value]) -> Vec<Value> {
        let mut row: Vec<Value> = Vec::new();
        for (a, &base) in nest.accesses.iter().zip(&nest.bases) {
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
        row
    }

    /// The inner axis at the outer indices `idx`: the vector loop when every access
    /// moves by 0 or 1 along it, the scalar tail, then a reduction's finished element
    /// (and its epilogue).
    fn inner_row(&mut self, nest: &Nest, idx: &[Value]) {
        let k = nest.k;
        let row = self.row_bases(nest, idx);
        let inner = k.space.len() - 1;
        let n = nest.extents[inner];
        let sink_idx = k.loads.len();
        let vectorizable = nest
            .accesses
            .iter()
            .all(|a| matches!(a.known[inner], Some(0) | Some(1)));
        // Row-invariant scalars (level ≤ 1).
        let mut scalar = nest.scalar.clone();
        for (e, &lvl) in nest.levels.iter().enumerate() {
            if lvl == 1 {
                let v = self.expr_scalar(&k.expr[e], &scalar, idx, &[], &row);
                scalar[e] = Some(v);
            }
        }
        let reduce_inner =
            matches!(k.sink, Sink::Reduce(..)) && nest.accesses[sink_idx].known[inner] == Some(0);
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
        let r = Row {
            nest,
            idx,
            row,
            scalar,
            n,
            inner,
            sink_idx,
            reduce_inner,
            op,
            acc_var,
        };
        let var = if vectorizable {
            self.vector_loop(&r, ident)
        } else {
            let var = self.b.declare_var(types::I64);
            let zero = self.b.ins().iconst(types::I64, 0);
            self.b.def_var(var, zero);
            var
        };
        self.scalar_tail(&r, var);
        if reduce_inner {
            let p = r.row[sink_idx];
            let old = self.b.ins().load(types::F32, flags(), p, 0);
            let a = self.b.use_var(acc_var);
            let v = combine(&mut self.b, op.unwrap_or(ReduceOp::Sum), old, a);
            self.b.ins().store(flags(), v, p, 0);
            if let Some(e) = &k.epilogue {
                // The row's element is final: the fused epilogue stores its value.
                self.reduce_epilogue(e, idx, v);
            }
        }
    }

    /// The vector loop over the row, `4 * UNROLL` elements a step; returns the index
    /// variable where the scalar tail continues. A reduction along the inner axis
    /// accumulates in a vector, combined into the scalar accumulator at the end.
    fn vector_loop(&mut self, r: &Row, ident: Value) -> Variable {
        let (k, levels) = (r.nest.k, &r.nest.levels);
        let (sink_idx, reduce_inner, idx) = (r.sink_idx, r.reduce_inner, r.idx);
        // One vector accumulator per unrolled step: the adds of a row reduction form
        // independent chains instead of one chain of the add's latency.
        let vid = self.b.ins().splat(types::F32X4, ident);
        let vaccs: Vec<Variable> = (0..UNROLL)
            .map(|_| {
                let v = self.b.declare_var(types::F32X4);
                self.b.def_var(v, vid);
                v
            })
            .collect();
        // Splat the row-invariant values once.
        let mut vecs: Vec<Option<Value>> = vec![None; k.expr.len()];
        for (e, &lvl) in levels.iter().enumerate() {
            if lvl <= 1 {
                let s = r.scalar[e].expect("invariant computed");
                vecs[e] = Some(self.b.ins().splat(types::F32X4, s));
            }
        }
        let row2 = r.row.clone();
        let var = self.counted_loop(r.n, 4 * UNROLL, |g, i| {
            for u in 0..UNROLL {
                let j = g.b.ins().iadd_imm_s(i, 4 * u);
                let mut vals = vecs.clone();
                let term = g.fused_term(k, &mut vals, types::F32X4);
                let v = g.expr_all(k, &mut vals, idx, Some(j), &row2, true);
                let term = term.map(|(x, y)| (vals[x].expect("x"), vals[y].expect("y")));
                let addr = |g: &mut Self, a: usize| {
                    let off = g.b.ins().ishl_imm_u(j, 2);
                    g.b.ins().iadd(row2[a], off)
                };
                match (&k.sink, reduce_inner) {
                    (Sink::Store(_), _) => {
                        let p = addr(g, sink_idx);
                        g.b.ins().store(flags(), v, p, 0);
                        let ps: Vec<Value> = (0..k.also.len())
                            .map(|t| addr(g, sink_idx + 1 + t))
                            .collect();
                        g.also_stores(k, &vals, &ps);
                    }
                    (Sink::Reduce(op, _), true) => {
                        let a = g.b.use_var(vaccs[u as usize]);
                        let r = g.accumulate(*op, a, v, term);
                        g.b.def_var(vaccs[u as usize], r);
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
            // The accumulators combined lane for lane, then horizontally into the
            // scalar one.
            let op = r.op.unwrap_or(ReduceOp::Sum);
            let mut v = self.b.use_var(vaccs[0]);
            for &a in &vaccs[1..] {
                let a = self.b.use_var(a);
                v = combine(&mut self.b, op, v, a);
            }
            let mut s = self.b.use_var(r.acc_var);
            for lane in 0..4u8 {
                let x = self.b.ins().extractlane(v, lane);
                s = combine(&mut self.b, r.op.unwrap_or(ReduceOp::Sum), s, x);
            }
            self.b.def_var(r.acc_var, s);
        }
        var
    }

    /// The scalar tail from `var` to the row's end (the whole row when not
    /// vectorizable), one element a step.
    fn scalar_tail(&mut self, r: &Row, var: Variable) {
        let (k, levels) = (r.nest.k, &r.nest.levels);
        let (sink_idx, reduce_inner, idx) = (r.sink_idx, r.reduce_inner, r.idx);
        let row2 = r.row.clone();
        let strides: Vec<Value> = r
            .nest
            .accesses
            .iter()
            .map(|a| self.stride(a, r.inner))
            .collect();
        self.tail_loop(var, r.n, |g, i| {
            let mut vals = r.scalar.clone();
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
            let v = g.expr_tail(k, &mut vals, idx, i, &ptrs);
            let term = term.map(|(x, y)| (vals[x].expect("x"), vals[y].expect("y")));
            match (&k.sink, reduce_inner) {
                (Sink::Store(_), _) => {
                    g.b.ins().store(flags(), v, ptrs[sink_idx], 0);
                    g.also_stores(k, &vals, &ptrs[sink_idx + 1..]);
                }
                (Sink::Reduce(op, _), true) => {
                    let a = g.b.use_var(r.acc_var);
                    let v = g.accumulate(*op, a, v, term);
                    g.b.def_var(r.acc_var, v);
                }
                (Sink::Reduce(op, _), false) => {
                    let old = g.b.ins().load(types::F32, flags(), ptrs[sink_idx], 0);
                    let v = g.accumulate(*op, old, v, term);
                    g.b.ins().store(flags(), v, ptrs[sink_idx], 0);
                }
            }
        });
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

    /// The extra stores of a merged nest (`LoopKernel::also`): each one's value, already
    /// computed in `vals` (all loads of the element come before any of its stores), at
    /// its pointer in `ptrs`.
    fn also_stores(&mut self, k: &LoopKernel, vals: &[Option<Value>], ptrs: &[Value]) {
        for (s, &p) in k.also.iter().zip(ptrs) {
            let v = vals[s.node].expect("stored value computed");
            self.b.ins().store(flags(), v, p, 0);
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
