//! The `recur` command line on models built in Rust: `run` against the float64 reference for
//! every mode, prefixes, `--mode`, `--batch-first`, `--threads`, weight dtypes, and `info`.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use recur::{reference, Config, Mode, StateDict, Tensor};
use safetensors::tensor::Dtype;

/// SPEC §4: every output element within 1e-4 of float64.
const TOL: f64 = 1e-4;

/// A model and a run's inputs, held so that the reference can borrow them.
struct Case {
    config: Config,
    sd: StateDict,
    inputs: InputFile,
}

impl Case {
    /// `seq` steps of `batch` elements (unbatched if `batch` is 0), seq-major unless the
    /// config is batch-first, with initial states if `with_state`.
    fn new(config: Config, seq: usize, batch: usize, with_state: bool, seed: u64) -> Case {
        let sd = state_dict(&config, seed, Dtype::F32);
        let run = Run::new(seq, batch, with_state);
        let h0 = with_state.then(|| {
            random_tensor(
                run.state_shape(&config, config.output_hidden()),
                seed + 1,
                0.5,
            )
        });
        let c0 = (with_state && config.mode == Mode::Lstm)
            .then(|| random_tensor(run.state_shape(&config, config.hidden_size), seed + 2, 0.5));
        let inputs = InputFile {
            input: random_tensor(run.input_shape(&config), seed + 3, 1.0),
            h0,
            c0,
            lengths: None,
        };
        Case { config, sd, inputs }
    }

    fn write_input(&self, path: &Path) {
        std::fs::write(path, input_file_bytes(&self.inputs)).unwrap();
    }

    /// Writes the model (f32, no prefix, no metadata) and the input into `dir`; returns the
    /// paths of the model, the input and the output to be.
    fn write_files(&self, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let (model, input, output) = paths(dir);
        std::fs::write(&model, model_bytes(&self.sd, "", Dtype::F32, &[])).unwrap();
        self.write_input(&input);
        (model, input, output)
    }

    /// Runs `recur run` on these files with `extra` arguments, asserts that it succeeds
    /// silently, and checks the output against the reference.
    fn run_and_check(&self, model: &Path, input: &Path, output: &Path, extra: &[&str]) {
        run_ok(model, input, output, extra);
        self.check_output(output);
    }

    /// Checks the output file against the float64 reference: names, dtypes, shapes, values.
    fn check_output(&self, path: &Path) {
        let out = read_f32_file(path);
        let want = reference::forward(&self.config, &self.sd, &self.inputs.forward_input());
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

/// The model, input and output paths of a run in `dir`.
fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("m.safetensors"),
        dir.join("in.safetensors"),
        dir.join("out.safetensors"),
    )
}

/// Runs `recur run` and asserts success.
fn run_ok(model: &Path, input: &Path, output: &Path, extra: &[&str]) {
    run_ok_env(model, input, output, extra, &[]);
}

/// Runs `recur run` with extra environment variables and asserts success, silently.
fn run_ok_env(model: &Path, input: &Path, output: &Path, extra: &[&str], env: &[(&str, &str)]) {
    let mut args = run_args(model, input, output);
    args.extend_from_slice(extra);
    let out = recur(&args, env);
    assert_success(&out, &format!("recur {args:?} {env:?}"));
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
            case.run_and_check(&model, &input, &output, &[]);
        }
    }
}

#[test]
fn run_with_lengths_and_unbatched_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut case = Case::new(config(Mode::Lstm, 2, true, 0), 7, 4, true, 3);
    case.inputs.lengths = Some(vec![7, 2, 5, 1]);
    let (model, input, output) = case.write_files(dir.path());
    case.run_and_check(&model, &input, &output, &[]);

    // Lengths as I32 read the same.
    let mut tensors = input_tensors(&case.inputs, Dtype::F32);
    tensors.retain(|t| t.name != "lengths");
    tensors.push(RawTensor::i32s("lengths", vec![4], &[7, 2, 5, 1]));
    assert_eq!(tensors.len(), 4, "input, h0, c0 and lengths");
    std::fs::write(&input, safetensors_bytes(&tensors, &[])).unwrap();
    case.run_and_check(&model, &input, &output, &[]);

    // Unbatched (L, I) input gives unbatched outputs.
    let case = Case::new(config(Mode::Gru, 2, false, 0), 5, 0, true, 4);
    case.write_files(dir.path());
    case.run_and_check(&model, &input, &output, &[]);
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
    let (model, input, output) = paths(dir.path());
    std::fs::write(&model, safetensors_bytes(&tensors, &[])).unwrap();

    enc.write_input(&input);
    enc.run_and_check(&model, &input, &output, &["--prefix", "encoder.rnn"]); // no trailing dot
    dec.write_input(&input);
    dec.run_and_check(&model, &input, &output, &["--prefix", "decoder.rnn."]);
}

#[test]
fn mode_flag_chooses_relu_for_a_one_gate_model() {
    let dir = tempfile::tempdir().unwrap();
    let relu = Case::new(config(Mode::RnnRelu, 2, false, 0), 5, 2, false, 31);
    let (model, input, output) = relu.write_files(dir.path());
    relu.run_and_check(&model, &input, &output, &["--mode", "RNN_RELU"]);

    // Without --mode the same file is RNN_TANH, PyTorch's default.
    let tanh = Case {
        config: config(Mode::RnnTanh, 2, false, 0),
        ..relu
    };
    tanh.run_and_check(&model, &input, &output, &[]);
    tanh.run_and_check(&model, &input, &output, &["--mode", "rnn_tanh"]);
}

#[test]
fn batch_first_from_flag_and_from_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        batch_first: true,
        ..config(Mode::Lstm, 2, true, 0)
    };
    let case = Case::new(cfg, 6, 3, true, 41);
    let (_, input, output) = paths(dir.path());
    case.write_input(&input);

    let plain = dir.path().join("plain.safetensors");
    std::fs::write(&plain, model_bytes(&case.sd, "", Dtype::F32, &[])).unwrap();
    case.run_and_check(&plain, &input, &output, &["--batch-first"]);
    assert_eq!(read_f32_file(&output)["output"].1, vec![3, 6, 10]);

    let meta = dir.path().join("meta.safetensors");
    let tagged = model_bytes(&case.sd, "", Dtype::F32, &[("batch_first", "True")]);
    std::fs::write(&meta, tagged).unwrap();
    case.run_and_check(&meta, &input, &output, &[]);
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
        case.inputs.lengths = Some((0..40).map(|b| 1 + b % 9).collect());
        let (model, input, _) = case.write_files(dir.path());
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
        let (model, input, output) = paths(dir.path());
        std::fs::write(&model, model_bytes(&case.sd, "rnn.", dtype, &[])).unwrap();
        // Input in the same dtype.
        let inputs = &mut case.inputs;
        for t in [
            Some(&mut inputs.input),
            inputs.h0.as_mut(),
            inputs.c0.as_mut(),
        ] {
            let t = t.expect("input, h0 and c0");
            *t = round_input(t, dtype);
        }
        let tensors = input_tensors(inputs, dtype);
        std::fs::write(&input, safetensors_bytes(&tensors, &[])).unwrap();
        case.run_and_check(&model, &input, &output, &["--prefix", "rnn."]);
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
    let (model, input, output) = case.write_files(dir.path());
    std::fs::write(&output, b"old contents").unwrap();
    case.run_and_check(&model, &input, &output, &[]);
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
    // `recur info` on the model with `extra` arguments and `env`: it succeeds; its stdout.
    let info = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["info", "--model", model.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = recur(&args, env);
        assert_success(&out, &format!("recur {args:?} {env:?}"));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = info(&["--prefix", "enc.lstm"], &[]);
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
    for isa in available_tiers() {
        let text = info(&["--prefix", "enc.lstm."], &[("RECUR_ISA", isa.name())]);
        assert!(text.contains(&format!("isa: {isa}\n")), "{text}");
    }

    // --mode agreeing with the tensors is accepted.
    info(&["--prefix", "enc.lstm.", "--mode", "LSTM"], &[]);
}

#[test]
fn every_tier_gives_the_reference_results() {
    let dir = tempfile::tempdir().unwrap();
    let case = Case::new(config(Mode::Lstm, 2, true, 3), 6, 9, true, 91);
    let (model, input, output) = case.write_files(dir.path());
    for isa in available_tiers() {
        run_ok_env(&model, &input, &output, &[], &[("RECUR_ISA", isa.name())]);
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
