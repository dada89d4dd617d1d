//! Text generation with Espresso as a library: open a GGUF model, put it on a backend, and
//! stream a greedy completion through a callback, printing each piece as it arrives.
//!
//! The backend is the Apple Neural Engine where `ane_macos::decide_auto()` finds a healthy
//! one, else the ANE kernels on the simulator (`ane-sim`: exact but slow, so the default
//! length there is 8 tokens); `--cpu` picks the CPU backend. The model is the default one
//! (`espresso pull` puts it in the cache) unless `--model` names a file.
//!
//! ```text
//! cargo run -p ane-llm --example generate
//! cargo run -p ane-llm --example generate -- --cpu -n 32 --prompt "Once upon a time"
//! cargo run -p ane-llm --example generate -- --model path/to/model.gguf
//! ```

use engine::{Backend, GenerateOptions};
use model::{GgufFile, LlamaWeights, Tokenizer};
use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const USAGE: &str = "usage: generate [--cpu] [--model|-m FILE.gguf] [-n TOKENS] [--prompt TEXT]";

struct Args {
    cpu: bool,
    model: Option<PathBuf>,
    tokens: Option<usize>,
    prompt: String,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        cpu: false,
        model: None,
        tokens: None,
        prompt: "The capital of France is".to_string(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value; {USAGE}"))
        };
        match a.as_str() {
            "--cpu" => args.cpu = true,
            "--model" | "-m" => args.model = Some(PathBuf::from(value()?)),
            "--prompt" => args.prompt = value()?,
            "-n" => {
                let v = value()?;
                let n = v
                    .parse()
                    .map_err(|_| format!("-n {v:?}: not a whole number"))?;
                args.tokens = Some(n);
            }
            _ => return Err(format!("unknown argument {a:?}; {USAGE}").into()),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message, then each underlying cause.
            eprintln!("error: {}", engine::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;

    // 1. The model file: the weights are borrowed from its memory map, never copied.
    let path = match args.model {
        Some(p) => p,
        None => model::cache::default_model_path()?,
    };
    let gguf = GgufFile::open(&path)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let weights = LlamaWeights::from_gguf(&gguf)?;

    // 2. A backend: anything implementing `engine::Backend`.
    let (mut backend, default_tokens): (Box<dyn Backend + '_>, usize) = if args.cpu {
        let opts = cpu::CpuOptions {
            exact: false,
            threads: 0,
        };
        (Box::new(cpu::CpuBackend::new(weights, opts)?), 32)
    } else {
        let auto = ane_macos::decide_auto();
        let opts = ane_llm::AneOptions::default();
        match auto.device {
            Some(device) => {
                eprintln!("backend: ane ({})", auto.choice.reason);
                (
                    Box::new(ane_llm::AneBackend::new(weights, device, opts)?),
                    32,
                )
            }
            None => {
                eprintln!("backend: ane-sim (no usable ANE: {})", auto.choice.reason);
                let precision = ane_sim::Precision::Fp16;
                (
                    Box::new(ane_llm::ane_sim_backend(weights, precision, opts)?),
                    8,
                )
            }
        }
    };
    if args.cpu {
        eprintln!("backend: cpu");
    }

    // 3. Generate: greedy (the default sampler has temperature 0), streamed through a callback.
    let prompt = tokenizer.encode_with_bos(&args.prompt, false)?;
    let opts = GenerateOptions {
        max_tokens: args.tokens.unwrap_or(default_tokens),
        ..GenerateOptions::default()
    };
    print!("{}", args.prompt);
    let mut stdout = std::io::stdout();
    let gen = engine::generate(backend.as_mut(), &tokenizer, &prompt, &opts, &mut |text| {
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    })?;
    println!();
    eprintln!(
        "{} prompt tokens, {} generated ({:?}); prefill {:.0} ms, decode {:.1} ms/token",
        gen.prompt_tokens.len(),
        gen.tokens.len(),
        gen.stop_reason,
        gen.timings.prefill_ms,
        gen.timings.decode_ms_per_token
    );
    Ok(())
}
