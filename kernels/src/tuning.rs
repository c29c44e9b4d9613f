//! Per-CPU choices within a tier that change no result bit, only the speed: detected once, and
//! settable for tests and benchmarks.
//!
//! # A single LSTM row, one block at a time ([`single_row_one_block`])
//!
//! A single batch row has no rows to share a weight load with, so its step streams `W_hh` and
//! needs enough independent accumulator chains to keep the FMA pipes fed. The AVX-512 tier's
//! LSTM single rows take 2 blocks a pass (`JB1 = 2`: 8 gate panels, 8 read streams and 8
//! chains), chosen on Xeons, whose two zmm FMA pipes with a 4-cycle latency need 8 chains.
//! Zen 4 runs one zmm FMA a cycle (its 256-bit pipes double-pumped), so one block's 4 gates
//! are chains enough, and its weight streams read slower the more of them there are (a C model
//! of one LSTM H512 batch-1 step, 4 MiB of weights: 4 streams 44.8-45.3 µs, 8 streams
//! 46.3-47.9, 16 streams 73-75). There the engine reads a single LSTM row's blocks one at a
//! time: `recur bench`, LSTM I80 H512 batch 1, 100 steps, one thread pinned, 3 alternated
//! rounds, median 5.23-5.28 -> 5.02-5.12 ms (sessions 23 and 24, docs/PERFORMANCE.md). A GRU
//! block has 3 gates, 3 chains, too few alone: GRU H512 measured the same either way, so it
//! keeps its groups (the rule is "4 gates or more", [`ONE_BLOCK_MIN_GATES`]).
//!
//! The blocks hold disjoint units and each unit's sum is the same instruction sequence in
//! either grouping, so the choice changes no bit (the `single_row_groups` test holds every tier
//! to that).

use std::sync::atomic::{AtomicU8, Ordering};

/// Not yet detected; else 1 + whether single rows read one block at a time.
static ONE_BLOCK: AtomicU8 = AtomicU8::new(0);

/// The fewest gates of a cell whose single rows [`single_row_one_block`] applies to: one
/// block of them is 4 accumulator chains, what one FMA a cycle of latency 4 needs (the LSTM).
pub const ONE_BLOCK_MIN_GATES: usize = 4;

/// Whether the step kernels of cells of [`ONE_BLOCK_MIN_GATES`] gates or more (the LSTM) read
/// a single row's blocks one at a time instead of in their tier's groups (see the module
/// docs): [`set_single_row_one_block`]'s value if it was called, else
/// [`detect_single_row_one_block`]'s (cached).
#[inline]
pub fn single_row_one_block() -> bool {
    match ONE_BLOCK.load(Ordering::Relaxed) {
        0 => {
            let detected = 1 + detect_single_row_one_block() as u8;
            // A concurrent `set_single_row_one_block` wins: only store over "not detected".
            match ONE_BLOCK.compare_exchange(0, detected, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => detected == 2,
                Err(set) => set == 2,
            }
        }
        v => v == 2,
    }
}

/// Sets [`single_row_one_block`] for the whole process (tests and benchmarks compare both
/// ways; no result changes). Calls already running may see either value.
pub fn set_single_row_one_block(on: bool) {
    ONE_BLOCK.store(1 + on as u8, Ordering::Relaxed);
}

/// Whether this CPU reads single rows one block at a time by default: an AMD core of family
/// 25 (Zen 3 and Zen 4) with AVX-512, i.e. Zen 4. Zen 3 has no AVX-512 (its AVX2 tier reads one
/// block at a time already), and Zen 5 (family 26) has full-width AVX-512 pipes, so neither is
/// included; nor is any Intel core.
pub fn detect_single_row_one_block() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // SAFETY: CPUID exists on every x86-64 CPU and only reads identification registers;
        // leaf 0 (vendor, highest leaf) and leaf 1 (family and model) are defined on all of
        // them.
        #[allow(unused_unsafe)]
        let (vendor, leaf1) = unsafe { (__cpuid(0), __cpuid(1)) };
        let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
        // The family as the manuals define it: the base family, plus the extended family
        // where the base is 0xF.
        let base = (leaf1.eax >> 8) & 0xF;
        let family = if base == 0xF {
            base + ((leaf1.eax >> 20) & 0xFF)
        } else {
            base
        };
        amd && family == 0x19 && crate::Isa::Avx512.cpu_supports()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}
