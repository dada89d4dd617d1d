//! The whole Llama forward and backward on the CPU: [`CpuTrainer`] implements
//! [`engine::train::TrainBackend`] by chaining the ops of this module's parent.
//!
//! A batch of `B` sequences of `S` tokens is processed as `T = B·S` rows: every projection is one
//! GEMM over all rows, RoPE and attention run per sequence (in parallel), and the classifier and
//! loss run over chunks of rows so the `[T, V]` logits never exist at once. The forward keeps a
//! `LayerTape` per layer (what the backward needs); the backward walks the layers in reverse.

use super::{
    attention, attention_backward, cross_entropy_grad, embedding, embedding_backward, linear,
    linear_backward, rms_norm, rms_norm_backward, rope, rope_backward, swiglu, swiglu_backward,
    AttentionCache, AttentionShape, RmsNormCache, RopeTable, TrainError,
};
use crate::CpuError;
use engine::train::{Batch, LayerRanges, Params, StepError, TrainBackend};
use rayon::prelude::*;

/// Rows of the classifier computed at once (bounds the logits buffer to `CHUNK · V` floats).
const CLASSIFIER_CHUNK: usize = 256;

/// What the backward of one transformer block needs from its forward.
/// Shapes (T rows): `x, xn1, q, att, h, hn: [T, D]`; `k, v: [T, KV]`; `g, u, s: [T, H]`.
struct LayerTape {
    x: Vec<f32>,
    xn1: Vec<f32>,
    c1: RmsNormCache<f32>,
    /// After RoPE.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    att_cache: Vec<AttentionCache<f32>>,
    h: Vec<f32>,
    hn: Vec<f32>,
    c2: RmsNormCache<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    s: Vec<f32>,
}

fn shape_of(p: &Params, seq_len: usize) -> AttentionShape {
    let c = &p.layout.config;
    AttentionShape {
        seq_len,
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
    }
}

/// `f(b)` for every sequence `b`, in parallel, results in sequence order.
fn map_seqs<T: Send>(batch: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    (0..batch).into_par_iter().map(f).collect()
}

/// The rows of sequence `b` in a `[B·S, width]` buffer.
fn rows(x: &[f32], b: usize, n_seqs: usize) -> &[f32] {
    let per = x.len() / n_seqs;
    &x[b * per..(b + 1) * per]
}

/// One transformer block: `h = x + Wo·attention(rope(Wq·n1), rope(Wk·n1), Wv·n1)`,
/// `out = h + W_down·swiglu(W_gate·n2, W_up·n2)` with `n1 = rms_norm(x)`, `n2 = rms_norm(h)`.
fn block_forward(
    p: &Params,
    l: &LayerRanges,
    x: Vec<f32>,
    rope_t: &RopeTable<f32>,
    n_seqs: usize,
) -> (Vec<f32>, LayerTape) {
    let c = &p.layout.config;
    let (d, kv, hdim) = (c.dim, c.kv_dim(), c.ffn_dim);
    let eps = c.rms_eps as f64;
    let shape = shape_of(p, rope_t.seq_len());
    let (xn1, c1) = rms_norm(&x, p.slice(&l.attn_norm), eps);
    let q = linear(&xn1, p.slice(&l.wq), d, d);
    let k = linear(&xn1, p.slice(&l.wk), d, kv);
    let v = linear(&xn1, p.slice(&l.wv), d, kv);
    // RoPE and attention per sequence, in parallel.
    let per: Vec<_> = map_seqs(n_seqs, |b| {
        let qr = rope(rows(&q, b, n_seqs), rope_t);
        let kr = rope(rows(&k, b, n_seqs), rope_t);
        let (o, cache) = attention(&qr, &kr, rows(&v, b, n_seqs), shape);
        (qr, kr, o, cache)
    });
    let (mut q, mut k, mut att) = (
        Vec::with_capacity(q.len()),
        Vec::with_capacity(k.len()),
        Vec::with_capacity(q.len()),
    );
    let mut att_cache = Vec::with_capacity(n_seqs);
    for (qr, kr, o, cache) in per {
        q.extend(qr);
        k.extend(kr);
        att.extend(o);
        att_cache.push(cache);
    }
    let mut h = linear(&att, p.slice(&l.wo), d, d);
    add_into(&mut h, &x);
    let (hn, c2) = rms_norm(&h, p.slice(&l.ffn_norm), eps);
    let g = linear(&hn, p.slice(&l.w_gate), d, hdim);
    let u = linear(&hn, p.slice(&l.w_up), d, hdim);
    let s = swiglu(&g, &u);
    let mut out = linear(&s, p.slice(&l.w_down), hdim, d);
    add_into(&mut out, &h);
    let tape = LayerTape {
        x,
        xn1,
        c1,
        q,
        k,
        v,
        att,
        att_cache,
        h,
        hn,
        c2,
        g,
        u,
        s,
    };
    (out, tape)
}

/// Backward of [`block_forward`]: takes `dout: [T, D]`, adds the block's weight gradients into
/// `grads` and returns `dx: [T, D]`.
fn block_backward(
    p: &Params,
    l: &LayerRanges,
    t: &LayerTape,
    dout: Vec<f32>,
    rope_t: &RopeTable<f32>,
    n_seqs: usize,
    grads: &mut [f32],
) -> Vec<f32> {
    let c = &p.layout.config;
    let (d, kv, hdim) = (c.dim, c.kv_dim(), c.ffn_dim);
    let shape = shape_of(p, rope_t.seq_len());
    // FFN: out = h + W_down·swiglu(g, u).
    let ds = linear_backward(
        &dout,
        &t.s,
        p.slice(&l.w_down),
        hdim,
        d,
        &mut grads[l.w_down.clone()],
    );
    let (dg, du) = swiglu_backward(&ds, &t.g, &t.u);
    let mut dhn = linear_backward(
        &dg,
        &t.hn,
        p.slice(&l.w_gate),
        d,
        hdim,
        &mut grads[l.w_gate.clone()],
    );
    add_into(
        &mut dhn,
        &linear_backward(
            &du,
            &t.hn,
            p.slice(&l.w_up),
            d,
            hdim,
            &mut grads[l.w_up.clone()],
        ),
    );
    let mut dh = rms_norm_backward(
        &dhn,
        &t.h,
        p.slice(&l.ffn_norm),
        &t.c2,
        &mut grads[l.ffn_norm.clone()],
    );
    add_into(&mut dh, &dout);
    // Attention: h = x + Wo·att.
    let datt = linear_backward(&dh, &t.att, p.slice(&l.wo), d, d, &mut grads[l.wo.clone()]);
    let per: Vec<_> = map_seqs(n_seqs, |b| {
        let g = attention_backward(
            rows(&datt, b, n_seqs),
            rows(&t.q, b, n_seqs),
            rows(&t.k, b, n_seqs),
            rows(&t.v, b, n_seqs),
            shape,
            &t.att_cache[b],
        );
        (
            rope_backward(&g.dq, rope_t),
            rope_backward(&g.dk, rope_t),
            g.dv,
        )
    });
    let (mut dq, mut dk, mut dv) = (
        Vec::with_capacity(t.q.len()),
        Vec::with_capacity(t.k.len()),
        Vec::with_capacity(t.v.len()),
    );
    for (a, b, c) in per {
        dq.extend(a);
        dk.extend(b);
        dv.extend(c);
    }
    let mut dxn1 = linear_backward(&dq, &t.xn1, p.slice(&l.wq), d, d, &mut grads[l.wq.clone()]);
    add_into(
        &mut dxn1,
        &linear_backward(&dk, &t.xn1, p.slice(&l.wk), d, kv, &mut grads[l.wk.clone()]),
    );
    add_into(
        &mut dxn1,
        &linear_backward(&dv, &t.xn1, p.slice(&l.wv), d, kv, &mut grads[l.wv.clone()]),
    );
    let mut dx = rms_norm_backward(
        &dxn1,
        &t.x,
        p.slice(&l.attn_norm),
        &t.c1,
        &mut grads[l.attn_norm.clone()],
    );
    add_into(&mut dx, &dh);
    dx
}

fn add_into(acc: &mut [f32], x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

fn bad_token(e: TrainError) -> StepError {
    match e {
        TrainError::TokenOutOfRange { token, vocab, .. } => StepError::BadToken { token, vocab },
        TrainError::TargetOutOfRange { target, vocab, .. } => StepError::BadToken {
            token: target,
            vocab,
        },
    }
}

/// What a block runner gets besides the parameters: the RoPE angles of one sequence and the
/// number of sequences stacked in the `[B·S, D]` rows.
pub struct BlockCtx<'a> {
    pub rope: &'a RopeTable<f32>,
    pub n_seqs: usize,
}

/// The transformer blocks of [`loss_and_grad_with`]: the CPU runs them with the ops of this
/// module ([`CpuBlocks`]); other devices (the ANE trainer in `ane-llm`) bring their own while
/// the embedding, final norm, classifier and loss stay on the CPU here.
pub trait BlockRunner {
    /// Forward of block `layer` on `x: [B·S, D]`, returning its output `[B·S, D]`; with `keep`
    /// it also keeps what [`BlockRunner::backward`] of that layer needs.
    fn forward(
        &mut self,
        p: &Params,
        layer: usize,
        x: Vec<f32>,
        ctx: &BlockCtx<'_>,
        keep: bool,
    ) -> Result<Vec<f32>, StepError>;

    /// Backward of block `layer` (called in reverse layer order after the forwards): takes
    /// `dout: [B·S, D]`, **adds** the block's weight gradients into `grads` and returns `dx`.
    fn backward(
        &mut self,
        p: &Params,
        layer: usize,
        dout: Vec<f32>,
        ctx: &BlockCtx<'_>,
        grads: &mut [f32],
    ) -> Result<Vec<f32>, StepError>;
}

/// The CPU's blocks: `block_forward` and `block_backward` (this module's private functions) with their tapes.
#[derive(Default)]
pub struct CpuBlocks {
    tapes: Vec<Option<LayerTape>>,
}

impl BlockRunner for CpuBlocks {
    fn forward(
        &mut self,
        p: &Params,
        layer: usize,
        x: Vec<f32>,
        ctx: &BlockCtx<'_>,
        keep: bool,
    ) -> Result<Vec<f32>, StepError> {
        let (out, tape) = block_forward(p, &p.layout.layers[layer], x, ctx.rope, ctx.n_seqs);
        if keep {
            self.tapes.resize_with(p.layout.layers.len(), || None);
            self.tapes[layer] = Some(tape);
        }
        Ok(out)
    }

    fn backward(
        &mut self,
        p: &Params,
        layer: usize,
        dout: Vec<f32>,
        ctx: &BlockCtx<'_>,
        grads: &mut [f32],
    ) -> Result<Vec<f32>, StepError> {
        let tape = self
            .tapes
            .get_mut(layer)
            .and_then(Option::take)
            .expect("block backward without its forward tape");
        let l = &p.layout.layers[layer];
        Ok(block_backward(
            p, l, &tape, dout, ctx.rope, ctx.n_seqs, grads,
        ))
    }
}

/// Forward (and, with `grad = Some((scale, grads))`, backward) of the whole model on `batch`.
/// Returns the sum of the counted token losses.
pub fn loss_and_grad(
    p: &Params,
    batch: &Batch,
    grad: Option<(f32, &mut [f32])>,
) -> Result<f64, StepError> {
    loss_and_grad_with(p, batch, grad, &mut CpuBlocks::default())
}

/// [`loss_and_grad`] with the transformer blocks run by `blocks`: embedding, final norm,
/// classifier and loss (and their backward) on the CPU.
pub fn loss_and_grad_with(
    p: &Params,
    batch: &Batch,
    grad: Option<(f32, &mut [f32])>,
    blocks: &mut dyn BlockRunner,
) -> Result<f64, StepError> {
    let c = &p.layout.config;
    let (d, vocab) = (c.dim, c.vocab_size);
    let n_seqs = batch.batch;
    assert_eq!(
        batch.inputs.len(),
        n_seqs * batch.seq_len,
        "batch inputs are not [B, S]"
    );
    assert_eq!(
        batch.targets.len(),
        batch.inputs.len(),
        "batch targets are not [B, S]"
    );
    let rope_t = RopeTable::<f32>::new(batch.seq_len, c.head_dim, 0, c.rope_theta as f64);
    let ctx = BlockCtx {
        rope: &rope_t,
        n_seqs,
    };
    let mut x = embedding(p.slice(&p.layout.token_embd), d, &batch.inputs).map_err(bad_token)?;
    let keep = grad.is_some();
    for layer in 0..p.layout.layers.len() {
        x = blocks.forward(p, layer, x, &ctx, keep)?;
    }
    let (xf, cf) = rms_norm(&x, p.slice(&p.layout.output_norm), c.rms_eps as f64);
    let w_out = p.slice(&p.layout.output);
    // Classifier and loss, chunk by chunk: dxf = dlogits·W_out, dW_out += dlogitsᵀ·xf (the
    // loss-only run uses the same fused pass with scale 0 and drops the gradient).
    let (scale, mut grads) = match grad {
        Some((scale, grads)) => (scale, Some(grads)),
        None => (0.0, None),
    };
    let mut total = 0f64;
    let mut dxf = Vec::with_capacity(if grads.is_some() { xf.len() } else { 0 });
    for (xc, yc) in xf
        .chunks(CLASSIFIER_CHUNK * d)
        .zip(batch.targets.chunks(CLASSIFIER_CHUNK))
    {
        let mut dlogits = linear(xc, w_out, d, vocab);
        total += cross_entropy_grad(&mut dlogits, vocab, yc, scale)
            .map_err(bad_token)?
            .0;
        if let Some(grads) = grads.as_deref_mut() {
            dxf.extend(linear_backward(
                &dlogits,
                xc,
                w_out,
                d,
                vocab,
                &mut grads[p.layout.output.clone()],
            ));
        }
    }
    let Some(grads) = grads else {
        return Ok(total);
    };
    let mut dx = rms_norm_backward(
        &dxf,
        &x,
        p.slice(&p.layout.output_norm),
        &cf,
        &mut grads[p.layout.output_norm.clone()],
    );
    for layer in (0..p.layout.layers.len()).rev() {
        dx = blocks.backward(p, layer, dx, &ctx, grads)?;
    }
    embedding_backward(
        &dx,
        &batch.inputs,
        d,
        &mut grads[p.layout.token_embd.clone()],
    )
    .map_err(bad_token)?;
    Ok(total)
}

/// The CPU training backend: [`loss_and_grad`] on its own thread pool.
pub struct CpuTrainer {
    pool: rayon::ThreadPool,
}

impl CpuTrainer {
    /// `threads = 0`: one per available core.
    pub fn new(threads: usize) -> Result<Self, CpuError> {
        let pool = crate::backend::thread_pool(threads, "espresso-train")?;
        Ok(Self { pool })
    }
}

impl TrainBackend for CpuTrainer {
    fn name(&self) -> String {
        format!("cpu ({} threads)", self.pool.current_num_threads())
    }

    fn accumulate(
        &mut self,
        params: &Params,
        batch: &Batch,
        scale: f32,
        grads: &mut [f32],
    ) -> Result<f64, StepError> {
        assert_eq!(
            grads.len(),
            params.data.len(),
            "gradient buffer does not match the parameters"
        );
        self.pool
            .install(|| loss_and_grad(params, batch, Some((scale, grads))))
    }

    fn loss(&mut self, params: &Params, batch: &Batch) -> Result<f64, StepError> {
        self.pool.install(|| loss_and_grad(params, batch, None))
    }
}
