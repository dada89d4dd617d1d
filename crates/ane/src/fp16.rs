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
        // fp16 subnormal range: multiples of 2^-24. Adding 0.5 (whose f32 ulp is 2^-24)
        // rounds to that grid with the FPU's ties-to-even; subtracting it again is exact.
        ((f32::from_bits(mag) + 0.5) - 0.5).to_bits()
    };
    f32::from_bits(sign | rounded)
}

/// Round every element of `xs` to fp16 in place (hardware conversion where available:
/// `vcvtps2ph` with round-to-nearest-even gives exactly [`round_f16`]).
pub fn round_f16_slice(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is available (checked just above).
            unsafe { round_slice_avx512(xs) };
            return;
        }
        if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
        {
            // SAFETY: F16C and AVX are available (checked just above).
            unsafe { round_slice_f16c(xs) };
            return;
        }
    }
    for x in xs {
        *x = round_f16(*x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn round_slice_avx512(xs: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = xs.chunks_exact_mut(16);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly 16 f32 values; unaligned loads/stores are used.
        unsafe {
            let v = _mm512_loadu_ps(c.as_ptr());
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            _mm512_storeu_ps(c.as_mut_ptr(), _mm512_cvtph_ps(h));
        }
    }
    for x in chunks.into_remainder() {
        *x = round_f16(*x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn round_slice_f16c(xs: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = xs.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly 8 f32 values; unaligned loads/stores are used.
        unsafe {
            let v = _mm256_loadu_ps(c.as_ptr());
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    for x in chunks.into_remainder() {
        *x = round_f16(*x);
    }
}

/// Decode little-endian fp16 bytes into `out` (one value per 2 bytes; lengths must agree).
pub fn f16_le_decode_into(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(bytes.len(), 2 * out.len(), "fp16 decode sizes");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
        {
            // SAFETY: F16C and AVX are available (checked just above).
            unsafe { decode_f16c(bytes, out) };
            return;
        }
    }
    for (v, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *v = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn decode_f16c(bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut o = out.chunks_exact_mut(8);
    let mut b = bytes.chunks_exact(16);
    for (oc, bc) in (&mut o).zip(&mut b) {
        // SAFETY: `bc` holds 16 bytes (8 fp16 values, x86 is little-endian) and `oc` 8 f32
        // values; unaligned loads/stores are used.
        unsafe {
            let h = _mm_loadu_si128(bc.as_ptr() as *const __m128i);
            _mm256_storeu_ps(oc.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    for (v, c) in o
        .into_remainder()
        .iter_mut()
        .zip(b.remainder().chunks_exact(2))
    {
        *v = f16_bits_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

/// Encode `xs` as little-endian fp16 (round-to-nearest-even) into `out` (2 bytes each).
pub fn f32_to_f16_le_encode_into(xs: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), 2 * xs.len(), "fp16 encode sizes");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
        {
            // SAFETY: F16C and AVX are available (checked just above).
            unsafe { encode_f16c(xs, out) };
            return;
        }
    }
    for (v, d) in xs.iter().zip(out.chunks_exact_mut(2)) {
        d.copy_from_slice(&f32_to_f16_bits(*v).to_le_bytes());
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn encode_f16c(xs: &[f32], out: &mut [u8]) {
    use std::arch::x86_64::*;
    let mut x = xs.chunks_exact(8);
    let mut o = out.chunks_exact_mut(16);
    for (xc, oc) in (&mut x).zip(&mut o) {
        // SAFETY: `xc` holds 8 f32 values and `oc` 16 bytes (8 little-endian fp16 values);
        // unaligned loads/stores are used.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(xc.as_ptr()));
            _mm_storeu_si128(oc.as_mut_ptr() as *mut __m128i, h);
        }
    }
    for (v, d) in x
        .remainder()
        .iter()
        .zip(o.into_remainder().chunks_exact_mut(2))
    {
        d.copy_from_slice(&f32_to_f16_bits(*v).to_le_bytes());
    }
}

/// Decode little-endian fp16 bytes into f32 values.
pub fn f16_le_bytes_to_f32(bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; bytes.len() / 2];
    f16_le_decode_into(&bytes[..out.len() * 2], &mut out);
    out
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
    fn slice_rounding_and_decoding_match_the_scalar_path() {
        let mut xs: Vec<f32> = (0..5000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .collect();
        xs.extend([
            0.0,
            -0.0,
            65520.0,
            1e-8,
            -3e-6,
            f32::INFINITY,
            1.0 + 2f32.powi(-11),
        ]);
        let want: Vec<f32> = xs.iter().map(|&x| round_f16(x)).collect();
        let mut got = xs.clone();
        round_f16_slice(&mut got);
        for ((g, w), x) in got.iter().zip(&want).zip(&xs) {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{x:e}: {g:e} vs {w:e}"
            );
        }
        let bytes = f32_to_f16_le_bytes(&want);
        let mut fast = vec![0u8; bytes.len()];
        f32_to_f16_le_encode_into(&xs, &mut fast);
        for (i, (a, b)) in fast.chunks(2).zip(bytes.chunks(2)).enumerate() {
            let (a, b) = (
                u16::from_le_bytes([a[0], a[1]]),
                u16::from_le_bytes([b[0], b[1]]),
            );
            let nan = |h: u16| h & 0x7C00 == 0x7C00 && h & 0x03FF != 0;
            assert!(
                a == b || (nan(a) && nan(b)),
                "{:e}: {a:#x} vs {b:#x}",
                xs[i]
            );
        }
        let back = f16_le_bytes_to_f32(&bytes);
        for (b, w) in back.iter().zip(&want) {
            assert!(b.to_bits() == w.to_bits() || (b.is_nan() && w.is_nan()));
        }
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
