//! BLOBFILE access for the simulator and tools: thin adapters over [`mil::blob`], which owns
//! the format (reference §4). The simulator wants f32 values of a known count; the writers want
//! a single-tensor blob from f32.

/// Decode the `count` fp16 values of the chunk whose metadata record starts at `offset` (the
/// MIL BLOBFILE offset). The chunk must hold exactly `count` values.
pub fn read_fp16_tensor(blob: &[u8], offset: u64, count: usize) -> Result<Vec<f32>, String> {
    let chunk = mil::blob::read_chunk(blob, offset).map_err(|e| {
        let hint = if offset != mil::blob::FIRST_CHUNK_OFFSET {
            " (the MIL offset must point at the chunk record: 64 for single-tensor blobs)"
        } else {
            ""
        };
        format!("{e}{hint}")
    })?;
    if chunk.values.len() != count {
        return Err(format!(
            "chunk payload holds {} fp16 values, the declared tensor needs {count}",
            chunk.values.len()
        ));
    }
    Ok(chunk.values.iter().map(|v| v.to_f32()).collect())
}

/// A single-tensor blob (64-byte header, record at 64, payload at 128) holding `values`
/// rounded to fp16.
///
/// # Panics
/// If the payload exceeds the format's 4 GiB size field (no model tensor comes close).
pub fn single_fp16_blob(values: &[f32]) -> Vec<u8> {
    mil::blob::write_blob(values).expect("a weight blob over 4 GiB")
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
        assert!(read_fp16_tensor(&b, 0, 3).is_err());
        assert!(read_fp16_tensor(&b, 128, 3)
            .unwrap_err()
            .contains("chunk record"));
        assert!(read_fp16_tensor(&b, 64, 4).unwrap_err().contains("needs 4"));
        assert!(read_fp16_tensor(&b[..130], 64, 3).is_err());
        assert!(read_fp16_tensor(&b, u64::MAX, 3).is_err());
    }
}
