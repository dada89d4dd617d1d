//! The synthetic seed shape (6 layers, dim 768, 12 heads, ffn 2048, vocab 32000): two fused
//! 3-layer kernels + the head = 3 dispatches per token, and fp16 numerics against the CPU.

use ane_llm::{ane_sim_backend, AneOptions};
use ane_sim::Precision;
use cpu::{CpuBackend, CpuOptions};
use engine::Backend;
use model::synthetic::SyntheticModel;
use model::{GgmlType, LlamaConfig, LlamaWeights};

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn margin(v: &[f32]) -> f32 {
    let i = argmax(v);
    let second = v
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .fold(f32::NEG_INFINITY, |m, (_, &x)| m.max(x));
    v[i] - second
}

#[test]
fn seed_shape_runs_in_three_dispatches_per_token_with_fp16_numerics() {
    let m = SyntheticModel::new(LlamaConfig::synthetic(), 1, GgmlType::F16);
    let w = || LlamaWeights::from_source(&m, m.config.clone()).expect("weights");
    let mut ane = ane_sim_backend(w(), Precision::Fp16, AneOptions::default()).expect("ane-sim");
    let mut cpu = CpuBackend::new(
        w(),
        CpuOptions {
            exact: true,
            threads: 0,
        },
    )
    .expect("cpu");
    assert_eq!(ane.geometry().lanes, 32);
    assert_eq!(ane.geometry().max_seq, 256);
    assert_eq!(ane.dispatches_per_token(), 3);
    let compiles = ane.stats().compiles;
    assert_eq!(compiles, 3);

    // First-position logits for a few prompts; the first token must agree whenever the
    // exact path's top-1/top-2 margin exceeds 0.1.
    let prompts: [&[u32]; 4] = [
        &[1, 500, 9000, 31_999, 42],
        &[1, 2, 3],
        &[17_000, 4, 256, 8191, 77, 12],
        &[300],
    ];
    let mut got = Vec::new();
    for prompt in prompts {
        let want = cpu.forward(prompt, 0).expect("cpu");
        got = ane.forward(prompt, 0).expect("ane");
        let dev = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mg = margin(&want);
        eprintln!(
            "seed shape fp16 {prompt:?}: first-position max |logit diff| {dev:.4} (max |logit| {scale:.2}), margin {mg:.3}"
        );
        assert!(dev <= 0.02 * scale.max(1.0), "{dev}");
        if mg > 0.1 {
            assert_eq!(argmax(&got), argmax(&want));
        }
    }
    let prompt = prompts[3];

    let before = ane.stats();
    let mut tok = argmax(&got) as u32;
    for pos in prompt.len()..prompt.len() + 3 {
        let logits = ane.forward(&[tok], pos).expect("decode");
        tok = argmax(&logits) as u32;
    }
    let after = ane.stats();
    assert_eq!(
        after.dispatches - before.dispatches,
        3 * 3,
        "3 dispatches per decode token"
    );
    assert_eq!(after.compiles, compiles, "no compile after the first token");
    let per_token = (after.predicted_device_ms.unwrap_or(0.0)
        - before.predicted_device_ms.unwrap_or(0.0))
        / 3.0;
    eprintln!(
        "seed shape: predicted ANE time {per_token:.3} ms/token (cost model, {:?})",
        after.chip_profile
    );
    assert!(per_token > 0.0);
}
