//! Every backward against central finite differences in f64, and every f32 forward against the
//! inference path. Run with `--nocapture` to see the errors achieved.

use super::*;

/// Deterministic inputs: splitmix64 mapped to `[-1, 1)`.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

const H: f64 = 1e-6;
const TOL: f64 = 1e-6;

/// Central differences of `loss` at `x`, one coordinate at a time.
fn numeric_grad(x: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            xp[i] = x[i] + H;
            let up = loss(&xp);
            xp[i] = x[i] - H;
            let down = loss(&xp);
            xp[i] = x[i];
            (up - down) / (2.0 * H)
        })
        .collect()
}

/// `max |analytic - numeric| / max |numeric|`: the error relative to the gradient's scale.
fn rel_err(analytic: &[f64], numeric: &[f64]) -> f64 {
    assert_eq!(analytic.len(), numeric.len());
    let scale = numeric.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
    let diff = analytic
        .iter()
        .zip(numeric)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

fn check(op: &str, input: &str, analytic: &[f64], numeric: &[f64]) {
    let e = rel_err(analytic, numeric);
    eprintln!("gradcheck {op:>13} d{input:<6} rel err {e:.2e}");
    assert!(e <= TOL, "{op}: d{input} relative error {e:e} > {TOL:e}");
    assert!(
        numeric.iter().any(|v| v.abs() > 1e-3),
        "{op}: d{input} is trivially zero"
    );
}

/// The scalar loss of the checks: a fixed random projection of an op's output.
fn project(y: &[f64], r: &[f64]) -> f64 {
    y.iter().zip(r).map(|(a, b)| a * b).sum()
}

#[test]
fn rms_norm_gradients() {
    let (t, d, eps) = (3, 8, 1e-5);
    let mut rng = Rng(1);
    let (x, w, r) = (rng.vec(t * d, 2.0), rng.vec(d, 1.5), rng.vec(t * d, 1.0));
    let (_, cache) = rms_norm(&x, &w, eps);
    let mut dw = vec![0.0; d];
    let dx = rms_norm_backward(&r, &x, &w, &cache, &mut dw);
    check(
        "rms_norm",
        "x",
        &dx,
        &numeric_grad(&x, |x| project(&rms_norm(x, &w, eps).0, &r)),
    );
    check(
        "rms_norm",
        "w",
        &dw,
        &numeric_grad(&w, |w| project(&rms_norm(&x, w, eps).0, &r)),
    );
}

#[test]
fn rope_gradients() {
    let (t, n_heads, hd) = (4, 2, 6);
    let mut rng = Rng(2);
    let (x, r) = (
        rng.vec(t * n_heads * hd, 1.0),
        rng.vec(t * n_heads * hd, 1.0),
    );
    let table = RopeTable::new(t, hd, 3, 100.0);
    let dx = rope_backward(&r, &table);
    check(
        "rope",
        "x",
        &dx,
        &numeric_grad(&x, |x| project(&rope(x, &table), &r)),
    );
}

#[test]
fn attention_gradients_causal_gqa() {
    let shape = AttentionShape {
        seq_len: 5,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 4,
    };
    let (nq, nkv) = (5 * 4 * 4, 5 * 2 * 4);
    let mut rng = Rng(3);
    let (q, k, v) = (rng.vec(nq, 1.5), rng.vec(nkv, 1.5), rng.vec(nkv, 1.0));
    let r = rng.vec(nq, 1.0);
    let (_, cache) = attention(&q, &k, &v, shape);
    let g = attention_backward(&r, &q, &k, &v, shape, &cache);
    let loss = |q: &[f64], k: &[f64], v: &[f64]| project(&attention(q, k, v, shape).0, &r);
    check(
        "attention",
        "q",
        &g.dq,
        &numeric_grad(&q, |q| loss(q, &k, &v)),
    );
    check(
        "attention",
        "k",
        &g.dk,
        &numeric_grad(&k, |k| loss(&q, k, &v)),
    );
    check(
        "attention",
        "v",
        &g.dv,
        &numeric_grad(&v, |v| loss(&q, &k, v)),
    );
    // Causality: the first query attends only to itself, so its output is v_0 of its KV head.
    let (out, _) = attention(&q, &k, &v, shape);
    assert_eq!(&out[..4], &v[..4]);
    assert_eq!(&out[8..12], &v[4..8]);
}

#[test]
fn swiglu_gradients() {
    let mut rng = Rng(4);
    let (gate, up, r) = (rng.vec(12, 4.0), rng.vec(12, 2.0), rng.vec(12, 1.0));
    let (dgate, dup) = swiglu_backward(&r, &gate, &up);
    check(
        "swiglu",
        "gate",
        &dgate,
        &numeric_grad(&gate, |g| project(&swiglu(g, &up), &r)),
    );
    check(
        "swiglu",
        "up",
        &dup,
        &numeric_grad(&up, |u| project(&swiglu(&gate, u), &r)),
    );
}

#[test]
fn embedding_gradients_and_bad_tokens() {
    let (vocab, d) = (7, 3);
    let tokens = [2u32, 5, 2, 0];
    let mut rng = Rng(5);
    let (table, r) = (rng.vec(vocab * d, 1.0), rng.vec(tokens.len() * d, 1.0));
    let mut dtable = vec![0.0; vocab * d];
    embedding_backward(&r, &tokens, d, &mut dtable).unwrap();
    let loss = |tb: &[f64]| project(&embedding(tb, d, &tokens).unwrap(), &r);
    check("embedding", "table", &dtable, &numeric_grad(&table, loss));
    let e = embedding(&table, d, &[1, 7]).unwrap_err();
    assert_eq!(
        e,
        TrainError::TokenOutOfRange {
            token: 7,
            pos: 1,
            vocab: 7
        }
    );
    assert!(embedding_backward(&r[..6], &[1, 9], d, &mut dtable).is_err());
}

/// The vectorizable exp agrees with libm's to about an ulp over the softmax range.
#[test]
fn exp_nonpositive_f32_is_accurate() {
    let mut worst = 0f64;
    for i in 0..=200_000 {
        let x = -87.0 * i as f32 / 200_000.0;
        let got = exp_nonpositive_f32(x) as f64;
        let want = (x as f64).exp();
        worst = worst.max((got - want).abs() / want);
    }
    assert!(worst < 3e-7, "relative error {worst:e}");
    assert_eq!(exp_nonpositive_f32(0.0), 1.0);
    assert!(exp_nonpositive_f32(-1e4) >= 0.0 && exp_nonpositive_f32(-1e4) < 1e-37);
}

/// The fused training form equals the separate forward and backward (scaled to a sum).
#[test]
fn fused_cross_entropy_equals_forward_plus_backward() {
    let (vocab, scale) = (6, 0.25);
    let targets = [3u32, IGNORE_INDEX, 0, 5];
    let logits = Rng(9).vec(targets.len() * vocab, 3.0);
    let (mean, cache) = cross_entropy(&logits, vocab, &targets).unwrap();
    let want = cross_entropy_backward(scale * cache.count as f64, &logits, &targets, &cache);
    let mut fused = logits.clone();
    let (sum, n) = cross_entropy_grad(&mut fused, vocab, &targets, scale).unwrap();
    assert_eq!(n, 3);
    assert!((sum - mean * 3.0).abs() < 1e-12, "{sum} vs {}", mean * 3.0);
    for (a, b) in fused.iter().zip(&want) {
        assert!((a - b).abs() < 1e-14, "{a} vs {b}");
    }
    let mut bad = logits.clone();
    assert!(cross_entropy_grad(&mut bad, vocab, &[0, 6, 0, 0], 1.0).is_err());
}

#[test]
fn cross_entropy_gradients_with_ignored_targets() {
    let (vocab, dloss) = (6, 0.7);
    let targets = [3u32, IGNORE_INDEX, 0, 5];
    let mut rng = Rng(6);
    let logits = rng.vec(targets.len() * vocab, 3.0);
    let (_, cache) = cross_entropy(&logits, vocab, &targets).unwrap();
    assert_eq!(cache.count, 3);
    let dl = cross_entropy_backward(dloss, &logits, &targets, &cache);
    let loss = |l: &[f64]| dloss * cross_entropy(l, vocab, &targets).unwrap().0;
    check("cross_entropy", "logits", &dl, &numeric_grad(&logits, loss));
    assert!(dl[vocab..2 * vocab].iter().all(|&v| v == 0.0));
    // Stable for huge logits, and a known value: uniform logits give log(V).
    let (big, _) = cross_entropy(&[1e4f32, 0.0, -1e4], 3, &[0]).unwrap();
    assert!(big.abs() < 1e-6, "{big}");
    let (uniform, _) = cross_entropy(&[0.5f64; 12], 6, &[1, 4]).unwrap();
    assert!((uniform - 6f64.ln()).abs() < 1e-12);
    let e = cross_entropy(&logits, vocab, &[0, 1, 6, 2]).unwrap_err();
    assert!(e.to_string().contains("target id 6 at position 2"), "{e}");
}

#[test]
fn linear_gradients_accumulate_into_dw() {
    let (t, n_in, n_out) = (3, 5, 4);
    let mut rng = Rng(7);
    let (x, w, r) = (
        rng.vec(t * n_in, 1.0),
        rng.vec(n_out * n_in, 1.0),
        rng.vec(t * n_out, 1.0),
    );
    let prior = rng.vec(n_out * n_in, 1.0);
    let mut dw = prior.clone();
    let dx = linear_backward(&r, &x, &w, n_in, n_out, &mut dw);
    let dw_only: Vec<f64> = dw.iter().zip(&prior).map(|(a, b)| a - b).collect();
    let loss_x = |x: &[f64]| project(&linear(x, &w, n_in, n_out), &r);
    let loss_w = |w: &[f64]| project(&linear(&x, w, n_in, n_out), &r);
    check("linear", "x", &dx, &numeric_grad(&x, loss_x));
    check("linear", "w", &dw_only, &numeric_grad(&w, loss_w));
}

#[test]
fn linear_matches_naive_product_at_gemm_sizes() {
    // Large enough for gemm's packed, threaded path; f64 so the comparison is tight.
    let (t, n_in, n_out) = (37, 70, 53);
    let mut rng = Rng(8);
    let (x, w) = (rng.vec(t * n_in, 1.0), rng.vec(n_out * n_in, 1.0));
    let y = linear(&x, &w, n_in, n_out);
    for tt in 0..t {
        for o in 0..n_out {
            let want: f64 = (0..n_in).map(|i| x[tt * n_in + i] * w[o * n_in + i]).sum();
            assert!((y[tt * n_out + o] - want).abs() < 1e-12);
        }
    }
    let dy = rng.vec(t * n_out, 1.0);
    let mut dw = vec![0.0; n_out * n_in];
    let dx = linear_backward(&dy, &x, &w, n_in, n_out, &mut dw);
    for tt in 0..t {
        for i in 0..n_in {
            let want: f64 = (0..n_out)
                .map(|o| dy[tt * n_out + o] * w[o * n_in + i])
                .sum();
            assert!((dx[tt * n_in + i] - want).abs() < 1e-12);
        }
    }
    for o in 0..n_out {
        for i in 0..n_in {
            let want: f64 = (0..t).map(|tt| dy[tt * n_out + o] * x[tt * n_in + i]).sum();
            assert!((dw[o * n_in + i] - want).abs() < 1e-12);
        }
    }
}

/// f32 forwards against the inference code in `crate::ops` / `crate::matmul`.
mod inference_parity {
    use super::*;
    use crate::ops;

    const TOL32: f32 = 1e-6;

    fn vec32(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
        rng.vec(n, scale).into_iter().map(|v| v as f32).collect()
    }

    /// `max |a - b| / max |b|`.
    fn agree(op: &str, a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
        let e = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
        eprintln!("parity {op:>13} rel err {e:.2e}");
        assert!(e <= TOL32, "{op}: train vs inference relative error {e:e}");
    }

    #[test]
    fn rms_norm_matches_inference() {
        let (t, d, eps) = (4, 64, 1e-5f32);
        let mut rng = Rng(11);
        let (x, w) = (vec32(&mut rng, t * d, 3.0), vec32(&mut rng, d, 1.0));
        let (y, _) = rms_norm(&x, &w, eps as f64);
        let mut want = vec![0f32; t * d];
        for (o, xt) in want.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            ops::rms_norm(o, xt, &w, eps);
        }
        agree("rms_norm", &y, &want);
    }

    #[test]
    fn rope_matches_inference() {
        let (t, n_heads, hd, base) = (6, 3, 16, 10000f32);
        let mut rng = Rng(12);
        let x = vec32(&mut rng, t * n_heads * hd, 1.0);
        let y = rope(&x, &RopeTable::new(t, hd, 2, base as f64));
        let mut want = x.clone();
        for (i, row) in want.chunks_exact_mut(n_heads * hd).enumerate() {
            ops::rope(row, hd, 2 + i, base);
        }
        agree("rope", &y, &want);
    }

    #[test]
    fn attention_matches_inference() {
        let shape = AttentionShape {
            seq_len: 9,
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 16,
        };
        let (q_dim, kv_dim) = (6 * 16, 2 * 16);
        let mut rng = Rng(13);
        let q = vec32(&mut rng, 9 * q_dim, 1.0);
        let k = vec32(&mut rng, 9 * kv_dim, 1.0);
        let v = vec32(&mut rng, 9 * kv_dim, 1.0);
        let (out, _) = attention(&q, &k, &v, shape);
        let mut want = vec![0f32; 9 * q_dim];
        for (t, o) in want.chunks_exact_mut(q_dim).enumerate() {
            // The KV cache holds all 9 positions; inference reads only 0..=t.
            ops::attention(&q[t * q_dim..(t + 1) * q_dim], &k, &v, t + 1, 6, 2, o);
        }
        agree("attention", &out, &want);
    }

    #[test]
    fn swiglu_matches_inference() {
        let mut rng = Rng(14);
        let (gate, up) = (vec32(&mut rng, 100, 6.0), vec32(&mut rng, 100, 2.0));
        let h = swiglu(&gate, &up);
        let mut want = gate.clone();
        ops::swiglu(&mut want, &up);
        agree("swiglu", &h, &want);
    }

    #[test]
    fn linear_matches_inference_matmul() {
        let (t, n_in, n_out) = (5, 96, 40);
        let mut rng = Rng(15);
        let (x, w) = (
            vec32(&mut rng, t * n_in, 1.0),
            vec32(&mut rng, n_out * n_in, 1.0),
        );
        let y = linear(&x, &w, n_in, n_out);
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor = ::model::Tensor {
            name: "w",
            ty: ::model::GgmlType::F32,
            rows: n_out,
            cols: n_in,
            data: &bytes,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let mut want = vec![0f32; t * n_out];
        crate::matmul::matmul(&pool, &tensor, &x, t, crate::Precision::Exact, &mut want);
        agree("linear", &y, &want);
    }

    #[test]
    fn embedding_and_cross_entropy_match_inference() {
        let (vocab, d) = (11, 8);
        let mut rng = Rng(16);
        let table = vec32(&mut rng, vocab * d, 1.0);
        let x = embedding(&table, d, &[4, 10]).unwrap();
        assert_eq!(&x[..d], &table[4 * d..5 * d]);
        assert_eq!(&x[d..], &table[10 * d..]);
        // Cross-entropy is -log of inference's softmax at the target, averaged.
        let logits = vec32(&mut rng, 3 * vocab, 4.0);
        let targets = [2u32, 7, 0];
        let (loss, _) = cross_entropy(&logits, vocab, &targets).unwrap();
        let want: f32 = logits
            .chunks_exact(vocab)
            .zip(&targets)
            .map(|(l, &y)| {
                let mut p = l.to_vec();
                ops::softmax(&mut p);
                -p[y as usize].ln()
            })
            .sum::<f32>()
            / 3.0;
        agree("cross_entropy", &[loss], &[want]);
    }
}
