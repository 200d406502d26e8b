//! Layer normalization as one kernel: the chain the layer's lowering builds over the
//! last axis — `mean = Σx / n`, `d = x − mean`, `inv = rsqrt(Σd² / n + ε)`,
//! `y = (d or x)·inv [· gamma] [+ beta]` — recognized at its first sum and planned as one
//! row-at-a-time kernel (`jit::norm`) instead of three loop nests. A value of the chain
//! that other nodes read (the training step's backward pass reads the centred input,
//! the inverse deviation and the normalized input) is stored by the kernel as well.

use super::*;
use crate::ir::passes::const_of;
use crate::types::DType;

/// Layer normalization over the last axis of `[rows…, n]`, one row at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct NormKernel {
    /// The chain's first and last IR nodes (for printing).
    pub nodes: [Id; 2],
    /// The input, contiguous along its last axis.
    pub x: Access,
    /// The extents of the row axes, and of the normalized axis.
    pub rows: Vec<Slot>,
    pub n: Slot,
    pub eps: f32,
    /// Keras's `rms_scaling`: `x`, not `x − mean`, times the inverse deviation.
    pub rms: bool,
    /// The `[n]` weights (contiguous).
    pub gamma: Option<Access>,
    pub beta: Option<Access>,
    /// The result, `[rows…, n]`, contiguous.
    pub out: Access,
    /// The chain's values other kernels read, each stored contiguous.
    pub stores: Vec<(NormPart, Access)>,
}

/// A value inside the normalization chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormPart {
    /// `Σx / n`, per row.
    Mean,
    /// `x − mean`.
    Centred,
    /// `rsqrt(Σd² / n + ε)`, per row.
    Inv,
    /// `(d or x)·inv`.
    Normalized,
    /// The normalized value times gamma (before beta).
    Scaled,
}

/// The nodes of one chain (see the module's documentation).
struct Chain {
    x: Id,
    /// The mean and the inverse deviation broadcast over the row (other nodes may read
    /// them: then they are views of the stored per-row values).
    mb: Id,
    ib: Id,
    n: i64,
    eps: f32,
    rms: bool,
    gamma: Option<(Id, Id)>,
    beta: Option<(Id, Id)>,
    /// Every node the kernel computes, first to last; with the part each one is, for
    /// those other nodes may read.
    inside: Vec<(Id, Option<NormPart>)>,
}

impl Builder<'_> {
    /// Plans the normalization chain starting at the sum `s1` as one kernel; `None`
    /// (and nothing planned) when `s1` starts none.
    pub(super) fn norm(&mut self, s1: Id) -> Option<Val> {
        let c = self.norm_chain(s1)?;
        let f = self.f;
        let ids: Vec<Id> = c.inside.iter().map(|p| p.0).collect();
        // Only the parts may be read from outside the chain (and the result).
        let last = *ids.last()?;
        let read: Vec<bool> = (c.inside.iter())
            .map(|&(id, _)| {
                let outside = self.users()[id].iter().any(|u| !ids.contains(u));
                id != last && (outside || self.is_output[id])
            })
            .collect();
        let read_of = |id: Id| ids.iter().position(|&i| i == id).is_some_and(|k| read[k]);
        for (&(id, part), &r) in c.inside.iter().zip(&read) {
            if r && part.is_none() && id != c.mb && id != c.ib {
                return None;
            }
        }
        let x = self.mem(c.x);
        let rank = f.nodes[c.x].ty.shape.len();
        if x.known[rank - 1] != Some(1) {
            return None;
        }
        let weight = |b: &mut Self, w: Option<(Id, Id)>| -> Option<Option<Access>> {
            let Some((_, p)) = w else {
                return Some(None);
            };
            let a = b.mem(p);
            (a.known == [Some(1)]).then_some(Some(a))
        };
        let gamma = weight(self, c.gamma)?;
        let beta = weight(self, c.beta)?;
        let shape = f.nodes[c.x].ty.shape.clone();
        let mut stores = Vec::new();
        for (&(id, part), &r) in c.inside.iter().zip(&read) {
            let Some(part) = part else { continue };
            let view = match part {
                NormPart::Mean => Some(c.mb).filter(|&v| read_of(v)),
                NormPart::Inv => Some(c.ib).filter(|&v| read_of(v)),
                _ => None,
            };
            if !r && view.is_none() {
                continue;
            }
            let s = f.nodes[id].ty.shape.clone();
            let buf = self.new_arena(&s);
            let a = self.contiguous(buf, &s);
            self.vals[id] = Some(Val::Mem(a.clone()));
            if let Some(v) = view {
                // `[rows…]` seen as `[rows…, n]` with stride 0 along the row.
                let mut strides = row_major(&s);
                strides.push(Dim::konst(0));
                let va = self.access(buf, &Dim::konst(0), &strides);
                self.vals[v] = Some(Val::Mem(va));
            }
            stores.push((part, a));
        }
        let buf = self.new_arena(&shape);
        let out = self.contiguous(buf, &shape);
        self.vals[last] = Some(Val::Mem(out.clone()));
        let rows = self.shape_slots(&shape[..rank - 1]);
        let n = self.slot(&Dim::konst(c.n));
        self.kernels.push(Kernel::Norm(NormKernel {
            nodes: [s1, last],
            x,
            rows,
            n,
            eps: c.eps,
            rms: c.rms,
            gamma,
            beta,
            out,
            stores,
        }));
        for &id in &ids {
            self.attn_done[id] = true;
        }
        for (b, _) in [c.gamma, c.beta].into_iter().flatten() {
            if self.users()[b].iter().all(|u| ids.contains(u)) && !self.is_output[b] {
                self.attn_done[b] = true;
            }
        }
        Some(Val::Inline)
    }

    /// The chain starting at `s1`, if it is one (see the module's documentation).
    fn norm_chain(&mut self, s1: Id) -> Option<Chain> {
        use Binary::{Add, Div, Mul, Sub};
        let f = self.f;
        let Op::Reduce {
            op: ReduceOp::Sum,
            axes,
        } = &f.nodes[s1].op
        else {
            return None;
        };
        let x = f.nodes[s1].args[0];
        let xt = &f.nodes[x].ty;
        let rank = xt.shape.len();
        if rank < 2 || *axes != [rank - 1] || xt.dtype != DType::F32 {
            return None;
        }
        let n = xt.shape[rank - 1].as_const().filter(|&n| n > 0)?;
        let outer: Vec<usize> = (0..rank - 1).collect();
        let is = |op: Binary| move |u: &crate::ir::Node| u.op == Op::Binary(op);
        let bcast = |dims: &[usize], u: &crate::ir::Node| matches!(&u.op, Op::Broadcast { dims: d } if d == dims);
        let by_n = |u: Id, num: Id| {
            let a = &f.nodes[u].args;
            a[0] == num && const_of(f, a[1]) == Some(n as f64)
        };
        let mean = self.user(s1, is(Div))?;
        let mb = self.user(mean, |u| bcast(&outer, u))?;
        let d = self.user(mb, |u| u.op == Op::Binary(Sub) && u.args == [x, mb])?;
        let d2 = self.user(d, |u| u.op == Op::Binary(Mul) && u.args == [d, d])?;
        let s2 = self.user(d2, |u| u.op == f.nodes[s1].op)?;
        let var = self.user(s2, is(Div))?;
        if !by_n(mean, s1) || !by_n(var, s2) {
            return None;
        }
        let ve = self.user(var, is(Add))?;
        let eps_arg = f.nodes[ve].args.iter().copied().find(|&a| a != var)?;
        let eps = const_of(f, eps_arg)? as f32;
        let inv = self.user(ve, |u| u.op == Op::Unary(Unary::Rsqrt))?;
        let ib = self.user(inv, |u| bcast(&outer, u))?;
        let y0 = self.user(ib, |u| {
            u.op == Op::Binary(Mul)
                && u.args.contains(&ib)
                && u.args.iter().any(|&a| a == d || a == x)
        })?;
        let rms = !f.nodes[y0].args.contains(&d);
        let last = [rank - 1];
        let weight = |b: &mut Self, y: Id, op: Binary| -> Option<(Id, (Id, Id))> {
            let u = b.user(y, |u| {
                u.op == Op::Binary(op)
                    && u.args[0] == y
                    && bcast(&last, &f.nodes[u.args[1]])
                    && f.nodes[f.nodes[u.args[1]].args[0]].ty.shape.len() == 1
            })?;
            let w = f.nodes[u].args[1];
            Some((u, (w, f.nodes[w].args[0])))
        };
        let g = weight(self, y0, Mul);
        let y1 = g.map_or(y0, |g| g.0);
        let b = weight(self, y1, Add);
        let mut inside = vec![
            (s1, None),
            (mean, Some(NormPart::Mean)),
            (mb, None),
            (d, Some(NormPart::Centred)),
            (d2, None),
            (s2, None),
            (var, None),
            (ve, None),
            (inv, Some(NormPart::Inv)),
            (ib, None),
            (y0, Some(NormPart::Normalized)),
        ];
        if let Some((u, _)) = g {
            inside.push((u, Some(NormPart::Scaled)));
        }
        if let Some((u, _)) = b {
            inside.push((u, None));
        }
        Some(Chain {
            x,
            mb,
            ib,
            n,
            eps,
            rms,
            gamma: g.map(|g| g.1),
            beta: b.map(|b| b.1),
            inside,
        })
    }
}
