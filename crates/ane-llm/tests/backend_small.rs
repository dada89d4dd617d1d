//! The ANE backend on a small random GQA model against the exact CPU backend.
//!
//! Weights are stored as F16 so the CPU path and the fp16 blobs hold the very same values:
//! with the simulator in f32 mode (f32 surfaces) the only differences left are f32 summation
//! order, so logits must agree to ~1e-5; in fp16 mode they agree to fp16 accuracy.

use ane_llm::{ane_sim_backend, AneBackend, AneOptions};
use ane_sim::Precision;
use cpu::{CpuBackend, CpuOptions};
use engine::{Backend, BackendError};
use mil::DType;
use model::synthetic::SyntheticModel;
use model::{GgmlType, LlamaConfig, LlamaWeights};

fn small_config() -> LlamaConfig {
    LlamaConfig {
        n_layers: 4,
        dim: 64,
        ffn_dim: 96,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        vocab_size: 300,
        context_length: 64,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
    }
}

fn small_opts() -> AneOptions {
    AneOptions {
        max_seq: Some(32),
        layers_per_kernel: 3,
        io: None,
        self_check: true,
        lanes: Some(8),
    }
}

fn weights(m: &SyntheticModel) -> LlamaWeights<'_> {
    LlamaWeights::from_source(m, m.config.clone()).expect("synthetic weights")
}

/// Max |a − b| over two logit vectors, relative to max |b|.
fn rel_max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Prefill `prompt` then decode greedily `steps` tokens on both backends, comparing logits at
/// every step; returns the largest relative deviation seen.
fn run_against_cpu(
    ane: &mut AneBackend<'_>,
    cpu: &mut CpuBackend<'_>,
    prompt: &[u32],
    steps: usize,
    tol: f32,
) -> f32 {
    let mut worst = 0f32;
    let a = ane.forward(prompt, 0).expect("ane prefill");
    let c = cpu.forward(prompt, 0).expect("cpu prefill");
    worst = worst.max(rel_max_diff(&a, &c));
    let mut tok = argmax(&c) as u32;
    for pos in prompt.len()..prompt.len() + steps {
        let a = ane.forward(&[tok], pos).expect("ane decode");
        let c = cpu.forward(&[tok], pos).expect("cpu decode");
        let d = rel_max_diff(&a, &c);
        assert!(
            d <= tol,
            "position {pos}: relative logit deviation {d} > {tol}"
        );
        worst = worst.max(d);
        tok = argmax(&c) as u32;
    }
    worst
}

#[test]
fn f32_sim_matches_cpu_exact_on_gqa_model_through_prefill_and_decode() {
    let m = SyntheticModel::new(small_config(), 11, GgmlType::F16);
    let mut ane = ane_sim_backend(weights(&m), Precision::F32, small_opts()).expect("ane backend");
    assert_eq!(ane.geometry().io, DType::Fp32);
    let mut cpu = CpuBackend::new(
        weights(&m),
        CpuOptions {
            exact: true,
            threads: 1,
        },
    )
    .expect("cpu");
    // A 13-token prompt spans two 8-lane chunks; then decode up to the last cache slot (31).
    let prompt: Vec<u32> = (0..13).map(|i| (i * 37 + 5) % 300).collect();
    let worst = run_against_cpu(&mut ane, &mut cpu, &prompt, 32 - 13, 2e-5);
    eprintln!("f32 sim vs cpu exact: worst relative logit deviation {worst:.2e}");
    assert!(worst <= 2e-5, "{worst}");
    // The cache is full: one more token must be refused.
    assert!(matches!(
        ane.forward(&[1], 32),
        Err(BackendError::ContextFull { pos: 32, ctx: 32 })
    ));
}

#[test]
fn fp16_sim_matches_cpu_exact_within_fp16_tolerance() {
    let m = SyntheticModel::new(small_config(), 12, GgmlType::F16);
    let mut ane = ane_sim_backend(weights(&m), Precision::Fp16, small_opts()).expect("ane backend");
    assert_eq!(ane.geometry().io, DType::Fp16);
    let mut cpu = CpuBackend::new(
        weights(&m),
        CpuOptions {
            exact: true,
            threads: 1,
        },
    )
    .expect("cpu");
    let prompt: Vec<u32> = (0..5).map(|i| (i * 53 + 7) % 300).collect();
    let worst = run_against_cpu(&mut ane, &mut cpu, &prompt, 6, 0.02);
    eprintln!("fp16 sim vs cpu exact: worst relative logit deviation {worst:.2e}");
    assert!(worst > 0.0, "fp16 mode should round somewhere");
}

#[test]
fn forward_all_equals_token_by_token_and_no_compile_after_load() {
    let m = SyntheticModel::new(small_config(), 13, GgmlType::F16);
    let mut a = ane_sim_backend(weights(&m), Precision::F32, small_opts()).expect("ane");
    let mut b = ane_sim_backend(weights(&m), Precision::F32, small_opts()).expect("ane");
    let compiles = a.stats().compiles;
    // 4 layers with 3 per kernel: kernels for layers 0-2 and 3, plus the head.
    assert_eq!(compiles, 3);
    assert_eq!(a.dispatches_per_token(), 3);
    let toks: Vec<u32> = vec![3, 99, 150, 7, 42, 288, 1, 0, 77, 12];
    let all = a.forward_all(&toks, 0).expect("forward_all");
    let v = 300;
    for (i, &t) in toks.iter().enumerate() {
        let one = b.forward(&[t], i).expect("forward");
        let d = rel_max_diff(&one, &all[i * v..(i + 1) * v]);
        assert!(d < 1e-4, "token {i}: {d}");
    }
    let before = b.stats();
    b.forward(&[5], toks.len()).expect("decode");
    let after = b.stats();
    assert_eq!(after.compiles, compiles, "no compile after the first token");
    assert_eq!(after.dispatches - before.dispatches, 3);
    assert!(after.predicted_device_ms.unwrap_or(0.0) > before.predicted_device_ms.unwrap_or(0.0));
    assert_eq!(b.device().stats().compiles, compiles);
    // Greedy hint agrees with a full argmax of the returned logits.
    let logits = b.forward(&[9], toks.len() + 1).expect("decode");
    assert_eq!(b.last_argmax(), Some(argmax(&logits) as u32));
    assert_eq!(b.name(), "ane-sim");
}

#[test]
fn rewinding_to_an_earlier_position_overwrites_the_cache() {
    // forward(tokens, pos) with a smaller pos than before rewinds: the later slots are hidden
    // by the mask and overwritten, so the result equals a fresh backend's.
    let m = SyntheticModel::new(small_config(), 14, GgmlType::F16);
    let mut a = ane_sim_backend(weights(&m), Precision::F32, small_opts()).expect("ane");
    let mut fresh = ane_sim_backend(weights(&m), Precision::F32, small_opts()).expect("ane");
    a.forward(&[10, 20, 30, 40, 50, 60], 0)
        .expect("first conversation");
    a.forward(&[70], 6).expect("decode");
    let shared = [10u32, 20, 30];
    let b = a.forward(&[99, 98], 3).expect("rewound");
    fresh.forward(&shared, 0).expect("fresh prefix");
    let want = fresh.forward(&[99, 98], 3).expect("fresh");
    assert!(rel_max_diff(&b, &want) < 1e-5);
    let next = a.forward(&[5], 5).expect("decode after rewind");
    let want_next = fresh.forward(&[5], 5).expect("fresh decode");
    assert!(rel_max_diff(&next, &want_next) < 1e-5);
}
