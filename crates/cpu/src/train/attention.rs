//! Causal grouped-query attention (Vaswani et al. 2017; GQA: Ainslie et al. 2023) over a sequence.
//!
//! Query head `h` reads KV head `h / (n_heads / n_kv_heads)`. For each head and query position `t`:
//! `S[t][s] = q_t · k_s / sqrt(hd)` for `s <= t`, `P[t] = softmax(S[t])`, `o_t = sum_s P[t][s] v_s`.

use super::Real;

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

/// Dot product in the order of the portable [`crate::dot::dot_f32`]: eight running lanes, then
/// the tail.
fn dot<R: Real>(a: &[R], b: &[R]) -> R {
    let mut acc = [R::zero(); 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: R = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(&x, &y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().copied().sum::<R>() + tail
}

/// Causal GQA attention, computed like [`crate::ops::attention`] at every position.
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
    for h in 0..n_heads {
        let kv_off = (h / group) * hd;
        for t in 0..n {
            let qt = &q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
            let p = &mut probs[(h * n + t) * n..(h * n + t) * n + t + 1];
            // Scores, then a softmax shifted by the maximum.
            for (s, ps) in p.iter_mut().enumerate() {
                *ps = dot(qt, &k[s * kv_dim + kv_off..s * kv_dim + kv_off + hd]) * scale;
            }
            let max = p.iter().fold(R::neg_infinity(), |a, &x| a.max(x));
            let mut sum = R::zero();
            for ps in p.iter_mut() {
                *ps = (*ps - max).exp();
                sum += *ps;
            }
            for ps in p.iter_mut() {
                *ps /= sum;
            }
            let ot = &mut out[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
            for (s, &a) in p.iter().enumerate() {
                let vs = &v[s * kv_dim + kv_off..s * kv_dim + kv_off + hd];
                for (o, &vv) in ot.iter_mut().zip(vs) {
                    *o += a * vv;
                }
            }
        }
    }
    (out, AttentionCache { probs })
}

/// Backward of [`attention`]. Per head, with `dO` the output gradient:
/// `dv_s += sum_t P[t][s] dO_t`; `dP[t][s] = dO_t · v_s`;
/// `dS[t][s] = P[t][s] (dP[t][s] - sum_r P[t][r] dP[t][r])` (softmax backward);
/// `dq_t = scale sum_s dS[t][s] k_s`; `dk_s += scale sum_t dS[t][s] q_t`. KV heads shared by a
/// group of query heads sum the group's gradients.
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
    let mut ds = vec![R::zero(); n];
    for h in 0..n_heads {
        let kv_off = (h / group) * hd;
        let head = |t: usize| t * q_dim + h * hd..t * q_dim + (h + 1) * hd;
        let kv = |s: usize| s * kv_dim + kv_off..s * kv_dim + kv_off + hd;
        for t in 0..n {
            let p = &cache.probs[(h * n + t) * n..(h * n + t) * n + t + 1];
            let d_out_t = &dout[head(t)];
            // dP and the softmax backward into dS.
            let ds = &mut ds[..t + 1];
            for (s, d) in ds.iter_mut().enumerate() {
                *d = dot(d_out_t, &v[kv(s)]);
            }
            let mean: R = p.iter().zip(ds.iter()).map(|(&a, &d)| a * d).sum();
            for (d, &a) in ds.iter_mut().zip(p) {
                *d = a * (*d - mean) * scale;
            }
            let qt = &q[head(t)];
            for s in 0..=t {
                let (a, g) = (p[s], ds[s]);
                let (dvs, dks) = (&mut dv[kv(s)], &mut dk[kv(s)]);
                for i in 0..hd {
                    dvs[i] += a * d_out_t[i];
                    dks[i] += g * qt[i];
                }
                let ks = &k[kv(s)];
                let dqt = &mut dq[head(t)];
                for i in 0..hd {
                    dqt[i] += g * ks[i];
                }
            }
        }
    }
    AttentionGrads { dq, dk, dv }
}
