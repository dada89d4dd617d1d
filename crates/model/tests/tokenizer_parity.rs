//! Tokenizer and chat-template parity with llama.cpp on the real SmolLM2 GGUF.
//!
//! The fixture `fixtures/tokenizer_parity.json` is written by
//! `scripts/make_tokenizer_fixture.py` from llama-cpp-python (llama.cpp's own tokenizer and
//! llama-cpp-python's jinja2 chat formatter). These tests need the pulled model and fail (they
//! do not skip) when it is missing: run `espresso pull` first.

use model::tokenizer::StreamDecoder;
use model::{ChatMessage, ChatTemplate, GgufFile, Tokenizer};
use serde_json::Value;
use std::sync::OnceLock;

struct Loaded {
    tokenizer: Tokenizer,
    template: ChatTemplate,
}

fn loaded() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| {
        let path = model::cache::default_model_path()
            .unwrap_or_else(|e| panic!("the real model is needed for this test: {e}"));
        let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        Loaded {
            tokenizer: Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{e}")),
            template: ChatTemplate::from_gguf(&gguf).unwrap_or_else(|e| panic!("{e}")),
        }
    })
}

fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tokenizer_parity.json"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn cases() -> &'static [Value] {
    fixture()["cases"].as_array().expect("cases")
}

#[test]
fn vocabulary_facts_match_llama_cpp() {
    let tok = &loaded().tokenizer;
    let fx = fixture();
    assert_eq!(tok.vocab_size() as u64, fx["n_vocab"].as_u64().unwrap());
    assert_eq!(tok.bos_id().map(u64::from), fx["bos_id"].as_u64());
    assert_eq!(tok.eos_id().map(u64::from), fx["eos_id"].as_u64());
    assert_eq!(tok.add_bos(), fx["add_bos"].as_bool().unwrap());
    assert!(!tok.add_bos(), "SmolLM2 prompts get no BOS");

    let eog: Vec<u32> = (0..tok.vocab_size() as u32)
        .filter(|&i| tok.is_end_of_generation(i))
        .collect();
    assert_eq!(eog, ids(&fx["eog_ids"]), "end-of-generation ids");
    assert!(tok.is_end_of_generation(tok.token_id("<|im_end|>").unwrap()));
    let control: Vec<u32> = (0..tok.vocab_size() as u32)
        .filter(|&i| tok.is_control(i))
        .collect();
    assert_eq!(control, ids(&fx["control_ids"]), "control ids");
}

#[test]
fn token_ids_are_identical_to_llama_cpp_on_every_string() {
    let tok = &loaded().tokenizer;
    assert!(cases().len() >= 60, "fixture has {} strings", cases().len());
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        for (special, key) in [(false, "ids_plain"), (true, "ids_special")] {
            let want = ids(&case[key]);
            let got = tok.encode(text, special).expect("encode");
            compared += 1;
            if got != want {
                mismatches.push(format!(
                    "{text:?} special={special}\n  llama.cpp {want:?}\n  ours      {got:?}"
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {compared} tokenizations differ from llama.cpp:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn seeded_random_strings_tokenize_identically_to_llama_cpp() {
    let tok = &loaded().tokenizer;
    let random = fixture()["random_cases"].as_array().expect("random_cases");
    assert!(
        random.len() >= 300,
        "fixture has {} random strings",
        random.len()
    );
    let mut mismatches = Vec::new();
    for case in random {
        let text = case["text"].as_str().unwrap();
        for (special, key) in [(false, "ids_plain"), (true, "ids_special")] {
            if tok.encode(text, special).expect("encode") != ids(&case[key]) {
                mismatches.push(format!("{text:?} special={special}"));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} tokenizations differ from llama.cpp:\n{}",
        mismatches.len(),
        2 * random.len(),
        mismatches.join("\n")
    );
}

#[test]
fn special_token_text_is_parsed_only_with_parse_special() {
    let tok = &loaded().tokenizer;
    let im_start = tok.token_id("<|im_start|>").unwrap();
    let im_end = tok.token_id("<|im_end|>").unwrap();
    let text = "<|im_start|>user\nhi<|im_end|>";
    let special = tok.encode(text, true).unwrap();
    assert_eq!(special.first(), Some(&im_start));
    assert_eq!(special.last(), Some(&im_end));
    let plain = tok.encode(text, false).unwrap();
    assert!(!plain.contains(&im_start) && !plain.contains(&im_end));
    assert_eq!(tok.decode(&plain).unwrap(), text);
}

#[test]
fn decoding_matches_llama_cpp_detokenize_and_round_trips() {
    let tok = &loaded().tokenizer;
    let mut round_trips = 0;
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        for (ids_key, detok_key) in [
            ("ids_plain", "detok_plain_hex"),
            ("ids_special", "detok_special_hex"),
        ] {
            let ids = ids(&case[ids_key]);
            let want = hex(&case[detok_key]);
            let got = tok.decode_bytes(&ids).unwrap();
            assert_eq!(got, want, "{text:?} {ids_key}: bytes differ from llama.cpp");
            if want == text.as_bytes() {
                assert_eq!(tok.decode(&ids).unwrap(), text);
                round_trips += 1;
            }
        }
    }
    // Every fixture string round-trips through llama.cpp, so all must through ours.
    assert_eq!(round_trips, 2 * cases().len());
}

#[test]
fn token_pieces_match_llama_cpp_across_the_vocabulary() {
    let tok = &loaded().tokenizer;
    let pieces = fixture()["pieces_hex"].as_array().unwrap();
    assert!(pieces.len() > 4000);
    for p in pieces {
        let id = p[0].as_u64().unwrap() as u32;
        assert_eq!(tok.token_to_bytes(id), hex(&p[1]), "piece of token {id}");
    }
}

#[test]
fn chat_template_renders_like_jinja2_and_tokenizes_like_llama_cpp() {
    let Loaded {
        tokenizer,
        template,
    } = loaded();
    let chats = fixture()["chats"].as_array().unwrap();
    assert!(chats.len() >= 3);
    for chat in chats {
        let messages: Vec<ChatMessage> = chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let add_generation_prompt = chat["add_generation_prompt"].as_bool().unwrap();
        let rendered = template.render(&messages, add_generation_prompt).unwrap();
        assert_eq!(rendered, chat["rendered"].as_str().unwrap());
        assert_eq!(
            tokenizer.encode(&rendered, true).unwrap(),
            ids(&chat["ids_special"]),
            "ids of rendered chat {rendered:?}"
        );
        // The safe path (contents as plain text) gives llama.cpp's ids on these ordinary chats.
        assert_eq!(
            model::encode_chat(template, tokenizer, &messages, add_generation_prompt).unwrap(),
            ids(&chat["ids_special"]),
            "encode_chat of {rendered:?}"
        );
    }
}

#[test]
fn default_system_prompt_is_inserted_only_without_a_system_message() {
    let template = &loaded().template;
    let default_system = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, \
                          trained by Hugging Face<|im_end|>\n";
    let one = template.render(&[ChatMessage::user("Hi")], true).unwrap();
    assert_eq!(
        one,
        format!("{default_system}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    );
    let own = template
        .render(
            &[ChatMessage::system("Be brief."), ChatMessage::user("Hi")],
            false,
        )
        .unwrap();
    assert_eq!(
        own,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
}

/// Push `ids` one at a time; return each push's output.
fn stream(tok: &Tokenizer, ids: &[u32]) -> (Vec<String>, String) {
    let mut dec = StreamDecoder::new(tok);
    let outs: Vec<String> = ids.iter().map(|&id| dec.push(id).unwrap()).collect();
    (outs, dec.finish())
}

#[test]
fn stream_decoder_reproduces_every_fixture_string() {
    let tok = &loaded().tokenizer;
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        let ids = ids(&case["ids_special"]);
        let (outs, tail) = stream(tok, &ids);
        assert_eq!(tail, "", "{text:?}: nothing should be left over");
        // No piece of valid text is ever emitted broken.
        assert!(outs.iter().all(|o| !o.contains('\u{FFFD}')), "{text:?}");
        assert_eq!(outs.concat(), text);
    }
}

#[test]
fn stream_decoder_emits_emoji_whole_when_split_across_tokens() {
    let tok = &loaded().tokenizer;
    let family = "👨‍👩‍👧‍👦";
    let ids = tok.encode(family, false).unwrap();
    // Byte-level BPE splits this ZWJ sequence into many tokens, some mid-character.
    assert!(ids.len() > 4, "{ids:?}");
    assert!(ids
        .iter()
        .any(|&i| std::str::from_utf8(tok.token_to_bytes(i)).is_err()));
    let (outs, tail) = stream(tok, &ids);
    assert!(
        outs.iter().any(String::is_empty),
        "some pushes must hold bytes back"
    );
    for out in &outs {
        // Every emitted chunk is a run of whole characters of the original.
        assert!(family.contains(out.as_str()), "{out:?}");
    }
    assert_eq!(outs.concat() + &tail, family);

    // Cut the stream inside the last emoji: finish() flushes the partial bytes lossily.
    let (outs, tail) = stream(tok, &ids[..ids.len() - 1]);
    assert_eq!(tail, "\u{FFFD}");
    assert!(family.starts_with(&outs.concat()));
}

#[test]
fn stream_decoder_can_hide_control_tokens() {
    let tok = &loaded().tokenizer;
    let ids = tok.encode("Hello<|im_end|>", true).unwrap();
    let mut dec = StreamDecoder::skipping_control(tok);
    let text: String = ids.iter().map(|&i| dec.push(i).unwrap()).collect();
    assert_eq!(text, "Hello");
    let mut dec = StreamDecoder::new(tok);
    let text: String = ids.iter().map(|&i| dec.push(i).unwrap()).collect();
    assert_eq!(text, "Hello<|im_end|>");
    assert!(dec.push(u32::MAX).is_err());
}
