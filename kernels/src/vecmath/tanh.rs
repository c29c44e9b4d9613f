//! The hyperbolic tangent.
//!
//! `tanh |x| = (1 - e^-2|x|) / (1 + e^-2|x|)`, the numerator taken without cancellation from
//! the reduced exponential ([`exp_reduced`]): `e^-2|x| = 2^n (1 + m + tm)`, `m + tm = e^r - 1`
//! to well below an ULP of `m`, so `1 - e^-2|x| = (1 - 2^n) - 2^n m - 2^n tm`, kept as an
//! exact pair `num + tn` (Fast2Sum) up to the small terms. For small `|x|` (`n = 0`) that is
//! `-(m + tm)`, with `m`'s relative accuracy, so no separate polynomial is needed near zero:
//! one path for every lane, no select, and fewer constants and a shorter dependency chain than
//! the small-argument polynomial and the exponential form evaluated side by side (criterion
//! `tanh/4096` on a Zen 3: AVX2 5.11 -> 4.28 µs, portable 12.5 -> 10.9 µs). The denominator
//! `2 - num` is an exact Fast2Sum pair too, and the quotient's rounding is undone by one
//! correction step (the FMA remainder, scaled by the reciprocal estimate; on AVX-512 the
//! quotient itself comes from the estimate, `Simd::quotient`). What is left is mostly `m`'s
//! error. The sign is OR-ed back, so `tanh(-0) = -0`.
//!
//! Measured error against the exact value (f64 libm), over every 37th f32 bit pattern
//! (`tests/activation.rs`): **at most 0.84 ULP** on the FMA tiers (AVX2, AVX-512 emulated; the
//! two-path form measured 0.85), **1.32 ULP** on the portable tier of an x86-64 build without
//! FMA, whose remainder is not exact (1.18); the test holds the FMA tiers to 1 ULP, the unfused
//! one to 1.5. Exact at the ends: `tanh(x) = ±1` for `|x| >= 9.011` (where
//! `e^-2|x| < 2^-25`), `tanh(±inf) = ±1`, `tanh(±0) = ±0`, denormals map to themselves
//! (`num = 2|x|` and its quotient by 2 are exact); NaN in, NaN out.

use super::exp::exp_reduced;
use crate::simd::Simd;

/// `tanh(x)` per lane.
#[inline(always)]
pub(crate) fn tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let (one, two) = (s.splat(1.0), s.splat(2.0));
    let a = s.abs(x);
    // e^-2a = 2^n (1 + m + tm), n in [-126, 0]: only `e^-2a >= 2^-25` changes the result, so it
    // need not go below the normal range.
    let (p, m, tm) = exp_reduced::<S, true>(s, s.mul(a, s.splat(-2.0)));
    let pow2 = s.scale_pow2::<true>(one, p);
    // num + tn = 1 - e^-2a = (c + tc) - pm - 2^n tm: `c + tc = 1 - 2^n` exactly (Fast2Sum,
    // `tc = 0` for n >= -24), `pm = 2^n m` is exact, and `c >= |pm|` (Fast2Sum again; `c = 0`
    // where n = 0, and then `num = -m` exactly); the small terms only join the tail. A NaN `x`
    // gives a NaN `m`, and so a NaN `num`, `q` and result.
    let c = s.sub(one, pow2);
    let tc = s.sub(s.sub(one, c), pow2);
    let pm = s.mul(pow2, m);
    let num = s.sub(c, pm);
    let tn = s.neg_mul_add(pow2, tm, s.add(s.sub(s.sub(c, num), pm), tc));
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
