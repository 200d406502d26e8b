//! The recurrent kernels' activations over slices: tanh and sigmoid as the same
//! polynomials (same coefficients, same range reduction) that `src/jit/mathfn.rs` emits
//! into generated code, written branch-free so the loops vectorize; other activations
//! through the reference's scalar function.
//!
//! Error bounds (tested below against f64 over dense grids, as tests/suite/jit.rs does
//! for the generated forms): exp relative ≤ 4e-7 on [-87, 88]; tanh absolute ≤ 6e-7;
//! sigmoid absolute ≤ 3e-7.

/// `a*b + c`, fused when the caller was compiled for FMA (`F`).
#[inline(always)]
pub(in crate::jit) fn ma<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F { a.mul_add(b, c) } else { a * b + c }
}

/// Cephes expf: range reduction by ln 2 in two parts, degree-6 polynomial, 2^n from
/// the exponent bits (rounding by the 1.5·2^23 trick, so no float-to-int conversion).
#[inline(always)]
pub(in crate::jit) fn exp<const F: bool>(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_55, 88.376_26);
    let big = x * std::f32::consts::LOG2_E + MAGIC;
    let fx = big - MAGIC;
    let x = x - fx * 0.693_359_4;
    let x = x - fx * -2.121_944_4e-4;
    let z = x * x;
    let mut p = 1.987_569_1e-4f32;
    for k in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        5e-1,
    ] {
        p = ma::<F>(p, x, k);
    }
    let y = p * z + x + 1.0;
    // The low bits of `big` hold n (two's complement, offset by 0x4B40_0000).
    let n = big.to_bits().wrapping_sub(0x4B40_0000);
    let pow2 = f32::from_bits(n.wrapping_add(127) << 23);
    y * pow2
}

/// Odd polynomial for |x| < 0.625, else 1 − 2/(exp(2x) + 1).
#[inline(always)]
pub(super) fn tanh<const F: bool>(x: f32) -> f32 {
    let e = exp::<F>(x * 2.0);
    let large = 1.0 - 2.0 / (e + 1.0);
    let z = x * x;
    let mut p = -5.704_988_7e-3f32;
    for k in [2.063_909e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328e-1] {
        p = ma::<F>(p, z, k);
    }
    let small = p * z * x + x;
    if x.abs() < 0.625 { small } else { large }
}

#[inline(always)]
pub(super) fn sigmoid<const F: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp::<F>(-x))
}

/// A cell's activation.
#[derive(Clone, Debug)]
pub(super) enum Act {
    Tanh,
    Sigmoid,
    /// Any other of `ir::rnn::CELL_ACTIVATIONS`, through the reference's function.
    Other(String),
}

impl Act {
    pub fn new(name: &str) -> Act {
        match name {
            "tanh" => Act::Tanh,
            "sigmoid" => Act::Sigmoid,
            _ => Act::Other(name.to_string()),
        }
    }

    /// `dst = act(src)`.
    #[inline(always)]
    pub fn apply<const F: bool>(&self, src: &[f32], dst: &mut [f32]) {
        match self {
            Act::Tanh => {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = tanh::<F>(s);
                }
            }
            Act::Sigmoid => {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = sigmoid::<F>(s);
                }
            }
            Act::Other(n) => {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = crate::ir::rnn::act::<f32>(n, s).0;
                }
            }
        }
    }

    /// `g · act'(pre)` given `a = act(pre)` (tanh and sigmoid from the value alone).
    #[inline(always)]
    pub fn grad(&self, pre: f32, a: f32, g: f32) -> f32 {
        match self {
            Act::Tanh => g * (1.0 - a * a),
            Act::Sigmoid => g * (a * (1.0 - a)),
            Act::Other(n) => g * crate::ir::rnn::act::<f32>(n, pre).1,
        }
    }

    /// `dst[i] = g[i] · act'(pre[i])` given `a = act(pre)`.
    #[inline(always)]
    pub fn grad_slice(&self, pre: &[f32], a: &[f32], g: &[f32], dst: &mut [f32]) {
        match self {
            Act::Tanh => {
                for ((d, &a), &g) in dst.iter_mut().zip(a).zip(g) {
                    *d = g * (1.0 - a * a);
                }
            }
            Act::Sigmoid => {
                for ((d, &a), &g) in dst.iter_mut().zip(a).zip(g) {
                    *d = g * (a * (1.0 - a));
                }
            }
            Act::Other(_) => {
                for (((d, &p), &a), &g) in dst.iter_mut().zip(pre).zip(a).zip(g) {
                    *d = self.grad(p, a, g);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| (lo + (hi - lo) * i as f64 / n as f64) as f32)
    }

    fn check<const F: bool>() {
        for x in grid(-87.0, 88.0, 400_000) {
            let want = (x as f64).exp();
            let rel = ((exp::<F>(x) as f64 - want) / want).abs();
            assert!(rel <= 4e-7, "exp({x}): relative error {rel}");
        }
        for x in grid(-20.0, 20.0, 400_000).chain([0.0, -0.0, 0.624_999_9, 0.625]) {
            let e = (tanh::<F>(x) as f64 - (x as f64).tanh()).abs();
            assert!(e <= 6e-7, "tanh({x}): error {e}");
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            let e = (sigmoid::<F>(x) as f64 - s).abs();
            assert!(e <= 3e-7, "sigmoid({x}): error {e}");
        }
        for x in [
            -1e30f32,
            -100.0,
            100.0,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            assert_eq!(tanh::<F>(x), x.signum());
            let s = sigmoid::<F>(x);
            assert!(
                if x > 0.0 {
                    s == 1.0
                } else {
                    (0.0..1e-37).contains(&s)
                },
                "sigmoid({x}) = {s}"
            );
        }
        assert!(tanh::<F>(f32::NAN).is_nan() && sigmoid::<F>(f32::NAN).is_nan());
    }

    #[test]
    fn error_bounds() {
        check::<false>();
        check::<true>();
    }
}
