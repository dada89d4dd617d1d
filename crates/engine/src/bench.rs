//! The benchmark harness behind `espresso bench`: prefill throughput and decode latency
//! (min/median/max over repeats, after warmup) on any [`Backend`], plus peak memory.

use crate::backend::{Backend, BackendError};
use crate::draft::{decode_loop, DraftStats, Drafter, LoopStart};
use crate::sampler::argmax;
use serde::Serialize;
use std::time::Instant;

/// What to run: a prefill of `prompt_tokens` (llama-bench's `pp`), then `gen_tokens` greedy
/// decode steps (`tg`), `warmup` times unmeasured and `repeats` times measured. The prompt
/// is `prompt` when given (real text, for drafting to have something to predict), else
/// [`bench_prompt`] ids. With a drafter, decoding verifies up to `draft_max` tokens per pass.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub warmup: usize,
    pub repeats: usize,
    pub prompt: Option<Vec<u32>>,
    pub draft_max: usize,
}

/// One benchmark result; field names are the `espresso bench --json` keys.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub backend: String,
    pub threads: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub repeats: usize,
    /// Median over repeats of the mean decode step time.
    pub decode_ms_per_token: f64,
    pub decode_ms_per_token_min: f64,
    pub decode_ms_per_token_max: f64,
    pub prefill_tokens_per_s: f64,
    /// Mean and standard deviation over repeats (llama-bench's `t/s ± sd`).
    pub prefill_tokens_per_s_mean: f64,
    pub prefill_tokens_per_s_std: f64,
    pub decode_tokens_per_s_mean: f64,
    pub decode_tokens_per_s_std: f64,
    pub peak_rss_mb: Option<f64>,
    /// Drafting over the measured runs (method "none": one token per pass).
    pub draft: DraftStats,
    /// Tokens committed per decode pass, and the share of proposed tokens kept.
    pub tokens_per_pass: f64,
    pub acceptance: f64,
    /// Device dispatches per decode token (ANE backends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatches_per_token: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compiles: Option<u64>,
    /// Cost-model PREDICTION of ANE time per decode token (not a measurement).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_ane_ms_per_token: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chip_profile: Option<String>,
}

/// Deterministic prompt ids spread over the vocabulary (never id 0).
pub fn bench_prompt(n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| (1 + (i as u64 * 2_654_435_761 % (vocab as u64 - 1))) as u32)
        .collect()
}

/// Peak resident set size of this process in MiB, where the OS tells it.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Mean and sample standard deviation (0 for one value).
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Run the benchmark. `model` and `threads` are only reported.
pub fn run_bench(
    backend: &mut dyn Backend,
    drafter: &mut dyn Drafter,
    model: &str,
    threads: usize,
    opts: &BenchOptions,
) -> Result<BenchReport, BackendError> {
    let cfg = backend.config().clone();
    let prompt = match &opts.prompt {
        Some(p) => p.clone(),
        None => bench_prompt(opts.prompt_tokens, cfg.vocab_size),
    };
    let need = prompt.len() + opts.gen_tokens;
    if prompt.is_empty() || need > cfg.context_length {
        return Err(BackendError::ContextFull {
            pos: need,
            ctx: cfg.context_length,
        });
    }
    let mut decode = Vec::new();
    let mut prefill = Vec::new();
    let mut dispatches = 0u64;
    let mut decode_tokens = 0u64;
    let mut predicted_ms = 0.0;
    let mut draft = DraftStats {
        method: drafter.name().to_string(),
        ..DraftStats::default()
    };
    for rep in 0..opts.warmup + opts.repeats.max(1) {
        let t = Instant::now();
        let logits = backend.forward(&prompt, 0)?;
        let prefill_s = t.elapsed().as_secs_f64();
        let before = backend.stats();
        let first = argmax(&logits);
        let start = LoopStart {
            context: prompt.iter().copied().chain([first]).collect(),
            token: first,
            pos: prompt.len(),
            hidden: backend.hidden_states().map(<[f32]>::to_vec),
        };
        // Greedy, `gen_tokens` decided rows whatever they are (an end token included).
        let mut left = opts.gen_tokens;
        let t = Instant::now();
        let report = if left == 0 {
            Default::default()
        } else {
            decode_loop(
                backend,
                drafter,
                opts.draft_max,
                start,
                need,
                opts.gen_tokens,
                &mut |row, _, _| -> Result<Option<u32>, BackendError> {
                    left -= 1;
                    Ok((left > 0).then(|| argmax(row)))
                },
            )?
        };
        let step_ms = t.elapsed().as_secs_f64() * 1e3 / opts.gen_tokens.max(1) as f64;
        let after = backend.stats();
        if rep >= opts.warmup {
            decode.push(step_ms);
            prefill.push(prompt.len() as f64 / prefill_s);
            dispatches += after.dispatches - before.dispatches;
            decode_tokens += opts.gen_tokens as u64;
            if let (Some(a), Some(b)) = (after.predicted_device_ms, before.predicted_device_ms) {
                predicted_ms += a - b;
            }
            draft.passes += report.draft.passes;
            draft.proposed += report.draft.proposed;
            draft.accepted += report.draft.accepted;
        }
    }
    let stats = backend.stats();
    let device = stats.compiles > 0 || stats.dispatches > 0;
    let per_token = |x: f64| x / decode_tokens.max(1) as f64;
    let (prefill_mean, prefill_std) = mean_std(&prefill);
    let decode_tps: Vec<f64> = decode.iter().map(|ms| 1e3 / ms).collect();
    let (decode_mean, decode_std) = mean_std(&decode_tps);
    Ok(BenchReport {
        model: model.to_string(),
        backend: backend.name(),
        threads,
        prompt_tokens: prompt.len(),
        gen_tokens: opts.gen_tokens,
        repeats: decode.len(),
        decode_ms_per_token_min: decode.iter().cloned().fold(f64::INFINITY, f64::min),
        decode_ms_per_token_max: decode.iter().cloned().fold(0.0, f64::max),
        decode_ms_per_token: median(&mut decode),
        prefill_tokens_per_s: median(&mut prefill),
        prefill_tokens_per_s_mean: prefill_mean,
        prefill_tokens_per_s_std: prefill_std,
        decode_tokens_per_s_mean: decode_mean,
        decode_tokens_per_s_std: decode_std,
        peak_rss_mb: peak_rss_mb(),
        tokens_per_pass: draft.tokens_per_pass(),
        acceptance: draft.acceptance(),
        draft,
        dispatches_per_token: device.then(|| per_token(dispatches as f64)),
        compiles: device.then_some(stats.compiles),
        predicted_ane_ms_per_token: stats.predicted_device_ms.map(|_| per_token(predicted_ms)),
        chip_profile: stats.chip_profile,
    })
}
