//! Opening a model file and putting it on a backend.

use anyhow::{Context, Result};
use clap::ValueEnum;
use cpu::draft_head::{file_fingerprint, DraftHead, HeadFile};
use engine::{Backend, Drafter};
use model::chat::{ChatMessage, ChatTemplate};
use model::tokenizer::Tokenizer;
use model::{GgufFile, LlamaWeights};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The CPU backend (quantized kernels; `--exact` for the f32 reference path).
    Cpu,
    /// The ANE kernels on the ANE simulator (any OS; slow: it computes what the ANE would).
    AneSim,
    /// The Apple Neural Engine through the private API (macOS on Apple silicon).
    Ane,
    /// The ANE when present and healthy, else the CPU.
    Auto,
}

/// Numerics of the ANE simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SimPrecision {
    /// fp16 storage between ops, fp32 accumulation (ANE-like).
    Fp16,
    /// Pure f32: separates kernel logic from fp16 rounding.
    F32,
}

/// `--draft`: what proposes tokens for the verify pass of speculative decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DraftChoice {
    /// The model's draft head when one exists, else ngram.
    Auto,
    /// A trained head that proposes the token after next from the last hidden state.
    Head,
    /// Copy what followed the longest earlier match of the last tokens (prompt lookup).
    Ngram,
    /// No drafting: one token per decode pass.
    None,
}

/// Draft heads shipped in the binary: (file name, GGUF bytes). Each records the model it
/// belongs to; `--draft auto` uses one only for that exact file.
const SHIPPED_HEADS: &[(&str, &[u8])] = &[(
    "SmolLM2-135M-Instruct.Q4_1.head.gguf",
    include_bytes!("../assets/draft/SmolLM2-135M-Instruct.Q4_1.head.gguf"),
)];

/// The drafter `choice` names for the model in `gguf` (none for a synthetic model; `name`
/// for messages). `head`: a head file given with `--draft-head`. The head runs on one
/// thread: 0.38 ms per proposal on SmolLM2-135M, against 0.59 ms on two threads that wake
/// between the backend's passes.
pub fn drafter(
    choice: DraftChoice,
    gguf: Option<&GgufFile>,
    name: &str,
    head: Option<&Path>,
    min_p: f32,
) -> Result<Box<dyn Drafter>> {
    if head.is_some() && matches!(choice, DraftChoice::None | DraftChoice::Ngram) {
        anyhow::bail!("--draft-head needs --draft head or --draft auto");
    }
    Ok(match choice {
        DraftChoice::None => Box::new(engine::NoDraft),
        DraftChoice::Ngram => Box::new(engine::Ngram::default()),
        DraftChoice::Head | DraftChoice::Auto => {
            let found = match (head, gguf) {
                (Some(path), Some(g)) => {
                    let h = HeadFile::open(path)?;
                    h.check_model(&g.path, true)?;
                    Some(h)
                }
                (Some(_), None) => anyhow::bail!("--draft-head: {name} has no model file"),
                (None, Some(g)) => find_head(g)?,
                (None, None) => None,
            };
            match (found, gguf) {
                (Some(h), Some(g)) => {
                    let weights = LlamaWeights::from_gguf(g)?;
                    let mut head = DraftHead::new(&h, &weights, 1)?;
                    head.set_min_p(min_p);
                    Box::new(head)
                }
                _ if choice == DraftChoice::Head => {
                    anyhow::bail!("no draft head for {name} (train one with espresso train-draft)")
                }
                _ => Box::new(engine::Ngram::default()),
            }
        }
    })
}

/// A draft head's default confidence threshold on backends where each extra verify row costs
/// work (the CPU): it proposes only when it gives its token at least this probability. On the
/// held-out prompts the shipped head's proposals above it are accepted about as often as the
/// extra row costs — see the README's draft-head section for the measured trade-off.
pub const CPU_DRAFT_MIN_P: f32 = 0.8;

/// The threshold for `backend`: `explicit` (`--draft-min-p`), else 0 where extra verify rows
/// are free (the ANE) and [`CPU_DRAFT_MIN_P`] elsewhere.
pub fn draft_min_p(explicit: Option<f32>, backend: &dyn engine::Backend) -> f32 {
    explicit.unwrap_or(if backend.extra_rows_free() {
        0.0
    } else {
        CPU_DRAFT_MIN_P
    })
}

/// The first head recorded for exactly the model file of `g`: those shipped in the binary,
/// then `$ESPRESSO_HOME/draft/*.gguf` in name order. The model is hashed (SHA-256, once) only
/// when a head records its byte size; an unreadable head in the cache is skipped with a
/// warning.
fn find_head(g: &GgufFile) -> Result<Option<HeadFile>> {
    let size = std::fs::metadata(&g.path)
        .with_context(|| format!("cannot read {}", g.path.display()))?
        .len();
    let mut cached: Vec<std::path::PathBuf> = model::cache::espresso_home()
        .ok()
        .and_then(|home| std::fs::read_dir(home.join("draft")).ok())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    cached.sort();
    let shipped = SHIPPED_HEADS
        .iter()
        .map(|(name, bytes)| HeadFile::from_bytes(name, bytes.to_vec()));
    let candidates = shipped.chain(cached.iter().map(|p| HeadFile::open(p)));
    let mut sha: Option<String> = None;
    for c in candidates {
        let head = match c {
            Ok(h) => h,
            Err(e) => {
                eprintln!("warning: skipping a draft head: {e}");
                continue;
            }
        };
        if head.model_size != size {
            continue;
        }
        let sha = match &sha {
            Some(s) => s,
            None => sha.insert(file_fingerprint(&g.path)?.0),
        };
        if *sha == head.model_sha256 {
            return Ok(Some(head));
        }
    }
    Ok(None)
}

/// Everything that decides which backend runs a model.
#[derive(Clone, Copy, Debug)]
pub struct BackendSpec {
    pub choice: BackendChoice,
    pub exact: bool,
    pub threads: usize,
    pub sim_precision: SimPrecision,
}

/// Open and check a model file: `path`, or the default model (pulled on first use).
/// Returns the file and a short name for messages.
pub fn open_model_file(path: Option<&Path>) -> Result<(GgufFile, String)> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => {
            let p = model::cache::default_model_location()?;
            if !p.is_file() {
                eprintln!(
                    "the default model is not in the cache yet; pulling it into {}",
                    p.display()
                );
                model::cache::pull(false, &mut crate::progress::Bars::default())?;
            }
            p
        }
    };
    let gguf = GgufFile::open(&path)?;
    // Fail early, with the model's own words, on a non-llama or incomplete file.
    LlamaWeights::from_gguf(&gguf).with_context(|| format!("cannot use {}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok((gguf, name))
}

/// Before running a model whose layer weights are float (F32, F16, BF16): hold its bytes in
/// memory on huge pages where the OS offers them ([`GgufFile::make_resident`]), since every
/// step streams those weights from memory (seed shape F32: decode ~15-17 -> ~13-14 ms/token).
/// Quantized models are left mapped: their decode reads the repacked copies or fits in the
/// cache, and the copy costs load time (0.1-1 s per few hundred MB on a VM that backs memory
/// lazily).
pub fn hold_for_streaming(gguf: &mut GgufFile) -> Result<()> {
    let float = LlamaWeights::from_gguf(gguf)?
        .layers
        .first()
        .is_some_and(|l| l.w_up.ty.block_elems() == 1);
    if float {
        gguf.make_resident()?;
    }
    Ok(())
}

/// A model file with its tokenizer and chat template.
pub struct Loaded {
    pub gguf: GgufFile,
    pub tokenizer: Tokenizer,
    pub chat: Result<ChatTemplate, String>,
    /// File name for messages and reports.
    pub name: String,
}

impl Loaded {
    /// Open `path`, or the default model (pulled into the cache on first use).
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let (gguf, name) = open_model_file(path)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)
            .with_context(|| format!("cannot build the tokenizer of {name}"))?;
        // A model without a template can still generate; a broken template is reported
        // when chat is actually requested.
        let chat = ChatTemplate::from_gguf(&gguf).map_err(|e| format!("{e}"));
        Ok(Self {
            gguf,
            tokenizer,
            chat,
            name,
        })
    }

    /// [`Loaded::open`] for running the model ([`hold_for_streaming`]).
    pub fn open_resident(path: Option<&Path>) -> Result<Self> {
        let mut loaded = Self::open(path)?;
        hold_for_streaming(&mut loaded.gguf)?;
        Ok(loaded)
    }

    /// Prompt token ids of a conversation in the model's chat template, ready for the
    /// assistant's turn. Message contents are tokenized as plain text: only the template's own
    /// text becomes special tokens ([`model::chat::encode_chat`]).
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let t = self
            .chat
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{} has no usable chat template: {e}", self.name))?;
        Ok(model::chat::encode_chat(
            t,
            &self.tokenizer,
            messages,
            true,
        )?)
    }

    pub fn backend(&self, spec: BackendSpec) -> Result<Box<dyn Backend + '_>> {
        make_backend(LlamaWeights::from_gguf(&self.gguf)?, spec)
    }
}

/// `0` means one thread per available core.
pub fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

pub fn make_backend<'a>(
    weights: LlamaWeights<'a>,
    spec: BackendSpec,
) -> Result<Box<dyn Backend + 'a>> {
    let cpu = |weights| -> Result<Box<dyn Backend + 'a>> {
        let opts = cpu::CpuOptions {
            exact: spec.exact,
            threads: resolve_threads(spec.threads),
        };
        Ok(Box::new(cpu::CpuBackend::new(weights, opts)?))
    };
    // A self-check failure disables the ANE path and falls back to the CPU, loudly.
    let ane_or_cpu = |weights: LlamaWeights<'a>,
                      r: Result<ane_llm::AneBackend<'a>, ane_llm::AneError>| {
        match r {
            Ok(b) => Ok(Box::new(b) as Box<dyn Backend + 'a>),
            Err(e @ ane_llm::AneError::SelfCheckFailed { .. }) => {
                eprintln!("warning: {e}");
                cpu(weights)
            }
            Err(e) => Err(e.into()),
        }
    };
    match spec.choice {
        BackendChoice::Cpu => cpu(weights),
        BackendChoice::AneSim => {
            let precision = match spec.sim_precision {
                SimPrecision::Fp16 => ane_sim::Precision::Fp16,
                SimPrecision::F32 => ane_sim::Precision::F32,
            };
            let r = ane_llm::ane_sim_backend(
                weights.clone(),
                precision,
                ane_llm::AneOptions::default(),
            );
            ane_or_cpu(weights, r)
        }
        BackendChoice::Ane => {
            ane_macos::availability().map_err(|why| anyhow::anyhow!("--backend ane: {why}"))?;
            let device = ane_macos::open_device()?;
            let r =
                ane_llm::AneBackend::new(weights.clone(), device, ane_llm::AneOptions::default());
            ane_or_cpu(weights, r)
        }
        BackendChoice::Auto => {
            // The same rule and probes `espresso doctor` reports.
            let decision = ane_macos::decide_auto();
            match decision.device {
                Some(device) => {
                    eprintln!("backend auto: ane ({})", decision.choice.reason);
                    let r = ane_llm::AneBackend::new(
                        weights.clone(),
                        device,
                        ane_llm::AneOptions::default(),
                    );
                    ane_or_cpu(weights, r)
                }
                None => {
                    eprintln!("backend auto: using the CPU ({})", decision.choice.reason);
                    cpu(weights)
                }
            }
        }
    }
}
