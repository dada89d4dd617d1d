//! The training loop's arithmetic contracts on the CPU trainer: gradient accumulation over
//! micro-batches equals one batch of the same windows, and a batch's gradient is the mean of its
//! sequences' gradients.

use cpu::train::model::CpuTrainer;
use engine::train::data::{step_batches, Shuffle, TokenData};
use engine::train::{optimizer_step, OptimState, Optimizer, Params, TrainBackend};
use model::LlamaConfig;

fn tiny() -> LlamaConfig {
    LlamaConfig {
        n_layers: 2,
        dim: 32,
        ffn_dim: 48,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        vocab_size: 97,
        context_length: 32,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
    }
}

fn data() -> TokenData {
    let tokens: Vec<u32> = (0..400u32).map(|i| (i * 37 + i / 7) % 97).collect();
    TokenData {
        tokens,
        counted: None,
        description: "synthetic".into(),
    }
}

/// `‖a − b‖ / ‖b‖`.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

/// `A=2, B=1` and `A=1, B=2` cut the same windows (the offset formula) and must give the same
/// losses and weights, up to f32 summation order (one GEMM over 2S rows vs two over S rows).
#[test]
fn grad_accumulation_equals_a_bigger_batch() {
    let (s, steps) = (8, 4);
    let d = data();
    let opt = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let mut runs = Vec::new();
    for (a, b) in [(2, 1), (1, 2)] {
        let mut p = Params::init(&tiny(), true, 3);
        let mut st = OptimState::new(&opt, p.data.len());
        let mut g = vec![0f32; p.data.len()];
        let mut trainer = CpuTrainer::new(2).expect("pool");
        let mut losses = Vec::new();
        let mut windows = Vec::new();
        for k in 1..=steps {
            let micro = step_batches(&d, Shuffle::None, k, a, b, s);
            windows.push(
                micro
                    .iter()
                    .flat_map(|m| m.inputs.clone())
                    .collect::<Vec<_>>(),
            );
            let r = optimizer_step(
                &mut trainer,
                &mut p,
                &mut g,
                &mut st,
                &opt,
                &micro,
                k,
                1e-2,
                0.0,
            )
            .expect("step");
            losses.push(r.loss);
        }
        runs.push((losses, windows, p));
    }
    let ((la, wa, pa), (lb, wb, pb)) = (&runs[0], &runs[1]);
    assert_eq!(wa, wb, "the two layouts must read the same windows");
    for (k, (x, y)) in la.iter().zip(lb).enumerate() {
        assert!(
            (x - y).abs() <= 1e-6 * y.abs(),
            "step {}: {x} vs {y}",
            k + 1
        );
    }
    // Compare what training changed: AdamW divides by √v, so entries whose gradient is ~0
    // amplify summation-order noise; the update as a whole must still agree closely.
    let init = Params::init(&tiny(), true, 3).data;
    let delta = |p: &Params| {
        p.data
            .iter()
            .zip(&init)
            .map(|(&x, &y)| x - y)
            .collect::<Vec<_>>()
    };
    let r = rel(&delta(pa), &delta(pb));
    eprintln!("relative difference of the {steps}-step updates: {r:e}");
    assert!(r < 1e-4, "updates after {steps} steps differ by {r:e}");
    assert!(la[steps as usize - 1] < la[0], "loss did not fall: {la:?}");
}

/// The gradient of a batch of two sequences is the mean of the two single-sequence gradients
/// (each scaled by its share of the counted tokens), i.e. sequences do not leak into each other.
#[test]
fn sequences_of_a_batch_are_independent() {
    let d = data();
    let p = Params::init(&tiny(), false, 11);
    let mut trainer = CpuTrainer::new(2).expect("pool");
    let both = &step_batches(&d, Shuffle::None, 1, 1, 2, 8)[0];
    let mut g2 = vec![0f32; p.data.len()];
    let l2 = trainer
        .accumulate(&p, both, 1.0 / 16.0, &mut g2)
        .expect("batch");
    // The forward-only loss is the same number.
    assert_eq!(trainer.loss(&p, both).expect("loss"), l2);
    let mut g1 = vec![0f32; p.data.len()];
    let mut l1 = 0.0;
    for part in step_batches(&d, Shuffle::None, 1, 2, 1, 8) {
        l1 += trainer
            .accumulate(&p, &part, 1.0 / 16.0, &mut g1)
            .expect("part");
    }
    assert!((l1 - l2).abs() <= 1e-6 * l2, "{l1} vs {l2}");
    let r = rel(&g1, &g2);
    assert!(r < 1e-5, "gradients differ by {r:e}");
}
