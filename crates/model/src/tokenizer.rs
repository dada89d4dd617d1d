//! Byte-level BPE tokenizer built from a GGUF file's vocabulary, tokenizing as llama.cpp does.
//!
//! The GGUF stores the vocabulary (`tokenizer.ggml.tokens`), one type per token
//! (`tokenizer.ggml.token_type`), the BPE merges in rank order (`tokenizer.ggml.merges`, each
//! `"left right"`) and the pre-tokenizer name (`tokenizer.ggml.pre`). Encoding a string follows
//! llama.cpp's `tokenize(text, add_special, parse_special)`:
//!
//! 1. **Special-token partition.** Special tokens are cut out of the text first, longest token
//!    text first, every occurrence left to right. USER_DEFINED tokens are always cut out; CONTROL
//!    and UNKNOWN tokens only when `parse_special` is true (otherwise `<|im_start|>` is plain text).
//! 2. **Pre-tokenization** of each remaining text fragment by regex. For `smollm` (and the
//!    StarCoder family that shares its rules) every number character `\p{N}` is isolated first,
//!    then the GPT-2 pattern
//!    `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` splits the rest.
//! 3. **Byte-level BPE** on each piece: its UTF-8 bytes are mapped to printable characters
//!    (GPT-2's `bytes_to_unicode`, e.g. space -> `Ġ`, newline -> `Ċ`) and adjacent symbols are
//!    merged lowest-rank-first until no merge applies.
//!
//! Steps 2 and 3 are done by the `tokenizers` crate (a `Split` + `ByteLevel` pre-tokenizer and a
//! `BPE` model built from the GGUF vocabulary and merges); step 1 is ours, because llama.cpp's
//! `parse_special = false` behaviour (control-token text tokenized as plain text) has no
//! equivalent in `tokenizers`' added-token handling.
//!
//! Known divergence: the regex character classes come from the `regex` crate's Unicode 16
//! tables, llama.cpp's from an older Unicode. Letters first assigned in Unicode 16 (e.g. Garay,
//! Ol Onal, Egyptian Hieroglyphs Extended-A) count as `\p{L}` here but not in llama.cpp, which
//! changes how a following contraction such as `'ll` is split. Measured on 5000 random strings
//! drawn from all code points: 13 differed, every one through such a character; on 20000 strings
//! of code points assigned in Unicode 14: none.
//!
//! Decoding maps each token back to bytes (the inverse byte map for normal tokens, the raw text
//! for control and user-defined tokens, as llama.cpp's `token_to_piece(special = true)`);
//! [`StreamDecoder`] turns a stream of ids into complete UTF-8 text as tokens arrive.

use crate::gguf::{GgufFile, MetaValue};
use std::collections::{BTreeSet, HashMap};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

/// Everything that can go wrong building or using a [`Tokenizer`].
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("GGUF metadata key '{0}' is missing (needed by the tokenizer)")]
    MissingKey(&'static str),
    #[error("GGUF metadata key '{key}' has the wrong type: {expected} expected")]
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    #[error("tokenizer model '{0}' is not supported (only byte-level BPE, 'gpt2', is)")]
    UnsupportedModel(String),
    #[error(
        "pre-tokenizer '{0}' is not supported (supported: smollm, starcoder, refact, command-r, \
         codeshell, exaone, minerva, gpt2, mpt, olmo, jais)"
    )]
    UnsupportedPreTokenizer(String),
    #[error("tokenizer.ggml.token_type has {types} entries but there are {tokens} tokens")]
    TokenTypeCount { types: usize, tokens: usize },
    #[error("bad merge #{index} '{merge}': expected two tokens separated by a space")]
    BadMerge { index: usize, merge: String },
    #[error("special token id {id} ({what}) is outside the vocabulary of {n_vocab} tokens")]
    BadSpecialId {
        what: &'static str,
        id: u64,
        n_vocab: usize,
    },
    #[error("cannot build the BPE model from the GGUF vocabulary and merges: {0}")]
    Bpe(String),
    #[error("tokenization failed: {0}")]
    Encode(String),
    #[error("token id {id} is outside the vocabulary of {n_vocab} tokens")]
    UnknownId { id: u32, n_vocab: usize },
}

/// Token types as stored in `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_code(code: i64) -> Self {
        match code {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }

    /// Control-like tokens: cut out of the text only when `parse_special` is set.
    fn is_control_like(self) -> bool {
        matches!(self, Self::Control | Self::Unknown)
    }
}

/// A piece of the input after the special-token partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fragment<'a> {
    Text(&'a str),
    Special(u32),
}

/// Regex that isolates every number character (`smollm` and StarCoder-family pre-tokenizers).
const DIGIT_SPLIT: &str = r"\p{N}";

/// Token texts that llama.cpp treats as end-of-generation (matched over the whole vocabulary).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];
/// Fill-in-the-middle pad/repo/separator token texts; llama.cpp also ends generation on them.
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// GPT-2's `bytes_to_unicode`: byte `b` -> printable char. Printable Latin-1 bytes
/// (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) map to themselves; the other 68 bytes map, in order, to
/// U+0100, U+0101, ... so that no byte is whitespace or a control character.
fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next_extra).unwrap_or('\0');
            next_extra += 1;
            c
        };
    }
    table
}

/// Bytes of a normal token's text: each char through the inverse byte map. A char outside the
/// map (not produced by byte-level BPE) keeps its own UTF-8 bytes.
fn byte_level_decode(text: &str, char_to_byte: &HashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte.get(&c) {
            Some(&b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

/// Split a GGUF merge `"left right"` at the first space after the first byte (llama.cpp's
/// rule; byte-level tokens never contain a space, so this is unambiguous).
fn parse_merge(index: usize, merge: &str) -> Result<(String, String), TokenizerError> {
    let bad = || TokenizerError::BadMerge {
        index,
        merge: merge.to_string(),
    };
    let pos = merge
        .as_bytes()
        .iter()
        .skip(1)
        .position(|&b| b == b' ')
        .map(|p| p + 1)
        .ok_or_else(bad)?;
    let (left, right) = (&merge[..pos], &merge[pos + 1..]);
    if left.is_empty() || right.is_empty() {
        return Err(bad());
    }
    Ok((left.to_string(), right.to_string()))
}

fn string_array(gguf: &GgufFile, key: &'static str) -> Result<Vec<String>, TokenizerError> {
    let arr = gguf
        .get(key)
        .ok_or(TokenizerError::MissingKey(key))?
        .as_array()
        .ok_or(TokenizerError::WrongType {
            key,
            expected: "array of strings",
        })?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or(TokenizerError::WrongType {
                    key,
                    expected: "array of strings",
                })
        })
        .collect()
}

fn optional_id(
    gguf: &GgufFile,
    key: &'static str,
    n_vocab: usize,
) -> Result<Option<u32>, TokenizerError> {
    let Some(v) = gguf.get(key) else {
        return Ok(None);
    };
    // llama.cpp writes -1 (as a signed or wrapped unsigned value) for "no such token".
    if matches!(
        v,
        MetaValue::I32(-1) | MetaValue::I64(-1) | MetaValue::U32(u32::MAX)
    ) {
        return Ok(None);
    }
    let id = v.as_u64().ok_or(TokenizerError::WrongType {
        key,
        expected: "integer token id",
    })?;
    if id as usize >= n_vocab {
        return Err(TokenizerError::BadSpecialId {
            what: key,
            id,
            n_vocab,
        });
    }
    Ok(Some(id as u32))
}

fn optional_bool(gguf: &GgufFile, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match gguf.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or(TokenizerError::WrongType {
            key,
            expected: "bool",
        }),
    }
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` name.
fn pre_tokenizer_for(pre: &str) -> Result<PreTokenizerWrapper, TokenizerError> {
    // add_prefix_space = false (llama.cpp never adds one for BPE), use_regex = true.
    let gpt2 = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, true));
    match pre {
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            let digits = Split::new(
                SplitPattern::Regex(DIGIT_SPLIT.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
            Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Split(digits),
                gpt2,
            ])))
        }
        "gpt2" | "mpt" | "olmo" | "jais" => Ok(gpt2),
        other => Err(TokenizerError::UnsupportedPreTokenizer(other.to_string())),
    }
}

/// First token whose text is one of `texts` (in vocabulary order).
fn find_by_text(tokens: &[String], texts: &[&str]) -> Option<u32> {
    tokens
        .iter()
        .position(|t| texts.contains(&t.as_str()))
        .map(|i| i as u32)
}

/// A byte-level BPE tokenizer with llama.cpp's special-token and end-of-generation rules.
pub struct Tokenizer {
    /// Pre-tokenizer + BPE model (no normalizer, no added tokens, no post-processor).
    bpe: tokenizers::Tokenizer,
    /// Token text as stored in the GGUF (byte-level encoded for normal tokens).
    tokens: Vec<String>,
    types: Vec<TokenType>,
    /// What each token decodes to (llama.cpp's `token_to_piece(special = true)`).
    pieces: Vec<Vec<u8>>,
    /// CONTROL / UNKNOWN / USER_DEFINED ids, longest text first (ties: lower id first).
    special_by_length: Vec<u32>,
    eog: BTreeSet<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("eog", &self.eog)
            .finish()
    }
}

impl Tokenizer {
    /// Build the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, TokenizerError> {
        let model = gguf
            .get("tokenizer.ggml.model")
            .ok_or(TokenizerError::MissingKey("tokenizer.ggml.model"))?
            .as_str()
            .ok_or(TokenizerError::WrongType {
                key: "tokenizer.ggml.model",
                expected: "string",
            })?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        let pre = match gguf.get("tokenizer.ggml.pre") {
            None => "gpt2",
            Some(v) => v.as_str().ok_or(TokenizerError::WrongType {
                key: "tokenizer.ggml.pre",
                expected: "string",
            })?,
        };
        let tokens = string_array(gguf, "tokenizer.ggml.tokens")?;
        let merges = string_array(gguf, "tokenizer.ggml.merges")?;
        let types = Self::read_types(gguf, tokens.len())?;
        let n_vocab = tokens.len();
        let bos = optional_id(gguf, "tokenizer.ggml.bos_token_id", n_vocab)?;
        let eos = optional_id(gguf, "tokenizer.ggml.eos_token_id", n_vocab)?;
        Self::build(TokenizerParts {
            tokens,
            types,
            merges,
            pre: pre.to_string(),
            bos,
            eos,
            eot: optional_id(gguf, "tokenizer.ggml.eot_token_id", n_vocab)?,
            eom: optional_id(gguf, "tokenizer.ggml.eom_token_id", n_vocab)?,
            // llama.cpp's default for BPE vocabularies is no BOS; the file may say otherwise.
            add_bos: optional_bool(gguf, "tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            add_eos: optional_bool(gguf, "tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        })
    }

    fn read_types(gguf: &GgufFile, n_tokens: usize) -> Result<Vec<TokenType>, TokenizerError> {
        const KEY: &str = "tokenizer.ggml.token_type";
        let Some(v) = gguf.get(KEY) else {
            return Ok(vec![TokenType::Normal; n_tokens]);
        };
        let wrong = TokenizerError::WrongType {
            key: KEY,
            expected: "array of integers",
        };
        let arr = v.as_array().ok_or(wrong)?;
        if arr.len() != n_tokens {
            return Err(TokenizerError::TokenTypeCount {
                types: arr.len(),
                tokens: n_tokens,
            });
        }
        arr.iter()
            .map(|t| match *t {
                MetaValue::I32(c) => Ok(TokenType::from_code(c as i64)),
                _ => t.as_u64().map(|c| TokenType::from_code(c as i64)).ok_or(
                    TokenizerError::WrongType {
                        key: KEY,
                        expected: "array of integers",
                    },
                ),
            })
            .collect()
    }

    fn build(parts: TokenizerParts) -> Result<Self, TokenizerError> {
        let TokenizerParts {
            tokens,
            mut types,
            merges,
            pre,
            bos,
            eos,
            eot,
            eom,
            add_bos,
            add_eos,
        } = parts;

        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, m)| parse_merge(i, m))
            .collect::<Result<Vec<_>, _>>()?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
        let mut bpe = tokenizers::Tokenizer::new(model);
        bpe.with_pre_tokenizer(Some(pre_tokenizer_for(&pre)?));

        // End of generation, as llama.cpp decides it: EOS/EOT/EOM ids, FIM pad/repo/separator
        // tokens, and every token whose text is a known end-of-turn marker. Tokens found by text
        // are treated as CONTROL (llama.cpp overrides their type the same way).
        let mut eog = BTreeSet::new();
        let fim = [FIM_PAD_TEXTS, FIM_REP_TEXTS, FIM_SEP_TEXTS]
            .iter()
            .filter_map(|texts| find_by_text(&tokens, texts));
        let eot = eot.or_else(|| find_by_text(&tokens, EOG_TEXTS));
        let eom = eom.or_else(|| find_by_text(&tokens, &["<|eom_id|>"]));
        for id in fim.chain(eot).chain(eom) {
            eog.insert(id);
        }
        for (i, t) in tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) {
                eog.insert(i as u32);
            }
        }
        for &id in &eog {
            if !types[id as usize].is_control_like() {
                types[id as usize] = TokenType::Control;
            }
        }
        eog.extend(eos);

        let byte_to_char = byte_to_char_table();
        let char_to_byte: HashMap<char, u8> = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let pieces = tokens
            .iter()
            .zip(&types)
            .map(|(text, ty)| match ty {
                TokenType::Normal => byte_level_decode(text, &char_to_byte),
                TokenType::Control | TokenType::Unknown | TokenType::UserDefined => {
                    text.as_bytes().to_vec()
                }
                // llama.cpp renders unused, byte and undefined tokens of a BPE vocab as nothing.
                TokenType::Unused | TokenType::Byte | TokenType::Undefined => Vec::new(),
            })
            .collect();

        let mut special_by_length: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&i| {
                let ty = types[i as usize];
                (ty.is_control_like() || ty == TokenType::UserDefined)
                    && !tokens[i as usize].is_empty()
            })
            .collect();
        special_by_length.sort_by_key(|&i| (std::cmp::Reverse(tokens[i as usize].len()), i));

        Ok(Self {
            bpe,
            tokens,
            types,
            pieces,
            special_by_length,
            eog,
            bos,
            eos,
            add_bos,
            add_eos,
        })
    }

    /// Token ids of `text`, with no BOS/EOS added (llama.cpp `tokenize(add_special = false)`).
    /// With `parse_special`, control-token text such as `<|im_start|>` becomes that token;
    /// without it, it is tokenized as plain text.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode_parts(&[(text, parse_special)])
    }

    /// Token ids of the concatenation of `parts`, each `(text, parse_special)`: special-token
    /// text is recognised only inside the parts whose flag allows it (see [`Self::encode`]),
    /// while the plain text between special tokens is pre-tokenized and BPE-encoded as one
    /// string across part boundaries. So when every flag is the same, the result equals
    /// `encode` of the joined text; a part with `false` can never produce a CONTROL token, even
    /// when its text (alone or together with its neighbours) spells one. No BOS/EOS is added.
    pub fn encode_parts(&self, parts: &[(&str, bool)]) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        // Plain text not yet encoded; it may span several parts.
        let mut pending = String::new();
        for &(text, parse_special) in parts {
            for fragment in self.partition_special(text, parse_special) {
                match fragment {
                    Fragment::Special(id) => {
                        ids.extend(self.encode_plain(&pending)?);
                        pending.clear();
                        ids.push(id);
                    }
                    Fragment::Text(t) => pending.push_str(t),
                }
            }
        }
        ids.extend(self.encode_plain(&pending)?);
        Ok(ids)
    }

    /// Token ids of a prompt as the model expects it: like [`Self::encode`], with BOS prepended
    /// if the file's `tokenizer.ggml.add_bos_token` says so and EOS appended if
    /// `add_eos_token` does (llama.cpp `tokenize(add_special = true)`). For SmolLM2 neither is
    /// set, so this equals `encode`.
    pub fn encode_with_bos(
        &self,
        text: &str,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.encode_parts_with_bos(&[(text, parse_special)])
    }

    /// [`Self::encode_parts`] with BOS/EOS added as [`Self::encode_with_bos`] adds them.
    pub fn encode_parts_with_bos(
        &self,
        parts: &[(&str, bool)],
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            ids.push(bos);
        }
        ids.extend(self.encode_parts(parts)?);
        if let (true, Some(eos)) = (self.add_eos, self.eos) {
            ids.push(eos);
        }
        Ok(ids)
    }

    /// Pre-tokenize and BPE-encode text that contains no special tokens.
    fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .bpe
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// llama.cpp's special-token partition: for each special token, longest text first, split
    /// every remaining text fragment at each occurrence (left to right).
    fn partition_special<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut fragments = vec![Fragment::Text(text)];
        for &id in &self.special_by_length {
            let ty = self.types[id as usize];
            if ty.is_control_like() && !parse_special {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            if !fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(mut rest) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(pos) = rest.find(needle) {
                    if pos > 0 {
                        next.push(Fragment::Text(&rest[..pos]));
                    }
                    next.push(Fragment::Special(id));
                    rest = &rest[pos + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// The bytes token `id` stands for (control tokens render as their text). Unknown ids give
    /// an empty slice.
    pub fn token_to_bytes(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The token's text as stored in the vocabulary (byte-level encoded, e.g. `Ġthe`).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The token's type from `tokenizer.ggml.token_type` (after llama.cpp's EOG overrides).
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// Whether `id` is a control (or unknown) token such as `<|im_start|>`.
    pub fn is_control(&self, id: u32) -> bool {
        self.token_type(id).is_some_and(TokenType::is_control_like)
    }

    /// The id whose vocabulary text is exactly `text`, if any.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokens.iter().position(|t| t == text).map(|i| i as u32)
    }

    /// Concatenated bytes of `ids` (may be invalid UTF-8 if cut inside a character).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::new();
        for &id in ids {
            let piece = self
                .pieces
                .get(id as usize)
                .ok_or(TokenizerError::UnknownId {
                    id,
                    n_vocab: self.tokens.len(),
                })?;
            out.extend_from_slice(piece);
        }
        Ok(out)
    }

    /// Text of `ids`; invalid UTF-8 (a character cut between tokens) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether prompts get a BOS token (`tokenizer.ggml.add_bos_token`; false for SmolLM2).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether generation should stop at `id`: EOS and the end-of-turn tokens llama.cpp treats
    /// as end of generation (for SmolLM2: `<|endoftext|>`, `<|im_end|>`, `<reponame>`).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// All end-of-generation ids, ascending.
    pub fn end_of_generation_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }
}

/// Parsed metadata a [`Tokenizer`] is built from.
struct TokenizerParts {
    tokens: Vec<String>,
    types: Vec<TokenType>,
    merges: Vec<String>,
    pre: String,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    add_bos: bool,
    add_eos: bool,
}

/// Turns token ids, pushed one at a time, into complete UTF-8 text.
///
/// A character whose bytes are split across tokens (common for emoji and CJK with byte-level
/// BPE) is held back until its last byte arrives; bytes that can never form valid UTF-8 come
/// out as U+FFFD.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
    skip_control: bool,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder that renders every token, control tokens included.
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self {
            tokenizer,
            pending: Vec::new(),
            skip_control: false,
        }
    }

    /// A decoder that renders control tokens (e.g. `<|im_end|>`) as nothing.
    pub fn skipping_control(tokenizer: &'a Tokenizer) -> Self {
        Self {
            skip_control: true,
            ..Self::new(tokenizer)
        }
    }

    /// Add one token; returns the text completed by it (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        if self.tokenizer.token_type(id).is_none() {
            return Err(TokenizerError::UnknownId {
                id,
                n_vocab: self.tokenizer.vocab_size(),
            });
        }
        if self.skip_control && self.tokenizer.is_control(id) {
            return Ok(String::new());
        }
        let bytes = self.tokenizer.token_to_bytes(id);
        Ok(self.push_bytes(bytes))
    }

    /// Add raw bytes; returns the text completed by them.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that no continuation can fix.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flush whatever is held back (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(pre: &str, extra: &[(&str, TokenType)], merges: &[&str]) -> Tokenizer {
        // Vocabulary: the 256 byte-level characters, then `extra`.
        let table = byte_to_char_table();
        let mut tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
        let mut types = vec![TokenType::Normal; 256];
        for (t, ty) in extra {
            tokens.push(t.to_string());
            types.push(*ty);
        }
        let eos = tokens.iter().position(|t| t == "<|endoftext|>");
        Tokenizer::build(TokenizerParts {
            tokens,
            types,
            merges: merges.iter().map(|m| m.to_string()).collect(),
            pre: pre.to_string(),
            bos: None,
            eos: eos.map(|i| i as u32),
            eot: None,
            eom: None,
            add_bos: false,
            add_eos: false,
        })
        .expect("toy tokenizer builds")
    }

    #[test]
    fn byte_table_is_a_bijection_onto_printable_chars() {
        let table = byte_to_char_table();
        let distinct: BTreeSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert!(table.iter().all(|c| !c.is_whitespace() && !c.is_control()));
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'a' as usize], 'a');
    }

    #[test]
    fn merges_apply_by_rank_and_digits_are_isolated() {
        let tok = toy(
            "smollm",
            &[
                ("Ġt", TokenType::Normal),
                ("Ġth", TokenType::Normal),
                ("12", TokenType::Normal),
            ],
            &["Ġ t", "Ġt h", "1 2"],
        );
        let ids = tok.encode(" th 12", false).expect("encodes");
        let texts: Vec<&str> = ids.iter().map(|&i| tok.token_text(i).unwrap()).collect();
        // "12" is never merged: the smollm pre-tokenizer isolates each digit first.
        assert_eq!(texts, ["Ġth", "Ġ", "1", "2"]);
        assert_eq!(tok.decode(&ids).unwrap(), " th 12");

        let gpt2 = toy("gpt2", &[("12", TokenType::Normal)], &["1 2"]);
        let ids = gpt2.encode("12", false).unwrap();
        assert_eq!(
            ids.len(),
            1,
            "plain gpt2 pre-tokenizer keeps digit runs together"
        );
    }

    #[test]
    fn control_text_is_special_only_when_asked() {
        let tok = toy(
            "smollm",
            &[
                ("<|endoftext|>", TokenType::Control),
                ("<mine>", TokenType::UserDefined),
            ],
            &[],
        );
        let eot = tok.token_id("<|endoftext|>").unwrap();
        let mine = tok.token_id("<mine>").unwrap();
        assert_eq!(tok.encode("a<|endoftext|>b", true).unwrap(), [97, eot, 98]);
        let plain = tok.encode("a<|endoftext|>b", false).unwrap();
        assert_eq!(plain.len(), "a<|endoftext|>b".len());
        assert!(!plain.contains(&eot));
        // User-defined tokens are always cut out, as llama.cpp does.
        assert_eq!(tok.encode("x<mine>", false).unwrap(), [120, mine]);
        assert!(tok.is_end_of_generation(eot));
        assert!(!tok.is_end_of_generation(mine));
        assert_eq!(tok.decode(&[eot]).unwrap(), "<|endoftext|>");
    }

    #[test]
    fn bad_merge_is_reported() {
        let table = byte_to_char_table();
        let tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
        let err = Tokenizer::build(TokenizerParts {
            types: vec![TokenType::Normal; tokens.len()],
            tokens,
            merges: vec!["ab".to_string()],
            pre: "gpt2".to_string(),
            bos: None,
            eos: None,
            eot: None,
            eom: None,
            add_bos: false,
            add_eos: false,
        })
        .unwrap_err();
        assert!(
            matches!(err, TokenizerError::BadMerge { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn stream_decoder_holds_back_split_characters() {
        let tok = toy("smollm", &[], &[]);
        let mut dec = StreamDecoder::new(&tok);
        // "é" is two bytes, so with only byte tokens it arrives in two pieces.
        let ids = tok.encode("é!", false).unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(dec.push(ids[0]).unwrap(), "");
        assert_eq!(dec.push(ids[1]).unwrap(), "é");
        assert_eq!(dec.push(ids[2]).unwrap(), "!");
        assert_eq!(dec.finish(), "");
    }

    proptest::proptest! {
        /// However arbitrary bytes are cut into pushes, the streamed text equals decoding all
        /// bytes at once (lossy), and valid text comes out unchanged.
        #[test]
        fn stream_decoder_equals_whole_lossy_decode(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            text in "\\PC{0,16}",
            cuts in proptest::collection::vec(0usize..80, 0..8),
        ) {
            let tok = toy("gpt2", &[], &[]);
            for input in [bytes, text.clone().into_bytes()] {
                let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
                cuts.push(0);
                cuts.push(input.len());
                cuts.sort_unstable();
                let mut dec = StreamDecoder::new(&tok);
                let mut out = String::new();
                for w in cuts.windows(2) {
                    out.push_str(&dec.push_bytes(&input[w[0]..w[1]]));
                }
                out.push_str(&dec.finish());
                proptest::prop_assert_eq!(out, String::from_utf8_lossy(&input).into_owned());
            }
            let ids = tok.encode(&text, false).unwrap();
            let mut dec = StreamDecoder::new(&tok);
            let streamed: String = ids.iter().map(|&i| dec.push(i).unwrap()).collect();
            proptest::prop_assert_eq!(streamed + &dec.finish(), text);
        }
    }

    #[test]
    fn stream_decoder_replaces_impossible_bytes_and_flushes_lossy() {
        let tok = toy("smollm", &[], &[]);
        let mut dec = StreamDecoder::new(&tok);
        // A lone continuation byte can never become valid.
        assert_eq!(dec.push_bytes(&[0x80, b'a']), "\u{FFFD}a");
        // The first two bytes of a 4-byte emoji: held back, then flushed as U+FFFD.
        assert_eq!(dec.push_bytes(&[0xF0, 0x9F]), "");
        assert_eq!(dec.finish(), "\u{FFFD}");
        assert_eq!(dec.finish(), "");
    }
}
