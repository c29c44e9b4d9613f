//! One test per kind of mistake a user makes with `recur run` / `recur info`: each exits
//! non-zero with one line `error: ...` naming the problem, never panics, and leaves an existing
//! output file byte-identical (and no temporary file behind).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use recur::{Config, Mode, StateDict, Tensor};
use safetensors::tensor::Dtype;

/// A scratch directory with a valid model, a valid input and an existing output file.
struct Setup {
    dir: tempfile::TempDir,
    config: Config,
    sd: StateDict,
}

impl Setup {
    /// A 2-layer bidirectional LSTM (input 3, hidden 4) with a valid input (L=5, N=2).
    fn lstm() -> Setup {
        Setup::with(Config {
            num_layers: 2,
            bidirectional: true,
            ..Config::new(Mode::Lstm, 3, 4)
        })
    }

    /// A 2-layer GRU (input 3, hidden 4).
    fn gru() -> Setup {
        Setup::with(Config {
            num_layers: 2,
            ..Config::new(Mode::Gru, 3, 4)
        })
    }

    fn with(config: Config) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let sd = state_dict(&config, 7, Dtype::F32);
        let s = Setup { dir, config, sd };
        s.write_weights("", &[]);
        s.write_input(&input_bytes(&s.good_input(), None, None, None));
        std::fs::write(s.output(), OLD_OUTPUT).unwrap();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn model(&self) -> PathBuf {
        self.path("model.safetensors")
    }
    fn input(&self) -> PathBuf {
        self.path("input.safetensors")
    }
    fn output(&self) -> PathBuf {
        self.path("output.safetensors")
    }
    fn write_model(&self, bytes: &[u8]) {
        std::fs::write(self.model(), bytes).unwrap();
    }
    fn write_input(&self, bytes: &[u8]) {
        std::fs::write(self.input(), bytes).unwrap();
    }
    /// Writes the model file: the setup's weights (f32) under `prefix`, with `metadata`.
    fn write_weights(&self, prefix: &str, metadata: &[(&str, &str)]) {
        self.write_model(&model_bytes(&self.sd, prefix, Dtype::F32, metadata));
    }
    /// Writes the model file holding just `tensors`.
    fn write_model_tensors(&self, tensors: &[RawTensor]) {
        self.write_model(&safetensors_bytes(tensors, &[]));
    }
    /// Writes the input file holding just `tensors`.
    fn write_input_tensors(&self, tensors: &[RawTensor]) {
        self.write_input(&safetensors_bytes(tensors, &[]));
    }

    /// A valid `(L=5, N=2, I)` input.
    fn good_input(&self) -> Tensor {
        random_tensor(vec![5, 2, self.config.input_size], 3, 1.0)
    }

    /// The state shape `(D*layers, 2, w)` of the good input.
    fn state(&self, w: usize) -> Tensor {
        let states = self.config.directions() * self.config.num_layers;
        random_tensor(vec![states, 2, w], 5, 0.5)
    }

    /// The model's tensors (f32, no prefix), to mutate.
    fn tensors(&self) -> Vec<RawTensor> {
        model_tensors(&self.sd, "", Dtype::F32)
    }

    /// `recur run` with the setup's files and `extra` arguments must fail as described.
    fn run_fails(&self, extra: &[&str], words: &[&str]) {
        self.run_fails_env(extra, &[], words);
    }

    fn run_fails_env(&self, extra: &[&str], env: &[(&str, &str)], words: &[&str]) {
        let (m, i, o) = (self.model(), self.input(), self.output());
        let mut args = run_args(&m, &i, &o);
        args.extend_from_slice(extra);
        self.fails(&args, env, words);
    }

    /// Runs `args` and checks the failure contract.
    fn fails(&self, args: &[&str], env: &[(&str, &str)], words: &[&str]) {
        let out = recur(args, env);
        eprintln!("recur {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_error(&out, words);
        assert!(
            out.stdout.is_empty(),
            "stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_output_untouched(&self.output(), self.dir.path());
    }

    /// `recur info` on the setup's model must fail as described.
    fn info_fails(&self, extra: &[&str], words: &[&str]) {
        let m = self.model();
        let mut args = vec!["info", "--model", m.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.fails(&args, &[], words);
    }
}

/// The output file still holds [`OLD_OUTPUT`] and no temporary file is left in `dir`.
fn assert_output_untouched(output: &Path, dir: &Path) {
    assert_eq!(
        std::fs::read(output).unwrap(),
        OLD_OUTPUT,
        "output file changed"
    );
    assert_no_temp_files(dir);
}

/// A model file from `tensors` after dropping the named ones.
fn without(tensors: Vec<RawTensor>, names: &[&str]) -> Vec<RawTensor> {
    tensors
        .into_iter()
        .filter(|t| !names.contains(&t.name.as_str()))
        .collect()
}

/// Replaces the tensor `name` by one of `shape` (f32, filled with 0.1).
fn reshaped(tensors: Vec<RawTensor>, name: &str, shape: Vec<usize>) -> Vec<RawTensor> {
    tensors
        .into_iter()
        .map(|t| {
            if t.name == name {
                let n = shape.iter().product();
                RawTensor::floats(name, Dtype::F32, shape.clone(), &vec![0.1; n])
            } else {
                t
            }
        })
        .collect()
}

/// A safetensors file with a hand-written JSON header and `data` bytes.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

// ---- Model files that are not (whole) safetensors files.

#[test]
fn truncated_model() {
    let s = Setup::lstm();
    let good = model_bytes(&s.sd, "", Dtype::F32, &[]);
    // Cut inside the tensor data, and inside the header.
    s.write_model(&good[..good.len() - 100]);
    s.run_fails(
        &[],
        &[
            "model.safetensors",
            "not a valid safetensors file",
            "truncated",
        ],
    );
    s.write_model(&good[..40]);
    s.run_fails(
        &[],
        &["not a valid safetensors file", "header", "truncated"],
    );
    s.write_model(&good[..5]);
    s.run_fails(&[], &["too short"]);
}

#[test]
fn garbage_model() {
    let s = Setup::lstm();
    let garbage: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    s.write_model(&garbage);
    s.run_fails(&[], &["not a valid safetensors file"]);
    s.write_model(b"\x10\x00\x00\x00\x00\x00\x00\x00this is not json");
    s.run_fails(&[], &["not valid JSON"]);
    s.write_model(&raw_file("[1, 2, 3]", b""));
    s.run_fails(&[], &["not a JSON object"]);
    s.write_model(&raw_file("\u{0}\u{ff}xx", b""));
    s.run_fails(&[], &["not a valid safetensors file"]);
}

#[test]
fn empty_model_file() {
    let s = Setup::lstm();
    s.write_model(b"");
    s.run_fails(&[], &["model.safetensors", "empty"]);
}

#[test]
fn header_claiming_a_huge_size() {
    let s = Setup::lstm();
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    s.write_model(&bytes);
    s.run_fails(&[], &["header claims 18446744073709551615 bytes"]);

    // A valid header whose tensor claims an enormous shape over 16 bytes of data.
    let header = r#"{"weight_ih_l0":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}}"#;
    s.write_model(&raw_file(header, &[0; 16]));
    s.run_fails(
        &[],
        &[
            "weight_ih_l0",
            "(1099511627776, 1099511627776)",
            "overflows",
        ],
    );
    let header =
        r#"{"weight_ih_l0":{"dtype":"F32","shape":[1048576,1048576],"data_offsets":[0,16]}}"#;
    s.write_model(&raw_file(header, &[0; 16]));
    s.run_fails(&[], &["weight_ih_l0", "only 16 bytes"]);
    // Offsets claiming the whole address space.
    let header = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"U8","shape":[18446744073709551600],"data_offsets":[16,18446744073709551615]}}"#;
    s.write_model(&raw_file(header, &[0; 16]));
    s.run_fails(&[], &["tensor b"]);
}

#[test]
fn tensor_offsets_past_the_end() {
    let s = Setup::lstm();
    let header = r#"{"weight_ih_l0":{"dtype":"F32","shape":[4],"data_offsets":[0,1000]}}"#;
    s.write_model(&raw_file(header, &[0; 16]));
    s.run_fails(&[], &["weight_ih_l0", "data_offsets [0, 1000]", "16 bytes"]);
    // Offsets that do not match the shape.
    let header = r#"{"weight_ih_l0":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#;
    s.write_model(&raw_file(header, &[0; 16]));
    s.run_fails(
        &[],
        &["weight_ih_l0", "shape (2,)", "needs 8 bytes", "span 16"],
    );
    // Overlapping tensors.
    let header = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
    s.write_model(&raw_file(header, &[0; 16]));
    s.run_fails(&[], &["tensor b", "data_offsets"]);
}

// ---- Model files with the wrong tensors.

#[test]
fn missing_weight_hh() {
    let s = Setup::lstm();
    s.write_model_tensors(&without(s.tensors(), &["weight_hh_l0"]));
    s.run_fails(&[], &["missing tensor weight_hh_l0"]);
    s.write_model_tensors(&without(s.tensors(), &["weight_hh_l1_reverse"]));
    s.run_fails(
        &[],
        &[
            "missing tensor weight_hh_l1_reverse",
            "expected shape (16, 4)",
        ],
    );
}

#[test]
fn missing_bias_hh_while_bias_ih_present() {
    let s = Setup::lstm();
    s.write_model_tensors(&without(s.tensors(), &["bias_hh_l1"]));
    s.run_fails(&[], &["missing tensor bias_hh_l1", "(16,)"]);
}

#[test]
fn missing_layer_in_the_middle() {
    let s = Setup::with(Config {
        num_layers: 3,
        ..Config::new(Mode::Gru, 3, 4)
    });
    let names = ["weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1"];
    s.write_model_tensors(&without(s.tensors(), &names));
    s.run_fails(&[], &["missing tensor weight_ih_l1", "layer 2"]);
}

#[test]
fn weight_hh_rows_not_a_gate_multiple() {
    let s = Setup::lstm();
    s.write_model_tensors(&reshaped(s.tensors(), "weight_hh_l0", vec![8, 4]));
    s.run_fails(&[], &["weight_hh_l0", "(8, 4)", "G*hidden_size"]);
    s.write_model_tensors(&reshaped(s.tensors(), "weight_hh_l0", vec![16]));
    s.run_fails(&[], &["weight_hh_l0", "(16,)", "2-D"]);
}

#[test]
fn layer_one_weight_ih_of_the_wrong_width() {
    let s = Setup::lstm();
    s.write_model_tensors(&reshaped(s.tensors(), "weight_ih_l1", vec![16, 4]));
    s.run_fails(
        &[],
        &["weight_ih_l1", "has shape (16, 4)", "expected (16, 8)"],
    );
}

#[test]
fn bias_of_the_wrong_length() {
    let s = Setup::gru();
    s.write_model_tensors(&reshaped(s.tensors(), "bias_ih_l0", vec![11]));
    s.run_fails(&[], &["bias_ih_l0", "(11,)", "expected (12,)"]);
}

#[test]
fn projection_of_the_wrong_shape() {
    let s = Setup::with(Config {
        proj_size: 2,
        ..Config::new(Mode::Lstm, 3, 4)
    });
    s.write_model_tensors(&reshaped(s.tensors(), "weight_hr_l0", vec![3, 4]));
    s.run_fails(&[], &["weight_hr_l0", "(3, 4)", "weight_hh_l0"]);
}

#[test]
fn unexpected_tensor_in_the_module() {
    let s = Setup::gru();
    let mut t = s.tensors();
    t.push(RawTensor::floats(
        "head.weight",
        Dtype::F32,
        vec![2],
        &[1.0, 2.0],
    ));
    s.write_model_tensors(&t);
    s.run_fails(&[], &["unexpected tensor head.weight", "--prefix"]);
}

#[test]
fn integer_weights() {
    let s = Setup::gru();
    let t: Vec<RawTensor> = s
        .tensors()
        .into_iter()
        .map(|t| {
            if t.name == "bias_hh_l1" {
                RawTensor::floats("bias_hh_l1", Dtype::I32, t.shape.clone(), &[1.0; 12])
            } else {
                t
            }
        })
        .collect();
    s.write_model_tensors(&t);
    s.run_fails(&[], &["bias_hh_l1", "dtype I32"]);
}

// ---- Metadata that contradicts the tensors.

#[test]
fn metadata_mode_contradicting_the_tensors() {
    let s = Setup::gru();
    s.write_weights("", &[("mode", "LSTM")]);
    s.run_fails(
        &[],
        &["metadata mode = \"LSTM\"", "GRU", "weight_hh_l0", "(12, 4)"],
    );
    s.write_weights("", &[("mode", "TRANSFORMER")]);
    s.run_fails(&[], &["metadata mode = \"TRANSFORMER\""]);
}

#[test]
fn metadata_batch_first_not_a_boolean() {
    let s = Setup::gru();
    s.write_weights("", &[("batch_first", "maybe")]);
    s.run_fails(&[], &["batch_first", "\"maybe\""]);
}

#[test]
fn metadata_sizes_contradicting_the_tensors() {
    let s = Setup::lstm();
    for (key, value, says) in [
        ("hidden_size", "99", "hidden_size = 4"),
        ("input_size", "7", "input_size = 3"),
        ("num_layers", "1", "num_layers = 2"),
        ("bidirectional", "false", "bidirectional = true"),
        ("bias", "False", "bias = true"),
        ("proj_size", "2", "proj_size = 0"),
    ] {
        s.write_weights("", &[(key, value)]);
        let quoted = format!("metadata {key} = \"{value}\"");
        s.run_fails(&[], &[&quoted, says]);
    }
    s.write_weights("", &[("hidden_size", "four")]);
    s.run_fails(&[], &["hidden_size", "\"four\""]);
}

#[test]
fn metadata_nonlinearity_contradicting_the_mode() {
    let s = Setup::with(Config::new(Mode::RnnTanh, 3, 4));
    let meta = [("mode", "RNN_TANH"), ("nonlinearity", "relu")];
    s.write_weights("", &meta);
    s.run_fails(&[], &["nonlinearity", "relu", "RNN_TANH"]);
}

#[test]
fn mode_flag_contradicting_metadata_or_tensors() {
    let s = Setup::with(Config::new(Mode::RnnTanh, 3, 4));
    s.write_weights("", &[("mode", "RNN_TANH")]);
    s.run_fails(
        &["--mode", "RNN_RELU"],
        &["requested mode RNN_RELU", "metadata mode = \"RNN_TANH\""],
    );
    s.run_fails(&["--mode", "LSTM"], &["requested mode LSTM", "RNN_TANH"]);
    let g = Setup::gru();
    g.run_fails(
        &["--mode", "LSTM"],
        &["requested mode LSTM", "GRU", "weight_hh_l0"],
    );
    g.info_fails(&["--mode", "RNN_TANH"], &["requested mode RNN_TANH", "GRU"]);
}

// ---- Inputs that do not fit the model.

#[test]
fn wrong_input_width() {
    let s = Setup::lstm();
    s.write_input(&input_bytes(
        &random_tensor(vec![5, 2, 4], 1, 1.0),
        None,
        None,
        None,
    ));
    s.run_fails(&[], &["input has shape (5, 2, 4)", "input_size = 3"]);
}

#[test]
fn wrong_input_rank() {
    let s = Setup::lstm();
    s.write_input(&input_bytes(
        &random_tensor(vec![5, 2, 3, 1], 1, 1.0),
        None,
        None,
        None,
    ));
    s.run_fails(&[], &["input has shape (5, 2, 3, 1)", "3-D"]);
    s.write_input(&input_bytes(
        &random_tensor(vec![3], 1, 1.0),
        None,
        None,
        None,
    ));
    s.run_fails(&[], &["input has shape (3,)"]);
}

#[test]
fn empty_input_sequence() {
    let s = Setup::gru();
    s.write_input(&input_bytes(
        &Tensor::zeros(vec![0, 2, 3]),
        None,
        None,
        None,
    ));
    s.run_fails(&[], &["input has shape (0, 2, 3)", "at least 1"]);
}

#[test]
fn input_needing_more_than_max_call_bytes() {
    // Small weights (hidden 2^14 projected to 1), wide scratch: 300000 steps of one float ask
    // for more than 64 GiB, refused before anything is allocated.
    let s = Setup::with(Config {
        proj_size: 1,
        ..Config::new(Mode::Lstm, 1, 1 << 14)
    });
    s.write_input(&input_bytes(
        &Tensor::zeros(vec![300_000, 1, 1]),
        None,
        None,
        None,
    ));
    s.run_fails(
        &[],
        &[
            "input has shape (300000, 1, 1)",
            "hidden_size=16384",
            "bytes",
            "over the limit MAX_CALL_BYTES = 68719476736 bytes (64 GiB)",
        ],
    );
}

#[test]
fn wrong_h0_shape() {
    let s = Setup::lstm();
    let (h0, c0) = (random_tensor(vec![4, 2, 5], 2, 0.5), s.state(4));
    s.write_input(&input_bytes(&s.good_input(), Some(&h0), Some(&c0), None));
    s.run_fails(&[], &["h0 has shape (4, 2, 5)", "expected (4, 2, 4)"]);
    let (h0, c0) = (s.state(4), random_tensor(vec![2, 2, 4], 2, 0.5));
    s.write_input(&input_bytes(&s.good_input(), Some(&h0), Some(&c0), None));
    s.run_fails(&[], &["c0 has shape (2, 2, 4)", "expected (4, 2, 4)"]);
}

#[test]
fn lstm_h0_without_c0() {
    let s = Setup::lstm();
    s.write_input(&input_bytes(&s.good_input(), Some(&s.state(4)), None, None));
    s.run_fails(&[], &["h0 without c0"]);
    s.write_input(&input_bytes(&s.good_input(), None, Some(&s.state(4)), None));
    s.run_fails(&[], &["c0 without h0"]);
}

#[test]
fn c0_for_a_gru() {
    let s = Setup::gru();
    s.write_input(&input_bytes(
        &s.good_input(),
        Some(&s.state(4)),
        Some(&s.state(4)),
        None,
    ));
    s.run_fails(&[], &["c0", "GRU has no cell state"]);
}

#[test]
fn lengths_zero() {
    let s = Setup::lstm();
    s.write_input(&input_bytes(&s.good_input(), None, None, Some(&[5, 0])));
    s.run_fails(&[], &["lengths[1] = 0", "1..=5"]);
}

#[test]
fn lengths_longer_than_the_input() {
    let s = Setup::lstm();
    s.write_input(&input_bytes(&s.good_input(), None, None, Some(&[9, 2])));
    s.run_fails(&[], &["lengths[0] = 9", "1..=5"]);
}

#[test]
fn lengths_of_the_wrong_count() {
    let s = Setup::gru();
    s.write_input(&input_bytes(&s.good_input(), None, None, Some(&[5, 4, 3])));
    s.run_fails(&[], &["lengths has 3 elements", "(2)"]);
}

#[test]
fn lengths_negative_or_misshapen() {
    let s = Setup::gru();
    let input = s.good_input();
    let x = RawTensor::floats("input", Dtype::F32, input.shape.clone(), &input.data);
    s.write_input_tensors(&[x.clone(), RawTensor::i64s("lengths", vec![2], &[5, -3])]);
    s.run_fails(&[], &["lengths[1] = -3", "negative"]);
    s.write_input_tensors(&[x, RawTensor::i64s("lengths", vec![1, 2], &[5, 3])]);
    s.run_fails(&[], &["lengths has shape (1, 2)", "1-D"]);
}

#[test]
fn float_lengths() {
    let s = Setup::gru();
    let input = s.good_input();
    let t = [
        RawTensor::floats("input", Dtype::F32, input.shape.clone(), &input.data),
        RawTensor::floats("lengths", Dtype::F32, vec![2], &[5.0, 3.0]),
    ];
    s.write_input_tensors(&t);
    s.run_fails(&[], &["lengths has dtype F32", "I64 or I32"]);
}

#[test]
fn integer_input() {
    let s = Setup::gru();
    let t = [RawTensor::i64s("input", vec![5, 2, 3], &[1; 30])];
    s.write_input_tensors(&t);
    s.run_fails(&[], &["input has dtype I64", "expected a float tensor"]);
    let input = s.good_input();
    let t = [
        RawTensor::floats("input", Dtype::F32, input.shape.clone(), &input.data),
        RawTensor::i64s("h0", vec![2, 2, 4], &[0; 16]),
    ];
    s.write_input_tensors(&t);
    s.run_fails(&[], &["h0 has dtype I64"]);
}

#[test]
fn unknown_input_tensor_name() {
    let s = Setup::gru();
    let input = s.good_input();
    let t = [
        RawTensor::floats("input", Dtype::F32, input.shape.clone(), &input.data),
        RawTensor::floats("hidden", Dtype::F32, vec![2, 2, 4], &[0.0; 16]),
    ];
    s.write_input_tensors(&t);
    s.run_fails(&[], &["unexpected tensor hidden", "input, h0, c0, lengths"]);
}

#[test]
fn missing_input_tensor() {
    let s = Setup::gru();
    let t = [RawTensor::floats(
        "h0",
        Dtype::F32,
        vec![2, 2, 4],
        &[0.0; 16],
    )];
    s.write_input_tensors(&t);
    s.run_fails(&[], &["no tensor named input", "found h0"]);
    s.write_input_tensors(&[]);
    s.run_fails(&[], &["no tensor named input"]);
}

#[test]
fn garbage_input_file() {
    let s = Setup::gru();
    s.write_input(b"");
    s.run_fails(&[], &["input.safetensors", "empty"]);
    s.write_input(&[7; 100]);
    s.run_fails(&[], &["input.safetensors", "not a valid safetensors file"]);
}

// ---- Prefixes, paths, environment.

#[test]
fn prefix_matching_nothing() {
    let s = Setup::gru();
    s.write_weights("encoder.rnn.", &[]);
    s.run_fails(
        &["--prefix", "decoder.rnn."],
        &["prefix decoder.rnn. matches no tensor", "encoder.rnn."],
    );
    s.info_fails(
        &["--prefix", "nope"],
        &["prefix nope. matches no tensor", "encoder.rnn."],
    );
}

#[test]
fn nested_module_without_prefix() {
    let s = Setup::gru();
    s.write_weights("rnn.", &[]);
    s.run_fails(&[], &["no recurrent-layer parameters", "rnn.", "--prefix"]);
    // A prefix naming a parent of the module.
    s.write_weights("encoder.rnn.", &[]);
    s.run_fails(
        &["--prefix", "encoder"],
        &["under prefix encoder.", "encoder.rnn."],
    );
}

#[test]
fn model_without_recurrent_tensors() {
    let s = Setup::gru();
    let t = [RawTensor::floats(
        "fc.weight",
        Dtype::F32,
        vec![2],
        &[1.0, 2.0],
    )];
    s.write_model_tensors(&t);
    s.run_fails(&[], &["no recurrent module"]);
    s.write_model_tensors(&[]);
    s.run_fails(&[], &["no tensors"]);
}

#[test]
fn missing_files() {
    let s = Setup::gru();
    let missing = s.path("absent.safetensors");
    let (m, i, o) = (s.model(), s.input(), s.output());
    for args in [run_args(&missing, &i, &o), run_args(&m, &missing, &o)] {
        s.fails(&args, &[], &["absent.safetensors", "No such file"]);
    }
    s.fails(
        &["info", "--model", missing.to_str().unwrap()],
        &[],
        &["absent.safetensors"],
    );
    // A directory where a model file should be.
    let d = s.dir.path().to_str().unwrap();
    s.fails(&["info", "--model", d], &[], &[d]);
}

#[test]
fn output_directory_that_does_not_exist() {
    let s = Setup::gru();
    let out = s.path("no/such/dir/out.safetensors");
    let (m, i) = (s.model(), s.input());
    s.fails(
        &run_args(&m, &i, &out),
        &[],
        &["no/such/dir/out.safetensors", "directory", "does not exist"],
    );
    assert!(!s.path("no").exists());
    // An output path that is a directory.
    let d = s.path("subdir");
    std::fs::create_dir(&d).unwrap();
    s.fails(&run_args(&m, &i, &d), &[], &["subdir"]);
}

#[test]
fn unknown_or_unavailable_isa() {
    let s = Setup::gru();
    s.run_fails_env(&[], &[("RECUR_ISA", "bogus")], &["RECUR_ISA", "bogus"]);
    let m = s.model();
    s.fails(
        &["info", "--model", m.to_str().unwrap()],
        &[("RECUR_ISA", "bogus")],
        &["RECUR_ISA"],
    );
    match recur::Isa::ALL.into_iter().find(|i| !i.is_available()) {
        Some(isa) => s.run_fails_env(
            &[],
            &[("RECUR_ISA", isa.name())],
            &["RECUR_ISA", isa.name()],
        ),
        None => eprintln!("every tier is available here: the unavailable-tier case is skipped"),
    }
}

#[test]
fn too_many_threads() {
    let s = Setup::gru();
    s.run_fails(&["--threads", "100000"], &["--threads 100000"]);
}

#[test]
fn usage_errors_exit_with_clap_status() {
    let s = Setup::gru();
    for args in [
        &["run"][..],
        &["run", "--model"],
        &["info", "--model", "m", "--mode", "TRANSFORMER"],
        &["frobnicate"],
    ] {
        let out = recur(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert_output_untouched(&s.output(), s.dir.path());
}
