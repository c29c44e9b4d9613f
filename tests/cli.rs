//! The `recur` command line on models built in Rust: `run` against the float64 reference for
//! every mode, prefixes, `--mode`, `--batch-first`, `--threads`, weight dtypes, and `info`.

mod common;

use std::path::Path;

use common::*;
use recur::{reference, Config, ForwardInput, Mode, StateDict, Tensor};
use safetensors::tensor::Dtype;

/// SPEC §4: every output element within 1e-4 of float64.
const TOL: f64 = 1e-4;

/// A run's inputs, held so that the reference can borrow them.
struct Case {
    config: Config,
    sd: StateDict,
    input: Tensor,
    h0: Option<Tensor>,
    c0: Option<Tensor>,
    lengths: Option<Vec<usize>>,
}

impl Case {
    /// `seq` steps of `batch` elements (unbatched if `batch` is 0), seq-major unless the
    /// config is batch-first, with initial states if `with_state`.
    fn new(config: Config, seq: usize, batch: usize, with_state: bool, seed: u64) -> Case {
        let sd = state_dict(&config, seed, Dtype::F32);
        let shape = match (batch, config.batch_first) {
            (0, _) => vec![seq, config.input_size],
            (n, true) => vec![n, seq, config.input_size],
            (n, false) => vec![seq, n, config.input_size],
        };
        let states = config.directions() * config.num_layers;
        let state_shape = |w: usize| {
            if batch == 0 {
                vec![states, w]
            } else {
                vec![states, batch, w]
            }
        };
        let h0 =
            with_state.then(|| random_tensor(state_shape(config.output_hidden()), seed + 1, 0.5));
        let c0 = (with_state && config.mode == Mode::Lstm)
            .then(|| random_tensor(state_shape(config.hidden_size), seed + 2, 0.5));
        Case {
            input: random_tensor(shape, seed + 3, 1.0),
            config,
            sd,
            h0,
            c0,
            lengths: None,
        }
    }

    fn forward_input(&self) -> ForwardInput<'_> {
        ForwardInput {
            input: self.input.view(),
            h0: self.h0.as_ref().map(Tensor::view),
            c0: self.c0.as_ref().map(Tensor::view),
            lengths: self.lengths.as_deref(),
        }
    }

    fn write_input(&self, path: &Path) {
        let bytes = input_bytes(
            &self.input,
            self.h0.as_ref(),
            self.c0.as_ref(),
            self.lengths.as_deref(),
        );
        std::fs::write(path, bytes).unwrap();
    }

    /// Checks the output file against the float64 reference: names, dtypes, shapes, values.
    fn check_output(&self, path: &Path) {
        let out = read_f32_file(path);
        let want = reference::forward(&self.config, &self.sd, &self.forward_input());
        let mut names: Vec<&str> = out.keys().map(String::as_str).collect();
        names.sort_unstable();
        let expected_names: &[&str] = if self.config.mode == Mode::Lstm {
            &["c_n", "h_n", "output"]
        } else {
            &["h_n", "output"]
        };
        assert_eq!(names, expected_names);
        for (dtype, _, _) in out.values() {
            assert_eq!(*dtype, Dtype::F32);
        }
        let (_, shape, data) = &out["output"];
        assert_eq!(shape, &want.output_shape, "output shape");
        let d = max_abs_diff(data, &want.output);
        assert!(d <= TOL, "output differs from the reference by {d}");
        let (_, shape, data) = &out["h_n"];
        assert_eq!(shape, &want.h_n_shape, "h_n shape");
        let d = max_abs_diff(data, &want.h_n);
        assert!(d <= TOL, "h_n differs from the reference by {d}");
        if let Some(c_ref) = &want.c_n {
            let (_, shape, data) = &out["c_n"];
            let mut c_shape = want.h_n_shape.clone();
            *c_shape.last_mut().unwrap() = self.config.hidden_size;
            assert_eq!(shape, &c_shape, "c_n shape");
            let d = max_abs_diff(data, c_ref);
            assert!(d <= TOL, "c_n differs from the reference by {d}");
        }
    }
}

/// Runs `recur run` and asserts success.
fn run_ok(model: &Path, input: &Path, output: &Path, extra: &[&str]) {
    let mut args = vec![
        "run",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = recur(&args, &[]);
    assert!(
        out.status.success(),
        "recur {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config(mode: Mode, layers: usize, bidirectional: bool, proj: usize) -> Config {
    Config {
        num_layers: layers,
        bidirectional,
        proj_size: proj,
        ..Config::new(mode, 3, 5)
    }
}

#[test]
fn run_matches_reference_for_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (config(Mode::RnnTanh, 1, false, 0), vec![]),
        (
            config(Mode::RnnRelu, 2, true, 0),
            vec![("mode", "RNN_RELU")],
        ),
        (config(Mode::Lstm, 2, true, 0), vec![]),
        (config(Mode::Lstm, 2, false, 2), vec![("mode", "LSTM")]),
        (
            config(Mode::Gru, 3, true, 0),
            vec![("mode", "GRU"), ("format", "pt")],
        ),
        (
            Config {
                bias: false,
                ..config(Mode::Gru, 1, false, 0)
            },
            vec![],
        ),
    ];
    for (i, (cfg, meta)) in cases.into_iter().enumerate() {
        for with_state in [false, true] {
            let case = Case::new(cfg.clone(), 6, 3, with_state, 10 + i as u64);
            let (model, input, output) = (
                dir.path().join(format!("m{i}.safetensors")),
                dir.path().join(format!("in{i}.safetensors")),
                dir.path().join(format!("out{i}.safetensors")),
            );
            std::fs::write(&model, model_bytes(&case.sd, "", Dtype::F32, &meta)).unwrap();
            case.write_input(&input);
            run_ok(&model, &input, &output, &[]);
            case.check_output(&output);
        }
    }
}

#[test]
fn run_with_lengths_and_unbatched_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let (input, output) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    let mut case = Case::new(config(Mode::Lstm, 2, true, 0), 7, 4, true, 3);
    std::fs::write(&model, model_bytes(&case.sd, "", Dtype::F32, &[])).unwrap();
    case.lengths = Some(vec![7, 2, 5, 1]);
    case.write_input(&input);
    run_ok(&model, &input, &output, &[]);
    case.check_output(&output);

    // Lengths as I32 read the same.
    let lens = RawTensor::i32s("lengths", vec![4], &[7, 2, 5, 1]);
    let mut tensors = vec![
        RawTensor::floats(
            "input",
            Dtype::F32,
            case.input.shape.clone(),
            &case.input.data,
        ),
        lens,
    ];
    let h0 = case.h0.as_ref().unwrap();
    let c0 = case.c0.as_ref().unwrap();
    tensors.push(RawTensor::floats(
        "h0",
        Dtype::F32,
        h0.shape.clone(),
        &h0.data,
    ));
    tensors.push(RawTensor::floats(
        "c0",
        Dtype::F32,
        c0.shape.clone(),
        &c0.data,
    ));
    std::fs::write(&input, safetensors_bytes(&tensors, &[])).unwrap();
    run_ok(&model, &input, &output, &[]);
    case.check_output(&output);

    // Unbatched (L, I) input gives unbatched outputs.
    let case = Case::new(config(Mode::Gru, 2, false, 0), 5, 0, true, 4);
    std::fs::write(&model, model_bytes(&case.sd, "", Dtype::F32, &[])).unwrap();
    case.write_input(&input);
    run_ok(&model, &input, &output, &[]);
    case.check_output(&output);
    assert_eq!(read_f32_file(&output)["output"].1, vec![5, 5]);
}

#[test]
fn prefix_selects_one_module_of_a_larger_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    let enc = Case::new(config(Mode::Gru, 1, true, 0), 4, 2, false, 21);
    let dec = Case::new(config(Mode::Lstm, 2, false, 0), 4, 2, false, 22);
    let mut tensors = model_tensors(&enc.sd, "encoder.rnn.", Dtype::F32);
    tensors.extend(model_tensors(&dec.sd, "decoder.rnn.", Dtype::F32));
    tensors.push(RawTensor::floats(
        "head.weight",
        Dtype::F32,
        vec![2, 5],
        &[0.5; 10],
    ));
    let model = dir.path().join("m.safetensors");
    std::fs::write(&model, safetensors_bytes(&tensors, &[])).unwrap();
    let (input, output) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );

    enc.write_input(&input);
    run_ok(&model, &input, &output, &["--prefix", "encoder.rnn"]); // no trailing dot
    enc.check_output(&output);
    dec.write_input(&input);
    run_ok(&model, &input, &output, &["--prefix", "decoder.rnn."]);
    dec.check_output(&output);
}

#[test]
fn mode_flag_chooses_relu_for_a_one_gate_model() {
    let dir = tempfile::tempdir().unwrap();
    let relu = Case::new(config(Mode::RnnRelu, 2, false, 0), 5, 2, false, 31);
    let model = dir.path().join("m.safetensors");
    std::fs::write(&model, model_bytes(&relu.sd, "", Dtype::F32, &[])).unwrap();
    let (input, output) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    relu.write_input(&input);
    run_ok(&model, &input, &output, &["--mode", "RNN_RELU"]);
    relu.check_output(&output);

    // Without --mode the same file is RNN_TANH, PyTorch's default.
    let tanh = Case {
        config: config(Mode::RnnTanh, 2, false, 0),
        ..relu
    };
    run_ok(&model, &input, &output, &[]);
    tanh.check_output(&output);
    run_ok(&model, &input, &output, &["--mode", "rnn_tanh"]);
    tanh.check_output(&output);
}

#[test]
fn batch_first_from_flag_and_from_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        batch_first: true,
        ..config(Mode::Lstm, 2, true, 0)
    };
    let case = Case::new(cfg, 6, 3, true, 41);
    let (input, output) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    case.write_input(&input);

    let plain = dir.path().join("plain.safetensors");
    std::fs::write(&plain, model_bytes(&case.sd, "", Dtype::F32, &[])).unwrap();
    run_ok(&plain, &input, &output, &["--batch-first"]);
    case.check_output(&output);
    assert_eq!(read_f32_file(&output)["output"].1, vec![3, 6, 10]);

    let meta = dir.path().join("meta.safetensors");
    let tagged = model_bytes(&case.sd, "", Dtype::F32, &[("batch_first", "True")]);
    std::fs::write(&meta, tagged).unwrap();
    run_ok(&meta, &input, &output, &[]);
    case.check_output(&output);
}

#[test]
fn thread_counts_give_bit_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    for (i, cfg) in [
        config(Mode::Lstm, 2, true, 0),
        config(Mode::Gru, 1, false, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let mut case = Case::new(cfg, 9, 40, true, 51 + i as u64);
        case.lengths = Some((0..40).map(|b| 1 + b % 9).collect());
        let model = dir.path().join("m.safetensors");
        std::fs::write(&model, model_bytes(&case.sd, "", Dtype::F32, &[])).unwrap();
        let input = dir.path().join("in.safetensors");
        case.write_input(&input);
        let mut files = Vec::new();
        for threads in ["1", "2", "3", "0"] {
            let output = dir.path().join(format!("out{threads}.safetensors"));
            run_ok(&model, &input, &output, &["--threads", threads]);
            files.push(std::fs::read(&output).unwrap());
        }
        case.check_output(&dir.path().join("out1.safetensors"));
        for f in &files[1..] {
            assert!(f == &files[0], "outputs differ between thread counts");
        }
    }
}

#[test]
fn reduced_and_double_precision_weights_load() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in [Dtype::F16, Dtype::BF16, Dtype::F64] {
        let cfg = config(Mode::Lstm, 2, true, 2);
        let mut case = Case::new(cfg, 5, 2, true, 61);
        // The reference reads the weights as the file holds them.
        case.sd = state_dict(&case.config, 61, dtype);
        let model = dir.path().join("m.safetensors");
        std::fs::write(&model, model_bytes(&case.sd, "rnn.", dtype, &[])).unwrap();
        let (input, output) = (
            dir.path().join("in.safetensors"),
            dir.path().join("out.safetensors"),
        );
        // Input in the same dtype.
        let inp = round_input(&case.input, dtype);
        case.input = inp;
        let tensors = vec![
            RawTensor::floats("input", dtype, case.input.shape.clone(), &case.input.data),
            RawTensor::floats(
                "h0",
                dtype,
                case.h0.as_ref().unwrap().shape.clone(),
                &round_input(case.h0.as_ref().unwrap(), dtype).data,
            ),
            RawTensor::floats(
                "c0",
                dtype,
                case.c0.as_ref().unwrap().shape.clone(),
                &round_input(case.c0.as_ref().unwrap(), dtype).data,
            ),
        ];
        case.h0 = Some(round_input(case.h0.as_ref().unwrap(), dtype));
        case.c0 = Some(round_input(case.c0.as_ref().unwrap(), dtype));
        std::fs::write(&input, safetensors_bytes(&tensors, &[])).unwrap();
        run_ok(&model, &input, &output, &["--prefix", "rnn."]);
        case.check_output(&output);
    }
}

fn round_input(t: &Tensor, dtype: Dtype) -> Tensor {
    Tensor::new(
        t.shape.clone(),
        t.data.iter().map(|&v| round_through(v, dtype)).collect(),
    )
    .unwrap()
}

#[test]
fn output_replaces_an_existing_file_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let case = Case::new(config(Mode::Gru, 1, false, 0), 3, 2, false, 71);
    let model = dir.path().join("m.safetensors");
    std::fs::write(&model, model_bytes(&case.sd, "", Dtype::F32, &[])).unwrap();
    let (input, output) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    case.write_input(&input);
    std::fs::write(&output, b"old contents").unwrap();
    run_ok(&model, &input, &output, &[]);
    case.check_output(&output);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["in.safetensors", "m.safetensors", "out.safetensors"]
    );
}

#[test]
fn info_prints_the_configuration_and_tier() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Mode::Lstm, 2, true, 2);
    let sd = state_dict(&cfg, 81, Dtype::F32);
    let model = dir.path().join("m.safetensors");
    std::fs::write(
        &model,
        model_bytes(&sd, "enc.lstm.", Dtype::F16, &[("batch_first", "true")]),
    )
    .unwrap();
    let out = recur(
        &[
            "info",
            "--model",
            model.to_str().unwrap(),
            "--prefix",
            "enc.lstm",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let params: usize = sd.values().map(|t| t.data.len()).sum();
    for line in [
        "mode: LSTM".to_string(),
        "input_size: 3".into(),
        "hidden_size: 5".into(),
        "num_layers: 2".into(),
        "bias: true".into(),
        "batch_first: true".into(),
        "bidirectional: true".into(),
        "proj_size: 2".into(),
        format!("parameters: {params}"),
        format!("isa: {}", recur::Isa::selected().unwrap()),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    assert!(text.contains("packed_recurrent_weight_bytes: "), "{text}");

    // Every available tier can be forced, and info reports it.
    for isa in recur::Isa::ALL.into_iter().filter(|i| i.is_available()) {
        let out = recur(
            &[
                "info",
                "--model",
                model.to_str().unwrap(),
                "--prefix",
                "enc.lstm.",
            ],
            &[("RECUR_ISA", isa.name())],
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(&format!("isa: {isa}\n")), "{text}");
    }

    // --mode agreeing with the tensors is accepted.
    let out = recur(
        &[
            "info",
            "--model",
            model.to_str().unwrap(),
            "--prefix",
            "enc.lstm.",
            "--mode",
            "LSTM",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_tier_gives_the_reference_results() {
    let dir = tempfile::tempdir().unwrap();
    let case = Case::new(config(Mode::Lstm, 2, true, 3), 6, 9, true, 91);
    let model = dir.path().join("m.safetensors");
    std::fs::write(&model, model_bytes(&case.sd, "", Dtype::F32, &[])).unwrap();
    let (input, output) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    case.write_input(&input);
    for isa in recur::Isa::ALL {
        if !isa.is_available() {
            eprintln!("skipping tier {isa}: not available on this machine");
            continue;
        }
        let args = [
            "run",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ];
        let out = recur(&args, &[("RECUR_ISA", isa.name())]);
        assert!(
            out.status.success(),
            "{isa}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        case.check_output(&output);
    }
}

#[test]
fn help_and_version_succeed() {
    for args in [
        &["--help"][..],
        &["--version"],
        &["run", "--help"],
        &["info", "--help"],
    ] {
        let out = recur(args, &[]);
        assert!(out.status.success(), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}
