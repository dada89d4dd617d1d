//! Weight blob writer/reader against the reference blobs (§4, NOTICE.md).

mod common;

use mil::blob::{self, BlobError};

/// `ffn_blob_ref.bin`: W1 `[6,4]` with w1[i] = i + 0.5, W3 `[6,4]` with w3[i] = i + 400.75.
#[test]
fn writer_reproduces_ffn_blob_byte_for_byte() {
    let w1: Vec<f32> = (0..24).map(|i| i as f32 + 0.5).collect();
    let w3: Vec<f32> = (0..24).map(|i| i as f32 + 400.75).collect();
    let bytes = blob::write_multi_blob(&[&w1, &w3]).expect("write");
    assert_eq!(
        bytes,
        common::read_generator_fixture_bytes("ffn_blob_ref.bin")
    );
    assert_eq!(blob::chunk_offsets(&[24, 24]), [64, 176]);
}

/// `qkv_blob_ref.bin`: wq[i] = i + 0.125, wk[i] = i + 100.25, wv[i] = i − 50.5, i ∈ [0,16).
#[test]
fn writer_reproduces_qkv_blob_byte_for_byte() {
    let wq: Vec<f32> = (0..16).map(|i| i as f32 + 0.125).collect();
    let wk: Vec<f32> = (0..16).map(|i| i as f32 + 100.25).collect();
    let wv: Vec<f32> = (0..16).map(|i| i as f32 - 50.5).collect();
    let bytes = blob::write_multi_blob(&[&wq, &wk, &wv]).expect("write");
    assert_eq!(
        bytes,
        common::read_generator_fixture_bytes("qkv_blob_ref.bin")
    );
    assert_eq!(blob::chunk_offsets(&[16, 16, 16]), [64, 160, 256]);
}

#[test]
fn reader_recovers_the_reference_chunks() {
    let bytes = common::read_generator_fixture_bytes("qkv_blob_ref.bin");
    let chunks = blob::read_blob(&bytes).expect("read");
    assert_eq!(
        chunks.iter().map(|c| c.offset).collect::<Vec<_>>(),
        [64, 160, 256]
    );
    for (i, v) in chunks[2].values.iter().enumerate() {
        assert_eq!(v.to_f32(), i as f32 - 50.5);
    }
    let wk = blob::read_chunk(&bytes, 160).expect("chunk at 160");
    assert_eq!(wk.values[3].to_f32(), 103.25);
    // Offsets that are not records are rejected (the offset-64 trap, §4.1).
    assert!(matches!(
        blob::read_chunk(&bytes, 128),
        Err(BlobError::BadSentinel { .. })
    ));
    assert!(matches!(
        blob::read_chunk(&bytes, 0),
        Err(BlobError::NoRecord(0, 352))
    ));
}

#[test]
fn single_blob_layout_and_round_trip() {
    let values: Vec<f32> = (0..24).map(|i| (i as f32 - 12.0) * 0.1).collect();
    let bytes = blob::write_blob(&values).expect("write");
    assert_eq!(bytes.len(), 128 + 2 * 24);
    assert_eq!(&bytes[0..8], &[1, 0, 0, 0, 2, 0, 0, 0]);
    assert_eq!(&bytes[64..68], &[0xEF, 0xBE, 0xAD, 0xDE]);
    assert_eq!(u64::from_le_bytes(bytes[72..80].try_into().unwrap()), 48);
    assert_eq!(u64::from_le_bytes(bytes[80..88].try_into().unwrap()), 128);
    let chunks = blob::read_blob(&bytes).expect("read");
    assert_eq!(chunks.len(), 1);
    let back: Vec<f32> = chunks[0].values.iter().map(|v| v.to_f32()).collect();
    let expect: Vec<f32> = values
        .iter()
        .map(|&v| mil::f16::from_f32(v).to_f32())
        .collect();
    assert_eq!(back, expect);
}

#[test]
fn fp16_conversion_rounds_to_nearest_even() {
    // 2049 lies exactly between fp16 2048 and 2050: ties-to-even gives 2048; 2051 → 2052.
    let bytes = blob::write_blob(&[2049.0, 2051.0, 1e6, -1e-8]).expect("write");
    let v = &blob::read_blob(&bytes).expect("read")[0].values;
    assert_eq!(v[0].to_f32(), 2048.0);
    assert_eq!(v[1].to_f32(), 2052.0);
    assert!(v[2].to_f32().is_infinite());
    assert_eq!(v[3].to_f32(), 0.0);
}

#[test]
fn transposed_writer_stores_element_ij_at_j_rows_plus_i() {
    let (rows, cols) = (3, 5);
    let m: Vec<f32> = (0..rows * cols).map(|k| k as f32).collect();
    let bytes = blob::write_blob_transposed(&m, rows, cols).expect("write");
    let v = &blob::read_blob(&bytes).expect("read")[0].values;
    for i in 0..rows {
        for j in 0..cols {
            assert_eq!(v[j * rows + i].to_f32(), m[i * cols + j], "({i},{j})");
        }
    }
    assert!(matches!(
        blob::write_blob_transposed(&m, 4, 4),
        Err(BlobError::ShapeMismatch {
            expected: 16,
            got: 15,
            ..
        })
    ));
}

#[test]
fn reader_rejects_corrupt_headers() {
    let good = blob::write_blob(&[1.0, 2.0]).expect("write");
    let mut bad = good.clone();
    bad[4] = 3;
    assert_eq!(blob::read_blob(&bad), Err(BlobError::BadVersion(3)));
    let mut bad = good.clone();
    bad[68] = 2;
    assert!(matches!(
        blob::read_blob(&bad),
        Err(BlobError::BadDType { found: 2, .. })
    ));
    let mut bad = good.clone();
    bad[80] = 0x90;
    assert!(matches!(
        blob::read_blob(&bad),
        Err(BlobError::BadDataOffset { found: 0x90, .. })
    ));
    let mut bad = good.clone();
    bad[72] = 6;
    assert!(matches!(
        blob::read_blob(&bad),
        Err(BlobError::Truncated { size: 6, .. })
    ));
    assert_eq!(blob::read_blob(&good[..40]), Err(BlobError::TooShort(40)));
}

#[test]
fn causal_mask_and_grouped_compaction() {
    let m = blob::causal_mask(3);
    assert_eq!(
        m,
        [0.0, -65504.0, -65504.0, 0.0, 0.0, -65504.0, 0.0, 0.0, 0.0]
    );
    // Dense block-diagonal 4×4 with 2 groups → 4×2.
    let dense = [
        1.0, 2.0, 0.0, 0.0, //
        3.0, 4.0, 0.0, 0.0, //
        0.0, 0.0, 5.0, 6.0, //
        0.0, 0.0, 7.0, 8.0,
    ];
    let c = blob::compact_grouped(&dense, 4, 4, 2).expect("compact");
    assert_eq!(c, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    assert_eq!(
        blob::compact_grouped(&c, 4, 4, 2).expect("already compact"),
        c
    );
}
