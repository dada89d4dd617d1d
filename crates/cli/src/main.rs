//! `espresso`: generate text, chat, tokenize, benchmark and inspect MIL programs.

mod doctor;
mod draft_cmd;
mod load;
mod mil_cmd;
mod perplexity;
mod progress;
mod train_bench;
mod train_cmd;
mod vs_coreml;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use engine::{GenerateOptions, SamplerConfig};
use load::{BackendChoice, BackendSpec, DraftChoice, Loaded, SimPrecision};
use model::chat::ChatMessage;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "espresso",
    version,
    about = "Run transformer language models on the CPU and the Apple Neural Engine",
    long_about = "Run transformer language models on the CPU and the Apple Neural Engine.\n\n\
                  With no -m, the default model (SmolLM2-135M-Instruct, Q4_1) is downloaded \
                  into the cache on first use (`espresso pull`). The cache is \
                  $ESPRESSO_HOME, else ~/.cache/espresso."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Continue a prompt (streams the continuation to stdout).
    Generate(GenerateArgs),
    /// Interactive chat with the model's own chat template (keeps history, streams replies).
    Chat(ChatArgs),
    /// Serve the model over HTTP with an OpenAI-compatible API (chat and text completions,
    /// streaming, concurrent requests decoded together).
    Serve(ServeArgs),
    /// Print the token ids of TEXT (no BOS is added).
    Tokenize(TokenizeArgs),
    /// Download the default model (or, with --data NAME, a training corpus) into the cache and
    /// verify it.
    Pull(PullArgs),
    /// Measure decode latency and prefill throughput (training steps: `bench-train`).
    Bench(BenchArgs),
    /// Time training steps on the CPU and the ANE simulator side by side, with the cost
    /// model's predicted ANE ms/step.
    BenchTrain(Box<train_bench::BenchTrainArgs>),
    /// Train: fine-tune a GGUF model or train one from scratch (CPU, or the blocks on the ANE
    /// / its simulator), with checkpoints.
    Train(Box<train_cmd::TrainArgs>),
    /// Train a draft head for speculative decoding (`--draft head`) on the model's own greedy
    /// outputs for a prompt file.
    TrainDraft(Box<draft_cmd::TrainDraftArgs>),
    /// Token-mean loss and perplexity over a text file, in non-overlapping windows of --ctx tokens.
    Perplexity(perplexity::PerplexityArgs),
    /// Write the deterministic synthetic model of `bench --synthetic SEED` as a GGUF file.
    ExportSynthetic(ExportArgs),
    /// Check or run MIL programs (the ANE's program format) on the simulator.
    #[command(subcommand)]
    Mil(mil_cmd::MilCommand),
    /// What this machine offers: OS, CPU, the ANE framework, device probes, what `auto` picks.
    Doctor,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// A local GGUF model file (default: the pulled SmolLM2-135M-Instruct).
    #[arg(short = 'm', long = "model", value_name = "PATH")]
    model: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    backend: BackendChoice,
    /// CPU: dequantize weights on the fly and compute in f32 (the reference path; slower).
    #[arg(long)]
    exact: bool,
    /// CPU worker threads (default: all cores).
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Numerics of `--backend ane-sim`.
    #[arg(long = "sim-precision", value_enum, default_value_t = SimPrecision::Fp16)]
    sim_precision: SimPrecision,
}

impl ModelArgs {
    fn spec(&self) -> BackendSpec {
        BackendSpec {
            choice: self.backend,
            exact: self.exact,
            threads: self.threads,
            sim_precision: self.sim_precision,
        }
    }
}

#[derive(Args, Clone)]
struct SamplingArgs {
    /// Maximum number of tokens to generate.
    #[arg(
        short = 'n',
        long = "max-tokens",
        value_name = "N",
        default_value_t = 128,
        allow_negative_numbers = true
    )]
    max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(
        long,
        value_name = "T",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    temperature: f32,
    /// Sample only among the K most likely tokens (0 = all).
    #[arg(
        long = "top-k",
        value_name = "K",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    top_k: usize,
    /// Nucleus sampling: smallest set of tokens with probability mass P.
    #[arg(
        long = "top-p",
        value_name = "P",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    top_p: f32,
    /// Random seed (same seed, same output).
    #[arg(
        long,
        value_name = "S",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    seed: u64,
    /// Stop when the output contains STR (repeatable); STR itself is not printed.
    #[arg(long, value_name = "STR")]
    stop: Vec<String>,
}

impl SamplingArgs {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.max_tokens,
            sampler: SamplerConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            },
            stop: self.stop.clone(),
            ..GenerateOptions::default()
        }
    }
}

#[derive(Args, Clone)]
struct DraftArgs {
    /// Speculative decoding: what proposes the tokens each decode pass verifies. The output
    /// is the same with every choice (greedy: identical tokens).
    #[arg(long, value_enum, default_value_t = DraftChoice::Auto)]
    draft: DraftChoice,
    /// Tokens per verify pass: the current one and up to K-1 proposed ones (1 = no drafting).
    #[arg(long = "draft-max", value_name = "K", default_value_t = 2)]
    draft_max: usize,
    /// A draft head file (from `espresso train-draft`) for --draft head/auto; it must record
    /// this model's SHA-256.
    #[arg(long = "draft-head", value_name = "PATH")]
    draft_head: Option<PathBuf>,
    /// A draft head proposes only when it gives its token at least this probability
    /// (0 = always; default: 0 on the ANE, where extra verify rows are free, else 0.8).
    #[arg(long = "draft-min-p", value_name = "P")]
    draft_min_p: Option<f32>,
}

impl DraftArgs {
    fn check(&self) -> Result<()> {
        if self.draft_max == 0 {
            bail!("--draft-max must be at least 1");
        }
        check_min_p(self.draft_min_p)
    }
}

/// `--draft-min-p` is a probability.
fn check_min_p(p: Option<f32>) -> Result<()> {
    match p {
        Some(p) if !(0.0..=1.0).contains(&p) => bail!("--draft-min-p must be in [0, 1] (got {p})"),
        _ => Ok(()),
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    draft: DraftArgs,
    /// Wrap PROMPT as one user message in the model's chat template (PROMPT stays plain
    /// text: special-token text in it is not parsed).
    #[arg(long, conflicts_with = "special")]
    chat: bool,
    /// Parse special-token text such as <|im_start|> in PROMPT into the special token (for a
    /// hand-written chat prompt); without it, PROMPT is plain text.
    #[arg(long)]
    special: bool,
    /// Print one JSON object (prompt_tokens, tokens, text, timings) instead of streaming.
    #[arg(long)]
    json: bool,
    /// The text to continue.
    prompt: String,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    draft: DraftArgs,
    /// A system prompt (default: whatever the model's template inserts).
    #[arg(long)]
    system: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    draft: DraftArgs,
    /// Address to listen on (loopback by default: only this machine can connect).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every route but /health (default: the
    /// ESPRESSO_API_KEY environment variable, if set).
    #[arg(
        long,
        value_name = "KEY",
        env = "ESPRESSO_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Requests decoded at once (each has its own KV cache slot).
    #[arg(long, value_name = "N", default_value_t = 4)]
    parallel: usize,
    /// Requests that may wait for a slot; beyond that the server answers 503.
    #[arg(long, value_name = "N", default_value_t = 64)]
    queue: usize,
    /// Context per request in tokens, prompt + completion (default: the model's, at most 4096).
    #[arg(long, value_name = "N")]
    ctx: Option<usize>,
    /// Most tokens one request may generate (also the default when it does not say).
    #[arg(long = "max-tokens", value_name = "N", default_value_t = 2048)]
    max_tokens: usize,
    /// Seconds a request may take, queueing included, before it fails.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    /// Largest accepted request body in bytes.
    #[arg(long = "max-body", value_name = "BYTES", default_value_t = 1 << 20)]
    max_body: usize,
    /// Seconds between SSE keep-alive comments while a stream waits (in the queue or for a
    /// token), so proxies do not time the connection out.
    #[arg(long = "keep-alive", value_name = "SECS", default_value_t = 5.0)]
    keep_alive: f64,
}

#[derive(Args)]
struct TokenizeArgs {
    #[arg(short = 'm', long = "model", value_name = "PATH")]
    model: Option<PathBuf>,
    /// Parse special-token text such as <|im_start|> into the special token.
    #[arg(long)]
    special: bool,
    /// Print a JSON array instead of space-separated ids.
    #[arg(long)]
    json: bool,
    text: String,
}

#[derive(Args)]
struct PullArgs {
    /// Re-verify (and re-download if needed) even when the model is already cached; with
    /// `--data`, download the corpus again and replace the cached copy.
    #[arg(long)]
    force: bool,
    /// Pull a training corpus instead of the model: `shakespeare` (the complete works, ~9 MB of
    /// text, into `data/shakespeare/` in the cache). Prints the folder.
    #[arg(long, value_name = "NAME")]
    data: Option<String>,
}

#[derive(Args)]
struct BenchArgs {
    #[arg(
        short = 'm',
        long = "model",
        value_name = "PATH",
        conflicts_with = "synthetic"
    )]
    model: Option<PathBuf>,
    /// Benchmark a deterministic random-weight model of the reference shape (6 layers, dim 768,
    /// 12 heads, ffn 2048, vocab 32000, f32) built from SEED.
    #[arg(long, value_name = "SEED")]
    synthetic: Option<u64>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    backend: BackendChoice,
    /// CPU: use the exact (dequantize-on-the-fly, f32) path.
    #[arg(long)]
    exact: bool,
    /// CPU worker threads (default: all cores).
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Numerics of `--backend ane-sim`.
    #[arg(long = "sim-precision", value_enum, default_value_t = SimPrecision::Fp16)]
    sim_precision: SimPrecision,
    /// Prompt tokens of the prefill test (`ppN`; default 512, or what the context leaves).
    #[arg(long = "prompt-tokens", value_name = "N")]
    prompt_tokens: Option<usize>,
    /// Decode steps of the generation test (`tgN`).
    #[arg(long = "gen-tokens", value_name = "N", default_value_t = 128)]
    gen_tokens: usize,
    /// Unmeasured runs before the measured ones.
    #[arg(long, value_name = "N", default_value_t = 1)]
    warmup: usize,
    /// Measured runs (the table shows mean ± standard deviation over them).
    #[arg(long, value_name = "N", default_value_t = 5)]
    repeats: usize,
    /// Speculative decoding during the tg test (default none, so tgN compares with
    /// llama-bench's plain decode). With a drafter, the prompt is real text: --chat.
    #[arg(long, value_enum, default_value_t = DraftChoice::None)]
    draft: DraftChoice,
    /// Tokens per verify pass with --draft (the current one and up to K-1 proposed ones).
    #[arg(long = "draft-max", value_name = "K", default_value_t = 2)]
    draft_max: usize,
    /// A draft head file (from `espresso train-draft`) for --draft head/auto.
    #[arg(long = "draft-head", value_name = "PATH", conflicts_with = "synthetic")]
    draft_head: Option<PathBuf>,
    /// A draft head proposes only when it gives its token at least this probability
    /// (default: 0 on the ANE, else 0.8).
    #[arg(long = "draft-min-p", value_name = "P")]
    draft_min_p: Option<f32>,
    /// Use this text, in the model's chat template, as the prompt (instead of ppN token ids);
    /// the tg test then decodes the model's answer. Default with --draft: a fixed request for
    /// a short story.
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["synthetic", "prompt_tokens"])]
    chat: Option<String>,
    /// Compare with Apple's CoreML on the same prompt: `--vs coreml MODEL.mlpackage` (macOS 15+;
    /// write the package with scripts/coreml_export.py). Both sides decode --gen-tokens tokens
    /// greedily, one token per step; use with --backend ane (or ane-sim).
    #[arg(long, num_args = 2, value_names = ["WHAT", "MODEL"], conflicts_with = "synthetic")]
    vs: Option<Vec<String>>,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportDtype {
    F32,
    F16,
}

#[derive(Args)]
struct ExportArgs {
    /// Seed of the synthetic model (same as `bench --synthetic SEED`).
    seed: u64,
    #[arg(long, value_enum, default_value_t = ExportDtype::F32)]
    dtype: ExportDtype,
    /// Output GGUF path.
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(a) => cmd_generate(a),
        Command::Chat(a) => cmd_chat(a),
        Command::Serve(a) => cmd_serve(a),
        Command::Tokenize(a) => cmd_tokenize(a),
        Command::Pull(PullArgs {
            data: Some(name),
            force,
        }) => {
            let path = model::cache::pull_data(&name, force, &mut progress::Bars::default())?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Pull(a) => {
            let path = model::cache::pull(a.force, &mut progress::Bars::default())?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Bench(a) => cmd_bench(a),
        Command::Train(a) => train_cmd::run(*a),
        Command::BenchTrain(a) => train_bench::run(*a),
        Command::TrainDraft(a) => draft_cmd::run(*a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Mil(c) => mil_cmd::run(c),
        Command::Doctor => doctor::run(),
        Command::ExportSynthetic(a) => {
            let ty = match a.dtype {
                ExportDtype::F32 => model::GgmlType::F32,
                ExportDtype::F16 => model::GgmlType::F16,
            };
            let m =
                model::synthetic::SyntheticModel::new(model::LlamaConfig::synthetic(), a.seed, ty);
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&a.out)
                    .with_context(|| format!("cannot create {}", a.out.display()))?,
            );
            m.write_gguf(&mut f)
                .and_then(|_| f.flush())
                .with_context(|| format!("cannot write {}", a.out.display()))?;
            eprintln!("wrote {}", a.out.display());
            Ok(())
        }
    }
}

fn cmd_generate(a: GenerateArgs) -> Result<()> {
    if a.prompt.is_empty() {
        bail!("the prompt is empty: give some text to continue");
    }
    let opts = GenerateOptions {
        draft_max: a.draft.draft_max,
        ..a.sampling.options()
    };
    // Bad settings are reported before the model is loaded.
    opts.sampler.validate()?;
    a.draft.check()?;
    let loaded = Loaded::open_resident(a.model.model.as_deref())?;
    let mut backend = loaded.backend(a.model.spec())?;
    let mut drafter = load::drafter(
        a.draft.draft,
        Some(&loaded.gguf),
        &loaded.name,
        a.draft.draft_head.as_deref(),
        load::draft_min_p(a.draft.draft_min_p, backend.as_ref()),
    )?;
    let prompt = if a.chat {
        loaded.encode_chat(&[ChatMessage::user(a.prompt.clone())])?
    } else {
        loaded.tokenizer.encode_with_bos(&a.prompt, a.special)?
    };
    let stdout = std::io::stdout();
    let json = a.json;
    let gen = engine::generate_drafted(
        backend.as_mut(),
        drafter.as_mut(),
        &loaded.tokenizer,
        &prompt,
        &opts,
        &mut |s| {
            if !json {
                let mut out = stdout.lock();
                let _ = out.write_all(s.as_bytes());
                let _ = out.flush();
            }
        },
    )?;
    if json {
        let v = serde_json::json!({
            "prompt_tokens": gen.prompt_tokens,
            "tokens": gen.tokens,
            "text": gen.text,
            "stop_reason": gen.stop_reason,
            "backend": backend.name(),
            "timings": gen.timings,
            "draft": gen.draft,
        });
        println!("{v}");
    } else {
        println!();
    }
    Ok(())
}

fn cmd_chat(a: ChatArgs) -> Result<()> {
    a.sampling.options().sampler.validate()?;
    a.draft.check()?;
    let loaded = Loaded::open_resident(a.model.model.as_deref())?;
    let backend = loaded.backend(a.model.spec())?;
    let drafter = load::drafter(
        a.draft.draft,
        Some(&loaded.gguf),
        &loaded.name,
        a.draft.draft_head.as_deref(),
        load::draft_min_p(a.draft.draft_min_p, backend.as_ref()),
    )?;
    let opts = GenerateOptions {
        draft_max: a.draft.draft_max,
        ..a.sampling.options()
    };
    // The session reuses the conversation so far from the backend's KV cache.
    let mut session = engine::Session::new(backend).with_drafter(drafter);
    let mut history: Vec<ChatMessage> = a.system.into_iter().map(ChatMessage::system).collect();
    eprintln!(
        "chat with {} ({}); /reset clears the history, /exit or Ctrl-D quits",
        loaded.name,
        session.backend().name()
    );
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        eprint!("> ");
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let msg = line.trim_end_matches(['\n', '\r']);
        match msg.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/reset" => {
                history.retain(|m| m.role == "system");
                session.reset();
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::user(msg));
        let prompt = loaded.encode_chat(&history)?;
        let stdout = std::io::stdout();
        let gen = match session.generate(&loaded.tokenizer, &prompt, &opts, &mut |s| {
            let mut out = stdout.lock();
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
        }) {
            Ok(g) => g,
            Err(e @ engine::GenerateError::PromptTooLong { .. }) => {
                eprintln!("\nerror: {e}; use /reset to start over");
                history.pop();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        println!();
        history.push(ChatMessage::assistant(gen.text.trim().to_string()));
    }
}

fn cmd_serve(a: ServeArgs) -> Result<()> {
    if a.parallel == 0 || a.queue == 0 || a.max_tokens == 0 || a.timeout == 0 {
        bail!("--parallel, --queue, --max-tokens and --timeout must be at least 1");
    }
    if !(a.keep_alive.is_finite() && a.keep_alive > 0.0) {
        bail!("--keep-alive must be a positive number of seconds");
    }
    if a.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        bail!("--api-key is empty");
    }
    a.draft.check()?;
    let loaded = Loaded::open_resident(a.model.model.as_deref())?;
    let model_ctx = model::LlamaWeights::from_gguf(&loaded.gguf)?
        .config
        .context_length;
    let ctx = match a.ctx {
        Some(0) => bail!("--ctx must be at least 1"),
        Some(c) if c > model_ctx => {
            bail!("--ctx {c} is more than the model's context length {model_ctx}")
        }
        Some(c) => c,
        None => model_ctx.min(4096),
    };
    let opts = serve::ServeOptions {
        host: a.host.clone(),
        port: a.port,
        api_key: a.api_key.clone(),
        parallel: a.parallel,
        queue: a.queue,
        ctx,
        max_tokens: a.max_tokens,
        timeout: std::time::Duration::from_secs(a.timeout),
        max_body: a.max_body,
        keep_alive: std::time::Duration::from_secs_f64(a.keep_alive),
        model_name: loaded.name.clone(),
        draft_max: a.draft.draft_max,
    };
    let Loaded {
        gguf,
        tokenizer,
        chat,
        name,
    } = loaded;
    let spec = a.model.spec();
    let (draft, draft_head, min_p) = (
        a.draft.draft,
        a.draft.draft_head.clone(),
        a.draft.draft_min_p,
    );
    let gguf = &gguf;
    let model_name = name.clone();
    serve::run(
        opts,
        tokenizer,
        chat,
        move || {
            let engine = || -> Result<serve::Engine> {
                let weights = model::LlamaWeights::from_gguf(gguf)?;
                let backend = load::make_backend(weights, spec)?;
                let min_p = load::draft_min_p(min_p, backend.as_ref());
                let head = draft_head.as_deref();
                Ok(serve::Engine {
                    drafter: load::drafter(draft, Some(gguf), &model_name, head, min_p)?,
                    backend,
                })
            };
            engine().map_err(|e| format!("{e:#}"))
        },
        |addr| {
            eprintln!(
                "serving {name} on http://{addr} (OpenAI API under /v1; Ctrl-C stops){}",
                if a.host == "127.0.0.1" || a.host == "localhost" {
                    ""
                } else {
                    " -- reachable from the network"
                }
            )
        },
    )?;
    Ok(())
}

fn cmd_tokenize(a: TokenizeArgs) -> Result<()> {
    let loaded = Loaded::open(a.model.as_deref())?;
    let ids = loaded.tokenizer.encode(&a.text, a.special)?;
    if a.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        let s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        println!("{}", s.join(" "));
    }
    Ok(())
}

/// The answer `bench --draft` decodes when no --chat text is given.
const BENCH_CHAT: &str =
    "Write a short story about a lighthouse keeper who finds a message in a bottle.";

fn cmd_bench(a: BenchArgs) -> Result<()> {
    check_min_p(a.draft_min_p)?;
    if a.prompt_tokens == Some(0) || a.repeats == 0 || a.draft_max == 0 {
        bail!("--prompt-tokens, --repeats and --draft-max must be at least 1");
    }
    let threads = load::resolve_threads(a.threads);
    let spec = BackendSpec {
        choice: a.backend,
        exact: a.exact,
        threads,
        sim_precision: a.sim_precision,
    };
    if let Some(vs) = &a.vs {
        let package = vs_coreml::check(vs, a.backend)?;
        let loaded = Loaded::open(a.model.as_deref())?;
        let text = a.chat.as_deref().unwrap_or(BENCH_CHAT);
        let prompt = loaded.encode_chat(&[ChatMessage::user(text)])?;
        return vs_coreml::run(&loaded, spec, package, &prompt, a.gen_tokens, a.json);
    }
    // pp512 unless asked otherwise, or what the model's context leaves after tgN.
    let options = |ctx: usize, prompt: Option<Vec<u32>>| engine::bench::BenchOptions {
        prompt_tokens: a
            .prompt_tokens
            .unwrap_or_else(|| 512.min(ctx.saturating_sub(a.gen_tokens)).max(1)),
        gen_tokens: a.gen_tokens,
        warmup: a.warmup,
        repeats: a.repeats,
        prompt,
        draft_max: a.draft_max,
    };
    let (report, size) = if let Some(seed) = a.synthetic {
        let cfg = model::LlamaConfig::synthetic();
        let synth = model::synthetic::SyntheticModel::new(cfg.clone(), seed, model::GgmlType::F32);
        let weights = model::LlamaWeights::from_source(&synth, cfg)?;
        let size = ModelSize::of(&weights);
        let name = format!("synthetic:{seed}");
        let mut backend = load::make_backend(weights, spec)?;
        let min_p = load::draft_min_p(a.draft_min_p, backend.as_ref());
        let mut drafter = load::drafter(a.draft, None, &name, None, min_p)?;
        // The backend's context (an ANE backend's cache may hold fewer positions than the file).
        let opts = options(backend.config().context_length, None);
        let r =
            engine::bench::run_bench(backend.as_mut(), drafter.as_mut(), &name, threads, &opts)?;
        (r, size)
    } else {
        let chat = match (&a.chat, a.draft) {
            (Some(text), _) => Some(text.as_str()),
            (None, DraftChoice::None) => None,
            (None, _) => Some(BENCH_CHAT),
        };
        // The tokenizer is needed (and must be supported) only for a text prompt.
        let (gguf, name, prompt) = match chat {
            Some(text) => {
                let loaded = Loaded::open(a.model.as_deref())?;
                let prompt = loaded.encode_chat(&[ChatMessage::user(text)])?;
                (loaded.gguf, loaded.name, Some(prompt))
            }
            None => {
                let (gguf, name) = load::open_model_file(a.model.as_deref())?;
                (gguf, name, None)
            }
        };
        let mut gguf = gguf;
        load::hold_for_streaming(&mut gguf)?;
        let weights = model::LlamaWeights::from_gguf(&gguf)?;
        let size = ModelSize::of(&weights);
        let mut backend = load::make_backend(weights, spec)?;
        let min_p = load::draft_min_p(a.draft_min_p, backend.as_ref());
        let head = a.draft_head.as_deref();
        let mut drafter = load::drafter(a.draft, Some(&gguf), &name, head, min_p)?;
        let opts = options(backend.config().context_length, prompt);
        let r =
            engine::bench::run_bench(backend.as_mut(), drafter.as_mut(), &name, threads, &opts)?;
        (r, size)
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("model_bytes".into(), size.bytes.into());
            o.insert("params".into(), size.params.into());
        }
        println!("{v}");
        return Ok(());
    }
    print_bench_table(&report, &size);
    if let Some(r) = report.peak_rss_mb {
        println!("\npeak RSS         {r:.1} MiB");
    }
    if report.draft.method != "none" {
        println!(
            "draft            {} (up to {} tokens/pass): {:.2} tokens/pass, {:.1}% of {} proposed accepted",
            report.draft.method,
            a.draft_max,
            report.tokens_per_pass,
            report.acceptance * 100.0,
            report.draft.proposed
        );
    }
    if let Some(d) = report.dispatches_per_token {
        println!("dispatches/token {d:.2}");
    }
    if let Some(p) = report.predicted_ane_ms_per_token {
        println!(
            "predicted ANE    {p:.3} ms/token (cost-model prediction for {}, not a measurement)",
            report.chip_profile.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

/// Parameter count and bytes of a model's weights (the tied classifier counted once).
struct ModelSize {
    params: u64,
    bytes: u64,
}

impl ModelSize {
    fn of(w: &model::LlamaWeights) -> Self {
        let tensors = w.tensors();
        Self {
            params: tensors.iter().map(|t| (t.rows * t.cols) as u64).sum(),
            bytes: tensors.iter().map(|t| t.data.len() as u64).sum(),
        }
    }
}

/// The llama-bench table: one row for the prefill test and one for the decode test.
fn print_bench_table(r: &engine::bench::BenchReport, size: &ModelSize) {
    let rows = [
        (
            format!("pp{}", r.prompt_tokens),
            r.prefill_tokens_per_s_mean,
            r.prefill_tokens_per_s_std,
        ),
        (
            format!("tg{}", r.gen_tokens),
            r.decode_tokens_per_s_mean,
            r.decode_tokens_per_s_std,
        ),
    ];
    let w = r.model.len().max(5);
    println!(
        "| {:<w$} | {:>10} | {:>10} | {:<9} | {:>7} | {:>6} | {:>18} |",
        "model", "size", "params", "backend", "threads", "test", "t/s"
    );
    println!(
        "| {:-<w$} | {:->10} | {:->10} | {:-<9} | {:->7} | {:->6} | {:->18} |",
        ":", ":", ":", ":", ":", ":", ":"
    );
    for (test, mean, std) in rows {
        println!(
            "| {:<w$} | {:>6.2} MiB | {:>8.2} M | {:<9} | {:>7} | {:>6} | {:>18} |",
            r.model,
            size.bytes as f64 / (1024.0 * 1024.0),
            size.params as f64 / 1e6,
            r.backend,
            r.threads,
            test,
            format!("{mean:.2} ± {std:.2}"),
        );
    }
}
