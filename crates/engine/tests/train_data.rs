//! `engine::train::data`: loading each format, the chat loss mask, the window contract of
//! `step_batches`/`eval_batches`, and every error path. Uses a small hand-made byte-level
//! tokenizer (written to a GGUF in a temp dir), so no real model is needed.

use engine::train::data::{self, DataError, Shuffle, TokenData};
use engine::train::{Batch, IGNORE_INDEX};
use model::gguf::write_gguf;
use model::{ChatMessage, ChatTemplate, GgufFile, MetaValue, Tokenizer};
use std::path::{Path, PathBuf};

const IM_START: u32 = 257;
const IM_END: u32 = 258;

/// SmolLM2's chat template (ChatML with a default system prompt).
const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// GPT-2's byte → char map (printable bytes map to themselves, the rest to U+0100 onwards).
fn byte_char(b: u8) -> char {
    if matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF) {
        return char::from(b);
    }
    let rank = (0..b)
        .filter(|&x| !matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF))
        .count() as u32;
    char::from_u32(256 + rank).expect("valid char")
}

/// Token `b` (< 256) is byte `b`; then `<|endoftext|>`, `<|im_start|>` (BOS), `<|im_end|>`
/// (EOS), as in SmolLM2; and a few merges so that BPE merges happen.
fn tokenizer(add_bos: bool) -> Tokenizer {
    let s = |v: &str| MetaValue::Str(v.to_string());
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    tokens.extend(["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from));
    tokens.extend(["he", "Ġhe", "th", "Ġth"].map(String::from));
    let types = (0..tokens.len())
        .map(|i| MetaValue::I32(if (256..259).contains(&i) { 3 } else { 1 }))
        .collect();
    let metadata = vec![
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s("smollm")),
        (
            "tokenizer.ggml.tokens".into(),
            MetaValue::Array(tokens.iter().map(|t| s(t)).collect()),
        ),
        ("tokenizer.ggml.token_type".into(), MetaValue::Array(types)),
        (
            "tokenizer.ggml.merges".into(),
            MetaValue::Array(["h e", "Ġ he", "t h", "Ġ th"].map(s).to_vec()),
        ),
        (
            "tokenizer.ggml.bos_token_id".into(),
            MetaValue::U32(IM_START),
        ),
        ("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(IM_END)),
        (
            "tokenizer.ggml.add_bos_token".into(),
            MetaValue::Bool(add_bos),
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tok.gguf");
    let mut file = std::fs::File::create(&path).expect("create");
    write_gguf(&mut file, &metadata, &[]).expect("write gguf");
    drop(file);
    Tokenizer::from_gguf(&GgufFile::open(&path).expect("open")).expect("tokenizer")
}

fn chatml() -> ChatTemplate {
    ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>").expect("template")
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

fn load(path: &Path, tok: &Tokenizer) -> Result<TokenData, DataError> {
    data::load(path, tok, Some(&chatml()))
}

/// `n` tokens `0, 1, …` with no mask: a window's first input names its start.
fn counting(n: u32) -> TokenData {
    TokenData {
        tokens: (0..n).collect(),
        counted: None,
        description: "counting".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Formats

#[test]
fn txt_file_is_tokenized_whole_with_bos_iff_add_bos() {
    let dir = tempfile::tempdir().unwrap();
    let text = "the hen. <|im_end|> é\n";
    let path = write(dir.path(), "a.txt", text);
    for add_bos in [false, true] {
        let tok = tokenizer(add_bos);
        let d = load(&path, &tok).unwrap();
        let body = tok.encode(text, false).unwrap();
        assert!(body.contains(&tok.token_id("Ġhe").unwrap()), "merges apply");
        assert!(
            !body.contains(&IM_END),
            "special-token text in .txt stays plain text"
        );
        let expected: Vec<u32> = add_bos
            .then_some(IM_START)
            .into_iter()
            .chain(body)
            .collect();
        assert_eq!(d.tokens, expected);
        assert_eq!(d.counted, None);
        assert!(d.description.contains("a.txt"), "{}", d.description);
    }
}

#[test]
fn directory_concatenates_sorted_txt_files_with_eos_between() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.txt", "BB");
    write(dir.path(), "a.txt", "AA");
    write(dir.path(), "c.md", "ignored");
    write(dir.path(), "d.txt", ""); // empty: adds nothing
    std::fs::create_dir(dir.path().join("sub.txt")).unwrap(); // a directory is not a file
    let tok = tokenizer(false);
    let d = load(dir.path(), &tok).unwrap();
    assert_eq!(d.tokens, vec![b'A' as u32, b'A' as u32, IM_END, 66, 66]);
    assert_eq!(d.counted, None);

    let d = load(dir.path(), &tokenizer(true)).unwrap();
    assert_eq!(d.tokens, vec![IM_START, 65, 65, IM_END, IM_START, 66, 66]);
}

#[test]
fn jsonl_text_lines_get_bos_if_add_bos_and_eos() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.jsonl",
        "{\"text\": \"AB\"}\n\n  \r\n{\"text\": \"C\", \"extra\": 1}\r\n",
    );
    let d = load(&path, &tokenizer(false)).unwrap();
    assert_eq!(d.tokens, vec![65, 66, IM_END, 67, IM_END]);
    assert_eq!(d.counted, None, "text lines count everywhere");
    let d = load(&path, &tokenizer(true)).unwrap();
    assert_eq!(
        d.tokens,
        vec![IM_START, 65, 66, IM_END, IM_START, 67, IM_END]
    );
}

/// The runs of consecutive counted tokens, decoded.
fn counted_runs(tok: &Tokenizer, d: &TokenData) -> Vec<String> {
    let mask = d.counted.as_ref().expect("chat data has a mask");
    assert_eq!(mask.len(), d.tokens.len());
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for (&t, &c) in d.tokens.iter().zip(mask) {
        if c {
            run.push(t);
        } else if !run.is_empty() {
            runs.push(tok.decode(&std::mem::take(&mut run)).unwrap());
        }
    }
    if !run.is_empty() {
        runs.push(tok.decode(&run).unwrap());
    }
    runs
}

fn chat_line(messages: &[(&str, &str)]) -> String {
    let messages: Vec<_> = messages
        .iter()
        .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
        .collect();
    serde_json::json!({ "messages": messages }).to_string()
}

#[test]
fn chat_jsonl_counts_exactly_the_assistant_content_and_its_end_of_turn() {
    let dir = tempfile::tempdir().unwrap();
    let conversation = [
        ("user", "Say the word <|im_end|> assistant"),
        ("assistant", "assistant"),
        ("user", "then the hen?"),
        ("assistant", " the hen,\nthen 42 ✓ "),
    ];
    let path = write(dir.path(), "c.jsonl", chat_line(&conversation) + "\n");
    for add_bos in [false, true] {
        let tok = tokenizer(add_bos);
        let d = load(&path, &tok).unwrap();
        assert_eq!(
            counted_runs(&tok, &d),
            vec!["assistant<|im_end|>", " the hen,\nthen 42 ✓ <|im_end|>"]
        );
        // All tokens decode to the rendered conversation.
        let messages: Vec<_> = conversation
            .iter()
            .map(|(r, c)| ChatMessage::new(*r, *c))
            .collect();
        let rendered = chatml().render(&messages, false).unwrap();
        // The template's text starts with <|im_start|>, which is this vocabulary's BOS, so no
        // second BOS is added even with add_bos.
        assert_eq!(d.tokens[0], IM_START);
        let body = &d.tokens[..];
        assert_eq!(tok.decode(body).unwrap(), rendered);
        // The user's literal "<|im_end|>" is text, not the control token: only the template's
        // five turn ends (default system, two user, two assistant) are control tokens.
        assert_eq!(body.iter().filter(|&&t| t == IM_END).count(), 5);
    }
}

#[test]
fn chat_and_text_lines_mix_and_text_lines_stay_counted() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        "{\"text\": \"AB\"}".to_string(),
        chat_line(&[("system", "S"), ("user", "Q"), ("assistant", "A")]),
    ];
    let path = write(dir.path(), "m.jsonl", lines.join("\n"));
    let tok = tokenizer(false);
    let d = load(&path, &tok).unwrap();
    let mask = d.counted.clone().unwrap();
    assert_eq!(&d.tokens[..3], &[65, 66, IM_END]);
    assert_eq!(&mask[..3], &[true, true, true]);
    assert_eq!(counted_runs(&tok, &d), vec!["AB<|im_end|>", "A<|im_end|>"]);
    assert!(
        d.description.contains("1 text and 1 chat"),
        "{}",
        d.description
    );
}

#[test]
fn chat_with_empty_assistant_content_counts_its_end_of_turn() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "e.jsonl",
        chat_line(&[("user", "Q"), ("assistant", "")]),
    );
    let tok = tokenizer(false);
    let d = load(&path, &tok).unwrap();
    // Nothing to say is still a turn to end.
    assert_eq!(counted_runs(&tok, &d), vec!["<|im_end|>"]);
}

// ---------------------------------------------------------------------------------------------
// .bin

#[test]
fn bin_round_trips_little_endian_u16() {
    let dir = tempfile::tempdir().unwrap();
    let ids: [u16; 5] = [0, 1, 258, 65, 261];
    let bytes: Vec<u8> = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
    let path = write(dir.path(), "d.bin", &bytes);
    let d = load(&path, &tokenizer(false)).unwrap();
    assert_eq!(d.tokens, ids.map(u32::from).to_vec());
    assert_eq!(d.counted, None);
}

#[test]
fn bin_odd_size_and_out_of_range_ids_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(false);
    let odd = write(dir.path(), "odd.bin", [1u8, 0, 2]);
    let e = load(&odd, &tok).unwrap_err();
    assert!(matches!(e, DataError::OddBin { bytes: 3, .. }), "{e:?}");
    assert!(e.to_string().contains("odd.bin"), "{e}");

    let vocab = tok.vocab_size() as u16;
    let bytes: Vec<u8> = [5u16, vocab - 1, vocab]
        .iter()
        .flat_map(|t| t.to_le_bytes())
        .collect();
    let far = write(dir.path(), "far.bin", bytes);
    let e = load(&far, &tok).unwrap_err();
    assert!(
        matches!(e, DataError::TokenOutOfRange { index: 2, token, vocab: v, .. }
            if token == u32::from(vocab) && v == usize::from(vocab)),
        "{e:?}"
    );
    assert!(e.to_string().contains("far.bin"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Errors

fn load_err(name: &str, bytes: impl AsRef<[u8]>) -> DataError {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, bytes);
    let e = load(&path, &tokenizer(false)).expect_err("should fail");
    assert!(e.to_string().contains(name), "message names the file: {e}");
    e
}

#[test]
fn missing_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.txt");
    let e = load(&path, &tokenizer(false)).unwrap_err();
    assert!(matches!(e, DataError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("nope.txt"), "{e}");
}

#[test]
fn empty_inputs_are_errors() {
    for (name, bytes) in [
        ("e.txt", ""),
        ("e.bin", ""),
        ("e.jsonl", ""),
        ("blank.jsonl", "\n  \n"),
    ] {
        let e = load_err(name, bytes);
        assert!(matches!(e, DataError::Empty { .. }), "{name}: {e:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "notes.md", "x");
    let e = load(dir.path(), &tokenizer(false)).unwrap_err();
    assert!(matches!(e, DataError::NoTextFiles { .. }), "{e:?}");
    write(dir.path(), "empty.txt", "");
    let e = load(dir.path(), &tokenizer(false)).unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e:?}");
}

#[test]
fn unknown_extension_names_the_accepted_ones() {
    for name in ["data.csv", "noext"] {
        let e = load_err(name, "x");
        assert!(matches!(e, DataError::UnknownExtension { .. }), "{e:?}");
        let msg = e.to_string();
        for ext in [".txt", ".jsonl", ".bin", "directory"] {
            assert!(msg.contains(ext), "{msg}");
        }
    }
}

#[test]
fn malformed_json_names_the_line() {
    let e = load_err("bad.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": oops}\n");
    assert!(matches!(e, DataError::Json { line: 3, .. }), "{e:?}");
    assert!(e.to_string().contains("line 3"), "{e}");
}

#[test]
fn jsonl_line_without_text_or_messages_is_an_error() {
    for (body, line) in [
        ("{\"text\": \"ok\"}\n{\"prompt\": \"x\"}", 2),
        ("{\"text\": 5}", 1),
        ("[1, 2]", 1),
    ] {
        let e = load_err("x.jsonl", body);
        assert!(
            matches!(e, DataError::NoTextOrMessages { line: l, .. } if l == line),
            "{body}: {e:?}"
        );
        assert!(e.to_string().contains(&format!("line {line}")), "{e}");
    }
    for body in [
        "{\"messages\": \"hi\"}",
        "{\"messages\": []}",
        "{\"messages\": [{\"role\": \"user\"}]}",
    ] {
        let e = load_err("m.jsonl", body);
        assert!(matches!(e, DataError::BadMessages { line: 1, .. }), "{e:?}");
    }
}

#[test]
fn chat_lines_need_a_template_that_keeps_assistant_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.jsonl",
        chat_line(&[("user", "question"), ("assistant", "reply")]),
    );
    let tok = tokenizer(false);
    let e = data::load(&path, &tok, None).unwrap_err();
    assert!(
        matches!(e, DataError::NoChatTemplate { line: 1, .. }),
        "{e:?}"
    );

    let upper = ChatTemplate::new(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | upper }}<|im_end|>\n{% endfor %}",
        "",
        "",
    )
    .unwrap();
    let e = data::load(&path, &tok, Some(&upper)).unwrap_err();
    assert!(matches!(e, DataError::Chat { line: 1, .. }), "{e:?}");
    assert!(e.to_string().contains("verbatim"), "{e}");

    // A template that marks the last message differently does not render incrementally.
    let last = ChatTemplate::new(
        "{% for m in messages %}{{ m.content }}{% if loop.last %}<|im_end|>{% endif %}{% endfor %}",
        "",
        "",
    )
    .unwrap();
    let e = data::load(&path, &tok, Some(&last)).unwrap_err();
    assert!(matches!(e, DataError::Chat { line: 1, .. }), "{e:?}");
}

#[test]
fn chat_template_that_trims_content_masks_the_trimmed_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.jsonl",
        chat_line(&[("user", " q "), ("assistant", "  the reply\n")]),
    );
    let trim = ChatTemplate::new(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}",
        "",
        "",
    )
    .unwrap();
    let tok = tokenizer(false);
    let d = data::load(&path, &tok, Some(&trim)).unwrap();
    assert_eq!(counted_runs(&tok, &d), vec!["the reply<|im_end|>"]);
    assert_eq!(
        tok.decode(&d.tokens).unwrap(),
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\nthe reply<|im_end|>\n"
    );
}

#[test]
fn non_utf8_text_is_an_error() {
    let e = load_err("latin1.txt", b"caf\xe9");
    assert!(matches!(e, DataError::NotUtf8 { .. }), "{e:?}");
    assert!(e.to_string().contains("offset 3"), "{e}");
    let e = load_err(
        "latin1.jsonl",
        b"{\"text\": \"a\"}\n{\"text\": \"caf\xe9\"}",
    );
    assert!(matches!(e, DataError::NotUtf8 { .. }), "{e:?}");
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn check_requires_seq_len_plus_one_tokens() {
    let d = counting(10);
    assert!(d.check(9).is_ok());
    let e = d.check(10).unwrap_err();
    assert_eq!(
        e.to_string(),
        "data has 10 tokens; --seq-len 10 needs at least 11"
    );
    assert!(matches!(d.check(0), Err(DataError::ZeroSeqLen)));
}

#[test]
fn resolve_finds_paths_and_pulled_data_sets() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "x.txt", "x");
    assert_eq!(data::resolve(file.to_str().unwrap()).unwrap(), file);

    let e = data::resolve("no-such-file-or-data-set").unwrap_err();
    assert!(matches!(e, DataError::UnknownData { .. }), "{e:?}");
    assert!(
        e.to_string().contains("shakespeare"),
        "lists known sets: {e}"
    );

    // The only test that touches ESPRESSO_HOME.
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("ESPRESSO_HOME", home.path());
    let e = data::resolve("shakespeare").unwrap_err();
    assert!(matches!(e, DataError::NotPulled { .. }), "{e:?}");
    assert!(
        e.to_string().contains("espresso pull --data shakespeare"),
        "{e}"
    );
    let cached = home.path().join("data").join("shakespeare");
    std::fs::create_dir_all(&cached).unwrap();
    assert_eq!(data::resolve("shakespeare").unwrap(), cached);
}

// ---------------------------------------------------------------------------------------------
// Splitting and fingerprints

#[test]
fn split_tail_holds_out_the_last_fraction() {
    let mut d = counting(10);
    d.counted = Some((0..10).map(|i| i % 3 != 0).collect());
    let (train, val) = d.clone().split_tail(0.3).unwrap();
    assert_eq!(train.tokens, (0..7).collect::<Vec<_>>());
    assert_eq!(val.tokens, vec![7, 8, 9]);
    assert_eq!(
        train.counted.as_deref(),
        Some(&d.counted.as_ref().unwrap()[..7])
    );
    assert_eq!(val.counted, Some(vec![true, true, false]));

    for frac in [0.0, 1.0, -0.5, f64::NAN] {
        assert!(matches!(
            counting(10).split_tail(frac),
            Err(DataError::BadFraction(_))
        ));
    }
    assert!(matches!(
        counting(10).split_tail(0.1),
        Err(DataError::SplitTooSmall {
            train: 9,
            val: 1,
            ..
        })
    ));
    assert!(matches!(
        counting(10).split_tail(0.9),
        Err(DataError::SplitTooSmall {
            train: 1,
            val: 9,
            ..
        })
    ));
}

#[test]
fn fingerprint_is_stable_and_sees_tokens_and_mask() {
    let a = counting(20);
    let fp = a.fingerprint();
    assert_eq!(fp.len(), 64);
    assert!(fp.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(fp, counting(20).fingerprint());
    assert_ne!(fp, counting(21).fingerprint());

    let mut all = counting(20);
    all.counted = Some(vec![true; 20]);
    assert_eq!(all.fingerprint(), fp, "an all-true mask means no mask");
    let mut masked = counting(20);
    masked.counted = Some((0..20).map(|i| i != 5).collect());
    assert_ne!(masked.fingerprint(), fp);
    let mut other = counting(20);
    other.tokens[19] = 0;
    assert_ne!(other.fingerprint(), fp);
}

// ---------------------------------------------------------------------------------------------
// Windows

/// Window starts of a step, read back from the counting data (input 0 = start).
fn starts(batches: &[Batch]) -> Vec<Vec<usize>> {
    batches
        .iter()
        .map(|b| {
            (0..b.batch)
                .map(|i| b.inputs[i * b.seq_len] as usize)
                .collect()
        })
        .collect()
}

#[test]
fn sequential_windows_follow_the_formula_and_wrap() {
    let len = 50usize;
    let d = counting(len as u32);
    let (a_n, b_n, s) = (2usize, 3usize, 4usize);
    for k in 1..=10u64 {
        let batches = data::step_batches(&d, Shuffle::None, k, a_n, b_n, s);
        assert_eq!(batches.len(), a_n);
        for (a, batch) in batches.iter().enumerate() {
            assert_eq!((batch.batch, batch.seq_len), (b_n, s));
            assert_eq!(batch.inputs.len(), b_n * s);
            for b in 0..b_n {
                let o = ((((k as usize - 1) * a_n + a) * b_n + b) * s) % (len - s);
                let row = b * s..(b + 1) * s;
                let want_in: Vec<u32> = (o..o + s).map(|t| t as u32).collect();
                let want_tg: Vec<u32> = (o + 1..o + s + 1).map(|t| t as u32).collect();
                assert_eq!(batch.inputs[row.clone()], want_in[..], "k={k} a={a} b={b}");
                assert_eq!(batch.targets[row], want_tg[..], "k={k} a={a} b={b}");
            }
        }
    }
    // Step 1 tiles from 0; step 3 wraps: offsets 48, 52, …, 68 mod 46.
    let s1 = starts(&data::step_batches(&d, Shuffle::None, 1, a_n, b_n, s));
    assert_eq!(s1, vec![vec![0, 4, 8], vec![12, 16, 20]]);
    let s3 = starts(&data::step_batches(&d, Shuffle::None, 3, a_n, b_n, s));
    assert_eq!(s3, vec![vec![2, 6, 10], vec![14, 18, 22]]);
    // The last start that fits: len − S − 1 (target of its last input is the last token).
    let tight = counting(5);
    let s = starts(&data::step_batches(&tight, Shuffle::None, 1, 1, 4, 1));
    assert_eq!(s, vec![vec![0, 1, 2, 3]]);
}

#[test]
fn uncounted_tokens_become_ignore_index_targets() {
    let mut d = counting(12);
    d.counted = Some((0..12).map(|i| i % 2 == 0).collect());
    let batches = data::step_batches(&d, Shuffle::None, 1, 1, 2, 3);
    let b = &batches[0];
    assert_eq!(b.inputs, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        b.targets,
        vec![IGNORE_INDEX, 2, IGNORE_INDEX, 4, IGNORE_INDEX, 6]
    );
    assert_eq!(b.counted(), 3);
}

#[test]
fn random_windows_are_deterministic_per_seed_and_in_range() {
    let len = 40usize;
    let s = 8usize;
    let d = counting(len as u32);
    let draw = |seed, k| {
        starts(&data::step_batches(
            &d,
            Shuffle::Random { seed },
            k,
            3,
            4,
            s,
        ))
    };
    let mut seen = std::collections::BTreeSet::new();
    for k in 1..=200u64 {
        let a = draw(7, k);
        assert_eq!(a, draw(7, k), "same seed and step, same windows");
        for start in a.into_iter().flatten() {
            assert!(start + s < len, "start {start} leaves no target");
            seen.insert(start);
        }
    }
    // 2400 draws over 32 starts: every start, including both ends, comes up.
    assert_eq!(seen, (0..len - s).collect());
    assert_ne!(draw(7, 1), draw(8, 1), "the seed matters");
    assert_ne!(draw(7, 1), draw(7, 2), "the step matters");
    // Windows hold consecutive tokens with targets shifted by one.
    let b = &data::step_batches(&d, Shuffle::Random { seed: 3 }, 5, 1, 1, s)[0];
    let o = b.inputs[0];
    assert_eq!(b.inputs, (o..o + s as u32).collect::<Vec<_>>());
    assert_eq!(b.targets, (o + 1..o + 1 + s as u32).collect::<Vec<_>>());
}

#[test]
fn eval_windows_tile_from_the_start_up_to_the_limit() {
    let d = counting(23);
    // (23 − 1) / 5 = 4 windows fit: starts 0, 5, 10, 15 (the last target is token 20).
    let all = data::eval_batches(&d, 5, 3, 100);
    assert_eq!(starts(&all), vec![vec![0, 5, 10], vec![15]]);
    assert_eq!(all[1].batch, 1);
    assert_eq!(all[1].targets, vec![16, 17, 18, 19, 20]);
    let capped = data::eval_batches(&d, 5, 3, 2);
    assert_eq!(starts(&capped), vec![vec![0, 5]]);
    assert!(data::eval_batches(&counting(5), 5, 3, 100).is_empty());
}
