//! The fused recurrent step kernels, one table of function pointers per tier.
//!
//! Every step kernel runs one timestep for `rows` batch rows stored contiguously:
//!
//! - `xp`: `(rows, G*H)`, the input projection of this timestep, `W_ih x + b_ih` with every bias
//!   PyTorch's formulas allow folded in (all of them except GRU's `b_hn`), gate order as PyTorch's;
//! - `h_prev`: `(rows, K)` with `K = w_hh.cols()` (`H`, or `P` for an LSTM with projection);
//! - `c` (LSTM): `(rows, H)`, updated in place;
//! - `h_out`: `(rows, H)`, the new hidden state (before any projection).
//!
//! The accumulation order of every output element is the same whatever `rows` is, so a batch row's
//! result does not depend on which other rows share its call (SPEC §4: bit-identical for any batch
//! split and any thread count).
//!
//! # Splitting the hidden units of one step (`*_blocks`)
//!
//! Each step kernel has a `*_blocks` variant that computes only the hidden units of a range of
//! packed blocks, so several threads can share one step (block `j` holds units
//! `j*BLOCK .. min((j+1)*BLOCK, H)`, see [`PackedMatrix`]). For `blocks = b0..b1`:
//!
//! - the units are `u0..u1` with `u0 = b0*BLOCK`, `u1 = min(b1*BLOCK, H)`, `nu = u1 - u0`
//!   ([`block_units`] computes them);
//! - `xp` `(rows, G*H)`, `h_prev` `(rows, K)` and GRU's `b_hn` `(H)` are the *whole* arrays, as
//!   for the whole step (read-only, shared by every thread);
//! - `c` and `h_out` cover only those units: `(rows, nu)`, row `r` at `[r*nu .. (r+1)*nu]`. With
//!   `rows == 1` that is exactly `c[u0..u1]` / `h_out[u0..u1]` of the whole state, so the ranges
//!   of several threads are disjoint `&mut` slices from `split_at_mut`; with `rows > 1` each
//!   thread keeps its own `(rows, nu)` buffers (its slice of `c` never leaves it) and the caller
//!   gathers the `h_out` slices into the next step's `h_prev`.
//!
//! The results are bit-identical to the whole step's for those units, whatever the split: each
//! output element is computed by the same instructions (accumulation over `k` in order, then the
//! element-wise epilogue). The whole-step functions are the `0..w.blocks()` case.
//!
//! # The order of the blocks ([`BlockOrder`])
//!
//! The `*_blocks` variants also take the order in which they visit their blocks. Blocks hold
//! disjoint units, so the order changes no result bit; it changes which weights are still in
//! cache. A step loop whose weights are larger than a core's cache (one stream of a 512-wide
//! LSTM: 4 MiB of `W_hh` against 2 MiB of L2) reads them cyclically, and a cyclic read of a set
//! larger than an LRU-like cache misses on every line: each step evicts exactly the weights
//! the next step wants first. Alternating the order every step ([`BlockOrder::for_step`])
//! makes each step start on the blocks the previous one ended on, which are still in cache.

use std::ops::Range;

use crate::isa::Isa;
use crate::pack::{PackedMatrix, BLOCK};

/// The nonlinearity of a plain (Elman) RNN cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `tanh` (PyTorch's `RNN_TANH`).
    Tanh,
    /// `relu` (PyTorch's `RNN_RELU`); NaN propagates as in PyTorch.
    Relu,
}

/// LSTM step: `i,f,o = σ(..)`, `g = tanh(..)`, `c' = f*c + i*g`, `h' = o*tanh(c')`.
pub type LstmStepFn = fn(
    w_hh: &PackedMatrix,
    xp: &[f32],
    h_prev: &[f32],
    c: &mut [f32],
    h_out: &mut [f32],
    rows: usize,
);

/// GRU step: `r,z = σ(xp + W_h h)`, `n = tanh(xp_n + r*(W_hn h + b_hn))`, `h' = (1-z)*n + z*h`.
/// `b_hn` has `H` elements (zeros for `bias=False`). Needs `K == H`.
pub type GruStepFn = fn(
    w_hh: &PackedMatrix,
    b_hn: &[f32],
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
);

/// RNN step: `h' = act(xp + W_hh h)`.
pub type RnnStepFn = fn(
    w_hh: &PackedMatrix,
    act: Activation,
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
);

/// LSTM projection: `out = W_hr h` for `rows` rows; `h` is `(rows, H)`, `out` `(rows, P)`.
pub type ProjectFn = fn(w_hr: &PackedMatrix, h: &[f32], out: &mut [f32], rows: usize);

/// The order in which a `*_blocks` step kernel visits its blocks (see the module docs); it
/// changes no result bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BlockOrder {
    /// Block `b0` first.
    #[default]
    Ascending,
    /// Block `b1 - 1` first.
    Descending,
}

impl BlockOrder {
    /// The `i`-th of `n` units (`i < n`) visited in this order: `i`, or `n - 1 - i`.
    pub(crate) fn visit(self, i: usize, n: usize) -> usize {
        match self {
            BlockOrder::Ascending => i,
            BlockOrder::Descending => n - 1 - i,
        }
    }

    /// The order for loop step `s` of a sequence: ascending on even steps, descending on odd
    /// ones, so every step begins with the blocks the previous step read last.
    pub fn for_step(s: usize) -> BlockOrder {
        if s.is_multiple_of(2) {
            BlockOrder::Ascending
        } else {
            BlockOrder::Descending
        }
    }
}

/// [`LstmStepFn`] for the units of `blocks` only, visited in `order`; `c` and `h_out` are
/// `(rows, nu)` (see the module docs for the contract).
pub type LstmStepBlocksFn = fn(
    w_hh: &PackedMatrix,
    xp: &[f32],
    h_prev: &[f32],
    c: &mut [f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
);

/// [`LstmStepBlocksFn`] with the step's input projection done inside the kernel: instead of
/// `xp`, the step's input rows `x` `(rows, I)`, `W_ih` packed as `W_hh` is (4 gates of `H`
/// units, `I` columns: `PackedMatrix::pack(w_ih, 4, H, I)`) and the projection's biases
/// `(4H,)`. The results are the same bits as [`InputProjectionFn`] (with `W_ih` packed plain)
/// followed by [`LstmStepBlocksFn`]; what differs is where `xp` lives (see the module docs).
pub type LstmInputStepBlocksFn = fn(
    input: (&PackedMatrix, &[f32], &[f32]),
    w_hh: &PackedMatrix,
    h_prev: &[f32],
    c: &mut [f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
);

/// [`GruStepFn`] for the units of `blocks` only, visited in `order`; `h_out` is `(rows, nu)`
/// (see the module docs).
pub type GruStepBlocksFn = fn(
    w_hh: &PackedMatrix,
    b_hn: &[f32],
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
);

/// [`GruStepBlocksFn`] with the step's input projection done inside the kernel, as
/// [`LstmInputStepBlocksFn`] does: `W_ih` packed as `W_hh` is (3 gates of `H` units, `I`
/// columns) and the projection's biases `(3H,)` (`b_ih + b_hh` for `r` and `z`, `b_in` for
/// `n`). The same bits as [`InputProjectionFn`] followed by [`GruStepBlocksFn`].
pub type GruInputStepBlocksFn = fn(
    input: (&PackedMatrix, &[f32], &[f32]),
    w_hh: &PackedMatrix,
    b_hn: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
);

/// [`RnnStepFn`] for the units of `blocks` only, visited in `order`; `h_out` is `(rows, nu)`
/// (see the module docs).
pub type RnnStepBlocksFn = fn(
    w_hh: &PackedMatrix,
    act: Activation,
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
);

/// [`RnnStepFn`] for a single row over `steps` consecutive steps, as one call: step `s` reads
/// `xp[s*H..(s+1)*H]` and the previous step's state (`h0` for step 0, else its own output
/// `h_out[(s-1)*H..s*H]`), writes `h_out[s*H..(s+1)*H]`, and visits its blocks in
/// [`BlockOrder::for_step`]`(s)`: the same bits as `steps` calls of [`RnnStepBlocksFn`] over
/// every block. A tiny layer's step takes ~100-150 ns, of which a call's dispatch, checks and
/// the caller's loop took a tenth (see docs/PERFORMANCE.md).
pub type RnnStepsFn = fn(
    w_hh: &PackedMatrix,
    act: Activation,
    xp: &[f32],
    h0: &[f32],
    h_out: &mut [f32],
    steps: usize,
);

/// [`ProjectFn`] for the outputs of `blocks` only, visited in `order`; `out` is `(rows, nu)`
/// (see the module docs).
pub type ProjectBlocksFn = fn(
    w_hr: &PackedMatrix,
    h: &[f32],
    out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    order: BlockOrder,
);

/// The rows of a [`Rider`]'s tile.
pub const RIDER_ROWS: usize = 8;

/// A share of another product that rides in a single row's step (the `*_step_riding` kernels):
/// the input projection `xp = x W_ihᵀ + bias` of [`RIDER_ROWS`] rows, for the output columns of
/// `blocks`, computed a `k` at a time inside the step's own `k` loop, where a single row's
/// step, bound by the stream of its weights, leaves the FMA pipes idle. An engine running a
/// stack of layers on one stream gives each step of a layer a share of the next layer's
/// projection of the rows this layer has already produced.
///
/// Every element written is the bits [`InputProjectionFn`] gives for its row (`acc = 0`, one
/// `mul_add` per `k = 0..K` in order, `+ bias`); the step's outputs are the bits of the step
/// without a rider. The kernel does all of `blocks`, finishing after the step's last block
/// what its `k` loop left.
pub struct Rider<'a> {
    /// `W_ih` `(N, K)`, packed plain (as [`InputProjectionFn`] takes it).
    pub w_ih: &'a PackedMatrix,
    /// `(N,)`.
    pub bias: &'a [f32],
    /// The tile's rows `(RIDER_ROWS, K)` transposed, `k`-major: row `r`'s `x[k]` at
    /// `k * RIDER_ROWS + r` (see [`transpose_rider_rows`]).
    pub x: &'a [f32],
    /// The projections of the tile's rows, for the output columns of `blocks` (those below
    /// `N`): row `r`'s columns of block `b` at `xp[r * layout.0 + (b - blocks.start) *
    /// layout.1..]`, `BLOCK` of them (fewer in `N`'s last block). Nothing else is written.
    pub xp: &'a mut [f32],
    /// `(row stride, block stride)` of `xp`: `(N, BLOCK)` for rows of `N` columns (with `xp`
    /// from column `blocks.start * BLOCK` of row 0), `(BLOCK, M * BLOCK)` for block-major
    /// storage of `M` rows (each block's columns of every row together).
    pub layout: (usize, usize),
    /// Blocks of [`BLOCK`] output columns of `w_ih`.
    pub blocks: Range<usize>,
}

/// Writes `rows` `(RIDER_ROWS, k)` (row-major) into `out` `k`-major, as [`Rider::x`] takes
/// them. Panics if a slice is shorter than that.
pub fn transpose_rider_rows(rows: &[f32], k: usize, out: &mut [f32]) {
    let rows = &rows[..RIDER_ROWS * k];
    for (kk, o) in out[..RIDER_ROWS * k]
        .chunks_exact_mut(RIDER_ROWS)
        .enumerate()
    {
        for (r, v) in o.iter_mut().enumerate() {
            *v = rows[r * k + kk];
        }
    }
}

/// [`LstmStepBlocksFn`] of a single row (`rows = 1`) with `rider` riding in its `k` loop (see
/// [`Rider`]); the same bits as the step and the projection of the rider's rows and blocks.
pub type LstmStepRidingFn = fn(
    w_hh: &PackedMatrix,
    xp: &[f32],
    h_prev: &[f32],
    c: &mut [f32],
    h_out: &mut [f32],
    blocks: Range<usize>,
    order: BlockOrder,
    rider: Rider<'_>,
);

/// [`GruStepBlocksFn`] of a single row (`rows = 1`) with `rider` riding in its `k` loop (see
/// [`Rider`]).
pub type GruStepRidingFn = fn(
    w_hh: &PackedMatrix,
    b_hn: &[f32],
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    blocks: Range<usize>,
    order: BlockOrder,
    rider: Rider<'_>,
);

/// Input projection of many rows at once: `xp[r][n] = Σ_k x[r][k] W[n][k] + bias[n]`.
///
/// - `w_ih`: `W_ih` `(N, K)` (`N = G*H`, `K = I`) packed plain, `PackedMatrix::pack(w, 1, N, K)`:
///   the output columns in PyTorch's gate-major order;
/// - `bias`: `(N)`; `x`: `(rows, K)`; `xp`: `(rows, N)`, overwritten (never read first).
///
/// Every element is `Σ_k` accumulated over `k = 0..K` in order with one `mul_add` per term
/// (as the step kernels do), then `+ bias`: a row's result does not depend on `rows` or on the
/// other rows. Panics if `w_ih` is not plain or a slice is shorter than its shape.
pub type InputProjectionFn =
    fn(w_ih: &PackedMatrix, bias: &[f32], x: &[f32], xp: &mut [f32], rows: usize);

/// An activation over a slice: `y[i] = f(x[i])`. Panics if the lengths differ.
pub type MapFn = fn(x: &[f32], y: &mut [f32]);

/// The kernels of one tier.
#[derive(Debug)]
pub struct Kernels {
    /// The tier these kernels belong to.
    pub isa: Isa,
    /// See [`LstmStepFn`].
    pub lstm_step: LstmStepFn,
    /// See [`GruStepFn`].
    pub gru_step: GruStepFn,
    /// See [`RnnStepFn`].
    pub rnn_step: RnnStepFn,
    /// See [`ProjectFn`].
    pub project: ProjectFn,
    /// See [`LstmStepBlocksFn`].
    pub lstm_step_blocks: LstmStepBlocksFn,
    /// See [`LstmInputStepBlocksFn`].
    pub lstm_input_step_blocks: LstmInputStepBlocksFn,
    /// See [`GruStepBlocksFn`].
    pub gru_step_blocks: GruStepBlocksFn,
    /// See [`GruInputStepBlocksFn`].
    pub gru_input_step_blocks: GruInputStepBlocksFn,
    /// See [`LstmStepRidingFn`]; `None` on tiers without it (it needs vectors of [`BLOCK`]
    /// lanes).
    pub lstm_step_riding: Option<LstmStepRidingFn>,
    /// See [`GruStepRidingFn`]; `None` on tiers without it.
    pub gru_step_riding: Option<GruStepRidingFn>,
    /// See [`RnnStepBlocksFn`].
    pub rnn_step_blocks: RnnStepBlocksFn,
    /// See [`RnnStepsFn`].
    pub rnn_steps: RnnStepsFn,
    /// See [`ProjectBlocksFn`].
    pub project_blocks: ProjectBlocksFn,
    /// See [`InputProjectionFn`].
    pub input_projection: InputProjectionFn,
    /// The tier's fast logistic sigmoid (the one the step kernels use; bound in its docs).
    pub sigmoid: MapFn,
    /// The tier's fast `tanh` (the one the step kernels use; bound in its docs).
    pub tanh: MapFn,
    /// [`crate::denormal::has_denormals`] in the tier's instructions (the engine scans every
    /// input with it; the same answer on every tier).
    pub has_denormals: fn(x: &[f32]) -> bool,
}

/// The kernels of `isa`, if this build has them (whether the CPU runs them is
/// [`Isa::cpu_supports`]; [`Isa::is_available`] checks both). The x86 tiers exist in every
/// x86-64 build; their functions panic rather than run on a CPU without the tier (see
/// `tiers.rs`), so holding a table is always safe.
pub fn kernels_for(isa: Isa) -> Option<&'static Kernels> {
    match isa {
        Isa::Portable => Some(&crate::tiers::portable::KERNELS),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(&crate::tiers::avx2::KERNELS),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(&crate::tiers::avx512::KERNELS),
        #[cfg(not(target_arch = "x86_64"))]
        _ => None,
    }
}

/// The AVX-512 tier's kernel bodies and tiles run on a scalar 16-lane emulation: for testing the
/// 16-lane code paths on hosts without AVX-512. Slow; never selected.
#[doc(hidden)]
pub fn emulated_avx512_kernels() -> &'static Kernels {
    &crate::tiers::emulated_avx512::KERNELS
}

/// The kernels of the selected tier ([`Isa::selected`]), or the error that `RECUR_ISA` caused.
pub fn kernels() -> Result<&'static Kernels, crate::isa::IsaError> {
    let isa = Isa::selected()?;
    Ok(kernels_for(isa).expect("a selected tier is available"))
}

/// The hidden units `u0..u1` of the blocks `blocks` of `w` (see the module docs).
pub fn block_units(w: &PackedMatrix, blocks: Range<usize>) -> Range<usize> {
    (blocks.start * BLOCK).min(w.rows())..(blocks.end * BLOCK).min(w.rows())
}

/// Checks the gate count, the block range and the slice lengths a step kernel relies on, and
/// returns the units of `blocks`. `xp` is `None` for the projection.
///
/// # Panics
/// If something is off: a bug in the caller, never user input.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_step_blocks(
    kernel: &str,
    w: &PackedMatrix,
    gates: usize,
    xp: Option<usize>,
    h_prev: usize,
    outs: &[usize],
    rows: usize,
    blocks: &Range<usize>,
) -> Range<usize> {
    assert_eq!(
        w.gates(),
        gates,
        "{kernel}: needs {gates} gates, W has {}",
        w.gates()
    );
    assert!(
        blocks.start <= blocks.end && blocks.end <= w.blocks(),
        "{kernel}: blocks {blocks:?} outside 0..{}",
        w.blocks()
    );
    let units = block_units(w, blocks.clone());
    if let Some(xp) = xp {
        let gh = gates * w.rows();
        assert!(xp >= rows * gh, "{kernel}: xp holds {xp} < {rows}x{gh}");
    }
    assert!(
        h_prev >= rows * w.cols(),
        "{kernel}: input holds {h_prev} < {rows}x{}",
        w.cols()
    );
    for &o in outs {
        assert!(
            o >= rows * units.len(),
            "{kernel}: output holds {o} < {rows}x{}",
            units.len()
        );
    }
    units
}
