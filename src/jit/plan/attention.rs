//! Scaled dot-product attention as one kernel. The lowering of `multi_head_attention`
//! (and any other graph of the same form) produces
//!
//! ```text
//! s  = matmul[tb](q, k)                      [batch…, tq, tk]
//! s' = select(valid, s, low)                 causal mask only (valid: iota_row >= iota_col)
//! p  = softmax(s') along the last axis       reduce_max, sub, exp, reduce_sum, div
//! p' = select(valid, p, 0)                   causal mask only, optional (Keras's
//!                                            `dot_product_attention` path omits it)
//! o  = matmul(p', v)                         [batch…, tq, dv]
//! ```
//!
//! which the builder recognizes at `s` and plans as one [`AttnKernel`]: per batch entry
//! (and head), each query row's scores, softmax and weighted sum of values are computed
//! while the row is in cache (`jit::attention` runs it across the team). No score
//! matrix is written unless something else reads it: in a training step the backward
//! pass reads the softmax's pieces, and exactly those are stored (`stores`). The output
//! is written in the layout its single transposing reader wants, so the transpose that
//! ungroups the heads is a free view. Anything that does not match (other masks,
//! dropout on the probabilities, a value computed after the scores) is planned node by
//! node as before.
//!
//! In a training step the forward match also looks for the backward chain autodiff
//! builds from it (`grad_chain`: `dP = g·vᵀ`, `dv = p'ᵀ·g`, the division's and the
//! exponential's gradients, the row maximum's gradient spread over its arg-maxima, the
//! mask's select, `dq = dS·k`, `dk = dSᵀ·q`). When every one of those nodes is there and
//! nothing else reads the intermediate ones, the forward kernel stores only the row
//! maxima and sums, and the whole chain becomes one backward kernel (an [`AttnKernel`]
//! with `grad`), planned where the walk reaches `dP`.

use super::*;
use crate::ir::passes::const_of;

/// A piece of the softmax chain that some other node reads, stored contiguously in the
/// shape of its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The scores `s` before the mask.
    Scores,
    /// The masked scores `s'`.
    Masked,
    /// The row maxima `[batch…, tq]`.
    Max,
    /// The scores minus their row's maximum.
    Shifted,
    /// Their exponentials.
    Exp,
    /// The row sums of the exponentials `[batch…, tq]`.
    Sum,
    /// The softmax `p`.
    Probs,
    /// The masked softmax `p'`.
    MaskedProbs,
}

/// Fused scaled dot-product attention (see the module's documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct AttnKernel {
    /// The score product and the output product (for printing).
    pub nodes: [Id; 2],
    /// `[batch…, tq, d]`, `[batch…, tk, d]`, `[batch…, tk, dv]` views.
    pub q: Access,
    /// A factor the kernel multiplies each query element by as it reads it (the
    /// graph's `q · c` folded in when nothing else reads the product; forward only).
    pub q_scale: Option<f32>,
    pub k: Access,
    pub v: Access,
    pub batch: Vec<Slot>,
    pub tq: Slot,
    pub tk: Slot,
    pub d: Slot,
    pub dv: Slot,
    /// The value masked scores take (`None`: no mask); a query row `i` attends to key
    /// columns `j <= i`.
    pub causal: Option<f32>,
    /// `[batch…, tq, dv]` view of the output buffer.
    pub out: Access,
    /// The chain's pieces other nodes read, each into its own contiguous buffer.
    pub stores: Vec<(Stage, BufId)>,
    /// `Some`: this is the chain's backward kernel (`out` is then the gradient of `q`
    /// and nothing is stored).
    pub grad: Option<Box<AttnGrad>>,
}

/// The backward kernel's further operands: from the output's gradient `g`, the
/// operands and the row maxima and sums the forward kernel stored, it computes the
/// gradients of `q` (the kernel's `out`), `k` and `v`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttnGrad {
    /// `[batch…, tq, dv]` view of the output's gradient.
    pub g: Access,
    /// `[batch…, tq]` contiguous row maxima and row sums (the forward's stores).
    pub max: Access,
    pub sum: Access,
    /// `[batch…, tk, d]` and `[batch…, tk, dv]` views of the key and value gradients.
    pub dk: Access,
    pub dv: Access,
}

/// A backward chain found with its forward chain, planned as a kernel where the walk
/// reaches its first node (`chain.dp`).
pub(super) struct PendingGrad {
    chain: GradChain,
    forward: AttnKernel,
    max: Id,
    sum: Id,
}

/// The matched nodes.
struct Chain {
    s: Id,
    /// `(valid, s', p', low)` with a causal mask (`p'` when the graph zeroes the
    /// masked probabilities again after the softmax; the kernel always does, where the
    /// graph's exponential of `low` is zero or within rounding of it).
    mask: Option<(Id, Id, Option<Id>, f32)>,
    mx: Id,
    mx_views: [Id; 2],
    shifted: Id,
    e: Id,
    z: Id,
    z_views: [Id; 2],
    p: Id,
    o: Id,
    v: Id,
}

impl Chain {
    /// Every node the kernel computes, with the stage each one is when stored.
    fn computed(&self) -> Vec<(Id, Option<Stage>)> {
        let mut out = vec![
            (self.s, Some(Stage::Scores)),
            (self.mx, Some(Stage::Max)),
            (self.mx_views[0], None),
            (self.mx_views[1], None),
            (self.shifted, Some(Stage::Shifted)),
            (self.e, Some(Stage::Exp)),
            (self.z, Some(Stage::Sum)),
            (self.z_views[0], None),
            (self.z_views[1], None),
            (self.p, Some(Stage::Probs)),
            (self.o, None),
        ];
        if let Some((_, s2, p2, _)) = self.mask {
            out.push((s2, Some(Stage::Masked)));
            if let Some(p2) = p2 {
                out.push((p2, Some(Stage::MaskedProbs)));
            }
        }
        out
    }
}

/// The backward chain's nodes (see `Builder::grad_chain`).
struct GradChain {
    /// `dP = g·vᵀ`, the output's gradient `g`, and the three gradients computed.
    dp: Id,
    g: Id,
    dq: Id,
    dk: Id,
    dv: Id,
    /// Every node of the chain, `dp` first.
    nodes: Vec<Id>,
}

impl Builder<'_> {
    /// The nodes that read each node (built on first use).
    pub(super) fn users(&mut self) -> &[Vec<Id>] {
        if self.users.is_empty() {
            let mut users = vec![Vec::new(); self.f.nodes.len()];
            for (i, n) in self.f.nodes.iter().enumerate() {
                for &a in &n.args {
                    if users[a].last() != Some(&i) {
                        users[a].push(i);
                    }
                }
            }
            self.users = users;
        }
        &self.users
    }

    /// The first reader of `x` that `ok` accepts.
    pub(super) fn user(&mut self, x: Id, ok: impl Fn(&crate::ir::Node) -> bool) -> Option<Id> {
        let f = self.f;
        self.users()[x].iter().copied().find(|&u| ok(&f.nodes[u]))
    }

    /// `valid` is `iota_row >= iota_col` over the scores' last two axes, compared
    /// with zero (Keras's causal mask, as the attention lowering builds it).
    fn is_causal(&self, valid: Id, rank: usize) -> bool {
        let f = self.f;
        let n = &f.nodes[valid];
        if n.op != Op::Cmp(Cmp::Ne) || const_of(f, n.args[1]) != Some(0.0) {
            return false;
        }
        let b = &f.nodes[n.args[0]];
        let Op::Broadcast { dims } = &b.op else {
            return false;
        };
        if dims[..] != [rank - 2, rank - 1] {
            return false;
        }
        let c = &f.nodes[b.args[0]];
        c.op == Op::Cmp(Cmp::Ge)
            && f.nodes[c.args[0]].op == Op::Iota { axis: 0 }
            && f.nodes[c.args[1]].op == Op::Iota { axis: 1 }
    }

    /// A reduction of `x` along its last axis, kept as `[…, 1]` and broadcast back:
    /// `(reduce, [reshape, broadcast])`.
    fn row_reduce(&mut self, x: Id, op: ReduceOp) -> Option<(Id, [Id; 2])> {
        let f = self.f;
        let shape = f.nodes[x].ty.shape.clone();
        let r = shape.len();
        let red = self.user(x, |n| {
            n.op == Op::Reduce {
                op,
                axes: vec![r - 1],
            }
        })?;
        let mut kept = shape[..r - 1].to_vec();
        kept.push(Dim::konst(1));
        let re = self.user(red, |n| n.op == Op::Reshape && n.ty.shape == kept)?;
        let ident: Vec<usize> = (0..r).collect();
        let br = self.user(re, |n| {
            n.op == Op::Broadcast {
                dims: ident.clone(),
            } && n.ty.shape == shape
        })?;
        Some((red, [re, br]))
    }

    /// The attention chain starting at score product `s`, if the graph has one.
    fn attention_chain(&mut self, s: Id) -> Option<Chain> {
        let f = self.f;
        let sn = &f.nodes[s];
        let r = sn.ty.rank();
        if sn.op
            != (Op::MatMul {
                ta: false,
                tb: true,
            })
            || r < 2
            || sn.ty.dtype.is_int()
        {
            return None;
        }
        // An optional causal mask: s' = select(valid, s, low).
        let mut mask = None;
        let mut x = s;
        if let Some(s2) = self.user(s, |n| n.op == Op::Select && n.args[1] == s) {
            let [valid, _, low] = f.nodes[s2].args[..] else {
                return None;
            };
            let low = const_of(f, low)?;
            if !self.is_causal(valid, r) {
                return None;
            }
            mask = Some((valid, s2, low as f32));
            x = s2;
        }
        let (mx, mx_views) = self.row_reduce(x, ReduceOp::Max)?;
        let shifted = self.user(x, |n| {
            n.op == Op::Binary(Binary::Sub) && n.args[..] == [x, mx_views[1]]
        })?;
        let e = self.user(shifted, |n| n.op == Op::Unary(Unary::Exp))?;
        let (z, z_views) = self.row_reduce(e, ReduceOp::Sum)?;
        let p = self.user(e, |n| {
            n.op == Op::Binary(Binary::Div) && n.args[..] == [e, z_views[1]]
        })?;
        let (mask, p_last) = match mask {
            Some((valid, s2, low)) => {
                let p2 = self.user(p, |n| {
                    n.op == Op::Select
                        && n.args[0] == valid
                        && n.args[1] == p
                        && const_of(f, n.args[2]) == Some(0.0)
                });
                // Without p', the kernel's zeros must be the graph's own values up to
                // rounding: exp(low − max) underflows only for a very negative low.
                if p2.is_none() && low > -1e4 {
                    return None;
                }
                (Some((valid, s2, p2, low)), p2.unwrap_or(p))
            }
            None => (None, p),
        };
        let o = self.user(p_last, |n| {
            n.op == (Op::MatMul {
                ta: false,
                tb: false,
            }) && n.args[0] == p_last
        })?;
        let v = f.nodes[o].args[1];
        // Everything the kernel reads must be planned before `s` is.
        (v < s && f.nodes[o].ty.rank() == r).then_some(Chain {
            s,
            mask,
            mx,
            mx_views,
            shifted,
            e,
            z,
            z_views,
            p,
            o,
            v,
        })
    }

    /// `(neg, reduce, broadcast)`: `x` negated, summed along its last axis and broadcast
    /// back, as the gradients of a row sum and a subtraction build it.
    fn neg_row_sum(&mut self, x: Id) -> Option<[Id; 3]> {
        let f = self.f;
        let neg = self.user(x, |n| n.op == Op::Unary(Unary::Neg))?;
        let [red, br] = self.row_sum_back(neg)?;
        debug_assert_eq!(f.nodes[neg].args[0], x);
        Some([neg, red, br])
    }

    /// `(reduce, broadcast)`: `x` summed along its last axis and broadcast back.
    fn row_sum_back(&mut self, x: Id) -> Option<[Id; 2]> {
        let f = self.f;
        let shape = f.nodes[x].ty.shape.clone();
        let r = shape.len();
        let red = self.user(x, |n| {
            n.op == Op::Reduce {
                op: ReduceOp::Sum,
                axes: vec![r - 1],
            }
        })?;
        let br = self.row_broadcast(red, &shape)?;
        Some([red, br])
    }

    /// A broadcast of the `[batch…, tq]` node `x` along a new last axis to `shape`.
    fn row_broadcast(&mut self, x: Id, shape: &[Dim]) -> Option<Id> {
        let lead: Vec<usize> = (0..shape.len() - 1).collect();
        self.user(x, |n| {
            n.op == Op::Broadcast { dims: lead.clone() } && n.ty.shape[..] == shape[..]
        })
    }

    /// The first reader of `x` that is `op(args…)` exactly.
    fn user_of(&mut self, x: Id, op: Op, args: &[Id]) -> Option<Id> {
        self.user(x, |n| n.op == op && n.args[..] == args[..])
    }

    /// `select(valid, x, 0)`.
    fn zeroed(&mut self, x: Id, valid: Id) -> Option<Id> {
        let f = self.f;
        self.user(x, |n| {
            n.op == Op::Select && n.args[..2] == [valid, x] && const_of(f, n.args[2]) == Some(0.0)
        })
    }

    /// The backward chain autodiff builds for forward chain `c` (see the module's
    /// documentation), when the graph has all of it, nothing outside it reads its
    /// intermediate nodes, and `dP` comes first.
    fn grad_chain(&mut self, c: &Chain) -> Option<GradChain> {
        let f = self.f;
        let [q, k] = f.nodes[c.s].args[..] else {
            return None;
        };
        let shape = f.nodes[c.s].ty.shape.clone();
        let x = c.mask.map_or(c.s, |m| m.1);
        let p_last = c.mask.and_then(|m| m.2).unwrap_or(c.p);
        let (mul, div, add) = (
            Op::Binary(Binary::Mul),
            Op::Binary(Binary::Div),
            Op::Binary(Binary::Add),
        );
        let mm = |ta, tb| Op::MatMul { ta, tb };
        let v = c.v;
        let dp = self.user(v, |n| {
            n.op == mm(false, true) && n.args[1] == v && n.ty.shape == shape
        })?;
        let g = f.nodes[dp].args[0];
        let dv = self.user_of(p_last, mm(true, false), &[p_last, g])?;
        let mut nodes = vec![dp, dv];
        // With p' the graph masks dP again.
        let dpm = match c.mask {
            Some((valid, _, Some(_), _)) => {
                let m = self.zeroed(dp, valid)?;
                nodes.push(m);
                m
            }
            _ => dp,
        };
        // The division's gradient: dE = dP/z − Σ dP·(p/z).
        let zb = c.z_views[1];
        let a = self.user_of(dpm, div.clone(), &[dpm, zb])?;
        let pz = self.user_of(c.p, div.clone(), &[c.p, zb])?;
        let m = self.user_of(dpm, mul.clone(), &[dpm, pz])?;
        let [n1, r1, b1] = self.neg_row_sum(m)?;
        let de = self.user_of(a, add.clone(), &[a, b1])?;
        // The exponential's: dE·e; the row maximum's: −Σ of that over the arg-maxima.
        let dsh = self.user_of(de, mul.clone(), &[de, c.e])?;
        let [n2, r2, b2] = self.neg_row_sum(dsh)?;
        let mxb = self.row_broadcast(c.mx, &shape)?;
        let eq = self.user_of(x, Op::Cmp(Cmp::Eq), &[x, mxb])?;
        let [cnt, cntb] = self.row_sum_back(eq)?;
        let frac = self.user_of(eq, div, &[eq, cntb])?;
        let t = self.user_of(b2, mul, &[b2, frac])?;
        let dx = self.user_of(dsh, add, &[dsh, t])?;
        nodes.extend([
            a, pz, m, n1, r1, b1, de, dsh, n2, r2, b2, mxb, eq, cnt, cntb, frac, t, dx,
        ]);
        let ds = match c.mask {
            Some((valid, ..)) => {
                let s = self.zeroed(dx, valid)?;
                nodes.push(s);
                s
            }
            None => dx,
        };
        let dq = self.user_of(ds, mm(false, false), &[ds, k])?;
        let dk = self.user_of(ds, mm(true, false), &[ds, q])?;
        nodes.extend([dq, dk]);
        if nodes.iter().any(|&n| n < dp) {
            return None;
        }
        // The intermediate nodes are read by the chain only.
        for &n in &nodes {
            if [dq, dk, dv].contains(&n) {
                continue;
            }
            let within: usize = nodes
                .iter()
                .map(|&c| f.nodes[c].args.iter().filter(|&&a| a == n).count())
                .sum();
            if self.is_output[n] || self.uses[n] != within {
                return None;
            }
        }
        Some(GradChain {
            dp,
            g,
            dq,
            dk,
            dv,
            nodes,
        })
    }

    /// Plans the backward kernel recorded for `dp`'s chain; `None` when `dp` starts
    /// none.
    fn attention_grad(&mut self, dp: Id) -> Option<Val> {
        let at = self.attn_grads.iter().position(|p| p.chain.dp == dp)?;
        let p = self.attn_grads.swap_remove(at);
        let f = self.f;
        let c = &p.chain;
        let g = self.mem(c.g);
        let (max, sum) = (self.mem(p.max), self.mem(p.sum));
        let mut outs = Vec::new();
        for id in [c.dq, c.dk, c.dv] {
            let shape = f.nodes[id].ty.shape.clone();
            let a = self.attention_out(id, &shape);
            self.vals[id] = Some(Val::Mem(a.clone()));
            outs.push(a);
        }
        let [dq, dk, dv] = <[Access; 3]>::try_from(outs).ok()?;
        let mut kernel = p.forward;
        kernel.nodes = [c.dp, c.dk];
        kernel.stores.clear();
        kernel.out = dq;
        kernel.grad = Some(Box::new(AttnGrad {
            g,
            max,
            sum,
            dk,
            dv,
        }));
        self.kernels.push(Kernel::Attention(kernel));
        for &id in &c.nodes[1..] {
            self.attn_done[id] = true;
        }
        Some(Val::Inline)
    }

    /// Plans the attention chain at its score product `s` as one kernel; `None` (and
    /// nothing planned) when `s` starts no chain.
    pub(super) fn attention(&mut self, s: Id) -> Option<Val> {
        if let Some(v) = self.attention_grad(s) {
            return Some(v);
        }
        let chain = self.attention_chain(s)?;
        let grad = self.grad_chain(&chain);
        let f = self.f;
        let computed = chain.computed();
        let inside: Vec<Id> = computed.iter().map(|c| c.0).collect();
        // The fused backward chain's reads are the kernels' own business too.
        let mut readers = inside.clone();
        readers.extend(grad.iter().flat_map(|g| g.nodes.iter().copied()));
        // Uses of each computed node by nodes outside the chain (outputs included).
        let outside = |b: &Self, id: Id| {
            let within: usize = readers
                .iter()
                .map(|&c| f.nodes[c].args.iter().filter(|&&a| a == id).count())
                .sum();
            b.uses[id].saturating_sub(within)
        };
        let mut stores = Vec::new();
        let mut kept_views = Vec::new();
        for &(id, stage) in &computed {
            if outside(self, id) == 0 || id == chain.o {
                continue;
            }
            match stage {
                Some(st) => stores.push((st, id)),
                None => kept_views.push(id),
            }
        }
        // A view read elsewhere is planned as usual, over its stored source (and the
        // reshape a broadcast views).
        for views in [chain.mx_views, chain.z_views] {
            if kept_views.contains(&views[1]) && !kept_views.contains(&views[0]) {
                kept_views.push(views[0]);
            }
        }
        for &v in &kept_views {
            let (src, st) = if chain.mx_views.contains(&v) {
                (chain.mx, Stage::Max)
            } else {
                (chain.z, Stage::Sum)
            };
            if !stores.iter().any(|&(s, _)| s == st) {
                stores.push((st, src));
            }
        }
        // The backward kernel reads the row maxima and sums.
        if grad.is_some() {
            for (st, src) in [(Stage::Max, chain.mx), (Stage::Sum, chain.z)] {
                if !stores.iter().any(|&(s, _)| s == st) {
                    stores.push((st, src));
                }
            }
        }
        let q = f.nodes[s].args[0];
        let (qa, q_scale) = match self.scaled_query(q, grad.is_some()) {
            Some((x, c)) => (self.mem(x), Some(c)),
            None => (self.mem(q), None),
        };
        let (ka, va) = (self.mem(f.nodes[s].args[1]), self.mem(chain.v));
        let shape = f.nodes[s].ty.shape.clone();
        let r = shape.len();
        let oshape = f.nodes[chain.o].ty.shape.clone();
        let out = self.attention_out(chain.o, &oshape);
        let mut bufs = Vec::new();
        for &(st, id) in &stores {
            let nshape = f.nodes[id].ty.shape.clone();
            let buf = self.new_arena(&nshape);
            let a = self.contiguous(buf, &nshape);
            self.vals[id] = Some(Val::Mem(a));
            bufs.push((st, buf));
        }
        let kernel = AttnKernel {
            nodes: [s, chain.o],
            q: qa,
            q_scale,
            k: ka,
            v: va,
            batch: self.shape_slots(&shape[..r - 2]),
            tq: self.slot(&shape[r - 2]),
            tk: self.slot(&shape[r - 1]),
            d: self.slot(&f.nodes[q].ty.shape[r - 1]),
            dv: self.slot(&oshape[r - 1]),
            causal: chain.mask.map(|m| m.3),
            out: out.clone(),
            stores: bufs,
            grad: None,
        };
        if let Some(chain_g) = grad {
            self.attn_grads.push(PendingGrad {
                chain: chain_g,
                forward: kernel.clone(),
                max: chain.mx,
                sum: chain.z,
            });
        }
        self.kernels.push(Kernel::Attention(kernel));
        self.vals[chain.o] = Some(Val::Mem(out));
        let mut skip: Vec<Id> = inside
            .iter()
            .copied()
            .filter(|id| !kept_views.contains(id))
            .collect();
        if let Some((valid, ..)) = chain.mask
            && outside(self, valid) == 0
        {
            // Only the chain read the mask: nothing needs it in memory.
            skip.push(valid);
        }
        for id in skip {
            self.attn_done[id] = true;
        }
        Some(self.vals[s].clone().unwrap_or(Val::Inline))
    }

    /// `(x, c)` when the score product's query `q` is `x · c` for a scalar constant
    /// `c`, left inline (`folded_query`) and read by nothing else: the kernel then
    /// reads `x` and multiplies as it reads (the same product, so the same bits), and
    /// no loop writes the scaled copy. Not with a backward chain (it reads `q` too).
    fn scaled_query(&self, q: Id, grad: bool) -> Option<(Id, f32)> {
        let f = self.f;
        let n = &f.nodes[q];
        if grad
            || n.op != Op::Binary(Binary::Mul)
            || self.uses[q] != 1
            || self.is_output[q]
            || !matches!(self.vals[q], Some(Val::Inline))
        {
            return None;
        }
        let c = const_of(f, n.args[1])?;
        Some((n.args[0], c as f32))
    }

    /// Whether elementwise node `q` is the scaled query of an attention chain with no
    /// backward chain, which the kernel folds in (`scaled_query`): the walk then
    /// leaves it inline rather than writing it (were the chain not planned after all,
    /// the score product's read would write it then).
    pub(super) fn folded_query(&mut self, q: Id) -> bool {
        let f = self.f;
        let n = &f.nodes[q];
        if !self.fuse_attention
            || self.uses[q] != 1
            || self.is_output[q]
            || n.op != Op::Binary(Binary::Mul)
            || const_of(f, n.args[1]).is_none()
        {
            return false;
        }
        let Some(&s) = self.users()[q].first() else {
            return false;
        };
        if f.nodes[s].args[0] != q {
            return false;
        }
        match self.attention_chain(s) {
            Some(chain) => self.grad_chain(&chain).is_none(),
            None => false,
        }
    }

    /// The output's buffer and view: laid out as its single transposing reader wants
    /// it when it has one (the transpose is then a contiguous view), else row-major.
    fn attention_out(&mut self, o: Id, oshape: &[Dim]) -> Access {
        let f = self.f;
        let readers = self.users()[o].clone();
        if let [t] = readers[..]
            && self.uses[o] == 1
            && let Op::Transpose { perm } = &f.nodes[t].op
        {
            let tshape = f.nodes[t].ty.shape.clone();
            let rm = row_major(&tshape);
            let mut strides = vec![Dim::konst(0); oshape.len()];
            for (j, &a) in perm.iter().enumerate() {
                strides[a] = rm[j].clone();
            }
            let buf = self.new_arena(&tshape);
            return self.access(buf, &Dim::konst(0), &strides);
        }
        let buf = self.new_arena(oshape);
        self.contiguous(buf, oshape)
    }
}
