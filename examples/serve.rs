//! A self-contained streaming server: many concurrent streams ("calls") served from one model
//! shared by worker threads, each worker batching its streams' frames into one step. Prints the
//! latency percentiles of a frame and the throughput, and checks some calls, bit for bit,
//! against one-shot runs of their whole sequence.
//!
//! ```text
//! cargo run --release --example serve -- [--streams 100] [--workers 2] [--rounds 200]
//!     [--case lstm_stream_b1] [--frame-ms 0] [--verify 4]
//! ```
//!
//! Each worker owns a [`StreamRuntime`] and runs inside its own 1-thread rayon pool, so every
//! step runs on the worker's thread and allocates nothing. A call lasts 40..=240 frames, and
//! has a frame ready at each tick with probability 0.9 (network jitter); when it ends, it
//! leaves and a new call joins in its place. With `--frame-ms F`, workers tick every F ms (a
//! real-time feed, e.g. 10 ms audio frames) and count the ticks whose step overran the frame;
//! with 0 they run flat out. The model is random (PyTorch's initialisation) with a suite
//! case's shape: no files, no network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use recur::bench::{random_state_dict, standard_suite, SplitRng};
use recur::streams::{StreamId, StreamRuntime};
use recur::{ForwardInput, Model, Tensor};

struct Options {
    streams: usize,
    workers: usize,
    rounds: usize,
    case: String,
    frame_ms: u64,
    verify: usize,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        streams: 100,
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        rounds: 200,
        case: "lstm_stream_b1".into(),
        frame_ms: 0,
        verify: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--streams" => o.streams = num(value()?)?.max(1),
            "--workers" => o.workers = num(value()?)?.max(1),
            "--rounds" => o.rounds = num(value()?)?.clamp(1, 100_000),
            "--case" => o.case = value()?,
            "--frame-ms" => o.frame_ms = num(value()?)? as u64,
            "--verify" => o.verify = num(value()?)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

/// One call in progress: its frames so far (for verification) and how many it will send.
struct Call {
    id: StreamId,
    frames_left: usize,
    keep: bool,
    inputs: Vec<f32>,
    outputs: Vec<f32>,
}

struct WorkerReport {
    latencies_us: Vec<f64>,
    stream_steps: usize,
    calls_done: usize,
    overruns: usize,
    verified: usize,
    elapsed: Duration,
}

fn worker(model: Arc<Model>, w: usize, streams: usize, o: &Options) -> WorkerReport {
    let cfg = model.config().clone();
    let i = cfg.input_size;
    let mut rng = SplitRng::new(1 + w as u64);
    let mut uniform = move || (rng.next_f32() + 1.0) / 2.0;
    let mut rt = StreamRuntime::with_capacity(Arc::clone(&model), streams).expect("unidirectional");
    let mut to_verify = o.verify;
    let mut new_call = |rt: &mut StreamRuntime, uniform: &mut dyn FnMut() -> f32| {
        let keep = to_verify > 0;
        to_verify = to_verify.saturating_sub(1);
        Call {
            id: rt.join(),
            frames_left: 40 + (uniform() * 200.0) as usize,
            keep,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    };
    let mut calls: Vec<Call> = (0..streams)
        .map(|_| new_call(&mut rt, &mut uniform))
        .collect();
    let frames = SplitRng::new(100 + w as u64).vec(1024 * i, 1.0);
    let mut report = WorkerReport {
        latencies_us: Vec::with_capacity(o.rounds),
        stream_steps: 0,
        calls_done: 0,
        overruns: 0,
        verified: 0,
        elapsed: Duration::ZERO,
    };
    let mut done_kept = Vec::new();
    let frame = Duration::from_millis(o.frame_ms);
    let start = Instant::now();
    for round in 0..o.rounds {
        let tick = start + frame * round as u32;
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        let mut pushed = 0;
        for (k, call) in calls.iter_mut().enumerate() {
            if uniform() < 0.9 {
                let at = ((round * 31 + k * 17) % 1024) * i;
                let x = &frames[at..at + i];
                rt.push(call.id, x).expect("a live call");
                if call.keep {
                    call.inputs.extend_from_slice(x);
                }
                pushed += 1;
            }
        }
        rt.step().expect("a valid step");
        let latency = t.elapsed();
        report.latencies_us.push(latency.as_secs_f64() * 1e6);
        if !frame.is_zero() && latency > frame {
            report.overruns += 1;
        }
        report.stream_steps += pushed;
        // Collect outputs; finished calls leave and new ones join.
        for call in calls.iter_mut() {
            let Some(y) = rt.output(call.id) else {
                continue;
            };
            if call.keep {
                call.outputs.extend_from_slice(y);
            }
            call.frames_left -= 1;
            if call.frames_left == 0 {
                rt.leave(call.id).expect("a live call");
                let next = new_call(&mut rt, &mut uniform);
                let done = std::mem::replace(call, next);
                report.calls_done += 1;
                if done.keep {
                    done_kept.push(done);
                }
            }
        }
    }
    report.elapsed = start.elapsed();
    // Verification (after the timed loop): each kept call against one forward pass.
    for call in done_kept {
        let steps = call.inputs.len() / i;
        let x = Tensor::new(vec![steps, 1, i], call.inputs).unwrap();
        let alone = model.forward(&ForwardInput::new(x.view())).unwrap();
        let same = alone
            .output
            .data
            .iter()
            .map(|v| v.to_bits())
            .eq(call.outputs.iter().map(|v| v.to_bits()));
        assert!(
            same,
            "worker {w}: a call's outputs differ from its one-shot run"
        );
        report.verified += 1;
    }
    report
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let Some(case) = standard_suite()
        .unwrap()
        .into_iter()
        .find(|c| c.name == o.case)
    else {
        eprintln!("error: no suite case named {}", o.case);
        std::process::exit(2);
    };
    let cfg = case.config.clone();
    let model = match Model::from_state_dict(cfg.clone(), &random_state_dict(&cfg, 1)) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if cfg.bidirectional {
        eprintln!(
            "error: {} is bidirectional; streams need a unidirectional model",
            o.case
        );
        std::process::exit(2);
    }
    let workers = o.workers.min(o.streams);
    println!(
        "model {cfg} ({}), {} streams on {workers} workers, {} rounds{}",
        model.isa().name(),
        o.streams,
        o.rounds,
        if o.frame_ms > 0 {
            format!(", one frame every {} ms", o.frame_ms)
        } else {
            ", flat out".into()
        }
    );
    let reports: Vec<WorkerReport> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let model = Arc::clone(&model);
                let share = o.streams / workers + usize::from(w < o.streams % workers);
                let o = &o;
                s.spawn(move || {
                    // One thread per worker: every step runs here, and allocates nothing.
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .unwrap();
                    pool.install(|| worker(model, w, share, o))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut lat: Vec<f64> = reports
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    lat.sort_by(f64::total_cmp);
    let steps: usize = reports.iter().map(|r| r.stream_steps).sum();
    let secs = reports
        .iter()
        .map(|r| r.elapsed.as_secs_f64())
        .fold(0.0, f64::max);
    println!(
        "frame latency (one batched step of a worker's streams), us: p50 {:.0}  p90 {:.0}  p99 {:.0}  max {:.0}",
        percentile(&lat, 0.50),
        percentile(&lat, 0.90),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    println!(
        "throughput: {:.0} stream-steps/s over {secs:.2} s ({steps} frames)",
        steps as f64 / secs
    );
    let overruns: usize = reports.iter().map(|r| r.overruns).sum();
    if o.frame_ms > 0 {
        println!(
            "frames over their {} ms budget: {overruns} of {}",
            o.frame_ms,
            lat.len()
        );
    }
    println!(
        "calls completed: {}; verified against one-shot runs, bit for bit: {}",
        reports.iter().map(|r| r.calls_done).sum::<usize>(),
        reports.iter().map(|r| r.verified).sum::<usize>()
    );
}
