//! Reusing a KV cache across requests: [`SlotCache`] remembers which tokens a cache slot holds,
//! so a prompt that starts the same way (the conversation so far, in a chat) skips recomputing
//! that prefix; [`Session`] is one backend plus its slot-0 cache, as `espresso chat` uses it.
//! The server's batcher keeps one [`SlotCache`] per slot.

use crate::backend::Backend;
use crate::draft::{Drafter, NoDraft};
use crate::generate::{generate_drafted, GenerateError, GenerateOptions, Generation};
use model::tokenizer::Tokenizer;

/// The token ids whose keys and values a KV cache slot holds, in position order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotCache {
    tokens: Vec<u32>,
}

impl SlotCache {
    /// How many leading tokens of `prompt` can be taken from the cache: the common prefix,
    /// but at least the last prompt token runs again (its logits give the next token).
    pub fn reusable(&self, prompt: &[u32]) -> usize {
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        common.min(prompt.len().saturating_sub(1))
    }

    /// The cached tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forget everything from position `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.tokens.truncate(len);
    }

    /// Record tokens just written at the following positions.
    pub fn extend(&mut self, tokens: &[u32]) {
        self.tokens.extend_from_slice(tokens);
    }

    pub fn clear(&mut self) {
        self.tokens.clear();
    }
}

/// A backend and the bookkeeping of what its cache holds: each [`Session::generate`] reuses
/// the longest prefix the previous calls left in the cache.
pub struct Session<'b> {
    backend: Box<dyn Backend + 'b>,
    drafter: Box<dyn Drafter + 'b>,
    cache: SlotCache,
}

impl<'b> Session<'b> {
    pub fn new(backend: Box<dyn Backend + 'b>) -> Self {
        Self {
            backend,
            drafter: Box::new(NoDraft),
            cache: SlotCache::default(),
        }
    }

    /// Draft with `drafter` (speculative decoding, `GenerateOptions::draft_max` tokens per pass).
    pub fn with_drafter(mut self, drafter: Box<dyn Drafter + 'b>) -> Self {
        self.drafter = drafter;
        self
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// What the cache holds now.
    pub fn cache(&self) -> &SlotCache {
        &self.cache
    }

    /// Start over: nothing in the cache is reused by the next call.
    pub fn reset(&mut self) {
        self.cache.clear();
    }

    /// [`generate_drafted`] with `opts.cached_prefix` set from the cache; `Generation::cached_tokens`
    /// says how many prompt tokens were reused.
    pub fn generate(
        &mut self,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, GenerateError> {
        let opts = GenerateOptions {
            cached_prefix: self.cache.reusable(prompt),
            ..opts.clone()
        };
        // Until this call succeeds, only the reused prefix is known to be intact.
        self.cache.truncate(opts.cached_prefix);
        let gen = generate_drafted(
            self.backend.as_mut(),
            self.drafter.as_mut(),
            tokenizer,
            prompt,
            &opts,
            on_text,
        )?;
        // The prompt and every generated token but the last went through the backend.
        self.cache.clear();
        self.cache.extend(prompt);
        self.cache
            .extend(&gen.tokens[..gen.tokens.len().saturating_sub(1)]);
        Ok(gen)
    }
}
