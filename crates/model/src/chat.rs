//! The model's own chat template (`tokenizer.chat_template`, Jinja text) rendered with
//! `minijinja`, configured the way Hugging Face transformers and llama-cpp-python render chat
//! templates with Python's jinja2: `trim_blocks` and `lstrip_blocks` on, no trailing newline
//! kept, loop controls enabled, Python string/dict methods (`strip`, `items`, ...) available,
//! and the helpers templates call: `raise_exception(msg)`, `strftime_now(fmt)` and a `tojson`
//! filter that prints JSON as Python's `json.dumps` does (`", "` and `": "` separators).
//!
//! The variables a template sees are `messages` (a list of `{role, content}`),
//! `add_generation_prompt`, `bos_token` and `eos_token`.
//!
//! # Message contents are plain text
//!
//! A rendered conversation must not be tokenized as one string with special-token parsing on:
//! a user who writes `<|im_end|>\n<|im_start|>system` would then forge role markers. Use
//! [`encode_chat`], which gets the rendered text as [`ChatSegment`]s
//! ([`ChatTemplate::render_segments`]) and parses special-token text only in the template's own
//! segments; every message content is tokenized as plain text. Where the template's text and a
//! content meet, the plain text is still BPE-encoded as one string, so for ordinary messages the
//! ids are exactly those of tokenizing [`ChatTemplate::render`]'s output with special tokens on.
//! Roles are template text (templates compare them), so [`encode_chat`] rejects a role that
//! contains special-token text.

use crate::gguf::GgufFile;
use crate::tokenizer::{Tokenizer, TokenizerError};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

const TEMPLATE_KEY: &str = "tokenizer.chat_template";
const TEMPLATE_NAME: &str = "chat_template";

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("the model has no chat template (GGUF metadata key '{TEMPLATE_KEY}' is missing)")]
    MissingTemplate,
    #[error("GGUF metadata key '{TEMPLATE_KEY}' is not a string")]
    NotAString,
    #[error("chat template does not parse: {0:#}")]
    Syntax(Error),
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    #[error("chat template failed to render: {0:#}")]
    Render(Error),
}

/// Why a conversation could not be turned into prompt token ids ([`encode_chat`]).
#[derive(Debug, thiserror::Error)]
pub enum EncodeChatError {
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("message role {0:?} contains special-token text")]
    SpecialTokenInRole(String),
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A parsed chat template, ready to render conversations.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

/// Text of the token whose id is stored under `key`, or "" when there is none.
fn special_token_text(gguf: &GgufFile, key: &str) -> String {
    let id = gguf.get(key).and_then(|v| v.as_u64());
    let tokens = gguf.get("tokenizer.ggml.tokens").and_then(|v| v.as_array());
    match (id, tokens) {
        (Some(id), Some(tokens)) => tokens
            .get(id as usize)
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    }
}

impl ChatTemplate {
    /// The template stored in the GGUF, with `bos_token`/`eos_token` taken from its vocabulary.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, ChatError> {
        let source = gguf
            .get(TEMPLATE_KEY)
            .ok_or(ChatError::MissingTemplate)?
            .as_str()
            .ok_or(ChatError::NotAString)?;
        Self::new(
            source,
            special_token_text(gguf, "tokenizer.ggml.bos_token_id"),
            special_token_text(gguf, "tokenizer.ggml.eos_token_id"),
        )
    }

    /// A template from Jinja source text.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self, ChatError> {
        let source = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(ChatError::Syntax)?;
        Ok(Self {
            env,
            source,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The Jinja source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Render a conversation. With `add_generation_prompt`, the text ends with the opening of
    /// the assistant's turn so that the model continues as the assistant.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(ChatError::Render)?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| match raised_message(&e) {
                Some(msg) => ChatError::Raised(msg),
                None => ChatError::Render(e),
            })
    }
}

/// A piece of a rendered conversation: the template's own text, or text that comes from a
/// message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSegment {
    pub text: String,
    /// From a message's content: tokenize as plain text, never as special tokens.
    pub is_content: bool,
}

/// Private-use code points that mark where a message's content starts and ends while rendering
/// for [`ChatTemplate::render_segments`]. They are removed from contents first, so a user cannot
/// forge them.
const CONTENT_OPEN: char = '\u{F0000}';
const CONTENT_CLOSE: char = '\u{F0001}';

fn is_marker(c: char) -> bool {
    c == CONTENT_OPEN || c == CONTENT_CLOSE
}

impl ChatTemplate {
    /// Render a conversation as [`render`](Self::render) does, cut into the template's own text
    /// and the messages' contents (in order, adjacent pieces of the same kind joined, no empty
    /// piece; a content the template does not print gives no piece).
    ///
    /// Each non-empty content is rendered between two private-use marker characters (any such
    /// characters in the content are removed first) and the output is split at them. For the
    /// usual templates, which print contents unchanged, the joined texts equal `render`'s
    /// output. A template that transforms a content sees the markers too: `| trim` or `.strip()`
    /// then keeps the content's outer whitespace, and a test such as `content.startswith(..)`
    /// sees the opening marker. We accept that difference rather than guess where an altered
    /// content is: nothing a message says may become a special token. When a template cuts a
    /// content so that one marker is lost (`content.split(..)[-1]`, `content[:n]`), the text
    /// next to the remaining marker counts as content as far as it matches the end (or start)
    /// of some message's content.
    pub fn render_segments(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<ChatSegment>, ChatError> {
        let contents: Vec<String> = messages
            .iter()
            .map(|m| m.content.chars().filter(|&c| !is_marker(c)).collect())
            .collect();
        let marked: Vec<ChatMessage> = messages
            .iter()
            .zip(&contents)
            .map(|(m, content)| ChatMessage {
                role: m.role.clone(),
                content: if content.is_empty() {
                    String::new()
                } else {
                    format!("{CONTENT_OPEN}{content}{CONTENT_CLOSE}")
                },
            })
            .collect();
        let rendered = self.render(&marked, add_generation_prompt)?;
        Ok(split_at_markers(&rendered, &contents))
    }
}

/// Prompt token ids for a conversation: `messages` rendered with `template`
/// ([`ChatTemplate::render_segments`]), the template's text tokenized with special-token parsing
/// and the contents as plain text ([`Tokenizer::encode_parts`]), BOS/EOS added as
/// [`Tokenizer::encode_with_bos`] adds them. With `add_generation_prompt`, the prompt ends with
/// the opening of the assistant's turn.
pub fn encode_chat(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
) -> Result<Vec<u32>, EncodeChatError> {
    for m in messages {
        if tokenizer.encode(&m.role, true)? != tokenizer.encode(&m.role, false)? {
            return Err(EncodeChatError::SpecialTokenInRole(m.role.clone()));
        }
    }
    let segments = template.render_segments(messages, add_generation_prompt)?;
    let parts: Vec<(&str, bool)> = segments
        .iter()
        .map(|s| (s.text.as_str(), !s.is_content))
        .collect();
    Ok(tokenizer.encode_parts_with_bos(&parts)?)
}

/// Cut `rendered` at the content markers (see [`ChatTemplate::render_segments`]); `contents`
/// are the messages' contents without markers.
fn split_at_markers(rendered: &str, contents: &[String]) -> Vec<ChatSegment> {
    let mut segments: Vec<ChatSegment> = Vec::new();
    let mut push = |text: &str, is_content: bool| {
        if text.is_empty() {
            return;
        }
        match segments.last_mut() {
            Some(last) if last.is_content == is_content => last.text.push_str(text),
            _ => segments.push(ChatSegment {
                text: text.to_string(),
                is_content,
            }),
        }
    };
    // Each run of text between markers, with the marker before it (`left`) and after it.
    let mut left = None;
    let mut rest = rendered;
    loop {
        let (run, right) = match rest.char_indices().find(|&(_, c)| is_marker(c)) {
            Some((i, c)) => (&rest[..i], Some(c)),
            None => (rest, None),
        };
        match (left, right) {
            (Some(CONTENT_OPEN), Some(CONTENT_CLOSE)) => push(run, true),
            // The closing marker was cut off: the run starts with (the start of) a content.
            (Some(CONTENT_OPEN), _) => {
                let n = contents
                    .iter()
                    .map(|c| common_prefix_len(run, c))
                    .max()
                    .unwrap_or(0);
                push(&run[..n], true);
                push(&run[n..], false);
            }
            // The opening marker was cut off: the run ends with (the end of) a content.
            (_, Some(CONTENT_CLOSE)) => {
                let n = contents
                    .iter()
                    .map(|c| common_suffix_len(run, c))
                    .max()
                    .unwrap_or(0);
                push(&run[..run.len() - n], false);
                push(&run[run.len() - n..], true);
            }
            _ => push(run, false),
        }
        match right {
            Some(c) => {
                rest = &rest[run.len() + c.len_utf8()..];
                left = Some(c);
            }
            None => break,
        }
    }
    segments
}

/// Length in bytes of the longest common prefix of `a` and `b` (whole characters).
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum()
}

/// Length in bytes of the longest common suffix of `a` and `b` (whole characters).
fn common_suffix_len(a: &str, b: &str) -> usize {
    a.chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum()
}

const RAISED_PREFIX: &str = "raise_exception: ";

/// The message of an error thrown by the template's `raise_exception(...)`, if that is what
/// `e` (or an error it wraps) is.
fn raised_message(e: &Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(mj) = err.downcast_ref::<Error>() {
            if let Some(msg) = mj.detail().and_then(|d| d.strip_prefix(RAISED_PREFIX)) {
                return Some(msg.to_string());
            }
        }
        cur = err.source();
    }
    None
}

/// `raise_exception(msg)`: templates call it to reject a conversation they cannot render.
fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED_PREFIX}{msg}"),
    ))
}

/// `strftime_now(fmt)`: the current UTC time formatted with the common `strftime` directives
/// (`%Y %m %d %e %H %M %S %j %y %B %b %A %a %p %I %%`).
fn strftime_now(fmt: String) -> Result<Value, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&fmt, secs).map(Value::from)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Format the UTC time `unix_secs` with `fmt`.
fn strftime(fmt: &str, unix_secs: i64) -> Result<String, Error> {
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday.
    const CUM_DAYS: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap_extra = u32::from(month > 2 && is_leap(year));
    let day_of_year = CUM_DAYS[month as usize - 1] + day + leap_extra;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let piece = match d {
            'Y' => year.to_string(),
            'y' => format!("{:02}", year.rem_euclid(100)),
            'm' => format!("{month:02}"),
            'd' => format!("{day:02}"),
            'e' => format!("{day:>2}"),
            'H' => format!("{hour:02}"),
            'I' => format!("{hour12:02}"),
            'M' => format!("{minute:02}"),
            'S' => format!("{second:02}"),
            'j' => format!("{day_of_year:03}"),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_string(),
            'B' => MONTHS[month as usize - 1].to_string(),
            'b' | 'h' => MONTHS[month as usize - 1][..3].to_string(),
            'A' => WEEKDAYS[weekday].to_string(),
            'a' => WEEKDAYS[weekday][..3].to_string(),
            '%' => "%".to_string(),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: unsupported directive %{other}"),
                ))
            }
        };
        out.push_str(&piece);
    }
    Ok(out)
}

/// `tojson(indent=None, sort_keys=False, ensure_ascii=False)` as Python's `json.dumps`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let style = JsonStyle {
        indent,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(&value, &style, 0, &mut out)?;
    // Mark safe: the JSON is meant to be inserted verbatim.
    Ok(Value::from_safe_string(out))
}

struct JsonStyle {
    indent: Option<usize>,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn json_string(s: &str, ensure_ascii: bool, out: &mut String) -> Result<(), Error> {
    let quoted = serde_json::to_string(s)
        .map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    if !ensure_ascii {
        out.push_str(&quoted);
        return Ok(());
    }
    for c in quoted.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    Ok(())
}

/// Newline plus indentation before an item at nesting `level` (nothing when compact).
fn json_break(style: &JsonStyle, level: usize, out: &mut String) {
    if let Some(n) = style.indent {
        out.push('\n');
        out.push_str(&" ".repeat(n * level));
    }
}

fn write_json(v: &Value, style: &JsonStyle, level: usize, out: &mut String) -> Result<(), Error> {
    // Python: ", " between items when compact, "," when indented; ": " after keys.
    let item_sep = if style.indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(
            &serde_json::to_string(v)
                .map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))?,
        ),
        ValueKind::String => json_string(v.as_str().unwrap_or(""), style.ensure_ascii, out)?,
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if style.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                json_break(style, level + 1, out);
                let key_text = match key.as_str() {
                    Some(s) => s.to_string(),
                    None => key.to_string(),
                };
                json_string(&key_text, style.ensure_ascii, out)?;
                out.push_str(": ");
                write_json(&v.get_item(key)?, style, level + 1, out)?;
            }
            json_break(style, level, out);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                json_break(style, level + 1, out);
                write_json(item, style, level + 1, out)?;
            }
            json_break(style, level, out);
            out.push(']');
        }
        _ => json_string(&v.to_string(), style.ensure_ascii, out)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_src(src: &str, messages: &[ChatMessage]) -> Result<String, ChatError> {
        ChatTemplate::new(src, "<s>", "</s>")?.render(messages, true)
    }

    #[test]
    fn chatml_like_template_renders_turns_and_generation_prompt() {
        let src = "{% for m in messages %}<|{{ m.role }}|>\n{{ m['content'] }}\n{% endfor %}\
                   {% if add_generation_prompt %}<|assistant|>\n{% endif %}";
        let out = render_src(src, &[ChatMessage::user("hi")]).unwrap();
        assert_eq!(out, "<|user|>\nhi\n<|assistant|>\n");
    }

    #[test]
    fn trim_and_lstrip_blocks_match_hf_jinja_settings() {
        // jinja2 with trim_blocks + lstrip_blocks drops the newline after a block tag and the
        // indentation before one.
        let src = "{% for m in messages %}\n    {% if true %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n";
        let out = render_src(src, &[ChatMessage::user("a"), ChatMessage::user("b")]).unwrap();
        assert_eq!(out, "[a]\n[b]\n");
    }

    #[test]
    fn raise_exception_becomes_a_named_error() {
        let src =
            "{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}{% endif %}";
        let err = render_src(src, &[ChatMessage::user("x")]).unwrap_err();
        assert!(
            matches!(&err, ChatError::Raised(m) if m == "system first"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_are_reported_at_construction() {
        let err = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
        assert!(matches!(err, ChatError::Syntax(_)), "{err}");
    }

    #[test]
    fn tojson_prints_like_python_json_dumps() {
        let src = "{{ messages | tojson }}|{{ {'a': [1, 2.5, none, true]} | tojson(indent=2) }}";
        let out = render_src(src, &[ChatMessage::user("é \"q\"\n")]).unwrap();
        assert_eq!(
            out,
            "[{\"role\": \"user\", \"content\": \"é \\\"q\\\"\\n\"}]|{\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ]\n}"
        );
    }

    #[test]
    fn python_string_methods_are_available() {
        let src = "{{ messages[0].content.strip() }}|\
                   {% if messages[0].content.startswith(' x') %}starts{% endif %}";
        let out = render_src(src, &[ChatMessage::user(" x y ")]).unwrap();
        assert_eq!(out, "x y|starts");
    }

    /// `(text, is_content)` of each segment.
    fn segments_of(src: &str, messages: &[ChatMessage]) -> Vec<(String, bool)> {
        ChatTemplate::new(src, "<s>", "</s>")
            .unwrap()
            .render_segments(messages, true)
            .unwrap()
            .into_iter()
            .map(|s| (s.text, s.is_content))
            .collect()
    }

    fn seg(text: &str, is_content: bool) -> (String, bool) {
        (text.to_string(), is_content)
    }

    const CHATML_LIKE: &str =
        "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}\
                               {% if add_generation_prompt %}<|assistant|>\n{% endif %}";

    #[test]
    fn segments_separate_template_text_from_contents() {
        let messages = [ChatMessage::system("sys"), ChatMessage::user("hi<|x|>")];
        let got = segments_of(CHATML_LIKE, &messages);
        assert_eq!(
            got,
            [
                seg("<|system|>\n", false),
                seg("sys", true),
                seg("\n<|user|>\n", false),
                seg("hi<|x|>", true),
                seg("\n<|assistant|>\n", false),
            ]
        );
        let joined: String = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            joined,
            ChatTemplate::new(CHATML_LIKE, "", "")
                .unwrap()
                .render(&messages, true)
                .unwrap()
        );
    }

    #[test]
    fn marker_characters_in_a_content_are_removed() {
        let got = segments_of(
            CHATML_LIKE,
            &[ChatMessage::user("a\u{F0001}<|x|>\u{F0000}b")],
        );
        assert_eq!(got[1], seg("a<|x|>b", true));
        assert_eq!(got.len(), 3, "{got:?}");
    }

    #[test]
    fn contents_the_template_does_not_print_give_no_segment() {
        let src = "{% for m in messages %}[{{ m.role }}]{% endfor %}";
        let got = segments_of(src, &[ChatMessage::user("hi"), ChatMessage::user("yo")]);
        assert_eq!(got, [seg("[user][user]", false)]);
        // An empty content is passed as is, so tests on it behave as with `render`.
        let src = "{% for m in messages %}{% if m.content %}<{{ m.content }}>\
                   {% else %}(empty){% endif %}{% endfor %}";
        let got = segments_of(src, &[ChatMessage::user(""), ChatMessage::user("x")]);
        assert_eq!(
            got,
            [seg("(empty)<", false), seg("x", true), seg(">", false)]
        );
    }

    #[test]
    fn transformed_contents_are_still_content() {
        // `trim` cannot see through the markers: the content keeps its spaces (unlike `render`).
        let got = segments_of(
            "[{{ messages[0].content | trim }}]",
            &[ChatMessage::user(" hi ")],
        );
        assert_eq!(got, [seg("[", false), seg(" hi ", true), seg("]", false)]);
        // A cut that loses the opening marker: the end of the content is still content.
        let got = segments_of(
            "<{{ messages[0].content.split('</think>')[-1] }}>",
            &[ChatMessage::user("a</think><|x|>")],
        );
        assert_eq!(got, [seg("<", false), seg("<|x|>", true), seg(">", false)]);
        // A cut that loses the closing marker: the start of the content is still content.
        let got = segments_of(
            "<{{ messages[0].content[:6] }}>",
            &[ChatMessage::user("<|x|>yz")],
        );
        assert_eq!(got, [seg("<", false), seg("<|x|>", true), seg(">", false)]);
    }

    #[test]
    fn strftime_formats_known_instants() {
        // 2024-02-29T13:05:09Z, a Thursday, day 60 of a leap year.
        let t = 1_709_211_909;
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %j %a %A %b %B %I%p %y %e %%", t).unwrap(),
            "2024-02-29 13:05:09 060 Thu Thursday Feb February 01PM 24 29 %"
        );
        assert_eq!(strftime("%d %b %Y", 0).unwrap(), "01 Jan 1970");
        assert!(strftime("%Q", 0).is_err());
    }
}
