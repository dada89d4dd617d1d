//! Shared helpers of the simulator tests: fixture paths, a seeded PRNG, blob synthesis and a
//! plain-Rust reference toolbox.
#![allow(dead_code)]

use std::path::PathBuf;

use ane::blob::single_fp16_blob;
use ane::fp16::round_f16;

/// The reference fixtures: `<repo>/fixtures/espresso-fixtures` (vendored, MIT, see its NOTICE.md),
/// else `<repo>/../shared/reference/espresso-fixtures`; panics with a clear message when missing.
pub fn fixtures_dir() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = [
        repo.join("fixtures/espresso-fixtures"),
        repo.join("../shared/reference/espresso-fixtures"),
    ];
    candidates
        .iter()
        .find(|d| d.is_dir())
        .cloned()
        .unwrap_or_else(|| panic!("reference fixtures not found at {:?}", candidates))
}

pub fn read_fixture(rel: &str) -> Vec<u8> {
    let p = fixtures_dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", p.display()))
}

pub fn read_fixture_text(rel: &str) -> String {
    String::from_utf8(read_fixture(rel)).expect("fixture is UTF-8")
}

/// Little-endian f32 file → values.
pub fn read_f32le(rel: &str) -> Vec<f32> {
    read_fixture(rel)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// SplitMix64: small, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

/// Causal mask `[S, S]`: 0 where col ≤ row, −65504 (fp16 lowest) where col > row.
pub fn causal_mask(s: usize) -> Vec<f32> {
    (0..s * s)
        .map(|i| if i % s <= i / s { 0.0 } else { -65504.0 })
        .collect()
}

/// A single-tensor blob of `values`.
pub fn blob(values: &[f32]) -> Vec<u8> {
    single_fp16_blob(values)
}

/// Values rounded to fp16.
pub fn r16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| round_f16(x)).collect()
}

/// `y[m, n] = a[m, k] · b[k, n]` (row-major), f64 accumulation.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut acc = vec![0f64; m * n];
    for i in 0..m {
        let row = &mut acc[i * n..(i + 1) * n];
        for p in 0..k {
            let av = a[i * k + p] as f64;
            if av == 0.0 {
                continue;
            }
            let brow = &b[p * n..(p + 1) * n];
            for (r, &bv) in row.iter_mut().zip(brow) {
                *r += av * bv as f64;
            }
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// Row-major transpose of `[r, c]`.
pub fn transpose(a: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = a[i * c + j];
        }
    }
    t
}

/// max |a − b| and the index where it occurs.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut best = (0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        if d > best.0 || d.is_nan() {
            best = (d, i);
        }
    }
    best
}

/// Blob file names a MIL program references: `@model_path/weights/NAME.bin` paths with the
/// declared element count of each use (max over uses).
pub fn blob_refs(mil_text: &str) -> Vec<(String, Vec<usize>)> {
    let prog = mil::parse(mil_text).expect("fixture parses");
    let func = prog.main().expect("main");
    let mut out: Vec<(String, Vec<usize>)> = vec![];
    for (_, ty, b) in func.blob_refs() {
        if !out.iter().any(|(p, _)| *p == b.path) {
            out.push((b.path.clone(), ty.shape.clone()));
        }
    }
    out
}
