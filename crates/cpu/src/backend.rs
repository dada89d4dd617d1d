//! [`CpuBackend`]: the Llama forward pass on the CPU, over weights kept in their stored types.

use crate::matmul::{matmul, matmuls, Precision};
use crate::ops::{attention_head, rms_norm, rope_angles, rope_apply, swiglu};
use engine::{Backend, BackendError};
use model::{LlamaConfig, LlamaWeights, Tensor};
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

/// The per-layer key/value cache, f32, grown as positions are used.
/// Shapes: `k[layer], v[layer]: [positions][kv_dim]`.
struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// A Llama-family model on the CPU. See the crate docs.
pub struct CpuBackend<'a> {
    w: LlamaWeights<'a>,
    precision: Precision,
    /// Shared so a whole forward can run inside the pool (see [`CpuBackend::in_pool`]).
    pool: Arc<ThreadPool>,
    /// `[n_layers]` (attn_norm, ffn_norm) as f32, and the final norm.
    norms: Vec<(Vec<f32>, Vec<f32>)>,
    output_norm: Vec<f32>,
    cache: KvCache,
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
        let n_layers = weights.config.n_layers;
        Ok(Self {
            precision: if opts.exact {
                Precision::Exact
            } else {
                Precision::Fast
            },
            pool: Arc::new(pool),
            norms,
            output_norm,
            cache: KvCache {
                k: vec![Vec::new(); n_layers],
                v: vec![Vec::new(); n_layers],
            },
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

    fn mm(&self, w: &Tensor, x: &[f32], n: usize, out: &mut [f32]) {
        matmul(&self.pool, w, x, n, self.precision, out);
    }

    /// Products sharing the input `x` (Q/K/V, gate/up) in one parallel region.
    fn mm_shared(&self, jobs: &mut [(&Tensor, &mut [f32])], x: &[f32], n: usize) {
        matmuls(&self.pool, jobs, x, n, self.precision);
    }

    /// Run one chunk through all layers; returns the final hidden states `[n][dim]` after the
    /// output norm.
    fn run_chunk(&mut self, tokens: &[u32], pos: usize) -> Vec<f32> {
        let cfg = self.w.config.clone();
        let (d, kv, hd, ffn) = (cfg.dim, cfg.kv_dim(), cfg.head_dim, cfg.ffn_dim);
        let n = tokens.len();
        // x: [n][dim] residual stream, from the embedding rows.
        let mut x = vec![0f32; n * d];
        for (xt, &tok) in x.chunks_exact_mut(d).zip(tokens) {
            self.w.token_embd.dequantize_row(tok as usize, xt);
        }
        let angles: Vec<(Vec<f32>, Vec<f32>)> = (0..n)
            .map(|t| rope_angles(pos + t, hd, cfg.rope_theta))
            .collect();
        let mut xb = vec![0f32; n * d];
        let mut q = vec![0f32; n * d];
        let mut k = vec![0f32; n * kv];
        let mut v = vec![0f32; n * kv];
        let mut att = vec![0f32; n * d];
        let mut o = vec![0f32; n * d];
        let mut gate = vec![0f32; n * ffn];
        let mut up = vec![0f32; n * ffn];
        let end = pos + n;
        for l in 0..cfg.n_layers {
            let lw = &self.w.layers[l];
            let (attn_norm, ffn_norm) = &self.norms[l];
            // --- attention ---
            for (o_t, x_t) in xb.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                rms_norm(o_t, x_t, attn_norm, cfg.rms_eps);
            }
            self.mm_shared(
                &mut [(&lw.wq, &mut q), (&lw.wk, &mut k), (&lw.wv, &mut v)],
                &xb,
                n,
            );
            for (t, (c, s)) in angles.iter().enumerate() {
                rope_apply(&mut q[t * d..(t + 1) * d], c, s);
                rope_apply(&mut k[t * kv..(t + 1) * kv], c, s);
            }
            let (kc, vc) = (&mut self.cache.k[l], &mut self.cache.v[l]);
            if kc.len() < end * kv {
                kc.resize(end * kv, 0.0);
                vc.resize(end * kv, 0.0);
            }
            kc[pos * kv..end * kv].copy_from_slice(&k);
            vc[pos * kv..end * kv].copy_from_slice(&v);
            let (kc, vc) = (&kc[..end * kv], &vc[..end * kv]);
            let group = cfg.n_heads / cfg.n_kv_heads;
            let n_heads = cfg.n_heads;
            let q = &q;
            // One task per (token, head): att[t][h] attends to positions 0..=pos + t.
            self.pool.install(|| {
                att.par_chunks_mut(hd).enumerate().for_each(|(i, out)| {
                    let (t, h) = (i / n_heads, i % n_heads);
                    let mut scores = vec![0f32; pos + t + 1];
                    let qh = &q[t * d + h * hd..t * d + (h + 1) * hd];
                    attention_head(qh, kc, vc, kv, (h / group) * hd, &mut scores, out);
                })
            });
            self.mm(&lw.wo, &att, n, &mut o);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            // --- SwiGLU feed-forward ---
            for (o_t, x_t) in xb.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                rms_norm(o_t, x_t, ffn_norm, cfg.rms_eps);
            }
            self.mm_shared(&mut [(&lw.w_gate, &mut gate), (&lw.w_up, &mut up)], &xb, n);
            swiglu(&mut gate, &up);
            self.mm(&lw.w_down, &gate, n, &mut o);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        }
        for (o_t, x_t) in xb.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            rms_norm(o_t, x_t, &self.output_norm, cfg.rms_eps);
        }
        xb
    }

    /// Run `f` on a pool thread: the parallel regions inside then start from a worker instead
    /// of handing work across threads about 250 times per token, which under CPU contention
    /// costs more than the products themselves.
    fn in_pool<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R {
        let pool = Arc::clone(&self.pool);
        pool.install(|| f(self))
    }

    /// Logits `[n][vocab]` of hidden states `h: [n][dim]`.
    fn logits(&self, h: &[f32]) -> Vec<f32> {
        let n = h.len() / self.w.config.dim;
        let mut out = vec![0f32; n * self.w.config.vocab_size];
        self.mm(&self.w.output, h, n, &mut out);
        out
    }
}

impl Backend for CpuBackend<'_> {
    fn name(&self) -> String {
        match self.precision {
            Precision::Fast => "cpu".into(),
            Precision::Exact => "cpu-exact".into(),
        }
    }

    fn config(&self) -> &LlamaConfig {
        &self.w.config
    }

    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        self.check(tokens, pos)?;
        let d = self.w.config.dim;
        Ok(self.in_pool(|be| {
            let mut last = Vec::new();
            for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
                let h = be.run_chunk(chunk, pos + i * PREFILL_CHUNK);
                last = h[h.len() - d..].to_vec();
            }
            be.logits(&last)
        }))
    }

    fn forward_all(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        self.check(tokens, pos)?;
        Ok(self.in_pool(|be| {
            let mut out = Vec::with_capacity(tokens.len() * be.w.config.vocab_size);
            for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
                let h = be.run_chunk(chunk, pos + i * PREFILL_CHUNK);
                out.extend(be.logits(&h));
            }
            out
        }))
    }
}
