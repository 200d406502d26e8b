//! Runs a layer normalization kernel (`plan::NormKernel`) one row at a time: the row's
//! sum, its centred squares' sum, the inverse deviation, then the normalized row times
//! gamma plus beta, all while the row is in L1 — one pass over memory where the loop
//! nests make three, and 16 lanes per instruction (AVX-512, or two AVX2 halves) where
//! generated code has four. Rows are spread over the team.
//!
//! The sums are defined lane-wise and so are the same bits in every vector build: 16
//! partial sums (element `j` into partial `j mod 16`, in order), then added pairwise
//! (8 + 8, 4 + 4, 2 + 2, 1 + 1). The squares are fused multiply-adds in the AVX builds
//! (products and sums apart in the plain one). Mean and variance divide by `n`; the
//! inverse deviation is `1 / sqrt(var + ε)`; the result is `((x − mean)·inv)·gamma +
//! beta` in that order, as the graph's nodes compute it.

use super::frame::{Desc, DescKind, FrameLayout, access_parts, contiguous, guarded};
use super::plan::{NormKernel, NormPart};
use super::team;

#[cfg(target_arch = "x86_64")]
mod lanes;

/// Lanes of the partial sums.
const W: usize = 16;

/// Below this many elements the kernel runs on one thread (as loop nests do).
const PARALLEL_MIN_ELEMENTS: usize = 1 << 14;

/// Runs the layer normalization kernel of descriptor `desc` on the frame's buffers.
pub(super) extern "C" fn kiln_norm(frame: *mut i64, desc: *const Desc) {
    guarded(frame, desc, "layer normalization", |d, frame| {
        let DescKind::Norm(k) = &d.kind else {
            return Err("bad layer normalization descriptor".to_string());
        };
        Ok(Call::new(frame, d.fl, k).run())
    })
}

/// The kernel's operands at this call's sizes.
struct Call {
    rows: usize,
    dims: Vec<usize>,
    n: usize,
    x: *const f32,
    x_off: i64,
    x_strides: Vec<i64>,
    /// `x`'s rows are `n` apart from its offset.
    x_packed: bool,
    /// Nothing but the result is stored (no centred, normalized or scaled input).
    plain: bool,
    eps: f32,
    rms: bool,
    gamma: Option<*const f32>,
    beta: Option<*const f32>,
    out: *mut f32,
    /// Where each part is stored (contiguous), if it is.
    mean: Option<*mut f32>,
    centred: Option<*mut f32>,
    inv: Option<*mut f32>,
    normalized: Option<*mut f32>,
    scaled: Option<*mut f32>,
}

// SAFETY: the pointers are the frame's buffers; parts write disjoint rows.
unsafe impl Sync for Call {}

impl Call {
    fn new(frame: &[i64], fl: FrameLayout, k: &NormKernel) -> Call {
        let size = |s: usize| frame[s].max(0) as usize;
        let dims: Vec<usize> = k.rows.iter().map(|&s| size(s)).collect();
        let n = size(k.n);
        let (x, x_off, x_strides) = access_parts(frame, fl, &k.x);
        let shape: Vec<usize> = dims.iter().copied().chain([n]).collect();
        let x_packed = contiguous(&x_strides, &shape);
        let at = |a: &super::plan::Access| {
            let (p, off, _) = access_parts(frame, fl, a);
            p.wrapping_offset(off as isize) as *mut f32
        };
        let part = |which: NormPart| {
            (k.stores.iter())
                .find(|(p, _)| *p == which)
                .map(|(_, a)| at(a))
        };
        Call {
            rows: dims.iter().product(),
            dims,
            n,
            x,
            x_off,
            x_strides,
            x_packed,
            plain: k
                .stores
                .iter()
                .all(|(p, _)| matches!(p, NormPart::Mean | NormPart::Inv)),
            eps: k.eps,
            rms: k.rms,
            gamma: k.gamma.as_ref().map(|a| at(a) as *const f32),
            beta: k.beta.as_ref().map(|a| at(a) as *const f32),
            out: at(&k.out),
            mean: part(NormPart::Mean),
            centred: part(NormPart::Centred),
            inv: part(NormPart::Inv),
            normalized: part(NormPart::Normalized),
            scaled: part(NormPart::Scaled),
        }
    }

    /// Every row, spread over the team when large; false when a part panicked.
    fn run(&self) -> bool {
        let t = team::team();
        let parts = self.rows.min(team::MAX_PARTS).min(t.size());
        if parts <= 1 || self.rows.saturating_mul(self.n) < PARALLEL_MIN_ELEMENTS {
            self.range(0, self.rows);
            return true;
        }
        t.run(parts, &|p| {
            let (lo, hi) = team::split(self.rows as i64, parts, p, 1);
            self.range(lo as usize, hi as usize);
        })
    }

    /// Rows `lo..hi`, in the host's widest build.
    fn range(&self, lo: usize, hi: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            if avx512() {
                // SAFETY: the host has AVX-512F, AVX2 and FMA.
                return unsafe { rows_avx512(self, lo, hi) };
            }
            if avx2() {
                // SAFETY: the host has AVX2 and FMA.
                return unsafe { rows_avx2(self, lo, hi) };
            }
        }
        rows::<false>(self, lo, hi)
    }

    /// The offset of row `r` of `x`.
    fn x_row(&self, r: usize) -> i64 {
        if self.x_packed {
            return self.x_off + (r * self.n) as i64;
        }
        let mut rem = r;
        let mut off = self.x_off;
        for d in (0..self.dims.len()).rev() {
            off += (rem % self.dims[d]) as i64 * self.x_strides[d];
            rem /= self.dims[d];
        }
        off
    }
}

#[cfg(target_arch = "x86_64")]
use super::attention::{avx2, avx512};

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_avx512(c: &Call, lo: usize, hi: usize) {
    if c.n.is_multiple_of(W) {
        lanes::rows::<lanes::Avx512>(c, lo, hi)
    } else {
        rows::<true>(c, lo, hi)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(c: &Call, lo: usize, hi: usize) {
    if c.n.is_multiple_of(W) {
        lanes::rows::<lanes::Avx2>(c, lo, hi)
    } else {
        rows::<true>(c, lo, hi)
    }
}

/// `a·b + c`, fused when `F`.
#[inline(always)]
fn ma<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F { a.mul_add(b, c) } else { a * b + c }
}

/// The partial sums added pairwise (lane `l` and `l + 8`, then `l + 4`, `l + 2`,
/// `l + 1`), written as halvings so that vector builds keep them in registers.
#[inline(always)]
fn tree(p: [f32; W]) -> f32 {
    let a: [f32; 8] = std::array::from_fn(|l| p[l] + p[l + 8]);
    let b: [f32; 4] = std::array::from_fn(|l| a[l] + a[l + 4]);
    let c: [f32; 2] = std::array::from_fn(|l| b[l] + b[l + 2]);
    c[0] + c[1]
}

/// Rows at a time in each pass: their sums are independent chains the core overlaps
/// (one row's sums, shuffles, division and square root are a chain of ~100 cycles).
const BLOCK: usize = 8;

/// Rows `lo..hi`, `BLOCK` rows per pass: each row's `sum`, then each row's sum of
/// centred squares `squares(x, mean)`, then `finish(r, x, mean, inv)` — the one
/// structure of every build, which brings only its own sums and result.
#[inline(always)]
fn blocks(
    c: &Call,
    (lo, hi): (usize, usize),
    sum: impl Fn(&[f32]) -> f32,
    squares: impl Fn(&[f32], f32) -> f32,
    finish: impl Fn(usize, &[f32], f32, f32),
) {
    let n = c.n as f32;
    // SAFETY: the plan's access covers every row of `x` at this call's sizes.
    let row = |r: usize| unsafe {
        std::slice::from_raw_parts(c.x.wrapping_offset(c.x_row(r) as isize), c.n)
    };
    let mut b0 = lo;
    while b0 < hi {
        let rows = b0..hi.min(b0 + BLOCK);
        let (mut mean, mut inv) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
        for (i, r) in rows.clone().enumerate() {
            mean[i] = sum(row(r)) / n;
        }
        for (i, r) in rows.clone().enumerate() {
            inv[i] = 1.0 / (squares(row(r), mean[i]) / n + c.eps).sqrt();
        }
        for (i, r) in rows.clone().enumerate() {
            finish(r, row(r), mean[i], inv[i]);
        }
        b0 = rows.end;
    }
}

/// Rows `lo..hi` in plain code (see the module's documentation).
#[inline(always)]
fn rows<const F: bool>(c: &Call, lo: usize, hi: usize) {
    let full = c.n / W * W;
    let sum = |x: &[f32]| {
        let mut p = [0.0f32; W];
        for ch in x[..full].chunks_exact(W) {
            for l in 0..W {
                p[l] += ch[l];
            }
        }
        for (l, &v) in x[full..].iter().enumerate() {
            p[l] += v;
        }
        tree(p)
    };
    let squares = |x: &[f32], m: f32| {
        let mut q = [0.0f32; W];
        for ch in x[..full].chunks_exact(W) {
            for l in 0..W {
                let d = ch[l] - m;
                q[l] = ma::<F>(d, d, q[l]);
            }
        }
        for (l, &v) in x[full..].iter().enumerate() {
            let d = v - m;
            q[l] = ma::<F>(d, d, q[l]);
        }
        tree(q)
    };
    // SAFETY: rows of this call, owned by this part.
    blocks(c, (lo, hi), sum, squares, |r, x, m, s| unsafe {
        finish_row(c, r, x, m, s)
    });
}

/// Row `r`'s result (and its stores) from its mean and inverse deviation: one pass
/// when nothing else is stored.
///
/// # Safety
/// `r` is a row of this call, owned by the caller's part.
#[inline(always)]
unsafe fn finish_row(c: &Call, r: usize, x: &[f32], mean: f32, inv: f32) {
    let n = c.n;
    // SAFETY: the caller's contract (rows of contiguous `[rows, n]` buffers).
    unsafe {
        let out = std::slice::from_raw_parts_mut(c.out.add(r * n), n);
        let g = c.gamma.map(|g| std::slice::from_raw_parts(g, n));
        let b = c.beta.map(|b| std::slice::from_raw_parts(b, n));
        if c.plain {
            match (c.rms, g, b) {
                (false, Some(g), Some(b)) => {
                    for j in 0..n {
                        out[j] = ((x[j] - mean) * inv) * g[j] + b[j];
                    }
                }
                (true, Some(g), None) => {
                    for j in 0..n {
                        out[j] = (x[j] * inv) * g[j];
                    }
                }
                _ => general(c, r, x, out, (mean, inv), (g, b)),
            }
        } else {
            general(c, r, x, out, (mean, inv), (g, b));
        }
        if let Some(m) = c.mean {
            *m.add(r) = mean;
        }
        if let Some(i) = c.inv {
            *i.add(r) = inv;
        }
    }
}

/// [`finish_row`] for any options: a pass per step, each stored value copied out.
///
/// # Safety
/// As for [`finish_row`].
#[inline(always)]
unsafe fn general(
    c: &Call,
    r: usize,
    x: &[f32],
    out: &mut [f32],
    (mean, inv): (f32, f32),
    (g, b): (Option<&[f32]>, Option<&[f32]>),
) {
    let n = c.n;
    let store = |p: Option<*mut f32>, v: &[f32]| {
        if let Some(p) = p {
            // SAFETY: the caller's contract.
            unsafe { std::slice::from_raw_parts_mut(p.add(r * n), n) }.copy_from_slice(v);
        }
    };
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v - mean;
    }
    store(c.centred, out);
    if c.rms {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v * inv;
        }
    } else {
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
    store(c.normalized, out);
    if let Some(g) = g {
        for (o, &w) in out.iter_mut().zip(g) {
            *o *= w;
        }
    }
    store(c.scaled, out);
    if let Some(b) = b {
        for (o, &w) in out.iter_mut().zip(b) {
            *o += w;
        }
    }
}
