//! The ANE backend's verify pass (`Backend::decode`, speculative decoding) on the simulator,
//! f32 and fp16 mode, on a small random GQA model:
//!
//! - row-invariance: `decode([c])` and `decode([c, f])` give bitwise the same row 0, and the
//!   rows of `decode([c, f1, f2, f3])` (and of a pass filling every lane) are bitwise four
//!   sequential one-token steps — logits and hidden states;
//! - a k-row pass (k = 2, 4, L) takes exactly the dispatches (and the predicted device time)
//!   of a one-token step; k = L + 1 takes two;
//! - greedy output through `engine::generate_drafted` with `Ngram`, an always-right and an
//!   always-wrong drafter equals plain `generate`;
//! - rejected rows' cache entries are overwritten by the next call (bitwise equal to a
//!   backend that never saw them).
//!
//! The greedy tests use the real SmolLM2 tokenizer for text (`espresso pull`; they fail, not
//! skip, without it); the model itself is synthetic.

use ane_llm::{ane_sim_backend, AneBackend, AneOptions};
use ane_sim::Precision;
use engine::{
    generate, generate_drafted, Backend, Drafter, GenerateOptions, Ngram, NoDraft, StopReason,
};
use model::synthetic::SyntheticModel;
use model::{GgmlType, GgufFile, LlamaConfig, LlamaWeights, Tokenizer};

const LANES: usize = 8;
const VOCAB: usize = 300;

fn small_config() -> LlamaConfig {
    LlamaConfig {
        n_layers: 4,
        dim: 64,
        ffn_dim: 96,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        vocab_size: VOCAB,
        context_length: 64,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
    }
}

fn model(seed: u64) -> SyntheticModel {
    SyntheticModel::new(small_config(), seed, GgmlType::F16)
}

fn backend(m: &SyntheticModel, precision: Precision) -> AneBackend<'_> {
    let w = LlamaWeights::from_source(m, m.config.clone()).unwrap_or_else(|e| panic!("{e}"));
    let opts = AneOptions {
        max_seq: Some(64),
        layers_per_kernel: 3,
        io: None,
        self_check: true,
        lanes: Some(LANES),
    };
    ane_sim_backend(w, precision, opts).unwrap_or_else(|e| panic!("{e}"))
}

const PRECISIONS: [Precision; 2] = [Precision::F32, Precision::Fp16];

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Index of the first element whose bits differ, for messages.
fn first_diff(a: &[f32], b: &[f32]) -> Option<(usize, f32, f32)> {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x.to_bits() != y.to_bits())
        .map(|(i, (&x, &y))| (i, x, y))
}

fn assert_bitwise(a: &[f32], b: &[f32], what: &str) {
    assert!(
        first_diff(a, b).is_none(),
        "{what}: first difference (index, got, want) {:?}",
        first_diff(a, b)
    );
}

fn hidden(b: &AneBackend<'_>) -> Vec<f32> {
    b.hidden_states()
        .unwrap_or_else(|| panic!("the ANE backend keeps hidden states"))
        .to_vec()
}

const PROMPT: [u32; 5] = [17, 203, 5, 88, 140];

#[test]
fn row_zero_is_bitwise_the_same_alone_or_with_other_rows() {
    for precision in PRECISIONS {
        let m = model(31);
        let mut b = backend(&m, precision);
        let (v, d) = (VOCAB, small_config().dim);
        b.forward(&PROMPT, 0).unwrap_or_else(|e| panic!("{e}"));
        let pos = PROMPT.len();
        let alone = b.decode(&[42], pos).unwrap_or_else(|e| panic!("{e}"));
        let h_alone = hidden(&b);
        assert_eq!((alone.len(), h_alone.len()), (v, d));
        for others in [&[7u32][..], &[7, 250, 3], &[299, 0, 1, 2, 3, 4, 5]] {
            let mut feed = vec![42u32];
            feed.extend_from_slice(others);
            let pass = b.decode(&feed, pos).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(pass.len(), feed.len() * v);
            let h = hidden(&b);
            assert_eq!(h.len(), feed.len() * d);
            let what = format!("{precision}: row 0 with {} other rows", others.len());
            assert_bitwise(&pass[..v], &alone, &format!("{what} (logits)"));
            assert_bitwise(&h[..d], &h_alone, &format!("{what} (hidden)"));
            // The other rows really are different computations (not a copy of row 0).
            assert_ne!(bits(&pass[v..2 * v]), bits(&alone), "{what}: row 1");
        }
    }
}

/// A pass of `feed` at `pos` against one-token steps of the same tokens on a backend with the
/// same history: logits and hidden states bitwise, row by row.
fn pass_equals_steps(precision: Precision, feed: &[u32]) {
    let m = model(32);
    let mut a = backend(&m, precision);
    let mut s = backend(&m, precision);
    let (v, d) = (VOCAB, small_config().dim);
    let pos = PROMPT.len();
    a.forward(&PROMPT, 0).unwrap_or_else(|e| panic!("{e}"));
    s.forward(&PROMPT, 0).unwrap_or_else(|e| panic!("{e}"));
    let pass = a.decode(feed, pos).unwrap_or_else(|e| panic!("{e}"));
    let h_pass = hidden(&a);
    for (i, &t) in feed.iter().enumerate() {
        let step = s.decode(&[t], pos + i).unwrap_or_else(|e| panic!("{e}"));
        let what = format!("{precision}, {}-row pass, row {i}", feed.len());
        assert_bitwise(
            &pass[i * v..(i + 1) * v],
            &step,
            &format!("{what} (logits)"),
        );
        assert_bitwise(
            &h_pass[i * d..(i + 1) * d],
            &hidden(&s),
            &format!("{what} (hidden)"),
        );
        // `forward` of one token is the same step.
        let fwd = s.forward(&[t], pos + i).unwrap_or_else(|e| panic!("{e}"));
        assert_bitwise(&fwd, &step, &format!("{what} (forward)"));
    }
    // After the pass the caches agree: the next step is bitwise the same on both.
    let next = pos + feed.len();
    let x = a.decode(&[9], next).unwrap_or_else(|e| panic!("{e}"));
    let y = s.decode(&[9], next).unwrap_or_else(|e| panic!("{e}"));
    assert_bitwise(&x, &y, &format!("{precision}: the step after the pass"));
}

#[test]
fn four_row_pass_is_bitwise_four_one_token_steps() {
    for precision in PRECISIONS {
        pass_equals_steps(precision, &[42, 7, 250, 3]);
    }
}

#[test]
fn full_lane_and_two_pass_inputs_are_bitwise_one_token_steps() {
    let full: Vec<u32> = (0..LANES as u32)
        .map(|i| (i * 41 + 3) % VOCAB as u32)
        .collect();
    let over: Vec<u32> = (0..LANES as u32 + 3)
        .map(|i| (i * 29 + 1) % VOCAB as u32)
        .collect();
    for precision in PRECISIONS {
        pass_equals_steps(precision, &full);
        pass_equals_steps(precision, &over);
    }
}

#[test]
fn a_verify_pass_takes_the_dispatches_and_predicted_time_of_one_token() {
    let m = model(33);
    let mut b = backend(&m, Precision::Fp16);
    let per_token = b.dispatches_per_token() as u64;
    assert_eq!(per_token, 3, "kernels for layers 0-2 and 3, and the head");
    b.forward(&PROMPT, 0).unwrap_or_else(|e| panic!("{e}"));
    let cost = |b: &mut AneBackend<'_>, k: usize| {
        let feed: Vec<u32> = (0..k as u32).map(|i| 10 + i).collect();
        let before = b.stats();
        b.decode(&feed, PROMPT.len())
            .unwrap_or_else(|e| panic!("{e}"));
        let after = b.stats();
        let ms = after.predicted_device_ms.unwrap_or(f64::NAN)
            - before.predicted_device_ms.unwrap_or(f64::NAN);
        assert_eq!(after.compiles, before.compiles, "k = {k}: no compile");
        (after.dispatches - before.dispatches, ms)
    };
    let (one_d, one_ms) = cost(&mut b, 1);
    assert_eq!(one_d, per_token);
    assert!(one_ms > 0.0, "the simulator predicts device time");
    for k in [2, 4, LANES] {
        let (d, ms) = cost(&mut b, k);
        assert_eq!(d, per_token, "k = {k}: one pass");
        assert!(
            (ms - one_ms).abs() <= 1e-9 * one_ms,
            "k = {k}: predicted {ms} ms vs {one_ms} ms for one token"
        );
    }
    let (d, ms) = cost(&mut b, LANES + 1);
    assert_eq!(d, 2 * per_token, "k = L + 1: two passes");
    assert!((ms - 2.0 * one_ms).abs() <= 1e-9 * one_ms);
}

#[test]
fn rejected_rows_are_overwritten_by_the_next_call() {
    for precision in PRECISIONS {
        let m = model(34);
        let mut a = backend(&m, precision);
        let mut fresh = backend(&m, precision);
        let pos = PROMPT.len();
        a.forward(&PROMPT, 0).unwrap_or_else(|e| panic!("{e}"));
        fresh.forward(&PROMPT, 0).unwrap_or_else(|e| panic!("{e}"));
        // Row 0 (token 42) is kept; the drafted 7, 250, 3 are rejected: the model chose 11
        // after 42. The next pass starts at pos + 1 with 11 and two new proposals.
        a.decode(&[42, 7, 250, 3], pos)
            .unwrap_or_else(|e| panic!("{e}"));
        let got = a
            .decode(&[11, 60], pos + 1)
            .unwrap_or_else(|e| panic!("{e}"));
        let h_got = hidden(&a);
        fresh.decode(&[42], pos).unwrap_or_else(|e| panic!("{e}"));
        let want = fresh
            .decode(&[11, 60], pos + 1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_bitwise(&got, &want, &format!("{precision}: after a rejection"));
        assert_bitwise(&h_got, &hidden(&fresh), &format!("{precision}: hidden"));
        // Slot pos + 3 still holds the rejected 3's K/V (masked); a step there overwrites it.
        let got = a.decode(&[5], pos + 3).unwrap_or_else(|e| panic!("{e}"));
        let want = fresh
            .decode(&[5], pos + 3)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_bitwise(&got, &want, &format!("{precision}: step over a stale slot"));
        // Same history, a different path to it: the rows really depend on the cache.
        let other = fresh
            .decode(&[5], pos + 2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(bits(&other), bits(&want), "{precision}: position matters");
    }
}

// ---- greedy identity through the generation loop ----

fn tokenizer() -> Tokenizer {
    let path = model::cache::default_model_path()
        .unwrap_or_else(|e| panic!("the real model's tokenizer is needed: {e}"));
    Tokenizer::from_gguf(&GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Proposes the reference continuation: always right (until the reference ends).
struct Oracle {
    prompt_len: usize,
    reference: Vec<u32>,
}

impl Drafter for Oracle {
    fn name(&self) -> &str {
        "oracle"
    }
    fn propose(&mut self, context: &[u32], _: Option<&[f32]>, max: usize) -> Vec<u32> {
        let done = context.len() - self.prompt_len;
        self.reference
            .iter()
            .skip(done)
            .take(max)
            .copied()
            .collect()
    }
}

/// Proposes a token other than the reference's at every place: always wrong.
struct Wrong {
    prompt_len: usize,
    reference: Vec<u32>,
    /// `propose` calls, and those that were handed a hidden state (the backend's, from the
    /// row that chose the token).
    calls: usize,
    hidden_seen: usize,
}

impl Drafter for Wrong {
    fn name(&self) -> &str {
        "wrong"
    }
    fn propose(&mut self, context: &[u32], hidden: Option<&[f32]>, max: usize) -> Vec<u32> {
        self.calls += 1;
        if let Some(h) = hidden {
            assert_eq!(h.len(), small_config().dim, "one hidden row");
            self.hidden_seen += 1;
        }
        let done = context.len() - self.prompt_len;
        (0..max)
            .map(|i| {
                let r = self.reference.get(done + i).copied().unwrap_or(0);
                (r + 1) % VOCAB as u32
            })
            .collect()
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
fn greedy_generation_is_identical_with_any_drafter() {
    let tok = tokenizer();
    let prompts: [&[u32]; 3] = [&PROMPT, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], &[250, 250]];
    for precision in PRECISIONS {
        let m = model(35);
        let mut b = backend(&m, precision);
        let per_token = b.dispatches_per_token() as u64;
        for prompt in prompts {
            // 40 tokens, or fewer when an end-of-generation token comes first.
            let max = 40;
            let plain = generate(&mut b, &tok, prompt, &opts(max, 1), &mut |_| {})
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(!plain.tokens.is_empty());
            let reference = plain.tokens.clone();
            let what = |d: &str| format!("{precision}, prompt {prompt:?}, drafter {d}");
            for draft_max in [2, 4] {
                let mut drafters: Vec<Box<dyn Drafter>> = vec![
                    Box::new(NoDraft),
                    Box::new(Ngram::default()),
                    Box::new(Oracle {
                        prompt_len: prompt.len(),
                        reference: reference.clone(),
                    }),
                    Box::new(Wrong {
                        prompt_len: prompt.len(),
                        reference: reference.clone(),
                        calls: 0,
                        hidden_seen: 0,
                    }),
                ];
                for d in drafters.iter_mut() {
                    let name = d.name().to_string();
                    let before = b.stats().dispatches;
                    let g = generate_drafted(
                        &mut b,
                        d.as_mut(),
                        &tok,
                        prompt,
                        &opts(max, draft_max),
                        &mut |_| {},
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                    let w = what(&format!("{name} (up to {draft_max}/pass)"));
                    assert_eq!(g.tokens, plain.tokens, "{w}: tokens");
                    assert_eq!(g.stop_reason, plain.stop_reason, "{w}: stop");
                    // Every verify pass is one pass of the kernels; so is the prefill here.
                    let passes = b.stats().dispatches - before;
                    let prefill = prompt.len().div_ceil(LANES) as u64;
                    assert_eq!(passes, (prefill + g.draft.passes) * per_token, "{w}");
                    match name.as_str() {
                        "oracle" => {
                            assert!(g.draft.proposed > 0, "{w}");
                            assert_eq!(g.draft.accepted, g.draft.proposed, "{w}");
                        }
                        "wrong" => {
                            assert!(g.draft.proposed > 0, "{w}");
                            assert_eq!(g.draft.accepted, 0, "{w}");
                        }
                        "none" => assert_eq!(g.draft.proposed, 0, "{w}"),
                        _ => {}
                    }
                }
            }
            if plain.stop_reason == StopReason::MaxTokens {
                assert_eq!(plain.tokens.len(), max);
            }
        }
    }
}

#[test]
fn the_drafter_sees_the_hidden_state_of_the_row_that_chose_its_token() {
    let tok = tokenizer();
    let m = model(36);
    let mut b = backend(&m, Precision::F32);
    let plain = generate(&mut b, &tok, &PROMPT, &opts(12, 1), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let mut wrong = Wrong {
        prompt_len: PROMPT.len(),
        reference: plain.tokens.clone(),
        calls: 0,
        hidden_seen: 0,
    };
    let g = generate_drafted(&mut b, &mut wrong, &tok, &PROMPT, &opts(12, 3), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.tokens, plain.tokens);
    // Every pass but the last (which has one token left to choose) asked for proposals.
    assert_eq!(wrong.calls as u64, g.draft.passes - 1);
    assert_eq!(
        wrong.hidden_seen, wrong.calls,
        "every proposal had a hidden state"
    );
    // The hidden state a prefill leaves is the last prompt row's, and the head's classifier
    // of it gives the logits returned (checked against a decode of the same row).
    let last = b.forward(&PROMPT, 0).unwrap_or_else(|e| panic!("{e}"));
    let h_prefill = hidden(&b);
    let n = PROMPT.len();
    b.forward(&PROMPT[..n - 1], 0)
        .unwrap_or_else(|e| panic!("{e}"));
    let row = b
        .decode(&PROMPT[n - 1..], n - 1)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_bitwise(&row, &last, "prefill's last row vs a decode step");
    assert_bitwise(&hidden(&b), &h_prefill, "hidden of the same row");
}

#[test]
fn hidden_states_are_the_normed_rows_the_cpu_backend_computes() {
    let m = model(37);
    let mut a = backend(&m, Precision::F32);
    let w = LlamaWeights::from_source(&m, m.config.clone()).unwrap_or_else(|e| panic!("{e}"));
    let mut c = cpu::CpuBackend::new(
        w,
        cpu::CpuOptions {
            exact: true,
            threads: 1,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    a.forward(&PROMPT, 0).unwrap_or_else(|e| panic!("{e}"));
    c.forward(&PROMPT, 0).unwrap_or_else(|e| panic!("{e}"));
    let feed = [42u32, 7, 250];
    a.decode(&feed, PROMPT.len())
        .unwrap_or_else(|e| panic!("{e}"));
    c.decode(&feed, PROMPT.len())
        .unwrap_or_else(|e| panic!("{e}"));
    let (ha, hc) = (hidden(&a), c.hidden_states().map(<[f32]>::to_vec));
    let hc = hc.unwrap_or_else(|| panic!("the CPU backend keeps hidden states"));
    assert_eq!(ha.len(), hc.len());
    let (rel, _) = ane_llm::backend::compare(&ha, &hc);
    assert!(
        rel < 1e-4,
        "f32 sim hidden vs cpu exact: relative RMS {rel}"
    );
}
