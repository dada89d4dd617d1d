//! The verify pass of speculative decoding on the CPU (`Backend::decode` with several tokens):
//! every row is bitwise what one-token decode steps give — row 0 alone or beside drafted rows,
//! and each later row after the rows before it — and the cache entries of a rejected row are
//! overwritten by the next pass. Real model: SmolLM2-135M-Instruct Q4_1 (`espresso pull`), fast
//! and exact paths, plus an F16 model of the seed shape (float weights).

use cpu::{CpuBackend, CpuOptions};
use engine::{argmax, Backend};
use model::{GgufFile, LlamaWeights};

fn model_file() -> GgufFile {
    let path = match std::env::var_os("ESPRESSO_TEST_MODEL") {
        Some(p) => p.into(),
        None => model::cache::default_model_path().unwrap_or_else(|e| panic!("{e}")),
    };
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn check(make: &dyn Fn() -> CpuBackend<'static>, what: &str) {
    let prompt: Vec<u32> = (0..12).map(|i| 1 + i * 97).collect();
    let p = prompt.len();
    let dim = make().config().dim;

    // Reference: the greedy chain decoded one token at a time.
    let mut one = make();
    let mut logits = one.forward(&prompt, 0).expect("prefill");
    let mut chain = vec![argmax(&logits)];
    let mut steps = Vec::new();
    let mut hidden = Vec::new();
    for i in 0..4 {
        logits = one.decode(&[chain[i]], p + i).expect("step");
        hidden.push(one.hidden_states().expect("hidden").to_vec());
        chain.push(argmax(&logits));
        steps.push(logits.clone());
    }

    // Four rows in one pass: each row equals its one-token step, hidden states too.
    let mut be = make();
    be.forward(&prompt, 0).expect("prefill");
    let rows = be.decode(&chain[..4], p).expect("verify 4");
    let vocab = rows.len() / 4;
    let h = be.hidden_states().expect("hidden").to_vec();
    assert_eq!(h.len(), 4 * dim);
    for i in 0..4 {
        assert!(
            same(&rows[i * vocab..(i + 1) * vocab], &steps[i]),
            "{what}: row {i} of a 4-row pass differs from its one-token step"
        );
        assert!(
            same(&h[i * dim..(i + 1) * dim], &hidden[i]),
            "{what}: hidden row {i}"
        );
    }

    // Row 0 beside a wrong draft equals row 0 alone; the rejected row's cache entry is then
    // overwritten: the next pass starting one position later matches the reference.
    let mut be = make();
    be.forward(&prompt, 0).expect("prefill");
    let wrong = (chain[1] + 1) % vocab as u32;
    let pair = be.decode(&[chain[0], wrong], p).expect("verify 2");
    assert!(
        same(&pair[..vocab], &steps[0]),
        "{what}: row 0 beside a draft"
    );
    let next = be
        .decode(&[chain[1], chain[2]], p + 1)
        .expect("after rejection");
    assert!(
        same(&next[..vocab], &steps[1]),
        "{what}: row after a rejected draft"
    );
    assert!(
        same(&next[vocab..], &steps[2]),
        "{what}: second row after a rejected draft"
    );
}

fn real(exact: bool) -> CpuBackend<'static> {
    let gguf: &'static GgufFile = Box::leak(Box::new(model_file()));
    let w = LlamaWeights::from_gguf(gguf).expect("weights");
    CpuBackend::new(w, CpuOptions { exact, threads: 2 }).expect("backend")
}

#[test]
fn verify_rows_equal_one_token_steps_fast_path() {
    check(&|| real(false), "SmolLM2 fast");
}

#[test]
fn verify_rows_equal_one_token_steps_exact_path() {
    check(&|| real(true), "SmolLM2 exact");
}

#[test]
fn verify_rows_equal_one_token_steps_float_model() {
    let cfg = model::LlamaConfig::synthetic();
    let synth: &'static _ = Box::leak(Box::new(model::synthetic::SyntheticModel::new(
        cfg.clone(),
        5,
        model::GgmlType::F16,
    )));
    let make = || {
        let w = LlamaWeights::from_source(synth, cfg.clone()).expect("weights");
        CpuBackend::new(
            w,
            CpuOptions {
                exact: false,
                threads: 2,
            },
        )
        .expect("backend")
    };
    check(&make, "seed-shape F16");
}
