//! `espresso train-draft`: train a draft head for a model by self-distillation.
//!
//! Prompt files (`--data`):
//! - `.json`: `{"chat": [TEXT, ...], "raw": [TEXT, ...]}`;
//! - `.jsonl`: one object per line, `{"chat": TEXT}` (one user message in the model's chat
//!   template) or `{"text": TEXT}` (raw text, BOS as the model wants);
//! - anything else: plain text, one raw prompt per non-empty line.

use crate::load::{resolve_threads, BackendChoice, BackendSpec, Loaded, SimPrecision};
use anyhow::{bail, Context, Result};
use clap::Args;
use cpu::draft_head::{file_fingerprint, HeadFile};
use cpu::draft_train::{
    chain_judge, distill_batch, gated, judge, train_head, DistillData, HeadTrainOptions,
};
use model::chat::ChatMessage;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct TrainDraftArgs {
    /// The model to draft for (default: the pulled SmolLM2-135M-Instruct).
    #[arg(short = 'm', long = "model", value_name = "PATH")]
    model: Option<PathBuf>,
    /// Training prompts: .json {"chat": [..], "raw": [..]}, .jsonl {"chat": ..} / {"text": ..}
    /// lines, or plain text with one raw prompt per line.
    #[arg(long, value_name = "PATH")]
    data: PathBuf,
    /// Where to write the head (GGUF).
    #[arg(long, value_name = "HEAD.gguf")]
    out: PathBuf,
    /// Greedy tokens generated per prompt (one training triple each).
    #[arg(long = "tokens-per-prompt", value_name = "N", default_value_t = 96)]
    tokens_per_prompt: usize,
    /// Use at most this many prompts (in file order).
    #[arg(long = "max-prompts", value_name = "N")]
    max_prompts: Option<usize>,
    /// Cache of the distilled triples: read it if it exists (skipping generation), else
    /// write it after generating.
    #[arg(long, value_name = "FILE")]
    triples: Option<PathBuf>,
    /// Prompts continued at once (one pass over the weights serves a decode step of each).
    #[arg(long, value_name = "N", default_value_t = 8)]
    slots: usize,
    /// Held-out prompts (same formats as --data): after training, the head's top-1 agreement
    /// with the model's greedy choices on their continuations (its acceptance rate with one
    /// drafted token) is reported.
    #[arg(long = "eval-data", value_name = "PATH")]
    eval_data: Option<PathBuf>,
    /// Cache of the held-out prompts' triples, like --triples.
    #[arg(long = "eval-triples", value_name = "FILE")]
    eval_triples: Option<PathBuf>,
    /// Optimizer steps.
    #[arg(long, value_name = "N", default_value_t = 6000)]
    steps: usize,
    /// Triples per step.
    #[arg(long, value_name = "N", default_value_t = 256)]
    batch: usize,
    /// Peak learning rate (AdamW, linear warmup, cosine decay to 0).
    #[arg(long, value_name = "LR", default_value_t = 1e-3)]
    lr: f64,
    /// Warmup steps.
    #[arg(long, value_name = "N", default_value_t = 50)]
    warmup: usize,
    /// AdamW decoupled weight decay.
    #[arg(long = "weight-decay", value_name = "WD", default_value_t = 0.0)]
    weight_decay: f64,
    /// Weight of the feature regression (the head's state towards the model's next hidden
    /// state), which makes chained proposals (--draft-max > 2) work; 0 = cross-entropy only.
    #[arg(long = "feature-weight", value_name = "W", default_value_t = 30.0)]
    feature_weight: f64,
    /// Width of the head's hidden layer (a multiple of 32).
    #[arg(long, value_name = "H", default_value_t = 1024)]
    hidden: usize,
    /// Size of the reduced vocabulary (the most frequent distilled tokens).
    #[arg(long, value_name = "V", default_value_t = 4096)]
    vocab: usize,
    /// Share of the triples held out for the top-1 agreement.
    #[arg(long = "val-fraction", value_name = "F", default_value_t = 0.05)]
    val_fraction: f64,
    /// Seed of initialization, shuffling and the held-out split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// CPU worker threads (default: all cores).
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
}

/// A training prompt: chat text (to wrap in the template) or raw text.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Chat(String),
    Raw(String),
}

/// Read a prompt file in one of the formats of the module docs.
pub fn read_prompts(path: &Path) -> Result<Vec<Prompt>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompts from {}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let strings = |v: &serde_json::Value, key: &str| -> Result<Vec<String>> {
        match v.get(key) {
            None => Ok(Vec::new()),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .with_context(|| format!("{}: \"{key}\" must hold strings", path.display())),
            Some(_) => bail!("{}: \"{key}\" must be a list of strings", path.display()),
        }
    };
    let prompts: Vec<Prompt> = match ext {
        "json" => {
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?;
            let chat = strings(&v, "chat")?.into_iter().map(Prompt::Chat);
            chat.chain(strings(&v, "raw")?.into_iter().map(Prompt::Raw))
                .collect()
        }
        "jsonl" => {
            let mut out = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let at = || format!("{} line {}", path.display(), i + 1);
                let v: serde_json::Value =
                    serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
                let get = |k: &str| v.get(k).and_then(|s| s.as_str()).map(str::to_string);
                out.push(match (get("chat"), get("text")) {
                    (Some(c), None) => Prompt::Chat(c),
                    (None, Some(t)) => Prompt::Raw(t),
                    _ => bail!(
                        "{}: expected {{\"chat\": TEXT}} or {{\"text\": TEXT}}",
                        at()
                    ),
                });
            }
            out
        }
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Prompt::Raw(l.to_string()))
            .collect(),
    };
    if prompts
        .iter()
        .any(|p| matches!(p, Prompt::Chat(s) | Prompt::Raw(s) if s.is_empty()))
    {
        bail!("{}: a prompt is empty", path.display());
    }
    if prompts.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(prompts)
}

/// Token ids of a prompt for `loaded`'s model.
pub fn encode_prompt(loaded: &Loaded, p: &Prompt) -> Result<Vec<u32>> {
    Ok(match p {
        Prompt::Chat(t) => loaded.encode_chat(&[ChatMessage::user(t.clone())])?,
        Prompt::Raw(t) => loaded.tokenizer.encode_with_bos(t, false)?,
    })
}

/// How [`distilled`] generates: on which backend, the model's width, tokens per prompt and
/// prompts at once.
#[derive(Clone, Copy)]
struct Distill {
    spec: BackendSpec,
    dim: usize,
    tokens: usize,
    slots: usize,
}

/// The triples of `prompts`' greedy continuations: read from `cache` if it exists, else
/// distilled with the CPU backend (`slots` prompts at once) and written to `cache`.
fn distilled(
    loaded: &Loaded,
    how: &Distill,
    prompts: &[Prompt],
    cache: Option<&Path>,
    label: &str,
) -> Result<DistillData> {
    let Distill {
        spec,
        dim,
        tokens,
        slots,
    } = *how;
    if let Some(p) = cache.filter(|p| p.is_file()) {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        let d = DistillData::from_bytes(&bytes)
            .with_context(|| format!("{} is not a triples file", p.display()))?;
        if d.dim != dim {
            bail!(
                "{} holds triples of dim {}, the model has {dim}",
                p.display(),
                d.dim
            );
        }
        eprintln!("read {} {label} triples from {}", d.len(), p.display());
        return Ok(d);
    }
    let mut backend = loaded.backend(spec)?;
    let ids = prompts
        .iter()
        .map(|p| encode_prompt(loaded, p))
        .collect::<Result<Vec<_>>>()?;
    let mut data = DistillData::new(dim);
    let is_stop = |t: u32| loaded.tokenizer.is_end_of_generation(t);
    let t0 = Instant::now();
    distill_batch(
        backend.as_mut(),
        &ids,
        tokens,
        slots,
        &is_stop,
        &mut data,
        &mut |done, triples| {
            let s = t0.elapsed().as_secs_f64();
            eprint!(
                "\r{label}  {done}/{} prompts  {triples} triples  {:.0} tokens/s   ",
                ids.len(),
                triples as f64 / s.max(1e-9)
            );
        },
    )?;
    eprintln!();
    if let Some(p) = cache {
        std::fs::write(p, data.to_bytes())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(data)
}

pub fn run(a: TrainDraftArgs) -> Result<()> {
    if a.slots == 0 {
        bail!("--slots must be at least 1");
    }
    if a.steps == 0 || a.batch == 0 || a.vocab == 0 || a.hidden == 0 {
        bail!("--steps, --batch, --vocab and --hidden must be at least 1");
    }
    if !a.hidden.is_multiple_of(32) {
        bail!("--hidden must be a multiple of 32 (got {})", a.hidden);
    }
    if !(0.0..1.0).contains(&a.val_fraction) {
        bail!("--val-fraction must be in [0, 1) (got {})", a.val_fraction);
    }
    let prompts = read_prompts(&a.data)?;
    let prompts = &prompts[..a.max_prompts.unwrap_or(usize::MAX).min(prompts.len())];
    let loaded = Loaded::open(a.model.as_deref())?;
    let (model_sha256, model_size) = file_fingerprint(&loaded.gguf.path)?;
    let weights = model::LlamaWeights::from_gguf(&loaded.gguf)?;
    let dim = weights.config.dim;
    let threads = resolve_threads(a.threads);

    let threads_spec = BackendSpec {
        choice: BackendChoice::Cpu,
        exact: false,
        threads,
        sim_precision: SimPrecision::Fp16,
    };
    let how = Distill {
        spec: threads_spec,
        dim,
        tokens: a.tokens_per_prompt,
        slots: a.slots,
    };
    let data = distilled(&loaded, &how, prompts, a.triples.as_deref(), "distill")?;
    let eval = match &a.eval_data {
        Some(p) => {
            let prompts = read_prompts(p)?;
            let cache = a.eval_triples.as_deref();
            Some(distilled(&loaded, &how, &prompts, cache, "held-out")?)
        }
        None => None,
    };
    if data.is_empty() {
        bail!("the prompts gave no training triples");
    }
    let opts = HeadTrainOptions {
        hidden: a.hidden,
        vocab: a.vocab,
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        seed: a.seed,
        val_fraction: a.val_fraction,
        threads,
        feature_weight: a.feature_weight,
    };
    let t0 = Instant::now();
    let trained = train_head(&data, &weights, &opts, &mut |s| {
        eprint!(
            "\rstep {}/{}  loss {:.4}  lr {:.2e}  {:.2} s/step   ",
            s.step,
            s.steps,
            s.loss,
            s.lr,
            t0.elapsed().as_secs_f64() / s.step as f64
        );
    })?;
    eprintln!();
    let held_out = eval.as_ref().map(|e| {
        (
            judge(&trained, e, &weights),
            chain_judge(&trained, e, &weights),
        )
    });
    let head = HeadFile {
        params: trained.params,
        vocab: trained.vocab,
        eps: trained.eps,
        model_sha256,
        model_size,
        path: a.out.clone(),
    };
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&a.out)
            .with_context(|| format!("cannot create {}", a.out.display()))?,
    );
    head.write(&mut f)
        .and_then(|_| f.flush())
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    let bytes = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    if let Some((judged, (firsts, seconds))) = held_out {
        println!(
            "held-out prompts ({} triples): the acceptance of one drafted token, proposing only \
             when the head's probability is at least min_p",
            judged.len()
        );
        for min_p in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8] {
            let (share, accepted) = gated(&judged, min_p);
            println!(
                "  min_p {min_p:.1}: proposes at {:5.1}% of steps, {:5.1}% of proposals accepted",
                share * 100.0,
                accepted * 100.0
            );
        }
        println!(
            "  chained (--draft-max 3): the second proposal is accepted {:.1}% of the {firsts} times \
             the first is",
            seconds as f64 * 100.0 / firsts.max(1) as f64
        );
    }
    println!(
        "wrote {} ({:.1} MB): {} triples, vocabulary {} ({:.1}% of targets), loss {:.3} -> {:.3}, held-out top-1 {:.1}% of {}",
        a.out.display(),
        bytes as f64 / 1e6,
        data.len(),
        head.vocab.len(),
        trained.coverage * 100.0,
        trained.first_loss,
        trained.last_loss,
        trained.val_top1 * 100.0,
        trained.val_triples
    );
    Ok(())
}
