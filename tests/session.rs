//! Sessions: a sequence fed in chunks gives results bit-identical to one forward pass over the
//! whole sequence, for every mode (LSTM with and without projection, GRU, both RNNs), several
//! layers, every chunk size 1..=L and uneven chunkings, with and without initial state and
//! lengths, on every kernel tier this host runs. Plus the state API: read, set, reset,
//! snapshot, restore, fork, and the errors.

mod common;

use common::{available_tiers, bits, config_strategy, random_inputs, run_strategy, InputFile, Run};
use proptest::prelude::*;
use recur::bench::{random_state_dict, SplitRng};
use recur::session::{run_chunked, Session};
use recur::{Config, Error, ForwardInput, Mode, Model, Outputs, Tensor, TensorView};

fn assert_same(a: &Outputs, b: &Outputs, what: &str) {
    assert_eq!(a.output.shape, b.output.shape, "{what}: output shape");
    assert_eq!(bits(&a.output.data), bits(&b.output.data), "{what}: output");
    assert_eq!(a.h_n.shape, b.h_n.shape, "{what}: h_n shape");
    assert_eq!(bits(&a.h_n.data), bits(&b.h_n.data), "{what}: h_n");
    assert_eq!(
        a.c_n.as_ref().map(|c| (&c.shape, bits(&c.data))),
        b.c_n.as_ref().map(|c| (&c.shape, bits(&c.data))),
        "{what}: c_n"
    );
}

#[derive(Clone, Debug)]
struct Case {
    config: Config,
    run: Run,
    /// An uneven chunking: chunk sizes cycled until the sequence ends.
    uneven: Vec<usize>,
    seed: u64,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        config_strategy(1..7, 1..20, 1..4, false, 5),
        run_strategy(1..13, 1..5),
        proptest::collection::vec(1usize..6, 1..4),
        any::<u64>(),
    )
        .prop_map(|(config, run, uneven, seed)| Case {
            config,
            run,
            uneven,
            seed,
        })
}

fn build(case: &Case) -> InputFile {
    let mut rng = SplitRng::new(case.seed);
    random_inputs(&case.config, &case.run, 2.0, 1.0, |n, scale| {
        rng.vec(n, scale)
    })
}

/// Feeds `b` through a session in chunks of the sizes `sizes` (cycled), the hard way: the test's
/// own slicing, `feed`/`feed_with_lengths`, output assembled by hand.
fn feed_uneven(model: &Model, case: &Case, b: &InputFile, sizes: &[usize]) -> Outputs {
    let cfg = model.config();
    let (l, n, i) = (case.run.seq, case.run.batch, cfg.input_size);
    let w = cfg.output_hidden();
    let mut session = Session::with_batch(model, n).unwrap();
    if let Some(h0) = &b.h0 {
        session
            .set_state(h0.view(), b.c0.as_ref().map(Tensor::view))
            .unwrap();
    }
    let bf = cfg.batch_first && !case.run.unbatched;
    let mut output = vec![0.0f32; l * n * w];
    let (mut t0, mut which) = (0, 0);
    while t0 < l {
        let k = sizes[which % sizes.len()].min(l - t0);
        which += 1;
        let mut x = Vec::new();
        let shape = if case.run.unbatched {
            x.extend_from_slice(&b.input.data[t0 * i..(t0 + k) * i]);
            vec![k, i]
        } else if bf {
            for row in 0..n {
                x.extend_from_slice(&b.input.data[(row * l + t0) * i..(row * l + t0 + k) * i]);
            }
            vec![n, k, i]
        } else {
            x.extend_from_slice(&b.input.data[t0 * n * i..(t0 + k) * n * i]);
            vec![k, n, i]
        };
        let view = TensorView::new(&shape, &x).unwrap();
        let out = match &b.lengths {
            Some(lens) => {
                let cl: Vec<usize> = lens.iter().map(|&v| v.saturating_sub(t0).min(k)).collect();
                session.feed_with_lengths(view, &cl).unwrap()
            }
            None => session.feed(view).unwrap(),
        };
        assert_eq!(
            out.shape,
            &shape[..shape.len() - 1]
                .iter()
                .copied()
                .chain([w])
                .collect::<Vec<_>>()[..]
        );
        for row in 0..n {
            for t in 0..k {
                let (src, dst) = if bf {
                    ((row * k + t) * w, (row * l + t0 + t) * w)
                } else {
                    ((t * n + row) * w, ((t0 + t) * n + row) * w)
                };
                output[dst..dst + w].copy_from_slice(&out.data[src..src + w]);
            }
        }
        t0 += k;
    }
    let one_shot_shape = b.input.shape[..b.input.shape.len() - 1]
        .iter()
        .copied()
        .chain([w])
        .collect();
    Outputs {
        output: Tensor::new(one_shot_shape, output).unwrap(),
        h_n: Tensor::new(case.run.state_shape(cfg, w), session.h().data.to_vec()).unwrap(),
        c_n: session.c().map(|c| {
            Tensor::new(case.run.state_shape(cfg, cfg.hidden_size), c.data.to_vec()).unwrap()
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every chunk size 1..=L and one uneven chunking give the one-shot bits, on every tier.
    #[test]
    fn chunked_equals_one_shot(case in case_strategy()) {
        let b = build(&case);
        let mut model =
            Model::from_state_dict(case.config.clone(), &random_state_dict(&case.config, case.seed))
                .unwrap();
        for isa in available_tiers() {
            model.set_isa(isa).unwrap();
            let fi = b.forward_input();
            let one_shot = model.forward(&fi).unwrap();
            for k in 1..=case.run.seq {
                let chunked = run_chunked(&model, &fi, k).unwrap();
                assert_same(&chunked, &one_shot, &format!("{} chunk {k}", isa.name()));
            }
            let uneven = feed_uneven(&model, &case, &b, &case.uneven);
            assert_same(&uneven, &one_shot, &format!("{} chunks {:?}", isa.name(), case.uneven));
        }
    }
}

fn model(config: &Config, seed: u64) -> Model {
    Model::from_state_dict(config.clone(), &random_state_dict(config, seed)).unwrap()
}

fn lstmp() -> Config {
    Config {
        num_layers: 2,
        proj_size: 3,
        ..Config::new(Mode::Lstm, 4, 7)
    }
}

/// Step by step equals one shot for each mode, on the largest tier; and `output()` repeats the
/// last chunk's output.
#[test]
fn one_step_at_a_time() {
    for mode in Mode::ALL {
        let cfg = Config {
            num_layers: 3,
            ..Config::new(mode, 5, 9)
        };
        let m = model(&cfg, 11);
        let x = Tensor::new(vec![20, 2, 5], SplitRng::new(5).vec(200, 1.5)).unwrap();
        let one_shot = m.forward(&ForwardInput::new(x.view())).unwrap();
        let mut s = Session::with_batch(&m, 2).unwrap();
        let mut streamed = Vec::new();
        for step in x.data.chunks(10) {
            let out = s.step(step).unwrap().to_vec();
            assert_eq!(bits(&out), bits(s.output().data));
            streamed.extend(out);
        }
        assert_eq!(bits(&streamed), bits(&one_shot.output.data), "{mode}");
        assert_eq!(bits(s.h().data), bits(&one_shot.h_n.data), "{mode}");
    }
}

#[test]
fn snapshot_restore_and_fork() {
    let cfg = lstmp();
    let m = std::sync::Arc::new(model(&cfg, 3));
    let mut rng = SplitRng::new(9);
    let a = rng.vec(4, 1.0);
    let b = rng.vec(4, 1.0);
    let mut s = Session::new(m.clone()).unwrap();
    s.step(&a).unwrap();
    let snap = s.snapshot();
    assert_eq!(snap.h.shape, vec![2, 1, 3]);
    assert_eq!(snap.c.as_ref().unwrap().shape, vec![2, 1, 7]);
    let mut fork = s.fork();
    let after_b = s.step(&b).unwrap().to_vec();
    // The fork continues from the same state, independently.
    assert_eq!(bits(fork.step(&b).unwrap()), bits(&after_b));
    let other = fork.step(&a).unwrap().to_vec();
    // Restoring the snapshot rewinds to just after `a`.
    s.restore(&snap).unwrap();
    assert_eq!(bits(s.step(&b).unwrap()), bits(&after_b));
    assert_eq!(bits(s.step(&a).unwrap()), bits(&other));
    // Reset is a fresh sequence.
    s.reset();
    let mut fresh = Session::new(m.clone()).unwrap();
    assert_eq!(bits(s.step(&b).unwrap()), bits(fresh.step(&b).unwrap()));
    // set_state from the unbatched shapes of a 1-stream session.
    let h = Tensor::new(vec![2, 3], rng.vec(6, 1.0)).unwrap();
    let c = Tensor::new(vec![2, 7], rng.vec(14, 1.0)).unwrap();
    s.set_state(h.view(), Some(c.view())).unwrap();
    assert_eq!(s.h().data, &h.data[..]);
    assert_eq!(s.c().unwrap().data, &c.data[..]);
    let fi = ForwardInput::new(TensorView::new(&[1, 4], &a).unwrap())
        .with_h0(h.view())
        .with_c0(c.view());
    let one = m.forward(&fi).unwrap();
    assert_eq!(bits(s.step(&a).unwrap()), bits(&one.output.data));
}

#[test]
fn reset_row_leaves_other_rows() {
    let cfg = Config::new(Mode::Gru, 2, 4);
    let m = model(&cfg, 1);
    let mut s = Session::with_batch(&m, 3).unwrap();
    s.step(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let before = s.h().data.to_vec();
    s.reset_row(1).unwrap();
    let h = s.h().data;
    assert_eq!(&h[..4], &before[..4]);
    assert_eq!(&h[4..8], &[0.0; 4]);
    assert_eq!(&h[8..], &before[8..]);
    assert!(s.reset_row(3).is_err());
}

/// Streams with length 0 in a chunk neither advance nor produce output.
#[test]
fn zero_length_rows_do_not_advance() {
    let cfg = Config {
        num_layers: 2,
        ..Config::new(Mode::Lstm, 3, 5)
    };
    let m = model(&cfg, 2);
    let x = Tensor::new(vec![4, 3, 3], SplitRng::new(1).vec(36, 1.0)).unwrap();
    let mut s = Session::with_batch(&m, 3).unwrap();
    let before = s.snapshot();
    let out = s
        .feed_with_lengths(x.view(), &[0, 4, 2])
        .unwrap()
        .data
        .to_vec();
    let full = m
        .forward(&ForwardInput::new(x.view()).with_lengths(&[1, 4, 2]))
        .unwrap();
    for t in 0..4 {
        let row = |b: usize| &out[(t * 3 + b) * 5..(t * 3 + b + 1) * 5];
        assert_eq!(row(0), &[0.0; 5], "stream 0 has no input");
        assert_eq!(
            bits(row(1)),
            bits(&full.output.data[(t * 3 + 1) * 5..(t * 3 + 2) * 5])
        );
    }
    let h = s.h().data;
    for layer in 0..2 {
        assert_eq!(
            &h[layer * 15..layer * 15 + 5],
            &before.h.data[layer * 15..layer * 15 + 5]
        );
        assert_eq!(
            bits(&h[layer * 15 + 5..layer * 15 + 15]),
            bits(&full.h_n.data[layer * 15 + 5..layer * 15 + 15])
        );
    }
    // All streams idle: nothing runs, nothing changes.
    let snap = s.snapshot();
    let out = s.feed_with_lengths(x.view(), &[0, 0, 0]).unwrap();
    assert!(out.data.iter().all(|&v| v == 0.0));
    assert_eq!(s.snapshot(), snap);
}

fn message(e: Error) -> String {
    e.to_string()
}

#[test]
fn bidirectional_is_an_error() {
    let cfg = Config {
        bidirectional: true,
        ..Config::new(Mode::Lstm, 2, 3)
    };
    let m = model(&cfg, 1);
    let e = message(Session::new(&m).unwrap_err());
    assert!(e.contains("bidirectional"), "{e}");
    let x = Tensor::zeros(vec![3, 1, 2]);
    let e = message(run_chunked(&m, &ForwardInput::new(x.view()), 1).unwrap_err());
    assert!(e.contains("bidirectional"), "{e}");
}

#[test]
fn bad_input_errors_name_the_problem() {
    let cfg = lstmp();
    let m = model(&cfg, 1);
    let mut s = Session::with_batch(&m, 2).unwrap();
    let e = message(s.step(&[0.0; 4]).unwrap_err());
    assert!(e.contains("expected N * input_size = 2 * 4 = 8"), "{e}");
    let x = Tensor::zeros(vec![3, 1, 4]);
    let e = message(s.feed(x.view()).unwrap_err());
    assert!(e.contains("session has 2 streams"), "{e}");
    let x = Tensor::zeros(vec![3, 2, 4]);
    let e = message(s.feed_with_lengths(x.view(), &[1, 4]).unwrap_err());
    assert!(e.contains("lengths[1] = 4"), "{e}");
    let e = message(s.feed_with_lengths(x.view(), &[1]).unwrap_err());
    assert!(e.contains("one per stream"), "{e}");
    let h = Tensor::zeros(vec![2, 2, 7]);
    let e = message(s.set_state(h.view(), None).unwrap_err());
    assert!(
        e.contains("h has shape (2, 2, 7), expected (2, 2, 3)"),
        "{e}"
    );
    let h = Tensor::zeros(vec![2, 2, 3]);
    let e = message(s.set_state(h.view(), None).unwrap_err());
    assert!(e.contains("needs c"), "{e}");
    assert!(Session::with_batch(&m, 0).is_err());
    let mut one = Session::new(&m).unwrap();
    let x2 = Tensor::zeros(vec![3, 4]);
    let e = message(one.feed_with_lengths(x2.view(), &[3]).unwrap_err());
    assert!(e.contains("lengths need a 3-D chunk"), "{e}");
    // run_chunked reports bad input as the engine does.
    let x = Tensor::zeros(vec![3, 2, 5]);
    let e = message(run_chunked(&m, &ForwardInput::new(x.view()), 2).unwrap_err());
    assert!(e.contains("input_size = 4"), "{e}");
    let x = Tensor::zeros(vec![3, 2, 4]);
    let h0 = Tensor::zeros(vec![2, 2, 3]);
    let fi = ForwardInput::new(x.view()).with_h0(h0.view());
    let e = message(run_chunked(&m, &fi, 2).unwrap_err());
    assert!(e.contains("without c0"), "{e}");
    let c0 = Tensor::zeros(vec![2, 2, 6]);
    let e = message(run_chunked(&m, &fi.with_c0(c0.view()), 2).unwrap_err());
    assert!(e.contains("c0 has shape (2, 2, 6)"), "{e}");
    let e = message(run_chunked(&m, &ForwardInput::new(x.view()), 0).unwrap_err());
    assert!(e.contains("at least 1"), "{e}");
    let e = message(
        run_chunked(&m, &ForwardInput::new(x.view()).with_lengths(&[4, 1]), 2).unwrap_err(),
    );
    assert!(e.contains("lengths[0] = 4"), "{e}");
}

/// Shapes past the GEMM's blocking (input wider than its k block, more rows than its m block)
/// and a layer large enough for the engine to split a long call's steps across threads: the
/// chunks take other GEMM and threading paths than the one-shot run, and must still match it.
#[test]
fn large_shapes_match_across_paths() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let cases = [
        (
            Config {
                num_layers: 2,
                ..Config::new(Mode::Lstm, 300, 40)
            },
            20,
            30,
        ),
        (Config::new(Mode::Lstm, 300, 256), 1, 24),
        (Config::new(Mode::Gru, 520, 64), 17, 9),
    ];
    for (cfg, n, l) in cases {
        let mut m = model(&cfg, 4);
        let x = Tensor::new(
            vec![l, n, cfg.input_size],
            SplitRng::new(3).vec(l * n * cfg.input_size, 1.0),
        )
        .unwrap();
        let fi = ForwardInput::new(x.view());
        for isa in available_tiers() {
            m.set_isa(isa).unwrap();
            pool.install(|| {
                let one_shot = m.forward(&fi).unwrap();
                for k in [1, 2, 5, l - 1, l] {
                    let chunked = run_chunked(&m, &fi, k).unwrap();
                    assert_same(
                        &chunked,
                        &one_shot,
                        &format!("{cfg} {} chunk {k}", isa.name()),
                    );
                }
            });
        }
    }
}

/// `recur run --chunk K` writes the same file, byte for byte, as the one-shot `recur run`, on
/// PyTorch fixtures covering lengths, batch-first, unbatched input with state, prefixes and
/// `--mode`; a bidirectional model is a one-line error.
#[test]
fn cli_run_chunk_matches_one_shot() {
    let recur = env!("CARGO_BIN_EXE_recur");
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let run = |case: &str, chunk: Option<usize>| {
        let dir = fixtures.join(case);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let out = tmp.path().join(format!("{case}-{chunk:?}.safetensors"));
        let mut cmd = std::process::Command::new(recur);
        cmd.arg("run")
            .arg("--model")
            .arg(dir.join("model.safetensors"))
            .arg("--input")
            .arg(dir.join("input.safetensors"))
            .arg("--output")
            .arg(&out)
            .args(["--prefix", meta["prefix"].as_str().unwrap_or("")]);
        if let Some(mode) = meta["mode"].as_str() {
            cmd.args(["--mode", mode]);
        }
        if meta["batch_first"].as_bool() == Some(true) {
            cmd.arg("--batch-first");
        }
        if let Some(k) = chunk {
            cmd.args(["--chunk", &k.to_string()]);
        }
        let result = cmd.output().unwrap();
        (result, out)
    };
    for case in [
        "lstm_proj_l3_uni",
        "gru_l3_uni",
        "rnn_relu_l2_uni",
        "lengths_lstm_uni",
        "lengths_batch_first_lstm_l2",
        "batch_first_override_lstm_proj_l2",
        "unbatched_lstm_proj_h0",
        "h0_rnn_tanh_l2",
        "meta_and_cli_mode_gru",
        "seq1000_gru_l2",
    ] {
        let (one, one_path) = run(case, None);
        assert!(
            one.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&one.stderr)
        );
        let want = std::fs::read(&one_path).unwrap();
        for k in [1, 3, 64] {
            let (r, path) = run(case, Some(k));
            assert!(
                r.status.success(),
                "{case} --chunk {k}: {}",
                String::from_utf8_lossy(&r.stderr)
            );
            assert!(
                std::fs::read(&path).unwrap() == want,
                "{case} --chunk {k}: the output file differs"
            );
        }
    }
    let (r, path) = run("lstm_l1_bi", Some(2));
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("bidirectional"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!path.exists());
    let (r, _) = run("gru_l3_uni", Some(0));
    assert!(String::from_utf8_lossy(&r.stderr).contains("at least 1"));
}
