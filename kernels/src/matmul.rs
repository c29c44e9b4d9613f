//! The input projection of every timestep (`xp = x W_ihᵀ + b`, one product per layer and
//! direction) as a register-blocked product with weights packed at load, written once, generic
//! over [`Simd`].
//!
//! # The register tile
//!
//! [`tile`] accumulates an `MR x (JB * NV * LANES)` tile: `MR` rows of the input against `JB`
//! packed blocks of 16 outputs, `NV` vectors each. For every `k` in order it loads the
//! `JB * NV` weight vectors once and serves all `MR` rows with them (one broadcast per row), so
//! a weight costs `1 / MR` loads and an input value `1 / (JB * NV)`. On AVX2 (16 registers) the
//! tile is 6 rows x 16 outputs: 12 accumulators, 2 weight vectors and a broadcast.
//!
//! # Loops and caches
//!
//! Outermost first: row chunks (their inputs stay in L2 while every block runs over them),
//! groups of `JB` blocks (a block's weights, `K x 16` contiguous floats, stream in order from
//! L2 and serve every row tile of the chunk), `k` chunks (only for `K` beyond 1024: measured on
//! the AVX2 machine this was tuned on, a k-blocked panel kept in L1 lost to the unblocked
//! stream from L2, which its stores and reloads of partial sums cost more than it saved), row
//! tiles. Before each row tile, the next tile's output lines are prefetched: `xp` of all
//! timesteps is far larger than the caches, and the stores of a tile would otherwise wait on
//! their misses one line at a time (measured: ~70 -> ~80 GFLOP/s).
//!
//! # The order of operations
//!
//! Every output element is `acc = 0; acc = mul_add(w[k], x[k], acc)` for `k = 0..K` in order,
//! then `acc + bias` — partial sums of a `k` chunk wait in `xp` in f32, exactly — whatever
//! `MR`, the chunk sizes, the number of rows, or the row's place in its tile: a row's result
//! does not depend on the other rows (SPEC §4: bit-identical for any batch split). A tile that
//! is not full (the last rows, the last blocks) repeats a real row or block in its spare slots
//! and drops their results: it never reads past an input nor changes a real result.

use crate::pack::{PackedMatrix, BLOCK};
use crate::simd::Simd;

/// Accumulators of one register tile: `acc[r][b][v]`, row `r`, block `b`, vector `v`.
pub(crate) type Acc<S, const MR: usize, const JB: usize, const NV: usize> =
    [[[<S as Simd>::V; NV]; JB]; MR];

/// `acc[r][b][v] = mul_add(w[b][k*BLOCK + v*LANES..], a[r][k], acc[r][b][v])` for
/// `k = 0..kc` in order.
///
/// `a[r]`: row `r`'s inputs `k0..k0 + kc` (at least `kc` floats); `w[b]`: block `b`'s packed
/// weights from k-row `k0` on (its `K x BLOCK` panel, k-rows `BLOCK` floats apart).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(crate) fn tile<S: Simd, const MR: usize, const JB: usize, const NV: usize>(
    s: S,
    acc: &mut Acc<S, MR, JB, NV>,
    a: [&[f32]; MR],
    w: [&[f32]; JB],
    kc: usize,
) {
    let mut a_k: [&[f32]; MR] = [&[]; MR];
    for r in 0..MR {
        a_k[r] = &a[r][..kc];
    }
    // The panels as rows of `BLOCK` floats, exactly `kc` of them like `a_k`, so that indexing
    // both by `k < kc` needs no bounds checks in the loop.
    let mut w_k: [&[[f32; BLOCK]]; JB] = [&[]; JB];
    for b in 0..JB {
        w_k[b] = w[b][..kc * BLOCK].as_chunks::<BLOCK>().0;
    }
    // The loop works on a local copy: accumulators behind `&mut` would be stored back to
    // memory every `k` (measured on AVX-512, 24 accumulators: 17 stores per `k`, the loop at
    // ~40% of the FMA peak).
    let mut t = *acc;
    for k in 0..kc {
        let mut wv = [[s.zero(); NV]; JB];
        for b in 0..JB {
            let wk = &w_k[b][k];
            for v in 0..NV {
                wv[b][v] = s.load(&wk[v * S::LANES..]);
            }
        }
        for r in 0..MR {
            let ar = s.splat(a_k[r][k]);
            for b in 0..JB {
                for v in 0..NV {
                    t[r][b][v] = s.mul_add(wv[b][v], ar, t[r][b][v]);
                }
            }
        }
    }
    *acc = t;
}

/// The input projection `xp = x W_ihᵀ + bias` of `rows` rows (see
/// [`crate::step::InputProjectionFn`] for the contract).
///
/// Tiles of `MR` rows by `JB` blocks of `NV * LANES = BLOCK` columns (see the module docs for
/// the loops); `k` chunks of at most `kc_max`, row chunks of about `a_floats / kc` rows. A call
/// of a single row takes tiles of one row by `JB1` blocks instead, a call of fewer than
/// [`FEW_ROWS`] rows tiles of `MRF` rows by `JBF` blocks.
#[inline(always)]
pub(crate) fn input_projection<
    S: Simd,
    const MR: usize,
    const JB: usize,
    const NV: usize,
    const JB1: usize,
    const MRF: usize,
    const JBF: usize,
>(
    s: S,
    w: &PackedMatrix,
    bias: &[f32],
    x: &[f32],
    xp: &mut [f32],
    rows: usize,
    (kc_max, a_floats): (usize, usize),
) {
    const {
        assert!(
            MR >= 1 && JB >= 1 && NV >= 1 && JB1 >= 1 && MRF >= 1 && JBF >= 1,
            "empty tile"
        )
    };
    assert_eq!(
        NV * S::LANES,
        BLOCK,
        "input_projection: a tile's vectors must cover one block"
    );
    assert_eq!(
        w.gates(),
        1,
        "input_projection: W_ih must be packed plain (one gate)"
    );
    let (n, k) = (w.rows(), w.cols());
    assert!(
        bias.len() >= n,
        "input_projection: bias holds {} < {n}",
        bias.len()
    );
    assert!(
        x.len() >= rows * k,
        "input_projection: x holds {} < {rows}x{k}",
        x.len()
    );
    assert!(
        xp.len() >= rows * n,
        "input_projection: xp holds {} < {rows}x{n}",
        xp.len()
    );
    if rows == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in xp[..rows * n].chunks_exact_mut(n) {
            row.copy_from_slice(&bias[..n]);
        }
        return;
    }
    // A single row (one stream's step) takes single-row tiles over `JB1` blocks at once: a
    // tile of `MR` rows would repeat it `MR` times (the arithmetic of `MR` rows for one), and
    // one row reads each weight once, so it runs at the rate the weights stream in.
    // A call of few rows (a short sequence, a layer of one stream) takes the tier's tile for
    // those: the large tile's per-tile costs and its spare rows weigh more there.
    if rows == 1 {
        project_rows::<S, 1, JB1, NV>(s, w, bias, x, xp, rows, (kc_max, a_floats));
    } else if rows < FEW_ROWS {
        project_rows::<S, MRF, JBF, NV>(s, w, bias, x, xp, rows, (kc_max, a_floats));
    } else {
        project_rows::<S, MR, JB, NV>(s, w, bias, x, xp, rows, (kc_max, a_floats));
    }
}

/// Outputs of at most this many bytes skip the prefetch of each next tile's output lines (see
/// [`project_rows`]): half the smallest L1 data cache of the targets (32 KiB).
const PREFETCH_OUT_BYTES: usize = 16 << 10;

/// Calls of fewer rows than this take the tier's tile for few rows (see [`input_projection`]);
/// the tiles give the same bits (see the module docs), so the choice changes no result.
pub(crate) const FEW_ROWS: usize = 128;

/// The loops of [`input_projection`] (its checks done) with tiles of `MR` rows by `JB` blocks.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn project_rows<S: Simd, const MR: usize, const JB: usize, const NV: usize>(
    s: S,
    w: &PackedMatrix,
    bias: &[f32],
    x: &[f32],
    xp: &mut [f32],
    rows: usize,
    (kc_max, a_floats): (usize, usize),
) {
    let (n, k) = (w.rows(), w.cols());
    let blocks = w.blocks();
    let block_len = k * BLOCK;
    let data = w.data();
    let kc_max = kc_max.max(1);
    // Rows per chunk: their inputs (`mc x kc`) stay in L2 while every block runs over them.
    let mc_max = (a_floats / kc_max.min(k) / MR).clamp(1, 32) * MR;
    // An output that fits L1 is written to lines already there after the first block (and
    // in any case cheaply): its tiles skip the prefetch of the next tile's output lines
    // (rnn_tiny_b1's 50 x 64 call, K = 32: ~8% of its time).
    let prefetch_out = rows * n * 4 > PREFETCH_OUT_BYTES;
    let mut m0 = 0;
    while m0 < rows {
        let m1 = rows.min(m0 + mc_max);
        let mut j = 0;
        while j < blocks {
            let jb = JB.min(blocks - j);
            let mut k0 = 0;
            while k0 < k {
                let kc = kc_max.min(k - k0);
                let last = k0 + kc == k;
                let mut wb: [&[f32]; JB] = [&[]; JB];
                for b in 0..JB {
                    let jj = j + b.min(jb - 1);
                    wb[b] = &data[jj * block_len + k0 * BLOCK..(jj + 1) * block_len];
                }
                let mut r0 = m0;
                while r0 < m1 {
                    let mr = MR.min(m1 - r0);
                    let mut a: [&[f32]; MR] = [&[]; MR];
                    for r in 0..MR {
                        a[r] = &x[(r0 + r.min(mr - 1)) * k + k0..][..kc];
                    }
                    // The next row tile's output lines: their stores (and, after the first
                    // `k` chunk, the loads of their partial sums) would otherwise wait on
                    // cache misses one line at a time. (None for an output within L1.)
                    let ahead = if prefetch_out {
                        m1.min(r0 + 2 * MR)
                    } else {
                        r0
                    };
                    for r in r0 + MR..ahead {
                        let row = &xp[r * n..][..n];
                        let (c0, c1) = (j * BLOCK, n.min((j + jb) * BLOCK));
                        let mut c = c0;
                        while c < c1 {
                            s.prefetch(&row[c..c1]);
                            c += 16;
                        }
                        s.prefetch(&row[c1 - 1..c1]);
                    }
                    let mut acc: Acc<S, MR, JB, NV> = [[[s.zero(); NV]; JB]; MR];
                    if k0 > 0 {
                        for (r, acc_r) in acc.iter_mut().enumerate().take(mr) {
                            let row = &xp[(r0 + r) * n..][..n];
                            for (b, acc_b) in acc_r.iter_mut().enumerate().take(jb) {
                                for (v, acc_v) in acc_b.iter_mut().enumerate() {
                                    let c = (j + b) * BLOCK + v * S::LANES;
                                    if c < n {
                                        *acc_v = s.load_partial(&row[c..n.min(c + S::LANES)]);
                                    }
                                }
                            }
                        }
                    }
                    tile::<S, MR, JB, NV>(s, &mut acc, a, wb, kc);
                    if last && mr == MR && (j + JB) * BLOCK <= n {
                        // A full tile's last `k` chunk (every tile but those at the matrix's
                        // edges): plain loads and stores, no per-vector edge checks.
                        for (r, acc_r) in acc.iter().enumerate() {
                            let row = &mut xp[(r0 + r) * n..][..n];
                            for (b, acc_b) in acc_r.iter().enumerate() {
                                for (v, &acc_v) in acc_b.iter().enumerate() {
                                    let c = (j + b) * BLOCK + v * S::LANES;
                                    let out = s.add(acc_v, s.load(&bias[c..]));
                                    s.store(out, &mut row[c..]);
                                }
                            }
                        }
                        r0 += MR;
                        continue;
                    }
                    for (r, acc_r) in acc.iter().enumerate().take(mr) {
                        let row = &mut xp[(r0 + r) * n..][..n];
                        for (b, acc_b) in acc_r.iter().enumerate().take(jb) {
                            for (v, &acc_v) in acc_b.iter().enumerate() {
                                let c = (j + b) * BLOCK + v * S::LANES;
                                if c >= n {
                                    break;
                                }
                                let c1 = n.min(c + S::LANES);
                                let out = if last {
                                    s.add(acc_v, s.load_partial(&bias[c..c1]))
                                } else {
                                    acc_v
                                };
                                s.store_partial(out, &mut row[c..c1]);
                            }
                        }
                    }
                    r0 += MR;
                }
                k0 += kc;
            }
            j += JB;
        }
        m0 = m1;
    }
}
