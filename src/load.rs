//! Reading models and inputs from safetensors files. (Placeholder API; filled in by the loader.)

use std::path::Path;

use crate::config::Mode;
use crate::error::Result;
use crate::model::Model;

/// How to read a model file.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Selects one recurrent module out of a larger state_dict (`encoder.rnn.`).
    pub prefix: String,
    /// The mode, when the file's metadata does not say (must agree with it when it does).
    pub mode: Option<Mode>,
    /// Forces `batch_first`.
    pub batch_first: bool,
}

impl Model {
    /// Loads a model from a safetensors file holding a PyTorch state_dict.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model> {
        let _ = (path, options);
        unimplemented!()
    }
}
