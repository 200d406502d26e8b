//! [`super::grad_row_plain`]'s operations in AVX2 vectors of `L` lanes (or AVX-512 ones of
//! `2L`), in the same order on the same values (no fused multiply-adds but the
//! exponential's, which is the AVX forward kernel's `exp_fused`): the row sums add each
//! `L`-lane half in turn into `L` lanes.

use super::{L, RowSet, exp_fused, lane_sum};
use crate::jit::attention::lanes::Lanes;
use std::arch::x86_64::*;

/// `exp_fused` (`rnn::math::exp::<true>`) on eight lanes: the forward kernel's,
/// operation for operation.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn exp(x: __m256) -> __m256 {
    <crate::jit::attention::lanes::Avx2 as Lanes<8>>::exp(x)
}

/// The same on sixteen lanes.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn exp16(x: __m512) -> __m512 {
    <crate::jit::attention::lanes::Avx512 as Lanes<16>>::exp(x)
}

fn lanes(v: __m256) -> [f32; L] {
    // SAFETY: `__m256` and `[f32; 8]` have the same size, any bits valid.
    unsafe { std::mem::transmute::<__m256, [f32; L]>(v) }
}

/// A row's pointers and per-row constants.
#[derive(Clone, Copy)]
struct Row {
    x: *const f32,
    g: *const f32,
    p: *mut f32,
    ds: *mut f32,
    mx: f32,
    rz: f32,
}

/// The first pass on keys `j..j + 8`: exponentials into `ds`, probabilities into
/// `p`, `−dP·(p/z)` into `a1`, maxima counted (negated) into `cnt`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn first8(r: Row, j: usize, a1: &mut __m256, cnt: &mut __m256i) {
    let (vmx, vrz) = (_mm256_set1_ps(r.mx), _mm256_set1_ps(r.rz));
    // SAFETY: the caller keeps `j + 8` within the row.
    unsafe {
        let x = _mm256_loadu_ps(r.x.add(j));
        let e = exp(_mm256_sub_ps(x, vmx));
        let pv = _mm256_mul_ps(e, vrz);
        _mm256_storeu_ps(r.p.add(j), pv);
        _mm256_storeu_ps(r.ds.add(j), e);
        let g = _mm256_loadu_ps(r.g.add(j));
        // acc + −t is acc − t.
        *a1 = _mm256_sub_ps(*a1, _mm256_mul_ps(g, _mm256_mul_ps(pv, vrz)));
        let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(x, vmx);
        *cnt = _mm256_sub_epi32(*cnt, _mm256_castps_si256(eq));
    }
}

/// The second pass on keys `j..j + 8`: `dS` (before the maximum's share), summed.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn second8(r: Row, j: usize, s1: f32, a2: &mut __m256) {
    // SAFETY: the caller keeps `j + 8` within the row.
    unsafe {
        let g = _mm256_loadu_ps(r.g.add(j));
        let e = _mm256_loadu_ps(r.ds.add(j));
        let gz = _mm256_mul_ps(g, _mm256_set1_ps(r.rz));
        let v = _mm256_mul_ps(_mm256_add_ps(gz, _mm256_set1_ps(s1)), e);
        _mm256_storeu_ps(r.ds.add(j), v);
        *a2 = _mm256_add_ps(*a2, v);
    }
}

/// The third pass on keys `j..j + 8`: the maximum's share where the score is it.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn third8(r: Row, j: usize, share: f32) {
    // SAFETY: the caller keeps `j + 8` within the row.
    unsafe {
        let x = _mm256_loadu_ps(r.x.add(j));
        let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(x, _mm256_set1_ps(r.mx));
        let d = _mm256_loadu_ps(r.ds.add(j));
        let add = _mm256_and_ps(eq, _mm256_set1_ps(share));
        _mm256_storeu_ps(r.ds.add(j), _mm256_add_ps(d, add));
    }
}

/// The low and high `L` lanes.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn halves(v: __m512) -> (__m256, __m256) {
    let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v));
    (_mm512_castps512_ps256(v), _mm256_castpd_ps(hi))
}

/// [`first8`] on keys `j..j + 16`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn first16(r: Row, j: usize, a1: &mut __m256, cnt: &mut u32) {
    let (vmx, vrz) = (_mm512_set1_ps(r.mx), _mm512_set1_ps(r.rz));
    // SAFETY: the caller keeps `j + 16` within the row.
    unsafe {
        let x = _mm512_loadu_ps(r.x.add(j));
        let e = exp16(_mm512_sub_ps(x, vmx));
        let pv = _mm512_mul_ps(e, vrz);
        _mm512_storeu_ps(r.p.add(j), pv);
        _mm512_storeu_ps(r.ds.add(j), e);
        let g = _mm512_loadu_ps(r.g.add(j));
        let (lo, hi) = halves(_mm512_mul_ps(g, _mm512_mul_ps(pv, vrz)));
        *a1 = _mm256_sub_ps(_mm256_sub_ps(*a1, lo), hi);
        *cnt += _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(x, vmx).count_ones();
    }
}

/// [`second8`] on keys `j..j + 16`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn second16(r: Row, j: usize, s1: f32, a2: &mut __m256) {
    // SAFETY: the caller keeps `j + 16` within the row.
    unsafe {
        let g = _mm512_loadu_ps(r.g.add(j));
        let e = _mm512_loadu_ps(r.ds.add(j));
        let gz = _mm512_mul_ps(g, _mm512_set1_ps(r.rz));
        let v = _mm512_mul_ps(_mm512_add_ps(gz, _mm512_set1_ps(s1)), e);
        _mm512_storeu_ps(r.ds.add(j), v);
        let (lo, hi) = halves(v);
        *a2 = _mm256_add_ps(_mm256_add_ps(*a2, lo), hi);
    }
}

/// [`third8`] on keys `j..j + 16`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn third16(r: Row, j: usize, share: f32) {
    // SAFETY: the caller keeps `j + 16` within the row.
    unsafe {
        let x = _mm512_loadu_ps(r.x.add(j));
        let eq = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(x, _mm512_set1_ps(r.mx));
        let d = _mm512_loadu_ps(r.ds.add(j));
        let add = _mm512_maskz_mov_ps(eq, _mm512_set1_ps(share));
        _mm512_storeu_ps(r.ds.add(j), _mm512_add_ps(d, add));
    }
}

/// One row's pass after the block's common keys `c..`: 16 lanes (`WIDE`), then 8.
macro_rules! rest {
    ($wide:expr, $c:expr, $live:expr, |$j:ident, $w:ident| $step:expr) => {{
        let n16 = if $wide { $live / (2 * L) * (2 * L) } else { $c };
        for $j in ($c..n16).step_by(2 * L) {
            let $w = true;
            $step;
        }
        for $j in (n16.max($c)..$live / L * L).step_by(L) {
            let $w = false;
            $step;
        }
    }};
}

/// See [`super::grad_row_plain`]: the same per row, each pass over every row of
/// the block (16 lanes at a time when `WIDE`: the host has AVX-512F) before the
/// next pass.
#[inline(always)]
fn passes<const WIDE: bool, const RR: usize>(b: RowSet<'_, RR>) {
    let (tk, tkp) = b.tk;
    let need = (RR - 1) * tkp + tk;
    let lens = [b.s.0.len(), b.s.1.len(), b.p.len(), b.ds.len()];
    assert!(b.live.iter().all(|&l| l <= tk) && lens.iter().all(|&n| n >= need));
    let step = if WIDE { 2 * L } else { L };
    let common = b.live.iter().fold(tk, |m, &l| m.min(l)) / step * step;
    let (sp, gp) = (b.s.0.as_ptr(), b.s.1.as_ptr());
    let (pp, dsp) = (b.p.as_mut_ptr(), b.ds.as_mut_ptr());
    let rows: [Row; RR] = std::array::from_fn(|r| Row {
        x: sp.wrapping_add(r * tkp),
        g: gp.wrapping_add(r * tkp),
        p: pp.wrapping_add(r * tkp),
        ds: dsp.wrapping_add(r * tkp),
        mx: b.stats[r].0,
        rz: 1.0 / b.stats[r].1,
    });
    // SAFETY (all of it): every row's pointers cover its `tk` keys (asserted
    // above), the steps stay below `live ≤ tk`; the features are the caller's.
    unsafe {
        let (mut a1, mut cnt16) = ([_mm256_setzero_ps(); RR], [0u32; RR]);
        let mut cnt8 = [_mm256_setzero_si256(); RR];
        let first =
            |r: usize, j: usize, wide: bool, a: &mut __m256, c16: &mut u32, c8: &mut __m256i| {
                if WIDE && wide {
                    first16(rows[r], j, a, c16);
                } else {
                    first8(rows[r], j, a, c8);
                }
            };
        for j in (0..common).step_by(step) {
            for r in 0..RR {
                first(r, j, WIDE, &mut a1[r], &mut cnt16[r], &mut cnt8[r]);
            }
        }
        let mut s1 = [0.0f32; RR];
        let mut cnt = [0u32; RR];
        for (r, rr) in rows.iter().enumerate() {
            let live = b.live[r];
            rest!(WIDE, common, live, |j, w| first(
                r,
                j,
                w,
                &mut a1[r],
                &mut cnt16[r],
                &mut cnt8[r]
            ));
            let n8 = live / L * L;
            let mut rest = [0.0f32; L];
            for j in n8..live {
                let e = exp_fused(*rr.x.add(j) - rr.mx);
                *rr.p.add(j) = e * rr.rz;
                *rr.ds.add(j) = e;
                rest[j - n8] = -(*rr.g.add(j) * (*rr.p.add(j) * rr.rz));
            }
            s1[r] = lane_sum(&lanes(a1[r]), &rest[..live - n8]);
            let c8 = std::mem::transmute::<__m256i, [u32; L]>(cnt8[r]);
            let tail = std::slice::from_raw_parts(rr.x.add(n8), live - n8);
            let tail = tail.iter().map(|&x| u32::from(x == rr.mx));
            cnt[r] = cnt16[r] + c8.iter().sum::<u32>() + tail.sum::<u32>();
        }
        let mut a2 = [_mm256_setzero_ps(); RR];
        let second = |r: usize, j: usize, wide: bool, a: &mut __m256| {
            if WIDE && wide {
                second16(rows[r], j, s1[r], a);
            } else {
                second8(rows[r], j, s1[r], a);
            }
        };
        for j in (0..common).step_by(step) {
            for (r, a) in a2.iter_mut().enumerate() {
                second(r, j, WIDE, a);
            }
        }
        let mut share = [0.0f32; RR];
        for (r, rr) in rows.iter().enumerate() {
            let live = b.live[r];
            rest!(WIDE, common, live, |j, w| second(r, j, w, &mut a2[r]));
            let n8 = live / L * L;
            for j in n8..live {
                *rr.ds.add(j) *= *rr.g.add(j) * rr.rz + s1[r];
            }
            let tail = std::slice::from_raw_parts(rr.ds.add(n8), live - n8);
            let s2 = -lane_sum(&lanes(a2[r]), tail);
            if b.causal == Some(rr.mx) {
                cnt[r] += (tk - live) as u32;
            }
            share[r] = s2 * (1.0 / cnt[r] as f32);
        }
        let third = |r: usize, j: usize, wide: bool| {
            if WIDE && wide {
                third16(rows[r], j, share[r]);
            } else {
                third8(rows[r], j, share[r]);
            }
        };
        for j in (0..common).step_by(step) {
            (0..RR).for_each(|r| third(r, j, WIDE));
        }
        for (r, rr) in rows.iter().enumerate() {
            let live = b.live[r];
            rest!(WIDE, common, live, |j, w| third(r, j, w));
            for j in live / L * L..live {
                *rr.ds.add(j) += if *rr.x.add(j) == rr.mx { share[r] } else { 0.0 };
            }
            std::ptr::write_bytes(rr.p.add(live), 0, tk - live);
            std::ptr::write_bytes(rr.ds.add(live), 0, tk - live);
        }
    }
}

/// [`passes`] in AVX2 vectors.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) fn grad_rows<const RR: usize>(b: RowSet<'_, RR>) {
    passes::<false, RR>(b)
}

/// [`passes`] in AVX-512 vectors.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
pub(super) fn grad_rows_512<const RR: usize>(b: RowSet<'_, RR>) {
    passes::<true, RR>(b)
}

/// `dst[c · 16 + l] = src[l · stride + c]` for `l, c < 16`: a 16 × 16 transpose in
/// registers (pairs of rows, then of pairs, interleaved; then 128-bit quarters).
///
/// # Safety
/// The host has AVX-512F; `src` holds 16 rows of 16 floats `stride` apart.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose16(src: *const f32, stride: isize, dst: &mut [f32]) {
    assert!(dst.len() >= 256, "attention backward: a panel too short");
    let (mut r, mut t, mut u) = (
        [_mm512_setzero_ps(); 16],
        [_mm512_setzero_ps(); 16],
        [_mm512_setzero_ps(); 16],
    );
    for (i, ri) in r.iter_mut().enumerate() {
        // SAFETY: the caller's rows.
        *ri = unsafe { _mm512_loadu_ps(src.offset(i as isize * stride)) };
    }
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    // u[4g + m]: quarter q holds column 4q + m of rows 4g..4g + 4.
    for g in 0..4 {
        for h in 0..2 {
            let a = _mm512_castps_pd(t[4 * g + h]);
            let b = _mm512_castps_pd(t[4 * g + 2 + h]);
            u[4 * g + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            u[4 * g + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    }
    for m in 0..4 {
        let (u0, u1, u2, u3) = (u[m], u[4 + m], u[8 + m], u[12 + m]);
        let x = _mm512_shuffle_f32x4::<0x44>(u0, u1);
        let y = _mm512_shuffle_f32x4::<0xEE>(u0, u1);
        let z = _mm512_shuffle_f32x4::<0x44>(u2, u3);
        let v = _mm512_shuffle_f32x4::<0xEE>(u2, u3);
        let cols = [
            _mm512_shuffle_f32x4::<0x88>(x, z),
            _mm512_shuffle_f32x4::<0xDD>(x, z),
            _mm512_shuffle_f32x4::<0x88>(y, v),
            _mm512_shuffle_f32x4::<0xDD>(y, v),
        ];
        for (q, col) in cols.into_iter().enumerate() {
            // SAFETY: column 4q + m of 16 ends within `dst` (asserted above).
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add((4 * q + m) * 16), col) };
        }
    }
}
