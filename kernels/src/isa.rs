//! Instruction-set tiers: detected once, cached, forced with the `RECUR_ISA` environment variable.

use std::fmt;
use std::sync::OnceLock;

/// A kernel tier, named after the instruction set it needs.
///
/// Ordered from the most portable to the fastest: `Isa::Portable < Isa::Avx2 < Isa::Avx512`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// `wide::f32x8`, whose instructions are chosen when the crate is compiled (SSE2 on a
    /// generic x86-64 build, NEON on aarch64, more with `-C target-cpu`). Runs everywhere.
    Portable,
    /// x86-64-v3: AVX2 and FMA.
    Avx2,
    /// x86-64-v4: AVX-512 F/BW/DQ/VL (and FMA).
    Avx512,
}

impl Isa {
    /// Every tier, from the most portable to the fastest.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The tier's name as `RECUR_ISA` and `recur info` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parses a tier name (`portable`, `avx2`, `avx512`; surrounding blanks and ASCII case
    /// ignored).
    pub fn from_name(name: &str) -> Option<Isa> {
        let name = name.trim();
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(name))
    }

    /// Whether this CPU can run the tier's instructions.
    pub fn cpu_supports(self) -> bool {
        match self {
            Isa::Portable => true,
            // Exactly the checks the tiers' tokens make before running (see `tiers.rs`).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::simd::avx2::Avx2::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => crate::simd::avx512::Avx512::new().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Whether the tier can run here: the CPU supports it and this build has kernels for it.
    pub fn is_available(self) -> bool {
        self.cpu_supports() && crate::step::kernels_for(self).is_some()
    }

    /// The fastest tier available on this CPU.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Portable)
    }

    /// The tier in use: `RECUR_ISA` if set, else [`Isa::best`]. Read once and cached.
    ///
    /// Errors when `RECUR_ISA` names an unknown tier or one this CPU or build lacks.
    pub fn selected() -> Result<Isa, IsaError> {
        static SELECTED: OnceLock<Result<Isa, IsaError>> = OnceLock::new();
        SELECTED
            .get_or_init(|| Isa::from_env(std::env::var("RECUR_ISA").ok().as_deref()))
            .clone()
    }

    /// The tier a `RECUR_ISA` value asks for (`None` or empty: the best available).
    pub fn from_env(value: Option<&str>) -> Result<Isa, IsaError> {
        match value.map(str::trim) {
            None | Some("") => Ok(Isa::best()),
            Some(name) => {
                let isa =
                    Isa::from_name(name).ok_or_else(|| IsaError::Unknown(name.to_string()))?;
                if isa.is_available() {
                    Ok(isa)
                } else {
                    Err(IsaError::Unavailable(isa))
                }
            }
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why `RECUR_ISA` could not be honoured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IsaError {
    /// The value names no tier.
    Unknown(String),
    /// The tier exists but this CPU (or this build) cannot run it.
    Unavailable(Isa),
}

impl fmt::Display for IsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsaError::Unknown(name) => write!(
                f,
                "RECUR_ISA={name:?} names no kernel tier (expected portable, avx2 or avx512)"
            ),
            IsaError::Unavailable(isa) => write!(
                f,
                "RECUR_ISA={isa} was asked for, but this CPU or build cannot run the {isa} tier"
            ),
        }
    }
}

impl std::error::Error for IsaError {}
