//! Dot products of one stored weight row with one activation vector.
//!
//! Quantized rows (`Q4_0`, `Q4_1`, `Q8_0`) are dotted with 8-bit activation blocks
//! ([`BlockQ8`]) using integer arithmetic inside each 32-block:
//!
//! - `Q8_0`: `sum_b d_w d_x sum_i q_w[i] q_x[i]`
//! - `Q4_0`: `sum_b d_w d_x (sum_i n[i] q_x[i] - 8 sum_i q_x[i])`
//! - `Q4_1`: `sum_b (d_w d_x sum_i n[i] q_x[i] + m d_x sum_i q_x[i])`
//!
//! Float rows (`F32`, `F16`, `BF16`) are dotted with f32 activations.
//!
//! Each product has a portable version ([`portable`]) and, on x86_64 with AVX2+FMA detected at
//! run time, a SIMD version ([`avx2`]); the dispatching functions at the top pick one.

use crate::quant::BlockQ8;
use model::quant::QK;
use model::GgmlType;

/// True when the AVX2 kernels can run on this CPU.
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Dot of a quantized row (`ty` in `Q4_0 | Q4_1 | Q8_0`) with quantized activations.
///
/// Panics when `ty` is a float type or `row` does not hold `x.len()` blocks.
#[inline]
pub fn dot_q(ty: GgmlType, row: &[u8], x: &[BlockQ8]) -> f32 {
    assert_eq!(row.len(), x.len() * ty.block_bytes(), "dot_q: row/activation length");
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: AVX2 and FMA were detected above; lengths were checked above.
        unsafe {
            return match ty {
                GgmlType::Q4_0 => avx2::dot_q4_0(row, x),
                GgmlType::Q4_1 => avx2::dot_q4_1(row, x),
                GgmlType::Q8_0 => avx2::dot_q8_0(row, x),
                _ => panic!("dot_q: {} is not a block type", ty.name()),
            };
        }
    }
    portable::dot_q(ty, row, x)
}

/// Dot of a float row (`ty` in `F32 | F16 | BF16`, stored bytes) with f32 activations.
#[inline]
pub fn dot_float_row(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    assert_eq!(row.len(), x.len() * ty.block_bytes(), "dot_float_row: length");
    if ty == GgmlType::F32 {
        #[cfg(target_arch = "x86_64")]
        if simd_available() {
            // SAFETY: AVX2/FMA detected; `row` holds `x.len()` f32 (checked above).
            unsafe {
                return avx2::dot_f32_bytes(row, x);
            }
        }
    }
    portable::dot_float_row(ty, row, x)
}

/// `sum_i a[i] * b[i]` in f32.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length");
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: AVX2/FMA detected; equal lengths checked above.
        unsafe {
            return avx2::dot_f32(a, b);
        }
    }
    portable::dot_f32(a, b)
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
            GgmlType::Q8_0 => dot_q8_0(row, x),
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

    pub fn dot_q4_0(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = 0f32;
        for (b, a) in row.chunks_exact(18).zip(x) {
            let d = f16_at(b, 0);
            let isum = nibble_dot(&b[2..18], &a.qs) - 8 * a.sum;
            acc += d * a.d * isum as f32;
        }
        acc
    }

    pub fn dot_q4_1(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = 0f32;
        for (b, a) in row.chunks_exact(20).zip(x) {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let isum = nibble_dot(&b[4..20], &a.qs);
            acc += d * a.d * isum as f32 + m * a.d * a.sum as f32;
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

/// AVX2 + FMA kernels (x86_64). Callers must check [`simd_available`] and the lengths.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::*;
    use crate::quant::f16_at;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Eight i32 partial sums of `u[i] * s[i]` (u: unsigned bytes <= 255, s: signed bytes).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(u, s); // i16: |u0 s0 + u1 s1| <= 2 * 128 * 128 fits for our ranges
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }

    /// The 32 nibbles of a 4-bit block as bytes in element order (low lane 0..16, high 16..32).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn unpack_nibbles(qs: *const u8) -> __m256i {
        // SAFETY (caller): `qs` points at 16 readable bytes.
        let raw = _mm_loadu_si128(qs as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
    }

    /// # Safety
    /// AVX2/FMA available; `row.len() == 18 * x.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_0(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut bias = 0f32;
        for (i, a) in x.iter().enumerate() {
            let b = row.as_ptr().add(i * 18);
            let d = f16_at(row, i * 18) * a.d;
            let n = unpack_nibbles(b.add(2));
            let q = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
            let p = _mm256_cvtepi32_ps(dot_u8_i8(n, q));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), p, acc);
            bias += d * (8 * a.sum) as f32;
        }
        hsum(acc) - bias
    }

    /// # Safety
    /// AVX2/FMA available; `row.len() == 20 * x.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut offset = 0f32;
        for (i, a) in x.iter().enumerate() {
            let b = row.as_ptr().add(i * 20);
            let d = f16_at(row, i * 20) * a.d;
            let m = f16_at(row, i * 20 + 2);
            let n = unpack_nibbles(b.add(4));
            let q = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
            let p = _mm256_cvtepi32_ps(dot_u8_i8(n, q));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), p, acc);
            offset += m * a.d * a.sum as f32;
        }
        hsum(acc) + offset
    }

    /// # Safety
    /// AVX2/FMA available; `row.len() == 34 * x.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (i, a) in x.iter().enumerate() {
            let b = row.as_ptr().add(i * 34);
            let d = f16_at(row, i * 34) * a.d;
            let w = _mm256_loadu_si256(b.add(2) as *const __m256i);
            let q = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
            // |w| * (q * sign(w)) = w * q, with |w| unsigned as maddubs wants.
            let p = dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(p), acc);
        }
        hsum(acc)
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
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(pr.add(i)), _mm256_loadu_ps(px.add(i)), acc);
            i += 8;
        }
        let mut s = hsum(acc);
        while i < n {
            s += (pr.add(i)).read_unaligned() * x[i];
            i += 1;
        }
        s
    }
}
