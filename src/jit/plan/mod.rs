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

//!
//! Rooms: this file holds the plan's data (accesses, expressions, kernels) and the
//! builder's state; `build` walks the graph, `views` turns views into strided accesses,
//! `gemm` plans matrix products, `window` convolutions and pooling, `fuse` the passes
//! over the finished kernel list (epilogues, unit axes), `merge` products of one A into
//! one call, `stores` loops that feed each other into one nest with several stores,
//! `columns` column reductions split into blocks the team can share, `donate` in-place
//! updates and
//! `print` the textual form.

use std::collections::HashMap;

use crate::dim::{Dim, product};
use crate::ir::{Binary, Cmp, Func, Id, Op, PoolKind, ReduceOp, Unary};

pub use attention::{AttnGrad, AttnKernel, Stage};
pub use norm::{NormKernel, NormPart};

mod attention;
mod build;
mod columns;
mod donate;
mod fuse;
mod gemm;
mod merge;
mod norm;
mod print;
mod stores;
mod views;
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
    /// With a `Store` sink: more values the nest stores element for element besides its
    /// result (loops merged into this one, `stores.rs`).
    pub also: Vec<Store>,
}

/// One more store of a loop nest: the value of expression node `node`, stored through
/// `access` (over the nest's space, like the sink).
#[derive(Clone, Debug, PartialEq)]
pub struct Store {
    pub node: usize,
    pub access: Access,
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
    /// Further products of the same A (same rows and `k`) run in this call
    /// (`merge.rs`): A is read once for all of them.
    pub also: Vec<GemmCols>,
}

/// One more product of a [`GemmKernel`]'s A: its own B (`[k, n]`), output and
/// epilogue, as in the kernel's own fields.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmCols {
    pub node: Id,
    pub b: Access,
    pub c: BufId,
    pub n: Slot,
    pub small: Option<LoopKernel>,
    pub epilogue: Option<Box<Epilogue>>,
}

impl GemmKernel {
    /// Every product of the call, this kernel's own first (each as [`GemmCols`]).
    pub fn groups(&self) -> Vec<GemmCols> {
        let own = GemmCols {
            node: self.node,
            b: self.b.clone(),
            c: self.c,
            n: self.n,
            small: self.small.clone(),
            epilogue: self.epilogue.clone(),
        };
        std::iter::once(own)
            .chain(self.also.iter().cloned())
            .collect()
    }
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
        Kernel::Gemm(g) => [&g.a, &g.b]
            .into_iter()
            .chain(epi(&g.epilogue))
            .chain(
                g.also
                    .iter()
                    .flat_map(|c| [&c.b].into_iter().chain(epi(&c.epilogue))),
            )
            .collect(),
        Kernel::Call(c) => c.args.iter().collect(),
        Kernel::Norm(n) => [&n.x].into_iter().chain(&n.gamma).chain(&n.beta).collect(),
        Kernel::Attention(a) => {
            let g = a.grad.iter().flat_map(|g| [&g.g, &g.max, &g.sum]);
            [&a.q, &a.k, &a.v].into_iter().chain(g).collect()
        }
    }
}

/// Every buffer a kernel writes.
pub fn writes(k: &Kernel) -> Vec<BufId> {
    let epi = |e: &Option<Box<Epilogue>>| e.as_ref().map(|e| e.kernel.sink_access().buf);
    match k {
        Kernel::Loop(l) => [Some(l.sink_access().buf), epi(&l.epilogue)]
            .into_iter()
            .flatten()
            .chain(l.also.iter().map(|s| s.access.buf))
            .collect(),
        Kernel::Gemm(g) => [Some(g.c), epi(&g.epilogue)]
            .into_iter()
            .chain(g.also.iter().flat_map(|c| [Some(c.c), epi(&c.epilogue)]))
            .flatten()
            .collect(),
        Kernel::Call(c) => vec![c.out],
        Kernel::Norm(n) => std::iter::once(n.out.buf)
            .chain(n.stores.iter().map(|s| s.1.buf))
            .collect(),
        Kernel::Attention(a) => std::iter::once(a.out.buf)
            .chain(a.stores.iter().map(|s| s.1))
            .chain(a.grad.iter().flat_map(|g| [g.dk.buf, g.dv.buf]))
            .collect(),
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
    /// Scaled dot-product attention, softmax fused (`attention.rs`).
    Attention(AttnKernel),
    /// Layer normalization over the last axis, one row at a time (`norm.rs`).
    Norm(NormKernel),
}

impl Kernel {
    /// What stands in the place of a kernel a pass folded into another (fusion,
    /// merging) until the pass ends and drops it; never run.
    fn removed() -> Kernel {
        Kernel::Call(CallKernel {
            node: 0,
            args: Vec::new(),
            arg_shapes: Vec::new(),
            out: 0,
            out_shape: Vec::new(),
        })
    }
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
    /// Whether some elementwise op or reduction takes the node as a direct operand.
    loop_use: Vec<bool>,
    /// Whether every reader of the node takes it as a direct operand of an
    /// elementwise op or a reduction (and it is no output).
    only_loop_uses: Vec<bool>,
    /// Patch matrices already gathered, by input node and window geometry: a
    /// convolution's kernel gradient reuses its forward pass's.
    patch_cache: HashMap<(Id, Vec<i64>), Access>,
    /// Whether scaled dot-product attention and layer normalization become kernels that
    /// run as Rust code in the process (not in an object file).
    fuse_attention: bool,
    /// Each node's readers (built by the attention matcher on first use).
    users: Vec<Vec<Id>>,
    /// Nodes an attention kernel already computed (the walk skips them).
    attn_done: Vec<bool>,
    /// Backward chains matched with their forward kernels, still to be planned.
    attn_grads: Vec<attention::PendingGrad>,
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
    let mut p = plan_parts(f, true);
    p.func = f.clone();
    p
}

/// Like [`plan`], keeping `f` itself in the plan instead of a copy.
pub fn plan_owned(f: Func) -> Plan {
    let mut p = plan_parts(&f, true);
    p.func = f;
    p
}

/// Like [`plan`] without the kernels that run as Rust code in the process (the fused
/// attention kernel): for an object file, which has only generated code.
pub fn plan_generated(f: &Func) -> Plan {
    let mut p = plan_parts(f, false);
    p.func = f.clone();
    p
}

/// The plan of `f` without the function itself; attention fused into one kernel when
/// `fuse_attention`.
fn plan_parts(f: &Func, fuse_attention: bool) -> Plan {
    let mut uses = vec![0usize; f.nodes.len()];
    let mut loop_use = vec![false; f.nodes.len()];
    let mut only_loop_uses = vec![true; f.nodes.len()];
    for n in &f.nodes {
        let in_loop = is_elementwise(&n.op) || matches!(n.op, Op::Reduce { .. });
        for &a in &n.args {
            uses[a] += 1;
            loop_use[a] |= in_loop;
            only_loop_uses[a] &= in_loop;
        }
    }
    let mut is_output = vec![false; f.nodes.len()];
    for (_, o) in &f.outputs {
        is_output[*o] = true;
        only_loop_uses[*o] = false;
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
        loop_use,
        only_loop_uses,
        patch_cache: HashMap::new(),
        users: Vec::new(),
        attn_done: vec![false; f.nodes.len()],
        attn_grads: Vec::new(),
        fuse_attention,
    };
    b.run()
}
