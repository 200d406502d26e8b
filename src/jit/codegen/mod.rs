//! CLIF emission: one native function per distinct kernel, `fn(frame, lo, hi)` over a
//! range of its outermost axis (a small product: of its columns).
//!
//! The frame a kernel function reads is its local frame (see `jit::local`): the size
//! table values it uses (slots `0..sizes`), then one pointer per buffer it touches.
//! Loop kernels are loop nests whose innermost axis runs in f32x4 lanes (unrolled
//! twice) with a scalar tail; values that do not change along the inner axis are
//! hoisted out of it. The run (`jit::steps`) calls these functions, GEMM and the
//! runtime routines in the plan's order.
//!
//! Rooms: this file holds the generator's state and frame access; `loops` counted
//! loops, `nest` loop kernels as loop nests, `small_gemm` products with few rows,
//! `expr` the fused expressions, `rnn_cell` and `rnn_grad` recurrent layers' steps
//! forward and backward.

use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::plan::{Access, Epilogue, LoopKernel, Sink};
use crate::ir::ReduceOp;

mod expr;
mod loops;
mod nest;
mod rnn_cell;
mod rnn_grad;
mod small_gemm;

pub use rnn_cell::{CellAct, CellKind, CellSpec, arg as rnn_arg};
pub use rnn_grad::arg as rnn_grad_arg;

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// A load from the local frame (sizes, strides, buffer pointers), which no kernel
/// function writes: read-only and free to move, so Cranelift hoists it out of loops and
/// loads each slot once.
fn frame_flags() -> MemFlagsData {
    flags().with_readonly().with_can_move()
}

pub struct Gen<'b> {
    pub b: FunctionBuilder<'b>,
    /// Size-table slots in the (local) frame; the buffer pointers follow them.
    pub sizes: usize,
    pub frame: Value,
    pub ptr: Type,
    /// The host has FMA: products accumulated into sums fuse into one instruction.
    pub fma: bool,
    /// In a kernel function: the range of the outermost axis it covers.
    pub range: Option<(Value, Value)>,
}

/// Is a small-product loop kernel in the `[batch…, m, k, n]` form with B and C
/// contiguous along `n` (what `emit_small_gemm` handles)?
pub fn is_axpy_form(k: &LoopKernel) -> bool {
    let r = k.space.len();
    let Sink::Reduce(ReduceOp::Sum, c) = &k.sink else {
        return false;
    };
    r >= 3
        && k.loads.len() == 2
        && k.loads[0].known[r - 1] == Some(0)
        && k.loads[1].known[r - 1] == Some(1)
        && c.known[r - 1] == Some(1)
        && c.known[r - 2] == Some(0)
}

/// Loop kernels with at least this many elements are split across cores.
pub const PARALLEL_MIN_ELEMENTS: i64 = 1 << 14;

/// Small products with at least this many multiply-adds are split across cores (by
/// columns).
pub const SMALL_GEMM_PARALLEL_MIN_MACS: i64 = 1 << 14;

/// Can a loop kernel run its outermost axis in parallel? Stores always can; reductions
/// only when the outermost axis is kept (each part writes its own outputs).
pub fn splittable(k: &LoopKernel) -> bool {
    k.space.len() >= 2
        && match &k.sink {
            Sink::Store(_) => true,
            Sink::Reduce(_, a) => a.known[0] != Some(0),
        }
}

/// Unroll factor of the vector loop (in f32x4 vectors).
const UNROLL: i64 = 2;

impl Gen<'_> {
    fn slot(&mut self, s: usize) -> Value {
        self.b
            .ins()
            .load(types::I64, frame_flags(), self.frame, (s * 8) as i32)
    }
    fn buf_ptr(&mut self, buf: usize) -> Value {
        let off = (self.sizes + buf) * 8;
        self.b
            .ins()
            .load(self.ptr, frame_flags(), self.frame, off as i32)
    }
    /// The address of an access's first element (its buffer at its offset).
    fn base(&mut self, a: &Access) -> Value {
        let p = self.buf_ptr(a.buf);
        let off = self.slot(a.offset);
        let bytes = self.b.ins().ishl_imm_u(off, 2);
        self.b.ins().iadd(p, bytes)
    }

    /// `p` advanced to the outer indices `idx` of access `a` (axes with a known zero
    /// stride skipped).
    fn advance(&mut self, mut p: Value, a: &Access, idx: &[Value]) -> Value {
        for (d, &i) in idx.iter().enumerate() {
            if a.known[d] == Some(0) {
                continue;
            }
            let s = self.stride(a, d);
            let t = self.b.ins().imul(i, s);
            let bytes = self.b.ins().ishl_imm_u(t, 2);
            p = self.b.ins().iadd(p, bytes);
        }
        p
    }

    /// A stride as a value: a constant when known statically.
    fn stride(&mut self, a: &Access, axis: usize) -> Value {
        match a.known[axis] {
            Some(k) => self.b.ins().iconst(types::I64, k),
            None => self.slot(a.strides[axis]),
        }
    }

    /// The body of a small-product kernel function: its columns `self.range`.
    pub fn emit_small_gemm_fn(&mut self, k: &LoopKernel, epi: Option<&Epilogue>) {
        self.emit_small_gemm(k, epi);
        self.b.ins().return_(&[]);
    }

    /// The body of a kernel function: the loop nest over `self.range`.
    pub fn emit_kernel_fn(&mut self, k: &LoopKernel) {
        self.emit_loop_nest(k);
        self.b.ins().return_(&[]);
    }
}
