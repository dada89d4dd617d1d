//! Dot products of one stored weight row with one activation vector.
//!
//! Quantized rows (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0` and the K-quants `Q4_K`, `Q5_K`, `Q6_K`)
//! are dotted with 8-bit activation blocks ([`BlockQ8`]) using integer arithmetic inside each
//! 32-block:
//!
//! - `Q8_0`: `sum_b d_w d_x sum_i q_w[i] q_x[i]`
//! - `Q4_0`: `sum_b d_w d_x (sum_i n[i] q_x[i] - 8 sum_i q_x[i])`
//! - `Q4_1`: `sum_b (d_w d_x sum_i n[i] q_x[i] + m d_x sum_i q_x[i])`
//! - `Q4_K` (256-element super-blocks of eight 32-element sub-blocks `j`, 6-bit scales `sc_j`
//!   and mins `m_j`): `sum_j (d sc_j d_x sum_i n[i] q_x[i] - dmin m_j d_x sum_i q_x[i])`;
//!   `Q5_K` the same with 5-bit values
//! - `Q6_K` (sixteen 16-element groups with int8 scales `s_g`, values `v = q6 - 32`):
//!   `sum_{32-blocks} d d_x (s_a sum_{i<16} v[i] q_x[i] + s_b sum_{i>=16} v[i] q_x[i])`
//!
//! i.e. exactly `sum_i w[i] x_q[i]` with the dequantized weights and rounded activations.
//!
//! Float rows (`F32`, `F16`, `BF16`) are dotted with f32 activations.
//!
//! Each product has a portable version ([`portable`]) and, on x86_64 with AVX2+FMA detected at
//! run time, a SIMD version ([`avx2`]); the dispatching functions at the top pick one.

use crate::quant::BlockQ8;
use model::quant::QK;
use model::GgmlType;

/// True when the AVX2 kernels (AVX2 + FMA + F16C) can run on this CPU.
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Dot of a quantized row (`ty` one of [`is_block_type`]) with quantized activations.
///
/// Panics when `ty` is a float type or `row` does not hold `x.len()` blocks.
pub fn dot_q(ty: GgmlType, row: &[u8], x: &[BlockQ8]) -> f32 {
    assert!(
        is_block_type(ty),
        "dot_q: {} is not a block type",
        ty.name()
    );
    assert_eq!(
        row.len(),
        row_bytes_for(ty, x.len()),
        "dot_q: row/activation length"
    );
    let mut out = [0f32];
    dot_q_rows(ty, row, x, 1, &mut out);
    out[0]
}

/// The block types with integer kernels: 32-element blocks dotted with 8-bit activations.
pub fn is_block_type(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
    )
}

/// Bytes of `nb` 32-element activation blocks' worth of a row of `ty` (a K-quant super-block
/// spans eight of them; `nb` must then be a multiple of 8).
fn row_bytes_for(ty: GgmlType, nb: usize) -> usize {
    let per = ty.block_elems() / QK;
    assert!(
        nb.is_multiple_of(per),
        "{}: {nb} 32-element blocks do not fill whole {}-element super-blocks",
        ty.name(),
        ty.block_elems()
    );
    nb / per * ty.block_bytes()
}

/// True when the AVX-512 VNNI kernels can run (with 256-bit vectors: AVX512-VL; byte masks:
/// AVX512-BW).
pub fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd_available()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[r][t] = dot_q(ty, row_r, x_t)` for the weight rows stored back to back in `rows` and
/// the `n_tok` activation vectors stored back to back in `xq` (`[n_tok][blocks per row]`);
/// `out: [rows][n_tok]`. Bitwise the same as calling [`dot_q`] for each pair, but each weight
/// block is decoded once for up to four vectors (a batched decode step or a prefill chunk),
/// and the per-call work is paid once per group of vectors, not once per row.
pub fn dot_q_rows(ty: GgmlType, rows: &[u8], xq: &[BlockQ8], n_tok: usize, out: &mut [f32]) {
    let nb = xq.len() / n_tok.max(1);
    let row_bytes = row_bytes_for(ty, nb);
    assert_eq!(xq.len(), nb * n_tok, "dot_q_rows: activation length");
    assert_eq!(rows.len() % row_bytes.max(1), 0, "dot_q_rows: row length");
    assert_eq!(
        out.len(),
        rows.len() / row_bytes.max(1) * n_tok,
        "dot_q_rows: output length"
    );
    if block_kernel::<1>(ty).is_some() {
        for t0 in (0..n_tok).step_by(4) {
            let a = RowsArgs {
                rows,
                row_bytes,
                xs: &xq[t0 * nb..],
                nb,
                n_tok,
                t0,
            };
            match (n_tok - t0).min(4) {
                4 => rows_with(block_kernel::<4>(ty), a, out),
                3 => rows_with(block_kernel::<3>(ty), a, out),
                2 => rows_with(block_kernel::<2>(ty), a, out),
                _ => rows_with(block_kernel::<1>(ty), a, out),
            }
        }
        return;
    }
    for (row, o) in rows
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(n_tok))
    {
        for (x, o_t) in xq.chunks_exact(nb).zip(o.iter_mut()) {
            *o_t = portable::dot_q(ty, row, x);
        }
    }
}

/// The 32-element block types the x86 pair kernels share (`dot_pairs_n`), as a const generic.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum PairKind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
}

#[cfg(target_arch = "x86_64")]
impl PairKind {
    /// Bytes of one block of the kind given as its `u8`.
    const fn bytes(kind: u8) -> usize {
        match kind {
            k if k == PairKind::Q4_0 as u8 => 18,
            k if k == PairKind::Q4_1 as u8 => 20,
            k if k == PairKind::Q5_0 as u8 => 22,
            _ => 24,
        }
    }
}

/// A SIMD block kernel: one weight row against `N` activation vectors.
type Kernel<const N: usize> = unsafe fn(&[u8], &[&[BlockQ8]; N], &mut [f32]);

/// The fastest kernel this CPU has for the block type `ty` and `N` vectors, if any. A kernel
/// returned here may be called: the instructions it needs were detected.
fn block_kernel<const N: usize>(ty: GgmlType) -> Option<Kernel<N>> {
    if !is_block_type(ty) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        return Some(match (ty, vnni_available()) {
            (GgmlType::Q4_0, false) => avx2::dot_q4_0_n::<N>,
            (GgmlType::Q4_1, false) => avx2::dot_q4_1_n::<N>,
            (GgmlType::Q5_0, false) => avx2::dot_q5_0_n::<N>,
            (GgmlType::Q5_1, false) => avx2::dot_q5_1_n::<N>,
            (GgmlType::Q4_K, false) => avx2::dot_q4_k_n::<N>,
            (GgmlType::Q5_K, false) => avx2::dot_q5_k_n::<N>,
            (GgmlType::Q6_K, false) => avx2::dot_q6_k_n::<N>,
            (_, false) => avx2::dot_q8_0_n::<N>,
            (GgmlType::Q4_0, true) => vnni::dot_pairs_n_wide::<N, { PairKind::Q4_0 as u8 }>,
            (GgmlType::Q4_1, true) => vnni::dot_pairs_n_wide::<N, { PairKind::Q4_1 as u8 }>,
            (GgmlType::Q5_0, true) => vnni::dot_pairs_n_wide::<N, { PairKind::Q5_0 as u8 }>,
            (GgmlType::Q5_1, true) => vnni::dot_pairs_n_wide::<N, { PairKind::Q5_1 as u8 }>,
            (GgmlType::Q4_K, true) => vnni::dot_q4_k_n::<N>,
            (GgmlType::Q5_K, true) => vnni::dot_q5_k_n::<N>,
            (GgmlType::Q6_K, true) => vnni::dot_q6_k_n::<N>,
            (_, true) => vnni::dot_q8_0_n::<N>,
        });
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        return Some(match ty {
            GgmlType::Q4_0 => crate::neon::dot_q4_0_n::<N>,
            GgmlType::Q4_1 => crate::neon::dot_q4_1_n::<N>,
            GgmlType::Q5_0 => crate::neon::dot_q5_0_n::<N>,
            GgmlType::Q5_1 => crate::neon::dot_q5_1_n::<N>,
            GgmlType::Q4_K => crate::neon::dot_q4_k_n::<N>,
            GgmlType::Q5_K => crate::neon::dot_q5_k_n::<N>,
            GgmlType::Q6_K => crate::neon::dot_q6_k_n::<N>,
            _ => crate::neon::dot_q8_0_n::<N>,
        });
    }
    None
}

/// Shapes of one [`rows_with`] call: rows back to back, the vectors from `t0` on.
struct RowsArgs<'a> {
    rows: &'a [u8],
    row_bytes: usize,
    xs: &'a [BlockQ8],
    nb: usize,
    n_tok: usize,
    t0: usize,
}

/// Vectors `t0..t0 + N` (the first `N` in `a.xs`) against every row: `out[r][t0 + t]`.
/// `out` is `[rows][n_tok]`; `kernel` comes from [`block_kernel`] (the caller checked that
/// one exists for the type, so `None` does not occur).
fn rows_with<const N: usize>(kernel: Option<Kernel<N>>, a: RowsArgs, out: &mut [f32]) {
    let Some(kernel) = kernel else {
        unreachable!("rows_with: no kernel for this type")
    };
    let v: [&[BlockQ8]; N] = std::array::from_fn(|t| &a.xs[t * a.nb..(t + 1) * a.nb]);
    let rows_out = a
        .rows
        .chunks_exact(a.row_bytes)
        .zip(out.chunks_exact_mut(a.n_tok));
    for (row, o) in rows_out {
        // SAFETY: `block_kernel` returns only kernels whose instructions were detected; each
        // row holds `nb` blocks and each vector `nb` blocks (checked by `dot_q_rows`).
        unsafe { kernel(row, &v, &mut o[a.t0..]) };
    }
}

/// Dot of a float row (`ty` in `F32 | F16 | BF16`, stored bytes) with f32 activations.
#[inline]
pub fn dot_float_row(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    assert_eq!(
        row.len(),
        x.len() * ty.block_bytes(),
        "dot_float_row: length"
    );
    #[cfg(target_arch = "x86_64")]
    if avx512_float_available() && matches!(ty, GgmlType::F32 | GgmlType::F16) {
        // SAFETY: AVX-512 F, AVX2/FMA/F16C detected; `row` holds `x.len()` elements.
        unsafe {
            return if ty == GgmlType::F32 {
                avx512_float::dot_f32_bytes(row, x)
            } else {
                avx512_float::dot_f16_bytes(row, x)
            };
        }
    }
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: AVX2/FMA/F16C detected; `row` holds `x.len()` elements (checked above).
        unsafe {
            return match ty {
                GgmlType::F32 => avx2::dot_f32_bytes(row, x),
                GgmlType::F16 => avx2::dot_f16_bytes(row, x),
                GgmlType::BF16 => avx2::dot_bf16_bytes(row, x),
                _ => panic!("dot_float_row: {} is a block type", ty.name()),
            };
        }
    }
    portable::dot_float_row(ty, row, x)
}

/// True when the 512-bit float row dots can run (AVX-512 F besides the AVX2 set).
#[cfg(target_arch = "x86_64")]
fn avx512_float_available() -> bool {
    simd_available() && is_x86_feature_detected!("avx512f")
}

/// `sum_i a[i] * b[i]` in f32.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length");
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: AVX2/FMA/F16C detected; equal lengths checked above.
        unsafe {
            return avx2::dot_f32(a, b);
        }
    }
    portable::dot_f32(a, b)
}

/// Attention scores of one query head: `out[t] = scale * q . k_t` for the cached keys
/// `k_t = keys[t * stride + off..][..q.len()]`, `t < out.len()`.
pub fn scores_f32(q: &[f32], keys: &[f32], stride: usize, off: usize, scale: f32, out: &mut [f32]) {
    if let Some(last) = out.len().checked_sub(1) {
        assert!(
            keys.len() >= last * stride + off + q.len(),
            "scores_f32: keys too short"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: AVX2/FMA detected; every key row lies inside `keys` (checked above).
        unsafe { avx2::scores_f32(q, keys, stride, off, scale, out) };
        return;
    }
    for (t, o) in out.iter_mut().enumerate() {
        *o = portable::dot_f32(q, &keys[t * stride + off..t * stride + off + q.len()]) * scale;
    }
}

/// Weighted sum of cached value rows: `out = sum_t w[t] * v_t` with
/// `v_t = values[t * stride + off..][..out.len()]`, `t < w.len()`.
pub fn weighted_rows(w: &[f32], values: &[f32], stride: usize, off: usize, out: &mut [f32]) {
    if let Some(last) = w.len().checked_sub(1) {
        assert!(
            values.len() >= last * stride + off + out.len(),
            "weighted_rows: values too short"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: AVX2/FMA detected; every value row lies inside `values` (checked above).
        unsafe { avx2::weighted_rows(w, values, stride, off, out) };
        return;
    }
    out.fill(0.0);
    for (t, &a) in w.iter().enumerate() {
        let v = &values[t * stride + off..t * stride + off + out.len()];
        for (o, &vv) in out.iter_mut().zip(v) {
            *o += a * vv;
        }
    }
}

/// Dequantize one stored row into f32, bitwise as `model::quant::dequantize` does (the same
/// operations per element), with AVX2 for the block types and F16 where available. Feeds the
/// GEMM path of prefill chunks, which converts every weight row once per chunk.
pub fn dequantize_row(ty: GgmlType, row: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd_available()
        && matches!(
            ty,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::F16
        )
        && Some(row.len() as u64) == ty.bytes_for(out.len() as u64)
    {
        // SAFETY: AVX2/FMA/F16C detected; `row` holds exactly `out.len()` elements (checked).
        unsafe { avx2::dequantize_row(ty, row, out) };
        return;
    }
    model::quant::dequantize(ty, row, out);
}

/// Straightforward loops: the fallback on every CPU, and the reference the SIMD code is
/// tested against.
pub mod portable {
    use super::*;
    use crate::quant::f16_at;
    use half::{bf16, f16};

    /// Dot of a quantized row with quantized activations (see the module docs for the maths).
    pub fn dot_q(ty: GgmlType, row: &[u8], x: &[BlockQ8]) -> f32 {
        match ty {
            GgmlType::Q4_0 => dot_q4_0(row, x),
            GgmlType::Q4_1 => dot_q4_1(row, x),
            GgmlType::Q5_0 => dot_q5_0(row, x),
            GgmlType::Q5_1 => dot_q5_1(row, x),
            GgmlType::Q8_0 => dot_q8_0(row, x),
            GgmlType::Q4_K => dot_q4_k(row, x),
            GgmlType::Q5_K => dot_q5_k(row, x),
            GgmlType::Q6_K => dot_q6_k(row, x),
            _ => panic!("dot_q: {} is not a block type", ty.name()),
        }
    }

    /// `sum n[i] * q_x[i]` over one 4-bit block: low nibbles are elements 0..16, high 16..32.
    fn nibble_dot(qs: &[u8], xq: &[i8; QK]) -> i32 {
        let mut s = 0i32;
        for j in 0..QK / 2 {
            s += (qs[j] & 0x0f) as i32 * xq[j] as i32;
            s += (qs[j] >> 4) as i32 * xq[j + QK / 2] as i32;
        }
        s
    }

    /// `d sc_j` and `dmin m_j` of the eight sub-blocks of a `Q4_K` or `Q5_K` super-block `b`
    /// (the model crate's decoder's own scales, so kernels and decoder agree bitwise).
    pub fn k_scales(b: &[u8]) -> ([f32; 8], [f32; 8]) {
        model::kquant::sub_block_scales(f16_at(b, 0), f16_at(b, 2), &b[4..16])
    }

    /// The 32 nibbles of sub-block `j` of a `Q4_K` super-block `b`, in element order
    /// (sub-blocks `2g` and `2g + 1` are the low and high nibbles of `qs[32g..32g + 32]`).
    pub fn q4_k_nibbles(b: &[u8], j: usize) -> [u8; QK] {
        let q = &b[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
        std::array::from_fn(|l| (q[l] >> (4 * (j % 2))) & 0x0f)
    }

    /// The 32 five-bit values of sub-block `j` of a `Q5_K` super-block `b`: the nibbles as in
    /// `Q4_K` (at `qs = b[48..]`), the fifth bit of element `l` is bit `j` of `qh[l]`.
    pub fn q5_k_values(b: &[u8], j: usize) -> [u8; QK] {
        let q = &b[48 + 32 * (j / 2)..48 + 32 * (j / 2) + 32];
        let qh = &b[16..48];
        std::array::from_fn(|l| ((q[l] >> (4 * (j % 2))) & 0x0f) | (((qh[l] >> j) & 1) << 4))
    }

    pub fn dot_q4_k(row: &[u8], x: &[BlockQ8]) -> f32 {
        dot_k(row, x, model::kquant::Q4_K_BYTES, q4_k_nibbles)
    }

    pub fn dot_q5_k(row: &[u8], x: &[BlockQ8]) -> f32 {
        dot_k(row, x, model::kquant::Q5_K_BYTES, q5_k_values)
    }

    /// `Q4_K` / `Q5_K`: super-blocks of `bytes`, sub-block `j`'s unsigned values from `values`.
    fn dot_k(row: &[u8], x: &[BlockQ8], bytes: usize, values: fn(&[u8], usize) -> [u8; QK]) -> f32 {
        let mut acc = 0f32;
        for (b, xs) in row.chunks_exact(bytes).zip(x.chunks_exact(8)) {
            let (mul, sub) = k_scales(b);
            for (j, a) in xs.iter().enumerate() {
                let isum: i32 = values(b, j)
                    .iter()
                    .zip(&a.qs)
                    .map(|(&w, &q)| w as i32 * q as i32)
                    .sum();
                acc += mul[j] * a.d * isum as f32 - sub[j] * a.s;
            }
        }
        acc
    }

    /// The values `q6 - 32` of 32-block `j` of a `Q6_K` super-block `b` (half `j / 4`, chunk
    /// `j % 4`: low bits from `ql`, two high bits from `qh`), and its two group scales.
    pub fn q6_k_values(b: &[u8], j: usize) -> ([i8; QK], i32, i32) {
        let (h, k) = (j / 4, j % 4);
        let ql = &b[64 * h + 32 * (k % 2)..64 * h + 32 * (k % 2) + 32];
        let qh = &b[128 + 32 * h..128 + 32 * h + 32];
        let v = std::array::from_fn(|l| {
            let q = ((ql[l] >> (4 * (k / 2))) & 0x0f) | (((qh[l] >> (2 * k)) & 3) << 4);
            q as i8 - 32
        });
        let sc = &b[192 + 8 * h + 2 * k..];
        (v, sc[0] as i8 as i32, sc[1] as i8 as i32)
    }

    pub fn dot_q6_k(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = 0f32;
        for (b, xs) in row
            .chunks_exact(model::kquant::Q6_K_BYTES)
            .zip(x.chunks_exact(8))
        {
            let d = f16_at(b, 208);
            for (j, a) in xs.iter().enumerate() {
                let (v, sa, sb) = q6_k_values(b, j);
                let dot = |r: std::ops::Range<usize>| -> i32 {
                    r.map(|l| v[l] as i32 * a.qs[l] as i32).sum()
                };
                acc += d * a.d * (sa * dot(0..16) + sb * dot(16..32)) as f32;
            }
        }
        acc
    }

    pub fn dot_q4_0(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = 0f32;
        for (b, a) in row.chunks_exact(18).zip(x) {
            let d = f16_at(b, 0);
            let isum = nibble_dot(&b[2..18], &a.qs);
            acc += d * a.d * isum as f32 - 8.0 * d * a.s;
        }
        acc
    }

    pub fn dot_q4_1(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = 0f32;
        for (b, a) in row.chunks_exact(20).zip(x) {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let isum = nibble_dot(&b[4..20], &a.qs);
            acc += d * a.d * isum as f32 + m * a.s;
        }
        acc
    }

    /// `sum v[i] * q_x[i]` over the 5-bit values of one block.
    fn q5_dot(qh: &[u8], qs: &[u8], xq: &[i8; QK]) -> i32 {
        let v = model::quant::q5_values(qh, qs);
        v.iter().zip(xq).map(|(&a, &b)| a as i32 * b as i32).sum()
    }

    pub fn dot_q5_0(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = 0f32;
        for (b, a) in row.chunks_exact(22).zip(x) {
            let d = f16_at(b, 0);
            let isum = q5_dot(&b[2..6], &b[6..22], &a.qs);
            acc += d * a.d * isum as f32 - 16.0 * d * a.s;
        }
        acc
    }

    pub fn dot_q5_1(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = 0f32;
        for (b, a) in row.chunks_exact(24).zip(x) {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let isum = q5_dot(&b[4..8], &b[8..24], &a.qs);
            acc += d * a.d * isum as f32 + m * a.s;
        }
        acc
    }

    pub fn dot_q8_0(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = 0f32;
        for (b, a) in row.chunks_exact(34).zip(x) {
            let d = f16_at(b, 0);
            let isum: i32 = b[2..34]
                .iter()
                .zip(&a.qs)
                .map(|(&w, &q)| (w as i8) as i32 * q as i32)
                .sum();
            acc += d * a.d * isum as f32;
        }
        acc
    }

    /// Eight partial sums, so the compiler can keep them in one vector register.
    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ac
            .remainder()
            .iter()
            .zip(bc.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in ac.zip(bc) {
            for k in 0..8 {
                acc[k] += x[k] * y[k];
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    pub fn dot_float_row(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
        let mut acc = 0f32;
        match ty {
            GgmlType::F32 => {
                for (c, &v) in row.chunks_exact(4).zip(x) {
                    acc += f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * v;
                }
            }
            GgmlType::F16 => {
                for (c, &v) in row.chunks_exact(2).zip(x) {
                    acc += f16::from_le_bytes([c[0], c[1]]).to_f32() * v;
                }
            }
            GgmlType::BF16 => {
                for (c, &v) in row.chunks_exact(2).zip(x) {
                    acc += bf16::from_le_bytes([c[0], c[1]]).to_f32() * v;
                }
            }
            _ => panic!("dot_float_row: {} is a block type", ty.name()),
        }
        acc
    }
}

/// The block-quantized kernels, written once and compiled per instruction set: the module that
/// invokes it provides `idot` (eight i32 sums of four adjacent u8 x i8 products), `hsum`,
/// `unpack_nibbles` and `f16_ptr`. Each kernel dots one weight row with `N` activation vectors:
/// every weight block is decoded once for all of them, and each vector's result is bitwise what
/// it gets alone (the same operations in the same order per vector, whatever `N`).
#[cfg(target_arch = "x86_64")]
macro_rules! block_kernels {
    ($features:literal) => {
        /// `d * sum_i n[i] q[i]` for one 4-bit block (nibbles `n` unpacked) and activation
        /// block `a`, as eight f32 lanes added to `acc`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn q4_unpacked(n: __m256i, a: &BlockQ8, d: f32, acc: __m256) -> __m256 {
            let q = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
            let p = _mm256_cvtepi32_ps(idot(n, q));
            _mm256_fmadd_ps(_mm256_set1_ps(d), p, acc)
        }

        /// `dw d_a sum_i w[i] q[i]` for one Q8_0 block (weights `w`, magnitudes `w_abs`).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn q8_loaded(
            w: __m256i,
            w_abs: __m256i,
            dw: f32,
            a: &BlockQ8,
            acc: __m256,
        ) -> __m256 {
            let d = dw * a.d;
            let q = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
            // |w| * (q * sign(w)) = w * q, with |w| unsigned as the byte products want.
            let p = idot(w_abs, _mm256_sign_epi8(q, w));
            _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(p), acc)
        }

        /// `out[t] = sum_b d_w d_x (sum_i n[i] q[i] - 8 sum_i q[i])` for each of `N` vectors.
        ///
        /// # Safety
        /// The module's features available; `row.len() == 18 * xs[t].len()` for every `t`.
        #[target_feature(enable = $features)]
        pub unsafe fn dot_q4_0_n<const N: usize>(
            row: &[u8],
            xs: &[&[BlockQ8]; N],
            out: &mut [f32],
        ) {
            dot_pairs_n::<N, { PairKind::Q4_0 as u8 }>(row, xs, out)
        }

        /// `out[t] = sum_b (d_w d_x sum_i n[i] q[i] + m d_x sum_i q[i])` for each of `N` vectors.
        ///
        /// # Safety
        /// The module's features available; `row.len() == 20 * xs[t].len()` for every `t`.
        #[target_feature(enable = $features)]
        pub unsafe fn dot_q4_1_n<const N: usize>(
            row: &[u8],
            xs: &[&[BlockQ8]; N],
            out: &mut [f32],
        ) {
            dot_pairs_n::<N, { PairKind::Q4_1 as u8 }>(row, xs, out)
        }

        /// `out[t] = sum_b d_w d_x (sum_i v[i] q[i] - 16 sum_i q[i])` for each of `N` vectors.
        ///
        /// # Safety
        /// The module's features available; `row.len() == 22 * xs[t].len()` for every `t`.
        #[target_feature(enable = $features)]
        pub unsafe fn dot_q5_0_n<const N: usize>(
            row: &[u8],
            xs: &[&[BlockQ8]; N],
            out: &mut [f32],
        ) {
            dot_pairs_n::<N, { PairKind::Q5_0 as u8 }>(row, xs, out)
        }

        /// `out[t] = sum_b (d_w d_x sum_i v[i] q[i] + m d_x sum_i q[i])` for each of `N` vectors.
        ///
        /// # Safety
        /// The module's features available; `row.len() == 24 * xs[t].len()` for every `t`.
        #[target_feature(enable = $features)]
        pub unsafe fn dot_q5_1_n<const N: usize>(
            row: &[u8],
            xs: &[&[BlockQ8]; N],
            out: &mut [f32],
        ) {
            dot_pairs_n::<N, { PairKind::Q5_1 as u8 }>(row, xs, out)
        }

        /// One block of a [`PairKind`] at `p`: its values as unsigned bytes, the scale `d`
        /// and the offset coefficient `c` (the block's dot with activations `x` is
        /// `d x.d sum_i v[i] q[i] + c x.s`: `c = m` for Q4_1/Q5_1, `-8 d` / `-16 d` for
        /// Q4_0/Q5_0).
        #[inline]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn pair_block<const KIND: u8>(p: *const u8) -> (__m256i, f32, f32) {
            // SAFETY (caller): `p` points at one whole block of the kind.
            let d = f16_ptr(p);
            match KIND {
                k if k == PairKind::Q4_0 as u8 => (unpack_nibbles(p.add(2)), d, -8.0 * d),
                k if k == PairKind::Q4_1 as u8 => (unpack_nibbles(p.add(4)), d, f16_ptr(p.add(2))),
                k if k == PairKind::Q5_0 as u8 => (unpack_q5(p.add(2), p.add(6)), d, -16.0 * d),
                _ => (unpack_q5(p.add(4), p.add(8)), d, f16_ptr(p.add(2))),
            }
        }

        /// The 32-element block kernels: even and odd blocks in separate accumulators (two
        /// independent FMA chains), offsets summed per parity; `out[t] = hsum(acc_even +
        /// acc_odd) + off_even + off_odd`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dot_pairs_n<const N: usize, const KIND: u8>(
            row: &[u8],
            xs: &[&[BlockQ8]; N],
            out: &mut [f32],
        ) {
            let bytes = PairKind::bytes(KIND);
            let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
            let (mut off0, mut off1) = ([0f32; N], [0f32; N]);
            let p = row.as_ptr();
            let nb = row.len() / bytes;
            let mut i = 0;
            while i + 2 <= nb {
                let (n0, d0, c0) = pair_block::<KIND>(p.add(i * bytes));
                let (n1, d1, c1) = pair_block::<KIND>(p.add(i * bytes + bytes));
                for t in 0..N {
                    let (x0, x1) = (&xs[t][i], &xs[t][i + 1]);
                    acc0[t] = q4_unpacked(n0, x0, d0 * x0.d, acc0[t]);
                    acc1[t] = q4_unpacked(n1, x1, d1 * x1.d, acc1[t]);
                    off0[t] += c0 * x0.s;
                    off1[t] += c1 * x1.s;
                }
                i += 2;
            }
            if i < nb {
                let (n0, d0, c0) = pair_block::<KIND>(p.add(i * bytes));
                for t in 0..N {
                    let x = &xs[t][i];
                    acc0[t] = q4_unpacked(n0, x, d0 * x.d, acc0[t]);
                    off0[t] += c0 * x.s;
                }
            }
            for t in 0..N {
                out[t] = hsum(_mm256_add_ps(acc0[t], acc1[t])) + off0[t] + off1[t];
            }
        }

        /// `out[t] = sum_b d_w d_x sum_i w[i] q[i]` for each of `N` vectors.
        ///
        /// # Safety
        /// The module's features available; `row.len() == 34 * xs[t].len()` for every `t`.
        #[target_feature(enable = $features)]
        pub unsafe fn dot_q8_0_n<const N: usize>(
            row: &[u8],
            xs: &[&[BlockQ8]; N],
            out: &mut [f32],
        ) {
            let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
            let p = row.as_ptr();
            let nb = row.len() / 34;
            let load = |b: *const u8| {
                let w = _mm256_loadu_si256(b.add(2) as *const __m256i);
                (w, _mm256_sign_epi8(w, w), f16_ptr(b))
            };
            let mut i = 0;
            while i + 2 <= nb {
                let ((w0, a0, d0), (w1, a1, d1)) = (load(p.add(i * 34)), load(p.add(i * 34 + 34)));
                for t in 0..N {
                    let x = xs[t];
                    acc0[t] = q8_loaded(w0, a0, d0, &x[i], acc0[t]);
                    acc1[t] = q8_loaded(w1, a1, d1, &x[i + 1], acc1[t]);
                }
                i += 2;
            }
            if i < nb {
                let (w0, a0, d0) = load(p.add(i * 34));
                for t in 0..N {
                    acc0[t] = q8_loaded(w0, a0, d0, &xs[t][i], acc0[t]);
                }
            }
            for t in 0..N {
                out[t] = hsum(_mm256_add_ps(acc0[t], acc1[t]));
            }
        }

        /// `out[t] = sum_j (d sc_j d_x sum_i n[i] q[i] - dmin m_j s_x)` over the `Q4_K`
        /// sub-blocks, for each of `N` vectors.
        ///
        /// # Safety
        /// The module's features available; `row.len() == 144 * xs[t].len() / 8` for every `t`.
        #[target_feature(enable = $features)]
        pub unsafe fn dot_q4_k_n<const N: usize>(
            row: &[u8],
            xs: &[&[BlockQ8]; N],
            out: &mut [f32],
        ) {
            dot_k_n::<N, false>(row, xs, out)
        }

        /// [`dot_q4_k_n`] for `Q5_K`: the fifth bit of element `l` of sub-block `j` is bit `j`
        /// of `qh[l]`.
        ///
        /// # Safety
        /// The module's features available; `row.len() == 176 * xs[t].len() / 8` for every `t`.
        #[target_feature(enable = $features)]
        pub unsafe fn dot_q5_k_n<const N: usize>(
            row: &[u8],
            xs: &[&[BlockQ8]; N],
            out: &mut [f32],
        ) {
            dot_k_n::<N, true>(row, xs, out)
        }

        /// The body of [`dot_q4_k_n`] (`FIVE = false`) and [`dot_q5_k_n`] (`FIVE = true`).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dot_k_n<const N: usize, const FIVE: bool>(
            row: &[u8],
            xs: &[&[BlockQ8]; N],
            out: &mut [f32],
        ) {
            use model::kquant::{Q4_K_BYTES, Q5_K_BYTES};
            let (block_bytes, qs_at) = if FIVE {
                (Q5_K_BYTES, 48)
            } else {
                (Q4_K_BYTES, 16)
            };
            // Even and odd sub-blocks in separate accumulators: two independent FMA chains.
            let mut acc = [[_mm256_setzero_ps(); N]; 2];
            let mut off = [[0f32; N]; 2];
            let (mask, one) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(1));
            for (sb, b) in row.chunks_exact(block_bytes).enumerate() {
                let (muls, subs) = portable::k_scales(b);
                let qh = if FIVE {
                    _mm256_loadu_si256(b.as_ptr().add(16) as *const __m256i)
                } else {
                    _mm256_setzero_si256()
                };
                for g in 0..4 {
                    let at = qs_at + 32 * g;
                    let raw = _mm256_loadu_si256(b.as_ptr().add(at) as *const __m256i);
                    let halves = [
                        _mm256_and_si256(raw, mask),
                        _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask),
                    ];
                    for (h, &n) in halves.iter().enumerate() {
                        let j = 2 * g + h;
                        let v = if FIVE {
                            // Bit j of each qh byte (16-bit shifts: the bits a byte receives
                            // from its neighbour land above bit 0 and are masked off).
                            let bit = _mm256_and_si256(
                                _mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32)),
                                one,
                            );
                            _mm256_or_si256(n, _mm256_slli_epi16(bit, 4))
                        } else {
                            n
                        };
                        let (mul, sub) = (muls[j], subs[j]);
                        let (acc, off) = (&mut acc[h], &mut off[h]);
                        for t in 0..N {
                            let x = &xs[t][8 * sb + j];
                            acc[t] = q4_unpacked(v, x, mul * x.d, acc[t]);
                            off[t] += sub * x.s;
                        }
                    }
                }
            }
            for t in 0..N {
                out[t] = hsum(_mm256_add_ps(acc[0][t], acc[1][t])) - (off[0][t] + off[1][t]);
            }
        }

        /// `out[t] = sum d d_x (s_a sum_{i<16} v[i] q[i] + s_b sum_{i>=16} v[i] q[i])` over
        /// the `Q6_K` 32-blocks, for each of `N` vectors.
        ///
        /// # Safety
        /// The module's features available; `row.len() == 210 * xs[t].len() / 8` for every `t`.
        #[target_feature(enable = $features)]
        pub unsafe fn dot_q6_k_n<const N: usize>(
            row: &[u8],
            xs: &[&[BlockQ8]; N],
            out: &mut [f32],
        ) {
            // Even and odd groups in separate accumulators: two independent FMA chains.
            let mut acc = [[_mm256_setzero_ps(); N]; 2];
            let (low4, low2) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(3));
            for (sb, b) in row.chunks_exact(model::kquant::Q6_K_BYTES).enumerate() {
                let p = b.as_ptr();
                let d = f16_ptr(p.add(208));
                for h in 0..2 {
                    let ql = [
                        _mm256_loadu_si256(p.add(64 * h) as *const __m256i),
                        _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i),
                    ];
                    let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
                    for k in 0..4 {
                        let lo = match k / 2 {
                            0 => ql[k % 2],
                            _ => _mm256_srli_epi16(ql[k % 2], 4),
                        };
                        let hi = match k {
                            0 => qh,
                            1 => _mm256_srli_epi16(qh, 2),
                            2 => _mm256_srli_epi16(qh, 4),
                            _ => _mm256_srli_epi16(qh, 6),
                        };
                        // q = low nibble | two high bits << 4 (no carry across bytes: the
                        // masked values are < 4 before the shift), v = q - 32.
                        let q = _mm256_or_si256(
                            _mm256_and_si256(lo, low4),
                            _mm256_slli_epi16(_mm256_and_si256(hi, low2), 4),
                        );
                        let v = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
                        let v_abs = _mm256_sign_epi8(v, v);
                        let sc = p.add(192 + 8 * h + 2 * k) as *const i8;
                        let (sa, sbb) = (*sc as i32, *sc.add(1) as i32);
                        // Lanes 0..4 sum elements 0..16, lanes 4..8 elements 16..32.
                        let scales = _mm256_setr_epi32(sa, sa, sa, sa, sbb, sbb, sbb, sbb);
                        let j = 4 * h + k;
                        let acc = &mut acc[k % 2];
                        for t in 0..N {
                            let x = &xs[t][8 * sb + j];
                            let qx = _mm256_load_si256(x.qs.as_ptr() as *const __m256i);
                            // |v| * (q * sign(v)) = v * q, |v| <= 32 unsigned.
                            let prod = idot(v_abs, _mm256_sign_epi8(qx, v));
                            let scaled = _mm256_cvtepi32_ps(_mm256_mullo_epi32(prod, scales));
                            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x.d), scaled, acc[t]);
                        }
                    }
                }
            }
            for t in 0..N {
                out[t] = hsum(_mm256_add_ps(acc[0][t], acc[1][t]));
            }
        }
    };
}

/// AVX2 + FMA kernels (x86_64). Callers must check [`simd_available`] and the lengths.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// `(a0 + a1) + (a2 + a3)`, lane-wise.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sum4(a: [__m256; 4]) -> __m256 {
        _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Eight i32 sums of four adjacent `u[i] * s[i]` (u: unsigned bytes, s: signed bytes;
    /// the pairs must fit i16, as ours do: `|n q| <= 15 * 127`, `|w q| <= 128 * 127`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn idot(u: __m256i, s: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(u, s); // i16: |u0 s0 + u1 s1| <= 2 * 128 * 128 fits for our ranges
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }

    /// The 32 nibbles of a 4-bit block as bytes in element order (low lane 0..16, high 16..32).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn unpack_nibbles(qs: *const u8) -> __m256i {
        // SAFETY (caller): `qs` points at 16 readable bytes.
        let raw = _mm_loadu_si128(qs as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
    }

    /// The f16 at `p` (unaligned, little-endian), converted by the F16C unit.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn f16_ptr(p: *const u8) -> f32 {
        // SAFETY (caller): `p` points at 2 readable bytes.
        let bits = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// The 32 five-bit values of a Q5 block: nibbles at `qs`, fifth bits in the u32 at `qh`
    /// (bit `j` for element `j`), as bytes in element order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn unpack_q5(qh: *const u8, qs: *const u8) -> __m256i {
        let bits = (qh as *const u32).read_unaligned() as i32;
        // Byte k gets byte k / 8 of qh, then is 0xff where its bit k % 8 is set.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let mask = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, mask), _mm256_set1_epi8(-1));
        _mm256_or_si256(
            unpack_nibbles(qs),
            _mm256_and_si256(set, _mm256_set1_epi8(0x10)),
        )
    }

    block_kernels!("avx2,fma,f16c");

    /// See [`super::scores_f32`].
    ///
    /// # Safety
    /// AVX2/FMA available; every key row lies inside `keys`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scores_f32(
        q: &[f32],
        keys: &[f32],
        stride: usize,
        off: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        for (t, o) in out.iter_mut().enumerate() {
            let k = keys.get_unchecked(t * stride + off..t * stride + off + q.len());
            *o = dot_f32(q, k) * scale;
        }
    }

    /// See [`super::weighted_rows`].
    ///
    /// # Safety
    /// AVX2/FMA available; every value row lies inside `values`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_rows(
        w: &[f32],
        values: &[f32],
        stride: usize,
        off: usize,
        out: &mut [f32],
    ) {
        let n = out.len();
        let body = n - n % 8;
        // The output columns in blocks of up to 64 held in registers over all positions (a head
        // of 64 is one block): each element is still `fma(w[t], v_t, acc)` for t in order from
        // 0.0, exactly as when accumulating in memory, without a load and store per position.
        let mut j0 = 0;
        while j0 < body {
            let left = (body - j0) / 8;
            let vecs = match left {
                8.. => weighted_block::<8>(w, values, stride, off + j0, out.as_mut_ptr().add(j0)),
                4..=7 => weighted_block::<4>(w, values, stride, off + j0, out.as_mut_ptr().add(j0)),
                2 | 3 => weighted_block::<2>(w, values, stride, off + j0, out.as_mut_ptr().add(j0)),
                _ => weighted_block::<1>(w, values, stride, off + j0, out.as_mut_ptr().add(j0)),
            };
            j0 += 8 * vecs;
        }
        for (j, o) in out.iter_mut().enumerate().skip(body) {
            let mut s = 0f32;
            for (t, &a) in w.iter().enumerate() {
                s += a * *values.get_unchecked(t * stride + off + j);
            }
            *o = s;
        }
    }

    /// `V` vectors of 8 output columns at `po`: `sum_t w[t] * values[t * stride + off..][..8V]`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn weighted_block<const V: usize>(
        w: &[f32],
        values: &[f32],
        stride: usize,
        off: usize,
        po: *mut f32,
    ) -> usize {
        // SAFETY (caller): every value row holds `off + 8V` elements; `po` has 8V writable.
        let mut acc = [_mm256_setzero_ps(); V];
        for (t, &a) in w.iter().enumerate() {
            let pv = values.as_ptr().add(t * stride + off);
            let av = _mm256_set1_ps(a);
            for (v, acc_v) in acc.iter_mut().enumerate() {
                *acc_v = _mm256_fmadd_ps(av, _mm256_loadu_ps(pv.add(8 * v)), *acc_v);
            }
        }
        for (v, acc_v) in acc.iter().enumerate() {
            _mm256_storeu_ps(po.add(8 * v), *acc_v);
        }
        V
    }

    /// Eight u8 (as i32 lanes, from the low 8 bytes of `v`) to f32.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn u8x8_f32(v: __m128i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
    }

    /// See [`super::dequantize_row`].
    ///
    /// # Safety
    /// AVX2/FMA/F16C available; `ty` is Q4_0, Q4_1, Q8_0 or F16 and `row` holds exactly
    /// `out.len()` elements of it.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dequantize_row(ty: GgmlType, row: &[u8], out: &mut [f32]) {
        let po = out.as_mut_ptr();
        match ty {
            GgmlType::F16 => {
                let n = out.len();
                let p = row.as_ptr() as *const __m128i;
                let mut i = 0;
                while i + 8 <= n {
                    _mm256_storeu_ps(
                        po.add(i),
                        _mm256_cvtph_ps(_mm_loadu_si128(p.byte_add(2 * i))),
                    );
                    i += 8;
                }
                for (j, o) in out.iter_mut().enumerate().skip(i) {
                    *o = f16_ptr(row.as_ptr().add(2 * j));
                }
            }
            GgmlType::Q8_0 => {
                for (bi, b) in row.chunks_exact(34).enumerate() {
                    let d = _mm256_set1_ps(f16_ptr(b.as_ptr()));
                    let q = _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i);
                    for h in 0..4 {
                        let part = match h {
                            0 => _mm256_castsi256_si128(q),
                            1 => _mm_srli_si128(_mm256_castsi256_si128(q), 8),
                            2 => _mm256_extracti128_si256(q, 1),
                            _ => _mm_srli_si128(_mm256_extracti128_si256(q, 1), 8),
                        };
                        let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part));
                        _mm256_storeu_ps(po.add(bi * QK + 8 * h), _mm256_mul_ps(f, d));
                    }
                }
            }
            _ => {
                // Q4_0: w = (n - 8) * d; Q4_1: w = n * d + m.
                let (bytes, off) = if ty == GgmlType::Q4_0 {
                    (18, 2)
                } else {
                    (20, 4)
                };
                for (bi, b) in row.chunks_exact(bytes).enumerate() {
                    let d = _mm256_set1_ps(f16_ptr(b.as_ptr()));
                    let n = unpack_nibbles(b.as_ptr().add(off));
                    for h in 0..4 {
                        let part = match h {
                            0 => _mm256_castsi256_si128(n),
                            1 => _mm_srli_si128(_mm256_castsi256_si128(n), 8),
                            2 => _mm256_extracti128_si256(n, 1),
                            _ => _mm_srli_si128(_mm256_extracti128_si256(n, 1), 8),
                        };
                        let w = if ty == GgmlType::Q4_0 {
                            let c =
                                _mm256_sub_epi32(_mm256_cvtepu8_epi32(part), _mm256_set1_epi32(8));
                            _mm256_mul_ps(_mm256_cvtepi32_ps(c), d)
                        } else {
                            let m = _mm256_set1_ps(f16_ptr(b.as_ptr().add(2)));
                            _mm256_add_ps(_mm256_mul_ps(u8x8_f32(part), d), m)
                        };
                        _mm256_storeu_ps(po.add(bi * QK + 8 * h), w);
                    }
                }
            }
        }
    }

    /// # Safety
    /// AVX2/FMA available; `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            i += 16;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    /// Dot of little-endian f32 bytes with `x`.
    ///
    /// # Safety
    /// AVX2/FMA available; `row.len() == 4 * x.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32_bytes(row: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        let (pr, px) = (row.as_ptr() as *const f32, x.as_ptr());
        // Four accumulators: four independent FMA chains (one would wait on its own latency).
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let j = i + 8 * k;
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(pr.add(j)), _mm256_loadu_ps(px.add(j)), *a);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pr.add(i)),
                _mm256_loadu_ps(px.add(i)),
                acc[0],
            );
            i += 8;
        }
        let mut s = hsum(sum4(acc));
        while i < n {
            s += (pr.add(i)).read_unaligned() * x[i];
            i += 1;
        }
        s
    }

    /// Dot of little-endian f16 bytes with `x` (F16C conversion, 8 at a time).
    ///
    /// # Safety
    /// AVX2/FMA/F16C available; `row.len() == 2 * x.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16_bytes(row: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        let (pr, px) = (row.as_ptr(), x.as_ptr());
        // Four accumulators: four independent FMA chains (one would wait on its own latency).
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let j = i + 8 * k;
                let w = _mm256_cvtph_ps(_mm_loadu_si128(pr.add(2 * j) as *const __m128i));
                *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(px.add(j)), *a);
            }
            i += 32;
        }
        while i + 8 <= n {
            let w = _mm256_cvtph_ps(_mm_loadu_si128(pr.add(2 * i) as *const __m128i));
            acc[0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(px.add(i)), acc[0]);
            i += 8;
        }
        let mut s = hsum(sum4(acc));
        while i < n {
            s += f16_ptr(pr.add(2 * i)) * x[i];
            i += 1;
        }
        s
    }

    /// Dot of little-endian bf16 bytes with `x` (bf16 is the top half of an f32).
    ///
    /// # Safety
    /// AVX2/FMA available; `row.len() == 2 * x.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_bf16_bytes(row: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        let (pr, px) = (row.as_ptr(), x.as_ptr());
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(pr.add(2 * i) as *const __m128i));
            let w = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
            acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(px.add(i)), acc);
            i += 8;
        }
        let mut s = hsum(acc);
        while i < n {
            let bits = (pr.add(2 * i) as *const u16).read_unaligned();
            s += f32::from_bits((bits as u32) << 16) * x[i];
            i += 1;
        }
        s
    }
}

/// The block kernels with AVX-512 VNNI's `vpdpbusd` (one instruction for the byte products and
/// their sums; the same integers as AVX2's `maddubs` + `madd`, so the same results bitwise).
/// Callers must check [`vnni_available`].
/// Float row dots (decode of F32/F16 models) with 512-bit vectors: four 16-lane
/// accumulators over 64 elements at a time, the rest through the AVX2 kernels. Half the
/// instructions of the 256-bit kernels per element (seed shape F16 decode, where the weights
/// sit in cache and the conversions and FMAs are the work).
#[cfg(target_arch = "x86_64")]
pub mod avx512_float {
    use super::avx2;
    use std::arch::x86_64::*;

    /// Bytes ahead of the current position the row dots ask the cache for: rows of a float
    /// matrix lie one after the other, so this reaches into the next rows of the same task.
    const PREFETCH_AHEAD: usize = 4096;

    /// `sum_i w(i) * x[i]` over the first `64 * (x.len() / 64)` elements, `load(i)` giving
    /// the 16 weights at element `i`; returns the sum and where the rest starts.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn dot64(
        x: &[f32],
        load: impl Fn(usize) -> __m512,
        prefetch: impl Fn(usize),
    ) -> (f32, usize) {
        let px = x.as_ptr();
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= x.len() {
            prefetch(i);
            for (k, a) in acc.iter_mut().enumerate() {
                let j = i + 16 * k;
                *a = _mm512_fmadd_ps(load(j), _mm512_loadu_ps(px.add(j)), *a);
            }
            i += 64;
        }
        let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        (_mm512_reduce_add_ps(sum), i)
    }

    /// # Safety
    /// AVX-512 F and AVX2/FMA/F16C available; `row.len() == 4 * x.len()`.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn dot_f32_bytes(row: &[u8], x: &[f32]) -> f32 {
        let pr = row.as_ptr() as *const f32;
        // SAFETY: every `j` passed to the loader is below `x.len()` - 15.
        let ahead = |j: usize| {
            let p = (pr as *const i8).wrapping_add(4 * j + PREFETCH_AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(128));
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(192));
        };
        let (s, i) = dot64(x, |j| _mm512_loadu_ps(pr.add(j)), ahead);
        s + avx2::dot_f32_bytes(&row[4 * i..], &x[i..])
    }

    /// # Safety
    /// AVX-512 F and AVX2/FMA/F16C available; `row.len() == 2 * x.len()`.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn dot_f16_bytes(row: &[u8], x: &[f32]) -> f32 {
        let pr = row.as_ptr();
        // SAFETY: every `j` passed to the loader is below `x.len()` - 15: 32 bytes at 2j.
        let ahead = |j: usize| {
            let p = (pr as *const i8).wrapping_add(2 * j + PREFETCH_AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
        };
        let (s, i) = dot64(
            x,
            |j| _mm512_cvtph_ps(_mm256_loadu_si256(pr.add(2 * j) as *const __m256i)),
            ahead,
        );
        s + avx2::dot_f16_bytes(&row[2 * i..], &x[i..])
    }
}

#[cfg(target_arch = "x86_64")]
pub mod vnni {
    use super::avx2::{f16_ptr, hsum, unpack_nibbles};
    use super::*;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl,avx512bw")]
    unsafe fn idot(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }

    /// [`super::avx2::unpack_q5`] with the fifth bits applied as a byte mask (AVX512-BW): the
    /// same bytes in 3 instructions instead of 8.
    #[inline]
    #[target_feature(enable = "avx2,avx512bw,avx512vl")]
    unsafe fn unpack_q5(qh: *const u8, qs: *const u8) -> __m256i {
        // SAFETY (caller): `qh` points at 4 readable bytes, `qs` at 16.
        let bits: __mmask32 = (qh as *const u32).read_unaligned();
        let n = unpack_nibbles(qs);
        // The nibbles are below 16: adding 16 where the bit is set is or-ing in bit 4.
        _mm256_mask_add_epi8(n, bits, n, _mm256_set1_epi8(0x10))
    }

    block_kernels!("avx2,fma,f16c,avx512vnni,avx512vl,avx512bw");

    /// The pair kernels ([`dot_q4_0_n`], [`dot_q4_1_n`], [`dot_q5_0_n`], [`dot_q5_1_n`]) with
    /// each pair of blocks in one 512-bit register: one byte product, conversion, scale
    /// product and FMA per vector for two blocks instead of two each. The low half
    /// accumulates the even blocks and the high half the odd ones, with the same f32 scale
    /// products (`d_w d_x`) and the same final sums, so each is bitwise its 256-bit kernel
    /// (tested).
    ///
    /// # Safety
    /// The module's features and AVX512-F available; `row` holds as many blocks of `KIND`
    /// as each `xs[t]` has.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl,avx512bw")]
    pub unsafe fn dot_pairs_n_wide<const N: usize, const KIND: u8>(
        row: &[u8],
        xs: &[&[BlockQ8]; N],
        out: &mut [f32],
    ) {
        const HIGH: __mmask16 = 0xff00;
        let bytes = PairKind::bytes(KIND);
        let mut acc = [_mm512_setzero_ps(); N];
        let (mut off0, mut off1) = ([0f32; N], [0f32; N]);
        let p = row.as_ptr();
        let nb = row.len() / bytes;
        let mut i = 0;
        while i + 2 <= nb {
            let (n0, d0, c0) = pair_block::<KIND>(p.add(i * bytes));
            let (n1, d1, c1) = pair_block::<KIND>(p.add(i * bytes + bytes));
            let n = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(n0), n1);
            let dw = _mm512_mask_mov_ps(_mm512_set1_ps(d0), HIGH, _mm512_set1_ps(d1));
            for t in 0..N {
                let (x0, x1) = (&xs[t][i], &xs[t][i + 1]);
                let q = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_load_si256(x0.qs.as_ptr() as *const __m256i)),
                    _mm256_load_si256(x1.qs.as_ptr() as *const __m256i),
                );
                let prod = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), n, q));
                let dx = _mm512_mask_mov_ps(_mm512_set1_ps(x0.d), HIGH, _mm512_set1_ps(x1.d));
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx), prod, acc[t]);
                off0[t] += c0 * x0.s;
                off1[t] += c1 * x1.s;
            }
            i += 2;
        }
        let tail = (i < nb).then(|| pair_block::<KIND>(p.add(i * bytes)));
        for t in 0..N {
            let (mut lo, hi) = (
                _mm512_castps512_ps256(acc[t]),
                _mm512_extractf32x8_ps::<1>(acc[t]),
            );
            if let Some((n0, d0, c0)) = tail {
                let x = &xs[t][i];
                lo = q4_unpacked(n0, x, d0 * x.d, lo);
                off0[t] += c0 * x.s;
            }
            out[t] = hsum(_mm256_add_ps(lo, hi)) + off0[t] + off1[t];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_q8_vec;
    use model::quant::{dequantize, quantize};

    /// Every type with an integer kernel.
    const INT_TYPES: [GgmlType; 8] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// `n` rounded up to whole blocks of `ty` (256 for the K-quants; other sizes stay).
    fn whole(ty: GgmlType, n: usize) -> usize {
        n.next_multiple_of(ty.block_elems())
    }

    fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                ((s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    /// The attention helpers (SIMD where available) against plain loops, for head sizes with
    /// and without a tail and a row stride wider than a head.
    #[test]
    fn attention_helpers_match_plain_loops() {
        for (hd, n_pos) in [(64usize, 1usize), (64, 37), (20, 5), (7, 3)] {
            let stride = 3 * hd + 5;
            let keys = values(n_pos * stride + hd, 11, 1.0);
            let q = values(hd, 12, 1.0);
            let mut got = vec![0f32; n_pos];
            scores_f32(&q, &keys, stride, hd + 2, 0.125, &mut got);
            for (t, g) in got.iter().enumerate() {
                let k = &keys[t * stride + hd + 2..t * stride + 2 * hd + 2];
                let want: f32 = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * 0.125;
                assert!(
                    (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "scores {hd} {t}"
                );
            }
            let w = values(n_pos, 13, 1.0);
            let mut out = vec![1f32; hd];
            weighted_rows(&w, &keys, stride, 3, &mut out);
            for (j, o) in out.iter().enumerate() {
                let want: f32 = (0..n_pos).map(|t| w[t] * keys[t * stride + 3 + j]).sum();
                assert!(
                    (o - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "rows {hd} {j}"
                );
            }
        }
    }

    /// On aarch64 the NEON kernels are bitwise the portable ones (same float arithmetic, exact
    /// integer sums), for every block type, block count and group size. Runs under
    /// `qemu-aarch64` in CI.
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_kernels_are_bitwise_portable() {
        assert!(std::arch::is_aarch64_feature_detected!("neon"));
        for ty in INT_TYPES {
            for (seed, n) in [(21u32, 32usize), (22, 96), (23, 576)] {
                let n = whole(ty, n);
                let w = quantize(ty, &values(n, seed, 0.7));
                for n_tok in 1..=6 {
                    let xq = quantize_q8_vec(&values(n * n_tok, seed + 1, 3.0));
                    let mut got = vec![0f32; n_tok];
                    dot_q_rows(ty, &w, &xq, n_tok, &mut got);
                    for (t, g) in got.iter().enumerate() {
                        let want = portable::dot_q(ty, &w, &xq[t * n / QK..(t + 1) * n / QK]);
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "{ty:?} n={n} n_tok={n_tok} t={t}"
                        );
                    }
                }
            }
        }
    }

    /// The SIMD row dequantizer is bitwise the model crate's, for every type.
    #[test]
    fn dequantize_row_is_bitwise_the_reference() {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::F16,
            GgmlType::F32,
        ] {
            for n in [32usize, 96, 576] {
                let w = quantize(ty, &values(n, 31, 1.5));
                let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                dequantize_row(ty, &w, &mut a);
                dequantize(ty, &w, &mut b);
                assert_eq!(
                    a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{ty:?} n={n}"
                );
            }
        }
    }

    /// Where the CPU has AVX-512 VNNI, its kernels give bitwise the AVX2 kernels' results.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vnni_kernels_equal_avx2_kernels() {
        if !vnni_available() {
            eprintln!("no AVX-512 VNNI on this CPU: nothing to compare");
            return;
        }
        for ty in INT_TYPES {
            for (seed, n) in [(5u32, 32usize), (6, 160), (7, 576)] {
                let n = whole(ty, n);
                let w = quantize(ty, &values(n, seed, 0.5));
                let xq = quantize_q8_vec(&values(2 * n, seed + 1, 2.0));
                let xs = [&xq[..n / QK], &xq[n / QK..]];
                let (mut a, mut b) = ([0f32; 2], [0f32; 2]);
                // SAFETY: AVX2/FMA/F16C and AVX-512 VNNI/VL detected; lengths match.
                unsafe {
                    match ty {
                        GgmlType::Q4_0 => {
                            avx2::dot_q4_0_n(&w, &xs, &mut a);
                            vnni::dot_q4_0_n(&w, &xs, &mut b);
                        }
                        GgmlType::Q4_1 => {
                            avx2::dot_q4_1_n(&w, &xs, &mut a);
                            vnni::dot_q4_1_n(&w, &xs, &mut b);
                        }
                        GgmlType::Q5_0 => {
                            avx2::dot_q5_0_n(&w, &xs, &mut a);
                            vnni::dot_q5_0_n(&w, &xs, &mut b);
                        }
                        GgmlType::Q5_1 => {
                            avx2::dot_q5_1_n(&w, &xs, &mut a);
                            vnni::dot_q5_1_n(&w, &xs, &mut b);
                        }
                        GgmlType::Q4_K => {
                            avx2::dot_q4_k_n(&w, &xs, &mut a);
                            vnni::dot_q4_k_n(&w, &xs, &mut b);
                        }
                        GgmlType::Q5_K => {
                            avx2::dot_q5_k_n(&w, &xs, &mut a);
                            vnni::dot_q5_k_n(&w, &xs, &mut b);
                        }
                        GgmlType::Q6_K => {
                            avx2::dot_q6_k_n(&w, &xs, &mut a);
                            vnni::dot_q6_k_n(&w, &xs, &mut b);
                        }
                        _ => {
                            avx2::dot_q8_0_n(&w, &xs, &mut a);
                            vnni::dot_q8_0_n(&w, &xs, &mut b);
                        }
                    }
                }
                assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits), "{ty:?} n={n}");
                // The 512-bit pair kernels equal the 256-bit ones bitwise.
                let kind = match ty {
                    GgmlType::Q4_0 => Some(PairKind::Q4_0),
                    GgmlType::Q4_1 => Some(PairKind::Q4_1),
                    GgmlType::Q5_0 => Some(PairKind::Q5_0),
                    GgmlType::Q5_1 => Some(PairKind::Q5_1),
                    _ => None,
                };
                let mut c = [0f32; 2];
                // SAFETY: as above; every AVX-512 VNNI CPU has AVX512-F.
                unsafe {
                    match kind {
                        Some(PairKind::Q4_0) => vnni::dot_pairs_n_wide::<2, 0>(&w, &xs, &mut c),
                        Some(PairKind::Q4_1) => vnni::dot_pairs_n_wide::<2, 1>(&w, &xs, &mut c),
                        Some(PairKind::Q5_0) => vnni::dot_pairs_n_wide::<2, 2>(&w, &xs, &mut c),
                        Some(PairKind::Q5_1) => vnni::dot_pairs_n_wide::<2, 3>(&w, &xs, &mut c),
                        None => continue,
                    }
                }
                assert_eq!(
                    a.map(f32::to_bits),
                    c.map(f32::to_bits),
                    "wide {ty:?} n={n}"
                );
            }
        }
    }

    /// The several-vector product is bitwise the per-vector one, for every block type, odd
    /// and even block counts and every group size (1..=4 plus tails).
    #[test]
    fn dot_q_rows_is_bitwise_dot_q_per_pair() {
        for ty in INT_TYPES {
            for (seed, n) in [(1u32, 32usize), (2, 96), (3, 576)] {
                let n = whole(ty, n);
                // Three rows back to back.
                let w = quantize(ty, &values(3 * n, seed, 0.5));
                for n_tok in 1..=9 {
                    let x = values(n * n_tok, seed + 7 * n_tok as u32, 2.0);
                    let xq = quantize_q8_vec(&x);
                    let mut got = vec![0f32; 3 * n_tok];
                    dot_q_rows(ty, &w, &xq, n_tok, &mut got);
                    for (i, g) in got.iter().enumerate() {
                        let (r, t) = (i / n_tok, i % n_tok);
                        let row = &w[r * w.len() / 3..(r + 1) * w.len() / 3];
                        let want = dot_q(ty, row, &xq[t * n / QK..(t + 1) * n / QK]);
                        let what = format!("{ty:?} n={n} n_tok={n_tok} r={r} t={t}");
                        assert_eq!(g.to_bits(), want.to_bits(), "{what}");
                    }
                }
            }
        }
    }

    /// Every block type: the portable integer dot equals, up to f32 rounding, the f64 dot of
    /// the dequantized row with the dequantized activations, and it is within the 8-bit
    /// activation rounding bound `sum |w| d_x / 2` of the dot with the unrounded `x`.
    #[test]
    fn quantized_dots_match_dequantized_f32() {
        for ty in INT_TYPES {
            for (seed, n) in [(1u32, 32usize), (2, 64), (3, 576), (4, 1536)] {
                let n = whole(ty, n);
                let w = quantize(ty, &values(n, seed, 0.5));
                let x = values(n, seed + 100, 3.0);
                let xq = quantize_q8_vec(&x);
                let mut wd = vec![0f32; n];
                dequantize(ty, &w, &mut wd);
                let xd: Vec<f32> = xq
                    .iter()
                    .flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d))
                    .collect();
                let got = portable::dot_q(ty, &w, &xq);
                let want_q: f64 = wd.iter().zip(&xd).map(|(a, b)| *a as f64 * *b as f64).sum();
                let mag: f64 = wd
                    .iter()
                    .zip(&xd)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                assert!(
                    (got as f64 - want_q).abs() <= 1e-5 * mag + 1e-5,
                    "{ty:?} n={n}: {got} vs {want_q}"
                );
                let want: f32 = wd.iter().zip(&x).map(|(a, b)| a * b).sum();
                let bound: f32 = wd
                    .chunks(QK)
                    .zip(&xq)
                    .map(|(wb, b)| wb.iter().map(|v| v.abs()).sum::<f32>() * b.d * 0.5)
                    .sum();
                assert!(
                    (got - want).abs() <= bound + 1e-4,
                    "{ty:?}: {got} vs {want}"
                );
            }
        }
    }

    /// With AVX2, the value accumulation of attention is bitwise one fused multiply-add per
    /// position and column in position order (what it was when it accumulated in memory, now
    /// held in registers), for head sizes that fill 1, 2, 4, 8 and more vectors and tails.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn weighted_rows_is_one_fma_per_position_in_order() {
        if !simd_available() {
            eprintln!("no AVX2/FMA on this CPU: the portable loop runs, nothing to compare");
            return;
        }
        for hd in [8usize, 16, 24, 64, 72, 100, 130] {
            let (n_pos, stride) = (37, 2 * hd + 3);
            let values = values(n_pos * stride + hd, 41, 1.0);
            let w = values_w(n_pos);
            let mut got = vec![0f32; hd];
            weighted_rows(&w, &values, stride, 5, &mut got);
            let body = hd - hd % 8;
            for (j, g) in got.iter().enumerate() {
                let mut want = 0f32;
                for (t, &a) in w.iter().enumerate() {
                    let v = values[t * stride + 5 + j];
                    want = if j < body {
                        a.mul_add(v, want)
                    } else {
                        want + a * v
                    };
                }
                assert_eq!(g.to_bits(), want.to_bits(), "hd={hd} j={j}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn values_w(n: usize) -> Vec<f32> {
        values(n, 43, 1.0)
            .iter()
            .map(|v| v.abs() / n as f32)
            .collect()
    }

    /// The dispatching (SIMD when available) kernels agree with the portable ones.
    #[test]
    fn simd_matches_portable() {
        if !simd_available() {
            eprintln!(
                "no AVX2/FMA on this CPU: dispatch runs the portable kernels, compared anyway"
            );
        }
        for ty in INT_TYPES {
            for (seed, n) in [(5u32, 32usize), (6, 576), (7, 1536)] {
                let n = whole(ty, n);
                let w = quantize(ty, &values(n, seed, 1.0));
                let xq = quantize_q8_vec(&values(n, seed + 7, 2.0));
                let (a, b) = (dot_q(ty, &w, &xq), portable::dot_q(ty, &w, &xq));
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{ty:?} n={n}: {a} vs {b}"
                );
            }
        }
        // A Q8_0 weight of -128 (legal in the format) and activations of +-127.
        let mut w = vec![0u8; 34];
        w[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        for j in 0..32 {
            w[2 + j] = if j % 2 == 0 { 0x80 } else { 127 };
        }
        let x: Vec<f32> = (0..32)
            .map(|j| if j % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let xq = quantize_q8_vec(&x);
        assert_eq!(dot_q(GgmlType::Q8_0, &w, &xq), portable::dot_q8_0(&w, &xq));
        for n in [1usize, 7, 16, 33, 200] {
            let (a, b) = (values(n, 9, 1.0), values(n, 10, 1.0));
            let (s, p) = (dot_f32(&a, &b), portable::dot_f32(&a, &b));
            assert!((s - p).abs() <= 1e-5 * n as f32, "f32 n={n}: {s} vs {p}");
            let bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
            let r = dot_float_row(GgmlType::F32, &bytes, &b);
            assert!(
                (r - p).abs() <= 1e-5 * n as f32,
                "f32 row n={n}: {r} vs {p}"
            );
        }
        // Float rows past the 512-bit kernels' 64-element steps, with tails.
        for n in [1usize, 63, 64, 65, 200, 768, 2051] {
            let (a, b) = (values(n, 11, 1.0), values(n, 12, 1.0));
            for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
                let bytes = model::quant::quantize(ty, &a);
                let (r, p) = (
                    dot_float_row(ty, &bytes, &b),
                    portable::dot_float_row(ty, &bytes, &b),
                );
                assert!(
                    (r - p).abs() <= 1e-5 * n as f32,
                    "{ty:?} row n={n}: {r} vs {p}"
                );
            }
        }
    }
}
