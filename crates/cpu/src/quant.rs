//! Activation quantization for the fast path, and fast f16 decoding.
//!
//! Before a quantized matrix-vector product, each activation vector is cut into blocks of
//! `QK = 32` values and every block is rounded to 8 bits with its own scale (llama.cpp's `q8_1`
//! idea): `x[i] ≈ d * q[i]`, `d = max|x| / 127`. The block also keeps `s = d * sum(q)`, so that
//! weight formats with an offset (`Q4_1`: `w = d_w * n + m`) or a bias (`Q4_0`:
//! `w = d_w * (n - 8)`) reduce to one integer dot product per block plus a scalar correction
//! `m * s`. (Using the exact `sum(x)` there instead is worse: the rounding error then scales
//! with `|w - m|` instead of `|w|`; measured on SmolLM2 it triples the logit error.)

use half::f16;
use model::quant::QK;
use std::sync::OnceLock;

/// 32 activations rounded to 8 bits: `x[i] ≈ d * qs[i]`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(32))]
pub struct BlockQ8 {
    pub qs: [i8; QK],
    /// Scale `max|x| / 127` (kept in f32: cheaper and more precise than ggml's f16).
    pub d: f32,
    /// `d * sum(qs)`, for the offset/bias term of `Q4_1` / `Q4_0` weights.
    pub s: f32,
    /// `sum(qs)` itself (the packed `Q8_0` kernel's exact correction, see [`crate::packed`]).
    pub sum: i32,
}

impl Default for BlockQ8 {
    fn default() -> Self {
        Self {
            qs: [0; QK],
            d: 0.0,
            s: 0.0,
            sum: 0,
        }
    }
}

/// Quantize `x` (`len % 32 == 0`) into `out` (`x.len() / 32` blocks).
pub fn quantize_q8(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in blk.qs.iter_mut().zip(xs) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        blk.d = d;
        blk.s = d * sum as f32;
        blk.sum = sum;
    }
}

/// A fresh block buffer for `x` and its quantization.
pub fn quantize_q8_vec(x: &[f32]) -> Vec<BlockQ8> {
    let mut out = vec![BlockQ8::default(); x.len() / QK];
    quantize_q8(x, &mut out);
    out
}

fn f16_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|b| f16::from_bits(b).to_f32()).collect())
}

/// The f16 stored little-endian at `b[i..i + 2]`, via a 64K-entry table (ggml does the same).
#[inline]
pub fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_table()[u16::from_le_bytes([b[i], b[i + 1]]) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_rounding_is_within_half_a_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 29 % 17) as f32 - 8.3) * 0.37)
            .collect();
        let q = quantize_q8_vec(&x);
        for (b, xs) in q.iter().zip(x.chunks_exact(QK)) {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            assert!((b.d - amax / 127.0).abs() < 1e-7);
            let sum_q: i32 = b.qs.iter().map(|&v| v as i32).sum();
            assert_eq!(b.s, b.d * sum_q as f32);
            assert_eq!(b.sum, sum_q);
            for (&qv, &v) in b.qs.iter().zip(xs) {
                assert!((qv as f32 * b.d - v).abs() <= 0.5 * b.d + 1e-6);
            }
            // The largest magnitude maps to +-127.
            assert_eq!(b.qs.iter().map(|v| v.unsigned_abs()).max(), Some(127));
        }
    }

    #[test]
    fn zero_block_quantizes_to_zero() {
        let q = quantize_q8_vec(&[0.0; 32]);
        assert_eq!(q[0].d, 0.0);
        assert_eq!(q[0].qs, [0; 32]);
    }

    #[test]
    fn f16_table_matches_half() {
        for v in [0.0f32, 1.0, -2.5, 65504.0, 6.1e-5, 1e-7] {
            let b = f16::from_f32(v).to_le_bytes();
            assert_eq!(f16_at(&b, 0), f16::from_f32(v).to_f32());
        }
    }
}
