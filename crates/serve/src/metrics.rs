//! `/metrics`: the engine's counters and the HTTP ones in Prometheus' text format.

use engine::batch::Stats;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters kept by the HTTP layer.
#[derive(Debug, Default)]
pub(crate) struct HttpCounters {
    /// Generation requests received (chat + completions), before validation.
    pub requests: AtomicU64,
    /// Requests answered with an error status.
    pub errors: AtomicU64,
    /// Requests refused because the queue was full.
    pub rejected_queue_full: AtomicU64,
}

fn line(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

pub(crate) fn render(stats: &Stats, http: &HttpCounters) -> String {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::new();
    let rows: [(&str, &str, &str, u64); 15] = [
        (
            "espresso_requests_total",
            "counter",
            "Generation requests received.",
            g(&http.requests),
        ),
        (
            "espresso_request_errors_total",
            "counter",
            "Requests answered with an error status.",
            g(&http.errors),
        ),
        (
            "espresso_requests_rejected_queue_full_total",
            "counter",
            "Requests refused with 503 because the queue was full.",
            g(&http.rejected_queue_full),
        ),
        (
            "espresso_requests_started_total",
            "counter",
            "Requests that got a decoding slot.",
            g(&stats.requests_started),
        ),
        (
            "espresso_requests_finished_total",
            "counter",
            "Requests that completed.",
            g(&stats.requests_finished),
        ),
        (
            "espresso_requests_failed_total",
            "counter",
            "Requests that failed after being queued (timeout, shutdown, backend).",
            g(&stats.requests_failed),
        ),
        (
            "espresso_cancellations_total",
            "counter",
            "Requests cancelled because the client went away.",
            g(&stats.cancellations),
        ),
        (
            "espresso_prompt_tokens_total",
            "counter",
            "Prompt tokens of started requests.",
            g(&stats.prompt_tokens),
        ),
        (
            "espresso_prompt_tokens_cached_total",
            "counter",
            "Prompt tokens reused from a slot's KV cache instead of recomputed.",
            g(&stats.cached_prompt_tokens),
        ),
        (
            "espresso_tokens_generated_total",
            "counter",
            "Completion tokens generated.",
            g(&stats.completion_tokens),
        ),
        (
            "espresso_batch_passes_total",
            "counter",
            "Batched passes over the weights.",
            g(&stats.passes),
        ),
        (
            "espresso_draft_proposed_total",
            "counter",
            "Drafted tokens verified (speculative decoding).",
            g(&stats.draft_proposed),
        ),
        (
            "espresso_draft_accepted_total",
            "counter",
            "Drafted tokens the model kept.",
            g(&stats.draft_accepted),
        ),
        (
            "espresso_queue_depth",
            "gauge",
            "Requests waiting for a slot.",
            g(&stats.queued),
        ),
        (
            "espresso_active_requests",
            "gauge",
            "Requests holding a slot.",
            g(&stats.active),
        ),
    ];
    for (name, kind, help, value) in rows {
        line(&mut out, name, kind, help, value);
    }
    let passes = g(&stats.passes);
    let _ = writeln!(
        out,
        "# HELP espresso_batch_size_mean Mean sequences per batched pass.\n\
         # TYPE espresso_batch_size_mean gauge\n\
         espresso_batch_size_mean {}",
        if passes > 0 {
            g(&stats.pass_inputs) as f64 / passes as f64
        } else {
            0.0
        }
    );
    out
}
