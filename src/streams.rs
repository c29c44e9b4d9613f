//! Many independent streams over one model, stepped together: the serving runtime.
//!
//! A [`StreamRuntime`] holds the recurrent state of any number of streams (hundreds). Streams
//! join and leave at any step. Each [`StreamRuntime::step`] takes the streams that were given an
//! input since the last step, gathers their inputs and states into one batch, runs one
//! [`Model::forward_into`] over it (`L = 1`, `N` = the number of those streams) and scatters the
//! new states back. One batched step streams the recurrent weights from cache once for all its
//! streams instead of once per stream, so 100 streams cost far less than 100 single-stream
//! steps. Every row's arithmetic is independent of the others (SPEC §4), so each stream's results
//! are bit-identical to running it alone.
//!
//! ```
//! use recur::bench::random_state_dict;
//! use recur::streams::StreamRuntime;
//! use recur::{Config, Mode, Model};
//! let config = Config::new(Mode::Gru, 2, 4);
//! let model = Model::from_state_dict(config.clone(), &random_state_dict(&config, 3)).unwrap();
//! let mut rt = StreamRuntime::new(&model).unwrap();
//! let a = rt.join();
//! let b = rt.join();
//! rt.push(a, &[0.5, -1.0]).unwrap();
//! rt.push(b, &[0.25, 2.0]).unwrap();
//! assert_eq!(rt.step().unwrap(), 2); // one batched step of both streams
//! let out_a = rt.output(a).unwrap().to_vec(); // (H_out,)
//! rt.leave(b).unwrap();
//! rt.push(a, &[1.0, 0.0]).unwrap();
//! rt.step().unwrap();
//! assert!(rt.output(b).is_none());
//! # let _ = out_a;
//! ```
//!
//! Threads: a step runs on the current rayon pool, which splits batches of 16 streams or more
//! across its threads. Run the runtime inside a 1-thread pool (`ThreadPool::install`) to keep
//! each step on the driving thread, as a server with one runtime per core does.

use std::borrow::Borrow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::{random_state_dict, BenchCase, SplitRng};
use crate::config::Mode;
use crate::error::{Error, Result};
use crate::forward::{ForwardInput, OutputBuffers, Workspace};
use crate::model::Model;
use crate::session::Session;
use crate::tensor::TensorView;

/// A handle to one stream of a [`StreamRuntime`]. A handle outlives its stream: after
/// [`StreamRuntime::leave`], every call with it is an error, even once its slot is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamId {
    slot: u32,
    generation: u32,
}

impl StreamId {
    /// The stream's slot: small and dense, unique among the runtime's live streams (a slot is
    /// reused after its stream leaves).
    pub fn slot(self) -> usize {
        self.slot as usize
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    generation: u32,
    live: bool,
    /// An input is waiting for the next step.
    pending: bool,
    /// The stream's row in the last step's batch, if it took part.
    row: Option<u32>,
}

/// The state of many streams over one unidirectional model, stepped as one batch.
///
/// Shapes, with `S = num_layers`, `H_out` = `proj_size` or `hidden_size`:
/// - a stream's input for one step: `(input_size,)`;
/// - its output after the step: `(H_out,)` (the last layer's new `h`);
/// - its state: `h` `(S, H_out)` and, for LSTM, `c` `(S, hidden_size)`.
#[derive(Debug)]
pub struct StreamRuntime<M: Borrow<Model> = Arc<Model>> {
    model: M,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    pending: usize,
    /// Per slot: `h` `(S, H_out)`, `c` `(S, H)` (LSTM), the pending input `(I,)`.
    h: Vec<f32>,
    c: Vec<f32>,
    x: Vec<f32>,
    /// Step scratch: the stepping slots, their gathered inputs `(1, B, I)`, `h0` `(S, B, H_out)`
    /// and `c0` `(S, B, H)`.
    active: Vec<u32>,
    xb: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
    ws: Workspace,
    out: OutputBuffers,
}

impl<M: Borrow<Model>> StreamRuntime<M> {
    /// An empty runtime. Errors if the model is bidirectional (a stream has no end to read
    /// backwards from).
    pub fn new(model: M) -> Result<StreamRuntime<M>> {
        StreamRuntime::with_capacity(model, 0)
    }

    /// An empty runtime with room for `streams` streams: joining, stepping and leaving within
    /// that many allocate nothing in recur once every batch size has been seen.
    pub fn with_capacity(model: M, streams: usize) -> Result<StreamRuntime<M>> {
        let cfg = model.borrow().config();
        if cfg.bidirectional {
            return Err(Error::InvalidModel(format!(
                "a stream runtime needs a unidirectional model, and {cfg} is bidirectional: its \
                 reverse direction reads each sequence from its end, which a stream has not \
                 reached yet"
            )));
        }
        let (s, w, hid, i) = (
            cfg.num_layers,
            cfg.output_hidden(),
            cfg.hidden_size,
            cfg.input_size,
        );
        let lstm = cfg.mode == Mode::Lstm;
        Ok(StreamRuntime {
            slots: Vec::with_capacity(streams),
            free: Vec::with_capacity(streams),
            live: 0,
            pending: 0,
            h: Vec::with_capacity(streams * s * w),
            c: Vec::with_capacity(if lstm { streams * s * hid } else { 0 }),
            x: Vec::with_capacity(streams * i),
            active: Vec::with_capacity(streams),
            xb: Vec::with_capacity(streams * i),
            h0: Vec::with_capacity(streams * s * w),
            c0: Vec::with_capacity(if lstm { streams * s * hid } else { 0 }),
            ws: Workspace::new(),
            out: OutputBuffers::new(),
            model,
        })
    }

    /// The model.
    pub fn model(&self) -> &Model {
        self.model.borrow()
    }

    /// The number of live streams.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no stream is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The number of streams with an input waiting for the next step.
    pub fn pending(&self) -> usize {
        self.pending
    }

    fn dims(&self) -> (usize, usize, usize, usize, bool) {
        let cfg = self.model.borrow().config();
        (
            cfg.num_layers,
            cfg.output_hidden(),
            cfg.hidden_size,
            cfg.input_size,
            cfg.mode == Mode::Lstm,
        )
    }

    /// Adds a stream with zero state.
    pub fn join(&mut self) -> StreamId {
        let (s, w, hid, i, lstm) = self.dims();
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 streams");
                self.slots.push(Slot {
                    generation: 0,
                    live: false,
                    pending: false,
                    row: None,
                });
                self.h.resize(self.h.len() + s * w, 0.0);
                if lstm {
                    self.c.resize(self.c.len() + s * hid, 0.0);
                }
                self.x.resize(self.x.len() + i, 0.0);
                slot
            }
        };
        let sl = &mut self.slots[slot as usize];
        sl.live = true;
        sl.pending = false;
        sl.row = None;
        self.live += 1;
        let id = StreamId {
            slot,
            generation: sl.generation,
        };
        self.zero_state(slot as usize);
        id
    }

    /// Adds a stream with the given state (`h` `(S, H_out)`, `c` `(S, H)` for LSTM).
    pub fn join_with_state(&mut self, h: &[f32], c: Option<&[f32]>) -> Result<StreamId> {
        self.check_state(h, c)?;
        let id = self.join();
        self.set_state(id, h, c)?;
        Ok(id)
    }

    /// Removes a stream; its handle becomes invalid. A pending input is dropped.
    pub fn leave(&mut self, id: StreamId) -> Result<()> {
        let slot = self.slot(id)?;
        let sl = &mut self.slots[slot];
        if sl.pending {
            self.pending -= 1;
        }
        sl.live = false;
        sl.pending = false;
        sl.row = None;
        sl.generation = sl.generation.wrapping_add(1);
        self.live -= 1;
        self.free.push(id.slot);
        Ok(())
    }

    /// Whether `id` is a live stream of this runtime.
    pub fn contains(&self, id: StreamId) -> bool {
        self.slot(id).is_ok()
    }

    fn slot(&self, id: StreamId) -> Result<usize> {
        match self.slots.get(id.slot as usize) {
            Some(sl) if sl.live && sl.generation == id.generation => Ok(id.slot as usize),
            _ => Err(Error::InvalidInput(format!(
                "stream {} (generation {}) is not live in this runtime: it left, or belongs to \
                 another runtime",
                id.slot, id.generation
            ))),
        }
    }

    /// Gives stream `id` its input `(input_size,)` for the next step.
    pub fn push(&mut self, id: StreamId, x: &[f32]) -> Result<()> {
        let slot = self.slot(id)?;
        let i = self.model.borrow().config().input_size;
        if x.len() != i {
            return Err(Error::InvalidInput(format!(
                "stream {slot}'s input has {} values, expected input_size = {i}",
                x.len()
            )));
        }
        if self.slots[slot].pending {
            return Err(Error::InvalidInput(format!(
                "stream {slot} already has an input for the next step"
            )));
        }
        self.x[slot * i..(slot + 1) * i].copy_from_slice(x);
        self.slots[slot].pending = true;
        self.pending += 1;
        Ok(())
    }

    /// Runs one step of every stream with a pending input, as one batch; returns how many
    /// streams stepped (0: nothing was pending, nothing ran).
    ///
    /// Afterwards [`StreamRuntime::output`] gives each stepped stream's output. On error (which
    /// a valid runtime never produces) no state changes.
    pub fn step(&mut self) -> Result<usize> {
        let (s, w, hid, i, lstm) = self.dims();
        self.active.clear();
        for (slot, sl) in self.slots.iter_mut().enumerate() {
            sl.row = None;
            if sl.live && sl.pending {
                self.active.push(slot as u32);
            }
        }
        let b = self.active.len();
        if b == 0 {
            return Ok(0);
        }
        // Gather: inputs (1, B, I), h0 (S, B, H_out), c0 (S, B, H).
        self.xb.clear();
        for &slot in &self.active {
            let slot = slot as usize;
            self.xb.extend_from_slice(&self.x[slot * i..(slot + 1) * i]);
        }
        self.h0.clear();
        self.c0.clear();
        for layer in 0..s {
            for &slot in &self.active {
                let at = (slot as usize * s + layer) * w;
                self.h0.extend_from_slice(&self.h[at..at + w]);
            }
            if lstm {
                for &slot in &self.active {
                    let at = (slot as usize * s + layer) * hid;
                    self.c0.extend_from_slice(&self.c[at..at + hid]);
                }
            }
        }
        let cfg = self.model.borrow().config();
        // (1, B, I) and batch-first (B, 1, I) are the same bytes.
        let x_shape = if cfg.batch_first {
            [b, 1, i]
        } else {
            [1, b, i]
        };
        let (h_shape, c_shape) = ([s, b, w], [s, b, hid]);
        let fi = ForwardInput {
            input: TensorView {
                shape: &x_shape,
                data: &self.xb,
            },
            h0: Some(TensorView {
                shape: &h_shape,
                data: &self.h0,
            }),
            c0: lstm.then_some(TensorView {
                shape: &c_shape,
                data: &self.c0,
            }),
            lengths: None,
        };
        self.model
            .borrow()
            .forward_into(&fi, &mut self.ws, &mut self.out)?;
        // Scatter the new states back; the outputs stay in `out`, row r for active[r].
        for layer in 0..s {
            for (r, &slot) in self.active.iter().enumerate() {
                let (src, dst) = ((layer * b + r) * w, (slot as usize * s + layer) * w);
                self.h[dst..dst + w].copy_from_slice(&self.out.h_n[src..src + w]);
                if lstm {
                    let (src, dst) = ((layer * b + r) * hid, (slot as usize * s + layer) * hid);
                    self.c[dst..dst + hid].copy_from_slice(&self.out.c_n[src..src + hid]);
                }
            }
        }
        for (r, &slot) in self.active.iter().enumerate() {
            let sl = &mut self.slots[slot as usize];
            sl.pending = false;
            sl.row = Some(r as u32);
        }
        self.pending = 0;
        Ok(b)
    }

    /// Stream `id`'s output `(H_out,)` from the last step, if it took part in it.
    pub fn output(&self, id: StreamId) -> Option<&[f32]> {
        let slot = self.slot(id).ok()?;
        let row = self.slots[slot].row? as usize;
        let w = self.model.borrow().config().output_hidden();
        Some(&self.out.output[row * w..(row + 1) * w])
    }

    /// Stream `id`'s hidden state `h`, `(S, H_out)`.
    pub fn h(&self, id: StreamId) -> Result<&[f32]> {
        let slot = self.slot(id)?;
        let (s, w, ..) = self.dims();
        Ok(&self.h[slot * s * w..(slot + 1) * s * w])
    }

    /// Stream `id`'s cell state `c`, `(S, hidden_size)` (LSTM; `None` otherwise).
    pub fn c(&self, id: StreamId) -> Result<Option<&[f32]>> {
        let slot = self.slot(id)?;
        let (s, _, hid, _, lstm) = self.dims();
        Ok(lstm.then(|| &self.c[slot * s * hid..(slot + 1) * s * hid]))
    }

    fn check_state(&self, h: &[f32], c: Option<&[f32]>) -> Result<()> {
        let (s, w, hid, _, lstm) = self.dims();
        if h.len() != s * w {
            return Err(Error::InvalidInput(format!(
                "h has {} values, expected num_layers * H_out = {s} * {w} = {}",
                h.len(),
                s * w
            )));
        }
        match (lstm, c) {
            (true, Some(c)) if c.len() != s * hid => Err(Error::InvalidInput(format!(
                "c has {} values, expected num_layers * hidden_size = {s} * {hid} = {}",
                c.len(),
                s * hid
            ))),
            (true, None) => Err(Error::InvalidInput(
                "an LSTM stream's state needs c as well as h".into(),
            )),
            (false, Some(_)) => Err(Error::InvalidInput(
                "c was given, but only an LSTM has a cell state".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Sets stream `id`'s state: `h` `(S, H_out)`, and `c` `(S, H)` for an LSTM (only).
    pub fn set_state(&mut self, id: StreamId, h: &[f32], c: Option<&[f32]>) -> Result<()> {
        let slot = self.slot(id)?;
        self.check_state(h, c)?;
        let (s, w, hid, ..) = self.dims();
        self.h[slot * s * w..(slot + 1) * s * w].copy_from_slice(h);
        if let Some(c) = c {
            self.c[slot * s * hid..(slot + 1) * s * hid].copy_from_slice(c);
        }
        Ok(())
    }

    /// Zeroes stream `id`'s state (a new sequence on the same stream).
    pub fn reset(&mut self, id: StreamId) -> Result<()> {
        let slot = self.slot(id)?;
        self.zero_state(slot);
        Ok(())
    }

    fn zero_state(&mut self, slot: usize) {
        let (s, w, hid, _, lstm) = self.dims();
        self.h[slot * s * w..(slot + 1) * s * w].fill(0.0);
        if lstm {
            self.c[slot * s * hid..(slot + 1) * s * hid].fill(0.0);
        }
    }
}

/// Latency percentiles and throughput of one way of stepping streams.
#[derive(Clone, Debug, PartialEq)]
pub struct StepTimes {
    /// Median latency of one call (one stream's step, or one batched step of every stream),
    /// microseconds.
    pub p50_us: f64,
    /// 99th percentile of the same, microseconds.
    pub p99_us: f64,
    /// Stream-steps per second over the whole run.
    pub stream_steps_per_s: f64,
    /// Calls timed.
    pub calls: usize,
}

impl StepTimes {
    fn from_latencies(mut lat_s: Vec<f64>, stream_steps: usize, total_s: f64) -> StepTimes {
        lat_s.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            let idx = ((lat_s.len() as f64 - 1.0) * p).round() as usize;
            lat_s.get(idx).copied().unwrap_or(0.0) * 1e6
        };
        StepTimes {
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            stream_steps_per_s: stream_steps as f64 / total_s.max(1e-12),
            calls: lat_s.len(),
        }
    }
}

/// What [`bench_streams`] measured: `S` streams of one model stepped one at a time (one
/// [`Session`] step per stream) and batched (one [`StreamRuntime`] step for all).
#[derive(Clone, Debug)]
pub struct StreamsBenchResult {
    /// The case (its `batch` and `seq_len` are not used: every stream has batch 1).
    pub case: BenchCase,
    /// Number of streams `S`.
    pub streams: usize,
    /// Threads of the rayon pool it ran on.
    pub threads: usize,
    /// The kernel tier.
    pub isa: recur_kernels::Isa,
    /// One stream's step at a time.
    pub single: StepTimes,
    /// One batched step of all streams at a time.
    pub batched: StepTimes,
    /// Bytes of weights one step of one stream reads (`W_ih`, `W_hh`, `W_hr`, biases).
    pub weight_bytes: usize,
}

impl StreamsBenchResult {
    /// Batched throughput over single-stream throughput (stream-steps per second).
    pub fn batched_speedup(&self) -> f64 {
        self.batched.stream_steps_per_s / self.single.stream_steps_per_s.max(1e-12)
    }

    /// Floating-point operations of one stream-step (multiply-adds count 2).
    pub fn flops_per_stream_step(&self) -> f64 {
        let one = BenchCase {
            batch: 1,
            seq_len: 1,
            ..self.case.clone()
        };
        one.flops()
    }

    /// The rate at which single-stream stepping streams weights, GB/s: one stream's step is
    /// bound by reading every weight once, from cache or memory.
    pub fn single_weight_gbps(&self) -> f64 {
        self.weight_bytes as f64 * self.single.stream_steps_per_s / 1e9
    }

    /// The arithmetic rate of batched stepping, GFLOP/s: a large batch's step is bound by the
    /// matrix arithmetic.
    pub fn batched_gflops(&self) -> f64 {
        self.flops_per_stream_step() * self.batched.stream_steps_per_s / 1e9
    }

    /// The JSON line `recur bench --streams` prints (its last line): latency percentiles and
    /// throughput of both ways, and `"batched_speedup"`.
    pub fn json(&self) -> String {
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        serde_json::json!({
            "name": self.case.name,
            "streams": self.streams,
            "threads": self.threads,
            "isa": self.isa.name(),
            "single_p50_us": r(self.single.p50_us),
            "single_p99_us": r(self.single.p99_us),
            "single_stream_steps_per_s": r(self.single.stream_steps_per_s),
            "single_weight_gbps": r(self.single_weight_gbps()),
            "batched_p50_us": r(self.batched.p50_us),
            "batched_p99_us": r(self.batched.p99_us),
            "batched_stream_steps_per_s": r(self.batched.stream_steps_per_s),
            "batched_gflops": r(self.batched_gflops()),
            "batched_speedup": r(self.batched_speedup()),
        })
        .to_string()
    }
}

/// Measures `streams` concurrent streams of `case`'s model (random PyTorch-init weights) on the
/// current rayon pool: stepped one at a time (each stream's [`Session::step`] in turn) and
/// batched (one [`StreamRuntime::step`] per round), each for at least `min_time` and
/// `min_rounds` rounds after a warm-up. A round steps every stream once.
pub fn bench_streams(
    case: &BenchCase,
    streams: usize,
    min_time: Duration,
    min_rounds: usize,
) -> Result<StreamsBenchResult> {
    if streams == 0 {
        return Err(Error::InvalidInput("--streams must be at least 1".into()));
    }
    let cfg = &case.config;
    let model = Model::from_state_dict(cfg.clone(), &random_state_dict(cfg, 1))?;
    let i = cfg.input_size;
    // A pool of step inputs; stream k reads entry (k + round) mod POOL.
    const POOL: usize = 64;
    let inputs = SplitRng::new(2).vec(POOL * i, 1.0);
    let x_of = |stream: usize, round: usize| {
        let at = (stream + round) % POOL;
        &inputs[at * i..(at + 1) * i]
    };
    let mut sessions = (0..streams)
        .map(|_| Session::new(&model))
        .collect::<Result<Vec<_>>>()?;
    let single = timed_rounds(min_time, min_rounds, streams, |round, lat| {
        for (k, session) in sessions.iter_mut().enumerate() {
            let t = Instant::now();
            std::hint::black_box(session.step(x_of(k, round))?);
            lat.push(t.elapsed().as_secs_f64());
        }
        Ok(())
    })?;
    drop(sessions);

    let mut rt = StreamRuntime::with_capacity(&model, streams)?;
    let ids: Vec<StreamId> = (0..streams).map(|_| rt.join()).collect();
    let batched = timed_rounds(min_time, min_rounds, streams, |round, lat| {
        let t = Instant::now();
        for (k, &id) in ids.iter().enumerate() {
            rt.push(id, x_of(k, round))?;
        }
        std::hint::black_box(rt.step()?);
        lat.push(t.elapsed().as_secs_f64());
        Ok(())
    })?;

    let weight_bytes = model.recurrent_weight_bytes()
        + (0..cfg.num_layers)
            .map(|l| {
                let gh = cfg.gates() * cfg.hidden_size;
                4 * (gh * cfg.layer_input_size(l) + gh)
            })
            .sum::<usize>();
    Ok(StreamsBenchResult {
        case: case.clone(),
        streams,
        threads: rayon::current_num_threads(),
        isa: model.isa(),
        single,
        batched,
        weight_bytes,
    })
}

/// Runs `round` (which steps every stream once and records call latencies, in seconds) through
/// a warm-up of a tenth of `min_time`, then for at least `min_time` and `min_rounds` rounds.
fn timed_rounds(
    min_time: Duration,
    min_rounds: usize,
    streams: usize,
    mut round: impl FnMut(usize, &mut Vec<f64>) -> Result<()>,
) -> Result<StepTimes> {
    let mut lat = Vec::new();
    let warm = Instant::now();
    let mut r = 0;
    while r < 2 || warm.elapsed() < min_time / 10 {
        round(r, &mut lat)?;
        r += 1;
    }
    lat.clear();
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < min_rounds.max(1) || start.elapsed() < min_time {
        round(r, &mut lat)?;
        r += 1;
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(StepTimes::from_latencies(lat, rounds * streams, secs))
}
