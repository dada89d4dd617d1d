//! Everything between a loaded model and a stream of text: the [`Backend`] trait that CPU and
//! ANE backends implement, sampling, the generation loop with stop conditions and streaming
//! detokenization, and the benchmark harness behind `espresso bench`.

pub mod backend;

pub use backend::{Backend, BackendError, BackendStats};
