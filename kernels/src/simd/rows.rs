//! `N` vectors of a tier as one: every operation applied to each of the `N` in turn, so a
//! vector function written once over [`Simd`] (an activation) runs on `N` independent inputs
//! with their dependency chains interleaved instruction by instruction.
//!
//! Only the arithmetic is meaningful: loads and stores panic (nothing reads memory through it).

use super::Simd;

/// `N` vectors of the tier `S` treated as one vector (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rows<S, const N: usize>(pub(crate) S);

/// `[f(a[0]), .., f(a[N-1])]` for a tier operation `f`, without closures (a closure is compiled
/// without the caller's target features).
macro_rules! lanes_of {
    ($s:expr, $init:expr, $n:expr, |$i:ident| $e:expr) => {{
        let mut out = [$init; $n];
        for $i in 0..$n {
            out[$i] = $e;
        }
        out
    }};
}

// SAFETY: `Rows` holds a token of `S`, so a value of it exists only where `S`'s does; its
// methods only call `S`'s. `LANES` is `S::LANES` (a group of `N` vectors is never loaded or
// stored, so the group's width never reaches a buffer).
unsafe impl<S: Simd, const N: usize> Simd for Rows<S, N> {
    type V = [S::V; N];
    type M = [S::M; N];
    const LANES: usize = S::LANES;

    #[inline(always)]
    fn splat(self, x: f32) -> Self::V {
        [self.0.splat(x); N]
    }
    fn load(self, _: &[f32]) -> Self::V {
        unreachable!("Rows holds registers only")
    }
    fn store(self, _: Self::V, _: &mut [f32]) {
        unreachable!("Rows holds registers only")
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        lanes_of!(self, a[0], N, |i| self.0.add(a[i], b[i]))
    }
    #[inline(always)]
    fn sub(self, a: Self::V, b: Self::V) -> Self::V {
        lanes_of!(self, a[0], N, |i| self.0.sub(a[i], b[i]))
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        lanes_of!(self, a[0], N, |i| self.0.mul(a[i], b[i]))
    }
    #[inline(always)]
    fn div(self, a: Self::V, b: Self::V) -> Self::V {
        lanes_of!(self, a[0], N, |i| self.0.div(a[i], b[i]))
    }
    #[inline(always)]
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        lanes_of!(self, a[0], N, |i| self.0.mul_add(a[i], b[i], c[i]))
    }
    #[inline(always)]
    fn neg_mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        lanes_of!(self, a[0], N, |i| self.0.neg_mul_add(a[i], b[i], c[i]))
    }
    #[inline(always)]
    fn max(self, a: Self::V, b: Self::V) -> Self::V {
        lanes_of!(self, a[0], N, |i| self.0.max(a[i], b[i]))
    }
    #[inline(always)]
    fn abs(self, a: Self::V) -> Self::V {
        lanes_of!(self, a[0], N, |i| self.0.abs(a[i]))
    }
    #[inline(always)]
    fn or_sign(self, magnitude: Self::V, sign: Self::V) -> Self::V {
        lanes_of!(self, magnitude[0], N, |i| self
            .0
            .or_sign(magnitude[i], sign[i]))
    }
    #[inline(always)]
    fn lt(self, a: Self::V, b: Self::V) -> Self::M {
        let first = self.0.lt(a[0], b[0]);
        lanes_of!(self, first, N, |i| self.0.lt(a[i], b[i]))
    }
    #[inline(always)]
    fn le(self, a: Self::V, b: Self::V) -> Self::M {
        let first = self.0.le(a[0], b[0]);
        lanes_of!(self, first, N, |i| self.0.le(a[i], b[i]))
    }
    #[inline(always)]
    fn select(self, m: Self::M, t: Self::V, f: Self::V) -> Self::V {
        lanes_of!(self, t[0], N, |i| self.0.select(m[i], t[i], f[i]))
    }
    #[inline(always)]
    fn flush_denormals(self, a: Self::V) -> Self::V {
        lanes_of!(self, a[0], N, |i| self.0.flush_denormals(a[i]))
    }
    #[inline(always)]
    fn shift_to_exponent(self, a: Self::V) -> Self::V {
        lanes_of!(self, a[0], N, |i| self.0.shift_to_exponent(a[i]))
    }
    #[inline(always)]
    fn round_pow2<const NORMAL: bool>(self, a: Self::V, b: Self::V) -> (Self::V, Self::V) {
        let (mut n, mut p) = (a, a);
        for i in 0..N {
            (n[i], p[i]) = self.0.round_pow2::<NORMAL>(a[i], b[i]);
        }
        (n, p)
    }
    #[inline(always)]
    fn scale_pow2<const NORMAL: bool>(self, x: Self::V, p: Self::V) -> Self::V {
        lanes_of!(self, x[0], N, |i| self.0.scale_pow2::<NORMAL>(x[i], p[i]))
    }
}
