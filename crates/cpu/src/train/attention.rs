//! Causal grouped-query attention (Vaswani et al. 2017; GQA: Ainslie et al. 2023) over a sequence.
//!
//! Query head `h` reads KV head `h / (n_heads / n_kv_heads)`. For each head and query position `t`:
//! `S[t][s] = q_t · k_s / sqrt(hd)` for `s <= t`, `P[t] = softmax(S[t])`, `o_t = sum_s P[t][s] v_s`.

use super::{matmul, Real};

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub seq_len: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    fn check(&self, q: usize, k: usize, v: usize) {
        let AttentionShape {
            seq_len,
            n_heads,
            n_kv_heads,
            head_dim,
        } = *self;
        assert!(
            n_kv_heads > 0 && n_heads % n_kv_heads == 0,
            "attention: bad head counts"
        );
        assert_eq!(
            q,
            seq_len * n_heads * head_dim,
            "attention: q is not [T, n_heads * hd]"
        );
        assert_eq!(
            k,
            seq_len * n_kv_heads * head_dim,
            "attention: k is not [T, n_kv * hd]"
        );
        assert_eq!(v, k, "attention: v is not [T, n_kv * hd]");
    }
}

/// What [`attention_backward`] needs beyond q, k, v: the attention weights
/// `probs: [n_heads][T][T]` (row `t` is `P[t]`, zero above the diagonal).
#[derive(Debug, Clone)]
pub struct AttentionCache<R> {
    pub probs: Vec<R>,
}

/// Gradients of q, k and v, shaped like them.
#[derive(Debug, Clone)]
pub struct AttentionGrads<R> {
    pub dq: Vec<R>,
    pub dk: Vec<R>,
    pub dv: Vec<R>,
}

/// Causal GQA attention. Per head, `S = q_h k_gᵀ` and `O_h = P v_g` are GEMMs over the whole
/// sequence (the masked upper triangle of `S` is computed and discarded: a dense product is
/// still far faster than a triangular loop), the softmax runs per row over `s <= t`.
/// Shapes: `q, out: [T, n_heads * hd]` (already RoPE'd), `k, v: [T, n_kv_heads * hd]`.
pub fn attention<R: Real>(
    q: &[R],
    k: &[R],
    v: &[R],
    shape: AttentionShape,
) -> (Vec<R>, AttentionCache<R>) {
    shape.check(q.len(), k.len(), v.len());
    let AttentionShape {
        seq_len: n,
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = shape;
    let (q_dim, kv_dim, group) = (n_heads * hd, n_kv_heads * hd, n_heads / n_kv_heads);
    let scale = R::one() / R::of(hd as f64).sqrt();
    let mut out = vec![R::zero(); n * q_dim];
    let mut probs = vec![R::zero(); n_heads * n * n];
    for (h, p) in probs.chunks_exact_mut(n * n).enumerate() {
        let g = (h / group) * hd;
        // S = q_h · k_gᵀ: [T, hd] · [hd, T].
        matmul(
            (n, n, hd),
            p,
            (n, 1),
            false,
            &q[h * hd..],
            (q_dim, 1),
            &k[g..],
            (1, kv_dim),
        );
        for (t, row) in p.chunks_exact_mut(n).enumerate() {
            softmax_causal(row, t, scale);
        }
        // O_h = P · v_g: [T, T] · [T, hd].
        matmul(
            (n, hd, n),
            &mut out[h * hd..],
            (q_dim, 1),
            false,
            p,
            (n, 1),
            &v[g..],
            (kv_dim, 1),
        );
    }
    (out, AttentionCache { probs })
}

/// Row `t` of the scores in place: `softmax(scale · row[..=t])`, zero above the diagonal.
fn softmax_causal<R: Real>(row: &mut [R], t: usize, scale: R) {
    let (live, masked) = row.split_at_mut(t + 1);
    masked.iter_mut().for_each(|x| *x = R::zero());
    let max = live
        .iter()
        .fold(R::neg_infinity(), |a, &x| a.max(x * scale));
    let mut sum = R::zero();
    for x in live.iter_mut() {
        *x = (*x * scale - max).exp_nonpositive();
        sum += *x;
    }
    live.iter_mut().for_each(|x| *x /= sum);
}

/// Backward of [`attention`]. Per head, with `dO` the output gradient (all GEMMs but the
/// softmax backward): `dP = dO_h v_gᵀ`; `dS[t][s] = scale · P[t][s] (dP[t][s] − Σ_r P[t][r]
/// dP[t][r])`; `dq_h = dS k_g`; `dk_g += dSᵀ q_h`; `dv_g += Pᵀ dO_h`. KV heads shared by a group
/// of query heads sum the group's gradients.
pub fn attention_backward<R: Real>(
    dout: &[R],
    q: &[R],
    k: &[R],
    v: &[R],
    shape: AttentionShape,
    cache: &AttentionCache<R>,
) -> AttentionGrads<R> {
    shape.check(q.len(), k.len(), v.len());
    assert_eq!(dout.len(), q.len());
    let AttentionShape {
        seq_len: n,
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = shape;
    assert_eq!(cache.probs.len(), n_heads * n * n);
    let (q_dim, kv_dim, group) = (n_heads * hd, n_kv_heads * hd, n_heads / n_kv_heads);
    let scale = R::one() / R::of(hd as f64).sqrt();
    let mut dq = vec![R::zero(); q.len()];
    let mut dk = vec![R::zero(); k.len()];
    let mut dv = vec![R::zero(); v.len()];
    let mut ds = vec![R::zero(); n * n];
    for (h, p) in cache.probs.chunks_exact(n * n).enumerate() {
        let g = (h / group) * hd;
        let d_out = &dout[h * hd..];
        // dv_g += Pᵀ · dO_h.
        matmul(
            (n, hd, n),
            &mut dv[g..],
            (kv_dim, 1),
            true,
            p,
            (1, n),
            d_out,
            (q_dim, 1),
        );
        // dP = dO_h · v_gᵀ, then the softmax backward in place.
        matmul(
            (n, n, hd),
            &mut ds,
            (n, 1),
            false,
            d_out,
            (q_dim, 1),
            &v[g..],
            (1, kv_dim),
        );
        for (t, (dsr, pr)) in ds.chunks_exact_mut(n).zip(p.chunks_exact(n)).enumerate() {
            let mean: R = pr[..=t].iter().zip(&dsr[..=t]).map(|(&a, &d)| a * d).sum();
            for (d, &a) in dsr.iter_mut().zip(pr) {
                *d = a * (*d - mean) * scale;
            }
        }
        // dq_h = dS · k_g;  dk_g += dSᵀ · q_h.
        matmul(
            (n, hd, n),
            &mut dq[h * hd..],
            (q_dim, 1),
            false,
            &ds,
            (n, 1),
            &k[g..],
            (kv_dim, 1),
        );
        matmul(
            (n, hd, n),
            &mut dk[g..],
            (kv_dim, 1),
            true,
            &ds,
            (1, n),
            &q[h * hd..],
            (q_dim, 1),
        );
    }
    AttentionGrads { dq, dk, dv }
}
