//! `espresso train`: fine-tune a GGUF model or train one from scratch on the CPU, or with the
//! transformer blocks as MIL kernels on the ANE simulator / hardware (`--backend ane-sim|ane`).

use crate::load::{open_model_file, resolve_threads, SimPrecision};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use engine::train::data::{self, Shuffle, TokenData};
use engine::train::export::{export_gguf, OutType};
use engine::train::trainer::{truncate_log, LogLine, Observer, Outcome, TrainSettings, Trainer};
use engine::train::{LossScaling, Optimizer, ParamLayout, Params, Schedule, TrainBackend};
use indicatif::{ProgressBar, ProgressStyle};
use model::{ChatTemplate, GgufFile, LlamaConfig, LlamaWeights, Tokenizer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerChoice {
    /// torch.optim.AdamW semantics (bias correction, decoupled weight decay).
    Adamw,
    /// Plain SGD, no momentum (weight decay as an L2 term, like torch.optim.SGD).
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleChoice {
    Constant,
    /// Half cosine from --lr down to 0 at --steps (after the warmup).
    Cosine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShuffleChoice {
    /// Consecutive windows: sequence b of micro-batch a of step k starts at ((k-1)·A+a)·B+b)·S.
    None,
    /// Window starts drawn uniformly from --seed.
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutTypeChoice {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TrainBackendChoice {
    /// The CPU trainer (f32 master weights, packed GEMMs, all threads of --threads).
    Cpu,
    /// Transformer blocks as MIL kernels on the ANE simulator (weights as inputs: 4 compiles
    /// per run), the rest on the CPU; numerics from --sim-precision.
    #[value(name = "ane-sim")]
    AneSim,
    /// The same kernels on the hardware ANE (macOS on Apple silicon).
    Ane,
}

/// Train a model: fine-tune a GGUF (--model; the default model when neither --model nor
/// --config is given) or train from scratch (--config + --tokenizer).
#[derive(Args)]
pub struct TrainArgs {
    /// Fine-tune this GGUF (float or quantized; dequantized into f32 master weights).
    #[arg(
        short = 'm',
        long = "model",
        value_name = "PATH.gguf",
        conflicts_with = "config"
    )]
    model: Option<PathBuf>,
    /// Train from scratch with this shape: JSON with dim, n_layers, n_heads, n_kv_heads, ffn_dim,
    /// rope_base, norm_eps, context_length (and optionally "tied": false for a separate head).
    #[arg(long, value_name = "FILE.json", requires = "tokenizer")]
    config: Option<PathBuf>,
    /// With --config: the GGUF whose tokenizer (vocabulary, chat template) the new model uses.
    #[arg(long, value_name = "PATH.gguf")]
    tokenizer: Option<PathBuf>,
    /// Training data: .txt, .jsonl ({"text"} or {"messages"} lines), .bin (u16 token ids), a
    /// directory of .txt files, or the name of a pulled corpus (`shakespeare`).
    #[arg(long, value_name = "PATH")]
    data: String,
    /// Held-out data (same formats as --data).
    #[arg(long = "val-data", value_name = "PATH", conflicts_with = "val_split")]
    val_data: Option<String>,
    /// Hold out this fraction of --data (its end) instead of --val-data.
    #[arg(long = "val-split", value_name = "F")]
    val_split: Option<f64>,
    /// Held-out loss every K steps (0: never).
    #[arg(long = "eval-every", value_name = "K", default_value_t = 50)]
    eval_every: u64,
    /// Windows of --seq-len tokens per held-out evaluation (at most).
    #[arg(long = "eval-windows", value_name = "N", default_value_t = 16)]
    eval_windows: usize,
    /// Tokens per sequence.
    #[arg(long = "seq-len", value_name = "S")]
    seq_len: usize,
    /// Sequences per micro-batch.
    #[arg(long, value_name = "B")]
    batch: usize,
    /// Micro-batches per optimizer step (their gradients are accumulated).
    #[arg(long = "grad-accum", value_name = "A", default_value_t = 1)]
    grad_accum: usize,
    /// Total optimizer steps (a resumed run continues up to N).
    #[arg(long, value_name = "N")]
    steps: u64,
    /// Peak learning rate.
    #[arg(long, value_name = "LR")]
    lr: f64,
    /// Update rule.
    #[arg(long, value_enum, default_value_t = OptimizerChoice::Adamw)]
    optimizer: OptimizerChoice,
    /// AdamW: decay of the first moment (mean of gradients).
    #[arg(long, default_value_t = 0.9)]
    beta1: f64,
    /// AdamW: decay of the second moment (mean of squared gradients).
    #[arg(long, default_value_t = 0.999)]
    beta2: f64,
    /// AdamW: added to the denominator for stability.
    #[arg(long, default_value_t = 1e-8)]
    eps: f64,
    /// Decoupled weight decay (AdamW) or L2 coefficient (SGD).
    #[arg(long = "weight-decay", default_value_t = 0.0)]
    weight_decay: f64,
    /// Learning rate over the run (after --warmup).
    #[arg(long, value_enum, default_value_t = ScheduleChoice::Constant)]
    schedule: ScheduleChoice,
    /// Linear warmup over the first N steps.
    #[arg(long, value_name = "N", default_value_t = 0)]
    warmup: u64,
    /// Clip the global gradient norm to NORM (0 = off).
    #[arg(long, value_name = "NORM", default_value_t = 0.0)]
    clip: f64,
    /// Order of the training windows.
    #[arg(long, value_enum, default_value_t = ShuffleChoice::None)]
    shuffle: ShuffleChoice,
    /// Seed of the from-scratch initialization and of --shuffle random.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Device that computes the gradients.
    #[arg(long, value_enum, default_value_t = TrainBackendChoice::Cpu)]
    backend: TrainBackendChoice,
    /// Numerics of `--backend ane-sim` (f32: equals the CPU trainer; fp16: ANE-like).
    #[arg(long = "sim-precision", value_enum, default_value_t = SimPrecision::Fp16)]
    sim_precision: SimPrecision,
    /// Loss scaling so fp16 gradients do not underflow: `dynamic` (start at 65536, halve on
    /// overflow, double after 100 good steps), `dynamic:N` (start at N), a fixed power of two
    /// N, or `off`. A step whose gradients overflow is skipped and logged, never applied.
    /// `auto`: dynamic when the device computes in fp16 (`--backend ane`, `ane-sim` with
    /// fp16), off otherwise.
    #[arg(
        long = "loss-scale",
        value_name = "auto|off|dynamic[:N]|N",
        default_value = "auto",
        value_parser = parse_loss_scale
    )]
    loss_scale: LossScaleArg,
    /// Checkpoint directory: written every --save-every steps, at the end and on Ctrl-C.
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Checkpoint every K steps (0: only at the end).
    #[arg(long = "save-every", value_name = "K", default_value_t = 0)]
    save_every: u64,
    /// Continue the run saved in DIR (weights, optimizer state, step) up to --steps.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Append one JSON object per step: step, loss, lr, grad_norm, tokens_per_s (+ val_loss).
    #[arg(long, value_name = "FILE.jsonl")]
    log: Option<PathBuf>,
    /// Where to write the trained model (GGUF, with the tokenizer and chat template).
    #[arg(long, value_name = "OUT.gguf")]
    out: PathBuf,
    /// Element type of the matrices in --out (norms stay f32).
    #[arg(long = "out-type", value_enum, default_value_t = OutTypeChoice::F32)]
    out_type: OutTypeChoice,
}

/// `--loss-scale`: `auto` or a chosen scaling.
#[derive(Clone, Copy, Debug)]
enum LossScaleArg {
    Auto,
    Chosen(LossScaling),
}

fn parse_loss_scale(s: &str) -> Result<LossScaleArg, String> {
    let mode = match s {
        "auto" => return Ok(LossScaleArg::Auto),
        "off" => LossScaling::Off,
        "dynamic" => LossScaling::DYNAMIC,
        d if d.starts_with("dynamic:") => {
            let init: f32 = d["dynamic:".len()..]
                .parse()
                .map_err(|_| format!("expected dynamic:N with N a power of two, got '{d}'"))?;
            match LossScaling::DYNAMIC {
                LossScaling::Dynamic {
                    growth_interval, ..
                } => LossScaling::Dynamic {
                    init,
                    growth_interval,
                },
                other => other,
            }
        }
        n => {
            let scale: f32 = n.parse().map_err(|_| {
                format!("expected auto, off, dynamic, dynamic:N or a power of two N, got '{n}'")
            })?;
            LossScaling::Static { scale }
        }
    };
    mode.check().map(LossScaleArg::Chosen)
}

/// The from-scratch shape file of `--config`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ShapeFile {
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    ffn_dim: usize,
    #[serde(default = "default_rope_base")]
    rope_base: f32,
    #[serde(default = "default_norm_eps")]
    norm_eps: f32,
    context_length: usize,
    #[serde(default = "default_tied")]
    tied: bool,
}

fn default_rope_base() -> f32 {
    10000.0
}
fn default_norm_eps() -> f32 {
    1e-5
}
fn default_tied() -> bool {
    true
}

pub fn shape_from_file(path: &Path, vocab_size: usize) -> Result<(LlamaConfig, bool)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let s: ShapeFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid model shape", path.display()))?;
    if s.n_heads == 0 || !s.dim.is_multiple_of(s.n_heads) {
        bail!(
            "{}: dim {} is not a multiple of n_heads {}",
            path.display(),
            s.dim,
            s.n_heads
        );
    }
    let config = LlamaConfig {
        n_layers: s.n_layers,
        dim: s.dim,
        ffn_dim: s.ffn_dim,
        n_heads: s.n_heads,
        n_kv_heads: s.n_kv_heads,
        head_dim: s.dim / s.n_heads,
        vocab_size,
        context_length: s.context_length,
        rope_theta: s.rope_base,
        rms_eps: s.norm_eps,
    };
    config
        .validate()
        .with_context(|| format!("{}", path.display()))?;
    Ok((config, s.tied))
}

/// `--loss-scale auto`: dynamic when the device computes in fp16, off otherwise.
pub fn default_loss_scaling(backend: TrainBackendChoice, precision: SimPrecision) -> LossScaling {
    match (backend, precision) {
        (TrainBackendChoice::Cpu, _) | (TrainBackendChoice::AneSim, SimPrecision::F32) => {
            LossScaling::Off
        }
        _ => LossScaling::DYNAMIC,
    }
}

/// The training backend `choice` for a model of shape `config` (device kernels compiled and
/// self-checked for sequences of `seq_len` tokens).
pub fn make_backend(
    choice: TrainBackendChoice,
    precision: SimPrecision,
    config: &LlamaConfig,
    seq_len: usize,
    threads: usize,
) -> Result<Box<dyn TrainBackend>> {
    Ok(match choice {
        TrainBackendChoice::Cpu => Box::new(cpu::train::model::CpuTrainer::new(threads)?),
        TrainBackendChoice::AneSim => {
            let (precision, io) = match precision {
                SimPrecision::Fp16 => (ane_sim::Precision::Fp16, mil::DType::Fp16),
                SimPrecision::F32 => (ane_sim::Precision::F32, mil::DType::Fp32),
            };
            let dev = ane_sim::SimDevice::new(ane_sim::SimOptions {
                precision,
                ..ane_sim::SimOptions::default()
            });
            Box::new(ane_llm::train::AneTrainer::new(
                Box::new(dev),
                config,
                io,
                seq_len,
            )?)
        }
        TrainBackendChoice::Ane => {
            ane_macos::availability().map_err(|why| anyhow::anyhow!("--backend ane: {why}"))?;
            let dev = ane_macos::open_device()?;
            Box::new(ane_llm::train::AneTrainer::new(
                dev,
                config,
                mil::DType::Fp16,
                seq_len,
            )?)
        }
    })
}

/// Draws the bar and writes `--log`.
struct Progress {
    bar: ProgressBar,
    /// Steps skipped because their gradients overflowed.
    skipped: u64,
    log: Option<(PathBuf, std::fs::File)>,
    error: Option<anyhow::Error>,
}

impl Observer for Progress {
    fn on_step(&mut self, line: &LogLine, steps: u64) {
        self.bar.set_length(steps);
        self.bar.set_position(line.step);
        let val = line
            .val_loss
            .map_or(String::new(), |v| format!(" val {v:.4}"));
        self.bar.set_message(format!(
            "loss {:.4}{val} · {:.0} tok/s",
            line.loss, line.tokens_per_s
        ));
        if self.bar.is_hidden() {
            // Without a terminal, one line per step on stderr instead of a bar.
            let mut device = match (line.compiles, line.dispatches) {
                (Some(c), Some(d)) => format!(" compiles {c} dispatches {d}"),
                _ => String::new(),
            };
            if let Some(s) = line.loss_scale {
                device += &format!(" loss_scale {s}");
            }
            if line.skipped {
                device += " SKIPPED (gradients overflowed)";
            }
            eprintln!(
                "step {}/{steps} loss {:.4}{val} lr {:.3e} grad_norm {:.3} {:.0} tok/s{device}",
                line.step, line.loss, line.lr, line.grad_norm, line.tokens_per_s
            );
        }
        self.skipped += u64::from(line.skipped);
        self.write_log(line);
    }
    fn note(&mut self, message: &str) {
        self.bar.suspend(|| eprintln!("{message}"));
    }
}

impl Progress {
    fn write_log(&mut self, line: &LogLine) {
        if let (Some((path, f)), None) = (&mut self.log, &self.error) {
            let json = serde_json::to_string(line).unwrap_or_default();
            if let Err(e) = writeln!(f, "{json}").and_then(|_| f.flush()) {
                self.error = Some(anyhow::anyhow!(
                    "cannot write the log {}: {e}",
                    path.display()
                ));
            }
        }
    }
}

fn load_data(arg: &str, tok: &Tokenizer, chat: Option<&ChatTemplate>) -> Result<TokenData> {
    let path = data::resolve(arg)?;
    Ok(data::load(&path, tok, chat)?)
}

pub fn run(a: TrainArgs) -> Result<()> {
    // The model (or shape) and the tokenizer.
    // The model's shape; its starting weights are materialized only for a fresh run (a resumed
    // run takes them from the checkpoint).
    let base: GgufFile;
    let layout = match &a.config {
        Some(cfg) => {
            let tok_path = a
                .tokenizer
                .as_deref()
                .context("--config needs --tokenizer PATH.gguf")?;
            base = GgufFile::open(tok_path)
                .with_context(|| format!("cannot open {}", tok_path.display()))?;
            let vocab = Tokenizer::from_gguf(&base)?.vocab_size();
            let (config, tied) = shape_from_file(cfg, vocab)?;
            ParamLayout::new(&config, tied)
        }
        None => {
            base = open_model_file(a.model.as_deref())?.0;
            ParamLayout::of_weights(&LlamaWeights::from_gguf(&base)?)
        }
    };
    let tokenizer = Tokenizer::from_gguf(&base)?;
    let chat = ChatTemplate::from_gguf(&base).ok();

    let mut train = load_data(&a.data, &tokenizer, chat.as_ref())?;
    let val = match (&a.val_data, a.val_split) {
        (Some(v), _) => Some(load_data(v, &tokenizer, chat.as_ref())?),
        (None, Some(f)) => {
            let (t, v) = train.split_tail(f)?;
            train = t;
            Some(v)
        }
        (None, None) => None,
    };
    if let Some(v) = &val {
        v.check(a.seq_len)
            .context("the held-out data is too short")?;
    }

    let optimizer = match a.optimizer {
        OptimizerChoice::Adamw => Optimizer::AdamW {
            beta1: a.beta1,
            beta2: a.beta2,
            eps: a.eps,
            weight_decay: a.weight_decay,
        },
        OptimizerChoice::Sgd => Optimizer::Sgd {
            weight_decay: a.weight_decay,
        },
    };
    let settings = TrainSettings {
        seq_len: a.seq_len,
        batch: a.batch,
        grad_accum: a.grad_accum,
        steps: a.steps,
        lr: a.lr,
        optimizer,
        schedule: match a.schedule {
            ScheduleChoice::Constant => Schedule::Constant,
            ScheduleChoice::Cosine => Schedule::Cosine,
        },
        warmup: a.warmup,
        clip: a.clip,
        shuffle: match a.shuffle {
            ShuffleChoice::None => Shuffle::None,
            ShuffleChoice::Random => Shuffle::Random { seed: a.seed },
        },
        seed: a.seed,
        eval_every: a.eval_every,
        eval_windows: a.eval_windows,
        checkpoint: a.checkpoint.clone(),
        save_every: a.save_every,
        loss_scaling: match a.loss_scale {
            LossScaleArg::Chosen(m) => m,
            LossScaleArg::Auto => default_loss_scaling(a.backend, a.sim_precision),
        },
    };
    let mut trainer = match &a.resume {
        Some(dir) => Trainer::resume(settings, dir, &layout, &train)
            .with_context(|| format!("cannot resume from {}", dir.display()))?,
        None => {
            let params = match a.config {
                Some(_) => Params::init(&layout.config, layout.tied, a.seed),
                None => Params::from_weights(&LlamaWeights::from_gguf(&base)?),
            };
            Trainer::new(settings, params, &train)?
        }
    };
    let threads = resolve_threads(a.threads);
    let config = trainer.params.layout.config.clone();
    let mut backend = make_backend(a.backend, a.sim_precision, &config, a.seq_len, threads)?;

    // The log continues a resumed run and starts over otherwise.
    let log = match &a.log {
        Some(p) => {
            if a.resume.is_some() {
                truncate_log(p, trainer.step)?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(a.resume.is_some())
                .write(true)
                .truncate(a.resume.is_none())
                .open(p)
                .with_context(|| format!("cannot write the log {}", p.display()))?;
            Some((p.clone(), f))
        }
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while saving is ignored; the save is atomic either way.
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
    let bar = ProgressBar::new(a.steps);
    bar.set_style(
        ProgressStyle::with_template("train [{bar:30}] {pos}/{len} steps · {msg} · ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_position(trainer.step);
    let mut progress = Progress {
        bar,
        skipped: 0,
        log,
        error: None,
    };
    let p = &trainer.params;
    eprintln!(
        "training {} parameters ({} layers, dim {}, vocab {}) on {} tokens with {} (step {} of {})",
        p.data.len(),
        p.layout.config.n_layers,
        p.layout.config.dim,
        p.layout.config.vocab_size,
        train.len(),
        backend.name(),
        trainer.step,
        a.steps
    );
    if let (Some(v), true) = (&val, trainer.step == 0 && a.eval_every > 0) {
        let l = trainer.eval(backend.as_mut(), v)?;
        progress.note(&format!("held-out loss before training: {l:.4}"));
    }
    let outcome = trainer.run(backend.as_mut(), &train, val.as_ref(), &stop, &mut progress);
    progress.bar.finish_and_clear();
    let outcome = outcome.map_err(|e| {
        let kept = match &a.checkpoint {
            Some(d) if d.join("checkpoint.bin").is_file() => {
                format!("; the last checkpoint in {} is kept", d.display())
            }
            _ => String::new(),
        };
        // `{:#}` of an anyhow error prints the whole cause chain.
        let e = anyhow::Error::from(e);
        anyhow::anyhow!("{e:#}{kept}; --out was not written")
    })?;
    if let Some(e) = progress.error {
        return Err(e);
    }
    if progress.skipped > 0 {
        eprintln!(
            "warning: {} step(s) of this run were skipped because their gradients overflowed \
             in fp16 (loss scale now {}); a fixed --loss-scale that keeps overflowing should be lowered",
            progress.skipped, trainer.scaler.scale
        );
    }
    match outcome {
        Outcome::Interrupted { step } => {
            let saved = match &a.checkpoint {
                Some(d) => format!(
                    "checkpoint saved in {}; continue with --resume {}",
                    d.display(),
                    d.display()
                ),
                None => "nothing saved (no --checkpoint given)".to_string(),
            };
            bail!("interrupted after step {step}: {saved}; --out was not written");
        }
        Outcome::Finished => {
            let ty = match a.out_type {
                OutTypeChoice::F32 => OutType::F32,
                OutTypeChoice::F16 => OutType::F16,
                OutTypeChoice::Q8_0 => OutType::Q8_0,
            };
            export_gguf(&a.out, &trainer.params, ty, &base)?;
            eprintln!("wrote {}", a.out.display());
        }
    }
    Ok(())
}
