//! The parser, printer, shape inference, validator and blob reader never panic on arbitrary
//! or mutated input, and whatever parses prints back to a fixed point.
//!
//! Case count: `PROPTEST_CASES` (default 1500 per property, a few seconds in total).

mod common;

use mil::{blob, parse, parse_bytes, print, print_with, Style};
use proptest::prelude::*;
use std::sync::OnceLock;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1500);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn fixtures() -> &'static Vec<Vec<u8>> {
    static FIXTURES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        common::mil_fixtures()
            .iter()
            .map(|p| std::fs::read(p).expect("read fixture"))
            .collect()
    })
}

fn blob_fixtures() -> &'static Vec<Vec<u8>> {
    static BLOBS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BLOBS.get_or_init(|| {
        ["ffn_blob_ref.bin", "qkv_blob_ref.bin"]
            .iter()
            .map(|n| common::read_generator_fixture_bytes(n))
            .collect()
    })
}

const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<",
    ">",
    ",",
    "=",
    ";",
    "->",
    "\"",
    "\\",
    "\n",
    " ",
    "tensor<fp16, [1]>",
    "tensor<int32, [2]>([1,1])",
    "int32(",
    "fp16(",
    "uint64(",
    "bool(true)",
    "string(\"x\")",
    "BLOBFILE",
    "const",
    "conv",
    "concat",
    "values=(x,x)",
    "((((",
    "-1",
    "0",
    "1e400",
    "99999999999999999999",
    "2147483647",
    "-9223372036854775808",
    "0.125000",
    "é",
    "func",
    "program(1.3)",
    "} -> (y);",
    "[name=string(\"n\")]",
    "x=x",
    "tensor<fp16, [1,1,1,1,1,1]>",
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "-2",
    "3",
    "7",
    "17",
    "64",
    "65",
    "255",
    "768",
    "65537",
    "2147483647",
    "2147483648",
    "-2147483648",
    "9223372036854775807",
    "18446744073709551616",
    "0.0",
    "-0.5",
    "1e-310",
    "3.4e38",
];

#[derive(Debug, Clone)]
enum Mutation {
    SetByte(u32, u8),
    Delete(u32, u8),
    Insert(u32, usize),
    Duplicate(u32, u8),
    ReplaceNumber(u32, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<u32>(), any::<u8>()).prop_map(|(p, b)| Mutation::SetByte(p, b)),
        (any::<u32>(), any::<u8>()).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<u32>(), 0..TOKENS.len()).prop_map(|(p, t)| Mutation::Insert(p, t)),
        (any::<u32>(), any::<u8>()).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
        (any::<u32>(), 0..NUMBERS.len()).prop_map(|(p, k)| Mutation::ReplaceNumber(p, k)),
        (any::<u32>(), 0..NUMBERS.len()).prop_map(|(p, k)| Mutation::ReplaceNumber(p, k)),
    ]
}

fn apply(text: &mut Vec<u8>, m: &Mutation) {
    let len = text.len().max(1);
    match *m {
        Mutation::SetByte(p, b) => {
            if !text.is_empty() {
                let i = p as usize % text.len();
                text[i] = b;
            }
        }
        Mutation::Delete(p, n) => {
            let i = p as usize % len;
            let end = (i + n as usize % 16).min(text.len());
            if i < end {
                text.drain(i..end);
            }
        }
        Mutation::Insert(p, t) => {
            let i = (p as usize % len).min(text.len());
            text.splice(i..i, TOKENS[t].bytes());
        }
        Mutation::Duplicate(p, n) => {
            let i = p as usize % len;
            let end = (i + n as usize).min(text.len());
            if i < end {
                let piece = text[i..end].to_vec();
                text.splice(end..end, piece);
            }
        }
        Mutation::ReplaceNumber(p, k) => {
            // Replace the first number literal (a digit run not inside an identifier such
            // as `fp16`) at or after position p.
            let in_ident = |t: &[u8], i: usize| {
                i > 0 && (t[i - 1].is_ascii_alphanumeric() || t[i - 1] == b'_' || t[i - 1] == b'.')
            };
            let mut i = p as usize % len;
            while i < text.len() && (!text[i].is_ascii_digit() || in_ident(text, i)) {
                i += 1;
            }
            let mut end = i;
            while end < text.len() && (text[end].is_ascii_digit() || text[end] == b'.') {
                end += 1;
            }
            if i < end {
                text.splice(i..end, NUMBERS[k].bytes());
            }
        }
    }
}

/// Whatever parses must round-trip, and the analyses must not panic on it.
fn check_parsed(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(program) = parse_bytes(bytes) else {
        return Ok(());
    };
    let printed = print(&program);
    let reparsed = parse(&printed).map_err(|e| TestCaseError::fail(format!("{e}\n{printed}")))?;
    prop_assert_eq!(&reparsed, &program);
    prop_assert_eq!(print(&reparsed), printed);
    let spaced = print_with(&program, Style::Spaced);
    prop_assert_eq!(
        parse(&spaced).map_err(|e| TestCaseError::fail(e.to_string()))?,
        program.clone()
    );
    for f in &program.functions {
        let _ = mil::infer_shapes(f);
    }
    let _ = mil::validate(&program, &mil::ValidateOptions::default());
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parser_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_parsed(&bytes)?;
    }

    #[test]
    fn parser_survives_mutated_fixtures(
        which in any::<prop::sample::Index>(),
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        let fx = fixtures();
        let mut text = fx[which.index(fx.len())].clone();
        for m in &muts {
            apply(&mut text, m);
        }
        check_parsed(&text)?;
    }

    #[test]
    fn blob_reader_survives_random_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        offset in any::<u64>(),
    ) {
        let _ = blob::read_blob(&bytes);
        let _ = blob::read_chunk(&bytes, offset);
        let _ = blob::read_chunk(&bytes, offset % 512);
    }

    #[test]
    fn blob_reader_survives_mutated_blobs(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8),
        cut in any::<u16>(),
        offset in 0u64..400,
    ) {
        let fx = blob_fixtures();
        let mut bytes = fx[which.index(fx.len())].clone();
        for (p, b) in edits {
            let i = p as usize % bytes.len();
            bytes[i] = b;
        }
        bytes.truncate(cut as usize % (bytes.len() + 1) + bytes.len() / 2);
        if let Ok(chunks) = blob::read_blob(&bytes) {
            // Whatever reads must re-read chunk by chunk at the same offsets.
            for c in &chunks {
                let again = blob::read_chunk(&bytes, c.offset)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let bits = |c: &blob::Chunk| c.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(again.offset, c.offset);
                prop_assert_eq!(bits(&again), bits(c));
            }
        }
        let _ = blob::read_chunk(&bytes, offset);
    }
}

/// A mutation that keeps the text valid must keep it parseable (sanity check that the
/// mutation harness reaches the deep paths: most ReplaceNumber mutations still parse).
#[test]
fn number_mutations_mostly_still_parse() {
    let fx = fixtures();
    let mut parsed = 0;
    let total = 200;
    for k in 0..total {
        let mut text = fx[k % fx.len()].clone();
        // Small non-negative integers only (indexes into NUMBERS): valid wherever a number is.
        let small = [0, 1, 2, 5, 6, 7, 8][k % 7];
        apply(
            &mut text,
            &Mutation::ReplaceNumber((k as u32).wrapping_mul(2_654_435_761), small),
        );
        if parse_bytes(&text).is_ok() {
            parsed += 1;
        }
    }
    assert!(
        parsed * 4 > total * 3,
        "only {parsed}/{total} number-mutated fixtures parse"
    );
}
