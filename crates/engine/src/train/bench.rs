//! Timing of optimizer steps on a [`TrainBackend`] (`espresso bench-train`): the same AdamW
//! steps the trainer takes, on deterministic random tokens, measured per step.

use std::time::Instant;

use super::scale::{LossScaler, LossScaling};
use super::step::optimizer_step_scaled;
use super::{Batch, OptimState, Optimizer, Params, StepError, TrainBackend};

/// The shape of the steps to time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainBenchOptions {
    pub seq_len: usize,
    pub batch: usize,
    pub grad_accum: usize,
    /// Unmeasured steps first (kernels compiled, caches warm).
    pub warmup: usize,
    /// Measured steps.
    pub steps: usize,
    pub loss_scaling: LossScaling,
}

/// What [`bench_steps`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBenchReport {
    pub backend: String,
    /// Wall time of each measured step, milliseconds.
    pub step_ms: Vec<f64>,
    /// Tokens per optimizer step (`batch × grad_accum × seq_len`).
    pub tokens_per_step: usize,
    /// Kernel dispatches per measured step (device backends).
    pub dispatches_per_step: Option<f64>,
    /// Compiles after setup and after the last step (device backends): equal when weights are
    /// kernel inputs.
    pub compiles: Option<(u64, u64)>,
    /// Steps skipped by loss scaling during the measurement.
    pub skipped: usize,
}

impl TrainBenchReport {
    /// (mean, sample standard deviation) of the step times.
    pub fn ms_per_step(&self) -> (f64, f64) {
        let n = self.step_ms.len() as f64;
        let mean = self.step_ms.iter().sum::<f64>() / n.max(1.0);
        let var = self.step_ms.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        (mean, var.sqrt())
    }

    pub fn tokens_per_s(&self) -> f64 {
        self.tokens_per_step as f64 / (self.ms_per_step().0 / 1e3)
    }
}

/// Micro-batches of step `step`: random token ids below `vocab` (a pure function of `step`).
pub fn random_batches(vocab: usize, o: &TrainBenchOptions, step: u64) -> Vec<Batch> {
    (0..o.grad_accum as u64)
        .map(|a| {
            let n = (o.batch * (o.seq_len + 1)) as u64;
            let stream = step * 1000 + a;
            let ids: Vec<u32> = (0..n)
                .map(|i| (super::params::uniform(0xbe7c, stream, i) * vocab as f64) as u32)
                .collect();
            let (mut inputs, mut targets) = (Vec::new(), Vec::new());
            for row in ids.chunks_exact(o.seq_len + 1) {
                inputs.extend_from_slice(&row[..o.seq_len]);
                targets.extend_from_slice(&row[1..]);
            }
            Batch {
                batch: o.batch,
                seq_len: o.seq_len,
                inputs,
                targets,
            }
        })
        .collect()
}

/// Take `warmup + steps` AdamW steps of `params` on `backend` and time the last `steps`.
pub fn bench_steps(
    backend: &mut dyn TrainBackend,
    params: &mut Params,
    o: &TrainBenchOptions,
) -> Result<TrainBenchReport, StepError> {
    let opt = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut state = OptimState::new(&opt, params.data.len());
    let mut grads = vec![0f32; params.data.len()];
    let mut scaler = LossScaler::new(o.loss_scaling);
    let vocab = params.layout.config.vocab_size;
    let mut step_ms = Vec::with_capacity(o.steps);
    let mut skipped = 0;
    let mut at_start = None;
    for k in 1..=(o.warmup + o.steps) as u64 {
        if k == o.warmup as u64 + 1 {
            at_start = backend.device_counters();
        }
        let micro = random_batches(vocab, o, k);
        let t0 = Instant::now();
        let r = optimizer_step_scaled(
            backend,
            params,
            &mut grads,
            &mut state,
            &opt,
            &micro,
            k,
            1e-4,
            1.0,
            &mut scaler,
        )?;
        if k > o.warmup as u64 {
            step_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            skipped += usize::from(r.skipped);
        }
    }
    let at_end = backend.device_counters();
    let (dispatches_per_step, compiles) = match (at_start, at_end) {
        (Some(a), Some(b)) => (
            Some((b.dispatches - a.dispatches) as f64 / o.steps.max(1) as f64),
            Some((a.compiles, b.compiles)),
        ),
        _ => (None, None),
    };
    Ok(TrainBenchReport {
        backend: backend.name(),
        step_ms,
        tokens_per_step: o.batch * o.grad_accum * o.seq_len,
        dispatches_per_step,
        compiles,
        skipped,
    })
}
