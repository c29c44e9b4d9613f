//! The AVX-512 tier (x86-64-v4: F, BW, DQ, VL) on `__m512`.

use super::Simd;
use core::arch::x86_64::*;

/// Token of the AVX-512 tier: exists only if the CPU has AVX-512 F/BW/DQ/VL and FMA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// The token, if this CPU has every feature `tiers` enables for this tier.
    #[inline(always)]
    pub(crate) fn new() -> Option<Avx512> {
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma"))
        .then_some(Avx512(()))
    }
}

/// The mask of the first `n <= 16` lanes.
#[inline(always)]
fn lanes(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

// SAFETY (for every `unsafe` block below): a value of `Avx512` exists only after `Avx512::new`
// checked that the CPU has AVX-512 F/BW/DQ/VL and FMA; these intrinsics need AVX-512F.
// Loads and stores check the slice length (16) first. `LANES = 16 = BLOCK`.
unsafe impl Simd for Avx512 {
    type V = __m512;
    type M = __mmask16;
    const LANES: usize = 16;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn load(self, x: &[f32]) -> __m512 {
        let x = &x[..16];
        // SAFETY: `x` holds 16 floats (sliced above); unaligned load; AVX-512F.
        unsafe { _mm512_loadu_ps(x.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, v: __m512, out: &mut [f32]) {
        let out = &mut out[..16];
        // SAFETY: `out` holds 16 floats (sliced above); unaligned store; AVX-512F.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn load_partial(self, x: &[f32]) -> __m512 {
        // A masked load instead of the default's copy through a stack buffer: no branch, no
        // call (whose clobbered registers made the epilogues spill around it).
        let n = x.len().min(16);
        // SAFETY: lanes `0..n` of `x` are read, and `x` holds at least `n` floats; the masked
        // lanes are not accessed (AVX-512 masked loads suppress their faults); AVX-512F.
        unsafe { _mm512_maskz_loadu_ps(lanes(n), x.as_ptr()) }
    }
    #[inline(always)]
    fn store_partial(self, v: __m512, out: &mut [f32]) {
        let n = out.len().min(16);
        // SAFETY: lanes `0..n` are written, and `out` holds at least `n` floats; the masked
        // lanes are not accessed (AVX-512 masked stores suppress their faults); AVX-512F.
        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), lanes(n), v) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        // `vdivps` of 16 lanes is the slowest instruction of the activations (~10 cycles of
        // throughput against ~2 for `vrcp14ps`, measured on a Xeon). From the estimate `r`,
        // relative error `e < 2^-14`: `q0 = a r`, the remainder `a - q0 b` (one FMA, exact to
        // its own rounding), and `q0 + (a - q0 b) r = (a / b)(1 - e^2)` up to that rounding, so
        // the result is the exact quotient within `2^-28` rounded once. For the finite `a` and
        // normal `b` of the activations (their divisors lie in [1, 3]); NaN propagates.
        // SAFETY: see the impl comment (`vrcp14ps` is AVX-512F).
        let r = unsafe { _mm512_rcp14_ps(b) };
        let q0 = self.mul(a, r);
        self.mul_add(self.neg_mul_add(q0, b, a), r, q0)
    }
    #[inline(always)]
    fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn neg_mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        // `vmaxps` yields its second operand where either is NaN.
        unsafe { _mm512_max_ps(b, a) }
    }
    #[inline(always)]
    fn abs(self, a: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_abs_ps(a) }
    }
    #[inline(always)]
    fn or_sign(self, magnitude: __m512, sign: __m512) -> __m512 {
        // SAFETY: see the impl comment (integer and/or are AVX-512F).
        unsafe {
            let sign_bit = _mm512_and_si512(_mm512_castps_si512(sign), _mm512_set1_epi32(i32::MIN));
            _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(magnitude), sign_bit))
        }
    }
    #[inline(always)]
    fn lt(self, a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    fn le(self, a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LE_OQ>(a, b) }
    }
    #[inline(always)]
    fn select(self, m: __mmask16, t: __m512, f: __m512) -> __m512 {
        // SAFETY: see the impl comment. `mask_blend` takes `t` where the mask bit is set.
        unsafe { _mm512_mask_blend_ps(m, f, t) }
    }
    #[inline(always)]
    fn flush_denormals(self, a: __m512) -> __m512 {
        // `vfpclassps` class 0x20 is "denormal": those lanes keep only their sign bit.
        // SAFETY: see the impl comment (`vfpclassps` is AVX-512DQ, checked by the token).
        unsafe {
            let tiny = _mm512_fpclass_ps_mask::<0x20>(a);
            _mm512_mask_and_ps(a, tiny, a, _mm512_set1_ps(-0.0))
        }
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
    fn shift_to_exponent(self, a: __m512) -> __m512 {
        // SAFETY: see the impl comment (AVX-512F integer shift, bit casts).
        unsafe { _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_castps_si512(a))) }
    }
    /// `n = round(a * b)` after the product's rounding (ties to even) and `p = n`: `vscalefps`
    /// scales by `n` itself, denormals included, in one instruction.
    #[inline(always)]
    fn round_pow2<const NORMAL: bool>(self, a: __m512, b: __m512) -> (__m512, __m512) {
        // SAFETY: see the impl comment.
        let n = unsafe {
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(a, b),
            )
        };
        (n, n)
    }
    #[inline(always)]
    fn scale_pow2<const NORMAL: bool>(self, x: __m512, n: __m512) -> __m512 {
        // `vscalefps` computes x * 2^floor(n) with one rounding, denormals and overflow included.
        // SAFETY: see the impl comment.
        unsafe { _mm512_scalef_ps(x, n) }
    }
}
