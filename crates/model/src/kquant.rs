//! ggml's K-quants: 256-element super-blocks with per-sub-block scales (`Q4_K`, `Q5_K`, `Q6_K`),
//! the formats of the "Q4_K_M"-style files people download.
//!
//! We wrote these ourselves, following ggml's reference `dequantize_row_q4_K` / `q5_K` / `q6_K`
//! (ggml-quants.c): no well-kept Rust crate decodes GGUF K-quants. The results are checked
//! bitwise against gguf-py (`crates/model/tests/kquant.rs`).
//!
//! Block layouts (little-endian, `QK_K = 256` elements per block):
//! - `Q4_K` (144 bytes): `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`. Eight sub-blocks
//!   of 32 elements, each with a 6-bit scale `sc` and a 6-bit min `m` packed in `scales`
//!   ([`scale_min_k4`]); value = `d * sc * q - dmin * m`, `q` a 4-bit nibble. Each 32-byte
//!   group of `qs` holds two sub-blocks: low nibbles the first, high nibbles the second.
//! - `Q5_K` (176 bytes): `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`; as
//!   `Q4_K` with a fifth bit per element: element `l` of sub-block `s` takes bit `s` of `qh[l]`.
//! - `Q6_K` (210 bytes): `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`. Sixteen
//!   sub-blocks of 16 elements with signed 8-bit scales; value = `d * scale * (q - 32)`, `q`
//!   6 bits: 4 from `ql`, 2 from `qh`. Each 128-element half uses 64 bytes of `ql` and 32 of `qh`.

use half::f16;

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;

/// Bytes per block of each K-quant.
pub const Q4_K_BYTES: usize = 144;
pub const Q5_K_BYTES: usize = 176;
pub const Q6_K_BYTES: usize = 210;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The 6-bit scale and min of sub-block `j < 8` from the 12 packed bytes of a `Q4_K`/`Q5_K`
/// block (ggml's `get_scale_min_k4`). Bytes 0..4 hold the low 6 bits of scales 0..4 (top two
/// bits: high bits of scales 4..8), bytes 4..8 the same for the mins, bytes 8..12 the low nibbles
/// of scales 4..8 (low half) and mins 4..8 (high half).
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc, m)
    }
}

/// `d * sc` and `dmin * m` of the eight sub-blocks of a `Q4_K`/`Q5_K` block.
/// Shapes: `scales: [12]` -> `[8]` scale and `[8]` offset.
pub fn sub_block_scales(d: f32, dmin: f32, scales: &[u8]) -> ([f32; 8], [f32; 8]) {
    let mut mul = [0f32; 8];
    let mut sub = [0f32; 8];
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        mul[j] = d * sc as f32;
        sub[j] = dmin * m as f32;
    }
    (mul, sub)
}

/// Dequantize whole `Q4_K` blocks: `data: [n_blocks * 144]` -> `out: [n_blocks * 256]`.
pub fn dequantize_q4_k(data: &[u8], out: &mut [f32]) {
    for (y, b) in out
        .chunks_exact_mut(QK_K)
        .zip(data.chunks_exact(Q4_K_BYTES))
    {
        let (mul, sub) = sub_block_scales(f16_at(b, 0), f16_at(b, 2), &b[4..16]);
        let qs = &b[16..144];
        // Sub-blocks 2g and 2g + 1 share the 32 bytes qs[32g..32g + 32].
        for g in 0..4 {
            let q = &qs[32 * g..32 * g + 32];
            let (lo, hi) = (2 * g, 2 * g + 1);
            for l in 0..32 {
                y[64 * g + l] = mul[lo] * (q[l] & 0x0f) as f32 - sub[lo];
                y[64 * g + 32 + l] = mul[hi] * (q[l] >> 4) as f32 - sub[hi];
            }
        }
    }
}

/// Dequantize whole `Q5_K` blocks: `data: [n_blocks * 176]` -> `out: [n_blocks * 256]`.
pub fn dequantize_q5_k(data: &[u8], out: &mut [f32]) {
    for (y, b) in out
        .chunks_exact_mut(QK_K)
        .zip(data.chunks_exact(Q5_K_BYTES))
    {
        let (mul, sub) = sub_block_scales(f16_at(b, 0), f16_at(b, 2), &b[4..16]);
        let qh = &b[16..48];
        let qs = &b[48..176];
        // Fifth bit of element l of sub-block s: bit s of qh[l].
        let q5 = |nibble: u8, l: usize, s: usize| (nibble | (((qh[l] >> s) & 1) << 4)) as f32;
        for g in 0..4 {
            let q = &qs[32 * g..32 * g + 32];
            let (lo, hi) = (2 * g, 2 * g + 1);
            for l in 0..32 {
                y[64 * g + l] = mul[lo] * q5(q[l] & 0x0f, l, lo) - sub[lo];
                y[64 * g + 32 + l] = mul[hi] * q5(q[l] >> 4, l, hi) - sub[hi];
            }
        }
    }
}

/// Dequantize whole `Q6_K` blocks: `data: [n_blocks * 210]` -> `out: [n_blocks * 256]`.
pub fn dequantize_q6_k(data: &[u8], out: &mut [f32]) {
    for (y, b) in out
        .chunks_exact_mut(QK_K)
        .zip(data.chunks_exact(Q6_K_BYTES))
    {
        let d = f16_at(b, 208);
        // Each 128-element half: ql [64], qh [32], scales [8] (one per 16 elements).
        for h in 0..2 {
            let ql = &b[64 * h..64 * h + 64];
            let qh = &b[128 + 32 * h..128 + 32 * h + 32];
            let sc = &b[192 + 8 * h..192 + 8 * h + 8];
            let y = &mut y[128 * h..128 * h + 128];
            for l in 0..32 {
                // Element 32k + l (k < 4): nibble of ql, two bits 2k..2k+2 of qh[l].
                let q = [
                    (ql[l] & 0x0f) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                ];
                for (k, &qk) in q.iter().enumerate() {
                    let scale = sc[l / 16 + 2 * k] as i8 as f32;
                    y[32 * k + l] = d * scale * (qk as i32 - 32) as f32;
                }
            }
        }
    }
}

/// Pack eight 6-bit scales and mins into the 12 bytes [`scale_min_k4`] reads.
fn pack_scale_min_k4(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..4 {
        q[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
    }
    q
}

/// Round `v` to the nearest integer in `0..=max` (`v` finite or not: NaN gives 0).
fn level(v: f32, max: i32) -> u8 {
    (v.round() as i32).clamp(0, max) as u8
}

/// One `Q4_K`/`Q5_K` super-block's levels: `x: [256]` -> (`d`, `dmin`, packed scales `[12]`,
/// levels `[256]` in `0..=nmax`). Each 32-element sub-block gets `scale = (max - min) / nmax`
/// and `min` (clamped to at most 0), both stored as 6-bit multiples of the f16 `d` / `dmin`.
/// Simpler than ggml's `make_qkx2_quants`, which searches for the scale that minimizes the
/// error; the format (and so decoding) is the same.
fn quantize_scale_min_block(x: &[f32], nmax: i32) -> (f16, f16, [u8; 12], [u8; QK_K]) {
    let mut scale = [0f32; 8];
    let mut neg_min = [0f32; 8];
    for (s, sub) in x.chunks_exact(32).enumerate() {
        let min = sub.iter().fold(0f32, |a, &v| a.min(v));
        let max = sub.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        scale[s] = (max - min) / nmax as f32;
        neg_min[s] = -min;
    }
    let d = f16::from_f32(scale.iter().fold(0f32, |a, &v| a.max(v)) / 63.0);
    let dmin = f16::from_f32(neg_min.iter().fold(0f32, |a, &v| a.max(v)) / 63.0);
    let (df, dminf) = (d.to_f32(), dmin.to_f32());
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for s in 0..8 {
        sc[s] = if df > 0.0 {
            level(scale[s] / df, 63)
        } else {
            0
        };
        m[s] = if dminf > 0.0 {
            level(neg_min[s] / dminf, 63)
        } else {
            0
        };
    }
    let mut q = [0u8; QK_K];
    for (s, (sub, qs)) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)).enumerate() {
        let (step, off) = (df * sc[s] as f32, dminf * m[s] as f32);
        for (qv, &v) in qs.iter_mut().zip(sub) {
            *qv = if step > 0.0 {
                level((v + off) / step, nmax)
            } else {
                0
            };
        }
    }
    (d, dmin, pack_scale_min_k4(&sc, &m), q)
}

/// Nibbles of 256 levels in the `Q4_K`/`Q5_K` order: `qs[32g + l]` holds element `64g + l` (low)
/// and `64g + 32 + l` (high).
fn pack_nibbles_k(q: &[u8; QK_K]) -> [u8; 128] {
    let mut qs = [0u8; 128];
    for g in 0..4 {
        for l in 0..32 {
            qs[32 * g + l] = (q[64 * g + l] & 0x0f) | ((q[64 * g + 32 + l] & 0x0f) << 4);
        }
    }
    qs
}

/// Quantize `x: [n * 256]` into `Q4_K` blocks `[n * 144]`: per 32-element sub-block, scale
/// `(max - min) / 15` and min (at most 0) as 6-bit multiples of the f16 `d` / `dmin`. Simpler
/// than ggml's `make_qkx2_quants` search; the format (and so decoding) is the same.
pub fn quantize_q4_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * Q4_K_BYTES);
    for blk in x.chunks_exact(QK_K) {
        let (d, dmin, scales, q) = quantize_scale_min_block(blk, 15);
        out.extend(d.to_le_bytes());
        out.extend(dmin.to_le_bytes());
        out.extend(scales);
        out.extend(pack_nibbles_k(&q));
    }
    out
}

/// Quantize `x: [n * 256]` into `Q5_K` blocks `[n * 176]`: as [`quantize_q4_k`] with 32 levels.
pub fn quantize_q5_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * Q5_K_BYTES);
    for blk in x.chunks_exact(QK_K) {
        let (d, dmin, scales, q) = quantize_scale_min_block(blk, 31);
        let mut qh = [0u8; 32];
        for (i, &v) in q.iter().enumerate() {
            qh[i % 32] |= (v >> 4) << (i / 32);
        }
        out.extend(d.to_le_bytes());
        out.extend(dmin.to_le_bytes());
        out.extend(scales);
        out.extend(qh);
        out.extend(pack_nibbles_k(&q));
    }
    out
}

/// Quantize `x: [n * 256]` into `Q6_K` blocks `[n * 210]`: each 16-element sub-block's value of
/// largest magnitude maps to level -32, its scale is stored as a signed 8-bit multiple of the
/// f16 `d` (largest scale -> -128). Simpler than ggml's `make_qx_quants` search.
pub fn quantize_q6_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * Q6_K_BYTES);
    for blk in x.chunks_exact(QK_K) {
        let mut scale = [0f32; 16];
        for (s, sub) in blk.chunks_exact(16).enumerate() {
            let max = sub
                .iter()
                .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
            scale[s] = max / -32.0;
        }
        let smax = scale
            .iter()
            .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
        let d = f16::from_f32(smax / -128.0);
        let df = d.to_f32();
        let mut sc = [0i8; 16];
        let mut q = [0u8; QK_K]; // levels q + 32 in 0..64
        for (s, sub) in blk.chunks_exact(16).enumerate() {
            sc[s] = if df != 0.0 {
                (scale[s] / df).round().clamp(-128.0, 127.0) as i8
            } else {
                0
            };
            let step = df * sc[s] as f32;
            for (l, &v) in sub.iter().enumerate() {
                q[16 * s + l] = if step != 0.0 {
                    level(v / step + 32.0, 63)
                } else {
                    32
                };
            }
        }
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for h in 0..2 {
            for l in 0..32 {
                let v = |k: usize| q[128 * h + 32 * k + l];
                ql[64 * h + l] = (v(0) & 0x0f) | ((v(2) & 0x0f) << 4);
                ql[64 * h + l + 32] = (v(1) & 0x0f) | ((v(3) & 0x0f) << 4);
                qh[32 * h + l] =
                    (v(0) >> 4) | ((v(1) >> 4) << 2) | ((v(2) >> 4) << 4) | ((v(3) >> 4) << 6);
            }
        }
        out.extend(ql);
        out.extend(qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend(d.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_unpacks_both_halves() {
        // Scales 0..4 = 1..4 (top bits set on byte 0 -> scale 4 gains 0b11 << 4),
        // mins 0..4 = 5..8, byte 8 = scale 4 low nibble 2 | min 4 low nibble 9.
        let mut q = [1u8, 2, 3, 4, 5, 6, 7, 8, 0x92, 0, 0, 0];
        q[0] |= 0b1100_0000;
        q[4] |= 0b0100_0000;
        assert_eq!(scale_min_k4(0, &q), (1, 5));
        assert_eq!(scale_min_k4(3, &q), (4, 8));
        assert_eq!(scale_min_k4(4, &q), (2 | (3 << 4), 9 | (1 << 4)));
        assert_eq!(scale_min_k4(5, &q), (0, 0));
    }

    #[test]
    fn q4_k_known_block() {
        // d = 0.5, dmin = 1, every scale 2, every min 3 (j < 4 only, others 0), nibbles 7 / 9.
        let mut b = Vec::new();
        b.extend(f16::from_f32(0.5).to_le_bytes());
        b.extend(f16::from_f32(1.0).to_le_bytes());
        b.extend([2, 2, 2, 2, 3, 3, 3, 3, 0, 0, 0, 0]);
        b.extend([0x97u8; 128]);
        let mut y = [0f32; QK_K];
        dequantize_q4_k(&b, &mut y);
        assert_eq!(y[0], 0.5 * 2.0 * 7.0 - 3.0); // sub-block 0, low nibble
        assert_eq!(y[32], 0.5 * 2.0 * 9.0 - 3.0); // sub-block 1, high nibble
        assert_eq!(y[255], 0.0); // sub-block 7: scale 0, min 0
    }

    #[test]
    fn packed_scales_round_trip() {
        let sc = [0, 1, 17, 63, 5, 32, 48, 63];
        let m = [63, 2, 40, 0, 33, 16, 1, 62];
        let q = pack_scale_min_k4(&sc, &m);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &q), (sc[j], m[j]), "sub-block {j}");
        }
    }

    /// Our simple quantizers decode within about one step of the input.
    #[test]
    fn quantizers_round_trip_within_step() {
        let x: Vec<f32> = (0..2 * QK_K)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        type Pair = (fn(&[f32]) -> Vec<u8>, fn(&[u8], &mut [f32]), f32, usize);
        let cases: [Pair; 3] = [
            (quantize_q4_k, dequantize_q4_k, 15.0, Q4_K_BYTES),
            (quantize_q5_k, dequantize_q5_k, 31.0, Q5_K_BYTES),
            (quantize_q6_k, dequantize_q6_k, 32.0, Q6_K_BYTES),
        ];
        for (quant, dequant, levels, bytes) in cases {
            let q = quant(&x);
            assert_eq!(q.len(), 2 * bytes);
            let mut y = vec![0f32; x.len()];
            dequant(&q, &mut y);
            // Range 2.5 over `levels` steps, plus 6-bit scale rounding slack.
            let tol = 2.5 / levels * 1.2;
            for (i, (a, b)) in x.iter().zip(&y).enumerate() {
                assert!((a - b).abs() <= tol, "levels {levels}, {i}: {a} vs {b}");
            }
        }
    }
}
