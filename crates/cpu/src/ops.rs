//! The non-matmul pieces of a Llama block, one function per idea, all in f32.

use crate::dot::{scores_f32, weighted_rows};

/// RMSNorm (Zhang & Sennrich 2019): `out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]`.
/// Shapes: `x, w, out: [dim]`.
pub fn rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
    let scale = (1.0 / (ms + eps as f64).sqrt()) as f32;
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

/// Rotary position embedding angles for one position (RoFormer, Su et al. 2021):
/// `theta_i = pos * base^(-2i / head_dim)` for `i in 0..head_dim/2`, as `(cos, sin)`.
pub fn rope_angles(pos: usize, head_dim: usize, base: f32) -> (Vec<f32>, Vec<f32>) {
    (0..head_dim / 2)
        .map(|i| {
            let freq = (base as f64).powf(-2.0 * i as f64 / head_dim as f64);
            let theta = pos as f64 * freq;
            (theta.cos() as f32, theta.sin() as f32)
        })
        .unzip()
}

/// Rotate the adjacent pairs `(x[2i], x[2i+1])` of every head by `theta_i` (llama.cpp's
/// "normal" RoPE mode, which `llama` GGUFs need: their q/k rows are stored permuted for it).
/// Shapes: `x: [n_heads][head_dim]`, `cos, sin: [head_dim / 2]`.
pub fn rope_apply(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let head_dim = cos.len() * 2;
    for head in x.chunks_exact_mut(head_dim) {
        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
            let (x0, x1) = (pair[0], pair[1]);
            pair[0] = x0 * cos[i] - x1 * sin[i];
            pair[1] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

/// [`rope_angles`] then [`rope_apply`] for one position.
pub fn rope(x: &mut [f32], head_dim: usize, pos: usize, base: f32) {
    let (cos, sin) = rope_angles(pos, head_dim, base);
    rope_apply(x, &cos, &sin);
}

/// In-place softmax, shifted by the maximum for stability.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// `silu(x) = x * sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// SwiGLU (Shazeer 2020) in place: `gate[i] = silu(gate[i]) * up[i]`. Shapes: `[ffn_dim]`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// Causal attention of one query head over the cached positions `0..n_pos`.
///
/// `q: [head_dim]`; `k_cache, v_cache: [n_pos][kv_dim]` with this head's KV head at columns
/// `kv_off..kv_off + head_dim`; `scores: [n_pos]` scratch; `out: [head_dim]`.
/// `out = sum_t softmax_t(q . k_t / sqrt(head_dim)) v_t`.
pub fn attention_head(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    kv_dim: usize,
    kv_off: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let scale = 1.0 / (q.len() as f32).sqrt();
    scores_f32(q, k_cache, kv_dim, kv_off, scale, scores);
    softmax(scores);
    weighted_rows(scores, v_cache, kv_dim, kv_off, out);
}

/// Grouped-query attention (Ainslie et al. 2023) for one query position: query head `h` reads
/// KV head `h / (n_heads / n_kv_heads)`. Shapes: `q, out: [n_heads][head_dim]`,
/// `k_cache, v_cache: [>= n_pos][n_kv_heads * head_dim]`; attends to positions `0..n_pos`.
pub fn attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    n_pos: usize,
    n_heads: usize,
    n_kv_heads: usize,
    out: &mut [f32],
) {
    let head_dim = q.len() / n_heads;
    let kv_dim = n_kv_heads * head_dim;
    let group = n_heads / n_kv_heads;
    let mut scores = vec![0f32; n_pos];
    for (h, (qh, oh)) in q
        .chunks_exact(head_dim)
        .zip(out.chunks_exact_mut(head_dim))
        .enumerate()
    {
        let kv_off = (h / group) * head_dim;
        attention_head(qh, k_cache, v_cache, kv_dim, kv_off, &mut scores, oh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn rms_norm_known_values() {
        // x = [3, 4]: mean square 12.5, scale 1/sqrt(12.5).
        let mut out = [0f32; 2];
        rms_norm(&mut out, &[3.0, 4.0], &[1.0, 2.0], 0.0);
        let s = 1.0 / 12.5f32.sqrt();
        assert!(close(out[0], 3.0 * s, 1e-6) && close(out[1], 8.0 * s, 1e-6));
    }

    #[test]
    fn rope_rotates_adjacent_pairs_by_known_angles() {
        // head_dim 4, base 100: theta_0 = pos, theta_1 = pos / 10.
        let mut x = [1.0f32, 0.0, 0.0, 2.0];
        rope(&mut x, 4, 3, 100.0);
        assert!(close(x[0], 3f32.cos(), 1e-6) && close(x[1], 3f32.sin(), 1e-6));
        assert!(close(x[2], -2.0 * 0.3f32.sin(), 1e-6));
        assert!(close(x[3], 2.0 * 0.3f32.cos(), 1e-6));
        // Position 0 is the identity; two heads are rotated independently.
        let mut y = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        rope(&mut y, 4, 0, 10000.0);
        assert_eq!(y, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let mut z = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        rope(&mut z, 4, 1, 10000.0);
        assert!(close(z[0], 1f32.cos(), 1e-6) && close(z[4], 1f32.cos(), 1e-6));
        assert!(close(z[1], 1f32.sin(), 1e-6) && close(z[5], 1f32.sin(), 1e-6));
    }

    #[test]
    fn rope_preserves_pair_norms_and_relative_angle() {
        // q(m) . k(n) depends only on m - n.
        let q = [0.3f32, -1.2, 0.7, 0.4];
        let k = [1.1f32, 0.5, -0.2, 0.9];
        let dot_at = |m: usize, n: usize| {
            let (mut a, mut b) = (q, k);
            rope(&mut a, 4, m, 10000.0);
            rope(&mut b, 4, n, 10000.0);
            crate::dot::dot_f32(&a, &b)
        };
        assert!(close(dot_at(7, 3), dot_at(14, 10), 1e-5));
        let mut a = q;
        rope(&mut a, 4, 11, 10000.0);
        assert!(close(a[0].hypot(a[1]), q[0].hypot(q[1]), 1e-6));
    }

    #[test]
    fn softmax_and_swiglu_known_values() {
        let mut x = [1.0f32, 2.0, 3.0];
        softmax(&mut x);
        let e: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).collect();
        let s: f32 = e.iter().sum();
        for (a, b) in x.iter().zip(&e) {
            assert!(close(*a, b / s, 1e-6));
        }
        let mut g = [0.0f32, 1.0, -2.0];
        swiglu(&mut g, &[5.0, 2.0, 1.0]);
        assert_eq!(g[0], 0.0);
        assert!(close(g[1], 2.0 / (1.0 + (-1f32).exp()), 1e-6));
        assert!(close(g[2], -2.0 / (1.0 + 2f32.exp()), 1e-6));
    }

    /// Attention written the long way: materialize K and V per query head, full score matrix.
    fn naive_gqa(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        n_pos: usize,
        nh: usize,
        nkv: usize,
        hd: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; nh * hd];
        for h in 0..nh {
            let kvh = h * nkv / nh;
            let s: Vec<f32> = (0..n_pos)
                .map(|t| {
                    (0..hd)
                        .map(|i| q[h * hd + i] * k[t * nkv * hd + kvh * hd + i])
                        .sum::<f32>()
                        / (hd as f32).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f32::MIN, f32::max);
            let z: f32 = s.iter().map(|x| (x - m).exp()).sum();
            for t in 0..n_pos {
                let p = (s[t] - m).exp() / z;
                for i in 0..hd {
                    out[h * hd + i] += p * v[t * nkv * hd + kvh * hd + i];
                }
            }
        }
        out
    }

    #[test]
    fn gqa_attention_matches_naive_loop() {
        let (nh, nkv, hd, n_pos) = (6, 2, 8, 5);
        let val = |i: usize, s: usize| (((i * 7919 + s) % 97) as f32 / 48.0) - 1.0;
        let q: Vec<f32> = (0..nh * hd).map(|i| val(i, 1)).collect();
        let k: Vec<f32> = (0..n_pos * nkv * hd).map(|i| val(i, 2)).collect();
        let v: Vec<f32> = (0..n_pos * nkv * hd).map(|i| val(i, 3)).collect();
        let mut out = vec![0f32; nh * hd];
        attention(&q, &k, &v, n_pos, nh, nkv, &mut out);
        let want = naive_gqa(&q, &k, &v, n_pos, nh, nkv, hd);
        for (a, b) in out.iter().zip(&want) {
            assert!(close(*a, *b, 1e-5), "{a} vs {b}");
        }
        // Causality: attending to fewer positions changes the answer (cache beyond n_pos unread).
        let mut short = vec![0f32; nh * hd];
        attention(&q, &k, &v, 3, nh, nkv, &mut short);
        let want_short = naive_gqa(&q, &k, &v, 3, nh, nkv, hd);
        for (a, b) in short.iter().zip(&want_short) {
            assert!(close(*a, *b, 1e-5), "{a} vs {b}");
        }
        assert!(short.iter().zip(&out).any(|(a, b)| (a - b).abs() > 1e-3));
    }
}
