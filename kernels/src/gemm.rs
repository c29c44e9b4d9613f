//! A general `C = A Bᵀ + beta C` over `matrixmultiply`: the baseline the engine's own input
//! projection ([`crate::step::InputProjectionFn`], weights packed at load) is benched against
//! (`benches/gemm.rs`), and a tool for tests.

/// `C = A Bᵀ + beta C` in f32: `a` is `(m, k)`, `b` `(n, k)`, `c` `(m, n)`, all row-major and
/// contiguous. With `B = W_ih` `(G*H, I)` and `A` the input `(L*N, I)`, this is the input projection
/// of every timestep at once; prefill `C` with the folded biases and pass `beta = 1`. With
/// `beta = 0`, `C` is overwritten (NaN in it does not propagate).
///
/// Uses `matrixmultiply`, which picks its own AVX/FMA kernel at run time. Each element of `C` is
/// accumulated over `k` in the same order whatever `m` is, so a row's result does not depend on the
/// other rows of the call.
///
/// # Panics
/// If a slice is shorter than its shape.
pub fn gemm_nt(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
    assert!(a.len() >= m * k, "gemm_nt: a holds {} < {m}x{k}", a.len());
    assert!(b.len() >= n * k, "gemm_nt: b holds {} < {n}x{k}", b.len());
    assert!(c.len() >= m * n, "gemm_nt: c holds {} < {m}x{n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for v in &mut c[..m * n] {
            *v = if beta == 0.0 { 0.0 } else { beta * *v };
        }
        return;
    }
    // SAFETY: the asserts above guarantee that every index the strides below reach is in bounds:
    // A is read at i*k + p (i < m, p < k), B at j*k + p (j < n), C at i*n + j; the three slices
    // do not overlap (`c` is a unique borrow).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}
