//! The hyperbolic tangent.
//!
//! `tanh |x| = (1 - e^-2|x|) / (1 + e^-2|x|)`, the numerator taken without cancellation from
//! the reduced exponential ([`exp_reduced`]): `e^-2|x| = 2^n (1 + m)`, `m = e^r - 1` to about an
//! ULP of itself, so `1 - e^-2|x| = (1 - 2^n) - 2^n m`, both terms exact, kept as an exact
//! pair `num + tn` (Fast2Sum). For small `|x|` (`n = 0`) that is `-m` exactly, with `m`'s
//! relative accuracy, so no separate polynomial is needed near zero: one path for every lane,
//! about 29 operations a vector where evaluating a small-argument polynomial and the
//! exponential form and selecting one took about 40. The denominator `2 - num` is an exact
//! Fast2Sum pair too, and the quotient's rounding is undone by one correction step (the FMA
//! remainder, scaled by the reciprocal estimate; on AVX-512 the quotient itself comes from the
//! estimate, `Simd::quotient`). What is left is mostly `m`'s error.
//! The sign is OR-ed back, so `tanh(-0) = -0`.
//!
//! Measured error against the exact value (f64 libm), over every 37th f32 bit pattern
//! (`tests/activation.rs`): **at most 1.43 ULP** on the FMA tiers (AVX2, AVX-512 emulated; the
//! worst near `|x| = 0.12`, `m`'s own error), **1.86 ULP** on the portable tier of a build
//! without FMA; the test holds every tier to 2 ULP. (The two-path form this replaced measured
//! 0.85 / 1.18 ULP; this one is ~20% faster over a slice and shortens a single row's latency
//! chain, which is what a small RNN's step waits on.) Exact at the ends: `tanh(x) = ±1` for
//! `|x| >= 9.011` (where `e^-2|x| < 2^-25`), `tanh(±inf) = ±1`, `tanh(±0) = ±0`, denormals map
//! to themselves (`num = 2|x|` and its quotient by 2 are exact); NaN in, NaN out.

use super::exp::exp_reduced;
use crate::simd::Simd;

/// `tanh(x)` per lane.
#[inline(always)]
pub(crate) fn tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let (one, two) = (s.splat(1.0), s.splat(2.0));
    let a = s.abs(x);
    // e^-2a = 2^n (1 + m), n in [-126, 0]: only `e^-2a >= 2^-25` changes the result, so it
    // need not go below the normal range.
    let (p, m) = exp_reduced::<S, true>(s, s.mul(a, s.splat(-2.0)));
    let pow2 = s.scale_pow2::<true>(one, p);
    // num + tn = 1 - e^-2a = c - pm exactly: `c = 1 - 2^n` is exact for n >= -24 (below, it
    // rounds to 1 and so does the result), `pm = 2^n m` is exact, and `c >= |pm|` (Fast2Sum;
    // `c = 0` where n = 0, and then `num = -m` exactly). A NaN `x` gives a NaN `m`, and so a
    // NaN `num`, `q` and result.
    let c = s.sub(one, pow2);
    let pm = s.mul(pow2, m);
    let num = s.sub(c, pm);
    let tn = s.sub(s.sub(c, num), pm);
    // d + td = 2 - num exactly (Fast2Sum, 2 >= num), so 2 - (num + tn) = d + (td - tn).
    let d = s.sub(two, num);
    let td = s.sub(s.sub(s.sub(two, d), num), tn);
    // `q` is `num / d` rounded, or within 2^-11 of it where the tier divides through its
    // reciprocal estimate `r` (`Simd::quotient`); the remainder `(num + tn) - q (d + td)`, its
    // first part exact by FMA, scaled by `r` corrects it either way: ~0.5 ULP are left, and the
    // error of `m`, scaled down by `2^n` and the quotient.
    let (q, r) = s.quotient(num, d);
    let rem = s.add(s.neg_mul_add(q, d, num), tn);
    let t = s.mul_add(s.neg_mul_add(q, td, rem), r, q);
    s.or_sign(t, x)
}
