//! Helpers shared by the integration tests: the tiers to run on this host.

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
