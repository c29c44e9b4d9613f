//! The forward pass: plan, input projection, recurrent loop, outputs.
//!
//! The path of data, per layer and direction: the input is gathered into the order the recurrent
//! loop reads it (batch rows sorted by length, the reverse direction's sequences reversed within
//! their own length), projected for every timestep at once by one GEMM per batch chunk
//! (`xp = x W_ihᵀ + b`; a large batch's in groups of steps, or an LSTM's or GRU's inside each
//! step's kernel, see [`projects_in_step`]; a stack of single-row layers' inside the previous
//! layer's steps, see [`Relay`]: the same bits), then run through the fused step
//! kernel one timestep at a time, and finally scattered back into PyTorch's `(L, N, D*H_out)`
//! layout. Batch chunks and directions run
//! in parallel on the current rayon pool; a row's arithmetic never depends on the chunking, so
//! results are bit-identical for any thread count.

use std::collections::TryReserveError;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::config::Mode;
use crate::error::{Error, Result};
use crate::model::{DirectionWeights, Model, Projection};
use crate::tensor::{Shape, Tensor, TensorView};
use recur_kernels::denormal::{flush, flush_into};
use recur_kernels::step::{transpose_rider_rows, BlockOrder, Rider, RIDER_ROWS};
use recur_kernels::{Kernels, PackedMatrix, BLOCK};

/// The inputs of one forward pass, borrowed.
///
/// Shapes (with `D` directions, `H_out` = `proj_size` or `hidden_size`):
/// - `input`: `(L, N, input_size)`, or `(N, L, input_size)` when the model is `batch_first`, or
///   `(L, input_size)` unbatched;
/// - `h0`: `(D*num_layers, N, H_out)` (`(D*num_layers, H_out)` unbatched), zeros if absent;
/// - `c0` (LSTM): `(D*num_layers, N, hidden_size)`; given together with `h0` or not at all;
/// - `lengths`: one per batch element, each in `1..=L` (PyTorch's packed sequences with
///   `enforce_sorted=False`).
#[derive(Clone, Copy, Debug)]
pub struct ForwardInput<'a> {
    /// The input sequence.
    pub input: TensorView<'a>,
    /// Initial hidden state.
    pub h0: Option<TensorView<'a>>,
    /// Initial cell state (LSTM).
    pub c0: Option<TensorView<'a>>,
    /// Valid length of each batch element.
    pub lengths: Option<&'a [usize]>,
}

impl<'a> ForwardInput<'a> {
    /// A forward input with zero initial state and full lengths.
    pub fn new(input: TensorView<'a>) -> ForwardInput<'a> {
        ForwardInput {
            input,
            h0: None,
            c0: None,
            lengths: None,
        }
    }

    /// With an initial hidden state.
    pub fn with_h0(mut self, h0: TensorView<'a>) -> Self {
        self.h0 = Some(h0);
        self
    }

    /// With an initial cell state (LSTM).
    pub fn with_c0(mut self, c0: TensorView<'a>) -> Self {
        self.c0 = Some(c0);
        self
    }

    /// With per-element lengths.
    pub fn with_lengths(mut self, lengths: &'a [usize]) -> Self {
        self.lengths = Some(lengths);
        self
    }
}

/// What a forward pass returns, as PyTorch's module does.
#[derive(Clone, Debug, PartialEq)]
pub struct Outputs {
    /// `(L, N, D*H_out)` (`(N, L, D*H_out)` batch-first, `(L, D*H_out)` unbatched); zero past
    /// each element's length.
    pub output: Tensor,
    /// `(D*num_layers, N, H_out)`, index `layer*D + direction` (`(D*num_layers, H_out)` unbatched).
    pub h_n: Tensor,
    /// LSTM only: `(D*num_layers, N, hidden_size)`.
    pub c_n: Option<Tensor>,
}

/// Reusable scratch memory for forward passes: keep one per calling thread to avoid allocating
/// on every call. It grows to the largest shape it has served; a call that fits allocates
/// nothing inside the engine.
#[derive(Debug, Default)]
pub struct Workspace {
    order: Vec<usize>,
    lengths: Vec<usize>,
    layer_in: Vec<f32>,
    layer_out: Vec<f32>,
    arenas: [Vec<f32>; 2],
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Workspace {
        Workspace::default()
    }
}

/// Output buffers that [`Model::forward_into`] fills, reusable across calls (their capacity is
/// kept, so a steady stream of same-shaped calls allocates nothing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputBuffers {
    /// `output`, laid out as [`OutputBuffers::output_shape`] says.
    pub output: Vec<f32>,
    /// `h_n`, laid out as [`OutputBuffers::h_n_shape`] says.
    pub h_n: Vec<f32>,
    /// `c_n` (LSTM; empty otherwise), laid out as [`OutputBuffers::c_n_shape`] says.
    pub c_n: Vec<f32>,
    dims: OutputDims,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct OutputDims {
    seq_len: usize,
    batch: usize,
    batched: bool,
    batch_first: bool,
    width: usize,
    states: usize,
    h_out: usize,
    hidden: usize,
    lstm: bool,
}

impl OutputBuffers {
    /// Empty buffers.
    pub fn new() -> OutputBuffers {
        OutputBuffers::default()
    }

    /// Shape of `output`: `(L, N, D*H_out)`, `(N, L, D*H_out)` batch-first, `(L, D*H_out)`
    /// unbatched.
    pub fn output_shape(&self) -> Vec<usize> {
        let d = &self.dims;
        match (d.batched, d.batch_first) {
            (false, _) => vec![d.seq_len, d.width],
            (true, false) => vec![d.seq_len, d.batch, d.width],
            (true, true) => vec![d.batch, d.seq_len, d.width],
        }
    }

    fn state_shape(&self, w: usize) -> Vec<usize> {
        let d = &self.dims;
        if d.batched {
            vec![d.states, d.batch, w]
        } else {
            vec![d.states, w]
        }
    }

    /// Shape of `h_n`: `(D*num_layers, N, H_out)` (`(D*num_layers, H_out)` unbatched).
    pub fn h_n_shape(&self) -> Vec<usize> {
        self.state_shape(self.dims.h_out)
    }

    /// Shape of `c_n` (LSTM): `(D*num_layers, N, hidden_size)`; `None` for other modes.
    pub fn c_n_shape(&self) -> Option<Vec<usize>> {
        self.dims.lstm.then(|| self.state_shape(self.dims.hidden))
    }

    /// Moves the buffers into owned [`Outputs`].
    pub fn into_outputs(self) -> Outputs {
        let (output_shape, h_n_shape, c_n_shape) =
            (self.output_shape(), self.h_n_shape(), self.c_n_shape());
        Outputs {
            output: Tensor {
                shape: output_shape,
                data: self.output,
            },
            h_n: Tensor {
                shape: h_n_shape,
                data: self.h_n,
            },
            c_n: c_n_shape.map(|shape| Tensor {
                shape,
                data: self.c_n,
            }),
        }
    }
}

/// The validated shapes of one call.
#[derive(Debug)]
struct Plan<'w> {
    seq_len: usize,
    batch: usize,
    /// `order[i]`: the batch element in row `i` of the recurrent loop (sorted by length,
    /// longest first, stable); identity without lengths.
    order: &'w [usize],
    /// Length of each batch element (all `seq_len` without lengths).
    lengths: &'w [usize],
    /// Whether some element is shorter than `seq_len` (outputs past it must read zero).
    ragged: bool,
    /// Batch rows per chunk (the last chunk may be shorter).
    chunk_rows: usize,
    /// Whether the two directions run on two threads at once.
    parallel_directions: bool,
    /// Threads that share each step's hidden units (1: no split). Chosen for small batches of
    /// large layers, where one step streams more weights than one core's cache holds.
    split: usize,
}

/// How a call runs: see [`Model::plan_summary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanSummary {
    /// Batch chunks per direction, run in parallel.
    pub chunks: usize,
    /// Threads sharing each step's hidden units (1: not split).
    pub split: usize,
    /// Whether the two directions run at once.
    pub parallel_directions: bool,
    /// Whether the first layer's steps carry the second layer's input projection (a stack of
    /// single-row layers, see the engine's relay): the kernels give the same bits either way.
    pub relay: bool,
}

/// Smallest batch chunk worth a thread of its own.
const MIN_CHUNK_ROWS: usize = 8;

/// The most memory one forward pass may ask for, in bytes: its outputs and scratch, as
/// [`Model::call_bytes`] counts them (64 GiB, as `MAX_MODEL_FILE_BYTES`). A call that needs
/// more is refused with [`Error::InvalidInput`] before anything is allocated.
///
/// The need grows as `L · N` times the model's widths, so a modest input (a 64 MiB file of
/// shape `(2^24, 1, 1)`) against a wide model can ask for terabytes. Why 64 GiB: it is more
/// than a typical inference host can give one call, and far beyond what any call that finishes
/// in reasonable time needs: a one-layer bidirectional LSTM with input and hidden size 4096
/// reaches it at about 3·10^5 steps × rows, some half an hour of arithmetic at 100 GFLOP/s. A
/// longer sequence is better fed in chunks to a [`crate::Session`], whose memory does not grow
/// with `L`. Under the limit, an allocation the machine cannot satisfy is an error too, not an
/// abort (though an operating system that overcommits memory may still end the process when
/// the pages are first touched).
pub const MAX_CALL_BYTES: u64 = 64 << 30;

fn shape_err(what: &str, found: &[usize], expected: &[usize]) -> Error {
    Error::InvalidInput(format!(
        "{what} has shape {}, expected {}",
        Shape(found),
        Shape(expected)
    ))
}

/// A `(L, N, width)` sequence tensor, seq-major or batch-first.
#[derive(Clone, Copy)]
struct SeqLayout {
    seq_len: usize,
    batch: usize,
    width: usize,
    batch_first: bool,
}

impl SeqLayout {
    /// Offset of the `width` elements of step `t`, batch element `b`.
    fn at(&self, t: usize, b: usize) -> usize {
        let row = if self.batch_first {
            b * self.seq_len + t
        } else {
            t * self.batch + b
        };
        row * self.width
    }
}

/// The shape of one call, checked against the model: `(L, N, batched)`.
struct CallShape {
    seq_len: usize,
    batch: usize,
    batched: bool,
}

impl Model {
    /// Runs the model on `input` with a fresh workspace. See [`Model::forward_with`].
    pub fn forward(&self, input: &ForwardInput<'_>) -> Result<Outputs> {
        self.forward_with(input, &mut Workspace::new())
    }

    /// Runs the model on `input`, with scratch memory from `ws`, on the current rayon pool.
    ///
    /// Errors name the tensor and the expected and found shapes.
    ///
    /// ```
    /// use recur::{Config, ForwardInput, Mode, Model, StateDict, Tensor};
    /// let config = Config::new(Mode::Gru, 2, 3);
    /// let mut sd = StateDict::new();
    /// for (name, shape) in config.param_shapes(0, 0) {
    ///     let n = shape.iter().product();
    ///     sd.insert(name, Tensor::new(shape, vec![0.1; n]).unwrap());
    /// }
    /// let model = Model::from_state_dict(config, &sd).unwrap();
    /// let x = Tensor::new(vec![4, 1, 2], vec![0.5; 8]).unwrap(); // (L, N, I)
    /// let out = model.forward(&ForwardInput::new(x.view())).unwrap();
    /// assert_eq!(out.output.shape, vec![4, 1, 3]);
    /// assert_eq!(out.h_n.shape, vec![1, 1, 3]);
    /// ```
    pub fn forward_with(&self, fi: &ForwardInput<'_>, ws: &mut Workspace) -> Result<Outputs> {
        let mut out = OutputBuffers::new();
        self.forward_into(fi, ws, &mut out)?;
        Ok(out.into_outputs())
    }

    /// Runs the model on `input` into reusable output buffers: with a workspace and buffers that
    /// have served the same shape before, the call allocates nothing when the batch fits one
    /// chunk (the serving path; larger batches hand chunks to rayon).
    pub fn forward_into(
        &self,
        fi: &ForwardInput<'_>,
        ws: &mut Workspace,
        out: &mut OutputBuffers,
    ) -> Result<()> {
        let shape = self.check(fi)?;
        let cfg = self.config();
        let (l, n) = (shape.seq_len, shape.batch);
        let (d_count, h_out, h) = (cfg.directions(), cfg.output_hidden(), cfg.hidden_size);
        let lstm = cfg.mode == Mode::Lstm;
        let width = d_count * h_out;
        let states = d_count * cfg.num_layers;
        out.dims = OutputDims {
            seq_len: l,
            batch: n,
            batched: shape.batched,
            batch_first: cfg.batch_first && shape.batched,
            width,
            states,
            h_out,
            hidden: h,
            lstm,
        };

        let Workspace {
            order,
            lengths,
            layer_in,
            layer_out,
            arenas,
        } = ws;
        let plan = self.plan(fi, &shape, order, lengths);
        // The call's need is within MAX_CALL_BYTES (checked above); an allocation the machine
        // cannot satisfy still gets an error rather than an abort.
        let oom = |_| self.out_of_memory(fi.input.shape, &shape);
        refill(&mut out.h_n, states * n * h_out, false).map_err(oom)?;
        refill(&mut out.c_n, if lstm { states * n * h } else { 0 }, false).map_err(oom)?;
        self.grow_arenas(arenas, l, n).map_err(oom)?;
        // A stack of single-row layers relays its input projections through `arenas[1]`
        // (unused by one direction): see `Relay`.
        let relays = self.relays(&plan);
        if relays {
            let need = self.relay_floats(l as u64, n as u64).unwrap_or(u64::MAX) as usize;
            if arenas[1].len() < need {
                refill(&mut arenas[1], need, false).map_err(oom)?;
            }
        }
        // Rows of the next layer's `xp` that the relay holds already.
        let mut ready = 0;
        let input_layout = SeqLayout {
            seq_len: l,
            batch: n,
            width: cfg.input_size,
            batch_first: out.dims.batch_first,
        };
        for layer in 0..cfg.num_layers {
            let last = layer + 1 == cfg.num_layers;
            let (x, x_layout) = if layer == 0 {
                (fi.input.data, input_layout)
            } else {
                let seq = SeqLayout {
                    width,
                    batch_first: false,
                    ..input_layout
                };
                (&layer_in[..], seq)
            };
            let run = |d: usize, arena: &mut Vec<f32>, relay: Option<Relay<'_>>| {
                let idx = layer * d_count + d;
                let h0 = fi
                    .h0
                    .map(|t| &t.data[idx * n * h_out..(idx + 1) * n * h_out]);
                let c0 = fi.c0.map(|t| &t.data[idx * n * h..(idx + 1) * n * h]);
                let w = &self.layers[layer][d];
                // Layer 0 reads the caller's input, which may hold denormals (`run_chunk`
                // flushes them); later layers read the kernels' outputs, flushed already.
                let x = (x, x_layout, layer == 0);
                let state0 = (h0, c0);
                run_direction(self.kernels, w, &plan, d == 1, x, state0, arena, relay)
            };
            let [a0, a1] = arenas;
            if d_count == 2 && plan.parallel_directions {
                rayon::join(|| run(0, a0, None), || run(1, a1, None));
            } else if relays {
                let next = (!last).then(|| &self.layers[layer + 1][0]);
                let buf = &mut a1[..];
                ready = run(0, a0, Some(Relay { buf, ready, next }));
            } else {
                run(0, a0, None);
                if d_count == 2 {
                    run(1, a1, None);
                }
            }
            // Scatter each direction's rows to PyTorch's layout; collect h_n and c_n.
            let (dest, dest_layout) = if last {
                (
                    &mut out.output,
                    SeqLayout {
                        width,
                        ..input_layout
                    },
                )
            } else {
                (
                    &mut *layer_out,
                    SeqLayout {
                        width,
                        batch_first: false,
                        ..input_layout
                    },
                )
            };
            let sizes = Sizes::new(&self.layers[layer][0], l, x_layout.width);
            let arenas = [&a0[..], &a1[..]];
            // Full sequences in seq-major order: the rows are appended in the order they are
            // laid out, each written once (a buffer zeroed first, then overwritten, would be
            // written twice, the first time page by page through the kernel's zeroing).
            let in_order = !plan.ragged && !dest_layout.batch_first;
            if in_order {
                dest.clear();
                dest.try_reserve_exact(l * n * width).map_err(oom)?;
                append_outputs(&plan, &sizes, &arenas[..d_count], dest);
            } else {
                refill(dest, l * n * width, plan.ragged).map_err(oom)?;
            }
            for (d, arena) in arenas.into_iter().take(d_count).enumerate() {
                let idx = layer * d_count + d;
                if !in_order {
                    scatter_outputs(&plan, d == 1, &sizes, arena, d * h_out, dest, dest_layout);
                }
                let h_n = &mut out.h_n[idx * n * h_out..(idx + 1) * n * h_out];
                let c_n = if lstm {
                    &mut out.c_n[idx * n * h..(idx + 1) * n * h]
                } else {
                    &mut []
                };
                gather_states(&plan, &sizes, arena, h_n, c_n);
            }
            if !last {
                std::mem::swap(layer_in, layer_out);
            }
        }
        Ok(())
    }

    /// How a call with these inputs would run (batch chunks, threads per step), without
    /// running it: for `recur bench` reports and for tests of the cost model.
    pub fn plan_summary(&self, fi: &ForwardInput<'_>) -> Result<PlanSummary> {
        let shape = self.check(fi)?;
        let (mut order, mut lengths) = (Vec::new(), Vec::new());
        let plan = self.plan(fi, &shape, &mut order, &mut lengths);
        Ok(PlanSummary {
            chunks: plan.batch.div_ceil(plan.chunk_rows),
            split: plan.split,
            parallel_directions: plan.parallel_directions,
            relay: self.relays(&plan) && {
                let (first, second) = (&self.layers[0][0], &self.layers[1][0]);
                let n_rows = plan.lengths.first().copied().unwrap_or(0);
                carries(self.kernels, first, second, &plan, 1, n_rows)
            },
        })
    }

    /// The bytes a forward pass on an input of `input_shape` allocates for its outputs and
    /// scratch (with a fresh [`Workspace`] and fresh [`OutputBuffers`]), saturating at
    /// `u64::MAX`: about `4 · L · N · (D · (I + G·H + H_out) + (1 + min(layers - 1, 2)) · D·H_out)`
    /// for `L` steps of `N` sequences, `I` the widest layer input and `G` the gates. A call
    /// over [`MAX_CALL_BYTES`] is refused. Errors as [`Model::forward`] does if the shape does
    /// not fit the model; the input's data is not needed.
    pub fn call_bytes(&self, input_shape: &[usize]) -> Result<u64> {
        self.call_shape(input_shape)
            .map(|shape| self.need_bytes(&shape).unwrap_or(u64::MAX))
    }

    /// Validates the call's shapes against the model, and its memory need against
    /// [`MAX_CALL_BYTES`].
    fn check(&self, fi: &ForwardInput<'_>) -> Result<CallShape> {
        let cfg = self.config();
        let shape = fi.input.shape;
        let numel = crate::tensor::checked_numel(shape);
        if numel != Some(fi.input.data.len()) {
            return Err(Error::InvalidInput(format!(
                "input has shape {} but {} elements",
                Shape(shape),
                fi.input.data.len()
            )));
        }
        let call = self.call_shape(shape)?;
        let (l, n, batched) = (call.seq_len, call.batch, call.batched);
        let states = cfg.directions() * cfg.num_layers;
        let state_ok = |t: &TensorView<'_>, w: usize| {
            let ok = if batched {
                t.shape == [states, n, w]
            } else {
                t.shape == [states, w]
            };
            ok && t.data.len() == states * n * w
        };
        let state_want = |w: usize| {
            if batched {
                vec![states, n, w]
            } else {
                vec![states, w]
            }
        };
        if let Some(h0) = fi.h0 {
            if !state_ok(&h0, cfg.output_hidden()) {
                return Err(shape_err("h0", h0.shape, &state_want(cfg.output_hidden())));
            }
        }
        match (cfg.mode, fi.h0.is_some(), fi.c0) {
            (Mode::Lstm, true, None) => {
                return Err(Error::InvalidInput(
                    "LSTM was given h0 without c0: pass both initial states or neither".into(),
                ))
            }
            (Mode::Lstm, false, Some(_)) => {
                return Err(Error::InvalidInput(
                    "LSTM was given c0 without h0: pass both initial states or neither".into(),
                ))
            }
            (Mode::Lstm, true, Some(c0)) if !state_ok(&c0, cfg.hidden_size) => {
                return Err(shape_err("c0", c0.shape, &state_want(cfg.hidden_size)));
            }
            (Mode::Lstm, true, Some(_)) => {}
            (mode, _, Some(_)) => {
                return Err(Error::InvalidInput(format!(
                    "c0 was given, but {mode} has no cell state (only LSTM takes c0)"
                )))
            }
            _ => {}
        }
        if let Some(lens) = fi.lengths {
            if !batched {
                return Err(Error::InvalidInput(
                    "lengths were given for unbatched (2-D) input; lengths need a batch dimension"
                        .into(),
                ));
            }
            if lens.len() != n {
                return Err(Error::InvalidInput(format!(
                    "lengths has {} elements, expected one per batch element ({n})",
                    lens.len()
                )));
            }
            if let Some((b, &len)) = lens.iter().enumerate().find(|(_, &v)| v == 0 || v > l) {
                return Err(Error::InvalidInput(format!(
                    "lengths[{b}] = {len} is outside 1..={l} (the input's sequence length)"
                )));
            }
        }
        // Last, so that a malformed call is told what is malformed.
        match self.need_bytes(&call) {
            Some(need) if need <= MAX_CALL_BYTES => {}
            need => {
                let need = need.map_or("more than 2^64 bytes".into(), |b| {
                    format!("{b} bytes ({:.1} GiB)", b as f64 / (1u64 << 30) as f64)
                });
                return Err(Error::InvalidInput(format!(
                    "input has shape {}: a forward pass of {cfg} on it needs {need} of outputs \
                     and scratch, over the limit MAX_CALL_BYTES = {MAX_CALL_BYTES} bytes ({} GiB); \
                     pass a shorter sequence or a smaller batch, or feed it to a Session in chunks",
                    Shape(shape),
                    MAX_CALL_BYTES >> 30
                )));
            }
        }
        Ok(call)
    }

    /// The bytes a call of `shape` allocates with a fresh workspace and output buffers (what
    /// [`Model::forward_into`] sizes with [`refill`] and [`Model::grow_arenas`], plus the loop
    /// order), or `None` if the count overflows.
    fn need_bytes(&self, shape: &CallShape) -> Option<u64> {
        let cfg = self.config();
        let (l, n) = (shape.seq_len as u64, shape.batch as u64);
        let d_count = cfg.directions() as u64;
        let (h_out, h) = (cfg.output_hidden() as u64, cfg.hidden_size as u64);
        let states = d_count * cfg.num_layers as u64;
        let cell = if cfg.mode == Mode::Lstm { h } else { 0 };
        // `output`, plus the layer buffers between layers (two at most: they swap).
        let seq = l.checked_mul(n)?.checked_mul(d_count * h_out)?;
        let layer_buffers = (cfg.num_layers as u64 - 1).min(2);
        let mut floats = seq.checked_mul(1 + layer_buffers)?;
        floats = floats.checked_add(states * n * (h_out + cell))?; // h_n, c_n
        for d in 0..cfg.directions() {
            floats = floats.checked_add(n.checked_mul(self.arena_row_floats(d, l)?)?)?;
        }
        floats = floats.checked_add(self.relay_floats(l, n)?)?;
        // The loop order and lengths: two usizes per batch element.
        floats
            .checked_mul(4)?
            .checked_add(n * 2 * std::mem::size_of::<usize>() as u64)
    }

    /// Floats per batch row of direction `d`'s arena over `l` steps: the widest layer's, as
    /// [`Sizes::per_row`] counts them; `None` on overflow.
    fn arena_row_floats(&self, d: usize, l: u64) -> Option<u64> {
        let cfg = self.config();
        let width = cfg.directions() * cfg.output_hidden();
        self.layers
            .iter()
            .enumerate()
            .try_fold(0u64, |most, (layer, dirs)| {
                let in_size = if layer == 0 { cfg.input_size } else { width };
                let sz = Sizes::new(&dirs[d], 1, in_size);
                let per_step = (sz.x + sz.xp + sz.y) as u64;
                let fixed = (sz.per_row() - (sz.x + sz.xp + sz.y)) as u64;
                Some(most.max(l.checked_mul(per_step)?.checked_add(fixed)?))
            })
    }

    /// Floats of the relay of a call of `l` steps of `n` rows (see [`Relay`]): where one may
    /// run (one direction, one row, two layers or more), the widest `xp` of the layers after
    /// the first over `l` steps and a tile of [`RIDER_ROWS`] input rows; else 0. `None` on
    /// overflow.
    fn relay_floats(&self, l: u64, n: u64) -> Option<u64> {
        if !self.relays_batch(n) {
            return Some(0);
        }
        let cfg = self.config();
        let gh = self.layers[1..].iter().map(|d| d[0].w_ih.rows()).max();
        // Whole blocks of columns (`Carrier` stores them block-major).
        let gh = gh.unwrap_or(0).div_ceil(BLOCK) * BLOCK;
        let tile = (RIDER_ROWS * cfg.output_hidden()) as u64;
        l.checked_mul(gh as u64)?.checked_add(tile)
    }

    /// Whether a call of `n` rows relays its layers' input projections (see [`Relay`]): one
    /// direction, one row, two layers or more.
    fn relays_batch(&self, n: u64) -> bool {
        let cfg = self.config();
        cfg.directions() == 1 && cfg.num_layers >= 2 && n == 1
    }

    /// [`Model::relays_batch`] of the call `plan` describes.
    fn relays(&self, plan: &Plan<'_>) -> bool {
        self.relays_batch(plan.batch as u64)
    }

    /// Grows each direction's arena to its widest layer's need for `l` steps of `n` rows (a
    /// workspace that has served this shape allocates nothing).
    fn grow_arenas(
        &self,
        arenas: &mut [Vec<f32>; 2],
        l: usize,
        n: usize,
    ) -> Result<(), TryReserveError> {
        for (d, arena) in arenas
            .iter_mut()
            .enumerate()
            .take(self.config().directions())
        {
            // Within MAX_CALL_BYTES (checked in `check`), so the count fits a usize.
            let need = self
                .arena_row_floats(d, l as u64)
                .map_or(usize::MAX, |f| (f as usize).saturating_mul(n));
            if arena.len() < need {
                refill(arena, need, false)?;
            }
        }
        Ok(())
    }

    /// The error for an allocation that failed under [`MAX_CALL_BYTES`].
    fn out_of_memory(&self, input_shape: &[usize], shape: &CallShape) -> Error {
        let need = self.need_bytes(shape).unwrap_or(u64::MAX);
        Error::InvalidInput(format!(
            "input has shape {}: a forward pass of {} on it needs {need} bytes ({:.1} GiB) of \
             outputs and scratch, and allocating them failed (out of memory)",
            Shape(input_shape),
            self.config(),
            need as f64 / (1u64 << 30) as f64
        ))
    }

    /// The call's shape, `(L, N, batched)`, checked against the model.
    fn call_shape(&self, shape: &[usize]) -> Result<CallShape> {
        let cfg = self.config();
        let (l, n, i, batched) = match *shape {
            [a, b, i] if cfg.batch_first => (b, a, i, true),
            [l, n, i] => (l, n, i, true),
            [l, i] => (l, 1, i, false),
            _ => {
                let layout = if cfg.batch_first {
                    "(N, L, I)"
                } else {
                    "(L, N, I)"
                };
                return Err(Error::InvalidInput(format!(
                    "input has shape {}, expected 3-D {layout} or 2-D (L, I) unbatched, with I = input_size = {}",
                    Shape(shape),
                    cfg.input_size
                )));
            }
        };
        if i != cfg.input_size {
            return Err(Error::InvalidInput(format!(
                "input has shape {}: its last dimension must be input_size = {}, found {i}",
                Shape(shape),
                cfg.input_size
            )));
        }
        if l == 0 || n == 0 {
            return Err(Error::InvalidInput(format!(
                "input has shape {}: the sequence length and batch size must be at least 1",
                Shape(shape)
            )));
        }
        Ok(CallShape {
            seq_len: l,
            batch: n,
            batched,
        })
    }

    /// The execution plan of a checked call: loop order, chunking, threads.
    fn plan<'w>(
        &self,
        fi: &ForwardInput<'_>,
        shape: &CallShape,
        order: &'w mut Vec<usize>,
        lengths: &'w mut Vec<usize>,
    ) -> Plan<'w> {
        let (l, n) = (shape.seq_len, shape.batch);
        lengths.clear();
        match fi.lengths {
            Some(lens) => lengths.extend_from_slice(lens),
            None => lengths.resize(n, l),
        }
        let ragged = lengths.iter().any(|&v| v < l);
        order.clear();
        order.extend(0..n);
        if ragged {
            // Stable, so equal lengths keep batch order; sort_by_key on a slice of indices
            // allocates nothing.
            order.sort_by_key(|&b| std::cmp::Reverse(lengths[b]));
        }
        let threads = rayon::current_num_threads().max(1);
        let d_count = self.config().directions();
        let parallel_directions = d_count == 2 && threads >= 2;
        let per_dir = if parallel_directions {
            (threads / 2).max(1)
        } else {
            threads
        };
        let chunks = per_dir.min(n / MIN_CHUNK_ROWS).max(1);
        let split = if chunks == 1 && per_dir >= 2 {
            self.layers
                .iter()
                .flatten()
                .map(|w| split_threads(w, l, per_dir))
                .min()
                .unwrap_or(1)
        } else {
            1
        };
        Plan {
            seq_len: l,
            batch: n,
            order,
            lengths,
            ragged,
            chunk_rows: n.div_ceil(chunks),
            parallel_directions,
            split,
        }
    }
}

/// Per-step weight bytes below which splitting a step across threads costs more in
/// synchronisation (one or two barriers per step) than it saves.
const SPLIT_MIN_STEP_BYTES: usize = 256 << 10;
/// Weight bytes a call must stream before the split's thread start-up is worth it.
const SPLIT_MIN_CALL_BYTES: usize = 16 << 20;

/// How many threads should share each step of `w` over `steps` steps, with `threads` available.
fn split_threads(w: &DirectionWeights, steps: usize, threads: usize) -> usize {
    let bytes = w.w_hh.bytes() + w.w_hr.as_ref().map_or(0, Projection::bytes);
    if bytes >= SPLIT_MIN_STEP_BYTES && bytes.saturating_mul(steps) >= SPLIT_MIN_CALL_BYTES {
        // A projected LSTM's threads share whole groups of units.
        let shares = w.w_hr.as_ref().map_or(w.w_hh.blocks(), Projection::groups);
        threads.min(shares).max(1)
    } else {
        1
    }
}

/// Makes `v` hold exactly `len` elements, zeroing them only when asked (a buffer that will be
/// overwritten whole needs no zeroing). Grows the capacity to exactly `len` if it must, and
/// reports an allocation failure instead of aborting; a buffer already large enough allocates
/// nothing.
fn refill(v: &mut Vec<f32>, len: usize, zero: bool) -> Result<(), TryReserveError> {
    if zero {
        v.clear();
    }
    v.try_reserve_exact(len.saturating_sub(v.len()))?;
    v.resize(len, 0.0);
    Ok(())
}

/// The time index that loop step `s` reads for batch element `b`.
fn time_of(plan: &Plan<'_>, reverse: bool, s: usize, b: usize) -> usize {
    if reverse {
        plan.lengths[b] - 1 - s
    } else {
        s
    }
}

/// Per-row sizes of the pieces of a direction's scratch arena.
struct Sizes {
    x: usize,
    xp: usize,
    y: usize,
    state: usize,
    /// An LSTM with projection: the cell output before it, group-major (see `regroup`).
    h_full: usize,
    c: usize,
    h_out: usize,
    /// An LSTM with projection: each group's partial projection, `(groups, P)`.
    parts: usize,
}

impl Sizes {
    fn new(w: &DirectionWeights, l: usize, in_size: usize) -> Sizes {
        let (g, h, k) = (w.w_hh.gates(), w.w_hh.rows(), w.w_hh.cols());
        let h_out = w.w_hr.as_ref().map_or(h, |p| p.rows());
        Sizes {
            x: l * in_size,
            xp: l * g * h,
            y: l * h_out,
            state: k,
            h_full: if w.w_hr.is_some() { h } else { 0 },
            c: if g == 4 { h } else { 0 },
            h_out,
            parts: w.w_hr.as_ref().map_or(0, |p| p.groups() * p.rows()),
        }
    }

    fn per_row(&self) -> usize {
        self.x + self.xp + self.y + self.state + self.h_full + self.c + self.h_out + self.parts
    }
}

/// A finished chunk's output rows `y`, final `c` and `h_n`, in loop order.
type ChunkResults<'a> = (&'a [f32], &'a [f32], &'a [f32]);

/// One batch chunk's share of a direction's scratch arena.
struct Chunk<'s> {
    row0: usize,
    rows: usize,
    x: &'s mut [f32],
    xp: &'s mut [f32],
    y: &'s mut [f32],
    h_init: &'s mut [f32],
    h_full: &'s mut [f32],
    c: &'s mut [f32],
    h_n: &'s mut [f32],
    parts: &'s mut [f32],
}

impl<'s> Chunk<'s> {
    /// Carves a chunk of `rows` rows out of its arena region.
    fn carve(region: &'s mut [f32], row0: usize, rows: usize, sz: &Sizes) -> Chunk<'s> {
        let (x, rest) = region.split_at_mut(rows * sz.x);
        let (xp, rest) = rest.split_at_mut(rows * sz.xp);
        let (y, rest) = rest.split_at_mut(rows * sz.y);
        let (h_init, rest) = rest.split_at_mut(rows * sz.state);
        let (h_full, rest) = rest.split_at_mut(rows * sz.h_full);
        let (c, rest) = rest.split_at_mut(rows * sz.c);
        let (h_n, rest) = rest.split_at_mut(rows * sz.h_out);
        let parts = &mut rest[..rows * sz.parts];
        Chunk {
            row0,
            rows,
            x,
            xp,
            y,
            h_init,
            h_full,
            c,
            h_n,
            parts,
        }
    }

    /// The read-only view of a finished chunk: `(y, c, h_n)`.
    fn results(region: &'s [f32], rows: usize, sz: &Sizes) -> ChunkResults<'s> {
        let y0 = rows * (sz.x + sz.xp);
        let c0 = y0 + rows * (sz.y + sz.state + sz.h_full);
        let hn0 = c0 + rows * sz.c;
        (
            &region[y0..y0 + rows * sz.y],
            &region[c0..c0 + rows * sz.c],
            &region[hn0..hn0 + rows * sz.h_out],
        )
    }
}

/// A layer's input: its data, their layout, and whether they may hold denormals (the caller's
/// input, which `run_chunk` flushes on its way into the projection).
type LayerInput<'a> = (&'a [f32], SeqLayout, bool);

/// Runs one layer in one direction over the whole batch, chunk by chunk (chunks in parallel);
/// leaves each chunk's output rows, final `c` and `h_n` in its region of `arena`, in loop order.
/// With a `relay` (one chunk), returns the rows of the next layer's `xp` its steps projected
/// into it; else 0.
#[allow(clippy::too_many_arguments)]
fn run_direction(
    kernels: &Kernels,
    w: &DirectionWeights,
    plan: &Plan<'_>,
    reverse: bool,
    x: LayerInput<'_>,
    state0: (Option<&[f32]>, Option<&[f32]>),
    arena: &mut [f32],
    relay: Option<Relay<'_>>,
) -> usize {
    let sz = Sizes::new(w, plan.seq_len, x.1.width);
    let per_row = sz.per_row();
    let need = plan.batch * per_row;
    // Sized for every layer by `Model::grow_arenas` before the first.
    let arena = &mut arena[..need];
    if relay.is_some() {
        assert!(plan.chunk_rows >= plan.batch, "a relay runs one chunk");
        let mut ch = Chunk::carve(arena, 0, plan.batch, &sz);
        return run_chunk(kernels, w, plan, reverse, x, state0, &mut ch, relay);
    }
    let run = |ci: usize, region: &mut [f32]| {
        let rows = region.len() / per_row;
        let mut ch = Chunk::carve(region, ci * plan.chunk_rows, rows, &sz);
        run_chunk(kernels, w, plan, reverse, x, state0, &mut ch, None);
    };
    if plan.chunk_rows >= plan.batch {
        run(0, arena);
    } else {
        arena
            .par_chunks_mut(plan.chunk_rows * per_row)
            .enumerate()
            .for_each(|(ci, region)| run(ci, region));
    }
    0
}

/// The recurrent loop of one batch chunk: gather, project, step, in loop order. With a
/// `relay`, the rows of `xp` it holds are taken from it instead of projected, and the steps
/// carry the next layer's projection into it where they can (see [`Relay`]); returns the rows
/// of it they did (0 without).
#[allow(clippy::too_many_arguments)]
fn run_chunk(
    kernels: &Kernels,
    w: &DirectionWeights,
    plan: &Plan<'_>,
    reverse: bool,
    (x, x_layout, raw): LayerInput<'_>,
    (h0, c0): (Option<&[f32]>, Option<&[f32]>),
    ch: &mut Chunk<'_>,
    relay: Option<Relay<'_>>,
) -> usize {
    let rows = ch.rows;
    let (g, h, k) = (w.w_hh.gates(), w.w_hh.rows(), w.w_hh.cols());
    let in_size = x_layout.width;
    let order = &plan.order[ch.row0..ch.row0 + rows];

    // The projection's inputs, in loop order: xp = x W_ihᵀ + bias of every valid (step, row).
    //
    // Denormal inputs would cost the projection a microcode assist per product on Intel cores
    // (~200x slower, see `recur_kernels::denormal`), so a raw input is flushed to ±0 on its
    // way in, scanned where its rows are hot: gathered rows step by step as they are copied;
    // an input projected where it lies, group by group just before each group's projection
    // (`run_steps`), or whole here when it is projected at once, flushed into the chunk's `x`.
    let in_place = !plan.ragged && rows == plan.batch && !x_layout.batch_first;
    let (src, n_rows) = if in_place {
        // The whole batch, every sequence full, seq-major: the input already holds each loop
        // step's rows together (step s, row b at s * N + b forward; at (L-1-s) * N + b
        // reverse, see `SrcRows`), so it is projected where it lies.
        let n_rows = plan.seq_len * rows;
        (&x[..n_rows * in_size], n_rows)
    } else {
        // Gathered in loop order, compacted: step s's rows still running (a prefix of the
        // rows, which are sorted by length) follow step s-1's, row r reading element order[r]
        // at its own time index (reversed within its length for the reverse direction).
        // Steps past an element's length take no row, so the projection does only valid work.
        let mut n_rows = 0;
        for StepRows { s, active, at } in step_rows(plan, order) {
            for (r, &b) in order[..active].iter().enumerate() {
                let src = x_layout.at(time_of(plan, reverse, s, b), b);
                ch.x[(at + r) * in_size..][..in_size].copy_from_slice(&x[src..src + in_size]);
            }
            let gathered = &mut ch.x[at * in_size..(at + active) * in_size];
            if raw && (kernels.has_denormals)(gathered) {
                gathered.iter_mut().for_each(|v| *v = flush(*v));
            }
            n_rows = at + active;
        }
        (&std::mem::take(&mut ch.x)[..n_rows * in_size], n_rows)
    };
    let src_rows = SrcRows((in_place && reverse).then_some(n_rows));
    // `W_ih` by gates where each step's kernel projects its own inputs (`projects_in_step`);
    // otherwise the steps of inputs projected at a time, 0 for all at once.
    let in_step = w
        .w_ih_gates
        .as_ref()
        .filter(|_| projects_in_step(w, plan.split, rows));
    // Rows of `xp` the previous layer's steps projected (see `Relay`).
    let ready = relay
        .as_ref()
        .filter(|_| in_step.is_none() && src_rows.0.is_none())
        .map_or(0, |r| r.ready.min(n_rows));
    let ahead = match in_step {
        Some(_) => 0,
        None if ready > 0 => 0,
        None => steps_ahead(&w.w_ih, plan.split, rows, n_rows, l2_bytes()),
    };
    // Whether the projection's inputs still need their scan for denormals.
    let scan = raw && in_place;
    let gh = g * h;
    if in_step.is_none() && ahead == 0 {
        let src = scanned(kernels, src, scan, ch.x);
        if let Some(r) = &relay {
            // Block-major in the relay (see `Carrier`): each block's columns of every row.
            let blocks = r.buf.chunks_exact(n_rows * BLOCK).take(gh.div_ceil(BLOCK));
            for (b, cols) in blocks.enumerate() {
                let c = b * BLOCK..gh.min((b + 1) * BLOCK);
                let rows = ch.xp.chunks_exact_mut(gh).zip(cols.chunks_exact(BLOCK));
                for (xp_row, col) in rows.take(ready) {
                    xp_row[c.clone()].copy_from_slice(&col[..c.len()]);
                }
            }
        }
        let (rest, xp) = (&src[ready * in_size..], &mut ch.xp[ready * gh..]);
        project_inputs(kernels, w, rest, xp, n_rows - ready, plan.split);
    }
    // The next layer's projection carried by these steps, where they can (see `Relay`).
    let carry = relay.and_then(|r| {
        let next = r.next?;
        let ok = carries(kernels, w, next, plan, rows, n_rows)
            && in_step.is_none()
            && src_rows.0.is_none();
        ok.then(|| Carrier::whole(next, r.buf, n_rows))
    });

    // Initial state.
    for (r, &b) in order.iter().enumerate() {
        let hr = &mut ch.h_init[r * k..(r + 1) * k];
        // Denormals flushed, as the kernels flush every state they store.
        match h0 {
            Some(h0) => flush_into(hr, &h0[b * k..(b + 1) * k]),
            None => hr.fill(0.0),
        }
        if g == 4 {
            let cr = &mut ch.c[r * h..(r + 1) * h];
            match c0 {
                Some(c0) => flush_into(cr, &c0[b * h..(b + 1) * h]),
                None => cr.fill(0.0),
            }
        }
    }

    // An LSTM with projection keeps `c` by groups of units during the loop (see `regroup`).
    let grouped = w.w_hr.as_ref().filter(|p| p.groups() > 1);
    if let Some(proj) = grouped {
        regroup(proj, rows, ch.c, ch.h_full, true);
        ch.c.copy_from_slice(ch.h_full);
    }
    let relayed = if plan.split > 1 {
        run_steps_split(kernels, w, plan, ch, src_rows, plan.split, carry)
    } else {
        let inputs = (src, ahead, scan);
        run_steps(kernels, w, plan, ch, src_rows, inputs, in_step, carry)
    };
    if let Some(proj) = grouped {
        regroup(proj, rows, ch.c, ch.h_full, false);
        ch.c.copy_from_slice(ch.h_full);
    }
    relayed
}

/// A stack of layers of one row relaying their input projections: each layer's single-row
/// steps carry, a tile at a time inside their `k` loops (`recur_kernels::step::Rider`), the
/// next layer's input projection of the rows they have already produced, into `buf`; the
/// next layer takes those rows of its `xp` from there and projects only the rest (the last
/// steps' rows, which no later step of this layer could carry). A single row's step is bound
/// by the stream of its weights and leaves the FMA pipes mostly idle; the projection, FMA-bound,
/// hides partly under it (`recur bench`, lstm_stream_b1 at 1 thread: -5.5%, gru_stream_b1
/// -2.5%; docs/PERFORMANCE.md, session 27). Every element is the bits of the projection done
/// at once (the kernels' contract), so the relay changes no result.
struct Relay<'a> {
    /// The next layer's `xp` `(L, G H)` rows, then a tile of its input rows (`Carrier`).
    buf: &'a mut [f32],
    /// Rows of this layer's `xp` at the start of `buf`, from the previous layer's steps.
    ready: usize,
    /// The next layer (`None` for the last).
    next: Option<&'a DirectionWeights>,
}

/// Whether the single-row steps of `w` can carry `next`'s input projection: the tier has the
/// riding step for the cell (an LSTM without projection or a GRU), the layer runs one row
/// (on one thread, or split across threads that each carry their share of the blocks), there
/// are at least two groups of rows, and `next` would project its inputs at once (not in its
/// steps, nor in groups ahead of them).
fn carries(
    kernels: &Kernels,
    w: &DirectionWeights,
    next: &DirectionWeights,
    plan: &Plan<'_>,
    rows: usize,
    n_rows: usize,
) -> bool {
    let riding = match w.w_hh.gates() {
        4 => kernels.lstm_step_riding.is_some(),
        3 => kernels.gru_step_riding.is_some(),
        _ => false,
    };
    let h_out = w.w_hr.as_ref().map_or(w.w_hh.rows(), |p| p.rows());
    riding
        && w.w_hr.is_none()
        && rows == 1
        && n_rows >= 2 * RIDER_ROWS
        && next.w_ih.cols() == h_out
        && next.w_ih.rows() > 0
        && !projects_in_step(next, plan.split, rows)
        && steps_ahead(&next.w_ih, plan.split, rows, n_rows, l2_bytes()) == 0
}

/// The share of the next layer's projection each step of a single row carries (see
/// [`Relay`]): groups of [`RIDER_ROWS`] rows, in order, each once all of its rows exist, a
/// `1 / RIDER_ROWS` of its output blocks `cols` a step, so the groups keep pace with the rows;
/// a group starts only if the steps left can finish it. The threads of a split step each
/// carry the groups' blocks of their own share of `cols`.
struct Carrier<'a> {
    next: &'a DirectionWeights,
    /// The next layer's `xp` from block `cols.start` on, block-major: block `b`'s `BLOCK`
    /// columns of row `r` at `((b - cols.start) * steps + r) * BLOCK` (so that threads own
    /// disjoint regions of whole blocks).
    xp: &'a mut [f32],
    /// The current group's rows, `k`-major (`transpose_rider_rows`).
    x_t: &'a mut [f32],
    /// The blocks of output columns carried.
    cols: Range<usize>,
    /// Blocks a step.
    per_step: usize,
    /// The current group's first row: every row before it is done.
    row: usize,
    /// The current group's next block (`cols.start`: not started).
    block: usize,
    /// The steps of the loop.
    steps: usize,
}

impl<'a> Carrier<'a> {
    /// The carrier of the blocks `cols` of `next`'s projection over `steps` steps, into `xp`
    /// (from block `cols.start` on) with `x_t` (`RIDER_ROWS` inputs) for its tiles' rows.
    fn new(
        next: &'a DirectionWeights,
        (xp, x_t): (&'a mut [f32], &'a mut [f32]),
        cols: Range<usize>,
        steps: usize,
    ) -> Carrier<'a> {
        let k = next.w_ih.cols();
        Carrier {
            next,
            xp: &mut xp[..cols.len() * steps * BLOCK],
            x_t: &mut x_t[..RIDER_ROWS * k],
            per_step: cols.len().div_ceil(RIDER_ROWS),
            row: 0,
            block: cols.start,
            cols,
            steps,
        }
    }

    /// The carrier of all of `next`'s projection in a relay's buffer (see [`Relay::buf`]).
    fn whole(next: &'a DirectionWeights, buf: &'a mut [f32], steps: usize) -> Carrier<'a> {
        let blocks = next.w_ih.blocks();
        let bufs = buf.split_at_mut(blocks * steps * BLOCK);
        Carrier::new(next, bufs, 0..blocks, steps)
    }

    /// The tiles step `s` carries, if any; `y`: the rows of the steps before it, `(s, K)`.
    fn tiles(&mut self, s: usize, y: &[f32]) -> Option<Rider<'_>> {
        let k = self.next.w_ih.cols();
        let cols = self.cols.clone();
        if self.block == cols.start {
            let steps_needed = cols.len().div_ceil(self.per_step);
            if cols.is_empty() || self.row + RIDER_ROWS > s || s + steps_needed > self.steps {
                return None;
            }
            transpose_rider_rows(&y[self.row * k..(self.row + RIDER_ROWS) * k], k, self.x_t);
        }
        let tiles = self.block..cols.end.min(self.block + self.per_step);
        let row = self.row;
        if tiles.end == cols.end {
            (self.row, self.block) = (row + RIDER_ROWS, cols.start);
        } else {
            self.block = tiles.end;
        }
        Some(Rider {
            w_ih: &self.next.w_ih,
            bias: &self.next.bias_x,
            x: self.x_t,
            xp: &mut self.xp[((tiles.start - cols.start) * self.steps + row) * BLOCK..],
            layout: (BLOCK, self.steps * BLOCK),
            blocks: tiles,
        })
    }

    /// Rows whose projection is done: the whole groups before the current one.
    fn done(&self) -> usize {
        self.row
    }
}

/// Copies `(rows, H)` values from the row-major layout into the group-major one of `proj`'s
/// groups (`into_groups`), or back: group-major, group `g` of units `u_g..u_g + nu_g` is a
/// `(rows, nu_g)` block at `rows * u_g`, so that a step over the group reads its `c` (and
/// writes its cell output) compact, as the kernels take them, and a thread's share of whole
/// groups is one contiguous region.
fn regroup(proj: &Projection, rows: usize, src: &[f32], dst: &mut [f32], into_groups: bool) {
    let h = proj.units(0..proj.groups()).end;
    for g in 0..proj.groups() {
        let u = proj.units(g..g + 1);
        let nu = u.len();
        for r in 0..rows {
            let (gm, rm) = (rows * u.start + r * nu, r * h + u.start);
            if into_groups {
                dst[gm..gm + nu].copy_from_slice(&src[rm..rm + nu]);
            } else {
                dst[rm..rm + nu].copy_from_slice(&src[gm..gm + nu]);
            }
        }
    }
}

/// One step of an LSTM with projection over the groups `groups` of `proj`, visited in `bo`:
/// each group's cells, then its partial projection `P_g = m_g W_hr[:, group]ᵀ` into `parts`
/// (`(rows, P)` a group, from `groups.start`). `c` and the cell output `m` hold the groups'
/// units group-major (see `regroup`) from the first group's, for `rows` rows of which the
/// first `active` run; `h_prev` is `(active, P)`.
#[allow(clippy::too_many_arguments)]
fn projected_groups(
    kernels: &Kernels,
    w: &DirectionWeights,
    proj: &Projection,
    xp: Xp<'_>,
    h_prev: &[f32],
    (c, m, parts): (&mut [f32], &mut [f32], &mut [f32]),
    (rows, active): (usize, usize),
    groups: Range<usize>,
    bo: BlockOrder,
) {
    let u0 = proj.units(groups.clone()).start;
    let p = proj.rows();
    let n = groups.len();
    for i in 0..n {
        let g = groups.start
            + if bo == BlockOrder::Ascending {
                i
            } else {
                n - 1 - i
            };
        let u = proj.units(g..g + 1);
        let at = rows * (u.start - u0);
        let len = active * u.len();
        let (c_g, m_g) = (&mut c[at..at + len], &mut m[at..at + len]);
        let blocks = proj.blocks(g..g + 1);
        cell_step(kernels, w, xp, h_prev, c_g, m_g, active, blocks, bo, None);
        let (w_g, part) = (proj.group(g), (g - groups.start) * rows * p);
        let out = &mut parts[part..part + active * p];
        (kernels.project_blocks)(w_g, m_g, out, active, 0..w_g.blocks(), bo);
    }
}

/// Where a step's cells take their input projection from: `xp` projected ahead, or the step's
/// input rows with `W_ih` by gates and its biases, projected inside the step kernel.
#[derive(Clone, Copy)]
enum Xp<'a> {
    /// `xp` of the step's rows, `(rows, G H)`.
    At(&'a [f32]),
    /// `(W_ih by gates, the projection's biases, the step's input rows)`, as
    /// `lstm_input_step_blocks` and `gru_input_step_blocks` take them.
    InStep((&'a PackedMatrix, &'a [f32], &'a [f32])),
}

/// `h = P_0 + P_1 + ...` of `len` values, the partials `stride` apart, added in group order.
fn sum_groups(parts: &[f32], stride: usize, groups: usize, h: &mut [f32]) {
    let len = h.len();
    h.copy_from_slice(&parts[..len]);
    for g in 1..groups {
        for (a, b) in h.iter_mut().zip(&parts[g * stride..g * stride + len]) {
            *a += *b;
        }
    }
}

/// Where the projection's rows of loop rows lie in its inputs (and so in `xp`): in loop order,
/// or, for the reverse direction projecting a whole batch where it lies (`Some(n)`, the rows of
/// all steps), step by step mirrored: step `s` reads time `L-1-s`, whose `N` rows are
/// `(L-1-s)*N..(L-s)*N`, so the loop rows `a0..a1` of whole steps are the rows `n-a1..n-a0`
/// (their steps in reverse order).
#[derive(Clone, Copy)]
struct SrcRows(Option<usize>);

impl SrcRows {
    /// The input rows of the loop rows `a` (whole steps).
    fn of(self, a: Range<usize>) -> Range<usize> {
        match self.0 {
            None => a,
            Some(n) => n - a.end..n - a.start,
        }
    }
}

/// How many steps' input projections the time loop computes at a time, just before the first
/// of them, or `0` to project every step at once before the loop.
///
/// A large batch's `xp` of all steps is far beyond L2 (lstm_b64: 32 MiB): projected at once,
/// it is written out to L3 and read back by the steps. Projected a few steps ahead, it is
/// still in L2 when the steps read it; that pays where `W_ih` is small enough to be read
/// again for every group. The bounds are multiples of the core's L2 (`l2`, bytes; see
/// [`l2_bytes`]): an `xp` beyond twice L2, a `W_ih` of at most L2, groups of about L2's
/// worth of `xp` (at least one step). Measured, the kernels alone: on the Xeon of
/// docs/PERFORMANCE.md (2 MiB L2) I256 H256 B64 T128 64.8 -> 62.7-62.9 ms for groups of 1 to
/// 8 steps, and I512 H1024 B256 T32 (an 8 MiB `W_ih`) 718 -> 732-738 ms, so not there; on the
/// Zen 3 (512 KiB L2) lstm_b64's 1 MiB `W_ih` read once a step lost (`recur bench` min 129.4
/// -> 128.6 ms, medians 1-10% apart) and is left out by the same rule. On the Ice Lake-SP
/// Xeon (1.25 MiB L2), lstm_b64 pinned to one core (`recur bench`, 3 alternated pairs):
/// projected at once 72.4-73.8 ms, groups of 5 steps (1.25 MiB) 69.9-70.7; groups of 1, 2,
/// 4 and 8 steps 71.3, 70.0, 69.6, 70.1 (so the bound on `W_ih`, once half of L2, is L2
/// and the groups are L2's worth, once a quarter). Only on the calling
/// thread (a split step loop projects its shares in parallel up front). A row's projection
/// does not depend on the other rows of its call, so the results are the same bits either way.
///
/// `rows`: the chunk's rows, `n_rows`: the rows of all its steps, `split`: the threads its
/// steps are split across.
fn steps_ahead(w_ih: &PackedMatrix, split: usize, rows: usize, n_rows: usize, l2: usize) -> usize {
    let gh = w_ih.rows();
    let w_ih_bytes = gh * w_ih.cols() * 4;
    if split > 1 || rows == 0 || n_rows * gh * 4 <= 2 * l2 || w_ih_bytes > l2 {
        return 0;
    }
    (l2 / (rows * gh * 4)).max(1)
}

/// The fewest rows of a chunk whose LSTM (without projection) or GRU steps project their own
/// inputs (see [`projects_in_step`]).
const IN_STEP_ROWS: usize = 16;

/// The fewest rows of a chunk whose LSTM with projection projects its inputs inside its steps
/// (see [`projects_in_step`]).
const IN_STEP_PROJ_ROWS: usize = 4;

/// Whether a chunk of `rows` rows projects each step's inputs inside the step kernel
/// (`lstm_input_step_blocks`, `gru_input_step_blocks`) instead of ahead of the steps: for an
/// LSTM or a GRU, a step not split across threads, and a batch large enough that `W_ih`, read
/// again every step, serves enough rows. The kernels give the same bits as the projection and
/// the step, so the choice changes no result; what it saves is `xp`'s trip through memory (or
/// L2) between the two, and the projection runs at the step loop's rate (a `k` of `W_ih` is
/// the same 4 weight loads and 16 FMAs of a 4-row tile as a `k` of `W_hh`) instead of the
/// GEMM's, whose short `K` (an LSTM's input width) keeps it further from the FMA peak.
///
/// An LSTM with projection does so from 4 rows (the batch tiles' 4-row shape): `recur bench`
/// on the Zen 4 of session 26, 1 thread pinned, 100 steps, min of 2 alternated runs, ahead ->
/// inside: I80 H1024 P256 batch 1 7.03 -> 7.88 ms, batch 2 8.60 -> 8.61, batch 3 11.2 ->
/// 10.2, batch 4 (lstmp_b4) 14.6-14.9 -> 12.9-13.1, batch 8 29.4 -> 25.8, batch 16 56.2 ->
/// 50.2; I80 H256 P64 batch 1 0.51 -> 0.74, batch 4 1.58 -> 1.46, batch 16 6.17 -> 5.50; I256
/// H512 P128 batch 1 2.43 -> 4.07, batch 2 3.81 -> 4.49, batch 3 5.37 -> 5.29, batch 4 6.91
/// -> 6.79, batch 16 28.7 -> 25.9. The LSTM without projection and the GRU keep the 16 rows
/// measured for them.
fn projects_in_step(w: &DirectionWeights, split: usize, rows: usize) -> bool {
    let min = if w.w_hr.is_some() {
        IN_STEP_PROJ_ROWS
    } else {
        IN_STEP_ROWS
    };
    w.w_ih_gates.is_some() && w.w_ih.cols() > 0 && split == 1 && rows >= min
}

/// L2 bytes assumed where the machine does not say (`l2_bytes`).
const L2_DEFAULT: usize = 1 << 20;

/// The L2 cache of one core in bytes, read once (Linux: the first level-2 data or unified
/// cache of cpu0 in sysfs), or [`L2_DEFAULT`] where that is not there or not readable.
/// Loading a model reads it, so that no call does.
pub(crate) fn l2_bytes() -> usize {
    static L2: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *L2.get_or_init(|| {
        l2_from_sysfs(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache"))
            .unwrap_or(L2_DEFAULT)
            // A figure beyond any core's L2 (or a mistaken one) stays within reason.
            .clamp(64 << 10, 256 << 20)
    })
}

/// The size of the first level-2 data or unified cache under `dir` (`index*/level`, `type`,
/// `size` as Linux writes them: `2`, `Unified`, `512K`).
fn l2_from_sysfs(dir: &std::path::Path) -> Option<usize> {
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();
    (0..8).find_map(|i| {
        let d = dir.join(format!("index{i}"));
        let level = read(d.join("level"))?;
        let kind = read(d.join("type"))?;
        if level.trim() != "2" || kind.trim() == "Instruction" {
            return None;
        }
        parse_cache_size(read(d.join("size"))?.trim())
    })
}

/// `512K`, `2048K`, `1M` or a plain byte count, as bytes; `None` for anything else or zero.
fn parse_cache_size(s: &str) -> Option<usize> {
    let (digits, unit) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    digits
        .parse::<usize>()
        .ok()?
        .checked_mul(unit)
        .filter(|&b| b > 0)
}

/// The input projection `xp = x W_ihᵀ + bias` of `n` rows, in `parts` contiguous row shares
/// on the rayon pool when the chunk's steps will be split across `parts` threads (the pool then
/// has that many); otherwise on the calling thread. A row's projection does not depend on the
/// other rows of the call (the kernel's contract), so the results are the same bits either way.
fn project_inputs(
    kernels: &Kernels,
    w: &DirectionWeights,
    x: &[f32],
    xp: &mut [f32],
    n: usize,
    parts: usize,
) {
    let (k, gh) = (w.w_ih.cols(), w.w_ih.rows());
    let parts = parts.min(n / MIN_PROJECTION_SHARE).max(1);
    if parts == 1 || k == 0 || gh == 0 {
        (kernels.input_projection)(&w.w_ih, &w.bias_x, x, xp, n);
        return;
    }
    let per = n.div_ceil(parts);
    xp[..n * gh]
        .par_chunks_mut(per * gh)
        .zip(x[..n * k].par_chunks(per * k))
        .for_each(|(xp_part, x_part)| {
            let m = xp_part.len() / gh;
            (kernels.input_projection)(&w.w_ih, &w.bias_x, x_part, xp_part, m);
        });
}

/// The fewest rows a share of a split input projection takes (fewer are not worth a thread).
const MIN_PROJECTION_SHARE: usize = 16;

/// One loop step of a chunk: the step `s`, its `active` running rows (a prefix of the rows,
/// which are sorted by length, longest first), and `at`, the running rows of all earlier steps:
/// where step `s`'s rows start in the compacted gathered inputs and their projections.
#[derive(Clone, Copy)]
struct StepRows {
    s: usize,
    active: usize,
    at: usize,
}

/// The loop steps of a chunk whose rows are `order`, in order, up to the last with a running
/// row: the one description of the compacted layout that the gather and the step loops share.
fn step_rows<'a>(plan: &'a Plan<'_>, order: &'a [usize]) -> impl Iterator<Item = StepRows> + 'a {
    let (mut active, mut at) = (order.len(), 0);
    (0..plan.seq_len).map_while(move |s| {
        while active > 0 && plan.lengths[order[active - 1]] <= s {
            active -= 1;
        }
        let step = StepRows { s, active, at };
        at += active;
        (active > 0).then_some(step)
    })
}

/// `src`, or with `scan`, where it holds a denormal, its copy flushed into the start of
/// `scratch` (at least as long): the projection's inputs from the caller's input.
fn scanned<'a>(kernels: &Kernels, src: &'a [f32], scan: bool, scratch: &'a mut [f32]) -> &'a [f32] {
    if scan && (kernels.has_denormals)(src) {
        let flushed = &mut scratch[..src.len()];
        flush_into(flushed, src);
        flushed
    } else {
        src
    }
}

/// The time loop of one chunk on the calling thread.
///
/// With `ahead > 0`, the input projections of every `ahead` steps are computed from `src` (the
/// chunk's inputs, their rows where `src_rows` says) just before the first of them, into the
/// start of `ch.xp` (see [`steps_ahead`]); with `0`, `ch.xp` holds them all already. With
/// `in_step` (`W_ih` packed by gates), each step's kernel projects its rows of `src` itself
/// instead, and `ahead` is not used (see [`projects_in_step`]). With
/// `scan`, `src` is the caller's input, and each group's rows are scanned for denormals just
/// before their projection (which then finds them in cache), flushed into `ch.x` where they
/// hold any.
#[allow(clippy::too_many_arguments)]
fn run_steps(
    kernels: &Kernels,
    w: &DirectionWeights,
    plan: &Plan<'_>,
    ch: &mut Chunk<'_>,
    src_rows: SrcRows,
    (src, ahead, scan): (&[f32], usize, bool),
    in_step: Option<&PackedMatrix>,
    mut carry: Option<Carrier<'_>>,
) -> usize {
    let rows = ch.rows;
    let (g, h) = (w.w_hh.gates(), w.w_hh.rows());
    let h_out = w.w_hr.as_ref().map_or(h, |p| p.rows());
    let gh = g * h;
    let in_size = w.w_ih.cols();
    let order = &plan.order[ch.row0..ch.row0 + rows];
    let blocks = 0..w.w_hh.blocks();
    if g == 1 && rows == 1 && ahead == 0 && in_step.is_none() && src_rows.0.is_none() {
        // One row of a plain RNN, its inputs projected at once in loop order: every step in
        // one kernel call (the same bits), without a call's dispatch and checks and this
        // loop's bookkeeping per step, a tenth of a tiny layer's ~130 ns step.
        let steps = step_rows(plan, order).count();
        if steps > 0 {
            let (xp, y) = (&ch.xp[..steps * h], &mut ch.y[..steps * h]);
            (kernels.rnn_steps)(&w.w_hh, w.activation(), xp, &ch.h_init[..h], y, steps);
            let last = &ch.y[(steps - 1) * h..steps * h];
            keep_final(plan, order, steps - 1, 1, h_out, last, ch.h_n);
        }
        return 0;
    }
    // Projecting ahead: the input rows of the group of steps in `ch.xp`, from its start (a
    // buffer reused by every group stays in cache); all of them when projected at once.
    let mut group = if ahead > 0 { 0..0 } else { 0..usize::MAX };
    // The steps up to the end of the current group (groups start at multiples of `ahead`).
    let mut group_steps = step_rows(plan, order);
    for StepRows { s, active, at } in step_rows(plan, order) {
        let mine = src_rows.of(at..at + active);
        if in_step.is_none() && !group.contains(&mine.start) {
            // The rows of steps `s..s + ahead` follow each other in loop order, and in the
            // input too.
            let end = group_steps
                .by_ref()
                .take(ahead)
                .last()
                .map_or(at, |r| r.at + r.active);
            group = src_rows.of(at..end);
            let rows_in = &src[group.start * in_size..group.end * in_size];
            let group_src = scanned(kernels, rows_in, scan, ch.x);
            let xp = &mut ch.xp[..group.len() * gh];
            project_inputs(kernels, w, group_src, xp, group.len(), 1);
        }
        // The next layer's projection tiles this step carries (rows of earlier steps).
        let rider = carry.as_mut().and_then(|c| c.tiles(s, &ch.y[..s * h_out]));
        // The step writes its new state straight into its output rows, and reads the previous
        // step's from theirs (its running rows are a prefix of the previous step's).
        let (done, rest) = ch.y.split_at_mut(s * rows * h_out);
        let h_prev: &[f32] = match s {
            0 => &ch.h_init[..active * h_out],
            _ => &done[(s - 1) * rows * h_out..][..active * h_out],
        };
        let h_next = &mut rest[..active * h_out];
        // Alternate the block order, so each step starts on the weights still in cache.
        let bo = BlockOrder::for_step(s);
        let xp = match in_step {
            Some(w_ih) => {
                let rows_in = &src[mine.start * in_size..mine.end * in_size];
                Xp::InStep((w_ih, &w.bias_x[..], scanned(kernels, rows_in, scan, ch.x)))
            }
            None => {
                let first = mine.start - group.start;
                Xp::At(&ch.xp[first * gh..(first + active) * gh])
            }
        };
        match &w.w_hr {
            Some(proj) => {
                let bufs = (&mut *ch.c, &mut *ch.h_full, &mut *ch.parts);
                let n = proj.groups();
                let rs = (rows, active);
                projected_groups(kernels, w, proj, xp, h_prev, bufs, rs, 0..n, bo);
                sum_groups(ch.parts, rows * h_out, n, h_next);
            }
            None => cell_step(
                kernels,
                w,
                xp,
                h_prev,
                ch.c,
                h_next,
                active,
                blocks.clone(),
                bo,
                rider,
            ),
        }
        keep_final(plan, order, s, active, h_out, h_next, ch.h_n);
    }
    carry.map_or(0, |c| c.done())
}

/// One step of the mode's cell for the units of `blocks` (an LSTM's before its projection):
/// `out` `(rows, nu)` gets the new state, an LSTM's `c` `(rows, nu)` is updated in place (other
/// modes ignore it); its input projection from `xp` (an LSTM's or GRU's may be
/// [`Xp::InStep`]). With a `rider` (a single row of an LSTM without projection or a GRU, `xp`
/// projected ahead, see [`Relay`]), the step carries it, with the same bits. Shared by the
/// single-thread and the split step loops.
#[allow(clippy::too_many_arguments)]
fn cell_step(
    kernels: &Kernels,
    w: &DirectionWeights,
    xp: Xp<'_>,
    h_prev: &[f32],
    c: &mut [f32],
    out: &mut [f32],
    rows: usize,
    blocks: Range<usize>,
    bo: BlockOrder,
    rider: Option<Rider<'_>>,
) {
    let (w_hh, b_hn) = (&w.w_hh, &w.b_hn[..]);
    if let Some(rider) = rider {
        let Xp::At(xp) = xp else {
            unreachable!("`carries` checked that the steps' inputs are projected ahead")
        };
        match (
            w_hh.gates(),
            kernels.lstm_step_riding,
            kernels.gru_step_riding,
        ) {
            (4, Some(lstm), _) => lstm(w_hh, xp, h_prev, c, out, blocks, bo, rider),
            (3, _, Some(gru)) => gru(w_hh, b_hn, xp, h_prev, out, blocks, bo, rider),
            _ => unreachable!("`carries` checked that the tier has the riding step"),
        }
        return;
    }
    match (w_hh.gates(), xp) {
        (4, Xp::At(xp)) => (kernels.lstm_step_blocks)(w_hh, xp, h_prev, c, out, rows, blocks, bo),
        (4, Xp::InStep(input)) => {
            (kernels.lstm_input_step_blocks)(input, w_hh, h_prev, c, out, rows, blocks, bo)
        }
        (3, Xp::At(xp)) => (kernels.gru_step_blocks)(w_hh, b_hn, xp, h_prev, out, rows, blocks, bo),
        (3, Xp::InStep(input)) => {
            (kernels.gru_input_step_blocks)(input, w_hh, b_hn, h_prev, out, rows, blocks, bo)
        }
        (_, Xp::At(xp)) => {
            let act = w.activation();
            (kernels.rnn_step_blocks)(w_hh, act, xp, h_prev, out, rows, blocks, bo)
        }
        (_, Xp::InStep(_)) => unreachable!("a plain RNN projects its inputs ahead of its steps"),
    }
}

/// Copies step `s`'s new state of the `active` rows into the chunk's output rows, and keeps it
/// as `h_n` for the rows whose sequence ends at this step.
#[allow(clippy::too_many_arguments)]
fn record_step(
    plan: &Plan<'_>,
    order: &[usize],
    s: usize,
    active: usize,
    h_out: usize,
    h_new: &[f32],
    y: &mut [f32],
    h_n: &mut [f32],
) {
    let rows = order.len();
    y[s * rows * h_out..(s * rows + active) * h_out].copy_from_slice(&h_new[..active * h_out]);
    keep_final(plan, order, s, active, h_out, h_new, h_n);
}

/// Keeps step `s`'s new state as `h_n` for the rows whose sequence ends at this step.
fn keep_final(
    plan: &Plan<'_>,
    order: &[usize],
    s: usize,
    active: usize,
    h_out: usize,
    h_new: &[f32],
    h_n: &mut [f32],
) {
    for r in (0..active)
        .rev()
        .take_while(|&r| plan.lengths[order[r]] == s + 1)
    {
        h_n[r * h_out..(r + 1) * h_out].copy_from_slice(&h_new[r * h_out..(r + 1) * h_out]);
    }
}

/// A barrier for threads that each own a core for the length of one call: spins (a step lasts
/// tens of microseconds; a sleeping barrier's wake-up would cost as much), yielding now and then.
struct SpinBarrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl SpinBarrier {
    fn new(parties: usize) -> SpinBarrier {
        SpinBarrier {
            parties,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
        }
    }

    /// Waits for every party. Writes made before `wait` by any party are visible to every party
    /// after it (the last arrival's Release publishes them; each waiter's Acquire sees them).
    fn wait(&self) {
        let gen = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
        } else {
            let mut spins = 0u32;
            while self.generation.load(Ordering::Acquire) == gen {
                spins = spins.wrapping_add(1);
                if spins % 4096 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// f32 values shared between the threads of a split step, published and read between barriers.
/// Relaxed atomics: the barrier orders them; on x86-64 and aarch64 they compile to plain loads
/// and stores.
struct SharedRows(Vec<AtomicU32>);

impl SharedRows {
    fn from_slice(v: &[f32]) -> SharedRows {
        SharedRows(v.iter().map(|x| AtomicU32::new(x.to_bits())).collect())
    }

    fn zeros(len: usize) -> SharedRows {
        SharedRows((0..len).map(|_| AtomicU32::new(0)).collect())
    }

    fn read(&self, start: usize, dst: &mut [f32]) {
        for (d, a) in dst.iter_mut().zip(&self.0[start..]) {
            *d = f32::from_bits(a.load(Ordering::Relaxed));
        }
    }

    fn write(&self, start: usize, src: &[f32]) {
        for (a, v) in self.0[start..].iter().zip(src) {
            a.store(v.to_bits(), Ordering::Relaxed);
        }
    }

    /// Publishes `(rows, nu)` values into columns `u0..u0+nu` of `(rows, width)` rows.
    fn write_columns(&self, width: usize, u0: usize, nu: usize, rows: usize, src: &[f32]) {
        for r in 0..rows {
            self.write(r * width + u0, &src[r * nu..(r + 1) * nu]);
        }
    }
}

/// Balanced contiguous share `part` of `0..total` among `parts`.
fn share(total: usize, part: usize, parts: usize) -> Range<usize> {
    total * part / parts..total * (part + 1) / parts
}

/// The time loop of one chunk with each step's hidden units split across `parts` threads: each
/// thread streams only its share of `W_hh` (and of an LSTM's projection, in whole groups of
/// units), which stays hot in its own core's cache, and the threads meet at one barrier after
/// each step. Every output element is computed by the same instructions as in [`run_steps`],
/// so the results are bit-identical.
fn run_steps_split(
    kernels: &Kernels,
    w: &DirectionWeights,
    plan: &Plan<'_>,
    ch: &mut Chunk<'_>,
    src_rows: SrcRows,
    parts: usize,
    carry: Option<Carrier<'_>>,
) -> usize {
    let (rows, k, h) = (ch.rows, w.w_hh.cols(), w.w_hh.rows());
    let order = &plan.order[ch.row0..ch.row0 + rows];
    let state = [
        SharedRows::from_slice(&ch.h_init[..rows * k]),
        SharedRows::zeros(rows * k),
    ];
    let n_parts = w.w_hr.as_ref().map_or(0, |p| rows * p.groups() * p.rows());
    let partials = [SharedRows::zeros(n_parts), SharedRows::zeros(n_parts)];
    let barrier = SpinBarrier::new(parts);
    let shared = SplitShared {
        kernels,
        w,
        plan,
        order,
        src_rows,
        xp: &*ch.xp,
        c0: &*ch.c,
        state,
        partials,
        barrier,
    };
    // The next layer's projection (see `Relay`): each thread carries its share of the
    // blocks, into its own region of the relay and with its own tile of input rows.
    let k_next = carry.as_ref().map_or(0, |c| c.next.w_ih.cols());
    let mut x_ts: Vec<Vec<f32>> = (0..parts).map(|_| vec![0.0; RIDER_ROWS * k_next]).collect();
    let mut carriers: Vec<Option<Carrier<'_>>> = Vec::with_capacity(parts);
    match carry {
        Some(Carrier {
            next,
            xp,
            cols,
            steps,
            ..
        }) => {
            let mut rest = xp;
            for (p, x_t) in x_ts.iter_mut().enumerate() {
                let own = share(cols.len(), p, parts);
                let own = cols.start + own.start..cols.start + own.end;
                let (mine, tail) = rest.split_at_mut(own.len() * steps * BLOCK);
                rest = tail;
                carriers.push(Some(Carrier::new(next, (mine, x_t), own, steps)));
            }
        }
        None => carriers.resize_with(parts, || None),
    }
    let mut carriers = carriers.into_iter();
    let mine = carriers.next().expect("one carrier slot per thread");
    let (y, h_n) = (&mut *ch.y, &mut *ch.h_n);
    let parts_c: Vec<(Range<usize>, Vec<f32>, usize)> = std::thread::scope(|scope| {
        let shared = &shared;
        let workers: Vec<_> = (1..parts)
            .zip(carriers)
            .map(|(p, carrier)| scope.spawn(move || shared.worker(p, parts, None, carrier)))
            .collect();
        let mut all = vec![shared.worker(0, parts, Some((y, h_n)), mine)];
        all.extend(
            workers
                .into_iter()
                .map(|t| t.join().expect("split-step worker panicked")),
        );
        all
    });
    // Rows of the next layer's projection every thread has done its share of.
    let relayed = parts_c.iter().map(|p| p.2).min().unwrap_or(0);
    if w.w_hr.is_some() {
        // Group-major: a thread's groups are one region (see `regroup`).
        for (units, c_part, _) in parts_c {
            ch.c[rows * units.start..rows * units.end].copy_from_slice(&c_part);
        }
    } else if w.w_hh.gates() == 4 {
        for (units, c_part, _) in parts_c {
            let nu = units.len();
            for r in 0..rows {
                ch.c[r * h + units.start..r * h + units.end]
                    .copy_from_slice(&c_part[r * nu..(r + 1) * nu]);
            }
        }
    }
    relayed
}

/// What the threads of a split step share.
struct SplitShared<'a, 'p> {
    kernels: &'a Kernels,
    w: &'a DirectionWeights,
    plan: &'a Plan<'p>,
    order: &'a [usize],
    /// Where each step's rows of `xp` lie.
    src_rows: SrcRows,
    xp: &'a [f32],
    c0: &'a [f32],
    /// `h` of the chunk's rows, `(rows, K)`, double-buffered by step parity.
    state: [SharedRows; 2],
    /// LSTM with projection: each group's partial projection `(rows, P)`, double-buffered by
    /// step parity.
    partials: [SharedRows; 2],
    barrier: SpinBarrier,
}

impl SplitShared<'_, '_> {
    /// Thread `part`'s share of every step, carrying its share of the next layer's projection
    /// where it has a `carrier` (a single row); thread 0 also records outputs. Returns the
    /// units it owned, its final share of `c` (LSTM) and the rows its carrier finished.
    fn worker(
        &self,
        part: usize,
        parts: usize,
        mut record: Option<(&mut [f32], &mut [f32])>,
        mut carrier: Option<Carrier<'_>>,
    ) -> (Range<usize>, Vec<f32>, usize) {
        if let Some(proj) = &self.w.w_hr {
            let (units, c) = self.worker_projected(proj, part, parts, record);
            return (units, c, 0);
        }
        let (kern, w, plan) = (self.kernels, self.w, self.plan);
        // Without a projection the state is the cell output: `k = h`.
        let (g, h, k) = (w.w_hh.gates(), w.w_hh.rows(), w.w_hh.cols());
        let (rows, gh) = (self.order.len(), g * h);
        let blocks = share(w.w_hh.blocks(), part, parts);
        let units = recur_kernels::step::block_units(&w.w_hh, blocks.clone());
        let nu = units.len();
        let mut c_part = vec![0.0f32; if g == 4 { rows * nu } else { 0 }];
        for r in 0..rows.min(c_part.len() / nu.max(1)) {
            c_part[r * nu..(r + 1) * nu]
                .copy_from_slice(&self.c0[r * h + units.start..r * h + units.end]);
        }
        let mut h_prev = vec![0.0f32; rows * k];
        let mut out_part = vec![0.0f32; rows * nu];
        // A carrier's rows: the states of the steps done (`(steps, K)`; a single row).
        let mut history = vec![0.0f32; carrier.as_ref().map_or(0, |c| c.steps * k)];
        // Thread 0 records each step's state from its read of it at the start of the next
        // step (and the last step's after the loop), so that the read it needs anyway also
        // serves the record: the other threads wait for it at every barrier.
        let mut last: Option<(usize, usize)> = None;
        for StepRows { s, active, at } in step_rows(plan, self.order) {
            let (cur, next) = (&self.state[s % 2], &self.state[(s + 1) % 2]);
            match (record.as_mut(), last) {
                (Some((y, h_n)), Some((s0, active0))) => {
                    // Step `s0`'s rows are a superset of step `s`'s (a prefix of them).
                    cur.read(0, &mut h_prev[..active0 * k]);
                    record_step(plan, self.order, s0, active0, k, &h_prev, y, h_n);
                }
                _ => cur.read(0, &mut h_prev[..active * k]),
            }
            last = Some((s, active));
            let mine = self.src_rows.of(at..at + active);
            let xp = &self.xp[mine.start * gh..mine.end * gh];
            let out = &mut out_part[..active * nu];
            // Alternate the block order, so each step starts on the weights of this thread's
            // share still in its core's cache.
            let bo = BlockOrder::for_step(s);
            let rider = carrier.as_mut().and_then(|c| {
                if s > 0 {
                    history[(s - 1) * k..s * k].copy_from_slice(&h_prev[..k]);
                }
                c.tiles(s, &history[..s * k])
            });
            cell_step(
                kern,
                w,
                Xp::At(xp),
                &h_prev,
                &mut c_part,
                out,
                active,
                blocks.clone(),
                bo,
                rider,
            );
            next.write_columns(k, units.start, nu, active, out);
            self.barrier.wait();
        }
        if let (Some((y, h_n)), Some((s, active))) = (record, last) {
            self.state[(s + 1) % 2].read(0, &mut h_prev[..active * k]);
            record_step(plan, self.order, s, active, k, &h_prev, y, h_n);
        }
        (units, c_part, carrier.map_or(0, |c| c.done()))
    }

    /// [`SplitShared::worker`] for an LSTM with projection: thread `part` runs its share of
    /// whole groups (`projected_groups`, the same calls as one thread makes), publishes their
    /// partial projections, and after the step's one barrier sums every group's into its own
    /// copy of the new state (in group order: the bits of one thread).
    fn worker_projected(
        &self,
        proj: &Projection,
        part: usize,
        parts: usize,
        mut record: Option<(&mut [f32], &mut [f32])>,
    ) -> (Range<usize>, Vec<f32>) {
        let (kern, w, plan) = (self.kernels, self.w, self.plan);
        let (h, p, n) = (w.w_hh.rows(), proj.rows(), proj.groups());
        let (rows, gh) = (self.order.len(), 4 * h);
        let groups = share(n, part, parts);
        let units = proj.units(groups.clone());
        let mine = rows * units.start..rows * units.end;
        let mut c_part = self.c0[mine.clone()].to_vec();
        let mut m_part = vec![0.0f32; mine.len()];
        let mut parts_mine = vec![0.0f32; groups.len() * rows * p];
        let mut all = vec![0.0f32; n * rows * p];
        let mut h_prev = vec![0.0f32; rows * p];
        self.state[0].read(0, &mut h_prev);
        let mut h_new = vec![0.0f32; rows * p];
        for StepRows { s, active, at } in step_rows(plan, self.order) {
            let src = self.src_rows.of(at..at + active);
            let xp = &self.xp[src.start * gh..src.end * gh];
            let bo = BlockOrder::for_step(s);
            let bufs = (&mut c_part[..], &mut m_part[..], &mut parts_mine[..]);
            let prev = &h_prev[..active * p];
            projected_groups(
                kern,
                w,
                proj,
                Xp::At(xp),
                prev,
                bufs,
                (rows, active),
                groups.clone(),
                bo,
            );
            let published = &self.partials[s % 2];
            published.write(groups.start * rows * p, &parts_mine);
            self.barrier.wait();
            published.read(0, &mut all);
            sum_groups(&all, rows * p, n, &mut h_new[..active * p]);
            if let Some((y, h_n)) = record.as_mut() {
                record_step(plan, self.order, s, active, p, &h_new, y, h_n);
            }
            std::mem::swap(&mut h_prev, &mut h_new);
        }
        (units, c_part)
    }
}

/// Appends the output rows of every direction (`arenas[d]`), full sequences, to `dest` in
/// seq-major order: for each step `t` and batch element `b`, the rows of the directions side
/// by side (the reverse direction's row of `t` is its loop step `L - 1 - t`).
fn append_outputs(plan: &Plan<'_>, sz: &Sizes, arenas: &[&[f32]], dest: &mut Vec<f32>) {
    let (l, n, h_out) = (plan.seq_len, plan.batch, sz.h_out);
    match arenas {
        [arena] => {
            // One direction: a chunk's rows of a step are one run (without lengths they are
            // in batch order), and with one chunk the whole output is (a row at a time, the
            // copies' calls were ~8% of a 50-step, 64-unit RNN call).
            if plan.chunk_rows >= n {
                let (y, _, _) = Chunk::results(&arena[..n * sz.per_row()], n, sz);
                dest.extend_from_slice(&y[..l * n * h_out]);
                return;
            }
            for t in 0..l {
                for (_, rows, (y, _, _)) in chunk_results(plan, sz, arena) {
                    dest.extend_from_slice(&y[t * rows * h_out..][..rows * h_out]);
                }
            }
        }
        [fwd, bwd] => {
            for t in 0..l {
                let chunks = chunk_results(plan, sz, fwd).zip(chunk_results(plan, sz, bwd));
                for ((_, rows, (yf, _, _)), (_, _, (yb, _, _))) in chunks {
                    for r in 0..rows {
                        dest.extend_from_slice(&yf[(t * rows + r) * h_out..][..h_out]);
                        dest.extend_from_slice(&yb[((l - 1 - t) * rows + r) * h_out..][..h_out]);
                    }
                }
            }
        }
        _ => unreachable!("{} directions", arenas.len()),
    }
}

/// The chunks of a direction's arena, in batch order: `(row0, rows, (y, c, h_n))` of each.
fn chunk_results<'a>(
    plan: &'a Plan<'_>,
    sz: &'a Sizes,
    arena: &'a [f32],
) -> impl Iterator<Item = (usize, usize, ChunkResults<'a>)> + 'a {
    let per_row = sz.per_row();
    (0..plan.batch).step_by(plan.chunk_rows).map(move |row0| {
        let rows = plan.chunk_rows.min(plan.batch - row0);
        let region = &arena[row0 * per_row..(row0 + rows) * per_row];
        (row0, rows, Chunk::results(region, rows, sz))
    })
}

/// Writes a direction's loop-order output rows into `dest` at column `col`, in `dest_layout`
/// (positions past a sequence's length are left as they are: zero).
fn scatter_outputs(
    plan: &Plan<'_>,
    reverse: bool,
    sz: &Sizes,
    arena: &[f32],
    col: usize,
    dest: &mut [f32],
    dest_layout: SeqLayout,
) {
    let h_out = sz.h_out;
    for (row0, rows, (y, _, _)) in chunk_results(plan, sz, arena) {
        for (r, &b) in plan.order[row0..row0 + rows].iter().enumerate() {
            for step in 0..plan.lengths[b] {
                let t = time_of(plan, reverse, step, b);
                dest[dest_layout.at(t, b) + col..][..h_out]
                    .copy_from_slice(&y[(step * rows + r) * h_out..][..h_out]);
            }
        }
    }
}

/// Writes a direction's final states into `h_n` `(N, H_out)` and `c_n` `(N, H)`, in batch
/// order.
fn gather_states(plan: &Plan<'_>, sz: &Sizes, arena: &[f32], h_n: &mut [f32], c_n: &mut [f32]) {
    let (h_out, hc) = (sz.h_out, sz.c);
    for (row0, rows, (_, c, hn)) in chunk_results(plan, sz, arena) {
        for (r, &b) in plan.order[row0..row0 + rows].iter().enumerate() {
            h_n[b * h_out..(b + 1) * h_out].copy_from_slice(&hn[r * h_out..(r + 1) * h_out]);
            if hc > 0 {
                c_n[b * hc..(b + 1) * hc].copy_from_slice(&c[r * hc..(r + 1) * hc]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{l2_bytes, l2_from_sysfs, parse_cache_size, projects_in_step, refill, steps_ahead};
    use recur_kernels::PackedMatrix;

    fn w_ih(gh: usize, input: usize) -> PackedMatrix {
        PackedMatrix::pack(&vec![0.0; gh * input], 1, gh, input)
    }

    #[test]
    fn large_batches_of_small_inputs_are_projected_a_few_steps_ahead() {
        let l2 = 2 << 20;
        // lstm_b64 with a 2 MiB L2: 32 MiB of `xp`, a 1 MiB `W_ih`: groups of 8 steps (256 KiB
        // each).
        assert_eq!(steps_ahead(&w_ih(1024, 256), 1, 64, 128 * 64, l2), 8);
        // With a 1.25 MiB L2 (the Ice Lake-SP Xeon), groups of 5; its 32-row chunks at two
        // threads, 10.
        assert_eq!(
            steps_ahead(&w_ih(1024, 256), 1, 64, 128 * 64, 1280 << 10),
            5
        );
        assert_eq!(
            steps_ahead(&w_ih(1024, 256), 1, 32, 128 * 32, 1280 << 10),
            10
        );
        // With a 512 KiB L2, a 1 MiB `W_ih` is not read once a group.
        assert_eq!(steps_ahead(&w_ih(1024, 256), 1, 64, 128 * 64, 512 << 10), 0);
        // Split across threads: projected up front, in shares.
        assert_eq!(steps_ahead(&w_ih(1024, 256), 2, 64, 128 * 64, l2), 0);
        // lstm_big_b256: an 8 MiB `W_ih` is not read once a group.
        assert_eq!(steps_ahead(&w_ih(4096, 512), 1, 256, 32 * 256, l2), 0);
        // An `xp` that stays in cache anyway (lstm_stream_b1's 800 KiB).
        assert_eq!(steps_ahead(&w_ih(2048, 80), 1, 1, 100, l2), 0);
        // The shapes of tests/engine_props.rs's `projected_ahead_...` (input 8, hidden 64, at
        // least 260 of 300 steps for 64 rows; the RNN's 64 gate rows are the fewest), with
        // the L2 of the machines the project has run on (512 KiB, 2 MiB; that test's RNN is
        // projected at once from a 4 MiB L2 on).
        for l2 in [512 << 10, l2] {
            for gh in [64, 192, 256] {
                assert!(
                    steps_ahead(&w_ih(gh, 8), 1, 64, 260 * 64, l2) > 0,
                    "{gh} {l2}"
                );
            }
        }
    }

    #[test]
    fn large_lstm_and_gru_batches_project_inside_their_steps() {
        use crate::bench::random_state_dict;
        use crate::{Config, Mode, Model};
        let weights = |mode: Mode, proj: usize| {
            let mut config = Config::new(mode, 5, 32);
            config.proj_size = proj;
            Model::from_state_dict(config.clone(), &random_state_dict(&config, 1)).unwrap()
        };
        // (mode, proj, the fewest rows that project in the step; 0 for never)
        for (mode, proj, min) in [
            (Mode::Lstm, 0, 16),
            (Mode::Gru, 0, 16),
            (Mode::Lstm, 8, 4),
            (Mode::RnnTanh, 0, 0),
        ] {
            let m = weights(mode, proj);
            let w = &m.layers[0][0];
            for rows in [1, 3, 4, 15, 16, 64] {
                let expected = min > 0 && rows >= min;
                assert_eq!(
                    projects_in_step(w, 1, rows),
                    expected,
                    "{mode} P={proj}: {rows} rows"
                );
                assert!(!projects_in_step(w, 2, rows), "{mode} P={proj}: split step");
            }
        }
    }

    #[test]
    fn the_l2_size_is_read_as_linux_writes_it() {
        assert_eq!(parse_cache_size("512K"), Some(512 << 10));
        assert_eq!(parse_cache_size("2048K"), Some(2 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("65536"), Some(65536));
        for bad in ["", "K", "0K", "-1K", "12Q", "99999999999999999999M"] {
            assert_eq!(parse_cache_size(bad), None, "{bad}");
        }
        let dir = std::env::temp_dir().join(format!("recur-l2-{}", std::process::id()));
        let index = |i: usize, level: &str, kind: &str, size: &str| {
            let d = dir.join(format!("index{i}"));
            std::fs::create_dir_all(&d).unwrap();
            for (f, v) in [("level", level), ("type", kind), ("size", size)] {
                std::fs::write(d.join(f), format!("{v}\n")).unwrap();
            }
        };
        index(0, "1", "Data", "32K");
        index(1, "1", "Instruction", "32K");
        index(2, "2", "Unified", "512K");
        index(3, "3", "Unified", "32768K");
        assert_eq!(l2_from_sysfs(&dir), Some(512 << 10));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(l2_from_sysfs(&dir), None);
        assert!(l2_bytes() > 0);
    }

    #[test]
    fn refill_reports_an_allocation_it_cannot_make() {
        let mut v = vec![1.0f32; 4];
        // More bytes than `isize::MAX`: refused without asking the allocator.
        assert!(refill(&mut v, usize::MAX / 2, false).is_err());
        assert_eq!(v, [1.0; 4]);
        refill(&mut v, 6, false).unwrap();
        assert_eq!(v, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        refill(&mut v, 3, true).unwrap();
        assert_eq!(v, [0.0; 3]);
    }
}
