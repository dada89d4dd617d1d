//! ggml tensor types: block layouts and dequantization to f32.
//!
//! Block formats (all little-endian, `QK = 32` elements per block):
//! - `Q4_0`: `d: f16, qs: [u8; 16]`; value = `(q - 8) * d`; low nibbles are elements 0..16,
//!   high nibbles elements 16..32. 18 bytes.
//! - `Q4_1`: `d: f16, m: f16, qs: [u8; 16]`; value = `q * d + m`. 20 bytes.
//! - `Q8_0`: `d: f16, qs: [i8; 32]`; value = `q * d`. 34 bytes.

use half::{bf16, f16};

/// Elements per quantization block for the block formats we support.
pub const QK: usize = 32;

/// The ggml tensor types this crate understands (numeric codes as in the GGUF file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    BF16,
}

impl GgmlType {
    /// Map the on-disk type code; `None` for types we do not support.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
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
            Self::Q8_0 => 8,
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
            Self::Q8_0 => "Q8_0",
            Self::BF16 => "BF16",
        }
    }

    /// Elements per block (1 for plain float types).
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q8_0 => QK,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
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
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(data.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for j in 0..QK {
                    o[j] = (b[2 + j] as i8) as f32 * d;
                }
            }
        }
    }
}

/// Quantize f32 values into `ty` (used to write test files and synthetic models).
/// Rounding follows ggml's reference quantizers.
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
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::BF16,
        ] {
            assert_eq!(GgmlType::from_code(ty.code()), Some(ty));
        }
        assert_eq!(GgmlType::from_code(12), None); // Q4_K: not supported
        assert_eq!(GgmlType::Q4_1.bytes_for(33), None);
        assert_eq!(GgmlType::Q4_1.bytes_for(64), Some(40));
    }
}
