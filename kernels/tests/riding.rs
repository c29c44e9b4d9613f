//! The single-row steps with a rider (`lstm_step_riding`, `gru_step_riding`) on every tier that
//! has them: the step's `h` (and `c`) are the bits of the step without a rider, the rider's
//! columns the bits of the tier's input projection of its rows (and within the scalar
//! reference's bound), and nothing else of the rider's output is touched, for any sizes of
//! the step and of the rider (tiles that end inside a block, inside the step's last `E` of a
//! block, or after the step), any block ranges and order, NaN inputs included.

mod common;

use common::{bits, gamma, Rng};
use proptest::prelude::*;
use recur_kernels::reference::reference_input_projection;
use recur_kernels::step::{block_units, transpose_rider_rows, BlockOrder, Rider, RIDER_ROWS};
use recur_kernels::{Kernels, PackedMatrix, BLOCK};

/// A case: the step's units `h` and width `k`, the rider's outputs `n` and width `kr`, the
/// step's blocks `(first, count)` and the rider's, the order, a NaN's place, the seed.
#[derive(Debug, Clone)]
struct Case {
    h: usize,
    k: usize,
    n: usize,
    kr: usize,
    step_blocks: (usize, usize),
    rider_blocks: (usize, usize),
    /// The rider's output stored block-major (else row-major).
    block_major: bool,
    descending: bool,
    nan: Option<usize>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let h = prop_oneof![4 => 1usize..=80, 1 => prop::sample::select(vec![17usize, 512, 1000])];
    let kr = prop_oneof![4 => 1usize..=160, 1 => prop::sample::select(vec![512usize, 1030])];
    (
        h,
        1usize..=96,
        1usize..=150,
        kr,
        (0usize..=8, 0usize..=80),
        (0usize..=8, 0usize..=12),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0usize..40),
        any::<u64>(),
    )
        .prop_map(
            |(h, k, n, kr, step_blocks, rider_blocks, block_major, descending, nan, seed)| Case {
                h,
                k,
                n,
                kr,
                step_blocks,
                rider_blocks,
                block_major,
                descending,
                nan,
                seed,
            },
        )
}

/// `(first, count)` clamped to `0..blocks`.
fn range((first, count): (usize, usize), blocks: usize) -> std::ops::Range<usize> {
    let b0 = first.min(blocks);
    b0..(b0 + count).min(blocks)
}

/// The rider's inputs and what its columns must hold, and the sentinel-filled output.
struct RiderCase {
    w_ih: PackedMatrix,
    bias: Vec<f32>,
    x_t: Vec<f32>,
    /// The tier's input projection of the rows, `(RIDER_ROWS, n)`.
    want: Vec<f32>,
    blocks: std::ops::Range<usize>,
}

const SENTINEL: f32 = -7.25e33;

fn rider_case(k: &Kernels, c: &Case, rng: &mut Rng) -> RiderCase {
    let (n, kr) = (c.n, c.kr);
    let w = rng.vec(n * kr, 1.0 / (kr as f32).sqrt());
    let bias = rng.vec(n, 0.5);
    let mut x = rng.vec(RIDER_ROWS * kr, 1.0);
    if let Some(at) = c.nan.filter(|&at| at < RIDER_ROWS) {
        x[at * kr + kr / 2] = f32::NAN;
    }
    let w_ih = PackedMatrix::pack(&w, 1, n, kr);
    let mut want = vec![0.0; RIDER_ROWS * n];
    (k.input_projection)(&w_ih, &bias, &x, &mut want, RIDER_ROWS);
    // The projection itself against the scalar reference (summed in another order, so within
    // its bound, not bit for bit).
    let mut reference = vec![0.0; RIDER_ROWS * n];
    reference_input_projection(&w, n, kr, &bias, &x, &mut reference, RIDER_ROWS);
    for r in 0..RIDER_ROWS {
        for o in 0..n {
            let (got, exp) = (want[r * n + o], reference[r * n + o]);
            let mag: f64 = (0..kr)
                .map(|j| (w[o * kr + j] as f64 * x[r * kr + j] as f64).abs())
                .sum::<f64>()
                + bias[o].abs() as f64;
            let ok = if exp.is_nan() {
                got.is_nan()
            } else {
                ((got - exp) as f64).abs() <= 2.0 * gamma(kr + 1) * mag
            };
            assert!(ok, "projection row {r} col {o}: {got} vs reference {exp}");
        }
    }
    let mut x_t = vec![0.0; RIDER_ROWS * kr];
    transpose_rider_rows(&x, kr, &mut x_t);
    let blocks = range(c.rider_blocks, w_ih.blocks());
    RiderCase {
        w_ih,
        bias,
        x_t,
        want,
        blocks,
    }
}

/// Runs `step` with the rider of `rc` writing into a sentinel-filled output in `c`'s layout,
/// and returns that output as `(RIDER_ROWS, n)` rows (row-major as is; block-major read back,
/// after checking that its padding past `n` and its rows outside the tile stayed untouched).
fn ride(c: &Case, rc: &RiderCase, step: impl FnOnce(Rider<'_>)) -> Vec<f32> {
    let n = c.n;
    let blocks = rc.w_ih.blocks();
    if !c.block_major {
        let mut out = vec![SENTINEL; RIDER_ROWS * n];
        let from = (rc.blocks.start * BLOCK).min(out.len());
        step(Rider {
            w_ih: &rc.w_ih,
            bias: &rc.bias,
            x: &rc.x_t,
            xp: &mut out[from..],
            layout: (n, BLOCK),
            blocks: rc.blocks.clone(),
        });
        return out;
    }
    // Block-major over `m` rows, the tile from row `row0`.
    let (m, row0) = (RIDER_ROWS + 3, 2);
    let mut store = vec![SENTINEL; blocks * m * BLOCK];
    let from = ((rc.blocks.start * m + row0) * BLOCK).min(store.len());
    step(Rider {
        w_ih: &rc.w_ih,
        bias: &rc.bias,
        x: &rc.x_t,
        xp: &mut store[from..],
        layout: (BLOCK, m * BLOCK),
        blocks: rc.blocks.clone(),
    });
    let mut out = vec![SENTINEL; RIDER_ROWS * n];
    for b in 0..blocks {
        for r in 0..m {
            let cell = &store[(b * m + r) * BLOCK..][..BLOCK];
            let tile_row = r.checked_sub(row0).filter(|&t| t < RIDER_ROWS);
            for (i, &v) in cell.iter().enumerate() {
                let col = b * BLOCK + i;
                match tile_row {
                    Some(t) if col < n => out[t * n + col] = v,
                    _ => assert_eq!(v, SENTINEL, "block {b} row {r} lane {i} written"),
                }
            }
        }
    }
    out
}

/// The rider's output: its blocks' columns equal the projection's, every other one untouched.
fn check_rider(tier: &str, what: &str, rc: &RiderCase, n: usize, got: &[f32]) {
    let cols = (rc.blocks.start * BLOCK).min(n)..(rc.blocks.end * BLOCK).min(n);
    for r in 0..RIDER_ROWS {
        let row = &got[r * n..(r + 1) * n];
        let want = &rc.want[r * n..(r + 1) * n];
        assert_eq!(
            bits(&row[cols.clone()]),
            bits(&want[cols.clone()]),
            "{tier} {what}: rider row {r}, columns {cols:?}"
        );
        assert!(
            row[..cols.start]
                .iter()
                .chain(&row[cols.end..])
                .all(|&v| v == SENTINEL),
            "{tier} {what}: rider row {r} wrote outside columns {cols:?}"
        );
    }
}

fn lstm_check(tier: &str, k: &Kernels, c: &Case) {
    let Some(riding) = k.lstm_step_riding else {
        return;
    };
    let mut rng = Rng(c.seed);
    let (h, kk) = (c.h, c.k);
    let w_hh = PackedMatrix::pack(&rng.vec(4 * h * kk, 1.0 / (kk as f32).sqrt()), 4, h, kk);
    let xp = rng.vec(4 * h, 1.0);
    let mut h_prev = rng.vec(kk, 1.0);
    if let Some(at) = c.nan.filter(|&at| at >= RIDER_ROWS) {
        h_prev[at % kk] = f32::NAN;
    }
    let c0 = rng.vec(h, 1.0);
    let rc = rider_case(k, c, &mut rng);
    let blocks = range(c.step_blocks, w_hh.blocks());
    let units = block_units(&w_hh, blocks.clone());
    let order = if c.descending {
        BlockOrder::Descending
    } else {
        BlockOrder::Ascending
    };

    let (mut c_want, mut h_want) = (c0[units.clone()].to_vec(), vec![0.0; units.len()]);
    let sb = blocks.clone();
    (k.lstm_step_blocks)(&w_hh, &xp, &h_prev, &mut c_want, &mut h_want, 1, sb, order);

    let (mut c_got, mut h_got) = (c0[units.clone()].to_vec(), vec![0.0; units.len()]);
    let out = ride(c, &rc, |rider| {
        riding(
            &w_hh, &xp, &h_prev, &mut c_got, &mut h_got, blocks, order, rider,
        )
    });
    assert_eq!(bits(&h_got), bits(&h_want), "{tier} lstm_step_riding: h");
    assert_eq!(bits(&c_got), bits(&c_want), "{tier} lstm_step_riding: c");
    check_rider(tier, "lstm_step_riding", &rc, c.n, &out);
}

fn gru_check(tier: &str, k: &Kernels, c: &Case) {
    let Some(riding) = k.gru_step_riding else {
        return;
    };
    let mut rng = Rng(c.seed ^ 0x5eed);
    let h = c.h;
    let w_hh = PackedMatrix::pack(&rng.vec(3 * h * h, 1.0 / (h as f32).sqrt()), 3, h, h);
    let b_hn = rng.vec(h, 0.5);
    let xp = rng.vec(3 * h, 1.0);
    let mut h_prev = rng.vec(h, 1.0);
    if let Some(at) = c.nan.filter(|&at| at >= RIDER_ROWS) {
        h_prev[at % h] = f32::NAN;
    }
    let rc = rider_case(k, c, &mut rng);
    let blocks = range(c.step_blocks, w_hh.blocks());
    let nu = block_units(&w_hh, blocks.clone()).len();
    let order = if c.descending {
        BlockOrder::Descending
    } else {
        BlockOrder::Ascending
    };

    let mut h_want = vec![0.0; nu];
    let sb = blocks.clone();
    (k.gru_step_blocks)(&w_hh, &b_hn, &xp, &h_prev, &mut h_want, 1, sb, order);

    let mut h_got = vec![0.0; nu];
    let out = ride(c, &rc, |rider| {
        riding(&w_hh, &b_hn, &xp, &h_prev, &mut h_got, blocks, order, rider)
    });
    assert_eq!(bits(&h_got), bits(&h_want), "{tier} gru_step_riding: h");
    check_rider(tier, "gru_step_riding", &rc, c.n, &out);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Riding changes neither the step's bits nor the projection's, on every tier with riders.
    #[test]
    fn riding_steps_are_the_step_and_the_projection(c in case()) {
        for (tier, k) in common::tiers() {
            lstm_check(tier, k, &c);
            gru_check(tier, k, &c);
        }
    }
}

/// The tiers this test covers: the AVX-512 bodies have riders (the emulated run on every host,
/// the real tier where the CPU has it); a tier whose vectors are narrower than a block has none.
#[test]
fn the_16_lane_tiers_have_riders() {
    let tiers = common::tiers();
    let emulated = tiers
        .iter()
        .find(|(name, _)| *name == "avx512-emulated")
        .expect("the emulated AVX-512 tier always runs");
    assert!(emulated.1.lstm_step_riding.is_some() && emulated.1.gru_step_riding.is_some());
    for (name, k) in tiers {
        let sixteen = name.starts_with("avx512");
        assert_eq!(k.lstm_step_riding.is_some(), sixteen, "{name}");
        assert_eq!(k.gru_step_riding.is_some(), sixteen, "{name}");
    }
}

/// `transpose_rider_rows` puts row `r`'s `x[k]` at `k * RIDER_ROWS + r`.
#[test]
fn rider_rows_are_k_major() {
    let k = 5;
    let rows: Vec<f32> = (0..RIDER_ROWS * k).map(|v| v as f32).collect();
    let mut out = vec![0.0; RIDER_ROWS * k];
    transpose_rider_rows(&rows, k, &mut out);
    for r in 0..RIDER_ROWS {
        for kk in 0..k {
            assert_eq!(out[kk * RIDER_ROWS + r], rows[r * k + kk]);
        }
    }
}
