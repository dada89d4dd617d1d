//! Fast CPU kernels and the CPU backend.
//!
//! This crate owns the Llama forward pass on the CPU: the f32 building blocks ([`ops`]: RMSNorm,
//! RoPE, softmax, SwiGLU, GQA attention), 8-bit activation quantization ([`quant`]), dot
//! products on weights in their stored types with AVX2, AVX-512 VNNI, NEON (`neon`, aarch64)
//! and portable versions ([`dot`]), the multi-threaded (batched) matrix products built on them
//! ([`matmul`]), the decode weights repacked sixteen rows at a time for AVX-512 VNNI
//! ([`packed`]: `Q4_0`, `Q4_1`, `Q8_0`), the tiled f32 kernel of prompt chunks ([`tiles`]),
//! and [`CpuBackend`], the [`engine::Backend`] that runs a model with either the fast quantized path or the exact
//! (dequantize-on-the-fly, f32) reference path.
//!
//! [`train`] holds the training math: each op's forward over a sequence and its hand-written
//! backward (RMSNorm, RoPE, causal GQA attention, SwiGLU, embedding, cross-entropy, linear on
//! packed GEMMs), generic over f32/f64 and checked against finite differences and against the
//! inference ops above.
//!
//! [`draft_head`] is the trained draft head of speculative decoding (an [`engine::Drafter`]
//! proposing the token after next from the last hidden state, its training math and its GGUF
//! file), and [`draft_train`] trains it by self-distillation on the model's greedy outputs.

pub mod backend;
pub mod dot;
pub mod draft_head;
pub mod draft_train;
pub mod matmul;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod ops;
pub mod packed;
pub mod quant;
pub mod tiles;
pub mod train;

pub use backend::{CpuBackend, CpuError, CpuOptions, PREFILL_CHUNK};
pub use matmul::Precision;
