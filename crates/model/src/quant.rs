//! ggml tensor types: block layouts and dequantization to f32.
//!
//! Block formats (all little-endian, `QK = 32` elements per block):
//! - `Q4_0`: `d: f16, qs: [u8; 16]`; value = `(q - 8) * d`; low nibbles are elements 0..16,
//!   high nibbles elements 16..32. 18 bytes.
//! - `Q4_1`: `d: f16, m: f16, qs: [u8; 16]`; value = `q * d + m`. 20 bytes.
//! - `Q5_0`: `d: f16, qh: u32, qs: [u8; 16]`; value = `(q - 16) * d` with `q` = nibble as in
//!   `Q4_0` plus bit `j` of `qh` as fifth bit of element `j`. 22 bytes.
//! - `Q5_1`: `d: f16, m: f16, qh: u32, qs: [u8; 16]`; value = `q * d + m`. 24 bytes.
//! - `Q8_0`: `d: f16, qs: [i8; 32]`; value = `q * d`. 34 bytes.
//!
//! The K-quants (`Q4_K`, `Q5_K`, `Q6_K`: 256-element super-blocks) live in [`crate::kquant`].
//! `Q5_0`/`Q5_1` matter because llama.cpp falls back to them in K-quant files for matrices
//! whose rows are not a multiple of 256 (SmolLM2-135M's 576-wide rows, for instance).

use crate::kquant::{self, QK_K};
use half::{bf16, f16};

/// Elements per quantization block for the block formats we support.
pub const QK: usize = 32;

/// The ggml tensor types this crate understands (numeric codes as in the GGUF file), spelled as
/// ggml spells them.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K,
    Q5_K,
    Q6_K,
    BF16,
}

impl GgmlType {
    /// Every type we read, in ggml code order.
    pub const ALL: [GgmlType; 11] = [
        Self::F32,
        Self::F16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q4_K,
        Self::Q5_K,
        Self::Q6_K,
        Self::BF16,
    ];

    /// Map the on-disk type code; `None` for types we do not support.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    pub fn code(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::BF16 => 30,
        }
    }

    /// A readable name for messages, as ggml spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
            Self::BF16 => "BF16",
        }
    }

    /// Elements per block (1 for plain float types).
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => QK,
            Self::Q4_K | Self::Q5_K | Self::Q6_K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4_K => kquant::Q4_K_BYTES,
            Self::Q5_K => kquant::Q5_K_BYTES,
            Self::Q6_K => kquant::Q6_K_BYTES,
        }
    }

    /// Bytes needed for `n` elements, or `None` when `n` is not a whole number of blocks
    /// (or the size overflows).
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let be = self.block_elems() as u64;
        if !n.is_multiple_of(be) {
            return None;
        }
        (n / be).checked_mul(self.block_bytes() as u64)
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantize `out.len()` elements stored as `ty` in `data` into `out`.
///
/// `data` must hold exactly `ty.bytes_for(out.len())` bytes; callers slice rows out of a
/// validated tensor, so a mismatch is a programming error and panics.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) {
    let n = out.len();
    assert_eq!(
        Some(data.len() as u64),
        ty.bytes_for(n as u64),
        "dequantize: {} bytes do not hold {n} {} elements",
        data.len(),
        ty.name()
    );
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(data.chunks_exact(18)) {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    let q = b[2 + j];
                    o[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                    o[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(data.chunks_exact(20)) {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for j in 0..16 {
                    let q = b[4 + j];
                    o[j] = (q & 0x0f) as f32 * d + m;
                    o[j + 16] = (q >> 4) as f32 * d + m;
                }
            }
        }
        GgmlType::Q5_0 => dequantize_q5_0(data, out),
        GgmlType::Q5_1 => dequantize_q5_1(data, out),
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(data.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for j in 0..QK {
                    o[j] = (b[2 + j] as i8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_K => kquant::dequantize_q4_k(data, out),
        GgmlType::Q5_K => kquant::dequantize_q5_k(data, out),
        GgmlType::Q6_K => kquant::dequantize_q6_k(data, out),
    }
}

/// The 5-bit values of one `Q5_0`/`Q5_1` block: `qh: [4]` (bit `j` = fifth bit of element `j`),
/// `qs: [16]` (nibbles as in `Q4_0`) -> `[32]` in `0..32`.
pub fn q5_values(qh: &[u8], qs: &[u8]) -> [u8; QK] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut q = [0u8; QK];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

/// `Q5_0` blocks `[n * 22]` -> `[n * 32]`: value = `(q - 16) * d`.
fn dequantize_q5_0(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(QK).zip(data.chunks_exact(22)) {
        let d = f16_at(b, 0);
        for (y, q) in o.iter_mut().zip(q5_values(&b[2..6], &b[6..22])) {
            *y = (q as i32 - 16) as f32 * d;
        }
    }
}

/// `Q5_1` blocks `[n * 24]` -> `[n * 32]`: value = `q * d + m`.
fn dequantize_q5_1(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(QK).zip(data.chunks_exact(24)) {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        for (y, q) in o.iter_mut().zip(q5_values(&b[4..8], &b[8..24])) {
            *y = q as f32 * d + m;
        }
    }
}

/// Quantize f32 values into `ty` (used to write test files and synthetic models).
/// Rounding follows ggml's reference quantizers, except for the K-quants: theirs are simpler
/// than ggml's search for the best scales (see [`kquant::quantize_q4_k`]), so a K-quant
/// written here decodes correctly but is not byte-identical to llama.cpp's.
///
/// Panics when `values.len()` is not a whole number of `ty` blocks (a programming error: every
/// caller quantizes rows whose width it checked).
pub fn quantize(ty: GgmlType, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        ty.bytes_for(values.len() as u64)
            .expect("quantize: length must be a whole number of blocks") as usize,
    );
    match ty {
        GgmlType::F32 => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
        GgmlType::F16 => values
            .iter()
            .for_each(|v| out.extend(f16::from_f32(*v).to_le_bytes())),
        GgmlType::BF16 => values
            .iter()
            .for_each(|v| out.extend(bf16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => {
            for blk in values.chunks_exact(QK) {
                let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(blk.iter().map(|v| ((v * id).round() as i8) as u8));
            }
        }
        GgmlType::Q4_0 => {
            for blk in values.chunks_exact(QK) {
                // ggml: the value of largest magnitude maps to -8.
                let max = blk
                    .iter()
                    .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                for j in 0..16 {
                    out.push(q(blk[j]) | (q(blk[j + 16]) << 4));
                }
            }
        }
        GgmlType::Q5_0 => {
            for blk in values.chunks_exact(QK) {
                // ggml: the value of largest magnitude maps to -16.
                let max = blk
                    .iter()
                    .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
                let d = max / -16.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                let q: Vec<u8> = blk
                    .iter()
                    .map(|v| ((v * id + 16.5) as i32).clamp(0, 31) as u8)
                    .collect();
                push_q5(&mut out, &q);
            }
        }
        GgmlType::Q5_1 => {
            for blk in values.chunks_exact(QK) {
                let min = blk.iter().cloned().fold(f32::INFINITY, f32::min);
                let max = blk.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 31.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(f16::from_f32(min).to_le_bytes());
                let q: Vec<u8> = blk
                    .iter()
                    .map(|v| (((v - min) * id + 0.5) as i32).clamp(0, 31) as u8)
                    .collect();
                push_q5(&mut out, &q);
            }
        }
        GgmlType::Q4_K => out.extend(kquant::quantize_q4_k(values)),
        GgmlType::Q5_K => out.extend(kquant::quantize_q5_k(values)),
        GgmlType::Q6_K => out.extend(kquant::quantize_q6_k(values)),
        GgmlType::Q4_1 => {
            for blk in values.chunks_exact(QK) {
                let min = blk.iter().cloned().fold(f32::INFINITY, f32::min);
                let max = blk.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(f16::from_f32(min).to_le_bytes());
                let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                for j in 0..16 {
                    out.push(q(blk[j]) | (q(blk[j + 16]) << 4));
                }
            }
        }
    }
    out
}

/// Append `qh: u32` (fifth bits) and `qs: [u8; 16]` (nibbles) of 32 five-bit values `q`.
fn push_q5(out: &mut Vec<u8>, q: &[u8]) {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |a, (j, &v)| a | (((v >> 4) as u32 & 1) << j));
    out.extend(qh.to_le_bytes());
    out.extend((0..16).map(|j| (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_0_known_block() {
        // d = 0.5; nibble j = j (low) and 15 - j (high).
        let mut b = h(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_0, &b, &mut out);
        assert_eq!(out[0], -4.0); // (0 - 8) * 0.5
        assert_eq!(out[15], 3.5); // (15 - 8) * 0.5
        assert_eq!(out[16], 3.5); // high nibble of byte 0 = 15
        assert_eq!(out[31], -4.0);
    }

    #[test]
    fn q4_1_known_block() {
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|j| j | (3 << 4)));
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_1, &b, &mut out);
        assert_eq!(out[0], -1.0);
        assert_eq!(out[5], 0.25);
        assert_eq!(out[15], 2.75);
        assert_eq!(out[20], -0.25); // 3 * 0.25 - 1
    }

    #[test]
    fn q8_0_known_block() {
        let mut b = h(2.0).to_vec();
        b.extend((0..32i32).map(|j| (j - 16) as i8 as u8));
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q8_0, &b, &mut out);
        assert_eq!(out[0], -32.0);
        assert_eq!(out[16], 0.0);
        assert_eq!(out[31], 30.0);
    }

    #[test]
    fn float_types_known_values() {
        let mut out = [0f32; 2];
        dequantize(GgmlType::F16, &[0x00, 0x3c, 0x00, 0xc0], &mut out);
        assert_eq!(out, [1.0, -2.0]);
        dequantize(GgmlType::BF16, &[0x80, 0x3f, 0x40, 0xc0], &mut out);
        assert_eq!(out, [1.0, -3.0]);
        let b: Vec<u8> = [1.5f32, -0.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        dequantize(GgmlType::F32, &b, &mut out);
        assert_eq!(out, [1.5, -0.25]);
    }

    #[test]
    fn quantize_round_trips_within_step() {
        let vals: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let q = quantize(ty, &vals);
            let mut back = vec![0f32; vals.len()];
            dequantize(ty, &q, &mut back);
            let step = match ty {
                GgmlType::Q8_0 => 1.6 / 127.0,
                _ => 3.2 / 15.0,
            };
            for (a, b) in vals.iter().zip(&back) {
                assert!((a - b).abs() <= step, "{ty:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn codes_round_trip_and_unknown_rejected() {
        for ty in GgmlType::ALL {
            assert_eq!(GgmlType::from_code(ty.code()), Some(ty));
        }
        assert_eq!(GgmlType::from_code(15), None); // Q8_K: not a weight type
        assert_eq!(GgmlType::from_code(16), None); // IQ2_XXS: not supported
        assert_eq!(GgmlType::Q4_1.bytes_for(33), None);
        assert_eq!(GgmlType::Q4_1.bytes_for(64), Some(40));
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q5_K.bytes_for(256), Some(176));
        assert_eq!(GgmlType::Q6_K.bytes_for(256), Some(210));
        assert_eq!(GgmlType::Q6_K.bytes_for(288), None);
    }

    #[test]
    fn q5_known_blocks() {
        // qh: elements 0 and 31 have the fifth bit; nibbles j (low) and 15 - j (high).
        let qs: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
        let qh = (1u32 | (1 << 31)).to_le_bytes();
        let mut b = h(0.5).to_vec();
        b.extend(qh);
        b.extend(&qs);
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q5_0, &b, &mut out);
        assert_eq!(out[0], 0.0); // (16 - 16) * 0.5
        assert_eq!(out[1], -7.5); // (1 - 16) * 0.5
        assert_eq!(out[16], -0.5); // (15 - 16) * 0.5
        assert_eq!(out[31], 0.0); // (0 + 16 - 16)
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.0));
        b.extend(qh);
        b.extend(&qs);
        dequantize(GgmlType::Q5_1, &b, &mut out);
        assert_eq!(out[0], 3.0); // 16 * 0.25 - 1
        assert_eq!(out[2], -0.5);
        assert_eq!(out[31], 3.0);
    }

    #[test]
    fn q5_quantize_round_trips_within_step() {
        let vals: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        for ty in [GgmlType::Q5_0, GgmlType::Q5_1] {
            let q = quantize(ty, &vals);
            let mut back = vec![0f32; vals.len()];
            dequantize(ty, &q, &mut back);
            for (a, b) in vals.iter().zip(&back) {
                assert!((a - b).abs() <= 3.2 / 31.0, "{ty:?}: {a} vs {b}");
            }
        }
    }
}
