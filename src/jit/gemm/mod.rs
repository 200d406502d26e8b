//! kiln's own matrix product for the plan's common shape: many rows (`m` = batch ×
//! sequence), small `k` and `n` (a dense layer's or a projection's weights). A is read
//! in place through its strides (no packing: for these shapes packing A costs half as
//! much as the multiply), B is read in place when its rows are contiguous (else copied
//! once per call into a row-major buffer the whole team shares), and a register-blocked
//! micro-kernel (AVX-512, AVX2 + FMA, or portable) computes tiles of C. Rows are done in
//! blocks, each block's fused epilogue running right after it while it is in cache.
//!
//! The arithmetic is matrixmultiply's, so results are bit-identical whichever routine a
//! product takes: each output is summed along `k` in order from zero, with FMA when the
//! CPU has it, in blocks of [`KC`] terms whose sums are added to the output in turn.

#[cfg(target_arch = "x86_64")]
mod x86;

/// matrixmultiply's k-block (`S_KC`): see the module comment.
pub(crate) const KC: usize = 256;

/// Rows computed between two epilogue calls: a block of A's rows and of C stays in
/// the core's cache until its epilogue has run.
pub(crate) const ROW_BLOCK: usize = 64;

/// Row ranges handed to different threads are multiples of this (the widest tile's
/// rows), so only the last range has a partial tile.
pub(crate) const ROW_GRAIN: usize = 8;

/// Which micro-kernel runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Isa {
    /// 16-lane AVX-512 with FMA.
    Avx512,
    /// 8-lane AVX2 with FMA.
    Avx2,
    /// Plain Rust, a multiply then an add (no fused multiply-add).
    Portable,
}

/// The best micro-kernel this CPU runs (detected once).
pub(crate) fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(detect)
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if !is_x86_feature_detected!("fma") {
            return Isa::Portable;
        }
        if is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// Whether this routine is faster than matrixmultiply for an `m × k · k × n` product
/// (measured: see ARCHITECTURE.md). It wins while a tile's panel of B (`k` rows)
/// stays in the core's cache; beyond that matrixmultiply's packing and k-blocking pay
/// for themselves. A B that must be copied first (`!b_contiguous`: a transposed
/// weight in a backward pass) is copied on one thread, which costs as much as the
/// product of few rows split across cores: then it needs [`COPIED_B_MIN_ROWS`] rows.
/// The portable kernel never beats matrixmultiply's.
pub(crate) fn prefer(isa: Isa, m: usize, k: usize, n: usize, b_contiguous: bool) -> bool {
    isa != Isa::Portable && shape_fits(k, n) && (b_contiguous || n <= 1 || m >= COPIED_B_MIN_ROWS)
}

/// See [`prefer`].
pub(crate) const COPIED_B_MIN_ROWS: usize = 256;

/// The `k`, `n` half of [`prefer`].
pub(crate) fn shape_fits(k: usize, n: usize) -> bool {
    k <= 1024 && k.saturating_mul(n) <= 128 * 1024
}

/// A strided matrix: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a view of memory the plan owns for the whole call; threads only read it.
unsafe impl Sync for Mat {}

/// One product of A: `c = a · b`, B `k × n` with rows `ldb` apart and contiguous
/// columns, C a contiguous `m × n` buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cols {
    pub n: usize,
    pub b: *const f32,
    pub ldb: isize,
    pub c: *mut f32,
}

// SAFETY: B is only read; the team's parts write disjoint rows of C (see `rows`).
unsafe impl Sync for Cols {}

/// B as [`Cols`] needs it: in place when its columns are contiguous, else copied to
/// `buf` (row-major `k × n`) in panels of 16 columns, so that a transposed B is read
/// a few cache lines at a time and each copied row is written contiguously.
///
/// # Safety
/// `b` must address every element of a `k × n` matrix.
pub(crate) unsafe fn contiguous_b(
    b: Mat,
    k: usize,
    n: usize,
    buf: &mut Vec<f32>,
) -> (*const f32, isize) {
    if b.cs == 1 || n <= 1 {
        return (b.ptr, b.rs);
    }
    buf.clear();
    buf.resize(k * n, 0.0);
    for j0 in (0..n).step_by(16) {
        let j1 = (j0 + 16).min(n);
        for p in 0..k {
            let row = &mut buf[p * n + j0..p * n + j1];
            for (j, x) in (j0..j1).zip(row) {
                // SAFETY: the caller's contract.
                *x = unsafe { *b.ptr.offset(p as isize * b.rs + j as isize * b.cs) };
            }
        }
    }
    (buf.as_ptr(), n as isize)
}

/// Rows `lo..hi` of each product in `groups` (all of the same A, `k` columns), in
/// blocks of [`ROW_BLOCK`] rows; after each group's block, `done(group, lo, hi)`
/// (its fused epilogue) runs while the block is in cache. A's block is read once for
/// all groups.
///
/// # Safety
/// Every pointer must address its whole matrix (A `m × k`, each B `k × n`, each C
/// `m × n` with `hi <= m`); parts running at once must be given disjoint rows.
pub(crate) unsafe fn rows(
    isa: Isa,
    k: usize,
    a: Mat,
    groups: &[Cols],
    lo: usize,
    hi: usize,
    done: &dyn Fn(usize, usize, usize),
) {
    let mut r = lo;
    while r < hi {
        let e = (r + ROW_BLOCK).min(hi);
        for (gi, g) in groups.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { block(isa, k, a, g, r, e) };
            done(gi, r, e);
        }
        r = e;
    }
}

/// Rows `lo..hi` of one product, tile by tile: a tile's rows of A stay in L1 while the
/// tile sweeps all of B's columns.
unsafe fn block(isa: Isa, k: usize, a: Mat, g: &Cols, lo: usize, hi: usize) {
    let (mr, nr) = tile_size(isa);
    let mut i = lo;
    while i < hi {
        let rows = mr.min(hi - i);
        let mut j = 0;
        while j < g.n {
            let cols = nr.min(g.n - j);
            // SAFETY: the tile lies inside A, B and C (the caller's contract).
            unsafe {
                let t = Tile {
                    k,
                    a: a.ptr.offset(i as isize * a.rs),
                    rsa: a.rs,
                    csa: a.cs,
                    b: g.b.add(j),
                    ldb: g.ldb,
                    c: g.c.add(i * g.n + j),
                    ldc: g.n as isize,
                };
                tile(isa, &t, rows, cols);
            }
            j += cols;
        }
        i += rows;
    }
}

/// One micro-tile's operands: `c[i][j] = Σ_p a[i·rsa + p·csa] · b[p·ldb + j]`.
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    pub k: usize,
    pub a: *const f32,
    pub rsa: isize,
    pub csa: isize,
    pub b: *const f32,
    pub ldb: isize,
    pub c: *mut f32,
    pub ldc: isize,
}

/// The micro-kernel's full tile (rows, columns) for `isa`.
fn tile_size(isa: Isa) -> (usize, usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::TILE_512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::TILE_256,
        _ => (4, 8),
    }
}

/// Computes a `rows × cols` tile (at most [`tile_size`]).
unsafe fn tile(isa: Isa, t: &Tile, rows: usize, cols: usize) {
    match isa {
        // SAFETY: `isa` was detected on this CPU; the tile is in bounds.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::tile_512(t, rows, cols) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::tile_256(t, rows, cols) },
        _ => unsafe { tile_portable(t, rows, cols) },
    }
}

/// The portable micro-kernel: a multiply and an add per term (matrixmultiply's
/// arithmetic without FMA).
unsafe fn tile_portable(t: &Tile, rows: usize, cols: usize) {
    let mut p0 = 0;
    loop {
        let p1 = (p0 + KC).min(t.k);
        let mut acc = [[0f32; 8]; 4];
        for p in p0..p1 {
            for (i, row) in acc.iter_mut().enumerate().take(rows) {
                // SAFETY: the caller's contract.
                let x = unsafe { *t.a.offset(i as isize * t.rsa + p as isize * t.csa) };
                for (j, s) in row.iter_mut().enumerate().take(cols) {
                    // SAFETY: as above.
                    *s += x * unsafe { *t.b.offset(p as isize * t.ldb + j as isize) };
                }
            }
        }
        for (i, row) in acc.iter().enumerate().take(rows) {
            for (j, s) in row.iter().enumerate().take(cols) {
                // SAFETY: as above.
                let c = unsafe { &mut *t.c.offset(i as isize * t.ldc + j as isize) };
                *c = if p0 == 0 { *s } else { *c + *s };
            }
        }
        p0 = p1;
        if p0 >= t.k {
            break;
        }
    }
}

#[cfg(test)]
mod tests;
