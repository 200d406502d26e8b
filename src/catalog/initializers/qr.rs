//! The Q factor of the orthogonal initializer's Gaussian `(max, min)` matrix: the unique
//! QR with R's diagonal positive (the one Keras's sign correction gives), computed in f64.
//!
//! Two ways to the same matrix up to rounding:
//! - **CholeskyQR** (`cholesky_q`): the Gram matrix `G = AᵀA`, its Cholesky factor
//!   `G = RᵀR` (R's diagonal positive by construction), `Q = A R⁻¹`. Two matrix products
//!   of `m·n²` multiply-adds each, against four for Householder's factor-and-form, and
//!   both products run at full matrix-product speed. Its error grows with κ(A)², so it is
//!   only right for well-conditioned A — a tall Gaussian matrix is (κ ≈ 3 for 8192 × 2048)
//!   — and is kept only when the result is verified orthonormal.
//! - **Householder** (`householder_q`): faer's blocked QR, backward stable for any A, the
//!   fallback (square Gaussian matrices are ill-conditioned) and the oracle of the tests.
//!
//! The products are split into a fixed set of panels, each computed by one
//! sequential faer call; threads only decide who computes which panel, so the bits never
//! depend on the number of threads.

use std::sync::Mutex;

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
/// A well-conditioned A gives about 1e-15, as Householder's own Q does (8192 × 2048:
/// 9.3e-16 against 7.9e-16, the check's rounding included); a square Gaussian matrix,
/// ill-conditioned, gives 1e-13 to 1e-12 or worse (200 × 200: 4.6e-13) and goes to
/// Householder. A loss of orthogonality large enough to show in f32 (1e-9) is missed
/// only if every probe is nearly orthogonal to it (see `orthogonality_error`).
const ORTHO_TOLERANCE: f64 = 1e-13;

/// A column-major `rows × cols` matrix of zeros, allocated fallibly.
pub(super) fn zeros(rows: usize, cols: usize) -> Result<Vec<f64>, String> {
    let n = rows
        .checked_mul(cols)
        .filter(|&n| n <= isize::MAX as usize / 8)
        .ok_or_else(|| format!("a {rows} × {cols} matrix overflows"))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| format!("no memory for a {rows} × {cols} matrix"))?;
    v.resize(n, 0.0);
    Ok(v)
}

/// The thin Q (`m × n`, column-major, `m ≥ n`) of `a` with R's diagonal non-negative:
/// CholeskyQR when its result is verified orthonormal, else Householder.
pub(super) fn thin_q(a: MatRef<'_, f64>, threads: usize) -> Result<Vec<f64>, String> {
    match cholesky_q(a, threads)? {
        Some(q) => Ok(q),
        None => householder(a),
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

/// Runs `work` on each task, on up to `threads` threads, the tasks taken in order.
fn run<T: Send>(tasks: Vec<T>, threads: usize, work: impl Fn(T) + Sync) {
    let threads = threads.clamp(1, tasks.len().max(1));
    let queue = Mutex::new(tasks.into_iter());
    let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
    let worker = || {
        while let Some(task) = next() {
            work(task);
        }
    };
    if threads == 1 {
        worker();
        return;
    }
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(worker);
        }
        worker();
    });
}

/// `m` split into column panels of `PANEL` (the last one narrower), with each one's
/// first column.
fn panels(mut m: MatMut<'_, f64>) -> Vec<(usize, MatMut<'_, f64>)> {
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
fn row_blocks(mut m: MatMut<'_, f64>) -> Vec<(usize, MatMut<'_, f64>)> {
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

/// CholeskyQR, or `None` when A is too ill-conditioned for it (the Cholesky factorization
/// fails, or the result is not orthonormal to f64 rounding).
pub(super) fn cholesky_q(a: MatRef<'_, f64>, threads: usize) -> Result<Option<Vec<f64>>, String> {
    let (m, n) = (a.nrows(), a.ncols());
    if m < n {
        return Err(format!("QR needs rows ≥ columns, got {m} × {n}"));
    }
    // G = AᵀA, its lower triangle: panel J holds G[J.., J].
    let mut g = zeros(n, n)?;
    let gm = MatMut::from_column_major_slice_mut(&mut g, n, n);
    run(panels(gm), threads, |(j, panel)| {
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
    let mut inv = zeros(n, n)?;
    let mut im = MatMut::from_column_major_slice_mut(&mut inv, n, n);
    invert_lower_triangular(im.as_mut(), gm.as_ref(), Par::Seq);
    drop(g);
    let r_inv = im.as_ref().transpose();
    // Q = A R⁻¹, by blocks of rows.
    let mut q = zeros(m, n)?;
    let qm = MatMut::from_column_major_slice_mut(&mut q, m, n);
    run(row_blocks(qm), threads, |(i, block)| {
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
    let qr = MatRef::from_column_major_slice(&q, m, n);
    if orthogonality_error(qr)? > ORTHO_TOLERANCE {
        return Ok(None);
    }
    Ok(Some(q))
}

/// An estimate of the departure from orthonormality of Q's columns: the largest
/// `‖(QᵀQ − I) x‖ / ‖x‖` over `PROBES` standard normal vectors x (a fixed stream).
///
/// For E = QᵀQ − I (symmetric), `E[‖Ex‖²] = ‖E‖_F²`, and for any unit direction v of E,
/// `vᵀx` is a standard normal: a probe sees less than 1% of a component of E with
/// probability below 0.008, all four probes with probability below 5e-9. It costs four
/// matrix-vector products, against another `m·n²` for QᵀQ itself.
fn orthogonality_error(q: MatRef<'_, f64>) -> Result<f64, String> {
    let (m, n) = (q.nrows(), q.ncols());
    let mut rng = Rng::new(0, 0x6F72_7468_6F2F_7172); // "ortho/qr"
    let mut x = zeros(n, PROBES)?;
    x.iter_mut().for_each(|v| *v = rng.normal());
    let xm = MatRef::from_column_major_slice(&x, n, PROBES);
    let mut y = zeros(m, PROBES)?;
    let mut ym = MatMut::from_column_major_slice_mut(&mut y, m, PROBES);
    matmul(ym.as_mut(), Accum::Replace, q, xm, 1.0, Par::Seq);
    let mut z = zeros(n, PROBES)?;
    let mut zm = MatMut::from_column_major_slice_mut(&mut z, n, PROBES);
    matmul(
        zm.as_mut(),
        Accum::Replace,
        q.transpose(),
        ym.as_ref(),
        1.0,
        Par::Seq,
    );
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
fn householder(a: MatRef<'_, f64>) -> Result<Vec<f64>, String> {
    let (m, n) = (a.nrows(), a.ncols());
    if m < n {
        return Err(format!("QR needs rows ≥ columns, got {m} × {n}"));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let par = Par::Seq;
    let mut qr = zeros(m, n)?;
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
    let mut q = zeros(m, n)?;
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
