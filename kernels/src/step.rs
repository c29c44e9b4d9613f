//! The fused recurrent step kernels, one table of function pointers per tier.
//!
//! Every step kernel runs one timestep for `rows` batch rows stored contiguously:
//!
//! - `xp`: `(rows, G*H)`, the input projection of this timestep, `W_ih x + b_ih` with every bias
//!   PyTorch's formulas allow folded in (all of them except GRU's `b_hn`), gate order as PyTorch's;
//! - `h_prev`: `(rows, K)` with `K = w_hh.cols()` (`H`, or `P` for an LSTM with projection);
//! - `c` (LSTM): `(rows, H)`, updated in place;
//! - `h_out`: `(rows, H)`, the new hidden state (before any projection).
//!
//! The accumulation order of every output element is the same whatever `rows` is, so a batch row's
//! result does not depend on which other rows share its call (SPEC §4: bit-identical for any batch
//! split and any thread count).

use crate::isa::Isa;
use crate::pack::PackedMatrix;

/// The nonlinearity of a plain (Elman) RNN cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `tanh` (PyTorch's `RNN_TANH`).
    Tanh,
    /// `relu` (PyTorch's `RNN_RELU`); NaN propagates as in PyTorch.
    Relu,
}

/// LSTM step: `i,f,o = σ(..)`, `g = tanh(..)`, `c' = f*c + i*g`, `h' = o*tanh(c')`.
pub type LstmStepFn = fn(
    w_hh: &PackedMatrix,
    xp: &[f32],
    h_prev: &[f32],
    c: &mut [f32],
    h_out: &mut [f32],
    rows: usize,
);

/// GRU step: `r,z = σ(xp + W_h h)`, `n = tanh(xp_n + r*(W_hn h + b_hn))`, `h' = (1-z)*n + z*h`.
/// `b_hn` has `H` elements (zeros for `bias=False`). Needs `K == H`.
pub type GruStepFn = fn(
    w_hh: &PackedMatrix,
    b_hn: &[f32],
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
);

/// RNN step: `h' = act(xp + W_hh h)`.
pub type RnnStepFn = fn(
    w_hh: &PackedMatrix,
    act: Activation,
    xp: &[f32],
    h_prev: &[f32],
    h_out: &mut [f32],
    rows: usize,
);

/// LSTM projection: `out = W_hr h` for `rows` rows; `h` is `(rows, H)`, `out` `(rows, P)`.
pub type ProjectFn = fn(w_hr: &PackedMatrix, h: &[f32], out: &mut [f32], rows: usize);

/// The kernels of one tier.
#[derive(Debug)]
pub struct Kernels {
    /// The tier these kernels belong to.
    pub isa: Isa,
    /// See [`LstmStepFn`].
    pub lstm_step: LstmStepFn,
    /// See [`GruStepFn`].
    pub gru_step: GruStepFn,
    /// See [`RnnStepFn`].
    pub rnn_step: RnnStepFn,
    /// See [`ProjectFn`].
    pub project: ProjectFn,
}

static PORTABLE: Kernels = Kernels {
    isa: Isa::Portable,
    lstm_step: crate::portable::lstm_step,
    gru_step: crate::portable::gru_step,
    rnn_step: crate::portable::rnn_step,
    project: crate::portable::project,
};

/// The kernels of `isa`, if this build has them (whether the CPU runs them is
/// [`Isa::cpu_supports`]; [`Isa::is_available`] checks both).
pub fn kernels_for(isa: Isa) -> Option<&'static Kernels> {
    match isa {
        Isa::Portable => Some(&PORTABLE),
        Isa::Avx2 | Isa::Avx512 => None,
    }
}

/// The kernels of the selected tier ([`Isa::selected`]), or the error that `RECUR_ISA` caused.
pub fn kernels() -> Result<&'static Kernels, crate::isa::IsaError> {
    let isa = Isa::selected()?;
    Ok(kernels_for(isa).expect("a selected tier is available"))
}

/// Checks the slice lengths every step kernel relies on.
///
/// # Panics
/// If a slice is shorter than its documented shape: a bug in the caller, never user input.
pub(crate) fn check_step(w: &PackedMatrix, xp: usize, h_prev: usize, outs: &[usize], rows: usize) {
    let gh = w.gates() * w.rows();
    assert!(xp >= rows * gh, "step kernel: xp holds {xp} < {rows}x{gh}");
    assert!(
        h_prev >= rows * w.cols(),
        "step kernel: h_prev holds {h_prev} < {rows}x{}",
        w.cols()
    );
    for &o in outs {
        assert!(
            o >= rows * w.rows(),
            "step kernel: output holds {o} < {rows}x{}",
            w.rows()
        );
    }
}
