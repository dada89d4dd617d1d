//! The HTTP routes: validation, handing jobs to the engine, and OpenAI-shaped responses
//! (one JSON object, or an SSE stream of chunks).

use crate::api::{self, ApiError, ChatRequest, Common, CompletionRequest, Prompt, Stop};
use crate::{metrics, sha256, AppState};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::batch::{Event, Failure, FailureKind, Finish, Job};
use engine::{GenerateOptions, SamplerConfig, StopReason};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TrySendError;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

type St = State<Arc<AppState>>;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model_info))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), auth));
    Router::new()
        .merge(protected)
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_errors,
        ))
        .layer(DefaultBodyLimit::max(state.opts.max_body))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "not_found",
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// `Authorization: Bearer KEY`, compared in constant time (of the SHA-256 digests).
async fn auth(State(st): St, req: Request, next: Next) -> Response {
    if let Some(want) = &st.key_hash {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let ok = given.is_some_and(|k| bool::from(sha256(k).ct_eq(want)));
        if !ok {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
                "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn count_errors(State(st): St, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status().is_client_error() || resp.status().is_server_error() {
        st.http.errors.fetch_add(1, Ordering::Relaxed);
    }
    resp
}

/// The request body, with an over-limit body as a 413 in our error shape.
fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                "the request body is larger than the server's limit",
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {r}"))
        }
    })
}

async fn health(State(st): St) -> Response {
    if st.ready.load(Ordering::SeqCst) {
        Json(json!({"status": "ok"})).into_response()
    } else {
        ApiError::unavailable("loading", "the model is loading").into_response()
    }
}

async fn metrics_text(State(st): St) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&st.stats, &st.http),
    )
        .into_response()
}

fn model_entry(st: &AppState) -> Value {
    json!({
        "id": st.opts.model_name,
        "object": "model",
        "created": st.started,
        "owned_by": "espresso",
    })
}

async fn models(State(st): St) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_entry(&st)]}))
}

async fn model_info(State(st): St, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if id == st.opts.model_name {
        Ok(Json(model_entry(&st)))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "model_not_found",
            format!(
                "no model '{id}' here; this server serves '{}'",
                st.opts.model_name
            ),
        ))
    }
}

async fn tokenize(
    State(st): St,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: api::TokenizeRequest = api::parse(&body(b)?)?;
    let tokens = match (&req.content, &req.messages) {
        (Some(text), None) => {
            let r = if req.add_special {
                st.tokenizer.encode_with_bos(text, req.parse_special)
            } else {
                st.tokenizer.encode(text, req.parse_special)
            };
            r.map_err(|e| ApiError::bad_request(engine::error_chain(&e)))?
        }
        (None, Some(messages)) => chat_prompt(&st, messages)?,
        _ => {
            return Err(ApiError::bad_request(
                "give either 'content' (text) or 'messages' (a conversation)",
            ))
        }
    };
    Ok(Json(json!({ "tokens": tokens })))
}

async fn detokenize(
    State(st): St,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: api::DetokenizeRequest = api::parse(&body(b)?)?;
    let content = st
        .tokenizer
        .decode(&req.tokens)
        .map_err(|e| ApiError::bad_request(engine::error_chain(&e)))?;
    Ok(Json(json!({ "content": content })))
}

/// Token ids of a conversation, ready for the assistant's turn: the template's structure
/// gives the special tokens, message contents are tokenized as plain text.
fn chat_prompt(st: &AppState, messages: &[api::Message]) -> Result<Vec<u32>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("messages: give at least one message"));
    }
    let messages = messages
        .iter()
        .map(api::Message::to_chat)
        .collect::<Result<Vec<_>, _>>()?;
    let template = st.template.as_ref().ok_or_else(|| {
        ApiError::bad_request(format!(
            "this model has no usable chat template ({}); use /v1/completions",
            st.template_error
        ))
    })?;
    model::encode_chat(template, &st.tokenizer, &messages, true)
        .map_err(|e| ApiError::bad_request(engine::error_chain(&e)))
}

/// Validated generation settings of a request.
struct Params {
    options: GenerateOptions,
    stream: bool,
    include_usage: bool,
}

fn params(st: &AppState, c: &Common) -> Result<Params, ApiError> {
    if let Some(n) = c.n {
        if n != 1 {
            return Err(ApiError::bad_request(format!(
                "n: only n = 1 is supported, got {n}"
            )));
        }
    }
    let temperature = c.temperature.unwrap_or(1.0);
    if !temperature.is_finite() || temperature < 0.0 {
        return Err(ApiError::bad_request(format!(
            "temperature must be ≥ 0, got {temperature}"
        )));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_request(format!(
            "top_p must be in (0, 1], got {top_p}"
        )));
    }
    let max_tokens = match c.max_completion_tokens.or(c.max_tokens) {
        Some(0) => return Err(ApiError::bad_request("max_tokens must be at least 1")),
        Some(n) => (n.min(usize::MAX as u64) as usize).min(st.opts.max_tokens),
        None => st.opts.max_tokens,
    };
    let seed = match c.seed {
        Some(s) => s as u64,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    };
    let stop = match &c.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    Ok(Params {
        options: GenerateOptions {
            max_tokens,
            sampler: SamplerConfig {
                temperature: temperature as f32,
                top_k: c.top_k.unwrap_or(0).min(usize::MAX as u64) as usize,
                top_p: top_p as f32,
                seed,
            },
            stop,
            ..GenerateOptions::default()
        },
        stream: c.stream,
        include_usage: c.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

/// Queue a job; its events arrive on the returned channel.
fn submit(
    st: &AppState,
    prompt: Vec<u32>,
    options: GenerateOptions,
) -> Result<UnboundedReceiver<Event>, ApiError> {
    if st.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the server is shutting down",
        ));
    }
    if !st.ready.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("loading", "the model is loading"));
    }
    if prompt.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty"));
    }
    if prompt.len() > st.opts.ctx {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "exceed_context_size_error",
            "exceed_context_size_error",
            format!(
                "the prompt is {} tokens long but the context holds {}",
                prompt.len(),
                st.opts.ctx
            ),
        ));
    }
    if let Some(&bad) = prompt
        .iter()
        .find(|&&t| t as usize >= st.tokenizer.vocab_size())
    {
        return Err(ApiError::bad_request(format!(
            "token id {bad} is outside the vocabulary"
        )));
    }
    let (tx, rx) = unbounded_channel();
    let job = Job {
        prompt,
        options,
        deadline: Some(Instant::now() + st.opts.timeout),
        events: Box::new(move |e| tx.send(e).is_ok()),
    };
    st.stats.queued.fetch_add(1, Ordering::Relaxed);
    match st.jobs.try_send(job) {
        Ok(()) => Ok(rx),
        Err(e) => {
            st.stats.queued.fetch_sub(1, Ordering::Relaxed);
            Err(match e {
                TrySendError::Full(_) => {
                    st.http.rejected_queue_full.fetch_add(1, Ordering::Relaxed);
                    ApiError::unavailable(
                        "queue_full",
                        "the server is busy (request queue full); try again later",
                    )
                }
                TrySendError::Disconnected(_) => {
                    ApiError::unavailable("shutting_down", "the server is shutting down")
                }
            })
        }
    }
}

fn failure(f: Failure) -> ApiError {
    match f.kind {
        FailureKind::BadRequest => ApiError::bad_request(f.message),
        FailureKind::Timeout => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout_error",
            "timeout",
            f.message,
        ),
        FailureKind::ShuttingDown => ApiError::unavailable("shutting_down", f.message),
        FailureKind::Internal => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            f.message,
        ),
    }
}

fn engine_gone() -> ApiError {
    ApiError::unavailable("shutting_down", "the engine stopped")
}

fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::EndOfGeneration | StopReason::StopString => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
    }
}

fn usage(f: &Finish) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": f.cached_tokens},
    })
}

/// Our own addition (as llama.cpp's server has): what was computed and how long it took.
fn timings(f: &Finish) -> Value {
    json!({
        "prompt_n": f.prompt_tokens - f.cached_tokens,
        "cached_n": f.cached_tokens,
        "predicted_n": f.completion_tokens,
        "time_to_first_token_ms": f.time_to_first_token_ms,
        "predicted_per_token_ms": f.ms_per_token,
    })
}

/// Chat or plain completion: the response shapes differ, the flow does not.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// `id`, `created` and `model` of one response.
struct Envelope {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Envelope {
    fn new(st: &AppState, kind: Kind) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let prefix = match kind {
            Kind::Chat => "chatcmpl",
            Kind::Text => "cmpl",
        };
        Self {
            kind,
            id: format!("{prefix}-{:x}{n:06x}", st.started),
            created,
            model: st.opts.model_name.clone(),
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    fn wrap(&self, chunk: bool, choices: Value, extra: Option<(&str, Value)>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let (Some((k, x)), Some(o)) = (extra, v.as_object_mut()) {
            o.insert(k.to_string(), x);
        }
        v
    }

    /// A streamed piece of text (or the role announcement, or the finish) as one chunk.
    fn chunk(&self, text: Option<&str>, role: bool, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Text => json!({
                "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish,
            }),
        };
        self.wrap(true, json!([choice]), None)
    }

    /// The whole response of a non-streaming request.
    fn complete(&self, text: String, f: &Finish) -> Value {
        let reason = finish_reason(f.reason);
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": reason,
            }),
            Kind::Text => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": reason,
            }),
        };
        let mut v = self.wrap(false, json!([choice]), Some(("usage", usage(f))));
        if let Some(o) = v.as_object_mut() {
            o.insert("timings".into(), timings(f));
        }
        v
    }
}

async fn chat_completions(State(st): St, b: Result<Bytes, BytesRejection>) -> Response {
    st.http.requests.fetch_add(1, Ordering::Relaxed);
    let run = || -> Result<(Vec<u32>, Params), ApiError> {
        let req: ChatRequest = api::parse(&body(b)?)?;
        let params = params(&st, &req.common)?;
        Ok((chat_prompt(&st, &req.messages)?, params))
    };
    match run() {
        Ok((prompt, params)) => respond(&st, Kind::Chat, prompt, params).await,
        Err(e) => e.into_response(),
    }
}

async fn completions(State(st): St, b: Result<Bytes, BytesRejection>) -> Response {
    st.http.requests.fetch_add(1, Ordering::Relaxed);
    let run = || -> Result<(Vec<u32>, Params), ApiError> {
        let req: CompletionRequest = api::parse(&body(b)?)?;
        let params = params(&st, &req.common)?;
        let text = match req.prompt {
            Prompt::Tokens(ids) => return Ok((ids, params)),
            Prompt::Text(t) => t,
            Prompt::Texts(mut v) if v.len() == 1 => v.remove(0),
            Prompt::Texts(v) => {
                return Err(ApiError::bad_request(format!(
                    "prompt: one prompt per request is supported, got {}",
                    v.len()
                )))
            }
        };
        if text.is_empty() {
            return Err(ApiError::bad_request("the prompt is empty"));
        }
        // Raw text: special-token text in it stays plain text.
        let ids = st
            .tokenizer
            .encode_with_bos(&text, false)
            .map_err(|e| ApiError::bad_request(engine::error_chain(&e)))?;
        Ok((ids, params))
    };
    match run() {
        Ok((prompt, params)) => respond(&st, Kind::Text, prompt, params).await,
        Err(e) => e.into_response(),
    }
}

async fn respond(st: &AppState, kind: Kind, prompt: Vec<u32>, p: Params) -> Response {
    let rx = match submit(st, prompt, p.options) {
        Ok(rx) => rx,
        Err(e) => return e.into_response(),
    };
    let env = Envelope::new(st, kind);
    if p.stream {
        stream(rx, env, p.include_usage, st.opts.keep_alive)
    } else {
        match collect(rx).await {
            Ok((text, finish)) => Json(env.complete(text, &finish)).into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// Wait for the whole completion.
async fn collect(mut rx: UnboundedReceiver<Event>) -> Result<(String, Finish), ApiError> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Started { .. } => {}
            Event::Text(t) => text.push_str(&t),
            Event::Finished(f) => return Ok((text, f)),
            Event::Failed(f) => return Err(failure(f)),
        }
    }
    Err(engine_gone())
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

/// The SSE stream: role chunk (chat), content chunks, a finish chunk, the usage chunk when
/// asked for, `[DONE]`; a failure after the start is one `data: {"error": ...}` event.
fn stream(
    rx: UnboundedReceiver<Event>,
    env: Envelope,
    include_usage: bool,
    keep_alive: std::time::Duration,
) -> Response {
    struct S {
        rx: UnboundedReceiver<Event>,
        env: Envelope,
        include_usage: bool,
        pending: VecDeque<SseEvent>,
        done: bool,
    }
    let init = S {
        rx,
        env,
        include_usage,
        pending: VecDeque::new(),
        done: false,
    };
    let events = futures_util::stream::unfold(init, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), s));
            }
            if s.done {
                return None;
            }
            let ev = s.rx.recv().await;
            let env = &s.env;
            match ev {
                Some(Event::Started { .. }) => {
                    if env.kind == Kind::Chat {
                        s.pending.push_back(data(&env.chunk(Some(""), true, None)));
                    }
                }
                Some(Event::Text(t)) => {
                    s.pending.push_back(data(&env.chunk(Some(&t), false, None)))
                }
                Some(Event::Finished(f)) => {
                    let reason = finish_reason(f.reason);
                    let last = match env.kind {
                        Kind::Chat => env.chunk(None, false, Some(reason)),
                        Kind::Text => env.chunk(Some(""), false, Some(reason)),
                    };
                    s.pending.push_back(data(&last));
                    if s.include_usage {
                        let mut u = env.wrap(true, json!([]), Some(("usage", usage(&f))));
                        if let Some(o) = u.as_object_mut() {
                            o.insert("timings".into(), timings(&f));
                        }
                        s.pending.push_back(data(&u));
                    }
                    s.pending.push_back(SseEvent::default().data("[DONE]"));
                    s.done = true;
                }
                Some(Event::Failed(f)) => {
                    s.pending.push_back(data(&failure(f).body()));
                    s.done = true;
                }
                None => {
                    s.pending.push_back(data(&engine_gone().body()));
                    s.done = true;
                }
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
        .into_response()
}
