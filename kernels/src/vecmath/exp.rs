//! `e^x`, the building block of [`sigmoid`](super::sigmoid) and [`tanh`](super::tanh).
//!
//! Range reduction `x = n ln2 + r`, `|r| <= ln2/2`, with `n = round(x / ln2)` and `ln2` split in
//! two (Cody & Waite) so that `n * LN2_HI` is exact for every `|n| <= 150` even without FMA;
//! then `e^r` by a degree-7 polynomial (`1 + r + r^2 P(r)`, `P` of degree 5) and the scaling by
//! `2^n` in one rounding ([`Simd::scale_pow2`]), which also yields correctly rounded denormals.
//! `n` and the bits of `2^n` come from one `mul_add` ([`Simd::round_pow2`]).
//!
//! The coefficients of `P` are the Cephes `expf` ones (S. L. Moshier, Cephes Math Library 2.2,
//! `expf.c`): a minimax fit of the relative error of `(e^r - 1 - r) / r^2` on `[-ln2/2, ln2/2]`.
//!
//! Not exposed on its own; its error (about 1.5 ULP on the FMA tiers, seen where `σ(x) ≈ e^x`
//! for `x < -16`) is measured and bounded through the activations (`tests/activation.rs`),
//! down to the smallest denormal.

use crate::simd::Simd;

/// `log2(e)`.
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// High part of `ln 2`, `0.693359375` exactly: 9 significant bits, so `n * LN2_HI` is exact
/// for `|n| < 2^15`.
const LN2_HI: f32 = f32::from_bits(0x3f31_8000);
/// `ln 2 - LN2_HI`.
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this, `e^x` rounds to zero (`e^-104 < 2^-150`).
const X_MIN: f32 = -104.0;
/// Cephes `expf` coefficients of `P(r)`, highest degree first (the decimal values of `expf.c`
/// rounded to f32; its `5.0000001201E-1` rounds to `0.5`).
const P: [f32; 6] = [
    1.987_569_2e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// Below this, `e^x` is no longer a normal f32 (`e^-87 = 1.6e-38 > 2^-126`).
const X_MIN_NORMAL: f32 = -87.0;

/// `e^x` per lane for `x <= 0` (the only arguments [`sigmoid`](super::sigmoid) and
/// [`tanh`](super::tanh) pass). Inputs below -104 give `+0`; NaN gives NaN (the clamp lets it
/// through, every later operation keeps it), which is how the callers propagate NaN.
///
/// With `NORMAL_ONLY`, inputs below -87 are taken as -87 (`e^-87 = 1.6e-38`), so every result
/// is normal and the scaling by `2^n` is one product (`Simd::scale_pow2::<true>`); for a
/// caller to which every value below ~1e-35 is the same (`tanh`, where `e^-2|x| < 2^-25`
/// already gives ±1), the results are the same bits.
#[inline(always)]
pub(crate) fn exp_nonpositive<S: Simd, const NORMAL_ONLY: bool>(s: S, x: S::V) -> S::V {
    let (pow2, m) = exp_reduced::<S, NORMAL_ONLY>(s, x, 1.0);
    // e^r = 1 + (r + r^2 P(r)), the small terms first.
    s.scale_pow2::<NORMAL_ONLY>(s.add(m, s.splat(1.0)), pow2)
}

/// The range reduction of [`exp_nonpositive`] (which see for the clamp and NaN), for
/// `x = c y`, `y <= 0`, `c` 1 or 2: `(p, m)` with `e^x = 2^n (1 + m)`, `p` the tier's form of
/// `2^n` ([`Simd::round_pow2`]) and `m = e^r - 1 = r + r^2 P(r)` for the reduced
/// `r = x - n ln2`, `|r| <= ln2/2`, rounded once (no cancellation: `r^2 P(r)` is at most a
/// sixth of `r`). `tanh` takes `e^x - 1` from it without the cancellation of subtracting 1
/// from `e^x`.
///
/// `c` is a power of two, so `c y` and `c log2(e)` are exact and `n = round(y (c log2(e)))`
/// is the same number as `round((c y) log2(e))`: the bits do not depend on where `c` goes,
/// and taking it into the constant keeps the product `c y` off the chain to `n` (`tanh`'s
/// `e^-2|x|`: 3 cycles of its ~55).
#[inline(always)]
pub(crate) fn exp_reduced<S: Simd, const NORMAL_ONLY: bool>(s: S, y: S::V, c: f32) -> (S::V, S::V) {
    debug_assert!(c == 1.0 || c == 2.0);
    // `y <= 0`: only the lower clamp can apply (`X_MIN / c` is exact too).
    let y = s.max(
        y,
        s.splat(if NORMAL_ONLY { X_MIN_NORMAL } else { X_MIN } / c),
    );
    let (n, pow2) = s.round_pow2::<NORMAL_ONLY>(y, s.splat(c * LOG2E));
    let x = if c == 1.0 { y } else { s.mul(y, s.splat(c)) };
    let r = s.mul_add(n, s.splat(-LN2_HI), x);
    let r = s.mul_add(n, s.splat(-LN2_LO), r);
    // P(r) by Estrin's scheme: three linear pieces at once, joined by `r^2`, a chain of three
    // FMAs where Horner's takes five (the activations are latency-bound in a single row).
    let r2 = s.mul(r, r);
    let hi = s.mul_add(s.splat(P[0]), r, s.splat(P[1]));
    let mid = s.mul_add(s.splat(P[2]), r, s.splat(P[3]));
    let lo = s.mul_add(s.splat(P[4]), r, s.splat(P[5]));
    let p = s.mul_add(s.mul_add(hi, r2, mid), r2, lo);
    (pow2, s.mul_add(p, r2, r))
}
