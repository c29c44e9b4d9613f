//! A small SIMD abstraction: one trait, one implementation per instruction set.
//!
//! Every kernel body (the activations in [`crate::vecmath`], the fused steps in [`crate::fused`])
//! is written once, generic over [`Simd`], and marked `#[inline(always)]`. [`crate::tiers`]
//! instantiates each body inside a small `#[target_feature]` function per tier, so the whole body,
//! the trait methods and the intrinsics they call are compiled for that tier's instructions.
//!
//! # Soundness
//!
//! An implementing type is a zero-sized *token*: a value of it proves that the running CPU has the
//! instructions its methods use. Tokens are created only by their `new()` constructor, which checks
//! the CPU (`is_x86_feature_detected!`, cached by `std`); their field is private, so no other code
//! can make one. The methods are therefore safe to call: the `unsafe` blocks inside them rely on
//! the token's existence, and nothing else. Loads and stores take slices and check their length.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod emulated;
pub(crate) mod portable;
pub(crate) mod rows;

/// The largest vector width of any tier, in `f32` lanes (AVX-512).
pub(crate) const MAX_LANES: usize = 16;

/// `1.5 * 2^23 + 127`: see [`Simd::round_pow2`].
const POW2_MAGIC: f32 = 12_583_039.0;
/// `1.5 * 2^23 + 127 + 64`: see [`Simd::round_pow2`].
const POW2_MAGIC_SUB: f32 = 12_583_103.0;
/// `2^-64`.
const POW2_M64: f32 = f32::from_bits(63 << 23);

/// One instruction set's `f32` vector operations.
///
/// # Safety
///
/// Implementors must make a value of `Self` constructible only after checking that the running
/// CPU supports every instruction the methods use (see the module docs), and `LANES` must be at
/// most [`MAX_LANES`] and divide [`crate::BLOCK`].
pub(crate) unsafe trait Simd: Copy + 'static {
    /// A vector of [`Self::LANES`] `f32`.
    type V: Copy;
    /// A lane mask, as produced by comparisons.
    type M: Copy;
    /// `f32` lanes per vector.
    const LANES: usize;

    /// Every lane `x`.
    fn splat(self, x: f32) -> Self::V;
    /// The first `LANES` elements of `x`. Panics if `x` is shorter.
    fn load(self, x: &[f32]) -> Self::V;
    /// Writes the lanes of `v` to the first `LANES` elements of `out`. Panics if `out` is shorter.
    fn store(self, v: Self::V, out: &mut [f32]);

    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`: correctly rounded on every tier but AVX-512, whose `vdivps` of 16 lanes is slow
    /// (~10 cycles of throughput against ~2 for `vrcp14ps`, measured on a Xeon) and which
    /// refines its reciprocal estimate instead (see its impl): within `2^-28` of the exact
    /// quotient before the one rounding, so correctly rounded but for quotients that close to a
    /// rounding midpoint (for finite `a` and normal `b`, which is all the activations divide).
    /// Its bits then depend on the estimate's, which may differ between CPU models, only
    /// through that rounding.
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`: fused (one rounding) on tiers with FMA, two roundings on the portable tier
    /// of a build without FMA. Either way the same instructions for every lane and every call,
    /// which is what keeps results independent of the batch split.
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `c - a * b`, rounded as `mul_add(-a, b, c)` (the same bits; one instruction where the
    /// tier has a negated FMA).
    #[inline(always)]
    fn neg_mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        self.mul_add(self.sub(self.zero(), a), b, c)
    }
    /// Lane-wise maximum, NaN where `a` is NaN (what a NaN in `b` yields is unspecified): so
    /// a clamp `max(x, c)` lets NaN through.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// `|a|` (clears the sign bit).
    fn abs(self, a: Self::V) -> Self::V;
    /// `magnitude` with the sign bit of `sign` OR-ed in (`magnitude` must have a clear sign bit):
    /// `copysign` for non-negative magnitudes, `-|magnitude|` for a negative `sign` whatever
    /// the magnitude's sign.
    fn or_sign(self, magnitude: Self::V, sign: Self::V) -> Self::V;

    /// `a < b` (false where either is NaN).
    fn lt(self, a: Self::V, b: Self::V) -> Self::M;
    /// `a <= b` (false where either is NaN).
    fn le(self, a: Self::V, b: Self::V) -> Self::M;
    /// `m ? t : f` per lane.
    fn select(self, m: Self::M, t: Self::V, f: Self::V) -> Self::V;

    /// `a` where it is not denormal, else `±0` with its sign (`crate::denormal::flush` per
    /// lane): a compare and a select, or one classification where the tier has it.
    #[inline(always)]
    fn flush_denormals(self, a: Self::V) -> Self::V {
        let tiny = self.lt(self.abs(a), self.splat(f32::MIN_POSITIVE));
        self.select(tiny, self.or_sign(self.zero(), a), a)
    }

    /// `(n, p)`: `n`, the integer nearest to `a * b` (ties to even), for `a * b` in
    /// `[-151, 0]`, and `p`, the tier's form of `2^n` that [`Simd::scale_pow2`] (with the same
    /// `NORMAL`) takes.
    ///
    /// Default: one `mul_add` rounds `t = a * b + M` to an integer, `M = 1.5 * 2^23 + 127`
    /// (`+ 64` without `NORMAL`): `t` lies where the floats are the integers, so `n = t - M`
    /// exactly, and the low 9 bits of `t`'s pattern are `n + 127` (`n + 191`), the biased
    /// exponent of `2^n` (`2^(n + 64)`): `p = t`. Two instructions, where a rounding
    /// instruction and a conversion of `n` back to an integer take three or four. (Without
    /// FMA `a * b` rounds first; `n` is then the integer nearest to that.)
    #[inline(always)]
    fn round_pow2<const NORMAL: bool>(self, a: Self::V, b: Self::V) -> (Self::V, Self::V) {
        let m = self.splat(if NORMAL { POW2_MAGIC } else { POW2_MAGIC_SUB });
        let t = self.mul_add(a, b, m);
        (self.sub(t, m), t)
    }
    /// `x * 2^n` rounded once, for `x` in `[0.5, 2]` and `p` from [`Simd::round_pow2`]: without
    /// `NORMAL`, `n` in `[-151, 0]` and results below `f32::MIN_POSITIVE` correctly rounded
    /// denormals (or zero); with it, `n` in `[-126, 0]` and `x * 2^n` normal.
    ///
    /// Default: [`Simd::shift_to_exponent`] of `p` is `2^n` (`2^(n + 64)` without `NORMAL`,
    /// then the product scaled by `2^-64`: the first product is exact, the second rounds
    /// once).
    #[inline(always)]
    fn scale_pow2<const NORMAL: bool>(self, x: Self::V, p: Self::V) -> Self::V {
        let scaled = self.mul(x, self.shift_to_exponent(p));
        if !NORMAL {
            self.mul(scaled, self.splat(POW2_M64))
        } else {
            scaled
        }
    }
    /// The lanes whose bit patterns are `a`'s shifted left by 23 (the low 9 bits of each become
    /// its sign and exponent, the mantissa zero).
    fn shift_to_exponent(self, a: Self::V) -> Self::V;

    /// Hints the cache to fetch the line holding `x[0]` (for writing soon, or reading); no
    /// effect on results. Does nothing where a tier has no prefetch instruction, or for an
    /// empty slice.
    #[inline(always)]
    fn prefetch(self, x: &[f32]) {
        let _ = x;
    }

    /// All lanes `0.0`.
    #[inline(always)]
    fn zero(self) -> Self::V {
        self.splat(0.0)
    }

    /// The elements of `x` (at most `LANES`), the remaining lanes `0.0`.
    #[inline(always)]
    fn load_partial(self, x: &[f32]) -> Self::V {
        if x.len() >= Self::LANES {
            self.load(x)
        } else {
            let mut buf = [0.0f32; MAX_LANES];
            buf[..x.len()].copy_from_slice(x);
            self.load(&buf)
        }
    }

    /// Writes the first `out.len()` lanes of `v` (at most `LANES`) to `out`.
    #[inline(always)]
    fn store_partial(self, v: Self::V, out: &mut [f32]) {
        if out.len() >= Self::LANES {
            self.store(v, out)
        } else {
            let mut buf = [0.0f32; MAX_LANES];
            self.store(v, &mut buf);
            let n = out.len();
            out.copy_from_slice(&buf[..n]);
        }
    }
}
