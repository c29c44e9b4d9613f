//! The fused step kernels of every tier against each other and the scalar reference.
//!
//! One group per kernel (`lstm_step`, `gru_step`, `rnn_step`, and `rnn_steps`: 50 steps of one
//! row in one call, against the same steps one call each as `<tier>-calls`), one id per tier
//! (`reference`,
//! `portable`, `avx2`, `avx512`; tiers this CPU lacks are skipped) and shape (`H512xB1`:
//! hidden size 512, batch 1, `K = H`). Throughput is in FLOPs (`2 G H K B` per step; criterion
//! prints it as elements/s, so `Gelem/s` reads GFLOP/s). The weights stay packed across
//! iterations, as in the time loop, so large shapes stream `W_hh` from L2/L3 every step, and
//! successive iterations alternate the block order as the engine's time loop does
//! (`BlockOrder::for_step`).
//!
//! `riding`: a single LSTM or GRU row's step (`K = H`) with the next layer's projection of 8
//! rows riding in it (`<cell>-step+tiles`: `lstm_step_riding`, 1/8 of `W_ih`'s `4H` or `3H`
//! output blocks, `K = H`, as the engine's relay gives each step of a stack), against the step
//! alone (`<cell>-step`) and the same tiles alone (`<cell>-tiles`: the riding kernel over no
//! blocks of the step); tiers with riding steps only. The fused time against the sum of the two
//! is what the relay hides (time only: the three do different work).
//!
//! Run one tier or shape with a filter: `cargo bench -p recur-kernels --bench step -- avx2/H512xB1`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use recur_kernels::reference::{
    reference_gru_step, reference_lstm_step, reference_rnn_step, reference_rnn_steps,
};
use recur_kernels::step::{transpose_rider_rows, BlockOrder, Rider, RIDER_ROWS};
use recur_kernels::BLOCK;
use recur_kernels::{kernels_for, Activation, Isa, Kernels, PackedMatrix};
use std::hint::black_box;
use std::time::Duration;

const HIDDEN: [usize; 4] = [64, 256, 512, 1024];
const BATCH: [usize; 4] = [1, 4, 16, 64];

fn tiers() -> Vec<&'static Kernels> {
    Isa::ALL
        .into_iter()
        .filter(|isa| isa.is_available())
        .filter_map(kernels_for)
        .collect()
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    // Small deterministic values in [-0.5, 0.5): no denormals, no saturation.
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) >> 8) as f32 / (1 << 24) as f32 - 0.5)
        .collect()
}

/// Runs one group: `gates` per cell, `reference(w, h, b, xp, h_prev, out)` and
/// `kernel(k, packed, b, xp, h_prev, out, order)`.
fn group(
    c: &mut Criterion,
    name: &str,
    gates: usize,
    reference: impl Fn(&[f32], usize, usize, &[f32], &[f32], &mut [f32], &mut [f32]),
    kernel: impl Fn(&Kernels, &PackedMatrix, usize, &[f32], &[f32], &mut [f32], &mut [f32], BlockOrder),
) {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for h in HIDDEN {
        for b in BATCH {
            let shape = format!("H{h}xB{b}");
            let w = data(gates * h * h, 1);
            let packed = PackedMatrix::pack(&w, gates, h, h);
            let xp = data(b * gates * h, 2);
            let h_prev = data(b * h, 3);
            let mut c_state = data(b * h, 4);
            let mut out = vec![0.0f32; b * h];
            g.throughput(Throughput::Elements((2 * gates * h * h * b) as u64));
            // The scalar reference only where it finishes in reasonable time.
            if h * b <= 4096 && b <= 16 {
                g.bench_function(BenchmarkId::new("reference", &shape), |bench| {
                    bench.iter(|| reference(&w, h, b, &xp, &h_prev, &mut c_state, &mut out))
                });
            }
            for k in tiers() {
                let mut step = 0;
                g.bench_function(BenchmarkId::new(k.isa.name(), &shape), |bench| {
                    bench.iter(|| {
                        step += 1;
                        let order = BlockOrder::for_step(step);
                        kernel(k, &packed, b, &xp, &h_prev, &mut c_state, &mut out, order)
                    })
                });
            }
            black_box(&out);
        }
    }
    g.finish();
}

fn lstm(c: &mut Criterion) {
    group(
        c,
        "lstm_step",
        4,
        |w, h, b, xp, hp, cs, out| reference_lstm_step(w, h, h, xp, hp, cs, out, b),
        |k, p, b, xp, hp, cs, out, o| (k.lstm_step_blocks)(p, xp, hp, cs, out, b, 0..p.blocks(), o),
    );
}

fn gru(c: &mut Criterion) {
    group(
        c,
        "gru_step",
        3,
        |w, h, b, xp, hp, cs, out| reference_gru_step(w, h, &cs[..h], xp, hp, out, b),
        |k, p, b, xp, hp, cs, out, o| {
            (k.gru_step_blocks)(p, &cs[..p.rows()], xp, hp, out, b, 0..p.blocks(), o)
        },
    );
}

fn rnn(c: &mut Criterion) {
    group(
        c,
        "rnn_step",
        1,
        |w, h, b, xp, hp, _, out| reference_rnn_step(w, h, Activation::Tanh, xp, hp, out, b),
        |k, p, b, xp, hp, _, out, o| {
            (k.rnn_step_blocks)(p, Activation::Tanh, xp, hp, out, b, 0..p.blocks(), o)
        },
    );
}

/// 50 steps of one row: the multi-step kernel against the same steps one call each.
fn rnn_steps(c: &mut Criterion) {
    const STEPS: usize = 50;
    let mut g = c.benchmark_group("rnn_steps");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for h in HIDDEN {
        let shape = format!("H{h}xB1xT{STEPS}");
        let w = data(h * h, 1);
        let packed = PackedMatrix::pack(&w, 1, h, h);
        let (xp, h0) = (data(STEPS * h, 2), data(h, 3));
        let mut out = vec![0.0f32; STEPS * h];
        g.throughput(Throughput::Elements((2 * h * h * STEPS) as u64));
        if h <= 256 {
            g.bench_function(BenchmarkId::new("reference", &shape), |bench| {
                bench.iter(|| {
                    reference_rnn_steps(&w, h, Activation::Tanh, &xp, &h0, &mut out, STEPS)
                })
            });
        }
        for k in tiers() {
            g.bench_function(BenchmarkId::new(k.isa.name(), &shape), |bench| {
                bench.iter(|| (k.rnn_steps)(&packed, Activation::Tanh, &xp, &h0, &mut out, STEPS))
            });
            let calls = format!("{}-calls", k.isa.name());
            g.bench_function(BenchmarkId::new(calls, &shape), |bench| {
                bench.iter(|| {
                    for s in 0..STEPS {
                        let (done, rest) = out.split_at_mut(s * h);
                        let prev = if s == 0 {
                            &h0[..]
                        } else {
                            &done[(s - 1) * h..]
                        };
                        let (blocks, order) = (0..packed.blocks(), BlockOrder::for_step(s));
                        let (xp, o) = (&xp[s * h..], &mut rest[..h]);
                        (k.rnn_step_blocks)(
                            &packed,
                            Activation::Tanh,
                            xp,
                            prev,
                            o,
                            1,
                            blocks,
                            order,
                        )
                    }
                })
            });
        }
        black_box(&out);
    }
    g.finish();
}

/// See the module docs: `riding`.
fn riding(c: &mut Criterion) {
    let mut g = c.benchmark_group("riding");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for k in tiers() {
        for h in [256, 512, 1024] {
            for (cell, gates) in [("lstm", 4), ("gru", 3)] {
                let w_hh = PackedMatrix::pack(&data(gates * h * h, 1), gates, h, h);
                let w_ih = PackedMatrix::pack(&data(gates * h * h, 2), 1, gates * h, h);
                let (b_hn, bias) = (data(h, 3), data(gates * h, 4));
                let xp = data(gates * h, 5);
                let h_prev = data(h, 6);
                let mut x_t = vec![0.0; RIDER_ROWS * h];
                transpose_rider_rows(&data(RIDER_ROWS * h, 7), h, &mut x_t);
                let mut out = vec![0.0; RIDER_ROWS * gates * h];
                let (mut c_state, mut h_out) = (data(h, 8), vec![0.0; h]);
                let tiles = 0..w_ih.blocks().div_ceil(RIDER_ROWS);
                let blocks = 0..w_hh.blocks();
                let mut s = 0;
                let mut run = |step: &std::ops::Range<usize>, tiles: &std::ops::Range<usize>| {
                    let order = BlockOrder::for_step(s);
                    s += 1;
                    let rider = Rider {
                        w_ih: &w_ih,
                        bias: &bias,
                        x: &x_t,
                        xp: &mut out,
                        layout: (gates * h, BLOCK),
                        blocks: tiles.clone(),
                    };
                    let (step, ho) = (step.clone(), &mut h_out[..]);
                    match (gates, k.lstm_step_riding, k.gru_step_riding) {
                        (4, Some(f), _) => {
                            f(&w_hh, &xp, &h_prev, &mut c_state, ho, step, order, rider)
                        }
                        (3, _, Some(f)) => f(&w_hh, &b_hn, &xp, &h_prev, ho, step, order, rider),
                        _ => unreachable!(),
                    }
                };
                if k.lstm_step_riding.is_none() {
                    continue;
                }
                let shape = format!("H{h}xB1");
                let id = |what: &str| {
                    BenchmarkId::new(format!("{}-{cell}-{what}", k.isa.name()), &shape)
                };
                g.bench_function(id("step+tiles"), |bch| bch.iter(|| run(&blocks, &tiles)));
                g.bench_function(id("step"), |bch| bch.iter(|| run(&blocks, &(0..0))));
                g.bench_function(id("tiles"), |bch| bch.iter(|| run(&(0..0), &tiles)));
            }
        }
    }
    g.finish();
}

criterion_group!(benches, lstm, gru, rnn, rnn_steps, riding);
criterion_main!(benches);
