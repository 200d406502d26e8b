//! The kernel plan: graph IR grouped into kernels, as plain data that codegen consumes.
//!
//! - Views (broadcast, transpose, slice, reshape of a contiguous value) cost nothing:
//!   they become strided accesses into the buffer they look at.
//! - Elementwise chains fuse into one loop nest: a producer used once, directly, by an
//!   elementwise op or a reduction is inlined into its consumer's expression; scalar
//!   leaves (constants, dim sizes) are inlined everywhere.
//! - Reductions are loop nests with the fused prologue and an accumulating sink.
//! - Matrix products call a tuned GEMM with the operands' strides (transposes are free),
//!   or for few rows run as a generated loop nest.
//! - Epilogues: an elementwise loop that is the only reader of a product or of an
//!   innermost-axis reduction folds into it (`fuse_epilogues`).
//! - Convolutions and pooling are loops around GEMM (`window.rs`).
//! - Other primitives (max pooling's gradient, recurrent cells, gather, …) are calls to
//!   runtime routines.
//!
//! Every size, stride and offset is a symbolic [`Dim`] in a size table that the
//! runtime evaluates once per set of symbol values; the plan itself never changes with
//! the batch size.

use std::collections::HashMap;
use std::fmt::Write;

use crate::dim::{Dim, product};
use crate::ir::{Binary, Cmp, Func, Id, Op, PoolKind, ReduceOp, Unary};

mod window;

/// A slot of the size table.
pub type Slot = usize;
/// A buffer: an input (caller's memory) or a region of the arena.
pub type BufId = usize;

/// Where a buffer's memory comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum BufKind {
    /// The function's `i`th input.
    Input(usize),
    /// An arena region of `len` elements (a size-table slot).
    Arena { len: Slot },
}

/// A strided view of a buffer over a logical shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    pub buf: BufId,
    pub offset: Slot,
    /// One stride per axis of the logical shape (in elements).
    pub strides: Vec<Slot>,
    /// Statically known strides (0 for broadcast axes, 1 for contiguous), per axis.
    pub known: Vec<Option<i64>>,
}

/// A node of a fused expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Load(usize),
    Const(f64),
    /// A size-table value as a float (dim sizes).
    Size(Slot),
    /// The loop index along an axis, as a float.
    Index(usize),
    Unary(Unary, usize),
    Binary(Binary, usize, usize),
    Cmp(Cmp, usize, usize),
    Select(usize, usize, usize),
    /// Truncation toward zero (casts to integer types).
    Trunc(usize),
}

/// Where a loop kernel's value goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Sink {
    /// Store each element (contiguous output).
    Store(Access),
    /// Accumulate into an output whose strides are 0 on the reduced axes.
    Reduce(ReduceOp, Access),
}

/// A fused loop nest.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopKernel {
    /// Iteration extents (size-table slots), outermost first.
    pub space: Vec<Slot>,
    pub loads: Vec<Access>,
    /// The expression, in dependency order; the last node is the result.
    pub expr: Vec<Expr>,
    pub sink: Sink,
    /// The IR nodes fused into this kernel (for printing).
    pub nodes: Vec<Id>,
    /// For a reduction along the innermost axis only: an elementwise loop over the
    /// reduced shape, applied to each finished element as it is stored (load `acc` is
    /// the reduced value; see `Builder::fuse_epilogues`).
    pub epilogue: Option<Box<Epilogue>>,
}

/// A call to a runtime routine.
#[derive(Clone, Debug, PartialEq)]
pub struct CallKernel {
    /// The IR node the routine computes (its op and attributes).
    pub node: Id,
    pub args: Vec<Access>,
    /// The shapes of the arguments and of the output, as size-table slots.
    pub arg_shapes: Vec<Vec<Slot>>,
    pub out: BufId,
    pub out_shape: Vec<Slot>,
}

/// A (batched) matrix product through GEMM: `c[b] = op(a[b]) · op(b[b])`.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmKernel {
    pub node: Id,
    /// Views of the operands as `[batch…, m, k]` and `[batch…, k, n]` (transposes
    /// already folded into the strides).
    pub a: Access,
    pub b: Access,
    pub c: BufId,
    pub batch: Vec<Slot>,
    pub m: Slot,
    pub k: Slot,
    pub n: Slot,
    /// For few rows: the same product as a generated loop nest, used when
    /// `m <= SMALL_GEMM_MAX_ROWS` at run time (GEMM's packing costs more than it saves).
    pub small: Option<LoopKernel>,
    /// A fused epilogue (bias, activation, …): an elementwise loop over `[m, n]` whose
    /// load `acc` is the product. The generated small-product code applies it to its
    /// accumulators before storing; after a GEMM call it runs over the rows each part
    /// computed. Its sink, not `c`, holds the result.
    pub epilogue: Option<Box<Epilogue>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Epilogue {
    pub kernel: LoopKernel,
    pub acc: usize,
}

/// Every access a kernel reads (its epilogue's too).
pub fn reads(k: &Kernel) -> Vec<&Access> {
    fn epi(e: &Option<Box<Epilogue>>) -> Vec<&Access> {
        e.as_ref()
            .map(|e| e.kernel.loads.iter().collect())
            .unwrap_or_default()
    }
    match k {
        Kernel::Loop(l) => l.loads.iter().chain(epi(&l.epilogue)).collect(),
        Kernel::Gemm(g) => [&g.a, &g.b].into_iter().chain(epi(&g.epilogue)).collect(),
        Kernel::Call(c) => c.args.iter().collect(),
    }
}

/// Every buffer a kernel writes.
pub fn writes(k: &Kernel) -> Vec<BufId> {
    let epi = |e: &Option<Box<Epilogue>>| e.as_ref().map(|e| e.kernel.sink_access().buf);
    match k {
        Kernel::Loop(l) => [Some(l.sink_access().buf), epi(&l.epilogue)]
            .into_iter()
            .flatten()
            .collect(),
        Kernel::Gemm(g) => [Some(g.c), epi(&g.epilogue)]
            .into_iter()
            .flatten()
            .collect(),
        Kernel::Call(c) => vec![c.out],
    }
}

impl LoopKernel {
    pub fn sink_access(&self) -> &Access {
        match &self.sink {
            Sink::Store(a) | Sink::Reduce(_, a) => a,
        }
    }
}

/// Up to this many rows a matrix product runs as generated code instead of GEMM
/// (measured crossover; see BENCHMARKS.md).
pub const SMALL_GEMM_MAX_ROWS: i64 = 4;

#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    Loop(LoopKernel),
    Gemm(GemmKernel),
    Call(CallKernel),
}

/// The whole plan for one function.
#[derive(Clone, Debug)]
pub struct Plan {
    pub func: Func,
    pub sizes: Vec<Dim>,
    pub bufs: Vec<BufKind>,
    pub kernels: Vec<Kernel>,
    /// Each output's access (a view of some buffer) and shape.
    pub outputs: Vec<(Access, Vec<Slot>)>,
    /// For each buffer, the index of the last kernel that reads or writes it.
    pub last_use: Vec<usize>,
}

/// How a value is available to consumers.
#[derive(Clone, Debug)]
enum Val {
    /// In memory, through this view.
    Mem(Access),
    /// Not materialized: computed inline by consumers (an elementwise node).
    Inline,
}

struct Builder<'f> {
    f: &'f Func,
    sizes: Vec<Dim>,
    size_index: HashMap<Dim, Slot>,
    bufs: Vec<BufKind>,
    kernels: Vec<Kernel>,
    vals: Vec<Option<Val>>,
    uses: Vec<usize>,
    is_output: Vec<bool>,
    /// Patch matrices already gathered, by input node and window geometry: a
    /// convolution's kernel gradient reuses its forward pass's.
    patch_cache: HashMap<(Id, [i64; 10]), Access>,
}

fn is_elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(_)
            | Op::Binary(_)
            | Op::Cmp(_)
            | Op::Select
            | Op::Cast(_)
            | Op::Const(_)
            | Op::DimSize(_)
            | Op::Iota { .. }
    )
}

fn is_leaf_scalar(op: &Op) -> bool {
    matches!(op, Op::Const(_) | Op::DimSize(_))
}

fn row_major(shape: &[Dim]) -> Vec<Dim> {
    let mut strides = vec![Dim::konst(1); shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1]
            .mul(&shape[i + 1])
            .unwrap_or_else(|_| Dim::konst(i64::MAX));
    }
    strides
}

impl<'f> Builder<'f> {
    fn slot(&mut self, d: &Dim) -> Slot {
        if let Some(&s) = self.size_index.get(d) {
            return s;
        }
        self.sizes.push(d.clone());
        self.size_index.insert(d.clone(), self.sizes.len() - 1);
        self.sizes.len() - 1
    }

    fn shape_slots(&mut self, shape: &[Dim]) -> Vec<Slot> {
        shape.iter().map(|d| self.slot(d)).collect()
    }

    fn access(&mut self, buf: BufId, offset: &Dim, strides: &[Dim]) -> Access {
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
    fn dims_of(&self, a: &Access) -> (Dim, Vec<Dim>) {
        (
            self.sizes[a.offset].clone(),
            a.strides.iter().map(|&s| self.sizes[s].clone()).collect(),
        )
    }

    fn new_arena(&mut self, shape: &[Dim]) -> BufId {
        let len = product(shape).unwrap_or_else(|_| Dim::konst(i64::MAX));
        let len = self.slot(&len);
        self.bufs.push(BufKind::Arena { len });
        self.bufs.len() - 1
    }

    fn contiguous(&mut self, buf: BufId, shape: &[Dim]) -> Access {
        let strides = row_major(shape);
        self.access(buf, &Dim::konst(0), &strides)
    }

    /// The value of `id` in memory, materializing it if it is inline.
    fn mem(&mut self, id: Id) -> Access {
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
    fn is_contiguous(&self, a: &Access, shape: &[Dim]) -> bool {
        let (_, strides) = self.dims_of(a);
        let rm = row_major(shape);
        shape
            .iter()
            .zip(strides.iter().zip(&rm))
            .all(|(d, (s, r))| d.as_const() == Some(1) || s == r)
    }

    /// Builds the fused expression for `root` over an iteration space of `shape`.
    fn loop_kernel(&mut self, root: Id, sink: Sink, shape: &[Dim]) {
        let mut k = LoopKernel {
            space: self.shape_slots(shape),
            loads: Vec::new(),
            expr: Vec::new(),
            sink,
            nodes: Vec::new(),
            epilogue: None,
        };
        let mut memo: HashMap<Id, usize> = HashMap::new();
        self.expr(root, &mut k, &mut memo, true);
        k.nodes.sort();
        self.kernels.push(Kernel::Loop(k));
    }

    /// Appends the expression of `id` to `k` (inlining fusible producers) and returns
    /// its index.
    fn expr(
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

    fn run(mut self) -> Plan {
        let f = self.f;
        for i in 0..f.nodes.len() {
            let n = &f.nodes[i];
            let shape = n.ty.shape.clone();
            let val = match &n.op {
                Op::Input(k) => {
                    self.bufs.push(BufKind::Input(*k));
                    let b = self.bufs.len() - 1;
                    Val::Mem(self.contiguous(b, &shape))
                }
                op if is_elementwise(op) => {
                    // Inline when used exactly once, directly, by a loop consumer; and
                    // scalar leaves always. Outputs are materialized.
                    if self.is_output[i] {
                        self.vals[i] = Some(Val::Inline);
                        let buf = self.new_arena(&shape);
                        let out = self.contiguous(buf, &shape);
                        self.loop_kernel(i, Sink::Store(out.clone()), &shape);
                        Val::Mem(out)
                    } else if is_leaf_scalar(op) || self.uses[i] == 1 && self.single_loop_use(i) {
                        Val::Inline
                    } else {
                        self.vals[i] = Some(Val::Inline);
                        let buf = self.new_arena(&shape);
                        let out = self.contiguous(buf, &shape);
                        self.loop_kernel(i, Sink::Store(out.clone()), &shape);
                        Val::Mem(out)
                    }
                }
                Op::Broadcast { dims } => {
                    let x = n.args[0];
                    let xshape = f.nodes[x].ty.shape.clone();
                    if xshape.is_empty()
                        && matches!(self.vals[x], Some(Val::Inline))
                        && !self.is_output[i]
                    {
                        Val::Inline
                    } else {
                        let a = self.mem(x);
                        let (off, strides) = self.dims_of(&a);
                        let mut out = vec![Dim::konst(0); shape.len()];
                        for (j, &d) in dims.iter().enumerate() {
                            let expanded =
                                xshape[j].as_const() == Some(1) && shape[d].as_const() != Some(1);
                            out[d] = if expanded {
                                Dim::konst(0)
                            } else {
                                strides[j].clone()
                            };
                        }
                        Val::Mem(self.access(a.buf, &off, &out))
                    }
                }
                Op::Transpose { perm } => {
                    let a = self.mem(n.args[0]);
                    let (off, strides) = self.dims_of(&a);
                    let out: Vec<Dim> = perm.iter().map(|&p| strides[p].clone()).collect();
                    Val::Mem(self.access(a.buf, &off, &out))
                }
                Op::Slice { axis, start, .. } => {
                    let a = self.mem(n.args[0]);
                    let (off, strides) = self.dims_of(&a);
                    let off = off
                        .add(&start.mul(&strides[*axis]).unwrap_or_default())
                        .unwrap_or_default();
                    Val::Mem(self.access(a.buf, &off, &strides))
                }
                Op::Reshape => {
                    let x = n.args[0];
                    let xshape = f.nodes[x].ty.shape.clone();
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
                        };
                        self.kernels.push(Kernel::Loop(k));
                        a = out;
                    }
                    let (off, _) = self.dims_of(&a);
                    let strides = row_major(&shape);
                    Val::Mem(self.access(a.buf, &off, &strides))
                }
                Op::Reduce { op, axes } => {
                    let x = n.args[0];
                    let xshape = f.nodes[x].ty.shape.clone();
                    let buf = self.new_arena(&shape);
                    // Output strides over the input's axes: 0 on reduced ones.
                    let rm = row_major(&shape);
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
                        sink: Sink::Reduce(*op, out),
                        nodes: vec![i],
                        epilogue: None,
                    };
                    let mut memo = HashMap::new();
                    self.expr(x, &mut k, &mut memo, false);
                    self.kernels.push(Kernel::Loop(k));
                    let c = self.contiguous(buf, &shape);
                    Val::Mem(c)
                }
                Op::MatMul { ta, tb } => {
                    let (a, b) = (self.mem(n.args[0]), self.mem(n.args[1]));
                    let r = shape.len();
                    let swap_last = |acc: &Access| {
                        let mut t = acc.clone();
                        t.strides.swap(r - 2, r - 1);
                        t.known.swap(r - 2, r - 1);
                        t
                    };
                    let a = if *ta { swap_last(&a) } else { a };
                    let b = if *tb { swap_last(&b) } else { b };
                    let ashape = &f.nodes[n.args[0]].ty.shape;
                    let kdim = if *ta {
                        ashape[r - 2].clone()
                    } else {
                        ashape[r - 1].clone()
                    };
                    let c = self.new_arena(&shape);
                    let small = self.small_matmul(&a, &b, c, &shape, &kdim);
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
                    };
                    self.kernels.push(Kernel::Gemm(g));
                    Val::Mem(self.contiguous(c, &shape))
                }
                Op::Conv(_) | Op::ConvInputGrad(_) | Op::ConvKernelGrad(_) if self.windowed(i) => {
                    self.conv(i)
                }
                Op::Pool { .. }
                | Op::PoolGrad {
                    kind: PoolKind::Avg,
                    ..
                } if self.windowed(i) => self.pool(i),
                _ => {
                    let args: Vec<Access> = n.args.clone().iter().map(|&a| self.mem(a)).collect();
                    let arg_shapes = n
                        .args
                        .iter()
                        .map(|&a| f.nodes[a].ty.shape.clone())
                        .collect::<Vec<_>>();
                    let arg_shapes = arg_shapes.iter().map(|s| self.shape_slots(s)).collect();
                    let out = self.new_arena(&shape);
                    let out_shape = self.shape_slots(&shape);
                    self.kernels.push(Kernel::Call(CallKernel {
                        node: i,
                        args,
                        arg_shapes,
                        out,
                        out_shape,
                    }));
                    Val::Mem(self.contiguous(out, &shape))
                }
            };
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
            func: f.clone(),
            sizes: self.sizes,
            bufs: self.bufs,
            kernels: self.kernels,
            outputs,
            last_use,
        }
    }

    /// Removes axes of extent 1 from loop nests (a 1-channel convolution's patch loop
    /// would otherwise run its innermost loop once per element).
    fn drop_unit_axes(&mut self) {
        let sizes = &self.sizes;
        for k in &mut self.kernels {
            let Kernel::Loop(l) = k else { continue };
            if l.epilogue.is_some() {
                continue;
            }
            let unit: Vec<bool> = l
                .space
                .iter()
                .map(|&s| sizes[s].as_const() == Some(1))
                .collect();
            if !unit.contains(&true) {
                continue;
            }
            let keep = |a: &mut Access| {
                let mut d = 0;
                a.strides.retain(|_| (!unit[d], d += 1).0);
                let mut d = 0;
                a.known.retain(|_| (!unit[d], d += 1).0);
            };
            for a in &mut l.loads {
                keep(a);
            }
            match &mut l.sink {
                Sink::Store(a) | Sink::Reduce(_, a) => keep(a),
            }
            let renumber: Vec<usize> = (0..unit.len())
                .map(|d| unit[..d].iter().filter(|&&u| !u).count())
                .collect();
            for e in &mut l.expr {
                if let Expr::Index(ax) = *e {
                    *e = if unit[ax] {
                        Expr::Const(0.0)
                    } else {
                        Expr::Index(renumber[ax])
                    };
                }
            }
            let mut d = 0;
            l.space.retain(|_| (!unit[d], d += 1).0);
        }
    }

    /// Folds an elementwise loop that consumes a matrix product element for element
    /// into the product as its epilogue (bias and activation after a dense layer): the
    /// loop must be the product's only reader, run over exactly `[m, n]`, store
    /// contiguously, read its other operands with unit or zero inner strides, and
    /// nothing between the two may write what the loop reads.
    ///
    /// Likewise a loop over a reduction's result that reads it element for element
    /// becomes the reduction's epilogue when the reduction runs along the innermost
    /// axis only (each output element is finished when its row is).
    fn fuse_epilogues(&mut self, outputs: &[(Access, Vec<Slot>)]) {
        let mut i = 0;
        while i < self.kernels.len() {
            let found = match &self.kernels[i] {
                Kernel::Gemm(_) => self.epilogue_for(i, outputs),
                Kernel::Loop(_) => self.reduce_epilogue_for(i, outputs),
                Kernel::Call(_) => None,
            };
            if let Some((j, acc)) = found {
                let Kernel::Loop(l) = self.kernels.remove(j) else {
                    unreachable!("epilogues are loop kernels")
                };
                let e = Some(Box::new(Epilogue { kernel: l, acc }));
                match &mut self.kernels[i] {
                    Kernel::Gemm(g) => g.epilogue = e,
                    Kernel::Loop(r) => r.epilogue = e,
                    Kernel::Call(_) => {}
                }
            }
            i += 1;
        }
    }

    /// The only reader of buffer `b`, if it is a loop kernel after `i` and `b` is not a
    /// function output.
    fn sole_loop_reader(
        &self,
        i: usize,
        b: BufId,
        outputs: &[(Access, Vec<Slot>)],
    ) -> Option<usize> {
        if outputs.iter().any(|(a, _)| a.buf == b) {
            return None;
        }
        let readers: Vec<usize> = (0..self.kernels.len())
            .filter(|&k| reads(&self.kernels[k]).iter().any(|a| a.buf == b))
            .collect();
        let [j] = readers[..] else { return None };
        match &self.kernels[j] {
            Kernel::Loop(l) if j > i && l.epilogue.is_none() => Some(j),
            _ => None,
        }
    }

    /// Whether loop kernel `j` can move up to run as part of kernel `i`: nothing in
    /// between writes what it reads or where it stores.
    fn movable(&self, i: usize, j: usize) -> bool {
        let Kernel::Loop(l) = &self.kernels[j] else {
            return false;
        };
        self.kernels[i + 1..j].iter().all(|k| {
            writes(k)
                .into_iter()
                .all(|w| w != l.sink_access().buf && l.loads.iter().all(|a| a.buf != w))
        })
    }

    fn reduce_epilogue_for(
        &self,
        i: usize,
        outputs: &[(Access, Vec<Slot>)],
    ) -> Option<(usize, usize)> {
        let Kernel::Loop(r) = &self.kernels[i] else {
            return None;
        };
        let Sink::Reduce(_, out) = &r.sink else {
            return None;
        };
        let rank = r.space.len();
        // Reduced along the innermost axis only.
        if rank == 0
            || out.known[rank - 1] != Some(0)
            || out.known[..rank - 1].contains(&Some(0))
            || r.epilogue.is_some()
        {
            return None;
        }
        let j = self.sole_loop_reader(i, out.buf, outputs)?;
        let Kernel::Loop(l) = &self.kernels[j] else {
            return None;
        };
        let accs: Vec<usize> = (0..l.loads.len())
            .filter(|&x| l.loads[x].buf == out.buf)
            .collect();
        let [acc] = accs[..] else { return None };
        let a = &l.loads[acc];
        let ok = l.space[..] == r.space[..rank - 1]
            && matches!(l.sink, Sink::Store(_))
            && a.offset == out.offset
            && a.strides[..] == out.strides[..rank - 1]
            && self.movable(i, j);
        ok.then_some((j, acc))
    }

    fn epilogue_for(&self, i: usize, outputs: &[(Access, Vec<Slot>)]) -> Option<(usize, usize)> {
        let Kernel::Gemm(g) = &self.kernels[i] else {
            return None;
        };
        if !g.batch.is_empty() {
            return None;
        }
        let j = self.sole_loop_reader(i, g.c, outputs)?;
        let Kernel::Loop(l) = &self.kernels[j] else {
            return None;
        };
        let n = &self.sizes[g.n];
        let identity = |a: &Access| {
            self.sizes[a.offset].as_const() == Some(0)
                && a.strides.len() == 2
                && self.sizes[a.strides[0]] == *n
                && a.known[1] == Some(1)
        };
        let Sink::Store(sink) = &l.sink else {
            return None;
        };
        let accs: Vec<usize> = (0..l.loads.len())
            .filter(|&x| l.loads[x].buf == g.c)
            .collect();
        let [acc] = accs[..] else { return None };
        let ok = l.space == [g.m, g.n]
            && identity(sink)
            && identity(&l.loads[acc])
            && l.loads
                .iter()
                .all(|a| matches!(a.known[1], Some(0) | Some(1)))
            && l.expr
                .iter()
                .all(|e| !matches!(e, Expr::Index(_) | Expr::Size(_)))
            && self.movable(i, j);
        ok.then_some((j, acc))
    }

    /// Pushes a loop that copies `src` to `dst` over `shape`.
    fn copy_loop(&mut self, shape: &[Dim], src: Access, dst: Access, nodes: Vec<Id>) {
        self.push_loop(shape, |space| LoopKernel {
            space,
            loads: vec![src],
            expr: vec![Expr::Load(0)],
            sink: Sink::Store(dst),
            nodes,
            epilogue: None,
        });
    }

    /// Pushes a loop kernel over `shape` (built with its slots).
    fn push_loop(&mut self, shape: &[Dim], k: impl FnOnce(Vec<Slot>) -> LoopKernel) {
        let space = self.shape_slots(shape);
        self.kernels.push(Kernel::Loop(k(space)));
    }

    /// A value as a `[rows, cols]` matrix view (copied to contiguous memory first when
    /// its layout doesn't allow one).
    fn matrix(&mut self, id: Id, cols: &Dim) -> Access {
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
            });
            a = out;
        }
        let (off, _) = self.dims_of(&a);
        self.access(a.buf, &off, &[cols.clone(), Dim::konst(1)])
    }

    /// Pushes `c = a · b` (2-D views) as a GEMM kernel, with the generated loop for few
    /// rows; `c` is a new contiguous `[m, n]` buffer.
    fn gemm2(&mut self, node: Id, a: Access, b: Access, m: &Dim, k: &Dim, n: &Dim) -> BufId {
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
        };
        self.kernels.push(Kernel::Gemm(g));
        c
    }

    /// A matrix product as a loop nest: `[batch…, m, k, n]` with `n` innermost when B's
    /// rows are contiguous (an axpy per row of A), or `[batch…, m, n, k]` with `k`
    /// innermost when both operands are contiguous along `k` (dot products).
    fn small_matmul(
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
        })
    }

    /// Is the single use of `id` a direct operand of an elementwise op or a reduce?
    fn single_loop_use(&self, id: Id) -> bool {
        self.f.nodes.iter().any(|n| {
            n.args.contains(&id) && (is_elementwise(&n.op) || matches!(n.op, Op::Reduce { .. }))
        })
    }
}

fn push_expr(expr: &mut Vec<Expr>, e: Expr) -> usize {
    expr.push(e);
    expr.len() - 1
}

fn push(k: &mut LoopKernel, e: Expr) -> usize {
    k.expr.push(e);
    k.expr.len() - 1
}

/// Plans `f` (which should already have been through the graph passes).
pub fn plan(f: &Func) -> Plan {
    let mut uses = vec![0usize; f.nodes.len()];
    for n in &f.nodes {
        for &a in &n.args {
            uses[a] += 1;
        }
    }
    let mut is_output = vec![false; f.nodes.len()];
    for (_, o) in &f.outputs {
        is_output[*o] = true;
        uses[*o] += 1;
    }
    let b = Builder {
        f,
        sizes: Vec::new(),
        size_index: HashMap::new(),
        bufs: Vec::new(),
        kernels: Vec::new(),
        vals: vec![None; f.nodes.len()],
        uses,
        is_output,
        patch_cache: HashMap::new(),
    };
    b.run()
}

impl Plan {
    /// Is `a` a plain row-major view of a whole buffer with `shape`?
    fn whole_contiguous(&self, a: &Access, shape: &[Dim]) -> bool {
        let rm = row_major(shape);
        self.sizes[a.offset].as_const() == Some(0)
            && a.strides
                .iter()
                .zip(shape.iter().zip(&rm))
                .all(|(&s, (d, r))| d.as_const() == Some(1) || self.sizes[s] == *r)
    }

    /// Lets outputs be written straight into the memory of inputs the caller donates
    /// (`(input, output)` pairs, e.g. a parameter and its updated value): the in-place
    /// optimizer update. A pair is accepted only when it is safe: the output is a whole
    /// contiguous buffer of the input's shape, written by one elementwise loop that reads
    /// the input (if at all) at the very element it writes, and nothing later reads the
    /// input. Returns the accepted pairs.
    pub fn donate(&mut self, pairs: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let mut accepted = Vec::new();
        for &(inp, out) in pairs {
            let Some(bi) = self.bufs.iter().position(|b| *b == BufKind::Input(inp)) else {
                continue;
            };
            let Some((oa, _)) = self.outputs.get(out).cloned() else {
                continue;
            };
            let bo = oa.buf;
            if !matches!(self.bufs[bo], BufKind::Arena { .. })
                || accepted.iter().any(|&(i, _)| i == inp)
            {
                continue;
            }
            let out_node = self.func.outputs[out].1;
            let shape = self.func.nodes[out_node].ty.shape.clone();
            if self.func.inputs[inp].ty.shape != shape || !self.whole_contiguous(&oa, &shape) {
                continue;
            }
            let writers: Vec<usize> = (0..self.kernels.len())
                .filter(|&j| writes(&self.kernels[j]).contains(&bo))
                .collect();
            let [k] = writers[..] else { continue };
            let Kernel::Loop(l) = &self.kernels[k] else {
                continue;
            };
            if l.epilogue.is_some() {
                continue;
            }
            let Sink::Store(sink) = &l.sink else { continue };
            let same_element = |a: &Access| a.offset == sink.offset && a.strides == sink.strides;
            let safe = self.kernels.iter().enumerate().all(|(j, kern)| {
                reads(kern)
                    .into_iter()
                    .filter(|a| a.buf == bi)
                    .all(|a| j < k || (j == k && same_element(a)))
            }) && self
                .outputs
                .iter()
                .enumerate()
                .all(|(o, (a, _))| o == out || a.buf != bi);
            if safe {
                self.bufs[bo] = BufKind::Input(inp);
                accepted.push((inp, out));
            }
        }
        accepted
    }

    fn fmt_access(&self, a: &Access) -> String {
        let strides: Vec<String> = a
            .strides
            .iter()
            .map(|&s| self.sizes[s].to_string())
            .collect();
        let off = &self.sizes[a.offset];
        let off = if off.as_const() == Some(0) {
            String::new()
        } else {
            format!("+{off}")
        };
        format!("b{}{off}[{}]", a.buf, strides.join(","))
    }

    fn print_epilogue(&self, s: &mut String, e: &Epilogue, what: &str) {
        let l = &e.kernel;
        let nodes: Vec<String> = l.nodes.iter().map(|n| format!("%{n}")).collect();
        let _ = writeln!(
            s,
            "      epilogue fuses {} -> store {} (load{} = {what})",
            nodes.join(" "),
            self.fmt_access(l.sink_access()),
            e.acc
        );
        for (j, a) in l.loads.iter().enumerate() {
            let _ = writeln!(s, "      load{j} = {}", self.fmt_access(a));
        }
        let ops: Vec<String> = l.expr.iter().map(|e| format!("{e:?}")).collect();
        let _ = writeln!(s, "      expr {}", ops.join("; "));
    }

    /// The textual form printed by `kiln ir --stage kernels`.
    pub fn print(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "plan @{} ({} kernels, {} buffers)",
            self.func.name,
            self.kernels.len(),
            self.bufs.len()
        );
        for (i, b) in self.bufs.iter().enumerate() {
            match b {
                BufKind::Input(k) => {
                    let _ = writeln!(s, "  b{i} = input \"{}\"", self.func.inputs[*k].name);
                }
                BufKind::Arena { len } => {
                    let _ = writeln!(s, "  b{i} = arena[{}]", self.sizes[*len]);
                }
            }
        }
        let shape = |slots: &[Slot]| {
            slots
                .iter()
                .map(|&x| self.sizes[x].to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (i, k) in self.kernels.iter().enumerate() {
            match k {
                Kernel::Loop(l) => {
                    let sink = match &l.sink {
                        Sink::Store(a) => format!("store {}", self.fmt_access(a)),
                        Sink::Reduce(op, a) => format!(
                            "reduce_{} {}",
                            format!("{op:?}").to_lowercase(),
                            self.fmt_access(a)
                        ),
                    };
                    let nodes: Vec<String> = l.nodes.iter().map(|n| format!("%{n}")).collect();
                    let _ = writeln!(
                        s,
                        "  k{i}: loop [{}] fuses {} -> {sink}",
                        shape(&l.space),
                        nodes.join(" ")
                    );
                    for (j, a) in l.loads.iter().enumerate() {
                        let _ = writeln!(s, "      load{j} = {}", self.fmt_access(a));
                    }
                    let ops: Vec<String> = l.expr.iter().map(|e| format!("{e:?}")).collect();
                    let _ = writeln!(s, "      expr {}", ops.join("; "));
                    if let Some(e) = &l.epilogue {
                        self.print_epilogue(&mut s, e, "the reduced value");
                    }
                }
                Kernel::Gemm(g) => {
                    let _ = writeln!(
                        s,
                        "  k{i}: gemm %{} batch [{}] m={} k={} n={}: {} x {} -> b{} (matrixmultiply{})",
                        g.node,
                        shape(&g.batch),
                        self.sizes[g.m],
                        self.sizes[g.k],
                        self.sizes[g.n],
                        self.fmt_access(&g.a),
                        self.fmt_access(&g.b),
                        g.c,
                        if g.small.is_some() {
                            format!("; generated loop when m <= {SMALL_GEMM_MAX_ROWS}")
                        } else {
                            String::new()
                        }
                    );
                    if let Some(e) = &g.epilogue {
                        self.print_epilogue(&mut s, e, "the product");
                    }
                }
                Kernel::Call(c) => {
                    let args: Vec<String> = c.args.iter().map(|a| self.fmt_access(a)).collect();
                    let op = format!("{:?}", self.func.nodes[c.node].op);
                    let op = op
                        .split(['(', ' ', '{'])
                        .next()
                        .unwrap_or("")
                        .to_lowercase();
                    let _ = writeln!(
                        s,
                        "  k{i}: call {op} %{}({}) -> b{} [{}]",
                        c.node,
                        args.join(", "),
                        c.out,
                        shape(&c.out_shape)
                    );
                }
            }
        }
        let outs: Vec<String> = self
            .func
            .outputs
            .iter()
            .zip(&self.outputs)
            .map(|((n, _), (a, _))| format!("\"{n}\" = {}", self.fmt_access(a)))
            .collect();
        let _ = writeln!(s, "  return {}", outs.join(", "));
        s
    }
}
