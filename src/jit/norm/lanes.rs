//! Rows whose length is a multiple of 16 in 16-lane registers: one AVX-512 vector or two
//! AVX2 halves, each operation the plain code's lane by lane (the sums' lanes and
//! pairwise tree, the squares fused), so the same bits as `super::rows::<true>`.

use std::arch::x86_64::*;

use crate::jit::attention::lanes::Lanes;

use super::{Call, blocks, finish_row};

/// Sixteen lanes: attention's lane operations (`jit::attention::lanes`), as one
/// AVX-512 vector or two AVX2 halves, with loads and stores through pointers and the
/// pairwise sum of the lanes.
pub(super) trait L16 {
    type V: Copy;
    /// # Safety
    /// `p..p + 16` is readable.
    unsafe fn load(p: *const f32) -> Self::V;
    /// # Safety
    /// `p..p + 16` is writable.
    unsafe fn store(p: *mut f32, v: Self::V);
    fn splat(x: f32) -> Self::V;
    fn add(a: Self::V, b: Self::V) -> Self::V;
    fn sub(a: Self::V, b: Self::V) -> Self::V;
    fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a·b + c`, fused.
    fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lanes `l` and `l + 8` added, then `l + 4`, `l + 2`, `l + 1`.
    fn tree(v: Self::V) -> f32;
}

/// The last steps of the tree on eight lanes: `l + 4`, then `[b0 + b2, b1 + b3]`, then
/// their sum.
#[inline(always)]
fn tree8(a: __m256) -> f32 {
    // SAFETY: AVX is present wherever a 16-lane build runs (AVX2 at least).
    unsafe {
        let b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
        let c = _mm_add_ps(b, _mm_movehl_ps(b, b));
        _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps::<1>(c, c)))
    }
}

/// Two AVX2 halves (lanes 0–7, 8–15); used only where the host has AVX2 and FMA.
pub(super) use crate::jit::attention::lanes::Avx2;
/// AVX-512F registers; used only where the host has AVX-512F, AVX2 and FMA.
pub(super) use crate::jit::attention::lanes::Avx512;

// SAFETY (every `unsafe` below): the caller's pointers cover 16 floats; the host has
// the features (see `Avx512`).
impl L16 for Avx512 {
    type V = __m512;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        <Avx512 as Lanes<16>>::load(unsafe { &*p.cast::<[f32; 16]>() })
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        <Avx512 as Lanes<16>>::store(v, unsafe { &mut *p.cast::<[f32; 16]>() })
    }
    #[inline(always)]
    fn splat(x: f32) -> __m512 {
        <Avx512 as Lanes<16>>::splat(x)
    }
    #[inline(always)]
    fn add(a: __m512, b: __m512) -> __m512 {
        <Avx512 as Lanes<16>>::add(a, b)
    }
    #[inline(always)]
    fn sub(a: __m512, b: __m512) -> __m512 {
        <Avx512 as Lanes<16>>::sub(a, b)
    }
    #[inline(always)]
    fn mul(a: __m512, b: __m512) -> __m512 {
        <Avx512 as Lanes<16>>::mul(a, b)
    }
    #[inline(always)]
    fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        <Avx512 as Lanes<16>>::mul_add(a, b, c)
    }
    #[inline(always)]
    fn tree(v: __m512) -> f32 {
        unsafe {
            let lo = _mm512_castps512_ps256(v);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            tree8(_mm256_add_ps(lo, hi))
        }
    }
}

// SAFETY (every `unsafe` below): the caller's pointers cover 16 floats; the host has
// the features (see `Avx2`).
impl L16 for Avx2 {
    type V = (__m256, __m256);
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        let h = |q: *const f32| <Avx2 as Lanes<8>>::load(unsafe { &*q.cast::<[f32; 8]>() });
        (h(p), h(p.wrapping_add(8)))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        <Avx2 as Lanes<8>>::store(v.0, unsafe { &mut *p.cast::<[f32; 8]>() });
        <Avx2 as Lanes<8>>::store(v.1, unsafe { &mut *p.add(8).cast::<[f32; 8]>() });
    }
    #[inline(always)]
    fn splat(x: f32) -> Self::V {
        let h = <Avx2 as Lanes<8>>::splat(x);
        (h, h)
    }
    #[inline(always)]
    fn add(a: Self::V, b: Self::V) -> Self::V {
        (
            <Avx2 as Lanes<8>>::add(a.0, b.0),
            <Avx2 as Lanes<8>>::add(a.1, b.1),
        )
    }
    #[inline(always)]
    fn sub(a: Self::V, b: Self::V) -> Self::V {
        (
            <Avx2 as Lanes<8>>::sub(a.0, b.0),
            <Avx2 as Lanes<8>>::sub(a.1, b.1),
        )
    }
    #[inline(always)]
    fn mul(a: Self::V, b: Self::V) -> Self::V {
        (
            <Avx2 as Lanes<8>>::mul(a.0, b.0),
            <Avx2 as Lanes<8>>::mul(a.1, b.1),
        )
    }
    #[inline(always)]
    fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        (
            <Avx2 as Lanes<8>>::mul_add(a.0, b.0, c.0),
            <Avx2 as Lanes<8>>::mul_add(a.1, b.1, c.1),
        )
    }
    #[inline(always)]
    fn tree(v: Self::V) -> f32 {
        tree8(<Avx2 as Lanes<8>>::add(v.0, v.1))
    }
}

/// Rows `lo..hi` of a call whose `n` is a multiple of 16.
#[inline(always)]
pub(super) fn rows<L: L16>(c: &Call, lo: usize, hi: usize) {
    let n = c.n;
    // SAFETY (every closure): `x` is a row of `n` floats, `n` a multiple of 16; the
    // output's and the weights' rows cover `n` floats; parts own disjoint rows.
    let sum = |x: &[f32]| unsafe {
        let mut acc = L::splat(0.0);
        for j in (0..n).step_by(16) {
            acc = L::add(acc, L::load(x.as_ptr().add(j)));
        }
        L::tree(acc)
    };
    let squares = |x: &[f32], m: f32| unsafe {
        let (m, mut acc) = (L::splat(m), L::splat(0.0));
        for j in (0..n).step_by(16) {
            let d = L::sub(L::load(x.as_ptr().add(j)), m);
            acc = L::fma(d, d, acc);
        }
        L::tree(acc)
    };
    let finish = |r: usize, x: &[f32], mean: f32, inv: f32| unsafe {
        match (c.plain && !c.rms, c.gamma, c.beta) {
            (true, Some(g), Some(b)) => {
                let (m, s) = (L::splat(mean), L::splat(inv));
                let (x, out) = (x.as_ptr(), c.out.add(r * n));
                for j in (0..n).step_by(16) {
                    let y = L::mul(L::mul(L::sub(L::load(x.add(j)), m), s), L::load(g.add(j)));
                    L::store(out.add(j), L::add(y, L::load(b.add(j))));
                }
                if let Some(p) = c.mean {
                    *p.add(r) = mean;
                }
                if let Some(p) = c.inv {
                    *p.add(r) = inv;
                }
            }
            _ => finish_row(c, r, x, mean, inv),
        }
    };
    blocks(c, (lo, hi), sum, squares, finish);
}
