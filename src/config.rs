//! The configuration of a recurrent module, as PyTorch's constructor arguments name it.

use std::fmt;

use crate::error::Error;

/// The cell type, with PyTorch's own mode names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `nn.RNN(nonlinearity="tanh")`: `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`.
    RnnTanh,
    /// `nn.RNN(nonlinearity="relu")`: `h' = relu(W_ih x + b_ih + W_hh h + b_hh)`.
    RnnRelu,
    /// `nn.LSTM`: gates i, f, g, o.
    Lstm,
    /// `nn.GRU`: gates r, z, n.
    Gru,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 4] = [Mode::RnnTanh, Mode::RnnRelu, Mode::Lstm, Mode::Gru];

    /// Number of gates `G`: the row blocks of `W_ih` and `W_hh`.
    pub fn gates(self) -> usize {
        match self {
            Mode::RnnTanh | Mode::RnnRelu => 1,
            Mode::Lstm => 4,
            Mode::Gru => 3,
        }
    }

    /// PyTorch's name for the mode (`LSTM`, `GRU`, `RNN_TANH`, `RNN_RELU`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::RnnTanh => "RNN_TANH",
            Mode::RnnRelu => "RNN_RELU",
            Mode::Lstm => "LSTM",
            Mode::Gru => "GRU",
        }
    }

    /// Parses PyTorch's mode name, case-insensitively; `RNN` alone means `RNN_TANH`, as
    /// `nn.RNN`'s default.
    pub fn from_name(name: &str) -> Option<Mode> {
        match name.trim().to_ascii_uppercase().as_str() {
            "RNN_TANH" | "RNN" => Some(Mode::RnnTanh),
            "RNN_RELU" => Some(Mode::RnnRelu),
            "LSTM" => Some(Mode::Lstm),
            "GRU" => Some(Mode::Gru),
            _ => None,
        }
    }

    /// Whether the cell carries a cell state `c` (LSTM only).
    pub fn has_cell_state(self) -> bool {
        self == Mode::Lstm
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode, Error> {
        Mode::from_name(s).ok_or_else(|| {
            Error::InvalidModel(format!(
                "unknown mode {s:?} (expected LSTM, GRU, RNN_TANH or RNN_RELU)"
            ))
        })
    }
}

/// A recurrent module's configuration: PyTorch's constructor arguments.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    /// The cell type.
    pub mode: Mode,
    /// `input_size`: features of each input step.
    pub input_size: usize,
    /// `hidden_size` `H`.
    pub hidden_size: usize,
    /// `num_layers`.
    pub num_layers: usize,
    /// `bias`: whether the `b_ih`, `b_hh` tensors exist.
    pub bias: bool,
    /// `batch_first`: input and output are `(N, L, ·)` instead of `(L, N, ·)`.
    pub batch_first: bool,
    /// `bidirectional`.
    pub bidirectional: bool,
    /// `proj_size` `P` (LSTM only); 0 means no projection.
    pub proj_size: usize,
}

/// Largest hidden, input or projection size accepted (far above any real recurrent layer; bounds
/// what a file can make recur allocate).
pub const MAX_SIZE: usize = 1 << 20;
/// Largest `num_layers` accepted.
pub const MAX_LAYERS: usize = 1024;

impl Config {
    /// A one-layer, unidirectional configuration with biases, seq-major, no projection.
    pub fn new(mode: Mode, input_size: usize, hidden_size: usize) -> Config {
        Config {
            mode,
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            bidirectional: false,
            proj_size: 0,
        }
    }

    /// Number of directions `D` (2 if bidirectional).
    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Number of gates `G`.
    pub fn gates(&self) -> usize {
        self.mode.gates()
    }

    /// `H_out`: the width of `h` and of each direction's output (`proj_size` if set, else `H`).
    pub fn output_hidden(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }

    /// The input width of `layer`: `input_size` for layer 0, `D * H_out` above it.
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.directions() * self.output_hidden()
        }
    }

    /// Checks the configuration is one PyTorch could construct, within recur's size limits.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::InvalidModel(msg));
        if self.hidden_size == 0 {
            return bad("hidden_size must be at least 1".into());
        }
        if self.num_layers == 0 {
            return bad("num_layers must be at least 1".into());
        }
        if self.input_size == 0 {
            return bad("input_size must be at least 1".into());
        }
        if self.proj_size > 0 && self.mode != Mode::Lstm {
            return bad(format!(
                "proj_size is only supported by LSTM, not {}",
                self.mode
            ));
        }
        if self.proj_size >= self.hidden_size && self.proj_size > 0 {
            return bad(format!(
                "proj_size ({}) must be smaller than hidden_size ({})",
                self.proj_size, self.hidden_size
            ));
        }
        for (name, v) in [
            ("input_size", self.input_size),
            ("hidden_size", self.hidden_size),
            ("proj_size", self.proj_size),
        ] {
            if v > MAX_SIZE {
                return bad(format!("{name} {v} exceeds recur's limit of {MAX_SIZE}"));
            }
        }
        if self.num_layers > MAX_LAYERS {
            return bad(format!(
                "num_layers {} exceeds recur's limit of {MAX_LAYERS}",
                self.num_layers
            ));
        }
        Ok(())
    }

    /// The PyTorch name of a parameter: `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh` or
    /// `weight_hr`, for `layer` and `direction` (`weight_ih_l1_reverse`).
    pub fn param_name(kind: &str, layer: usize, direction: usize) -> String {
        let suffix = if direction == 1 { "_reverse" } else { "" };
        format!("{kind}_l{layer}{suffix}")
    }

    /// The shape PyTorch gives each parameter of `layer` and `direction`, in state_dict order.
    pub fn param_shapes(&self, layer: usize, direction: usize) -> Vec<(String, Vec<usize>)> {
        let gh = self.gates() * self.hidden_size;
        let mut v = vec![
            (
                Config::param_name("weight_ih", layer, direction),
                vec![gh, self.layer_input_size(layer)],
            ),
            (
                Config::param_name("weight_hh", layer, direction),
                vec![gh, self.output_hidden()],
            ),
        ];
        if self.bias {
            v.push((Config::param_name("bias_ih", layer, direction), vec![gh]));
            v.push((Config::param_name("bias_hh", layer, direction), vec![gh]));
        }
        if self.proj_size > 0 {
            v.push((
                Config::param_name("weight_hr", layer, direction),
                vec![self.proj_size, self.hidden_size],
            ));
        }
        v
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(input_size={}, hidden_size={}, num_layers={}, bias={}, batch_first={}, bidirectional={}, proj_size={})",
            self.mode,
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.batch_first,
            self.bidirectional,
            self.proj_size
        )
    }
}
