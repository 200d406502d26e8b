//! `N` `f32` lanes for the forward kernel, where a vector holds one key column of `N`
//! query rows: AVX-512 (16 lanes) or AVX2/FMA (8) intrinsics, or plain arrays (8).
//! Each operation is the scalar code's, lane by lane (`exp` is `exp_poly` in the plain
//! build, `exp_fused` — the polynomial's steps as fused multiply-adds — in the AVX
//! builds; `max` the `a > b` choice), so every build computes the values the
//! row-at-a-time loops of the backward kernel recompute (the AVX builds with fused
//! products, as `Fused`).

/// The lane operations (see the module's documentation).
pub(in crate::jit) trait Lanes<const N: usize> {
    type V: Copy;
    fn splat(x: f32) -> Self::V;
    fn load(x: &[f32; N]) -> Self::V;
    fn store(v: Self::V, x: &mut [f32; N]);
    fn add(a: Self::V, b: Self::V) -> Self::V;
    fn sub(a: Self::V, b: Self::V) -> Self::V;
    fn mul(a: Self::V, b: Self::V) -> Self::V;
    fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a·b + c` as `M::mul_add` computes it (fused in the AVX builds).
    fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `if a > b { a } else { b }` in each lane.
    fn max(a: Self::V, b: Self::V) -> Self::V;
    /// `exp_poly` (plain build) or `exp_fused` (AVX builds) in each lane.
    fn exp(x: Self::V) -> Self::V;
}

/// Plain arrays, products as `M` computes them.
pub(super) struct Scalar<M>(std::marker::PhantomData<M>);

impl<M: super::MulAdd> Lanes<8> for Scalar<M> {
    type V = [f32; 8];
    #[inline(always)]
    fn splat(x: f32) -> [f32; 8] {
        [x; 8]
    }
    #[inline(always)]
    fn load(x: &[f32; 8]) -> [f32; 8] {
        *x
    }
    #[inline(always)]
    fn store(v: [f32; 8], x: &mut [f32; 8]) {
        *x = v
    }
    #[inline(always)]
    fn add(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|l| a[l] + b[l])
    }
    #[inline(always)]
    fn sub(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|l| a[l] - b[l])
    }
    #[inline(always)]
    fn mul(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|l| a[l] * b[l])
    }
    #[inline(always)]
    fn div(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|l| a[l] / b[l])
    }
    #[inline(always)]
    fn mul_add(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|l| M::mul_add(a[l], b[l], c[l]))
    }
    #[inline(always)]
    fn max(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|l| if a[l] > b[l] { a[l] } else { b[l] })
    }
    #[inline(always)]
    fn exp(x: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|l| super::exp_poly(x[l]))
    }
}

/// AVX2 and FMA registers. Its operations may run only on a host that has both (the
/// kernel checks, `avx2()`, before it picks this build).
#[cfg(target_arch = "x86_64")]
pub(in crate::jit) struct Avx2;

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    // SAFETY (every `unsafe` below): the intrinsics need AVX2 and FMA, which the
    // host has whenever `Avx2` is used (see its documentation); loads and stores go
    // through references to eight floats.
    impl super::Lanes<8> for super::Avx2 {
        type V = __m256;
        #[inline(always)]
        fn splat(x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        fn load(x: &[f32; 8]) -> __m256 {
            unsafe { _mm256_loadu_ps(x.as_ptr()) }
        }
        #[inline(always)]
        fn store(v: __m256, x: &mut [f32; 8]) {
            unsafe { _mm256_storeu_ps(x.as_mut_ptr(), v) }
        }
        #[inline(always)]
        fn add(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        fn mul_add(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        /// `vmaxps a, b` is `a > b ? a : b`, ties and NaN giving `b`, as the scalar code.
        #[inline(always)]
        fn max(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_max_ps(a, b) }
        }
        /// `exp_fused` (`rnn::math::exp::<true>`), operation for operation.
        #[inline(always)]
        fn exp(x: __m256) -> __m256 {
            unsafe {
                // `clamp`: NaN passes, as `vmaxps`/`vminps` return their second operand.
                let x = _mm256_max_ps(_mm256_set1_ps(-87.336_55), x);
                let x = _mm256_min_ps(_mm256_set1_ps(88.376_26), x);
                let magic = _mm256_set1_ps(12_582_912.0);
                let log2e = _mm256_set1_ps(std::f32::consts::LOG2_E);
                let big = _mm256_add_ps(_mm256_mul_ps(x, log2e), magic);
                let fx = _mm256_sub_ps(big, magic);
                let x = _mm256_sub_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(0.693_359_4)));
                let x = _mm256_sub_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(-2.121_944_4e-4)));
                let z = _mm256_mul_ps(x, x);
                let mut p = _mm256_set1_ps(1.987_569_1e-4);
                for k in [
                    1.398_199_9e-3,
                    8.333_452e-3,
                    4.166_579_6e-2,
                    1.666_666_5e-1,
                    5e-1,
                ] {
                    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(k));
                }
                let y = _mm256_add_ps(_mm256_mul_ps(p, z), x);
                let y = _mm256_add_ps(y, _mm256_set1_ps(1.0));
                let n = _mm256_sub_epi32(_mm256_castps_si256(big), _mm256_set1_epi32(0x4B40_0000));
                let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(n, _mm256_set1_epi32(127)));
                _mm256_mul_ps(y, _mm256_castsi256_ps(pow2))
            }
        }
    }
}

/// AVX-512 registers (on Zen-class cores 512-bit operations run double-pumped: the
/// gain is half the instructions, the broadcasts folded into the products). Its
/// operations may run only on a host that has AVX-512F, AVX2 and FMA (`avx512()`).
#[cfg(target_arch = "x86_64")]
pub(in crate::jit) struct Avx512;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    // SAFETY (every `unsafe` below): the intrinsics need AVX-512F, which the host has
    // whenever `Avx512` is used (see its documentation); loads and stores go through
    // references to sixteen floats.
    impl super::Lanes<16> for super::Avx512 {
        type V = __m512;
        #[inline(always)]
        fn splat(x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        fn load(x: &[f32; 16]) -> __m512 {
            unsafe { _mm512_loadu_ps(x.as_ptr()) }
        }
        #[inline(always)]
        fn store(v: __m512, x: &mut [f32; 16]) {
            unsafe { _mm512_storeu_ps(x.as_mut_ptr(), v) }
        }
        #[inline(always)]
        fn add(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        fn mul_add(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        /// `vmaxps a, b` is `a > b ? a : b`, ties and NaN giving `b`, as the scalar code.
        #[inline(always)]
        fn max(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_max_ps(a, b) }
        }
        /// `exp_fused` (`rnn::math::exp::<true>`), operation for operation.
        #[inline(always)]
        fn exp(x: __m512) -> __m512 {
            unsafe {
                // `clamp`: NaN passes, as `vmaxps`/`vminps` return their second operand.
                let x = _mm512_max_ps(_mm512_set1_ps(-87.336_55), x);
                let x = _mm512_min_ps(_mm512_set1_ps(88.376_26), x);
                let magic = _mm512_set1_ps(12_582_912.0);
                let log2e = _mm512_set1_ps(std::f32::consts::LOG2_E);
                let big = _mm512_add_ps(_mm512_mul_ps(x, log2e), magic);
                let fx = _mm512_sub_ps(big, magic);
                let x = _mm512_sub_ps(x, _mm512_mul_ps(fx, _mm512_set1_ps(0.693_359_4)));
                let x = _mm512_sub_ps(x, _mm512_mul_ps(fx, _mm512_set1_ps(-2.121_944_4e-4)));
                let z = _mm512_mul_ps(x, x);
                let mut p = _mm512_set1_ps(1.987_569_1e-4);
                for k in [
                    1.398_199_9e-3,
                    8.333_452e-3,
                    4.166_579_6e-2,
                    1.666_666_5e-1,
                    5e-1,
                ] {
                    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(k));
                }
                let y = _mm512_add_ps(_mm512_mul_ps(p, z), x);
                let y = _mm512_add_ps(y, _mm512_set1_ps(1.0));
                let n = _mm512_sub_epi32(_mm512_castps_si512(big), _mm512_set1_epi32(0x4B40_0000));
                let pow2 = _mm512_slli_epi32::<23>(_mm512_add_epi32(n, _mm512_set1_epi32(127)));
                _mm512_mul_ps(y, _mm512_castsi512_ps(pow2))
            }
        }
    }
}
