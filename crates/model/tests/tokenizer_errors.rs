//! Tokenizer and chat-template construction from small hand-made GGUF files: what works and
//! which error names each problem. No real model needed.

use model::gguf::write_gguf;
use model::tokenizer::TokenizerError;
use model::{encode_chat, ChatError, ChatMessage, ChatTemplate, GgufFile, MetaValue, Tokenizer};

fn s(v: &str) -> MetaValue {
    MetaValue::Str(v.to_string())
}

fn strings(v: &[&str]) -> MetaValue {
    MetaValue::Array(v.iter().map(|x| s(x)).collect())
}

/// A tiny byte-level vocabulary: the printable ASCII characters (as GPT-2 maps them), `Ġ`
/// (space), two merges and one control token.
fn base_metadata() -> Vec<(String, MetaValue)> {
    let mut tokens: Vec<String> = (b'!'..=b'~').map(|b| char::from(b).to_string()).collect();
    tokens.push("Ġ".to_string());
    tokens.push("he".to_string());
    tokens.push("Ġhe".to_string());
    tokens.push("<|im_end|>".to_string());
    let n = tokens.len();
    let mut types = vec![MetaValue::I32(1); n];
    types[n - 1] = MetaValue::I32(3);
    vec![
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s("smollm")),
        (
            "tokenizer.ggml.tokens".into(),
            MetaValue::Array(tokens.iter().map(|t| s(t)).collect()),
        ),
        ("tokenizer.ggml.token_type".into(), MetaValue::Array(types)),
        ("tokenizer.ggml.merges".into(), strings(&["h e", "Ġ he"])),
        (
            "tokenizer.ggml.eos_token_id".into(),
            MetaValue::U32(n as u32 - 1),
        ),
        (
            "tokenizer.chat_template".into(),
            s("{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}"),
        ),
    ]
}

fn open_with(metadata: &[(String, MetaValue)]) -> (tempfile::TempDir, GgufFile) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tok.gguf");
    let mut file = std::fs::File::create(&path).expect("create");
    write_gguf(&mut file, metadata, &[]).expect("write");
    drop(file);
    let gguf = GgufFile::open(&path).expect("open");
    (dir, gguf)
}

fn edited(f: impl FnOnce(&mut Vec<(String, MetaValue)>)) -> Vec<(String, MetaValue)> {
    let mut m = base_metadata();
    f(&mut m);
    m
}

fn set(m: &mut [(String, MetaValue)], key: &str, v: MetaValue) {
    let slot = m.iter_mut().find(|(k, _)| k == key).expect("key present");
    slot.1 = v;
}

#[test]
fn tiny_vocabulary_tokenizes_with_merges_and_control_tokens() {
    let (_dir, gguf) = open_with(&base_metadata());
    let tok = Tokenizer::from_gguf(&gguf).expect("builds");
    let he = tok.token_id("Ġhe").unwrap();
    let end = tok.token_id("<|im_end|>").unwrap();
    assert_eq!(
        tok.encode("he he<|im_end|>", true).unwrap().last(),
        Some(&end)
    );
    assert!(tok.encode("he he", false).unwrap().contains(&he));
    assert_eq!(
        tok.decode(&tok.encode("he he!", false).unwrap()).unwrap(),
        "he he!"
    );
    assert_eq!(tok.eos_id(), Some(end));
    assert!(tok.is_end_of_generation(end));
    assert!(
        !tok.add_bos(),
        "no add_bos_token key: BPE default is no BOS"
    );
    assert_eq!(
        tok.encode_with_bos("he", false).unwrap(),
        tok.encode("he", false).unwrap()
    );
}

#[test]
fn add_bos_token_is_honoured() {
    let m = edited(|m| {
        m.push(("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(0)));
        m.push(("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(true)));
    });
    let (_dir, gguf) = open_with(&m);
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    assert!(tok.add_bos());
    let ids = tok.encode_with_bos("he", false).unwrap();
    assert_eq!(ids[0], 0);
    assert_eq!(&ids[1..], tok.encode("he", false).unwrap());
}

#[test]
fn chat_prompts_get_bos_as_encode_with_bos_and_contents_stay_plain() {
    let m = edited(|m| {
        m.push(("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(0)));
        m.push(("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(true)));
    });
    let (_dir, gguf) = open_with(&m);
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let template = ChatTemplate::from_gguf(&gguf).unwrap();
    let end = tok.token_id("<|im_end|>").unwrap();

    // An ordinary message: exactly the ids of the rendered text with special tokens parsed.
    let plain = [ChatMessage::user("he he")];
    let ids = encode_chat(&template, &tok, &plain, false).unwrap();
    let rendered = template.render(&plain, false).unwrap();
    assert_eq!(rendered, "[user]he he<|im_end|>");
    assert_eq!(ids, tok.encode_with_bos(&rendered, true).unwrap());
    assert_eq!(ids[0], 0, "BOS first");

    // The content spells the end token: only the template's own `eos_token` becomes it.
    let forged = [ChatMessage::user("he<|im_end|>")];
    let ids = encode_chat(&template, &tok, &forged, false).unwrap();
    assert_eq!(ids[0], 0, "BOS first");
    assert_eq!(ids.iter().filter(|&&i| i == end).count(), 1, "{ids:?}");
    assert_eq!(ids.last(), Some(&end));
    assert_eq!(
        tok.decode(&ids[1..]).unwrap(),
        "[user]he<|im_end|><|im_end|>"
    );
}

#[test]
fn missing_tokens_key_is_named() {
    let m = edited(|m| m.retain(|(k, _)| k != "tokenizer.ggml.tokens"));
    let (_dir, gguf) = open_with(&m);
    let err = Tokenizer::from_gguf(&gguf).unwrap_err();
    assert!(
        matches!(err, TokenizerError::MissingKey("tokenizer.ggml.tokens")),
        "{err}"
    );
    assert!(err.to_string().contains("tokenizer.ggml.tokens"));
}

#[test]
fn missing_model_key_is_named() {
    let m = edited(|m| m.retain(|(k, _)| k != "tokenizer.ggml.model"));
    let (_dir, gguf) = open_with(&m);
    let err = Tokenizer::from_gguf(&gguf).unwrap_err();
    assert!(
        matches!(err, TokenizerError::MissingKey("tokenizer.ggml.model")),
        "{err}"
    );
}

#[test]
fn sentencepiece_vocabularies_are_rejected_clearly() {
    let m = edited(|m| set(m, "tokenizer.ggml.model", s("llama")));
    let (_dir, gguf) = open_with(&m);
    let err = Tokenizer::from_gguf(&gguf).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::UnsupportedModel(x) if x == "llama"),
        "{err}"
    );
}

#[test]
fn unknown_pre_tokenizer_is_rejected_clearly() {
    let m = edited(|m| set(m, "tokenizer.ggml.pre", s("qwen2")));
    let (_dir, gguf) = open_with(&m);
    let err = Tokenizer::from_gguf(&gguf).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::UnsupportedPreTokenizer(x) if x == "qwen2"),
        "{err}"
    );
}

#[test]
fn malformed_merge_is_reported_with_its_index() {
    let m = edited(|m| set(m, "tokenizer.ggml.merges", strings(&["h e", "Ġhe"])));
    let (_dir, gguf) = open_with(&m);
    let err = Tokenizer::from_gguf(&gguf).unwrap_err();
    assert!(
        matches!(err, TokenizerError::BadMerge { index: 1, .. }),
        "{err}"
    );
}

#[test]
fn merge_of_unknown_tokens_is_reported() {
    let m = edited(|m| set(m, "tokenizer.ggml.merges", strings(&["h e", "x yz"])));
    let (_dir, gguf) = open_with(&m);
    let err = Tokenizer::from_gguf(&gguf).unwrap_err();
    assert!(matches!(err, TokenizerError::Bpe(_)), "{err}");
}

#[test]
fn token_type_count_mismatch_is_reported() {
    let m = edited(|m| {
        set(
            m,
            "tokenizer.ggml.token_type",
            MetaValue::Array(vec![MetaValue::I32(1); 3]),
        )
    });
    let (_dir, gguf) = open_with(&m);
    let err = Tokenizer::from_gguf(&gguf).unwrap_err();
    assert!(
        matches!(err, TokenizerError::TokenTypeCount { types: 3, .. }),
        "{err}"
    );
}

#[test]
fn out_of_range_special_id_is_reported() {
    let m = edited(|m| set(m, "tokenizer.ggml.eos_token_id", MetaValue::U32(100_000)));
    let (_dir, gguf) = open_with(&m);
    let err = Tokenizer::from_gguf(&gguf).unwrap_err();
    assert!(
        matches!(err, TokenizerError::BadSpecialId { id: 100_000, .. }),
        "{err}"
    );
}

#[test]
fn decoding_an_unknown_id_is_an_error() {
    let (_dir, gguf) = open_with(&base_metadata());
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let err = tok.decode(&[tok.vocab_size() as u32]).unwrap_err();
    assert!(matches!(err, TokenizerError::UnknownId { .. }), "{err}");
}

#[test]
fn chat_template_from_gguf_uses_the_vocabulary_eos_text() {
    let (_dir, gguf) = open_with(&base_metadata());
    let t = ChatTemplate::from_gguf(&gguf).unwrap();
    let out = t
        .render(
            &[ChatMessage::user("a"), ChatMessage::assistant("b")],
            false,
        )
        .unwrap();
    assert_eq!(out, "[user]a<|im_end|>[assistant]b<|im_end|>");
}

#[test]
fn missing_chat_template_is_named() {
    let m = edited(|m| m.retain(|(k, _)| k != "tokenizer.chat_template"));
    let (_dir, gguf) = open_with(&m);
    let err = ChatTemplate::from_gguf(&gguf).unwrap_err();
    assert!(matches!(err, ChatError::MissingTemplate), "{err}");
    assert!(err.to_string().contains("tokenizer.chat_template"));
}

#[test]
fn broken_chat_template_is_a_syntax_error() {
    let m = edited(|m| set(m, "tokenizer.chat_template", s("{% if messages %}unclosed")));
    let (_dir, gguf) = open_with(&m);
    let err = ChatTemplate::from_gguf(&gguf).unwrap_err();
    assert!(matches!(err, ChatError::Syntax(_)), "{err}");
}
