//! Model files and everything needed to turn bytes on disk into a runnable description of a model.
//!
//! This crate owns: the GGUF container (our own reader and writer: no maintained Rust crate reads
//! GGUF v2/v3 memory-mapped with every quantized type we need), the quantized block formats and
//! their dequantization ([`quant`]; the K-quants `Q4_K`/`Q5_K`/`Q6_K` of "Q4_K_M" files in
//! [`kquant`], our own decoder written from ggml's reference because no well-kept Rust crate
//! decodes GGUF K-quants, checked bitwise against gguf-py), the Llama-family configuration read
//! from metadata ([`config`]), the weight map that names each layer's tensors ([`weights`]), the tokenizer built
//! from the GGUF vocabulary ([`tokenizer`]) and the model's own chat template ([`chat`]), with
//! [`encode_chat`] turning a conversation into prompt ids in which message contents are plain
//! text (only the template's own text becomes special tokens).
//! Weights stay quantized and memory-mapped; nothing here expands a model to f32 at load.

pub mod cache;
pub mod chat;
pub mod config;
pub mod gguf;
pub mod kquant;
pub mod quant;
pub mod synthetic;
pub mod tokenizer;
pub mod weights;

pub use chat::{encode_chat, ChatError, ChatMessage, ChatSegment, ChatTemplate, EncodeChatError};
pub use config::LlamaConfig;
pub use gguf::{GgufError, GgufFile, MetaValue, TensorInfo};
pub use quant::GgmlType;
pub use tokenizer::{StreamDecoder, Tokenizer, TokenizerError};
pub use weights::{LayerWeights, LlamaWeights, Tensor};
