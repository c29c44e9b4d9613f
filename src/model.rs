//! A loaded model: validated configuration and weights packed once for the step kernels.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use recur_kernels::denormal::flush;
use recur_kernels::{kernels_for, Isa, Kernels, PackedMatrix, BLOCK};

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
    /// `W_hr`, `(P, H)`, packed by groups of hidden units; LSTM with projection only.
    pub w_hr: Option<Projection>,
    /// `RNN_RELU`: the plain RNN cell's nonlinearity is relu, not tanh.
    pub relu: bool,
    /// `W_ih` packed as `W_hh` is, by gates, for the step kernels that project their own
    /// inputs (an LSTM, with or without projection, and a GRU; `None` otherwise). Packed at
    /// load, so that no call allocates it (`Model::call_bytes` is what a call allocates); it
    /// holds `W_ih` a second time.
    pub w_ih_gates: Option<PackedMatrix>,
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

/// Hidden units per group of the projection of an LSTM of `h` units: a quarter of them (so up
/// to four threads can share a step in whole groups), rounded up to whole blocks, and between 8
/// and 32 blocks of [`BLOCK`]. Smaller groups keep more of the step's reused tail in a large
/// L2 (a probe of lstmp_b4's step on a 2 MiB-L2 Xeon, 169 µs unfused: groups of 128 units
/// 145-149 µs, 256 147-153, 512 151-170), larger ones cost less per group where the L2 holds
/// little of the step anyway (lstmp_b4 end to end on a 512 KiB-L2 Zen 3, medians of 5 alternated
/// runs against unfused at 1 / 2 threads: groups of 128 +1% / +8%, 256 -3% / +1%, 512 -3% / -1%).
/// It depends on `h` alone, so the sum's order, and the bits, do not depend on the machine.
fn group_units(h: usize) -> usize {
    (h.div_ceil(4 * BLOCK) * BLOCK).clamp(8 * BLOCK, 32 * BLOCK)
}

/// An LSTM's `W_hr` `(P, H)`, its columns cut into groups of [`group_units`] hidden units (the
/// last one shorter), each packed as its own plain `(P, nu)` matrix.
///
/// A step runs group after group: the group's cells, then its partial projection
/// `P_g = m_g W_hr[:, group]ᵀ`, and sums `h = P_0 + P_1 + ...` in group order at the end. The
/// step reads `W_hh` and `W_hr` as one stream of groups, visited in the alternating block
/// order, so the tail of the previous step still in L2 holds both (read one after the other,
/// `W_hh`'s misses evicted `W_hr` before its turn every step). The sum's order is fixed by the
/// groups, so the bits depend neither on the order the groups are visited in nor on how
/// threads share them.
#[derive(Debug)]
pub(crate) struct Projection {
    groups: Vec<PackedMatrix>,
    rows: usize,
    hidden: usize,
    /// Hidden units per group (the last group may have fewer).
    group: usize,
}

impl Projection {
    /// Packs `w`, row-major `(p, h)`.
    pub fn pack(w: &[f32], p: usize, h: usize) -> Projection {
        let group = group_units(h);
        let groups = (0..h.div_ceil(group))
            .map(|g| {
                let u = g * group..((g + 1) * group).min(h);
                let cols: Vec<f32> = (0..p)
                    .flat_map(|o| w[o * h + u.start..o * h + u.end].iter().copied())
                    .collect();
                PackedMatrix::pack(&cols, 1, p, u.len())
            })
            .collect();
        Projection {
            groups,
            rows: p,
            hidden: h,
            group,
        }
    }

    /// `P`, the projected width.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes of the packed weights.
    pub fn bytes(&self) -> usize {
        self.groups.iter().map(PackedMatrix::bytes).sum()
    }

    /// The number of groups.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Group `g`'s `W_hr` columns, packed `(P, nu)`.
    pub fn group(&self, g: usize) -> &PackedMatrix {
        &self.groups[g]
    }

    /// The hidden units of the groups `groups`.
    pub fn units(&self, groups: Range<usize>) -> Range<usize> {
        (groups.start * self.group).min(self.hidden)..(groups.end * self.group).min(self.hidden)
    }

    /// The `W_hh` blocks of the groups `groups`.
    pub fn blocks(&self, groups: Range<usize>) -> Range<usize> {
        let u = self.units(groups);
        u.start / BLOCK..u.end.div_ceil(BLOCK)
    }
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
            .map(|d| d.w_hh.bytes() + d.w_hr.as_ref().map_or(0, Projection::bytes))
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
            .then(|| Projection::pack(get("weight_hr"), config.proj_size, h)),
        relu: config.mode == Mode::RnnRelu,
        w_ih_gates: matches!(config.mode, Mode::Lstm | Mode::Gru)
            .then(|| PackedMatrix::pack(get("weight_ih"), g, h, config.layer_input_size(layer))),
    }
}
