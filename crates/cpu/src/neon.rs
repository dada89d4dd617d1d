//! NEON kernels for aarch64 (Apple silicon and other ARM CPUs): the block-quantized products
//! (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`, and the K-quants `Q4_K`, `Q5_K`, `Q6_K`)
//! of [`crate::dot`] with the integer part vectorized.
//!
//! The integer sum of a 32-element block (`sum_i n[i] q[i]`) is computed with widening byte
//! multiplies (`smull`) and pairwise adds, which every aarch64 CPU has; the per-block float
//! arithmetic is exactly the portable kernels' (same expressions, same order), so these
//! kernels give **bitwise** the portable results, and a batched pass gives bitwise what one
//! token alone gets. (Where the `sdot` dot-product instruction is present, the CPU backend
//! repacks `Q4_0`/`Q4_1`/`Q8_0` weights and uses it from inline assembly: [`crate::packed`].)
//!
//! The crate's tests of these kernels run under `qemu-aarch64 -cpu max` in CI (see
//! `scripts/test`).

use crate::quant::{f16_at, BlockQ8};
use model::quant::QK;
use std::arch::aarch64::*;

/// `sum_i w[i] * q[i]` over one 32-element block, `w` given as its elements 0..16 and 16..32
/// (signed bytes; |w q| <= 128 * 127 fits the 16-bit products).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn block_isum(w_lo: int8x16_t, w_hi: int8x16_t, q: &[i8; QK]) -> i32 {
    // SAFETY (caller): NEON available; `q` is 32 readable bytes.
    let (q_lo, q_hi) = (vld1q_s8(q.as_ptr()), vld1q_s8(q.as_ptr().add(16)));
    let p0 = vpaddlq_s16(vmull_s8(vget_low_s8(w_lo), vget_low_s8(q_lo)));
    let p1 = vpaddlq_s16(vmull_high_s8(w_lo, q_lo));
    let p2 = vpaddlq_s16(vmull_s8(vget_low_s8(w_hi), vget_low_s8(q_hi)));
    let p3 = vpaddlq_s16(vmull_high_s8(w_hi, q_hi));
    vaddvq_s32(vaddq_s32(vaddq_s32(p0, p1), vaddq_s32(p2, p3)))
}

/// The 32 nibbles of a 4-bit block: elements 0..16 (low nibbles) and 16..32 (high nibbles).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles(qs: &[u8]) -> (int8x16_t, int8x16_t) {
    // SAFETY (caller): `qs` holds at least 16 bytes.
    let raw = vld1q_u8(qs.as_ptr());
    let lo = vandq_u8(raw, vdupq_n_u8(0x0f));
    let hi = vshrq_n_u8(raw, 4);
    (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
}

/// `out[t] = dot_q4_0(row, xs[t])` for `N` activation vectors; each weight block is unpacked
/// once for all of them.
///
/// # Safety
/// NEON available; `row.len() == 18 * xs[t].len()` for every `t`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_q4_0_n<const N: usize>(row: &[u8], xs: &[&[BlockQ8]; N], out: &mut [f32]) {
    let mut acc = [0f32; N];
    for (i, b) in row.chunks_exact(18).enumerate() {
        let d = f16_at(b, 0);
        let (lo, hi) = nibbles(&b[2..18]);
        for t in 0..N {
            let a = &xs[t][i];
            let isum = block_isum(lo, hi, &a.qs);
            acc[t] += d * a.d * isum as f32 - 8.0 * d * a.s;
        }
    }
    out[..N].copy_from_slice(&acc);
}

/// `out[t] = dot_q4_1(row, xs[t])` for `N` activation vectors (see [`dot_q4_0_n`]).
///
/// # Safety
/// NEON available; `row.len() == 20 * xs[t].len()` for every `t`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_q4_1_n<const N: usize>(row: &[u8], xs: &[&[BlockQ8]; N], out: &mut [f32]) {
    let mut acc = [0f32; N];
    for (i, b) in row.chunks_exact(20).enumerate() {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        let (lo, hi) = nibbles(&b[4..20]);
        for t in 0..N {
            let a = &xs[t][i];
            let isum = block_isum(lo, hi, &a.qs);
            acc[t] += d * a.d * isum as f32 + m * a.s;
        }
    }
    out[..N].copy_from_slice(&acc);
}

/// The 32 five-bit values of a Q5 block as elements 0..16 and 16..32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q5(qh: &[u8], qs: &[u8]) -> (int8x16_t, int8x16_t) {
    let v = model::quant::q5_values(qh, qs);
    // SAFETY (caller): NEON available; `v` is 32 readable bytes.
    let p = v.as_ptr() as *const i8;
    (vld1q_s8(p), vld1q_s8(p.add(16)))
}

/// `out[t] = dot_q5_0(row, xs[t])` for `N` activation vectors (see [`dot_q4_0_n`]).
///
/// # Safety
/// NEON available; `row.len() == 22 * xs[t].len()` for every `t`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_q5_0_n<const N: usize>(row: &[u8], xs: &[&[BlockQ8]; N], out: &mut [f32]) {
    let mut acc = [0f32; N];
    for (i, b) in row.chunks_exact(22).enumerate() {
        let d = f16_at(b, 0);
        let (lo, hi) = q5(&b[2..6], &b[6..22]);
        for t in 0..N {
            let a = &xs[t][i];
            let isum = block_isum(lo, hi, &a.qs);
            acc[t] += d * a.d * isum as f32 - 16.0 * d * a.s;
        }
    }
    out[..N].copy_from_slice(&acc);
}

/// `out[t] = dot_q5_1(row, xs[t])` for `N` activation vectors (see [`dot_q4_0_n`]).
///
/// # Safety
/// NEON available; `row.len() == 24 * xs[t].len()` for every `t`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_q5_1_n<const N: usize>(row: &[u8], xs: &[&[BlockQ8]; N], out: &mut [f32]) {
    let mut acc = [0f32; N];
    for (i, b) in row.chunks_exact(24).enumerate() {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        let (lo, hi) = q5(&b[4..8], &b[8..24]);
        for t in 0..N {
            let a = &xs[t][i];
            let isum = block_isum(lo, hi, &a.qs);
            acc[t] += d * a.d * isum as f32 + m * a.s;
        }
    }
    out[..N].copy_from_slice(&acc);
}

/// `out[t] = dot_q8_0(row, xs[t])` for `N` activation vectors (see [`dot_q4_0_n`]).
///
/// # Safety
/// NEON available; `row.len() == 34 * xs[t].len()` for every `t`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_q8_0_n<const N: usize>(row: &[u8], xs: &[&[BlockQ8]; N], out: &mut [f32]) {
    let mut acc = [0f32; N];
    for (i, b) in row.chunks_exact(34).enumerate() {
        let d = f16_at(b, 0);
        let w = b[2..34].as_ptr() as *const i8;
        let (lo, hi) = (vld1q_s8(w), vld1q_s8(w.add(16)));
        for t in 0..N {
            let a = &xs[t][i];
            let isum = block_isum(lo, hi, &a.qs);
            acc[t] += d * a.d * isum as f32;
        }
    }
    out[..N].copy_from_slice(&acc);
}

/// `sum_i w[i] * q[i]` over 16 elements (signed bytes; products fit 16 bits).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn half_isum(w: int8x16_t, q: *const i8) -> i32 {
    // SAFETY (caller): NEON available; `q` is 16 readable bytes.
    let q = vld1q_s8(q);
    let p0 = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(q)));
    let p1 = vpaddlq_s16(vmull_high_s8(w, q));
    vaddvq_s32(vaddq_s32(p0, p1))
}

/// `out[t] = dot_q4_k(row, xs[t])` for `N` activation vectors (see [`dot_q4_0_n`]).
///
/// # Safety
/// NEON available; `row.len() == 144 * xs[t].len() / 8` for every `t`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_q4_k_n<const N: usize>(row: &[u8], xs: &[&[BlockQ8]; N], out: &mut [f32]) {
    let mut acc = [0f32; N];
    for (sb, b) in row.chunks_exact(model::kquant::Q4_K_BYTES).enumerate() {
        let (muls, subs) = crate::dot::portable::k_scales(b);
        for j in 0..8 {
            let (mul, sub) = (muls[j], subs[j]);
            let q = &b[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
            let (raw_lo, raw_hi) = (vld1q_u8(q.as_ptr()), vld1q_u8(q.as_ptr().add(16)));
            let (lo, hi) = match j % 2 {
                0 => (
                    vandq_u8(raw_lo, vdupq_n_u8(0x0f)),
                    vandq_u8(raw_hi, vdupq_n_u8(0x0f)),
                ),
                _ => (vshrq_n_u8(raw_lo, 4), vshrq_n_u8(raw_hi, 4)),
            };
            let (lo, hi) = (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi));
            for t in 0..N {
                let a = &xs[t][8 * sb + j];
                let isum = block_isum(lo, hi, &a.qs);
                acc[t] += mul * a.d * isum as f32 - sub * a.s;
            }
        }
    }
    out[..N].copy_from_slice(&acc);
}

/// `out[t] = dot_q6_k(row, xs[t])` for `N` activation vectors (see [`dot_q4_0_n`]).
///
/// # Safety
/// NEON available; `row.len() == 210 * xs[t].len() / 8` for every `t`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_q6_k_n<const N: usize>(row: &[u8], xs: &[&[BlockQ8]; N], out: &mut [f32]) {
    let mut acc = [0f32; N];
    for (sb, b) in row.chunks_exact(model::kquant::Q6_K_BYTES).enumerate() {
        let d = f16_at(b, 208);
        for j in 0..8 {
            let (v, sa, s_b) = crate::dot::portable::q6_k_values(b, j);
            let (lo, hi) = (vld1q_s8(v.as_ptr()), vld1q_s8(v.as_ptr().add(16)));
            for t in 0..N {
                let a = &xs[t][8 * sb + j];
                let q = a.qs.as_ptr();
                let (ia, ib) = (half_isum(lo, q), half_isum(hi, q.add(16)));
                acc[t] += d * a.d * (sa * ia + s_b * ib) as f32;
            }
        }
    }
    out[..N].copy_from_slice(&acc);
}

/// `out[t] = dot_q5_k(row, xs[t])` for `N` activation vectors (see [`dot_q4_0_n`]).
///
/// # Safety
/// NEON available; `row.len() == 176 * xs[t].len() / 8` for every `t`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_q5_k_n<const N: usize>(row: &[u8], xs: &[&[BlockQ8]; N], out: &mut [f32]) {
    use crate::dot::portable::{k_scales, q5_k_values};
    let mut acc = [0f32; N];
    for (sb, b) in row.chunks_exact(model::kquant::Q5_K_BYTES).enumerate() {
        let (muls, subs) = k_scales(b);
        for j in 0..8 {
            let (mul, sub) = (muls[j], subs[j]);
            let v = q5_k_values(b, j);
            let p = v.as_ptr() as *const i8;
            let (lo, hi) = (vld1q_s8(p), vld1q_s8(p.add(16)));
            for t in 0..N {
                let a = &xs[t][8 * sb + j];
                let isum = block_isum(lo, hi, &a.qs);
                acc[t] += mul * a.d * isum as f32 - sub * a.s;
            }
        }
    }
    out[..N].copy_from_slice(&acc);
}
