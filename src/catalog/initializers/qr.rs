//! The Q factor of the orthogonal initializer's Gaussian `(max, min)` matrix: the unique
//! QR with R's diagonal positive (the one Keras's sign correction gives), to float32
//! rounding (the weights are float32; Keras itself factors in float32).
//!
//! Two ways to the same matrix up to rounding:
//! - **CholeskyQR** (`cholesky_q`): the Gram matrix `G = AᵀA`, its Cholesky factor
//!   `G = RᵀR` (R's diagonal positive by construction), `Q = A R⁻¹`. Two matrix products
//!   of `m·n²` multiply-adds each, against four for Householder's factor-and-form, and
//!   both products run at full matrix-product speed, in float32 (twice float64's; the
//!   small `n × n` Cholesky factor and its inverse in float64). Its error grows with κ(A)², so it is
//!   only right for well-conditioned A — a tall Gaussian matrix is (κ ≈ 3 for 8192 × 2048)
//!   — and is kept only when the result is verified orthonormal.
//! - **Householder** (`householder_q`): faer's blocked QR, backward stable for any A, the
//!   fallback (square Gaussian matrices are ill-conditioned) and the oracle of the tests.
//!
//! The products are split into a fixed set of panels, each computed by one
//! sequential faer call; threads only decide who computes which panel, so the bits never
//! depend on the number of threads.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::linalg::{householder, qr::no_pivoting::factor};
use faer::{Accum, Conj, Mat, MatMut, MatRef, Par};
use ndarray::Array2;

use crate::rng::Rng;

/// Columns per panel of the Gram matrix and rows per block of Q: the units of work of
/// the parallel products. Fixed (never derived from the thread count), so the same parts
/// are computed by the same calls on any machine.
const PANEL: usize = 128;
const ROW_BLOCK: usize = 512;

/// Probe vectors of the orthogonality check.
const PROBES: usize = 4;

/// CholeskyQR's Q is kept when `‖(QᵀQ − I) x‖ ≤ ORTHO_TOLERANCE · ‖x‖` for every probe.
/// In float32 (unit roundoff u = 6e-8) CholeskyQR loses orthogonality by about
/// `u · κ(A)² · c`, c a modest factor growing with the sizes (the Gram matrix's sums):
/// tall Gaussian matrices (κ ≈ 3 for 8192 × 2048) give 1e-7 to 6.4e-7 (measured from
/// 12 × 4 to 8192 × 2048: 8192 × 2048, 3.5e-7; 300 × 130, 6.4e-7). 2e-6 keeps them with
/// a margin of three, and no more: CholeskyQR's distance to the exact Q grows like κ
/// times its loss of orthogonality, so a looser bound would keep the Q of an
/// ill-conditioned square A (33 × 33 at 1e-5: 9e-6 from Householder's) that is not
/// the same matrix up to float32 rounding. Square Gaussian matrices past a few columns
/// fail it and go to Householder in float64.
const ORTHO_TOLERANCE: f64 = 2e-6;

/// A column-major `rows × cols` matrix of zeros, allocated fallibly.
pub(super) fn zeros<T: Copy + Default>(rows: usize, cols: usize) -> Result<Vec<T>, String> {
    let n = rows
        .checked_mul(cols)
        .filter(|&n| n <= isize::MAX as usize / std::mem::size_of::<T>().max(1))
        .ok_or_else(|| format!("a {rows} × {cols} matrix overflows"))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| format!("no memory for a {rows} × {cols} matrix"))?;
    v.resize(n, T::default());
    Ok(v)
}

/// A thin Q, column-major: float32 from CholeskyQR, float64 from Householder.
pub(super) enum ThinQ {
    Single(Vec<f32>),
    Double(Vec<f64>),
}

impl ThinQ {
    /// The entry at column-major index `k`.
    pub(super) fn at(&self, k: usize) -> f64 {
        match self {
            ThinQ::Single(q) => q[k] as f64,
            ThinQ::Double(q) => q[k],
        }
    }
}

/// The thin Q (`m × n`, column-major, `m ≥ n`) of `a` with R's diagonal non-negative:
/// CholeskyQR in float32 when its result is verified orthonormal, else Householder in
/// float64. (The initializer draws float32 normals itself; the tests use this.)
#[cfg(test)]
pub(super) fn thin_q(a: MatRef<'_, f64>, threads: usize) -> Result<ThinQ, String> {
    match cholesky_q(a, threads)? {
        Some(q) => Ok(ThinQ::Single(q)),
        None => householder(a).map(ThinQ::Double),
    }
}

/// The number of threads the QR and its normals may use: as many as compiled code
/// (`KILN_NUM_THREADS`, else the cores this process may run on). The bits never depend
/// on it.
pub(super) fn threads() -> usize {
    std::env::var("KILN_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `m` split into column panels of `PANEL` (the last one narrower), with each one's
/// first column.
fn panels<T>(mut m: MatMut<'_, T>) -> Vec<(usize, MatMut<'_, T>)> {
    let mut out = Vec::new();
    let mut start = 0;
    while m.ncols() > 0 {
        let w = PANEL.min(m.ncols());
        let (head, tail) = m.split_at_col_mut(w);
        out.push((start, head));
        start += w;
        m = tail;
    }
    out
}

/// `m` split into blocks of `ROW_BLOCK` rows (the last one shorter), with each one's
/// first row.
fn row_blocks<T>(mut m: MatMut<'_, T>) -> Vec<(usize, MatMut<'_, T>)> {
    let mut out = Vec::new();
    let mut start = 0;
    while m.nrows() > 0 {
        let h = ROW_BLOCK.min(m.nrows());
        let (head, tail) = m.split_at_row_mut(h);
        out.push((start, head));
        start += h;
        m = tail;
    }
    out
}

/// CholeskyQR in float32 (the two products of `m·n²` each, at twice float64's speed),
/// the small `n × n` Cholesky factor and its inverse in float64; or `None` when A is too
/// ill-conditioned for it (the Cholesky factorization fails, or the result is not
/// orthonormal to float32 rounding).
#[cfg(test)]
pub(super) fn cholesky_q(a: MatRef<'_, f64>, threads: usize) -> Result<Option<Vec<f32>>, String> {
    let (m, n) = (a.nrows(), a.ncols());
    // A rounded to f32, row by row as the normals were drawn (no transposition; faer's
    // products take either layout).
    let mut a32 = zeros::<f32>(m, n)?;
    let am = MatMut::from_row_major_slice_mut(&mut a32, m, n);
    crate::rng::run_parts(row_blocks(am), threads, |(i, mut block)| {
        for r in 0..block.nrows() {
            for (c, x) in block.as_mut().row_mut(r).iter_mut().enumerate() {
                *x = a[(i + r, c)] as f32;
            }
        }
    });
    cholesky_q32(a32, m, n, threads)
}

/// [`cholesky_q`] of the float32 `m × n` matrix `a32` (row-major), which it consumes.
pub(super) fn cholesky_q32(
    a32: Vec<f32>,
    m: usize,
    n: usize,
    threads: usize,
) -> Result<Option<Vec<f32>>, String> {
    if m < n || a32.len() != m * n {
        return Err(format!("QR needs rows ≥ columns, got {m} × {n}"));
    }
    let a = MatRef::from_row_major_slice(&a32, m, n);
    let Some(r_inv) = gram_r_inverse(a, threads)? else {
        return Ok(None);
    };
    let r_inv = MatRef::from_column_major_slice(&r_inv, n, n);
    // Q = A R⁻¹, by blocks of rows.
    let mut q = zeros::<f32>(m, n)?;
    let qm = MatMut::from_column_major_slice_mut(&mut q, m, n);
    crate::rng::run_parts(row_blocks(qm), threads, |(i, block)| {
        let rows = a.subrows(i, block.nrows());
        triangular::matmul(
            block,
            BlockStructure::Rectangular,
            Accum::Replace,
            rows,
            BlockStructure::Rectangular,
            r_inv,
            BlockStructure::TriangularUpper,
            1.0,
            Par::Seq,
        );
    });
    drop(a32);
    let qr = MatRef::from_column_major_slice(&q, m, n);
    if orthogonality_error(qr)? > ORTHO_TOLERANCE {
        return Ok(None);
    }
    Ok(Some(q))
}

/// `R⁻¹` (upper triangular, float32, column-major `n × n`) for `AᵀA = RᵀR`: the Gram
/// matrix in float32 by panels, its Cholesky factor and inverse in float64 (a small
/// part of the work, and one rounding less). `None` when the factorization fails.
fn gram_r_inverse(a: MatRef<'_, f32>, threads: usize) -> Result<Option<Vec<f32>>, String> {
    let (m, n) = (a.nrows(), a.ncols());
    // G = AᵀA, its lower triangle: panel J holds G[J.., J].
    let mut g32 = zeros::<f32>(n, n)?;
    let gm = MatMut::from_column_major_slice_mut(&mut g32, n, n);
    crate::rng::run_parts(panels(gm), threads, |(j, panel)| {
        let w = panel.ncols();
        let (diag, below) = panel.split_at_row_mut(j + w);
        let diag = diag.subrows_mut(j, w);
        let cols = a.subcols(j, w);
        triangular::matmul(
            diag,
            BlockStructure::TriangularLower,
            Accum::Replace,
            cols.transpose(),
            BlockStructure::Rectangular,
            cols,
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
        let rest = a.subcols(j + w, n - j - w);
        matmul(below, Accum::Replace, rest.transpose(), cols, 1.0, Par::Seq);
    });
    let mut g = zeros::<f64>(n, n)?;
    g.iter_mut().zip(&g32).for_each(|(x, &y)| *x = y as f64);
    drop(g32);
    // G = L Lᵀ (R = Lᵀ).
    let mut gm = MatMut::from_column_major_slice_mut(&mut g, n, n);
    let need = cholesky_in_place_scratch::<f64>(n, Par::Seq, Default::default());
    let mut buf =
        MemBuffer::try_new(need).map_err(|_| format!("no memory for the QR of {m} × {n}"))?;
    let factored = cholesky_in_place(
        gm.as_mut(),
        Default::default(),
        Par::Seq,
        MemStack::new(&mut buf),
        Default::default(),
    );
    if factored.is_err() {
        return Ok(None);
    }
    // R⁻¹ = L⁻ᵀ, upper triangular (faer writes L⁻¹'s lower triangle only).
    let mut inv = zeros::<f64>(n, n)?;
    let mut im = MatMut::from_column_major_slice_mut(&mut inv, n, n);
    invert_lower_triangular(im.as_mut(), gm.as_ref(), Par::Seq);
    drop(g);
    let mut r_inv = zeros::<f32>(n, n)?;
    for j in 0..n {
        for i in 0..=j {
            r_inv[j * n + i] = inv[i * n + j] as f32;
        }
    }
    Ok(Some(r_inv))
}

/// An estimate of the departure from orthonormality of Q's columns: the largest
/// `‖(QᵀQ − I) x‖ / ‖x‖` over `PROBES` standard normal vectors x (a fixed stream),
/// computed in float64 (Q widened a block of rows at a time), so that the check's own
/// rounding (1e-16) is far below what it measures.
///
/// For E = QᵀQ − I (symmetric), `E[‖Ex‖²] = ‖E‖_F²`, and for any unit direction v of E,
/// `vᵀx` is a standard normal: a probe sees less than 1% of a component of E with
/// probability below 0.008, all four probes with probability below 5e-9. It costs four
/// matrix-vector products, against another `m·n²` for QᵀQ itself.
fn orthogonality_error(q: MatRef<'_, f32>) -> Result<f64, String> {
    let (m, n) = (q.nrows(), q.ncols());
    let mut rng = Rng::new(0, 0x6F72_7468_6F2F_7172); // "ortho/qr"
    let mut x = zeros::<f64>(n, PROBES)?;
    x.iter_mut().for_each(|v| *v = rng.normal());
    let xm = MatRef::from_column_major_slice(&x, n, PROBES);
    let mut z = zeros::<f64>(n, PROBES)?;
    let mut zm = MatMut::from_column_major_slice_mut(&mut z, n, PROBES);
    let h = ROW_BLOCK.min(m);
    let mut wide = zeros::<f64>(h, n)?;
    let mut y = zeros::<f64>(h, PROBES)?;
    let mut start = 0;
    while start < m {
        let h = ROW_BLOCK.min(m - start);
        let mut bm = MatMut::from_column_major_slice_mut(&mut wide[..h * n], h, n);
        for j in 0..n {
            for i in 0..h {
                bm[(i, j)] = q[(start + i, j)] as f64;
            }
        }
        let mut ym = MatMut::from_column_major_slice_mut(&mut y[..h * PROBES], h, PROBES);
        matmul(ym.as_mut(), Accum::Replace, bm.as_ref(), xm, 1.0, Par::Seq);
        matmul(
            zm.as_mut(),
            Accum::Add,
            bm.as_ref().transpose(),
            ym.as_ref(),
            1.0,
            Par::Seq,
        );
        start += h;
    }
    let worst = (0..PROBES)
        .map(|k| {
            let (xk, zk) = (xm.col(k), zm.as_ref().col(k));
            let err: f64 = (0..n).map(|i| (zk[i] - xk[i]).powi(2)).sum();
            let norm: f64 = (0..n).map(|i| xk[i].powi(2)).sum();
            (err / norm.max(f64::MIN_POSITIVE)).sqrt()
        })
        .fold(0.0, f64::max);
    // A NaN (an overflow) is no evidence of orthogonality.
    Ok(if worst.is_nan() { f64::INFINITY } else { worst })
}

/// The thin Q (`m × n`, `m ≥ n`) of `a` by Householder reflections, with each column
/// multiplied by the sign of R's diagonal entry (so that R's diagonal is non-negative:
/// the unique QR, the one Keras's sign correction gives).
pub fn householder_q(a: Array2<f64>) -> Result<Array2<f64>, String> {
    let (m, n) = a.dim();
    let am = Mat::<f64>::from_fn(m, n, |i, j| a[[i, j]]);
    drop(a);
    let q = householder(am.as_ref())?;
    Ok(Array2::from_shape_fn((m, n), |(i, j)| q[j * m + i]))
}

/// Householder's thin Q, column-major. faer's blocked QR (compact WY, the trailing
/// updates as matrix products) factors `a`; Q is then accumulated backwards from the
/// identity's first `n` columns, each block of reflectors applied only to the rows and
/// columns it can change (LAPACK's `dorgqr`). Sequential.
pub(super) fn householder(a: MatRef<'_, f64>) -> Result<Vec<f64>, String> {
    let (m, n) = (a.nrows(), a.ncols());
    if m < n {
        return Err(format!("QR needs rows ≥ columns, got {m} × {n}"));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let par = Par::Seq;
    let mut qr = zeros::<f64>(m, n)?;
    let mut qrm = MatMut::from_column_major_slice_mut(&mut qr, m, n);
    qrm.copy_from(a);
    let bs = factor::recommended_block_size::<f64>(m, n);
    let mut tau = Mat::<f64>::zeros(bs, n);
    let need = factor::qr_in_place_scratch::<f64>(m, n, bs, par, Default::default())
        .or(householder::apply_block_householder_on_the_left_in_place_scratch::<f64>(m, bs, n));
    let mut buf =
        MemBuffer::try_new(need).map_err(|_| format!("no memory for the QR of {m} × {n}"))?;
    let stack = MemStack::new(&mut buf);
    factor::qr_in_place(qrm.as_mut(), tau.as_mut(), par, stack, Default::default());
    let mut q = zeros::<f64>(m, n)?;
    let mut qm = MatMut::from_column_major_slice_mut(&mut q, m, n);
    for j in 0..n {
        qm[(j, j)] = 1.0;
    }
    let mut end = n;
    let mut width = match n % bs {
        0 => bs,
        rest => rest,
    };
    while end > 0 {
        let start = end - width;
        householder::apply_block_householder_on_the_left_in_place_with_conj(
            qrm.as_ref().get(start.., start..end),
            tau.get(..width, start..end),
            Conj::No,
            qm.as_mut().get_mut(start.., start..),
            par,
            stack,
        );
        end = start;
        width = bs;
    }
    // Keras multiplies by sign(d), which is 0 for d = 0; a zero column would not be
    // orthogonal, so kiln keeps the column as it is there (probability zero anyway).
    for j in 0..n {
        if qrm[(j, j)] < 0.0 {
            qm.as_mut().col_mut(j).iter_mut().for_each(|x| *x = -*x);
        }
    }
    Ok(q)
}
