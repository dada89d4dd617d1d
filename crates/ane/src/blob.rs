//! Reading fp16 tensors out of BLOBFILE weight blobs (reference §4).
//!
//! The MIL `offset` points at a 64-byte chunk metadata record: u32 sentinel `0xDEADBEEF`,
//! u32 data type (1 = fp16), u64 payload size in bytes, u64 absolute payload offset. Writing
//! blobs is the `mil` crate's job; the simulator only needs this reader.

use crate::fp16::f16_le_bytes_to_f32;

/// Chunk metadata sentinel.
pub const BLOB_SENTINEL: u32 = 0xDEAD_BEEF;
/// Data type code of fp16 payloads.
pub const BLOB_DTYPE_FP16: u32 = 1;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Decode `count` fp16 values from the chunk whose metadata record starts at `offset`.
/// The payload must hold exactly `count` values.
pub fn read_fp16_tensor(blob: &[u8], offset: u64, count: usize) -> Result<Vec<f32>, String> {
    let off = usize::try_from(offset).map_err(|_| "offset does not fit in memory".to_string())?;
    let short = || format!("blob of {} bytes has no chunk record at {off}", blob.len());
    let sentinel = u32_at(blob, off).ok_or_else(short)?;
    if sentinel != BLOB_SENTINEL {
        return Err(format!(
            "no 0xDEADBEEF sentinel at offset {off} (found {sentinel:#010x}); \
             the MIL offset must point at the chunk record (64 for single-tensor blobs)"
        ));
    }
    let field = |k: usize| off.checked_add(k).ok_or_else(short);
    let dtype = u32_at(blob, field(4)?).ok_or_else(short)?;
    if dtype != BLOB_DTYPE_FP16 {
        return Err(format!("chunk data type {dtype} is not fp16 (1)"));
    }
    let size = u64_at(blob, field(8)?).ok_or_else(short)?;
    let data = u64_at(blob, field(16)?).ok_or_else(short)?;
    let want = (count as u64).checked_mul(2).ok_or("tensor too large")?;
    if size != want {
        return Err(format!(
            "chunk payload is {size} bytes, the declared tensor needs {want} ({count} fp16 values)"
        ));
    }
    let start = usize::try_from(data).map_err(|_| "payload offset too large".to_string())?;
    let end = start
        .checked_add(want as usize)
        .filter(|&e| e <= blob.len())
        .ok_or_else(|| {
            format!(
                "payload {start}..{start}+{want} runs past the end of a {}-byte blob",
                blob.len()
            )
        })?;
    Ok(f16_le_bytes_to_f32(&blob[start..end]))
}

/// Build a single-tensor blob (64-byte header, record at 64, payload at 128) holding `values`
/// rounded to fp16. For tests and tools; byte-exact with the reference writer.
pub fn single_fp16_blob(values: &[f32]) -> Vec<u8> {
    let payload = crate::fp16::f32_to_f16_le_bytes(values);
    let mut b = vec![0u8; 128];
    b[0..4].copy_from_slice(&1u32.to_le_bytes());
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    b[64..68].copy_from_slice(&BLOB_SENTINEL.to_le_bytes());
    b[68..72].copy_from_slice(&BLOB_DTYPE_FP16.to_le_bytes());
    b[72..80].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    b[80..88].copy_from_slice(&128u64.to_le_bytes());
    b.extend_from_slice(&payload);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_blob_round_trip_and_errors() {
        let b = single_fp16_blob(&[1.0, -2.5, 0.1]);
        assert_eq!(b.len(), 128 + 6);
        let v = read_fp16_tensor(&b, 64, 3).unwrap();
        assert_eq!(v[0..2], [1.0, -2.5]);
        assert_eq!(v[2], crate::fp16::round_f16(0.1));
        assert!(read_fp16_tensor(&b, 0, 3).unwrap_err().contains("sentinel"));
        assert!(read_fp16_tensor(&b, 128, 3).is_err());
        assert!(read_fp16_tensor(&b, 64, 4).unwrap_err().contains("payload"));
        assert!(read_fp16_tensor(&b[..130], 64, 3)
            .unwrap_err()
            .contains("past the end"));
        assert!(read_fp16_tensor(&b, u64::MAX, 3).is_err());
    }
}
