//! Token-mean loss and perplexity of a model over a token stream, in non-overlapping windows
//! (the metric behind `espresso perplexity`, after llama.cpp's perplexity tool).
//!
//! The stream is cut into windows of `ctx` tokens: window `i` is `tokens[i*ctx .. (i+1)*ctx]`,
//! and a last partial window is kept when it has at least 2 tokens. Each window is run from
//! position 0 of a fresh cache (`forward_all(window, 0)`), so no window sees another's tokens,
//! and positions `1..len` of the window are scored: token `j` is predicted from the window's
//! tokens before it. The first token of a window is context only. Log-softmax is computed in
//! f64. `loss` is the mean negative log-likelihood (nats) over all scored tokens and
//! `perplexity = exp(loss)`.
//!
//! BOS: when `bos` is `Some(id)` (callers pass it when the model's tokenizer adds BOS to
//! prompts, `tokenizer.ggml.add_bos_token`), the first token of every window is replaced by
//! BOS, exactly as llama.cpp's perplexity tool does. That token is never scored, so the number
//! of scored tokens does not change; only the context does. SmolLM2 does not add BOS, so for it
//! windows are the plain text tokens.
//!
//! Unlike llama.cpp's tool, which scores only the second half of each chunk, every position
//! after the first is scored here; `scripts/perplexity_llamacpp.py` computes this same metric
//! with llama.cpp's forward pass.

use crate::backend::{Backend, BackendError};

#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error("the window size (--ctx) must be at least 2 tokens, got {0}")]
    CtxTooSmall(usize),
    #[error("the window size (--ctx) is {ctx} but the model's context holds {max} tokens")]
    CtxTooLarge { ctx: usize, max: usize },
    #[error("need at least 2 tokens to measure perplexity, got {0}")]
    TooFewTokens(usize),
    #[error("token id {0} is outside the vocabulary")]
    BadToken(u32),
    #[error(
        "the backend returned {got} logits for a window of {tokens} tokens (vocabulary {vocab})"
    )]
    BadLogits {
        got: usize,
        tokens: usize,
        vocab: usize,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The outcome of [`perplexity`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PerplexityResult {
    /// Mean negative log-likelihood per scored token, in nats.
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Number of scored (predicted) tokens: each window's length minus one, summed.
    pub tokens: usize,
    /// Number of windows run.
    pub windows: usize,
}

/// The windows of `n` tokens with window size `ctx`: `(start, len)` pairs, a last partial
/// window kept only if it has at least 2 tokens.
pub fn windows(n: usize, ctx: usize) -> Vec<(usize, usize)> {
    if ctx == 0 {
        return Vec::new();
    }
    (0..n)
        .step_by(ctx)
        .map(|start| (start, ctx.min(n - start)))
        .filter(|&(_, len)| len >= 2)
        .collect()
}

/// `log_softmax(logits)[target]`, computed in f64.
pub fn log_prob(logits: &[f32], target: usize) -> f64 {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &l| m.max(f64::from(l)));
    let sum: f64 = logits.iter().map(|&l| (f64::from(l) - max).exp()).sum();
    f64::from(logits[target]) - max - sum.ln()
}

/// Loss and perplexity of `backend`'s model over `tokens` in windows of `ctx` tokens (see the
/// module docs for the exact definition). `bos`, if given, replaces the first token of each
/// window. `progress(done, total)` is called with the number of windows finished (starting
/// with `(0, total)`).
pub fn perplexity(
    backend: &mut dyn Backend,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PerplexityResult, PerplexityError> {
    if ctx < 2 {
        return Err(PerplexityError::CtxTooSmall(ctx));
    }
    let max = backend.config().context_length;
    if ctx > max {
        return Err(PerplexityError::CtxTooLarge { ctx, max });
    }
    if tokens.len() < 2 {
        return Err(PerplexityError::TooFewTokens(tokens.len()));
    }
    let vocab = backend.config().vocab_size;
    if let Some(&t) = tokens
        .iter()
        .chain(bos.as_ref())
        .find(|&&t| t as usize >= vocab)
    {
        return Err(PerplexityError::BadToken(t));
    }
    let wins = windows(tokens.len(), ctx);
    progress(0, wins.len());
    let mut nll = 0.0f64;
    let mut scored = 0usize;
    let mut window = Vec::with_capacity(ctx);
    for (i, &(start, len)) in wins.iter().enumerate() {
        window.clear();
        window.extend_from_slice(&tokens[start..start + len]);
        if let Some(b) = bos {
            window[0] = b;
        }
        let logits = backend.forward_all(&window, 0)?;
        if logits.len() != len * vocab {
            return Err(PerplexityError::BadLogits {
                got: logits.len(),
                tokens: len,
                vocab,
            });
        }
        for j in 1..len {
            let row = &logits[(j - 1) * vocab..j * vocab];
            nll -= log_prob(row, window[j] as usize);
        }
        scored += len - 1;
        progress(i + 1, wins.len());
    }
    let loss = nll / scored as f64;
    Ok(PerplexityResult {
        loss,
        perplexity: loss.exp(),
        tokens: scored,
        windows: wins.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::LlamaConfig;

    /// A backend whose logits at a position are a fixed function of the token there, and which
    /// records every `forward_all` call.
    struct Fake {
        config: LlamaConfig,
        /// `table[t]` are the logits after token `t`.
        table: Vec<Vec<f32>>,
        calls: Vec<(Vec<u32>, usize)>,
    }

    impl Fake {
        fn new(table: Vec<Vec<f32>>, context_length: usize) -> Self {
            let mut config = LlamaConfig::synthetic();
            config.vocab_size = table.len();
            config.context_length = context_length;
            Self {
                config,
                table,
                calls: Vec::new(),
            }
        }
    }

    impl Backend for Fake {
        fn name(&self) -> String {
            "fake".into()
        }
        fn config(&self) -> &LlamaConfig {
            &self.config
        }
        fn forward(&mut self, tokens: &[u32], _pos: usize) -> Result<Vec<f32>, BackendError> {
            let last = tokens.last().copied().ok_or(BackendError::BadToken(0))?;
            Ok(self.table[last as usize].clone())
        }
        fn forward_all(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
            self.calls.push((tokens.to_vec(), pos));
            Ok(tokens
                .iter()
                .flat_map(|&t| self.table[t as usize].clone())
                .collect())
        }
    }

    fn uniform(vocab: usize) -> Vec<Vec<f32>> {
        vec![vec![0.0; vocab]; vocab]
    }

    #[test]
    fn uniform_logits_give_the_vocabulary_size() {
        let mut b = Fake::new(uniform(7), 64);
        let tokens: Vec<u32> = (0..20).map(|i| i % 7).collect();
        let r = perplexity(&mut b, &tokens, 8, None, &mut |_, _| {}).unwrap();
        assert!((r.loss - 7f64.ln()).abs() < 1e-12, "{r:?}");
        assert!((r.perplexity - 7.0).abs() < 1e-9, "{r:?}");
        // Windows of 8, 8 and 4 tokens: 7 + 7 + 3 scored.
        assert_eq!((r.tokens, r.windows), (17, 3));
    }

    #[test]
    fn known_logits_give_the_hand_computed_loss() {
        // Vocabulary 2. After token 0 the model says logits [ln 3, 0] (p(0)=3/4, p(1)=1/4);
        // after token 1 it says [0, 0] (p = 1/2 each).
        let table = vec![vec![3f32.ln(), 0.0], vec![0.0, 0.0]];
        let mut b = Fake::new(table, 64);
        // One window: 0 -> 0 (3/4), 0 -> 1 (1/4), 1 -> 1 (1/2).
        let r = perplexity(&mut b, &[0, 0, 1, 1], 4, None, &mut |_, _| {}).unwrap();
        let want = -((0.75f64).ln() + (0.25f64).ln() + (0.5f64).ln()) / 3.0;
        assert!((r.loss - want).abs() < 1e-7, "{} vs {want}", r.loss);
        assert!((r.perplexity - want.exp()).abs() < 1e-6);
        assert_eq!((r.tokens, r.windows), (3, 1));
        // Two windows of 2: [0 0] and [1 1]; the 0 -> 1 transition straddles them and is
        // not scored.
        let r = perplexity(&mut b, &[0, 0, 1, 1], 2, None, &mut |_, _| {}).unwrap();
        let want = -((0.75f64).ln() + (0.5f64).ln()) / 2.0;
        assert!((r.loss - want).abs() < 1e-7, "{} vs {want}", r.loss);
        assert_eq!((r.tokens, r.windows), (2, 2));
    }

    #[test]
    fn each_window_starts_at_position_zero_and_a_single_token_tail_is_dropped() {
        let mut b = Fake::new(uniform(10), 64);
        let tokens: Vec<u32> = (0..7).collect();
        let mut seen = Vec::new();
        let r = perplexity(&mut b, &tokens, 3, None, &mut |d, t| seen.push((d, t))).unwrap();
        assert_eq!(
            b.calls,
            vec![(vec![0, 1, 2], 0), (vec![3, 4, 5], 0)],
            "the last window [6] has one token and is dropped"
        );
        assert_eq!((r.tokens, r.windows), (4, 2));
        assert_eq!(seen, vec![(0, 2), (1, 2), (2, 2)]);
    }

    #[test]
    fn bos_replaces_the_first_token_of_every_window() {
        // After token 9 (BOS) the model is sure of token 3; elsewhere uniform over 10.
        let mut table = uniform(10);
        table[9] = vec![-1e4; 10];
        table[9][3] = 0.0;
        let mut b = Fake::new(table, 64);
        let tokens = [5, 3, 4, 0, 3, 1];
        let r = perplexity(&mut b, &tokens, 3, Some(9), &mut |_, _| {}).unwrap();
        assert_eq!(b.calls, vec![(vec![9, 3, 4], 0), (vec![9, 3, 1], 0)]);
        // Scored: 9->3 (p=1), 3->4 (1/10), twice.
        let want = 2.0 * 10f64.ln() / 4.0;
        assert!((r.loss - want).abs() < 1e-9, "{} vs {want}", r.loss);
        assert_eq!(r.tokens, 4);
    }

    #[test]
    fn log_prob_is_stable_for_large_logits() {
        let lp = log_prob(&[1000.0, 1000.0], 0);
        assert!((lp - 0.5f64.ln()).abs() < 1e-12);
        let lp = log_prob(&[-1000.0, 0.0], 0);
        assert!((lp + 1000.0).abs() < 1e-9);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut b = Fake::new(uniform(4), 16);
        let e = |r: Result<PerplexityResult, PerplexityError>| r.unwrap_err();
        let mut p = |_: usize, _: usize| {};
        assert!(matches!(
            e(perplexity(&mut b, &[0, 1, 2], 1, None, &mut p)),
            PerplexityError::CtxTooSmall(1)
        ));
        assert!(matches!(
            e(perplexity(&mut b, &[0, 1, 2], 0, None, &mut p)),
            PerplexityError::CtxTooSmall(0)
        ));
        assert!(matches!(
            e(perplexity(&mut b, &[0, 1, 2], 17, None, &mut p)),
            PerplexityError::CtxTooLarge { ctx: 17, max: 16 }
        ));
        assert!(matches!(
            e(perplexity(&mut b, &[0], 8, None, &mut p)),
            PerplexityError::TooFewTokens(1)
        ));
        assert!(matches!(
            e(perplexity(&mut b, &[], 8, None, &mut p)),
            PerplexityError::TooFewTokens(0)
        ));
        assert!(matches!(
            e(perplexity(&mut b, &[0, 4], 8, None, &mut p)),
            PerplexityError::BadToken(4)
        ));
        assert!(b.calls.is_empty(), "no window runs on bad input");
    }

    #[test]
    fn window_layout() {
        assert_eq!(windows(10, 4), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(windows(9, 4), vec![(0, 4), (4, 4)]);
        assert_eq!(windows(8, 4), vec![(0, 4), (4, 4)]);
        assert_eq!(windows(1, 4), vec![]);
        assert_eq!(windows(3, 0), vec![]);
    }
}
