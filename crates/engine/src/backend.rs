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

/// How tokens reach the model, which decides what a pass returns and how it may compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Prompt tokens: the logits of the last one are returned. A backend may run them as
    /// matrix products over all of them at once (the CPU backend's prompt GEMM), which can
    /// differ in the last bits from decode steps.
    Prompt,
    /// Sampled or drafted tokens (a decode step, or a verify pass of a drafted chain): the
    /// logits of every one are returned, and each is computed exactly as a one-token decode
    /// step at its position would compute it, whatever else shares the pass (row-invariant).
    Decode,
}

/// One sequence's share of a batched pass ([`Backend::forward_batch`]): `tokens` at positions
/// `pos..pos + tokens.len()` of the sequence held in KV slot `slot`.
#[derive(Debug, Clone, Copy)]
pub struct SlotInput<'a> {
    pub slot: usize,
    pub tokens: &'a [u32],
    pub pos: usize,
    pub feed: Feed,
}

impl SlotInput<'_> {
    /// How many rows of logits this input gets back: 1 for a prompt, one per token to decode.
    pub fn logit_rows(&self) -> usize {
        match self.feed {
            Feed::Prompt => 1,
            Feed::Decode => self.tokens.len(),
        }
    }
}

/// A model loaded onto some compute device, holding its own KV cache(s).
///
/// Positions are absolute: `forward(tokens, pos)` processes `tokens` at positions
/// `pos..pos + tokens.len()`, writing their keys/values into the cache, and may assume the
/// cache holds positions `0..pos` from earlier calls. Calling it with a smaller `pos` than
/// before rewinds (later cache entries are overwritten).
///
/// A backend may hold several independent sequences, each in its own KV cache ("slot"):
/// `forward` and `forward_all` use slot 0, [`Backend::forward_batch`] runs steps of several
/// slots in one pass over the weights (continuous batching in the server).
pub trait Backend {
    /// Short name for messages and `bench --json` (e.g. "cpu", "cpu-exact", "ane-sim").
    fn name(&self) -> String;
    fn config(&self) -> &LlamaConfig;
    /// Run prompt `tokens` (non-empty, [`Feed::Prompt`]) and return the logits (`vocab_size`
    /// floats) of the last one.
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError>;
    /// Decode `tokens` ([`Feed::Decode`]): a sampled token, then any drafted ones after it, at
    /// `pos..`; returns the logits of every one, `[tokens.len()][vocab_size]` flattened. Row `i`
    /// is bitwise what a one-token step at `pos + i` would give after the rows before it
    /// (the verify pass of speculative decoding); the cache entries of rows whose tokens are
    /// later rejected are simply overwritten by the next call. The default runs one token
    /// at a time.
    fn decode(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        let mut out = Vec::with_capacity(tokens.len() * self.config().vocab_size);
        for (i, &t) in tokens.iter().enumerate() {
            out.extend(self.forward(&[t], pos + i)?);
        }
        Ok(out)
    }
    /// Run `tokens` and return logits for every position, `[tokens.len()][vocab_size]` flattened.
    /// The default runs one token at a time.
    fn forward_all(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        let mut out = Vec::with_capacity(tokens.len() * self.config().vocab_size);
        for (i, &t) in tokens.iter().enumerate() {
            out.extend(self.forward(&[t], pos + i)?);
        }
        Ok(out)
    }
    /// Whether a [`Backend::decode`] pass of a few rows costs what a one-token step costs
    /// (the ANE: a decode dispatch computes all its lanes anyway), so a drafter should always
    /// propose; `false` where every extra row is extra work (the CPU).
    fn extra_rows_free(&self) -> bool {
        false
    }
    /// How many slots (independent KV caches) the backend can hold; 1 unless it batches.
    fn max_slots(&self) -> usize {
        1
    }
    /// Run several sequences' tokens in one pass and return, for each input in order, its
    /// [`SlotInput::logit_rows`] rows of logits, flattened. Inputs name distinct slots below
    /// [`Backend::max_slots`]; a slot's positions follow the same rules as `forward`. The
    /// logits of an input do not depend on what else is in the batch.
    ///
    /// The default serves single-slot backends: one input, slot 0, through `forward` or
    /// `decode`.
    fn forward_batch(&mut self, inputs: &[SlotInput]) -> Result<Vec<f32>, BackendError> {
        check_slots(inputs, self.max_slots())?;
        let mut out = Vec::with_capacity(inputs.len() * self.config().vocab_size);
        for input in inputs {
            out.extend(match input.feed {
                Feed::Prompt => self.forward(input.tokens, input.pos)?,
                Feed::Decode => self.decode(input.tokens, input.pos)?,
            });
        }
        Ok(out)
    }
    /// The final hidden states (after the output norm), `[rows][dim]` flattened, of the rows
    /// whose logits the last `forward`, `decode` or `forward_batch` returned, in the same
    /// order — for a draft head that proposes from them. `None` if the backend does not keep
    /// them.
    fn hidden_states(&self) -> Option<&[f32]> {
        None
    }
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }
}

/// Check that batch inputs name distinct slots below `max_slots` and carry tokens.
pub fn check_slots(inputs: &[SlotInput], max_slots: usize) -> Result<(), BackendError> {
    for (i, input) in inputs.iter().enumerate() {
        if input.slot >= max_slots {
            return Err(BackendError::Device(format!(
                "slot {} requested but this backend holds {max_slots}",
                input.slot
            )));
        }
        if input.tokens.is_empty() {
            return Err(BackendError::Device(format!(
                "batch input {i} (slot {}) has no tokens",
                input.slot
            )));
        }
        if inputs[..i].iter().any(|o| o.slot == input.slot) {
            return Err(BackendError::Device(format!(
                "slot {} appears twice in one batch",
                input.slot
            )));
        }
    }
    Ok(())
}

/// An error and each of its causes as one line, `: `-separated. Our library errors leave their
/// cause to the chain (`#[source]`), so a message shown without the chain would lose it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
