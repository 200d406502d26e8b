//! Runs a fused attention kernel (`plan::AttnKernel`): for each batch entry (each head),
//! the block's queries, keys (transposed) and values are packed once, then each query
//! row's scores, softmax and weighted sum of values are computed while the row is in
//! L1 — no score matrix goes through memory unless the backward pass reads one of
//! the softmax's pieces (then exactly those are stored). Batch entries are spread over
//! the team. The inner loops run along contiguous rows so that they vectorize, built
//! twice: with AVX2 and FMA when the host has them, and plain. `exp` is the same
//! polynomial as the generated code's (`mathfn.rs`). The backward kernel is in
//! `backward.rs`.

use super::frame::{Desc, DescKind, FrameLayout, access_parts, set_error};
use super::plan::{AttnKernel, Stage};
use super::team;

mod backward;

/// Below this many multiply-adds the kernel runs on one thread.
const PARALLEL_MIN_MACS: usize = 1 << 15;

/// Runs the attention kernel of descriptor `desc` on the frame's buffers.
pub(super) extern "C" fn kiln_attention(frame: *mut i64, desc: *const Desc) {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: `desc` points at a descriptor owned by the running kernel.
        let d = unsafe { &*desc };
        let DescKind::Attention(a) = &d.kind else {
            return Err("bad attention descriptor".to_string());
        };
        // SAFETY: the frame has `fl.len()` slots, written by `run` for this call.
        let frame = unsafe { std::slice::from_raw_parts(frame, d.fl.len()) };
        if Call::new(frame, d.fl, a).run() {
            Ok(())
        } else {
            Err("a panic inside attention".to_string())
        }
    });
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => set_error(e),
        Err(_) => set_error("a panic inside attention".into()),
    }
}

/// A `[batch…, rows, cols]` view: its buffer's address, offset and strides.
struct View {
    ptr: usize,
    off: i64,
    strides: Vec<i64>,
}

impl View {
    fn new(frame: &[i64], fl: FrameLayout, a: &super::plan::Access) -> View {
        let (p, off, strides) = access_parts(frame, fl, a);
        View {
            ptr: p as usize,
            off,
            strides,
        }
    }

    /// The offset of batch entry `bi` (row-major over `batch`).
    fn entry(&self, batch: &[usize], bi: usize) -> i64 {
        let mut rem = bi;
        let mut off = self.off;
        for d in (0..batch.len()).rev() {
            off += (rem % batch[d]) as i64 * self.strides[d];
            rem /= batch[d];
        }
        off
    }

    /// The row and column strides.
    fn inner(&self) -> (i64, i64) {
        let r = self.strides.len();
        (self.strides[r - 2], self.strides[r - 1])
    }
}

/// One run of the kernel, sizes and addresses read from the frame.
struct Call {
    batch: Vec<usize>,
    total: usize,
    tq: usize,
    tk: usize,
    d: usize,
    dv: usize,
    q: View,
    k: View,
    v: View,
    out: View,
    causal: Option<f32>,
    /// Each stage's contiguous buffer (0: not stored), indexed by `stage_index`.
    stores: [usize; 8],
    /// The backward kernel's further views (`None`: the forward kernel).
    grad: Option<backward::GradViews>,
}

fn stage_index(s: Stage) -> usize {
    match s {
        Stage::Scores => 0,
        Stage::Masked => 1,
        Stage::Max => 2,
        Stage::Shifted => 3,
        Stage::Exp => 4,
        Stage::Sum => 5,
        Stage::Probs => 6,
        Stage::MaskedProbs => 7,
    }
}

/// Per-part scratch: the packed block and one row's working values.
struct Scratch {
    q: Vec<f32>,
    kt: Vec<f32>,
    v: Vec<f32>,
    row: Vec<f32>,
    e: Vec<f32>,
    p: Vec<f32>,
    o: Vec<f32>,
}

impl Call {
    fn new(frame: &[i64], fl: FrameLayout, a: &AttnKernel) -> Call {
        let size = |s: usize| frame[s].max(0) as usize;
        let batch: Vec<usize> = a.batch.iter().map(|&s| size(s)).collect();
        let mut stores = [0usize; 8];
        for &(st, buf) in &a.stores {
            stores[stage_index(st)] = frame[fl.sizes + buf] as usize;
        }
        Call {
            total: batch.iter().product(),
            batch,
            tq: size(a.tq),
            tk: size(a.tk),
            d: size(a.d),
            dv: size(a.dv),
            q: View::new(frame, fl, &a.q),
            k: View::new(frame, fl, &a.k),
            v: View::new(frame, fl, &a.v),
            out: View::new(frame, fl, &a.out),
            causal: a.causal,
            stores,
            grad: a.grad.as_ref().map(|g| backward::GradViews {
                g: View::new(frame, fl, &g.g),
                max: View::new(frame, fl, &g.max),
                sum: View::new(frame, fl, &g.sum),
                dk: View::new(frame, fl, &g.dk),
                dv: View::new(frame, fl, &g.dv),
            }),
        }
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            q: vec![0.0; self.tq * self.d],
            kt: vec![0.0; self.d * self.tk],
            v: vec![0.0; self.tk * self.dv],
            row: vec![0.0; R * self.tk],
            e: vec![0.0; R * self.tk],
            p: vec![0.0; R * self.tk],
            o: vec![0.0; R * self.dv],
        }
    }

    /// Every batch entry, spread over the team when large; false when a part panicked.
    fn run(&self) -> bool {
        let products = if self.grad.is_some() { 5 } else { 2 };
        let macs = self
            .total
            .saturating_mul(self.tq)
            .saturating_mul(self.tk)
            .saturating_mul(self.d.max(self.dv) * products);
        let t = team::team();
        let parts = self.total.min(team::MAX_PARTS);
        if t.size() == 1 || parts <= 1 || macs < PARALLEL_MIN_MACS {
            self.entries(0, self.total);
            return true;
        }
        t.run(parts, &|p| {
            let (lo, hi) = team::split(self.total as i64, parts, p, 1);
            self.entries(lo as usize, hi as usize);
        })
    }

    /// Batch entries `lo..hi`.
    fn entries(&self, lo: usize, hi: usize) {
        if let Some(g) = &self.grad {
            return backward::entries(self, g, lo, hi);
        }
        let mut s = self.scratch();
        (lo..hi).for_each(|bi| self.entry(bi, &mut s));
    }

    /// Batch entry `bi`: packs its operands, then runs its rows.
    fn entry(&self, bi: usize, s: &mut Scratch) {
        let (tq, tk, d, dv) = (self.tq, self.tk, self.d, self.dv);
        self.pack(&self.q, bi, (tq, d), &mut s.q, false);
        self.pack(&self.k, bi, (tk, d), &mut s.kt, true);
        self.pack(&self.v, bi, (tk, dv), &mut s.v, false);
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the host has AVX2 and FMA.
            return unsafe { rows_avx2(self, bi, s) };
        }
        rows::<Plain>(self, bi, s);
    }

    /// Copies batch entry `bi` of a `[rows, cols]` view into `dst`, row-major or
    /// (`transpose`) column-major.
    fn pack(
        &self,
        v: &View,
        bi: usize,
        (rows, cols): (usize, usize),
        dst: &mut [f32],
        transpose: bool,
    ) {
        let base = v.entry(&self.batch, bi);
        let (sr, sc) = v.inner();
        let src = v.ptr as *const f32;
        for i in 0..rows {
            let row = base + i as i64 * sr;
            if sc == 1 && !transpose {
                // SAFETY: the view's row lies within its buffer (plan invariant).
                let s = unsafe { std::slice::from_raw_parts(src.offset(row as isize), cols) };
                dst[i * cols..(i + 1) * cols].copy_from_slice(s);
                continue;
            }
            for c in 0..cols {
                let at = if transpose {
                    c * rows + i
                } else {
                    i * cols + c
                };
                // SAFETY: the view lies within its buffer (plan invariant).
                dst[at] = unsafe { *src.offset((row + c as i64 * sc) as isize) };
            }
        }
    }

    /// Stores `row` as row `i` of batch entry `bi` of a `[batch…, tq, tk]` stage.
    fn store_row(&self, st: Stage, bi: usize, i: usize, row: &[f32]) {
        let p = self.stores[stage_index(st)];
        if p != 0 {
            let at = (bi * self.tq + i) * self.tk;
            // SAFETY: the stage's buffer is a contiguous [batch…, tq, tk] arena region.
            unsafe {
                std::ptr::copy_nonoverlapping(row.as_ptr(), (p as *mut f32).add(at), row.len())
            };
        }
    }

    /// Stores `x` as element `i` of batch entry `bi` of a `[batch…, tq]` stage.
    fn store_one(&self, st: Stage, bi: usize, i: usize, x: f32) {
        let p = self.stores[stage_index(st)];
        if p != 0 {
            // SAFETY: the stage's buffer is a contiguous [batch…, tq] arena region.
            unsafe { *(p as *mut f32).add(bi * self.tq + i) = x };
        }
    }
}

/// `a*b + c`: fused, or a product and a sum.
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

struct Plain;
impl MulAdd for Plain {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

#[cfg(target_arch = "x86_64")]
struct Fused;
#[cfg(target_arch = "x86_64")]
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(c: &Call, bi: usize, s: &mut Scratch) {
    rows::<Fused>(c, bi, s)
}

/// Whether the host has AVX2 and FMA (the kernels' vector build). An AVX-512 build
/// was measured on this project's Zen-class machine (512-bit operations double-pumped)
/// and gained nothing over it, so there is none.
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `exp(x)` as `mathfn::exp` computes it (Cephes' polynomial, 2^n from the exponent
/// bits), in a form that vectorizes: the recurrent kernels' own (no fused multiply-adds,
/// so the plain and the AVX2/FMA builds give the same bits).
#[inline(always)]
fn exp_poly(x: f32) -> f32 {
    super::rnn::math::exp::<false>(x)
}

/// Lane-parallel maximum and sum (eight accumulators, so the loops vectorize; the
/// elementwise loops vectorize as they are, a lane-fused one with `exp_poly` did not).
#[inline(always)]
fn sum_of(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut it = x.chunks_exact(8);
    for ch in &mut it {
        for l in 0..8 {
            acc[l] += ch[l];
        }
    }
    let r: f32 = it.remainder().iter().sum();
    acc.iter().sum::<f32>() + r
}

#[inline(always)]
fn max_of(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut it = x.chunks_exact(8);
    for ch in &mut it {
        for l in 0..8 {
            acc[l] = if ch[l] > acc[l] { ch[l] } else { acc[l] };
        }
    }
    let m = it
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    acc.iter().fold(m, |m, &v| m.max(v))
}

/// The rows of batch entry `bi` (its operands packed in `s`), `R` query rows at a
/// time (the products keep `R` × 16 accumulators in registers).
#[inline(always)]
fn rows<M: MulAdd>(c: &Call, bi: usize, s: &mut Scratch) {
    let (tq, tk, d, dv) = (c.tq, c.tk, c.d, c.dv);
    let obase = c.out.entry(&c.batch, bi);
    let (osr, osc) = c.out.inner();
    let Scratch {
        q,
        kt,
        v,
        row,
        e,
        p,
        o,
    } = s;
    let mut i0 = 0;
    while i0 < tq {
        let n = R.min(tq - i0);
        scores::<M>(&q[i0 * d..(i0 + n) * d], (d, tk), kt, &mut row[..n * tk]);
        let mut live_max = 0;
        for r in 0..n {
            let i = i0 + r;
            let span = r * tk..(r + 1) * tk;
            let live = softmax_row(c, bi, i, &mut row[span.clone()], &mut e[span.clone()]);
            p[span.clone()].copy_from_slice(&e[span]);
            live_max = live_max.max(live);
        }
        weighted::<M>(&p[..n * tk], tk, live_max, v, dv, &mut o[..n * dv]);
        for r in 0..n {
            let at = obase + (i0 + r) as i64 * osr;
            for (ch, &x) in o[r * dv..(r + 1) * dv].iter().enumerate() {
                // SAFETY: the output view lies within its buffer (plan invariant).
                unsafe { *(c.out.ptr as *mut f32).offset((at + ch as i64 * osc) as isize) = x };
            }
        }
        i0 += n;
    }
}

/// Query row `i`'s softmax: `row` holds its scores on entry; `e` gets its (masked)
/// probabilities. Stores the stages asked for; returns how many keys it attends to.
#[inline(always)]
fn softmax_row(c: &Call, bi: usize, i: usize, row: &mut [f32], e: &mut [f32]) -> usize {
    let tk = row.len();
    c.store_row(Stage::Scores, bi, i, row);
    // Keys after the query's own step are masked (iota_row >= iota_col attends).
    let live = match c.causal {
        Some(low) => {
            let live = (i + 1).min(tk);
            row[live..].fill(low);
            c.store_row(Stage::Masked, bi, i, row);
            live
        }
        None => tk,
    };
    let mx = max_of(row);
    c.store_one(Stage::Max, bi, i, mx);
    for r in row.iter_mut() {
        *r -= mx;
    }
    c.store_row(Stage::Shifted, bi, i, row);
    for (e, &r) in e.iter_mut().zip(row.iter()) {
        *e = exp_poly(r);
    }
    c.store_row(Stage::Exp, bi, i, e);
    let z = sum_of(e);
    c.store_one(Stage::Sum, bi, i, z);
    // One division per row: the probabilities are the exponentials times 1/z (within
    // an ulp of the graph's quotients).
    let rz = 1.0 / z;
    for e in e.iter_mut() {
        *e *= rz;
    }
    c.store_row(Stage::Probs, bi, i, e);
    if c.causal.is_some() {
        e[live..].fill(0.0);
        c.store_row(Stage::MaskedProbs, bi, i, e);
    }
    live
}

/// Query rows per block.
const R: usize = 4;
/// Columns per register block (two AVX vectors).
const W: usize = 16;

/// `out[r, j] = Σ_c q[r, c] · kt[c, j]` for the `out.len() / tk` rows of `q`
/// (`[rows, d]`; `kt` is `[d, tk]`; `tk` ≥ 1), `R` rows × 16 columns at a time in
/// registers.
#[inline(always)]
fn scores<M: MulAdd>(q: &[f32], (d, tk): (usize, usize), kt: &[f32], out: &mut [f32]) {
    let rows = out.len() / tk.max(1);
    let mut j0 = 0;
    if rows == R {
        while j0 + W <= tk {
            let mut acc = [[0.0f32; W]; R];
            for c in 0..d {
                let kr = &kt[c * tk + j0..c * tk + j0 + W];
                for r in 0..R {
                    let qv = q[r * d + c];
                    for l in 0..W {
                        acc[r][l] = M::mul_add(qv, kr[l], acc[r][l]);
                    }
                }
            }
            for r in 0..R {
                out[r * tk + j0..r * tk + j0 + W].copy_from_slice(&acc[r]);
            }
            j0 += W;
        }
    }
    for r in 0..rows {
        for j in j0..tk {
            let mut acc = 0.0f32;
            for c in 0..d {
                acc = M::mul_add(q[r * d + c], kt[c * tk + j], acc);
            }
            out[r * tk + j] = acc;
        }
    }
}

/// `o[r, c] = Σ_{j < live} p[r, j] · v[j, c]` for the rows of `p` (`[rows, tk]`; `v`
/// is `[tk, dv]`), `R` rows × 16 columns at a time in registers.
#[inline(always)]
fn weighted<M: MulAdd>(p: &[f32], tk: usize, live: usize, v: &[f32], dv: usize, o: &mut [f32]) {
    let rows = p.len() / tk.max(1);
    let mut c0 = 0;
    if rows == R {
        while c0 + W <= dv {
            let mut acc = [[0.0f32; W]; R];
            for j in 0..live {
                let vr = &v[j * dv + c0..j * dv + c0 + W];
                for r in 0..R {
                    let pj = p[r * tk + j];
                    for l in 0..W {
                        acc[r][l] = M::mul_add(pj, vr[l], acc[r][l]);
                    }
                }
            }
            for r in 0..R {
                o[r * dv + c0..r * dv + c0 + W].copy_from_slice(&acc[r]);
            }
            c0 += W;
        }
    }
    for r in 0..rows {
        for c in c0..dv {
            let mut acc = 0.0f32;
            for j in 0..live {
                acc = M::mul_add(p[r * tk + j], v[j * dv + c], acc);
            }
            o[r * dv + c] = acc;
        }
    }
}
