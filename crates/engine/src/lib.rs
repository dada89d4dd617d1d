//! Everything between a loaded model and a stream of text: the [`Backend`] trait that CPU and
//! ANE backends implement, sampling ([`sampler`]), the generation loop with stop conditions and
//! streaming detokenization ([`mod@generate`]), speculative decoding with drafts
//! verified in one pass ([`draft`]), loss and perplexity over a text ([`mod@perplexity`]),
//! the benchmark harness behind `espresso bench` ([`mod@bench`]), KV-cache reuse across calls
//! ([`session`]) and continuous batching of many requests on one backend ([`batch`]), which the
//! server builds on.

pub mod backend;
pub mod batch;
pub mod bench;
pub mod draft;
pub mod generate;
pub mod perplexity;
pub mod sampler;
pub mod session;
pub mod train;

pub use backend::{error_chain, Backend, BackendError, BackendStats, Feed, SlotInput};
pub use draft::{DraftStats, Drafter, Ngram, NoDraft};
pub use generate::{
    generate, generate_drafted, Decoding, GenerateError, GenerateOptions, Generation, Step,
    StopReason,
};
pub use perplexity::{perplexity, PerplexityError, PerplexityResult};
pub use sampler::{argmax, Sampler, SamplerConfig};
pub use session::{Session, SlotCache};
