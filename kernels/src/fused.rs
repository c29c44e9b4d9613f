//! The fused step kernels, written once, generic over [`Simd`] and instantiated per tier by
//! [`crate::tiers`].
//!
//! For each packed block of [`BLOCK`] hidden units, one pass over `h_prev` accumulates every gate
//! of the block in registers (for a tile of `R` batch rows at once, so each weight loaded serves
//! `R` rows); then the activations, the cell update and the stores of `h` (and `c`) happen on the
//! registers, with no gate buffer. Tiers with narrow vectors may cover a block in several passes,
//! each over `NV` of the block's `BLOCK / LANES` unit vectors, to fit `G * R * NV` accumulators
//! in their registers.
//!
//! Every output element is computed by the same instruction sequence whatever the tile: the
//! accumulator starts at `0`, takes one `mul_add(w[k], h[k], acc)` per `k = 0..K` in order, then
//! the element-wise epilogue. So a row's result does not depend on `R`, `NV`, the number of rows
//! in the call, or the block range (SPEC §4: bit-identical for any batch split and thread count).
//!
//! Tails: the last block's padding units have zero weights and are never read from `xp` or
//! written to the outputs (partial loads and stores through a small stack buffer); rows that do
//! not fill a tile of `R` run one at a time.

use std::ops::Range;

use crate::pack::{PackedMatrix, BLOCK};
use crate::simd::Simd;
use crate::step::{check_step_blocks, Activation};
use crate::vecmath::{relu, sigmoid::sigmoid, tanh::tanh};

/// `W h` for one block: `acc[r][g][v]` is gate `g`, unit vector `v0 + v` of the block, row `r`,
/// summed over `k = 0..K` in order with one `mul_add` per term.
///
/// `wb` is the packed block (`K * G * BLOCK` floats), `h[r]` row `r` of `h_prev` (`K` floats).
#[inline(always)]
fn accumulate<S: Simd, const G: usize, const R: usize, const NV: usize>(
    s: S,
    wb: &[f32],
    h: [&[f32]; R],
    v0: usize,
) -> [[[S::V; NV]; G]; R] {
    let mut acc = [[[s.zero(); NV]; G]; R];
    for (kk, wk) in wb.chunks_exact(G * BLOCK).enumerate() {
        let hk: [S::V; R] = std::array::from_fn(|r| s.splat(h[r][kk]));
        for g in 0..G {
            for v in 0..NV {
                let wv = s.load(&wk[g * BLOCK + (v0 + v) * S::LANES..]);
                for r in 0..R {
                    acc[r][g][v] = s.mul_add(wv, hk[r], acc[r][g][v]);
                }
            }
        }
    }
    acc
}

/// Runs `body(r, u, n, acc)` for every row `r` of the tile and every unit vector of block `j`
/// that holds real units (`u` the first unit, `n <= LANES` of them), after accumulating the block
/// in passes of `NV` vectors.
#[inline(always)]
fn for_each_vector<S: Simd, const G: usize, const R: usize, const NV: usize>(
    s: S,
    w: &PackedMatrix,
    j: usize,
    h_prev: &[f32],
    r0: usize,
    mut body: impl FnMut(usize, usize, usize, [S::V; G]),
) {
    let (units, k) = (w.rows(), w.cols());
    let wb = w.block(j);
    let h: [&[f32]; R] = std::array::from_fn(|r| &h_prev[(r0 + r) * k..][..k]);
    let vectors = BLOCK / S::LANES;
    let mut v0 = 0;
    while v0 < vectors && j * BLOCK + v0 * S::LANES < units {
        let acc = accumulate::<S, G, R, NV>(s, wb, h, v0);
        for (r, acc_r) in acc.iter().enumerate() {
            for v in 0..NV {
                let u = j * BLOCK + (v0 + v) * S::LANES;
                if u >= units {
                    break;
                }
                let n = S::LANES.min(units - u);
                body(r0 + r, u, n, std::array::from_fn(|g| acc_r[g][v]));
            }
        }
        v0 += NV;
    }
}

/// Runs `tile(r0, single)` over `rows` rows: tiles of `R` rows (`single = false`), then the
/// rest one row at a time (`single = true`).
#[inline(always)]
fn for_each_tile<const R: usize>(rows: usize, mut tile: impl FnMut(usize, bool)) {
    let mut r0 = 0;
    if R > 1 {
        while r0 + R <= rows {
            tile(r0, false);
            r0 += R;
        }
    }
    while r0 < rows {
        tile(r0, true);
        r0 += 1;
    }
}

/// The LSTM cell on one vector of `n` units: `i,f,o = σ(xp + acc)`, `g = tanh(xp + acc)`,
/// `c' = f*c + i*g`, `h' = o*tanh(c')`. `xp[g]`, `c`, `h` hold the `n` units.
#[inline(always)]
fn lstm_cell<S: Simd>(s: S, acc: [S::V; 4], xp: [&[f32]; 4], c: &mut [f32], h: &mut [f32]) {
    let pre = |g: usize| s.add(s.load_partial(xp[g]), acc[g]);
    let i = sigmoid(s, pre(0));
    let f = sigmoid(s, pre(1));
    let g = tanh(s, pre(2));
    let o = sigmoid(s, pre(3));
    let c_new = s.mul_add(f, s.load_partial(c), s.mul(i, g));
    s.store_partial(c_new, c);
    s.store_partial(s.mul(o, tanh(s, c_new)), h);
}

/// LSTM step over `blocks` of `w` (see [`crate::step::LstmStepBlocksFn`] for the contract).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn lstm_step_blocks<S: Simd, const R: usize, const NVR: usize, const NV1: usize>(
    s: S,
    w: &PackedMatrix,
    xp: &[f32],
    h_prev: &[f32],
    c: &mut [f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
) {
    let outs = [c.len(), h_out.len()];
    let units = check_step_blocks(
        "lstm_step",
        w,
        4,
        Some(xp.len()),
        h_prev.len(),
        &outs,
        rows,
        &blocks,
    );
    let h = w.rows();
    let (u_begin, nu) = (units.start, units.len());
    for j in blocks {
        let mut cell = |r: usize, u: usize, n: usize, acc: [S::V; 4]| {
            let x = &xp[r * 4 * h..][..4 * h];
            let xs = std::array::from_fn(|g| &x[g * h + u..][..n]);
            let o = r * nu + (u - u_begin);
            lstm_cell(s, acc, xs, &mut c[o..o + n], &mut h_out[o..o + n]);
        };
        for_each_tile::<R>(rows, |r0, single| {
            if single {
                for_each_vector::<S, 4, 1, NV1>(s, w, j, h_prev, r0, &mut cell)
            } else {
                for_each_vector::<S, 4, R, NVR>(s, w, j, h_prev, r0, &mut cell)
            }
        });
    }
}

/// GRU step over `blocks` of `w` (see [`crate::step::GruStepBlocksFn`] for the contract):
/// `r,z = σ(xp + acc)`, `n = tanh(xp_n + r*(acc_n + b_hn))`, `h' = (1-z)*n + z*h`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn gru_step_blocks<S: Simd, const R: usize, const NVR: usize, const NV1: usize>(
    s: S,
    w: &PackedMatrix,
    b_hn: &[f32],
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
) {
    assert_eq!(w.rows(), w.cols(), "gru_step needs a square W_hh per gate");
    let outs = [h_out.len()];
    let units = check_step_blocks(
        "gru_step",
        w,
        3,
        Some(xp.len()),
        h_prev.len(),
        &outs,
        rows,
        &blocks,
    );
    let h = w.rows();
    assert!(b_hn.len() >= h, "gru_step: b_hn holds {} < {h}", b_hn.len());
    let (u_begin, nu) = (units.start, units.len());
    let one = s.splat(1.0);
    for j in blocks {
        let mut cell = |r: usize, u: usize, n: usize, acc: [S::V; 3]| {
            let x = &xp[r * 3 * h..][..3 * h];
            let pre = |g: usize| s.add(s.load_partial(&x[g * h + u..][..n]), acc[g]);
            let rg = sigmoid(s, pre(0));
            let z = sigmoid(s, pre(1));
            let hn = s.add(acc[2], s.load_partial(&b_hn[u..u + n]));
            let xn = s.load_partial(&x[2 * h + u..][..n]);
            let nn = tanh(s, s.mul_add(rg, hn, xn));
            let hp = s.load_partial(&h_prev[r * h + u..][..n]);
            let h_new = s.mul_add(z, hp, s.mul(s.sub(one, z), nn));
            let o = r * nu + (u - u_begin);
            s.store_partial(h_new, &mut h_out[o..o + n]);
        };
        for_each_tile::<R>(rows, |r0, single| {
            if single {
                for_each_vector::<S, 3, 1, NV1>(s, w, j, h_prev, r0, &mut cell)
            } else {
                for_each_vector::<S, 3, R, NVR>(s, w, j, h_prev, r0, &mut cell)
            }
        });
    }
}

/// RNN step over `blocks` of `w` (see [`crate::step::RnnStepBlocksFn`]): `h' = act(xp + acc)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn rnn_step_blocks<S: Simd, const R: usize, const NVR: usize, const NV1: usize>(
    s: S,
    w: &PackedMatrix,
    act: Activation,
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
) {
    let outs = [h_out.len()];
    let units = check_step_blocks(
        "rnn_step",
        w,
        1,
        Some(xp.len()),
        h_prev.len(),
        &outs,
        rows,
        &blocks,
    );
    let h = w.rows();
    let (u_begin, nu) = (units.start, units.len());
    for j in blocks {
        let mut cell = |r: usize, u: usize, n: usize, acc: [S::V; 1]| {
            let pre = s.add(s.load_partial(&xp[r * h + u..][..n]), acc[0]);
            let y = match act {
                Activation::Tanh => tanh(s, pre),
                Activation::Relu => relu(s, pre),
            };
            let o = r * nu + (u - u_begin);
            s.store_partial(y, &mut h_out[o..o + n]);
        };
        for_each_tile::<R>(rows, |r0, single| {
            if single {
                for_each_vector::<S, 1, 1, NV1>(s, w, j, h_prev, r0, &mut cell)
            } else {
                for_each_vector::<S, 1, R, NVR>(s, w, j, h_prev, r0, &mut cell)
            }
        });
    }
}

/// Projection over `blocks` of `w` (see [`crate::step::ProjectBlocksFn`]): `out = W x`.
#[inline(always)]
pub(crate) fn project_blocks<S: Simd, const R: usize, const NVR: usize, const NV1: usize>(
    s: S,
    w: &PackedMatrix,
    x: &[f32],
    out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
) {
    let units = check_step_blocks("project", w, 1, None, x.len(), &[out.len()], rows, &blocks);
    let (u_begin, nu) = (units.start, units.len());
    for j in blocks {
        let mut cell = |r: usize, u: usize, n: usize, acc: [S::V; 1]| {
            let o = r * nu + (u - u_begin);
            s.store_partial(acc[0], &mut out[o..o + n]);
        };
        for_each_tile::<R>(rows, |r0, single| {
            if single {
                for_each_vector::<S, 1, 1, NV1>(s, w, j, x, r0, &mut cell)
            } else {
                for_each_vector::<S, 1, R, NVR>(s, w, j, x, r0, &mut cell)
            }
        });
    }
}

/// `y[i] = f(x[i])` over slices of any length (the last partial vector through a stack buffer).
///
/// # Panics
/// If `x` and `y` differ in length.
#[inline(always)]
pub(crate) fn map<S: Simd>(s: S, x: &[f32], y: &mut [f32], f: impl Fn(S, S::V) -> S::V) {
    assert_eq!(x.len(), y.len(), "map: input and output lengths differ");
    for (xc, yc) in x.chunks(S::LANES).zip(y.chunks_mut(S::LANES)) {
        s.store_partial(f(s, s.load_partial(xc)), yc);
    }
}
