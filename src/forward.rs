//! The forward pass: plan, input projection, recurrent loop, outputs.
//!
//! The path of data, per layer and direction: the input is gathered into the order the recurrent
//! loop reads it (batch rows sorted by length, the reverse direction's sequences reversed within
//! their own length), projected for every timestep at once by one GEMM per batch chunk
//! (`xp = x W_ihᵀ + b`), then run through the fused step kernel one timestep at a time, and
//! finally scattered back into PyTorch's `(L, N, D*H_out)` layout. Batch chunks and directions run
//! in parallel on the current rayon pool; a row's arithmetic never depends on the chunking, so
//! results are bit-identical for any thread count.

use rayon::prelude::*;

use crate::config::Mode;
use crate::error::{Error, Result};
use crate::model::{DirectionWeights, Model};
use crate::tensor::{Shape, Tensor, TensorView};
use recur_kernels::{Activation, Kernels};

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
/// on every call. Grows to the largest shape it has served.
#[derive(Debug, Default)]
pub struct Workspace {
    seq_input: Vec<f32>,
    layer_in: Vec<f32>,
    layer_out: Vec<f32>,
    dirs: [DirScratch; 2],
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Workspace {
        Workspace::default()
    }
}

#[derive(Debug, Default)]
struct DirScratch {
    x: Vec<f32>,
    xp: Vec<f32>,
    y: Vec<f32>,
    h_a: Vec<f32>,
    h_b: Vec<f32>,
    h_full: Vec<f32>,
    c: Vec<f32>,
    h_n: Vec<f32>,
}

/// The validated shapes of one call.
#[derive(Debug)]
struct Plan {
    seq_len: usize,
    batch: usize,
    batched: bool,
    /// `order[i]`: the batch element in row `i` of the recurrent loop (sorted by length,
    /// longest first, stable); identity without lengths.
    order: Vec<usize>,
    /// Length of each batch element (all `seq_len` without lengths).
    lengths: Vec<usize>,
    /// Batch rows per chunk (the last chunk may be shorter).
    chunk_rows: usize,
}

/// Smallest batch chunk worth a thread of its own.
const MIN_CHUNK_ROWS: usize = 8;

fn shape_err(what: &str, found: &[usize], expected: &[usize]) -> Error {
    Error::InvalidInput(format!(
        "{what} has shape {}, expected {}",
        Shape(found),
        Shape(expected)
    ))
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
        let plan = self.plan(fi)?;
        let cfg = self.config();
        let (l, n) = (plan.seq_len, plan.batch);
        let (d_count, h_out, h) = (cfg.directions(), cfg.output_hidden(), cfg.hidden_size);
        let states = d_count * cfg.num_layers;
        let lstm = cfg.mode == Mode::Lstm;

        let Workspace {
            seq_input,
            layer_in,
            layer_out,
            dirs,
        } = ws;
        // Seq-major `(L, N, I)` input.
        let x0: &[f32] = if cfg.batch_first && plan.batched {
            transpose_01(fi.input.data, n, l, cfg.input_size, seq_input);
            seq_input
        } else {
            fi.input.data
        };

        let mut h_n = vec![0.0f32; states * n * h_out];
        let mut c_n = if lstm {
            vec![0.0f32; states * n * h]
        } else {
            Vec::new()
        };
        let width = d_count * h_out;
        for layer in 0..cfg.num_layers {
            let x: &[f32] = if layer == 0 { x0 } else { layer_in };
            let in_size = cfg.layer_input_size(layer);
            let run = |d: usize, s: &mut DirScratch| {
                let idx = layer * d_count + d;
                let h0 = fi
                    .h0
                    .map(|t| &t.data[idx * n * h_out..(idx + 1) * n * h_out]);
                let c0 = fi.c0.map(|t| &t.data[idx * n * h..(idx + 1) * n * h]);
                run_direction(
                    self.kernels,
                    &self.layers[layer][d],
                    &plan,
                    d == 1,
                    x,
                    in_size,
                    (h0, c0),
                    s,
                );
            };
            let (s0, s1) = dirs.split_at_mut(1);
            if d_count == 2 {
                rayon::join(|| run(0, &mut s0[0]), || run(1, &mut s1[0]));
            } else {
                run(0, &mut s0[0]);
            }
            // Scatter each direction's rows back to PyTorch's layout and collect h_n, c_n.
            layer_out.clear();
            layer_out.resize(l * n * width, 0.0);
            for (d, s) in dirs.iter().take(d_count).enumerate() {
                scatter_direction(&plan, d == 1, s, h_out, d * h_out, width, layer_out);
                let idx = layer * d_count + d;
                for (row, &b) in plan.order.iter().enumerate() {
                    h_n[(idx * n + b) * h_out..][..h_out]
                        .copy_from_slice(&s.h_n[row * h_out..(row + 1) * h_out]);
                    if lstm {
                        c_n[(idx * n + b) * h..][..h].copy_from_slice(&s.c[row * h..(row + 1) * h]);
                    }
                }
            }
            std::mem::swap(layer_in, layer_out);
        }

        // `layer_in` now holds the last layer's `(L, N, D*H_out)` output.
        let output = if cfg.batch_first && plan.batched {
            let mut o = Vec::new();
            transpose_01(layer_in, l, n, width, &mut o);
            Tensor {
                shape: vec![n, l, width],
                data: o,
            }
        } else if plan.batched {
            Tensor {
                shape: vec![l, n, width],
                data: layer_in.clone(),
            }
        } else {
            Tensor {
                shape: vec![l, width],
                data: layer_in.clone(),
            }
        };
        let state_shape = |w: usize| {
            if plan.batched {
                vec![states, n, w]
            } else {
                vec![states, w]
            }
        };
        Ok(Outputs {
            output,
            h_n: Tensor {
                shape: state_shape(h_out),
                data: h_n,
            },
            c_n: lstm.then(|| Tensor {
                shape: state_shape(h),
                data: c_n,
            }),
        })
    }

    /// Validates the call's shapes against the model and builds its plan.
    fn plan(&self, fi: &ForwardInput<'_>) -> Result<Plan> {
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
        let states = cfg.directions() * cfg.num_layers;
        let state_shape = |w: usize| {
            if batched {
                vec![states, n, w]
            } else {
                vec![states, w]
            }
        };
        if let Some(h0) = fi.h0 {
            let want = state_shape(cfg.output_hidden());
            if h0.shape != want.as_slice() || h0.data.len() != want.iter().product::<usize>() {
                return Err(shape_err("h0", h0.shape, &want));
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
            (Mode::Lstm, true, Some(c0)) => {
                let want = state_shape(cfg.hidden_size);
                if c0.shape != want.as_slice() || c0.data.len() != want.iter().product::<usize>() {
                    return Err(shape_err("c0", c0.shape, &want));
                }
            }
            (mode, _, Some(_)) => {
                return Err(Error::InvalidInput(format!(
                    "c0 was given, but {mode} has no cell state (only LSTM takes c0)"
                )))
            }
            _ => {}
        }
        let (lengths, ragged) = match fi.lengths {
            None => (vec![l; n], false),
            Some(_) if !batched => {
                return Err(Error::InvalidInput(
                    "lengths were given for unbatched (2-D) input; lengths need a batch dimension"
                        .into(),
                ))
            }
            Some(lens) => {
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
                (lens.to_vec(), lens.iter().any(|&v| v < l))
            }
        };
        let mut order: Vec<usize> = (0..n).collect();
        if ragged {
            order.sort_by_key(|&b| std::cmp::Reverse(lengths[b]));
        }
        let threads = rayon::current_num_threads().max(1);
        let per_dir = (threads / cfg.directions()).max(1);
        let chunks = per_dir.min(n / MIN_CHUNK_ROWS).max(1);
        let chunk_rows = n.div_ceil(chunks);
        Ok(Plan {
            seq_len: l,
            batch: n,
            batched,
            order,
            lengths,
            chunk_rows,
        })
    }
}

/// `dst (b, a, w) = src (a, b, w)`.
fn transpose_01(src: &[f32], a: usize, b: usize, w: usize, dst: &mut Vec<f32>) {
    dst.clear();
    dst.resize(a * b * w, 0.0);
    for i in 0..a {
        for j in 0..b {
            dst[(j * a + i) * w..][..w].copy_from_slice(&src[(i * b + j) * w..][..w]);
        }
    }
}

/// The time index that loop step `s` reads for batch element `b`.
fn time_of(plan: &Plan, reverse: bool, s: usize, b: usize) -> usize {
    if reverse {
        plan.lengths[b] - 1 - s
    } else {
        s
    }
}

/// One batch chunk's share of a direction's scratch.
struct Chunk<'s> {
    row0: usize,
    rows: usize,
    x: &'s mut [f32],
    xp: &'s mut [f32],
    y: &'s mut [f32],
    h_a: &'s mut [f32],
    h_b: &'s mut [f32],
    h_full: &'s mut [f32],
    c: &'s mut [f32],
    h_n: &'s mut [f32],
}

/// Cuts `buf` into consecutive pieces of `rows * per_row` for each chunk's row count.
fn split_rows<'s>(mut buf: &'s mut [f32], counts: &[usize], per_row: usize) -> Vec<&'s mut [f32]> {
    counts
        .iter()
        .map(|&rows| {
            let (head, tail) = std::mem::take(&mut buf).split_at_mut(rows * per_row);
            buf = tail;
            head
        })
        .collect()
}

fn resize(v: &mut Vec<f32>, len: usize) {
    v.clear();
    v.resize(len, 0.0);
}

/// Runs one layer in one direction over the whole batch; leaves the direction's output rows in
/// `s.y` (chunk-major, loop order), its final states in `s.h_n` and `s.c` (loop row order).
#[allow(clippy::too_many_arguments)]
fn run_direction(
    kernels: &Kernels,
    w: &DirectionWeights,
    plan: &Plan,
    reverse: bool,
    x: &[f32],
    in_size: usize,
    (h0, c0): (Option<&[f32]>, Option<&[f32]>),
    s: &mut DirScratch,
) {
    let (l, n) = (plan.seq_len, plan.batch);
    let (g, h, k) = (w.w_hh.gates(), w.w_hh.rows(), w.w_hh.cols());
    let h_out = w.w_hr.as_ref().map_or(h, |p| p.rows());
    let gh = g * h;
    resize(&mut s.x, l * n * in_size);
    resize(&mut s.xp, l * n * gh);
    resize(&mut s.y, l * n * h_out);
    resize(&mut s.h_a, n * k);
    resize(&mut s.h_b, n * k);
    resize(&mut s.h_full, if w.w_hr.is_some() { n * h } else { 0 });
    resize(&mut s.c, if g == 4 { n * h } else { 0 });
    resize(&mut s.h_n, n * h_out);

    let counts: Vec<usize> = (0..n)
        .step_by(plan.chunk_rows)
        .map(|r0| plan.chunk_rows.min(n - r0))
        .collect();
    let mut chunks: Vec<Chunk<'_>> = {
        let xs = split_rows(&mut s.x, &counts, l * in_size);
        let xps = split_rows(&mut s.xp, &counts, l * gh);
        let ys = split_rows(&mut s.y, &counts, l * h_out);
        let has = split_rows(&mut s.h_a, &counts, k);
        let hbs = split_rows(&mut s.h_b, &counts, k);
        let hfs = split_rows(&mut s.h_full, &counts, if w.w_hr.is_some() { h } else { 0 });
        let cs = split_rows(&mut s.c, &counts, if g == 4 { h } else { 0 });
        let hns = split_rows(&mut s.h_n, &counts, h_out);
        let mut row0 = 0;
        xs.into_iter()
            .zip(xps)
            .zip(ys)
            .zip(has.into_iter().zip(hbs))
            .zip(hfs.into_iter().zip(cs).zip(hns))
            .zip(&counts)
            .map(
                |(((((x, xp), y), (h_a, h_b)), ((h_full, c), h_n)), &rows)| {
                    let ch = Chunk {
                        row0,
                        rows,
                        x,
                        xp,
                        y,
                        h_a,
                        h_b,
                        h_full,
                        c,
                        h_n,
                    };
                    row0 += rows;
                    ch
                },
            )
            .collect()
    };
    chunks.par_iter_mut().for_each(|ch| {
        run_chunk(kernels, w, plan, reverse, x, in_size, (h0, c0), ch);
    });
}

/// The recurrent loop of one batch chunk: gather, project, step, in loop order.
#[allow(clippy::too_many_arguments)]
fn run_chunk(
    kernels: &Kernels,
    w: &DirectionWeights,
    plan: &Plan,
    reverse: bool,
    x: &[f32],
    in_size: usize,
    (h0, c0): (Option<&[f32]>, Option<&[f32]>),
    ch: &mut Chunk<'_>,
) {
    let (l, n, rows) = (plan.seq_len, plan.batch, ch.rows);
    let (g, h, k) = (w.w_hh.gates(), w.w_hh.rows(), w.w_hh.cols());
    let h_out = w.w_hr.as_ref().map_or(h, |p| p.rows());
    let gh = g * h;
    let order = &plan.order[ch.row0..ch.row0 + rows];

    // Gather the chunk's input in loop order: step s, row r reads element order[r] at its own
    // time index (reversed within its length for the reverse direction).
    for s in 0..l {
        for (r, &b) in order.iter().enumerate() {
            let dst = &mut ch.x[(s * rows + r) * in_size..][..in_size];
            if s < plan.lengths[b] {
                let t = time_of(plan, reverse, s, b);
                dst.copy_from_slice(&x[(t * n + b) * in_size..][..in_size]);
            }
        }
    }
    // Input projection of every step at once: xp = x W_ihᵀ + bias.
    for row in ch.xp.chunks_exact_mut(gh) {
        row.copy_from_slice(&w.bias_x);
    }
    recur_kernels::gemm::gemm_nt(l * rows, gh, in_size, ch.x, &w.w_ih, 1.0, ch.xp);

    // Initial state.
    for (r, &b) in order.iter().enumerate() {
        if let Some(h0) = h0 {
            ch.h_a[r * k..(r + 1) * k].copy_from_slice(&h0[b * k..(b + 1) * k]);
        }
        if let Some(c0) = c0 {
            ch.c[r * h..(r + 1) * h].copy_from_slice(&c0[b * h..(b + 1) * h]);
        }
    }

    let lens = |r: usize| plan.lengths[order[r]];
    let (mut h_prev, mut h_next) = (&mut *ch.h_a, &mut *ch.h_b);
    let mut active = rows;
    for s in 0..l {
        // Rows are sorted by length, longest first: the active ones are a prefix.
        while active > 0 && lens(active - 1) <= s {
            active -= 1;
        }
        if active == 0 {
            break;
        }
        let xp = &ch.xp[s * rows * gh..(s * rows + active) * gh];
        match g {
            4 => match &w.w_hr {
                Some(w_hr) => {
                    (kernels.lstm_step)(&w.w_hh, xp, h_prev, ch.c, ch.h_full, active);
                    (kernels.project)(w_hr, ch.h_full, h_next, active);
                }
                None => (kernels.lstm_step)(&w.w_hh, xp, h_prev, ch.c, h_next, active),
            },
            3 => (kernels.gru_step)(&w.w_hh, &w.b_hn, xp, h_prev, h_next, active),
            _ => {
                let act = if w.relu {
                    Activation::Relu
                } else {
                    Activation::Tanh
                };
                (kernels.rnn_step)(&w.w_hh, act, xp, h_prev, h_next, active)
            }
        }
        ch.y[s * rows * h_out..(s * rows + active) * h_out]
            .copy_from_slice(&h_next[..active * h_out]);
        // Rows whose sequence ends at this step keep this state as their h_n.
        for r in (0..active).rev().take_while(|&r| lens(r) == s + 1) {
            ch.h_n[r * h_out..(r + 1) * h_out].copy_from_slice(&h_next[r * h_out..(r + 1) * h_out]);
        }
        std::mem::swap(&mut h_prev, &mut h_next);
    }
}

/// Writes a direction's loop-order rows into the layer output `(L, N, width)` at column `col`.
fn scatter_direction(
    plan: &Plan,
    reverse: bool,
    s: &DirScratch,
    h_out: usize,
    col: usize,
    width: usize,
    out: &mut [f32],
) {
    let (l, n) = (plan.seq_len, plan.batch);
    let mut row0 = 0;
    while row0 < n {
        let rows = plan.chunk_rows.min(n - row0);
        let y = &s.y[row0 * l * h_out..(row0 + rows) * l * h_out];
        for (r, &b) in plan.order[row0..row0 + rows].iter().enumerate() {
            for step in 0..plan.lengths[b] {
                let t = time_of(plan, reverse, step, b);
                out[(t * n + b) * width + col..][..h_out]
                    .copy_from_slice(&y[(step * rows + r) * h_out..][..h_out]);
            }
        }
        row0 += rows;
    }
}
