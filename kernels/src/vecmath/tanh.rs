//! The hyperbolic tangent.
//!
//! For `|x| < 0.625`, the odd polynomial `x + x^3 Q(x^2)` with the Cephes `tanhf` coefficients
//! (S. L. Moshier, Cephes Math Library 2.2, `tanhf.c`: a minimax fit of the relative error of
//! `(tanh x - x) / x^3` on `[0, 0.625]`). Above, `t = e^-2|x|` (in `(0, 0.287]`) and
//! `tanh |x| = (1 - t) / (1 + t)`, where neither subtraction cancels; the roundings of `1 - t`,
//! `1 + t` and the quotient are undone by one correction step (Fast2Sum, FMA remainder, scaled
//! by the reciprocal estimate of `1 + t`; on AVX-512 the quotient itself comes from the
//! estimate, `Simd::quotient`).
//! The sign is OR-ed back, so `tanh(-0) = -0`.
//!
//! Measured error against the exact value (f64 libm), over every 37th f32 bit pattern
//! (`tests/activation.rs`): **at most 0.85 ULP** on the FMA tiers (AVX2, AVX-512, emulated),
//! **1.18 ULP** on the portable tier of a build without FMA; the test holds every tier to
//! 1.25 ULP. Exact at the ends: `tanh(x) = ±1` for
//! `|x| >= 9.011` (where `e^-2|x| < 2^-25`), `tanh(±inf) = ±1`, `tanh(±0) = ±0`, denormals map
//! to themselves; NaN in, NaN out.

use super::exp::exp_nonpositive;
use crate::simd::Simd;

/// Below this `|x|`, the polynomial; above, the exponential form.
const SMALL: f32 = 0.625;
/// Cephes `tanhf` coefficients of `Q(z)`, `z = x^2`, highest degree first (the decimal values
/// of `tanhf.c` rounded to f32).
const Q: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328e-1,
];

/// `tanh(x)` per lane.
#[inline(always)]
pub(crate) fn tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    let a = s.abs(x);

    let z = s.mul(a, a);
    let mut q = s.splat(Q[0]);
    for &c in &Q[1..] {
        q = s.mul_add(q, z, s.splat(c));
    }
    let small = s.mul_add(s.mul(q, z), a, a);

    // Only `t >= 2^-25` changes the result, so `t` need not go below the normal range.
    let t = exp_nonpositive::<S, true>(s, s.mul(a, s.splat(-2.0)));
    // n + tn = 1 - t and d + td = 1 + t exactly (Fast2Sum, 1 >= t); q = n / d rounded and the
    // FMA remainder n - q d exact: one correction step gives (1 - t) / (1 + t) to ~0.5 ULP.
    let n = s.sub(one, t);
    let tn = s.sub(s.sub(one, n), t);
    let d = s.add(one, t);
    let td = s.add(s.sub(one, d), t);
    // `q` is `n / d` rounded, or within 2^-11 of it where the tier divides through its
    // reciprocal estimate `r` (`Simd::quotient`); the remainder scaled by `r` corrects it.
    let (q, r) = s.quotient(n, d);
    let rem = s.add(s.neg_mul_add(q, d, n), tn);
    let large = s.mul_add(s.neg_mul_add(q, td, rem), r, q);

    // NaN needs no select: `a < SMALL` is false, and `large` is NaN (`t` is).
    s.or_sign(s.select(s.lt(a, s.splat(SMALL)), small, large), x)
}
