//! The contract between generation and a compute backend (CPU, ANE simulator, ANE hardware).

use model::LlamaConfig;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("position {pos} is past the context length {ctx}")]
    ContextFull { pos: usize, ctx: usize },
    #[error("token id {0} is outside the vocabulary")]
    BadToken(u32),
    #[error("{0}")]
    Device(String),
}

/// Counters a backend reports for `espresso bench` and tests.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct BackendStats {
    /// Device dispatches (kernel evaluations) since creation; 0 for CPU.
    pub dispatches: u64,
    /// Kernel compiles since creation; 0 for CPU.
    pub compiles: u64,
    /// Planning estimate of device time (ANE cost model), milliseconds; `None` for CPU.
    pub predicted_device_ms: Option<f64>,
    /// Chip profile the estimate was made for (e.g. "M4"), if any.
    pub chip_profile: Option<String>,
}

/// A model loaded onto some compute device, holding its own KV cache.
///
/// Positions are absolute: `forward(tokens, pos)` processes `tokens` at positions
/// `pos..pos + tokens.len()`, writing their keys/values into the cache, and may assume the
/// cache holds positions `0..pos` from earlier calls. Calling it with a smaller `pos` than
/// before rewinds (later cache entries are overwritten).
pub trait Backend {
    /// Short name for messages and `bench --json` (e.g. "cpu", "cpu-exact", "ane-sim").
    fn name(&self) -> String;
    fn config(&self) -> &LlamaConfig;
    /// Run `tokens` (non-empty) and return the logits (`vocab_size` floats) of the last one.
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError>;
    /// Run `tokens` and return logits for every position, `[tokens.len()][vocab_size]` flattened.
    /// The default runs one token at a time.
    fn forward_all(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        let mut out = Vec::with_capacity(tokens.len() * self.config().vocab_size);
        for (i, &t) in tokens.iter().enumerate() {
            out.extend(self.forward(&[t], pos + i)?);
        }
        Ok(out)
    }
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }
}
