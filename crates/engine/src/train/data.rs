//! The token data of `espresso train`: reading a corpus into one stream of token ids, holding
//! out a validation tail, and cutting the windows every optimizer step trains on.
//!
//! This module owns:
//! - [`resolve`]: what `--data ARG` names (a path, or a pulled data set such as `shakespeare`);
//! - [`load`]: the accepted formats, each turned into one [`TokenData`]:
//!   - `.txt`: the whole file, tokenized as plain text (special-token text such as
//!     `<|im_end|>` stays plain text), with BOS first iff the tokenizer adds one to prompts;
//!   - a directory: its `*.txt` files in sorted order, each tokenized as a `.txt` file, with the
//!     EOS token between consecutive files as the document separator (none after the last);
//!   - `.jsonl`: one example per line, `{"text": …}` (→ `[BOS if add_bos] + text + [EOS]`) or
//!     `{"messages": [{"role", "content"}, …]}` rendered with the model's chat template, where
//!     only the assistant's content (and the end-of-turn token right after it) carries loss —
//!     see [`TokenData::counted`] and the masking method described at `chat_tokens`;
//!   - `.bin`: llama2.c's pretokenized format, little-endian `u16` token ids;
//! - [`TokenData::split_tail`], [`TokenData::check`], [`TokenData::fingerprint`];
//! - [`step_batches`] and [`eval_batches`]: which windows make up each [`Batch`].

use super::params::uniform;
use super::{Batch, IGNORE_INDEX};
use model::cache::{self, PullError};
use model::tokenizer::TokenizerError;
use model::{ChatMessage, ChatTemplate, Tokenizer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The formats [`load`] accepts, for error messages.
const ACCEPTED: &str = "a .txt, .jsonl or .bin file, or a directory of .txt files";

/// Everything training sees of its data: one token stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenData {
    pub tokens: Vec<u32>,
    /// Per token: whether predicting it carries loss (`None` = every token does). Only chat
    /// examples produce uncounted tokens.
    pub counted: Option<Vec<bool>>,
    /// Where the tokens came from, for logs (e.g. `shakespeare (42 .txt files, 1234567 tokens)`).
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data path {} does not exist (expected {ACCEPTED})", .path.display())]
    NotFound { path: PathBuf },
    #[error("--data {arg}: no such file or directory, and not a known data set ({known})")]
    UnknownData { arg: String, known: String },
    #[error("data set '{name}' has not been downloaded ({} does not exist); run `espresso pull --data {name}`", .dir.display())]
    NotPulled { name: String, dir: PathBuf },
    #[error(transparent)]
    Cache(#[from] PullError),
    #[error("cannot read {}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} contains no tokens (it is empty)", .path.display())]
    Empty { path: PathBuf },
    #[error("directory {} contains no .txt files", .path.display())]
    NoTextFiles { path: PathBuf },
    #[error("{}: unknown data format; expected {ACCEPTED}", .path.display())]
    UnknownExtension { path: PathBuf },
    #[error("{}: {at} is not valid UTF-8 text", .path.display())]
    NotUtf8 { path: PathBuf, at: String },
    #[error("{} line {line}: malformed JSON", .path.display())]
    Json {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{} line {line}: expected an object with \"text\" (a string) or \"messages\" (a list of {{\"role\", \"content\"}} objects)", .path.display())]
    NoTextOrMessages { path: PathBuf, line: usize },
    #[error("{} line {line}: {reason}", .path.display())]
    BadMessages {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{} line {line} is a chat example (\"messages\") but the model has no chat template", .path.display())]
    NoChatTemplate { path: PathBuf, line: usize },
    #[error("{} line {line}: {reason}", .path.display())]
    Chat {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: cannot tokenize", .path.display())]
    Tokenize {
        path: PathBuf,
        source: TokenizerError,
    },
    #[error("{} has {bytes} bytes, an odd number; a .bin file holds little-endian u16 token ids", .path.display())]
    OddBin { path: PathBuf, bytes: usize },
    #[error("{}: token {index} is id {token}, outside the vocabulary of {vocab} tokens", .path.display())]
    TokenOutOfRange {
        path: PathBuf,
        index: usize,
        token: u32,
        vocab: usize,
    },
    #[error("data has {tokens} tokens; --seq-len {seq_len} needs at least {}", .seq_len + 1)]
    TooShort { tokens: usize, seq_len: usize },
    #[error("--seq-len must be at least 1")]
    ZeroSeqLen,
    #[error("the held-out fraction must be strictly between 0 and 1, got {0}")]
    BadFraction(f64),
    #[error("holding out {frac} of {tokens} tokens leaves {train} training and {val} held-out tokens; each part needs at least 2")]
    SplitTooSmall {
        tokens: usize,
        frac: f64,
        train: usize,
        val: usize,
    },
}

/// What `--data ARG` names: `ARG` itself if that path exists; otherwise, if `ARG` is a known data
/// set (see [`model::cache::DATASETS`]), its folder in the cache. Nothing is downloaded here: a
/// data set that has not been pulled is an error telling to run `espresso pull --data NAME`.
pub fn resolve(arg: &str) -> Result<PathBuf, DataError> {
    let path = PathBuf::from(arg);
    if path.exists() {
        return Ok(path);
    }
    let source = match cache::data_source(arg) {
        Ok(source) => source,
        Err(PullError::UnknownData { known, .. }) => {
            return Err(DataError::UnknownData {
                arg: arg.into(),
                known,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let dir = cache::data_dir()?.join(source.name);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(DataError::NotPulled {
            name: source.name.into(),
            dir,
        })
    }
}

/// Load `path` (a file or directory in one of the formats listed in the module docs) with the
/// model's tokenizer. `template` is needed only for chat examples in a `.jsonl` file.
pub fn load(
    path: &Path,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
) -> Result<TokenData, DataError> {
    if !path.exists() {
        return Err(DataError::NotFound { path: path.into() });
    }
    let loader = Loader { path, tok };
    if path.is_dir() {
        return loader.directory();
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("txt") => loader.text_file(),
        Some("jsonl") => loader.jsonl(template),
        Some("bin") => loader.bin(),
        _ => Err(DataError::UnknownExtension { path: path.into() }),
    }
}

/// The file being loaded and the tokenizer, so errors can name the path.
struct Loader<'a> {
    path: &'a Path,
    tok: &'a Tokenizer,
}

impl Loader<'_> {
    fn read(&self, path: &Path) -> Result<Vec<u8>, DataError> {
        std::fs::read(path).map_err(|source| DataError::Io {
            path: path.into(),
            source,
        })
    }

    fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, DataError> {
        self.tok
            .encode(text, parse_special)
            .map_err(|source| DataError::Tokenize {
                path: self.path.into(),
                source,
            })
    }

    /// `[BOS if the tokenizer adds one] + text`, or `None` when the text is empty.
    fn text_document(&self, path: &Path, bytes: Vec<u8>) -> Result<Option<Vec<u32>>, DataError> {
        let text = String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
            path: path.into(),
            at: format!("the byte at offset {}", e.utf8_error().valid_up_to()),
        })?;
        let body = self.encode(&text, false)?;
        if body.is_empty() {
            return Ok(None);
        }
        let mut tokens = Vec::with_capacity(body.len() + 1);
        tokens.extend(self.bos());
        tokens.extend(body);
        Ok(Some(tokens))
    }

    fn bos(&self) -> Option<u32> {
        self.tok.bos_id().filter(|_| self.tok.add_bos())
    }

    fn text_file(&self) -> Result<TokenData, DataError> {
        let bytes = self.read(self.path)?;
        let tokens = self
            .text_document(self.path, bytes)?
            .ok_or_else(|| DataError::Empty {
                path: self.path.into(),
            })?;
        Ok(TokenData {
            description: format!("{} ({} tokens)", self.path.display(), tokens.len()),
            tokens,
            counted: None,
        })
    }

    fn directory(&self) -> Result<TokenData, DataError> {
        let io = |source| DataError::Io {
            path: self.path.into(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(self.path).map_err(io)? {
            let file = entry.map_err(io)?.path();
            let is_txt = file
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
            if is_txt && file.is_file() {
                files.push(file);
            }
        }
        if files.is_empty() {
            return Err(DataError::NoTextFiles {
                path: self.path.into(),
            });
        }
        files.sort();
        let mut tokens = Vec::new();
        for file in &files {
            let Some(doc) = self.text_document(file, self.read(file)?)? else {
                continue; // an empty file adds nothing, not even a separator
            };
            if !tokens.is_empty() {
                tokens.extend(self.tok.eos_id());
            }
            tokens.extend(doc);
        }
        if tokens.is_empty() {
            return Err(DataError::Empty {
                path: self.path.into(),
            });
        }
        Ok(TokenData {
            description: format!(
                "{} ({} .txt files, {} tokens)",
                self.path.display(),
                files.len(),
                tokens.len()
            ),
            tokens,
            counted: None,
        })
    }

    fn bin(&self) -> Result<TokenData, DataError> {
        let bytes = self.read(self.path)?;
        if bytes.len() % 2 != 0 {
            return Err(DataError::OddBin {
                path: self.path.into(),
                bytes: bytes.len(),
            });
        }
        if bytes.is_empty() {
            return Err(DataError::Empty {
                path: self.path.into(),
            });
        }
        let vocab = self.tok.vocab_size();
        let tokens = bytes
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect::<Vec<_>>();
        if let Some((index, &token)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= vocab)
        {
            return Err(DataError::TokenOutOfRange {
                path: self.path.into(),
                index,
                token,
                vocab,
            });
        }
        Ok(TokenData {
            description: format!("{} ({} tokens, u16)", self.path.display(), tokens.len()),
            tokens,
            counted: None,
        })
    }

    fn jsonl(&self, template: Option<&ChatTemplate>) -> Result<TokenData, DataError> {
        let bytes = self.read(self.path)?;
        let mut tokens = Vec::new();
        let mut counted = Vec::new();
        let (mut texts, mut chats) = (0usize, 0usize);
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let text = std::str::from_utf8(raw).map_err(|_| DataError::NotUtf8 {
                path: self.path.into(),
                at: format!("line {line}"),
            })?;
            if text.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(text).map_err(|source| DataError::Json {
                path: self.path.into(),
                line,
                source,
            })?;
            match self.example(&value, line)? {
                Example::Text(text) => {
                    let start = tokens.len();
                    tokens.extend(self.bos());
                    tokens.extend(self.encode(text, false)?);
                    tokens.extend(self.tok.eos_id());
                    counted.resize(counted.len() + tokens.len() - start, true);
                    texts += 1;
                }
                Example::Chat(messages) => {
                    let template = template.ok_or_else(|| DataError::NoChatTemplate {
                        path: self.path.into(),
                        line,
                    })?;
                    let (ids, mask) = self.chat_tokens(template, &messages, line)?;
                    tokens.extend(ids);
                    counted.extend(mask);
                    chats += 1;
                }
            }
        }
        if tokens.is_empty() {
            return Err(DataError::Empty {
                path: self.path.into(),
            });
        }
        let n_counted = counted.iter().filter(|&&c| c).count();
        Ok(TokenData {
            description: format!(
                "{} ({texts} text and {chats} chat examples, {} tokens, {n_counted} with loss)",
                self.path.display(),
                tokens.len()
            ),
            tokens,
            counted: (n_counted < counted.len()).then_some(counted),
        })
    }

    /// One parsed `.jsonl` line.
    fn example<'v>(&self, value: &'v Value, line: usize) -> Result<Example<'v>, DataError> {
        if let Some(text) = value.get("text").and_then(Value::as_str) {
            return Ok(Example::Text(text));
        }
        let Some(messages) = value.get("messages") else {
            return Err(DataError::NoTextOrMessages {
                path: self.path.into(),
                line,
            });
        };
        let bad = |reason: String| DataError::BadMessages {
            path: self.path.into(),
            line,
            reason,
        };
        let list = messages
            .as_array()
            .ok_or_else(|| bad("\"messages\" must be a list".into()))?;
        if list.is_empty() {
            return Err(bad("\"messages\" is empty".into()));
        }
        list.iter()
            .enumerate()
            .map(|(i, m)| {
                let field = |name| m.get(name).and_then(Value::as_str);
                match (field("role"), field("content")) {
                    (Some(role), Some(content)) => Ok(ChatMessage::new(role, content)),
                    _ => Err(bad(format!(
                        "message {} needs string fields \"role\" and \"content\"",
                        i + 1
                    ))),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Example::Chat)
    }

    /// Tokens of one conversation and, per token, whether it carries loss.
    ///
    /// Method: the conversation is rendered incrementally — `messages[..=i]` for each `i` — and
    /// each rendering must extend the previous one, so the text each message adds is known. The
    /// message's content is located in it by rendering once more with the content replaced by a
    /// unique placeholder: the text before and after the placeholder must surround the real
    /// content exactly (or the content with surrounding whitespace trimmed, for templates that
    /// `trim` it), and lie in that message's part. The final text is then tokenized piece by
    /// piece: template markup with special-token parsing, message contents as plain text (so a
    /// user cannot inject control tokens). Counted are the assistant contents' tokens and, right
    /// after each, the first markup token if it is an end-of-generation token (`<|im_end|>` for
    /// ChatML) — the model must learn to end its turn. Because pieces are tokenized separately,
    /// no token straddles the boundary of an assistant content, so the mask is exact; the tokens
    /// can differ from tokenizing the whole text at once only at those boundaries. A template
    /// that does not render incrementally, or does not reproduce an assistant's content, is an
    /// error.
    fn chat_tokens(
        &self,
        template: &ChatTemplate,
        messages: &[ChatMessage],
        line: usize,
    ) -> Result<(Vec<u32>, Vec<bool>), DataError> {
        let problem = |reason: String| DataError::Chat {
            path: self.path.into(),
            line,
            reason,
        };
        let render = |msgs: &[ChatMessage]| {
            template
                .render(msgs, false)
                .map_err(|e| problem(e.to_string()))
        };
        // Byte ranges of message contents in the final text, with whether they are the assistant's.
        let mut contents: Vec<(Range<usize>, bool)> = Vec::new();
        let mut prev = render(&[]).unwrap_or_default();
        for (i, message) in messages.iter().enumerate() {
            let cur = render(&messages[..=i])?;
            if !cur.starts_with(&prev) {
                return Err(problem(format!(
                    "the chat template does not render message {} as an addition to the earlier \
                     ones, so the assistant's tokens cannot be told apart",
                    i + 1
                )));
            }
            let placeholder = format!("\u{E000}espresso-content-{i}\u{E001}");
            let mut probe = messages[..=i].to_vec();
            probe[i].content.clone_from(&placeholder);
            let located = locate_content(&cur, &render(&probe)?, &placeholder, &message.content)
                .filter(|range| range.start >= prev.len());
            let assistant = message.role == "assistant";
            match located {
                Some(range) => contents.push((range, assistant)),
                None if assistant => {
                    return Err(problem(format!(
                        "the chat template does not reproduce the content of assistant message \
                         {} verbatim, so its tokens cannot be located",
                        i + 1
                    )))
                }
                None => {} // other roles' text stays markup
            }
            prev = cur;
        }
        let full = prev;

        let mut out = Masked::default();
        let mut pos = 0;
        let mut after_assistant = false;
        for (range, assistant) in contents {
            self.push_markup(&mut out, &full[pos..range.start], after_assistant)?;
            let ids = self.encode(&full[range.clone()], false)?;
            out.counted
                .extend(std::iter::repeat_n(assistant, ids.len()));
            out.tokens.extend(ids);
            after_assistant = assistant;
            pos = range.end;
        }
        self.push_markup(&mut out, &full[pos..], after_assistant)?;
        if let Some(bos) = self.bos().filter(|&b| out.tokens.first() != Some(&b)) {
            out.tokens.insert(0, bos);
            out.counted.insert(0, false);
        }
        Ok((out.tokens, out.counted))
    }

    /// Template text: no loss, except an end-of-generation token closing an assistant's content.
    fn push_markup(
        &self,
        out: &mut Masked,
        text: &str,
        after_assistant: bool,
    ) -> Result<(), DataError> {
        for (j, id) in self.encode(text, true)?.into_iter().enumerate() {
            out.tokens.push(id);
            out.counted
                .push(after_assistant && j == 0 && self.tok.is_end_of_generation(id));
        }
        Ok(())
    }
}

/// Tokens with their loss mask, as a conversation is assembled.
#[derive(Default)]
struct Masked {
    tokens: Vec<u32>,
    counted: Vec<bool>,
}

/// Where `content` lies in `rendered`, given the same conversation rendered with the content
/// replaced by `placeholder` (which must occur once): the text around the placeholder must
/// surround `content`, or `content` with surrounding whitespace trimmed.
fn locate_content(
    rendered: &str,
    probe: &str,
    placeholder: &str,
    content: &str,
) -> Option<Range<usize>> {
    let at = probe.find(placeholder)?;
    if probe.rfind(placeholder) != Some(at) {
        return None;
    }
    let (before, after) = (&probe[..at], &probe[at + placeholder.len()..]);
    [content, content.trim()].into_iter().find_map(|c| {
        let fits = rendered.len() == before.len() + c.len() + after.len()
            && rendered.starts_with(before)
            && rendered.ends_with(after)
            && rendered[before.len()..].starts_with(c);
        fits.then(|| before.len()..before.len() + c.len())
    })
}

/// One `.jsonl` example.
enum Example<'v> {
    Text(&'v str),
    Chat(Vec<ChatMessage>),
}
impl TokenData {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether predicting token `i` carries loss.
    fn is_counted(&self, i: usize) -> bool {
        self.counted.as_ref().is_none_or(|c| c[i])
    }

    /// Hold out the last `frac` (`0 < frac < 1`, rounded to whole tokens) of the tokens:
    /// `(train, held_out)`. Each part must keep at least 2 tokens.
    pub fn split_tail(self, frac: f64) -> Result<(TokenData, TokenData), DataError> {
        if !(frac > 0.0 && frac < 1.0) {
            return Err(DataError::BadFraction(frac));
        }
        let n = self.len();
        let val = ((n as f64 * frac).round() as usize).min(n);
        let train = n - val;
        if train < 2 || val < 2 {
            return Err(DataError::SplitTooSmall {
                tokens: n,
                frac,
                train,
                val,
            });
        }
        let TokenData {
            mut tokens,
            mut counted,
            description,
        } = self;
        let val_tokens = tokens.split_off(train);
        let val_counted = counted.as_mut().map(|c| c.split_off(train));
        Ok((
            TokenData {
                tokens,
                counted,
                description: format!("{description}, first {train} tokens"),
            },
            TokenData {
                tokens: val_tokens,
                counted: val_counted,
                description: format!("{description}, last {val} tokens held out"),
            },
        ))
    }

    /// Error unless a window of `seq_len` inputs plus one target fits: `len ≥ seq_len + 1`.
    pub fn check(&self, seq_len: usize) -> Result<(), DataError> {
        if seq_len == 0 {
            return Err(DataError::ZeroSeqLen);
        }
        if self.len() < seq_len + 1 {
            return Err(DataError::TooShort {
                tokens: self.len(),
                seq_len,
            });
        }
        Ok(())
    }

    /// Hex SHA-256 of the token ids (little-endian u32) and the loss mask, so that a resumed run
    /// can tell it is given other data. A mask that counts every token hashes like no mask.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"espresso token data v1\n");
        h.update((self.tokens.len() as u64).to_le_bytes());
        for t in &self.tokens {
            h.update(t.to_le_bytes());
        }
        match self.counted.as_deref().filter(|c| c.contains(&false)) {
            None => h.update([0u8]),
            Some(mask) => {
                h.update([1u8]);
                h.update(mask.iter().map(|&c| u8::from(c)).collect::<Vec<_>>());
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// How windows are placed in the data (`--shuffle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shuffle {
    /// Consecutive windows, one after the other through the data (wrapping around).
    None,
    /// Each window starts at a uniformly drawn token.
    Random { seed: u64 },
}

/// Mixed into the stream of [`uniform`] so that window draws are unrelated to the parameter
/// initialization's draws under the same seed (those use small stream numbers).
const SHUFFLE_STREAM: u64 = 0x5348_5546_464c_4530; // "SHUFFLE0"

/// Where sequence `b` of micro-batch `a` of step `step` starts (see [`step_batches`]).
fn window_start(
    data_len: usize,
    shuffle: Shuffle,
    step: u64,
    (a, b): (usize, usize),
    (grad_accum, batch, seq_len): (usize, usize, usize),
) -> usize {
    let starts = (data_len - seq_len) as u128; // valid starts: 0..starts
    match shuffle {
        Shuffle::None => {
            let k = u128::from(step.saturating_sub(1));
            let index = (k * grad_accum as u128 + a as u128) * batch as u128 + b as u128;
            ((index * seq_len as u128) % starts) as usize
        }
        Shuffle::Random { seed } => {
            let draw = uniform(seed, SHUFFLE_STREAM ^ step, (a * batch + b) as u64);
            ((draw * starts as f64) as u128).min(starts - 1) as usize
        }
    }
}

/// Append the window starting at `o` to `out`: inputs `tokens[o..o+S]`, targets
/// `tokens[o+1..o+S+1]` ([`IGNORE_INDEX`] where that token is not counted).
fn push_window(data: &TokenData, o: usize, out: &mut Batch) {
    let s = out.seq_len;
    out.inputs.extend_from_slice(&data.tokens[o..o + s]);
    out.targets.extend((o + 1..o + s + 1).map(|i| {
        if data.is_counted(i) {
            data.tokens[i]
        } else {
            IGNORE_INDEX
        }
    }));
}

/// The `grad_accum` micro-batches of optimizer step `step` (1-based), each of `batch` windows of
/// `seq_len` tokens. With `S = seq_len`, `A = grad_accum`, `B = batch`, `k = step`, window `b` of
/// micro-batch `a` starts at token `o`:
/// - [`Shuffle::None`]: `o = (((k−1)·A + a)·B + b)·S mod (len − S)`, so consecutive windows tile
///   the data and wrap around;
/// - [`Shuffle::Random`]: `o` uniform over `0..=len−S−1`, drawn statelessly by
///   [`uniform`]`(seed, SHUFFLE_STREAM ^ k, a·B + b)` — a resumed run needs no RNG state.
///
/// Inputs are `tokens[o..o+S]`, targets `tokens[o+1..o+S+1]` (or [`IGNORE_INDEX`] where that
/// token is not counted).
///
/// # Panics
/// If the data holds fewer than `S + 1` tokens or `S = 0`: validate user input with
/// [`TokenData::check`] first.
pub fn step_batches(
    data: &TokenData,
    shuffle: Shuffle,
    step: u64,
    grad_accum: usize,
    batch: usize,
    seq_len: usize,
) -> Vec<Batch> {
    assert!(
        seq_len > 0 && data.len() > seq_len,
        "step_batches: {} tokens cannot hold a window of {seq_len}; call TokenData::check first",
        data.len()
    );
    (0..grad_accum)
        .map(|a| {
            let mut out = empty_batch(batch, seq_len);
            for b in 0..batch {
                let dims = (grad_accum, batch, seq_len);
                let o = window_start(data.len(), shuffle, step, (a, b), dims);
                push_window(data, o, &mut out);
            }
            out
        })
        .collect()
}

/// Held-out evaluation windows: window `i` starts at `i·S`, as many as fit (`i·S + S + 1 ≤ len`)
/// but at most `max_windows`, grouped into batches of `batch` windows (the last may hold fewer).
pub fn eval_batches(
    data: &TokenData,
    seq_len: usize,
    batch: usize,
    max_windows: usize,
) -> Vec<Batch> {
    if seq_len == 0 || batch == 0 || data.is_empty() {
        return Vec::new();
    }
    let windows = ((data.len() - 1) / seq_len).min(max_windows);
    let starts: Vec<usize> = (0..windows).map(|i| i * seq_len).collect();
    starts
        .chunks(batch)
        .map(|chunk| {
            let mut out = empty_batch(chunk.len(), seq_len);
            for &o in chunk {
                push_window(data, o, &mut out);
            }
            out
        })
        .collect()
}

fn empty_batch(batch: usize, seq_len: usize) -> Batch {
    Batch {
        batch,
        seq_len,
        inputs: Vec::with_capacity(batch * seq_len),
        targets: Vec::with_capacity(batch * seq_len),
    }
}
