//! The multi-stream runtime: each stream's outputs and state are bit-identical to running that
//! stream alone through one forward pass, whatever other streams share its steps, join or leave
//! around it; several threads sharing one `Arc<Model>`, each driving many streams, all checked
//! against one-shot runs.

mod common;

use std::sync::Arc;

use common::{assert_error, assert_success, available_tiers, bits, config_strategy};
use proptest::prelude::*;
use recur::bench::{random_state_dict, SplitRng};
use recur::streams::{StreamId, StreamRuntime};
use recur::{Config, ForwardInput, Mode, Model, Tensor};

/// What one stream saw: its initial state, its inputs, its outputs, in order.
struct Record {
    id: StreamId,
    h0: Vec<f32>,
    c0: Option<Vec<f32>>,
    inputs: Vec<f32>,
    outputs: Vec<f32>,
    live: bool,
}

/// Checks a stream's record (and its final state) against one forward pass over its inputs.
fn check_alone(model: &Model, rec: &Record, h: &[f32], c: Option<&[f32]>, what: &str) {
    let cfg = model.config();
    let (i, s) = (cfg.input_size, cfg.num_layers);
    let steps = rec.inputs.len() / i;
    if steps == 0 {
        assert_eq!(bits(h), bits(&rec.h0), "{what}: state moved without input");
        return;
    }
    // One stream: (L, 1, I) seq-major and (1, L, I) batch-first are the same bytes.
    let shape = if cfg.batch_first {
        vec![1, steps, i]
    } else {
        vec![steps, 1, i]
    };
    let x = Tensor::new(shape, rec.inputs.clone()).unwrap();
    let h0 = Tensor::new(vec![s, 1, cfg.output_hidden()], rec.h0.clone()).unwrap();
    let c0 = rec
        .c0
        .clone()
        .map(|c| Tensor::new(vec![s, 1, cfg.hidden_size], c).unwrap());
    let mut fi = ForwardInput::new(x.view()).with_h0(h0.view());
    if let Some(c0) = &c0 {
        fi = fi.with_c0(c0.view());
    }
    let alone = model.forward(&fi).unwrap();
    assert_eq!(
        bits(&rec.outputs),
        bits(&alone.output.data),
        "{what}: outputs"
    );
    assert_eq!(bits(h), bits(&alone.h_n.data), "{what}: h");
    assert_eq!(
        c.map(bits),
        alone.c_n.as_ref().map(|t| bits(&t.data)),
        "{what}: c"
    );
}

/// Drives a runtime through `steps` steps of a random schedule: streams join (some with a
/// random initial state), push inputs with probability 3/4, reset now and then, and leave; every
/// stream is checked against its one-shot run when it leaves and at the end.
fn drive(model: &Model, seed: u64, steps: usize, max_streams: usize) -> usize {
    let cfg = model.config();
    let (i, s, w, hid) = (
        cfg.input_size,
        cfg.num_layers,
        cfg.output_hidden(),
        cfg.hidden_size,
    );
    let lstm = cfg.mode == Mode::Lstm;
    let mut rng = SplitRng::new(seed);
    let mut coin = move |p: f32| (rng.next_f32() + 1.0) / 2.0 < p;
    let mut data = SplitRng::new(seed ^ 0x5eed);
    let mut rt = StreamRuntime::new(model).unwrap();
    let mut recs: Vec<Record> = Vec::new();
    let mut checked = 0;
    for step in 0..steps {
        // Joins.
        let live = recs.iter().filter(|r| r.live).count();
        if live < max_streams && (live == 0 || coin(0.3)) {
            for _ in 0..1 + (step % 3) {
                let (id, h0, c0) = if coin(0.5) {
                    let h0 = data.vec(s * w, 1.0);
                    let c0 = lstm.then(|| data.vec(s * hid, 1.0));
                    (rt.join_with_state(&h0, c0.as_deref()).unwrap(), h0, c0)
                } else {
                    (
                        rt.join(),
                        vec![0.0; s * w],
                        lstm.then(|| vec![0.0; s * hid]),
                    )
                };
                recs.push(Record {
                    id,
                    h0,
                    c0,
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                    live: true,
                });
            }
        }
        // Inputs, resets and leaves.
        let mut pushed = Vec::new();
        for (k, rec) in recs.iter_mut().enumerate() {
            if !rec.live {
                continue;
            }
            if coin(0.05) {
                // Leaving: check the stream first.
                let (h, c) = (rt.h(rec.id).unwrap(), rt.c(rec.id).unwrap());
                check_alone(
                    model,
                    rec,
                    h,
                    c,
                    &format!("stream {k} leaving at step {step}"),
                );
                checked += 1;
                rt.leave(rec.id).unwrap();
                rec.live = false;
                continue;
            }
            if coin(0.03) && rec.inputs.is_empty() {
                rt.reset(rec.id).unwrap();
                rec.h0.fill(0.0);
                if let Some(c0) = &mut rec.c0 {
                    c0.fill(0.0);
                }
            }
            if coin(0.75) {
                let x = data.vec(i, 1.5);
                rt.push(rec.id, &x).unwrap();
                rec.inputs.extend_from_slice(&x);
                pushed.push(k);
            }
        }
        assert_eq!(rt.pending(), pushed.len());
        assert_eq!(rt.step().unwrap(), pushed.len());
        for (k, rec) in recs.iter_mut().enumerate() {
            let out = rt.output(rec.id);
            if rec.live && pushed.contains(&k) {
                rec.outputs.extend_from_slice(out.unwrap());
            } else {
                assert!(out.is_none(), "stream {k} did not step but has an output");
            }
        }
    }
    for (k, rec) in recs.iter().enumerate().filter(|(_, r)| r.live) {
        let (h, c) = (rt.h(rec.id).unwrap(), rt.c(rec.id).unwrap());
        check_alone(model, rec, h, c, &format!("stream {k} at the end"));
        checked += 1;
    }
    checked
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random schedules of joins, inputs, resets and leaves, on every tier: each stream equals
    /// its own one-shot run.
    #[test]
    fn each_stream_as_if_alone(
        cfg in config_strategy(1..6, 1..24, 1..4, false, 5),
        seed in any::<u64>(),
    ) {
        let mut model = Model::from_state_dict(cfg.clone(), &random_state_dict(&cfg, seed)).unwrap();
        for isa in available_tiers() {
            model.set_isa(isa).unwrap();
            // Up to 40 streams: batches above 16 take the engine's multi-chunk path too.
            let checked = drive(&model, seed, 30, 40);
            prop_assert!(checked > 0);
        }
    }
}

/// Several threads share one `Arc<Model>`, each driving its own runtime of many streams (and,
/// on half of the threads, from inside a 1-thread pool, the serving configuration); every
/// stream is checked against its one-shot run.
#[test]
fn stress_threads_share_one_model() {
    for mode in [Mode::Lstm, Mode::Gru] {
        let cfg = Config {
            num_layers: 2,
            ..Config::new(mode, 24, 64)
        };
        let model =
            Arc::new(Model::from_state_dict(cfg.clone(), &random_state_dict(&cfg, 8)).unwrap());
        let threads: Vec<_> = (0..6u64)
            .map(|t| {
                let model = Arc::clone(&model);
                std::thread::spawn(move || {
                    let run = || drive(&model, 100 + t, 150, 150);
                    if t % 2 == 0 {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(1)
                            .build()
                            .unwrap();
                        pool.install(run)
                    } else {
                        run()
                    }
                })
            })
            .collect();
        let checked: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(checked >= 6 * 10, "only {checked} streams checked");
    }
}

#[test]
fn handles_and_errors() {
    let cfg = Config::new(Mode::Lstm, 3, 4);
    let model = Model::from_state_dict(cfg.clone(), &random_state_dict(&cfg, 1)).unwrap();
    let mut rt = StreamRuntime::with_capacity(&model, 4).unwrap();
    assert!(rt.is_empty());
    assert_eq!(rt.step().unwrap(), 0, "nothing pending, nothing runs");
    let a = rt.join();
    let e = rt.push(a, &[1.0; 2]).unwrap_err().to_string();
    assert!(e.contains("expected input_size = 3"), "{e}");
    rt.push(a, &[1.0; 3]).unwrap();
    let e = rt.push(a, &[1.0; 3]).unwrap_err().to_string();
    assert!(e.contains("already has an input"), "{e}");
    rt.leave(a).unwrap();
    assert_eq!(rt.pending(), 0, "a leaving stream's input is dropped");
    // The slot is reused, the old handle is not.
    let b = rt.join();
    assert_eq!(a.slot(), b.slot());
    assert!(!rt.contains(a));
    let e = rt.push(a, &[1.0; 3]).unwrap_err().to_string();
    assert!(e.contains("not live"), "{e}");
    assert!(rt.leave(a).is_err());
    assert!(rt.h(a).is_err());
    let e = rt.set_state(b, &[0.0; 4], None).unwrap_err().to_string();
    assert!(e.contains("needs c"), "{e}");
    let e = rt
        .set_state(b, &[0.0; 3], Some(&[0.0; 4]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("h has 3 values"), "{e}");
    assert!(rt.join_with_state(&[0.0; 4], Some(&[0.0; 5])).is_err());
    assert_eq!(rt.len(), 1);

    let bi = Config {
        bidirectional: true,
        ..cfg
    };
    let bim = Model::from_state_dict(bi.clone(), &random_state_dict(&bi, 1)).unwrap();
    let e = StreamRuntime::new(&bim).unwrap_err().to_string();
    assert!(e.contains("bidirectional"), "{e}");
}

/// `recur bench --streams S --json`: one JSON line per case with the latency percentiles and
/// throughput of both ways of stepping, its last line carrying `batched_speedup` (timings are
/// not asserted).
#[test]
fn cli_bench_streams_json() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .args([
            "bench",
            "--case",
            "rnn_tiny_b1",
            "--streams",
            "20",
            "--json",
            "--seconds",
            "0.05",
        ])
        .args(["--threads", "1"])
        .output()
        .unwrap();
    assert_success(&out, "recur bench --streams 20");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["name"], "rnn_tiny_b1");
    assert_eq!(v["streams"], 20);
    assert_eq!(v["threads"], 1);
    for key in [
        "single_p50_us",
        "single_p99_us",
        "single_stream_steps_per_s",
        "batched_p50_us",
        "batched_p99_us",
        "batched_stream_steps_per_s",
        "batched_speedup",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {last}");
    }
    let bad = |args: &[&str], words: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
            .arg("bench")
            .args(args)
            .output()
            .unwrap();
        assert_error(&out, words);
    };
    bad(
        &["--case", "gru_bi_b16", "--streams", "4"],
        &["bidirectional"],
    );
    bad(
        &["--case", "rnn_tiny_b1", "--streams", "0"],
        &["--streams 0"],
    );
}
