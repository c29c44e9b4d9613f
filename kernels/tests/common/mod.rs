//! Helpers shared by the integration tests: the tiers to run on this host, and the stated error
//! bounds of the activations that `activation.rs` checks and `step.rs` builds on.

#![allow(dead_code)]

use recur_kernels::step::emulated_avx512_kernels;
use recur_kernels::{kernels_for, Isa, Kernels};

/// Every tier this host runs, with a display name, plus the emulated 16-lane run of the AVX-512
/// bodies; prints what it skips (once per call).
pub fn tiers() -> Vec<(&'static str, &'static Kernels)> {
    let mut out = Vec::new();
    for isa in Isa::ALL {
        match kernels_for(isa) {
            Some(k) if isa.cpu_supports() => out.push((isa.name(), k)),
            Some(_) => eprintln!("skipping the {isa} tier: this CPU lacks its instructions"),
            None => eprintln!("skipping the {isa} tier: not built for this target"),
        }
    }
    out.push(("avx512-emulated", emulated_avx512_kernels()));
    out
}

/// The bit patterns of `v`, to compare results bit for bit (NaN included).
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The unit roundoff of f32 (`2^-24`).
pub const U: f64 = 1.0 / 16_777_216.0;

/// `γ_n = n·u / (1 - n·u)`: the relative error bound of `n` rounded f32 operations in sequence
/// (Higham), from which the tests derive each element's bound.
pub fn gamma(n: usize) -> f64 {
    n as f64 * U / (1.0 - n as f64 * U)
}

/// splitmix64: reproducible random numbers from the proptest seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-scale, scale)`.
    pub fn f(&mut self, scale: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }

    /// `n` values uniform in `[-scale, scale)`.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f(scale)).collect()
    }
}

/// Largest error of the fast sigmoid, in ULP of the f32 result, on every tier (stated in
/// `sigmoid.rs`: 2.40 measured over every f32; a real AVX-512 tier's division may add a
/// fraction of an ULP, see `Simd::div`).
pub const SIGMOID_MAX_ULP: f64 = 2.5;
/// Largest error of the fast tanh, in ULP of the f32 result, on every tier (stated in
/// `tanh.rs`: 1.96 measured over every f32 on the FMA tiers, 1.99 on the portable tier of an
/// x86-64 build without FMA, whose `mul_add` rounds twice).
pub const TANH_MAX_ULP: f64 = 2.5;
/// Largest error of the scalar references' sigmoid, in ULP, above `f32::MIN_POSITIVE`
/// (`scalar_references_stay_close_to_exact` in `activation.rs`; their tanh is held to 2).
pub const REFERENCE_MAX_ULP: f64 = 4.0;
