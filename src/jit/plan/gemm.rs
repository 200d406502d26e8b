//! Matrix products in the plan: a GEMM call with the operands' strides (transposes
//! are free), plus a generated loop nest for few rows.

use super::*;

impl Builder<'_> {
    /// A (batched) matrix product: GEMM on the operands' views with transposes folded
    /// into the strides, and the generated loop for few rows.
    pub(super) fn matmul(&mut self, i: Id, ta: bool, tb: bool, shape: &[Dim]) -> Val {
        let f = self.f;
        let n = &f.nodes[i];
        let (a, b) = (self.mem(n.args[0]), self.mem(n.args[1]));
        let r = shape.len();
        let swap_last = |acc: &Access| {
            let mut t = acc.clone();
            t.strides.swap(r - 2, r - 1);
            t.known.swap(r - 2, r - 1);
            t
        };
        let a = if ta { swap_last(&a) } else { a };
        let b = if tb { swap_last(&b) } else { b };
        let ashape = &f.nodes[n.args[0]].ty.shape;
        let kdim = if ta {
            ashape[r - 2].clone()
        } else {
            ashape[r - 1].clone()
        };
        let c = self.new_arena(shape);
        let small = self.small_matmul(&a, &b, c, shape, &kdim);
        let g = GemmKernel {
            node: i,
            a,
            b,
            c,
            batch: self.shape_slots(&shape[..r - 2]),
            m: self.slot(&shape[r - 2]),
            k: self.slot(&kdim),
            n: self.slot(&shape[r - 1]),
            small,
            epilogue: None,
            also: Vec::new(),
        };
        self.kernels.push(Kernel::Gemm(g));
        Val::Mem(self.contiguous(c, shape))
    }

    /// A value as a `[rows, cols]` matrix view (copied to contiguous memory first when
    /// its layout doesn't allow one).
    pub(super) fn matrix(&mut self, id: Id, cols: &Dim) -> Access {
        let shape = self.f.nodes[id].ty.shape.clone();
        let mut a = self.mem(id);
        if !self.is_contiguous(&a, &shape) {
            let buf = self.new_arena(&shape);
            let out = self.contiguous(buf, &shape);
            self.push_loop(&shape, |space| LoopKernel {
                space,
                loads: vec![a],
                expr: vec![Expr::Load(0)],
                sink: Sink::Store(out.clone()),
                nodes: vec![id],
                epilogue: None,
                also: Vec::new(),
            });
            a = out;
        }
        let (off, _) = self.dims_of(&a);
        self.access(a.buf, &off, &[cols.clone(), Dim::konst(1)])
    }

    /// Pushes `c = a · b` (2-D views) as a GEMM kernel, with the generated loop for few
    /// rows; `c` is a new contiguous `[m, n]` buffer.
    pub(super) fn gemm2(
        &mut self,
        node: Id,
        a: Access,
        b: Access,
        m: &Dim,
        k: &Dim,
        n: &Dim,
    ) -> BufId {
        let shape = [m.clone(), n.clone()];
        let c = self.new_arena(&shape);
        let small = self.small_matmul(&a, &b, c, &shape, k);
        let g = GemmKernel {
            node,
            a,
            b,
            c,
            batch: Vec::new(),
            m: self.slot(m),
            k: self.slot(k),
            n: self.slot(n),
            small,
            epilogue: None,
            also: Vec::new(),
        };
        self.kernels.push(Kernel::Gemm(g));
        c
    }

    /// A matrix product as a loop nest: `[batch…, m, k, n]` with `n` innermost when B's
    /// rows are contiguous (an axpy per row of A), or `[batch…, m, n, k]` with `k`
    /// innermost when both operands are contiguous along `k` (dot products).
    pub(super) fn small_matmul(
        &mut self,
        a: &Access,
        b: &Access,
        c: BufId,
        shape: &[Dim],
        kdim: &Dim,
    ) -> Option<LoopKernel> {
        let r = shape.len();
        let (oa, sa) = self.dims_of(a);
        let (ob, sb) = self.dims_of(b);
        let cs = row_major(shape);
        let z = Dim::konst(0);
        let batch = &shape[..r - 2];
        let (m, n) = (shape[r - 2].clone(), shape[r - 1].clone());
        let (order, sa2, sb2, sc2) = if b.known[r - 1] == Some(1) {
            (
                vec![m, kdim.clone(), n],
                [sa[r - 2].clone(), sa[r - 1].clone(), z.clone()],
                [z.clone(), sb[r - 2].clone(), sb[r - 1].clone()],
                [cs[r - 2].clone(), z.clone(), cs[r - 1].clone()],
            )
        } else if a.known[r - 1] == Some(1) && b.known[r - 2] == Some(1) {
            (
                vec![m, n, kdim.clone()],
                [sa[r - 2].clone(), z.clone(), sa[r - 1].clone()],
                [z.clone(), sb[r - 1].clone(), sb[r - 2].clone()],
                [cs[r - 2].clone(), cs[r - 1].clone(), z.clone()],
            )
        } else {
            return None;
        };
        let mut space = batch.to_vec();
        space.extend(order);
        let join = |pre: &[Dim], tail: [Dim; 3]| -> Vec<Dim> {
            let mut v = pre.to_vec();
            v.extend(tail);
            v
        };
        let la = self.access(a.buf, &oa, &join(&sa[..r - 2], sa2));
        let lb = self.access(b.buf, &ob, &join(&sb[..r - 2], sb2));
        let out = self.access(c, &Dim::konst(0), &join(&cs[..r - 2], sc2));
        Some(LoopKernel {
            space: self.shape_slots(&space),
            loads: vec![la, lb],
            expr: vec![
                Expr::Load(0),
                Expr::Load(1),
                Expr::Binary(Binary::Mul, 0, 1),
            ],
            sink: Sink::Reduce(ReduceOp::Sum, out),
            nodes: Vec::new(),
            epilogue: None,
            also: Vec::new(),
        })
    }
}
