//! Continuous batching: many requests decoded together on one backend.
//!
//! The server puts [`Job`]s on a bounded channel; [`run`] owns the backend and up to
//! `slots` requests at a time, each in its own KV cache slot. Every pass gathers one piece of
//! work per active request: a chunk of its prompt while it is prefilling, else its last
//! sampled token. They all go to [`Backend::forward_batch`] together, so the decode steps of
//! all requests share one pass over the weights, and new requests join between passes.
//! A new request takes the free slot whose cache shares the longest prefix with its prompt
//! (the previous turn of a chat) and skips recomputing it. A request whose event sink reports
//! the client gone is cancelled at the next step and frees its slot.

use crate::backend::{Backend, Feed, SlotInput};
use crate::draft::{proposals_wanted, verify, Drafter};
use crate::generate::{Decoding, GenerateOptions, Step, StopReason};
use crate::session::SlotCache;
use model::tokenizer::Tokenizer;
use model::tokenizer::TokenizerError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// What happens to a request, in order: `Started`, any number of `Text`, then `Finished` or
/// `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The request has a slot; `cached_tokens` prompt tokens are reused from its cache.
    Started {
        cached_tokens: usize,
    },
    /// Text that is final (never part of a stop string).
    Text(String),
    Finished(Finish),
    /// The request could not complete.
    Failed(Failure),
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The request itself is unusable (empty or too long a prompt, bad sampling settings).
    BadRequest,
    /// Its deadline passed.
    Timeout,
    /// The server is stopping.
    ShuttingDown,
    /// The backend or the detokenizer failed.
    Internal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    fn event(kind: FailureKind, message: impl Into<String>) -> Event {
        Event::Failed(Self {
            kind,
            message: message.into(),
        })
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub reason: StopReason,
    pub prompt_tokens: usize,
    /// Prompt tokens taken from the slot's cache instead of being recomputed.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// From taking the request off the queue to its first sampled token, milliseconds.
    pub time_to_first_token_ms: f64,
    /// Mean time between later tokens, milliseconds (0 with fewer than two tokens).
    pub ms_per_token: f64,
}

/// Receives a request's events; returns `false` when nobody listens any more (the client
/// disconnected), which cancels the request.
pub type EventSink = Box<dyn FnMut(Event) -> bool + Send>;

/// One request for the batcher.
pub struct Job {
    /// Prompt token ids (BOS included if the model wants one); not empty.
    pub prompt: Vec<u32>,
    /// Sampling, stop strings and `max_tokens`; `cached_prefix` is ignored (the batcher finds
    /// the reusable prefix itself).
    pub options: GenerateOptions,
    /// Give up (with `Event::Failed`) when this instant passes.
    pub deadline: Option<Instant>,
    pub events: EventSink,
}

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Requests decoded at once (KV cache slots); at most the backend's `max_slots`.
    pub slots: usize,
    /// Positions per slot (at most the model's context length).
    pub ctx: usize,
    /// Prompt tokens processed per pass over all prefilling requests, so that a long prompt
    /// does not stall the others' decoding for its whole prefill.
    pub prefill_per_pass: usize,
    /// After `shutdown` is set, active requests may finish for this long before they are
    /// cancelled; queued ones fail at once.
    pub shutdown_grace: Duration,
    /// Tokens per decode pass of a request: the sampled one and up to `draft_max - 1` drafted
    /// ones, verified together (0 or 1: no drafting).
    pub draft_max: usize,
}

/// Counters for `/metrics`, updated by [`run`] (queue depth by the producer and [`run`]).
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests waiting in the queue (the producer increments, the batcher decrements).
    pub queued: AtomicU64,
    pub active: AtomicU64,
    pub requests_started: AtomicU64,
    pub requests_finished: AtomicU64,
    pub requests_failed: AtomicU64,
    pub cancellations: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// Batched passes over the weights, and the sequences they carried in all.
    pub passes: AtomicU64,
    pub pass_inputs: AtomicU64,
    /// Drafted tokens verified, and those kept.
    pub draft_proposed: AtomicU64,
    pub draft_accepted: AtomicU64,
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

/// A request in a slot.
struct Active<'t> {
    events: EventSink,
    decoding: Decoding<'t>,
    prompt: Vec<u32>,
    cached_tokens: usize,
    /// The sampled token to feed next (decoding); `None` while prefilling: then the slot's
    /// cache holds the first `cache.len()` prompt tokens.
    next: Option<u32>,
    /// The prompt and the tokens chosen so far (`next` last), what the drafter reads.
    context: Vec<u32>,
    /// Final hidden state of the row that chose `next`, if the backend keeps them.
    hidden: Option<Vec<f32>>,
    deadline: Option<Instant>,
    /// Generated tokens already added to `Stats::completion_tokens`.
    counted: usize,
    taken: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

struct Slot<'t> {
    cache: SlotCache,
    active: Option<Active<'t>>,
}

/// Serve jobs from `jobs` until the channel closes (all senders dropped) with nothing left to
/// do, or until `shutdown` is set and in-flight requests are done (see
/// [`BatchOptions::shutdown_grace`]).
pub fn run(
    backend: &mut dyn Backend,
    drafter: &mut dyn Drafter,
    tokenizer: &Tokenizer,
    jobs: &Receiver<Job>,
    opts: &BatchOptions,
    stats: &Stats,
    shutdown: &AtomicBool,
) {
    let n_slots = opts.slots.clamp(1, backend.max_slots());
    let ctx = opts.ctx.min(backend.config().context_length);
    let mut slots: Vec<Slot> = (0..n_slots)
        .map(|_| Slot {
            cache: SlotCache::default(),
            active: None,
        })
        .collect();
    let mut closed = false;
    let mut shutdown_at: Option<Instant> = None;
    loop {
        if shutdown.load(Ordering::Relaxed) && shutdown_at.is_none() {
            shutdown_at = Some(Instant::now());
        }
        let busy = slots.iter().filter(|s| s.active.is_some()).count();
        stats.active.store(busy as u64, Ordering::Relaxed);
        // Take new jobs while a slot is free (waiting for one when idle).
        if !closed && shutdown_at.is_none() {
            let mut busy = busy;
            while busy < n_slots {
                let job = if busy == 0 {
                    match jobs.recv_timeout(Duration::from_millis(100)) {
                        Ok(j) => j,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                } else {
                    match jobs.try_recv() {
                        Ok(j) => j,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                };
                stats.queued.fetch_sub(1, Ordering::Relaxed);
                if admit(&mut slots, job, tokenizer, ctx, stats) {
                    busy += 1;
                }
            }
        }
        if let Some(t) = shutdown_at {
            // Queued requests fail at once; active ones get the grace period.
            while let Ok(mut job) = jobs.try_recv() {
                stats.queued.fetch_sub(1, Ordering::Relaxed);
                add(&stats.requests_failed, 1);
                (job.events)(Failure::event(
                    FailureKind::ShuttingDown,
                    "the server is shutting down",
                ));
            }
            if t.elapsed() >= opts.shutdown_grace {
                for slot in &mut slots {
                    fail(
                        slot,
                        FailureKind::ShuttingDown,
                        "the server is shutting down",
                        stats,
                    );
                }
            }
        }
        let busy = slots.iter().filter(|s| s.active.is_some()).count();
        stats.active.store(busy as u64, Ordering::Relaxed);
        if busy == 0 {
            if closed || shutdown_at.is_some() {
                return;
            }
            continue;
        }
        pass(backend, drafter, &mut slots, opts, ctx, stats);
    }
}

/// Put `job` in the free slot that can reuse most of its prompt; false if it failed at once.
fn admit<'t>(
    slots: &mut [Slot<'t>],
    mut job: Job,
    tokenizer: &'t Tokenizer,
    ctx: usize,
    stats: &Stats,
) -> bool {
    let refuse = |job: &mut Job, why: String| {
        add(&stats.requests_failed, 1);
        (job.events)(Failure::event(FailureKind::BadRequest, why));
        false
    };
    if job.prompt.is_empty() {
        return refuse(&mut job, "the prompt is empty".into());
    }
    if job.prompt.len() > ctx {
        let why = format!(
            "the prompt is {} tokens long but the context holds {ctx}",
            job.prompt.len()
        );
        return refuse(&mut job, why);
    }
    if let Some(&bad) = job
        .prompt
        .iter()
        .find(|&&t| t as usize >= tokenizer.vocab_size())
    {
        return refuse(
            &mut job,
            format!("token id {bad} is outside the vocabulary"),
        );
    }
    let decoding = match Decoding::new(tokenizer, &job.options) {
        Ok(d) => d,
        Err(e) => return refuse(&mut job, crate::error_chain(&e)),
    };
    let Some(slot) = slots
        .iter_mut()
        .filter(|s| s.active.is_none())
        .max_by_key(|s| {
            (
                s.cache.reusable(&job.prompt),
                std::cmp::Reverse(s.cache.tokens().len()),
            )
        })
    else {
        return refuse(&mut job, "no free slot".into());
    };
    let cached = slot.cache.reusable(&job.prompt);
    slot.cache.truncate(cached);
    add(&stats.requests_started, 1);
    add(&stats.prompt_tokens, job.prompt.len());
    add(&stats.cached_prompt_tokens, cached);
    if !(job.events)(Event::Started {
        cached_tokens: cached,
    }) {
        add(&stats.cancellations, 1);
        return false;
    }
    slot.active = Some(Active {
        events: job.events,
        decoding,
        context: job.prompt.clone(),
        prompt: job.prompt,
        cached_tokens: cached,
        next: None,
        hidden: None,
        deadline: job.deadline,
        counted: 0,
        taken: Instant::now(),
        first_token: None,
        last_token: None,
    });
    true
}

/// End the slot's request, if it has one, with a failure.
fn fail(slot: &mut Slot, kind: FailureKind, why: &str, stats: &Stats) {
    if let Some(mut a) = slot.active.take() {
        add(&stats.requests_failed, 1);
        (a.events)(Failure::event(kind, why));
    }
}

/// One slot's share of a pass.
struct Work {
    slot: usize,
    /// Prompt tokens, or the token to feed followed by drafted ones.
    tokens: Vec<u32>,
    pos: usize,
    feed: Feed,
    /// Whether the logits choose a token (a prompt's last piece, or a decode step).
    sample: bool,
}

/// One batched pass: prefill chunks and decode steps (with drafted tokens to verify) of every
/// active slot.
fn pass(
    backend: &mut dyn Backend,
    drafter: &mut dyn Drafter,
    slots: &mut [Slot],
    opts: &BatchOptions,
    ctx: usize,
    stats: &Stats,
) {
    let now = Instant::now();
    for slot in slots.iter_mut() {
        if let Some(a) = &slot.active {
            if a.deadline.is_some_and(|d| now >= d) {
                fail(slot, FailureKind::Timeout, "the request timed out", stats);
            }
        }
    }
    let mut work: Vec<Work> = Vec::new();
    let mut budget = opts.prefill_per_pass.max(1);
    for (i, slot) in slots.iter().enumerate() {
        let Some(a) = &slot.active else { continue };
        // The cache holds exactly the positions written so far.
        let pos = slot.cache.tokens().len();
        if let Some(next) = a.next {
            let want = proposals_wanted(opts.draft_max, pos, ctx, a.decoding.left());
            let mut tokens = vec![next];
            if want > 0 {
                let mut proposals = drafter.propose(&a.context, a.hidden.as_deref(), want);
                proposals.truncate(want);
                tokens.extend(proposals);
            }
            work.push(Work {
                slot: i,
                tokens,
                pos,
                feed: Feed::Decode,
                sample: true,
            });
        } else if budget > 0 {
            let rest = &a.prompt[pos..];
            let take = rest.len().min(budget);
            budget -= take;
            work.push(Work {
                slot: i,
                tokens: rest[..take].to_vec(),
                pos,
                feed: Feed::Prompt,
                sample: take == rest.len(),
            });
        }
    }
    if work.is_empty() {
        return;
    }
    let inputs: Vec<SlotInput> = work
        .iter()
        .map(|w| SlotInput {
            slot: w.slot,
            tokens: &w.tokens,
            pos: w.pos,
            feed: w.feed,
        })
        .collect();
    let result = backend.forward_batch(&inputs);
    add(&stats.passes, 1);
    add(&stats.pass_inputs, inputs.len());
    let logits = match result {
        Ok(l) => l,
        Err(e) => {
            // The slots' caches are in an unknown state: forget them.
            for w in &work {
                slots[w.slot].cache.clear();
                let why = format!("backend error: {}", crate::error_chain(&e));
                fail(&mut slots[w.slot], FailureKind::Internal, &why, stats);
            }
            return;
        }
    };
    let (vocab, dim) = (backend.config().vocab_size, backend.config().dim);
    let hidden = backend.hidden_states();
    let mut first_row = 0;
    for (w, input) in work.iter().zip(&inputs) {
        let n_rows = input.logit_rows();
        let rows = &logits[first_row * vocab..(first_row + n_rows) * vocab];
        let row_base = first_row;
        first_row += n_rows;
        let slot = &mut slots[w.slot];
        if w.feed == Feed::Prompt {
            slot.cache.extend(&w.tokens);
        }
        let Some(a) = slot.active.as_mut() else {
            continue;
        };
        a.next = None;
        if !w.sample {
            continue;
        }
        let proposals = match w.feed {
            Feed::Prompt => &[][..],
            Feed::Decode => &w.tokens[1..],
        };
        let pos = w.pos + w.tokens.len() - n_rows;
        let mut text = String::new();
        let mut reason = None;
        let verified = verify(
            rows,
            vocab,
            proposals,
            pos,
            ctx,
            &mut |row, proposal, room| {
                let step = a
                    .decoding
                    .step_drafted(row, proposal, room, &mut |s| text.push_str(s))?;
                Ok::<_, TokenizerError>(match step {
                    Step::Feed(t) => Some(t),
                    Step::Done(r) => {
                        reason = Some(r);
                        None
                    }
                })
            },
        );
        if w.feed == Feed::Decode {
            let kept = match &verified {
                Ok(v) => 1 + v.accepted,
                Err(_) => 0,
            };
            slot.cache.extend(&w.tokens[..kept]);
            add(&stats.draft_proposed, proposals.len());
            add(&stats.draft_accepted, kept.saturating_sub(1));
        }
        let now = Instant::now();
        a.first_token.get_or_insert(now);
        a.last_token = Some(now);
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                let why = format!("cannot decode the output: {}", crate::error_chain(&e));
                fail(slot, FailureKind::Internal, &why, stats);
                continue;
            }
        };
        a.context.extend(&proposals[..verified.accepted]);
        let n = a.decoding.tokens().len();
        add(&stats.completion_tokens, n - a.counted);
        a.counted = n;
        let mut alive = text.is_empty() || (a.events)(Event::Text(text));
        match (verified.next, reason) {
            (Some((t, row)), _) if alive => {
                a.next = Some(t);
                a.context.push(t);
                let r = row_base + row;
                a.hidden = hidden
                    .and_then(|h| h.get(r * dim..(r + 1) * dim))
                    .map(<[f32]>::to_vec);
            }
            (Some(_), _) => {}
            (None, reason) => {
                let reason = reason.unwrap_or(StopReason::MaxTokens);
                let mut rest = String::new();
                a.decoding.finish(reason, &mut |s| rest.push_str(s));
                if alive && !rest.is_empty() {
                    alive = (a.events)(Event::Text(rest));
                }
                if alive {
                    add(&stats.requests_finished, 1);
                    let first = a.first_token.unwrap_or(now);
                    let finish = Finish {
                        reason,
                        prompt_tokens: a.prompt.len(),
                        cached_tokens: a.cached_tokens,
                        completion_tokens: n,
                        time_to_first_token_ms: (first - a.taken).as_secs_f64() * 1e3,
                        ms_per_token: if n > 1 {
                            (now - first).as_secs_f64() * 1e3 / (n - 1) as f64
                        } else {
                            0.0
                        },
                    };
                    alive = (a.events)(Event::Finished(finish));
                    slot.active = None;
                    if alive {
                        continue;
                    }
                }
            }
        }
        if !alive {
            add(&stats.cancellations, 1);
            slot.active = None;
        }
    }
}
