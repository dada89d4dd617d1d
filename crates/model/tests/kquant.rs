//! Our K-quant (and Q5_0/Q5_1) decoders against gguf-py's `gguf.quants.dequantize`, bitwise.
//!
//! Fixture: `tests/fixtures/kquant_blocks.json`, written by `scripts/kquant_fixture.py blocks`:
//! deterministic random blocks of each type (f16 scales finite and moderate, one block of all
//! 0xFF quants) and real rows of a llama.cpp-quantized SmolLM2 Q4_K_M (Q4_K, Q6_K, Q5_0 rows),
//! each with gguf-py's output as little-endian f32 bits.
//!
//! Bitwise equality is the right bar: gguf-py and ggml's reference compute every value with the
//! same f32 operations in the same order (`(d * sc) * q - dmin * m`, `(d * scale) * q`,
//! `q * d + m`), with no fused multiply-add, and so do we.

use model::quant::dequantize;
use model::GgmlType;
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct Case {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    code: u32,
    bytes: String,
    f32_le: String,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn fixture() -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kquant_blocks.json");
    let json = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/kquant_fixture.py blocks)",
            path.display()
        )
    });
    serde_json::from_str(&json).expect("kquant_blocks.json parses")
}

#[test]
fn dequantize_equals_gguf_py_bitwise() {
    let fx = fixture();
    let mut seen = Vec::new();
    for case in &fx.cases {
        let ty = GgmlType::from_code(case.code)
            .unwrap_or_else(|| panic!("{}: type code {} not supported", case.name, case.code));
        assert_eq!(ty.name(), case.type_name, "{}", case.name);
        let data = unhex(&case.bytes);
        let want: Vec<u32> = unhex(&case.f32_le)
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(
            ty.bytes_for(want.len() as u64),
            Some(data.len() as u64),
            "{}: block size",
            case.name
        );
        let mut got = vec![0f32; want.len()];
        dequantize(ty, &data, &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                *w,
                "{} element {i}: ours {g} vs gguf-py {}",
                case.name,
                f32::from_bits(*w)
            );
        }
        seen.push(case.name.clone());
    }
    // The fixture covers every new type, random and real.
    for must in [
        "random Q4_K",
        "random Q5_K",
        "random Q6_K",
        "random Q5_0",
        "random Q5_1",
    ] {
        assert!(seen.iter().any(|n| n == must), "fixture lacks {must}");
    }
    for real in ["Q4_K", "Q6_K", "Q5_0"] {
        assert!(
            fx.cases
                .iter()
                .any(|c| c.type_name == real && c.name.contains(" row ")),
            "fixture lacks a real {real} row"
        );
    }
}

/// Our (simpler than ggml's) K quantizers write blocks that the decoder checked above reads back
/// within about half a quantization step.
#[test]
fn k_quantizers_round_trip_through_our_decoder() {
    let x: Vec<f32> = (0..512)
        .map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0)
        .collect();
    for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
        let q = model::quant::quantize(ty, &x);
        assert_eq!(Some(q.len() as u64), ty.bytes_for(512));
        let mut y = vec![0f32; 512];
        dequantize(ty, &q, &mut y);
        let worst = x
            .iter()
            .zip(&y)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        // Q4_K: 16 levels over a sub-block range of <= 3.2, so about 0.11 per half step.
        assert!(worst < 0.15, "{ty:?}: worst round-trip error {worst}");
    }
}
