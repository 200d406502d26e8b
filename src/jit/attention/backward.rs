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
//! — the same expression the autodiff graph builds (its rounding, not the exact
//! algebra: the maximum's gradient is kept though it sums to zero). Summation order
//! differs from the unfused graph's products and reductions: the row sums run in
//! eight lanes, `dV` and `dK` add the query rows' terms in row order and `dQ` the
//! keys' in key order, each with fused multiply-adds in the AVX2 build. As in the
//! forward kernel, masked probabilities are exactly zero (the graph's are
//! `exp(low − max)`, zero or within rounding of it), so masked keys are skipped.

use super::{Call, Fused, MulAdd, Plain, R, View, W, exp_poly, scores, sum_of, weighted};

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
    p: Vec<f32>,
    dp: Vec<f32>,
    ds: Vec<f32>,
    dq: Vec<f32>,
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
        p: vec![0.0; R * tk],
        dp: vec![0.0; R * tk],
        ds: vec![0.0; R * tk],
        dq: vec![0.0; R * d],
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
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the host has AVX2 and FMA.
        unsafe { rows_avx2(c, gv, bi, s) };
        return;
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

/// The rows of batch entry `bi`, `R` query rows at a time.
#[inline(always)]
fn rows<M: MulAdd>(c: &Call, gv: &GradViews, bi: usize, s: &mut Scratch) {
    let (tq, tk, d, dv) = (c.tq, c.tk, c.d, c.dv);
    let obase = c.out.entry(&c.batch, bi);
    let (osr, osc) = c.out.inner();
    let mut i0 = 0;
    while i0 < tq {
        let n = R.min(tq - i0);
        let (qb, gb) = (&s.q[i0 * d..(i0 + n) * d], &s.g[i0 * dv..(i0 + n) * dv]);
        scores::<M>(qb, (d, tk), &s.kt, &mut s.row[..n * tk]);
        scores::<M>(gb, (dv, tk), &s.vt, &mut s.dp[..n * tk]);
        let mut live_max = 0;
        for r in 0..n {
            let i = i0 + r;
            let live = c.causal.map_or(tk, |_| (i + 1).min(tk));
            let span = r * tk..(r + 1) * tk;
            let stats = (row_stat(c, &gv.max, bi, i), row_stat(c, &gv.sum, bi, i));
            grad_row(
                c,
                stats,
                live,
                &s.row[span.clone()],
                &s.dp[span.clone()],
                (&mut s.e[span.clone()], &mut s.p[span.clone()]),
                &mut s.ds[span],
            );
            live_max = live_max.max(live);
        }
        accumulate::<M>(&s.p[..n * tk], tk, live_max, gb, dv, &mut s.dv);
        accumulate::<M>(&s.ds[..n * tk], tk, live_max, qb, d, &mut s.dk);
        weighted::<M>(&s.ds[..n * tk], tk, live_max, &s.k, d, &mut s.dq[..n * d]);
        for r in 0..n {
            let at = obase + (i0 + r) as i64 * osr;
            for (ch, &x) in s.dq[r * d..(r + 1) * d].iter().enumerate() {
                // SAFETY: the output view lies within its buffer (plan invariant).
                unsafe { *(c.out.ptr as *mut f32).offset((at + ch as i64 * osc) as isize) = x };
            }
        }
        i0 += n;
    }
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
    for j in 0..live {
        e[j] = exp_poly(row[j] - mx);
        p[j] = e[j] / z;
    }
    e[live..].fill(0.0);
    p[live..].fill(0.0);
    // The division's gradient, then the exponential's.
    for j in 0..live {
        ds[j] = -(dp[j] * (p[j] / z));
    }
    let s1 = sum_of(&ds[..live]);
    for j in 0..live {
        ds[j] = (dp[j] / z + s1) * e[j];
    }
    // The row maximum's gradient, split over the keys that reach it (masked keys
    // hold the mask's value).
    let s2 = -sum_of(&ds[..live]);
    let mut cnt = row[..live].iter().filter(|&&x| x == mx).count();
    if c.causal == Some(mx) {
        cnt += tk - live;
    }
    let share = s2 * (1.0 / cnt as f32);
    for j in 0..live {
        if row[j] == mx {
            ds[j] += share;
        }
    }
    ds[live..].fill(0.0);
}

/// `acc[j, :] += Σ_r w[r, j] · x[r, :]` for keys `j < live` (`w` is `[rows, tk]`, `x`
/// `[rows, cols]`, `acc` `[tk, cols]`), rows in order.
#[inline(always)]
fn accumulate<M: MulAdd>(
    w: &[f32],
    tk: usize,
    live: usize,
    x: &[f32],
    cols: usize,
    acc: &mut [f32],
) {
    let rows = x.len() / cols.max(1);
    if cols == W {
        for j in 0..live {
            let mut a = [0.0f32; W];
            a.copy_from_slice(&acc[j * W..(j + 1) * W]);
            for r in 0..rows {
                let wj = w[r * tk + j];
                let xr = &x[r * W..(r + 1) * W];
                for l in 0..W {
                    a[l] = M::mul_add(wj, xr[l], a[l]);
                }
            }
            acc[j * W..(j + 1) * W].copy_from_slice(&a);
        }
        return;
    }
    for j in 0..live {
        let a = &mut acc[j * cols..(j + 1) * cols];
        for r in 0..rows {
            let wj = w[r * tk + j];
            for (al, &xl) in a.iter_mut().zip(&x[r * cols..(r + 1) * cols]) {
                *al = M::mul_add(wj, xl, *al);
            }
        }
    }
}
