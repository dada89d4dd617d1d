//! The hardware suite: the private-API bridge on a real Apple Neural Engine.
//!
//! Compiled only for Apple targets and run only with `ESPRESSO_ANE_TESTS=1`:
//!
//! ```sh
//! ESPRESSO_ANE_TESTS=1 cargo test -p ane-llm --test hardware -- --nocapture
//! ```
//!
//! Without the switch every test prints why it did nothing and returns. With it, a missing
//! framework is a failure. Tests are serialised (one ANE, one process-wide compile budget of
//! 100; the whole suite compiles about 45 programs, the training kernels included). The SmolLM2 parity test needs the pulled
//! model (`espresso pull`). This suite has not yet been run on a Mac by us.
#![cfg(target_vendor = "apple")]

use std::sync::{Mutex, MutexGuard};

use ane::policy::{BudgetedDevice, CompilePolicy, PolicyStats, WeightReload};
use ane::{CompileBudget, Device, DeviceError, KernelSpec};
use ane_llm::backend::{compare, eval_once, probe_inputs};
use ane_llm::kernels::head::head;
use ane_llm::kernels::layers::{fused_layers, LayerF32};
use ane_llm::kernels::{lanes_for, Geometry, Kernel};
use ane_llm::{AneBackend, AneOptions};
use ane_macos::probe::{self, BindingObservation, ReloadObservation};
use ane_macos::{self as hw, AneDevice};
use ane_sim::{Precision, SimDevice, SimOptions};
use mil::DType;

/// `Some(lock)` when the suite is switched on; otherwise prints the reason and gives `None`.
fn enabled(test: &str) -> Option<MutexGuard<'static, ()>> {
    if std::env::var("ESPRESSO_ANE_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "{test}: not run: set ESPRESSO_ANE_TESTS=1 to run the hardware suite on a Mac with an \
             Apple Neural Engine"
        );
        return None;
    }
    static LOCK: Mutex<()> = Mutex::new(());
    Some(LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

fn device() -> AneDevice {
    AneDevice::open()
        .unwrap_or_else(|e| panic!("ESPRESSO_ANE_TESTS=1 but the ANE cannot be opened: {e}"))
}

#[test]
fn framework_loads_and_a_tiny_program_runs() {
    let Some(_lock) = enabled("framework_loads_and_a_tiny_program_runs") else {
        return;
    };
    hw::availability().unwrap_or_else(|e| panic!("{e}"));
    let mut dev = device();
    probe::tiny_compile_eval(&mut dev).unwrap_or_else(|e| panic!("{e}"));
    let st = dev.stats();
    assert_eq!((st.compiles, st.evals), (1, 1));
    assert_eq!((st.live_kernels, st.live_surfaces), (0, 0));
}

#[test]
fn binding_order_probes() {
    let Some(_lock) = enabled("binding_order_probes") else {
        return;
    };
    let mut dev = device();
    let equal = probe::output_binding(&mut dev, false);
    let differing = probe::output_binding(&mut dev, true);
    let inputs = probe::input_binding(&mut dev);
    eprintln!("outputs, equal sizes:     {equal}");
    eprintln!("outputs, different sizes: {differing}");
    eprintln!("inputs:                   {inputs}");
    assert_eq!(equal, BindingObservation::Alphabetical);
    assert_eq!(inputs, BindingObservation::Alphabetical);
    // Different output sizes may be rejected (Orion: status=0x1d); if they run, the binding
    // must still be alphabetical.
    assert!(
        matches!(
            differing,
            BindingObservation::Alphabetical | BindingObservation::Failed(_)
        ),
        "{differing}"
    );
}

#[test]
fn minimum_surface_size_probe() {
    let Some(_lock) = enabled("minimum_surface_size_probe") else {
        return;
    };
    let mut dev = device();
    let trials = probe::minimum_surface(&mut dev);
    for t in &trials {
        eprintln!(
            "[1, {}, 1, {}] {} bytes: {:?}",
            t.channels, t.spatial, t.bytes, t.failure
        );
    }
    eprintln!("smallest working: {:?}", probe::smallest_working(&trials));
    assert!(
        trials[0].failure.is_none(),
        "49,152-byte surfaces (the kernels' minimum) failed: {:?}",
        trials[0].failure
    );
    assert_eq!(dev.stats().live_surfaces, 0);
}

/// `y = k · x` on `[1, 384, 1, 64]` fp16 (weight-free; k differs → MIL differs).
fn scale_spec(k: f32) -> KernelSpec {
    let (c, s) = (384, 64);
    let mut b = mil::Builder::new();
    let x = b.input("x", mil::DType::Fp16, [1, c, 1, s]);
    let kv = b.fp16("k", f64::from(k));
    let y = b.mul("y", x, kv);
    b.output(y);
    KernelSpec::new(b.finish().expect("builds"), vec![]).expect("sized I/O")
}

fn check_scale(dev: &mut dyn Device, kernel: ane::KernelId, k: f32) {
    let (c, s) = (384, 64);
    let x: Vec<f32> = (0..c * s).map(|i| (i % 13) as f32 - 6.0).collect();
    let (xi, yo) = (
        dev.new_surface(c * s * 2).unwrap(),
        dev.new_surface(c * s * 2).unwrap(),
    );
    dev.write_channels_f32(xi, s, 0, &x).unwrap();
    dev.eval(kernel, &[xi], &[yo]).unwrap();
    let mut y = vec![0.0; c * s];
    dev.read_channels_f32(yo, s, 0, &mut y).unwrap();
    let want: Vec<f32> = x.iter().map(|v| k * v).collect();
    assert_eq!(y, want, "y = {k}·x");
    dev.free_surface(xi).unwrap();
    dev.free_surface(yo).unwrap();
}

#[test]
fn budget_policy_on_hardware() {
    let Some(_lock) = enabled("budget_policy_on_hardware") else {
        return;
    };
    let dev = AneDevice::with_budget(CompileBudget::private(2))
        .unwrap_or_else(|e| panic!("ESPRESSO_ANE_TESTS=1 but the ANE cannot be opened: {e}"));
    let mut p = CompilePolicy::new(dev, WeightReload::Off);
    let a = p.compile(&scale_spec(2.0)).unwrap();
    let a2 = p.compile(&scale_spec(2.0)).unwrap();
    assert_eq!(a, a2, "identical program reused");
    let b = p.compile(&scale_spec(3.0)).unwrap();
    check_scale(&mut p, a, 2.0);
    check_scale(&mut p, b, 3.0);
    let err = p.compile(&scale_spec(4.0)).unwrap_err();
    assert!(
        matches!(
            err,
            DeviceError::CompileBudgetExhausted { used: 2, budget: 2 }
        ),
        "{err}"
    );
    assert_eq!(
        p.policy_stats(),
        PolicyStats {
            compiled: 2,
            reused: 1,
            reloaded: 0,
            refused: 1
        }
    );
    assert_eq!(p.inner().compile_budget().used(), 2);
    for k in [a, a2, b] {
        p.unload(k).unwrap();
    }
    assert_eq!(p.stats().live_kernels, 0);
}

#[test]
fn weight_reload_probe() {
    let Some(_lock) = enabled("weight_reload_probe") else {
        return;
    };
    let mut dev = device();
    let before = dev.compile_budget().used();
    let o = probe::weight_reload(&mut dev);
    eprintln!("donor reload: {o:?} (reference §2.9 / §14 question 3)");
    assert!(!matches!(o, ReloadObservation::Failed(_)), "{o:?}");
    assert_ne!(o, ReloadObservation::Unsupported);
    assert_eq!(
        dev.compile_budget().used(),
        before + 1,
        "only the donor compile counts"
    );
}

/// Deterministic values in [−a, a), rounded to fp16.
fn rand(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut z = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            z ^= z << 13;
            z ^= z >> 7;
            z ^= z << 17;
            let u = (z >> 40) as f32 / (1u64 << 24) as f32;
            half::f16::from_f32((2.0 * u - 1.0) * a).to_f32()
        })
        .collect()
}

/// SmolLM2-135M shapes (GQA 9/3 heads) with a smaller vocabulary, fp16 surfaces.
fn smollm2_like() -> Geometry {
    Geometry {
        dim: 576,
        kv_dim: 192,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        ffn_dim: 1536,
        vocab: 16_384,
        rms_eps: 1e-5,
        rope_theta: 100_000.0,
        lanes: lanes_for(576, 2),
        max_seq: 256,
        io: DType::Fp16,
    }
}

fn random_layer(g: &Geometry, seed: u64) -> LayerF32 {
    let (d, kv, h) = (g.dim, g.kv_dim, g.ffn_dim);
    let s = |cols: usize| (3.0 / cols as f32).sqrt();
    LayerF32 {
        attn_norm: rand(d, seed, 1.0).iter().map(|v| 1.0 + 0.5 * v).collect(),
        wq: rand(d * d, seed + 1, s(d)),
        wk: rand(kv * d, seed + 2, s(d)),
        wv: rand(kv * d, seed + 3, s(d)),
        wo: rand(d * d, seed + 4, s(d)),
        ffn_norm: rand(d, seed + 5, 1.0)
            .iter()
            .map(|v| 1.0 + 0.5 * v)
            .collect(),
        w_gate: rand(h * d, seed + 6, s(d)),
        w_up: rand(h * d, seed + 7, s(d)),
        w_down: rand(d * h, seed + 8, s(h)),
    }
}

/// Worst relative RMS difference over the outputs of `kernel` on the ANE vs the fp16 simulator.
fn ane_vs_sim(kernel: &Kernel, g: &Geometry) -> f32 {
    let inputs = probe_inputs(kernel, g);
    let mut sim = SimDevice::new(SimOptions {
        precision: Precision::Fp16,
        budget: CompileBudget::private(10),
        ..SimOptions::default()
    });
    let sid = sim
        .compile(&kernel.spec())
        .unwrap_or_else(|e| panic!("sim: {e}"));
    let want = eval_once(&mut sim, sid, kernel, &inputs).unwrap_or_else(|e| panic!("sim: {e}"));
    let mut dev = device();
    let id = dev
        .compile(&kernel.spec())
        .unwrap_or_else(|e| panic!("{}: {e}", kernel.label));
    let got = eval_once(&mut dev, id, kernel, &inputs).unwrap_or_else(|e| panic!("{e}"));
    dev.unload(id).unwrap();
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let (rel, max) = compare(g, w);
        eprintln!(
            "{} output {i}: relative RMS {rel:.2e}, max |diff| {max:.3}",
            kernel.label
        );
        worst = worst.max(rel);
    }
    worst
}

#[test]
fn fused_layer_kernel_matches_the_simulator() {
    let Some(_lock) = enabled("fused_layer_kernel_matches_the_simulator") else {
        return;
    };
    let g = smollm2_like();
    let layers: Vec<LayerF32> = (0..3).map(|i| random_layer(&g, 10 + 10 * i)).collect();
    let kernel = fused_layers(&g, 0, &layers).unwrap_or_else(|e| panic!("{e}"));
    let worst = ane_vs_sim(&kernel, &g);
    assert!(worst < 5e-2, "ANE vs fp16 simulator: relative RMS {worst}");
}

#[test]
fn head_kernel_matches_the_simulator() {
    let Some(_lock) = enabled("head_kernel_matches_the_simulator") else {
        return;
    };
    let g = smollm2_like();
    let norm: Vec<f32> = rand(g.dim, 3, 1.0).iter().map(|x| 1.0 + 0.5 * x).collect();
    let cls = rand(g.vocab * g.dim, 4, 0.2);
    let kernel = head(&g, &norm, &cls).unwrap_or_else(|e| panic!("{e}"));
    let worst = ane_vs_sim(&kernel, &g);
    assert!(worst < 5e-2, "ANE vs fp16 simulator: relative RMS {worst}");
}

/// Lowest index wins ties (strict `>`).
fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn greedy(
    b: &mut dyn engine::Backend,
    tok: &model::Tokenizer,
    prompt: &[u32],
    n: usize,
) -> Vec<u32> {
    let mut logits = b.forward(prompt, 0).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let mut pos = prompt.len();
    while out.len() < n {
        let t = argmax(&logits) as u32;
        out.push(t);
        if tok.is_end_of_generation(t) || out.len() == n {
            break;
        }
        logits = b.forward(&[t], pos).unwrap_or_else(|e| panic!("{e}"));
        pos += 1;
    }
    out
}

#[test]
fn smollm2_greedy_generation_matches_the_cpu_backend() {
    let Some(_lock) = enabled("smollm2_greedy_generation_matches_the_cpu_backend") else {
        return;
    };
    let path = model::cache::default_model_path()
        .unwrap_or_else(|e| panic!("the real model is needed (run `espresso pull`): {e}"));
    let gguf = model::GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let tok = model::Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{e}"));
    let weights = || model::LlamaWeights::from_gguf(&gguf).unwrap_or_else(|e| panic!("{e}"));
    let mut cpu = cpu::CpuBackend::new(
        weights(),
        cpu::CpuOptions {
            exact: true,
            threads: 0,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dev = hw::open_device().unwrap_or_else(|e| panic!("{e}"));
    let mut ane = AneBackend::new(weights(), dev, AneOptions::default())
        .unwrap_or_else(|e| panic!("ANE backend: {e}"));
    let prompts = [
        "The capital of France is",
        "Once upon a time, in a small village,",
        "def fibonacci(n):",
        "The three primary colors are",
        "Water boils at a temperature of",
    ];
    let mut agree = 0;
    for p in prompts {
        let ids = tok
            .encode_with_bos(p, false)
            .unwrap_or_else(|e| panic!("{e}"));
        let want = greedy(&mut cpu, &tok, &ids, 32);
        let got = greedy(&mut ane, &tok, &ids, 32);
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        eprintln!("{p:?}: first difference at {first_diff:?}");
        assert_eq!(got.first(), want.first(), "{p:?}: first token differs");
        agree += (got == want) as usize;
    }
    eprintln!("{agree}/5 prompts identical for 32 greedy tokens (fp16 ANE vs exact CPU)");
    assert!(agree >= 4, "only {agree}/5 prompts agree");
}

/// SmolLM2-135M's block shapes (GQA 9/3 heads, dim 576, FFN 1536) for the training kernels.
fn smollm2_train_config() -> model::LlamaConfig {
    model::LlamaConfig {
        n_layers: 2,
        dim: 576,
        ffn_dim: 1536,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        vocab_size: 256,
        context_length: 256,
        rope_theta: 100000.0,
        rms_eps: 1e-5,
    }
}

/// A tiny GQA shape (4 heads / 2 KV heads, dim 64).
fn tiny_train_config() -> model::LlamaConfig {
    model::LlamaConfig {
        dim: 64,
        ffn_dim: 128,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        ..smollm2_train_config()
    }
}

/// The four training kernels (weights as inputs) compile on the ANE and agree with the f32
/// simulator on probe inputs (the trainer's start-up self-check), at a tiny shape and at
/// SmolLM2's block shape with 64-token sequences.
#[test]
fn training_kernels_match_the_f32_simulator() {
    let Some(_lock) = enabled("training_kernels_match_the_f32_simulator") else {
        return;
    };
    use ane_llm::train::{kernels, self_check, TrainGeometry};
    let mut dev = device();
    let tiny = tiny_train_config();
    for (cfg, seq) in [(tiny, 16), (smollm2_train_config(), 64)] {
        let g = TrainGeometry::new(&cfg, seq, DType::Fp16).expect("geometry");
        for k in [
            kernels::layer_forward(&g),
            kernels::ffn_backward(&g),
            kernels::attention_backward(&g),
            kernels::qkv_backward(&g),
        ] {
            let k = k.expect("kernel builds");
            let id = dev
                .compile(&k.spec())
                .unwrap_or_else(|e| panic!("{} (dim {}): {e}", k.label, cfg.dim));
            self_check(&mut dev, id, &k).unwrap_or_else(|e| panic!("{e}"));
            eprintln!("{} (dim {}, T {seq}): ok", k.label, cfg.dim);
            dev.unload(id).expect("unload");
        }
    }
}

/// Ten AdamW steps on the ANE (fp16, dynamic loss scaling) follow the CPU trainer's losses
/// within 2e-2 relative, with 4 compiles for the whole run.
#[test]
fn ane_trainer_follows_the_cpu_trainer() {
    let Some(_lock) = enabled("ane_trainer_follows_the_cpu_trainer") else {
        return;
    };
    use engine::train::{
        optimizer_step_scaled, Batch, LossScaler, LossScaling, OptimState, Optimizer, Params,
    };
    let cfg = tiny_train_config();
    let seq = 16;
    let batch = |s: u64| {
        let tok = |i: u64| (engine::train::params::uniform(99, s % 2, i) * 256.0) as u32;
        Batch {
            batch: 2,
            seq_len: seq,
            inputs: (0..2 * seq as u64).map(tok).collect(),
            targets: (1..=2 * seq as u64).map(tok).collect(),
        }
    };
    let opt = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let run = |backend: &mut dyn engine::train::TrainBackend, mode| {
        let mut p = Params::init(&cfg, true, 7);
        let mut state = OptimState::new(&opt, p.data.len());
        let mut grads = vec![0f32; p.data.len()];
        let mut scaler = LossScaler::new(mode);
        (1..=10u64)
            .map(|k| {
                optimizer_step_scaled(
                    backend,
                    &mut p,
                    &mut grads,
                    &mut state,
                    &opt,
                    &[batch(k)],
                    k,
                    3e-3,
                    1.0,
                    &mut scaler,
                )
                .expect("step")
                .loss
            })
            .collect::<Vec<f64>>()
    };
    let mut cpu = cpu::train::model::CpuTrainer::new(2).expect("cpu trainer");
    let want = run(&mut cpu, LossScaling::Off);
    let mut ane = ane_llm::train::AneTrainer::new(Box::new(device()), &cfg, DType::Fp16, seq)
        .unwrap_or_else(|e| panic!("{e}"));
    let got = run(&mut ane, LossScaling::DYNAMIC);
    for (k, (a, c)) in got.iter().zip(&want).enumerate() {
        let rel = (a - c).abs() / c.abs();
        eprintln!("step {}: cpu {c:.5} ane {a:.5} rel {rel:.2e}", k + 1);
        assert!(rel <= 2e-2, "step {}: {a} vs {c}", k + 1);
    }
    assert_eq!(
        ane.compiles(),
        4,
        "weights are inputs: 4 compiles for the run"
    );
}
