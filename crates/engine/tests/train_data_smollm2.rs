//! Chat-example loss masking with the real SmolLM2 tokenizer and chat template. Needs the pulled
//! model and fails (does not skip) when it is missing: run `espresso pull` first.

use engine::train::data;
use model::{ChatMessage, ChatTemplate, GgufFile, Tokenizer};

fn loaded() -> (Tokenizer, ChatTemplate) {
    let path = model::cache::default_model_path()
        .unwrap_or_else(|e| panic!("the real model is needed for this test: {e}"));
    let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    (
        Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{e}")),
        ChatTemplate::from_gguf(&gguf).unwrap_or_else(|e| panic!("{e}")),
    )
}

#[test]
fn smollm2_chat_mask_covers_exactly_the_assistant_replies() {
    let (tok, template) = loaded();
    let conversations = [
        vec![
            ChatMessage::user("What is the capital of France?"),
            ChatMessage::assistant("The capital of France is Paris."),
            ChatMessage::user("And of Italy?"),
            ChatMessage::assistant("Rome, since 1871."),
        ],
        vec![
            ChatMessage::system("You answer briefly."),
            ChatMessage::user("2+2?"),
            ChatMessage::assistant("4"),
        ],
    ];
    let lines: Vec<String> = conversations
        .iter()
        .map(|c| serde_json::json!({ "messages": c }).to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();

    let d = data::load(&path, &tok, Some(&template)).unwrap_or_else(|e| panic!("{e}"));
    let mask = d.counted.clone().expect("chat data has a mask");
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for (&t, &c) in d.tokens.iter().zip(&mask).chain([(&0, &false)]) {
        if c {
            run.push(t);
        } else if !run.is_empty() {
            runs.push(tok.decode(&std::mem::take(&mut run)).unwrap());
        }
    }
    assert_eq!(
        runs,
        vec![
            "The capital of France is Paris.<|im_end|>",
            "Rome, since 1871.<|im_end|>",
            "4<|im_end|>",
        ]
    );
    // For these messages, piecewise tokenization equals tokenizing the rendered text at once.
    let whole: Vec<u32> = conversations
        .iter()
        .flat_map(|c| {
            let text = template.render(c, false).unwrap();
            tok.encode_with_bos(&text, true).unwrap()
        })
        .collect();
    assert_eq!(d.tokens, whole);
}
