//! Vectorized math, generic over [`Simd`](crate::simd::Simd): one file per function family.
//!
//! Accuracy is stated next to each function as the largest error measured against the exact
//! value (f64 libm) in units in the last place (ULP) of the f32 result, over a sweep of the
//! whole f32 range (`tests/activation.rs` repeats the sweep on every tier the host supports).

pub(crate) mod exp;
pub(crate) mod sigmoid;
pub(crate) mod tanh;

use crate::simd::Simd;

/// `max(x, 0)` with NaN propagated and `relu(-0) = +0`, as [`crate::reference::reference_relu`].
#[inline(always)]
pub(crate) fn relu<S: Simd>(s: S, x: S::V) -> S::V {
    // `x <= 0` is false for NaN, so NaN lanes keep `x`.
    s.select(s.le(x, s.zero()), s.zero(), x)
}
