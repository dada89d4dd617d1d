//! Self-distillation of draft heads with several prompts continued at once
//! (`draft_train::distill_batch`) gives exactly the triples of continuing each prompt alone
//! (`draft_train::distill`), in prompt order, whatever the number of slots — the batched
//! decode rows are row-invariant and each prompt still runs as a prompt. Real model:
//! SmolLM2-135M-Instruct Q4_1 (`espresso pull`).

use cpu::draft_train::{distill, distill_batch, DistillData};
use cpu::{CpuBackend, CpuOptions};
use engine::Backend;
use model::{GgufFile, LlamaWeights};

fn backend() -> CpuBackend<'static> {
    let path = match std::env::var_os("ESPRESSO_TEST_MODEL") {
        Some(p) => p.into(),
        None => model::cache::default_model_path().unwrap_or_else(|e| panic!("{e}")),
    };
    let gguf: &'static GgufFile = Box::leak(Box::new(
        GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    ));
    let w = LlamaWeights::from_gguf(gguf).expect("weights");
    CpuBackend::new(
        w,
        CpuOptions {
            exact: false,
            threads: 2,
        },
    )
    .expect("backend")
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn batched_distillation_equals_one_prompt_at_a_time() {
    let mut be = backend();
    let dim = be.config().dim;
    // Prompts of different lengths (one empty: no triples), so slots finish and refill at
    // different passes; token 2 (SmolLM2's <|im_end|>) stops a continuation early if chosen.
    let prompts: Vec<Vec<u32>> = vec![
        (0..9).map(|i| 100 + i * 31).collect(),
        vec![],
        (0..3).map(|i| 7000 + i * 5).collect(),
        (0..17).map(|i| 1 + i * 97).collect(),
        (0..5).map(|i| 2500 + i * 11).collect(),
        (0..12).map(|i| 40 + i * 301).collect(),
    ];
    let is_stop = |t: u32| t == 2;
    let tokens = 10;

    let mut alone = DistillData::new(dim);
    let mut counts = Vec::new();
    for p in &prompts {
        counts.push(distill(&mut be, p, tokens, &is_stop, &mut alone).expect("distill"));
    }
    assert_eq!(counts[1], 0, "an empty prompt gives no triples");
    assert!(counts.iter().filter(|&&c| c > 0).count() >= 4, "{counts:?}");
    assert_eq!(alone.len(), counts.iter().sum::<usize>());

    for slots in [2, 3, 8] {
        let mut batched = DistillData::new(dim);
        let mut finished = Vec::new();
        let added = distill_batch(
            &mut be,
            &prompts,
            tokens,
            slots,
            &is_stop,
            &mut batched,
            &mut |done, triples| finished.push((done, triples)),
        )
        .expect("distill_batch");
        assert_eq!(added, alone.len(), "{slots} slots");
        assert_eq!(batched.next, alone.next, "{slots} slots: fed tokens");
        assert_eq!(batched.target, alone.target, "{slots} slots: targets");
        assert!(
            bits(&batched.hidden) == bits(&alone.hidden),
            "{slots} slots: hidden states differ"
        );
        // Progress reports every prompt once, ending at all prompts and all triples.
        assert_eq!(finished.last(), Some(&(prompts.len(), alone.len())));
        assert!(finished.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
