//! Hostile files and resource bounds (issue 5): files that lie about their size, shapes or
//! offsets, that pass recur's limits, or that are not files at all, must get a clear one-line
//! error naming what is wrong, without a panic, a hang, or an allocation sized by the lie.
//!
//! Memory is measured by this test binary's global allocator: the peak of bytes held by the
//! current thread while a load runs (tests run in parallel threads without disturbing each
//! other). The regression tests for crashes the fuzzers found are at the end, named after them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

use recur::forward::MAX_CALL_BYTES;
use recur::load::{
    InputFile, MAX_DIMS, MAX_DIM_SIZE, MAX_HEADER_BYTES, MAX_HEADER_TOKENS, MAX_INPUT_FILE_BYTES,
    MAX_MODEL_FILE_BYTES, MAX_TENSORS,
};
use recur::{Config, Error, ForwardInput, LoadOptions, Mode, Model, StateDict, Tensor};

/// How the `load_model` fuzz target reads its input (the fuzz crate's own file).
#[path = "../fuzz/src/options.rs"]
mod fuzz_options;

// ---- Peak memory per thread.

/// Tracks the bytes the current thread holds while armed, and their peak.
struct Tracking;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static HELD: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn note(delta: i64) {
    if ARMED.with(Cell::get) {
        let held = HELD.with(|h| {
            h.set(h.get() + delta);
            h.get()
        });
        PEAK.with(|p| p.set(p.get().max(held)));
    }
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged,
// so `System`'s guarantees are this allocator's; the tracking touches only const-initialised
// thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as i64);
        // SAFETY: forwarded unchanged (see the impl's comment).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as i64);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as i64));
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns the peak of bytes this thread held meanwhile (above what it held
/// before).
fn peak_bytes<R>(f: impl FnOnce() -> R) -> (R, u64) {
    HELD.with(|h| h.set(0));
    PEAK.with(|p| p.set(0));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (r, PEAK.with(Cell::get).max(0) as u64)
}

// ---- Building files.

/// A safetensors file with a hand-written JSON header and `data` bytes.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// A header entry.
fn entry(name: &str, dtype: &str, shape: &[u64], start: u64, end: u64) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!(
        r#""{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{start},{end}]}}"#,
        dims.join(",")
    )
}

/// The f32 bytes of `n` small values.
fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (0.01 * (i % 13) as f32 - 0.06).to_le_bytes())
        .collect()
}

/// A valid RNN_TANH model (input 3, hidden 2) as `(header entries, data)`, under `prefix`.
fn small_rnn(prefix: &str) -> (Vec<String>, Vec<u8>) {
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for (name, shape) in [
        ("weight_ih_l0", vec![2u64, 3]),
        ("weight_hh_l0", vec![2, 2]),
        ("bias_ih_l0", vec![2]),
        ("bias_hh_l0", vec![2]),
    ] {
        let n: u64 = shape.iter().product();
        let start = data.len() as u64;
        data.extend(f32_bytes(n as usize));
        entries.push(entry(
            &format!("{prefix}{name}"),
            "F32",
            &shape,
            start,
            data.len() as u64,
        ));
    }
    (entries, data)
}

fn small_rnn_file() -> Vec<u8> {
    let (entries, data) = small_rnn("");
    raw_file(&format!("{{{}}}", entries.join(",")), &data)
}

/// The error loading `bytes` as a model, which must be one line; also checks the load held at
/// most `max_bytes` meanwhile.
fn model_error(bytes: &[u8], max_bytes: u64) -> String {
    let (result, peak) =
        peak_bytes(|| Model::from_safetensors_bytes(bytes, &LoadOptions::default()));
    let err = match result {
        Ok(m) => panic!("a hostile model loaded: {}", m.config()),
        Err(e) => e.to_string(),
    };
    assert!(!err.contains('\n'), "not one line: {err}");
    assert!(
        peak <= max_bytes,
        "loading a {}-byte file held {peak} bytes (limit {max_bytes}): {err}",
        bytes.len()
    );
    err
}

fn input_error(bytes: &[u8], max_bytes: u64) -> String {
    let (result, peak) = peak_bytes(|| InputFile::from_bytes(bytes));
    let err = match result {
        Ok(_) => panic!("a hostile input file loaded"),
        Err(e) => e.to_string(),
    };
    assert!(!err.contains('\n'), "not one line: {err}");
    assert!(
        peak <= max_bytes,
        "reading a {}-byte input file held {peak} bytes (limit {max_bytes}): {err}",
        bytes.len()
    );
    err
}

fn assert_mentions(err: &str, words: &[&str]) {
    for w in words {
        assert!(err.contains(w), "error {err:?} does not mention {w:?}");
    }
}

/// Allocation allowed for a small hostile file: its parse, no more.
const SMALL: u64 = 64 << 10;

// ---- Lying headers.

#[test]
fn the_small_rnn_loads() {
    let bytes = small_rnn_file();
    let (model, peak) =
        peak_bytes(|| Model::from_safetensors_bytes(&bytes, &LoadOptions::default()));
    let model = model.unwrap();
    assert_eq!(model.config().hidden_size, 2);
    assert!(peak < SMALL, "{peak}");
}

#[test]
fn header_length_beyond_the_file() {
    for claim in [u64::MAX, 1 << 63, 1 << 40, 100] {
        let mut bytes = claim.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let err = model_error(&bytes, SMALL);
        assert_mentions(
            &err,
            &[&format!("header claims {claim} bytes"), "only 2 bytes"],
        );
        let err = input_error(&bytes, SMALL);
        assert_mentions(&err, &["input file", "header claims"]);
    }
}

#[test]
fn header_above_the_limit() {
    // A real header one byte over the limit: refused before it is parsed.
    let header = format!("{{}}{}", " ".repeat(MAX_HEADER_BYTES as usize - 1));
    let bytes = raw_file(&header, b"");
    let err = model_error(&bytes, SMALL);
    assert_mentions(
        &err,
        &[
            "header is 16777217 bytes",
            "limit of 16777216 bytes (16 MiB)",
        ],
    );
}

#[test]
fn header_with_too_many_json_tokens() {
    // A shape of two million zeros: within the header limit, but refused before parsing.
    let zeros = vec!["0"; MAX_HEADER_TOKENS + 10].join(",");
    let header = format!(r#"{{"a":{{"dtype":"F32","shape":[{zeros}],"data_offsets":[0,0]}}}}"#);
    assert!((header.len() as u64) < MAX_HEADER_BYTES);
    let bytes = raw_file(&header, b"");
    // The header's text is read (it is really in the file), but not parsed.
    let err = model_error(&bytes, bytes.len() as u64 + SMALL);
    assert_mentions(&err, &["JSON tokens", &MAX_HEADER_TOKENS.to_string()]);
    // Commas and brackets inside strings are not tokens.
    let name = ",".repeat(MAX_HEADER_TOKENS + 10);
    let header = format!("{{{}}}", entry(&name, "F32", &[1], 0, 4));
    let err = model_error(&raw_file(&header, &[0; 4]), 64 << 20);
    assert_mentions(&err, &["no recurrent-layer parameters"]);
}

#[test]
fn too_many_tensors() {
    let entries: Vec<String> = (0..=MAX_TENSORS)
        .map(|i| entry(&format!("t{i}"), "F32", &[0; MAX_DIMS], 0, 0))
        .collect();
    let header = format!("{{{}}}", entries.join(","));
    let bytes = raw_file(&header, b"");
    // The parse (about 1.5 KiB per tensor of 16 dimensions, 24 MB here) is bounded by the token
    // limit; the limit on tensors comes right after it.
    let err = model_error(&bytes, 48 << 20);
    assert_mentions(&err, &["16385 tensors", "limit of 16384"]);
}

#[test]
fn too_many_dimensions() {
    let shape = vec![1u64; MAX_DIMS + 1];
    let header = format!("{{{}}}", entry("weight_ih_l0", "F32", &shape, 0, 4));
    let err = model_error(&raw_file(&header, &[0; 4]), SMALL);
    assert_mentions(&err, &["weight_ih_l0", "17 dimensions", "limit of 16"]);
}

#[test]
fn huge_dimension_of_an_empty_tensor() {
    let header = format!(
        "{{{}}}",
        entry("weight_hh_l0", "F32", &[0, MAX_DIM_SIZE + 1], 0, 0)
    );
    let err = model_error(&raw_file(&header, b""), SMALL);
    assert_mentions(
        &err,
        &["weight_hh_l0", "1099511627777", "limit of 1099511627776"],
    );
}

#[test]
fn huge_claimed_shapes() {
    // Overflowing u64, and merely larger than the data.
    for (shape, words) in [
        (vec![1u64 << 40, 1 << 40], vec!["overflows"]),
        (
            vec![1 << 20, 1 << 20],
            vec!["4398046511104 bytes", "only 16 bytes"],
        ),
        (vec![1 << 40], vec!["only 16 bytes"]),
    ] {
        let header = format!("{{{}}}", entry("weight_ih_l0", "F32", &shape, 0, 16));
        let err = model_error(&raw_file(&header, &[0; 16]), SMALL);
        assert_mentions(&err, &["weight_ih_l0"]);
        assert_mentions(&err, &words);
    }
}

#[test]
fn offsets_that_lie() {
    let cases = [
        // Past the end of the data.
        (
            entry("a", "F32", &[4], 0, 1 << 62),
            vec!["tensor a", "outside the 16 bytes"],
        ),
        // Reversed.
        (entry("a", "F32", &[0], 16, 8), vec!["tensor a", "[16, 8]"]),
        // A span that does not match the shape.
        (
            entry("a", "F32", &[2], 0, 16),
            vec!["needs 8 bytes", "span 16"],
        ),
        // A gap at the start.
        (
            entry("a", "F32", &[2], 8, 16),
            vec!["tensor a", "gap or overlap"],
        ),
        // Trailing bytes after the last tensor.
        (
            entry("a", "F32", &[2], 0, 8),
            vec!["ends at byte 8", "16 bytes"],
        ),
    ];
    for (e, words) in cases {
        let err = model_error(&raw_file(&format!("{{{e}}}"), &[0; 16]), SMALL);
        assert_mentions(&err, &words);
        let err = input_error(&raw_file(&format!("{{{e}}}"), &[0; 16]), SMALL);
        assert_mentions(&err, &words);
    }
    // Overlapping tensors.
    let header = format!(
        "{{{},{}}}",
        entry("a", "F32", &[4], 0, 16),
        entry("b", "F32", &[2], 8, 16)
    );
    let err = model_error(&raw_file(&header, &[0; 16]), SMALL);
    assert_mentions(&err, &["tensor b", "[8, 16]", "gap or overlap"]);
}

#[test]
fn malformed_entries() {
    let cases = [
        (r#"{"a":5}"#, vec!["tensor a", "a number"]),
        (
            r#"{"a":{"dtype":"F32","shape":[1]}}"#,
            vec!["tensor a has no data_offsets"],
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#,
            vec!["not a pair"],
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}}"#,
            vec!["not a pair"],
        ),
        (
            r#"{"a":{"shape":[1],"data_offsets":[0,4]}}"#,
            vec!["tensor a has no dtype"],
        ),
        (
            r#"{"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}"#,
            vec!["\"F31\"", "not a safetensors dtype"],
        ),
        (
            r#"{"a":{"dtype":"F32","data_offsets":[0,4]}}"#,
            vec!["tensor a has no shape"],
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#,
            vec!["non-negative integers"],
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            vec!["non-negative integers"],
        ),
        (
            r#"{"a":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}"#,
            vec!["non-negative integers"],
        ),
        (
            r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
            vec!["12 bits", "whole number of bytes"],
        ),
        (
            r#"{"__metadata__":{"mode":7},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            vec!["__metadata__ mode = 7", "not a string"],
        ),
        (
            r#"{"__metadata__":[1],"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            vec!["__metadata__ is an array"],
        ),
        (r#"[]"#, vec!["not a JSON object"]),
        (r#"{"a":"#, vec!["not valid JSON"]),
    ];
    for (header, words) in cases {
        let data = [0u8; 4];
        let err = model_error(&raw_file(header, &data[..4.min(data.len())]), SMALL);
        assert_mentions(&err, &words);
    }
    // Not UTF-8; deeply nested (serde_json's recursion limit, not a stack overflow).
    let mut bytes = 2u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    assert_mentions(&model_error(&bytes, SMALL), &["not UTF-8"]);
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_mentions(
        &model_error(&raw_file(&nested, b""), 1 << 20),
        &["not valid JSON"],
    );
}

#[test]
fn duplicate_tensor_names() {
    // JSON keeps the last of two equal keys; the first one's bytes are then a gap.
    let header = format!(
        "{{{},{}}}",
        entry("weight_ih_l0", "F32", &[2], 0, 8),
        entry("weight_ih_l0", "F32", &[2], 8, 16)
    );
    let err = model_error(&raw_file(&header, &[0; 16]), SMALL);
    assert_mentions(&err, &["weight_ih_l0", "gap or overlap"]);
}

/// A file of zero-filled tensors `(name, dtype, shape)`, laid out one after another.
fn zero_file(tensors: &[(String, &str, Vec<u64>)]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut at = 0u64;
    for (name, dtype, shape) in tensors {
        let bytes = shape.iter().product::<u64>() * if *dtype == "BF16" { 2 } else { 4 };
        entries.push(entry(name, dtype, shape, at, at + bytes));
        at += bytes;
    }
    raw_file(&format!("{{{}}}", entries.join(",")), &vec![0; at as usize])
}

#[test]
fn sizes_above_the_model_limits() {
    use recur::config::{MAX_LAYERS, MAX_SIZE};
    let big = MAX_SIZE as u64 + 1;
    // input_size: an RNN whose weight_ih is (1, 2^20 + 1), 2 MB of BF16.
    let bytes = zero_file(&[
        ("weight_ih_l0".into(), "BF16", vec![1, big]),
        ("weight_hh_l0".into(), "BF16", vec![1, 1]),
    ]);
    let err = model_error(&bytes, bytes.len() as u64 / 4);
    assert_mentions(&err, &["input_size 1048577", "limit of 1048576"]);
    // hidden_size: an LSTM projecting 2^20 + 1 units to 1 (10 MB of BF16).
    let bytes = zero_file(&[
        ("weight_ih_l0".into(), "BF16", vec![4 * big, 1]),
        ("weight_hh_l0".into(), "BF16", vec![4 * big, 1]),
        ("weight_hr_l0".into(), "BF16", vec![1, big]),
    ]);
    let err = model_error(&bytes, bytes.len() as u64 / 4);
    assert_mentions(&err, &["hidden_size 1048577", "limit of 1048576"]);
    // num_layers: 1025 layers of a 1-unit RNN.
    let tensors: Vec<(String, &str, Vec<u64>)> = (0..=MAX_LAYERS)
        .flat_map(|k| {
            [
                (format!("weight_ih_l{k}"), "F32", vec![1, 1]),
                (format!("weight_hh_l{k}"), "F32", vec![1, 1]),
            ]
        })
        .collect();
    let err = model_error(&zero_file(&tensors), 8 << 20);
    assert_mentions(&err, &["num_layers 1025", "limit of 1024"]);
}

#[test]
fn truncated_at_every_length() {
    // Every prefix of a valid model fails cleanly, holding no more than the file.
    let good = small_rnn_file();
    for len in 0..good.len() {
        let err = model_error(&good[..len], SMALL);
        assert!(err.contains("not a valid safetensors file"), "{len}: {err}");
    }
}

#[test]
fn huge_claims_in_an_input_file() {
    let header = format!(
        "{{{}}}",
        entry("input", "F32", &[1 << 20, 1 << 20, 4], 0, 16)
    );
    let err = input_error(&raw_file(&header, &[0; 16]), SMALL);
    assert_mentions(&err, &["input", "only 16 bytes"]);
    let header = format!("{{{}}}", entry("lengths", "I64", &[1 << 40], 0, 16));
    let err = input_error(&raw_file(&header, &[0; 16]), SMALL);
    assert_mentions(&err, &["lengths", "only 16 bytes"]);
}

#[test]
fn a_module_in_a_large_checkpoint_costs_only_the_module() {
    // The module under a prefix, beside a 64 MiB tensor the loader must not read.
    let (mut entries, mut data) = small_rnn("rnn.");
    let big = 64u64 << 20;
    let start = data.len() as u64;
    entries.push(entry("head.weight", "U8", &[big], start, start + big));
    data.resize(data.len() + big as usize, 0);
    let bytes = raw_file(&format!("{{{}}}", entries.join(",")), &data);
    let options = LoadOptions {
        prefix: "rnn.".into(),
        ..LoadOptions::default()
    };
    let (model, peak) = peak_bytes(|| Model::from_safetensors_bytes(&bytes, &options));
    assert_eq!(model.unwrap().config().input_size, 3);
    assert!(peak < SMALL, "loading the module held {peak} bytes");

    // The same from a file: the 64 MiB are neither read nor held.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    drop(bytes);
    let (model, peak) = peak_bytes(|| Model::load(&path, &options));
    assert_eq!(model.unwrap().config().hidden_size, 2);
    assert!(
        peak < 1 << 20,
        "loading the module from a file held {peak} bytes"
    );
}

// ---- Paths that are not regular files, or too large.

fn load_error(path: &Path) -> String {
    let start = Instant::now();
    let err = Model::load(path, &LoadOptions::default())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    let input_err = InputFile::read(path).map(|_| ()).unwrap_err().to_string();
    assert!(!err.contains('\n') && !input_err.contains('\n'));
    assert_eq!(err, input_err, "model and input paths are checked alike");
    err
}

#[test]
fn a_directory_is_not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_error(dir.path());
    assert_mentions(
        &err,
        &[
            dir.path().to_str().unwrap(),
            "is a directory",
            "regular file",
        ],
    );
}

#[cfg(unix)]
#[test]
fn dev_zero_is_refused_without_reading() {
    let err = load_error(Path::new("/dev/zero"));
    assert_mentions(&err, &["/dev/zero", "character device", "regular file"]);
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !matches!(made, Ok(s) if s.success()) {
        eprintln!("note: mkfifo is not available here; the FIFO case is skipped");
        return;
    }
    // No writer ever opens it: opening it for reading would block forever.
    let err = load_error(&fifo);
    assert_mentions(&err, &["model.fifo", "FIFO", "regular file"]);
}

#[cfg(target_os = "linux")]
#[test]
fn a_proc_file_reports_size_zero_and_is_not_read() {
    // /proc files are regular but report 0 bytes and are generated as they are read: the size
    // taken before reading decides, so nothing is read.
    let path = Path::new("/proc/self/status");
    if !path.exists() {
        eprintln!("note: no /proc here; the case is skipped");
        return;
    }
    let err = Model::load(path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert_mentions(&err, &["/proc/self/status", "empty"]);
    let err = InputFile::read(path).unwrap_err().to_string();
    assert_mentions(&err, &["/proc/self/status", "empty"]);
}

#[test]
fn files_above_the_size_limits() {
    // Sparse files: their size is checked before a byte is read.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("huge.safetensors");
    let f = std::fs::File::create(&model).unwrap();
    if f.set_len(MAX_MODEL_FILE_BYTES + 1).is_err() {
        eprintln!("note: this filesystem cannot hold a sparse 64 GiB file; the case is skipped");
        return;
    }
    let err = Model::load(&model, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidModel(_)), "{err}");
    assert_mentions(
        &err.to_string(),
        &[
            "huge.safetensors",
            "68719476737 bytes",
            "limit",
            "64 GiB",
            "model file",
        ],
    );
    f.set_len(MAX_INPUT_FILE_BYTES + 1).unwrap();
    let err = InputFile::read(&model).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert_mentions(
        &err.to_string(),
        &["17179869185 bytes", "16 GiB", "input file"],
    );
    // Within the limit, a sparse file whose header lies is refused after reading the header only.
    let mut bytes = small_rnn_file();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    bytes.truncate(8 + header_len as usize);
    std::fs::write(&model, &bytes).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap();
    f.set_len(8 << 30).unwrap();
    let start = Instant::now();
    let (err, peak) = peak_bytes(|| Model::load(&model, &LoadOptions::default()).unwrap_err());
    assert_mentions(&err.to_string(), &["does not cover the file exactly"]);
    assert!(peak < 1 << 20, "{peak}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

// ---- Calls whose shape asks for more memory than a forward pass may take.

/// A model with `config`'s shapes and small weights.
fn model_of(config: Config) -> Model {
    let mut sd = StateDict::new();
    for layer in 0..config.num_layers {
        for d in 0..config.directions() {
            for (name, shape) in config.param_shapes(layer, d) {
                let n = shape.iter().product();
                let data = (0..n).map(|i| 0.01 * (i % 7) as f32 - 0.03).collect();
                sd.insert(name, Tensor::new(shape, data).unwrap());
            }
        }
    }
    Model::from_state_dict(config, &sd).unwrap()
}

/// An LSTM small in weights (1.1 MB: hidden 2^14 projected to 1, input 1) whose scratch is wide
/// (`4 · 2^14` floats per step and row), so a 1.2 MB input asks for more than 64 GiB.
fn wide_scratch_lstm() -> Model {
    model_of(Config {
        proj_size: 1,
        ..Config::new(Mode::Lstm, 1, 1 << 14)
    })
}

#[test]
fn a_call_over_max_call_bytes_is_refused_before_allocating() {
    let model = wide_scratch_lstm();
    for shape in [vec![300_000, 1, 1], vec![1, 300_000, 1], vec![300_000, 1]] {
        let need = model.call_bytes(&shape).unwrap();
        assert!(need > MAX_CALL_BYTES, "{shape:?} needs only {need}");
        let x = Tensor::zeros(shape.clone());
        let (result, peak) = peak_bytes(|| model.forward(&ForwardInput::new(x.view())));
        let err = match result {
            Err(e @ Error::InvalidInput(_)) => e.to_string(),
            other => panic!("{shape:?}: {other:?}"),
        };
        assert!(!err.contains('\n'), "not one line: {err}");
        assert_mentions(
            &err,
            &[
                &format!("input has shape {}", recur::tensor::Shape(&shape)),
                "hidden_size=16384",
                "proj_size=1",
                &format!("needs {need} bytes"),
                &format!("MAX_CALL_BYTES = {MAX_CALL_BYTES} bytes"),
            ],
        );
        assert!(peak < SMALL, "the refused call held {peak} bytes");
    }
    // One step less than the limit's worth is still fine to ask for (not run: 64 GiB).
    let per_step = model.call_bytes(&[2, 1, 1]).unwrap() - model.call_bytes(&[1, 1, 1]).unwrap();
    let fits = (MAX_CALL_BYTES - model.call_bytes(&[1, 1, 1]).unwrap()) / per_step + 1;
    assert!(model.call_bytes(&[fits as usize, 1, 1]).unwrap() <= MAX_CALL_BYTES);
    assert!(model.call_bytes(&[fits as usize + 1, 1, 1]).unwrap() > MAX_CALL_BYTES);
}

#[test]
fn call_bytes_saturates_and_checks_the_shape() {
    let model = wide_scratch_lstm();
    assert_eq!(model.call_bytes(&[1 << 40, 1 << 40, 1]).unwrap(), u64::MAX);
    assert_eq!(
        model.call_bytes(&[usize::MAX, usize::MAX, 1]).unwrap(),
        u64::MAX
    );
    let err = model.call_bytes(&[3, 2, 5]).unwrap_err().to_string();
    assert_mentions(&err, &["input has shape (3, 2, 5)", "input_size = 1"]);
    let err = model.call_bytes(&[0, 2, 1]).unwrap_err().to_string();
    assert_mentions(&err, &["at least 1"]);
}

#[test]
fn call_bytes_is_what_a_call_allocates() {
    // One thread, so every allocation of the call is on the thread that measures.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let configs = [
        Config::new(Mode::RnnTanh, 3, 5),
        Config {
            num_layers: 2,
            bidirectional: true,
            ..Config::new(Mode::Gru, 4, 6)
        },
        Config {
            num_layers: 4,
            bidirectional: true,
            proj_size: 3,
            ..Config::new(Mode::Lstm, 7, 9)
        },
        Config {
            num_layers: 3,
            batch_first: true,
            ..Config::new(Mode::Lstm, 2, 33)
        },
    ];
    for config in configs {
        let model = model_of(config.clone());
        for shape in [
            vec![5, 3, config.input_size],
            vec![40, 17, config.input_size],
            vec![11, config.input_size],
        ] {
            let x = Tensor::zeros(shape.clone());
            let need = model.call_bytes(&shape).unwrap();
            let (out, peak) =
                pool.install(|| peak_bytes(|| model.forward(&ForwardInput::new(x.view()))));
            out.unwrap();
            // Beyond the counted buffers: the three output shapes and the small-vector minimum
            // capacity of the loop order and lengths.
            assert!(
                need <= peak && peak <= need + 256,
                "{config}, input {shape:?}: counted {need} bytes, the call held {peak}"
            );
        }
    }
}

// ---- Regression tests for what the fuzzers found (fuzz/README.md).

/// Every committed seed of the two loading targets (and every regression input kept beside
/// them) loads or fails with a one-line error, in the default `cargo test`, without nightly.
#[test]
fn committed_fuzz_seeds_load_or_fail_cleanly() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus");
    let mut seen = 0;
    for (target, is_model) in [("load_model", true), ("load_input", false)] {
        for entry in std::fs::read_dir(corpus.join(target)).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let (result, peak) = peak_bytes(|| {
                if is_model {
                    let (options, file) = fuzz_options::split_options(&data);
                    Model::from_safetensors_bytes(file, &options).map(|_| ())
                } else {
                    InputFile::from_bytes(&data).map(|_| ())
                }
            });
            if let Err(e) = result {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "{}: {msg}", path.display());
            }
            assert!(peak < 1 << 20, "{}: held {peak} bytes", path.display());
            seen += 1;
        }
    }
    assert!(seen > 20, "only {seen} seeds");
}
