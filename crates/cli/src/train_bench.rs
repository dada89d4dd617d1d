//! `espresso bench-train`: training steps timed on each backend, alternating in one run, and
//! the cost model's predicted ANE time per step (a planning estimate, printed as one).

use crate::load::{open_model_file, resolve_threads, SimPrecision};
use crate::train_cmd::{default_loss_scaling, make_backend, shape_from_file, TrainBackendChoice};
use anyhow::{bail, Context, Result};
use clap::Args;
use engine::train::bench::{bench_steps, TrainBenchOptions, TrainBenchReport};
use engine::train::{ParamLayout, Params};
use model::{GgufFile, LlamaWeights, Tokenizer};
use std::path::PathBuf;

/// Time training steps (AdamW on random tokens) on each backend, side by side in one run,
/// alternating over --rounds; print ms/step, tokens/s and dispatches per step, and the cost
/// model's predicted ANE ms/step of the same step (a planning estimate, not a measurement).
#[derive(Args)]
pub struct BenchTrainArgs {
    /// The model whose shape and weights are trained (default: the default model).
    #[arg(
        short = 'm',
        long = "model",
        value_name = "PATH.gguf",
        conflicts_with = "config"
    )]
    model: Option<PathBuf>,
    /// A from-scratch shape instead (JSON as for `train --config`), random weights.
    #[arg(long, value_name = "FILE.json")]
    config: Option<PathBuf>,
    /// With --config: the GGUF whose vocabulary the shape uses (default: the default model).
    #[arg(long, value_name = "PATH.gguf")]
    tokenizer: Option<PathBuf>,
    #[arg(long = "seq-len", value_name = "S", default_value_t = 64)]
    seq_len: usize,
    #[arg(long, value_name = "B", default_value_t = 1)]
    batch: usize,
    #[arg(long = "grad-accum", value_name = "A", default_value_t = 1)]
    grad_accum: usize,
    /// Measured steps per backend and round.
    #[arg(long, value_name = "N", default_value_t = 3)]
    steps: usize,
    /// Unmeasured steps per backend before its first round.
    #[arg(long, value_name = "N", default_value_t = 1)]
    warmup: usize,
    /// Rounds; each round runs every backend once, in turn (noise hits all alike).
    #[arg(long, value_name = "R", default_value_t = 2)]
    rounds: usize,
    /// Backends to time, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu,ane-sim")]
    backends: Vec<TrainBackendChoice>,
    /// Numerics of ane-sim.
    #[arg(long = "sim-precision", value_enum, default_value_t = SimPrecision::Fp16)]
    sim_precision: SimPrecision,
    /// Chip profile of the prediction (M1, M2, M3, M3 Max, M4, M4 Pro, M4 Max).
    #[arg(long, default_value = "M4")]
    chip: String,
    /// Only the prediction: time nothing (for shapes too large to run on the simulator).
    #[arg(long = "predict-only")]
    predict_only: bool,
    /// CPU worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long)]
    json: bool,
}

pub fn run(a: BenchTrainArgs) -> Result<()> {
    if a.seq_len == 0 || a.batch == 0 || a.grad_accum == 0 || a.steps == 0 || a.rounds == 0 {
        bail!("--seq-len, --batch, --grad-accum, --steps and --rounds must be at least 1");
    }
    let chip = ane::cost::ChipProfile::by_name(&a.chip)
        .with_context(|| format!("unknown chip profile '{}'", a.chip))?;
    // The shape, and (when something runs) the starting weights.
    let (name, params) = match &a.config {
        Some(cfg) => {
            let (gguf, _) = open_model_file(a.tokenizer.as_deref())?;
            let vocab = Tokenizer::from_gguf(&gguf)?.vocab_size();
            let (config, tied) = shape_from_file(cfg, vocab)?;
            let name = cfg.display().to_string();
            (name, Params::init(&config, tied, 0))
        }
        None => {
            let (gguf, name): (GgufFile, String) = open_model_file(a.model.as_deref())?;
            let w = LlamaWeights::from_gguf(&gguf)?;
            let params = if a.predict_only {
                // The prediction needs the shape only.
                let layout = ParamLayout::of_weights(&w);
                Params {
                    data: Vec::new(),
                    layout,
                }
            } else {
                Params::from_weights(&w)
            };
            (name, params)
        }
    };
    let config = params.layout.config.clone();
    if a.seq_len > config.context_length {
        bail!(
            "--seq-len {} is above the model's context length {}",
            a.seq_len,
            config.context_length
        );
    }
    let prediction =
        ane_llm::train::predict_step(&config, a.seq_len, a.batch * a.grad_accum, chip)?;

    let threads = resolve_threads(a.threads);
    let mut results: Vec<TrainBenchReport> = Vec::new();
    if !a.predict_only {
        let mut runs = Vec::new();
        for &choice in &a.backends {
            let backend = make_backend(choice, a.sim_precision, &config, a.seq_len, threads)?;
            runs.push((choice, backend, params.clone(), None::<TrainBenchReport>));
        }
        for round in 0..a.rounds {
            for (choice, backend, p, merged) in runs.iter_mut() {
                let o = TrainBenchOptions {
                    seq_len: a.seq_len,
                    batch: a.batch,
                    grad_accum: a.grad_accum,
                    warmup: if round == 0 { a.warmup } else { 0 },
                    steps: a.steps,
                    loss_scaling: default_loss_scaling(*choice, a.sim_precision),
                };
                let r = bench_steps(backend.as_mut(), p, &o)?;
                if !a.json {
                    eprintln!(
                        "round {}/{}: {} {:.1} ms/step",
                        round + 1,
                        a.rounds,
                        r.backend,
                        r.ms_per_step().0
                    );
                }
                *merged = Some(match merged.take() {
                    None => r,
                    Some(mut m) => {
                        m.step_ms.extend(r.step_ms);
                        m.skipped += r.skipped;
                        m.compiles = match (m.compiles, r.compiles) {
                            (Some((first, _)), Some((_, last))) => Some((first, last)),
                            _ => None,
                        };
                        m
                    }
                });
            }
        }
        results = runs.into_iter().filter_map(|(.., r)| r).collect();
    }

    let tokens = a.batch * a.grad_accum * a.seq_len;
    if a.json {
        let results: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                let (mean, sd) = r.ms_per_step();
                serde_json::json!({
                    "backend": r.backend,
                    "ms_per_step": mean,
                    "ms_per_step_stddev": sd,
                    "tokens_per_s": r.tokens_per_s(),
                    "steps": r.step_ms.len(),
                    "dispatches_per_step": r.dispatches_per_step,
                    "compiles_after_setup": r.compiles.map(|c| c.0),
                    "compiles_at_end": r.compiles.map(|c| c.1),
                    "skipped_steps": r.skipped,
                })
            })
            .collect();
        let kernels: Vec<serde_json::Value> = prediction
            .kernels
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kernel": k.label,
                    "dispatches_per_step": k.dispatches,
                    "predicted_ms_per_dispatch": k.per_dispatch.predicted_ane_ms,
                    "memory_ms": k.per_dispatch.memory_ms,
                    "compute_ms": k.per_dispatch.compute_ms,
                })
            })
            .collect();
        let out = serde_json::json!({
            "model": name,
            "layers": config.n_layers,
            "dim": config.dim,
            "seq_len": a.seq_len,
            "batch": a.batch,
            "grad_accum": a.grad_accum,
            "tokens_per_step": tokens,
            "results": results,
            "prediction": {
                "what": "cost model planning estimate, not a measurement",
                "chip": prediction.chip,
                "ane_ms_per_step": prediction.ane_ms,
                "dispatches_per_step": prediction.dispatches,
                "kernels": kernels,
                "host_gflop_per_step": prediction.host_gflop,
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "model: {name} ({} layers, dim {}, ffn {}, {} heads / {} KV heads, vocab {}); \
         {} × {} × {} = {tokens} tokens per step",
        config.n_layers,
        config.dim,
        config.ffn_dim,
        config.n_heads,
        config.n_kv_heads,
        config.vocab_size,
        a.batch,
        a.grad_accum,
        a.seq_len
    );
    if !results.is_empty() {
        println!("\n| backend | ms/step | tokens/s | dispatches/step | compiles (setup → end) |");
        println!("|---|---:|---:|---:|---:|");
        for r in &results {
            let (mean, sd) = r.ms_per_step();
            let d = r
                .dispatches_per_step
                .map_or("–".into(), |d| format!("{d:.0}"));
            let c = r.compiles.map_or("–".into(), |(s, e)| format!("{s} → {e}"));
            println!(
                "| {} | {mean:.1} ± {sd:.1} | {:.1} | {d} | {c} |",
                r.backend,
                r.tokens_per_s()
            );
            if r.skipped > 0 {
                println!("  ({} step(s) skipped by loss scaling)", r.skipped);
            }
        }
        println!(
            "({} measured steps per backend over {} alternating rounds, after {} warm-up step(s))",
            a.steps * a.rounds,
            a.rounds,
            a.warmup
        );
    }
    println!(
        "\nprediction on {} (cost model: a planning estimate, not a measurement):",
        prediction.chip
    );
    println!(
        "  ANE kernels: {:.2} ms/step over {} dispatches",
        prediction.ane_ms, prediction.dispatches
    );
    for k in &prediction.kernels {
        println!(
            "    {:<26} {:>5} × {:.4} ms (memory {:.4}, compute {:.4}, dispatch {:.4})",
            k.label,
            k.dispatches,
            k.per_dispatch.predicted_ane_ms,
            k.per_dispatch.memory_ms,
            k.per_dispatch.compute_ms,
            k.per_dispatch.dispatch_ms
        );
    }
    println!(
        "  plus host work the model does not price: {:.1} GFLOP of matrix products per step \
         (weight gradients, classifier), embedding, norms and AdamW",
        prediction.host_gflop
    );
    Ok(())
}
