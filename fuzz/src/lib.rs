//! Helpers shared by the fuzz targets: load options taken from the input's first bytes, fixed
//! small models of every mode, well-conditioned random cases built from fuzzer bytes, the kernel
//! tables to run them on, and output comparisons.

use std::sync::OnceLock;

use arbitrary::Unstructured;
use recur::bench::{random_state_dict, SplitRng};
use recur::load::InputFile;
use recur::{Config, Isa, Mode, Model, Outputs, StateDict, Tensor};
use recur_kernels::Kernels;

// Also compiled into `tests/hostile.rs`, which replays the committed seeds without nightly.
mod options;
pub use options::split_options;

/// Largest `layers * G * H * width` of a model the load targets run after loading it (a few KiB
/// of file hold small models; this keeps every iteration fast whatever the header claims).
pub const TINY_WORK: usize = 1 << 16;

/// One small model of each mode, with PyTorch-like random weights, for the input target: an
/// RNN_TANH, a 2-layer bidirectional RNN_RELU, a 2-layer bidirectional LSTM with projection,
/// and a batch-first GRU without bias.
pub fn fixed_models() -> &'static [Model] {
    static MODELS: OnceLock<Vec<Model>> = OnceLock::new();
    MODELS.get_or_init(|| {
        let configs = [
            Config::new(Mode::RnnTanh, 3, 4),
            Config {
                num_layers: 2,
                bidirectional: true,
                ..Config::new(Mode::RnnRelu, 3, 5)
            },
            Config {
                num_layers: 2,
                bidirectional: true,
                proj_size: 2,
                ..Config::new(Mode::Lstm, 3, 5)
            },
            Config {
                bias: false,
                batch_first: true,
                ..Config::new(Mode::Gru, 3, 4)
            },
        ];
        configs
            .into_iter()
            .enumerate()
            .map(|(seed, c)| {
                let sd = random_state_dict(&c, seed as u64 + 1);
                Model::from_state_dict(c, &sd).expect("fixed model")
            })
            .collect()
    })
}

/// The kernel tables to run every case on: each tier this machine has, and the AVX-512 code
/// paths on a scalar emulation (which runs anywhere).
pub fn kernel_tables() -> &'static [&'static Kernels] {
    static TABLES: OnceLock<Vec<&'static Kernels>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut tables: Vec<&'static Kernels> = Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .filter_map(recur_kernels::kernels_for)
            .collect();
        tables.push(recur_kernels::step::emulated_avx512_kernels());
        tables
    })
}

/// A name for a kernel table in messages.
pub fn table_name(k: &Kernels) -> String {
    if std::ptr::eq(k, recur_kernels::step::emulated_avx512_kernels()) {
        "emulated-avx512".to_string()
    } else {
        k.isa.to_string()
    }
}

/// Rayon pools of 1 and 3 threads, built once (building a pool per input would dominate).
pub fn pools() -> &'static [rayon::ThreadPool; 2] {
    static POOLS: OnceLock<[rayon::ThreadPool; 2]> = OnceLock::new();
    POOLS.get_or_init(|| {
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("thread pool")
        };
        [pool(1), pool(3)]
    })
}

/// Values from the fuzzer's bytes while they last (one byte each, uniform in `[-1, 1)`), then
/// from a generator seeded by the case.
pub struct Values<'a, 'b> {
    u: &'b mut Unstructured<'a>,
    rng: SplitRng,
}

impl<'a, 'b> Values<'a, 'b> {
    /// Values drawn from `u`, then from a generator seeded with `seed`.
    pub fn new(u: &'b mut Unstructured<'a>, seed: u64) -> Self {
        Values {
            u,
            rng: SplitRng::new(seed),
        }
    }

    /// The next value in `[-1, 1)`.
    pub fn next_value(&mut self) -> f32 {
        if self.u.is_empty() {
            self.rng.next_f32()
        } else {
            let b: i8 = self.u.arbitrary().unwrap_or(0);
            f32::from(b) / 128.0
        }
    }

    /// `n` values in `[-scale, scale)`.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_value() * scale).collect()
    }
}

/// A case for the engine: configuration, weights, input and its shape parameters.
#[derive(Clone, Debug)]
pub struct Case {
    /// The model's configuration.
    pub config: Config,
    /// Its weights.
    pub state_dict: StateDict,
    /// The forward call's tensors: the input (`(L, N, I)`, `(N, L, I)` batch-first, or `(L, I)`
    /// unbatched), initial states and lengths; [`InputFile::forward_input`] lends them.
    pub inputs: InputFile,
    /// Sequence length `L`.
    pub seq: usize,
    /// Batch `N` (1 when unbatched).
    pub batch: usize,
    /// Whether the input is 2-D.
    pub unbatched: bool,
}

impl Case {
    /// The flat index of input element `(t, b, i)`.
    pub fn input_index(&self, t: usize, b: usize, i: usize) -> usize {
        let n_in = self.config.input_size;
        if self.unbatched {
            t * n_in + i
        } else if self.config.batch_first {
            (b * self.seq + t) * n_in + i
        } else {
            (t * self.batch + b) * n_in + i
        }
    }
}

/// Limits of a generated case.
#[derive(Clone, Copy, Debug)]
pub struct CaseLimits {
    /// Largest input size.
    pub input: usize,
    /// Largest hidden size.
    pub hidden: usize,
    /// Largest number of layers.
    pub layers: usize,
    /// Largest sequence length.
    pub seq: usize,
    /// Largest batch.
    pub batch: usize,
    /// Whether the model may be bidirectional.
    pub bidirectional: bool,
}

/// Builds a well-conditioned case from fuzzer bytes.
///
/// Two weight regimes, both free of the chaotic growth in which float32 cannot meet 1e-4 at all:
/// - "contractive" (every mode): `|W_ih| <= 1/fan_in`, `|W_hh| <= 1/H_out`, `|W_hr| <= 1/H`,
///   biases within 0.5, so each layer's pre-activations stay within a few units and an error is
///   never amplified from step to step — RNN_RELU included, which PyTorch's init lets explode;
/// - "PyTorch" (bounded cells only: RNN_TANH, LSTM, GRU): PyTorch's `U(-1/sqrt(H), 1/sqrt(H))`.
///
/// Inputs are within 2, initial states within 1.
pub fn build_case(u: &mut Unstructured<'_>, lim: CaseLimits) -> arbitrary::Result<Case> {
    let mode = Mode::ALL[u.int_in_range(0..=3)?];
    let input_size = u.int_in_range(1..=lim.input)?;
    let hidden_size = u.int_in_range(1..=lim.hidden)?;
    let num_layers = u.int_in_range(1..=lim.layers)?;
    let bidirectional = lim.bidirectional && u.arbitrary()?;
    let bias = u.ratio(7, 8)?;
    let batch_first: bool = u.arbitrary()?;
    let proj_size = if mode == Mode::Lstm && hidden_size > 1 && u.arbitrary()? {
        u.int_in_range(1..=hidden_size - 1)?
    } else {
        0
    };
    let seq = u.int_in_range(1..=lim.seq)?;
    let unbatched = u.ratio(1, 6)?;
    let batch = if unbatched {
        1
    } else {
        u.int_in_range(1..=lim.batch)?
    };
    let with_state: bool = u.arbitrary()?;
    let ragged = !unbatched && u.arbitrary()?;
    let lengths = if ragged {
        let mut v = Vec::with_capacity(batch);
        for _ in 0..batch {
            v.push(u.int_in_range(1..=seq)?);
        }
        Some(v)
    } else {
        None
    };
    let pytorch_init = mode != Mode::RnnRelu && u.arbitrary()?;
    let seed: u64 = u.arbitrary()?;
    let config = Config {
        mode,
        input_size,
        hidden_size,
        num_layers,
        bias,
        batch_first,
        bidirectional,
        proj_size,
    };
    let mut values = Values::new(u, seed);
    let mut state_dict = StateDict::new();
    for layer in 0..num_layers {
        for dir in 0..config.directions() {
            for (name, shape) in config.param_shapes(layer, dir) {
                let scale = if pytorch_init {
                    1.0 / (hidden_size as f32).sqrt()
                } else if name.starts_with("bias") {
                    0.5
                } else {
                    // Columns: the fan-in of the product this matrix takes part in.
                    1.0 / shape[1] as f32
                };
                let n = shape.iter().product();
                state_dict.insert(name, Tensor::new(shape, values.vec(n, scale)).unwrap());
            }
        }
    }
    let shape = match (unbatched, batch_first) {
        (true, _) => vec![seq, input_size],
        (false, true) => vec![batch, seq, input_size],
        (false, false) => vec![seq, batch, input_size],
    };
    let input = Tensor::new(shape.clone(), values.vec(shape.iter().product(), 2.0)).unwrap();
    let states = config.directions() * num_layers;
    let mut state = |w: usize| {
        let shape = if unbatched {
            vec![states, w]
        } else {
            vec![states, batch, w]
        };
        let n = shape.iter().product();
        Tensor::new(shape, values.vec(n, 1.0)).unwrap()
    };
    let h0 = with_state.then(|| state(config.output_hidden()));
    let c0 = (with_state && mode == Mode::Lstm).then(|| state(hidden_size));
    Ok(Case {
        config,
        state_dict,
        inputs: InputFile {
            input,
            h0,
            c0,
            lengths,
        },
        seq,
        batch,
        unbatched,
    })
}

/// Every output value's bits, in order: output, h_n, c_n.
pub fn bits(o: &Outputs) -> Vec<u32> {
    let mut v: Vec<u32> = o.output.data.iter().map(|x| x.to_bits()).collect();
    v.extend(o.h_n.data.iter().map(|x| x.to_bits()));
    if let Some(c) = &o.c_n {
        v.extend(c.data.iter().map(|x| x.to_bits()));
    }
    v
}
