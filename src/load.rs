//! Reading models and inputs from safetensors files, and writing outputs.
//!
//! A model file holds a PyTorch `state_dict` (`safetensors.torch.save_file(module.state_dict(),
//! path, metadata=...)`): `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`,
//! `weight_hr_l{k}`, each optionally with `_reverse`, all under an optional prefix. The
//! configuration is read off the tensors ([`infer_config`]); the metadata keys `mode` and
//! `batch_first` (and, if present, PyTorch's other constructor arguments) must agree with them.
//!
//! # Untrusted files
//!
//! Every file is treated as hostile, and everything it claims is checked before anything is
//! allocated from it (`docs/LIMITS.md` lists the limits):
//! - a path must name a regular file — not a directory, FIFO or device, which could block or
//!   never end — of at most [`MAX_MODEL_FILE_BYTES`] (model) or [`MAX_INPUT_FILE_BYTES`]
//!   (input); its size is taken before reading;
//! - the header's length must fit in the file and in [`MAX_HEADER_BYTES`]; its JSON may hold at
//!   most [`MAX_HEADER_TOKENS`] tokens and [`MAX_TENSORS`] tensors, each of at most
//!   [`MAX_DIMS`] dimensions no larger than [`MAX_DIM_SIZE`];
//! - each tensor's size (shape × dtype, overflow-checked) must equal the span of its data
//!   offsets, and the spans must tile the file's data exactly;
//! - the configuration the tensors imply must stay within [`crate::config::MAX_SIZE`] and
//!   [`crate::config::MAX_LAYERS`].
//!
//! A file is read once, piece by piece: the header, then each tensor that is needed, converted
//! straight into its f32 tensor. The file is never held in memory whole, so a large checkpoint
//! costs only the module selected from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::{Dtype, SafeTensors, TensorView as FileTensor};

use crate::config::{Config, Mode, MAX_LAYERS};
use crate::error::{Error, Result};
use crate::forward::{ForwardInput, Outputs};
use crate::model::{Model, StateDict};
use crate::tensor::{checked_numel, Shape, Tensor};

/// Largest model file [`Model::load`] opens: 64 GiB. A checkpoint may hold the recurrent module
/// among much else; only its header and the module's tensors are read.
pub const MAX_MODEL_FILE_BYTES: u64 = 64 << 30;
/// Largest input file [`InputFile::read`] opens: 16 GiB.
pub const MAX_INPUT_FILE_BYTES: u64 = 16 << 30;
/// Largest safetensors header (the JSON after the 8-byte length): 16 MiB, room for well over
/// [`MAX_TENSORS`] entries. (The `safetensors` crate allows 100 MB.)
pub const MAX_HEADER_BYTES: u64 = 16 << 20;
/// Most JSON tokens (strings, opening brackets, commas, colons) in a header, counted before it
/// is parsed, so that the parsed header stays a small multiple of its text: 2^19, enough for
/// [`MAX_TENSORS`] tensors of [`MAX_DIMS`] dimensions (31 tokens each).
pub const MAX_HEADER_TOKENS: usize = 1 << 19;
/// Most tensors a file may list: 16384, far more than a whole speech or language model's
/// checkpoint holds (hundreds to a few thousand). The parsed header costs about 1.5 KiB per
/// tensor, so this bounds it to a few tens of MiB whatever the file.
pub const MAX_TENSORS: usize = 16_384;
/// Most dimensions of a tensor: 16 (PyTorch's own tensors rarely pass 6).
pub const MAX_DIMS: usize = 16;
/// Largest single dimension: 2^40, above any tensor a file can hold, so it only refuses
/// nonsense such as a zero-element tensor of shape `(0, 2^63)`.
pub const MAX_DIM_SIZE: u64 = 1 << 40;

/// How to read a model file.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Selects one recurrent module out of a larger state_dict (`encoder.rnn.`; the trailing
    /// dot is optional).
    pub prefix: String,
    /// The mode, when the file's metadata does not say (must agree with it when it does).
    pub mode: Option<Mode>,
    /// Forces `batch_first`.
    pub batch_first: bool,
}

/// The parameter kinds of a recurrent layer, as PyTorch names them.
const PARAM_KINDS: [&str; 5] = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"];

/// The parameter names PyTorch uses, for error messages.
const PARAM_NAMES_HELP: &str = "weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} or \
                                weight_hr_l{k}, optionally with _reverse";

/// The weight dtypes recur reads.
const FLOAT_DTYPES: &str = "F32, F64, F16 or BF16";

impl Model {
    /// Loads a model from a safetensors file holding a PyTorch state_dict.
    ///
    /// The path must name a regular file of at most [`MAX_MODEL_FILE_BYTES`]. Its header is
    /// checked against its real size before anything is allocated from it, and the file is read
    /// once, tensor by tensor. See [`infer_config`] for how the configuration is determined.
    ///
    /// ```no_run
    /// use recur::{LoadOptions, Model};
    /// let options = LoadOptions { prefix: "encoder.rnn.".into(), ..LoadOptions::default() };
    /// let model = Model::load("model.safetensors", &options)?;
    /// println!("{}", model.config());
    /// # Ok::<(), recur::Error>(())
    /// ```
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model> {
        let path = path.as_ref();
        let mut file = FileSource::open(path, MAX_MODEL_FILE_BYTES, "model", Error::InvalidModel)?;
        model_from_source(&mut file, options, Some(path))
    }

    /// Loads a model from the bytes of a safetensors file (see [`Model::load`]).
    pub fn from_safetensors_bytes(bytes: &[u8], options: &LoadOptions) -> Result<Model> {
        model_from_source(&mut SliceSource(bytes), options, None)
    }
}

fn model_from_source<S: Source>(
    src: &mut S,
    options: &LoadOptions,
    file: Option<&Path>,
) -> Result<Model> {
    let header = read_header(src).map_err(|e| e.into_error("model", file, Error::InvalidModel))?;
    let shapes: BTreeMap<String, Vec<usize>> = header
        .entries
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone()))
        .collect();
    let config = infer_config(&shapes, &header.metadata, options)?;
    // Every tensor under the prefix is one of the module's parameters with the shape the
    // configuration implies (infer_config checked); refuse a bad dtype before reading any.
    let prefix = normalize_prefix(&options.prefix);
    let module: Vec<&Entry> = header
        .entries
        .iter()
        .filter(|e| e.name.starts_with(prefix.as_str()))
        .collect();
    if let Some(e) = module.iter().find(|e| !is_float(e.dtype)) {
        return Err(Error::InvalidModel(format!(
            "tensor {} has dtype {}; weights must be {FLOAT_DTYPES}",
            e.name, e.dtype
        )));
    }
    let mut state_dict = StateDict::new();
    for e in module {
        let data = read_floats(src, &header, e)?;
        let local = &e.name[prefix.len()..];
        state_dict.insert(local.to_string(), Tensor::new(e.shape.clone(), data)?);
    }
    Model::from_state_dict(config, &state_dict)
}

/// The message for a file that is not a safetensors file recur accepts.
fn not_safetensors(what: &str, file: Option<&Path>, why: &str) -> String {
    match file {
        Some(p) => format!("{} is not a valid safetensors file: {why}", p.display()),
        None => format!("the {what} is not a valid safetensors file: {why}"),
    }
}

/// Adds `prefix`'s trailing dot if it lacks one (`encoder.rnn` reads as `encoder.rnn.`).
fn normalize_prefix(prefix: &str) -> String {
    let p = prefix.trim();
    if p.is_empty() || p.ends_with('.') {
        p.to_string()
    } else {
        format!("{p}.")
    }
}

// ---- Where the bytes come from.

/// The bytes of a safetensors file: a buffer, or a file read piece by piece.
trait Source {
    /// The file's size in bytes.
    fn size(&self) -> u64;
    /// Calls `f` on consecutive pieces of the bytes `offset..offset + len`, which lie within
    /// [`Source::size`]. Every piece but the last is a multiple of 8 bytes long, so no element
    /// of any dtype straddles two pieces.
    fn pieces(&mut self, offset: u64, len: u64, f: &mut dyn FnMut(&[u8])) -> Result<()>;
}

/// A file already in memory.
struct SliceSource<'a>(&'a [u8]);

impl Source for SliceSource<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn pieces(&mut self, offset: u64, len: u64, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        let bytes = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(start, len)| self.0.get(start..start.checked_add(len)?))
            .ok_or_else(|| {
                Error::InvalidModel(format!(
                    "bytes {offset}..{offset}+{len} lie outside the {} bytes of the buffer",
                    self.0.len()
                ))
            })?;
        f(bytes);
        Ok(())
    }
}

/// Bytes read from a file at a time: a multiple of 8 (see [`Source::pieces`]).
const PIECE_BYTES: usize = 1 << 16;

/// A regular file, opened after checking its type and size, read piece by piece.
struct FileSource {
    file: File,
    path: PathBuf,
    size: u64,
    buf: Vec<u8>,
}

impl FileSource {
    /// Opens `path` for reading if it is a regular file of at most `limit` bytes; `what` names
    /// the file's role ("model", "input") and `bad` makes the error for a file too large.
    fn open(path: &Path, limit: u64, what: &str, bad: fn(String) -> Error) -> Result<FileSource> {
        // Look before opening: opening a FIFO blocks until a writer appears, and a device such
        // as /dev/zero never ends.
        let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
        require_regular_file(path, &meta)?;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // The file that was opened, in case the path changed in between.
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        require_regular_file(path, &meta)?;
        let size = meta.len();
        if size > limit {
            return Err(bad(format!(
                "{} is {size} bytes, more than recur's limit of {limit} bytes ({}) for a {what} \
                 file",
                path.display(),
                human_bytes(limit)
            )));
        }
        Ok(FileSource {
            file,
            path: path.to_path_buf(),
            size,
            buf: Vec::new(),
        })
    }
}

impl Source for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn pieces(&mut self, offset: u64, len: u64, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        let path = &self.path;
        let fail = |e: io::Error| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                let why = format!(
                    "the file ended before byte {} (did it shrink while being read?)",
                    offset + len
                );
                Error::io(path, io::Error::new(e.kind(), why))
            } else {
                Error::io(path, e)
            }
        };
        self.file.seek(SeekFrom::Start(offset)).map_err(fail)?;
        if self.buf.is_empty() {
            self.buf = vec![0; PIECE_BYTES];
        }
        let mut left = len;
        while left > 0 {
            // `n <= PIECE_BYTES`, so the cast is exact.
            let n = left.min(PIECE_BYTES as u64) as usize;
            let piece = &mut self.buf[..n];
            self.file.read_exact(piece).map_err(fail)?;
            f(piece);
            left -= n as u64;
        }
        Ok(())
    }
}

/// Refuses anything but a regular file (or a symlink to one), naming what it is.
fn require_regular_file(path: &Path, meta: &fs::Metadata) -> Result<()> {
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(());
    }
    let what = if ft.is_dir() {
        "a directory"
    } else {
        special_file_kind(&ft)
    };
    let why = format!(
        "is {what}, not a regular file (recur reads models and inputs only from regular files, \
         whose size it checks before reading)"
    );
    Err(Error::io(
        path,
        io::Error::new(io::ErrorKind::InvalidInput, why),
    ))
}

#[cfg(unix)]
fn special_file_kind(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(not(unix))]
fn special_file_kind(_: &fs::FileType) -> &'static str {
    "a special file"
}

/// `n` bytes in the largest binary unit that divides it, for messages about limits.
fn human_bytes(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

// ---- The header.

/// One tensor of a checked header.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Its bytes within the data section: `start..end`.
    start: u64,
    end: u64,
}

/// A safetensors header, checked against the file it came from.
#[derive(Debug)]
struct Header {
    /// Where the data section starts in the file: 8 + the header's length.
    data_start: u64,
    /// The tensors, in the order of their data.
    entries: Vec<Entry>,
    /// The `__metadata__` map (empty if absent).
    metadata: HashMap<String, String>,
}

impl Header {
    fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Why a header was refused: the file is not a safetensors file recur accepts, or it could not
/// be read.
enum HeaderError {
    Format(String),
    Read(Error),
}

impl HeaderError {
    /// The error to report for the `what` file (its path if known); `bad` wraps format errors.
    fn into_error(self, what: &str, file: Option<&Path>, bad: fn(String) -> Error) -> Error {
        match self {
            HeaderError::Format(why) => bad(not_safetensors(what, file, &why)),
            HeaderError::Read(e) => e,
        }
    }
}

/// Reads and checks the header of a safetensors file: its length against the file's size and
/// [`MAX_HEADER_BYTES`], then its contents ([`check_header`]).
fn read_header<S: Source>(src: &mut S) -> std::result::Result<Header, HeaderError> {
    let size = src.size();
    if size == 0 {
        return Err(HeaderError::Format("the file is empty".into()));
    }
    if size < 8 {
        return Err(HeaderError::Format(format!(
            "the file is {size} bytes, too short for a safetensors header (an 8-byte length, \
             then JSON)"
        )));
    }
    let mut len = [0u8; 8];
    src.pieces(0, 8, &mut |b| len.copy_from_slice(b))
        .map_err(HeaderError::Read)?;
    let header_len = u64::from_le_bytes(len);
    let available = size - 8;
    if header_len > available {
        return Err(HeaderError::Format(format!(
            "the header claims {header_len} bytes but the file has only {available} bytes after \
             its length prefix (truncated, or not a safetensors file)"
        )));
    }
    if header_len > MAX_HEADER_BYTES {
        return Err(HeaderError::Format(format!(
            "the header is {header_len} bytes, more than recur's limit of {MAX_HEADER_BYTES} \
             bytes ({})",
            human_bytes(MAX_HEADER_BYTES)
        )));
    }
    // `header_len <= MAX_HEADER_BYTES`, so the cast is exact.
    let mut text = Vec::with_capacity(header_len as usize);
    src.pieces(8, header_len, &mut |b| text.extend_from_slice(b))
        .map_err(HeaderError::Read)?;
    let data_start = 8 + header_len;
    let (entries, metadata) =
        check_header(&text, size - data_start).map_err(HeaderError::Format)?;
    Ok(Header {
        data_start,
        entries,
        metadata,
    })
}

/// Parses a header's JSON text and checks every entry against `data_len`, the bytes of tensor
/// data that follow it. Returns the tensors in the order of their data, and the metadata.
///
/// The checks, each with a message that names the tensor: at most [`MAX_HEADER_TOKENS`] JSON
/// tokens (counted before parsing) and [`MAX_TENSORS`] tensors; a known dtype; a shape of at
/// most [`MAX_DIMS`] dimensions, none above [`MAX_DIM_SIZE`]; data offsets within the data; a
/// size (overflow-checked) equal to the offsets' span; spans that tile the data exactly, as the
/// `safetensors` crate requires.
#[allow(clippy::type_complexity)]
fn check_header(
    text: &[u8],
    data_len: u64,
) -> std::result::Result<(Vec<Entry>, HashMap<String, String>), String> {
    let text = std::str::from_utf8(text)
        .map_err(|_| "the header is not UTF-8 text (not a safetensors file?)".to_string())?;
    if json_tokens_exceed(text.as_bytes(), MAX_HEADER_TOKENS) {
        return Err(format!(
            "the header holds more than {MAX_HEADER_TOKENS} JSON tokens, recur's limit (a \
             safetensors header lists at most {MAX_TENSORS} tensors of at most {MAX_DIMS} \
             dimensions)"
        ));
    }
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("the header is not valid JSON ({e}); not a safetensors file?"))?;
    let serde_json::Value::Object(map) = json else {
        return Err("the header is not a JSON object (not a safetensors file?)".into());
    };
    let count = map.keys().filter(|k| *k != "__metadata__").count();
    if count > MAX_TENSORS {
        return Err(format!(
            "the header lists {count} tensors, more than recur's limit of {MAX_TENSORS}"
        ));
    }
    let mut metadata = HashMap::new();
    let mut entries = Vec::with_capacity(count);
    for (name, info) in map {
        if name == "__metadata__" {
            metadata = check_metadata(info)?;
            continue;
        }
        entries.push(check_entry(name, &info, data_len)?);
    }
    // The spans must follow one another from 0 to the end of the data, without gap or overlap.
    entries.sort_by_key(|e| (e.start, e.end));
    let mut at = 0u64;
    for e in &entries {
        if e.start != at {
            return Err(format!(
                "tensor {}: its data_offsets [{}, {}] do not follow the previous tensor's, \
                 which ends at byte {at} (gap or overlap)",
                e.name, e.start, e.end
            ));
        }
        at = e.end;
    }
    if at != data_len {
        return Err(format!(
            "the tensors' data ends at byte {at} but the file holds {data_len} bytes of tensor \
             data: the data does not cover the file exactly (trailing or missing bytes)"
        ));
    }
    Ok((entries, metadata))
}

/// Whether `text` holds more than `limit` JSON tokens: strings, and `[`, `{`, `,`, `:` outside
/// strings. The parsed value has at most about that many nodes, so counting first bounds the
/// memory parsing takes.
fn json_tokens_exceed(text: &[u8], limit: usize) -> bool {
    let (mut tokens, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                tokens += 1;
            }
            b'[' | b'{' | b',' | b':' => tokens += 1,
            _ => continue,
        }
        if tokens > limit {
            return true;
        }
    }
    false
}

/// The `__metadata__` entry: a map of strings to strings, or null.
fn check_metadata(info: serde_json::Value) -> std::result::Result<HashMap<String, String>, String> {
    match info {
        serde_json::Value::Null => Ok(HashMap::new()),
        serde_json::Value::Object(m) => m
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k, s)),
                other => Err(format!(
                    "__metadata__ {k} = {other} is not a string (metadata maps strings to \
                     strings)"
                )),
            })
            .collect(),
        other => Err(format!(
            "__metadata__ is {}, not a map of strings to strings",
            json_kind(&other)
        )),
    }
}

/// What kind of JSON value `v` is, for messages.
fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A shape from its JSON dimensions, displayed as PyTorch prints it.
fn show_dims(dims: &[u64]) -> String {
    match dims {
        [d] => format!("({d},)"),
        _ => {
            let dims: Vec<String> = dims.iter().map(u64::to_string).collect();
            format!("({})", dims.join(", "))
        }
    }
}

/// One tensor's header entry, checked against the `data_len` bytes of data.
fn check_entry(
    name: String,
    info: &serde_json::Value,
    data_len: u64,
) -> std::result::Result<Entry, String> {
    let serde_json::Value::Object(info) = info else {
        return Err(format!(
            "tensor {name}: its header entry is {}, not an object with dtype, shape and \
             data_offsets",
            json_kind(info)
        ));
    };
    let offsets = match info.get("data_offsets") {
        None => return Err(format!("tensor {name} has no data_offsets")),
        Some(serde_json::Value::Array(a)) => match a.as_slice() {
            [s, e] => s.as_u64().zip(e.as_u64()),
            _ => None,
        },
        Some(_) => None,
    };
    let Some((start, end)) = offsets else {
        return Err(format!(
            "tensor {name}: data_offsets {} is not a pair of byte offsets [start, end]",
            info["data_offsets"]
        ));
    };
    if end > data_len || start > end {
        return Err(format!(
            "tensor {name}: data_offsets [{start}, {end}] point outside the {data_len} bytes of \
             tensor data in the file (truncated?)"
        ));
    }
    let dtype: Dtype = match info.get("dtype") {
        None => return Err(format!("tensor {name} has no dtype")),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            format!("tensor {name} has dtype {v}, which is not a safetensors dtype")
        })?,
    };
    let dims: Vec<u64> = match info.get("shape") {
        None => return Err(format!("tensor {name} has no shape")),
        Some(serde_json::Value::Array(a)) if a.len() > MAX_DIMS => {
            return Err(format!(
                "tensor {name} has {} dimensions, more than recur's limit of {MAX_DIMS}",
                a.len()
            ))
        }
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(serde_json::Value::as_u64).collect())
            .ok_or_else(|| {
                format!("tensor {name}: shape {v} is not a list of non-negative integers")
            })?,
    };
    let shown = show_dims(&dims);
    if let Some(d) = dims.iter().find(|&&d| d > MAX_DIM_SIZE) {
        return Err(format!(
            "tensor {name} has shape {shown}: dimension {d} is more than recur's limit of \
             {MAX_DIM_SIZE}"
        ));
    }
    let bits = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.bitsize() as u64));
    let Some(bits) = bits else {
        return Err(format!(
            "tensor {name} has shape {shown}, whose size overflows (corrupt header)"
        ));
    };
    if bits % 8 != 0 {
        return Err(format!(
            "tensor {name} has shape {shown} of {dtype}: {bits} bits, not a whole number of bytes"
        ));
    }
    let need = bits / 8;
    if need > data_len {
        return Err(format!(
            "tensor {name} has shape {shown} of {dtype}: {need} bytes, but the file holds only \
             {data_len} bytes of tensor data (truncated or corrupt)"
        ));
    }
    if end - start != need {
        return Err(format!(
            "tensor {name} has shape {shown} of {dtype}, which needs {need} bytes, but its \
             data_offsets [{start}, {end}] span {}",
            end - start
        ));
    }
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| format!("tensor {name} has shape {shown}, too large for this platform"))?;
    Ok(Entry {
        name,
        dtype,
        shape,
        start,
        end,
    })
}

/// Parses a safetensors buffer after checking its header against the buffer's real size, with
/// recur's limits and messages (see [`check_header`]).
pub(crate) fn parse_safetensors(bytes: &[u8]) -> std::result::Result<SafeTensors<'_>, String> {
    read_header(&mut SliceSource(bytes)).map_err(|e| match e {
        HeaderError::Format(why) => why,
        HeaderError::Read(e) => e.to_string(),
    })?;
    SafeTensors::deserialize(bytes).map_err(|e| e.to_string())
}

// ---- Tensor data.

/// Whether recur reads `dtype` as floats.
fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16)
}

/// Appends the little-endian `dtype` elements of `bytes` to `out` as f32 (float dtypes only;
/// `bytes` holds whole elements).
fn decode_floats(dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        Dtype::F64 => out.extend(bytes.chunks_exact(8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            f64::from_le_bytes(a) as f32
        })),
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        _ => {}
    }
}

/// Appends the little-endian I64 or I32 elements of `bytes` to `out`.
fn decode_ints(dtype: Dtype, bytes: &[u8], out: &mut Vec<i64>) {
    match dtype {
        Dtype::I64 => out.extend(bytes.chunks_exact(8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            i64::from_le_bytes(a)
        })),
        Dtype::I32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        ),
        _ => {}
    }
}

/// The elements of a checked entry (a float dtype) as f32, read from the file.
fn read_floats<S: Source>(src: &mut S, header: &Header, e: &Entry) -> Result<Vec<f32>> {
    // The entry's size was checked against the data that is really in the file, so this
    // capacity is bounded by the file's size.
    let mut out = Vec::with_capacity(checked_numel(&e.shape).unwrap_or(0));
    src.pieces(header.data_start + e.start, e.end - e.start, &mut |b| {
        decode_floats(e.dtype, b, &mut out)
    })?;
    Ok(out)
}

/// The elements of a checked entry (I64 or I32) as i64, read from the file.
fn read_ints<S: Source>(src: &mut S, header: &Header, e: &Entry) -> Result<Vec<i64>> {
    let mut out = Vec::with_capacity(checked_numel(&e.shape).unwrap_or(0));
    src.pieces(header.data_start + e.start, e.end - e.start, &mut |b| {
        decode_ints(e.dtype, b, &mut out)
    })?;
    Ok(out)
}

/// A tensor's elements as f32, or its dtype if it is not a float type recur reads.
fn floats_of(view: &FileTensor<'_>) -> std::result::Result<Vec<f32>, Dtype> {
    if !is_float(view.dtype()) {
        return Err(view.dtype());
    }
    let mut out = Vec::new();
    decode_floats(view.dtype(), view.data(), &mut out);
    Ok(out)
}

/// A tensor's elements as f64 (float dtypes only), or its dtype.
pub(crate) fn f64s_of(view: &FileTensor<'_>) -> std::result::Result<Vec<f64>, Dtype> {
    if view.dtype() == Dtype::F64 {
        return Ok(view
            .data()
            .chunks_exact(8)
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                f64::from_le_bytes(a)
            })
            .collect());
    }
    Ok(floats_of(view)?.into_iter().map(f64::from).collect())
}

/// A tensor's elements as i64 (I64 and I32 only), or its dtype.
pub(crate) fn ints_of(view: &FileTensor<'_>) -> std::result::Result<Vec<i64>, Dtype> {
    match view.dtype() {
        Dtype::I64 | Dtype::I32 => {
            let mut out = Vec::new();
            decode_ints(view.dtype(), view.data(), &mut out);
            Ok(out)
        }
        other => Err(other),
    }
}

/// A recurrent parameter's name split into kind, layer and direction:
/// `weight_hh_l1_reverse` is `("weight_hh", 1, 1)`.
fn parse_param_name(name: &str) -> Option<(&'static str, usize, usize)> {
    let kind = PARAM_KINDS
        .into_iter()
        .find(|k| name.starts_with(k) && name[k.len()..].starts_with("_l"))?;
    let rest = &name[kind.len() + 2..];
    let (digits, dir) = match rest.strip_suffix("_reverse") {
        Some(d) => (d, 1),
        None => (rest, 0),
    };
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    Some((kind, digits.parse().ok()?, dir))
}

/// The prefixes under which `shapes` holds a recurrent module (a tensor `<prefix>weight_ih_l0`).
fn module_prefixes(shapes: &BTreeMap<String, Vec<usize>>) -> Vec<String> {
    shapes
        .keys()
        .filter_map(|n| n.strip_suffix("weight_ih_l0"))
        .map(str::to_string)
        .collect()
}

/// Lists a few prefixes for an error message.
fn list_prefixes(prefixes: &[String]) -> String {
    let shown: Vec<String> = prefixes
        .iter()
        .take(5)
        .map(|p| {
            if p.is_empty() {
                "(no prefix)".to_string()
            } else {
                p.clone()
            }
        })
        .collect();
    let more = if prefixes.len() > 5 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// A metadata value, parsed as a boolean (`true`/`false`, any case, as Python's `str(True)`).
fn meta_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::InvalidModel(format!(
            "metadata {key} = {value:?} is not true or false"
        ))),
    }
}

/// A metadata value, parsed as a non-negative integer.
fn meta_usize(key: &str, value: &str) -> Result<usize> {
    value.trim().parse().map_err(|_| {
        Error::InvalidModel(format!(
            "metadata {key} = {value:?} is not a non-negative integer"
        ))
    })
}

/// Describes the cell type implied by a gate count, for error messages.
fn gates_family(g: usize) -> &'static str {
    match g {
        1 => "RNN",
        3 => "GRU",
        _ => "LSTM",
    }
}

/// Infers a recurrent module's [`Config`] from the names and shapes of a file's tensors, its
/// metadata and the load options.
///
/// `shapes` holds every tensor of the file under its full name; the module is the tensors under
/// `options.prefix`, which must all be recurrent parameters. From them: `num_layers` (layers
/// `0..num_layers`, no gaps), `bidirectional` (`_reverse` tensors), `bias` (bias tensors),
/// `proj_size` (`weight_hr`), `hidden_size`, `input_size` and the gate count `G` from the rows
/// of `weight_hh_l0` (4 LSTM, 3 GRU, 1 RNN; `RNN_TANH` unless the metadata, `options.mode` or a
/// `nonlinearity` key says `RNN_RELU`). Metadata keys `mode`, `batch_first`, `input_size`,
/// `hidden_size`, `num_layers`, `bidirectional`, `bias`, `proj_size` and `nonlinearity` are
/// optional; one that disagrees with the tensors is an error. Other keys are ignored.
///
/// Every parameter the configuration implies is checked for presence and shape; the error names
/// the tensor (with its prefix) and the expected and found shapes.
pub fn infer_config(
    shapes: &BTreeMap<String, Vec<usize>>,
    metadata: &HashMap<String, String>,
    options: &LoadOptions,
) -> Result<Config> {
    let bad = |msg: String| Err(Error::InvalidModel(msg));
    let prefix = normalize_prefix(&options.prefix);
    let full = |local: &str| format!("{prefix}{local}");
    let under_prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!(" under prefix {prefix}")
    };
    let modules = module_prefixes(shapes);

    // The tensors under the prefix, by parameter key.
    let mut params: BTreeMap<(&'static str, usize, usize), (&str, &[usize])> = BTreeMap::new();
    let mut others: Vec<&str> = Vec::new();
    let mut any_under = false;
    for (name, shape) in shapes {
        let Some(local) = name.strip_prefix(prefix.as_str()) else {
            continue;
        };
        any_under = true;
        match parse_param_name(local) {
            Some(key) => {
                params.insert(key, (name.as_str(), shape.as_slice()));
            }
            None => others.push(name),
        }
    }
    let hint = if modules.is_empty() {
        "the file holds no recurrent module (no tensor named *weight_ih_l0)".to_string()
    } else {
        format!(
            "recurrent modules are under: {}; select one with --prefix",
            list_prefixes(&modules)
        )
    };
    if shapes.is_empty() {
        return bad("the file holds no tensors".into());
    }
    if !any_under {
        return bad(format!(
            "prefix {prefix} matches no tensor in the file; {hint}"
        ));
    }
    if params.is_empty() {
        let where_ = if prefix.is_empty() {
            "at the top level of the file".to_string()
        } else {
            format!("under prefix {prefix}")
        };
        return bad(format!("no recurrent-layer parameters {where_}; {hint}"));
    }
    if let Some(other) = others.first() {
        let why = if prefix.is_empty() {
            " (if the recurrent module is part of a larger model, select it with --prefix)"
        } else {
            ""
        };
        return bad(format!(
            "unexpected tensor {other}{under_prefix}: not a recurrent-layer parameter (expected \
             {PARAM_NAMES_HELP}){why}"
        ));
    }
    let get = |kind: &str, layer: usize, dir: usize| -> Option<&[usize]> {
        let kind = PARAM_KINDS.into_iter().find(|k| *k == kind)?;
        params.get(&(kind, layer, dir)).map(|&(_, s)| s)
    };
    let require = |kind: &str, why: &str| -> Result<&[usize]> {
        get(kind, 0, 0).ok_or_else(|| {
            Error::InvalidModel(format!(
                "missing tensor {}{why}",
                full(&format!("{kind}_l0"))
            ))
        })
    };

    // hidden_size, proj_size and G from weight_hh_l0 (and weight_hr_l0).
    let w_hh = require(
        "weight_hh",
        " (every recurrent layer has weight_hh_l{k}; it gives hidden_size and the mode)",
    )?;
    let w_hh_name = full("weight_hh_l0");
    let &[rows, h_out] = w_hh else {
        return bad(format!(
            "tensor {w_hh_name} has shape {}, expected 2-D (G*hidden_size, hidden_size)",
            Shape(w_hh)
        ));
    };
    let any_proj = params.keys().any(|k| k.0 == "weight_hr");
    let (hidden, proj) = if any_proj {
        let w_hr = require(
            "weight_hr",
            " (weight_hr tensors are present: the LSTM projects)",
        )?;
        let w_hr_name = full("weight_hr_l0");
        let &[p, h] = w_hr else {
            return bad(format!(
                "tensor {w_hr_name} has shape {}, expected 2-D (proj_size, hidden_size)",
                Shape(w_hr)
            ));
        };
        if p != h_out {
            return bad(format!(
                "tensor {w_hr_name} has shape {}: its rows (proj_size) must equal the columns \
                 of {w_hh_name} {}",
                Shape(w_hr),
                Shape(w_hh)
            ));
        }
        (h, p)
    } else {
        (h_out, 0)
    };
    if hidden == 0 {
        return bad(format!(
            "tensor {w_hh_name} has shape {}: hidden_size would be 0",
            Shape(w_hh)
        ));
    }
    let gates = rows / hidden;
    if rows % hidden != 0 || ![1, 3, 4].contains(&gates) {
        return bad(format!(
            "tensor {w_hh_name} has shape {}: its rows must be G*hidden_size = G*{hidden} with \
             G = 1 (RNN), 3 (GRU) or 4 (LSTM)",
            Shape(w_hh)
        ));
    }
    let tensors_say = format!(
        "{w_hh_name} has shape {}, which is {} (G = {gates} gate blocks of hidden_size {hidden})",
        Shape(w_hh),
        gates_family(gates)
    );

    // The mode: tensors, metadata `mode` and `nonlinearity`, and the caller must agree.
    let meta = |key: &str| metadata.get(key).map(String::as_str);
    let meta_mode = match meta("mode") {
        None => None,
        Some(v) if v.trim().eq_ignore_ascii_case("RNN") => Some((v, None)),
        Some(v) => match Mode::from_name(v) {
            Some(m) => Some((v, Some(m))),
            None => {
                return bad(format!(
                    "metadata mode = {v:?} is not a recurrent mode (expected LSTM, GRU, \
                     RNN_TANH or RNN_RELU)"
                ))
            }
        },
    };
    let meta_relu = match meta("nonlinearity") {
        None => None,
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "tanh" => Some(false),
            "relu" => Some(true),
            _ => return bad(format!("metadata nonlinearity = {v:?} is not tanh or relu")),
        },
    };
    if let (Some(requested), Some((v, meta_m))) = (options.mode, meta_mode) {
        let agrees = match meta_m {
            Some(m) => m == requested,
            None => requested.gates() == 1,
        };
        if !agrees {
            return bad(format!(
                "the requested mode {requested} disagrees with the file's metadata mode = {v:?}"
            ));
        }
    }
    if let Some((v, meta_m)) = meta_mode {
        let g = meta_m.map_or(1, Mode::gates);
        if g != gates {
            return bad(format!(
                "metadata mode = {v:?} disagrees with the tensors: {tensors_say}"
            ));
        }
    }
    if let Some(requested) = options.mode {
        if requested.gates() != gates {
            return bad(format!(
                "the requested mode {requested} disagrees with the tensors: {tensors_say}"
            ));
        }
    }
    let nl_value = meta("nonlinearity").unwrap_or_default();
    let mode = match gates {
        4 => Mode::Lstm,
        3 => Mode::Gru,
        _ => {
            let named = options.mode.or(meta_mode.and_then(|(_, m)| m));
            match (named, meta_relu) {
                (Some(m), Some(relu)) if (m == Mode::RnnRelu) != relu => {
                    return bad(format!(
                        "metadata nonlinearity = {nl_value:?} disagrees with mode {m}"
                    ))
                }
                (Some(m), _) => m,
                (None, Some(true)) => Mode::RnnRelu,
                (None, _) => Mode::RnnTanh,
            }
        }
    };
    if gates != 1 && meta_relu == Some(true) {
        return bad(format!(
            "metadata nonlinearity = {nl_value:?} disagrees with the tensors: {tensors_say} \
             (only RNN takes a nonlinearity)"
        ));
    }

    // input_size from weight_ih_l0.
    let w_ih = require("weight_ih", " (every recurrent layer has weight_ih_l{k})")?;
    let &[_, input_size] = w_ih else {
        return bad(format!(
            "tensor {} has shape {}, expected 2-D (G*hidden_size, input_size)",
            full("weight_ih_l0"),
            Shape(w_ih)
        ));
    };

    // num_layers: layers 0..num_layers with no gaps. The first gap is found within
    // (number of distinct layers + 1) steps, whatever index a name claims.
    let layers: BTreeSet<usize> = params.keys().map(|k| k.1).collect();
    let top = layers.last().copied().unwrap_or(0);
    for k in 0..=top {
        for kind in ["weight_ih", "weight_hh"] {
            if get(kind, k, 0).is_none() {
                return bad(format!(
                    "missing tensor {} (the file has tensors of layer {top}, so layers 0..={top} \
                     must all be present)",
                    full(&Config::param_name(kind, k, 0))
                ));
            }
        }
    }
    let num_layers = top + 1;
    if num_layers > MAX_LAYERS {
        return bad(format!(
            "num_layers {num_layers} exceeds recur's limit of {MAX_LAYERS}"
        ));
    }
    let bidirectional = params.keys().any(|k| k.2 == 1);
    let bias = params.keys().any(|k| k.0.starts_with("bias"));
    let batch_first = match meta("batch_first") {
        Some(v) => meta_bool("batch_first", v)?,
        None => false,
    } || options.batch_first;
    let config = Config {
        mode,
        input_size,
        hidden_size: hidden,
        num_layers,
        bias,
        batch_first,
        bidirectional,
        proj_size: proj,
    };

    // PyTorch's other constructor arguments, when the metadata states them.
    for (key, found) in [
        ("input_size", config.input_size),
        ("hidden_size", config.hidden_size),
        ("num_layers", config.num_layers),
        ("proj_size", config.proj_size),
    ] {
        if let Some(v) = meta(key) {
            if meta_usize(key, v)? != found {
                return bad(format!(
                    "metadata {key} = {v:?} disagrees with the tensors, which say {key} = {found}"
                ));
            }
        }
    }
    for (key, found) in [
        ("bidirectional", config.bidirectional),
        ("bias", config.bias),
    ] {
        if let Some(v) = meta(key) {
            if meta_bool(key, v)? != found {
                return bad(format!(
                    "metadata {key} = {v:?} disagrees with the tensors, which say {key} = {found}"
                ));
            }
        }
    }
    config.validate()?;

    // Every parameter present, with PyTorch's shape.
    let mut expected = BTreeSet::new();
    for layer in 0..config.num_layers {
        for dir in 0..config.directions() {
            for (local, want) in config.param_shapes(layer, dir) {
                let name = full(&local);
                let Some((kind, _, _)) = parse_param_name(&local) else {
                    continue;
                };
                match get(kind, layer, dir) {
                    None => {
                        let why = if kind.starts_with("bias") {
                            "; the file has bias tensors, so every layer and direction needs \
                             bias_ih and bias_hh"
                        } else if dir == 1 {
                            "; the file has _reverse tensors, so every layer needs both directions"
                        } else {
                            ""
                        };
                        return bad(format!(
                            "missing tensor {name} (expected shape {} for {config}{why})",
                            Shape(&want)
                        ));
                    }
                    Some(found) if found != want.as_slice() => {
                        return bad(format!(
                            "tensor {name} has shape {}, expected {} for {config}",
                            Shape(found),
                            Shape(&want)
                        ));
                    }
                    Some(_) => {}
                }
                expected.insert((kind, layer, dir));
            }
        }
    }
    if let Some((_, (name, _))) = params.iter().find(|(k, _)| !expected.contains(*k)) {
        return bad(format!("unexpected tensor {name} for {config}"));
    }
    Ok(config)
}

/// The tensors of an input file: `input`, and optionally `h0`, `c0`, `lengths`.
///
/// Shapes are checked against the model by [`Model::forward`], not here.
#[derive(Clone, Debug, PartialEq)]
pub struct InputFile {
    /// `input`: `(L, N, input_size)` (`(N, L, input_size)` batch-first, `(L, input_size)`
    /// unbatched).
    pub input: Tensor,
    /// `h0`: `(D*num_layers, N, H_out)`.
    pub h0: Option<Tensor>,
    /// `c0` (LSTM): `(D*num_layers, N, hidden_size)`.
    pub c0: Option<Tensor>,
    /// `lengths`: one per batch element.
    pub lengths: Option<Vec<usize>>,
}

/// The tensor names an input file may hold.
const INPUT_NAMES: &str = "input, h0, c0, lengths";

impl InputFile {
    /// Reads an input file (safetensors): a regular file of at most [`MAX_INPUT_FILE_BYTES`],
    /// checked as [`Model::load`] checks a model, read once.
    pub fn read(path: impl AsRef<Path>) -> Result<InputFile> {
        let path = path.as_ref();
        let mut file = FileSource::open(path, MAX_INPUT_FILE_BYTES, "input", Error::InvalidInput)?;
        input_from_source(&mut file, Some(path))
    }

    /// Reads an input file from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<InputFile> {
        input_from_source(&mut SliceSource(bytes), None)
    }

    /// Borrows the tensors as a forward pass's input.
    pub fn forward_input(&self) -> ForwardInput<'_> {
        ForwardInput {
            input: self.input.view(),
            h0: self.h0.as_ref().map(Tensor::view),
            c0: self.c0.as_ref().map(Tensor::view),
            lengths: self.lengths.as_deref(),
        }
    }
}

fn input_from_source<S: Source>(src: &mut S, file: Option<&Path>) -> Result<InputFile> {
    let header =
        read_header(src).map_err(|e| e.into_error("input file", file, Error::InvalidInput))?;
    let mut names: Vec<&str> = header.entries.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    if let Some(other) = names
        .iter()
        .find(|n| !["input", "h0", "c0", "lengths"].contains(n))
    {
        return Err(Error::InvalidInput(format!(
            "unexpected tensor {other} in the input file (accepted names: {INPUT_NAMES})"
        )));
    }
    // Everything is checked before any tensor is read.
    let float_entry = |name: &str| -> Result<Option<&Entry>> {
        match header.get(name) {
            Some(e) if !is_float(e.dtype) => Err(Error::InvalidInput(format!(
                "{name} has dtype {}; expected a float tensor ({FLOAT_DTYPES})",
                e.dtype
            ))),
            found => Ok(found),
        }
    };
    let Some(input) = float_entry("input")? else {
        let found = if names.is_empty() {
            "it holds no tensors".to_string()
        } else {
            format!("found {}", names.join(", "))
        };
        return Err(Error::InvalidInput(format!(
            "the input file has no tensor named input ({found})"
        )));
    };
    let lengths = header.get("lengths");
    if let Some(e) = lengths {
        if !matches!(e.dtype, Dtype::I64 | Dtype::I32) {
            return Err(Error::InvalidInput(format!(
                "lengths has dtype {}; expected I64 or I32",
                e.dtype
            )));
        }
        if e.shape.len() != 1 {
            return Err(Error::InvalidInput(format!(
                "lengths has shape {}, expected 1-D (N,): one length per batch element",
                Shape(&e.shape)
            )));
        }
    }
    let (h0, c0) = (float_entry("h0")?, float_entry("c0")?);

    let mut tensor = |e: &Entry| -> Result<Tensor> {
        Tensor::new(e.shape.clone(), read_floats(src, &header, e)?)
    };
    let input = tensor(input)?;
    let h0 = h0.map(&mut tensor).transpose()?;
    let c0 = c0.map(&mut tensor).transpose()?;
    let lengths = match lengths {
        None => None,
        Some(e) => Some(
            read_ints(src, &header, e)?
                .into_iter()
                .enumerate()
                .map(|(b, v)| {
                    usize::try_from(v).map_err(|_| {
                        Error::InvalidInput(format!(
                            "lengths[{b}] = {v} is negative; lengths must be at least 1"
                        ))
                    })
                })
                .collect::<Result<Vec<usize>>>()?,
        ),
    };
    Ok(InputFile {
        input,
        h0,
        c0,
        lengths,
    })
}

// ---- Writing outputs.

/// Distinguishes temporary files of concurrent writes within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `output`, `h_n` and (LSTM) `c_n` as f32 tensors of a safetensors file at `path`.
///
/// The file is written whole or not at all: the bytes go to a temporary file in the same
/// directory, which is synced and then renamed over `path`. On failure (a missing or read-only
/// directory, a full disk) the temporary file is removed and an existing file at `path` is left
/// untouched. A path naming a device or pipe (`/dev/stdout`, a FIFO) is written in place, since
/// renaming over it would replace the device; a directory is refused.
pub fn write_outputs(path: impl AsRef<Path>, outputs: &Outputs) -> Result<()> {
    let path = path.as_ref();
    let mut tensors = vec![("output", &outputs.output), ("h_n", &outputs.h_n)];
    if let Some(c_n) = &outputs.c_n {
        tensors.push(("c_n", c_n));
    }
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, t) in &tensors {
        if checked_numel(&t.shape) != Some(t.data.len()) {
            return Err(Error::InvalidInput(format!(
                "{name} has shape {} but {} elements",
                Shape(&t.shape),
                t.data.len()
            )));
        }
        let end = offset + 4 * t.data.len() as u64;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = serde_json::Value::Object(header).to_string();
    // Pad with spaces so the data starts 8-byte aligned, as `safetensors` writes it.
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    write_atomically(path, |w| {
        w.write_all(&(text.len() as u64).to_le_bytes())?;
        w.write_all(text.as_bytes())?;
        let mut buf = [0u8; 4096];
        for (_, t) in &tensors {
            for chunk in t.data.chunks(buf.len() / 4) {
                for (b, v) in buf.chunks_exact_mut(4).zip(chunk) {
                    b.copy_from_slice(&v.to_le_bytes());
                }
                w.write_all(&buf[..4 * chunk.len()])?;
            }
        }
        Ok(())
    })
}

/// Writes what `write` produces to `path` through a synced temporary file beside it and a
/// rename (see [`write_outputs`]).
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<()> {
    let io_err = |why: String, kind: io::ErrorKind| Error::io(path, io::Error::new(kind, why));
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(io_err(
                "is a directory; the output must be a file path".into(),
                io::ErrorKind::InvalidInput,
            ))
        }
        Ok(m) if !m.is_file() => return write_in_place(path, write),
        _ => {}
    }
    let file_name = path.file_name().ok_or_else(|| {
        io_err(
            "not a file path (it has no file name)".into(),
            io::ErrorKind::InvalidInput,
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(temp_name);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| {
            let why = match fs::metadata(&dir) {
                Err(m) if m.kind() == io::ErrorKind::NotFound => {
                    format!("the directory {} does not exist ({e})", dir.display())
                }
                Ok(m) if !m.is_dir() => {
                    format!("{} is not a directory ({e})", dir.display())
                }
                _ => format!("cannot create a file in {} ({e})", dir.display()),
            };
            io_err(why, e.kind())
        })?;
    let mut w = BufWriter::new(file);
    let written = write(&mut w)
        .and_then(|()| w.into_inner().map_err(io::IntoInnerError::into_error))
        .and_then(|file| {
            file.sync_all()?;
            drop(file);
            fs::rename(&temp, path)
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        let why = format!("{e}; nothing was written to it");
        return Err(io_err(why, e.kind()));
    }
    // Make the rename durable where the platform allows syncing a directory.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes to an existing device or pipe (`/dev/stdout`, `/dev/full`, a FIFO) in place.
fn write_in_place(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<()> {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::new(file);
    write(&mut w)
        .and_then(|()| w.flush())
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_names_parse() {
        assert_eq!(parse_param_name("weight_ih_l0"), Some(("weight_ih", 0, 0)));
        assert_eq!(
            parse_param_name("weight_hh_l12_reverse"),
            Some(("weight_hh", 12, 1))
        );
        assert_eq!(parse_param_name("weight_hr_l1"), Some(("weight_hr", 1, 0)));
        assert_eq!(parse_param_name("weight_ih_l01"), None);
        assert_eq!(parse_param_name("weight_ih_l"), None);
        assert_eq!(parse_param_name("weight_ih_lx"), None);
        assert_eq!(parse_param_name("weight_ih_l99999999999999999999999"), None);
        assert_eq!(parse_param_name("head.weight"), None);
        assert_eq!(parse_param_name("bias_ih_l0_reverse_reverse"), None);
    }

    #[test]
    fn prefixes_normalize() {
        assert_eq!(normalize_prefix("encoder.rnn"), "encoder.rnn.");
        assert_eq!(normalize_prefix("encoder.rnn."), "encoder.rnn.");
        assert_eq!(normalize_prefix(""), "");
    }

    #[test]
    fn header_longer_than_file_is_refused() {
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let err = parse_safetensors(&bytes).unwrap_err();
        assert!(err.contains("header claims"), "{err}");
    }
}
