//! Serving: many streams stepped one at a time against one batched step, and variable-length
//! batches against the padded batch.
//!
//! - `streams_step/{single,batched}/S{n}`: one step of `n` streams of the `lstm_stream_b1`
//!   model (LSTM 80→512, 2 layers): `single` steps each stream's [`Session`] in turn (each
//!   streams every weight from cache), `batched` pushes every stream's input into a
//!   [`StreamRuntime`] and runs one batched step. Throughput is in stream-steps.
//! - `ragged/{padded,lengths_full,half}/...`: one forward pass of the `lstm_b64` shape (LSTM
//!   256→256, batch 64, L = 128): `padded` without lengths, `lengths_full` with lengths that are
//!   all `L` (the cost of the bookkeeping alone), `half` with lengths spread evenly over
//!   `1..=L` (mean ≈ L/2, what PyTorch's packed sequences hold). Throughput is in valid
//!   timesteps (`sum(lengths)`), so equal throughput means the work scales with the valid steps.
//!
//! All on a 1-thread pool (per-core figures): `cargo bench --bench serving`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use recur::bench::{random_state_dict, standard_suite, BenchCase, SplitRng};
use recur::forward::OutputBuffers;
use recur::session::Session;
use recur::streams::StreamRuntime;
use recur::{ForwardInput, Model, Tensor, Workspace};

fn case(name: &str) -> BenchCase {
    standard_suite()
        .unwrap()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap()
}

fn one_thread() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
}

fn streams_step(c: &mut Criterion) {
    let case = case("lstm_stream_b1");
    let cfg = &case.config;
    let model = Model::from_state_dict(cfg.clone(), &random_state_dict(cfg, 1)).unwrap();
    let pool = one_thread();
    let mut g = c.benchmark_group("streams_step");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for n in [16usize, 100] {
        let x = SplitRng::new(2).vec(n * cfg.input_size, 1.0);
        let xs: Vec<&[f32]> = x.chunks(cfg.input_size).collect();
        g.throughput(Throughput::Elements(n as u64));
        let mut sessions: Vec<_> = (0..n).map(|_| Session::new(&model).unwrap()).collect();
        g.bench_function(BenchmarkId::new("single", format!("S{n}")), |b| {
            pool.install(|| {
                b.iter(|| {
                    for (s, x) in sessions.iter_mut().zip(&xs) {
                        black_box(s.step(x).unwrap());
                    }
                })
            })
        });
        let mut rt = StreamRuntime::with_capacity(&model, n).unwrap();
        let ids: Vec<_> = (0..n).map(|_| rt.join()).collect();
        g.bench_function(BenchmarkId::new("batched", format!("S{n}")), |b| {
            pool.install(|| {
                b.iter(|| {
                    for (&id, x) in ids.iter().zip(&xs) {
                        rt.push(id, x).unwrap();
                    }
                    black_box(rt.step().unwrap())
                })
            })
        });
    }
    g.finish();
}

fn ragged(c: &mut Criterion) {
    let case = case("lstm_b64");
    let cfg = &case.config;
    let (l, n) = (case.seq_len, case.batch);
    let model = Model::from_state_dict(cfg.clone(), &random_state_dict(cfg, 1)).unwrap();
    let x = Tensor::new(
        vec![l, n, cfg.input_size],
        SplitRng::new(2).vec(l * n * cfg.input_size, 1.0),
    )
    .unwrap();
    let full = vec![l; n];
    // Evenly spread over 1..=L: mean (L+1)/2.
    let half: Vec<usize> = (0..n).map(|b| 1 + b * (l - 1) / (n - 1)).collect();
    let pool = one_thread();
    let mut g = c.benchmark_group("ragged");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    let shape = format!("{}x{l}xB{n}", cfg.mode);
    for (id, lengths) in [
        ("padded", None),
        ("lengths_full", Some(&full)),
        ("half", Some(&half)),
    ] {
        let valid: usize = lengths.map_or(l * n, |v| v.iter().sum());
        g.throughput(Throughput::Elements(valid as u64));
        let mut fi = ForwardInput::new(x.view());
        if let Some(lens) = lengths {
            fi = fi.with_lengths(lens);
        }
        let (mut ws, mut out) = (Workspace::new(), OutputBuffers::new());
        g.bench_function(BenchmarkId::new(id, &shape), |b| {
            pool.install(|| b.iter(|| model.forward_into(&fi, &mut ws, &mut out).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, streams_step, ragged);
criterion_main!(benches);
