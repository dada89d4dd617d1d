//! Batched passes of the CPU backend (`forward_batch`, what the server's continuous batching
//! runs): every sequence's logits are bitwise those of running it alone, whatever else shares
//! the pass (prefill chunks next to decode steps, different positions, slots reused after a
//! rewind). Real model: SmolLM2-135M-Instruct Q4_1 (`espresso pull`), fast and exact paths.

use cpu::{CpuBackend, CpuOptions};
use engine::{argmax, Backend, Feed, SlotInput};
use model::{GgufFile, LlamaWeights};

fn model_file() -> GgufFile {
    let path = match std::env::var_os("ESPRESSO_TEST_MODEL") {
        Some(p) => p.into(),
        None => model::cache::default_model_path().unwrap_or_else(|e| panic!("{e}")),
    };
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn backend(gguf: &GgufFile, exact: bool) -> CpuBackend<'_> {
    let w = LlamaWeights::from_gguf(gguf).expect("weights");
    CpuBackend::new(w, CpuOptions { exact, threads: 2 }).expect("backend")
}

/// Greedy continuation of `prompt` for `steps` tokens, one sequence alone in slot 0:
/// the logits after the prompt and after each fed token.
fn alone(be: &mut CpuBackend, prompt: &[u32], steps: usize) -> Vec<Vec<f32>> {
    let mut out = vec![be.forward(prompt, 0).expect("prefill")];
    for i in 0..steps {
        let next = argmax(out.last().expect("logits"));
        out.push(be.decode(&[next], prompt.len() + i).expect("decode"));
    }
    out
}

fn check(exact: bool) {
    let gguf = model_file();
    check_with(&|| backend(&gguf, exact), exact);
}

/// A float (F16) model of the seed shape: its prompts go through the GEMM path.
#[test]
fn batched_logits_equal_running_alone_float_model() {
    let cfg = model::LlamaConfig::synthetic();
    let synth = model::synthetic::SyntheticModel::new(cfg.clone(), 3, model::GgmlType::F16);
    let make = || {
        let w = LlamaWeights::from_source(&synth, cfg.clone()).expect("weights");
        CpuBackend::new(
            w,
            CpuOptions {
                exact: false,
                threads: 2,
            },
        )
        .expect("backend")
    };
    check_with(&make, false);
}

fn check_with<'a>(make: &dyn Fn() -> CpuBackend<'a>, exact: bool) {
    let vocab = make().config().vocab_size;
    // Prompts of different lengths (one longer than a 64-row chunk, so a chunk boundary falls
    // inside a sequence), all starting in the same pass.
    let prompts: Vec<Vec<u32>> = vec![
        (1..9).map(|i| 100 + i * 37).collect(),
        (0..70).map(|i| 200 + (i * 131) % 9000).collect(),
        // A prompt whose last chunk is a single row.
        (0..65).map(|i| 300 + (i * 17) % 5000).collect(),
        vec![1, 2, 3],
    ];
    let steps = 4;
    let mut solo = make();
    let want: Vec<Vec<Vec<f32>>> = prompts.iter().map(|p| alone(&mut solo, p, steps)).collect();

    let mut be = make();
    // Slot 2 first decodes an unrelated sequence, so it is later rewound and reused.
    be.forward_batch(&[SlotInput {
        slot: 2,
        tokens: &[5, 6, 7, 8, 9],
        pos: 0,
        feed: Feed::Prompt,
    }])
    .expect("warm slot 2");
    // Pass 1: sequences 0 and 2 prefill (slots 0 and 2); sequences 1 and 3 wait.
    let l = be
        .forward_batch(&[
            SlotInput {
                slot: 0,
                tokens: &prompts[0],
                pos: 0,
                feed: Feed::Prompt,
            },
            SlotInput {
                slot: 2,
                tokens: &prompts[2],
                pos: 0,
                feed: Feed::Prompt,
            },
        ])
        .expect("pass 1");
    assert_eq!(l.len(), 2 * vocab);
    let mut got: Vec<Vec<Vec<f32>>> = vec![
        vec![l[..vocab].to_vec()],
        vec![],
        vec![l[vocab..].to_vec()],
        vec![],
    ];
    // Pass 2: sequences 1 and 3 prefill in slots 1 and 3 beside the decode steps of 0 and 2.
    // Then decode all four together until each has its `steps` tokens.
    let mut pos = [prompts[0].len(), 0, prompts[2].len(), 0];
    loop {
        let mut inputs = Vec::new();
        let mut feeds: Vec<(usize, Vec<u32>, Feed)> = Vec::new();
        for s in 0..4 {
            if got[s].is_empty() {
                feeds.push((s, prompts[s].clone(), Feed::Prompt));
            } else if got[s].len() <= steps {
                let next = argmax(got[s].last().expect("logits"));
                feeds.push((s, vec![next], Feed::Decode));
            }
        }
        if feeds.is_empty() {
            break;
        }
        for (s, toks, feed) in &feeds {
            inputs.push(SlotInput {
                slot: *s,
                tokens: toks,
                pos: pos[*s],
                feed: *feed,
            });
        }
        let l = be.forward_batch(&inputs).expect("pass");
        for ((s, toks, _), lg) in feeds.iter().zip(l.chunks_exact(vocab)) {
            got[*s].push(lg.to_vec());
            pos[*s] += toks.len();
        }
    }
    for (s, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), w.len(), "sequence {s}: steps");
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "sequence {s}, step {i}: batched logits differ from running alone (exact={exact})"
            );
        }
    }
}

#[test]
fn batched_logits_equal_running_alone_fast_path() {
    check(false);
}

#[test]
fn batched_logits_equal_running_alone_exact_path() {
    check(true);
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let gguf = model_file();
    let mut be = backend(&gguf, false);
    let twice = be.forward_batch(&[
        SlotInput {
            slot: 1,
            tokens: &[1],
            pos: 0,
            feed: Feed::Decode,
        },
        SlotInput {
            slot: 1,
            tokens: &[2],
            pos: 1,
            feed: Feed::Decode,
        },
    ]);
    assert!(twice.is_err(), "one slot twice in a pass must be refused");
    let empty = be.forward_batch(&[SlotInput {
        slot: 0,
        tokens: &[],
        pos: 0,
        feed: Feed::Prompt,
    }]);
    assert!(empty.is_err());
    let ctx = be.config().context_length;
    let past = be.forward_batch(&[SlotInput {
        slot: 3,
        tokens: &[1, 2],
        pos: ctx - 1,
        feed: Feed::Decode,
    }]);
    assert!(past.is_err(), "positions past the context must be refused");
}
