//! How the `load_model` target reads its input: load options from the first bytes, then the
//! file. One file serves the fuzz crate and `tests/hostile.rs` (which includes it with
//! `#[path]` to replay the committed seeds in the default `cargo test`), so both read a seed the
//! same way.

use recur::{LoadOptions, Mode};

/// Load options from the first bytes of `data`, and the rest as the file.
///
/// Byte 0: bits 0-2 the mode option (none, LSTM, GRU, RNN_TANH, RNN_RELU; 5-7 none), bit 3
/// `batch_first`, bits 4-5 the prefix: none, `rnn.`, `encoder.rnn` (no trailing dot), or
/// custom: then byte 1 is its length (at most 63) and the prefix's bytes follow, read as UTF-8
/// with replacement.
pub fn split_options(data: &[u8]) -> (LoadOptions, &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return (LoadOptions::default(), data);
    };
    let mode = match flags & 7 {
        1 => Some(Mode::Lstm),
        2 => Some(Mode::Gru),
        3 => Some(Mode::RnnTanh),
        4 => Some(Mode::RnnRelu),
        _ => None,
    };
    let prefix = match (flags >> 4) & 3 {
        0 => String::new(),
        1 => "rnn.".to_string(),
        2 => "encoder.rnn".to_string(),
        _ => match rest.split_first() {
            None => String::new(),
            Some((&len, tail)) => {
                let len = usize::from(len & 63).min(tail.len());
                rest = &tail[len..];
                String::from_utf8_lossy(&tail[..len]).into_owned()
            }
        },
    };
    let options = LoadOptions {
        prefix,
        mode,
        batch_first: flags & 8 != 0,
    };
    (options, rest)
}
