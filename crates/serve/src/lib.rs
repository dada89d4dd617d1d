//! `espresso serve`: an OpenAI-compatible HTTP server over one loaded model.
//!
//! This crate owns the HTTP side only: routes (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/models`, `/health`, `/tokenize`, `/detokenize`, `/metrics`), request validation,
//! OpenAI-shaped responses, errors and SSE streams, the API key and the limits. Generation is
//! [`engine::batch`]: one engine thread owns the backend and decodes every request together
//! (continuous batching, per-slot KV caches with prefix reuse, cancellation). Handlers hand it
//! [`engine::batch::Job`]s through a bounded queue and read the job's events from a channel;
//! a client that goes away drops that channel, which cancels the job at the next step.
//!
//! Built on axum + tokio; request and response types are our own (serde), in [`api`].

pub mod api;
mod metrics;
mod routes;

use engine::batch::{self, BatchOptions, Job, Stats};
use engine::{Backend, Drafter};
use model::chat::ChatTemplate;
use model::tokenizer::Tokenizer;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

/// Everything `espresso serve` can set.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    /// 0 picks a free port (printed at start).
    pub port: u16,
    /// Requests must carry `Authorization: Bearer KEY` (all routes but `/health`).
    pub api_key: Option<String>,
    /// Requests decoded at once.
    pub parallel: usize,
    /// Requests that may wait for a slot; more are refused with 503.
    pub queue: usize,
    /// Positions per request (prompt + completion).
    pub ctx: usize,
    /// Cap on `max_tokens` (and its value when a request gives none).
    pub max_tokens: usize,
    /// A request that has not finished after this long fails.
    pub timeout: Duration,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Seconds between SSE keep-alive comments while a stream waits.
    pub keep_alive: Duration,
    /// Name reported by `/v1/models` and in responses.
    pub model_name: String,
    /// Tokens per decode pass of a request with drafting (see `engine::batch::BatchOptions`).
    pub draft_max: usize,
}

/// What the engine thread runs: the backend and the drafter that proposes tokens for it.
pub struct Engine<'m> {
    pub backend: Box<dyn Backend + 'm>,
    pub drafter: Box<dyn Drafter + 'm>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("server failed: {0}")]
    Http(std::io::Error),
    #[error("cannot load the model: {0}")]
    Load(String),
}

/// State shared by all handlers.
pub(crate) struct AppState {
    opts: ServeOptions,
    tokenizer: Arc<Tokenizer>,
    template: Option<ChatTemplate>,
    /// Why there is no template, for the error of a chat request.
    template_error: String,
    jobs: SyncSender<Job>,
    stats: Arc<Stats>,
    /// The backend is built and the engine runs.
    ready: Arc<AtomicBool>,
    shutting_down: Arc<AtomicBool>,
    /// SHA-256 of the API key: compared in constant time, whatever the length.
    key_hash: Option<[u8; 32]>,
    /// Unix time the server started (`created` of `/v1/models`).
    started: u64,
    /// HTTP-level counters for `/metrics`.
    http: metrics::HttpCounters,
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Run the server until Ctrl-C or SIGTERM (or the backend fails to load). `make_engine` runs
/// on the engine thread, after the port is bound: `/health` answers 503 until it returns.
/// `on_listening` gets the bound address (to print it).
pub fn run<'m>(
    opts: ServeOptions,
    tokenizer: Tokenizer,
    template: Result<ChatTemplate, String>,
    make_engine: impl FnOnce() -> Result<Engine<'m>, String> + Send + 'm,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let addr = format!("{}:{}", opts.host, opts.port);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&addr))
        .map_err(|source| ServeError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(ServeError::Http)?;

    let tokenizer = Arc::new(tokenizer);
    let stats = Arc::new(Stats::default());
    let ready = Arc::new(AtomicBool::new(false));
    let shutting_down = Arc::new(AtomicBool::new(false));
    let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel::<Job>(opts.queue.max(1));
    let (template, template_error) = match template {
        Ok(t) => (Some(t), String::new()),
        Err(e) => (None, e),
    };
    let state = Arc::new(AppState {
        key_hash: opts.api_key.as_deref().map(sha256),
        opts: opts.clone(),
        tokenizer: Arc::clone(&tokenizer),
        template,
        template_error,
        jobs: jobs_tx,
        stats: Arc::clone(&stats),
        ready: Arc::clone(&ready),
        shutting_down: Arc::clone(&shutting_down),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        http: Default::default(),
    });
    let batch_opts = BatchOptions {
        slots: opts.parallel.max(1),
        ctx: opts.ctx,
        prefill_per_pass: 256,
        shutdown_grace: Duration::from_secs(5),
        draft_max: opts.draft_max,
    };
    on_listening(local);

    let (engine_done_tx, engine_done_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    std::thread::scope(|scope| {
        let engine = {
            let (tokenizer, stats, ready, stop) = (
                Arc::clone(&tokenizer),
                Arc::clone(&stats),
                Arc::clone(&ready),
                Arc::clone(&shutting_down),
            );
            std::thread::Builder::new()
                .name("espresso-engine".into())
                .spawn_scoped(scope, move || {
                    let result = make_engine().map(|mut engine| {
                        let backend = &mut engine.backend;
                        if backend.max_slots() < batch_opts.slots {
                            eprintln!(
                                "note: the {} backend decodes {} request(s) at a time; \
                                 --parallel {} lowered to that",
                                backend.name(),
                                backend.max_slots(),
                                batch_opts.slots
                            );
                        }
                        ready.store(true, Ordering::SeqCst);
                        eprintln!("model loaded; serving");
                        batch::run(
                            engine.backend.as_mut(),
                            engine.drafter.as_mut(),
                            &tokenizer,
                            &jobs_rx,
                            &batch_opts,
                            &stats,
                            &stop,
                        );
                    });
                    let _ = engine_done_tx.send(result.clone());
                    result
                })
                .map_err(|e| ServeError::Load(format!("cannot start the engine thread: {e}")))?
        };
        let app = routes::router(Arc::clone(&state));
        let shutdown_flag = Arc::clone(&shutting_down);
        let served = rt.block_on(async move {
            let stop = async move {
                tokio::select! {
                    _ = shutdown_signal() => eprintln!("shutting down: finishing in-flight requests"),
                    r = engine_done_rx => if let Ok(Err(e)) = r { eprintln!("error: {e}") },
                }
                shutdown_flag.store(true, Ordering::SeqCst);
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        });
        // The engine stops on the flag once in-flight requests are done.
        shutting_down.store(true, Ordering::SeqCst);
        drop(state);
        let engine_result = engine
            .join()
            .unwrap_or_else(|_| Err("the engine thread panicked".into()));
        served.map_err(ServeError::Http)?;
        engine_result.map_err(ServeError::Load)
    })
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
