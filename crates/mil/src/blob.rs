//! BLOBFILE weight files (ane-reference §4): the CoreML "blob storage v2" layout as far as
//! the ANE compiler needs it. All integers little-endian, payload fp16.
//!
//! ```text
//! 0    u32 1 (count; stays 1 even with several chunks)   4 u32 2 (version)   8..63 zero
//! per chunk k, record at R = 64 + k·(64 + P):
//! R+0  u32 0xDEADBEEF   R+4 u32 1 (fp16)   R+8 u64 P (payload bytes)   R+16 u64 R+64 (data)
//! R+24..R+63 zero       R+64.. P bytes of fp16
//! ```
//! The MIL `BLOBFILE(..., offset=uint64(R))` points at the record, not at the payload.

use half::f16;

/// Size of the file header.
pub const FILE_HEADER_SIZE: usize = 64;
/// Size of one chunk metadata record.
pub const CHUNK_HEADER_SIZE: usize = 64;
/// Per-chunk sentinel.
pub const CHUNK_SENTINEL: u32 = 0xDEAD_BEEF;
/// Data type code of fp16 payloads.
pub const DTYPE_FP16: u32 = 1;
/// Storage format version in the file header.
pub const BLOB_VERSION: u32 = 2;
/// MIL offset of the first (or only) chunk.
pub const FIRST_CHUNK_OFFSET: u64 = 64;
/// fp16 lowest finite value, used as −∞ in the causal mask (§5.6).
pub const MASK_NEG: f32 = -65504.0;

/// A malformed blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("blob is {0} bytes, shorter than the 64-byte file header")]
    TooShort(usize),
    #[error("file header version is {0}, expected 2")]
    BadVersion(u32),
    #[error("no chunk record at offset {0} (file is {1} bytes)")]
    NoRecord(u64, usize),
    #[error("chunk record at {offset} has sentinel {found:#010x}, expected 0xdeadbeef")]
    BadSentinel { offset: u64, found: u32 },
    #[error("chunk record at {offset} has data type {found}, only 1 (fp16) is supported")]
    BadDType { offset: u64, found: u32 },
    #[error("chunk record at {offset} says data at {found}, expected {expected}")]
    BadDataOffset {
        offset: u64,
        found: u64,
        expected: u64,
    },
    #[error("chunk record at {offset} has odd payload size {size}")]
    OddSize { offset: u64, size: u64 },
    #[error("chunk at {offset} needs {size} payload bytes but the file ends at {len}")]
    Truncated { offset: u64, size: u64, len: usize },
    #[error("payload of {0} bytes does not fit the u32 size field")]
    TooLarge(usize),
    #[error("matrix {rows}×{cols} needs {expected} values, got {got}")]
    ShapeMismatch {
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
}

/// One chunk of a blob.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Offset of the metadata record: the value MIL's `BLOBFILE(offset=...)` uses.
    pub offset: u64,
    /// fp16 payload.
    pub values: Vec<f16>,
}

/// fp32 → fp16 with IEEE round-to-nearest-even.
pub fn to_f16(values: &[f32]) -> Vec<f16> {
    values.iter().map(|&v| f16::from_f32(v)).collect()
}

/// Single-tensor blob from fp32 values (row-major; for a conv weight `[Cout, Cin, 1, 1]`
/// that is `[Cout][Cin]`, the `nn.Linear.weight` layout). Total size 128 + 2·n.
pub fn write_blob(values: &[f32]) -> Result<Vec<u8>, BlobError> {
    write_blob_f16(&to_f16(values))
}

/// Single-tensor blob from fp16 values (pass-through writer).
pub fn write_blob_f16(values: &[f16]) -> Result<Vec<u8>, BlobError> {
    write_multi_blob_f16(&[values])
}

/// Blob of the transpose of a row-major `rows × cols` matrix: element (i, j) is stored at
/// position `j·rows + i` (the Wᵀ blobs of backward kernels).
pub fn write_blob_transposed(
    values: &[f32],
    rows: usize,
    cols: usize,
) -> Result<Vec<u8>, BlobError> {
    write_blob(&transpose(values, rows, cols)?)
}

/// Row-major `rows × cols` → row-major `cols × rows`.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>, BlobError> {
    let expected = rows.saturating_mul(cols);
    if values.len() != expected {
        return Err(BlobError::ShapeMismatch {
            rows,
            cols,
            expected,
            got: values.len(),
        });
    }
    let mut out = vec![0.0; values.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = values[i * cols + j];
        }
    }
    Ok(out)
}

/// Multi-chunk blob (§4.2) from fp32 chunks.
pub fn write_multi_blob(chunks: &[&[f32]]) -> Result<Vec<u8>, BlobError> {
    let halves: Vec<Vec<f16>> = chunks.iter().map(|c| to_f16(c)).collect();
    let refs: Vec<&[f16]> = halves.iter().map(|c| c.as_slice()).collect();
    write_multi_blob_f16(&refs)
}

/// Multi-chunk blob from fp16 chunks: file header, then record + payload per chunk.
pub fn write_multi_blob_f16(chunks: &[&[f16]]) -> Result<Vec<u8>, BlobError> {
    let mut out = vec![0u8; FILE_HEADER_SIZE];
    out[0..4].copy_from_slice(&1u32.to_le_bytes());
    out[4..8].copy_from_slice(&BLOB_VERSION.to_le_bytes());
    for chunk in chunks {
        let size = chunk.len() * 2;
        let size32 = u32::try_from(size).map_err(|_| BlobError::TooLarge(size))?;
        let record = out.len();
        let data = record + CHUNK_HEADER_SIZE;
        let data32 = u32::try_from(data).map_err(|_| BlobError::TooLarge(data))?;
        let mut header = [0u8; CHUNK_HEADER_SIZE];
        header[0..4].copy_from_slice(&CHUNK_SENTINEL.to_le_bytes());
        header[4..8].copy_from_slice(&DTYPE_FP16.to_le_bytes());
        // The reference fills only the low u32 of the two u64 fields.
        header[8..12].copy_from_slice(&size32.to_le_bytes());
        header[16..20].copy_from_slice(&data32.to_le_bytes());
        out.extend_from_slice(&header);
        out.reserve(size);
        for v in chunk.iter() {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    Ok(out)
}

/// MIL offsets of the chunks of a multi-chunk blob with the given element counts:
/// `64 + Σ_{j<k} (64 + 2·n_j)`.
pub fn chunk_offsets(counts: &[usize]) -> Vec<u64> {
    let mut offsets = Vec::with_capacity(counts.len());
    let mut at = FIRST_CHUNK_OFFSET;
    for &n in counts {
        offsets.push(at);
        at = at.saturating_add(CHUNK_HEADER_SIZE as u64 + 2 * n as u64);
    }
    offsets
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// Read the chunk whose metadata record is at `offset` (the MIL BLOBFILE offset).
pub fn read_chunk(bytes: &[u8], offset: u64) -> Result<Chunk, BlobError> {
    if bytes.len() < FILE_HEADER_SIZE {
        return Err(BlobError::TooShort(bytes.len()));
    }
    let version = read_u32(bytes, 4).unwrap_or(0);
    if version != BLOB_VERSION {
        return Err(BlobError::BadVersion(version));
    }
    let no_record = || BlobError::NoRecord(offset, bytes.len());
    let at = usize::try_from(offset).map_err(|_| no_record())?;
    let record_end = at.checked_add(CHUNK_HEADER_SIZE);
    if at < FILE_HEADER_SIZE || !matches!(record_end, Some(end) if end <= bytes.len()) {
        return Err(no_record());
    }
    let sentinel = read_u32(bytes, at).ok_or_else(no_record)?;
    if sentinel != CHUNK_SENTINEL {
        return Err(BlobError::BadSentinel {
            offset,
            found: sentinel,
        });
    }
    let dtype = read_u32(bytes, at + 4).ok_or_else(no_record)?;
    if dtype != DTYPE_FP16 {
        return Err(BlobError::BadDType {
            offset,
            found: dtype,
        });
    }
    let size = read_u64(bytes, at + 8).ok_or_else(no_record)?;
    let data = read_u64(bytes, at + 16).ok_or_else(no_record)?;
    let expected = offset + CHUNK_HEADER_SIZE as u64;
    if data != expected {
        return Err(BlobError::BadDataOffset {
            offset,
            found: data,
            expected,
        });
    }
    if !size.is_multiple_of(2) {
        return Err(BlobError::OddSize { offset, size });
    }
    let truncated = || BlobError::Truncated {
        offset,
        size,
        len: bytes.len(),
    };
    let start = at + CHUNK_HEADER_SIZE;
    let len = usize::try_from(size).map_err(|_| truncated())?;
    let payload = start
        .checked_add(len)
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(truncated)?;
    let values = payload
        .chunks_exact(2)
        .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])))
        .collect();
    Ok(Chunk { offset, values })
}

/// Read every chunk of a blob, walking records from offset 64 to the end of the file.
pub fn read_blob(bytes: &[u8]) -> Result<Vec<Chunk>, BlobError> {
    let mut chunks = Vec::new();
    let mut offset = FIRST_CHUNK_OFFSET;
    loop {
        let chunk = read_chunk(bytes, offset)?;
        offset += (CHUNK_HEADER_SIZE + 2 * chunk.values.len()) as u64;
        chunks.push(chunk);
        if offset as usize >= bytes.len() {
            return Ok(chunks);
        }
    }
}

/// Causal mask `[S, S]` (row = query, column = key): 0 where col ≤ row, −65504 above the
/// diagonal (§5.6).
pub fn causal_mask(seq: usize) -> Vec<f32> {
    let mut m = vec![0.0; seq * seq];
    for row in 0..seq {
        for col in row + 1..seq {
            m[row * seq + col] = MASK_NEG;
        }
    }
    m
}

/// Compact a dense block-diagonal `[cout, cin]` matrix to the grouped conv weight layout
/// `[cout, cin/groups]` (§4.4): row r keeps columns `g·(cin/g) .. (g+1)·(cin/g)` of its
/// group `g = r / (cout/groups)`. A matrix already `cout × cin/groups` is returned as is.
pub fn compact_grouped(
    dense: &[f32],
    cout: usize,
    cin: usize,
    groups: usize,
) -> Result<Vec<f32>, BlobError> {
    let mismatch = |expected| BlobError::ShapeMismatch {
        rows: cout,
        cols: cin,
        expected,
        got: dense.len(),
    };
    if groups == 0 || !cin.is_multiple_of(groups) || !cout.is_multiple_of(groups) {
        return Err(mismatch(0));
    }
    let (cin_g, cout_g) = (cin / groups, cout / groups);
    if dense.len() == cout * cin_g && groups > 1 {
        return Ok(dense.to_vec());
    }
    if dense.len() != cout * cin {
        return Err(mismatch(cout * cin));
    }
    let mut out = Vec::with_capacity(cout * cin_g);
    for r in 0..cout {
        let g = r / cout_g;
        let row = &dense[r * cin..(r + 1) * cin];
        out.extend_from_slice(&row[g * cin_g..(g + 1) * cin_g]);
    }
    Ok(out)
}
