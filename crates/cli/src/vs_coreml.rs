//! `espresso bench --vs coreml MODEL.mlpackage`: our backend and Apple's CoreML
//! (`cpuAndNeuralEngine`, a package from scripts/coreml_export.py) decode the same prompt
//! greedily; both are timed on the host and printed side by side. The CoreML calls live in
//! `ane_macos::coreml` (macOS 15+); elsewhere this says so and stops.

use anyhow::{bail, Result};
use std::path::Path;
use std::time::Instant;

use crate::load::{self, BackendChoice, BackendSpec, Loaded};

/// What `--vs` names, checked before anything is loaded.
pub fn check(vs: &[String], backend: BackendChoice) -> Result<&Path> {
    let [what, path] = vs else {
        bail!("--vs takes two values: coreml MODEL.mlpackage");
    };
    if what != "coreml" {
        bail!("--vs {what:?}: only `coreml` is supported (--vs coreml MODEL.mlpackage)");
    }
    if !matches!(backend, BackendChoice::Ane | BackendChoice::AneSim) {
        bail!("--vs coreml compares the ANE path: use --backend ane (or ane-sim)");
    }
    ane_macos::coreml::availability()?;
    let path = Path::new(path);
    if !path.exists() {
        bail!(
            "{}: no such CoreML package (write one with scripts/coreml_export.py)",
            path.display()
        );
    }
    Ok(path)
}

/// Run both sides on `prompt` for `gen` greedy tokens and print (or `--json`) the comparison.
pub fn run(
    loaded: &Loaded,
    spec: BackendSpec,
    package: &Path,
    prompt: &[u32],
    gen: usize,
    json: bool,
) -> Result<()> {
    if gen == 0 {
        bail!("--vs coreml needs --gen-tokens of at least 1");
    }
    let weights = model::LlamaWeights::from_gguf(&loaded.gguf)?;
    let mut backend = load::make_backend(weights, spec)?;
    let ctx = backend.config().context_length;
    if prompt.len() + gen > ctx + 1 {
        bail!(
            "{} prompt + {gen} generated tokens do not fit the {ctx}-slot cache",
            prompt.len()
        );
    }
    // Ours: prefill in lanes, then one-token steps (the plain decode CoreML also runs).
    let t = Instant::now();
    let mut logits = backend.forward(prompt, 0)?;
    let ours_prefill_ms = t.elapsed().as_secs_f64() * 1e3;
    let before = backend.stats();
    let mut ours = vec![engine::argmax(&logits)];
    let t = Instant::now();
    while ours.len() < gen {
        let pos = prompt.len() + ours.len() - 1;
        logits = backend.forward(&[ours[ours.len() - 1]], pos)?;
        ours.push(engine::argmax(&logits));
    }
    let steps = (gen.max(2) - 1) as f64;
    let ours_ms = t.elapsed().as_secs_f64() * 1e3 / steps;
    let after = backend.stats();
    let predicted = match (after.predicted_device_ms, before.predicted_device_ms) {
        (Some(a), Some(b)) => Some((a - b) / steps),
        _ => None,
    };
    let cm = ane_macos::coreml::greedy(package, prompt, gen, ctx)?;
    let same = ours
        .iter()
        .zip(&cm.tokens)
        .take_while(|(a, b)| a == b)
        .count();
    let ours_what = format!(
        "{} ({} dispatches/token, fused MIL kernels, private ANE API)",
        backend.name(),
        (after.dispatches - before.dispatches) as f64 / steps
    );
    let cm_what = format!(
        "CoreML {} ({}: one token per prediction, KV cache in MLState)",
        cm.compute_units,
        package.display()
    );
    if json {
        let v = serde_json::json!({
            "model": loaded.name,
            "prompt_tokens": prompt.len(),
            "gen_tokens": gen,
            "ours": {
                "backend": backend.name(),
                "runs": ours_what,
                "prefill_ms": ours_prefill_ms,
                "decode_ms_per_token": ours_ms,
                "predicted_ane_ms_per_token": predicted,
                "tokens": ours,
            },
            "coreml": {
                "runs": cm_what,
                "load_ms": cm.load_ms,
                "prefill_ms": cm.prefill_ms,
                "decode_ms_per_token": cm.decode_ms_per_token,
                "tokens": cm.tokens,
            },
            "same_leading_tokens": same,
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "{} — prompt {} tokens, {gen} greedy tokens\n",
        loaded.name,
        prompt.len()
    );
    println!("| side   | prefill ms | decode ms/token | tokens/s | runs");
    println!("| :----- | ---------: | --------------: | -------: | :---");
    for (side, pre, ms, what) in [
        ("ours", ours_prefill_ms, ours_ms, &ours_what),
        ("coreml", cm.prefill_ms, cm.decode_ms_per_token, &cm_what),
    ] {
        println!(
            "| {side:<6} | {pre:>10.1} | {ms:>15.2} | {:>8.1} | {what}",
            1e3 / ms
        );
    }
    println!(
        "\nCoreML compile + load {:.0} ms; greedy tokens agree for the first {same} of {gen}",
        cm.load_ms
    );
    if let Some(p) = predicted {
        println!("ours predicted ANE {p:.3} ms/token (cost model, not a measurement)");
    }
    Ok(())
}
