//! `tuning::single_row_one_block` changes no result bit: a single LSTM row's step, read one
//! block at a time (the Zen 4 choice) or in its tier's groups of blocks (the AVX-512 tier's
//! `JB1 = 2`), gives the same bits on every tier, for the whole step, a range of its blocks in
//! either order, and the step with its input projection inside.
//!
//! The setting is process-wide, so this file is its own test binary with a single test: no
//! other test runs while it flips the setting.

mod common;

use common::{bits, Rng};
use proptest::prelude::*;
use recur_kernels::step::{block_units, BlockOrder};
use recur_kernels::{tuning, Kernels, PackedMatrix};

/// `(h, c)` of every single-row LSTM kernel of `k` over `blocks` in `order`, with
/// [`tuning::single_row_one_block`] set to `one_block`.
#[allow(clippy::too_many_arguments)]
fn run(
    k: &Kernels,
    one_block: bool,
    (w_ih, w_ih_gates, bias, x): (&PackedMatrix, &PackedMatrix, &[f32], &[f32]),
    w_hh: &PackedMatrix,
    h_prev: &[f32],
    c0: &[f32],
    blocks: std::ops::Range<usize>,
    order: BlockOrder,
) -> Vec<Vec<u32>> {
    tuning::set_single_row_one_block(one_block);
    assert_eq!(tuning::single_row_one_block(), one_block);
    let h = c0.len();
    let units = block_units(w_hh, blocks.clone());
    let nu = units.len();
    let mut xp = vec![0.0; 4 * h];
    (k.input_projection)(w_ih, bias, x, &mut xp, 1);

    let mut out = Vec::new();
    // The whole step.
    let (mut c, mut h_out) = (c0.to_vec(), vec![0.0; h]);
    (k.lstm_step)(w_hh, &xp, h_prev, &mut c, &mut h_out, 1);
    out.extend([bits(&h_out), bits(&c)]);
    // A range of blocks in `order`.
    let (mut c, mut h_out) = (c0[units.clone()].to_vec(), vec![0.0; nu]);
    (k.lstm_step_blocks)(
        w_hh,
        &xp,
        h_prev,
        &mut c,
        &mut h_out,
        1,
        blocks.clone(),
        order,
    );
    out.extend([bits(&h_out), bits(&c)]);
    // The same with the input projection inside.
    let (mut c, mut h_out) = (c0[units].to_vec(), vec![0.0; nu]);
    (k.lstm_input_step_blocks)(
        (w_ih_gates, bias, x),
        w_hh,
        h_prev,
        &mut c,
        &mut h_out,
        1,
        blocks,
        order,
    );
    out.extend([bits(&h_out), bits(&c)]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn one_block_at_a_time_gives_the_same_bits(
        h in 1usize..=200,
        kk in 1usize..=96,
        i in 1usize..=40,
        first in 0usize..=12,
        descending in any::<bool>(),
        nan_at in proptest::option::of(0usize..96),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let w_ih = rng.vec(4 * h * i, 0.5);
        let bias = rng.vec(4 * h, 0.5);
        let x = rng.vec(i, 1.0);
        let w_hh = PackedMatrix::pack(&rng.vec(4 * h * kk, 2.0 / (kk as f32).sqrt()), 4, h, kk);
        let mut h_prev = rng.vec(kk, 1.0);
        if let Some(at) = nan_at.filter(|&at| at < kk) {
            h_prev[at] = f32::NAN;
        }
        let c0 = rng.vec(h, 2.0);
        let nb = w_hh.blocks();
        let blocks = first.min(nb - 1)..nb;
        let order = if descending { BlockOrder::Descending } else { BlockOrder::Ascending };
        let (w_ih_plain, w_ih_gates) =
            (PackedMatrix::pack(&w_ih, 1, 4 * h, i), PackedMatrix::pack(&w_ih, 4, h, i));
        let input = (&w_ih_plain, &w_ih_gates, &bias[..], &x[..]);
        for (tier, k) in common::tiers() {
            let grouped = run(k, false, input, &w_hh, &h_prev, &c0, blocks.clone(), order);
            let one = run(k, true, input, &w_hh, &h_prev, &c0, blocks.clone(), order);
            for (what, (a, b)) in
                ["step h", "step c", "blocks h", "blocks c", "input step h", "input step c"]
                    .iter()
                    .zip(grouped.iter().zip(&one))
            {
                prop_assert_eq!(a, b, "[{}] {}: H {} K {} I {} blocks {:?}", tier, what, h, kk, i, blocks);
            }
        }
    }
}
