//! The input projection of every tier (`xp = x W_ihᵀ + bias`) against its scalar reference twin
//! on random shapes straddling the register tiles (rows around 3/6/12, and 128, where a call
//! changes from the tile for few rows to the large one; outputs around the 16-column blocks
//! and pairs of blocks) and the `k` chunks (256), and its row independence:
//! a row's result is the same bits whatever the other rows of the call (SPEC §4).
//!
//! # Tolerance
//!
//! Both sides compute `Σ_k w x` in f32 with one rounding per term (the kernel with FMA, in its
//! packed order; the reference with separate multiply and add), then add the bias: each is
//! within `γ(K+2) (|b| + Σ|w x|)` of the exact value (`γ(n) = n u / (1 - n u)`, `u = 2^-24`),
//! so they differ by at most twice that.

mod common;

use common::{bits, gamma, Rng};

use proptest::prelude::*;
use recur_kernels::reference::reference_input_projection;
use recur_kernels::{Kernels, PackedMatrix};

#[derive(Clone, Debug)]
struct Case {
    rows: usize,
    n: usize,
    k: usize,
    scale: f32,
    seed: u64,
}

struct Problem {
    w: Vec<f32>,
    packed: PackedMatrix,
    bias: Vec<f32>,
    x: Vec<f32>,
}

impl Case {
    fn problem(&self) -> Problem {
        let mut rng = Rng(self.seed);
        let w = rng.vec(self.n * self.k, self.scale / (self.k as f32).sqrt());
        let bias = rng.vec(self.n, self.scale);
        let x = rng.vec(self.rows * self.k, self.scale);
        let packed = PackedMatrix::pack(&w, 1, self.n, self.k);
        Problem { w, packed, bias, x }
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            4 => 1usize..=14,
            1 => prop::sample::select(vec![23usize, 24, 25, 35, 36, 37, 95, 96, 97, 127, 128, 129, 130]),
        ],
        prop_oneof![
            3 => 1usize..=70,
            1 => prop::sample::select(vec![15usize, 16, 17, 31, 32, 33, 47, 48, 49, 192]),
        ],
        prop_oneof![
            3 => 0usize..=70,
            1 => prop::sample::select(vec![255usize, 256, 257, 300, 513]),
        ],
        prop::sample::select(vec![0.1f32, 1.0, 30.0]),
        any::<u64>(),
    )
        .prop_map(|(rows, n, k, scale, seed)| Case {
            rows,
            n,
            k,
            scale,
            seed,
        })
}

fn check_against_reference(tier: &str, kern: &Kernels, c: &Case) {
    let p = c.problem();
    let (rows, n, k) = (c.rows, c.n, c.k);
    let mut want = vec![0.0f32; rows * n];
    reference_input_projection(&p.w, n, k, &p.bias, &p.x, &mut want, rows);
    let mut got = vec![f32::NAN; rows * n];
    (kern.input_projection)(&p.packed, &p.bias, &p.x, &mut got, rows);
    for r in 0..rows {
        for j in 0..n {
            let terms: f64 = (0..k)
                .map(|q| (f64::from(p.w[j * k + q]) * f64::from(p.x[r * k + q])).abs())
                .sum();
            let bound = 2.0 * gamma(k + 2) * (terms + f64::from(p.bias[j]).abs()) * 1.01;
            let (g, w) = (got[r * n + j], want[r * n + j]);
            let diff = (f64::from(g) - f64::from(w)).abs();
            assert!(
                diff <= bound,
                "[{tier}] xp[{r}][{j}] = {g:e}, reference {w:e}: |diff| {diff:e} > {bound:e} ({c:?})"
            );
        }
    }
}

/// Each row alone, the rows in two calls split at `split`, and with a NaN in another row: the
/// same bits as in one call of all rows.
fn check_row_independence(tier: &str, kern: &Kernels, c: &Case, split: usize, nan_row: usize) {
    let p = c.problem();
    let (rows, n, k) = (c.rows, c.n, c.k);
    let mut whole = vec![0.0f32; rows * n];
    (kern.input_projection)(&p.packed, &p.bias, &p.x, &mut whole, rows);
    for r in 0..rows {
        let mut one = vec![0.0f32; n];
        (kern.input_projection)(&p.packed, &p.bias, &p.x[r * k..], &mut one, 1);
        assert_eq!(
            bits(&one),
            bits(&whole[r * n..(r + 1) * n]),
            "[{tier}] row {r} alone vs in {rows} rows ({c:?})"
        );
    }
    let split = split % (rows + 1);
    let mut parts = vec![0.0f32; rows * n];
    let (head, tail) = parts.split_at_mut(split * n);
    (kern.input_projection)(&p.packed, &p.bias, &p.x, head, split);
    (kern.input_projection)(&p.packed, &p.bias, &p.x[split * k..], tail, rows - split);
    assert_eq!(
        bits(&parts),
        bits(&whole),
        "[{tier}] rows split at {split} ({c:?})"
    );
    if k > 0 {
        let nan_row = nan_row % rows;
        let mut x = p.x.clone();
        x[nan_row * k + k / 2] = f32::NAN;
        let mut dirty = vec![0.0f32; rows * n];
        (kern.input_projection)(&p.packed, &p.bias, &x, &mut dirty, rows);
        for r in (0..rows).filter(|&r| r != nan_row) {
            assert_eq!(
                bits(&dirty[r * n..(r + 1) * n]),
                bits(&whole[r * n..(r + 1) * n]),
                "[{tier}] a NaN in row {nan_row} changed row {r} ({c:?})"
            );
        }
        assert!(
            dirty[nan_row * n..(nan_row + 1) * n]
                .iter()
                .all(|v| v.is_nan()),
            "[{tier}] NaN did not propagate ({c:?})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn input_projection_matches_reference(c in case()) {
        for (tier, k) in common::tiers() {
            check_against_reference(tier, k, &c);
        }
    }

    #[test]
    fn input_projection_rows_are_independent(c in case(), split in 0usize..200, nan_row in 0usize..200) {
        for (tier, k) in common::tiers() {
            check_row_independence(tier, k, &c, split, nan_row);
        }
    }
}

/// `xp` is overwritten, never read first: NaN or stale values in it do not leak into the result.
#[test]
fn input_projection_overwrites_its_output() {
    let c = Case {
        rows: 13,
        n: 40,
        k: 300,
        scale: 1.0,
        seed: 7,
    };
    let p = c.problem();
    for (tier, kern) in common::tiers() {
        let mut clean = vec![0.0f32; c.rows * c.n];
        (kern.input_projection)(&p.packed, &p.bias, &p.x, &mut clean, c.rows);
        let mut stale = vec![f32::NAN; c.rows * c.n];
        (kern.input_projection)(&p.packed, &p.bias, &p.x, &mut stale, c.rows);
        assert_eq!(bits(&clean), bits(&stale), "[{tier}]");
    }
}

/// `K = 0`: `xp` is the bias.
#[test]
fn input_projection_of_no_inputs_is_the_bias() {
    let bias = [1.0f32, -2.0, 3.5];
    let packed = PackedMatrix::pack(&[], 1, 3, 0);
    for (tier, kern) in common::tiers() {
        let mut xp = vec![f32::NAN; 6];
        (kern.input_projection)(&packed, &bias, &[], &mut xp, 2);
        assert_eq!(xp, [1.0, -2.0, 3.5, 1.0, -2.0, 3.5], "[{tier}]");
    }
}
