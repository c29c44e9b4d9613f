//! `recur bench`: the standard suite (`benches/suite.json`, a copy of the shared suite) or a
//! custom shape, timed as median and min over repeated runs after warm-up.

use std::time::{Duration, Instant};

use crate::config::{Config, Mode};
use crate::error::{Error, Result};
use crate::forward::{ForwardInput, Workspace};
use crate::model::{Model, StateDict};
use crate::tensor::Tensor;

/// The standard suite, embedded from `benches/suite.json`.
pub const SUITE_JSON: &str = include_str!("../benches/suite.json");

/// One benchmark shape: a configuration and an input shape (seq-major).
#[derive(Clone, Debug, PartialEq)]
pub struct BenchCase {
    /// The case's name (`lstm_stream_b1`, or `custom`).
    pub name: String,
    /// The model configuration.
    pub config: Config,
    /// Batch size `N`.
    pub batch: usize,
    /// Sequence length `L`.
    pub seq_len: usize,
}

impl BenchCase {
    /// Floating-point operations of one forward pass (multiply-adds count 2): the input
    /// projections, the recurrent products and the projections, over all layers and directions.
    pub fn flops(&self) -> f64 {
        let c = &self.config;
        let rows = (self.seq_len * self.batch) as f64;
        let gh = (c.gates() * c.hidden_size) as f64;
        let per_dir: f64 = (0..c.num_layers)
            .map(|l| {
                let proj = if c.proj_size > 0 {
                    (c.proj_size * c.hidden_size) as f64
                } else {
                    0.0
                };
                2.0 * rows
                    * (gh * c.layer_input_size(l) as f64 + gh * c.output_hidden() as f64 + proj)
            })
            .sum();
        per_dir * c.directions() as f64
    }

    /// The model (random weights, [`random_state_dict`] seed 1) and the input (seq-major
    /// `(L, N, input_size)`, [`SplitRng`] seed 2) that `recur bench` and the criterion suite
    /// time for this case.
    pub fn model_and_input(&self) -> Result<(Model, Tensor)> {
        let model =
            Model::from_state_dict(self.config.clone(), &random_state_dict(&self.config, 1))?;
        let shape = vec![self.seq_len, self.batch, self.config.input_size];
        let n = shape.iter().product();
        let x = Tensor {
            shape,
            data: SplitRng::new(2).vec(n, 1.0),
        };
        Ok((model, x))
    }
}

/// Parses the standard suite.
pub fn standard_suite() -> Result<Vec<BenchCase>> {
    let v: serde_json::Value = serde_json::from_str(SUITE_JSON)
        .map_err(|e| Error::InvalidInput(format!("benches/suite.json: {e}")))?;
    let cases = v["cases"]
        .as_array()
        .ok_or_else(|| Error::InvalidInput("benches/suite.json has no \"cases\" array".into()))?;
    cases
        .iter()
        .map(|c| {
            let num = |k: &str| {
                c[k].as_u64().map(|v| v as usize).ok_or_else(|| {
                    Error::InvalidInput(format!("benches/suite.json: case field {k:?} missing"))
                })
            };
            let mode: Mode = c["mode"].as_str().unwrap_or("").parse()?;
            let config = Config {
                mode,
                input_size: num("input")?,
                hidden_size: num("hidden")?,
                num_layers: num("layers")?,
                bias: true,
                batch_first: false,
                bidirectional: c["bidirectional"].as_bool().unwrap_or(false),
                proj_size: num("proj")?,
            };
            Ok(BenchCase {
                name: c["name"].as_str().unwrap_or("unnamed").to_string(),
                config,
                batch: num("batch")?,
                seq_len: num("seq")?,
            })
        })
        .collect()
}

/// A deterministic generator of uniform floats (xorshift64*): benchmarks and tests need
/// reproducible weights, not statistical quality.
#[derive(Clone, Debug)]
pub struct SplitRng(u64);

impl SplitRng {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> SplitRng {
        SplitRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in `[-1, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((v >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values uniform in `[-scale, scale)`.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
}

/// A state_dict with PyTorch's default initialisation, `U(-1/sqrt(H), 1/sqrt(H))`.
pub fn random_state_dict(config: &Config, seed: u64) -> StateDict {
    let mut rng = SplitRng::new(seed);
    let bound = 1.0 / (config.hidden_size as f32).sqrt();
    let mut sd = StateDict::new();
    for layer in 0..config.num_layers {
        for dir in 0..config.directions() {
            for (name, shape) in config.param_shapes(layer, dir) {
                let n = shape.iter().product();
                sd.insert(
                    name,
                    Tensor {
                        shape,
                        data: rng.vec(n, bound),
                    },
                );
            }
        }
    }
    sd
}

/// Timing of one case.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// The case.
    pub case: BenchCase,
    /// Threads of the pool it ran on.
    pub threads: usize,
    /// Median of the timed runs, milliseconds.
    pub median_ms: f64,
    /// Fastest timed run, milliseconds.
    pub min_ms: f64,
    /// Number of timed runs.
    pub runs: usize,
    /// The kernel tier.
    pub isa: recur_kernels::Isa,
}

impl BenchResult {
    /// GFLOP/s at the median time.
    pub fn gflops(&self) -> f64 {
        self.case.flops() / (self.median_ms * 1e6)
    }

    /// The JSON line of SPEC §3.
    pub fn json(&self) -> String {
        serde_json::json!({
            "name": self.case.name,
            "threads": self.threads,
            "median_ms": round_to(self.median_ms, 1e6),
            "min_ms": round_to(self.min_ms, 1e6),
            "gflops": round_to(self.gflops(), 1e3),
            "isa": self.isa.name(),
        })
        .to_string()
    }
}

/// `v` rounded to a multiple of `1 / per` (times to the nanosecond: at a millisecond's
/// thousandth, a 11 us case would be quoted to +-5%).
fn round_to(v: f64, per: f64) -> f64 {
    (v * per).round() / per
}

/// Times `case` on the current rayon pool: warm-up, then runs until `min_time` has passed and at
/// least `min_runs` were made.
pub fn run_case(case: &BenchCase, min_time: Duration, min_runs: usize) -> Result<BenchResult> {
    let (model, x) = case.model_and_input()?;
    let fi = ForwardInput::new(x.view());
    let mut ws = Workspace::new();
    // Warm-up: first touches of the workspace and the weights.
    let warm = Instant::now();
    model.forward_with(&fi, &mut ws)?;
    while warm.elapsed() < min_time / 10 {
        model.forward_with(&fi, &mut ws)?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_runs || (start.elapsed() < min_time && times.len() < 10_000) {
        let t = Instant::now();
        let out = model.forward_with(&fi, &mut ws)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(out);
    }
    times.sort_by(f64::total_cmp);
    Ok(BenchResult {
        case: case.clone(),
        threads: rayon::current_num_threads(),
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        runs: times.len(),
        isa: model.isa(),
    })
}
