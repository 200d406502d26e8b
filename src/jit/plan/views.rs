//! Views in the plan: broadcast, transpose, slice and reshape of a value in memory
//! become strided accesses into the buffer they look at (reshape copies first when the
//! value is not row-major); a pad is a zero fill and a copy into the interior.

use super::*;

impl Builder<'_> {
    /// A broadcast: stride 0 on the new and expanded axes (an inline scalar stays
    /// inline).
    pub(super) fn broadcast(&mut self, i: Id, dims: &[usize], shape: &[Dim]) -> Val {
        let f = self.f;
        let x = f.nodes[i].args[0];
        let xshape = f.nodes[x].ty.shape.clone();
        if xshape.is_empty() && matches!(self.vals[x], Some(Val::Inline)) && !self.is_output[i] {
            return Val::Inline;
        }
        let a = self.mem(x);
        let (off, strides) = self.dims_of(&a);
        let mut out = vec![Dim::konst(0); shape.len()];
        for (j, &d) in dims.iter().enumerate() {
            let expanded = xshape[j].as_const() == Some(1) && shape[d].as_const() != Some(1);
            out[d] = if expanded {
                Dim::konst(0)
            } else {
                strides[j].clone()
            };
        }
        Val::Mem(self.access(a.buf, &off, &out))
    }

    /// A transpose: the operand's strides permuted.
    pub(super) fn transpose(&mut self, x: Id, perm: &[usize]) -> Val {
        let a = self.mem(x);
        let (off, strides) = self.dims_of(&a);
        let out: Vec<Dim> = perm.iter().map(|&p| strides[p].clone()).collect();
        Val::Mem(self.access(a.buf, &off, &out))
    }

    /// A slice: the operand's view with its offset moved to `start` along `axis`.
    pub(super) fn slice(&mut self, x: Id, axis: usize, start: &Dim) -> Val {
        let a = self.mem(x);
        let (off, strides) = self.dims_of(&a);
        let off = off
            .add(&start.mul(&strides[axis]).unwrap_or_default())
            .unwrap_or_default();
        Val::Mem(self.access(a.buf, &off, &strides))
    }

    /// A pad: a zero-filled buffer of the output's shape and a copy of the operand
    /// into its interior, starting `low` elements along `axis` (two loops, not a
    /// runtime routine).
    pub(super) fn pad(&mut self, i: Id, axis: usize, low: &Dim, shape: &[Dim]) -> Val {
        let x = self.f.nodes[i].args[0];
        let xshape = self.f.nodes[x].ty.shape.clone();
        let src = self.mem(x);
        let buf = self.new_arena(shape);
        let all = self.contiguous(buf, shape);
        self.push_loop(shape, |space| LoopKernel {
            space,
            loads: vec![],
            expr: vec![Expr::Const(0.0)],
            sink: Sink::Store(all.clone()),
            nodes: vec![],
            epilogue: None,
            also: Vec::new(),
        });
        let rm = row_major(shape);
        let off = low.mul(&rm[axis]).unwrap_or_else(|_| Dim::konst(i64::MAX));
        let interior = self.access(buf, &off, &rm);
        self.copy_loop(&xshape, src, interior, vec![i]);
        Val::Mem(all)
    }

    /// A concatenation: each operand copied by a loop into its slice along `axis` of
    /// a new row-major buffer (the copies split across the team like any loop).
    pub(super) fn concat(&mut self, i: Id, axis: usize, shape: &[Dim]) -> Val {
        let buf = self.new_arena(shape);
        let rm = row_major(shape);
        let mut at = Dim::konst(0);
        for x in self.f.nodes[i].args.clone() {
            let xshape = self.f.nodes[x].ty.shape.clone();
            let src = self.mem(x);
            let off = at.mul(&rm[axis]).unwrap_or_else(|_| Dim::konst(i64::MAX));
            let dst = self.access(buf, &off, &rm);
            self.copy_loop(&xshape, src, dst, vec![i]);
            at = at
                .add(&xshape[axis])
                .unwrap_or_else(|_| Dim::konst(i64::MAX));
        }
        Val::Mem(self.contiguous(buf, shape))
    }

    /// A reshape: the operand's memory reinterpreted row-major (after a contiguous
    /// copy when its view is not).
    pub(super) fn reshape(&mut self, x: Id, shape: &[Dim]) -> Val {
        let xshape = self.f.nodes[x].ty.shape.clone();
        let mut a = self.mem(x);
        if !self.is_contiguous(&a, &xshape) {
            // Materialize a contiguous copy first.
            let buf = self.new_arena(&xshape);
            let out = self.contiguous(buf, &xshape);
            let k = LoopKernel {
                space: self.shape_slots(&xshape),
                loads: vec![a],
                expr: vec![Expr::Load(0)],
                sink: Sink::Store(out.clone()),
                nodes: vec![x],
                epilogue: None,
                also: Vec::new(),
            };
            self.kernels.push(Kernel::Loop(k));
            a = out;
        }
        let (off, _) = self.dims_of(&a);
        let strides = row_major(shape);
        Val::Mem(self.access(a.buf, &off, &strides))
    }
}
