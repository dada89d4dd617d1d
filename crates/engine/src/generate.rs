//! The generation loop: prefill the prompt, then sample, stream and decode one token at a time
//! until EOS, a stop string, the token limit or the end of the context.

use crate::backend::{Backend, BackendError};
use crate::draft::{decode_loop, DraftStats, Drafter, LoopStart, NoDraft};
use crate::sampler::{Sampler, SamplerConfig, SamplerError};
use model::tokenizer::{StreamDecoder, Tokenizer, TokenizerError};
use serde::Serialize;
use std::time::Instant;

/// Why [`generate`] stopped before producing a result.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty: give some text to continue")]
    EmptyPrompt,
    #[error("the prompt is {prompt} tokens long but the model's context holds {ctx}; shorten the prompt")]
    PromptTooLong { prompt: usize, ctx: usize },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// What to generate and how; `GenerateOptions::default()` is greedy decoding of 0 tokens, so
/// set at least `max_tokens`.
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// Maximum number of tokens to generate.
    pub max_tokens: usize,
    /// Sampling; the default (temperature 0) is greedy: always the most likely token.
    pub sampler: SamplerConfig,
    /// Generation stops when the text contains any of these; the stop string is not emitted.
    pub stop: Vec<String>,
    /// How many leading prompt tokens the backend's cache already holds from an earlier call
    /// (interactive chat reuses the conversation so far); 0 for a fresh prompt.
    pub cached_prefix: usize,
    /// Tokens per verify pass when a drafter proposes: the current token and up to
    /// `draft_max - 1` proposals (0 or 1: no drafting).
    pub draft_max: usize,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model emitted its end-of-generation token.
    EndOfGeneration,
    /// The text reached one of the stop strings.
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The model's context is full.
    ContextFull,
}

/// Wall-clock times of one [`generate`] call.
#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    /// Time of the prompt's forward pass, milliseconds.
    pub prefill_ms: f64,
    /// Wall time of the decode passes per token they decided (with drafting, a pass may
    /// decide several).
    pub decode_ms_per_token: f64,
}

/// The result of [`generate`].
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// The prompt's token ids, as given.
    pub prompt_tokens: Vec<u32>,
    /// How many leading prompt tokens were taken from the backend's cache, not recomputed.
    pub cached_tokens: usize,
    /// Generated token ids only (an end-of-generation token is not included).
    pub tokens: Vec<u32>,
    /// The generated text (what the callback received, concatenated).
    pub text: String,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Prefill and per-token decode times.
    pub timings: Timings,
    /// What drafting proposed and the model kept (method "none": one token per pass).
    pub draft: DraftStats,
}

/// Holds back streamed text that might be the beginning of a stop string.
struct StopFilter {
    stops: Vec<String>,
    text: String,
    emitted: usize,
}

impl StopFilter {
    fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            text: String::new(),
            emitted: 0,
        }
    }

    /// Add text; returns (text safe to emit now, whether a stop string was hit).
    fn push(&mut self, s: &str) -> (String, bool) {
        self.text.push_str(s);
        let hit = self
            .stops
            .iter()
            .filter_map(|st| {
                self.text[self.emitted..]
                    .find(st.as_str())
                    .map(|i| self.emitted + i)
            })
            .min();
        if let Some(end) = hit {
            self.text.truncate(end);
            let out = self.text[self.emitted..].to_string();
            self.emitted = end;
            return (out, true);
        }
        // Longest suffix of the unemitted text that is a proper prefix of a stop string.
        let pending = &self.text[self.emitted..];
        let hold = self
            .stops
            .iter()
            .flat_map(|st| {
                (1..st.len().min(pending.len() + 1))
                    .filter(|&k| st.is_char_boundary(k) && pending.ends_with(&st[..k]))
            })
            .max()
            .unwrap_or(0);
        let end = self.text.len() - hold;
        let out = self.text[self.emitted..end].to_string();
        self.emitted = end;
        (out, false)
    }

    fn finish(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }
}

/// What [`Decoding::step`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Feed this token to the backend at the next position and call `step` with its logits.
    Feed(u32),
    /// The continuation is over.
    Done(StopReason),
}

/// The decoding state of one sequence: its sampler, streaming detokenizer, stop strings and
/// the tokens so far. [`generate`] drives one; the server's batcher drives one per request.
pub struct Decoding<'t> {
    tokenizer: &'t Tokenizer,
    sampler: Sampler,
    decoder: StreamDecoder<'t>,
    stop: StopFilter,
    max_tokens: usize,
    tokens: Vec<u32>,
}

impl<'t> Decoding<'t> {
    /// Fails on invalid sampling settings.
    pub fn new(tokenizer: &'t Tokenizer, opts: &GenerateOptions) -> Result<Self, SamplerError> {
        Ok(Self {
            tokenizer,
            sampler: Sampler::new(opts.sampler.clone())?,
            decoder: StreamDecoder::skipping_control(tokenizer),
            stop: StopFilter::new(&opts.stop),
            max_tokens: opts.max_tokens,
            tokens: Vec::new(),
        })
    }

    /// Choose the next token from `logits` (those after the last prompt or fed token), call
    /// `on_text` with any text now safe to show, and say whether to go on. `room` tells
    /// whether the context can take one more position.
    pub fn step(
        &mut self,
        logits: &[f32],
        room: bool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Step, TokenizerError> {
        self.step_drafted(logits, None, room, on_text)
    }

    /// [`Decoding::step`] where a drafter proposed `draft` after these logits: the token is
    /// chosen by [`Sampler::sample_with_draft`], so drafting leaves the output distribution
    /// unchanged. The proposal was kept when `Step::Feed` returns it.
    pub fn step_drafted(
        &mut self,
        logits: &[f32],
        draft: Option<u32>,
        room: bool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Step, TokenizerError> {
        if self.tokens.len() >= self.max_tokens {
            return Ok(Step::Done(StopReason::MaxTokens));
        }
        let next = match draft {
            Some(d) => self.sampler.sample_with_draft(logits, d),
            None => self.sampler.sample(logits),
        };
        if self.tokenizer.is_end_of_generation(next) {
            return Ok(Step::Done(StopReason::EndOfGeneration));
        }
        self.tokens.push(next);
        let (out, hit) = self.stop.push(&self.decoder.push(next)?);
        if !out.is_empty() {
            on_text(&out);
        }
        Ok(if hit {
            Step::Done(StopReason::StopString)
        } else if self.tokens.len() >= self.max_tokens {
            Step::Done(StopReason::MaxTokens)
        } else if !room {
            Step::Done(StopReason::ContextFull)
        } else {
            Step::Feed(next)
        })
    }

    /// Release the text held back (an unfinished character, a possible stop-string start)
    /// once the continuation ended for `reason`.
    pub fn finish(&mut self, reason: StopReason, on_text: &mut dyn FnMut(&str)) {
        if reason == StopReason::StopString {
            return;
        }
        let (out, hit) = self.stop.push(&self.decoder.finish());
        let rest = if hit { out } else { out + &self.stop.finish() };
        if !rest.is_empty() {
            on_text(&rest);
        }
    }

    /// How many more tokens `max_tokens` allows.
    pub fn left(&self) -> usize {
        self.max_tokens.saturating_sub(self.tokens.len())
    }

    /// The generated token ids so far (an end-of-generation token is not included).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The text emitted so far (after `finish`, all of it).
    pub fn text(&self) -> &str {
        &self.stop.text[..self.stop.emitted]
    }
}

/// Generate a continuation of `prompt` (token ids), calling `on_text` with each piece of
/// text as soon as it is complete.
pub fn generate(
    backend: &mut dyn Backend,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation, GenerateError> {
    generate_drafted(backend, &mut NoDraft, tokenizer, prompt, opts, on_text)
}

/// [`generate`] with speculative decoding: `drafter` proposes up to `opts.draft_max - 1`
/// tokens per pass, verified in one [`Backend::decode`] call (see [`crate::draft`]). The
/// output is what [`generate`] gives (greedy: the same tokens; sampling: the same
/// distribution).
pub fn generate_drafted(
    backend: &mut dyn Backend,
    drafter: &mut dyn Drafter,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation, GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let ctx = backend.config().context_length;
    if prompt.len() > ctx {
        return Err(GenerateError::PromptTooLong {
            prompt: prompt.len(),
            ctx,
        });
    }
    let mut decoding = Decoding::new(tokenizer, opts)?;

    // At least the last prompt token must run to produce logits.
    let start = opts.cached_prefix.min(prompt.len() - 1);
    let t0 = Instant::now();
    let logits = backend.forward(&prompt[start..], start)?;
    let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;

    let mut report = Default::default();
    let mut reason = StopReason::MaxTokens;
    if let Step::Feed(first) = record(
        decoding.step(&logits, prompt.len() < ctx, on_text)?,
        &mut reason,
    ) {
        let mut context = prompt.to_vec();
        context.push(first);
        let start = LoopStart {
            context,
            token: first,
            pos: prompt.len(),
            hidden: backend.hidden_states().map(<[f32]>::to_vec),
        };
        let left = decoding.left();
        report = decode_loop(
            backend,
            drafter,
            opts.draft_max,
            start,
            ctx,
            left,
            &mut |row, draft, room| -> Result<Option<u32>, GenerateError> {
                let step = decoding.step_drafted(row, draft, room, on_text)?;
                Ok(match record(step, &mut reason) {
                    Step::Feed(t) => Some(t),
                    Step::Done(_) => None,
                })
            },
        )?;
    }
    decoding.finish(reason, on_text);
    let crate::draft::LoopReport {
        mut draft,
        decided,
        backend_s,
    } = report;
    draft.method = drafter.name().to_string();
    Ok(Generation {
        prompt_tokens: prompt.to_vec(),
        cached_tokens: start,
        text: decoding.text().to_string(),
        tokens: decoding.tokens,
        stop_reason: reason,
        timings: Timings {
            prefill_ms,
            decode_ms_per_token: if decided > 0 {
                backend_s * 1e3 / decided as f64
            } else {
                0.0
            },
        },
        draft,
    })
}

/// Note why a step ended the continuation, and pass the step on.
fn record(step: Step, reason: &mut StopReason) -> Step {
    if let Step::Done(r) = step {
        *reason = r;
    }
    step
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let (o, hit) = f.push(p);
            out += &o;
            if hit {
                return (out, true);
            }
        }
        out += &f.finish();
        (out, false)
    }

    #[test]
    fn stop_string_split_across_pieces_is_not_emitted() {
        assert_eq!(
            run(&["\n\n"], &["Hello", "\n", "\nmore"]),
            ("Hello".into(), true)
        );
        assert_eq!(
            run(&["END"], &["abc E", "N", "D tail"]),
            ("abc ".into(), true)
        );
    }

    #[test]
    fn held_back_prefix_is_released_when_it_does_not_match() {
        assert_eq!(run(&["END"], &["abc E", "x"]), ("abc Ex".into(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&["é!"], &["caf", "é", "?"]), ("café?".into(), false));
    }
}
