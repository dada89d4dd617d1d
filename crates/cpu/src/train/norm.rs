//! RMSNorm (Zhang & Sennrich 2019) over a sequence.

use super::Real;

/// What [`rms_norm_backward`] needs beyond the inputs: `inv_rms: [T]`, `1 / sqrt(mean(x^2) + eps)`
/// of every token.
#[derive(Debug, Clone)]
pub struct RmsNormCache<R> {
    pub inv_rms: Vec<R>,
}

/// `y[t][i] = x[t][i] * r[t] * w[i]`, `r[t] = 1 / sqrt(mean_i(x[t][i]^2) + eps)`, exactly as
/// [`crate::ops::rms_norm`] (mean square accumulated in f64). Shapes: `x, y: [T, D]`, `w: [D]`.
pub fn rms_norm<R: Real>(x: &[R], w: &[R], eps: f64) -> (Vec<R>, RmsNormCache<R>) {
    let dim = w.len();
    assert_eq!(x.len() % dim, 0, "rms_norm: x is not [T, {dim}]");
    let mut y = vec![R::zero(); x.len()];
    let mut inv_rms = Vec::with_capacity(x.len() / dim);
    for (xt, yt) in x.chunks_exact(dim).zip(y.chunks_exact_mut(dim)) {
        let ms = xt.iter().map(|&v| v.f64() * v.f64()).sum::<f64>() / dim as f64;
        let r = R::of(1.0 / (ms + eps).sqrt());
        for ((o, &v), &g) in yt.iter_mut().zip(xt).zip(w) {
            *o = v * r * g;
        }
        inv_rms.push(r);
    }
    (y, RmsNormCache { inv_rms })
}

/// Backward of [`rms_norm`]: returns `dx: [T, D]` and adds into `dw: [D]`.
///
/// With `r = (mean(x^2) + eps)^(-1/2)`, `dr/dx_j = -r^3 x_j / D`, so
/// `dx_j = r w_j dy_j - (r^3 / D) x_j sum_i(dy_i w_i x_i)` and `dw_i = sum_t dy_i x_i r`.
pub fn rms_norm_backward<R: Real>(
    dy: &[R],
    x: &[R],
    w: &[R],
    cache: &RmsNormCache<R>,
    dw: &mut [R],
) -> Vec<R> {
    let dim = w.len();
    assert_eq!(dy.len(), x.len());
    assert_eq!(dw.len(), dim);
    assert_eq!(cache.inv_rms.len() * dim, x.len());
    let mut dx = vec![R::zero(); x.len()];
    let rows = dy.chunks_exact(dim).zip(x.chunks_exact(dim));
    for ((dyt, xt), (dxt, &r)) in rows.zip(dx.chunks_exact_mut(dim).zip(&cache.inv_rms)) {
        let dot: R = dyt
            .iter()
            .zip(w)
            .zip(xt)
            .map(|((&d, &g), &v)| d * g * v)
            .sum();
        let c = r * r * r * dot / R::of(dim as f64);
        for i in 0..dim {
            dxt[i] = r * w[i] * dyt[i] - c * xt[i];
            dw[i] += dyt[i] * xt[i] * r;
        }
    }
    dx
}
