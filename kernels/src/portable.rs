//! The portable tier: plain Rust over fixed-width arrays that the compiler vectorizes for the
//! build target (SSE2 on generic x86-64, NEON on aarch64).

use crate::pack::{PackedMatrix, BLOCK};
use crate::reference::{reference_relu, reference_sigmoid, reference_tanh};
use crate::step::{check_step, Activation};

/// Accumulates `W_hh h` for every gate of block `j` of one row: `acc[g][u]`.
#[inline(always)]
fn block_matvec<const G: usize>(w: &PackedMatrix, j: usize, h: &[f32]) -> [[f32; BLOCK]; G] {
    let mut acc = [[0.0f32; BLOCK]; G];
    let wb = w.block(j);
    for (k, &hk) in h.iter().enumerate().take(w.cols()) {
        let wk = &wb[k * G * BLOCK..(k + 1) * G * BLOCK];
        for g in 0..G {
            for u in 0..BLOCK {
                acc[g][u] += wk[g * BLOCK + u] * hk;
            }
        }
    }
    acc
}

pub(crate) fn lstm_step(
    w: &PackedMatrix,
    xp: &[f32],
    h_prev: &[f32],
    c: &mut [f32],
    h_out: &mut [f32],
    rows: usize,
) {
    assert_eq!(w.gates(), 4, "lstm_step needs 4 gates");
    check_step(w, xp.len(), h_prev.len(), &[c.len(), h_out.len()], rows);
    let (h, k) = (w.rows(), w.cols());
    for r in 0..rows {
        let hp = &h_prev[r * k..(r + 1) * k];
        let x = &xp[r * 4 * h..(r + 1) * 4 * h];
        for j in 0..w.blocks() {
            let acc = block_matvec::<4>(w, j, hp);
            let u0 = j * BLOCK;
            for u in 0..BLOCK.min(h - u0) {
                let i = reference_sigmoid(x[u0 + u] + acc[0][u]);
                let f = reference_sigmoid(x[h + u0 + u] + acc[1][u]);
                let g = reference_tanh(x[2 * h + u0 + u] + acc[2][u]);
                let o = reference_sigmoid(x[3 * h + u0 + u] + acc[3][u]);
                let cell = &mut c[r * h + u0 + u];
                *cell = f * *cell + i * g;
                h_out[r * h + u0 + u] = o * reference_tanh(*cell);
            }
        }
    }
}

pub(crate) fn gru_step(
    w: &PackedMatrix,
    b_hn: &[f32],
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
) {
    assert_eq!(w.gates(), 3, "gru_step needs 3 gates");
    assert_eq!(w.rows(), w.cols(), "gru_step needs a square W_hh per gate");
    check_step(w, xp.len(), h_prev.len(), &[h_out.len()], rows);
    let h = w.rows();
    assert!(b_hn.len() >= h, "gru_step: b_hn holds {} < {h}", b_hn.len());
    for r in 0..rows {
        let hp = &h_prev[r * h..(r + 1) * h];
        let x = &xp[r * 3 * h..(r + 1) * 3 * h];
        for j in 0..w.blocks() {
            let acc = block_matvec::<3>(w, j, hp);
            let u0 = j * BLOCK;
            for u in 0..BLOCK.min(h - u0) {
                let rg = reference_sigmoid(x[u0 + u] + acc[0][u]);
                let z = reference_sigmoid(x[h + u0 + u] + acc[1][u]);
                let n = reference_tanh(x[2 * h + u0 + u] + rg * (acc[2][u] + b_hn[u0 + u]));
                h_out[r * h + u0 + u] = (1.0 - z) * n + z * hp[u0 + u];
            }
        }
    }
}

pub(crate) fn rnn_step(
    w: &PackedMatrix,
    act: Activation,
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
) {
    assert_eq!(w.gates(), 1, "rnn_step needs 1 gate");
    check_step(w, xp.len(), h_prev.len(), &[h_out.len()], rows);
    let (h, k) = (w.rows(), w.cols());
    for r in 0..rows {
        let hp = &h_prev[r * k..(r + 1) * k];
        for j in 0..w.blocks() {
            let acc = block_matvec::<1>(w, j, hp);
            let u0 = j * BLOCK;
            for u in 0..BLOCK.min(h - u0) {
                let pre = xp[r * h + u0 + u] + acc[0][u];
                h_out[r * h + u0 + u] = match act {
                    Activation::Tanh => reference_tanh(pre),
                    Activation::Relu => reference_relu(pre),
                };
            }
        }
    }
}

pub(crate) fn project(w: &PackedMatrix, x: &[f32], out: &mut [f32], rows: usize) {
    assert_eq!(w.gates(), 1, "project needs 1 gate");
    let (p, k) = (w.rows(), w.cols());
    assert!(
        x.len() >= rows * k && out.len() >= rows * p,
        "project: slices too short"
    );
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        for j in 0..w.blocks() {
            let acc = block_matvec::<1>(w, j, xr);
            let u0 = j * BLOCK;
            let n = BLOCK.min(p - u0);
            out[r * p + u0..r * p + u0 + n].copy_from_slice(&acc[0][..n]);
        }
    }
}
