//! The request and error shapes of the OpenAI API that we accept and produce.
//!
//! Requests are parsed leniently about fields we do not use (clients send `model`, `user`,
//! penalties, ...) and strictly about the ones we do: a wrong type or an out-of-range value is
//! a 400 naming the field.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

/// An error in OpenAI's shape: `{"error": {"message", "type", "code"}}` with an HTTP status.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `type` (e.g. `invalid_request_error`).
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
        }
    }

    /// 400: a malformed body or a bad field value.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }

    /// 503 with a reason code (`loading`, `queue_full`, `shutting_down`).
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable_error",
            code,
            message,
        )
    }

    /// The JSON body, also sent as an SSE `data:` line once a stream has started.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// `stop`: one string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling and length fields shared by chat and plain completions.
#[derive(Debug, Default, Deserialize)]
pub struct Common {
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u64>,
}

/// A message's `content`: text, or a list of parts of which we take the `text` ones.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub common: Common,
}

/// `prompt` of `/v1/completions`: text, a one-element list of text, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(flatten)]
    pub common: Common,
}

/// `/tokenize`: raw text (`content`, special-token text parsed only with `parse_special`), or
/// a conversation (`messages`) rendered exactly as `/v1/chat/completions` renders it.
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub content: Option<String>,
    pub messages: Option<Vec<Message>>,
    #[serde(default)]
    pub add_special: bool,
    #[serde(default)]
    pub parse_special: bool,
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
}

/// Parse a JSON body into `T`, with serde's message (field, line, column) as the 400.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))
}

impl Message {
    /// The message as the chat template sees it; parts other than text are refused.
    pub fn to_chat(&self) -> Result<model::chat::ChatMessage, ApiError> {
        let role = match self.role.as_str() {
            r @ ("system" | "user" | "assistant") => r,
            // OpenAI's newer name for the system role.
            "developer" => "system",
            other => {
                return Err(ApiError::bad_request(format!(
                    "messages: unsupported role '{other}' (use system, user or assistant)"
                )))
            }
        };
        let content = match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::bad_request(format!(
                                "messages: content part of type '{kind}' is not supported \
                                 (text only)"
                            )))
                        }
                    }
                }
                text
            }
        };
        Ok(model::chat::ChatMessage::new(role, content))
    }
}
