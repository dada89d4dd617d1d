//! Speculative decoding: a [`Drafter`] proposes the tokens that may follow, one verify pass
//! ([`Backend::decode`]) runs the current token and the proposals together, and
//! [`decode_loop`] keeps the proposals the model itself would have chosen, so every pass
//! commits at least one token and up to `draft_max`.
//!
//! Greedy output is identical with and without drafting by construction: the backend computes
//! each row of a verify pass exactly as a one-token step ([`crate::Feed::Decode`]), and a
//! proposal is kept only when it is the token chosen from the row before it. With sampling,
//! [`crate::Sampler::sample_with_draft`] keeps the output distribution unchanged.
//!
//! Drafters here: [`NoDraft`] and [`Ngram`] (copy what followed the longest earlier match of
//! the last tokens); a trained head lives with its weights.

use crate::backend::{Backend, BackendError};
use serde::Serialize;
use std::time::Instant;

/// Proposes tokens to follow a sequence.
pub trait Drafter {
    /// Short name for `--json` and bench output ("none", "ngram", "head").
    fn name(&self) -> &str;
    /// Up to `max` tokens likely to follow `context` (the prompt and the tokens generated so
    /// far, ending with the token about to be fed). `hidden` is the final hidden state
    /// (after the output norm) of the position whose logits chose that last token, when the
    /// backend keeps it.
    fn propose(&mut self, context: &[u32], hidden: Option<&[f32]>, max: usize) -> Vec<u32>;
}

/// Never proposes: one token per pass.
pub struct NoDraft;

impl Drafter for NoDraft {
    fn name(&self) -> &str {
        "none"
    }
    fn propose(&mut self, _: &[u32], _: Option<&[f32]>, _: usize) -> Vec<u32> {
        Vec::new()
    }
}

/// Prompt lookup: find the most recent earlier occurrence of the longest suffix of the
/// context (between `min_match` and `max_match` tokens) and propose the tokens that followed
/// it. No model; strong where the answer copies from the prompt or repeats itself.
pub struct Ngram {
    pub min_match: usize,
    pub max_match: usize,
}

impl Default for Ngram {
    fn default() -> Self {
        Self {
            min_match: 2,
            max_match: 8,
        }
    }
}

impl Drafter for Ngram {
    fn name(&self) -> &str {
        "ngram"
    }

    fn propose(&mut self, context: &[u32], _: Option<&[f32]>, max: usize) -> Vec<u32> {
        let n = context.len();
        if max == 0 {
            return Vec::new();
        }
        for len in (self.min_match.max(1)..=self.max_match.min(n.saturating_sub(1))).rev() {
            let pattern = &context[n - len..];
            // Occurrences that end before the last token, so at least one token follows.
            if let Some(start) = (0..n - len)
                .rev()
                .find(|&s| &context[s..s + len] == pattern)
            {
                let from = start + len;
                return context[from..(from + max).min(n)].to_vec();
            }
        }
        Vec::new()
    }
}

/// What drafting did over one generation (`--json`'s `"draft"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DraftStats {
    pub method: String,
    /// Verify passes (decode calls) made.
    pub passes: u64,
    /// Tokens proposed by the drafter.
    pub proposed: u64,
    /// Proposed tokens the model kept.
    pub accepted: u64,
}

impl DraftStats {
    /// Tokens committed per pass (1 without drafting).
    pub fn tokens_per_pass(&self) -> f64 {
        (self.passes + self.accepted) as f64 / self.passes.max(1) as f64
    }

    /// Share of proposed tokens that were kept.
    pub fn acceptance(&self) -> f64 {
        self.accepted as f64 / self.proposed.max(1) as f64
    }
}

/// Where a decode loop starts: `token` (just chosen, not yet in the cache) goes to position
/// `pos`; `context` is everything before it plus `token`; `hidden` is the hidden state of the
/// row that chose it.
pub struct LoopStart {
    pub context: Vec<u32>,
    pub token: u32,
    pub pos: usize,
    pub hidden: Option<Vec<f32>>,
}

/// What [`decode_loop`] did.
#[derive(Debug, Clone, Default)]
pub struct LoopReport {
    pub draft: DraftStats,
    /// Rows whose logits were decided on (tokens chosen, an end token included).
    pub decided: u64,
    /// Wall time inside the backend's verify passes, seconds.
    pub backend_s: f64,
}

/// `decide(logits, proposal, room)`: the token that follows a row of a verify pass (`room`:
/// the context can take it), `None` to stop.
pub type Decide<'a, E> = dyn FnMut(&[f32], Option<u32>, bool) -> Result<Option<u32>, E> + 'a;

/// How many tokens to propose for a pass whose current token goes to `pos`: up to
/// `draft_max - 1`, never past `ctx` positions, and no more than `left - 1` when `left`
/// tokens are still to be chosen (each row decides one).
pub fn proposals_wanted(draft_max: usize, pos: usize, ctx: usize, left: usize) -> usize {
    draft_max
        .saturating_sub(1)
        .min(ctx.saturating_sub(pos + 1))
        .min(left.saturating_sub(1))
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Rows decided on.
    pub decided: usize,
    /// Leading proposals kept.
    pub accepted: usize,
    /// The token chosen after the kept proposals and the row that chose it (to be fed next);
    /// `None` when `decide` stopped.
    pub next: Option<(u32, usize)>,
}

/// Walk the rows (`[proposals.len() + 1][vocab]`) of a verify pass fed at `pos`: keep each
/// proposal that `decide` chooses itself; the first other choice (or the choice after the
/// last proposal) is the next token.
pub fn verify<E>(
    logits: &[f32],
    vocab: usize,
    proposals: &[u32],
    pos: usize,
    ctx: usize,
    decide: &mut Decide<'_, E>,
) -> Result<Verified, E> {
    let mut v = Verified {
        decided: 0,
        accepted: 0,
        next: None,
    };
    for (i, row) in logits.chunks_exact(vocab).enumerate() {
        let proposal = proposals.get(i).copied();
        v.decided += 1;
        let Some(t) = decide(row, proposal, pos + i + 1 < ctx)? else {
            return Ok(v);
        };
        if Some(t) != proposal {
            v.next = Some((t, i));
            return Ok(v);
        }
        v.accepted += 1;
    }
    Ok(v)
}

/// Decode from `start` until `decide` says stop. Each pass feeds the current token and the
/// drafter's proposals ([`proposals_wanted`], with `left` the tokens still to choose) to
/// [`Backend::decode`] and keeps what [`verify`] accepts.
pub fn decode_loop<E: From<BackendError>>(
    backend: &mut dyn Backend,
    drafter: &mut dyn Drafter,
    draft_max: usize,
    start: LoopStart,
    ctx: usize,
    mut left: usize,
    decide: &mut Decide<'_, E>,
) -> Result<LoopReport, E> {
    let LoopStart {
        mut context,
        mut token,
        mut pos,
        mut hidden,
    } = start;
    let vocab = backend.config().vocab_size;
    let dim = backend.config().dim;
    let mut report = LoopReport {
        draft: DraftStats {
            method: drafter.name().to_string(),
            ..DraftStats::default()
        },
        ..LoopReport::default()
    };
    loop {
        let want = proposals_wanted(draft_max, pos, ctx, left);
        let mut proposals = if want > 0 {
            drafter.propose(&context, hidden.as_deref(), want)
        } else {
            Vec::new()
        };
        proposals.truncate(want);
        let mut feed = Vec::with_capacity(1 + proposals.len());
        feed.push(token);
        feed.extend(&proposals);
        let t = Instant::now();
        let logits = backend.decode(&feed, pos)?;
        report.backend_s += t.elapsed().as_secs_f64();
        report.draft.passes += 1;
        report.draft.proposed += proposals.len() as u64;
        let v = verify(&logits, vocab, &proposals, pos, ctx, decide)?;
        report.decided += v.decided as u64;
        report.draft.accepted += v.accepted as u64;
        left = left.saturating_sub(v.decided);
        context.extend(&proposals[..v.accepted]);
        let Some((t, row)) = v.next else {
            return Ok(report);
        };
        hidden = backend
            .hidden_states()
            .and_then(|h| h.get(row * dim..(row + 1) * dim))
            .map(<[f32]>::to_vec);
        context.push(t);
        token = t;
        pos += row + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngram_copies_after_the_longest_most_recent_match() {
        let mut d = Ngram::default();
        // "1 2 3 4 5 ... 1 2 3" → propose "4 5".
        assert_eq!(d.propose(&[1, 2, 3, 4, 5, 9, 1, 2, 3], None, 2), vec![4, 5]);
        // The longer match (7 2 3) wins over a more recent shorter one (2 3).
        assert_eq!(
            d.propose(&[7, 2, 3, 8, 0, 2, 3, 6, 7, 2, 3], None, 1),
            vec![8]
        );
        // Equal length: the most recent occurrence.
        assert_eq!(d.propose(&[2, 3, 4, 2, 3, 5, 2, 3], None, 3), vec![5, 2, 3]);
        // Proposals stop at the end of the context.
        assert_eq!(d.propose(&[5, 6, 5, 6], None, 4), vec![5, 6]);
    }

    #[test]
    fn ngram_without_a_match_proposes_nothing() {
        let mut d = Ngram::default();
        assert!(d.propose(&[1, 2, 3, 4], None, 3).is_empty());
        assert!(d.propose(&[1], None, 3).is_empty());
        assert!(d.propose(&[], None, 3).is_empty());
        // A one-token match is below the minimum.
        assert!(d.propose(&[1, 2, 3, 1], None, 3).is_empty());
        assert!(d.propose(&[1, 2, 1, 2], None, 0).is_empty());
    }
}
