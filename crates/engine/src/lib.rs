//! Everything between a loaded model and a stream of text: the [`Backend`] trait that CPU and
//! ANE backends implement, sampling ([`sampler`]), the generation loop with stop conditions and
//! streaming detokenization ([`mod@generate`]), loss and perplexity over a text ([`mod@perplexity`]),
//! and the benchmark harness behind `espresso bench` ([`mod@bench`]).

pub mod backend;
pub mod bench;
pub mod generate;
pub mod perplexity;
pub mod sampler;
pub mod train;

pub use backend::{Backend, BackendError, BackendStats};
pub use generate::{generate, GenerateError, GenerateOptions, Generation, StopReason};
pub use perplexity::{perplexity, PerplexityError, PerplexityResult};
pub use sampler::{argmax, Sampler, SamplerConfig};
