//! Linear layers `y = x Wᵀ` (W stored `[out][in]` like `nn.Linear` and GGUF) and their backward,
//! as packed GEMMs from the `gemm` crate (see the module docs of [`super`] for why).

use super::Real;
use gemm::Parallelism;

/// `dst = lhs · rhs` (or `dst += lhs · rhs` with `accumulate`) for `lhs: m×k`, `rhs: k×n`,
/// `dst: m×n`, each given as a slice with a row stride and a column stride (in elements), so
/// transposes are just swapped strides. Runs on the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn matmul<R: Real>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [R],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: &[R],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[R],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    // Largest element index touched must lie inside each slice: this is what makes the call sound.
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        last(m, n, dst_rs, dst_cs) < dst.len(),
        "matmul: dst too small"
    );
    if k == 0 {
        if !accumulate {
            dst.iter_mut().for_each(|v| *v = R::zero());
        }
        return;
    }
    assert!(
        last(m, k, lhs_rs, lhs_cs) < lhs.len(),
        "matmul: lhs too small"
    );
    assert!(
        last(k, n, rhs_rs, rhs_cs) < rhs.len(),
        "matmul: rhs too small"
    );
    let parallelism = if m * n * k >= 1 << 15 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: R is f32 or f64 (the only `Real`s), both supported by `gemm`; the asserts above keep
    // every strided access inside the slices, and `dst` is borrowed mutably, so nothing aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            R::one(),
            R::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `y = x Wᵀ`, i.e. `y[t][o] = sum_i x[t][i] W[o][i]`.
/// Shapes: `x: [T, in]`, `w: [out, in]`, `y: [T, out]`.
pub fn linear<R: Real>(x: &[R], w: &[R], in_dim: usize, out_dim: usize) -> Vec<R> {
    assert_eq!(
        w.len(),
        out_dim * in_dim,
        "linear: W is not [{out_dim}, {in_dim}]"
    );
    assert_eq!(x.len() % in_dim, 0, "linear: x is not [T, {in_dim}]");
    let t = x.len() / in_dim;
    let mut y = vec![R::zero(); t * out_dim];
    // [T, in] · [in, out] where the right side is W read with swapped strides.
    matmul(
        (t, out_dim, in_dim),
        &mut y,
        (out_dim, 1),
        false,
        x,
        (in_dim, 1),
        w,
        (1, in_dim),
    );
    y
}

/// Backward of [`linear`]: returns `dx = dy W` (`[T, out] · [out, in]`) and adds
/// `dW += dyᵀ x` (`[out, T] · [T, in]`) into `dw: [out, in]`.
pub fn linear_backward<R: Real>(
    dy: &[R],
    x: &[R],
    w: &[R],
    in_dim: usize,
    out_dim: usize,
    dw: &mut [R],
) -> Vec<R> {
    assert_eq!(w.len(), out_dim * in_dim);
    assert_eq!(dw.len(), out_dim * in_dim);
    let t = x.len() / in_dim;
    assert_eq!(x.len(), t * in_dim);
    assert_eq!(dy.len(), t * out_dim);
    let mut dx = vec![R::zero(); t * in_dim];
    matmul(
        (t, in_dim, out_dim),
        &mut dx,
        (in_dim, 1),
        false,
        dy,
        (out_dim, 1),
        w,
        (in_dim, 1),
    );
    matmul(
        (out_dim, in_dim, t),
        dw,
        (in_dim, 1),
        true,
        dy,
        (1, out_dim),
        x,
        (in_dim, 1),
    );
    dx
}

/// The weight half of [`linear_backward`]: adds `dW += dyᵀ x` (`[out, T] · [T, in]`) into
/// `dw: [out, in]`, for devices that compute `dx` elsewhere (the ANE trainer).
pub fn linear_backward_weight<R: Real>(
    dy: &[R],
    x: &[R],
    in_dim: usize,
    out_dim: usize,
    dw: &mut [R],
) {
    assert_eq!(dw.len(), out_dim * in_dim);
    let t = x.len() / in_dim;
    assert_eq!(x.len(), t * in_dim);
    assert_eq!(dy.len(), t * out_dim);
    matmul(
        (out_dim, in_dim, t),
        dw,
        (in_dim, 1),
        true,
        dy,
        (1, out_dim),
        x,
        (in_dim, 1),
    );
}
