//! Stateful streaming over a unidirectional model: feed a sequence in chunks of any length, down
//! to one step, and the session carries `h` (and LSTM's `c`) from one chunk to the next.
//!
//! A chunk is one [`Model::forward_into`] call with the session's state as `h0`/`c0`, and its
//! `h_n`/`c_n` become the new state. Every batch row's arithmetic is independent of how many
//! timesteps and rows share a call (SPEC §4), so feeding a sequence in chunks gives results
//! bit-identical to one forward pass over the whole sequence, whatever the chunk sizes.
//!
//! ```
//! use recur::bench::random_state_dict;
//! use recur::session::Session;
//! use recur::{Config, ForwardInput, Mode, Model, Tensor};
//! let config = Config::new(Mode::Lstm, 3, 8);
//! let model = Model::from_state_dict(config.clone(), &random_state_dict(&config, 7)).unwrap();
//! let x: Vec<f32> = (0..5 * 3).map(|i| (i as f32 * 0.37).sin()).collect();
//!
//! // One step at a time: the input of one step is (N, input_size) = (1, 3).
//! let mut session = Session::new(&model).unwrap();
//! let mut streamed = Vec::new();
//! for step in x.chunks(3) {
//!     streamed.extend_from_slice(session.step(step).unwrap());
//! }
//! // The same sequence in one call.
//! let whole = Tensor::new(vec![5, 1, 3], x).unwrap();
//! let one_shot = model.forward(&ForwardInput::new(whole.view())).unwrap();
//! assert_eq!(streamed, one_shot.output.data);
//! assert_eq!(session.h().data, &one_shot.h_n.data[..]);
//! ```
//!
//! A session allocates when it is created and when a chunk is larger than any before; after
//! that, chunks of the sizes it has seen allocate nothing in recur (see `docs/SERVING.md` for
//! what a thread pool may allocate).

use std::borrow::Borrow;
use std::sync::Arc;

use crate::config::Mode;
use crate::error::{Error, Result};
use crate::forward::{ForwardInput, OutputBuffers, Outputs, Workspace, MAX_CALL_BYTES};
use crate::model::Model;
use crate::tensor::{Shape, Tensor, TensorView};

/// A stream's recurrent state, owned: what [`Session::snapshot`] returns and
/// [`Session::restore`] takes.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionState {
    /// `h`: `(num_layers, N, H_out)`.
    pub h: Tensor,
    /// `c` (LSTM only): `(num_layers, N, hidden_size)`.
    pub c: Option<Tensor>,
}

/// A stateful session of `N` independent streams (rows) over one unidirectional model.
///
/// `M` is how the session holds its model: `&Model`, `Arc<Model>` (the default, for sessions
/// that outlive the scope that loaded the model), or anything else that borrows a [`Model`].
///
/// Shapes, with `S = num_layers`, `H_out` = `proj_size` or `hidden_size`, `K` the chunk length:
/// - a chunk is `(K, N, input_size)`, `(N, K, input_size)` if the model is `batch_first`, or
///   `(K, input_size)` when `N == 1` (unbatched);
/// - its output is `(K, N, H_out)` (`(N, K, H_out)` batch-first, `(K, H_out)` unbatched);
/// - the state is `h` `(S, N, H_out)` and, for LSTM, `c` `(S, N, hidden_size)`.
#[derive(Debug)]
pub struct Session<M: Borrow<Model> = Arc<Model>> {
    model: M,
    batch: usize,
    /// `(S, N, H_out)`.
    h: Vec<f32>,
    /// `(S, N, H)`, LSTM; empty otherwise.
    c: Vec<f32>,
    h_shape: [usize; 3],
    c_shape: [usize; 3],
    ws: Workspace,
    out: OutputBuffers,
    /// The last chunk's output shape (its first `out_rank` entries).
    out_shape: [usize; 3],
    out_rank: usize,
    /// Whether the last chunk's output is in `gather.output` (some rows had no input) rather
    /// than in `out.output`.
    gathered: bool,
    gather: Gather,
}

/// Scratch for chunks in which some rows have no input: the active rows are gathered into a
/// smaller batch, run, and scattered back.
#[derive(Debug, Default)]
struct Gather {
    rows: Vec<usize>,
    lengths: Vec<usize>,
    x: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
    output: Vec<f32>,
}

impl<M: Borrow<Model>> Session<M> {
    /// A session of one stream with zero initial state.
    ///
    /// Errors if the model is bidirectional: its reverse direction reads each sequence from its
    /// end, which a stream has not reached yet.
    pub fn new(model: M) -> Result<Session<M>> {
        Session::with_batch(model, 1)
    }

    /// A session of `batch` independent streams, stepped together, with zero initial state.
    pub fn with_batch(model: M, batch: usize) -> Result<Session<M>> {
        let cfg = model.borrow().config();
        if cfg.bidirectional {
            return Err(Error::InvalidModel(format!(
                "a session needs a unidirectional model, and {cfg} is bidirectional: its reverse \
                 direction reads each sequence from its end, which a stream has not reached yet \
                 (run whole sequences with Model::forward instead)"
            )));
        }
        if batch == 0 {
            return Err(Error::InvalidInput(
                "a session needs at least one stream (batch = 0)".into(),
            ));
        }
        let s = cfg.num_layers;
        let (h_out, hid) = (cfg.output_hidden(), cfg.hidden_size);
        let lstm = cfg.mode == Mode::Lstm;
        Ok(Session {
            batch,
            h: vec![0.0; s * batch * h_out],
            c: if lstm {
                vec![0.0; s * batch * hid]
            } else {
                Vec::new()
            },
            h_shape: [s, batch, h_out],
            c_shape: [s, batch, hid],
            ws: Workspace::new(),
            out: OutputBuffers::new(),
            out_shape: [0; 3],
            out_rank: 3,
            gathered: false,
            gather: Gather::default(),
            model,
        })
    }

    /// The model.
    pub fn model(&self) -> &Model {
        self.model.borrow()
    }

    /// The number of streams `N`.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The hidden state `h`, `(num_layers, N, H_out)`: after a chunk, its `h_n`.
    pub fn h(&self) -> TensorView<'_> {
        TensorView {
            shape: &self.h_shape,
            data: &self.h,
        }
    }

    /// The cell state `c`, `(num_layers, N, hidden_size)` (LSTM; `None` otherwise).
    pub fn c(&self) -> Option<TensorView<'_>> {
        self.is_lstm().then(|| TensorView {
            shape: &self.c_shape,
            data: &self.c,
        })
    }

    fn is_lstm(&self) -> bool {
        self.model().config().mode == Mode::Lstm
    }

    /// Sets the state: `h` `(num_layers, N, H_out)` and, for an LSTM (and only then), `c`
    /// `(num_layers, N, hidden_size)`; with one stream the 2-D unbatched shapes
    /// `(num_layers, H_out)` / `(num_layers, hidden_size)` are accepted too.
    pub fn set_state(&mut self, h: TensorView<'_>, c: Option<TensorView<'_>>) -> Result<()> {
        check_state("h", &h, &self.h_shape, self.batch)?;
        match (self.is_lstm(), c) {
            (true, Some(c)) => check_state("c", &c, &self.c_shape, self.batch)?,
            (true, None) => {
                return Err(Error::InvalidInput(
                    "an LSTM session's state needs c as well as h".into(),
                ))
            }
            (false, Some(_)) => {
                return Err(Error::InvalidInput(format!(
                    "c was given, but {} has no cell state (only LSTM has c)",
                    self.model().config().mode
                )))
            }
            (false, None) => {}
        }
        self.h.copy_from_slice(h.data);
        if let Some(c) = c {
            self.c.copy_from_slice(c.data);
        }
        Ok(())
    }

    /// Zeroes the state of every stream (a fresh sequence, as PyTorch without `h0`).
    pub fn reset(&mut self) {
        self.h.fill(0.0);
        self.c.fill(0.0);
    }

    /// Zeroes the state of stream `row` only.
    pub fn reset_row(&mut self, row: usize) -> Result<()> {
        if row >= self.batch {
            return Err(Error::InvalidInput(format!(
                "row {row} is out of range: the session has {} streams",
                self.batch
            )));
        }
        let [s, n, w] = self.h_shape;
        for layer in 0..s {
            self.h[(layer * n + row) * w..][..w].fill(0.0);
        }
        if self.is_lstm() {
            let hid = self.c_shape[2];
            for layer in 0..s {
                self.c[(layer * n + row) * hid..][..hid].fill(0.0);
            }
        }
        Ok(())
    }

    /// A copy of the state, to [`Session::restore`] later (or into another session of the same
    /// model: a fork, as beam search needs).
    pub fn snapshot(&self) -> SessionState {
        SessionState {
            h: Tensor {
                shape: self.h_shape.to_vec(),
                data: self.h.clone(),
            },
            c: self.is_lstm().then(|| Tensor {
                shape: self.c_shape.to_vec(),
                data: self.c.clone(),
            }),
        }
    }

    /// Restores a [`SessionState`] (shapes checked as [`Session::set_state`] does).
    pub fn restore(&mut self, state: &SessionState) -> Result<()> {
        self.set_state(state.h.view(), state.c.as_ref().map(Tensor::view))
    }

    /// A new session over the same model with a copy of this one's state: the two continue
    /// independently.
    pub fn fork(&self) -> Session<M>
    where
        M: Clone,
    {
        let mut s = Session::with_batch(self.model.clone(), self.batch)
            .expect("this session's model and batch were accepted once");
        s.h.copy_from_slice(&self.h);
        s.c.copy_from_slice(&self.c);
        s
    }

    /// Runs one timestep: `x` is `(N, input_size)`; returns the output `(N, H_out)` (the new
    /// `h` of the last layer).
    pub fn step(&mut self, x: &[f32]) -> Result<&[f32]> {
        let i = self.model().config().input_size;
        let shape = [1, self.batch, i];
        let shape: &[usize] = if self.model().config().batch_first {
            // (N, 1, I) and (1, N, I) are the same bytes.
            &[self.batch, 1, i]
        } else {
            &shape
        };
        let view = TensorView::new(shape, x).map_err(|_| {
            Error::InvalidInput(format!(
                "a step's input has {} values, expected N * input_size = {} * {i} = {}",
                x.len(),
                self.batch,
                self.batch * i
            ))
        })?;
        Ok(self.feed(view)?.data)
    }

    /// Runs a chunk of `K >= 1` timesteps of every stream (shapes in the type's docs) and
    /// returns its output; the state advances by `K` steps. On error the state is unchanged.
    pub fn feed(&mut self, chunk: TensorView<'_>) -> Result<TensorView<'_>> {
        self.feed_impl(chunk, None)
    }

    /// Runs a chunk in which stream `b` has `lengths[b]` valid steps, `0..=K` (its first
    /// `lengths[b]` steps; the rest is padding, as PyTorch's packed sequences). A stream with
    /// length 0 does not advance. The output is zero past each stream's length.
    pub fn feed_with_lengths(
        &mut self,
        chunk: TensorView<'_>,
        lengths: &[usize],
    ) -> Result<TensorView<'_>> {
        self.feed_impl(chunk, Some(lengths))
    }

    fn feed_impl(
        &mut self,
        chunk: TensorView<'_>,
        lengths: Option<&[usize]>,
    ) -> Result<TensorView<'_>> {
        let cfg = self.model.borrow().config();
        let (k, batched) = match *chunk.shape {
            [a, b, _] => {
                let (k, n) = if cfg.batch_first { (b, a) } else { (a, b) };
                if n != self.batch {
                    let layout = if cfg.batch_first {
                        "(N, K, input_size)"
                    } else {
                        "(K, N, input_size)"
                    };
                    return Err(Error::InvalidInput(format!(
                        "chunk has shape {}: {layout} with N = {n}, but the session has {} streams",
                        Shape(chunk.shape),
                        self.batch
                    )));
                }
                (k, true)
            }
            [k, _] if self.batch == 1 => (k, false),
            _ => {
                let layout = if cfg.batch_first {
                    "(N, K, input_size)"
                } else {
                    "(K, N, input_size)"
                };
                let also = if self.batch == 1 {
                    " or 2-D (K, input_size)"
                } else {
                    ""
                };
                return Err(Error::InvalidInput(format!(
                    "chunk has shape {}, expected 3-D {layout} with N = {}{also}",
                    Shape(chunk.shape),
                    self.batch
                )));
            }
        };
        let (s, w) = (self.h_shape[0], self.h_shape[2]);
        let width = cfg.output_hidden();
        self.out_rank = if batched { 3 } else { 2 };
        self.out_shape = match (batched, cfg.batch_first) {
            (false, _) => [k, width, 0],
            (true, false) => [k, self.batch, width],
            (true, true) => [self.batch, k, width],
        };
        self.gathered = false;
        if let Some(lens) = lengths {
            if !batched {
                return Err(Error::InvalidInput(format!(
                    "lengths were given with a 2-D (unbatched) chunk of shape {}; lengths need \
                     a 3-D chunk with a batch dimension",
                    Shape(chunk.shape)
                )));
            }
            if lens.len() != self.batch {
                return Err(Error::InvalidInput(format!(
                    "lengths has {} elements, expected one per stream ({})",
                    lens.len(),
                    self.batch
                )));
            }
            if let Some((b, &len)) = lens.iter().enumerate().find(|(_, &v)| v > k) {
                return Err(Error::InvalidInput(format!(
                    "lengths[{b}] = {len} is outside 0..={k} (the chunk's length)"
                )));
            }
            if lens.contains(&0) {
                return self.feed_gathered(chunk, k, lens);
            }
        }
        let h_shape = [s, w];
        let c_shape = [s, self.c_shape[2]];
        let (h_dims, c_dims): (&[usize], &[usize]) = if batched {
            (&self.h_shape, &self.c_shape)
        } else {
            (&h_shape, &c_shape)
        };
        let lstm = cfg.mode == Mode::Lstm;
        let fi = ForwardInput {
            input: chunk,
            h0: Some(TensorView {
                shape: h_dims,
                data: &self.h,
            }),
            c0: lstm.then_some(TensorView {
                shape: c_dims,
                data: &self.c,
            }),
            lengths,
        };
        self.model
            .borrow()
            .forward_into(&fi, &mut self.ws, &mut self.out)?;
        self.h.copy_from_slice(&self.out.h_n);
        self.c.copy_from_slice(&self.out.c_n);
        Ok(TensorView {
            shape: &self.out_shape[..self.out_rank],
            data: &self.out.output,
        })
    }

    /// A chunk in which some streams have no input: run the others as a smaller batch.
    fn feed_gathered(
        &mut self,
        chunk: TensorView<'_>,
        k: usize,
        lens: &[usize],
    ) -> Result<TensorView<'_>> {
        let cfg = self.model.borrow().config();
        let (n, i) = (self.batch, cfg.input_size);
        let [s, _, w] = self.h_shape;
        let hid = self.c_shape[2];
        let lstm = cfg.mode == Mode::Lstm;
        let bf = cfg.batch_first;
        if chunk.data.len() != k * n * i {
            return Err(Error::InvalidInput(format!(
                "chunk has shape {} but {} elements",
                Shape(chunk.shape),
                chunk.data.len()
            )));
        }
        let g = &mut self.gather;
        g.rows.clear();
        g.rows.extend((0..n).filter(|&b| lens[b] > 0));
        let m = g.rows.len();
        g.output.clear();
        g.output.resize(k * n * w, 0.0);
        self.gathered = true;
        if m == 0 {
            return Ok(TensorView {
                shape: &self.out_shape[..self.out_rank],
                data: &g.output,
            });
        }
        g.lengths.clear();
        g.lengths.extend(g.rows.iter().map(|&b| lens[b]));
        // Gather the active rows' input, in the model's layout, and their state.
        g.x.clear();
        if bf {
            for &b in &g.rows {
                g.x.extend_from_slice(&chunk.data[b * k * i..(b + 1) * k * i]);
            }
        } else {
            for t in 0..k {
                for &b in &g.rows {
                    g.x.extend_from_slice(&chunk.data[(t * n + b) * i..][..i]);
                }
            }
        }
        gather_rows(&self.h, s, n, w, &g.rows, &mut g.h0);
        if lstm {
            gather_rows(&self.c, s, n, hid, &g.rows, &mut g.c0);
        }
        let x_shape = if bf { [m, k, i] } else { [k, m, i] };
        let (h_shape, c_shape) = ([s, m, w], [s, m, hid]);
        let fi = ForwardInput {
            input: TensorView {
                shape: &x_shape,
                data: &g.x,
            },
            h0: Some(TensorView {
                shape: &h_shape,
                data: &g.h0,
            }),
            c0: lstm.then_some(TensorView {
                shape: &c_shape,
                data: &g.c0,
            }),
            lengths: Some(&g.lengths),
        };
        self.model
            .borrow()
            .forward_into(&fi, &mut self.ws, &mut self.out)?;
        // Scatter output rows and the new state back.
        for (r, &b) in g.rows.iter().enumerate() {
            for t in 0..k {
                let (src, dst) = if bf {
                    ((r * k + t) * w, (b * k + t) * w)
                } else {
                    ((t * m + r) * w, (t * n + b) * w)
                };
                g.output[dst..dst + w].copy_from_slice(&self.out.output[src..src + w]);
            }
        }
        scatter_rows(&self.out.h_n, s, n, w, &g.rows, &mut self.h);
        if lstm {
            scatter_rows(&self.out.c_n, s, n, hid, &g.rows, &mut self.c);
        }
        Ok(TensorView {
            shape: &self.out_shape[..self.out_rank],
            data: &g.output,
        })
    }

    /// The output of the last chunk (see [`Session::feed`]); empty before the first.
    pub fn output(&self) -> TensorView<'_> {
        let data = if self.gathered {
            &self.gather.output
        } else {
            &self.out.output
        };
        TensorView {
            shape: &self.out_shape[..self.out_rank],
            data,
        }
    }
}

/// Checks a state tensor against the session's `(S, N, W)`, accepting `(S, W)` when `N == 1`.
fn check_state(name: &str, t: &TensorView<'_>, want: &[usize; 3], batch: usize) -> Result<()> {
    let ok = t.shape == want || (batch == 1 && t.shape == [want[0], want[2]]);
    if !ok || t.data.len() != want.iter().product::<usize>() {
        return Err(Error::InvalidInput(format!(
            "{name} has shape {}, expected {} for this session",
            Shape(t.shape),
            Shape(want)
        )));
    }
    Ok(())
}

/// Copies rows `rows` of a `(S, N, w)` state into a `(S, rows.len(), w)` buffer.
fn gather_rows(src: &[f32], s: usize, n: usize, w: usize, rows: &[usize], dst: &mut Vec<f32>) {
    dst.clear();
    for layer in 0..s {
        for &b in rows {
            dst.extend_from_slice(&src[(layer * n + b) * w..][..w]);
        }
    }
}

/// Copies a `(S, rows.len(), w)` buffer back into rows `rows` of a `(S, N, w)` state.
fn scatter_rows(src: &[f32], s: usize, n: usize, w: usize, rows: &[usize], dst: &mut [f32]) {
    let m = rows.len();
    for layer in 0..s {
        for (r, &b) in rows.iter().enumerate() {
            dst[(layer * n + b) * w..][..w].copy_from_slice(&src[(layer * m + r) * w..][..w]);
        }
    }
}

/// Runs `fi` through a [`Session`] `chunk` timesteps at a time and assembles the outputs of the
/// whole sequence: bit-identical to `model.forward(fi)` (what `recur run --chunk K` does).
///
/// With `lengths`, each chunk runs the streams that still have steps in it. Errors for a
/// bidirectional model, `chunk == 0`, or any input [`Model::forward`] would reject.
pub fn run_chunked(model: &Model, fi: &ForwardInput<'_>, chunk: usize) -> Result<Outputs> {
    let cfg = model.config();
    if chunk == 0 {
        return Err(Error::InvalidInput(
            "the chunk size must be at least 1 step".into(),
        ));
    }
    let shape = fi.input.shape;
    let (l, n, batched) = match *shape {
        [a, b, _] if cfg.batch_first => (b, a, true),
        [a, b, _] => (a, b, true),
        [a, _] => (a, 1, false),
        // Let the engine name what is wrong with the input.
        _ => return Err(engine_error(model, fi)),
    };
    if fi.input.data.len() != shape.iter().product::<usize>()
        || shape.last() != Some(&cfg.input_size)
        || l == 0
        || n == 0
    {
        return Err(engine_error(model, fi));
    }
    let mut session = Session::with_batch(model, n)?;
    let (s, w, hid) = (cfg.num_layers, cfg.output_hidden(), cfg.hidden_size);
    if fi.h0.is_some() || fi.c0.is_some() {
        let fits = |t: Option<TensorView<'_>>| t.map_or(true, |t| t.shape.len() == shape.len());
        let set = match fi.h0 {
            Some(h0) if fits(fi.h0) && fits(fi.c0) => session.set_state(h0, fi.c0),
            _ => Err(Error::InvalidInput(String::new())),
        };
        if set.is_err() {
            // A state that does not fit: the engine's message names the tensor and shapes.
            return Err(engine_error(model, fi));
        }
    }
    if let Some(lens) = fi.lengths {
        if !batched || lens.len() != n || lens.iter().any(|&v| v == 0 || v > l) {
            return Err(engine_error(model, fi));
        }
    }
    let i = cfg.input_size;
    let bf = cfg.batch_first && batched;
    // The whole sequence's output, bounded as a one-shot call's memory is (the session's own
    // scratch is per chunk): an error, not an abort, when it is too large.
    let too_large = || {
        Error::InvalidInput(format!(
            "input has shape {}: its output of {l} x {n} x {w} floats does not fit in \
             MAX_CALL_BYTES = {MAX_CALL_BYTES} bytes or could not be allocated",
            Shape(shape)
        ))
    };
    let out_len = l
        .checked_mul(n)
        .and_then(|v| v.checked_mul(w))
        .filter(|&v| (v as u64).saturating_mul(4) <= MAX_CALL_BYTES)
        .ok_or_else(too_large)?;
    let mut output = Vec::new();
    output.try_reserve_exact(out_len).map_err(|_| too_large())?;
    output.resize(out_len, 0.0f32);
    let mut x = Vec::new();
    let mut chunk_lens = vec![0usize; n];
    let mut t0 = 0;
    while t0 < l {
        let k = chunk.min(l - t0);
        // The chunk's input in the model's layout.
        let x_shape: Vec<usize> = match (batched, bf) {
            (false, _) => vec![k, i],
            (true, false) => vec![k, n, i],
            (true, true) => vec![n, k, i],
        };
        let xs: &[f32] = if bf {
            x.clear();
            for b in 0..n {
                x.extend_from_slice(&fi.input.data[(b * l + t0) * i..(b * l + t0 + k) * i]);
            }
            &x
        } else {
            &fi.input.data[t0 * n * i..(t0 + k) * n * i]
        };
        let view = TensorView {
            shape: &x_shape,
            data: xs,
        };
        let out = match fi.lengths {
            Some(lens) => {
                for (cl, &len) in chunk_lens.iter_mut().zip(lens) {
                    *cl = len.saturating_sub(t0).min(k);
                }
                session.feed_with_lengths(view, &chunk_lens)?
            }
            None => session.feed(view)?,
        };
        if bf {
            for b in 0..n {
                output[(b * l + t0) * w..(b * l + t0 + k) * w]
                    .copy_from_slice(&out.data[b * k * w..(b + 1) * k * w]);
            }
        } else {
            output[t0 * n * w..(t0 + k) * n * w].copy_from_slice(out.data);
        }
        t0 += k;
    }
    let out_shape = match (batched, bf) {
        (false, _) => vec![l, w],
        (true, false) => vec![l, n, w],
        (true, true) => vec![n, l, w],
    };
    let state_shape = |width: usize| {
        if batched {
            vec![s, n, width]
        } else {
            vec![s, width]
        }
    };
    Ok(Outputs {
        output: Tensor {
            shape: out_shape,
            data: output,
        },
        h_n: Tensor {
            shape: state_shape(w),
            data: session.h().data.to_vec(),
        },
        c_n: session.c().map(|c| Tensor {
            shape: state_shape(hid),
            data: c.data.to_vec(),
        }),
    })
}

/// The error [`Model::forward`] reports for an input that [`run_chunked`] found invalid (its
/// checks run before any arithmetic, so this costs nothing).
fn engine_error(model: &Model, fi: &ForwardInput<'_>) -> Error {
    match model.forward(fi) {
        Err(e) => e,
        Ok(_) => Error::InvalidInput(
            "the input does not fit the model for a chunked run (shapes of input, h0, c0 or \
             lengths)"
                .into(),
        ),
    }
}
