//! The routines the steps (`jit::steps`) call: the parallel split of a kernel function
//! over the team, and matrix products (kiln's own routine, `jit::gemm`, for the shapes
//! where it is faster, else matrixmultiply), split across the team when large, with
//! each product's fused epilogue run over the rows each part computed. Errors and
//! panics inside them become the call's error, never unwinding into native code.

use super::frame::{Desc, DescKind, FrameLayout, access_parts, guarded};
use super::gemm;
use super::plan::GemmKernel;
use super::team;

/// Runs `f(frame, lo, hi)` over `0..n` split into one part per thread of the team, the
/// inner boundaries on multiples of `grain`. The parts write disjoint outputs (see
/// `codegen::splittable` and `codegen::emit_small_gemm`).
pub(super) extern "C" fn kiln_parallel(frame: *mut i64, f: usize, n: i64, grain: i64) {
    // SAFETY: `f` is the address of a finalized kernel function with this signature,
    // owned by the running kernel.
    let kernel: extern "C" fn(*mut i64, i64, i64) = unsafe { std::mem::transmute(f) };
    let t = team::team();
    let units = (n.max(0) + grain.max(1) - 1) / grain.max(1);
    let parts = (t.size() as i64).clamp(1, units.max(1)) as usize;
    if parts == 1 {
        kernel(frame, 0, n);
        return;
    }
    let frame = frame as usize;
    // Kernel functions do not panic (they are straight-line loops), so `run` cannot
    // report a failure here.
    t.run(parts, &|p| {
        let (lo, hi) = team::split(n, parts, p, grain);
        if lo < hi {
            kernel(frame as *mut i64, lo, hi);
        }
    });
}

/// Products with fewer multiply-adds than this run on one thread (measured: below it
/// the hand-off costs more than the second core saves).
const GEMM_PARALLEL_MIN_MACS: usize = 1 << 16;

/// Row or column blocks of a split product are multiples of this (matrixmultiply's
/// micro-kernel tile).
const GEMM_GRAIN: i64 = 16;

/// GEMM over the batch axes, with the operands' strides (transposes are free), for
/// each product of the call (several share A). Without batch axes, and for the shapes
/// where it is faster, kiln's own routine runs (`GemmCall::run_own`); else
/// matrixmultiply, split across the team when large: by batch entry when there are
/// enough, else into blocks of rows or columns, whichever makes the parts repack less
/// (splitting rows repacks B in every part, splitting columns repacks A).
pub(super) extern "C" fn kiln_gemm(frame: *mut i64, desc: *const Desc) {
    guarded(frame, desc, "gemm", |d, frame| {
        let DescKind::Gemm(g) = &d.kind else {
            return Err("bad gemm descriptor".to_string());
        };
        Ok(GemmCall::new(frame, frame.as_ptr() as usize, d.fl, g, d).run())
    })
}

/// One product of a GEMM call: B's view, the output and the fused epilogue.
struct Group {
    n: usize,
    pb: usize,
    ob: i64,
    sb: Vec<i64>,
    pc: usize,
    /// The epilogue's local frame (inside the frame), for the epilogue function.
    frame: usize,
    /// The fused epilogue function `(frame, lo, hi)` (0: none).
    epi: usize,
}

/// One GEMM call with its sizes and operands read from the frame: `[batch…, m, k]` ·
/// `[batch…, k, n]` into a contiguous `[batch…, m, n]` buffer, for each product
/// (pointers as addresses, so parts on other threads can share them).
struct GemmCall {
    m: usize,
    k: usize,
    batch: Vec<usize>,
    /// Batch entries (the product of `batch`).
    total: usize,
    pa: usize,
    oa: i64,
    sa: Vec<i64>,
    groups: Vec<Group>,
}

impl GemmCall {
    fn new(frame: &[i64], frame_ptr: usize, fl: FrameLayout, g: &GemmKernel, d: &Desc) -> Self {
        let (m, k) = (frame[g.m] as usize, frame[g.k] as usize);
        let batch: Vec<usize> = g.batch.iter().map(|&s| frame[s] as usize).collect();
        let (pa, oa, sa) = access_parts(frame, fl, &g.a);
        let total: usize = batch.iter().product();
        let own = std::iter::once((&g.b, g.c, g.n));
        let also = g.also.iter().map(|c| (&c.b, c.c, c.n));
        let groups = own
            .chain(also)
            .zip(&d.epilogues)
            .map(|((b, c, n), (epi, local))| {
                let (pb, ob, sb) = access_parts(frame, fl, b);
                Group {
                    n: frame[n] as usize,
                    pb: pb as usize,
                    ob,
                    sb,
                    pc: frame[fl.sizes + c] as usize,
                    // The epilogue reads its local frame.
                    frame: frame_ptr + local * std::mem::size_of::<i64>(),
                    // The fused epilogue over rows `lo..hi` (products with an
                    // epilogue have no batch axes).
                    epi: epi.load(std::sync::atomic::Ordering::Acquire),
                }
            })
            .collect();
        GemmCall {
            m,
            k,
            batch,
            total,
            pa: pa as usize,
            oa,
            sa,
            groups,
        }
    }

    /// Product `g`, one batch entry, rows `rows` and columns `cols` of it
    /// (matrixmultiply).
    fn block(&self, g: &Group, bi: usize, rows: (usize, usize), cols: (usize, usize)) {
        let (r, m, n) = (self.batch.len(), self.m, g.n);
        let (sa, sb) = (&self.sa, &g.sb);
        let mut rem = bi;
        let (mut off_a, mut off_b) = (self.oa, g.ob);
        for d in (0..r).rev() {
            let i = (rem % self.batch[d]) as i64;
            rem /= self.batch[d];
            off_a += i * sa[d];
            off_b += i * sb[d];
        }
        off_a += rows.0 as i64 * sa[r];
        off_b += cols.0 as i64 * sb[r + 1];
        let off_c = bi * m * n + rows.0 * n + cols.0;
        // SAFETY: offsets and strides come from the plan for these buffers; the
        // output is a contiguous [batch…, m, n] arena region and the block lies
        // within it.
        unsafe {
            matrixmultiply::sgemm(
                rows.1 - rows.0,
                self.k,
                cols.1 - cols.0,
                1.0,
                (self.pa as *const f32).offset(off_a as isize),
                sa[r] as isize,
                sa[r + 1] as isize,
                (g.pb as *const f32).offset(off_b as isize),
                sb[r] as isize,
                sb[r + 1] as isize,
                0.0,
                (g.pc as *mut f32).add(off_c),
                n as isize,
                1,
            );
        }
    }

    /// Product `g`'s fused epilogue over rows `lo..hi` (nothing without one).
    fn epilogue(g: &Group, lo: usize, hi: usize) {
        if g.epi != 0 && lo < hi {
            // SAFETY: `epi` is a finalized `(frame, lo, hi)` kernel function owned by
            // the running kernel; it reads the product rows computed above.
            let f: extern "C" fn(*mut i64, i64, i64) = unsafe { std::mem::transmute(g.epi) };
            f(g.frame as *mut i64, lo as i64, hi as i64);
        }
    }

    /// Runs every product of the call (and their epilogues), split across the team
    /// when large; false when a part panicked.
    fn run(&self) -> bool {
        let isa = gemm::isa();
        let own = self.batch.is_empty()
            && self
                .groups
                .iter()
                .all(|g| gemm::prefer(isa, self.m, self.k, g.n, g.sb[1] == 1));
        if own {
            return self.run_own(isa);
        }
        self.groups.iter().all(|g| self.run_one(g))
    }

    /// kiln's routine: the rows split across the team, each part computing every
    /// product's rows block by block, each block's epilogue right after it.
    fn run_own(&self, isa: gemm::Isa) -> bool {
        let (m, k) = (self.m, self.k);
        let mut bufs: Vec<Vec<f32>> = self.groups.iter().map(|_| Vec::new()).collect();
        let cols: Vec<gemm::Cols> = self
            .groups
            .iter()
            .zip(&mut bufs)
            .map(|(g, buf)| {
                let b = gemm::Mat {
                    // SAFETY: the offset lies inside B's buffer (the plan's view).
                    ptr: unsafe { (g.pb as *const f32).offset(g.ob as isize) },
                    rs: g.sb[0] as isize,
                    cs: g.sb[1] as isize,
                };
                // SAFETY: the view addresses B's `k × n` elements.
                let (b, ldb) = unsafe { gemm::contiguous_b(b, k, g.n, buf) };
                gemm::Cols {
                    n: g.n,
                    b,
                    ldb,
                    c: g.pc as *mut f32,
                }
            })
            .collect();
        let a = gemm::Mat {
            // SAFETY: as for B.
            ptr: unsafe { (self.pa as *const f32).offset(self.oa as isize) },
            rs: self.sa[0] as isize,
            cs: self.sa[1] as isize,
        };
        let done = |gi: usize, lo: usize, hi: usize| Self::epilogue(&self.groups[gi], lo, hi);
        let n: usize = self.groups.iter().map(|g| g.n).sum();
        let macs = m.saturating_mul(k).saturating_mul(n);
        let t = team::team();
        // Parts of whole tiles: a product with few rows and long `k` (a weight
        // gradient) still uses every core.
        let units = m.div_ceil(gemm::ROW_GRAIN);
        let parts = if macs < GEMM_PARALLEL_MIN_MACS {
            1
        } else {
            t.size().min(team::MAX_PARTS).min(units)
        };
        if parts <= 1 {
            // SAFETY: the operands are the plan's buffers for this product.
            unsafe { gemm::rows(isa, k, a, &cols, 0, m, &done) };
            return true;
        }
        t.run(parts, &|p| {
            let (lo, hi) = team::split(m as i64, parts, p, gemm::ROW_GRAIN as i64);
            // SAFETY: as above; the parts' rows are disjoint.
            unsafe { gemm::rows(isa, k, a, &cols, lo as usize, hi as usize, &done) };
        })
    }

    /// One product through matrixmultiply (then its epilogue).
    fn run_one(&self, g: &Group) -> bool {
        let (m, n, total) = (self.m, g.n, self.total);
        let t = team::team();
        let macs = total
            .saturating_mul(m)
            .saturating_mul(self.k)
            .saturating_mul(n);
        if t.size() == 1 || macs < GEMM_PARALLEL_MIN_MACS || m == 0 || n == 0 {
            for bi in 0..total {
                self.block(g, bi, (0, m), (0, n));
            }
            Self::epilogue(g, 0, m);
            return true;
        }
        if total >= t.size() {
            let parts = t.size().min(team::MAX_PARTS);
            let ok = t.run(parts, &|p| {
                let (lo, hi) = team::split(total as i64, parts, p, 1);
                for bi in lo as usize..hi as usize {
                    self.block(g, bi, (0, m), (0, n));
                }
            });
            Self::epilogue(g, 0, m);
            return ok;
        }
        self.run_blocks(g, t)
    }

    /// Fewer batch entries than threads: each entry split into blocks of rows or
    /// columns (then the epilogue over row ranges).
    fn run_blocks(&self, g: &Group, t: &team::Team) -> bool {
        let (m, n, total, epi) = (self.m, g.n, self.total, g.epi);
        let per = t.size().div_ceil(total).min(team::MAX_PARTS / total);
        let by_rows = n < m || epi != 0 && total == 1 && n < 2 * m;
        let extent = if by_rows { m } else { n } as i64;
        let units = (extent + GEMM_GRAIN - 1) / GEMM_GRAIN;
        let per = per.min(units as usize).max(1);
        t.run(total * per, &|p| {
            let (bi, q) = (p / per, p % per);
            let (lo, hi) = team::split(extent, per, q, GEMM_GRAIN);
            let range = (lo as usize, hi as usize);
            if range.0 < range.1 {
                if by_rows {
                    self.block(g, bi, range, (0, n));
                    // The rows are still in this core's cache.
                    Self::epilogue(g, range.0, range.1);
                } else {
                    self.block(g, bi, (0, m), range);
                }
            }
        }) && (by_rows
            || epi == 0
            || t.run(t.size(), &|p| {
                let (lo, hi) = team::split(m as i64, t.size(), p, 1);
                Self::epilogue(g, lo as usize, hi as usize);
            }))
    }
}
