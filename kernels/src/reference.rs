//! Plain scalar twins of every kernel, written to be read: the oracle of the property tests.
//!
//! They take weights in PyTorch's own row-major layout (`(G*H, K)`), not packed, so a packing bug
//! cannot hide in both sides of a comparison.

use crate::step::Activation;

/// `σ(x) = 1 / (1 + e^-x)` in f32; saturates to exactly 0 and 1, propagates NaN.
pub fn reference_sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `tanh(x)` in f32 (the C library's, correctly rounded or within 1 ULP).
pub fn reference_tanh(x: f32) -> f32 {
    x.tanh()
}

/// `max(x, 0)`, but NaN stays NaN as in PyTorch's `relu`.
pub fn reference_relu(x: f32) -> f32 {
    if x > 0.0 || x.is_nan() {
        x
    } else {
        0.0
    }
}

/// `y[r] = W x[r]` for `rows` rows: `w` is row-major `(m, k)`, `x` `(rows, k)`, `y` `(rows, m)`.
pub fn reference_matvec(w: &[f32], m: usize, k: usize, x: &[f32], y: &mut [f32], rows: usize) {
    for r in 0..rows {
        for i in 0..m {
            let mut acc = 0.0f32;
            for j in 0..k {
                acc += w[i * k + j] * x[r * k + j];
            }
            y[r * m + i] = acc;
        }
    }
}

/// Reference input projection `xp[r] = W x[r] + bias`: `w` is row-major `(n, k)` (PyTorch's
/// `W_ih`), `x` `(rows, k)`, `xp` `(rows, n)`.
pub fn reference_input_projection(
    w: &[f32],
    n: usize,
    k: usize,
    bias: &[f32],
    x: &[f32],
    xp: &mut [f32],
    rows: usize,
) {
    reference_matvec(w, n, k, x, xp, rows);
    for row in xp[..rows * n].chunks_exact_mut(n) {
        for (y, b) in row.iter_mut().zip(bias) {
            *y += b;
        }
    }
}

/// Reference LSTM step; `w_hh` is `(4H, K)` row-major, gate order i, f, g, o.
#[allow(clippy::too_many_arguments)]
pub fn reference_lstm_step(
    w_hh: &[f32],
    h: usize,
    k: usize,
    xp: &[f32],
    h_prev: &[f32],
    c: &mut [f32],
    h_out: &mut [f32],
    rows: usize,
) {
    let mut gates = vec![0.0f32; 4 * h];
    for r in 0..rows {
        reference_matvec(w_hh, 4 * h, k, &h_prev[r * k..(r + 1) * k], &mut gates, 1);
        for u in 0..h {
            let pre = |g: usize| xp[r * 4 * h + g * h + u] + gates[g * h + u];
            let i = reference_sigmoid(pre(0));
            let f = reference_sigmoid(pre(1));
            let g = reference_tanh(pre(2));
            let o = reference_sigmoid(pre(3));
            let c_new = f * c[r * h + u] + i * g;
            c[r * h + u] = c_new;
            h_out[r * h + u] = o * reference_tanh(c_new);
        }
    }
}

/// Reference GRU step; `w_hh` is `(3H, H)` row-major, gate order r, z, n.
pub fn reference_gru_step(
    w_hh: &[f32],
    h: usize,
    b_hn: &[f32],
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
) {
    let mut gates = vec![0.0f32; 3 * h];
    for r in 0..rows {
        let hp = &h_prev[r * h..(r + 1) * h];
        reference_matvec(w_hh, 3 * h, h, hp, &mut gates, 1);
        for u in 0..h {
            let x = |g: usize| xp[r * 3 * h + g * h + u];
            let rg = reference_sigmoid(x(0) + gates[u]);
            let z = reference_sigmoid(x(1) + gates[h + u]);
            let n = reference_tanh(x(2) + rg * (gates[2 * h + u] + b_hn[u]));
            h_out[r * h + u] = (1.0 - z) * n + z * hp[u];
        }
    }
}

/// Reference RNN step; `w_hh` is `(H, H)` row-major.
pub fn reference_rnn_step(
    w_hh: &[f32],
    h: usize,
    act: Activation,
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
) {
    let mut acc = vec![0.0f32; h];
    for r in 0..rows {
        reference_matvec(w_hh, h, h, &h_prev[r * h..(r + 1) * h], &mut acc, 1);
        for u in 0..h {
            let pre = xp[r * h + u] + acc[u];
            h_out[r * h + u] = match act {
                Activation::Tanh => reference_tanh(pre),
                Activation::Relu => reference_relu(pre),
            };
        }
    }
}

/// Reference of [`crate::step::RnnStepsFn`]: [`reference_rnn_step`] for one row over `steps`
/// steps, each reading the previous one's output (`h0` first).
pub fn reference_rnn_steps(
    w_hh: &[f32],
    h: usize,
    act: Activation,
    xp: &[f32],
    h0: &[f32],
    h_out: &mut [f32],
    steps: usize,
) {
    for s in 0..steps {
        let (done, rest) = h_out.split_at_mut(s * h);
        let h_prev = if s == 0 {
            &h0[..h]
        } else {
            &done[(s - 1) * h..]
        };
        reference_rnn_step(w_hh, h, act, &xp[s * h..], h_prev, &mut rest[..h], 1);
    }
}

/// Reference `C = A Bᵀ + beta C`: `a` is `(m, k)`, `b` `(n, k)`, `c` `(m, n)`, all row-major.
pub fn reference_gemm_nt(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += a[i * k + p] * b[j * k + p];
            }
            c[i * n + j] = if beta == 0.0 {
                acc
            } else {
                acc + beta * c[i * n + j]
            };
        }
    }
}
