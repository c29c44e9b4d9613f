//! Reading models and inputs from safetensors files, and writing outputs.
//!
//! A model file holds a PyTorch `state_dict` (`safetensors.torch.save_file(module.state_dict(),
//! path, metadata=...)`): `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`,
//! `weight_hr_l{k}`, each optionally with `_reverse`, all under an optional prefix. The
//! configuration is read off the tensors ([`infer_config`]); the metadata keys `mode` and
//! `batch_first` (and, if present, PyTorch's other constructor arguments) must agree with them.
//!
//! Untrusted files are checked before anything is allocated from them: the header length against
//! the file's size, every tensor's shape and data offsets against the bytes that are really there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::{Dtype, SafeTensors, TensorView as FileTensor};

use crate::config::{Config, Mode, MAX_LAYERS};
use crate::error::{Error, Result};
use crate::forward::{ForwardInput, Outputs};
use crate::model::{Model, StateDict};
use crate::tensor::{checked_numel, Shape, Tensor};

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
    /// The file is read once; its header is checked against its real size before anything is
    /// allocated from it. See [`infer_config`] for how the configuration is determined.
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
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        model_from_bytes(&bytes, options, Some(path))
    }

    /// Loads a model from the bytes of a safetensors file (see [`Model::load`]).
    pub fn from_safetensors_bytes(bytes: &[u8], options: &LoadOptions) -> Result<Model> {
        model_from_bytes(bytes, options, None)
    }
}

fn model_from_bytes(bytes: &[u8], options: &LoadOptions, file: Option<&Path>) -> Result<Model> {
    let st = parse_safetensors(bytes)
        .map_err(|why| Error::InvalidModel(not_safetensors("model", file, &why)))?;
    let mut shapes = BTreeMap::new();
    for (name, view) in st.iter() {
        shapes.insert(name.to_string(), view.shape().to_vec());
    }
    let metadata = file_metadata(bytes);
    let config = infer_config(&shapes, &metadata, options)?;
    let prefix = normalize_prefix(&options.prefix);
    let mut state_dict = StateDict::new();
    for (name, view) in st.iter() {
        if let Some(local) = name.strip_prefix(prefix.as_str()) {
            let data = floats_of(&view).map_err(|dtype| {
                Error::InvalidModel(format!(
                    "tensor {name} has dtype {dtype}; weights must be {FLOAT_DTYPES}"
                ))
            })?;
            state_dict.insert(local.to_string(), Tensor::new(view.shape().to_vec(), data)?);
        }
    }
    Model::from_state_dict(config, &state_dict)
}

/// The message for a file the safetensors parser rejects.
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

/// The `__metadata__` map of a buffer [`parse_safetensors`] accepted.
fn file_metadata(bytes: &[u8]) -> HashMap<String, String> {
    SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().clone())
        .unwrap_or_default()
}

/// Parses a safetensors buffer after checking its header against the buffer's real size.
///
/// The `safetensors` crate bounds the header at 100 MB and checks shapes with overflow-checked
/// arithmetic; the checks here come first, so that a header whose offsets point past the end of
/// the data is refused before the crate adds them up, and so that the message names the tensor.
pub(crate) fn parse_safetensors(bytes: &[u8]) -> std::result::Result<SafeTensors<'_>, String> {
    precheck_header(bytes)?;
    SafeTensors::deserialize(bytes).map_err(|e| {
        use safetensors::SafeTensorError as E;
        match e {
            E::InvalidOffset(name) => format!(
                "tensor {name}: its data_offsets do not follow the previous tensor's (gap or overlap)"
            ),
            E::MetadataIncompleteBuffer => {
                "the tensors' data does not cover the file exactly (trailing or missing bytes)"
                    .to_string()
            }
            other => other.to_string(),
        }
    })
}

/// The checks of a safetensors header that give a precise message: length prefix, JSON, and
/// each tensor's shape, dtype and offsets against the data that is really in the buffer.
fn precheck_header(bytes: &[u8]) -> std::result::Result<(), String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(format!(
            "the file is {} bytes, too short for a safetensors header (an 8-byte length, then JSON)",
            bytes.len()
        ));
    };
    let mut len = [0u8; 8];
    len.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(len);
    let available = (bytes.len() - 8) as u64;
    if header_len > available {
        return Err(format!(
            "the header claims {header_len} bytes but the file has only {available} bytes after \
             its length prefix (truncated, or not a safetensors file)"
        ));
    }
    // `header_len <= available < usize::MAX`, so the cast is exact.
    let header_end = 8 + header_len as usize;
    let data_len = (bytes.len() - header_end) as u64;
    let text = std::str::from_utf8(&bytes[8..header_end])
        .map_err(|_| "the header is not UTF-8 text (not a safetensors file?)".to_string())?;
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("the header is not valid JSON ({e}); not a safetensors file?"))?;
    let serde_json::Value::Object(entries) = json else {
        return Err("the header is not a JSON object (not a safetensors file?)".into());
    };
    for (name, info) in &entries {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info
            .get("data_offsets")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().map(|v| v.as_u64()).collect::<Vec<_>>());
        if let Some([Some(start), Some(end)]) = offsets.as_deref() {
            if end > &data_len || start > end {
                return Err(format!(
                    "tensor {name}: data_offsets [{start}, {end}] point outside the {data_len} \
                     bytes of tensor data in the file (truncated?)"
                ));
            }
        }
        let shape: Option<Vec<u64>> = info
            .get("shape")
            .and_then(|v| v.as_array())
            .and_then(|a| a.iter().map(|v| v.as_u64()).collect());
        let dtype: Option<Dtype> = info
            .get("dtype")
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        if let (Some(shape), Some(dtype)) = (shape, dtype) {
            let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
            let shown = match dims.as_slice() {
                [d] => format!("({d},)"),
                _ => format!("({})", dims.join(", ")),
            };
            let bytes_needed = shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .and_then(|n| n.checked_mul(dtype.bitsize() as u64))
                .map(|bits| bits.div_ceil(8));
            match bytes_needed {
                None => {
                    return Err(format!(
                        "tensor {name} has shape {shown}, whose size overflows (corrupt header)"
                    ))
                }
                Some(need) if need > data_len => {
                    return Err(format!(
                        "tensor {name} has shape {shown} of {dtype}: {need} bytes, but the file \
                         holds only {data_len} bytes of tensor data (truncated or corrupt)"
                    ))
                }
                Some(need) => {
                    if let Some([Some(start), Some(end)]) = offsets.as_deref() {
                        if end - start != need {
                            return Err(format!(
                                "tensor {name} has shape {shown} of {dtype}, which needs {need} \
                                 bytes, but its data_offsets [{start}, {end}] span {}",
                                end - start
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// A tensor's elements as f32, or its dtype if it is not a float type recur reads.
fn floats_of(view: &FileTensor<'_>) -> std::result::Result<Vec<f32>, Dtype> {
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                f64::from_le_bytes(a) as f32
            })
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => return Err(other),
    })
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
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                i64::from_le_bytes(a)
            })
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        other => return Err(other),
    })
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
    /// Reads an input file (safetensors).
    pub fn read(path: impl AsRef<Path>) -> Result<InputFile> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        input_from_bytes(&bytes, Some(path))
    }

    /// Reads an input file from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<InputFile> {
        input_from_bytes(bytes, None)
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

fn input_from_bytes(bytes: &[u8], file: Option<&Path>) -> Result<InputFile> {
    let st = parse_safetensors(bytes)
        .map_err(|why| Error::InvalidInput(not_safetensors("input file", file, &why)))?;
    let mut names: Vec<&str> = st.iter().map(|(n, _)| n).collect();
    names.sort_unstable();
    if let Some(other) = names
        .iter()
        .find(|n| !["input", "h0", "c0", "lengths"].contains(n))
    {
        return Err(Error::InvalidInput(format!(
            "unexpected tensor {other} in the input file (accepted names: {INPUT_NAMES})"
        )));
    }
    let float = |name: &str| -> Result<Option<Tensor>> {
        let Ok(view) = st.tensor(name) else {
            return Ok(None);
        };
        let data = floats_of(&view).map_err(|dtype| {
            Error::InvalidInput(format!(
                "{name} has dtype {dtype}; expected a float tensor ({FLOAT_DTYPES})"
            ))
        })?;
        Ok(Some(Tensor::new(view.shape().to_vec(), data)?))
    };
    let Some(input) = float("input")? else {
        let found = if names.is_empty() {
            "it holds no tensors".to_string()
        } else {
            format!("found {}", names.join(", "))
        };
        return Err(Error::InvalidInput(format!(
            "the input file has no tensor named input ({found})"
        )));
    };
    let lengths = match st.tensor("lengths") {
        Err(_) => None,
        Ok(view) => {
            let values = ints_of(&view).map_err(|dtype| {
                Error::InvalidInput(format!("lengths has dtype {dtype}; expected I64 or I32"))
            })?;
            if view.shape().len() != 1 {
                return Err(Error::InvalidInput(format!(
                    "lengths has shape {}, expected 1-D (N,): one length per batch element",
                    Shape(view.shape())
                )));
            }
            let lens = values
                .iter()
                .enumerate()
                .map(|(b, &v)| {
                    usize::try_from(v).map_err(|_| {
                        Error::InvalidInput(format!(
                            "lengths[{b}] = {v} is negative; lengths must be at least 1"
                        ))
                    })
                })
                .collect::<Result<Vec<usize>>>()?;
            Some(lens)
        }
    };
    Ok(InputFile {
        input,
        h0: float("h0")?,
        c0: float("c0")?,
        lengths,
    })
}

/// Distinguishes temporary files of concurrent writes within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `output`, `h_n` and (LSTM) `c_n` as f32 tensors of a safetensors file at `path`.
///
/// The file is written whole or not at all: the bytes go to a temporary file in the same
/// directory, which is synced and then renamed over `path`. On failure the temporary file is
/// removed and an existing file at `path` is left untouched.
pub fn write_outputs(path: impl AsRef<Path>, outputs: &Outputs) -> Result<()> {
    let path = path.as_ref();
    let mut tensors = vec![("output", &outputs.output), ("h_n", &outputs.h_n)];
    if let Some(c_n) = &outputs.c_n {
        tensors.push(("c_n", c_n));
    }
    let mut encoded = Vec::with_capacity(tensors.len());
    for (name, t) in &tensors {
        if checked_numel(&t.shape) != Some(t.data.len()) {
            return Err(Error::InvalidInput(format!(
                "{name} has shape {} but {} elements",
                Shape(&t.shape),
                t.data.len()
            )));
        }
        let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        encoded.push((*name, t.shape.clone(), bytes));
    }
    let views = encoded
        .iter()
        .map(|(name, shape, bytes)| {
            FileTensor::new(Dtype::F32, shape.clone(), bytes).map(|v| (*name, v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidInput(format!("cannot encode outputs: {e}")))?;
    let file_bytes = safetensors::serialize(views, None)
        .map_err(|e| Error::InvalidInput(format!("cannot encode outputs: {e}")))?;
    write_atomically(path, &file_bytes)
}

/// Writes `bytes` to `path` through a synced temporary file beside it and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
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
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                let why = format!("the directory {} does not exist ({e})", dir.display());
                Error::io(path, std::io::Error::new(e.kind(), why))
            } else {
                Error::io(path, e)
            }
        })?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            fs::rename(&temp, path)
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(Error::io(path, e));
    }
    // Make the rename durable where the platform allows syncing a directory.
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
