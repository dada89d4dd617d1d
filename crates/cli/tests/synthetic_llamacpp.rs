//! `export-synthetic` writes weights llama.cpp runs the same way we do: its logits for the
//! exported seed-1 f16 model (fixture from scripts/synthetic_llamacpp_fixture.py) against our
//! exact CPU path on the same in-memory weights.
//!
//! Tolerance 2e-2 max-abs on logits of magnitude ~4: llama.cpp computes the f16 matrices with
//! f16-rounded activations in places (its CPU matmul converts the activation row to the weight
//! type), which moves logits by ~1e-3 relative; a wrong layout or rope would move them by O(1).

use engine::Backend;
use model::quant::GgmlType;
use model::synthetic::SyntheticModel;
use model::{LlamaConfig, LlamaWeights};

#[test]
fn exported_synthetic_matches_llama_cpp() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/synthetic_llamacpp.json"
    );
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tokens: Vec<u32> = serde_json::from_value(fx["tokens"].clone()).unwrap();
    let head: Vec<f32> = serde_json::from_value(fx["logits_head"].clone()).unwrap();
    let top10: Vec<u32> = serde_json::from_value(fx["top10"].clone()).unwrap();

    let cfg = LlamaConfig::synthetic();
    let synth = SyntheticModel::new(cfg.clone(), 1, GgmlType::F16);
    let weights = LlamaWeights::from_source(&synth, cfg).unwrap();
    let mut cpu = cpu::CpuBackend::new(
        weights,
        cpu::CpuOptions {
            exact: true,
            threads: 0,
        },
    )
    .unwrap();
    let logits = cpu.forward(&tokens, 0).unwrap();

    let max_diff = head
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!(
        "max |ours - llama.cpp| over the first {} logits: {max_diff:.2e}",
        head.len()
    );
    assert!(max_diff < 2e-2, "max diff {max_diff}");
    assert_eq!(engine::argmax(&logits), top10[0]);
}
