//! The input projection `xp = x W_ihᵀ + b` of every tier against `matrixmultiply` (`gemm_nt`,
//! which the engine used before, bias prefilled) and, on small shapes, the scalar reference.
//!
//! Group `input_projection`, one id per tier and shape `MxNxK` (rows `M = L*B`, outputs
//! `N = G*H`, inputs `K = I`), the shapes of the standard suite's layers. Throughput in FLOPs
//! (`2 M N K`; criterion prints elements/s, so `Gelem/s` reads GFLOP/s).
//!
//! One shape: `cargo bench -p recur-kernels --bench gemm -- 8192x4096x512`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use recur_kernels::gemm::gemm_nt;
use recur_kernels::reference::reference_input_projection;
use recur_kernels::{kernels_for, Isa, PackedMatrix};
use std::hint::black_box;
use std::time::Duration;

/// `(M, N, K)`: lstm_big_b256, lstm_b64, gru_bi_b16 (layer 1), lstm_stream_b1, rnn_tiny_b1.
const SHAPES: [(usize, usize, usize); 5] = [
    (8192, 4096, 512),
    (8192, 1024, 256),
    (1024, 768, 512),
    (100, 2048, 80),
    (50, 64, 32),
];

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) >> 8) as f32 / (1 << 24) as f32 - 0.5)
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("input_projection");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for (m, n, k) in SHAPES {
        g.sample_size(if m * n * k > 1 << 30 { 10 } else { 20 });
        let shape = format!("{m}x{n}x{k}");
        let w = data(n * k, 1);
        let bias = data(n, 2);
        let x = data(m * k, 3);
        let mut xp = vec![0.0f32; m * n];
        let packed = PackedMatrix::pack(&w, 1, n, k);
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        if m * n * k <= 1 << 20 {
            g.bench_function(BenchmarkId::new("reference", &shape), |b| {
                b.iter(|| reference_input_projection(&w, n, k, &bias, &x, &mut xp, m))
            });
        }
        g.bench_function(BenchmarkId::new("matrixmultiply", &shape), |b| {
            b.iter(|| {
                for row in xp.chunks_exact_mut(n) {
                    row.copy_from_slice(&bias);
                }
                gemm_nt(m, n, k, &x, &w, 1.0, &mut xp)
            })
        });
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let kern = kernels_for(isa).expect("available");
            g.bench_function(BenchmarkId::new(isa.name(), &shape), |b| {
                b.iter(|| (kern.input_projection)(&packed, &bias, &x, &mut xp, m))
            });
        }
        black_box(&xp);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
