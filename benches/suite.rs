//! The end-to-end standard suite (`benches/suite.json`, the cases of `recur bench`) under
//! criterion: one forward pass of each case, per kernel tier the CPU has, on 1 and 2 threads.
//!
//! `suite/{case}/{isa}-t{threads}`; throughput in FLOPs (a multiply-add counts 2, as
//! `recur bench` counts them), so criterion's `elem/s` reads as FLOP/s. The forward pass reuses
//! its workspace and output buffers, as a server would (`Model::forward_into`).
//!
//! `cargo bench --bench suite` (all of it takes a few minutes; filter with a case name, e.g.
//! `cargo bench --bench suite -- lstm_stream`). For the comparison with PyTorch and ONNX Runtime
//! use `../shared/bench/peers.py` (docs/PERFORMANCE.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use recur::bench::standard_suite;
use recur::forward::OutputBuffers;
use recur::{ForwardInput, Workspace};
use recur_kernels::Isa;

fn suite(c: &mut Criterion) {
    let mut g = c.benchmark_group("suite");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for case in standard_suite().expect("the standard suite parses") {
        let (mut model, x) = case
            .model_and_input()
            .expect("random weights of the suite's shapes load");
        let fi = ForwardInput::new(x.view());
        g.throughput(Throughput::Elements(case.flops() as u64));
        for isa in Isa::ALL.into_iter().filter(|isa| isa.is_available()) {
            model.set_isa(isa).expect("an available tier can be set");
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a rayon pool starts");
                let id = BenchmarkId::new(&case.name, format!("{}-t{threads}", isa.name()));
                let (mut ws, mut out) = (Workspace::new(), OutputBuffers::new());
                g.bench_function(id, |b| {
                    // The timed loop runs on the pool (so the call's threads are its workers
                    // and nothing crosses threads per iteration); criterion stays outside it.
                    b.iter_custom(|iters| {
                        pool.install(|| {
                            let start = Instant::now();
                            for _ in 0..iters {
                                model
                                    .forward_into(&fi, &mut ws, &mut out)
                                    .expect("the suite's inputs are valid");
                                black_box(&out);
                            }
                            start.elapsed()
                        })
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, suite);
criterion_main!(benches);
