//! Every tier's step kernels against their scalar `reference_*` twins, on random shapes that
//! straddle the block (16) and row-tile edges, and the bit-identity properties of SPEC §4.
//!
//! # Tolerance
//!
//! The kernels and the references compute in f32 but differ in rounding: the kernels accumulate
//! `W h` with FMA (one rounding per term) in the packed order and use the fast activations; the
//! references multiply and add separately and call libm. Neither is exact, so each output is
//! compared with an error bound derived per element from both sides' error analysis, not a
//! fixed epsilon:
//!
//! - pre-activation `xp + Σ_k w_k h_k`: each side is within `γ(K+2) (|xp| + Σ|w_k h_k|)` of the
//!   exact sum (`γ(n) = n u / (1 - n u)`, `u = 2^-24`; recursive summation of rounded products);
//! - activations: a fast one is within `SIGMOID_MAX_ULP` / `TANH_MAX_ULP` (`tests/common`,
//!   the bounds `tests/activation.rs` holds them to), a reference within `REFERENCE_MAX_ULP`
//!   except below `f32::MIN_POSITIVE`; their derivatives are at most 1/4 (σ) and 1 (tanh);
//! - every further `+`, `*` rounds once on each side (1 ULP of the result each);
//! - every value a kernel stores (`h`, `c`, the projection's output) is flushed to `±0` where it
//!   would be denormal (`recur_kernels::denormal`), which the references do not do: up to
//!   `f32::MIN_POSITIVE` more on each stored value.
//!
//! The bound propagates through the cell formulas with those rules (first order plus the
//! cross terms). With weights of moderate size it comes to a few 1e-7 absolute, so the test
//! is far tighter than SPEC §4's 1e-4; with large weights it grows with `Σ|w h|`, as the true
//! disagreement of two correct f32 evaluations does.

mod common;

use common::{bits, gamma, Rng, REFERENCE_MAX_ULP, SIGMOID_MAX_ULP, TANH_MAX_ULP};

use proptest::prelude::*;
use recur_kernels::denormal::has_denormals;
use recur_kernels::reference::{
    reference_gru_step, reference_lstm_step, reference_matvec, reference_rnn_step,
    reference_rnn_steps,
};
use recur_kernels::step::{block_units, BlockOrder};
use recur_kernels::{Activation, Kernels, PackedMatrix};

fn ulp(x: f64) -> f64 {
    let a = x.abs().max(f64::from(f32::MIN_POSITIVE));
    let exponent = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    2f64.powi(exponent - 23)
}

/// A value (from the reference) with the bound of |kernel - reference| on it.
#[derive(Clone, Copy, Debug)]
struct E {
    v: f64,
    e: f64,
}

impl E {
    fn exact(v: f32) -> E {
        E {
            v: f64::from(v),
            e: 0.0,
        }
    }
    fn mag(self) -> f64 {
        self.v.abs() + self.e
    }
    fn add(self, o: E) -> E {
        let v = self.v + o.v;
        E {
            v,
            e: self.e + o.e + 2.0 * ulp(v),
        }
    }
    fn mul(self, o: E) -> E {
        let v = self.v * o.v;
        E {
            v,
            e: self.mag() * o.e + o.mag() * self.e + 2.0 * ulp(v),
        }
    }
    fn sigmoid(self) -> E {
        let v = 1.0 / (1.0 + (-self.v).exp());
        E {
            v,
            e: self.e / 4.0
                + (SIGMOID_MAX_ULP + REFERENCE_MAX_ULP) * ulp(v)
                + f64::from(f32::MIN_POSITIVE),
        }
    }
    fn tanh(self) -> E {
        let v = self.v.tanh();
        E {
            v,
            e: self.e + (TANH_MAX_ULP + REFERENCE_MAX_ULP) * ulp(v) + f64::from(f32::MIN_POSITIVE),
        }
    }
    fn relu(self) -> E {
        E {
            v: self.v.max(0.0),
            e: self.e,
        }
    }
}

/// Pre-activations `xp + W h` of every gate row with their bounds: `w` is `(m, k)`.
fn pre(w: &[f32], m: usize, k: usize, h: &[f32], xp: &[f32]) -> Vec<E> {
    (0..m)
        .map(|i| {
            let terms: f64 = (0..k)
                .map(|j| f64::from(w[i * k + j]).abs() * f64::from(h[j]).abs())
                .sum();
            let sum: f64 = (0..k)
                .map(|j| f64::from(w[i * k + j]) * f64::from(h[j]))
                .sum();
            let x = xp.get(i).copied().unwrap_or(0.0);
            let v = f64::from(x) + sum;
            E {
                v,
                e: 2.0 * gamma(k + 2) * (terms + f64::from(x).abs()) * 1.01,
            }
        })
        .collect()
}

/// A random problem: sizes, weights (PyTorch layout and packed), inputs.
#[derive(Debug, Clone)]
struct Case {
    h: usize,
    k: usize,
    rows: usize,
    w_scale: f32,
    x_scale: f32,
    seed: u64,
}

/// Hidden sizes around the block edges (16 units) and the edges of the groups of blocks a single
/// row runs at once (up to 8 blocks, 128 units), and others.
fn hidden() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => prop::sample::select(vec![
            1usize, 8, 15, 16, 17, 24, 31, 32, 33, 47, 48, 49, 64, 65
        ]),
        4 => 1usize..=70,
        1 => prop::sample::select(vec![127usize, 128, 129, 143, 144, 145]),
    ]
}

/// Weight and input magnitudes: typical, and large enough to saturate every gate.
fn scale() -> impl Strategy<Value = f32> {
    prop::sample::select(vec![0.1f32, 0.5, 1.0, 4.0, 30.0])
}

fn case(square: bool) -> impl Strategy<Value = Case> {
    (
        hidden(),
        1usize..=70,
        prop_oneof![4 => 1usize..=9, 1 => 10usize..=20],
        scale(),
        scale(),
        any::<u64>(),
    )
        .prop_map(move |(h, k, rows, w_scale, x_scale, seed)| Case {
            h,
            k: if square { h } else { k },
            rows,
            w_scale,
            x_scale,
            seed,
        })
}

fn assert_close(tier: &str, what: &str, c: &Case, got: &[f32], want: &[E], reference: &[f32]) {
    for (i, ((&g, w), &r)) in got.iter().zip(want).zip(reference).enumerate() {
        let diff = (f64::from(g) - f64::from(r)).abs();
        // The kernel's store flushes a denormal; the reference keeps it.
        let bound = w.e + f64::from(f32::MIN_POSITIVE);
        assert!(
            diff <= bound,
            "[{tier}] {what}[{i}] = {g:e}, reference {r:e}: |diff| {diff:e} > bound {bound:e} ({c:?})"
        );
        assert!(
            !g.is_subnormal(),
            "[{tier}] {what}[{i}] = {g:e} was stored denormal ({c:?})"
        );
    }
}

fn lstm_check(tier: &str, k: &Kernels, c: &Case) {
    let (h, kk, rows) = (c.h, c.k, c.rows);
    let mut rng = Rng(c.seed);
    let w = rng.vec(4 * h * kk, c.w_scale / (kk as f32).sqrt().max(1.0) * 2.0);
    let xp = rng.vec(rows * 4 * h, c.x_scale);
    let h_prev = rng.vec(rows * kk, c.x_scale);
    let c0 = rng.vec(rows * h, c.x_scale);
    let packed = PackedMatrix::pack(&w, 4, h, kk);

    let (mut c_ref, mut h_ref) = (c0.clone(), vec![0.0; rows * h]);
    reference_lstm_step(&w, h, kk, &xp, &h_prev, &mut c_ref, &mut h_ref, rows);
    let (mut c_got, mut h_got) = (c0.clone(), vec![0.0; rows * h]);
    (k.lstm_step)(&packed, &xp, &h_prev, &mut c_got, &mut h_got, rows);

    let (mut c_want, mut h_want) = (Vec::new(), Vec::new());
    for r in 0..rows {
        let p = pre(
            &w,
            4 * h,
            kk,
            &h_prev[r * kk..(r + 1) * kk],
            &xp[r * 4 * h..(r + 1) * 4 * h],
        );
        for u in 0..h {
            let (i, f, g, o) = (
                p[u].sigmoid(),
                p[h + u].sigmoid(),
                p[2 * h + u].tanh(),
                p[3 * h + u].sigmoid(),
            );
            let cn = f.mul(E::exact(c0[r * h + u])).add(i.mul(g));
            c_want.push(cn);
            h_want.push(o.mul(cn.tanh()));
        }
    }
    assert_close(tier, "lstm c", c, &c_got, &c_want, &c_ref);
    assert_close(tier, "lstm h", c, &h_got, &h_want, &h_ref);
}

fn gru_check(tier: &str, k: &Kernels, c: &Case) {
    let (h, rows) = (c.h, c.rows);
    let mut rng = Rng(c.seed);
    let w = rng.vec(3 * h * h, c.w_scale / (h as f32).sqrt().max(1.0) * 2.0);
    let b_hn = rng.vec(h, c.x_scale);
    let xp = rng.vec(rows * 3 * h, c.x_scale);
    let h_prev = rng.vec(rows * h, c.x_scale);
    let packed = PackedMatrix::pack(&w, 3, h, h);

    let mut h_ref = vec![0.0; rows * h];
    reference_gru_step(&w, h, &b_hn, &xp, &h_prev, &mut h_ref, rows);
    let mut h_got = vec![0.0; rows * h];
    (k.gru_step)(&packed, &b_hn, &xp, &h_prev, &mut h_got, rows);

    let mut want = Vec::new();
    for r in 0..rows {
        let hp = &h_prev[r * h..(r + 1) * h];
        let x = &xp[r * 3 * h..(r + 1) * 3 * h];
        let p = pre(&w, 3 * h, h, hp, &[]);
        for u in 0..h {
            let rg = p[u].add(E::exact(x[u])).sigmoid();
            let z = p[h + u].add(E::exact(x[h + u])).sigmoid();
            let n = E::exact(x[2 * h + u])
                .add(rg.mul(p[2 * h + u].add(E::exact(b_hn[u]))))
                .tanh();
            let one_minus_z = E {
                v: 1.0 - z.v,
                e: z.e + 2.0 * ulp(1.0 - z.v),
            };
            want.push(one_minus_z.mul(n).add(z.mul(E::exact(hp[u]))));
        }
    }
    assert_close(tier, "gru h", c, &h_got, &want, &h_ref);
}

fn rnn_check(tier: &str, k: &Kernels, c: &Case, act: Activation) {
    let (h, rows) = (c.h, c.rows);
    let mut rng = Rng(c.seed);
    let w = rng.vec(h * h, c.w_scale / (h as f32).sqrt().max(1.0) * 2.0);
    let xp = rng.vec(rows * h, c.x_scale);
    let h_prev = rng.vec(rows * h, c.x_scale);
    let packed = PackedMatrix::pack(&w, 1, h, h);

    let mut h_ref = vec![0.0; rows * h];
    reference_rnn_step(&w, h, act, &xp, &h_prev, &mut h_ref, rows);
    let mut h_got = vec![0.0; rows * h];
    (k.rnn_step)(&packed, act, &xp, &h_prev, &mut h_got, rows);

    let mut want = Vec::new();
    for r in 0..rows {
        let p = pre(
            &w,
            h,
            h,
            &h_prev[r * h..(r + 1) * h],
            &xp[r * h..(r + 1) * h],
        );
        want.extend(p.iter().map(|p| match act {
            Activation::Tanh => p.tanh(),
            Activation::Relu => p.relu(),
        }));
    }
    assert_close(tier, "rnn h", c, &h_got, &want, &h_ref);
}

/// The multi-step RNN kernel: the same bits as its steps one call each (with their block
/// orders), and each step within the bound of the reference step from the same state; with one
/// step, the reference twin's result too.
fn rnn_steps_check(tier: &str, k: &Kernels, c: &Case, act: Activation, steps: usize) {
    let h = c.h;
    let mut rng = Rng(c.seed);
    let w = rng.vec(h * h, c.w_scale / (h as f32).sqrt().max(1.0) * 2.0);
    let xp = rng.vec(steps * h, c.x_scale);
    let h0 = rng.vec(h, c.x_scale);
    let packed = PackedMatrix::pack(&w, 1, h, h);
    let mut got = vec![0.0; steps * h];
    (k.rnn_steps)(&packed, act, &xp, &h0, &mut got, steps);

    let mut one = vec![0.0; steps * h];
    for s in 0..steps {
        let (done, rest) = one.split_at_mut(s * h);
        let prev = if s == 0 {
            &h0[..]
        } else {
            &done[(s - 1) * h..]
        };
        let (blocks, order) = (0..packed.blocks(), BlockOrder::for_step(s));
        (k.rnn_step_blocks)(
            &packed,
            act,
            &xp[s * h..],
            prev,
            &mut rest[..h],
            1,
            blocks,
            order,
        );
    }
    assert_eq!(
        bits(&got),
        bits(&one),
        "[{tier}] rnn_steps vs {steps} single steps ({c:?})"
    );

    let mut reference = vec![0.0; steps * h];
    reference_rnn_steps(&w, h, act, &xp, &h0, &mut reference, steps);
    for s in 0..steps {
        let prev = if s == 0 {
            &h0[..]
        } else {
            &got[(s - 1) * h..s * h]
        };
        let mut h_ref = vec![0.0; h];
        reference_rnn_step(&w, h, act, &xp[s * h..], prev, &mut h_ref, 1);
        if s == 0 {
            assert_eq!(bits(&h_ref), bits(&reference[..h]), "reference_rnn_steps");
        }
        let want: Vec<E> = pre(&w, h, h, prev, &xp[s * h..(s + 1) * h])
            .iter()
            .map(|p| match act {
                Activation::Tanh => p.tanh(),
                Activation::Relu => p.relu(),
            })
            .collect();
        assert_close(
            tier,
            "rnn steps",
            c,
            &got[s * h..(s + 1) * h],
            &want,
            &h_ref,
        );
    }
}

fn project_check(tier: &str, k: &Kernels, c: &Case) {
    // `h` rows of the cell state projected to `k` outputs: W_hr is (P, H) = (c.k, c.h).
    let (p_out, h, rows) = (c.k, c.h, c.rows);
    let mut rng = Rng(c.seed);
    let w = rng.vec(p_out * h, c.w_scale);
    let x = rng.vec(rows * h, c.x_scale);
    let packed = PackedMatrix::pack(&w, 1, p_out, h);
    let mut y_ref = vec![0.0; rows * p_out];
    reference_matvec(&w, p_out, h, &x, &mut y_ref, rows);
    let mut y_got = vec![0.0; rows * p_out];
    (k.project)(&packed, &x, &mut y_got, rows);
    let mut want = Vec::new();
    for r in 0..rows {
        want.extend(pre(&w, p_out, h, &x[r * h..(r + 1) * h], &[]));
    }
    assert_close(tier, "project", c, &y_got, &want, &y_ref);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn lstm_step_matches_reference(c in case(false)) {
        for (tier, k) in common::tiers() {
            lstm_check(tier, k, &c);
        }
    }

    #[test]
    fn gru_step_matches_reference(c in case(true)) {
        for (tier, k) in common::tiers() {
            gru_check(tier, k, &c);
        }
    }

    #[test]
    fn rnn_step_matches_reference(c in case(true), relu in any::<bool>()) {
        let act = if relu { Activation::Relu } else { Activation::Tanh };
        for (tier, k) in common::tiers() {
            rnn_check(tier, k, &c, act);
        }
    }

    #[test]
    fn rnn_steps_match_single_steps_and_reference(
        c in case(true),
        relu in any::<bool>(),
        steps in 1usize..=12,
    ) {
        let act = if relu { Activation::Relu } else { Activation::Tanh };
        for (tier, k) in common::tiers() {
            rnn_steps_check(tier, k, &c, act, steps);
        }
    }

    #[test]
    fn project_matches_reference(c in case(false)) {
        for (tier, k) in common::tiers() {
            project_check(tier, k, &c);
        }
    }

    /// The LSTM and GRU steps that project their own inputs give the bits of the input
    /// projection followed by the step, on every tier, for any rows, block range and order
    /// (inputs straddling the projection's `k` chunks of 1024 too), a NaN input row included.
    #[test]
    fn input_steps_are_the_projection_then_the_step(
        c in case(false),
        i in prop_oneof![4 => 1usize..=70, 1 => prop::sample::select(vec![1023usize, 1024, 1030])],
        split in 0usize..=5,
        reverse in any::<bool>(),
        nan_row in 0usize..12,
    ) {
        for (tier, k) in common::tiers() {
            input_step_check(tier, k, &c, i, split, reverse, nan_row);
        }
    }

    /// A row's result is the same bits whether it runs alone, in a row tile with others, or in
    /// any block range; a NaN in one row leaves the others untouched.
    #[test]
    fn rows_and_block_splits_are_bit_identical(c in case(true), split in 0usize..=5, nan_row in 0usize..9) {
        for (tier, k) in common::tiers() {
            bit_identity(tier, k, &c, split, nan_row);
        }
    }
}

fn input_step_check(
    tier: &str,
    k: &Kernels,
    c: &Case,
    i: usize,
    split: usize,
    reverse: bool,
    nan_row: usize,
) {
    let (h, kk, rows) = (c.h, c.k, c.rows);
    let mut rng = Rng(c.seed);
    let w_ih = rng.vec(4 * h * i, c.w_scale / (i as f32).sqrt().max(1.0) * 2.0);
    let bias = rng.vec(4 * h, c.x_scale);
    let mut x = rng.vec(rows * i, c.x_scale);
    if nan_row < rows {
        x[nan_row * i] = f32::NAN;
    }
    let w_hh = PackedMatrix::pack(&rng.vec(4 * h * kk, c.w_scale / 4.0), 4, h, kk);
    let h_prev = rng.vec(rows * kk, c.x_scale);
    let c0 = rng.vec(rows * h, c.x_scale);
    let order = if reverse {
        BlockOrder::Descending
    } else {
        BlockOrder::Ascending
    };
    let nb = w_hh.blocks();
    let blocks = split.min(nb)..nb;
    let units = block_units(&w_hh, blocks.clone());
    let nu = units.len();
    let c_in: Vec<f32> = (0..rows)
        .flat_map(|r| c0[r * h..][..h][units.clone()].to_vec())
        .collect();

    let mut xp = vec![0.0; rows * 4 * h];
    (k.input_projection)(
        &PackedMatrix::pack(&w_ih, 1, 4 * h, i),
        &bias,
        &x,
        &mut xp,
        rows,
    );
    let (mut c_want, mut h_want) = (c_in.clone(), vec![0.0; rows * nu]);
    (k.lstm_step_blocks)(
        &w_hh,
        &xp,
        &h_prev,
        &mut c_want,
        &mut h_want,
        rows,
        blocks.clone(),
        order,
    );

    let w_ih_gates = PackedMatrix::pack(&w_ih, 4, h, i);
    let (mut c_got, mut h_got) = (c_in, vec![0.0; rows * nu]);
    (k.lstm_input_step_blocks)(
        (&w_ih_gates, &bias, &x),
        &w_hh,
        &h_prev,
        &mut c_got,
        &mut h_got,
        rows,
        blocks,
        order,
    );
    assert_eq!(
        bits(&h_got),
        bits(&h_want),
        "[{tier}] lstm h, I {i} ({c:?})"
    );
    assert_eq!(
        bits(&c_got),
        bits(&c_want),
        "[{tier}] lstm c, I {i} ({c:?})"
    );
    assert_nan_stays(tier, "lstm", &h_got, nu, nan_row, c);

    // The GRU (square `W_hh`, `xp`'s n gate apart from `r * (W_hn h + b_hn)`).
    let w_ih = rng.vec(3 * h * i, c.w_scale / (i as f32).sqrt().max(1.0) * 2.0);
    let bias = rng.vec(3 * h, c.x_scale);
    let b_hn = rng.vec(h, c.x_scale);
    let w_hh = PackedMatrix::pack(&rng.vec(3 * h * h, c.w_scale / 4.0), 3, h, h);
    let h_prev = rng.vec(rows * h, c.x_scale);
    let blocks = split.min(nb)..nb;
    let mut xp = vec![0.0; rows * 3 * h];
    (k.input_projection)(
        &PackedMatrix::pack(&w_ih, 1, 3 * h, i),
        &bias,
        &x,
        &mut xp,
        rows,
    );
    let mut h_want = vec![0.0; rows * nu];
    (k.gru_step_blocks)(
        &w_hh,
        &b_hn,
        &xp,
        &h_prev,
        &mut h_want,
        rows,
        blocks.clone(),
        order,
    );
    let w_ih_gates = PackedMatrix::pack(&w_ih, 3, h, i);
    let mut h_got = vec![0.0; rows * nu];
    (k.gru_input_step_blocks)(
        (&w_ih_gates, &bias, &x),
        &w_hh,
        &b_hn,
        &h_prev,
        &mut h_got,
        rows,
        blocks,
        order,
    );
    assert_eq!(bits(&h_got), bits(&h_want), "[{tier}] gru h, I {i} ({c:?})");
    assert_nan_stays(tier, "gru", &h_got, nu, nan_row, c);
}

/// A NaN put in row `nan_row`'s input reached no other row of `h` (`(rows, nu)`).
fn assert_nan_stays(tier: &str, what: &str, h: &[f32], nu: usize, nan_row: usize, c: &Case) {
    for (r, row) in h.chunks(nu.max(1)).enumerate() {
        if r != nan_row {
            assert!(
                row.iter().all(|v| !v.is_nan()),
                "[{tier}] {what}: NaN in row {nan_row} reached row {r} ({c:?})"
            );
        }
    }
}

/// Runs `step(rows, blocks, order, outputs...)` over the whole batch, row by row, and over two
/// block ranges, in both block orders, and compares the bits.
fn bit_identity(tier: &str, k: &Kernels, c: &Case, split: usize, nan_row: usize) {
    let (h, rows) = (c.h, c.rows);
    let mut rng = Rng(c.seed);
    let w4 = PackedMatrix::pack(&rng.vec(4 * h * h, c.w_scale / 4.0), 4, h, h);
    let w3 = PackedMatrix::pack(&rng.vec(3 * h * h, c.w_scale / 4.0), 3, h, h);
    let w1 = PackedMatrix::pack(&rng.vec(h * h, c.w_scale / 4.0), 1, h, h);
    let xp = rng.vec(rows * 4 * h, c.x_scale);
    let h_prev = rng.vec(rows * h, c.x_scale);
    let c0 = rng.vec(rows * h, c.x_scale);
    let b_hn = rng.vec(h, c.x_scale);
    let nb = w4.blocks();
    let split = split.min(nb);
    let ranges = [0..split, split..nb];

    // Each kernel as `f(rows, row0, blocks, order) -> outputs (rows, nu)` for the rows from row0.
    type Run<'a> = Box<dyn Fn(usize, usize, std::ops::Range<usize>, BlockOrder) -> Vec<f32> + 'a>;
    let runs: Vec<(&str, usize, Run)> = vec![
        (
            "lstm h",
            4,
            Box::new(|n, r0, b, order| {
                let nu = block_units(&w4, b.clone()).len();
                let mut cc: Vec<f32> = (0..n)
                    .flat_map(|r| c0[(r0 + r) * h..][..h][block_units(&w4, b.clone())].to_vec())
                    .collect();
                let mut ho = vec![0.0; n * nu];
                (k.lstm_step_blocks)(
                    &w4,
                    &xp[r0 * 4 * h..],
                    &h_prev[r0 * h..],
                    &mut cc,
                    &mut ho,
                    n,
                    b,
                    order,
                );
                ho.extend(cc);
                ho
            }),
        ),
        (
            "gru h",
            3,
            Box::new(|n, r0, b, order| {
                let nu = block_units(&w3, b.clone()).len();
                let mut ho = vec![0.0; n * nu];
                (k.gru_step_blocks)(
                    &w3,
                    &b_hn,
                    &xp[r0 * 3 * h..],
                    &h_prev[r0 * h..],
                    &mut ho,
                    n,
                    b,
                    order,
                );
                ho
            }),
        ),
        (
            "rnn h",
            1,
            Box::new(|n, r0, b, order| {
                let nu = block_units(&w1, b.clone()).len();
                let mut ho = vec![0.0; n * nu];
                (k.rnn_step_blocks)(
                    &w1,
                    Activation::Tanh,
                    &xp[r0 * h..],
                    &h_prev[r0 * h..],
                    &mut ho,
                    n,
                    b,
                    order,
                );
                ho
            }),
        ),
        (
            "project",
            1,
            Box::new(|n, r0, b, order| {
                let nu = block_units(&w1, b.clone()).len();
                let mut ho = vec![0.0; n * nu];
                (k.project_blocks)(&w1, &h_prev[r0 * h..], &mut ho, n, b, order);
                ho
            }),
        ),
    ];
    use BlockOrder::{Ascending, Descending};
    for (what, _g, run) in &runs {
        let whole = run(rows, 0, 0..nb, Ascending);
        // The block order changes no bit.
        assert_eq!(
            bits(&run(rows, 0, 0..nb, Descending)),
            bits(&whole),
            "[{tier}] {what}: descending block order vs ascending ({c:?})"
        );
        // Row by row: the whole-batch result of row r (h part, and c part for the LSTM).
        for r in 0..rows {
            let order = if r % 2 == 0 { Ascending } else { Descending };
            let one = run(1, r, 0..nb, order);
            let mut from_whole = whole[r * h..(r + 1) * h].to_vec();
            if *what == "lstm h" {
                from_whole.extend(&whole[rows * h + r * h..][..h]);
            }
            assert_eq!(
                bits(&one),
                bits(&from_whole),
                "[{tier}] {what}: row {r} alone ({order:?}) vs in {rows} rows ({c:?})"
            );
        }
        // Two block ranges, every row, in either order: their unit slices reassemble the
        // whole step.
        for order in [Ascending, Descending] {
            let parts: Vec<Vec<f32>> = ranges
                .iter()
                .map(|b| run(rows, 0, b.clone(), order))
                .collect();
            for r in 0..rows {
                for (b, part) in ranges.iter().zip(&parts) {
                    let units = block_units(&w4, b.clone());
                    let nu = units.len();
                    assert_eq!(
                        bits(&part[r * nu..(r + 1) * nu]),
                        bits(&whole[r * h..][..h][units.clone()]),
                        "[{tier}] {what}: blocks {b:?} ({order:?}) row {r} ({c:?})"
                    );
                }
            }
        }
    }

    // NaN isolation: a NaN in one row's h_prev changes no other row.
    let nan_row = nan_row % rows;
    let mut h_nan = h_prev.clone();
    h_nan[nan_row * h] = f32::NAN;
    let (mut c1, mut o1) = (c0.clone(), vec![0.0; rows * h]);
    (k.lstm_step)(&w4, &xp, &h_prev, &mut c1, &mut o1, rows);
    let (mut c2, mut o2) = (c0.clone(), vec![0.0; rows * h]);
    (k.lstm_step)(&w4, &xp, &h_nan, &mut c2, &mut o2, rows);
    for r in (0..rows).filter(|&r| r != nan_row) {
        assert_eq!(
            bits(&o1[r * h..(r + 1) * h]),
            bits(&o2[r * h..(r + 1) * h]),
            "[{tier}] NaN in row {nan_row} changed row {r}"
        );
    }
    assert!(
        o2[nan_row * h..(nan_row + 1) * h]
            .iter()
            .all(|v| v.is_nan()),
        "[{tier}] NaN did not propagate"
    );
}

/// Batches large enough for the tiled path (row chunks, several `k` chunks, partial row tiles
/// and blocks): each row is the same bits as alone (which takes the single-row path), in any
/// block range, on every tier.
#[test]
fn tiled_batches_are_bit_identical_to_single_rows() {
    for (h, rows) in [(100, 37), (47, 70), (300, 13)] {
        let c = Case {
            h,
            k: h,
            rows,
            w_scale: 1.0,
            x_scale: 1.0,
            seed: 0x7173 + h as u64,
        };
        for (tier, k) in common::tiers() {
            bit_identity(tier, k, &c, 3, 5);
        }
    }
}

/// The tiled path against the reference on a batch with a non-square LSTM (`K != H`) spanning
/// several `k` chunks.
#[test]
fn tiled_batches_match_reference() {
    for (h, kk, rows) in [(40, 300, 20), (17, 129, 31)] {
        let c = Case {
            h,
            k: kk,
            rows,
            w_scale: 1.0,
            x_scale: 1.0,
            seed: 0x5eed + h as u64,
        };
        for (tier, k) in common::tiers() {
            lstm_check(tier, k, &c);
            project_check(tier, k, &c);
        }
        let c = Case { k: h, ..c };
        for (tier, k) in common::tiers() {
            gru_check(tier, k, &c);
            rnn_check(tier, k, &c, Activation::Tanh);
        }
    }
}

/// Denormal states cost Intel cores a microcode assist on every product they enter (an LSTM
/// step ~60x slower, measured), so the kernels flush every value they store to `±0` where it
/// would be denormal, keeping its sign, on every tier; normal values pass unchanged.
#[test]
fn stored_states_are_flushed_to_signed_zero() {
    let (h, rows) = (37, 5);
    let tiny = f32::MIN_POSITIVE / 4.0;
    // Zero weights: each stored value is exactly what the cell makes of `xp` alone.
    let zeros = |g: usize| PackedMatrix::pack(&vec![0.0; g * h * h], g, h, h);
    let (w1, w3, w4) = (zeros(1), zeros(3), zeros(4));
    let h_prev = vec![0.0f32; rows * h];
    // RNN (ReLU): pre-activations of denormals (either sign) and of normal values.
    let xp: Vec<f32> = (0..rows * h)
        .map(|i| match i % 3 {
            0 => tiny,
            1 => -tiny,
            _ => 0.75,
        })
        .collect();
    for (tier, k) in common::tiers() {
        let mut out = vec![f32::NAN; rows * h];
        (k.rnn_step)(&w1, Activation::Relu, &xp, &h_prev, &mut out, rows);
        for (i, (&o, &x)) in out.iter().zip(&xp).enumerate() {
            let want = if x == 0.75 { 0.75 } else { 0.0 };
            assert_eq!(
                o.to_bits(),
                f32::to_bits(want),
                "[{tier}] rnn relu h[{i}] of {x:e}"
            );
        }
        // tanh keeps a denormal input's sign: tanh(±tiny) = ±tiny, stored as ±0.
        (k.rnn_step)(&w1, Activation::Tanh, &xp, &h_prev, &mut out, rows);
        for (i, (&o, &x)) in out.iter().zip(&xp).enumerate() {
            if x != 0.75 {
                assert_eq!(
                    o.to_bits(),
                    0.0f32.copysign(x).to_bits(),
                    "[{tier}] rnn tanh h[{i}]"
                );
            } else {
                assert!(o > 0.6, "[{tier}] rnn tanh h[{i}] = {o}");
            }
        }
        // GRU: n = tanh(xp_n), z = σ(0) = 1/2, h_prev = 0: h' = n / 2, denormal for tiny xp_n.
        let mut xp3 = vec![0.0f32; rows * 3 * h];
        for r in 0..rows {
            xp3[r * 3 * h + 2 * h..(r + 1) * 3 * h].copy_from_slice(&xp[r * h..(r + 1) * h]);
        }
        (k.gru_step)(&w3, &vec![0.0; h], &xp3, &h_prev, &mut out, rows);
        assert!(
            out.iter().all(|v| !v.is_subnormal()),
            "[{tier}] gru stored a denormal"
        );
        // LSTM: c' = f c + i g with c = 0: tiny for tiny g; h' = o tanh(c') likewise.
        let mut xp4 = vec![0.0f32; rows * 4 * h];
        for r in 0..rows {
            xp4[r * 4 * h + 2 * h..r * 4 * h + 3 * h].copy_from_slice(&xp[r * h..(r + 1) * h]);
        }
        let mut c = vec![0.0f32; rows * h];
        (k.lstm_step)(&w4, &xp4, &h_prev, &mut c, &mut out, rows);
        for (i, (&cv, &x)) in c.iter().zip(&xp).enumerate() {
            assert!(
                !cv.is_subnormal() && !out[i].is_subnormal(),
                "[{tier}] lstm [{i}]"
            );
            if x != 0.75 {
                assert_eq!(
                    cv.to_bits(),
                    0.0f32.copysign(x).to_bits(),
                    "[{tier}] lstm c[{i}]"
                );
            }
        }
    }
}

/// Denormal weights are packed as `±0`, normal ones unchanged.
#[test]
fn packing_flushes_denormal_weights() {
    let w = [
        1.5f32,
        f32::MIN_POSITIVE / 2.0,
        -f32::MIN_POSITIVE / 8.0,
        -2.0,
    ];
    let p = PackedMatrix::pack(&w, 1, 4, 1);
    let got: Vec<u32> = p.data()[..4].iter().map(|v| v.to_bits()).collect();
    let want: Vec<u32> = [1.5f32, 0.0, -0.0, -2.0]
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(got, want);
}

/// Every tier's input scan finds a denormal of either sign at any position of slices around the
/// vector widths, and nothing in slices of zeros, normals, infinities and NaN.
#[test]
fn every_tier_finds_denormals_where_the_portable_scan_does() {
    let quiet = [
        0.0f32,
        -0.0,
        1.0,
        -f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::NAN,
        3e38,
    ];
    for (tier, k) in common::tiers() {
        for len in [0usize, 1, 7, 8, 15, 16, 17, 31, 33, 64, 100, 1025, 2049] {
            let x: Vec<f32> = (0..len).map(|i| quiet[i % quiet.len()]).collect();
            assert!(
                !(k.has_denormals)(&x),
                "[{tier}] {len} values, none denormal"
            );
            assert_eq!((k.has_denormals)(&x), has_denormals(&x));
            for at in [0, len / 2, len.saturating_sub(1)]
                .into_iter()
                .filter(|&a| a < len)
            {
                for d in [f32::from_bits(1), -f32::MIN_POSITIVE / 2.0] {
                    let mut y = x.clone();
                    y[at] = d;
                    assert!((k.has_denormals)(&y), "[{tier}] {d:e} at {at} of {len}");
                }
            }
        }
    }
}
