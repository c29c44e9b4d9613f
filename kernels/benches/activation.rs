//! The fast `sigmoid` and `tanh` of every tier against the scalar references (libm), over 4096
//! values spread over the interesting range `[-12, 12)`. Throughput in elements.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use recur_kernels::reference::{reference_sigmoid, reference_tanh};
use recur_kernels::{kernels_for, Isa};
use std::time::Duration;

const N: usize = 4096;

fn bench(c: &mut Criterion) {
    let xs: Vec<f32> = (0..N).map(|i| (i as f32 / N as f32 - 0.5) * 24.0).collect();
    let mut ys = vec![0.0f32; N];
    for (name, reference) in [
        ("sigmoid", reference_sigmoid as fn(f32) -> f32),
        ("tanh", reference_tanh as fn(f32) -> f32),
    ] {
        let mut g = c.benchmark_group(name);
        g.sample_size(30)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .throughput(Throughput::Elements(N as u64));
        g.bench_function(BenchmarkId::new("reference", N), |b| {
            b.iter(|| {
                for (y, &x) in ys.iter_mut().zip(&xs) {
                    *y = reference(x);
                }
            })
        });
        for isa in Isa::ALL.into_iter().filter(|isa| isa.is_available()) {
            let k = kernels_for(isa).expect("available tiers have kernels");
            let f = if name == "sigmoid" { k.sigmoid } else { k.tanh };
            g.bench_function(BenchmarkId::new(isa.name(), N), |b| {
                b.iter(|| f(&xs, &mut ys))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
