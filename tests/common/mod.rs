//! Shared helpers of the integration tests: deterministic weights and inputs, random cases for
//! the property tests, safetensors files built in Rust (no PyTorch needed), and running the
//! `recur` binary and checking its success or its one-line error.
//!
//! Each test crate compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::process::{Command, Output};

use proptest::prelude::*;
pub use recur::load::InputFile;
use recur::{Config, Isa, Mode, StateDict, Tensor};
use safetensors::tensor::{Dtype, TensorView};

/// A deterministic generator (xorshift) of values in `[-1, 1)`.
pub struct Rng(pub u64);

impl Rng {
    /// The next value in `[-1, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values in `[-scale, scale)`.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
}

/// Rounds `v` through `dtype` (F32, F64, F16, BF16), as the loader will read it back.
pub fn round_through(v: f32, dtype: Dtype) -> f32 {
    match dtype {
        Dtype::F16 => half::f16::from_f32(v).to_f32(),
        Dtype::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// A state_dict of `config` with PyTorch's default init range, values representable in `dtype`.
pub fn state_dict(config: &Config, seed: u64, dtype: Dtype) -> StateDict {
    let mut rng = Rng(seed.max(1));
    let bound = 1.0 / (config.hidden_size as f32).sqrt();
    let mut sd = StateDict::new();
    for layer in 0..config.num_layers {
        for dir in 0..config.directions() {
            for (name, shape) in config.param_shapes(layer, dir) {
                let n = shape.iter().product();
                let data = rng
                    .vec(n, bound)
                    .into_iter()
                    .map(|v| round_through(v, dtype))
                    .collect();
                sd.insert(name, Tensor::new(shape, data).unwrap());
            }
        }
    }
    sd
}

/// Encodes f32 values as little-endian `dtype` bytes (float dtypes, or I64/I32 by truncation).
pub fn encode(data: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F64 => data
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect(),
        Dtype::F16 => data
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::BF16 => data
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::I64 => data
            .iter()
            .flat_map(|&v| (v as i64).to_le_bytes())
            .collect(),
        Dtype::I32 => data
            .iter()
            .flat_map(|&v| (v as i32).to_le_bytes())
            .collect(),
        other => panic!("encode: unsupported dtype {other}"),
    }
}

/// One tensor of a file being built: name, dtype, shape, raw bytes.
#[derive(Clone, Debug)]
pub struct RawTensor {
    /// Name in the file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian element bytes.
    pub bytes: Vec<u8>,
}

impl RawTensor {
    /// A tensor of f32 values stored as `dtype`.
    pub fn floats(name: &str, dtype: Dtype, shape: Vec<usize>, data: &[f32]) -> RawTensor {
        RawTensor {
            name: name.to_string(),
            dtype,
            shape,
            bytes: encode(data, dtype),
        }
    }

    /// An I64 tensor.
    pub fn i64s(name: &str, shape: Vec<usize>, data: &[i64]) -> RawTensor {
        RawTensor {
            name: name.to_string(),
            dtype: Dtype::I64,
            shape,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// An I32 tensor.
    pub fn i32s(name: &str, shape: Vec<usize>, data: &[i32]) -> RawTensor {
        RawTensor {
            name: name.to_string(),
            dtype: Dtype::I32,
            shape,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// The bytes of a safetensors file holding `tensors` and `metadata`.
pub fn safetensors_bytes(tensors: &[RawTensor], metadata: &[(&str, &str)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap(),
            )
        })
        .collect();
    let meta: Option<HashMap<String, String>> = (!metadata.is_empty()).then(|| {
        metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    safetensors::serialize(views, meta).unwrap()
}

/// The tensors of a state_dict under `prefix`, stored as `dtype`.
pub fn model_tensors(sd: &StateDict, prefix: &str, dtype: Dtype) -> Vec<RawTensor> {
    sd.iter()
        .map(|(name, t)| {
            RawTensor::floats(&format!("{prefix}{name}"), dtype, t.shape.clone(), &t.data)
        })
        .collect()
}

/// A model file's bytes: `sd` under `prefix`, stored as `dtype`, with `metadata`.
pub fn model_bytes(
    sd: &StateDict,
    prefix: &str,
    dtype: Dtype,
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    safetensors_bytes(&model_tensors(sd, prefix, dtype), metadata)
}

/// An input file's bytes: `input` (f32) and the optional `h0`, `c0` (f32) and `lengths` (I64).
pub fn input_bytes(
    input: &Tensor,
    h0: Option<&Tensor>,
    c0: Option<&Tensor>,
    lengths: Option<&[usize]>,
) -> Vec<u8> {
    input_file_bytes(&InputFile {
        input: input.clone(),
        h0: h0.cloned(),
        c0: c0.cloned(),
        lengths: lengths.map(<[usize]>::to_vec),
    })
}

/// A deterministic tensor of `shape` with values in `[-scale, scale)`.
pub fn random_tensor(shape: Vec<usize>, seed: u64, scale: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape, Rng(seed.max(1)).vec(n, scale)).unwrap()
}

/// Runs the `recur` binary with `args` and extra environment variables.
pub fn recur(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_recur"));
    cmd.args(args).env_remove("RECUR_ISA");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the recur binary runs")
}

/// A path inside `dir` as a `&str` argument.
pub fn arg(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

/// The tensors of a safetensors file recur wrote: name to (dtype, shape, f32 values).
pub fn read_f32_file(path: &Path) -> BTreeMap<String, (Dtype, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (
                name.to_string(),
                (view.dtype(), view.shape().to_vec(), values),
            )
        })
        .collect()
}

/// Largest absolute difference between f32 results and f64 truth (infinite on length mismatch).
pub fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "element counts differ");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - y).abs())
        .fold(0.0, f64::max)
}

/// The f32 bits of a slice: bit-identity, NaN included.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The kernel tiers this host runs, with a note for each one it skips.
pub fn available_tiers() -> Vec<Isa> {
    for isa in Isa::ALL.into_iter().filter(|isa| !isa.is_available()) {
        eprintln!("note: kernel tier {isa} is not available on this machine/build; skipped");
    }
    Isa::ALL
        .into_iter()
        .filter(|isa| isa.is_available())
        .collect()
}

/// A random configuration: any mode; input, hidden and layer counts from the ranges; with or
/// without bias; batch-first or not; bidirectional either way if `bidirectional`, else never;
/// and for an LSTM with `hidden > 1` no projection or `1 + (k * proj_step) % (hidden - 1)` for
/// `k` in 1..3.
pub fn config_strategy(
    input: Range<usize>,
    hidden: Range<usize>,
    layers: Range<usize>,
    bidirectional: bool,
    proj_step: usize,
) -> impl Strategy<Value = Config> {
    let bidir = if bidirectional {
        any::<bool>().boxed()
    } else {
        Just(false).boxed()
    };
    (
        (0..Mode::ALL.len(), input, hidden, layers),
        (any::<bool>(), any::<bool>(), bidir, 0usize..3),
    )
        .prop_map(
            move |((m, input, hidden, layers), (bias, batch_first, bidirectional, proj))| {
                let mode = Mode::ALL[m];
                let proj_size = if mode == Mode::Lstm && proj > 0 && hidden > 1 {
                    1 + (proj * proj_step) % (hidden - 1)
                } else {
                    0
                };
                Config {
                    mode,
                    input_size: input,
                    hidden_size: hidden,
                    num_layers: layers,
                    bias,
                    batch_first,
                    bidirectional,
                    proj_size,
                }
            },
        )
}

/// The shape of one forward call: sequence length, batch, initial state, lengths.
#[derive(Clone, Debug)]
pub struct Run {
    /// Steps `L`.
    pub seq: usize,
    /// Batch elements `N` (1 when unbatched).
    pub batch: usize,
    /// An unbatched `(L, I)` input.
    pub unbatched: bool,
    /// With `h0` (and `c0` for an LSTM).
    pub with_state: bool,
    /// Per-element lengths in `1..=L` (never for an unbatched input).
    pub lengths: Option<Vec<usize>>,
}

impl Run {
    /// `seq` steps of `batch` elements (unbatched if `batch` is 0), no lengths.
    pub fn new(seq: usize, batch: usize, with_state: bool) -> Run {
        Run {
            seq,
            batch: batch.max(1),
            unbatched: batch == 0,
            with_state,
            lengths: None,
        }
    }

    /// The input's shape: `(L, I)` unbatched, else `(N, L, I)` batch-first or `(L, N, I)`.
    pub fn input_shape(&self, config: &Config) -> Vec<usize> {
        let (l, n, i) = (self.seq, self.batch, config.input_size);
        match (self.unbatched, config.batch_first) {
            (true, _) => vec![l, i],
            (false, true) => vec![n, l, i],
            (false, false) => vec![l, n, i],
        }
    }

    /// A state's shape of width `w`: `(D * layers, w)` unbatched, else `(D * layers, N, w)`.
    pub fn state_shape(&self, config: &Config, w: usize) -> Vec<usize> {
        let states = config.directions() * config.num_layers;
        if self.unbatched {
            vec![states, w]
        } else {
            vec![states, self.batch, w]
        }
    }
}

/// A random run: steps and batch from the ranges, unbatched or not, with or without an initial
/// state, and (batched) with or without random lengths.
pub fn run_strategy(seq: Range<usize>, batch: Range<usize>) -> impl Strategy<Value = Run> {
    (seq, batch, any::<bool>(), any::<bool>(), any::<bool>()).prop_flat_map(
        |(seq, batch, unbatched, with_state, ragged)| {
            let batch = if unbatched { 1 } else { batch };
            let lengths = if ragged && !unbatched {
                proptest::collection::vec(1..=seq, batch)
                    .prop_map(Some)
                    .boxed()
            } else {
                Just(None).boxed()
            };
            lengths.prop_map(move |lengths| Run {
                seq,
                batch,
                unbatched,
                with_state,
                lengths,
            })
        },
    )
}

/// Random inputs of `run`'s shape: the input with values in `[-input_scale, input_scale)`,
/// then, with a state, `h0` and (LSTM) `c0` in `[-state_scale, state_scale)`, all drawn in that
/// order from `draw(count, scale)`. (An [`InputFile`] holds a forward call's tensors and lends
/// them as a [`recur::ForwardInput`].)
pub fn random_inputs(
    config: &Config,
    run: &Run,
    input_scale: f32,
    state_scale: f32,
    mut draw: impl FnMut(usize, f32) -> Vec<f32>,
) -> InputFile {
    let mut tensor = |shape: Vec<usize>, scale: f32| {
        let n = shape.iter().product();
        Tensor::new(shape, draw(n, scale)).unwrap()
    };
    let input = tensor(run.input_shape(config), input_scale);
    let h0 = run
        .with_state
        .then(|| tensor(run.state_shape(config, config.output_hidden()), state_scale));
    let c0 = (run.with_state && config.mode == Mode::Lstm)
        .then(|| tensor(run.state_shape(config, config.hidden_size), state_scale));
    InputFile {
        input,
        h0,
        c0,
        lengths: run.lengths.clone(),
    }
}

/// The tensors of an input file holding `inputs`: `input`, `h0` and `c0` stored as `dtype`,
/// `lengths` as I64.
pub fn input_tensors(inputs: &InputFile, dtype: Dtype) -> Vec<RawTensor> {
    let floats = [
        ("input", Some(&inputs.input)),
        ("h0", inputs.h0.as_ref()),
        ("c0", inputs.c0.as_ref()),
    ];
    let mut t: Vec<RawTensor> = floats
        .into_iter()
        .filter_map(|(name, t)| Some(RawTensor::floats(name, dtype, t?.shape.clone(), &t?.data)))
        .collect();
    if let Some(lens) = &inputs.lengths {
        let v: Vec<i64> = lens.iter().map(|&l| l as i64).collect();
        t.push(RawTensor::i64s("lengths", vec![v.len()], &v));
    }
    t
}

/// An input file's bytes holding `inputs` (f32, lengths as I64).
pub fn input_file_bytes(inputs: &InputFile) -> Vec<u8> {
    safetensors_bytes(&input_tensors(inputs, Dtype::F32), &[])
}

/// The arguments of `recur run` on these files.
pub fn run_args<'a>(model: &'a Path, input: &'a Path, output: &'a Path) -> Vec<&'a str> {
    vec![
        "run",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]
}

/// The command succeeded (`what` and its stderr name it otherwise).
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The command failed with exit status 1 (not a signal, not a usage error) and one line
/// `error: ...` holding every one of `words`, without a panic.
pub fn assert_error(out: &Output, words: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "status {:?}: {stderr}",
        out.status
    );
    assert!(stderr.starts_with("error: "), "stderr: {stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for w in words {
        assert!(stderr.contains(w), "stderr lacks {w:?}: {stderr}");
    }
}

/// What an existing output file holds before each failing run.
pub const OLD_OUTPUT: &[u8] = b"the previous output, which a failed run must not touch";

/// No temporary file is left in `dir`.
pub fn assert_no_temp_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp"), "temporary file {name} left behind");
    }
}
