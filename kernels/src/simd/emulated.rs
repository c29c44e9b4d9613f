//! A scalar emulation of a 16-lane vector, with AVX-512's rounding behaviour (fused `mul_add`,
//! one rounding in `scale_pow2`): it runs the AVX-512 tier's kernel bodies and tiles on any CPU,
//! so the 16-lane code paths are tested on hosts without AVX-512. Not fast; tests only.

use super::Simd;

/// Token of the emulated 16-lane tier; needs nothing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Emulated16(());

impl Emulated16 {
    /// Always available.
    #[inline(always)]
    pub(crate) fn new() -> Emulated16 {
        Emulated16(())
    }
}

type V = [f32; 16];

#[inline(always)]
fn map2(a: V, b: V, f: impl Fn(f32, f32) -> f32) -> V {
    std::array::from_fn(|i| f(a[i], b[i]))
}

// SAFETY: plain scalar code, no CPU requirement; `LANES = 16 = BLOCK = MAX_LANES`.
unsafe impl Simd for Emulated16 {
    type V = V;
    type M = [bool; 16];
    const LANES: usize = 16;

    #[inline(always)]
    fn splat(self, x: f32) -> V {
        [x; 16]
    }
    #[inline(always)]
    fn load(self, x: &[f32]) -> V {
        x[..16].try_into().expect("16 lanes")
    }
    #[inline(always)]
    fn store(self, v: V, out: &mut [f32]) {
        out[..16].copy_from_slice(&v);
    }
    #[inline(always)]
    fn add(self, a: V, b: V) -> V {
        map2(a, b, |a, b| a + b)
    }
    #[inline(always)]
    fn sub(self, a: V, b: V) -> V {
        map2(a, b, |a, b| a - b)
    }
    #[inline(always)]
    fn mul(self, a: V, b: V) -> V {
        map2(a, b, |a, b| a * b)
    }
    #[inline(always)]
    fn div(self, a: V, b: V) -> V {
        map2(a, b, |a, b| a / b)
    }
    #[inline(always)]
    fn mul_add(self, a: V, b: V, c: V) -> V {
        std::array::from_fn(|i| a[i].mul_add(b[i], c[i]))
    }
    #[inline(always)]
    fn max(self, a: V, b: V) -> V {
        map2(a, b, |a, b| if a.is_nan() || a > b { a } else { b })
    }
    #[inline(always)]
    fn abs(self, a: V) -> V {
        a.map(f32::abs)
    }
    #[inline(always)]
    fn or_sign(self, magnitude: V, sign: V) -> V {
        map2(magnitude, sign, |m, s| {
            f32::from_bits(m.to_bits() | (s.to_bits() & 0x8000_0000))
        })
    }
    #[inline(always)]
    fn lt(self, a: V, b: V) -> [bool; 16] {
        std::array::from_fn(|i| a[i] < b[i])
    }
    #[inline(always)]
    fn le(self, a: V, b: V) -> [bool; 16] {
        std::array::from_fn(|i| a[i] <= b[i])
    }
    #[inline(always)]
    fn select(self, m: [bool; 16], t: V, f: V) -> V {
        std::array::from_fn(|i| if m[i] { t[i] } else { f[i] })
    }
    #[inline(always)]
    fn shift_to_exponent(self, a: V) -> V {
        a.map(|x| f32::from_bits(x.to_bits() << 23))
    }
    /// As the AVX-512 tier: `n = round(a * b)` after the product's rounding, ties to even, and
    /// `p = n` (for `vscalefps`' emulation below).
    #[inline(always)]
    fn round_pow2<const NORMAL: bool>(self, a: V, b: V) -> (V, V) {
        let n = map2(a, b, |a, b| (a * b).round_ties_even());
        (n, n)
    }
    /// As `vscalefps`: exact in f64 (its exponent range covers 2^-151), then one rounding.
    #[inline(always)]
    fn scale_pow2<const NORMAL: bool>(self, x: V, n: V) -> V {
        map2(x, n, |x, n| (f64::from(x) * 2f64.powi(n as i32)) as f32)
    }
}
