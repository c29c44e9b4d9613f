//! Shared helpers of the CLI and bad-input tests: deterministic weights, safetensors files built
//! in Rust (no PyTorch needed), and running the `recur` binary.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Output};

use recur::{Config, StateDict, Tensor};
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
    let mut t = vec![RawTensor::floats(
        "input",
        Dtype::F32,
        input.shape.clone(),
        &input.data,
    )];
    if let Some(h0) = h0 {
        t.push(RawTensor::floats(
            "h0",
            Dtype::F32,
            h0.shape.clone(),
            &h0.data,
        ));
    }
    if let Some(c0) = c0 {
        t.push(RawTensor::floats(
            "c0",
            Dtype::F32,
            c0.shape.clone(),
            &c0.data,
        ));
    }
    if let Some(lens) = lengths {
        let v: Vec<i64> = lens.iter().map(|&l| l as i64).collect();
        t.push(RawTensor::i64s("lengths", vec![v.len()], &v));
    }
    safetensors_bytes(&t, &[])
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
