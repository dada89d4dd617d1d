//! Greedy output with drafting is token for token the output without it, on the real model
//! (SmolLM2-135M-Instruct Q4_1, `espresso pull`) and the CPU backend: the 24 held-out prompts
//! of `tests/data/draft_prompts.json` (12 chat, 12 raw), 64 tokens each, drafted with ngram
//! and with the shipped draft head at 2 tokens per pass (ngram also at 4 on every third
//! prompt). The acceptance rates are printed
//! (`--nocapture`) for the note. Plus the CLI surface: `--json` reports the drafting,
//! bad `--draft` settings are one `error:` line.

use cpu::draft_head::{DraftHead, HeadFile};
use cpu::{CpuBackend, CpuOptions};
use engine::{generate, generate_drafted, DraftStats, Drafter, GenerateOptions, Ngram};
use model::chat::{ChatMessage, ChatTemplate};
use model::{GgufFile, LlamaWeights, Tokenizer};
use std::process::Command;

fn model_path() -> std::path::PathBuf {
    model::cache::default_model_path().unwrap_or_else(|e| panic!("{e}"))
}

/// The held-out prompts as token ids: (label, ids).
fn prompts(gguf: &GgufFile, tok: &Tokenizer) -> Vec<(String, Vec<u32>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/draft_prompts.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&text).expect("prompt file is JSON");
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap_or_else(|| panic!("{k} is a list"))
            .iter()
            .map(|s| s.as_str().expect("a prompt is a string").to_string())
            .collect()
    };
    let template = ChatTemplate::from_gguf(gguf).expect("chat template");
    let mut out = Vec::new();
    for p in list("chat") {
        let ids = model::chat::encode_chat(&template, tok, &[ChatMessage::user(p.clone())], true)
            .expect("chat prompt");
        out.push((format!("chat: {p}"), ids));
    }
    for p in list("raw") {
        out.push((
            format!("raw: {p}"),
            tok.encode_with_bos(&p, false).expect("raw"),
        ));
    }
    out
}

fn add(total: &mut DraftStats, s: &DraftStats) {
    total.passes += s.passes;
    total.proposed += s.proposed;
    total.accepted += s.accepted;
}

#[test]
fn greedy_output_with_drafting_is_identical_on_held_out_prompts() {
    let gguf = GgufFile::open(model_path()).expect("model");
    let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer");
    let prompts = prompts(&gguf, &tok);
    assert!(prompts.len() >= 20, "at least 20 prompts");
    let head_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/draft/SmolLM2-135M-Instruct.Q4_1.head.gguf"
    );
    let head = HeadFile::open(std::path::Path::new(head_path)).expect("shipped head");
    let w = LlamaWeights::from_gguf(&gguf).expect("weights");
    let mut head = DraftHead::new(&head, &w, 1).expect("head");
    let mut be = CpuBackend::new(
        w,
        CpuOptions {
            exact: false,
            threads: 2,
        },
    )
    .expect("backend");
    let opts = |draft_max| GenerateOptions {
        max_tokens: 64,
        draft_max,
        ..GenerateOptions::default()
    };
    let mut totals: Vec<(String, DraftStats)> = Vec::new();
    for (i, (label, ids)) in prompts.iter().enumerate() {
        let want = generate(&mut be, &tok, ids, &opts(1), &mut |_| {}).expect("plain");
        assert!(!want.tokens.is_empty(), "{label}: no output");
        let mut runs = vec![("ngram", 2), ("head", 2)];
        if i % 3 == 0 {
            runs.push(("ngram", 4));
        }
        let mut ngram = Ngram::default();
        for (which, k) in runs {
            let d: &mut dyn Drafter = if which == "head" {
                &mut head
            } else {
                &mut ngram
            };
            let got =
                generate_drafted(&mut be, d, &tok, ids, &opts(k), &mut |_| {}).expect("drafted");
            assert_eq!(
                got.tokens, want.tokens,
                "{label}: {which}, {k} tokens per pass"
            );
            assert_eq!(got.stop_reason, want.stop_reason, "{label}");
            let kind = label.split(':').next().unwrap_or("?");
            let key = format!("{which} k={k} {kind}");
            match totals.iter_mut().find(|(n, _)| *n == key) {
                Some((_, t)) => add(t, &got.draft),
                None => totals.push((key, got.draft.clone())),
            }
        }
    }
    for (key, t) in &totals {
        eprintln!(
            "{key}: {} passes, {} proposed, {} accepted ({:.1}%), {:.3} tokens/pass",
            t.passes,
            t.proposed,
            t.accepted,
            100.0 * t.acceptance(),
            t.tokens_per_pass()
        );
    }
    // The chat answers restate their questions often enough for ngram to be right sometimes.
    let chat = &totals
        .iter()
        .find(|(k, _)| k == "ngram k=2 chat")
        .expect("chat")
        .1;
    assert!(chat.proposed > 0 && chat.accepted > 0, "{chat:?}");
}

fn espresso(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_espresso"))
        .args(args)
        .output()
        .expect("run espresso")
}

#[test]
fn generate_json_reports_the_drafting() {
    let out = espresso(&[
        "generate",
        "--json",
        "-n",
        "24",
        "--draft",
        "ngram",
        "--draft-max",
        "3",
        "--threads",
        "2",
        "The numbers one, two, three, four, five, one, two, three,",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let d = &v["draft"];
    assert_eq!(d["method"], "ngram");
    let (passes, proposed, accepted) = (
        d["passes"].as_u64().expect("passes"),
        d["proposed"].as_u64().expect("proposed"),
        d["accepted"].as_u64().expect("accepted"),
    );
    let tokens = v["tokens"].as_array().expect("tokens").len() as u64;
    assert!(accepted <= proposed && proposed <= 2 * passes, "{d}");
    assert!(passes + accepted <= tokens + 1, "{d} for {tokens} tokens");
    assert!(
        accepted > 0,
        "a counting prompt gives ngram something to copy: {d}"
    );

    let none = espresso(&[
        "generate",
        "--json",
        "-n",
        "24",
        "--draft",
        "none",
        "--threads",
        "2",
        "The numbers one, two, three, four, five, one, two, three,",
    ]);
    let n: serde_json::Value = serde_json::from_slice(&none.stdout).expect("JSON");
    assert_eq!(
        n["tokens"], v["tokens"],
        "same tokens with and without drafting"
    );
    assert_eq!(n["draft"]["proposed"], 0);
}

#[test]
fn bad_draft_settings_are_one_error_line() {
    for args in [
        &["generate", "--draft-max", "0", "hi"][..],
        &["generate", "--draft", "sometimes", "hi"][..],
        &["bench", "--draft-max", "0"][..],
    ] {
        let out = espresso(args);
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error:"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
