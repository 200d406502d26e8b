//! The fused attention backward kernel (`plan::AttnKernel` with `grad`): for each batch
//! entry (each head), from the output's gradient `g`, the operands and the row maxima
//! and sums the forward kernel stored, it recomputes each block of query rows' scores
//! and softmax as the forward kernel computed them (the scores' sums in the same
//! order, so the same bits), and computes in cache
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
//! keys' in key order, each with fused multiply-adds in the vector builds (AVX2, and
//! AVX-512 where the host has it: the same operations, so the same bits). The entry's
//! `p'` and `dS` (`[tq, tk]` each) stay in the part's scratch for the two transposed
//! products, which run once per entry. As in the forward kernel, masked probabilities
//! are exactly zero (the graph's are `exp(low − max)`, zero or within rounding of it),
//! so masked keys are skipped.
//!
//! Every product is one register-blocked loop ([`block`]): `R` rows × 16 columns of
//! accumulators, the columns contiguous in a packed operand whose rows are padded to a
//! multiple of 16 with zeros (keys for the scores, channels for the others), so no
//! shape takes a scalar path; the padding's lanes are computed and never read.

#[cfg(target_arch = "x86_64")]
use super::exp_fused;
use super::{Call, MulAdd, Plain, View, exp_poly};
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

/// Columns per register block (two AVX vectors).
const W: usize = 16;
/// Rows per register block (`R` × 2 vectors of accumulators, 12 of the 16 registers).
const R: usize = 6;
/// Lanes of the row sums.
const L: usize = 8;

/// `n` rounded up to a multiple of `W`.
fn padded(n: usize) -> usize {
    n.div_ceil(W) * W
}

/// The padded sizes of one call: keys, key channels, value channels.
#[derive(Clone, Copy)]
struct Sizes {
    tq: usize,
    tk: usize,
    d: usize,
    dv: usize,
    tkp: usize,
    dp: usize,
    dvp: usize,
    chunk: usize,
}

/// Per-part scratch: the packed operands (zero padding written once), the key and
/// value gradients being summed, one block of rows' scores, and a chunk of rows'
/// probabilities and score gradients.
struct Scratch {
    /// `[tq, dp]`, `[tk, dp]`, `[tq, dvp]`.
    q: Vec<f32>,
    k: Vec<f32>,
    g: Vec<f32>,
    /// Keys by panels of `W`: `[tkp / W, d, W]` and `[tkp / W, dv, W]`.
    kt: Vec<f32>,
    vt: Vec<f32>,
    /// `[tk, dp]`, `[tk, dvp]`.
    dk: Vec<f32>,
    dv: Vec<f32>,
    /// One block's scores and `dP`, `[R, tkp]`; its `dQ`, `[R, dp]`.
    s: Vec<f32>,
    dpb: Vec<f32>,
    dq: Vec<f32>,
    /// A chunk of rows' probabilities and score gradients, `[chunk, tkp]`.
    p: Vec<f32>,
    ds: Vec<f32>,
}

/// Batch entries `lo..hi`.
pub(super) fn entries(c: &Call, gv: &GradViews, lo: usize, hi: usize) {
    let (tkp, dp, dvp) = (padded(c.tk), padded(c.d), padded(c.dv));
    let z = Sizes {
        tq: c.tq,
        tk: c.tk,
        d: c.d,
        dv: c.dv,
        tkp,
        dp,
        dvp,
        chunk: chunk(c.tq, tkp),
    };
    let mut s = Scratch {
        q: vec![0.0; z.tq * dp],
        k: vec![0.0; z.tk * dp],
        g: vec![0.0; z.tq * dvp],
        kt: vec![0.0; tkp * z.d],
        vt: vec![0.0; tkp * z.dv],
        dk: vec![0.0; z.tk * dp],
        dv: vec![0.0; z.tk * dvp],
        s: vec![0.0; R * tkp],
        dpb: vec![0.0; R * tkp],
        dq: vec![0.0; R * dp],
        p: vec![0.0; z.chunk * tkp],
        ds: vec![0.0; z.chunk * tkp],
    };
    for bi in lo..hi {
        entry(c, gv, z, bi, &mut s);
    }
}

/// Batch entry `bi`: packs its operands, runs its rows, writes `dK` and `dV`.
fn entry(c: &Call, gv: &GradViews, z: Sizes, bi: usize, s: &mut Scratch) {
    pack_rows(c, &c.q, bi, (z.tq, z.d), &mut s.q, z.dp);
    pack_rows(c, &c.k, bi, (z.tk, z.d), &mut s.k, z.dp);
    pack_rows(c, &gv.g, bi, (z.tq, z.dv), &mut s.g, z.dvp);
    pack_panels(c, &c.k, bi, (z.tk, z.d), &mut s.kt);
    pack_panels(c, &c.v, bi, (z.tk, z.dv), &mut s.vt);
    s.dk.fill(0.0);
    s.dv.fill(0.0);
    run_rows(c, gv, z, bi, s);
    unpack(c, &gv.dk, bi, (z.tk, z.d), &s.dk, z.dp);
    unpack(c, &gv.dv, bi, (z.tk, z.dv), &s.dv, z.dvp);
}

fn run_rows(c: &Call, gv: &GradViews, z: Sizes, bi: usize, s: &mut Scratch) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the host has AVX-512F, AVX2 and FMA.
            return unsafe { rows_avx512(c, gv, z, bi, s) };
        }
        // SAFETY: the host has AVX2 and FMA.
        return unsafe { rows_avx2(c, gv, z, bi, s) };
    }
    rows::<Plain>(c, gv, z, bi, s);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_avx512(c: &Call, gv: &GradViews, z: Sizes, bi: usize, s: &mut Scratch) {
    rows::<Fused512>(c, gv, z, bi, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(c: &Call, gv: &GradViews, z: Sizes, bi: usize, s: &mut Scratch) {
    rows::<Fused>(c, gv, z, bi, s)
}

/// Copies batch entry `bi` of a `[rows, cols]` view into `dst` row-major, rows
/// `stride` apart (the padding untouched).
fn pack_rows(
    c: &Call,
    v: &View,
    bi: usize,
    (rows, cols): (usize, usize),
    dst: &mut [f32],
    stride: usize,
) {
    let base = v.entry(&c.batch, bi);
    let (sr, sc) = v.inner();
    let src = v.ptr as *const f32;
    for (i, d) in dst.chunks_exact_mut(stride).take(rows).enumerate() {
        let at = base + i as i64 * sr;
        if sc == 1 {
            // SAFETY: the view's row lies within its buffer (plan invariant).
            let s = unsafe { std::slice::from_raw_parts(src.offset(at as isize), cols) };
            d[..cols].copy_from_slice(s);
        } else {
            for (j, x) in d[..cols].iter_mut().enumerate() {
                // SAFETY: the view lies within its buffer (plan invariant).
                *x = unsafe { *src.offset((at + j as i64 * sc) as isize) };
            }
        }
    }
}

/// Copies batch entry `bi` of a `[rows, cols]` view into `dst` transposed by panels of
/// `W` rows: `dst[(i / W) · cols · W + col · W + i % W] = v[i, col]`.
fn pack_panels(c: &Call, v: &View, bi: usize, (rows, cols): (usize, usize), dst: &mut [f32]) {
    let base = v.entry(&c.batch, bi);
    let (sr, sc) = v.inner();
    let src = v.ptr as *const f32;
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if cols == W && sc == 1 && std::arch::is_x86_feature_detected!("avx512f") {
        for (pi, panel) in dst.chunks_exact_mut(W * W).take(rows / W).enumerate() {
            let at = base + (pi * W) as i64 * sr;
            // SAFETY: the panel's rows lie within the view's buffer (plan invariant);
            // the host has AVX-512F.
            unsafe { lanes::transpose16(src.offset(at as isize), sr as isize, panel) };
            done = (pi + 1) * W;
        }
    }
    for i in done..rows {
        let at = base + i as i64 * sr;
        let o = (i / W) * cols * W + i % W;
        assert!(
            o + (cols - 1) * W < dst.len(),
            "attention backward: a panel outside"
        );
        for col in 0..cols {
            // SAFETY: the view lies within its buffer (plan invariant); `dst` by the
            // assertion above.
            unsafe {
                *dst.get_unchecked_mut(o + col * W) = *src.offset((at + col as i64 * sc) as isize);
            }
        }
    }
}

/// Writes a `[rows, cols]` matrix, rows `stride` apart in `src`, as batch entry `bi`
/// of view `v`.
fn unpack(c: &Call, v: &View, bi: usize, (rows, cols): (usize, usize), src: &[f32], stride: usize) {
    let base = v.entry(&c.batch, bi);
    for (i, s) in src.chunks_exact(stride).take(rows).enumerate() {
        store_row(v, base, i, &s[..cols]);
    }
}

/// Writes `x` as row `i` of the `[rows, cols]` matrix at offset `base` of view `v`.
fn store_row(v: &View, base: i64, i: usize, x: &[f32]) {
    let (sr, sc) = v.inner();
    let at = base + i as i64 * sr;
    let dst = v.ptr as *mut f32;
    if sc == 1 {
        // SAFETY: the view's row lies within its buffer (plan invariant).
        unsafe { std::ptr::copy_nonoverlapping(x.as_ptr(), dst.offset(at as isize), x.len()) };
        return;
    }
    for (j, &y) in x.iter().enumerate() {
        // SAFETY: the view lies within its buffer (plan invariant).
        unsafe { *dst.offset((at + j as i64 * sc) as isize) = y };
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
fn chunk(tq: usize, tkp: usize) -> usize {
    let fit = ((1 << 20) / tkp.max(1)) / R * R;
    tq.min(fit.max(R))
}

/// `acc[r] += Σ_{t<n} a[t·sa + r·sr] · b[t·sb ..][..W]` for `r < RR`, `t` in order
/// (each column's sum the same whatever the blocking).
#[inline(always)]
fn block<M: MulAdd, const RR: usize>(
    n: usize,
    (a, sa, sr): (&[f32], usize, usize),
    (b, sb): (&[f32], usize),
    acc: &mut [[f32; W]; RR],
) {
    if n == 0 {
        return;
    }
    assert!(
        (n - 1) * sa + (RR - 1) * sr < a.len() && (n - 1) * sb + W <= b.len(),
        "attention backward: a block outside its operands"
    );
    for t in 0..n {
        // SAFETY: within `b` and `a` by the assertion above.
        let bt = unsafe { &*(b.as_ptr().add(t * sb) as *const [f32; W]) };
        for (r, ar) in acc.iter_mut().enumerate() {
            // SAFETY: as above.
            let x = unsafe { *a.get_unchecked(t * sa + r * sr) };
            for l in 0..W {
                ar[l] = M::mul_add(x, bt[l], ar[l]);
            }
        }
    }
}

/// The rows of batch entry `bi` by chunks, then each chunk's terms of `dV` and `dK`.
#[inline(always)]
fn rows<M: Lanes>(c: &Call, gv: &GradViews, z: Sizes, bi: usize, s: &mut Scratch) {
    let causal = c.causal.is_some();
    let mut c0 = 0;
    while c0 < z.tq {
        let c1 = z.tq.min(c0 + z.chunk);
        let mut i0 = c0;
        while i0 + R <= c1 {
            block_rows::<M, R>(c, gv, z, bi, (c0, i0), s);
            i0 += R;
        }
        for i in i0..c1 {
            block_rows::<M, 1>(c, gv, z, bi, (c0, i), s);
        }
        let n = c1 - c0;
        let (p, ds) = (&s.p[..n * z.tkp], &s.ds[..n * z.tkp]);
        let (g, q) = (&s.g[c0 * z.dvp..c1 * z.dvp], &s.q[c0 * z.dp..c1 * z.dp]);
        transposed::<M>((p, n), (c0, z.tkp, z.tk), (g, z.dvp), causal, &mut s.dv);
        transposed::<M>((ds, n), (c0, z.tkp, z.tk), (q, z.dp), causal, &mut s.dk);
        c0 = c1;
    }
}

/// Query rows `i0..i0 + RR` of batch entry `bi` (in the chunk starting at `c0`): their
/// scores and `dP`, their probabilities and `dS` into the chunk's, and their `dQ`.
#[inline(always)]
fn block_rows<M: Lanes, const RR: usize>(
    c: &Call,
    gv: &GradViews,
    z: Sizes,
    bi: usize,
    (c0, i0): (usize, usize),
    s: &mut Scratch,
) {
    let (tk, tkp) = (z.tk, z.tkp);
    for pi in 0..tkp / W {
        let mut acc = [[0.0f32; W]; RR];
        let kt = &s.kt[pi * z.d * W..(pi + 1) * z.d * W];
        block::<M, RR>(z.d, (&s.q[i0 * z.dp..], 1, z.dp), (kt, W), &mut acc);
        for (r, a) in acc.iter().enumerate() {
            s.s[r * tkp + pi * W..][..W].copy_from_slice(a);
        }
        let mut acc = [[0.0f32; W]; RR];
        let vt = &s.vt[pi * z.dv * W..(pi + 1) * z.dv * W];
        block::<M, RR>(z.dv, (&s.g[i0 * z.dvp..], 1, z.dvp), (vt, W), &mut acc);
        for (r, a) in acc.iter().enumerate() {
            s.dpb[r * tkp + pi * W..][..W].copy_from_slice(a);
        }
    }
    let mut live = [tk; RR];
    let mut stats = [(0.0, 0.0); RR];
    for r in 0..RR {
        let i = i0 + r;
        live[r] = c.causal.map_or(tk, |_| (i + 1).min(tk));
        stats[r] = (row_stat(c, &gv.max, bi, i), row_stat(c, &gv.sum, bi, i));
    }
    let live_max = live.iter().fold(0, |m, &l| m.max(l));
    let at = (i0 - c0) * tkp;
    M::grad_rows(RowSet {
        causal: c.causal,
        stats,
        live,
        tk: (tk, tkp),
        s: (&s.s, &s.dpb),
        p: &mut s.p[at..],
        ds: &mut s.ds[at..],
    });
    let ds = &s.ds[(i0 - c0) * tkp..];
    for cb in 0..z.dp / W {
        let mut acc = [[0.0f32; W]; RR];
        block::<M, RR>(live_max, (ds, 1, tkp), (&s.k[cb * W..], z.dp), &mut acc);
        for (r, a) in acc.iter().enumerate() {
            s.dq[r * z.dp + cb * W..][..W].copy_from_slice(a);
        }
    }
    let obase = c.out.entry(&c.batch, bi);
    for r in 0..RR {
        store_row(&c.out, obase, i0 + r, &s.dq[r * z.dp..r * z.dp + z.d]);
    }
}

/// A block's rows for the row pass: each row's `(max, sum)` and live keys; the rows
/// `tk.1` apart (`tk.0` keys each) in the scores and `dP` `s` and in `p` and `ds`.
struct RowSet<'a, const RR: usize> {
    causal: Option<f32>,
    stats: [(f32, f32); RR],
    live: [usize; RR],
    tk: (usize, usize),
    s: (&'a [f32], &'a [f32]),
    p: &'a mut [f32],
    ds: &'a mut [f32],
}

/// A build's row pass: [`grad_row_plain`] row by row, or the same operations in
/// vectors, each pass over all the block's rows (independent work to overlap).
trait Lanes: MulAdd {
    fn grad_rows<const RR: usize>(b: RowSet<'_, RR>);
}

impl Lanes for Plain {
    #[inline(always)]
    fn grad_rows<const RR: usize>(b: RowSet<'_, RR>) {
        let (tk, tkp) = b.tk;
        for r in 0..RR {
            let span = r * tkp..r * tkp + tk;
            grad_row_plain(
                (b.causal, b.stats[r], b.live[r]),
                (&b.s.0[span.clone()], &b.s.1[span.clone()]),
                &mut b.p[span.clone()],
                &mut b.ds[span],
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Lanes for Fused {
    #[inline(always)]
    fn grad_rows<const RR: usize>(b: RowSet<'_, RR>) {
        // SAFETY: `Fused` runs only where the host has AVX2 and FMA (`run_rows`).
        unsafe { lanes::grad_rows(b) }
    }
}

/// [`Fused`] where the host also has AVX-512F: the row pass in 16 lanes.
#[cfg(target_arch = "x86_64")]
struct Fused512;

#[cfg(target_arch = "x86_64")]
impl MulAdd for Fused512 {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

#[cfg(target_arch = "x86_64")]
impl Lanes for Fused512 {
    #[inline(always)]
    fn grad_rows<const RR: usize>(b: RowSet<'_, RR>) {
        // SAFETY: `Fused512` runs only where the host has AVX-512F (`run_rows`).
        unsafe { lanes::grad_rows_512(b) }
    }
}

/// The sum of `lanes` and then of `rest` as `mod.rs`'s `sum_of` adds a row whose
/// `L`-element chunks went lane by lane into `lanes` and whose remainder is `rest`.
#[inline(always)]
fn lane_sum(lanes: &[f32; L], rest: &[f32]) -> f32 {
    let r: f32 = rest.iter().sum();
    lanes.iter().sum::<f32>() + r
}

/// One query row: from its scores `row` (unmasked), `dP` row `dp` and its stored
/// `(max, sum)`, the probabilities `p` as the forward kernel computed them and the
/// scores' gradient `ds`, both zero past the `live` keys. Three passes over the row
/// in `L` lanes: the exponentials (kept in `ds`), probabilities, first sum and count
/// of maxima; `dS` and its sum; the maximum's share.
#[inline(always)]
fn grad_row_plain(
    (causal, (mx, z), live): (Option<f32>, (f32, f32), usize),
    (row, dp): (&[f32], &[f32]),
    p: &mut [f32],
    ds: &mut [f32],
) {
    let tk = row.len();
    let rz = 1.0 / z;
    let n8 = live / L * L;
    let (row, dp) = (&row[..live], &dp[..live]);
    // The probabilities as the forward kernel computed them; the division's gradient
    // summed (−Σ dP·(p/z)).
    let mut a1 = [0.0f32; L];
    let mut cnt = [0u32; L];
    let chunks = row[..n8].chunks_exact(L).zip(dp[..n8].chunks_exact(L));
    let outs = p[..n8]
        .chunks_exact_mut(L)
        .zip(ds[..n8].chunks_exact_mut(L));
    for ((x, g), (pc, ec)) in chunks.zip(outs) {
        for l in 0..L {
            let e = exp_poly(x[l] - mx);
            let pv = e * rz;
            pc[l] = pv;
            ec[l] = e;
            a1[l] += -(g[l] * (pv * rz));
            cnt[l] += u32::from(x[l] == mx);
        }
    }
    let mut rest = [0.0f32; L];
    for j in n8..live {
        let e = exp_poly(row[j] - mx);
        p[j] = e * rz;
        ds[j] = e;
        rest[j - n8] = -(dp[j] * (p[j] * rz));
    }
    let s1 = lane_sum(&a1, &rest[..live - n8]);
    let tail = row[n8..].iter().map(|&x| u32::from(x == mx));
    let mut cnt: u32 = cnt.iter().sum::<u32>() + tail.sum::<u32>();
    // The exponential's gradient (times 1/z for each /z), summed.
    let mut a2 = [0.0f32; L];
    for (g, ec) in dp[..n8].chunks_exact(L).zip(ds[..n8].chunks_exact_mut(L)) {
        for l in 0..L {
            ec[l] *= g[l] * rz + s1;
            a2[l] += ec[l];
        }
    }
    for j in n8..live {
        ds[j] *= dp[j] * rz + s1;
    }
    let s2 = -lane_sum(&a2, &ds[n8..live]);
    // The row maximum's gradient, split over the keys that reach it (masked keys
    // hold the mask's value).
    if causal == Some(mx) {
        cnt += (tk - live) as u32;
    }
    let share = s2 * (1.0 / cnt as f32);
    for (d, &x) in ds[..live].iter_mut().zip(row) {
        *d += if x == mx { share } else { 0.0 };
    }
    p[live..tk].fill(0.0);
    ds[live..tk].fill(0.0);
}

/// `out[j, :] += Σ_i w[i, j] · x[i, :]` over a chunk of `rows` rows starting at query
/// row `c0` (`w` is `[rows, tkp]`, `x` `[rows, xs]`, `out` `[tk, xs]`), rows in order
/// (so chunks continue one sum), `R` keys × 16 columns at a time in registers. With a
/// causal mask rows before a key's own are zero in `w` and skipped.
#[inline(always)]
fn transposed<M: MulAdd>(
    (w, rows): (&[f32], usize),
    (c0, tkp, tk): (usize, usize, usize),
    (x, xs): (&[f32], usize),
    causal: bool,
    out: &mut [f32],
) {
    let first = |j: usize| {
        if causal {
            j.saturating_sub(c0).min(rows)
        } else {
            0
        }
    };
    let mut j0 = 0;
    while j0 + R <= tk {
        keys::<M, R>((w, rows, first(j0)), (j0, tkp), (x, xs), out);
        j0 += R;
    }
    for j in j0..tk {
        keys::<M, 1>((w, rows, first(j)), (j, tkp), (x, xs), out);
    }
}

/// Keys `j0..j0 + RR` of [`transposed`], from row `f` on.
#[inline(always)]
fn keys<M: MulAdd, const RR: usize>(
    (w, rows, f): (&[f32], usize, usize),
    (j0, tkp): (usize, usize),
    (x, xs): (&[f32], usize),
    out: &mut [f32],
) {
    if f >= rows {
        return;
    }
    for cb in 0..xs / W {
        let mut acc = [[0.0f32; W]; RR];
        for (r, a) in acc.iter_mut().enumerate() {
            a.copy_from_slice(&out[(j0 + r) * xs + cb * W..][..W]);
        }
        let a = (&w[f * tkp + j0..], tkp, 1);
        block::<M, RR>(rows - f, a, (&x[f * xs + cb * W..], xs), &mut acc);
        for (r, a) in acc.iter().enumerate() {
            out[(j0 + r) * xs + cb * W..][..W].copy_from_slice(a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod lanes;
