//! The logistic sigmoid `σ(x) = 1 / (1 + e^-x)`.
//!
//! Computed from `e = e^-|x|` (in `(0, 1]`, never overflowing) as `1 / (1 + e)` for `x >= 0` and
//! `e / (1 + e)` for `x < 0`, so the tiny results of large negative `x` keep their relative
//! accuracy down to the denormals instead of cancelling in `1 - σ(-x)`.
//!
//! The sum `1 + e` and the quotient are each rounded once, with no correction step: a step
//! (the Fast2Sum error of `1 + e` and the FMA remainder of the division) took the error from
//! 2.4 to 1.5 ULP for 6 more operations on the chain, a fifth of the function, and the LSTM
//! and GRU cells, three sigmoids and two `tanh`s a vector of units, are bound by the length
//! and number of these chains (`Kernels::sigmoid` over 4096 values on the Zen 3, AVX2: 3.4 ->
//! 2.8 µs).
//!
//! Measured error against the exact value (f64 libm), over every f32 bit pattern
//! (`RECUR_SWEEP_STEP=1 cargo test --release -p recur-kernels --test activation`): **at most
//! 2.40 ULP** on every tier (AVX2, AVX-512 emulated, portable with and without FMA); the test
//! holds every tier to 2.5 (every 37th pattern by default). `num <= 1 + e`, so the results
//! stay in `[0, 1]`. Exact at the ends: `σ(x) = 1` for `x >= 17.33` (where `1 + e^-x` rounds
//! to 1), `σ(-inf) = +0`, `σ(+inf) = 1`, `σ(±0) = 0.5`; NaN in, NaN out.

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
    // NaN needs no select: `e` is NaN, so `1 + e` and the quotient are.
    s.div(num, s.add(one, e))
}
