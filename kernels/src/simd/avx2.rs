//! The AVX2 + FMA tier (x86-64-v3) on `__m256`.

use super::Simd;
use core::arch::x86_64::*;

/// Token of the AVX2 + FMA tier: exists only if the CPU has both.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// The token, if this CPU has AVX2 and FMA (the features `tiers` enables for this tier).
    #[inline(always)]
    pub(crate) fn new() -> Option<Avx2> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2(()))
    }
}

// SAFETY (for every `unsafe` block below): a value of `Avx2` exists only after `Avx2::new`
// checked that the CPU has AVX2 and FMA, which are all the instructions these intrinsics need.
// Loads and stores check the slice length (8) first. `LANES = 8` divides `BLOCK`.
unsafe impl Simd for Avx2 {
    type V = __m256;
    type M = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn load(self, x: &[f32]) -> __m256 {
        let x = &x[..8];
        // SAFETY: `x` holds 8 floats (sliced above); unaligned load; AVX per the impl comment.
        unsafe { _mm256_loadu_ps(x.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, v: __m256, out: &mut [f32]) {
        let out = &mut out[..8];
        // SAFETY: `out` holds 8 floats (sliced above); unaligned store; AVX per the impl comment.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: see the impl comment (FMA).
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn neg_mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: see the impl comment (FMA).
        unsafe { _mm256_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        // `vmaxps` yields its second operand where either is NaN.
        unsafe { _mm256_max_ps(b, a) }
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
    }
    #[inline(always)]
    fn or_sign(self, magnitude: __m256, sign: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_or_ps(magnitude, _mm256_and_ps(sign, _mm256_set1_ps(-0.0))) }
    }
    #[inline(always)]
    fn lt(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    fn le(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_cmp_ps::<_CMP_LE_OQ>(a, b) }
    }
    #[inline(always)]
    fn select(self, m: __m256, t: __m256, f: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_blendv_ps(f, t, m) }
    }
    #[inline(always)]
    fn prefetch(self, x: &[f32]) {
        if let Some(first) = x.first() {
            // SAFETY: a prefetch never faults and changes no architectural state; `first` is a
            // valid address anyway. SSE (part of every x86-64 CPU).
            unsafe { _mm_prefetch::<_MM_HINT_T0>((first as *const f32).cast::<i8>()) }
        }
    }
    #[inline(always)]
    fn shift_to_exponent(self, a: __m256) -> __m256 {
        // SAFETY: see the impl comment (AVX2 integer shift, bit casts).
        unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(a))) }
    }
}
