//! The plan's kernels in order, as the run executes them: each loop kernel (and each
//! small product) through its compiled function on its local frame, directly or split
//! across the thread team by the parallel trampoline; matrix products through GEMM;
//! other primitives through their runtime routine. Walking this list is what the
//! generated entry function used to do; as data, it costs no compile time, so compile
//! time grows with the number of *distinct* kernels, not with the model.

use super::adapt::{self, Adapt};
use super::attention::kiln_attention;
use super::codegen::{PARALLEL_MIN_ELEMENTS, SMALL_GEMM_PARALLEL_MIN_MACS};
use super::frame::Desc;
use super::norm::kiln_norm;
use super::plan::{BufId, SMALL_GEMM_MAX_ROWS, Slot};
use super::routine::kiln_call;
use super::team;
use super::trampoline::{kiln_gemm, kiln_parallel};

/// A compiled kernel function `(local frame, lo, hi)` and where its local frame starts
/// in the whole frame.
#[derive(Clone, Copy, Debug)]
pub(super) struct KernelFn {
    /// Index of the function among the module's distinct functions (its address once
    /// finalized, in [`Steps::addrs`]).
    pub(super) func: usize,
    pub(super) local: usize,
}

/// A reduction's output filled with its identity before the loop accumulates into it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Init {
    pub(super) buf: BufId,
    /// The buffer's length (size-table slot).
    pub(super) len: Slot,
    pub(super) value: f32,
}

#[derive(Clone, Debug)]
pub(super) enum Small {
    /// The few-rows product as a function over a range of columns (epilogue included);
    /// the extents of its `[batch…, m, k, n]` space.
    Columns { f: KernelFn, space: Vec<Slot> },
    /// The few-rows product as a whole loop nest (extents `space`), then its epilogue
    /// (if any) over rows `0..m`.
    Nest {
        f: KernelFn,
        init: Option<Init>,
        space: Vec<Slot>,
        epilogue: Option<KernelFn>,
    },
}

#[derive(Clone, Debug)]
pub(super) enum Step {
    /// A loop nest over `space` (extents, outermost first): split over its outermost
    /// axis across the team when `split` and it has at least `PARALLEL_MIN_ELEMENTS`
    /// elements, else one call over the whole outermost axis.
    Loop {
        f: KernelFn,
        init: Option<Init>,
        space: Vec<Slot>,
        split: bool,
    },
    /// A product (or several of one A): GEMM (descriptor of kernel `desc`), or the
    /// generated code, one per product, when there are at most `SMALL_GEMM_MAX_ROWS`
    /// rows (`m`) and it has some.
    Gemm {
        desc: usize,
        small: Option<(Slot, Vec<Small>)>,
        /// Each product's fused epilogue function (the addresses go into the
        /// descriptor).
        epilogues: Vec<Option<usize>>,
    },
    Call {
        desc: usize,
    },
    /// A fused attention kernel (`jit::attention`), described by descriptor `desc`.
    Attention {
        desc: usize,
    },
    /// A layer normalization kernel (`jit::norm`), described by descriptor `desc`.
    Norm {
        desc: usize,
    },
}

/// The steps of one compiled plan and what they need.
pub(super) struct Steps {
    pub(super) steps: Vec<Step>,
    /// The distinct kernel functions' addresses (after finalization).
    pub(super) addrs: Vec<usize>,
    /// The whole frame's length before the local frames.
    pub(super) frame_len: usize,
    /// Where each local frame slot is copied from (local frames follow the frame).
    pub(super) local_map: Vec<usize>,
    /// Number of size-table slots in the frame (buffer pointers follow them).
    pub(super) sizes: usize,
    /// Whether a call's steps share their work with the team or run on the caller
    /// alone (`jit::adapt`).
    pub(super) adapt: Adapt,
}

type RangeFn = extern "C" fn(*mut i64, i64, i64);

impl Steps {
    /// Appends the local frames to a filled frame.
    pub(super) fn fill_locals(&self, frame: &mut Vec<i64>) {
        frame.truncate(self.frame_len);
        frame.reserve(self.local_map.len());
        for &g in &self.local_map {
            let v = frame[g];
            frame.push(v);
        }
    }

    /// Runs every step on `frame` (filled, locals included).
    ///
    /// # Safety
    /// The frame must hold the evaluated sizes and valid buffer pointers of the plan the
    /// steps and `descs` were built from, with the local frames filled.
    pub(super) unsafe fn run(&self, frame: &mut [i64], descs: &[Desc]) {
        self.adaptive(|| {
            for step in &self.steps {
                // SAFETY: the caller's contract.
                unsafe { self.step(frame, step, descs) };
            }
        })
    }

    /// Runs `f` (every step of one call) in the form [`Steps::adapt`] chooses (with
    /// the team or the caller alone), timing the calls it explores.
    fn adaptive<R>(&self, f: impl FnOnce() -> R) -> R {
        let c = self.adapt.choose();
        let start = if c.timed { adapt::ticks() } else { 0 };
        let r = team::alone(c.alone, f);
        if c.timed {
            self.adapt.record(c, adapt::ticks().wrapping_sub(start));
        }
        r
    }

    /// Like [`Steps::run`], returning each step's wall time in nanoseconds
    /// (`kiln bench --profile`).
    ///
    /// # Safety
    /// As for [`Steps::run`].
    pub(super) unsafe fn run_timed(&self, frame: &mut [i64], descs: &[Desc]) -> Vec<u64> {
        self.adaptive(|| {
            let mut times = Vec::with_capacity(self.steps.len());
            for step in &self.steps {
                let start = std::time::Instant::now();
                // SAFETY: the caller's contract.
                unsafe { self.step(frame, step, descs) };
                times.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
            times
        })
    }

    /// Runs one step.
    ///
    /// # Safety
    /// As for [`Steps::run`].
    unsafe fn step(&self, frame: &mut [i64], step: &Step, descs: &[Desc]) {
        let base = frame.as_mut_ptr();
        match step {
            Step::Loop {
                f,
                init,
                space,
                split,
            } => {
                // SAFETY: the caller's contract.
                unsafe { self.init(frame, init) };
                if *split {
                    self.maybe_parallel(frame, base, f, space, 0, PARALLEL_MIN_ELEMENTS, 1)
                } else {
                    self.whole(frame, base, f, space)
                }
            }
            Step::Gemm { desc, small, .. } => {
                let d: *const Desc = &descs[*desc];
                match small {
                    Some((m, smalls)) if frame[*m] <= SMALL_GEMM_MAX_ROWS => {
                        for s in smalls {
                            // SAFETY: the caller's contract.
                            unsafe { self.small(frame, base, *m, s) };
                        }
                    }
                    _ => kiln_gemm(base, d),
                }
            }
            Step::Call { desc } => kiln_call(base, &descs[*desc]),
            Step::Attention { desc } => kiln_attention(base, &descs[*desc]),
            Step::Norm { desc } => kiln_norm(base, &descs[*desc]),
        }
    }

    /// One product's generated form (at most `SMALL_GEMM_MAX_ROWS` rows, `m`).
    ///
    /// # Safety
    /// As for [`Steps::run`].
    unsafe fn small(&self, frame: &mut [i64], base: *mut i64, m: Slot, s: &Small) {
        match s {
            Small::Columns { f, space } => self.maybe_parallel(
                frame,
                base,
                f,
                space,
                space.len() - 1,
                SMALL_GEMM_PARALLEL_MIN_MACS,
                16,
            ),
            Small::Nest {
                f,
                init,
                space,
                epilogue,
            } => {
                // SAFETY: the caller's contract.
                unsafe { self.init(frame, init) };
                self.whole(frame, base, f, space);
                if let Some(e) = epilogue {
                    self.call(base, e, 0, frame[m]);
                }
            }
        }
    }

    fn call(&self, base: *mut i64, f: &KernelFn, lo: i64, hi: i64) {
        // SAFETY: `addrs` holds finalized functions of this signature, kept alive with
        // the module; the local frame lies inside the frame.
        let func: RangeFn = unsafe { std::mem::transmute(self.addrs[f.func]) };
        func(unsafe { base.add(f.local) }, lo, hi);
    }

    /// One call of a loop function over its whole outermost axis (the range is not read
    /// when the nest has fewer than two axes).
    fn whole(&self, frame: &[i64], base: *mut i64, f: &KernelFn, space: &[Slot]) {
        let n = space.first().map_or(0, |&s| frame[s]);
        self.call(base, f, 0, n);
    }

    /// Calls `f` over `0..extent(axis)`, through the parallel trampoline (inner
    /// boundaries on multiples of `grain`) when the product of the extents reaches
    /// `min_work`.
    #[allow(clippy::too_many_arguments)]
    fn maybe_parallel(
        &self,
        frame: &[i64],
        base: *mut i64,
        f: &KernelFn,
        space: &[Slot],
        axis: usize,
        min_work: i64,
        grain: i64,
    ) {
        let work = space.iter().fold(1i64, |w, &s| w.wrapping_mul(frame[s]));
        let n = frame[space[axis]];
        if work >= min_work {
            // SAFETY: as in `call`.
            let local = unsafe { base.add(f.local) };
            kiln_parallel(local, self.addrs[f.func], n, grain);
        } else {
            self.call(base, f, 0, n);
        }
    }

    /// Fills a reduction's output with its identity: whole vectors of four up to its
    /// length (arena buffers have room past their end).
    ///
    /// # Safety
    /// As [`Steps::run`].
    unsafe fn init(&self, frame: &[i64], init: &Option<Init>) {
        let Some(i) = init else { return };
        let len = frame[i.len].max(0) as usize;
        let ptr = frame[self.sizes + i.buf] as *mut f32;
        // SAFETY: the arena buffer has room for its length rounded up to four.
        let out = unsafe { std::slice::from_raw_parts_mut(ptr, len.div_ceil(4) * 4) };
        out.fill(i.value);
    }
}
