//! fp16 ⇄ f32 helpers (IEEE binary16, round-to-nearest-even; reference §3.7).
//!
//! The simulator keeps fp16 tensors as f32 values that are exactly representable in fp16
//! ("fp16-rounded f32"): converting back and forth is then lossless and arithmetic can run in
//! f32 with one rounding per op, as the ANE does (fp16 storage, wider accumulation).

use std::sync::OnceLock;

use half::f16;

/// fp16 bit pattern of `x`, rounded to nearest even; overflow gives ±inf.
#[inline]
pub fn f32_to_f16_bits(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// All 65,536 fp16 values as f32 (256 KiB, built once): decoding is one load.
fn f16_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|b| f16::from_bits(b).to_f32()).collect())
}

/// f32 value of an fp16 bit pattern (exact).
#[inline]
pub fn f16_bits_to_f32(bits: u16) -> f32 {
    f16_table()[bits as usize]
}

/// Smallest |x| (as f32 bits) that rounds to fp16 infinity: 65520.
const F16_OVERFLOW_BITS: u32 = 0x477F_F000;
/// Smallest normal fp16, 2^-14, as f32 bits.
const F16_MIN_NORMAL_BITS: u32 = 0x3880_0000;

/// Round `x` to the nearest fp16 value (ties to even), returned as f32. Same result as
/// `f16::from_f32(x).to_f32()`, computed on the f32 bits without a table.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    let bits = x.to_bits();
    let sign = bits & 0x8000_0000;
    let mag = bits & 0x7FFF_FFFF;
    let rounded = if mag >= 0x7F80_0000 {
        return x; // inf or NaN
    } else if mag >= F16_OVERFLOW_BITS {
        0x7F80_0000
    } else if mag >= F16_MIN_NORMAL_BITS {
        // keep 10 of 23 mantissa bits: round to nearest, ties to even, carry into exponent
        let r = mag + 0x0FFF + ((mag >> 13) & 1);
        r & !0x1FFF
    } else {
        // fp16 subnormal range: multiples of 2^-24
        let scaled = f32::from_bits(mag) * 16_777_216.0;
        (scaled.round_ties_even() * (1.0 / 16_777_216.0)).to_bits()
    };
    f32::from_bits(sign | rounded)
}

/// Round every element of `xs` to fp16 in place.
pub fn round_f16_slice(xs: &mut [f32]) {
    for x in xs {
        *x = round_f16(*x);
    }
}

/// Decode little-endian fp16 bytes into f32 values.
pub fn f16_le_bytes_to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]])))
        .collect()
}

/// Encode f32 values as little-endian fp16 bytes (round-to-nearest-even).
pub fn f32_to_f16_le_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter()
        .flat_map(|&x| f32_to_f16_bits(x).to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_nearest_even_and_saturates_to_inf() {
        // 1 + 2^-11 is exactly halfway between 1 and 1 + 2^-10: ties to even (1.0).
        assert_eq!(round_f16(1.0 + 2f32.powi(-11)), 1.0);
        // 1 + 3·2^-11 is halfway between 1+2^-10 and 1+2^-9: ties to even (1 + 2^-9).
        assert_eq!(round_f16(1.0 + 3.0 * 2f32.powi(-11)), 1.0 + 2f32.powi(-9));
        assert_eq!(round_f16(65504.0), 65504.0);
        assert_eq!(round_f16(65520.0), f32::INFINITY);
        assert_eq!(round_f16(-1e6), f32::NEG_INFINITY);
        assert!(round_f16(f32::NAN).is_nan());
        // smallest subnormal 2^-24
        assert_eq!(round_f16(2f32.powi(-24)), 2f32.powi(-24));
        assert_eq!(round_f16(2f32.powi(-26)), 0.0);
    }

    #[test]
    fn fast_rounding_matches_the_half_crate() {
        let check = |x: f32| {
            let want = f16::from_f32(x).to_f32();
            let got = round_f16(x);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{x:e} ({:#010x}): {got:e} vs {want:e}",
                x.to_bits()
            );
        };
        // A stride through all f32 bit patterns, plus every pattern around each fp16 value.
        for b in (0..=u32::MAX).step_by(4099) {
            check(f32::from_bits(b));
        }
        for h in 0..=u16::MAX {
            let v = f16::from_bits(h).to_f32();
            if !v.is_finite() {
                continue;
            }
            for d in [-0x1001i64, -0x1000, -0xFFF, -1, 0, 1, 0xFFF, 0x1000, 0x1001] {
                let b = (v.to_bits() as i64 + d).clamp(0, u32::MAX as i64) as u32;
                check(f32::from_bits(b));
            }
        }
        assert_eq!(f16_bits_to_f32(0x3C00), 1.0);
        assert_eq!(f16_bits_to_f32(0xFBFF), -65504.0);
    }

    #[test]
    fn byte_round_trip() {
        let xs = [0.0, -0.0, 1.5, -65504.0, 0.1];
        let back = f16_le_bytes_to_f32(&f32_to_f16_le_bytes(&xs));
        for (a, b) in xs.iter().zip(&back) {
            assert_eq!(round_f16(*a).to_bits(), b.to_bits());
        }
    }
}
