//! Speculative decoding (`engine::generate_drafted`) against a toy backend whose "KV cache" is
//! the token sequence itself and whose logits are a soft function of the last two tokens:
//!
//! - greedy output is identical with and without drafting, whatever the drafter proposes
//!   (always right, always wrong, ngram), for 2 and 4 tokens per pass, at the context's end
//!   and at the token limit; the pass counts say what was proposed and kept;
//! - with sampling, the distribution of the first three tokens matches the model's exact
//!   distribution with and without drafting (chi-square goodness of fit over many seeds),
//!   also under top-k/top-p.
//!
//! Uses the real SmolLM2 tokenizer (`espresso pull`; fails, does not skip, without it).

use engine::{
    generate, generate_drafted, Backend, BackendError, Drafter, GenerateOptions, Ngram, NoDraft,
    SamplerConfig, StopReason,
};
use model::{GgufFile, LlamaConfig, Tokenizer};

fn tokenizer() -> Tokenizer {
    let path = model::cache::default_model_path()
        .unwrap_or_else(|e| panic!("the real model's tokenizer is needed: {e}"));
    Tokenizer::from_gguf(&GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Ordinary word tokens the toy picks from.
const WORDS: [u32; 4] = [253, 314, 354, 260];

fn hash(a: u32, b: u32, w: u32) -> u64 {
    [a, b, w].iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
        (h ^ u64::from(t)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The toy's logit of word `w` after a sequence ending in `a, b`: in [0, 1.5).
fn word_logit(a: u32, b: u32, w: u32) -> f32 {
    (hash(a, b, w) >> 40) as f32 / (1u64 << 24) as f32 * 1.5
}

fn last_two(seq: &[u32]) -> (u32, u32) {
    match seq {
        [.., a, b] => (*a, *b),
        [b] => (0, *b),
        [] => (0, 0),
    }
}

struct Chain {
    config: LlamaConfig,
    seq: Vec<u32>,
    /// Tokens fed (computed) so far.
    fed: usize,
}

impl Chain {
    fn new(vocab: usize, ctx: usize) -> Self {
        let mut config = LlamaConfig::synthetic();
        config.vocab_size = vocab;
        config.context_length = ctx;
        Self {
            config,
            seq: Vec::new(),
            fed: 0,
        }
    }
}

/// Logits after `seq`: the four words get `word_logit`, everything else far below.
fn logits_after(seq: &[u32], vocab: usize) -> Vec<f32> {
    let (a, b) = last_two(seq);
    let mut l = vec![-40.0f32; vocab];
    for w in WORDS {
        l[w as usize] = word_logit(a, b, w);
    }
    l
}

impl Backend for Chain {
    fn name(&self) -> String {
        "chain".into()
    }
    fn config(&self) -> &LlamaConfig {
        &self.config
    }
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        assert!(pos <= self.seq.len(), "position {pos} skips ahead");
        if pos + tokens.len() > self.config.context_length {
            return Err(BackendError::ContextFull {
                pos: pos + tokens.len() - 1,
                ctx: self.config.context_length,
            });
        }
        // Entries past `pos` (rejected proposals) are overwritten.
        self.seq.truncate(pos);
        self.seq.extend_from_slice(tokens);
        self.fed += tokens.len();
        Ok(logits_after(&self.seq, self.config.vocab_size))
    }
}

/// Proposes the toy's greedy chain: always right.
struct Oracle;
impl Drafter for Oracle {
    fn name(&self) -> &str {
        "oracle"
    }
    fn propose(&mut self, context: &[u32], _: Option<&[f32]>, max: usize) -> Vec<u32> {
        let mut seq = context.to_vec();
        for _ in 0..max {
            let l = logits_after(&seq, 60_000);
            seq.push(engine::argmax(&l));
        }
        seq[context.len()..].to_vec()
    }
}

/// Proposes a token the toy never picks: always wrong.
struct Wrong;
impl Drafter for Wrong {
    fn name(&self) -> &str {
        "wrong"
    }
    fn propose(&mut self, _: &[u32], _: Option<&[f32]>, max: usize) -> Vec<u32> {
        vec![288; max]
    }
}

fn opts(max_tokens: usize, draft_max: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        draft_max,
        ..GenerateOptions::default()
    }
}

#[test]
fn greedy_output_is_identical_with_every_drafter() {
    let tok = tokenizer();
    let vocab = tok.vocab_size();
    let prompts: Vec<Vec<u32>> = vec![
        vec![1, 253, 314],
        vec![1, 354, 354, 260, 253],
        (0..20).map(|i| WORDS[i % 4]).collect(),
    ];
    for prompt in &prompts {
        let mut plain = Chain::new(vocab, 256);
        let want = generate(&mut plain, &tok, prompt, &opts(40, 1), &mut |_| {}).unwrap();
        assert_eq!(want.tokens.len(), 40);
        assert_eq!(want.draft.passes, 39, "one pass per token after the first");
        for k in [2, 4] {
            let drafters: Vec<Box<dyn Drafter>> = vec![
                Box::new(NoDraft),
                Box::new(Oracle),
                Box::new(Wrong),
                Box::new(Ngram::default()),
            ];
            for mut d in drafters {
                let mut be = Chain::new(vocab, 256);
                let mut streamed = String::new();
                let got =
                    generate_drafted(&mut be, d.as_mut(), &tok, prompt, &opts(40, k), &mut |s| {
                        streamed.push_str(s)
                    })
                    .unwrap();
                let what = format!("drafter {}, k = {k}", d.name());
                assert_eq!(got.tokens, want.tokens, "{what}");
                assert_eq!(got.text, want.text, "{what}");
                assert_eq!(streamed, want.text, "{what}");
                assert_eq!(got.stop_reason, StopReason::MaxTokens, "{what}");
                let s = &got.draft;
                assert_eq!(s.method, d.name());
                // Every token after the first came from some pass: one per pass, plus those
                // accepted.
                assert_eq!(s.passes + s.accepted, 39, "{what}: {s:?}");
                assert_eq!(
                    be.fed as u64,
                    prompt.len() as u64 + s.passes + s.proposed,
                    "{what}"
                );
                match d.name() {
                    "oracle" => {
                        assert_eq!(s.accepted, s.proposed, "{what}");
                        assert_eq!(s.passes, 39u64.div_ceil(k as u64), "{what}: {s:?}");
                    }
                    "wrong" => {
                        assert_eq!(s.accepted, 0, "{what}");
                        // One pass per token; each proposes what the tokens left can use.
                        let proposed: u64 =
                            (1..=39u64).map(|left| (k as u64 - 1).min(left - 1)).sum();
                        assert_eq!(s.proposed, proposed, "{what}: never past the token limit");
                    }
                    "none" => assert_eq!(s.proposed, 0),
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn drafting_stops_at_the_context_end_like_plain_decoding() {
    let tok = tokenizer();
    let vocab = tok.vocab_size();
    let prompt = vec![1, 253, 314, 354];
    for ctx in [10, 11, 12] {
        let mut plain = Chain::new(vocab, ctx);
        let want = generate(&mut plain, &tok, &prompt, &opts(100, 1), &mut |_| {}).unwrap();
        assert_eq!(want.stop_reason, StopReason::ContextFull);
        for k in [2, 3, 4] {
            let mut be = Chain::new(vocab, ctx);
            let got = generate_drafted(
                &mut be,
                &mut Oracle,
                &tok,
                &prompt,
                &opts(100, k),
                &mut |_| {},
            )
            .unwrap();
            assert_eq!(got.tokens, want.tokens, "ctx {ctx}, k = {k}");
            assert_eq!(got.stop_reason, StopReason::ContextFull);
            assert!(be.seq.len() <= ctx, "never fed past the context");
        }
    }
}

/// Exact probability of each word after `seq` under `cfg` (temperature, top-k, top-p), as
/// the sampler defines them.
fn word_probs(seq: &[u32], cfg: &SamplerConfig) -> Vec<(u32, f64)> {
    let (a, b) = last_two(seq);
    let mut words: Vec<(u32, f64)> = WORDS
        .iter()
        .map(|&w| (w, f64::from(word_logit(a, b, w))))
        .collect();
    words.sort_by(|x, y| y.1.total_cmp(&x.1));
    if cfg.top_k > 0 {
        words.truncate(cfg.top_k);
    }
    let max = words[0].1;
    let t = f64::from(cfg.temperature);
    let mut probs: Vec<(u32, f64)> = words
        .iter()
        .map(|&(w, l)| (w, ((l - max) / t).exp()))
        .collect();
    let sum: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= sum);
    if cfg.top_p < 1.0 {
        let mut acc = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                acc += p.1;
                acc >= f64::from(cfg.top_p)
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        let sum: f64 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= sum);
    }
    probs
}

/// Chi-square statistic of `counts` (first three sampled tokens) against the exact
/// distribution; cells of probability 0 must stay empty. Returns (statistic, degrees of
/// freedom).
fn chi_square(
    prompt: &[u32],
    cfg: &SamplerConfig,
    counts: &std::collections::HashMap<Vec<u32>, u64>,
    n: u64,
) -> (f64, usize) {
    let mut stat = 0.0;
    let mut cells = 0;
    let mut seen = 0;
    let mut seq = prompt.to_vec();
    for (w1, p1) in word_probs(&seq, cfg) {
        seq.push(w1);
        for (w2, p2) in word_probs(&seq, cfg) {
            seq.push(w2);
            for (w3, p3) in word_probs(&seq, cfg) {
                let expected = p1 * p2 * p3 * n as f64;
                let got = counts.get(&vec![w1, w2, w3]).copied().unwrap_or(0);
                seen += got;
                stat += (got as f64 - expected).powi(2) / expected;
                cells += 1;
            }
            seq.pop();
        }
        seq.pop();
    }
    assert_eq!(seen, n, "a sample fell outside the model's support");
    (stat, cells - 1)
}

#[test]
fn sampling_with_drafts_keeps_the_output_distribution() {
    let tok = tokenizer();
    let vocab = tok.vocab_size();
    let prompt = vec![1, 253, 314];
    let n = 3000u64;
    let settings = [
        (1.0, 0, 1.0),
        // Top-k and top-p leave some words out: they must never be sampled, drafted or not.
        (0.8, 3, 0.9),
    ];
    for (temperature, top_k, top_p) in settings {
        let drafters: Vec<Box<dyn Fn() -> Box<dyn Drafter>>> = vec![
            Box::new(|| Box::new(NoDraft)),
            Box::new(|| Box::new(Oracle)),
            Box::new(|| Box::new(Wrong)),
        ];
        for make in &drafters {
            let mut counts = std::collections::HashMap::new();
            let mut name = String::new();
            for seed in 0..n {
                let cfg = SamplerConfig {
                    temperature,
                    top_k,
                    top_p,
                    seed,
                };
                let o = GenerateOptions {
                    sampler: cfg,
                    ..opts(3, 3)
                };
                let mut be = Chain::new(vocab, 64);
                let mut d = make();
                name = d.name().to_string();
                let g =
                    generate_drafted(&mut be, d.as_mut(), &tok, &prompt, &o, &mut |_| {}).unwrap();
                *counts.entry(g.tokens).or_insert(0u64) += 1;
            }
            let cfg = SamplerConfig {
                temperature,
                top_k,
                top_p,
                seed: 0,
            };
            let (stat, df) = chi_square(&prompt, &cfg, &counts, n);
            // Critical values at p = 0.001: df 63 → 103.4, df 26 → 54.1, df 7 → 24.3; a
            // generous bound of df + 6·sqrt(2·df) is above all of them.
            let bound = df as f64 + 6.0 * (2.0 * df as f64).sqrt();
            assert!(
                stat < bound,
                "drafter {name}, T={temperature} top-k {top_k} top-p {top_p}: \
                 chi-square {stat:.1} over {df} degrees of freedom (bound {bound:.1})"
            );
        }
    }
}
