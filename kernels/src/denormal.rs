//! Denormal values flushed to zero, in the data rather than in the floating-point mode.
//!
//! On Intel cores a multiply or FMA with a denormal operand or result takes a microcode
//! assist: measured on a Xeon (this project's AVX-512 machine), an LSTM step at H256 whose
//! `h` is denormal ran ~60x slower (~10 us -> 730 us), the input projection of a denormal input
//! ~200x. The hardware's flush modes (MXCSR FTZ/DAZ) cannot be used from Rust: the language
//! assumes the default floating-point environment, and changing it is undefined behaviour.
//! So recur keeps denormals out of the kernels' operands instead:
//!
//! - weights and biases are flushed when they are packed ([`crate::PackedMatrix::pack`]);
//! - every state a step kernel stores (`h`, `c`, the projection's output) is flushed
//!   (`Simd::flush_denormals`: one classification and a masked AND on AVX-512);
//! - the engine flushes its inputs (`x`, `h0`, `c0`) on the way in ([`flush_into`],
//!   [`has_denormals`]).
//!
//! A flushed value is `±0` with its sign kept, exactly what FTZ gives, so each changes by less
//! than `f32::MIN_POSITIVE` (`1.18e-38`): far inside SPEC §4's `1e-4`, and the same on every
//! tier, thread count and batch split. What can still produce a denormal inside a kernel (a
//! sum of tiny products, an activation of an input below -87) is transient and rare.

/// `x`, or `±0` (the sign of `x`) where `x` is denormal.
#[inline]
pub fn flush(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// `dst[i] = flush(src[i])`.
///
/// # Panics
/// If the lengths differ.
pub fn flush_into(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "flush_into: lengths differ");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = flush(s);
    }
}

/// Whether `x` holds a denormal value (a scan without early exit, which vectorizes; each tier's
/// table has it compiled with the tier's instructions, `Kernels::has_denormals`).
#[inline(always)]
pub fn has_denormals(x: &[f32]) -> bool {
    // Denormal iff `0 < |bits| < 2^23`: one integer compare per value, which vectorizes.
    let denormal = |v: &f32| (v.to_bits() & 0x7fff_ffff).wrapping_sub(1) < 0x007f_ffff;
    x.chunks(1024)
        .any(|c| c.iter().fold(false, |any, v| any | denormal(v)))
}

#[cfg(test)]
mod tests {
    use super::{flush, flush_into, has_denormals};

    #[test]
    fn flush_zeroes_denormals_only_and_keeps_their_sign() {
        let tiny = f32::MIN_POSITIVE / 2.0;
        let cases = [
            (tiny, 0.0),
            (-tiny, -0.0),
            (f32::from_bits(1), 0.0),
            (f32::MIN_POSITIVE, f32::MIN_POSITIVE),
            (-f32::MIN_POSITIVE, -f32::MIN_POSITIVE),
            (0.0, 0.0),
            (-0.0, -0.0),
            (1.5, 1.5),
            (f32::INFINITY, f32::INFINITY),
        ];
        for (x, want) in cases {
            assert_eq!(flush(x).to_bits(), f32::to_bits(want), "flush({x:e})");
        }
        assert!(flush(f32::NAN).is_nan());
        let src = [1.0, tiny, -tiny, -2.0];
        let mut dst = [9.0; 4];
        flush_into(&mut dst, &src);
        assert_eq!(
            dst.map(f32::to_bits),
            [1.0f32, 0.0, -0.0, -2.0].map(f32::to_bits)
        );
    }

    #[test]
    fn has_denormals_finds_one_anywhere() {
        let mut x = vec![1.0f32; 1000];
        assert!(!has_denormals(&x));
        assert!(!has_denormals(&[]));
        for at in [0, 255, 256, 999] {
            x[at] = -f32::MIN_POSITIVE / 3.0;
            assert!(has_denormals(&x), "denormal at {at}");
            x[at] = 0.0;
        }
        assert!(!has_denormals(&x), "zeros are not denormal");
    }
}
