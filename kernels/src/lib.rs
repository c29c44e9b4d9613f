//! SIMD kernels for recur's recurrent layers.
//!
//! Everything architecture-specific and every `unsafe` block of recur lives in this crate; the
//! `recur` crate composes layers from the safe entry points here.
//!
//! - [`isa`]: the instruction-set tiers, detected once and cached, forced with `RECUR_ISA`.
//! - [`pack`]: [`PackedMatrix`], recurrent weights packed once at load in gate-interleaved blocks.
//! - [`step`]: the fused recurrent step kernels (one table of function pointers per tier).
//! - [`gemm`]: the input projection of all timesteps as one matrix product.
//! - [`reference`]: the plain scalar twins of every kernel, the oracle of the property tests.
#![deny(missing_docs)]

pub mod gemm;
pub mod isa;
pub mod pack;
mod portable;
pub mod reference;
pub mod step;

pub use isa::Isa;
pub use pack::{PackedMatrix, BLOCK};
pub use step::{kernels, kernels_for, Activation, Kernels};
