//! A single row's step with a tile of another product riding in its `k` loop (see
//! [`crate::step::Rider`] for the contract).
//!
//! A single row's step is bound by the stream of its weights: each `k` of a block loads one
//! vector per gate and issues one FMA per gate, and the FMA pipes sit idle most of the time
//! (an LSTM H512 step at ~95 GB/s from L3 uses ~40% of Zen 4's FMA slots). A stacked layer's
//! next input projection (`xp = y W_ihᵀ + b` of the rows this layer has already produced) is
//! FMA-bound instead. Here one `k` of a [`RIDER_ROWS`]-row GEMM tile of that projection runs
//! after every `E` of the step's `k`, its accumulators held in registers across the step's
//! blocks: a C model of this on the Zen 4 hid 30-50% of the projection's FMAs under the weight
//! stream (docs/PERFORMANCE.md, experiment 75), where whole tiles between the step's blocks
//! hid none (experiment 73): the tile's FMAs have to be issued within the out-of-order window
//! of the step's weight loads.
//!
//! The step's own arithmetic is untouched: every accumulator of the step takes its `k` in order
//! with one `mul_add` each, as in [`super::accumulate`] (a single row does not split its
//! sums: the LSTM and GRU cells do not), then the same epilogue; so `h` and `c` are the bits of
//! the step without a rider. Every element of the tile is the input projection's
//! (`crate::matmul`): `acc = 0`, one `mul_add(w[k], x[k], acc)` per `k = 0..K` in order, then
//! `+ bias`; so `xp` is the bits of [`crate::step::InputProjectionFn`] for those rows. Tiles
//! the step's `k` loop leaves unfinished are finished after its last block, so the call does
//! all of [`Rider::blocks`] whatever the step's size.

use std::ops::Range;

use super::{hand_off, Epilogue, GruCell, LstmCell, Projected};
use crate::pack::{PackedMatrix, BLOCK};
use crate::simd::Simd;
use crate::step::{BlockOrder, Rider, RIDER_ROWS};

/// The tile in flight and what is left of the rider's blocks.
struct Ride<'a, S: Simd> {
    /// `W_ih`'s packed data and its shape: `n` outputs, `k` columns.
    w: &'a [f32],
    n: usize,
    k: usize,
    bias: &'a [f32],
    /// The tile's rows, `k`-major (`x[k][r]`).
    x: &'a [[f32; RIDER_ROWS]],
    xp: &'a mut [f32],
    /// See [`Rider::layout`]; and the first block, where `xp` starts.
    layout: (usize, usize),
    first: usize,
    /// The current block (output columns `block * BLOCK..`) and the blocks after it.
    block: usize,
    end: usize,
    /// The `k` of the current block's tile done so far, and its sums.
    done: usize,
    acc: [S::V; RIDER_ROWS],
}

impl<'a, S: Simd> Ride<'a, S> {
    /// The ride of `rider`; checks its shapes (`kernel` names the caller in a panic).
    fn new(s: S, kernel: &str, rider: Rider<'a>) -> Self {
        const {
            assert!(
                S::LANES == BLOCK,
                "a rider's tile holds one vector per row: a tier of BLOCK lanes"
            )
        };
        let Rider {
            w_ih,
            bias,
            x,
            xp,
            layout,
            blocks,
        } = rider;
        let (n, k) = (w_ih.rows(), w_ih.cols());
        assert_eq!(
            w_ih.gates(),
            1,
            "{kernel}: the rider's W_ih must be packed plain"
        );
        assert!(
            blocks.start <= blocks.end && blocks.end <= w_ih.blocks(),
            "{kernel}: rider blocks {blocks:?} outside 0..{}",
            w_ih.blocks()
        );
        assert!(
            bias.len() >= n,
            "{kernel}: rider bias holds {} < {n}",
            bias.len()
        );
        if let Some(last) = blocks.clone().last() {
            // The end of the last row's last block.
            let end = (RIDER_ROWS - 1) * layout.0
                + (last - blocks.start) * layout.1
                + n.min((last + 1) * BLOCK)
                - last * BLOCK;
            assert!(
                xp.len() >= end,
                "{kernel}: rider xp holds {} < {end} for blocks {blocks:?} in layout {layout:?}",
                xp.len()
            );
        }
        let x = x.as_chunks::<RIDER_ROWS>().0;
        assert!(
            x.len() >= k,
            "{kernel}: rider x holds {} < {k}x{RIDER_ROWS}",
            x.len() * RIDER_ROWS
        );
        Ride {
            w: w_ih.data(),
            n,
            k,
            bias,
            x: &x[..k],
            xp,
            layout,
            first: blocks.start,
            block: blocks.start,
            end: blocks.end,
            done: 0,
            acc: [s.zero(); RIDER_ROWS],
        }
    }

    /// Whether a tile is in flight (some block is left).
    #[inline(always)]
    fn active(&self) -> bool {
        self.block < self.end
    }

    /// The current block's panel from its `k = done` on, and the tile rows' inputs from there:
    /// `k - done` of each.
    #[inline(always)]
    fn operands(&self) -> (&'a [[f32; BLOCK]], &'a [[f32; RIDER_ROWS]]) {
        let panel = &self.w[self.block * self.k * BLOCK..][..self.k * BLOCK];
        let panel = panel.as_chunks::<BLOCK>().0;
        (&panel[self.done..], &self.x[self.done..])
    }

    /// Stores the finished tile (`+ bias`, the columns that exist) and starts the next block.
    #[inline(always)]
    fn finish(&mut self, s: S) {
        let c = self.block * BLOCK;
        let c1 = self.n.min(c + BLOCK);
        let bias = s.load_partial(&self.bias[c..c1]);
        let at = (self.block - self.first) * self.layout.1;
        for (r, &acc) in self.acc.iter().enumerate() {
            let out = &mut self.xp[at + r * self.layout.0..][..c1 - c];
            s.store_partial(s.add(acc, bias), out);
        }
        self.block += 1;
        self.done = 0;
        self.acc = [s.zero(); RIDER_ROWS];
    }

    /// Runs the tile's remaining `k` (at most `steps`) on their own.
    #[inline(always)]
    fn advance(&mut self, s: S, steps: usize) {
        let (w, x) = self.operands();
        let steps = steps.min(w.len());
        let mut acc = self.acc;
        for (wk, xk) in w[..steps].iter().zip(&x[..steps]) {
            let wv = s.load(wk);
            for r in 0..RIDER_ROWS {
                acc[r] = s.mul_add(wv, s.splat(xk[r]), acc[r]);
            }
        }
        self.acc = acc;
        self.done += steps;
        if self.done == self.k {
            self.finish(s);
        }
    }

    /// Every tile left, on their own (after the step's last block).
    fn drain(&mut self, s: S) {
        while self.active() {
            self.advance(s, usize::MAX);
        }
    }
}

/// The step's sums of the `JB` blocks of `wb` for the single row `h` (`G` gates, one vector a
/// gate and block), with one `k` of the ride's tile after every `E` of the step's.
#[inline(always)]
fn accumulate_riding<S: Simd, const G: usize, const JB: usize, const E: usize>(
    s: S,
    wb: &[f32],
    h: &[f32],
    ride: &mut Ride<'_, S>,
) -> [[[[S::V; 1]; G]; JB]; 1] {
    let (panels, k) = super::block_panels::<G, G, JB>(wb, 0);
    let h = &h[..k];
    let mut acc = [[[[s.zero(); 1]; G]; JB]; 1];
    let mut kk = 0;
    // Segments of the step's `k` in which the tile does not end: no checks inside.
    while ride.active() {
        let (rw, rx) = ride.operands();
        let nr = rw.len().min((k - kk) / E);
        if nr == 0 {
            break;
        }
        let span = kk..kk + nr * E;
        let hs = h[span.clone()].as_chunks::<E>().0;
        let mut ps: [[&[[[f32; BLOCK]; E]]; G]; JB] = [[&[]; G]; JB];
        for b in 0..JB {
            for g in 0..G {
                ps[b][g] = panels[b][g][span.clone()].as_chunks::<E>().0;
                assert_eq!(ps[b][g].len(), nr);
            }
        }
        let (rw, rx, hs) = (&rw[..nr], &rx[..nr], &hs[..nr]);
        let mut racc = ride.acc;
        for i in 0..nr {
            for e in 0..E {
                let hk = s.splat(hs[i][e]);
                for b in 0..JB {
                    for g in 0..G {
                        let wv = s.load(&ps[b][g][i][e]);
                        acc[0][b][g][0] = s.mul_add(wv, hk, acc[0][b][g][0]);
                    }
                }
            }
            let wv = s.load(&rw[i]);
            for r in 0..RIDER_ROWS {
                racc[r] = s.mul_add(wv, s.splat(rx[i][r]), racc[r]);
            }
        }
        ride.acc = racc;
        ride.done += nr;
        if ride.done == ride.k {
            ride.finish(s);
        }
        kk += nr * E;
    }
    // The rest of the block's `k` (fewer than `E`, or the rider is done), as the step without
    // a rider takes them. (The segments above do the same per `k`, indexed by chunks of `E`
    // so that their bounds checks vanish.)
    for kk in kk..k {
        acc = super::accumulate_k::<S, G, 1, 1, JB>(s, &panels, &[h], kk, 0, acc);
    }
    acc
}

/// Block tile of a single row over the `JB` blocks from `j`, riding (see
/// [`super::block_tile`]).
#[inline(always)]
fn block_tile_riding<S: Simd, const G: usize, const JB: usize, const E: usize>(
    s: S,
    w: &PackedMatrix,
    j: usize,
    h_prev: &[f32],
    epilogue: &mut impl Epilogue<S, G>,
    ride: &mut Ride<'_, S>,
) {
    let (units, k) = (w.rows(), w.cols());
    let block_len = k * G * BLOCK;
    let wb = &w.data()[j * block_len..(j + JB) * block_len];
    let vectors = (units - j * BLOCK).min(BLOCK).div_ceil(S::LANES);
    epilogue.before_tile::<1, G, 1, JB>(s, j, 0, vectors);
    let acc = accumulate_riding::<S, G, JB, E>(s, wb, h_prev, ride);
    hand_off::<S, G, 1, JB, G, 1>(s, &acc, (j, vectors, units), 0, epilogue);
}

/// [`super::run_row`] with the ride: the same groups of blocks in the same order, then the
/// tiles left.
#[inline(always)]
fn run_row_riding<S: Simd, const G: usize, const JB1: usize, const E: usize>(
    s: S,
    w: &PackedMatrix,
    blocks: Range<usize>,
    order: BlockOrder,
    h_prev: &[f32],
    epilogue: &mut impl Epilogue<S, G>,
    ride: &mut Ride<'_, S>,
) {
    const { assert!(E >= 1 && JB1.is_power_of_two() && JB1 <= 8) };
    let jb1 = super::single_row_group::<G, JB1>();
    let groups = super::block_groups(&blocks, jb1);
    for i in 0..groups {
        let (j, jb) = super::block_group(&blocks, jb1, order.visit(i, groups));
        match jb {
            8 if JB1 >= 8 => block_tile_riding::<S, G, 8, E>(s, w, j, h_prev, epilogue, ride),
            4 if JB1 >= 4 => block_tile_riding::<S, G, 4, E>(s, w, j, h_prev, epilogue, ride),
            2 if JB1 >= 2 => block_tile_riding::<S, G, 2, E>(s, w, j, h_prev, epilogue, ride),
            _ => block_tile_riding::<S, G, 1, E>(s, w, j, h_prev, epilogue, ride),
        }
    }
    ride.drain(s);
}

/// A single LSTM row's step over `blocks` with `rider` riding (see
/// [`crate::step::LstmStepRidingFn`]); `JB1`: the tier's blocks of a single row's pass, `E`:
/// the step's `k` per `k` of the tile.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn lstm_step_riding<S: Simd, const JB1: usize, const E: usize>(
    s: S,
    w: &PackedMatrix,
    xp: &[f32],
    h_prev: &[f32],
    (c, h_out): (&mut [f32], &mut [f32]),
    blocks: Range<usize>,
    order: BlockOrder,
    rider: Rider<'_>,
) {
    const KERNEL: &str = "lstm_step_riding";
    let xp = (Some(xp.len()), |h| Projected { xp, h });
    let mut cell = LstmCell::checked(KERNEL, xp, w, h_prev, (c, h_out), 1, &blocks);
    let mut ride = Ride::new(s, KERNEL, rider);
    run_row_riding::<S, 4, JB1, E>(s, w, blocks, order, h_prev, &mut cell, &mut ride);
}

/// A single GRU row's step over `blocks` with `rider` riding (see
/// [`crate::step::GruStepRidingFn`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn gru_step_riding<S: Simd, const JB1: usize, const E: usize>(
    s: S,
    (w, b_hn): (&PackedMatrix, &[f32]),
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    blocks: Range<usize>,
    order: BlockOrder,
    rider: Rider<'_>,
) {
    const KERNEL: &str = "gru_step_riding";
    let xp = (Some(xp.len()), |h| Projected { xp, h });
    let mut cell = GruCell::checked(KERNEL, xp, (w, b_hn), h_prev, h_out, 1, &blocks);
    let mut ride = Ride::new(s, KERNEL, rider);
    run_row_riding::<S, 3, JB1, E>(s, w, blocks, order, h_prev, &mut cell, &mut ride);
}
