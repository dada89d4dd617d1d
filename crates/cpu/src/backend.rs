//! [`CpuBackend`]: the Llama forward pass on the CPU, over weights kept in their stored types.

use crate::matmul::{matmuls_packed, Precision};
use crate::ops::{attention_head, rms_norm, rope_angles, rope_apply, swiglu};
use crate::packed::{self, Packed};
use engine::backend::check_slots;
use engine::{Backend, BackendError, Feed, SlotInput};
use model::{LayerWeights, LlamaConfig, LlamaWeights, Tensor};
use rayon::prelude::*;
use rayon::ThreadPool;
use std::sync::Arc;

/// Tokens processed together in one prefill chunk (weights are streamed once per chunk).
pub const PREFILL_CHUNK: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("cannot start {threads} CPU threads: {message}")]
    ThreadPool { threads: usize, message: String },
    #[error("norm weight '{0}' must be F32, F16 or BF16")]
    NormType(String),
}

/// A rayon pool of `threads` workers (0: one per available core) named `name-i`; shared by the
/// inference backend and the trainer.
pub fn thread_pool(threads: usize, name: &'static str) -> Result<ThreadPool, CpuError> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("{name}-{i}"))
        .build()
        .map_err(|e| CpuError::ThreadPool {
            threads,
            message: e.to_string(),
        })
}

/// Options of the CPU backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuOptions {
    /// Dequantize weights on the fly and keep activations in f32 (the reference path).
    pub exact: bool,
    /// Worker threads (0: one per available core).
    pub threads: usize,
}

/// One slot's per-layer key/value cache, f32, grown as positions are used.
/// Shapes: `k[layer], v[layer]: [positions][kv_dim]`.
struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl KvCache {
    fn new(n_layers: usize) -> Self {
        Self {
            k: vec![Vec::new(); n_layers],
            v: vec![Vec::new(); n_layers],
        }
    }
}

/// The rows of a batched pass that run together: prompt pieces, or decode steps.
struct RowGroup {
    rows: Vec<Row>,
    /// (output row, index in `rows`) of the rows whose logits are returned.
    picks: Vec<(usize, usize)>,
    prefill: bool,
}

/// One token of some slot's sequence in a pass.
#[derive(Debug, Clone, Copy)]
struct Row {
    slot: usize,
    token: u32,
    pos: usize,
}

/// One layer's weights repacked for the decode products ([`crate::packed`]), where this CPU
/// has the packed kernel and the stored type has a packed form.
struct LayerPacks {
    wq: Option<Packed>,
    wk: Option<Packed>,
    wv: Option<Packed>,
    wo: Option<Packed>,
    w_gate: Option<Packed>,
    w_up: Option<Packed>,
    w_down: Option<Packed>,
}

/// `t` repacked for the decode products when `fast` and this CPU has the packed kernel.
fn pack(t: &Tensor, fast: bool) -> Option<Packed> {
    (fast && packed::available())
        .then(|| Packed::new(t))
        .flatten()
}

impl LayerPacks {
    fn new(l: &LayerWeights, fast: bool) -> Self {
        let pack = |t| pack(t, fast);
        Self {
            wq: pack(&l.wq),
            wk: pack(&l.wk),
            wv: pack(&l.wv),
            wo: pack(&l.wo),
            w_gate: pack(&l.w_gate),
            w_up: pack(&l.w_up),
            w_down: pack(&l.w_down),
        }
    }
}

/// A Llama-family model on the CPU. See the crate docs.
pub struct CpuBackend<'a> {
    w: LlamaWeights<'a>,
    /// `[n_layers]` packed decode weights (all `None` on the exact path or without the kernel).
    packs: Vec<LayerPacks>,
    /// The classifier, packed likewise.
    output_pack: Option<Packed>,
    precision: Precision,
    /// Shared so a whole forward can run inside the pool (see [`CpuBackend::in_pool`]).
    pool: Arc<ThreadPool>,
    /// `[n_layers]` (attn_norm, ffn_norm) as f32, and the final norm.
    norms: Vec<(Vec<f32>, Vec<f32>)>,
    output_norm: Vec<f32>,
    /// One cache per slot, created on first use.
    caches: Vec<KvCache>,
    /// Final hidden states of the rows whose logits the last pass returned.
    hidden: Vec<f32>,
}

fn norm_f32(t: &Tensor) -> Result<Vec<f32>, CpuError> {
    if t.ty.block_elems() != 1 {
        return Err(CpuError::NormType(t.name.to_string()));
    }
    Ok(t.to_f32())
}

impl<'a> CpuBackend<'a> {
    pub fn new(weights: LlamaWeights<'a>, opts: CpuOptions) -> Result<Self, CpuError> {
        let pool = thread_pool(opts.threads, "espresso-cpu")?;
        let norms = weights
            .layers
            .iter()
            .map(|l| Ok((norm_f32(&l.attn_norm)?, norm_f32(&l.ffn_norm)?)))
            .collect::<Result<Vec<_>, CpuError>>()?;
        let output_norm = norm_f32(&weights.output_norm)?;
        let packs = weights
            .layers
            .iter()
            .map(|l| LayerPacks::new(l, !opts.exact))
            .collect();
        Ok(Self {
            packs,
            output_pack: pack(&weights.output, !opts.exact),
            precision: if opts.exact {
                Precision::Exact
            } else {
                Precision::Fast
            },
            pool: Arc::new(pool),
            norms,
            output_norm,
            caches: Vec::new(),
            hidden: Vec::new(),
            w: weights,
        })
    }

    /// Worker threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    fn check(&self, tokens: &[u32], pos: usize) -> Result<(), BackendError> {
        let cfg = &self.w.config;
        if tokens.is_empty() {
            return Err(BackendError::Device("forward called with no tokens".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(BackendError::BadToken(bad));
        }
        let last = pos.saturating_add(tokens.len() - 1);
        if last >= cfg.context_length {
            return Err(BackendError::ContextFull {
                pos: last,
                ctx: cfg.context_length,
            });
        }
        Ok(())
    }

    /// The precision of this pass's products: prefill passes let float weights use GEMM;
    /// decode passes keep the per-row kernels, so a token's logits do not depend on how many
    /// other sequences' tokens share the pass.
    fn pass_precision(&self, prefill: bool) -> Precision {
        match self.precision {
            Precision::Fast if prefill => Precision::FastChunk,
            p => p,
        }
    }

    fn mm(
        &self,
        w: (&Tensor, &Option<Packed>),
        x: &[f32],
        n: usize,
        p: Precision,
        out: &mut [f32],
    ) {
        self.mm_shared(&mut [(w.0, w.1, out)], x, n, p);
    }

    /// Products sharing the input `x` (Q/K/V, gate/up) in one parallel region.
    fn mm_shared(
        &self,
        jobs: &mut [(&Tensor, &Option<Packed>, &mut [f32])],
        x: &[f32],
        n: usize,
        p: Precision,
    ) {
        let mut jobs: Vec<(&Tensor, Option<&Packed>, &mut [f32])> = jobs
            .iter_mut()
            .map(|(w, packed, out)| (*w, packed.as_ref(), &mut **out))
            .collect();
        matmuls_packed(&self.pool, &mut jobs, x, n, p);
    }

    /// Make slot `slot`'s cache hold at least `end` positions in every layer.
    fn reserve(&mut self, slot: usize, end: usize) {
        let (n_layers, kv) = (self.w.config.n_layers, self.w.config.kv_dim());
        if self.caches.len() <= slot {
            self.caches.resize_with(slot + 1, || KvCache::new(n_layers));
        }
        let c = &mut self.caches[slot];
        for (k, v) in c.k.iter_mut().zip(c.v.iter_mut()) {
            if k.len() < end * kv {
                k.resize(end * kv, 0.0);
                v.resize(end * kv, 0.0);
            }
        }
    }

    /// Run a set of rows through all layers; returns their final hidden states `[n][dim]`
    /// after the output norm. Each row is one token of some slot at some position; rows of
    /// one slot come in position order, so a row attends to the rows before it in the same
    /// pass (its keys/values are written to the cache before attention). Every row is computed
    /// exactly as it would be alone: the products, norms and attention are per row.
    fn run_rows(&mut self, rows: &[Row], prefill: bool) -> Vec<f32> {
        let p = self.pass_precision(prefill);
        let cfg = self.w.config.clone();
        let (d, kv, hd, ffn) = (cfg.dim, cfg.kv_dim(), cfg.head_dim, cfg.ffn_dim);
        let n = rows.len();
        for r in rows {
            self.reserve(r.slot, r.pos + 1);
        }
        // x: [n][dim] residual stream, from the embedding rows.
        let mut x = vec![0f32; n * d];
        for (xt, r) in x.chunks_exact_mut(d).zip(rows) {
            self.w.token_embd.dequantize_row(r.token as usize, xt);
        }
        let angles: Vec<(Vec<f32>, Vec<f32>)> = rows
            .iter()
            .map(|r| rope_angles(r.pos, hd, cfg.rope_theta))
            .collect();
        let mut xb = vec![0f32; n * d];
        let mut q = vec![0f32; n * d];
        let mut k = vec![0f32; n * kv];
        let mut v = vec![0f32; n * kv];
        let mut att = vec![0f32; n * d];
        let mut o = vec![0f32; n * d];
        let mut gate = vec![0f32; n * ffn];
        let mut up = vec![0f32; n * ffn];
        for l in 0..cfg.n_layers {
            let (lw, pk) = (&self.w.layers[l], &self.packs[l]);
            let (attn_norm, ffn_norm) = &self.norms[l];
            // --- attention ---
            for (o_t, x_t) in xb.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                rms_norm(o_t, x_t, attn_norm, cfg.rms_eps);
            }
            self.mm_shared(
                &mut [
                    (&lw.wq, &pk.wq, &mut q),
                    (&lw.wk, &pk.wk, &mut k),
                    (&lw.wv, &pk.wv, &mut v),
                ],
                &xb,
                n,
                p,
            );
            for (t, (c, s)) in angles.iter().enumerate() {
                rope_apply(&mut q[t * d..(t + 1) * d], c, s);
                rope_apply(&mut k[t * kv..(t + 1) * kv], c, s);
            }
            for (t, r) in rows.iter().enumerate() {
                let c = &mut self.caches[r.slot];
                let at = r.pos * kv..(r.pos + 1) * kv;
                c.k[l][at.clone()].copy_from_slice(&k[t * kv..(t + 1) * kv]);
                c.v[l][at].copy_from_slice(&v[t * kv..(t + 1) * kv]);
            }
            let group = cfg.n_heads / cfg.n_kv_heads;
            let n_heads = cfg.n_heads;
            let (q, caches) = (&q, &self.caches);
            // One task per (row, head): a row attends to positions 0..=pos of its slot.
            self.pool.install(|| {
                att.par_chunks_mut(hd).enumerate().for_each(|(i, out)| {
                    let (t, h) = (i / n_heads, i % n_heads);
                    let r = &rows[t];
                    let end = (r.pos + 1) * kv;
                    let (kc, vc) = (&caches[r.slot].k[l][..end], &caches[r.slot].v[l][..end]);
                    let mut scores = vec![0f32; r.pos + 1];
                    let qh = &q[t * d + h * hd..t * d + (h + 1) * hd];
                    attention_head(qh, kc, vc, kv, (h / group) * hd, &mut scores, out);
                })
            });
            self.mm((&lw.wo, &pk.wo), &att, n, p, &mut o);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            // --- SwiGLU feed-forward ---
            for (o_t, x_t) in xb.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                rms_norm(o_t, x_t, ffn_norm, cfg.rms_eps);
            }
            self.mm_shared(
                &mut [
                    (&lw.w_gate, &pk.w_gate, &mut gate),
                    (&lw.w_up, &pk.w_up, &mut up),
                ],
                &xb,
                n,
                p,
            );
            // Per token, on the pool when there are several (its exp calls are a few
            // percent of a prompt chunk).
            let ffn_rows = gate.par_chunks_mut(ffn).zip(up.par_chunks(ffn));
            self.pool
                .install(|| ffn_rows.for_each(|(g, u)| swiglu(g, u)));
            self.mm((&lw.w_down, &pk.w_down), &gate, n, p, &mut o);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        }
        for (o_t, x_t) in xb.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            rms_norm(o_t, x_t, &self.output_norm, cfg.rms_eps);
        }
        xb
    }

    /// The rows of one sequence: `tokens` at `pos..` in `slot`.
    fn rows(slot: usize, tokens: &[u32], pos: usize) -> impl Iterator<Item = Row> + '_ {
        tokens.iter().enumerate().map(move |(i, &token)| Row {
            slot,
            token,
            pos: pos + i,
        })
    }

    /// Run `f` on a pool thread: the parallel regions inside then start from a worker instead
    /// of handing work across threads about 250 times per token, which under CPU contention
    /// costs more than the products themselves.
    fn in_pool<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R {
        let pool = Arc::clone(&self.pool);
        pool.install(|| f(self))
    }

    /// Logits `[n][vocab]` of hidden states `h: [n][dim]`.
    fn logits(&self, h: &[f32], prefill: bool) -> Vec<f32> {
        let n = h.len() / self.w.config.dim;
        let mut out = vec![0f32; n * self.w.config.vocab_size];
        let p = self.pass_precision(prefill);
        self.mm((&self.w.output, &self.output_pack), h, n, p, &mut out);
        out
    }
}

impl Backend for CpuBackend<'_> {
    fn name(&self) -> String {
        match self.precision {
            Precision::Exact => "cpu-exact".into(),
            Precision::Fast | Precision::FastChunk => "cpu".into(),
        }
    }

    fn config(&self) -> &LlamaConfig {
        &self.w.config
    }

    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        self.forward_batch(&[SlotInput {
            slot: 0,
            tokens,
            pos,
            feed: Feed::Prompt,
        }])
    }

    fn decode(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        self.forward_batch(&[SlotInput {
            slot: 0,
            tokens,
            pos,
            feed: Feed::Decode,
        }])
    }

    fn forward_all(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        self.check(tokens, pos)?;
        Ok(self.in_pool(|be| {
            let mut out = Vec::with_capacity(tokens.len() * be.w.config.vocab_size);
            let rows: Vec<Row> = Self::rows(0, tokens, pos).collect();
            for chunk in rows.chunks(PREFILL_CHUNK) {
                let h = be.run_rows(chunk, true);
                out.extend(be.logits(&h, true));
            }
            out
        }))
    }

    fn max_slots(&self) -> usize {
        usize::MAX
    }

    /// Prompt inputs go through the layers together, [`PREFILL_CHUNK`] rows at a time, with
    /// GEMM for float weights; then the decode inputs (steps and verify passes of several
    /// slots) go through together with the per-row kernels, so the weights are streamed once
    /// for all of them and each row's logits are bitwise what it gets alone. The classifier
    /// runs once over the rows whose logits are returned.
    fn forward_batch(&mut self, inputs: &[SlotInput]) -> Result<Vec<f32>, BackendError> {
        check_slots(inputs, self.max_slots())?;
        for input in inputs {
            self.check(input.tokens, input.pos)?;
        }
        let d = self.w.config.dim;
        // First output row of each input.
        let firsts: Vec<usize> = inputs
            .iter()
            .scan(0, |at, s| {
                let first = *at;
                *at += s.logit_rows();
                Some(first)
            })
            .collect();
        let n_out: usize = inputs.iter().map(|s| s.logit_rows()).sum();
        let mut groups: Vec<RowGroup> = Vec::new();
        for feed in [Feed::Prompt, Feed::Decode] {
            let mut rows = Vec::new();
            let mut picks = Vec::new();
            for (s, &first) in inputs.iter().zip(&firsts) {
                if s.feed != feed {
                    continue;
                }
                let start = rows.len();
                rows.extend(Self::rows(s.slot, s.tokens, s.pos));
                let skip = s.tokens.len() - s.logit_rows();
                picks.extend((0..s.logit_rows()).map(|i| (first + i, start + skip + i)));
            }
            if !rows.is_empty() {
                groups.push(RowGroup {
                    rows,
                    picks,
                    prefill: feed == Feed::Prompt,
                });
            }
        }
        Ok(self.in_pool(|be| {
            let mut hidden = std::mem::take(&mut be.hidden);
            hidden.clear();
            hidden.resize(n_out * d, 0.0);
            for g in &groups {
                for (ci, chunk) in g.rows.chunks(PREFILL_CHUNK).enumerate() {
                    let h = be.run_rows(chunk, g.prefill);
                    let base = ci * PREFILL_CHUNK;
                    for &(o, r) in &g.picks {
                        if (base..base + chunk.len()).contains(&r) {
                            let hr = &h[(r - base) * d..(r - base + 1) * d];
                            hidden[o * d..(o + 1) * d].copy_from_slice(hr);
                        }
                    }
                }
            }
            let logits = be.logits(&hidden, false);
            be.hidden = hidden;
            logits
        }))
    }

    fn hidden_states(&self) -> Option<&[f32]> {
        Some(&self.hidden)
    }
}
