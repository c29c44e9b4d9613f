//! The logistic sigmoid `σ(x) = 1 / (1 + e^-x)`.
//!
//! Computed from `e = e^-|x|` (in `(0, 1]`, never overflowing) as `1 / (1 + e)` for `x >= 0` and
//! `e / (1 + e)` for `x < 0`, so the tiny results of large negative `x` keep their relative
//! accuracy down to the denormals instead of cancelling in `1 - σ(-x)`.
//!
//! A division rounds `1 + e` and the quotient; both roundings are undone by one correction step
//! (Fast2Sum for `1 + e`, the FMA remainder of the division, scaled by the reciprocal estimate
//! of `1 + e`), so what is left is mostly the error of [`exp`](super::exp). Where the tier's
//! division is slow (AVX-512) the quotient itself comes from the reciprocal estimate
//! (`Simd::quotient`) and the same step corrects it.
//!
//! Measured error against the exact value (f64 libm), over every 37th f32 bit pattern
//! (`tests/activation.rs`): **at most 1.46 ULP** on the FMA tiers (AVX2, AVX-512, emulated),
//! **1.96 ULP** on the portable tier of a build without FMA (where the remainder is not exact);
//! the test holds every tier to 2 ULP. Exact at the ends: `σ(x) = 1` for
//! `x >= 17.33` (where `1 + e^-x` rounds to 1), `σ(-inf) = +0`, `σ(+inf) = 1`, `σ(±0) = 0.5`;
//! NaN in, NaN out.

use super::exp::exp_nonpositive;
use crate::simd::Simd;

/// `σ(x)` per lane.
#[inline(always)]
pub(crate) fn sigmoid<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    // Denormal results kept: `σ(x) ≈ e^x` for `x < -87`.
    // `-|x|` as one OR of the sign bit.
    let e = exp_nonpositive::<S, false>(s, s.or_sign(x, s.splat(-0.0)));
    let num = s.select(s.lt(x, s.zero()), e, one);
    // d + t = 1 + e exactly (Fast2Sum, 1 >= e), q = num / d rounded, and the FMA remainder
    // num - q d exact: one correction step turns q into num / (d + t) up to ~0.5 ULP, leaving
    // mostly the error of `exp`.
    let d = s.add(one, e);
    let t = s.add(s.sub(one, d), e);
    // `q` is `num / d` rounded, or within 2^-11 of it where the tier divides through its
    // reciprocal estimate `r` (`Simd::quotient`); the remainder `num - q (d + t)`, scaled by
    // `r`, corrects it either way: the error left is below 2^-11 of the correction.
    // NaN needs no select: `e` is NaN, so `d`, `q` and the result are.
    let (q, r) = s.quotient(num, d);
    let rem = s.neg_mul_add(q, d, num);
    s.mul_add(s.neg_mul_add(q, t, rem), r, q)
}
