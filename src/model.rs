//! A loaded model: validated configuration and weights packed once for the step kernels.

use std::collections::{BTreeMap, BTreeSet};

use recur_kernels::denormal::flush;
use recur_kernels::{kernels_for, Isa, Kernels, PackedMatrix};

use crate::config::{Config, Mode};
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};

/// A PyTorch `state_dict` of one recurrent module: parameter name (`weight_ih_l0`, ...,
/// without any prefix) to tensor.
pub type StateDict = BTreeMap<String, Tensor>;

/// The weights of one layer and direction, in the form the kernels read.
#[derive(Debug)]
pub(crate) struct DirectionWeights {
    /// `W_ih`, `(G*H, I_layer)`, packed plain (one gate of `G*H` rows) for the input projection.
    pub w_ih: PackedMatrix,
    /// Biases folded into the input projection, `(G*H,)`: `b_ih + b_hh` for every gate except
    /// GRU's n gate, which gets `b_in` only (PyTorch's `n` multiplies `W_hn h + b_hn` by `r`).
    pub bias_x: Vec<f32>,
    /// GRU's `b_hn`, `(H,)` (zeros without bias); empty for other modes.
    pub b_hn: Vec<f32>,
    /// `W_hh`, `(G*H, H_out)`, packed.
    pub w_hh: PackedMatrix,
    /// `W_hr`, `(P, H)`, packed; LSTM with projection only.
    pub w_hr: Option<PackedMatrix>,
    /// `RNN_RELU`: the plain RNN cell's nonlinearity is relu, not tanh.
    pub relu: bool,
}

/// A loaded recurrent module, immutable and `Send + Sync`: share it (`Arc<Model>`) across
/// threads; per-call state lives in a [`crate::Workspace`].
#[derive(Debug)]
pub struct Model {
    config: Config,
    /// `layers[l][d]`: layer `l`, direction `d` (0 forward, 1 reverse).
    pub(crate) layers: Vec<Vec<DirectionWeights>>,
    pub(crate) kernels: &'static Kernels,
}

impl DirectionWeights {
    /// The plain RNN cell's nonlinearity.
    pub fn activation(&self) -> recur_kernels::Activation {
        if self.relu {
            recur_kernels::Activation::Relu
        } else {
            recur_kernels::Activation::Tanh
        }
    }
}

impl Model {
    /// Builds a model from a configuration and its state_dict (names without prefix).
    ///
    /// Every parameter the configuration implies must be present with PyTorch's shape, and no
    /// other tensor may be: the error names the tensor and the expected and found shapes.
    /// The kernel tier is [`Isa::selected`] (`RECUR_ISA`, else the best the CPU has).
    pub fn from_state_dict(config: Config, tensors: &StateDict) -> Result<Model> {
        config.validate()?;
        let mut expected = BTreeSet::new();
        for layer in 0..config.num_layers {
            for dir in 0..config.directions() {
                for (name, shape) in config.param_shapes(layer, dir) {
                    match tensors.get(&name) {
                        None => {
                            return Err(Error::InvalidModel(format!(
                                "missing tensor {name} (expected shape {} for {config})",
                                Shape(&shape)
                            )))
                        }
                        Some(t) if t.shape != shape => {
                            return Err(Error::InvalidModel(format!(
                                "tensor {name} has shape {}, expected {} for {config}",
                                Shape(&t.shape),
                                Shape(&shape)
                            )))
                        }
                        Some(t) if t.data.len() != shape.iter().product::<usize>() => {
                            return Err(Error::InvalidModel(format!(
                                "tensor {name} has shape {} but {} elements",
                                Shape(&t.shape),
                                t.data.len()
                            )))
                        }
                        Some(_) => {}
                    }
                    expected.insert(name);
                }
            }
        }
        if let Some(extra) = tensors.keys().find(|k| !expected.contains(*k)) {
            return Err(Error::InvalidModel(format!(
                "unexpected tensor {extra} for {config}"
            )));
        }
        let kernels = kernels_for(Isa::selected()?).expect("a selected tier has kernels");
        // The core's L2 size, read once here so that no call pays for (or allocates in) it.
        crate::forward::l2_bytes();
        let layers = (0..config.num_layers)
            .map(|l| {
                (0..config.directions())
                    .map(|d| pack_direction(&config, tensors, l, d))
                    .collect()
            })
            .collect();
        Ok(Model {
            config,
            layers,
            kernels,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Overrides `batch_first` (PyTorch fixes it at construction; the CLI's `--batch-first`
    /// sets it per run).
    pub fn set_batch_first(&mut self, batch_first: bool) {
        self.config.batch_first = batch_first;
    }

    /// The kernel tier this model runs on.
    pub fn isa(&self) -> Isa {
        self.kernels.isa
    }

    /// Runs this model on another kernel tier (the packed weights serve every tier).
    /// Errors if the CPU or this build lacks it.
    pub fn set_isa(&mut self, isa: Isa) -> Result<()> {
        if !isa.is_available() {
            return Err(Error::Isa(recur_kernels::isa::IsaError::Unavailable(isa)));
        }
        self.kernels = kernels_for(isa).expect("an available tier has kernels");
        Ok(())
    }

    /// Runs this model on an explicit kernel table: for tests and fuzzing of tables that
    /// [`Model::set_isa`] never selects, such as the AVX-512 code paths on a scalar emulation
    /// (`recur_kernels::step::emulated_avx512_kernels()`). Holding any table is safe: a tier's
    /// functions panic rather than run on a CPU without the tier.
    #[doc(hidden)]
    pub fn set_kernels(&mut self, kernels: &'static Kernels) {
        self.kernels = kernels;
    }

    /// Bytes of packed recurrent weights (`W_hh`, `W_hr`) over all layers and directions.
    pub fn recurrent_weight_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|d| d.w_hh.bytes() + d.w_hr.as_ref().map_or(0, PackedMatrix::bytes))
            .sum()
    }
}

fn pack_direction(config: &Config, t: &StateDict, layer: usize, dir: usize) -> DirectionWeights {
    let get = |kind: &str| &t[&Config::param_name(kind, layer, dir)].data;
    let (g, h) = (config.gates(), config.hidden_size);
    let bias_x = if config.bias {
        let (b_ih, b_hh) = (get("bias_ih"), get("bias_hh"));
        (0..g * h)
            .map(|i| {
                // Denormals flushed, as the packed weights' (`recur_kernels::denormal`).
                flush(if config.mode == Mode::Gru && i >= 2 * h {
                    b_ih[i]
                } else {
                    b_ih[i] + b_hh[i]
                })
            })
            .collect()
    } else {
        vec![0.0; g * h]
    };
    let b_hn = match (config.mode, config.bias) {
        (Mode::Gru, true) => get("bias_hh")[2 * h..].iter().map(|&b| flush(b)).collect(),
        (Mode::Gru, false) => vec![0.0; h],
        _ => Vec::new(),
    };
    DirectionWeights {
        w_ih: PackedMatrix::pack(get("weight_ih"), 1, g * h, config.layer_input_size(layer)),
        bias_x,
        b_hn,
        w_hh: PackedMatrix::pack(get("weight_hh"), g, h, config.output_hidden()),
        w_hr: (config.proj_size > 0)
            .then(|| PackedMatrix::pack(get("weight_hr"), 1, config.proj_size, h)),
        relu: config.mode == Mode::RnnRelu,
    }
}
