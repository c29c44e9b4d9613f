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
//! the element-wise epilogue (a kernel that splits its sums, see [`accumulate`], does so in
//! every tile: two accumulators, of the even and the odd `k`, added at the end). So a row's
//! result does not depend on `R`, `NV`, the number of rows in the call, or the block range
//! (SPEC §4: bit-identical for any batch split and thread count).
//!
//! The weights are read strictly in order within a block (each gate's `K x BLOCK` panel `k`
//! after `k`, a few sequential streams at once), which the hardware prefetchers follow; a
//! software prefetch 4 KiB ahead measured no clear gain on the AVX2 machine this was first tuned
//! on (a loaded 2-core Zen 3), so there is none. The blocks (groups of blocks, for a single row)
//! are visited in the caller's [`BlockOrder`]: the engine alternates it every step, so a step
//! starts on the blocks still in cache from the previous one (measured on a 2 MiB-L2 Xeon: one
//! stream of a 512-wide LSTM, 4 MiB of `W_hh`, ~1.4x faster a step; GRU, 3 MiB, ~1.5x).
//!
//! The LSTM and GRU steps also come with their step's input projection inside
//! ([`lstm_input_step_blocks`], [`gru_input_step_blocks`]): each tile first sums `x W_ihᵀ` for
//! its rows and units, exactly as the input projection does, into a small buffer in L1 (see
//! [`InTile`]), then `W_hh h` as usual, so the results are the same bits as the projection
//! followed by the step, without the projection's output going through memory between them.
//!
//! Denormals: every state a kernel stores (`h`, `c`, the projection's output) is flushed to
//! `±0` where it would be denormal ([`crate::denormal`]): on Intel cores a product with a
//! denormal operand takes a microcode assist (an LSTM step at H256 with a denormal `h` ran ~60x
//! slower on this project's Xeon), and a state that decays towards zero would feed them to
//! every later step. The kernels leave MXCSR alone (the language assumes its default), so
//! the flush is in the data; it changes a value by less than `f32::MIN_POSITIVE`, the same on
//! every tier.
//!
//! Tails: the last block's padding units have zero weights and are never read from `xp` or
//! written to the outputs (partial loads and stores: masked on AVX-512, through a small stack
//! buffer elsewhere); the 2 to `R - 1` rows that the row tiles leave run as one smaller tile, a
//! single row left alone (see [`run`]).

use std::ops::Range;

use crate::pack::{PackedMatrix, BLOCK};
use crate::simd::rows::Rows;
use crate::simd::Simd;
use crate::step::{check_step_blocks, Activation, BlockOrder};
use crate::vecmath::{relu, sigmoid::sigmoid, tanh::tanh};

mod ride;
pub(crate) use ride::{gru_step_riding, lstm_step_riding};

/// The most unit vectors a block can hold (`BLOCK / LANES` with `LANES >= 8`).
const MAX_VECTORS: usize = BLOCK / 8;

/// `W h` for part of `JB` consecutive blocks: `acc[r][b][g][v]` is block `b`, gate `g0 + g`,
/// unit vector `v0 + v`, row `r`, summed over `k = 0..K` in order with one `mul_add` per term;
/// with `split`, as two sums, of the even and of the odd `k` (each in order), added at the end
/// (`even + odd`).
///
/// `wb` holds the `JB` packed blocks (`G` panels of `K * BLOCK` floats each, contiguous as in
/// [`PackedMatrix`]), `h[r]` row `r` of `h_prev` (`K` floats). Several blocks per pass give a
/// single row more independent accumulator chains (the FMA latency would bound a single block
/// of one gate) without changing any element's order of operations; where a layer has too few
/// blocks for that (a 64-unit RNN: 4 chains of 64 FMAs, ~4 cycles each), `split` halves every
/// chain. Whether a kernel splits is fixed per kernel and tier (never per tile), so every
/// element still takes the same operations whatever its tile.
/// (No closures in the hot code: a closure is compiled without the caller's target features, so
/// it must not be left un-inlined.)
#[inline(always)]
fn accumulate<
    S: Simd,
    const G: usize,
    const GP: usize,
    const R: usize,
    const NV: usize,
    const JB: usize,
>(
    s: S,
    wb: &[f32],
    h: [&[f32]; R],
    (g0, v0): (usize, usize),
    split: bool,
) -> [[[[S::V; NV]; GP]; JB]; R] {
    let (panels, k) = block_panels::<G, GP, JB>(wb, g0);
    let mut h_k: [&[f32]; R] = [&[]; R];
    for r in 0..R {
        h_k[r] = &h[r][..k];
    }
    let mut acc = [[[[s.zero(); NV]; GP]; JB]; R];
    if !split {
        for kk in 0..k {
            acc = accumulate_k(s, &panels, &h_k, kk, v0, acc);
        }
        return acc;
    }
    let mut odd = [[[[s.zero(); NV]; GP]; JB]; R];
    let mut kk = 0;
    while kk + 1 < k {
        acc = accumulate_k(s, &panels, &h_k, kk, v0, acc);
        odd = accumulate_k(s, &panels, &h_k, kk + 1, v0, odd);
        kk += 2;
    }
    if k % 2 == 1 {
        acc = accumulate_k(s, &panels, &h_k, k - 1, v0, acc);
    }
    // Constant indices (no iterators over the arrays), so that they stay in registers.
    for r in 0..R {
        for b in 0..JB {
            for g in 0..GP {
                for v in 0..NV {
                    acc[r][b][g][v] = s.add(acc[r][b][g][v], odd[r][b][g][v]);
                }
            }
        }
    }
    acc
}

/// The `GP` gate panels from gate `g0` of each of the `JB` packed blocks in `wb` (`G` panels of
/// `K * BLOCK` floats a block, contiguous as in [`PackedMatrix`]), and `K`.
///
/// Each gate of a block is its own `K x BLOCK` panel, read in order; as slices of `BLOCK`-float
/// rows of exactly `K` rows, like `h`, so that indexing them by `kk < K` needs no bounds checks
/// in the loop (with split-off subslices the checks and pointer updates outnumbered the FMAs of
/// a single row).
#[inline(always)]
fn block_panels<const G: usize, const GP: usize, const JB: usize>(
    wb: &[f32],
    g0: usize,
) -> ([[&[[f32; BLOCK]]; GP]; JB], usize) {
    let block_len = wb.len() / JB;
    let k = block_len / (G * BLOCK);
    let mut panels: [[&[[f32; BLOCK]]; GP]; JB] = [[&[]; GP]; JB];
    for (b, pb) in panels.iter_mut().enumerate() {
        for (g, p) in pb.iter_mut().enumerate() {
            let panel = &wb[b * block_len + (g0 + g) * k * BLOCK..][..k * BLOCK];
            *p = panel.as_chunks::<BLOCK>().0;
            assert_eq!(p.len(), k);
        }
    }
    (panels, k)
}

/// The term `k = kk` of [`accumulate`]: `acc[r][b][g][v] += w[b][g][kk][v] * h[r][kk]`, one
/// `mul_add` each.
// `kk` indexes the `R` rows of `h` at once; an iterator per row would not make that clearer.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn accumulate_k<S: Simd, const GP: usize, const R: usize, const NV: usize, const JB: usize>(
    s: S,
    panels: &[[&[[f32; BLOCK]]; GP]; JB],
    h_k: &[&[f32]; R],
    kk: usize,
    v0: usize,
    mut acc: [[[[S::V; NV]; GP]; JB]; R],
) -> [[[[S::V; NV]; GP]; JB]; R] {
    // Two orders of the same FMAs (each accumulator still takes its `k` in order): hold the
    // `R` broadcast rows in registers and stream the weight vectors through one, or hold the
    // tile's weight vectors and stream the rows. Whichever set is smaller stays live, so the
    // tile's accumulators and operands fit the registers without spilling (measured on AVX2:
    // a 3-row, 2-gate tile ran ~35% slower holding its 4 weight vectors, a 4-row, 1-gate tile
    // ~15% faster holding its 2).
    if JB * GP * NV < R {
        let mut wv = [[[s.zero(); NV]; GP]; JB];
        for b in 0..JB {
            for g in 0..GP {
                let wk = &panels[b][g][kk];
                for v in 0..NV {
                    wv[b][g][v] = s.load(&wk[(v0 + v) * S::LANES..]);
                }
            }
        }
        for r in 0..R {
            let hk = s.splat(h_k[r][kk]);
            for b in 0..JB {
                for g in 0..GP {
                    for v in 0..NV {
                        acc[r][b][g][v] = s.mul_add(wv[b][g][v], hk, acc[r][b][g][v]);
                    }
                }
            }
        }
    } else {
        let mut hk = [s.zero(); R];
        for r in 0..R {
            hk[r] = s.splat(h_k[r][kk]);
        }
        for b in 0..JB {
            for g in 0..GP {
                let wk = &panels[b][g][kk];
                for v in 0..NV {
                    let wv = s.load(&wk[(v0 + v) * S::LANES..]);
                    for r in 0..R {
                        acc[r][b][g][v] = s.mul_add(wv, hk[r], acc[r][b][g][v]);
                    }
                }
            }
        }
    }
    acc
}

/// The element-wise end of a step kernel, applied to one vector of accumulated gates.
trait Epilogue<S: Simd, const G: usize> {
    /// Whether the kernel sums over `k` in two halves, even and odd (see [`accumulate`]).
    const SPLIT_K: bool = false;

    /// Finishes rows `r0..r0 + N`, units `u..u + n` (`n <= LANES`), from their gate sums
    /// (`acc[r][g]`). The rows are independent: their arithmetic runs on [`Rows`], which
    /// interleaves the `N` dependency chains instruction by instruction (an activation is a
    /// long chain; one row at a time, the core waits on it; measured on a Xeon, LSTM cells
    /// of 4-row tiles: AVX-512 -16%, AVX2 -25% time). `FULL`: `n == LANES`, so that every
    /// load and store of the vector is a plain one (see [`load`]).
    fn apply<const N: usize, const FULL: bool>(
        &mut self,
        s: S,
        r0: usize,
        u: usize,
        n: usize,
        acc: [[S::V; G]; N],
    );

    /// Runs before the accumulation of the tile of rows `r0..r0 + R` over blocks `j..j + JB`
    /// (in passes of `GP` gates and `NV` unit vectors; `vectors` of the first block hold real
    /// units): a kernel that computes part of its inputs per tile does so here (see
    /// [`InTile`]). Nothing by default.
    #[inline(always)]
    fn before_tile<const R: usize, const GP: usize, const NV: usize, const JB: usize>(
        &mut self,
        s: S,
        j: usize,
        r0: usize,
        vectors: usize,
    ) {
        let _ = (s, j, r0, vectors);
    }

    /// Hints the cache to fetch what [`Epilogue::apply`] will read for row `r`, units
    /// `u..u + n` (`n <= BLOCK`): the inputs of large batches (`xp` of all timesteps, the
    /// state) are far beyond the caches, and their lines would otherwise arrive one miss at a
    /// time.
    #[inline(always)]
    fn prefetch(&self, s: S, r: usize, u: usize, n: usize) {
        let _ = (s, r, u, n);
    }
}

/// [`Epilogue::SPLIT_K`] of `epilogue`'s type.
#[inline(always)]
fn split_k<S: Simd, const G: usize, E: Epilogue<S, G>>(_: &E) -> bool {
    E::SPLIT_K
}

/// Accumulates the `JB` blocks from `j` for the rows `r0..r0 + R` in passes over `GP` gates and
/// `NV` unit vectors each, then hands every vector holding real units to `epilogue`.
///
/// A pass reads only its gates' panels: with `NV` covering the whole block, a pass over `GP`
/// gates reads whole cache lines (each gate's `BLOCK` weights of one `k` are one 64-byte line),
/// so splitting the gates into passes fetches each line once; the gate sums of earlier passes
/// wait in a small stack array. Splitting the unit vectors instead halves the accumulators too,
/// but every pass then touches every line.
#[inline(always)]
fn block_tile<
    S: Simd,
    const G: usize,
    const R: usize,
    const GP: usize,
    const NV: usize,
    const JB: usize,
>(
    s: S,
    w: &PackedMatrix,
    j: usize,
    h_prev: &[f32],
    r0: usize,
    epilogue: &mut impl Epilogue<S, G>,
) {
    let (units, k) = (w.rows(), w.cols());
    let block_len = k * G * BLOCK;
    let wb = &w.data()[j * block_len..(j + JB) * block_len];
    let mut h: [&[f32]; R] = [&[]; R];
    for (r, hr) in h.iter_mut().enumerate() {
        *hr = &h_prev[(r0 + r) * k..][..k];
    }
    // Unit vectors of the first block that hold real units (the others are all full but
    // possibly the last of the matrix, whose missing units the epilogue loop skips).
    let vectors = (units - j * BLOCK).min(BLOCK).div_ceil(S::LANES);
    // Row tiles serve large batches, whose `xp` (all timesteps) and state are far beyond the
    // caches: ask for the epilogue's lines now, so they arrive during the accumulation.
    if R > 1 {
        for r in 0..R {
            for b in 0..JB {
                let u = (j + b) * BLOCK;
                if u < units {
                    epilogue.prefetch(s, r0 + r, u, BLOCK.min(units - u));
                }
            }
        }
    }
    epilogue.before_tile::<R, GP, NV, JB>(s, j, r0, vectors);
    if GP == G && NV * S::LANES >= BLOCK {
        // One pass covers every gate and vector of the blocks: its accumulators go straight
        // to the epilogue, with no stack array of sums between them (the common case; the
        // array's zeroing alone was a memset call on the AVX-512 tiles).
        let acc = accumulate::<S, G, GP, R, NV, JB>(s, wb, h, (0, 0), split_k(epilogue));
        hand_off::<S, G, R, JB, GP, NV>(s, &acc, (j, vectors, units), r0, epilogue);
        return;
    }
    let mut sums = [[[[s.zero(); MAX_VECTORS]; G]; JB]; R];
    let mut v0 = 0;
    while v0 < vectors {
        let mut g0 = 0;
        while g0 < G {
            let acc = accumulate::<S, G, GP, R, NV, JB>(s, wb, h, (g0, v0), split_k(epilogue));
            for r in 0..R {
                for b in 0..JB {
                    for g in 0..GP {
                        for v in 0..NV {
                            if v0 + v < MAX_VECTORS {
                                sums[r][b][g0 + g][v0 + v] = acc[r][b][g][v];
                            }
                        }
                    }
                }
            }
            g0 += GP;
        }
        v0 += NV;
    }
    hand_off::<S, G, R, JB, G, MAX_VECTORS>(s, &sums, (j, vectors, units), r0, epilogue);
}

/// Hands the gate sums of the rows `r0..r0 + R` (`sums[r][b][g][v]`: block `j + b`, gate `g <
/// G`, unit vector `v < vectors`) to the epilogue, vector by vector, for the vectors that hold
/// real units (`units` in all).
#[inline(always)]
fn hand_off<
    S: Simd,
    const G: usize,
    const R: usize,
    const JB: usize,
    const GX: usize,
    const NVX: usize,
>(
    s: S,
    sums: &[[[[S::V; NVX]; GX]; JB]; R],
    (j, vectors, units): (usize, usize, usize),
    r0: usize,
    epilogue: &mut impl Epilogue<S, G>,
) {
    for b in 0..JB {
        for v in 0..vectors {
            let u = (j + b) * BLOCK + v * S::LANES;
            if u >= units {
                break;
            }
            let mut gates = [[s.zero(); G]; R];
            for (gates_r, sums_r) in gates.iter_mut().zip(sums) {
                for (gate, sum) in gates_r.iter_mut().zip(&sums_r[b]) {
                    *gate = sum[v];
                }
            }
            // Full vectors (all but a layer's last, where `H` is not a multiple of `LANES`)
            // take their own copy of the epilogue, with no partial-vector branch at each of
            // its loads and stores: the AVX2 LSTM cells ran ~5% faster.
            let n = S::LANES.min(units - u);
            if n == S::LANES {
                epilogue.apply::<R, true>(s, r0, u, n, gates);
            } else {
                epilogue.apply::<R, false>(s, r0, u, n, gates);
            }
        }
    }
}

/// How `rows` rows split into tiles: `(a, b)` tiles of `R` and `RB` rows (in that order), the
/// rest one at a time. A second tile size covers the rows a single size leaves over (with
/// `R = 3, RB = 4`: 4 rows are one tile, 64 are 20 + 1), so that no row runs alone, with its
/// own pass over the weights, where a tile could take it.
const fn row_tiles(rows: usize, r: usize, rb: usize) -> (usize, usize) {
    if r <= 1 {
        return (0, 0);
    }
    if rb > 1 {
        let mut b = 0;
        while b < r && rb * b <= rows {
            if (rows - rb * b).is_multiple_of(r) {
                return ((rows - rb * b) / r, b);
            }
            b += 1;
        }
    }
    (rows / r, 0)
}

/// The groups of blocks a single row takes at once, `(first block, blocks)`, for group `i` of
/// `blocks` split by [`block_groups`].
///
/// Groups of `jb1` blocks from the start, then the rest in groups of the powers of two below
/// `jb1` that make it up, largest first (13 blocks with `jb1 = 8`: 8, 4, 1): a single row gets
/// as many independent accumulator chains as the blocks allow, also where there are fewer
/// blocks than `jb1` (a 64-unit layer is 4 blocks).
fn block_group(blocks: &Range<usize>, jb1: usize, i: usize) -> (usize, usize) {
    let len = blocks.len();
    let full = len / jb1;
    if i < full {
        return (blocks.start + i * jb1, jb1);
    }
    // The remainder's binary digits, highest first.
    let rest = len % jb1;
    let mut at = blocks.start + full * jb1;
    let mut nth = i - full;
    let mut size = jb1 / 2;
    while size > 0 {
        if rest & size != 0 {
            if nth == 0 {
                return (at, size);
            }
            nth -= 1;
            at += size;
        }
        size /= 2;
    }
    unreachable!("block group {i} of {blocks:?} in groups of {jb1}")
}

/// How many groups [`block_group`] splits `blocks` into.
fn block_groups(blocks: &Range<usize>, jb1: usize) -> usize {
    blocks.len() / jb1 + (blocks.len() % jb1).count_ones() as usize
}

/// Tiles of `R` rows over the rows `rows` (a multiple of `R` long) for the blocks of the group
/// `(j, jb)`: `JB` blocks at a time where the group holds that many (`JB` and `jb` are powers
/// of two), else one at a time.
#[inline(always)]
fn tile_rows<
    S: Simd,
    const G: usize,
    const R: usize,
    const GP: usize,
    const NV: usize,
    const JB: usize,
>(
    s: S,
    w: &PackedMatrix,
    (j, jb): (usize, usize),
    h_prev: &[f32],
    rows: Range<usize>,
    epilogue: &mut impl Epilogue<S, G>,
) {
    let step = if jb >= JB { JB } else { 1 };
    let mut blk = j;
    while blk < j + jb {
        let mut r0 = rows.start;
        while r0 < rows.end {
            if step == JB {
                block_tile::<S, G, R, GP, NV, JB>(s, w, blk, h_prev, r0, epilogue);
            } else {
                block_tile::<S, G, R, GP, NV, 1>(s, w, blk, h_prev, r0, epilogue);
            }
            r0 += R;
        }
        blk += step;
    }
}

/// Runs every block of `blocks` over all rows, in groups (see [`block_group`]) visited in
/// `order`. Within a group: tiles of `R` rows (passes of `GPR` gates and `NVR` vectors over
/// `JBR` blocks at once) and of `RB` rows (passes of `GPB` gates and `NVB` vectors over `JBR`
/// blocks; `RB = 0` for none) as [`row_tiles`] splits them; the 2 to `R - 1` rows they may
/// leave as one more tile in the shape of the `R` tile; a single row left, or every row of a
/// tier without row tiles, alone (passes of `GP1` gates and `NV1` vectors over the whole
/// group at once). Groups hold disjoint units, so their order changes no result.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn run<
    S: Simd,
    const G: usize,
    const R: usize,
    const GPR: usize,
    const NVR: usize,
    const RB: usize,
    const GPB: usize,
    const NVB: usize,
    const JBR: usize,
    const GP1: usize,
    const NV1: usize,
    const JB1: usize,
>(
    s: S,
    w: &PackedMatrix,
    blocks: Range<usize>,
    order: BlockOrder,
    h_prev: &[f32],
    rows: usize,
    epilogue: &mut impl Epilogue<S, G>,
) {
    const {
        assert!(
            G.is_multiple_of(GPR)
                && G.is_multiple_of(GP1)
                && (RB == 0 || G.is_multiple_of(GPB))
                && JB1.is_power_of_two()
                && JB1 <= 8
                && JBR.is_power_of_two()
                && JBR <= JB1
                && R <= 9,
            "gate passes must divide G, block groups be 1, 2, 4 or 8 blocks, JBR <= JB1"
        )
    };
    if rows == 1 {
        // The latency-bound case (one stream's step), on its own: with the row tiles' setup
        // in the same path, LLVM computed all of it first (~200 cycles of a 64-unit RNN step's
        // ~680 on the AVX-512 Xeon; this path alone: ~500).
        run_row::<S, G, GP1, NV1, JB1>(s, w, blocks, order, h_prev, epilogue);
        return;
    }
    let groups = block_groups(&blocks, JB1);
    let (a, b) = row_tiles(rows, R, RB);
    let (tiled_a, tiled) = (a * R, a * R + b * RB);
    // The rows the tiles leave: one more, smaller tile when there are two or more of them.
    let rest = rows - tiled;
    let alone = if R > 1 && rest >= 2 { rows } else { tiled };
    for i in 0..groups {
        let group = block_group(&blocks, JB1, order.visit(i, groups));
        if R > 1 {
            tile_rows::<S, G, R, GPR, NVR, JBR>(s, w, group, h_prev, 0..tiled_a, epilogue);
        }
        if RB > 1 {
            tile_rows::<S, G, RB, GPB, NVB, JBR>(s, w, group, h_prev, tiled_a..tiled, epilogue);
        }
        if alone > tiled {
            // `2 <= rest < R` (see `row_tiles`); the guards are constants, so only the sizes
            // below `R` are compiled.
            let left = tiled..rows;
            match rest {
                2 if R > 2 => {
                    tile_rows::<S, G, 2, GPR, NVR, JBR>(s, w, group, h_prev, left, epilogue)
                }
                3 if R > 3 => {
                    tile_rows::<S, G, 3, GPR, NVR, JBR>(s, w, group, h_prev, left, epilogue)
                }
                4 if R > 4 => {
                    tile_rows::<S, G, 4, GPR, NVR, JBR>(s, w, group, h_prev, left, epilogue)
                }
                5 if R > 5 => {
                    tile_rows::<S, G, 5, GPR, NVR, JBR>(s, w, group, h_prev, left, epilogue)
                }
                6 if R > 6 => {
                    tile_rows::<S, G, 6, GPR, NVR, JBR>(s, w, group, h_prev, left, epilogue)
                }
                7 if R > 7 => {
                    tile_rows::<S, G, 7, GPR, NVR, JBR>(s, w, group, h_prev, left, epilogue)
                }
                8 if R > 8 => {
                    tile_rows::<S, G, 8, GPR, NVR, JBR>(s, w, group, h_prev, left, epilogue)
                }
                _ => unreachable!("{rest} rows left by tiles of {R} and {RB}"),
            }
        }
        for r0 in alone..rows {
            single_row::<S, G, GP1, NV1, JB1>(s, w, group, h_prev, r0, epilogue);
        }
    }
}

/// [`run`] of a single row: every block of `blocks`, in groups of up to `JB1` blocks visited
/// in `order` (passes of `GP1` gates and `NV1` vectors). An LSTM's blocks one at a time where
/// the CPU streams fewer panels faster (see `crate::tuning`).
#[inline(always)]
fn run_row<S: Simd, const G: usize, const GP1: usize, const NV1: usize, const JB1: usize>(
    s: S,
    w: &PackedMatrix,
    blocks: Range<usize>,
    order: BlockOrder,
    h_prev: &[f32],
    epilogue: &mut impl Epilogue<S, G>,
) {
    let jb1 = single_row_group::<G, JB1>();
    let groups = block_groups(&blocks, jb1);
    for i in 0..groups {
        let group = block_group(&blocks, jb1, order.visit(i, groups));
        single_row::<S, G, GP1, NV1, JB1>(s, w, group, h_prev, 0, epilogue);
    }
}

/// The blocks a single row of a cell of `G` gates takes at once, for a tier whose single rows
/// take `JB1`: one where the CPU streams fewer panels faster (an LSTM on Zen 4, see
/// `crate::tuning`), else `JB1`.
#[inline(always)]
fn single_row_group<const G: usize, const JB1: usize>() -> usize {
    if G >= crate::tuning::ONE_BLOCK_MIN_GATES && JB1 > 1 && crate::tuning::single_row_one_block() {
        1
    } else {
        JB1
    }
}

/// Row `r0` alone for the blocks of the group `(j, jb)`, all at once (passes of `GP1` gates and
/// `NV1` vectors; `jb` is a power of two up to `JB1`, see [`block_group`]).
#[inline(always)]
fn single_row<S: Simd, const G: usize, const GP1: usize, const NV1: usize, const JB1: usize>(
    s: S,
    w: &PackedMatrix,
    (j, jb): (usize, usize),
    h_prev: &[f32],
    r0: usize,
    epilogue: &mut impl Epilogue<S, G>,
) {
    // Only the sizes up to `JB1` occur (the guards are constants: the other arms compile to
    // nothing).
    match jb {
        8 if JB1 >= 8 => block_tile::<S, G, 1, GP1, NV1, 8>(s, w, j, h_prev, r0, epilogue),
        4 if JB1 >= 4 => block_tile::<S, G, 1, GP1, NV1, 4>(s, w, j, h_prev, r0, epilogue),
        2 if JB1 >= 2 => block_tile::<S, G, 1, GP1, NV1, 2>(s, w, j, h_prev, r0, epilogue),
        _ => block_tile::<S, G, 1, GP1, NV1, 1>(s, w, j, h_prev, r0, epilogue),
    }
}

/// Where an epilogue reads its `xp` (the input projection, `x W_ihᵀ + bias`, of its rows):
/// from a projection done before the step ([`Projected`]), or from the tile's own, computed
/// just before the tile's `W_hh h` sums ([`InTile`]). `G`: the gates.
trait XpSource<S: Simd, const G: usize> {
    /// See [`Epilogue::before_tile`].
    #[inline(always)]
    fn before_tile<const R: usize, const GP: usize, const NV: usize, const JB: usize>(
        &mut self,
        s: S,
        j: usize,
        r0: usize,
        vectors: usize,
    ) {
        let _ = (s, j, r0, vectors);
    }

    /// `xp` of row `r`, gate `g`, units `u..u + n` (`n <= LANES`; lanes past `n` are
    /// unspecified unless `FULL`, where `n == LANES`).
    fn load<const FULL: bool>(&self, s: S, r: usize, g: usize, u: usize, n: usize) -> S::V;

    /// Hints the cache to fetch `xp` of row `r`, units `u..u + n` (every gate).
    #[inline(always)]
    fn prefetch(&self, s: S, r: usize, u: usize, n: usize) {
        let _ = (s, r, u, n);
    }
}

/// `xp` projected before the step: `(rows, G * H)`.
struct Projected<'a> {
    xp: &'a [f32],
    /// `H`.
    h: usize,
}

impl<S: Simd, const G: usize> XpSource<S, G> for Projected<'_> {
    #[inline(always)]
    fn load<const FULL: bool>(&self, s: S, r: usize, g: usize, u: usize, n: usize) -> S::V {
        let h = self.h;
        let x = &self.xp[r * G * h..][..G * h];
        load::<S, FULL>(s, &x[g * h + u..g * h + u + n])
    }

    #[inline(always)]
    fn prefetch(&self, s: S, r: usize, u: usize, n: usize) {
        let h = self.h;
        let x = &self.xp[r * G * h..][..G * h];
        for g in 0..G {
            prefetch_range(s, &x[g * h + u..g * h + u + n]);
        }
    }
}

/// The most rows of a tile ([`run`] allows `R <= 9`), blocks of a single row's group ([`run`]
/// allows `JB1 <= 8`) and gates: the bounds of [`InTile`]'s `xp`.
const TILE_ROWS: usize = 9;
const TILE_BLOCKS: usize = 8;
const TILE_GATES: usize = 4;

/// `xp` of the current tile's rows and blocks, computed by [`XpSource::before_tile`] from the
/// step's inputs.
///
/// Each element is the input projection's (`crate::matmul`): the sum over `k = 0..I` in
/// order, one `mul_add` a term from `0`, then `+ bias`; so a kernel reading it gives the same
/// bits as the projection followed by the kernel reading [`Projected`]. What it saves is
/// `xp`'s round trip: written for all the rows and steps of a chunk by the projection (a large
/// batch's is far beyond L2) and read back by the steps; here it stays in L1.
struct InTile<'a> {
    /// `W_ih`, packed as `W_hh` is (`G` gates of `H` units, `I` columns).
    w_ih: &'a PackedMatrix,
    /// `(G H,)`: the projection's biases.
    bias: &'a [f32],
    /// `(rows, I)`: the step's inputs.
    x: &'a [f32],
    /// The current tile's first row and first block.
    tile: (usize, usize),
    /// The current tile's `xp`: row `r - tile.0`, then block `b` (from `tile.1`), gate `g`,
    /// unit `u` at `(b * G + g) * BLOCK + u`.
    xp: [[f32; TILE_BLOCKS * TILE_GATES * BLOCK]; TILE_ROWS],
}

impl<'a> InTile<'a> {
    /// The source for a step of `rows` rows of `G` gates of `h` units; checks the shapes.
    fn new(
        kernel: &str,
        (w_ih, bias, x): (&'a PackedMatrix, &'a [f32], &'a [f32]),
        gates: usize,
        h: usize,
        rows: usize,
    ) -> Self {
        assert!(gates <= TILE_GATES, "{kernel}: {gates} gates");
        assert!(
            w_ih.gates() == gates && w_ih.rows() == h,
            "{kernel}: W_ih must be packed as {gates} gates of {h} units"
        );
        let k = w_ih.cols();
        assert!(
            x.len() >= rows * k,
            "{kernel}: x holds {} < {rows}x{k}",
            x.len()
        );
        assert!(
            bias.len() >= gates * h,
            "{kernel}: bias holds {} < {}",
            bias.len(),
            gates * h
        );
        InTile {
            w_ih,
            bias,
            x,
            tile: (0, 0),
            xp: [[0.0; TILE_BLOCKS * TILE_GATES * BLOCK]; TILE_ROWS],
        }
    }
}

impl<S: Simd, const G: usize> XpSource<S, G> for InTile<'_> {
    #[inline(always)]
    fn before_tile<const R: usize, const GP: usize, const NV: usize, const JB: usize>(
        &mut self,
        s: S,
        j: usize,
        r0: usize,
        vectors: usize,
    ) {
        const {
            assert!(
                R <= TILE_ROWS && JB <= TILE_BLOCKS && G <= TILE_GATES,
                "a tile beyond InTile's xp"
            )
        };
        let (h, k) = (self.w_ih.rows(), self.w_ih.cols());
        let block_len = k * G * BLOCK;
        let wb = &self.w_ih.data()[j * block_len..(j + JB) * block_len];
        let mut x: [&[f32]; R] = [&[]; R];
        for (r, xr) in x.iter_mut().enumerate() {
            *xr = &self.x[(r0 + r) * k..][..k];
        }
        // In the passes of the tile's own sums (the gates and vectors its registers hold).
        let mut v0 = 0;
        while v0 < vectors {
            let mut g0 = 0;
            while g0 < G {
                let acc = accumulate::<S, G, GP, R, NV, JB>(s, wb, x, (g0, v0), false);
                for (r, acc_r) in acc.iter().enumerate() {
                    for (b, acc_b) in acc_r.iter().enumerate() {
                        for (g, acc_g) in acc_b.iter().enumerate() {
                            for (v, &acc_v) in acc_g.iter().enumerate() {
                                let u = (j + b) * BLOCK + (v0 + v) * S::LANES;
                                if v0 + v >= MAX_VECTORS || u >= h {
                                    continue;
                                }
                                let at = (g0 + g) * h + u;
                                let n = S::LANES.min(h - u);
                                let bias = s.load_partial(&self.bias[at..at + n]);
                                let o = (b * G + g0 + g) * BLOCK + (v0 + v) * S::LANES;
                                s.store(s.add(acc_v, bias), &mut self.xp[r][o..]);
                            }
                        }
                    }
                }
                g0 += GP;
            }
            v0 += NV;
        }
        self.tile = (r0, j);
    }

    #[inline(always)]
    fn load<const FULL: bool>(&self, s: S, r: usize, g: usize, u: usize, _: usize) -> S::V {
        let tu = u - self.tile.1 * BLOCK;
        let (b, v) = (tu / BLOCK, tu % BLOCK);
        s.load(&self.xp[r - self.tile.0][(b * G + g) * BLOCK + v..])
    }
}

/// The LSTM epilogue: `i,f,o = σ(xp + acc)`, `g = tanh(xp + acc)`, `c' = f*c + i*g`,
/// `h' = o*tanh(c')`.
struct LstmCell<'a, X> {
    /// `xp`, `(rows, 4H)`.
    xp: X,
    /// `(rows, nu)`.
    c: &'a mut [f32],
    /// `(rows, nu)`.
    h_out: &'a mut [f32],
    /// First unit of the call's block range.
    u_begin: usize,
    /// Units of the call's block range.
    nu: usize,
}

impl<'a, X> LstmCell<'a, X> {
    /// The cell of an LSTM step of `rows` rows over `blocks` of `w`, after the step's checks
    /// ([`check_step_blocks`]; `kernel` names the caller in a panic, `xp_len` is `xp`'s length
    /// where it is read from memory); its `xp` from `xp(H)`.
    #[inline(always)]
    fn checked(
        kernel: &str,
        (xp_len, xp): (Option<usize>, impl FnOnce(usize) -> X),
        w: &PackedMatrix,
        h_prev: &[f32],
        (c, h_out): (&'a mut [f32], &'a mut [f32]),
        rows: usize,
        blocks: &Range<usize>,
    ) -> Self {
        let outs = [c.len(), h_out.len()];
        let units = check_step_blocks(kernel, w, 4, xp_len, h_prev.len(), &outs, rows, blocks);
        LstmCell {
            xp: xp(w.rows()),
            c,
            h_out,
            u_begin: units.start,
            nu: units.len(),
        }
    }
}

impl<S: Simd, X: XpSource<S, 4>> Epilogue<S, 4> for LstmCell<'_, X> {
    #[inline(always)]
    fn before_tile<const R: usize, const GP: usize, const NV: usize, const JB: usize>(
        &mut self,
        s: S,
        j: usize,
        r0: usize,
        vectors: usize,
    ) {
        self.xp.before_tile::<R, GP, NV, JB>(s, j, r0, vectors);
    }

    #[inline(always)]
    fn apply<const N: usize, const FULL: bool>(
        &mut self,
        s: S,
        r0: usize,
        u: usize,
        n: usize,
        acc: [[S::V; 4]; N],
    ) {
        let w = Rows::<S, N>(s);
        let mut pre = [[s.zero(); N]; 4];
        let mut c = [s.zero(); N];
        for r in 0..N {
            for (g, pre_g) in pre.iter_mut().enumerate() {
                pre_g[r] = s.add(self.xp.load::<FULL>(s, r0 + r, g, u, n), acc[r][g]);
            }
            let at = (r0 + r) * self.nu + (u - self.u_begin);
            c[r] = load::<S, FULL>(s, &self.c[at..at + n]);
        }
        let i = sigmoid(w, pre[0]);
        let f = sigmoid(w, pre[1]);
        let g = tanh(w, pre[2]);
        let o = sigmoid(w, pre[3]);
        let c_new = w.flush_denormals(w.mul_add(f, c, w.mul(i, g)));
        let h_new = w.flush_denormals(w.mul(o, tanh(w, c_new)));
        for r in 0..N {
            let at = (r0 + r) * self.nu + (u - self.u_begin);
            store::<S, FULL>(s, c_new[r], &mut self.c[at..at + n]);
            store::<S, FULL>(s, h_new[r], &mut self.h_out[at..at + n]);
        }
    }

    #[inline(always)]
    fn prefetch(&self, s: S, r: usize, u: usize, n: usize) {
        self.xp.prefetch(s, r, u, n);
        let at = r * self.nu + (u - self.u_begin);
        prefetch_range(s, &self.c[at..at + n]);
    }
}

/// `s.load(x)` for a `FULL` vector (`x` holds `LANES` floats), else `s.load_partial(x)`.
#[inline(always)]
fn load<S: Simd, const FULL: bool>(s: S, x: &[f32]) -> S::V {
    if FULL {
        s.load(x)
    } else {
        s.load_partial(x)
    }
}

/// `s.store(v, out)` for a `FULL` vector (`out` holds `LANES` floats), else
/// `s.store_partial(v, out)`.
#[inline(always)]
fn store<S: Simd, const FULL: bool>(s: S, v: S::V, out: &mut [f32]) {
    if FULL {
        s.store(v, out)
    } else {
        s.store_partial(v, out)
    }
}

/// Prefetches the lines of `x` (a few lines at most).
#[inline(always)]
fn prefetch_range<S: Simd>(s: S, x: &[f32]) {
    let mut i = 0;
    while i < x.len() {
        s.prefetch(&x[i..]);
        i += 16;
    }
    if let Some(last) = x.len().checked_sub(1) {
        s.prefetch(&x[last..]);
    }
}

/// The LSTM step with its cell reading `xp` from `xp` (the checks of the caller done): rows
/// `rows`, the units of `blocks`, visited in `order`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn lstm_blocks<
    S: Simd,
    X: XpSource<S, 4>,
    const R: usize,
    const GPR: usize,
    const NVR: usize,
    const RB: usize,
    const GPB: usize,
    const NVB: usize,
    const JBR: usize,
    const GP1: usize,
    const NV1: usize,
    const JB1: usize,
>(
    s: S,
    (kernel, xp_len): (&str, Option<usize>),
    xp: impl FnOnce(usize) -> X,
    w: &PackedMatrix,
    h_prev: &[f32],
    (c, h_out): (&mut [f32], &mut [f32]),
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
) {
    let mut cell = LstmCell::checked(kernel, (xp_len, xp), w, h_prev, (c, h_out), rows, &blocks);
    run::<S, 4, R, GPR, NVR, RB, GPB, NVB, JBR, GP1, NV1, JB1>(
        s, w, blocks, order, h_prev, rows, &mut cell,
    );
}

/// LSTM step over `blocks` of `w` (see [`crate::step::LstmStepBlocksFn`] for the contract).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn lstm_step_blocks<
    S: Simd,
    const R: usize,
    const GPR: usize,
    const NVR: usize,
    const RB: usize,
    const GPB: usize,
    const NVB: usize,
    const JBR: usize,
    const GP1: usize,
    const NV1: usize,
    const JB1: usize,
>(
    s: S,
    w: &PackedMatrix,
    xp: &[f32],
    h_prev: &[f32],
    c: &mut [f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
) {
    lstm_blocks::<S, Projected, R, GPR, NVR, RB, GPB, NVB, JBR, GP1, NV1, JB1>(
        s,
        ("lstm_step", Some(xp.len())),
        |h| Projected { xp, h },
        w,
        h_prev,
        (c, h_out),
        rows,
        blocks,
        order,
    );
}

/// LSTM step over `blocks` of `w` with the input projection of the step's rows done per tile
/// (see [`crate::step::LstmInputStepBlocksFn`] for the contract, [`InTile`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn lstm_input_step_blocks<
    S: Simd,
    const R: usize,
    const GPR: usize,
    const NVR: usize,
    const RB: usize,
    const GPB: usize,
    const NVB: usize,
    const JBR: usize,
    const GP1: usize,
    const NV1: usize,
    const JB1: usize,
>(
    s: S,
    input: (&PackedMatrix, &[f32], &[f32]),
    w: &PackedMatrix,
    h_prev: &[f32],
    c: &mut [f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
) {
    const KERNEL: &str = "lstm_input_step";
    lstm_blocks::<S, InTile, R, GPR, NVR, RB, GPB, NVB, JBR, GP1, NV1, JB1>(
        s,
        (KERNEL, None),
        |h| InTile::new(KERNEL, input, 4, h, rows),
        w,
        h_prev,
        (c, h_out),
        rows,
        blocks,
        order,
    );
}

/// The GRU epilogue: `r,z = σ(xp + acc)`, `n = tanh(xp_n + r*(acc_n + b_hn))`,
/// `h' = (1-z)*n + z*h`.
struct GruCell<'a, X> {
    /// `xp`, `(rows, 3H)`.
    xp: X,
    /// `(H)`.
    b_hn: &'a [f32],
    /// `(rows, H)`.
    h_prev: &'a [f32],
    /// `(rows, nu)`.
    h_out: &'a mut [f32],
    /// `H`.
    h: usize,
    /// First unit of the call's block range.
    u_begin: usize,
    /// Units of the call's block range.
    nu: usize,
}

impl<'a, X> GruCell<'a, X> {
    /// The cell of a GRU step of `rows` rows over `blocks` of `w`, after the step's checks (see
    /// [`LstmCell::checked`]); its `xp` from `xp(H)`.
    #[inline(always)]
    fn checked(
        kernel: &str,
        (xp_len, xp): (Option<usize>, impl FnOnce(usize) -> X),
        (w, b_hn): (&PackedMatrix, &'a [f32]),
        h_prev: &'a [f32],
        h_out: &'a mut [f32],
        rows: usize,
        blocks: &Range<usize>,
    ) -> Self {
        assert_eq!(w.rows(), w.cols(), "{kernel} needs a square W_hh per gate");
        let outs = [h_out.len()];
        let units = check_step_blocks(kernel, w, 3, xp_len, h_prev.len(), &outs, rows, blocks);
        let h = w.rows();
        assert!(b_hn.len() >= h, "{kernel}: b_hn holds {} < {h}", b_hn.len());
        GruCell {
            xp: xp(h),
            b_hn,
            h_prev,
            h_out,
            h,
            u_begin: units.start,
            nu: units.len(),
        }
    }
}

impl<S: Simd, X: XpSource<S, 3>> Epilogue<S, 3> for GruCell<'_, X> {
    #[inline(always)]
    fn before_tile<const R: usize, const GP: usize, const NV: usize, const JB: usize>(
        &mut self,
        s: S,
        j: usize,
        r0: usize,
        vectors: usize,
    ) {
        self.xp.before_tile::<R, GP, NV, JB>(s, j, r0, vectors);
    }

    #[inline(always)]
    fn apply<const N: usize, const FULL: bool>(
        &mut self,
        s: S,
        r0: usize,
        u: usize,
        n: usize,
        acc: [[S::V; 3]; N],
    ) {
        let w = Rows::<S, N>(s);
        let h = self.h;
        let (mut pr, mut pz, mut hn, mut xn, mut hp) = (
            [s.zero(); N],
            [s.zero(); N],
            [s.zero(); N],
            [s.zero(); N],
            [s.zero(); N],
        );
        for r in 0..N {
            pr[r] = s.add(self.xp.load::<FULL>(s, r0 + r, 0, u, n), acc[r][0]);
            pz[r] = s.add(self.xp.load::<FULL>(s, r0 + r, 1, u, n), acc[r][1]);
            hn[r] = s.add(acc[r][2], load::<S, FULL>(s, &self.b_hn[u..u + n]));
            xn[r] = self.xp.load::<FULL>(s, r0 + r, 2, u, n);
            hp[r] = load::<S, FULL>(s, &self.h_prev[(r0 + r) * h + u..(r0 + r) * h + u + n]);
        }
        let rg = sigmoid(w, pr);
        let z = sigmoid(w, pz);
        let nn = tanh(w, w.mul_add(rg, hn, xn));
        let h_new = w.flush_denormals(w.mul_add(z, hp, w.mul(w.sub(w.splat(1.0), z), nn)));
        for (r, h_new) in h_new.into_iter().enumerate() {
            let at = (r0 + r) * self.nu + (u - self.u_begin);
            store::<S, FULL>(s, h_new, &mut self.h_out[at..at + n]);
        }
    }

    #[inline(always)]
    fn prefetch(&self, s: S, r: usize, u: usize, n: usize) {
        let h = self.h;
        self.xp.prefetch(s, r, u, n);
        prefetch_range(s, &self.h_prev[r * h + u..r * h + u + n]);
    }
}

/// The GRU step with its cell reading `xp` from `xp` (the checks of the caller done): rows
/// `rows`, the units of `blocks`, visited in `order`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gru_blocks<
    S: Simd,
    X: XpSource<S, 3>,
    const R: usize,
    const GPR: usize,
    const NVR: usize,
    const RB: usize,
    const GPB: usize,
    const NVB: usize,
    const JBR: usize,
    const GP1: usize,
    const NV1: usize,
    const JB1: usize,
>(
    s: S,
    (kernel, xp_len): (&str, Option<usize>),
    xp: impl FnOnce(usize) -> X,
    (w, b_hn): (&PackedMatrix, &[f32]),
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
) {
    let mut cell = GruCell::checked(
        kernel,
        (xp_len, xp),
        (w, b_hn),
        h_prev,
        h_out,
        rows,
        &blocks,
    );
    run::<S, 3, R, GPR, NVR, RB, GPB, NVB, JBR, GP1, NV1, JB1>(
        s, w, blocks, order, h_prev, rows, &mut cell,
    );
}

/// GRU step over `blocks` of `w` (see [`crate::step::GruStepBlocksFn`] for the contract).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn gru_step_blocks<
    S: Simd,
    const R: usize,
    const GPR: usize,
    const NVR: usize,
    const RB: usize,
    const GPB: usize,
    const NVB: usize,
    const JBR: usize,
    const GP1: usize,
    const NV1: usize,
    const JB1: usize,
>(
    s: S,
    w: &PackedMatrix,
    b_hn: &[f32],
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
) {
    gru_blocks::<S, Projected, R, GPR, NVR, RB, GPB, NVB, JBR, GP1, NV1, JB1>(
        s,
        ("gru_step", Some(xp.len())),
        |h| Projected { xp, h },
        (w, b_hn),
        h_prev,
        h_out,
        rows,
        blocks,
        order,
    );
}

/// GRU step over `blocks` of `w` with the input projection of the step's rows done per tile
/// (see [`crate::step::GruInputStepBlocksFn`] for the contract, [`InTile`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn gru_input_step_blocks<
    S: Simd,
    const R: usize,
    const GPR: usize,
    const NVR: usize,
    const RB: usize,
    const GPB: usize,
    const NVB: usize,
    const JBR: usize,
    const GP1: usize,
    const NV1: usize,
    const JB1: usize,
>(
    s: S,
    input: (&PackedMatrix, &[f32], &[f32]),
    (w, b_hn): (&PackedMatrix, &[f32]),
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
) {
    const KERNEL: &str = "gru_input_step";
    gru_blocks::<S, InTile, R, GPR, NVR, RB, GPB, NVB, JBR, GP1, NV1, JB1>(
        s,
        (KERNEL, None),
        |h| InTile::new(KERNEL, input, 3, h, rows),
        (w, b_hn),
        h_prev,
        h_out,
        rows,
        blocks,
        order,
    );
}

/// The RNN epilogue: `h' = act(xp + acc)`, `act` `relu` with `RELU`, else `tanh` (a
/// constant, so that no vector branches on it); `SPLIT`: the sums over `k` in two halves (see
/// [`accumulate`]).
struct RnnCell<'a, const SPLIT: bool, const RELU: bool> {
    /// `(rows, H)`.
    xp: &'a [f32],
    /// `(rows, nu)`.
    h_out: &'a mut [f32],
    /// `H`.
    h: usize,
    /// First unit of the call's block range.
    u_begin: usize,
    /// Units of the call's block range.
    nu: usize,
}

impl<'a, const SPLIT: bool, const RELU: bool> RnnCell<'a, SPLIT, RELU> {
    /// The epilogue of a call over `H = h` units writing `(rows, nu)` outputs for its units
    /// `u_begin..u_begin + nu` (`(u_begin, nu)`).
    fn new(xp: &'a [f32], h_out: &'a mut [f32], h: usize, (u_begin, nu): (usize, usize)) -> Self {
        Self {
            xp,
            h_out,
            h,
            u_begin,
            nu,
        }
    }
}

impl<S: Simd, const SPLIT: bool, const RELU: bool> Epilogue<S, 1> for RnnCell<'_, SPLIT, RELU> {
    const SPLIT_K: bool = SPLIT;

    #[inline(always)]
    fn apply<const N: usize, const FULL: bool>(
        &mut self,
        s: S,
        r0: usize,
        u: usize,
        n: usize,
        acc: [[S::V; 1]; N],
    ) {
        let w = Rows::<S, N>(s);
        let mut pre = [s.zero(); N];
        for (r, pre) in pre.iter_mut().enumerate() {
            let at = (r0 + r) * self.h + u;
            *pre = s.add(load::<S, FULL>(s, &self.xp[at..at + n]), acc[r][0]);
        }
        let y = w.flush_denormals(if RELU { relu(w, pre) } else { tanh(w, pre) });
        for (r, y) in y.into_iter().enumerate() {
            let at = (r0 + r) * self.nu + (u - self.u_begin);
            store::<S, FULL>(s, y, &mut self.h_out[at..at + n]);
        }
    }

    #[inline(always)]
    fn prefetch(&self, s: S, r: usize, u: usize, n: usize) {
        let at = r * self.h + u;
        prefetch_range(s, &self.xp[at..at + n]);
    }
}

/// RNN step over `blocks` of `w` (see [`crate::step::RnnStepBlocksFn`]): `h' = act(xp + acc)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn rnn_step_blocks<
    S: Simd,
    const SPLIT: bool,
    const R: usize,
    const GPR: usize,
    const NVR: usize,
    const RB: usize,
    const GPB: usize,
    const NVB: usize,
    const JBR: usize,
    const GP1: usize,
    const NV1: usize,
    const JB1: usize,
>(
    s: S,
    w: &PackedMatrix,
    act: Activation,
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
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
    // The activation chosen once, as a constant of the epilogue.
    let (h, units) = (w.rows(), (units.start, units.len()));
    match act {
        Activation::Tanh => run::<S, 1, R, GPR, NVR, RB, GPB, NVB, JBR, GP1, NV1, JB1>(
            s,
            w,
            blocks,
            order,
            h_prev,
            rows,
            &mut RnnCell::<SPLIT, false>::new(xp, h_out, h, units),
        ),
        Activation::Relu => run::<S, 1, R, GPR, NVR, RB, GPB, NVB, JBR, GP1, NV1, JB1>(
            s,
            w,
            blocks,
            order,
            h_prev,
            rows,
            &mut RnnCell::<SPLIT, true>::new(xp, h_out, h, units),
        ),
    }
}

/// A single row of an RNN over `steps` consecutive steps (see [`crate::step::RnnStepsFn`]):
/// step `t` reads `xp[t*H..]` and `h0` or step `t - 1`'s output, writes `h_out[t*H..(t+1)*H]`,
/// and visits every block in [`BlockOrder::for_step`]`(t)`: exactly the operations of `steps`
/// calls of [`rnn_step_blocks`], with the shapes checked once instead of every step, and each
/// step straight on the single-row path ([`run_row`]). Measured on the Zen 4 of
/// docs/PERFORMANCE.md, rnn_tiny_b1 (50 steps of 64 units) pinned: 8.9-9.1 -> 8.1-8.2 µs a
/// call against those calls one a step.
#[inline(always)]
pub(crate) fn rnn_steps<
    S: Simd,
    const SPLIT: bool,
    const GP1: usize,
    const NV1: usize,
    const JB1: usize,
>(
    s: S,
    w: &PackedMatrix,
    act: Activation,
    xp: &[f32],
    h0: &[f32],
    h_out: &mut [f32],
    steps: usize,
) {
    let (h, k) = (w.rows(), w.cols());
    assert!(
        w.gates() == 1 && k == h,
        "rnn_steps: W_hh must be 1 gate of {h} x {h} units, not {} of {h} x {k}",
        w.gates()
    );
    assert!(
        xp.len() >= steps * h && h0.len() >= h && h_out.len() >= steps * h,
        "rnn_steps: {steps} steps of {h} units need xp {} / h0 {} / h_out {}",
        xp.len(),
        h0.len(),
        h_out.len()
    );
    // The activation chosen once, as a constant of the epilogue.
    match act {
        Activation::Tanh => {
            steps_of::<S, SPLIT, false, GP1, NV1, JB1>(s, w, xp, h0, h_out, steps);
        }
        Activation::Relu => {
            steps_of::<S, SPLIT, true, GP1, NV1, JB1>(s, w, xp, h0, h_out, steps);
        }
    }
}

/// The loop of [`rnn_steps`], its shapes checked.
#[inline(always)]
fn steps_of<
    S: Simd,
    const SPLIT: bool,
    const RELU: bool,
    const GP1: usize,
    const NV1: usize,
    const JB1: usize,
>(
    s: S,
    w: &PackedMatrix,
    xp: &[f32],
    h0: &[f32],
    h_out: &mut [f32],
    steps: usize,
) {
    let h = w.rows();
    for t in 0..steps {
        let (done, rest) = h_out.split_at_mut(t * h);
        let h_prev = if t == 0 {
            &h0[..h]
        } else {
            &done[(t - 1) * h..]
        };
        let xp = &xp[t * h..(t + 1) * h];
        let mut cell = RnnCell::<SPLIT, RELU>::new(xp, &mut rest[..h], h, (0, h));
        let order = BlockOrder::for_step(t);
        run_row::<S, 1, GP1, NV1, JB1>(s, w, 0..w.blocks(), order, h_prev, &mut cell);
    }
}

/// The projection epilogue: `out = acc`.
struct ProjectOut<'a> {
    /// `(rows, nu)`.
    out: &'a mut [f32],
    /// First unit of the call's block range.
    u_begin: usize,
    /// Units of the call's block range.
    nu: usize,
}

impl<S: Simd> Epilogue<S, 1> for ProjectOut<'_> {
    #[inline(always)]
    fn apply<const N: usize, const FULL: bool>(
        &mut self,
        s: S,
        r0: usize,
        u: usize,
        n: usize,
        acc: [[S::V; 1]; N],
    ) {
        for (r, acc) in acc.into_iter().enumerate() {
            let at = (r0 + r) * self.nu + (u - self.u_begin);
            store::<S, FULL>(s, s.flush_denormals(acc[0]), &mut self.out[at..at + n]);
        }
    }
}

/// Projection over `blocks` of `w` (see [`crate::step::ProjectBlocksFn`]): `out = W x`.
#[inline(always)]
pub(crate) fn project_blocks<
    S: Simd,
    const R: usize,
    const GPR: usize,
    const NVR: usize,
    const RB: usize,
    const GPB: usize,
    const NVB: usize,
    const JBR: usize,
    const GP1: usize,
    const NV1: usize,
    const JB1: usize,
>(
    s: S,
    w: &PackedMatrix,
    x: &[f32],
    out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
) {
    let units = check_step_blocks("project", w, 1, None, x.len(), &[out.len()], rows, &blocks);
    let mut cell = ProjectOut {
        out,
        u_begin: units.start,
        nu: units.len(),
    };
    run::<S, 1, R, GPR, NVR, RB, GPB, NVB, JBR, GP1, NV1, JB1>(
        s, w, blocks, order, x, rows, &mut cell,
    );
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

#[cfg(test)]
mod tests {
    use super::{block_group, block_groups, row_tiles};

    #[test]
    fn block_groups_cover_every_block_once_in_order() {
        assert_eq!(block_group(&(0..13), 8, 0), (0, 8));
        assert_eq!(block_group(&(0..13), 8, 1), (8, 4));
        assert_eq!(block_group(&(0..13), 8, 2), (12, 1));
        assert_eq!(block_groups(&(0..4), 8), 1);
        assert_eq!(block_group(&(0..4), 8, 0), (0, 4));
        for jb1 in [1, 2, 4, 8] {
            for start in [0, 3] {
                for len in 0..40 {
                    let blocks = start..start + len;
                    let mut next = start;
                    for i in 0..block_groups(&blocks, jb1) {
                        let (j, jb) = block_group(&blocks, jb1, i);
                        assert_eq!(j, next, "{blocks:?} / {jb1}: group {i}");
                        assert!(
                            jb.is_power_of_two() && jb <= jb1,
                            "{blocks:?} / {jb1}: {jb}"
                        );
                        // Full groups first: a group smaller than `jb1` only in the tail.
                        assert!(jb == jb1 || blocks.end - j < jb1, "{blocks:?} / {jb1}");
                        next += jb;
                    }
                    assert_eq!(next, blocks.end, "{blocks:?} / {jb1}");
                }
            }
        }
    }

    #[test]
    fn row_tiles_cover_every_row_a_tile_can_take() {
        // (rows, R, RB) -> (tiles of R, tiles of RB)
        assert_eq!(row_tiles(4, 3, 4), (0, 1));
        assert_eq!(row_tiles(64, 3, 4), (20, 1));
        assert_eq!(row_tiles(256, 3, 4), (84, 1));
        assert_eq!(row_tiles(5, 3, 4), (1, 0));
        assert_eq!(row_tiles(2, 3, 4), (0, 0));
        assert_eq!(row_tiles(9, 4, 0), (2, 0));
        assert_eq!(row_tiles(9, 1, 0), (0, 0));
        for (r, rb) in [(2, 3), (3, 4), (4, 5), (6, 7), (8, 9), (2, 0), (4, 0)] {
            for rows in 0..200 {
                let (a, b) = row_tiles(rows, r, rb);
                let covered = a * r + b * rb;
                assert!(
                    covered <= rows,
                    "{rows} rows, tiles {r}/{rb}: {a}+{b} cover too many"
                );
                // Rows left to run alone: never more than a single size would leave, and none
                // once the rows are enough to be written as a sum of the two sizes.
                assert!(
                    rows - covered <= rows % r,
                    "{rows} rows, tiles {r}/{rb}: {a}+{b}"
                );
                if rb == r + 1 && rows >= r * rb {
                    assert_eq!(covered, rows, "{rows} rows, tiles {r}/{rb}");
                }
            }
        }
    }
}
