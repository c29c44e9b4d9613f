//! A plain float64 implementation of PyTorch's recurrent layers, written to be read: the formulas
//! of SPEC §1 line by line, one batch element and one timestep at a time. It is the oracle the
//! property tests hold the engine to (SPEC §4: within 1e-4 of float64).

use crate::config::{Config, Mode};
use crate::forward::ForwardInput;
use crate::model::StateDict;

/// Outputs of the reference, in float64, with the same shapes as [`crate::Outputs`].
#[derive(Clone, Debug)]
pub struct ReferenceOutputs {
    /// Shape of `output`.
    pub output_shape: Vec<usize>,
    /// `output`, row-major.
    pub output: Vec<f64>,
    /// Shape of `h_n`.
    pub h_n_shape: Vec<usize>,
    /// `h_n`, row-major.
    pub h_n: Vec<f64>,
    /// `c_n` (LSTM), row-major, shaped as `h_n` but with `hidden_size` columns.
    pub c_n: Option<Vec<f64>>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn relu(x: f64) -> f64 {
    if x > 0.0 || x.is_nan() {
        x
    } else {
        0.0
    }
}

/// `W v` for a row-major `(rows, v.len())` matrix, each weight widened to f64.
fn matvec(w: &[f32], v: &[f64]) -> Vec<f64> {
    w.chunks_exact(v.len())
        .map(|row| row.iter().zip(v).map(|(&a, &b)| a as f64 * b).sum())
        .collect()
}

/// One cell step of `config.mode`: returns `(h', c')` from `x`, `h`, `c`.
fn cell(
    config: &Config,
    sd: &StateDict,
    layer: usize,
    dir: usize,
    x: &[f64],
    h: &[f64],
    c: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let p = |kind: &str| &sd[&Config::param_name(kind, layer, dir)].data;
    let hs = config.hidden_size;
    let g = config.gates();
    let zeros = vec![0.0f32; g * hs];
    let (b_ih, b_hh) = if config.bias {
        (p("bias_ih"), p("bias_hh"))
    } else {
        (&zeros, &zeros)
    };
    let wx = matvec(p("weight_ih"), x); // W_ih x
    let wh = matvec(p("weight_hh"), h); // W_hh h
    let gate = |k: usize, u: usize| {
        wx[k * hs + u] + b_ih[k * hs + u] as f64 + wh[k * hs + u] + b_hh[k * hs + u] as f64
    };
    match config.mode {
        Mode::RnnTanh => ((0..hs).map(|u| gate(0, u).tanh()).collect(), Vec::new()),
        Mode::RnnRelu => ((0..hs).map(|u| relu(gate(0, u))).collect(), Vec::new()),
        Mode::Lstm => {
            let mut c_new = vec![0.0; hs];
            let mut h_new = vec![0.0; hs];
            for u in 0..hs {
                let i = sigmoid(gate(0, u));
                let f = sigmoid(gate(1, u));
                let gg = gate(2, u).tanh();
                let o = sigmoid(gate(3, u));
                c_new[u] = f * c[u] + i * gg; // c' = f*c + i*g
                h_new[u] = o * c_new[u].tanh(); // h' = o*tanh(c')
            }
            if config.proj_size > 0 {
                h_new = matvec(p("weight_hr"), &h_new); // h' = W_hr h'
            }
            (h_new, c_new)
        }
        Mode::Gru => {
            let h_new = (0..hs)
                .map(|u| {
                    let r = sigmoid(gate(0, u));
                    let z = sigmoid(gate(1, u));
                    // n = tanh(W_in x + b_in + r*(W_hn h + b_hn))
                    let n = (wx[2 * hs + u]
                        + b_ih[2 * hs + u] as f64
                        + r * (wh[2 * hs + u] + b_hh[2 * hs + u] as f64))
                        .tanh();
                    (1.0 - z) * n + z * h[u] // h' = (1-z)*n + z*h
                })
                .collect();
            (h_new, Vec::new())
        }
    }
}

/// Runs `config` with the weights of `sd` (names without prefix) on `fi`, in float64.
///
/// # Panics
/// On shapes the engine would reject: validate with the engine first.
pub fn forward(config: &Config, sd: &StateDict, fi: &ForwardInput<'_>) -> ReferenceOutputs {
    let shape = fi.input.shape;
    let batched = shape.len() == 3;
    let (l, n) = match (batched, config.batch_first) {
        (true, true) => (shape[1], shape[0]),
        (true, false) => (shape[0], shape[1]),
        (false, _) => (shape[0], 1),
    };
    let (d_count, h_out, hs) = (
        config.directions(),
        config.output_hidden(),
        config.hidden_size,
    );
    let states = d_count * config.num_layers;
    let in0 = config.input_size;
    // x[b][t]: the input vectors of each batch element, in f64.
    let mut x: Vec<Vec<Vec<f64>>> = (0..n)
        .map(|b| {
            (0..l)
                .map(|t| {
                    let off = if batched && config.batch_first {
                        (b * l + t) * in0
                    } else {
                        (t * n + b) * in0
                    };
                    fi.input.data[off..off + in0]
                        .iter()
                        .map(|&v| v as f64)
                        .collect()
                })
                .collect()
        })
        .collect();
    let lengths: Vec<usize> = fi.lengths.map_or(vec![l; n], <[usize]>::to_vec);
    let mut h_n = vec![0.0; states * n * h_out];
    let mut c_n = vec![0.0; states * n * hs];
    for layer in 0..config.num_layers {
        // y[b][t]: this layer's output, both directions concatenated; zero past the length.
        let mut y = vec![vec![vec![0.0f64; d_count * h_out]; l]; n];
        for dir in 0..d_count {
            let idx = layer * d_count + dir;
            for b in 0..n {
                let mut h: Vec<f64> = match fi.h0 {
                    Some(h0) => h0.data[(idx * n + b) * h_out..][..h_out]
                        .iter()
                        .map(|&v| v as f64)
                        .collect(),
                    None => vec![0.0; h_out],
                };
                let mut c: Vec<f64> = match fi.c0 {
                    Some(c0) => c0.data[(idx * n + b) * hs..][..hs]
                        .iter()
                        .map(|&v| v as f64)
                        .collect(),
                    None => vec![0.0; hs],
                };
                let len = lengths[b];
                // The reverse direction reads the sequence from its own last valid step.
                let times: Vec<usize> = if dir == 0 {
                    (0..len).collect()
                } else {
                    (0..len).rev().collect()
                };
                for t in times {
                    let (h_new, c_new) = cell(config, sd, layer, dir, &x[b][t], &h, &c);
                    h = h_new;
                    c = c_new;
                    y[b][t][dir * h_out..(dir + 1) * h_out].copy_from_slice(&h);
                }
                h_n[(idx * n + b) * h_out..][..h_out].copy_from_slice(&h);
                if config.mode == Mode::Lstm {
                    c_n[(idx * n + b) * hs..][..hs].copy_from_slice(&c);
                }
            }
        }
        x = y;
    }
    let width = d_count * h_out;
    let mut output = Vec::with_capacity(l * n * width);
    let output_shape = match (batched, config.batch_first) {
        (true, true) => {
            (0..n).for_each(|b| (0..l).for_each(|t| output.extend_from_slice(&x[b][t])));
            vec![n, l, width]
        }
        (true, false) => {
            (0..l).for_each(|t| (0..n).for_each(|b| output.extend_from_slice(&x[b][t])));
            vec![l, n, width]
        }
        (false, _) => {
            (0..l).for_each(|t| output.extend_from_slice(&x[0][t]));
            vec![l, width]
        }
    };
    let h_n_shape = if batched {
        vec![states, n, h_out]
    } else {
        vec![states, h_out]
    };
    ReferenceOutputs {
        output_shape,
        output,
        h_n_shape,
        h_n,
        c_n: (config.mode == Mode::Lstm).then_some(c_n),
    }
}
