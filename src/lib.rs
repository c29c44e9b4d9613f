//! recur runs PyTorch's recurrent layers (`nn.RNN`, `nn.LSTM`, `nn.GRU`) for inference on the
//! CPU, with the same numbers as PyTorch.
//!
//! Load a PyTorch `state_dict` saved as safetensors, then run forward passes on borrowed input:
//!
//! ```no_run
//! use recur::{ForwardInput, LoadOptions, Model, Tensor};
//! let model = Model::load("lstm.safetensors", &LoadOptions::default())?;
//! let cfg = model.config();
//! let x = Tensor::zeros(vec![100, 1, cfg.input_size]); // (L, N, input_size)
//! let out = model.forward(&ForwardInput::new(x.view()))?;
//! println!("output {:?}, h_n {:?}", out.output.shape, out.h_n.shape);
//! # Ok::<(), recur::Error>(())
//! ```
//!
//! A [`Model`] is immutable and `Send + Sync`; share it with `Arc` and give each calling thread
//! its own [`Workspace`] (via [`Model::forward_with`]) to reuse scratch memory across calls.
//! [`reference`](mod@reference) holds a plain float64 implementation of the same semantics,
//! the oracle of the property tests.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod config;
pub mod error;
pub mod forward;
pub mod load;
pub mod model;
pub mod reference;
pub mod session;
pub mod streams;
pub mod tensor;

pub use config::{Config, Mode};
pub use error::{Error, Result};
pub use forward::{ForwardInput, OutputBuffers, Outputs, PlanSummary, Workspace};
pub use load::LoadOptions;
pub use model::{Model, StateDict};
pub use recur_kernels::Isa;
pub use session::{Session, SessionState};
pub use streams::{StreamId, StreamRuntime};
pub use tensor::{Tensor, TensorView};
