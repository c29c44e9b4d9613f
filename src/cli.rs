//! The `recur` command line: `recur run`, `recur info`, and with no subcommand the bundled demo.
//!
//! Every failure prints one line `error: <what is wrong>` to stderr and exits with status 1
//! (usage errors: clap's status 2). An output file is written whole or not at all.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Mode};
use crate::forward::{ForwardInput, Workspace};
use crate::load::{parse_safetensors, write_outputs, InputFile, LoadOptions};
use crate::model::Model;
use crate::tensor::Tensor;

/// The error type of the command line: anything with a one-line message.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// Largest `--threads` accepted.
const MAX_THREADS: usize = 1024;

/// recur runs PyTorch's RNN, LSTM and GRU layers on the CPU, with PyTorch's numbers.
///
/// With no subcommand, runs the bundled demo: a small LSTM classifier trained with PyTorch.
#[derive(Parser, Debug)]
#[command(name = "recur", version)]
pub struct Cli {
    /// What to do (none: run the bundled demo).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs a model on an input file and writes output, h_n (and c_n for LSTM) to a file.
    Run(RunArgs),
    /// Prints the configuration read from a model file and the SIMD tier in use.
    Info(InfoArgs),
    /// Times the standard suite (or one case of it, or a custom shape) with random weights.
    Bench(BenchArgs),
}

/// Arguments of `recur bench`: a suite case (`--case`), every suite case (no shape flags), or a
/// custom shape (`--mode` with the shape flags).
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Only this case of the standard suite (e.g. `lstm_stream_b1`).
    #[arg(long, value_name = "NAME", conflicts_with = "mode")]
    pub case: Option<String>,
    /// Worker threads (0 or absent: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// One JSON line per case: name, threads, median_ms, min_ms, gflops, isa.
    #[arg(long)]
    pub json: bool,
    /// Seconds of timed runs per case (after warm-up); at least 5 runs are made.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub seconds: f64,
    /// Custom shape: the mode (LSTM, GRU, RNN_TANH, RNN_RELU).
    #[arg(long, value_parser = parse_mode, value_name = "MODE")]
    pub mode: Option<Mode>,
    /// Custom shape: input_size.
    #[arg(long, requires = "mode", default_value_t = 80)]
    pub input_size: usize,
    /// Custom shape: hidden_size.
    #[arg(long, requires = "mode", default_value_t = 512)]
    pub hidden_size: usize,
    /// Custom shape: num_layers.
    #[arg(long, requires = "mode", default_value_t = 1)]
    pub num_layers: usize,
    /// Custom shape: bidirectional.
    #[arg(long, requires = "mode")]
    pub bidirectional: bool,
    /// Custom shape: proj_size (LSTM; 0 for none).
    #[arg(long, requires = "mode", default_value_t = 0)]
    pub proj_size: usize,
    /// Custom shape: batch size.
    #[arg(long, requires = "mode", default_value_t = 1)]
    pub batch: usize,
    /// Custom shape: sequence length.
    #[arg(long, requires = "mode", default_value_t = 100)]
    pub seq_len: usize,
    /// Serving: S concurrent streams of the model (batch 1 each), stepped one at a time and as
    /// one batched step: per-step latency (p50, p99), throughput in stream-steps/s, and
    /// `batched_speedup`.
    #[arg(long, value_name = "S")]
    pub streams: Option<usize>,
}

/// Which model to load and how.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// The model: a safetensors file holding a PyTorch state_dict.
    #[arg(long, value_name = "M.safetensors")]
    pub model: PathBuf,
    /// Selects one recurrent module out of a larger state_dict (e.g. `encoder.rnn.`).
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: String,
    /// The mode, if the file's metadata does not say (LSTM, GRU, RNN_TANH, RNN_RELU).
    #[arg(long, value_parser = parse_mode, value_name = "MODE")]
    pub mode: Option<Mode>,
}

/// Arguments of `recur run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The model to run.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The input: a safetensors file with `input` and optionally `h0`, `c0`, `lengths`.
    #[arg(long, value_name = "IN.safetensors")]
    pub input: PathBuf,
    /// Where to write `output`, `h_n` (and `c_n`), as f32 safetensors.
    #[arg(long, value_name = "OUT.safetensors")]
    pub output: PathBuf,
    /// Input and output are (N, L, features) instead of (L, N, features).
    #[arg(long)]
    pub batch_first: bool,
    /// Worker threads (0 or absent: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Feed the input through a streaming session K steps at a time (unidirectional models);
    /// the output is identical to the one-shot run.
    #[arg(long, value_name = "K")]
    pub chunk: Option<usize>,
}

/// Arguments of `recur info`.
#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    /// The model to describe.
    #[command(flatten)]
    pub model: ModelArgs,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    Mode::from_name(s).ok_or_else(|| "expected LSTM, GRU, RNN_TANH or RNN_RELU".to_string())
}

impl ModelArgs {
    fn options(&self, batch_first: bool) -> LoadOptions {
        LoadOptions {
            prefix: self.prefix.clone(),
            mode: self.mode,
            batch_first,
        }
    }
}

/// Runs the command line with the process's arguments; the binary's `main`.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs the command line with `args` (the first is the program name), printing results to
/// stdout and a one-line error to stderr.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match execute(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = e.to_string().replace(['\n', '\r'], " ");
            let _ = writeln!(std::io::stderr().lock(), "error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Carries out a parsed command line.
pub fn execute(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Some(Command::Run(args)) => run(args),
        Some(Command::Info(args)) => info(args),
        Some(Command::Bench(args)) => bench(args),
        None => demo(),
    }
}

/// Prints `text` to stdout; a closed stdout is an error, not a panic.
fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}").into())
}

/// Runs `f` on a rayon pool of `threads` workers (`None` or 0: the global pool).
fn with_threads<R: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> R + Send,
) -> Result<R, CliError> {
    match threads {
        None | Some(0) => Ok(f()),
        Some(n) if n > MAX_THREADS => {
            Err(format!("--threads {n} is more than recur's limit of {MAX_THREADS}").into())
        }
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| format!("cannot start {n} threads: {e}"))?;
            Ok(pool.install(f))
        }
    }
}

/// Largest custom bench shape, in floats of weights or activations, so that a typo cannot ask
/// for more memory than the machine has.
const MAX_BENCH_FLOATS: usize = 1 << 31;

fn bench(args: &BenchArgs) -> Result<(), CliError> {
    use crate::bench::{run_case, standard_suite, BenchCase};
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err(format!("--seconds {} must be in (0, 3600]", args.seconds).into());
    }
    let cases: Vec<BenchCase> = match (&args.mode, &args.case) {
        (Some(mode), _) => {
            let config = Config {
                mode: *mode,
                input_size: args.input_size,
                hidden_size: args.hidden_size,
                num_layers: args.num_layers,
                bias: true,
                batch_first: false,
                bidirectional: args.bidirectional,
                proj_size: args.proj_size,
            };
            config.validate()?;
            if args.batch == 0 || args.seq_len == 0 {
                return Err("--batch and --seq-len must be at least 1".into());
            }
            let activations = args.seq_len.checked_mul(args.batch).and_then(|v| {
                v.checked_mul(config.gates() * config.hidden_size + config.input_size)
            });
            let weights = (config.gates() * config.hidden_size).checked_mul(
                config
                    .input_size
                    .max(config.output_hidden() * config.directions())
                    + config.hidden_size,
            );
            match (activations, weights) {
                (Some(a), Some(w)) if a <= MAX_BENCH_FLOATS && w <= MAX_BENCH_FLOATS => {}
                _ => return Err("the custom bench shape is too large for this machine".into()),
            }
            let name = format!(
                "custom_{}_i{}_h{}_l{}{}{}_b{}_s{}",
                mode.name().to_ascii_lowercase(),
                args.input_size,
                args.hidden_size,
                args.num_layers,
                if args.bidirectional { "_bi" } else { "" },
                if args.proj_size > 0 {
                    format!("_p{}", args.proj_size)
                } else {
                    String::new()
                },
                args.batch,
                args.seq_len
            );
            vec![BenchCase {
                name,
                config,
                batch: args.batch,
                seq_len: args.seq_len,
            }]
        }
        (None, Some(name)) => {
            let suite = standard_suite()?;
            let names: Vec<&str> = suite.iter().map(|c| c.name.as_str()).collect();
            match suite.iter().find(|c| &c.name == name) {
                Some(c) => vec![c.clone()],
                None => {
                    return Err(format!(
                        "no suite case named {name:?} (the suite has: {})",
                        names.join(", ")
                    )
                    .into())
                }
            }
        }
        (None, None) => standard_suite()?,
    };
    let min_time = std::time::Duration::from_secs_f64(args.seconds);
    if let Some(streams) = args.streams {
        return bench_streams(args, &cases, streams, min_time);
    }
    if !args.json {
        print("| case | threads | isa | median ms | min ms | GFLOP/s | runs |\n|---|---|---|---|---|---|---|\n")?;
    }
    for case in &cases {
        let r = with_threads(args.threads, || run_case(case, min_time, 5))??;
        let line = if args.json {
            format!("{}\n", r.json())
        } else {
            format!(
                "| {} | {} | {} | {:.3} | {:.3} | {:.2} | {} |\n",
                case.name,
                r.threads,
                r.isa,
                r.median_ms,
                r.min_ms,
                r.gflops(),
                r.runs
            )
        };
        print(&line)?;
    }
    Ok(())
}

/// Largest `--streams` accepted.
const MAX_STREAMS: usize = 10_000;

/// `recur bench --streams S`: each unidirectional case's streams, single and batched.
fn bench_streams(
    args: &BenchArgs,
    cases: &[crate::bench::BenchCase],
    streams: usize,
    min_time: std::time::Duration,
) -> Result<(), CliError> {
    if !(1..=MAX_STREAMS).contains(&streams) {
        return Err(format!("--streams {streams} must be in 1..={MAX_STREAMS}").into());
    }
    // A whole-suite run skips the bidirectional cases (streams cannot run them); a named one
    // reports why.
    let explicit = cases.len() == 1;
    if let Some(c) = cases.iter().find(|c| explicit && c.config.bidirectional) {
        return Err(format!(
            "--streams needs a unidirectional model, and {} is bidirectional",
            c.name
        )
        .into());
    }
    if !args.json {
        print("| case | streams | threads | isa | single p50 us | single p99 us | single steps/s | batched p50 us | batched p99 us | batched steps/s | batched speedup |\n|---|---|---|---|---|---|---|---|---|---|---|\n")?;
    }
    for case in cases.iter().filter(|c| explicit || !c.config.bidirectional) {
        let r = with_threads(args.threads, || {
            crate::streams::bench_streams(case, streams, min_time, 5)
        })??;
        let line = if args.json {
            format!("{}\n", r.json())
        } else {
            format!(
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.0} | {:.2} |\n",
                case.name,
                streams,
                r.threads,
                r.isa,
                r.single.p50_us,
                r.single.p99_us,
                r.single.stream_steps_per_s,
                r.batched.p50_us,
                r.batched.p99_us,
                r.batched.stream_steps_per_s,
                r.batched_speedup()
            )
        };
        print(&line)?;
    }
    Ok(())
}

fn run(args: &RunArgs) -> Result<(), CliError> {
    let model = Model::load(&args.model.model, &args.model.options(args.batch_first))?;
    let input = InputFile::read(&args.input)?;
    let outputs = with_threads(args.threads, || match args.chunk {
        Some(k) => crate::session::run_chunked(&model, &input.forward_input(), k),
        None => model.forward(&input.forward_input()),
    })??;
    write_outputs(&args.output, &outputs)?;
    Ok(())
}

/// The number of parameters of `config`'s state_dict.
fn parameter_count(config: &Config) -> usize {
    (0..config.num_layers)
        .flat_map(|l| (0..config.directions()).map(move |d| (l, d)))
        .flat_map(|(l, d)| config.param_shapes(l, d))
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum()
}

fn info(args: &InfoArgs) -> Result<(), CliError> {
    let model = Model::load(&args.model.model, &args.model.options(false))?;
    let c = model.config();
    let mut s = String::new();
    let prefix = if args.model.prefix.is_empty() {
        "(none)"
    } else {
        &args.model.prefix
    };
    let _ = writeln!(s, "model: {}", args.model.model.display());
    let _ = writeln!(s, "prefix: {prefix}");
    let _ = writeln!(s, "mode: {}", c.mode);
    let _ = writeln!(s, "input_size: {}", c.input_size);
    let _ = writeln!(s, "hidden_size: {}", c.hidden_size);
    let _ = writeln!(s, "num_layers: {}", c.num_layers);
    let _ = writeln!(s, "bias: {}", c.bias);
    let _ = writeln!(s, "batch_first: {}", c.batch_first);
    let _ = writeln!(s, "bidirectional: {}", c.bidirectional);
    let _ = writeln!(s, "proj_size: {}", c.proj_size);
    let _ = writeln!(s, "parameters: {}", parameter_count(c));
    let _ = writeln!(
        s,
        "packed_recurrent_weight_bytes: {}",
        model.recurrent_weight_bytes()
    );
    let _ = writeln!(s, "isa: {}", model.isa());
    print(&s)
}

/// Where the bundled demo's files are.
fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join("demo")
}

/// Reads a whole file, naming it on failure.
fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// A tensor read for the demo: its shape and its values widened to f64.
type F64Tensor = (Vec<usize>, Vec<f64>);

/// The named tensors of a safetensors file.
fn read_f64_tensors(bytes: &[u8], file: &Path, names: &[&str]) -> Result<Vec<F64Tensor>, CliError> {
    let st = parse_safetensors(bytes).map_err(|why| format!("{}: {why}", file.display()))?;
    names
        .iter()
        .map(|&name| {
            let view = st
                .tensor(name)
                .map_err(|_| format!("{}: no tensor {name}", file.display()))?;
            let values = crate::load::f64s_of(&view).map_err(|dtype| {
                format!(
                    "{}: tensor {name} has dtype {dtype}; expected a float",
                    file.display()
                )
            })?;
            Ok((view.shape().to_vec(), values))
        })
        .collect()
}

/// Index of the largest value.
fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

/// Largest absolute difference, or infinity if the lengths differ (or on NaN).
fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter().zip(b).fold(0.0f64, |m, (&x, &y)| {
        let d = (f64::from(x) - y).abs();
        if d.is_nan() {
            f64::INFINITY
        } else {
            m.max(d)
        }
    })
}

/// The demo's agreement bound with PyTorch (SPEC §4).
const DEMO_TOLERANCE: f64 = 1e-4;

/// The bundled demo: an LSTM waveform classifier trained with PyTorch (`scripts/train_demo.py`),
/// run by recur on a test batch and compared with PyTorch's own float64 results.
fn demo() -> Result<(), CliError> {
    let dir = demo_dir();
    let json_path = dir.join("demo.json");
    let desc: serde_json::Value = serde_json::from_slice(&read_file(&json_path)?)
        .map_err(|e| format!("{}: {e}", json_path.display()))?;
    let text = |key: &str, default: &str| {
        desc.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or(default)
            .to_string()
    };
    let task = text("task", "(no description)");
    let prefix = text("prefix", "");
    let head = text("head", "head.");
    let head_input = text("head_input", "h_n_last_layer");
    if head_input != "h_n_last_layer" {
        return Err(format!(
            "{}: unsupported head_input {head_input:?}",
            json_path.display()
        )
        .into());
    }
    let classes: Vec<String> = desc
        .get("classes")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .map(|c| c.as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();

    // The model: the LSTM under `prefix`, and the linear head beside it in the same file.
    let model_path = dir.join("model.safetensors");
    let model_bytes = read_file(&model_path)?;
    let options = LoadOptions {
        prefix: prefix.clone(),
        ..LoadOptions::default()
    };
    let model = Model::from_safetensors_bytes(&model_bytes, &options)
        .map_err(|e| format!("{}: {e}", model_path.display()))?;
    let cfg = model.config().clone();
    let head_tensors = read_f64_tensors(
        &model_bytes,
        &model_path,
        &[&format!("{head}weight"), &format!("{head}bias")],
    )?;
    let (w_shape, w) = &head_tensors[0];
    let (_, b) = &head_tensors[1];
    let head_in = cfg.directions() * cfg.output_hidden();
    let num_classes = b.len();
    if w_shape.as_slice() != [num_classes, head_in] {
        return Err(format!(
            "{}: {head}weight has shape {w_shape:?}, expected [{num_classes}, {head_in}]",
            model_path.display()
        )
        .into());
    }

    // The test batch (seq-major `input`) and, beside it, its labels.
    let input_path = dir.join("input.safetensors");
    let input_bytes = read_file(&input_path)?;
    let input = {
        let (shape, values) = read_f64_tensors(&input_bytes, &input_path, &["input"])?.remove(0);
        Tensor::new(shape, values.into_iter().map(|v| v as f32).collect())?
    };
    if input.shape.len() != 3 || cfg.batch_first {
        return Err(format!(
            "{}: the demo expects a seq-major (L, N, I) input, found shape {:?}",
            input_path.display(),
            input.shape
        )
        .into());
    }
    let labels_path = dir.join("labels.safetensors");
    let labels_bytes = read_file(&labels_path)?;
    let labels = parse_safetensors(&labels_bytes)
        .map_err(|why| format!("{}: {why}", labels_path.display()))?
        .tensor("labels")
        .ok()
        .and_then(|v| crate::load::ints_of(&v).ok())
        .ok_or_else(|| format!("{}: no integer tensor labels", labels_path.display()))?;

    // Forward pass, timed: median of several runs with a reused workspace.
    let fi = ForwardInput::new(input.view());
    let mut ws = Workspace::new();
    let outputs = model.forward_with(&fi, &mut ws)?;
    let mut times = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        let again = model.forward_with(&fi, &mut ws)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(again);
    }
    times.sort_by(f64::total_cmp);
    let median_ms = times[times.len() / 2];

    // The head on the last layer's final hidden state (both directions concatenated).
    let batch = input.shape.get(1).copied().unwrap_or(1);
    let h_out = cfg.output_hidden();
    let d_count = cfg.directions();
    let last = (cfg.num_layers - 1) * d_count;
    let logits: Vec<f32> = (0..batch)
        .flat_map(|n| {
            let features: Vec<f64> = (0..d_count)
                .flat_map(|d| {
                    let start = ((last + d) * batch + n) * h_out;
                    outputs.h_n.data[start..start + h_out]
                        .iter()
                        .map(|&v| f64::from(v))
                })
                .collect();
            (0..num_classes)
                .map(|k| {
                    let row = &w[k * head_in..(k + 1) * head_in];
                    (b[k] + row.iter().zip(&features).map(|(a, x)| a * x).sum::<f64>()) as f32
                })
                .collect::<Vec<f32>>()
        })
        .collect();

    // PyTorch's own results.
    let expected_path = dir.join("expected.safetensors");
    let expected = read_f64_tensors(
        &read_file(&expected_path)?,
        &expected_path,
        &["output", "h_n", "c_n", "logits"],
    )?;
    let ours: [(&str, &[f32]); 4] = [
        ("output", &outputs.output.data),
        ("h_n", &outputs.h_n.data),
        ("c_n", outputs.c_n.as_ref().map_or(&[], |t| &t.data)),
        ("logits", &logits),
    ];
    let diffs: Vec<(&str, f64)> = ours
        .iter()
        .zip(&expected)
        .map(|((name, a), (_, b))| (*name, max_abs_diff(a, b)))
        .collect();
    let torch_logits = &expected[3].1;

    let predict = |logits: &[f64]| -> Vec<usize> {
        logits
            .chunks_exact(num_classes.max(1))
            .map(argmax)
            .collect()
    };
    let ours_pred = predict(&logits.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
    let torch_pred = predict(torch_logits);
    let correct = |pred: &[usize]| {
        pred.iter()
            .zip(&labels)
            .filter(|(&p, &l)| i64::try_from(p) == Ok(l))
            .count()
    };
    let same = ours_pred
        .iter()
        .zip(&torch_pred)
        .filter(|(a, b)| a == b)
        .count();
    let class_name = |k: usize| classes.get(k).map_or("?", String::as_str);

    let mut s = String::new();
    let _ = writeln!(s, "recur demo: {task}");
    let _ = writeln!(
        s,
        "model:   {} under prefix {prefix:?} of {}, then Linear({head_in} -> {num_classes}) on h_n of the last layer",
        cfg,
        model_path.display()
    );
    let _ = writeln!(
        s,
        "input:   {} waveforms of {} steps; kernels: {}, {} threads",
        batch,
        input.shape.first().copied().unwrap_or(0),
        model.isa(),
        rayon::current_num_threads()
    );
    let shown: Vec<String> = ours_pred
        .iter()
        .zip(&labels)
        .take(6)
        .map(|(&p, &l)| {
            let truth = usize::try_from(l).map_or("?", class_name);
            format!("{} ({truth})", class_name(p))
        })
        .collect();
    let _ = writeln!(s, "predicted (true): {}, ...", shown.join(", "));
    let n = labels.len().max(1) as f64;
    let _ = writeln!(
        s,
        "accuracy: recur {}/{} = {:.3}, PyTorch {}/{} = {:.3}; predictions agree on {same}/{}",
        correct(&ours_pred),
        labels.len(),
        correct(&ours_pred) as f64 / n,
        correct(&torch_pred),
        labels.len(),
        correct(&torch_pred) as f64 / n,
        ours_pred.len()
    );
    let diff_text: Vec<String> = diffs
        .iter()
        .map(|(name, d)| format!("{name} {d:.1e}"))
        .collect();
    let worst = diffs.iter().map(|(_, d)| *d).fold(0.0, f64::max);
    let verdict = if worst <= DEMO_TOLERANCE {
        "within"
    } else {
        "OUTSIDE"
    };
    let _ = writeln!(
        s,
        "max |recur - PyTorch float64|: {} ({verdict} the 1e-4 bound)",
        diff_text.join(", ")
    );
    let _ = writeln!(
        s,
        "forward pass: {median_ms:.3} ms (median of {} runs, batch {batch} x {} steps)",
        times.len(),
        input.shape.first().copied().unwrap_or(0)
    );
    print(&s)?;
    if worst > DEMO_TOLERANCE {
        return Err(format!(
            "recur differs from PyTorch by {worst:.1e}, more than {DEMO_TOLERANCE:.0e}"
        )
        .into());
    }
    Ok(())
}
