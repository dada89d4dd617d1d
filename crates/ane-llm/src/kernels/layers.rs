//! The fused N-layer transformer kernel over a chunk of lanes (decode and prefill).
//!
//! I/O (binding order = declaration order):
//!
//! | name | shape | content |
//! |---|---|---|
//! | `i00_x` | `[1, D, 1, L]` | residual stream, token t in lane t |
//! | `i01_pos` | `[1, 2D + 2S, 1, L]` | per lane: cos (D) \| sin (D) \| maskᵀ (S) \| scatterᵀ (S), see [`super::host`] |
//! | `i{02+2j}_k{j}`, `i{03+2j}_v{j}` | `[1, KV, 1, S]` | K and V cache of the j-th fused layer |
//! | `o00_x` | `[1, D, 1, L]` | residual stream after the N layers |
//! | `o01_kv` | `[1, 2·N·KV, 1, L]` | new rows per lane: K₀ \| V₀ \| K₁ \| V₁ … (post-RoPE K) |
//!
//! Per layer (Llama; RoPE on adjacent pairs):
//!
//! ```text
//! xn   = RMSNorm(x; attn_norm)
//! q    = Wq·xn ⊙ cos + (P·Wq)·xn ⊙ sin        P: pair swap with sign, (Pz)[2i] = −z[2i+1], (Pz)[2i+1] = z[2i]
//! k    = Wk·xn ⊙ cos + (P·Wk)·xn ⊙ sin         v = Wv·xn
//! K    = Kcache ⊙ keep + k·scatter             scatter [L, S]: lane t → slot pos+t; keep = 1 − Σ_t scatter
//! V    = Vcache ⊙ keep + v·scatter
//! att  = softmax(q·Kᵀ/√hd + mask) · V          per query head, KV head h / (NH/NKV); mask [L, S] causal
//! x    = x + Wo·att
//! x    = x + W2·(silu(W1·xn2) ⊙ W3·xn2)        xn2 = RMSNorm(x; ffn_norm)
//! ```

use mil::{DType, Value};
use model::LayerWeights;

use super::{input_name, output_name, Blocks, Geometry, IoDesc, Kernel, KernelError, KernelIo};

/// One transformer block's weights as f32, `nn.Linear` layout (`[out][in]` row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerF32 {
    pub attn_norm: Vec<f32>,
    pub wq: Vec<f32>,
    pub wk: Vec<f32>,
    pub wv: Vec<f32>,
    pub wo: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Vec<f32>,
    pub w_up: Vec<f32>,
    pub w_down: Vec<f32>,
}

impl LayerF32 {
    /// Dequantize one block of a model.
    pub fn from_weights(l: &LayerWeights<'_>) -> Self {
        Self {
            attn_norm: l.attn_norm.to_f32(),
            wq: l.wq.to_f32(),
            wk: l.wk.to_f32(),
            wv: l.wv.to_f32(),
            wo: l.wo.to_f32(),
            ffn_norm: l.ffn_norm.to_f32(),
            w_gate: l.w_gate.to_f32(),
            w_up: l.w_up.to_f32(),
            w_down: l.w_down.to_f32(),
        }
    }

    fn check(&self, g: &Geometry) -> Result<(), KernelError> {
        let (d, kv, h) = (g.dim, g.kv_dim, g.ffn_dim);
        let want = [
            ("attn_norm", self.attn_norm.len(), d),
            ("wq", self.wq.len(), d * d),
            ("wk", self.wk.len(), kv * d),
            ("wv", self.wv.len(), kv * d),
            ("wo", self.wo.len(), d * d),
            ("ffn_norm", self.ffn_norm.len(), d),
            ("w_gate", self.w_gate.len(), h * d),
            ("w_up", self.w_up.len(), h * d),
            ("w_down", self.w_down.len(), d * h),
        ];
        for (name, got, need) in want {
            if got != need {
                return Err(KernelError::Weights(format!(
                    "{name} has {got} values, need {need}"
                )));
            }
        }
        Ok(())
    }
}

/// `P·W` for a `[rows][cols]` matrix: row 2i becomes −row 2i+1, row 2i+1 becomes row 2i, so
/// that `(P·W)·x = P·(W·x)` is the pair-swapped-with-sign projection RoPE needs.
pub fn pair_swap_rows(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    for i in (0..rows).step_by(2) {
        let (r0, r1) = (
            &w[i * cols..(i + 1) * cols],
            &w[(i + 1) * cols..(i + 2) * cols],
        );
        for c in 0..cols {
            out[i * cols + c] = -r1[c];
            out[(i + 1) * cols + c] = r0[c];
        }
    }
    out
}

/// Values shared by all layers of one kernel: RoPE tables, mask, scatter and keep.
struct Shared {
    cos: Value,
    sin: Value,
    cos_k: Value,
    sin_k: Value,
    /// `[1, 1, L, S]` additive causal mask.
    mask: Value,
    /// `[1, 1, L, S]` lane → slot one-hot rows.
    scatter: Value,
    /// `[1, 1, 1, S]`: 0 on slots written by this chunk, else 1.
    keep: Value,
}

fn shared(b: &mut Blocks, g: &Geometry, pos: Value) -> Shared {
    let (d, kv, s, l) = (g.dim, g.kv_dim, g.max_seq, g.lanes);
    let cos = b.slice(pos, &[0, 0, 0, 0], &[1, d, 1, l]);
    let sin = b.slice(pos, &[0, d, 0, 0], &[1, d, 1, l]);
    let cos_k = b.slice(pos, &[0, 0, 0, 0], &[1, kv, 1, l]);
    let sin_k = b.slice(pos, &[0, d, 0, 0], &[1, kv, 1, l]);
    let lanes_by_slot = |b: &mut Blocks, at: usize| {
        let t = b.slice(pos, &[0, at, 0, 0], &[1, s, 1, l]);
        let t = b.reshape(t, &[1, 1, s, l]);
        b.transpose_last(t)
    };
    let mask = lanes_by_slot(b, 2 * d);
    let scatter = lanes_by_slot(b, 2 * d + s);
    let written = b.reduce_sum(scatter, 2);
    let one = b.scalar(1.0);
    let keep = b.sub(one, written);
    Shared {
        cos,
        sin,
        cos_k,
        sin_k,
        mask,
        scatter,
        keep,
    }
}

/// `z ⊙ cos + zp ⊙ sin` with `zp = P·z` computed by the pair-swapped weights.
fn rope(b: &mut Blocks, z: Value, zp: Value, cos: Value, sin: Value) -> Value {
    let a = b.mul(z, cos);
    let c = b.mul(zp, sin);
    b.add(a, c)
}

/// The cache with this chunk's rows written in: `cache ⊙ keep + new·scatter`.
/// `cache: [1, KV, 1, S]`, `new: [1, KV, 1, L]` → `[1, NKV, hd, S]`.
fn blend(b: &mut Blocks, g: &Geometry, sh: &Shared, cache: Value, new: Value) -> Value {
    let (kv, s, l) = (g.kv_dim, g.max_seq, g.lanes);
    let c4 = b.reshape(cache, &[1, 1, kv, s]);
    let kept = b.mul(c4, sh.keep);
    let n4 = b.reshape(new, &[1, 1, kv, l]);
    let placed = b.matmul(n4, sh.scatter, false);
    let all = b.add(kept, placed);
    b.reshape(all, &[1, g.n_kv_heads, g.head_dim, s])
}

/// Causal GQA attention of `q: [1, D, 1, L]` over `k_all, v_all: [1, NKV, hd, S]`.
fn attention(
    b: &mut Blocks,
    g: &Geometry,
    sh: &Shared,
    q: Value,
    k_all: Value,
    v_all: Value,
) -> Value {
    let (d, s, l, hd) = (g.dim, g.max_seq, g.lanes, g.head_dim);
    let (nh, nkv, grp) = (g.n_heads, g.n_kv_heads, g.group());
    // [1, NH, hd, L] → [1, NH, L, hd] → [1, NKV, G·L, hd]: the G query heads of one KV head
    // stacked as rows.
    let q4 = b.reshape(q, &[1, nh, hd, l]);
    let qt = b.transpose_last(q4);
    let qg = b.reshape(qt, &[1, nkv, grp * l, hd]);
    let scores = b.matmul(qg, k_all, false);
    let scale = b.scalar(1.0 / (hd as f32).sqrt());
    let scaled = b.mul(scores, scale);
    let per_head = b.reshape(scaled, &[1, nh, l, s]);
    let masked = b.add(per_head, sh.mask);
    let probs = b.softmax(masked, -1);
    let pg = b.reshape(probs, &[1, nkv, grp * l, s]);
    let ctx = b.matmul(pg, v_all, true);
    let ch = b.reshape(ctx, &[1, nh, l, hd]);
    let ct = b.transpose_last(ch);
    b.reshape(ct, &[1, d, 1, l])
}

/// One block; returns (new x, new k rows, new v rows).
fn block(
    b: &mut Blocks,
    g: &Geometry,
    sh: &Shared,
    w: &LayerF32,
    tag: &str,
    x: Value,
    (k_cache, v_cache): (Value, Value),
) -> (Value, Value, Value) {
    let (d, kv, h) = (g.dim, g.kv_dim, g.ffn_dim);
    let f = |s: &str| format!("{tag}_{s}");
    // --- attention ---
    let xn = b.rms_norm(&f("attn_norm"), &w.attn_norm, g.rms_eps, x);
    let q = b.linear(&f("wq"), &w.wq, d, xn);
    let qp = b.linear(&f("wq_swap"), &pair_swap_rows(&w.wq, d, d), d, xn);
    let k = b.linear(&f("wk"), &w.wk, kv, xn);
    let kp = b.linear(&f("wk_swap"), &pair_swap_rows(&w.wk, kv, d), kv, xn);
    let v = b.linear(&f("wv"), &w.wv, kv, xn);
    let q = rope(b, q, qp, sh.cos, sh.sin);
    let k = rope(b, k, kp, sh.cos_k, sh.sin_k);
    let k_all = blend(b, g, sh, k_cache, k);
    let v_all = blend(b, g, sh, v_cache, v);
    let att = attention(b, g, sh, q, k_all, v_all);
    let o = b.linear(&f("wo"), &w.wo, d, att);
    let x1 = b.add(x, o);
    // --- SwiGLU feed-forward ---
    let xn2 = b.rms_norm(&f("ffn_norm"), &w.ffn_norm, g.rms_eps, x1);
    let h1 = b.linear(&f("w_gate"), &w.w_gate, h, xn2);
    let h3 = b.linear(&f("w_up"), &w.w_up, h, xn2);
    let sig = b.sigmoid(h1);
    let silu = b.mul(h1, sig);
    let gate = b.mul(silu, h3);
    let y = b.linear(&f("w_down"), &w.w_down, d, gate);
    let x2 = b.add(x1, y);
    (x2, k, v)
}

/// Generate the kernel running `layers` (consecutive blocks; `first` = index of the first,
/// used in labels and weight file names).
pub fn fused_layers(
    g: &Geometry,
    first: usize,
    layers: &[LayerF32],
) -> Result<Kernel, KernelError> {
    g.check()?;
    if layers.is_empty() || layers.len() > 48 {
        return Err(KernelError::Geometry(format!(
            "{} layers in one kernel (1..=48 supported)",
            layers.len()
        )));
    }
    for w in layers {
        w.check(g)?;
    }
    let (d, kv, s, l) = (g.dim, g.kv_dim, g.max_seq, g.lanes);
    let mut b = Blocks::new();
    let x_in = b.input(&input_name(0, "x"), g.io, &[1, d, 1, l]);
    let pos_in = b.input(&input_name(1, "pos"), g.io, &[1, g.pos_channels(), 1, l]);
    let mut caches = Vec::new();
    for j in 0..layers.len() {
        let k = b.input(
            &input_name(2 + 2 * j, &format!("k{j}")),
            g.io,
            &[1, kv, 1, s],
        );
        let v = b.input(
            &input_name(3 + 2 * j, &format!("v{j}")),
            g.io,
            &[1, kv, 1, s],
        );
        caches.push((k, v));
    }
    let mut inputs: Vec<IoDesc> = vec![b.io(x_in), b.io(pos_in)];
    for &(k, v) in &caches {
        inputs.push(b.io(k));
        inputs.push(b.io(v));
    }
    let mut x = b.as_compute(x_in);
    let pos = b.as_compute(pos_in);
    let sh = shared(&mut b, g, pos);
    let mut new_rows = Vec::new();
    for (j, (w, (kc, vc))) in layers.iter().zip(caches).enumerate() {
        let kc = b.as_compute(kc);
        let vc = b.as_compute(vc);
        let (x2, k, v) = block(&mut b, g, &sh, w, &format!("l{}", first + j), x, (kc, vc));
        x = x2;
        new_rows.push(k);
        new_rows.push(v);
    }
    let x_out = b.as_io_output(x, g.io, &output_name(0, "x"));
    let kv_name = output_name(1, "kv");
    let kv_out = if g.io == DType::Fp16 {
        b.concat_channels(&new_rows, Some(&kv_name))
    } else {
        let cat = b.concat_channels(&new_rows, None);
        b.as_io_output(cat, g.io, &kv_name)
    };
    let outputs = vec![b.io(x_out), b.io(kv_out)];
    let (program, weights) = b.finish(&[x_out, kv_out])?;
    let last = first + layers.len() - 1;
    Ok(Kernel {
        label: format!("layers {first}-{last}"),
        program,
        weights,
        io: KernelIo { inputs, outputs },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_swap_is_the_rope_partner() {
        // 4 rows × 2 cols.
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let p = pair_swap_rows(&w, 4, 2);
        assert_eq!(p, vec![-3.0, -4.0, 1.0, 2.0, -7.0, -8.0, 5.0, 6.0]);
    }
}
