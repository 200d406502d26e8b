//! The frame the native code reads (the evaluated size table, one pointer per buffer,
//! the symbol environment), the descriptors it hands to runtime routines, and the
//! per-call state those routines share (the call's id and the first error raised).

use std::cell::{Cell, RefCell};
use std::sync::atomic::AtomicUsize;

use ndarray::{ArrayD, IxDyn};

use super::plan::{self, Access};
use crate::ir::Node;

/// What a runtime routine needs: the frame's layout and its operands' descriptions.
pub(super) struct Desc {
    pub(super) fl: FrameLayout,
    pub(super) kind: DescKind,
    /// A GEMM's epilogue function `(local frame, row_lo, row_hi)` for each product of
    /// the call, once finalized (0: none), and where its local frame starts in the
    /// frame.
    pub(super) epilogues: Vec<(AtomicUsize, usize)>,
}

pub(super) enum DescKind {
    Gemm(plan::GemmKernel),
    Call { node: Node, call: plan::CallKernel },
    Attention(plan::AttnKernel),
    Norm(plan::NormKernel),
    None,
}

/// Layout of the frame the native function reads.
#[derive(Clone, Copy)]
pub(super) struct FrameLayout {
    pub(super) sizes: usize,
    pub(super) bufs: usize,
}

impl FrameLayout {
    pub(super) fn env_slot(&self) -> usize {
        self.sizes + self.bufs
    }
    pub(super) fn len(&self) -> usize {
        self.sizes + self.bufs + 2
    }
}

thread_local! {
    /// Counts this thread's calls into compiled code (keys per-call caches).
    pub(super) static CALL_ID: Cell<u64> = const { Cell::new(0) };
    /// An error raised inside a runtime routine during the current call.
    pub(super) static CALL_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records the first error of the current call (the call returns it as a `RunError`).
pub(super) fn set_error(msg: String) {
    CALL_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        if e.is_none() {
            *e = Some(msg);
        }
    });
}

/// A runtime routine's body (`kiln_gemm`, `kiln_attention`, `kiln_norm`) on its
/// descriptor and the frame, an error it returns, a `false` (a part panicked) or a panic
/// of its own recorded as the call's error, naming `what`.
pub(super) fn guarded(
    frame: *mut i64,
    desc: *const Desc,
    what: &str,
    body: impl FnOnce(&Desc, &[i64]) -> Result<bool, String>,
) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `desc` points at a descriptor owned by the running kernel.
        let d = unsafe { &*desc };
        // SAFETY: the frame has `fl.len()` slots, written by `run` for this call.
        let frame = unsafe { std::slice::from_raw_parts(frame, d.fl.len()) };
        body(d, frame)
    }));
    match r {
        Ok(Ok(true)) => {}
        Ok(Err(e)) => set_error(e),
        Ok(Ok(false)) | Err(_) => set_error(format!("a panic inside {what}")),
    }
}

/// Whether `strides` are row-major `shape`'s (axes of size 1 aside).
pub(super) fn contiguous(strides: &[i64], shape: &[usize]) -> bool {
    let mut expect = 1i64;
    for d in (0..shape.len()).rev() {
        if shape[d] != 1 && strides[d] != expect {
            return false;
        }
        expect *= shape[d] as i64;
    }
    true
}

/// Copies a strided view out of raw memory into an owned array (a straight copy when
/// the view is contiguous, else an odometer over the axes).
///
/// # Safety
/// `base` must point to memory covering every element the access reaches.
pub(super) unsafe fn gather(
    base: *const f32,
    offset: i64,
    strides: &[i64],
    shape: &[usize],
) -> Result<ArrayD<f32>, crate::exec::RunError> {
    let n: usize = shape.iter().product();
    let mut out = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| super::run::out_of_memory(n))?;
    if contiguous(strides, shape) {
        // SAFETY: a contiguous access covers `n` elements from `offset`.
        let src = unsafe { std::slice::from_raw_parts(base.offset(offset as isize), n) };
        out.extend_from_slice(src);
    } else if n > 0 {
        let r = shape.len();
        let mut ix = vec![0usize; r];
        let mut o = offset;
        for _ in 0..n {
            // SAFETY: every index stays within the access (caller's contract).
            out.push(unsafe { *base.offset(o as isize) });
            // Advance the odometer.
            let mut d = r;
            while d > 0 {
                d -= 1;
                ix[d] += 1;
                o += strides[d];
                if ix[d] < shape[d] {
                    break;
                }
                o -= strides[d] * shape[d] as i64;
                ix[d] = 0;
            }
        }
    }
    Ok(ArrayD::from_shape_vec(IxDyn(shape), out).expect("element count matches the shape"))
}

/// An operand read in place when its access is contiguous (row-major, unit-size axes
/// ignored), else [`gather`]ed into an owned copy.
///
/// # Safety
/// As [`gather`]; the memory must also stay valid and unwritten for `'a`.
pub(super) unsafe fn operand<'a>(
    base: *const f32,
    offset: i64,
    strides: &[i64],
    shape: &[usize],
) -> Result<ndarray::CowArray<'a, f32, IxDyn>, crate::exec::RunError> {
    let n: usize = shape.iter().product();
    if !base.is_null() && n > 0 && contiguous(strides, shape) {
        // SAFETY: a contiguous access covers `n` elements from `offset` (caller's
        // contract), row-major in `shape`.
        let view = unsafe {
            ndarray::ArrayView::from_shape_ptr(IxDyn(shape), base.offset(offset as isize))
        };
        Ok(view.into())
    } else {
        // SAFETY: the caller's contract.
        Ok(unsafe { gather(base, offset, strides, shape) }?.into())
    }
}

/// An access's buffer pointer, offset and strides, read from the frame.
pub(super) fn access_parts(
    frame: &[i64],
    fl: FrameLayout,
    a: &Access,
) -> (*const f32, i64, Vec<i64>) {
    let base = frame[fl.sizes + a.buf] as *const f32;
    let strides = a.strides.iter().map(|&s| frame[s]).collect();
    (base, frame[a.offset], strides)
}
