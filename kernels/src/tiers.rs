//! Each tier's kernel table: the generic bodies of [`crate::fused`] and [`crate::vecmath`]
//! instantiated for one [`Simd`](crate::simd::Simd) token inside `#[target_feature]` functions.
//!
//! # Soundness
//!
//! The table entries are safe `fn`s. Each one first obtains its tier's token (`Avx2::new()`,
//! `Avx512::new()`: a cached CPU-feature check, a few nanoseconds) and panics if the CPU lacks the
//! tier; only with the token in hand does it call the `#[target_feature]` instantiation, which is
//! the only `unsafe` call here (its sole requirement, that the CPU has the enabled features, is
//! what the token proves). So a table obtained by any route (`kernels_for(Isa::Avx512)` on a CPU
//! without AVX-512 included) can never execute instructions the CPU lacks: it panics instead.
//! Everything else (slice lengths, block ranges) is checked by safe code in the bodies.
//!
//! Tiles (`R` rows per pass over the weights, `NV` unit vectors per pass, see [`crate::fused`])
//! are chosen per tier and kernel so that the `G * R * NV` accumulators, the weight vector and
//! the `R` broadcast `h` values fit in the tier's registers (16 on AVX2, 32 on AVX-512).

use std::ops::Range;

use crate::denormal;
use crate::fused;
use crate::isa::Isa;
use crate::matmul;
use crate::pack::PackedMatrix;
use crate::step::{Activation, BlockOrder, Kernels, Rider};
use crate::vecmath::{sigmoid::sigmoid, tanh::tanh};

/// A tier's single-row steps with a rider (`fused::ride`): `with_riding(E)`, one `k` of the
/// rider's tile after every `E` of the step's, for tiers of [`crate::BLOCK`] lanes; or
/// `no_riding()`. Defines `LSTM_STEP_RIDING` and `GRU_STEP_RIDING` for the tier's table.
macro_rules! with_riding {
    (
        token: $tok:ty;
        features: [$(#[$tf:meta])*];
        jb1: ($ljb:literal, $gjb:literal);
        args: ($e:literal);
    ) => {
        #[allow(clippy::too_many_arguments)]
        $(#[$tf])*
        fn lstm_riding_tf(
            s: $tok,
            w: &PackedMatrix,
            xp: &[f32],
            h_prev: &[f32],
            c: &mut [f32],
            h_out: &mut [f32],
            blocks: Range<usize>,
            order: BlockOrder,
            rider: Rider<'_>,
        ) {
            fused::lstm_step_riding::<$tok, $ljb, $e>(
                s, w, xp, h_prev, (c, h_out), blocks, order, rider,
            )
        }

        #[allow(clippy::too_many_arguments)]
        $(#[$tf])*
        fn gru_riding_tf(
            s: $tok,
            w: &PackedMatrix,
            b_hn: &[f32],
            xp: &[f32],
            h_prev: &[f32],
            h_out: &mut [f32],
            blocks: Range<usize>,
            order: BlockOrder,
            rider: Rider<'_>,
        ) {
            fused::gru_step_riding::<$tok, $gjb, $e>(
                s, (w, b_hn), xp, h_prev, h_out, blocks, order, rider,
            )
        }

        #[allow(clippy::too_many_arguments)]
        fn lstm_step_riding(
            w: &PackedMatrix,
            xp: &[f32],
            h_prev: &[f32],
            c: &mut [f32],
            h_out: &mut [f32],
            blocks: Range<usize>,
            order: BlockOrder,
            rider: Rider<'_>,
        ) {
            let s = token();
            // SAFETY: `s` exists, so the CPU has the features `lstm_riding_tf` enables.
            unsafe { lstm_riding_tf(s, w, xp, h_prev, c, h_out, blocks, order, rider) }
        }

        #[allow(clippy::too_many_arguments)]
        fn gru_step_riding(
            w: &PackedMatrix,
            b_hn: &[f32],
            xp: &[f32],
            h_prev: &[f32],
            h_out: &mut [f32],
            blocks: Range<usize>,
            order: BlockOrder,
            rider: Rider<'_>,
        ) {
            let s = token();
            // SAFETY: `s` exists, so the CPU has the features `gru_riding_tf` enables.
            unsafe { gru_riding_tf(s, w, b_hn, xp, h_prev, h_out, blocks, order, rider) }
        }

        const LSTM_STEP_RIDING: Option<crate::step::LstmStepRidingFn> = Some(lstm_step_riding);
        const GRU_STEP_RIDING: Option<crate::step::GruStepRidingFn> = Some(gru_step_riding);
    };
}

/// See [`with_riding`].
macro_rules! no_riding {
    (
        token: $tok:ty;
        features: [$(#[$tf:meta])*];
        jb1: ($ljb:literal, $gjb:literal);
        args: ();
    ) => {
        const LSTM_STEP_RIDING: Option<crate::step::LstmStepRidingFn> = None;
        const GRU_STEP_RIDING: Option<crate::step::GruStepRidingFn> = None;
    };
}

/// Generates one tier's module: `#[target_feature]` instantiations, their safe wrappers, and
/// the `KERNELS` table.
/// Tiles are `(R, GP, NV, RB, GPB, NVB, JBR, GP1, NV1, JB1)` per kernel: row tiles of `R` rows
/// in passes of `GP` gates and `NV` unit vectors, row tiles of `RB` rows (`0`: none) in passes
/// of `GPB` gates and `NVB` vectors for the rows `R` leaves over (see `fused::row_tiles`), both
/// over `JBR` blocks at once; single rows in passes of `GP1` gates and `NV1` vectors over `JB1`
/// blocks at once (see `fused::run`); the RNN's `split_k`: its sums over `k` in two halves
/// (even and odd `k`, see `fused::accumulate`), for every tile of the tier. The input
/// projection's are `(MR, JB, NV, JB1, kc, a_floats, few: (MRF, JBF))`: tiles of `MR` rows by
/// `JB` blocks of `NV` vectors, a call of a single row in tiles of `JB1` blocks, a call of
/// fewer than `matmul::FEW_ROWS` rows in tiles of `MRF` rows by `JBF` blocks, `k` chunks of at
/// most `kc`, row chunks whose inputs hold about `a_floats` floats (see
/// `matmul::input_projection`).
macro_rules! tier {
    (
        $(#[$doc:meta])*
        mod $m:ident;
        isa: $isa:expr;
        token: $tok:ty = $new:expr;
        features: [$(#[$tf:meta])*];
        lstm: ($lr:literal, $lgr:literal, $lnvr:literal, $lrb:literal, $lgb:literal, $lnvb:literal, $ljbr:literal, $lg1:literal, $lnv1:literal, $ljb:literal);
        gru: ($gr:literal, $ggr:literal, $gnvr:literal, $grb:literal, $ggb:literal, $gnvb:literal, $gjbr:literal, $gg1:literal, $gnv1:literal, $gjb:literal);
        rnn: ($rr:literal, $rgr:literal, $rnvr:literal, $rrb:literal, $rgb:literal, $rnvb:literal, $rjbr:literal, $rg1:literal, $rnv1:literal, $rjb:literal, split_k: $rks:literal);
        project: ($pr:literal, $pgr:literal, $pnvr:literal, $prb:literal, $pgb:literal, $pnvb:literal, $pjbr:literal, $pg1:literal, $pnv1:literal, $pjb:literal);
        input_projection: ($imr:literal, $ijb:literal, $inv:literal, $ijb1:literal, $ikc:literal, $imc:literal, few: ($ifmr:literal, $ifjb:literal));
        riding: $ride:ident($($ra:tt)*);
    ) => {
        $(#[$doc])*
        pub(crate) mod $m {
            #![allow(unused_unsafe, clippy::too_many_arguments)]
            use super::*;

            /// The tier's token, or a panic naming the missing tier.
            #[inline(always)]
            fn token() -> $tok {
                match $new {
                    Some(t) => t,
                    None => panic!(
                        "the {} kernels were called on a CPU without the {} instructions",
                        $isa.name(),
                        $isa.name()
                    ),
                }
            }

            $(#[$tf])*
            fn lstm_tf(
                s: $tok,
                w: &PackedMatrix,
                xp: &[f32],
                h_prev: &[f32],
                c: &mut [f32],
                h_out: &mut [f32],
                rows: usize,
                blocks: Range<usize>,
                order: BlockOrder,
            ) {
                fused::lstm_step_blocks::<$tok, $lr, $lgr, $lnvr, $lrb, $lgb, $lnvb, $ljbr, $lg1, $lnv1, $ljb>(
                    s, w, xp, h_prev, c, h_out, rows, blocks, order,
                )
            }

            #[allow(clippy::too_many_arguments)]
            $(#[$tf])*
            fn lstm_input_tf(
                s: $tok,
                input: (&PackedMatrix, &[f32], &[f32]),
                w: &PackedMatrix,
                h_prev: &[f32],
                c: &mut [f32],
                h_out: &mut [f32],
                rows: usize,
                blocks: Range<usize>,
                order: BlockOrder,
            ) {
                fused::lstm_input_step_blocks::<$tok, $lr, $lgr, $lnvr, $lrb, $lgb, $lnvb, $ljbr, $lg1, $lnv1, $ljb>(
                    s, input, w, h_prev, c, h_out, rows, blocks, order,
                )
            }

            $(#[$tf])*
            fn gru_tf(
                s: $tok,
                w: &PackedMatrix,
                b_hn: &[f32],
                xp: &[f32],
                h_prev: &[f32],
                h_out: &mut [f32],
                rows: usize,
                blocks: Range<usize>,
                order: BlockOrder,
            ) {
                fused::gru_step_blocks::<$tok, $gr, $ggr, $gnvr, $grb, $ggb, $gnvb, $gjbr, $gg1, $gnv1, $gjb>(
                    s, w, b_hn, xp, h_prev, h_out, rows, blocks, order,
                )
            }

            #[allow(clippy::too_many_arguments)]
            $(#[$tf])*
            fn gru_input_tf(
                s: $tok,
                input: (&PackedMatrix, &[f32], &[f32]),
                w: &PackedMatrix,
                b_hn: &[f32],
                h_prev: &[f32],
                h_out: &mut [f32],
                rows: usize,
                blocks: Range<usize>,
                order: BlockOrder,
            ) {
                fused::gru_input_step_blocks::<$tok, $gr, $ggr, $gnvr, $grb, $ggb, $gnvb, $gjbr, $gg1, $gnv1, $gjb>(
                    s, input, (w, b_hn), h_prev, h_out, rows, blocks, order,
                )
            }

            $ride! {
                token: $tok;
                features: [$(#[$tf])*];
                jb1: ($ljb, $gjb);
                args: ($($ra)*);
            }

            $(#[$tf])*
            fn rnn_tf(
                s: $tok,
                w: &PackedMatrix,
                act: Activation,
                xp: &[f32],
                h_prev: &[f32],
                h_out: &mut [f32],
                rows: usize,
                blocks: Range<usize>,
                order: BlockOrder,
            ) {
                fused::rnn_step_blocks::<$tok, $rks, $rr, $rgr, $rnvr, $rrb, $rgb, $rnvb, $rjbr, $rg1, $rnv1, $rjb>(
                    s, w, act, xp, h_prev, h_out, rows, blocks, order,
                )
            }

            $(#[$tf])*
            fn rnn_steps_tf(
                s: $tok,
                w: &PackedMatrix,
                act: Activation,
                xp: &[f32],
                h0: &[f32],
                h_out: &mut [f32],
                steps: usize,
            ) {
                fused::rnn_steps::<$tok, $rks, $rg1, $rnv1, $rjb>(s, w, act, xp, h0, h_out, steps)
            }

            $(#[$tf])*
            fn project_tf(
                s: $tok,
                w: &PackedMatrix,
                x: &[f32],
                out: &mut [f32],
                rows: usize,
                blocks: Range<usize>,
                order: BlockOrder,
            ) {
                fused::project_blocks::<$tok, $pr, $pgr, $pnvr, $prb, $pgb, $pnvb, $pjbr, $pg1, $pnv1, $pjb>(
                    s, w, x, out, rows, blocks, order,
                )
            }

            $(#[$tf])*
            fn input_projection_tf(
                s: $tok,
                w: &PackedMatrix,
                bias: &[f32],
                x: &[f32],
                xp: &mut [f32],
                rows: usize,
            ) {
                matmul::input_projection::<$tok, $imr, $ijb, $inv, $ijb1, $ifmr, $ifjb>(
                    s, w, bias, x, xp, rows, ($ikc, $imc),
                )
            }

            $(#[$tf])*
            fn sigmoid_tf(s: $tok, x: &[f32], y: &mut [f32]) {
                fused::map(s, x, y, sigmoid)
            }

            $(#[$tf])*
            fn tanh_tf(s: $tok, x: &[f32], y: &mut [f32]) {
                fused::map(s, x, y, tanh)
            }

            $(#[$tf])*
            fn has_denormals_tf(_: $tok, x: &[f32]) -> bool {
                // The portable scan, vectorized with the tier's instructions.
                denormal::has_denormals(x)
            }

            fn lstm_step_blocks(
                w: &PackedMatrix,
                xp: &[f32],
                h_prev: &[f32],
                c: &mut [f32],
                h_out: &mut [f32],
                rows: usize,
                blocks: Range<usize>,
                order: BlockOrder,
            ) {
                let s = token();
                // SAFETY: `s` exists, so the CPU has the features `lstm_tf` enables.
                unsafe { lstm_tf(s, w, xp, h_prev, c, h_out, rows, blocks, order) }
            }

            #[allow(clippy::too_many_arguments)]
            fn lstm_input_step_blocks(
                input: (&PackedMatrix, &[f32], &[f32]),
                w: &PackedMatrix,
                h_prev: &[f32],
                c: &mut [f32],
                h_out: &mut [f32],
                rows: usize,
                blocks: Range<usize>,
                order: BlockOrder,
            ) {
                let s = token();
                // SAFETY: `s` exists, so the CPU has the features `lstm_input_tf` enables.
                unsafe { lstm_input_tf(s, input, w, h_prev, c, h_out, rows, blocks, order) }
            }

            fn gru_step_blocks(
                w: &PackedMatrix,
                b_hn: &[f32],
                xp: &[f32],
                h_prev: &[f32],
                h_out: &mut [f32],
                rows: usize,
                blocks: Range<usize>,
                order: BlockOrder,
            ) {
                let s = token();
                // SAFETY: `s` exists, so the CPU has the features `gru_tf` enables.
                unsafe { gru_tf(s, w, b_hn, xp, h_prev, h_out, rows, blocks, order) }
            }

            #[allow(clippy::too_many_arguments)]
            fn gru_input_step_blocks(
                input: (&PackedMatrix, &[f32], &[f32]),
                w: &PackedMatrix,
                b_hn: &[f32],
                h_prev: &[f32],
                h_out: &mut [f32],
                rows: usize,
                blocks: Range<usize>,
                order: BlockOrder,
            ) {
                let s = token();
                // SAFETY: `s` exists, so the CPU has the features `gru_input_tf` enables.
                unsafe { gru_input_tf(s, input, w, b_hn, h_prev, h_out, rows, blocks, order) }
            }

            fn rnn_step_blocks(
                w: &PackedMatrix,
                act: Activation,
                xp: &[f32],
                h_prev: &[f32],
                h_out: &mut [f32],
                rows: usize,
                blocks: Range<usize>,
                order: BlockOrder,
            ) {
                let s = token();
                // SAFETY: `s` exists, so the CPU has the features `rnn_tf` enables.
                unsafe { rnn_tf(s, w, act, xp, h_prev, h_out, rows, blocks, order) }
            }

            fn rnn_steps(
                w: &PackedMatrix,
                act: Activation,
                xp: &[f32],
                h0: &[f32],
                h_out: &mut [f32],
                steps: usize,
            ) {
                let s = token();
                // SAFETY: `s` exists, so the CPU has the features `rnn_steps_tf` enables.
                unsafe { rnn_steps_tf(s, w, act, xp, h0, h_out, steps) }
            }

            fn project_blocks(
                w: &PackedMatrix,
                x: &[f32],
                out: &mut [f32],
                rows: usize,
                blocks: Range<usize>,
                order: BlockOrder,
            ) {
                let s = token();
                // SAFETY: `s` exists, so the CPU has the features `project_tf` enables.
                unsafe { project_tf(s, w, x, out, rows, blocks, order) }
            }

            fn lstm_step(
                w: &PackedMatrix,
                xp: &[f32],
                h_prev: &[f32],
                c: &mut [f32],
                h_out: &mut [f32],
                rows: usize,
            ) {
                lstm_step_blocks(w, xp, h_prev, c, h_out, rows, 0..w.blocks(), BlockOrder::Ascending)
            }

            fn gru_step(
                w: &PackedMatrix,
                b_hn: &[f32],
                xp: &[f32],
                h_prev: &[f32],
                h_out: &mut [f32],
                rows: usize,
            ) {
                gru_step_blocks(w, b_hn, xp, h_prev, h_out, rows, 0..w.blocks(), BlockOrder::Ascending)
            }

            fn rnn_step(
                w: &PackedMatrix,
                act: Activation,
                xp: &[f32],
                h_prev: &[f32],
                h_out: &mut [f32],
                rows: usize,
            ) {
                rnn_step_blocks(w, act, xp, h_prev, h_out, rows, 0..w.blocks(), BlockOrder::Ascending)
            }

            fn project(w: &PackedMatrix, x: &[f32], out: &mut [f32], rows: usize) {
                project_blocks(w, x, out, rows, 0..w.blocks(), BlockOrder::Ascending)
            }

            fn input_projection(
                w: &PackedMatrix,
                bias: &[f32],
                x: &[f32],
                xp: &mut [f32],
                rows: usize,
            ) {
                let s = token();
                // SAFETY: `s` exists, so the CPU has the features `input_projection_tf` enables.
                unsafe { input_projection_tf(s, w, bias, x, xp, rows) }
            }

            fn sigmoid_slice(x: &[f32], y: &mut [f32]) {
                let s = token();
                // SAFETY: `s` exists, so the CPU has the features `sigmoid_tf` enables.
                unsafe { sigmoid_tf(s, x, y) }
            }

            fn tanh_slice(x: &[f32], y: &mut [f32]) {
                let s = token();
                // SAFETY: `s` exists, so the CPU has the features `tanh_tf` enables.
                unsafe { tanh_tf(s, x, y) }
            }

            fn has_denormals(x: &[f32]) -> bool {
                let s = token();
                // SAFETY: `s` exists, so the CPU has the features `has_denormals_tf` enables.
                unsafe { has_denormals_tf(s, x) }
            }

            pub(crate) static KERNELS: Kernels = Kernels {
                isa: $isa,
                lstm_step,
                gru_step,
                rnn_step,
                project,
                lstm_step_blocks,
                lstm_input_step_blocks,
                gru_step_blocks,
                gru_input_step_blocks,
                lstm_step_riding: LSTM_STEP_RIDING,
                gru_step_riding: GRU_STEP_RIDING,
                rnn_step_blocks,
                rnn_steps,
                project_blocks,
                input_projection,
                sigmoid: sigmoid_slice,
                tanh: tanh_slice,
                has_denormals,
            };
        }
    };
}

tier! {
    /// The portable tier (`wide::f32x8`; on SSE2 each vector takes two registers, so the tiles
    /// stay small).
    mod portable;
    isa: Isa::Portable;
    token: crate::simd::portable::Portable = Some(crate::simd::portable::Portable::new());
    features: [];
    lstm: (2, 2, 1, 0, 0, 0, 1, 4, 1, 1);
    gru: (2, 3, 1, 0, 0, 0, 1, 3, 1, 1);
    rnn: (4, 1, 1, 0, 0, 0, 1, 1, 1, 2, split_k: false);
    project: (4, 1, 1, 0, 0, 0, 1, 1, 1, 2);
    input_projection: (3, 1, 2, 2, 1024, 65536, few: (3, 1));
    riding: no_riding();
}

#[cfg(target_arch = "x86_64")]
tier! {
    /// The AVX2 + FMA tier: 8 lanes, 16 registers. One row covers a whole block per pass (up to
    /// 8 accumulators). LSTM row tiles: 3 rows x 2 gates (12 accumulators, the 3 rows held),
    /// and 4 rows x 1 gate for the rows 3 leaves; GRU, RNN and projection tiles: 4 (or 5) rows x
    /// 1 gate with the 2 weight vectors held. Measured in a sequential step loop here: the GRU's
    /// 4-row tiles ran H256 batch 8-64 ~15-25% faster than 2 rows x 3 gates; for the LSTM, 4-row
    /// 1-gate tiles were ~15% slower than 3 x 2 at H1024 batch 256.
    mod avx2;
    isa: Isa::Avx2;
    token: crate::simd::avx2::Avx2 = crate::simd::avx2::Avx2::new();
    features: [#[target_feature(enable = "avx2,fma")]];
    lstm: (3, 2, 2, 4, 1, 2, 1, 4, 2, 1);
    gru: (4, 1, 2, 5, 1, 2, 1, 3, 2, 1);
    rnn: (4, 1, 2, 5, 1, 2, 1, 1, 2, 4, split_k: false);
    project: (4, 1, 2, 5, 1, 2, 1, 1, 2, 4);
    input_projection: (6, 1, 2, 4, 1024, 65536, few: (6, 1));
    riding: no_riding();
}

/// The AVX-512 tier's tiles, for the hardware tier and its emulation alike (the emulation must
/// run the same tiles to test them). 32 registers: LSTM row tiles of 6 (and 5) rows x 4 gates,
/// GRU 8 (7) rows x 3 gates, RNN and projection 4 (5) rows x 4 blocks; a single row covers 2
/// blocks of every gate (LSTM, GRU) or 8 blocks (RNN, projection) per pass. Measured on a Xeon
/// (2 MiB L2), criterion step benches: RNN H1024xB4 4 rows x 4 blocks 75 GFLOP/s against 54 for
/// 8 x 1 (the projection of lstmp_b4, 4 rows of K = 1024: 24 -> 12 us a step). LSTM 6-row
/// tiles (24 accumulators, 4 weight vectors a `k` for 24 FMAs instead of 16) against 4, and
/// GRU 8-row tiles (24 accumulators) against 6: no faster on the Xeon of sessions 5-7 (model
/// 207, ~2.9 GHz), faster on that of session 10 (model 167, ~3.7 GHz; step probes, min of 6-8
/// alternated runs: LSTM H256 B64 206 -> 191 us, H1024 B256 12.9 -> 12.2 ms, H256 B16 55 -> 53;
/// GRU H256 B16 46.0 -> 43.5 us, B8 23.9 -> 21.9, H512 B16 214 -> 193, H1024 B32 1.50 -> 1.44
/// ms, H256 B64 the same, B12 (8 + 4 rows instead of 2 x 6) 33.0 -> 33.4; batch 4 takes the
/// 4-row tile either way).
macro_rules! avx512_tier {
    (
        $(#[$doc:meta])*
        mod $m:ident;
        token: $tok:ty = $new:expr;
        features: [$(#[$tf:meta])*];
    ) => {
        tier! {
            $(#[$doc])*
            mod $m;
            isa: Isa::Avx512;
            token: $tok = $new;
            features: [$(#[$tf])*];
            lstm: (6, 4, 1, 5, 4, 1, 1, 4, 1, 2);
            gru: (8, 3, 1, 7, 3, 1, 1, 3, 1, 2);
            // Sums in two halves: a 64-unit layer's single row has only 4 blocks, 4 chains.
            rnn: (4, 1, 1, 5, 1, 1, 2, 1, 1, 8, split_k: true);
            project: (4, 1, 1, 5, 1, 1, 4, 1, 1, 8);
            // Large calls in 8 x 3 tiles: 11 row and block pointers and 24 accumulators fit
            // the registers, 11 loads a `k` for 24 FMAs. The 12 x 2 tile's 14 pointers do
            // not fit: 6 are reloaded from the stack every `k`, 20 loads for 24 FMAs, and a
            // core with two load ports (Ice Lake-SP, session 18) runs it load-bound: kernel
            // probe, best of 7, 8192 x 4096 x 512 (lstm_big_b256) 102-104.5 -> 121.5-124.4
            // GFLOP/s, 8192 x 1024 x 256 (lstm_b64) 113-115 -> 124-125 (FMA peak 172).
            // Calls of few rows in 6 x 4 tiles: 10 pointers, and a 50-row call wastes 4 rows
            // instead of 10 (or 6). Measured, best of 5: 50 x 32 x 64 1.9 -> 1.7 us, 100 x 80
            // x 2048 ~10% faster than with 12 x 2.
            input_projection: (8, 3, 1, 8, 1024, 65536, few: (6, 4));
            // A single row's step carries a tile of the next layer's projection: one `k` of
            // the tile after every 2 of the step's (see `fused::ride`).
            riding: with_riding(2);
        }
    };
}

#[cfg(target_arch = "x86_64")]
avx512_tier! {
    /// The AVX-512 tier: 16 lanes (one vector per gate per block), 32 registers.
    mod avx512;
    token: crate::simd::avx512::Avx512 = crate::simd::avx512::Avx512::new();
    features: [#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,fma")]];
}

avx512_tier! {
    /// The AVX-512 tier's bodies and tiles on a scalar 16-lane emulation, so hosts without
    /// AVX-512 still test the 16-lane code paths (everything but the intrinsics themselves).
    mod emulated_avx512;
    token: crate::simd::emulated::Emulated16 = Some(crate::simd::emulated::Emulated16::new());
    features: [];
}
