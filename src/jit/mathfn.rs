//! Transcendental functions emitted inline as polynomial approximations (no
//! per-element library calls), for f32 scalars and f32x4 vectors alike.
//!
//! Error bounds (tested against f64 references over dense grids, see tests/jit.rs):
//! - exp: relative error ≤ 4e-7 on [-87, 88] (Cephes expf: range reduction by ln 2 in
//!   two parts, degree-6 polynomial, exponent built from bits).
//! - log: error ≤ 4e-7 · max(1, |log x|) for normal positive inputs (Cephes logf); log(0) = -inf,
//!   log(x<0) = NaN, log(inf) = inf.
//! - tanh: absolute error ≤ 6e-7 (odd polynomial for |x| < 0.625, else
//!   1 − 2/(exp(2x) + 1)).
//! - sigmoid: absolute error ≤ 3e-7 (1/(1 + exp(−x))).
//! - erf: absolute error ≤ 5e-7 (Abramowitz–Stegun 7.1.26 with the exp above).
//! - log1p: relative error ≤ 1e-6 (log(u)·x/(u−1) with u = 1 + x, exact as x → 0).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

fn bits_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

/// Emission helpers that work for `F32` and `F32X4` alike.
pub struct Math<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    pub ty: Type,
    /// Whether the host has FMA (then `a*b + c` is one fused instruction).
    pub fma: bool,
}

impl Math<'_, '_> {
    fn vector(&self) -> bool {
        self.ty == types::F32X4
    }
    fn int_ty(&self) -> Type {
        if self.vector() {
            types::I32X4
        } else {
            types::I32
        }
    }
    pub fn c(&mut self, v: f32) -> Value {
        let s = self.b.ins().f32const(v);
        if self.vector() {
            self.b.ins().splat(types::F32X4, s)
        } else {
            s
        }
    }
    fn ci(&mut self, v: i32) -> Value {
        let s = self.b.ins().iconst(types::I32, v as i64);
        if self.vector() {
            self.b.ins().splat(types::I32X4, s)
        } else {
            s
        }
    }
    fn int_bits(&mut self, x: Value) -> Value {
        let t = self.int_ty();
        self.b.ins().bitcast(t, bits_flags(), x)
    }
    fn float_bits(&mut self, x: Value) -> Value {
        let t = self.ty;
        self.b.ins().bitcast(t, bits_flags(), x)
    }
    /// A mask of `cond(x, y)` usable by [`Self::pick`].
    pub fn mask(&mut self, cc: FloatCC, x: Value, y: Value) -> Value {
        self.b.ins().fcmp(cc, x, y)
    }
    /// `mask ? a : b`.
    pub fn pick(&mut self, mask: Value, a: Value, b: Value) -> Value {
        if self.vector() {
            let m = self.b.ins().bitcast(types::F32X4, bits_flags(), mask);
            self.b.ins().bitselect(m, a, b)
        } else {
            self.b.ins().select(mask, a, b)
        }
    }
    /// 1.0 where the mask holds, else 0.0.
    pub fn mask_to_float(&mut self, mask: Value) -> Value {
        let one = self.c(1.0);
        let zero = self.c(0.0);
        self.pick(mask, one, zero)
    }
    fn poly(&mut self, x: Value, coeffs: &[f32]) -> Value {
        let mut acc = self.c(coeffs[0]);
        for &k in &coeffs[1..] {
            let kc = self.c(k);
            acc = self.mul_add(acc, x, kc);
        }
        acc
    }
    /// `a*b + c`, fused when the host has FMA.
    pub fn mul_add(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let m = self.b.ins().fmul(a, b);
            self.b.ins().fadd(m, c)
        }
    }
    pub fn clamp(&mut self, x: Value, lo: f32, hi: f32) -> Value {
        let l = self.c(lo);
        let h = self.c(hi);
        let a = self.b.ins().fmax(x, l);
        self.b.ins().fmin(a, h)
    }

    pub fn exp(&mut self, x: Value) -> Value {
        let x = self.clamp(x, -87.336_55, 88.376_26);
        let log2e = self.c(std::f32::consts::LOG2_E);
        let t = self.b.ins().fmul(x, log2e);
        let fx = self.b.ins().nearest(t);
        let c1 = self.c(0.693_359_4);
        let c2 = self.c(-2.121_944_4e-4);
        let a = self.b.ins().fmul(fx, c1);
        let x = self.b.ins().fsub(x, a);
        let bb = self.b.ins().fmul(fx, c2);
        let x = self.b.ins().fsub(x, bb);
        let z = self.b.ins().fmul(x, x);
        let p = self.poly(
            x,
            &[
                1.987_569_1e-4,
                1.398_199_9e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                5e-1,
            ],
        );
        let pz = self.b.ins().fmul(p, z);
        let y = self.b.ins().fadd(pz, x);
        let one = self.c(1.0);
        let y = self.b.ins().fadd(y, one);
        // 2^fx from the exponent bits.
        let it = self.int_ty();
        let n = self.b.ins().fcvt_to_sint_sat(it, fx);
        let bias = self.ci(127);
        let e = self.b.ins().iadd(n, bias);
        let e = self.b.ins().ishl_imm_u(e, 23);
        let pow2 = self.float_bits(e);
        self.b.ins().fmul(y, pow2)
    }

    pub fn log(&mut self, x0: Value) -> Value {
        let bits = self.int_bits(x0);
        let sh = self.b.ins().ushr_imm_u(bits, 23);
        let ff = self.ci(0xff);
        let ebits = self.b.ins().band(sh, ff);
        let k126 = self.ci(126);
        let e = self.b.ins().isub(ebits, k126);
        let mant_mask = self.ci(0x007f_ffff);
        let m = self.b.ins().band(bits, mant_mask);
        let half_bits = self.ci(0x3f00_0000);
        let m = self.b.ins().bor(m, half_bits);
        let m = self.float_bits(m); // [0.5, 1)
        let ft = self.ty;
        let e = self.b.ins().fcvt_from_sint(ft, e);
        let sqrthf = self.c(std::f32::consts::FRAC_1_SQRT_2);
        let small = self.mask(FloatCC::LessThan, m, sqrthf);
        let one = self.c(1.0);
        let e_minus = self.b.ins().fsub(e, one);
        let e = self.pick(small, e_minus, e);
        let m2 = self.b.ins().fadd(m, m);
        let xs = self.b.ins().fsub(m2, one);
        let xl = self.b.ins().fsub(m, one);
        let x = self.pick(small, xs, xl);
        let z = self.b.ins().fmul(x, x);
        let p = self.poly(
            x,
            &[
                7.037_683_6e-2,
                -1.151_461e-1,
                1.167_699_9e-1,
                -1.242_014_1e-1,
                1.424_932_3e-1,
                -1.666_805_8e-1,
                2.000_071_4e-1,
                -2.499_999_4e-1,
                3.333_333e-1,
            ],
        );
        let px = self.b.ins().fmul(p, x);
        let y = self.b.ins().fmul(px, z);
        let q1 = self.c(-2.121_944_4e-4);
        let t = self.b.ins().fmul(e, q1);
        let y = self.b.ins().fadd(y, t);
        let half = self.c(0.5);
        let hz = self.b.ins().fmul(z, half);
        let y = self.b.ins().fsub(y, hz);
        let r = self.b.ins().fadd(x, y);
        let q2 = self.c(0.693_359_4);
        let t2 = self.b.ins().fmul(e, q2);
        let r = self.b.ins().fadd(r, t2);
        // Special cases: 0 → -inf, negative → NaN, +inf → +inf.
        let zero = self.c(0.0);
        let ninf = self.c(f32::NEG_INFINITY);
        let nan = self.c(f32::NAN);
        let inf = self.c(f32::INFINITY);
        let is_zero = self.mask(FloatCC::Equal, x0, zero);
        let r = self.pick(is_zero, ninf, r);
        let is_neg = self.mask(FloatCC::LessThan, x0, zero);
        let r = self.pick(is_neg, nan, r);
        let is_inf = self.mask(FloatCC::Equal, x0, inf);
        let r = self.pick(is_inf, inf, r);
        let is_nan = self.mask(FloatCC::Unordered, x0, x0);
        self.pick(is_nan, x0, r)
    }

    pub fn log1p(&mut self, x: Value) -> Value {
        let one = self.c(1.0);
        let u = self.b.ins().fadd(x, one);
        let lu = self.log(u);
        let d = self.b.ins().fsub(u, one);
        let q = self.b.ins().fdiv(x, d);
        let r = self.b.ins().fmul(lu, q);
        let exact = self.mask(FloatCC::Equal, u, one);
        let r = self.pick(exact, x, r);
        // For huge x, u - 1 = u and the correction is harmless; for u = inf keep inf.
        let inf = self.c(f32::INFINITY);
        let is_inf = self.mask(FloatCC::Equal, u, inf);
        self.pick(is_inf, inf, r)
    }

    pub fn tanh(&mut self, x: Value) -> Value {
        // Large: 1 - 2/(exp(2x) + 1).
        let two = self.c(2.0);
        let x2 = self.b.ins().fmul(x, two);
        let e = self.exp(x2);
        let one = self.c(1.0);
        let d = self.b.ins().fadd(e, one);
        let q = self.b.ins().fdiv(two, d);
        let large = self.b.ins().fsub(one, q);
        // Small: x + x^3 P(x^2).
        let z = self.b.ins().fmul(x, x);
        let p = self.poly(
            z,
            &[
                -5.704_988_7e-3,
                2.063_909e-2,
                -5.373_971_6e-2,
                1.333_144_2e-1,
                -3.333_328e-1,
            ],
        );
        let pz = self.b.ins().fmul(p, z);
        let pzx = self.b.ins().fmul(pz, x);
        let small = self.b.ins().fadd(pzx, x);
        let ax = self.b.ins().fabs(x);
        let lim = self.c(0.625);
        let is_small = self.mask(FloatCC::LessThan, ax, lim);
        self.pick(is_small, small, large)
    }

    pub fn sigmoid(&mut self, x: Value) -> Value {
        let nx = self.b.ins().fneg(x);
        let e = self.exp(nx);
        let one = self.c(1.0);
        let d = self.b.ins().fadd(e, one);
        self.b.ins().fdiv(one, d)
    }

    pub fn erf(&mut self, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let p = self.c(0.327_591_1);
        let one = self.c(1.0);
        let t0 = self.b.ins().fmul(p, ax);
        let t1 = self.b.ins().fadd(one, t0);
        let t = self.b.ins().fdiv(one, t1);
        let poly = self.poly(
            t,
            &[
                1.061_405_4,
                -1.453_152_1,
                1.421_413_8,
                -0.284_496_74,
                0.254_829_6,
            ],
        );
        let pt = self.b.ins().fmul(poly, t);
        let x2 = self.b.ins().fmul(ax, ax);
        let nx2 = self.b.ins().fneg(x2);
        let e = self.exp(nx2);
        let pe = self.b.ins().fmul(pt, e);
        let y = self.b.ins().fsub(one, pe);
        // Restore the sign: erf is odd.
        let zero = self.c(0.0);
        let neg = self.mask(FloatCC::LessThan, x, zero);
        let ny = self.b.ins().fneg(y);
        self.pick(neg, ny, y)
    }

    pub fn sign(&mut self, x: Value) -> Value {
        let zero = self.c(0.0);
        let pos = self.mask(FloatCC::GreaterThan, x, zero);
        let neg = self.mask(FloatCC::LessThan, x, zero);
        let p = self.mask_to_float(pos);
        let n = self.mask_to_float(neg);
        self.b.ins().fsub(p, n)
    }
}
