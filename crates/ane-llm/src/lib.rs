//! Llama-family transformers on an ANE-shaped device: the kernel generators ([`kernels`]:
//! fused N-layer blocks and the classifier head, each a typed `mil::Program` plus fp16
//! weight blobs) and [`AneBackend`], the `engine::Backend` that compiles them once, keeps the
//! residual stream and the KV cache in device surfaces, self-checks every kernel against the
//! f32 simulator and runs prefill and decode. The only ANE crate that knows about models
//! (`model`) and generation (`engine`); the device itself comes in as a `Box<dyn ane::Device>`
//! (the simulator from `ane-sim`, the hardware from `ane-macos`, or a test double).
//!
//! # Embedding
//!
//! Generating text: open a GGUF file (`model`), borrow its weights, build a backend on a
//! device, and call `engine::generate` with a callback that receives each piece of text as
//! soon as it is complete. The runnable version, with the CPU backend as an option, is
//! `cargo run -p ane-llm --example generate`.
//!
//! ```no_run
//! use engine::GenerateOptions;
//! use model::{GgufFile, LlamaWeights, Tokenizer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let path = model::cache::default_model_path()?; // after `espresso pull`
//! let gguf = GgufFile::open(&path)?;
//! let tokenizer = Tokenizer::from_gguf(&gguf)?;
//! let weights = LlamaWeights::from_gguf(&gguf)?; // borrowed from the file's memory map
//!
//! // The hardware ANE when present and healthy, else the simulator.
//! let opts = ane_llm::AneOptions::default();
//! let mut backend = match ane_macos::decide_auto().device {
//!     Some(device) => ane_llm::AneBackend::new(weights, device, opts)?,
//!     None => ane_llm::ane_sim_backend(weights, ane_sim::Precision::Fp16, opts)?,
//! };
//!
//! let prompt = tokenizer.encode_with_bos("The capital of France is", false)?;
//! let opts = GenerateOptions { max_tokens: 8, ..GenerateOptions::default() }; // greedy
//! let gen = engine::generate(&mut backend, &tokenizer, &prompt, &opts, &mut |text| {
//!     print!("{text}");
//! })?;
//! println!("\n{} tokens, stopped by {:?}", gen.tokens.len(), gen.stop_reason);
//! # Ok(())
//! # }
//! ```

pub mod backend;
pub mod kernels;
pub mod train;

pub use backend::{ane_sim_backend, AneBackend, AneError, AneOptions};
