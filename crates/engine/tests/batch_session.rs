//! The continuous batcher (`engine::batch::run`) and `engine::Session` against a toy backend
//! whose "KV cache" is the token sequence itself: the next token is a hash of everything in
//! the slot, so feeding a wrong position, reusing a wrong prefix or mixing slots changes the
//! output. Each request's text must equal what `generate` gives alone; batching, prefix reuse
//! (across server requests and chat turns), cancellation, timeouts, shutdown and bad requests
//! are checked through the events and the stats. Uses the real SmolLM2 tokenizer
//! (`espresso pull`; fails, does not skip, without it).

use engine::batch::{self, BatchOptions, Event, FailureKind, Finish, Job, Stats};
use engine::{generate, Backend, BackendError, GenerateOptions, NoDraft, SlotInput, StopReason};
use model::{GgufFile, LlamaConfig, Tokenizer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn tokenizer() -> Tokenizer {
    let path = model::cache::default_model_path()
        .unwrap_or_else(|e| panic!("the real model's tokenizer is needed: {e}"));
    Tokenizer::from_gguf(&GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Ordinary word tokens the toy model picks from (never end-of-generation).
const WORDS: [u32; 8] = [253, 314, 354, 260, 288, 281, 1205, 2056];

/// The toy's next token after `seq` (no end-of-generation).
fn word_after(seq: &[u32]) -> u32 {
    let h = seq.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
        (h ^ u64::from(t)).wrapping_mul(0x100_0000_01b3)
    });
    WORDS[(h >> 33) as usize % WORDS.len()]
}

/// Drafts the toy's own chain (every proposal right) or, when `wrong`, a token it never picks.
struct ToyDraft {
    wrong: bool,
}

impl engine::Drafter for ToyDraft {
    fn name(&self) -> &str {
        "toy"
    }
    fn propose(&mut self, context: &[u32], _: Option<&[f32]>, max: usize) -> Vec<u32> {
        let mut seq = context.to_vec();
        for _ in 0..max {
            seq.push(if self.wrong { 1 } else { word_after(&seq) });
        }
        seq.split_off(context.len())
    }
}

/// What the toy backend saw, shared with the test.
#[derive(Default)]
struct Log {
    passes: usize,
    max_inputs: usize,
    /// Tokens computed (fed) in all.
    computed: usize,
}

struct Toy {
    config: LlamaConfig,
    slots: Vec<Vec<u32>>,
    log: Arc<Mutex<Log>>,
    /// The token after this many positions is end-of-generation (for EOG tests).
    eog_at: Option<usize>,
    eog: u32,
}

impl Toy {
    fn new(vocab: usize, ctx: usize, n_slots: usize, eog: u32) -> Self {
        let mut config = LlamaConfig::synthetic();
        config.vocab_size = vocab;
        config.context_length = ctx;
        Self {
            config,
            slots: vec![Vec::new(); n_slots],
            log: Arc::default(),
            eog_at: None,
            eog,
        }
    }

    fn next_of(&self, seq: &[u32]) -> u32 {
        if self.eog_at == Some(seq.len()) {
            return self.eog;
        }
        word_after(seq)
    }

    fn one_hot(&self, t: u32) -> Vec<f32> {
        let mut l = vec![0f32; self.config.vocab_size];
        l[t as usize] = 10.0;
        l
    }
}

impl Backend for Toy {
    fn name(&self) -> String {
        "toy".into()
    }
    fn config(&self) -> &LlamaConfig {
        &self.config
    }
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        self.forward_batch(&[SlotInput {
            slot: 0,
            tokens,
            pos,
            feed: engine::Feed::Prompt,
        }])
    }
    fn max_slots(&self) -> usize {
        self.slots.len()
    }
    fn forward_batch(&mut self, inputs: &[SlotInput]) -> Result<Vec<f32>, BackendError> {
        engine::backend::check_slots(inputs, self.slots.len())?;
        let mut out = Vec::new();
        {
            let mut log = self.log.lock().unwrap();
            log.passes += 1;
            log.max_inputs = log.max_inputs.max(inputs.len());
            log.computed += inputs.iter().map(|i| i.tokens.len()).sum::<usize>();
        }
        for i in inputs {
            let seq = &mut self.slots[i.slot];
            assert!(
                i.pos <= seq.len(),
                "slot {}: position {} skips ahead of {}",
                i.slot,
                i.pos,
                seq.len()
            );
            seq.truncate(i.pos);
            seq.extend_from_slice(i.tokens);
            let seq = seq.clone();
            for k in (seq.len() - i.logit_rows()..seq.len()).map(|k| k + 1) {
                out.extend(self.one_hot(self.next_of(&seq[..k])));
            }
        }
        Ok(out)
    }
}

fn opts(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ..Default::default()
    }
}

/// A job whose events are collected into `sink`; the sink stops listening after `listen`
/// events when given (a client that disconnects).
fn job(
    prompt: Vec<u32>,
    o: GenerateOptions,
    sink: &Arc<Mutex<Vec<Event>>>,
    listen: Option<usize>,
) -> Job {
    let sink = Arc::clone(sink);
    Job {
        prompt,
        options: o,
        deadline: None,
        events: Box::new(move |e| {
            let mut s = sink.lock().unwrap();
            if listen.is_some_and(|n| s.len() >= n) {
                return false;
            }
            s.push(e);
            true
        }),
    }
}

fn run(backend: &mut Toy, tok: &Tokenizer, jobs: Vec<Job>, slots: usize, stats: &Stats) {
    run_drafted(backend, &mut NoDraft, 1, tok, jobs, slots, stats);
}

fn run_drafted(
    backend: &mut Toy,
    drafter: &mut dyn engine::Drafter,
    draft_max: usize,
    tok: &Tokenizer,
    jobs: Vec<Job>,
    slots: usize,
    stats: &Stats,
) {
    let (tx, rx) = sync_channel(jobs.len().max(1));
    for j in jobs {
        stats.queued.fetch_add(1, Ordering::Relaxed);
        tx.send(j).unwrap();
    }
    drop(tx);
    let o = BatchOptions {
        slots,
        ctx: backend.config.context_length,
        prefill_per_pass: 16,
        shutdown_grace: Duration::ZERO,
        draft_max,
    };
    batch::run(
        backend,
        drafter,
        tok,
        &rx,
        &o,
        stats,
        &AtomicBool::new(false),
    );
}

fn text_and_finish(events: &[Event]) -> (String, Finish) {
    assert!(
        matches!(events.first(), Some(Event::Started { .. })),
        "first event: {events:?}"
    );
    let mut text = String::new();
    for e in &events[1..events.len() - 1] {
        match e {
            Event::Text(t) => text.push_str(t),
            other => panic!("unexpected event {other:?}"),
        }
    }
    match events.last() {
        Some(Event::Finished(f)) => (text, f.clone()),
        other => panic!("last event: {other:?}"),
    }
}

/// What each prompt gives alone (`generate` on a one-slot toy), `max_tokens[i]` tokens.
fn alone(tok: &Tokenizer, prompts: &[Vec<u32>], max_tokens: &[usize]) -> Vec<engine::Generation> {
    prompts
        .iter()
        .zip(max_tokens)
        .map(|(p, &n)| {
            let mut alone = Toy::new(tok.vocab_size(), 256, 1, 0);
            generate(&mut alone, tok, p, &opts(n), &mut |_| {}).expect("alone")
        })
        .collect()
}

type Sink = Arc<Mutex<Vec<Event>>>;

/// One job per prompt, each with its own event sink.
fn jobs_for(prompts: &[Vec<u32>], max_tokens: &[usize]) -> (Vec<Sink>, Vec<Job>) {
    let sinks: Vec<Sink> = prompts.iter().map(|_| Sink::default()).collect();
    let jobs = prompts
        .iter()
        .zip(max_tokens)
        .zip(&sinks)
        .map(|((p, &n), s)| job(p.clone(), opts(n), s, None))
        .collect();
    (sinks, jobs)
}

#[test]
fn batched_requests_give_the_same_text_as_alone() {
    let tok = tokenizer();
    let vocab = tok.vocab_size();
    let prompts: Vec<Vec<u32>> = (0..7)
        .map(|i| {
            (0..(5 + 9 * i))
                .map(|k| 300 + ((k * 7 + i) % 50) as u32)
                .collect()
        })
        .collect();
    let max_tokens = [12, 3, 20, 1, 9, 15, 6];
    let want = alone(&tok, &prompts, &max_tokens);
    let (sinks, jobs) = jobs_for(&prompts, &max_tokens);
    let mut toy = Toy::new(vocab, 256, 3, 0);
    let stats = Stats::default();
    run(&mut toy, &tok, jobs, 3, &stats);
    for (i, (s, w)) in sinks.iter().zip(&want).enumerate() {
        let (text, fin) = text_and_finish(&s.lock().unwrap());
        assert_eq!(text, w.text, "request {i}");
        assert_eq!(fin.completion_tokens, w.tokens.len(), "request {i}");
        assert_eq!(fin.prompt_tokens, prompts[i].len());
        assert_eq!(fin.reason, StopReason::MaxTokens);
    }
    let log = toy.log.lock().unwrap();
    assert_eq!(log.max_inputs, 3, "three requests share passes");
    let steps: usize = max_tokens.iter().map(|n| n - 1).sum();
    assert!(
        log.passes < steps,
        "{} passes for {steps} decode steps: not batched",
        log.passes
    );
    assert_eq!(stats.requests_finished.load(Ordering::Relaxed), 7);
    assert_eq!(
        stats.completion_tokens.load(Ordering::Relaxed) as usize,
        max_tokens.iter().sum::<usize>()
    );
    assert_eq!(stats.queued.load(Ordering::Relaxed), 0);
    assert_eq!(stats.cancellations.load(Ordering::Relaxed), 0);
}

#[test]
fn drafted_batched_requests_give_the_same_text_as_alone() {
    let tok = tokenizer();
    let vocab = tok.vocab_size();
    let prompts: Vec<Vec<u32>> = (0..5)
        .map(|i| {
            (0..(4 + 7 * i))
                .map(|k| 400 + ((k * 5 + i) % 40) as u32)
                .collect()
        })
        .collect();
    let max_tokens = [14, 2, 9, 1, 17];
    let want = alone(&tok, &prompts, &max_tokens);
    for (wrong, draft_max) in [(false, 2), (false, 4), (true, 3)] {
        let (sinks, jobs) = jobs_for(&prompts, &max_tokens);
        let mut toy = Toy::new(vocab, 256, 2, 0);
        let stats = Stats::default();
        let mut drafter = ToyDraft { wrong };
        run_drafted(&mut toy, &mut drafter, draft_max, &tok, jobs, 2, &stats);
        let what = format!("wrong drafts {wrong}, {draft_max} tokens per pass");
        for (i, (s, w)) in sinks.iter().zip(&want).enumerate() {
            let (text, fin) = text_and_finish(&s.lock().unwrap());
            assert_eq!(text, w.text, "request {i}, {what}");
            assert_eq!(fin.completion_tokens, w.tokens.len(), "request {i}, {what}");
        }
        let proposed = stats.draft_proposed.load(Ordering::Relaxed) as usize;
        let accepted = stats.draft_accepted.load(Ordering::Relaxed) as usize;
        // Each request decides its tokens after the first in passes of up to draft_max.
        let steps: usize = max_tokens.iter().map(|n| n - 1).sum();
        if wrong {
            assert_eq!(accepted, 0, "{what}");
            assert!(proposed > 0, "{what}");
        } else {
            assert_eq!(accepted, proposed, "{what}");
            let passes: usize = max_tokens.iter().map(|n| (n - 1).div_ceil(draft_max)).sum();
            assert_eq!(
                steps - accepted,
                passes,
                "{what}: decode passes per request"
            );
        }
    }
}

/// Wait until the sink holds a final event.
fn wait_done(sink: &Arc<Mutex<Vec<Event>>>) {
    let t = Instant::now();
    while !matches!(
        sink.lock().unwrap().last(),
        Some(Event::Finished(_) | Event::Failed(_))
    ) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "request did not finish"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_follow_up_prompt_reuses_its_slot_cache() {
    let tok = tokenizer();
    let vocab = tok.vocab_size();
    let mut toy = Toy::new(vocab, 256, 2, 0);
    let log = Arc::clone(&toy.log);
    let first: Vec<u32> = (0..40).map(|k| 400 + k).collect();
    let stats = Stats::default();
    let (s1, s2, s3) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let (tx, rx) = sync_channel(4);
    let o = BatchOptions {
        slots: 2,
        ctx: 256,
        prefill_per_pass: 16,
        shutdown_grace: Duration::ZERO,
        draft_max: 1,
    };
    let mut second = first.clone();
    let mut computed = 0;
    std::thread::scope(|scope| {
        let (toy, tok, stats, o) = (&mut toy, &tok, &stats, &o);
        let engine = scope.spawn(move || {
            batch::run(
                toy,
                &mut NoDraft,
                tok,
                &rx,
                o,
                stats,
                &AtomicBool::new(false),
            )
        });
        tx.send(job(first.clone(), opts(5), &s1, None)).unwrap();
        wait_done(&s1);
        let (text1, f1) = text_and_finish(&s1.lock().unwrap());
        assert_eq!(f1.cached_tokens, 0);
        // Another conversation in between takes the other slot, not this one.
        tx.send(job(vec![600; 10], opts(3), &s3, None)).unwrap();
        wait_done(&s3);
        // The next turn: the first prompt, the reply (re-tokenized the same), and more.
        let reply = tok.encode(&text1, false).unwrap();
        second.extend(&reply);
        second.extend([500, 501, 502]);
        let before = log.lock().unwrap().computed;
        tx.send(job(second.clone(), opts(4), &s2, None)).unwrap();
        wait_done(&s2);
        computed = log.lock().unwrap().computed - before;
        drop(tx);
        engine.join().unwrap();
    });
    let (text, f2) = text_and_finish(&s2.lock().unwrap());
    // The last reply token was sampled but never fed, so the cache ends one token short.
    let reused = first.len() + 4;
    assert_eq!(f2.cached_tokens, reused, "the first turn is reused");
    assert_eq!(
        computed,
        second.len() - reused + 3,
        "only new prompt tokens and fed replies run"
    );
    let mut alone = Toy::new(vocab, 256, 1, 0);
    let want = generate(&mut alone, &tok, &second, &opts(4), &mut |_| {}).unwrap();
    assert_eq!(text, want.text);
    assert_eq!(
        stats.cached_prompt_tokens.load(Ordering::Relaxed) as usize,
        reused
    );
}

#[test]
fn a_client_that_goes_away_is_cancelled_and_others_go_on() {
    let tok = tokenizer();
    let mut toy = Toy::new(tok.vocab_size(), 256, 2, 0);
    let stats = Stats::default();
    let gone = Arc::new(Mutex::new(Vec::new()));
    let stays = Arc::new(Mutex::new(Vec::new()));
    let later = Arc::new(Mutex::new(Vec::new()));
    run(
        &mut toy,
        &tok,
        vec![
            job(vec![300; 8], opts(50), &gone, Some(3)),
            job(vec![301; 8], opts(10), &stays, None),
            job(vec![302; 8], opts(10), &later, None),
        ],
        2,
        &stats,
    );
    assert_eq!(
        gone.lock().unwrap().len(),
        3,
        "the cancelled request got no more events"
    );
    assert_eq!(stats.cancellations.load(Ordering::Relaxed), 1);
    let tokens_used = stats.completion_tokens.load(Ordering::Relaxed);
    assert!(
        tokens_used < 50,
        "the cancelled request stopped early ({tokens_used} tokens in all)"
    );
    for s in [&stays, &later] {
        let (_, f) = text_and_finish(&s.lock().unwrap());
        assert_eq!(f.completion_tokens, 10);
    }
}

#[test]
fn end_of_generation_ends_a_request() {
    let tok = tokenizer();
    let eog = tok.eos_id().expect("eos");
    let mut toy = Toy::new(tok.vocab_size(), 256, 2, eog);
    toy.eog_at = Some(12);
    let stats = Stats::default();
    let s = Arc::new(Mutex::new(Vec::new()));
    run(
        &mut toy,
        &tok,
        vec![job(vec![300; 8], opts(50), &s, None)],
        2,
        &stats,
    );
    let (_, f) = text_and_finish(&s.lock().unwrap());
    assert_eq!(
        (f.reason, f.completion_tokens),
        (StopReason::EndOfGeneration, 4)
    );
}

#[test]
fn bad_requests_timeouts_and_shutdown_fail_with_their_kind() {
    let tok = tokenizer();
    let mut toy = Toy::new(tok.vocab_size(), 32, 1, 0);
    let stats = Stats::default();
    let sinks: Vec<_> = (0..4).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let mut late = job(vec![300; 4], opts(1000), &sinks[3], None);
    late.deadline = Some(Instant::now());
    let bad_sampler = GenerateOptions {
        sampler: engine::SamplerConfig {
            temperature: -1.0,
            ..Default::default()
        },
        ..opts(4)
    };
    run(
        &mut toy,
        &tok,
        vec![
            job(vec![], opts(4), &sinks[0], None),
            job(vec![300; 33], opts(4), &sinks[1], None),
            job(vec![300; 4], bad_sampler, &sinks[2], None),
            late,
        ],
        1,
        &stats,
    );
    let kind = |s: &Arc<Mutex<Vec<Event>>>| match s.lock().unwrap().last() {
        Some(Event::Failed(f)) => f.kind,
        other => panic!("expected a failure, got {other:?}"),
    };
    assert_eq!(kind(&sinks[0]), FailureKind::BadRequest);
    assert_eq!(kind(&sinks[1]), FailureKind::BadRequest);
    assert_eq!(kind(&sinks[2]), FailureKind::BadRequest);
    assert_eq!(kind(&sinks[3]), FailureKind::Timeout);

    // Shutdown: the queued request fails at once; with no grace the active one is cancelled.
    let (tx, rx) = sync_channel(4);
    let a = Arc::new(Mutex::new(Vec::new()));
    tx.send(job(vec![300; 4], opts(4), &a, None)).unwrap();
    stats.queued.fetch_add(1, Ordering::Relaxed);
    let o = BatchOptions {
        slots: 1,
        ctx: 32,
        prefill_per_pass: 16,
        shutdown_grace: Duration::ZERO,
        draft_max: 1,
    };
    batch::run(
        &mut toy,
        &mut NoDraft,
        &tok,
        &rx,
        &o,
        &stats,
        &AtomicBool::new(true),
    );
    assert_eq!(kind(&a), FailureKind::ShuttingDown);
    drop(tx);
}

#[test]
fn a_session_reuses_the_conversation_so_far() {
    // What `espresso chat` does between turns, through `engine::Session`.
    let tok = tokenizer();
    let vocab = tok.vocab_size();
    let toy = Toy::new(vocab, 256, 1, 0);
    let log = Arc::clone(&toy.log);
    let mut session = engine::Session::new(Box::new(toy));
    let turn1: Vec<u32> = (0..30).map(|k| 700 + k).collect();
    let g1 = session
        .generate(&tok, &turn1, &opts(6), &mut |_| {})
        .unwrap();
    assert_eq!(g1.cached_tokens, 0);
    let mut turn2 = turn1.clone();
    turn2.extend(&g1.tokens);
    turn2.extend([800, 801]);
    let before = log.lock().unwrap().computed;
    let g2 = session
        .generate(&tok, &turn2, &opts(3), &mut |_| {})
        .unwrap();
    // Everything but the last reply token (sampled, never fed) came from the cache.
    assert_eq!(g2.cached_tokens, turn1.len() + g1.tokens.len() - 1);
    assert_eq!(log.lock().unwrap().computed - before, 3 + 2);
    let mut alone = Toy::new(vocab, 256, 1, 0);
    let want = generate(&mut alone, &tok, &turn2, &opts(3), &mut |_| {}).unwrap();
    assert_eq!(g2.text, want.text);
    // The same prompt again reuses all but its last token (its logits are needed).
    assert_eq!(session.cache().reusable(&turn2), turn2.len() - 1);
    // After a reset nothing is reused.
    session.reset();
    let g3 = session
        .generate(&tok, &turn2, &opts(3), &mut |_| {})
        .unwrap();
    assert_eq!((g3.cached_tokens, g3.text), (0, want.text));
}
