//! SmolLM2 decode and prefill timing on the CPU backend (not a test).
//!
//! `cargo bench -p cpu --bench decode -- [--threads N] [--exact] [--prompt N] [--gen N]`
//! Model: `$ESPRESSO_TEST_MODEL`, else the pulled default model.

use engine::Backend;
use model::{GgufFile, LlamaWeights};
use std::time::Instant;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let threads = arg(&args, "--threads", 2);
    let n_prompt = arg(&args, "--prompt", 32);
    let n_gen = arg(&args, "--gen", 64);
    let exact = args.iter().any(|a| a == "--exact");
    let path = match std::env::var_os("ESPRESSO_TEST_MODEL") {
        Some(p) => p.into(),
        None => model::cache::default_model_path()?,
    };
    let file = GgufFile::open(&path)?;
    let weights = LlamaWeights::from_gguf(&file)?;
    let vocab = weights.config.vocab_size as u32;
    let mut be = cpu::CpuBackend::new(weights, cpu::CpuOptions { exact, threads })?;
    let prompt: Vec<u32> = (0..n_prompt as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0 as u32
    };
    // Warm-up (page in the weights), then timed prefill and decode.
    be.forward(&prompt[..4], 0)?;
    let t0 = Instant::now();
    let logits = be.forward(&prompt, 0)?;
    let prefill = t0.elapsed().as_secs_f64();
    let mut tok = argmax(&logits);
    let mut per_token = Vec::with_capacity(n_gen);
    for i in 0..n_gen {
        let t = Instant::now();
        let l = be.forward(&[tok], n_prompt + i)?;
        per_token.push(t.elapsed().as_secs_f64() * 1e3);
        tok = argmax(&l);
    }
    per_token.sort_by(f64::total_cmp);
    println!(
        "{} threads={threads}: prefill {n_prompt} tokens {:.1} tok/s; decode ms/token median {:.2} min {:.2} max {:.2}",
        be.name(),
        n_prompt as f64 / prefill,
        per_token[n_gen / 2],
        per_token[0],
        per_token[n_gen - 1]
    );
    Ok(())
}
