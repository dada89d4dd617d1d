//! Host-side surface I/O on raw bytes (reference §3.2, §3.5).
//!
//! A surface is a flat byte buffer. Viewed as fp16 `[C, S]` (a `[1, C, 1, S]` tensor),
//! element (c, s) lives at element index `c·S + s`, i.e. byte `2·(c·S + s)`, little-endian.
//! `C` is implied by the surface length: `C = len / (2·S)`. Every function checks bounds and
//! returns [`DeviceError::OutOfBounds`] instead of panicking.
//!
//! This is the one surface codec of the workspace: [`encode_into`], [`decode_into`] and
//! [`element`] convert between f32 values and surface bytes of any MIL element type (fp16 by
//! hardware conversion where present, round-to-nearest-even), and every host and device uses
//! them.

use std::ops::Range;

use crate::device::DeviceError;
use mil::DType;

use crate::fp16::{
    f16_bits_to_f32, f16_le_decode_into, f32_to_f16_bits, f32_to_f16_le_encode_into,
};

const FP16_BYTES: usize = 2;

fn oob(msg: String) -> DeviceError {
    DeviceError::OutOfBounds(msg)
}

/// Channels of a surface of `len` bytes viewed as fp16 `[C, spatial]`.
pub fn fp16_channels(len: usize, spatial: usize) -> Result<usize, DeviceError> {
    if spatial == 0 {
        return Err(oob("spatial size 0".into()));
    }
    Ok(len / (FP16_BYTES * spatial))
}

/// Byte range of channels `ch .. ch + n` of a surface of `len` bytes viewed as fp16 `[C, spatial]`.
pub fn channel_range(
    len: usize,
    spatial: usize,
    ch: usize,
    n: usize,
) -> Result<Range<usize>, DeviceError> {
    let total = fp16_channels(len, spatial)?;
    let end = ch.checked_add(n).filter(|&e| e <= total).ok_or_else(|| {
        oob(format!(
            "channels {ch}..{ch}+{n} outside a [{total}, {spatial}] fp16 surface"
        ))
    })?;
    Ok(ch * spatial * FP16_BYTES..end * spatial * FP16_BYTES)
}

fn region_channels(n_values: usize, spatial: usize) -> Result<usize, DeviceError> {
    if n_values.checked_rem(spatial) != Some(0) {
        return Err(oob(format!(
            "{n_values} values is not a whole number of channels of {spatial} lanes"
        )));
    }
    Ok(n_values / spatial)
}

/// Write `data` (`[n, spatial]` f32) as fp16 (round-to-nearest-even) into channels `ch ..`.
pub fn write_channels_f32(
    bytes: &mut [u8],
    spatial: usize,
    ch: usize,
    data: &[f32],
) -> Result<(), DeviceError> {
    let n = region_channels(data.len(), spatial)?;
    let r = channel_range(bytes.len(), spatial, ch, n)?;
    for (dst, &v) in bytes[r].chunks_exact_mut(FP16_BYTES).zip(data) {
        dst.copy_from_slice(&f32_to_f16_bits(v).to_le_bytes());
    }
    Ok(())
}

/// Read channels `ch .. ch + out.len()/spatial` (fp16) into `out` as f32.
pub fn read_channels_f32(
    bytes: &[u8],
    spatial: usize,
    ch: usize,
    out: &mut [f32],
) -> Result<(), DeviceError> {
    let n = region_channels(out.len(), spatial)?;
    let r = channel_range(bytes.len(), spatial, ch, n)?;
    for (v, src) in out.iter_mut().zip(bytes[r].chunks_exact(FP16_BYTES)) {
        *v = f16_bits_to_f32(u16::from_le_bytes([src[0], src[1]]));
    }
    Ok(())
}

fn lane_check(
    len: usize,
    spatial: usize,
    lane: usize,
    ch: usize,
    n: usize,
) -> Result<(), DeviceError> {
    if lane >= spatial {
        return Err(oob(format!("lane {lane} outside {spatial} lanes")));
    }
    channel_range(len, spatial, ch, n).map(|_| ())
}

/// Write `data[i]` to channel `ch + i` at spatial index `lane`.
pub fn write_lane_f32(
    bytes: &mut [u8],
    spatial: usize,
    lane: usize,
    ch: usize,
    data: &[f32],
) -> Result<(), DeviceError> {
    lane_check(bytes.len(), spatial, lane, ch, data.len())?;
    for (i, &v) in data.iter().enumerate() {
        let at = ((ch + i) * spatial + lane) * FP16_BYTES;
        bytes[at..at + FP16_BYTES].copy_from_slice(&f32_to_f16_bits(v).to_le_bytes());
    }
    Ok(())
}

/// Read channel `ch + i` at spatial index `lane` into `out[i]`.
pub fn read_lane_f32(
    bytes: &[u8],
    spatial: usize,
    lane: usize,
    ch: usize,
    out: &mut [f32],
) -> Result<(), DeviceError> {
    lane_check(bytes.len(), spatial, lane, ch, out.len())?;
    for (i, v) in out.iter_mut().enumerate() {
        let at = ((ch + i) * spatial + lane) * FP16_BYTES;
        *v = f16_bits_to_f32(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    }
    Ok(())
}

/// Argmax over channels `0 .. channels` at `lane`; strict `>` so the lowest index wins ties;
/// NaN never wins (an all-NaN lane returns 0).
pub fn argmax_lane(
    bytes: &[u8],
    spatial: usize,
    lane: usize,
    channels: usize,
) -> Result<usize, DeviceError> {
    if channels == 0 {
        return Err(oob("argmax over 0 channels".into()));
    }
    lane_check(bytes.len(), spatial, lane, 0, channels)?;
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    let mut have = false;
    for c in 0..channels {
        let at = (c * spatial + lane) * FP16_BYTES;
        let v = f16_bits_to_f32(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
        if v.is_nan() {
            continue;
        }
        // fp16 → f32 is exact, so comparing the f32 images is comparing the fp16 values.
        if !have || v > best_v {
            best = c;
            best_v = v;
            have = true;
        }
    }
    Ok(best)
}

/// Write raw little-endian f32 values starting at element `elem_offset`.
pub fn write_f32_raw(
    bytes: &mut [u8],
    elem_offset: usize,
    data: &[f32],
) -> Result<(), DeviceError> {
    let r = f32_range(bytes.len(), elem_offset, data.len())?;
    for (dst, v) in bytes[r].chunks_exact_mut(4).zip(data) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

/// Read raw little-endian f32 values starting at element `elem_offset`.
pub fn read_f32_raw(bytes: &[u8], elem_offset: usize, out: &mut [f32]) -> Result<(), DeviceError> {
    let r = f32_range(bytes.len(), elem_offset, out.len())?;
    for (v, src) in out.iter_mut().zip(bytes[r].chunks_exact(4)) {
        *v = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
    }
    Ok(())
}

fn f32_range(len: usize, off: usize, n: usize) -> Result<Range<usize>, DeviceError> {
    let end = off
        .checked_add(n)
        .and_then(|e| e.checked_mul(4))
        .filter(|&e| e <= len)
        .ok_or_else(|| {
            oob(format!(
                "f32 elements {off}..{off}+{n} outside a {len}-byte surface"
            ))
        })?;
    Ok(off * 4..end)
}

fn codec_width(dtype: DType) -> Result<usize, DeviceError> {
    dtype
        .size_bytes()
        .ok_or_else(|| oob(format!("{dtype} values cannot live in a surface")))
}

fn codec_bytes(dtype: DType, n: usize, have: usize) -> Result<usize, DeviceError> {
    let need = n
        .checked_mul(codec_width(dtype)?)
        .filter(|&b| b <= have)
        .ok_or_else(|| oob(format!("{n} {dtype} values do not fit {have} bytes")))?;
    Ok(need)
}

/// Encode `values` as `dtype` (little-endian; fp16 rounds to nearest even, integers truncate
/// toward zero with saturation, bool is `v != 0`) into the start of `out`.
pub fn encode_into(dtype: DType, values: &[f32], out: &mut [u8]) -> Result<(), DeviceError> {
    let n = codec_bytes(dtype, values.len(), out.len())?;
    let out = &mut out[..n];
    match dtype {
        DType::Fp16 => f32_to_f16_le_encode_into(values, out),
        DType::Fp32 => {
            for (d, v) in out.chunks_exact_mut(4).zip(values) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        _ => {
            let w = codec_width(dtype)?;
            for (d, &v) in out.chunks_exact_mut(w).zip(values) {
                match dtype {
                    DType::Fp64 => d.copy_from_slice(&f64::from(v).to_le_bytes()),
                    DType::Int32 => d.copy_from_slice(&(v as i32).to_le_bytes()),
                    DType::Uint32 => d.copy_from_slice(&(v as u32).to_le_bytes()),
                    DType::Int16 => d.copy_from_slice(&(v as i16).to_le_bytes()),
                    DType::Uint16 => d.copy_from_slice(&(v as u16).to_le_bytes()),
                    DType::Int8 => d[0] = v as i8 as u8,
                    DType::Uint8 => d[0] = v as u8,
                    DType::Bool => d[0] = u8::from(v != 0.0),
                    DType::Int64 | DType::Uint64 => d.copy_from_slice(&(v as i64).to_le_bytes()),
                    DType::Fp16 | DType::Fp32 | DType::String => {}
                }
            }
        }
    }
    Ok(())
}

/// `values` as surface bytes of `dtype` (see [`encode_into`]).
pub fn encode(dtype: DType, values: &[f32]) -> Result<Vec<u8>, DeviceError> {
    let mut out = vec![0u8; values.len() * codec_width(dtype)?];
    encode_into(dtype, values, &mut out)?;
    Ok(out)
}

/// Decode the first `out.len()` elements of `dtype` from `bytes` into f32.
pub fn decode_into(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<(), DeviceError> {
    let n = codec_bytes(dtype, out.len(), bytes.len())?;
    let bytes = &bytes[..n];
    if dtype == DType::Fp16 {
        f16_le_decode_into(bytes, out);
        return Ok(());
    }
    let w = codec_width(dtype)?;
    for (i, v) in out.iter_mut().enumerate() {
        *v = element_at(dtype, &bytes[i * w..(i + 1) * w]);
    }
    Ok(())
}

/// Element `i` of a surface of `dtype` as f32, or `None` outside the surface.
pub fn element(dtype: DType, bytes: &[u8], i: usize) -> Option<f32> {
    let w = dtype.size_bytes()?;
    let b = bytes.get(i.checked_mul(w)?..(i + 1).checked_mul(w)?)?;
    Some(element_at(dtype, b))
}

/// One element from exactly its `size_bytes()` bytes.
fn element_at(dtype: DType, b: &[u8]) -> f32 {
    let a2 = || [b[0], b[1]];
    let a4 = || [b[0], b[1], b[2], b[3]];
    let a8 = || [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    match dtype {
        DType::Fp16 => f16_bits_to_f32(u16::from_le_bytes(a2())),
        DType::Fp32 => f32::from_le_bytes(a4()),
        DType::Fp64 => f64::from_le_bytes(a8()) as f32,
        DType::Int32 => i32::from_le_bytes(a4()) as f32,
        DType::Uint32 => u32::from_le_bytes(a4()) as f32,
        DType::Int16 => f32::from(i16::from_le_bytes(a2())),
        DType::Uint16 => f32::from(u16::from_le_bytes(a2())),
        DType::Int8 => f32::from(b[0] as i8),
        DType::Uint8 | DType::Bool => f32::from(b[0]),
        DType::Int64 | DType::Uint64 => i64::from_le_bytes(a8()) as f32,
        DType::String => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_major_layout_and_rounding() {
        // [C=3, S=4] surface; write channels 1..3.
        let mut buf = vec![0u8; 3 * 4 * 2];
        let data: Vec<f32> = (0..8).map(|i| i as f32 + 0.1).collect();
        write_channels_f32(&mut buf, 4, 1, &data).unwrap();
        // element (c=2, s=1) = data[(2-1)*4 + 1] at byte 2*(2*4+1)
        let at = 2 * (2 * 4 + 1);
        let bits = u16::from_le_bytes([buf[at], buf[at + 1]]);
        assert_eq!(bits, half::f16::from_f32(5.1).to_bits());
        // channel 0 untouched
        assert!(buf[..8].iter().all(|&b| b == 0));
        let mut back = vec![0.0; 8];
        read_channels_f32(&buf, 4, 1, &mut back).unwrap();
        for (a, b) in back.iter().zip(&data) {
            assert_eq!(*a, half::f16::from_f32(*b).to_f32());
        }
    }

    #[test]
    fn out_of_bounds_is_an_error_not_a_panic() {
        let mut buf = vec![0u8; 3 * 4 * 2];
        assert!(write_channels_f32(&mut buf, 4, 2, &[0.0; 8]).is_err());
        assert!(write_channels_f32(&mut buf, 4, 0, &[0.0; 7]).is_err());
        assert!(write_lane_f32(&mut buf, 4, 4, 0, &[0.0]).is_err());
        assert!(read_lane_f32(&buf, 4, 0, 2, &mut [0.0; 2]).is_err());
        assert!(read_f32_raw(&buf, 5, &mut [0.0; 2]).is_err());
        assert!(argmax_lane(&buf, 0, 0, 1).is_err());
        assert!(argmax_lane(&buf, 4, 0, 4).is_err());
        assert!(channel_range(buf.len(), 4, usize::MAX, 2).is_err());
    }

    #[test]
    fn lanes_are_strided_by_spatial() {
        let mut buf = vec![0u8; 4 * 8 * 2];
        write_lane_f32(&mut buf, 8, 3, 1, &[1.0, 2.0, 3.0]).unwrap();
        let mut all = vec![0.0; 32];
        read_channels_f32(&buf, 8, 0, &mut all).unwrap();
        for c in 0..4 {
            for s in 0..8 {
                let want = if s == 3 && c >= 1 { c as f32 } else { 0.0 };
                assert_eq!(all[c * 8 + s], want, "c={c} s={s}");
            }
        }
        let mut lane = [0.0; 2];
        read_lane_f32(&buf, 8, 3, 2, &mut lane).unwrap();
        assert_eq!(lane, [2.0, 3.0]);
    }

    #[test]
    fn argmax_lowest_index_wins_ties_with_fp16_equality() {
        let mut buf = vec![0u8; 5 * 2 * 2];
        // 1.0001 and 1.0002 both round to the same fp16 value (1.0) → tie → index 1.
        write_lane_f32(&mut buf, 2, 1, 0, &[0.5, 1.0001, 1.0002, f32::NAN, -3.0]).unwrap();
        assert_eq!(argmax_lane(&buf, 2, 1, 5).unwrap(), 1);
        write_lane_f32(&mut buf, 2, 0, 0, &[f32::NAN, -1.0, -0.5, -0.5, -2.0]).unwrap();
        assert_eq!(argmax_lane(&buf, 2, 0, 5).unwrap(), 2);
        assert_eq!(argmax_lane(&buf, 2, 0, 2).unwrap(), 1);
    }

    #[test]
    fn raw_f32_round_trip() {
        let mut buf = vec![0u8; 16];
        write_f32_raw(&mut buf, 1, &[1.5, -2.25]).unwrap();
        let mut out = [0.0; 4];
        read_f32_raw(&buf, 0, &mut out).unwrap();
        assert_eq!(out, [0.0, 1.5, -2.25, 0.0]);
    }

    #[test]
    fn codec_round_trips_every_surface_type() {
        let vals = [0.0f32, 1.0, -2.0, 3.0, 100.0];
        for dt in [
            DType::Fp16,
            DType::Fp32,
            DType::Fp64,
            DType::Int8,
            DType::Int16,
            DType::Int32,
            DType::Int64,
            DType::Uint16,
            DType::Uint32,
        ] {
            let unsigned = matches!(dt, DType::Uint16 | DType::Uint32);
            let vals = vals.map(|v| if unsigned { v.abs() } else { v });
            let bytes = encode(dt, &vals).unwrap();
            assert_eq!(bytes.len(), vals.len() * dt.size_bytes().unwrap(), "{dt}");
            let mut back = [9.0f32; 5];
            decode_into(dt, &bytes, &mut back).unwrap();
            assert_eq!(back, vals, "{dt}");
            assert_eq!(element(dt, &bytes, 4), Some(100.0), "{dt}");
            assert_eq!(element(dt, &bytes, 5), None, "{dt}");
        }
        // fp16 rounds to nearest even; bool is v != 0; too-small buffers are errors, not panics.
        let b = encode(DType::Fp16, &[1.0 + 1.0 / 4096.0]).unwrap();
        assert_eq!(element(DType::Fp16, &b, 0), Some(1.0));
        let b = encode(DType::Bool, &[0.0, 0.5, -3.0]).unwrap();
        assert_eq!(b, [0, 1, 1]);
        assert!(encode_into(DType::Fp32, &[1.0, 2.0], &mut [0u8; 7]).is_err());
        assert!(decode_into(DType::Fp16, &[0u8; 3], &mut [0.0; 2]).is_err());
        assert!(encode(DType::String, &[1.0]).is_err());
    }
}
