//! SIMD kernels for recur's recurrent layers.
//!
//! Everything architecture-specific and every `unsafe` block of recur lives in this crate; the
//! `recur` crate composes layers from the safe entry points here.
//!
//! - [`isa`]: the instruction-set tiers, detected once and cached, forced with `RECUR_ISA`.
//! - [`pack`]: [`PackedMatrix`], weights packed once at load in blocks of 16 outputs (`W_hh`
//!   as one `K x 16` panel per gate, `W_ih` plain).
//! - [`step`]: the fused recurrent step kernels and the input projection (one table of
//!   function pointers per tier).
//! - `simd` (private): the `Simd` trait, one implementation per instruction set
//!   (portable on `wide`, AVX2+FMA, AVX-512); `vecmath`: `exp`, `sigmoid`, `tanh` on it;
//!   `fused`: the step kernels written once over it; `matmul`: the register-blocked input
//!   projection; `tiers`: their per-tier instantiations.
//! - [`denormal`]: denormal values flushed to zero in the data (weights at packing, stored
//!   states in the step kernels, the engine's inputs): they cost Intel cores microcode assists.
//! - [`tuning`]: per-CPU choices within a tier that change no result bit (a single LSTM
//!   row's blocks one at a time on Zen 4).
//! - [`gemm`]: `gemm_nt` over `matrixmultiply`, the baseline the input projection is benched
//!   against.
//! - [`reference`](mod@reference): the plain scalar twins of every kernel, the oracle of the property tests.
#![deny(missing_docs)]

pub mod denormal;
mod fused;
pub mod gemm;
pub mod isa;
mod matmul;
pub mod pack;
pub mod reference;
mod simd;
pub mod step;
mod tiers;
pub mod tuning;
mod vecmath;

pub use isa::Isa;
pub use pack::{PackedMatrix, BLOCK};
pub use step::{kernels, kernels_for, Activation, Kernels};
