//! The hyperbolic tangent.
//!
//! `tanh |x| = (1 - e^-2|x|) / (1 + e^-2|x|)`, numerator and denominator taken from the reduced
//! exponential ([`exp_reduced`]) `e^-2|x| = 2^n (1 + m)`, `m = e^r - 1` computed without the
//! cancellation of subtracting 1 from `e^r`: `num = (1 - 2^n) - 2^n m` and
//! `den = (1 + 2^n) + 2^n m`, each one FMA rounded once (`1 ∓ 2^n` are exact for `n >= -23`;
//! below, both round to 1 and so does the result). For small `|x|` (`n = 0`) `num = -m`
//! exactly, with `m`'s relative accuracy, so no separate polynomial is needed near zero: one
//! path for every lane, no select. Then one division. Rounded once each, `num` and `den`
//! carry independent errors into the quotient (`den = 2 - num` would double `num`'s there:
//! 2.5 ULP). Exact pairs and a correction step took the error from 1.96 to 0.84 ULP for ~12
//! more operations, most of them on the chain, and the LSTM and GRU cells are bound by the
//! length and number of these chains (`Kernels::tanh` over 4096 values on the Zen 3, AVX2:
//! 4.5 -> 2.9 µs). The sign is OR-ed back, so `tanh(-0) = -0`.
//!
//! Measured error against the exact value (f64 libm), over every f32 bit pattern
//! (`RECUR_SWEEP_STEP=1 cargo test --release -p recur-kernels --test activation`): **at most
//! 1.96 ULP** on the FMA tiers (AVX2, AVX-512 emulated), **1.99 ULP** on the portable tier of
//! an x86-64 build without FMA, whose `num` and `den` round twice; the test holds every tier to
//! 2.5 (every 37th pattern by default). `num <= den`, so the results stay in `[-1, 1]`. Exact
//! at the ends: `tanh(x) = ±1` for `|x| >= 9.011` (where `e^-2|x| < 2^-25`), `tanh(±inf) =
//! ±1`, `tanh(±0) = ±0`, denormals map to themselves (`num = 2|x|` and its quotient by 2 are
//! exact); NaN in, NaN out.

use super::exp::exp_reduced;
use crate::simd::Simd;

/// `tanh(x)` per lane.
#[inline(always)]
pub(crate) fn tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    // e^-2|x| = 2^n (1 + m), n in [-126, 0]: only `e^-2|x| >= 2^-25` changes the result, so
    // it need not go below the normal range. `-|x|` as one OR of the sign bit, the factor 2
    // taken inside (`exp_reduced`). A NaN `x` gives a NaN `m`, and so a NaN result.
    let (p, m) = exp_reduced::<S, true>(s, s.or_sign(x, s.splat(-0.0)), 2.0);
    let pow2 = s.scale_pow2::<true>(one, p);
    let num = s.neg_mul_add(pow2, m, s.sub(one, pow2));
    let den = s.mul_add(pow2, m, s.add(one, pow2));
    s.or_sign(s.div(num, den), x)
}
