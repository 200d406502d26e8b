//! The builder's walk over the graph: the size table, buffers and accesses, fused
//! expressions, and one step per kind of node (views, products and windows have rooms
//! of their own).

use super::*;

impl<'f> Builder<'f> {
    pub(super) fn slot(&mut self, d: &Dim) -> Slot {
        if let Some(&s) = self.size_index.get(d) {
            return s;
        }
        self.sizes.push(d.clone());
        self.size_index.insert(d.clone(), self.sizes.len() - 1);
        self.sizes.len() - 1
    }

    pub(super) fn shape_slots(&mut self, shape: &[Dim]) -> Vec<Slot> {
        shape.iter().map(|d| self.slot(d)).collect()
    }

    pub(super) fn access(&mut self, buf: BufId, offset: &Dim, strides: &[Dim]) -> Access {
        let offset = self.slot(offset);
        let known = strides.iter().map(Dim::as_const).collect();
        let strides = strides.iter().map(|s| self.slot(s)).collect();
        Access {
            buf,
            offset,
            strides,
            known,
        }
    }

    /// Symbolic strides of an access (from the size table).
    pub(super) fn dims_of(&self, a: &Access) -> (Dim, Vec<Dim>) {
        (
            self.sizes[a.offset].clone(),
            a.strides.iter().map(|&s| self.sizes[s].clone()).collect(),
        )
    }

    pub(super) fn new_arena(&mut self, shape: &[Dim]) -> BufId {
        let len = product(shape).unwrap_or_else(|_| Dim::konst(i64::MAX));
        let len = self.slot(&len);
        self.bufs.push(BufKind::Arena { len });
        self.bufs.len() - 1
    }

    pub(super) fn contiguous(&mut self, buf: BufId, shape: &[Dim]) -> Access {
        let strides = row_major(shape);
        self.access(buf, &Dim::konst(0), &strides)
    }

    /// The value of `id` in memory, materializing it if it is inline.
    pub(super) fn mem(&mut self, id: Id) -> Access {
        match self.vals[id].clone() {
            Some(Val::Mem(a)) => a,
            _ => {
                let shape = self.f.nodes[id].ty.shape.clone();
                let buf = self.new_arena(&shape);
                let out = self.contiguous(buf, &shape);
                self.loop_kernel(id, Sink::Store(out.clone()), &shape);
                self.vals[id] = Some(Val::Mem(out.clone()));
                out
            }
        }
    }

    /// Is `a` a plain row-major view (so reshape can reinterpret it)?
    pub(super) fn is_contiguous(&self, a: &Access, shape: &[Dim]) -> bool {
        let (_, strides) = self.dims_of(a);
        let rm = row_major(shape);
        shape
            .iter()
            .zip(strides.iter().zip(&rm))
            .all(|(d, (s, r))| d.as_const() == Some(1) || s == r)
    }

    /// Builds the fused expression for `root` over an iteration space of `shape`.
    pub(super) fn loop_kernel(&mut self, root: Id, sink: Sink, shape: &[Dim]) {
        let mut k = LoopKernel {
            space: self.shape_slots(shape),
            loads: Vec::new(),
            expr: Vec::new(),
            sink,
            nodes: Vec::new(),
            epilogue: None,
            also: Vec::new(),
        };
        let mut memo: HashMap<Id, usize> = HashMap::new();
        self.expr(root, &mut k, &mut memo, true);
        k.nodes.sort();
        self.kernels.push(Kernel::Loop(k));
    }

    /// Appends the expression of `id` to `k` (inlining fusible producers) and returns
    /// its index.
    pub(super) fn expr(
        &mut self,
        id: Id,
        k: &mut LoopKernel,
        memo: &mut HashMap<Id, usize>,
        root: bool,
    ) -> usize {
        if let Some(&e) = memo.get(&id) {
            return e;
        }
        let n = &self.f.nodes[id];
        let inline = root || matches!(self.vals[id], Some(Val::Inline));
        let e = if !inline {
            let a = self.mem(id);
            k.loads.push(a);
            push(k, Expr::Load(k.loads.len() - 1))
        } else {
            k.nodes.push(id);
            let args = n.args.clone();
            match n.op.clone() {
                Op::Const(c) => push(k, Expr::Const(c)),
                Op::DimSize(d) => {
                    let s = self.slot(&d);
                    push(k, Expr::Size(s))
                }
                Op::Iota { axis } => push(k, Expr::Index(axis)),
                Op::Unary(u) => {
                    let a = self.expr(args[0], k, memo, false);
                    push(k, Expr::Unary(u, a))
                }
                Op::Binary(b) => {
                    let a = self.expr(args[0], k, memo, false);
                    let c = self.expr(args[1], k, memo, false);
                    push(k, Expr::Binary(b, a, c))
                }
                Op::Cmp(c) => {
                    let a = self.expr(args[0], k, memo, false);
                    let b = self.expr(args[1], k, memo, false);
                    push(k, Expr::Cmp(c, a, b))
                }
                Op::Select => {
                    let c = self.expr(args[0], k, memo, false);
                    let a = self.expr(args[1], k, memo, false);
                    let b = self.expr(args[2], k, memo, false);
                    push(k, Expr::Select(c, a, b))
                }
                Op::Cast(d) => {
                    let a = self.expr(args[0], k, memo, false);
                    if d.is_int() {
                        push(k, Expr::Trunc(a))
                    } else {
                        a
                    }
                }
                // A broadcast of an inline scalar is the scalar everywhere.
                Op::Broadcast { .. } => self.expr(args[0], k, memo, false),
                _ => {
                    // Not fusible: read it from memory.
                    let a = self.mem(id);
                    k.loads.push(a);
                    push(k, Expr::Load(k.loads.len() - 1))
                }
            }
        };
        memo.insert(id, e);
        e
    }

    /// Plans every node in order, then the outputs; runs the passes over the kernel
    /// list and computes each buffer's last use.
    pub(super) fn run(mut self) -> Plan {
        let f = self.f;
        for i in 0..f.nodes.len() {
            if self.attn_done[i] {
                continue;
            }
            let val = self.node(i);
            if self.vals[i].is_none() || matches!(val, Val::Mem(_)) {
                self.vals[i] = Some(val);
            }
        }
        let outs: Vec<Id> = f.outputs.iter().map(|(_, id)| *id).collect();
        let mut outputs = Vec::new();
        for id in outs {
            let a = self.mem(id);
            let s = self.shape_slots(&f.nodes[id].ty.shape.clone());
            outputs.push((a, s));
        }
        self.fuse_epilogues(&outputs);
        self.drop_unit_axes();
        self.fuse_stores(&outputs);
        self.merge_products();
        self.block_column_reductions();
        let mut last_use = vec![0usize; self.bufs.len()];
        for (ki, k) in self.kernels.iter().enumerate() {
            let touched = reads(k).into_iter().map(|a| a.buf).chain(writes(k));
            for b in touched {
                last_use[b] = last_use[b].max(ki);
            }
        }
        for (a, _) in &outputs {
            last_use[a.buf] = usize::MAX;
        }
        Plan {
            // The caller puts the function in (`plan` a copy, `plan_owned` the function).
            func: Func::default(),
            sizes: self.sizes,
            bufs: self.bufs,
            kernels: self.kernels,
            outputs,
            last_use,
        }
    }

    /// Plans node `i`: pushes its kernels, or makes it a view or an inline value.
    pub(super) fn node(&mut self, i: Id) -> Val {
        let f = self.f;
        let n = &f.nodes[i];
        let shape = n.ty.shape.clone();
        match &n.op {
            Op::Input(k) => {
                self.bufs.push(BufKind::Input(*k));
                let b = self.bufs.len() - 1;
                Val::Mem(self.contiguous(b, &shape))
            }
            op if is_elementwise(op) => self.elementwise(i, op, &shape),
            Op::Broadcast { dims } => self.broadcast(i, dims, &shape),
            Op::Transpose { perm } => self.transpose(n.args[0], perm),
            Op::Slice { axis, start, .. } => self.slice(n.args[0], *axis, start),
            Op::Pad { axis, low, .. } => self.pad(i, *axis, low, &shape),
            Op::Concat { axis } => self.concat(i, *axis, &shape),
            Op::Reshape => self.reshape(n.args[0], &shape),
            Op::Reduce { op, axes } => match self.fuse_attention.then(|| self.norm(i)).flatten() {
                Some(v) => v,
                None => self.reduce(i, *op, axes, &shape),
            },
            Op::MatMul { ta, tb } => match self.fuse_attention.then(|| self.attention(i)).flatten()
            {
                Some(v) => v,
                None => self.matmul(i, *ta, *tb, &shape),
            },
            Op::Conv(_) | Op::ConvInputGrad(_) | Op::ConvKernelGrad(_) if self.windowed(i) => {
                self.conv(i)
            }
            Op::Pool { .. }
            | Op::PoolGrad {
                kind: PoolKind::Avg,
                ..
            } if self.windowed(i) => self.pool(i),
            _ => self.call(i, &shape),
        }
    }

    /// An elementwise node: inline when used exactly once, directly, by a loop
    /// consumer, and scalar leaves always; else (and outputs) its own loop.
    pub(super) fn elementwise(&mut self, i: Id, op: &Op, shape: &[Dim]) -> Val {
        if self.is_output[i] {
            self.vals[i] = Some(Val::Inline);
            let buf = self.new_arena(shape);
            let out = self.contiguous(buf, shape);
            self.loop_kernel(i, Sink::Store(out.clone()), shape);
            Val::Mem(out)
        } else if is_leaf_scalar(op)
            || self.uses[i] == 1 && (self.single_loop_use(i) || self.folded_query(i))
            || self.recomputed(i, op)
        {
            Val::Inline
        } else {
            self.vals[i] = Some(Val::Inline);
            let buf = self.new_arena(shape);
            let out = self.contiguous(buf, shape);
            self.loop_kernel(i, Sink::Store(out.clone()), shape);
            Val::Mem(out)
        }
    }

    /// A reduction: a loop over the input's shape accumulating into an output whose
    /// strides are 0 on the reduced axes, with the input's producers fused.
    pub(super) fn reduce(&mut self, i: Id, op: ReduceOp, axes: &[usize], shape: &[Dim]) -> Val {
        let x = self.f.nodes[i].args[0];
        let xshape = self.f.nodes[x].ty.shape.clone();
        let buf = self.new_arena(shape);
        // Output strides over the input's axes: 0 on reduced ones.
        let rm = row_major(shape);
        let mut strides = Vec::new();
        let mut j = 0;
        for ax in 0..xshape.len() {
            if axes.contains(&ax) {
                strides.push(Dim::konst(0));
            } else {
                strides.push(rm[j].clone());
                j += 1;
            }
        }
        let out = self.access(buf, &Dim::konst(0), &strides);
        let mut k = LoopKernel {
            space: self.shape_slots(&xshape),
            loads: Vec::new(),
            expr: Vec::new(),
            sink: Sink::Reduce(op, out),
            nodes: vec![i],
            epilogue: None,
            also: Vec::new(),
        };
        let mut memo = HashMap::new();
        self.expr(x, &mut k, &mut memo, false);
        self.kernels.push(Kernel::Loop(k));
        let c = self.contiguous(buf, shape);
        Val::Mem(c)
    }

    /// Any other primitive: a call to its runtime routine on its operands in memory.
    pub(super) fn call(&mut self, i: Id, shape: &[Dim]) -> Val {
        let f = self.f;
        let n = &f.nodes[i];
        let args: Vec<Access> = n.args.clone().iter().map(|&a| self.mem(a)).collect();
        let arg_shapes = n
            .args
            .iter()
            .map(|&a| f.nodes[a].ty.shape.clone())
            .collect::<Vec<_>>();
        let arg_shapes = arg_shapes.iter().map(|s| self.shape_slots(s)).collect();
        let out = self.new_arena(shape);
        let out_shape = self.shape_slots(shape);
        self.kernels.push(Kernel::Call(CallKernel {
            node: i,
            args,
            arg_shapes,
            out,
            out_shape,
        }));
        Val::Mem(self.contiguous(out, shape))
    }

    /// Pushes a loop that copies `src` to `dst` over `shape`.
    pub(super) fn copy_loop(&mut self, shape: &[Dim], src: Access, dst: Access, nodes: Vec<Id>) {
        self.push_loop(shape, |space| LoopKernel {
            space,
            loads: vec![src],
            expr: vec![Expr::Load(0)],
            sink: Sink::Store(dst),
            nodes,
            epilogue: None,
            also: Vec::new(),
        });
    }

    /// Pushes a loop kernel over `shape` (built with its slots).
    pub(super) fn push_loop(&mut self, shape: &[Dim], k: impl FnOnce(Vec<Slot>) -> LoopKernel) {
        let space = self.shape_slots(shape);
        self.kernels.push(Kernel::Loop(k(space)));
    }

    /// Is the single use of `id` a direct operand of an elementwise op or a reduce?
    /// Whether elementwise node `i` is cheaper to compute again in each of its readers
    /// than to store and load: one arithmetic op on stored values (or scalar leaves),
    /// with a broadcast statistic, read only by loops (layer normalization's centred
    /// input, which both the variance and the normalization read: one sweep fewer). Its operands are never recomputed
    /// themselves, so no expression grows beyond one op per such value.
    fn recomputed(&self, i: Id, op: &Op) -> bool {
        let cheap = matches!(op, Op::Binary(Binary::Add | Binary::Sub | Binary::Mul));
        let args = &self.f.nodes[i].args;
        // A value combined with a broadcast statistic (a row's mean): a value without
        // one is left to be stored, where a product's epilogue computes it for free.
        let statistic = args
            .iter()
            .any(|&a| matches!(self.f.nodes[a].op, Op::Broadcast { .. }));
        cheap
            && statistic
            && self.only_loop_uses[i]
            && args.iter().all(|&a| {
                is_leaf_scalar(&self.f.nodes[a].op) || matches!(self.vals[a], Some(Val::Mem(_)))
            })
    }

    pub(super) fn single_loop_use(&self, id: Id) -> bool {
        self.loop_use[id]
    }
}
