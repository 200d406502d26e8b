//! The fused attention backward kernel (`plan::AttnKernel` with `grad`): for each batch
//! entry (each head), from the output's gradient `g`, the operands and the row maxima
//! and sums the forward kernel stored, it recomputes each block of query rows' scores
//! and softmax exactly as the forward kernel computed them (same code, same bits), and
//! computes in cache
//!
//! ```text
//! dP = g·vᵀ                      dV += p'ᵀ·g
//! dS = (dP/z − Σ dP·(p/z))·e     plus the row maximum's gradient (−Σ dS over the
//!                                row's arg-maxima, split evenly), zero where masked
//! dQ = dS·k                      dK += dSᵀ·q
//! ```
//!
//! — the same expression the autodiff graph builds (not the exact algebra: the
//! maximum's gradient is kept though it sums to zero; each division by `z` is a
//! product with `1/z`, as in the forward kernel). Summation order
//! differs from the unfused graph's products and reductions: the row sums run in
//! eight lanes, `dV` and `dK` add the query rows' terms in row order and `dQ` the
//! keys' in key order, each with fused multiply-adds in the AVX2 build. The entry's
//! `p'` and `dS` (`[tq, tk]` each) stay in the part's scratch for the two transposed
//! products, which run once per entry with `dK` and `dV` rows in registers. As in the
//! forward kernel, masked probabilities are exactly zero (the graph's are
//! `exp(low − max)`, zero or within rounding of it), so masked keys are skipped.

use super::{Call, MulAdd, Plain, R, View, W, exp_poly, scores, sum_of, weighted};
#[cfg(target_arch = "x86_64")]
use super::{Fused, avx2};

/// The backward kernel's further views (see `plan::AttnGrad`).
pub(super) struct GradViews {
    pub g: View,
    pub max: View,
    pub sum: View,
    pub dk: View,
    pub dv: View,
}

/// Per-part scratch: the packed operands, the key and value gradients being summed,
/// and one block of rows' working values.
struct Scratch {
    q: Vec<f32>,
    kt: Vec<f32>,
    k: Vec<f32>,
    vt: Vec<f32>,
    g: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    row: Vec<f32>,
    e: Vec<f32>,
    dp: Vec<f32>,
    dq: Vec<f32>,
    /// A chunk of rows' probabilities and score gradients, `[chunk, tk]`.
    p: Vec<f32>,
    ds: Vec<f32>,
}

/// Batch entries `lo..hi`.
pub(super) fn entries(c: &Call, gv: &GradViews, lo: usize, hi: usize) {
    let (tq, tk, d, dv) = (c.tq, c.tk, c.d, c.dv);
    let mut s = Scratch {
        q: vec![0.0; tq * d],
        kt: vec![0.0; d * tk],
        k: vec![0.0; tk * d],
        vt: vec![0.0; dv * tk],
        g: vec![0.0; tq * dv],
        dk: vec![0.0; tk * d],
        dv: vec![0.0; tk * dv],
        row: vec![0.0; R * tk],
        e: vec![0.0; R * tk],
        dp: vec![0.0; R * tk],
        dq: vec![0.0; R * d],
        p: vec![0.0; chunk(tq, tk) * tk],
        ds: vec![0.0; chunk(tq, tk) * tk],
    };
    for bi in lo..hi {
        entry(c, gv, bi, &mut s);
    }
}

/// Batch entry `bi`: packs its operands, runs its rows, writes `dK` and `dV`.
fn entry(c: &Call, gv: &GradViews, bi: usize, s: &mut Scratch) {
    let (tq, tk, d, dv) = (c.tq, c.tk, c.d, c.dv);
    c.pack(&c.q, bi, (tq, d), &mut s.q, false);
    c.pack(&c.k, bi, (tk, d), &mut s.kt, true);
    c.pack(&c.k, bi, (tk, d), &mut s.k, false);
    c.pack(&c.v, bi, (tk, dv), &mut s.vt, true);
    c.pack(&gv.g, bi, (tq, dv), &mut s.g, false);
    s.dk.fill(0.0);
    s.dv.fill(0.0);
    run_rows(c, gv, bi, s);
    unpack(c, &gv.dk, bi, (tk, d), &s.dk);
    unpack(c, &gv.dv, bi, (tk, dv), &s.dv);
}

fn run_rows(c: &Call, gv: &GradViews, bi: usize, s: &mut Scratch) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the host has AVX2 and FMA.
        return unsafe { rows_avx2(c, gv, bi, s) };
    }
    rows::<Plain>(c, gv, bi, s);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(c: &Call, gv: &GradViews, bi: usize, s: &mut Scratch) {
    rows::<Fused>(c, gv, bi, s)
}

/// Writes a row-major `[rows, cols]` matrix as batch entry `bi` of view `v`.
fn unpack(c: &Call, v: &View, bi: usize, (rows, cols): (usize, usize), src: &[f32]) {
    let base = v.entry(&c.batch, bi);
    let (sr, sc) = v.inner();
    let dst = v.ptr as *mut f32;
    for i in 0..rows {
        let at = base + i as i64 * sr;
        for (j, &x) in src[i * cols..(i + 1) * cols].iter().enumerate() {
            // SAFETY: the view lies within its buffer (plan invariant).
            unsafe { *dst.offset((at + j as i64 * sc) as isize) = x };
        }
    }
}

/// Element `i` of batch entry `bi` of a `[batch…, tq]` view.
fn row_stat(c: &Call, v: &View, bi: usize, i: usize) -> f32 {
    let at = v.entry(&c.batch, bi) + i as i64 * v.strides[v.strides.len() - 1];
    // SAFETY: the view lies within its buffer (plan invariant).
    unsafe { *(v.ptr as *const f32).offset(at as isize) }
}

/// Query rows per chunk: the whole entry unless its `p'` and `dS` would pass 1 Mi
/// elements each (then a multiple of `R` rows that fits).
fn chunk(tq: usize, tk: usize) -> usize {
    let fit = ((1 << 20) / tk.max(1)) / R * R;
    tq.min(fit.max(R))
}

/// The rows of batch entry `bi` by chunks: `R` query rows at a time (scores, softmax,
/// `dS` and `dQ`), then the chunk's terms of `dV` and `dK`.
#[inline(always)]
fn rows<M: MulAdd>(c: &Call, gv: &GradViews, bi: usize, s: &mut Scratch) {
    let (tq, tk) = (c.tq, c.tk);
    let mut c0 = 0;
    while c0 < tq {
        let c1 = tq.min(c0 + chunk(tq, tk));
        chunk_rows::<M>(c, gv, bi, (c0, c1), s);
        c0 = c1;
    }
}

/// Rows `c0..c1` of batch entry `bi`.
#[inline(always)]
fn chunk_rows<M: MulAdd>(
    c: &Call,
    gv: &GradViews,
    bi: usize,
    (c0, c1): (usize, usize),
    s: &mut Scratch,
) {
    let (tk, d, dv) = (c.tk, c.d, c.dv);
    let obase = c.out.entry(&c.batch, bi);
    let (osr, osc) = c.out.inner();
    let mut i0 = c0;
    while i0 < c1 {
        let n = R.min(c1 - i0);
        let (qb, gb) = (&s.q[i0 * d..(i0 + n) * d], &s.g[i0 * dv..(i0 + n) * dv]);
        scores::<M>(qb, (d, tk), &s.kt, &mut s.row[..n * tk]);
        scores::<M>(gb, (dv, tk), &s.vt, &mut s.dp[..n * tk]);
        let mut live_max = 0;
        for r in 0..n {
            let i = i0 + r;
            let live = c.causal.map_or(tk, |_| (i + 1).min(tk));
            let span = r * tk..(r + 1) * tk;
            let at = (i - c0) * tk..(i - c0 + 1) * tk;
            let stats = (row_stat(c, &gv.max, bi, i), row_stat(c, &gv.sum, bi, i));
            grad_row(
                c,
                stats,
                live,
                &s.row[span.clone()],
                &s.dp[span.clone()],
                (&mut s.e[span], &mut s.p[at.clone()]),
                &mut s.ds[at],
            );
            live_max = live_max.max(live);
        }
        let dsb = &s.ds[(i0 - c0) * tk..(i0 - c0 + n) * tk];
        weighted::<M>(dsb, tk, live_max, &s.k, d, &mut s.dq[..n * d]);
        for r in 0..n {
            let at = obase + (i0 + r) as i64 * osr;
            for (ch, &x) in s.dq[r * d..(r + 1) * d].iter().enumerate() {
                // SAFETY: the output view lies within its buffer (plan invariant).
                unsafe { *(c.out.ptr as *mut f32).offset((at + ch as i64 * osc) as isize) = x };
            }
        }
        i0 += n;
    }
    let causal = c.causal.is_some();
    let (p, ds) = (&s.p[..(c1 - c0) * tk], &s.ds[..(c1 - c0) * tk]);
    let (g, q) = (&s.g[c0 * dv..c1 * dv], &s.q[c0 * d..c1 * d]);
    transposed::<M>(p, (c0, tk), g, dv, causal, &mut s.dv);
    transposed::<M>(ds, (c0, tk), q, d, causal, &mut s.dk);
}

/// One query row: from its scores `row` (unmasked), `dP` row `dp` and its stored
/// `(max, sum)`, the probabilities `p` (and exponentials `e`) as the forward kernel
/// computed them and the scores' gradient `ds`, all zero past the `live` keys.
#[inline(always)]
fn grad_row(
    c: &Call,
    (mx, z): (f32, f32),
    live: usize,
    row: &[f32],
    dp: &[f32],
    (e, p): (&mut [f32], &mut [f32]),
    ds: &mut [f32],
) {
    let tk = row.len();
    let rz = 1.0 / z;
    // The probabilities as the forward kernel computed them.
    for j in 0..live {
        e[j] = exp_poly(row[j] - mx);
        p[j] = e[j] * rz;
    }
    e[live..].fill(0.0);
    p[live..].fill(0.0);
    // The division's gradient, then the exponential's (times 1/z for each /z); the
    // row sums in `sum_of`'s lanes (the elementwise loops vectorize as they are).
    for j in 0..live {
        ds[j] = -(dp[j] * (p[j] * rz));
    }
    let s1 = sum_of(&ds[..live]);
    for j in 0..live {
        ds[j] = (dp[j] * rz + s1) * e[j];
    }
    let s2 = -sum_of(&ds[..live]);
    let mut cnt: u32 = row[..live].iter().map(|&x| u32::from(x == mx)).sum();
    // The row maximum's gradient, split over the keys that reach it (masked keys
    // hold the mask's value).
    if c.causal == Some(mx) {
        cnt += (tk - live) as u32;
    }
    let share = s2 * (1.0 / cnt as f32);
    for (d, &x) in ds[..live].iter_mut().zip(row) {
        *d += if x == mx { share } else { 0.0 };
    }
    ds[live..].fill(0.0);
}

/// Keys per register block of [`transposed`].
const J: usize = 4;

/// `out[j, :] += Σ_i w[i, j] · x[i, :]` over a chunk of rows starting at query row
/// `c0` (`w` is `[rows, tk]`, `x` `[rows, cols]`, `out` `[tk, cols]`), rows in order
/// (so chunks continue one sum), `J` keys × 16 columns at a time in registers. With a
/// causal mask rows before a key's own are zero in `w` and skipped.
#[inline(always)]
fn transposed<M: MulAdd>(
    w: &[f32],
    (c0, tk): (usize, usize),
    x: &[f32],
    cols: usize,
    causal: bool,
    out: &mut [f32],
) {
    let tq = x.len() / cols.max(1);
    let first = |j: usize| {
        if causal {
            j.saturating_sub(c0).min(tq)
        } else {
            0
        }
    };
    let mut j0 = 0;
    if cols == W {
        while j0 + J <= tk {
            let mut a = [[0.0f32; W]; J];
            for (jj, aj) in a.iter_mut().enumerate() {
                aj.copy_from_slice(&out[(j0 + jj) * W..(j0 + jj + 1) * W]);
            }
            for i in first(j0)..tq {
                let xr = &x[i * W..(i + 1) * W];
                let wr = &w[i * tk + j0..i * tk + j0 + J];
                for jj in 0..J {
                    for l in 0..W {
                        a[jj][l] = M::mul_add(wr[jj], xr[l], a[jj][l]);
                    }
                }
            }
            for (jj, aj) in a.iter().enumerate() {
                out[(j0 + jj) * W..(j0 + jj + 1) * W].copy_from_slice(aj);
            }
            j0 += J;
        }
    }
    for j in j0..tk {
        let o = &mut out[j * cols..(j + 1) * cols];
        for i in first(j)..tq {
            let wij = w[i * tk + j];
            for (ol, &xl) in o.iter_mut().zip(&x[i * cols..(i + 1) * cols]) {
                *ol = M::mul_add(wij, xl, *ol);
            }
        }
    }
}
