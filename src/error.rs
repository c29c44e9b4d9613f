//! recur's error type: every message names what is wrong, in one line.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong loading a model, reading input or running a forward pass.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A model file or state_dict is malformed or inconsistent (which tensor, expected and found).
    InvalidModel(String),
    /// An input (tensor, state, lengths) does not fit the model (which, expected and found).
    InvalidInput(String),
    /// The `RECUR_ISA` tier cannot run here.
    Isa(recur_kernels::isa::IsaError),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::InvalidModel(msg) => write!(f, "invalid model: {msg}"),
            Error::InvalidInput(msg) => write!(f, "invalid input: {msg}"),
            Error::Isa(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Isa(e) => Some(e),
            _ => None,
        }
    }
}

impl From<recur_kernels::isa::IsaError> for Error {
    fn from(e: recur_kernels::isa::IsaError) -> Error {
        Error::Isa(e)
    }
}

/// `Result` with recur's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
