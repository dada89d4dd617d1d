//! Time per proposal of a draft head: `cargo run --release -p cpu --example draft_head_cost --
//! MODEL.gguf HEAD.gguf [THREADS]`. Feeds a real hidden state (from a short prompt) and
//! prints the mean milliseconds per `propose_one`.

use cpu::draft_head::{DraftHead, HeadFile};
use cpu::{CpuBackend, CpuOptions};
use engine::Backend;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model), Some(head)) = (args.get(1), args.get(2)) else {
        return Err("usage: draft_head_cost MODEL.gguf HEAD.gguf [THREADS]".into());
    };
    let threads: usize = args.get(3).map(|t| t.parse()).transpose()?.unwrap_or(1);
    let gguf = model::GgufFile::open(model)?;
    let weights = model::LlamaWeights::from_gguf(&gguf)?;
    let file = HeadFile::open(std::path::Path::new(head))?;
    let mut drafter = DraftHead::new(&file, &weights, threads)?;
    let opts = CpuOptions {
        exact: false,
        threads: 2,
    };
    let mut backend = CpuBackend::new(weights.clone(), opts)?;
    let logits = backend.forward(&[1, 504, 3458, 314, 260], 0)?;
    let h = backend.hidden_states().ok_or("no hidden states")?.to_vec();
    let c = engine::argmax(&logits);
    for _ in 0..50 {
        drafter.propose_one(c, &h);
    }
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        drafter.propose_one(c, &h);
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / n as f64;
    println!(
        "{ms:.3} ms per proposal ({threads} threads, vocabulary {})",
        file.vocab.len()
    );
    Ok(())
}
