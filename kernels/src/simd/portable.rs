//! The portable tier on `wide::f32x8`: SSE2 on a generic x86-64 build, NEON on aarch64, and
//! whatever `-C target-cpu` enables otherwise (`wide` picks its instructions at compile time).

use super::Simd;
use wide::{f32x8, i32x8};

/// Token of the portable tier; needs nothing beyond the build target.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable(());

impl Portable {
    /// Always available.
    #[inline(always)]
    pub(crate) fn new() -> Portable {
        Portable(())
    }
}

// SAFETY: the methods use only `wide`'s safe, compile-time-selected operations, which run on any
// CPU the build targets; `LANES = 8` divides `BLOCK` and is at most `MAX_LANES`.
unsafe impl Simd for Portable {
    type V = f32x8;
    type M = f32x8;
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(self, x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    fn load(self, x: &[f32]) -> f32x8 {
        let a: [f32; 8] = x[..8].try_into().expect("8 lanes");
        f32x8::from(a)
    }
    #[inline(always)]
    fn store(self, v: f32x8, out: &mut [f32]) {
        out[..8].copy_from_slice(&v.to_array());
    }
    #[inline(always)]
    fn add(self, a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32x8, b: f32x8) -> f32x8 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32x8, b: f32x8) -> f32x8 {
        a / b
    }
    #[inline(always)]
    fn mul_add(self, a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn max(self, a: f32x8, b: f32x8) -> f32x8 {
        // SSE's `maxps` yields its second operand where either is NaN; NEON's `fmax` yields NaN.
        #[cfg(any(
            target_feature = "sse",
            all(target_arch = "aarch64", target_feature = "neon")
        ))]
        {
            b.fast_max(a)
        }
        // wide's scalar fallback would yield `b`: select NaN lanes of `a` explicitly.
        #[cfg(not(any(
            target_feature = "sse",
            all(target_arch = "aarch64", target_feature = "neon")
        )))]
        {
            a.is_nan().blend(a, b.fast_max(a))
        }
    }
    #[inline(always)]
    fn abs(self, a: f32x8) -> f32x8 {
        a.abs()
    }
    #[inline(always)]
    fn or_sign(self, magnitude: f32x8, sign: f32x8) -> f32x8 {
        magnitude | (sign & f32x8::splat(-0.0))
    }
    #[inline(always)]
    fn lt(self, a: f32x8, b: f32x8) -> f32x8 {
        a.simd_lt(b)
    }
    #[inline(always)]
    fn le(self, a: f32x8, b: f32x8) -> f32x8 {
        a.simd_le(b)
    }
    #[inline(always)]
    fn select(self, m: f32x8, t: f32x8, f: f32x8) -> f32x8 {
        m.select(t, f)
    }
    #[inline(always)]
    fn shift_to_exponent(self, a: f32x8) -> f32x8 {
        let bits: i32x8 = wide::bytemuck::cast(a);
        wide::bytemuck::cast(bits << 23)
    }
}
