//! Optimizers, the learning-rate schedule and gradient clipping, on flat f32 buffers.
//!
//! [`Optimizer::AdamW`] follows `torch.optim.AdamW` (single-tensor path) step for step:
//! decoupled weight decay `θ ← θ(1 − lr·λ)`, moments `m ← lerp(m, g, 1 − β1)`,
//! `v ← β2·v + (1 − β2)·g²`, then `θ ← θ − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)`.
//! [`Optimizer::Sgd`] is `torch.optim.SGD` without momentum: `θ ← θ − lr·(g + λθ)`.

/// Which update rule, with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    Sgd {
        weight_decay: f64,
    },
}

/// The optimizer's per-parameter state: AdamW's two moments (empty for SGD).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OptimState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl OptimState {
    pub fn new(opt: &Optimizer, n: usize) -> Self {
        match opt {
            Optimizer::AdamW { .. } => Self {
                m: vec![0.0; n],
                v: vec![0.0; n],
            },
            Optimizer::Sgd { .. } => Self::default(),
        }
    }
}

impl Optimizer {
    /// Apply update number `step` (1-based) with learning rate `lr` to `params`.
    pub fn step(
        &self,
        step: u64,
        lr: f64,
        params: &mut [f32],
        grads: &[f32],
        state: &mut OptimState,
    ) {
        assert_eq!(params.len(), grads.len());
        match *self {
            Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                assert_eq!(state.m.len(), params.len());
                assert_eq!(state.v.len(), params.len());
                // torch keeps these scalars in f64 (Python floats) and rounds them once per use.
                let decay = (1.0 - lr * weight_decay) as f32;
                let bias1 = 1.0 - beta1.powi(step as i32);
                let bias2_sqrt = (1.0 - beta2.powi(step as i32)).sqrt() as f32;
                let step_size = (lr / bias1) as f32;
                let (w1, b2, w2, eps) = (
                    (1.0 - beta1) as f32,
                    beta2 as f32,
                    (1.0 - beta2) as f32,
                    eps as f32,
                );
                let it = params
                    .iter_mut()
                    .zip(grads)
                    .zip(state.m.iter_mut().zip(state.v.iter_mut()));
                for ((p, &g), (m, v)) in it {
                    *p *= decay;
                    *m += w1 * (g - *m);
                    *v = *v * b2 + w2 * g * g;
                    let denom = v.sqrt() / bias2_sqrt + eps;
                    *p -= step_size * (*m / denom);
                }
            }
            Optimizer::Sgd { weight_decay } => {
                let (lr, wd) = (lr as f32, weight_decay as f32);
                for (p, &g) in params.iter_mut().zip(grads) {
                    *p -= lr * (g + wd * *p);
                }
            }
        }
    }
}

/// Learning rate over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Cosine,
}

/// The learning rate of step `step` (1-based) of `total`: a linear warmup from `lr/warmup` to
/// `lr` over the first `warmup` steps, then `lr` (constant) or a half cosine from `lr` down to 0
/// at step `total` (cosine).
pub fn learning_rate(schedule: Schedule, lr: f64, warmup: u64, step: u64, total: u64) -> f64 {
    if step <= warmup {
        return lr * step as f64 / warmup as f64;
    }
    match schedule {
        Schedule::Constant => lr,
        Schedule::Cosine => {
            let span = total.saturating_sub(warmup).max(1) as f64;
            let done = (step - warmup) as f64 / span;
            lr * 0.5 * (1.0 + (std::f64::consts::PI * done.min(1.0)).cos())
        }
    }
}

/// The global L2 norm of `grads` (accumulated in f64).
pub fn global_norm(grads: &[f32]) -> f64 {
    grads
        .iter()
        .map(|&g| (g as f64) * (g as f64))
        .sum::<f64>()
        .sqrt()
}

/// `torch.nn.utils.clip_grad_norm_`: with `norm` the global norm, scale every gradient by
/// `max_norm / (norm + 1e-6)` when that is below 1. `max_norm = 0` turns clipping off.
pub fn clip(grads: &mut [f32], norm: f64, max_norm: f64) {
    if max_norm <= 0.0 {
        return;
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let coef = coef as f32;
        grads.iter_mut().for_each(|g| *g *= coef);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AdamW on one scalar, against the formulas written out in f64.
    #[test]
    fn adamw_matches_the_formula() {
        let opt = Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut st = OptimState::new(&opt, 1);
        let mut p = [1.0f32];
        let (mut pe, mut m, mut v) = (1.0f64, 0.0f64, 0.0f64);
        for (t, g) in [0.5f64, -0.25, 0.125].into_iter().enumerate() {
            let t = t as u64 + 1;
            opt.step(t, 0.01, &mut p, &[g as f32], &mut st);
            pe *= 1.0 - 0.01 * 0.1;
            m = 0.9 * m + 0.1 * g;
            v = 0.99 * v + 0.01 * g * g;
            let mh = m / (1.0 - 0.9f64.powi(t as i32));
            let vh = v / (1.0 - 0.99f64.powi(t as i32));
            pe -= 0.01 * mh / (vh.sqrt() + 1e-8);
            assert!(
                (p[0] as f64 - pe).abs() < 1e-6,
                "step {t}: {} vs {pe}",
                p[0]
            );
        }
    }

    #[test]
    fn sgd_is_plain_descent_with_l2() {
        let opt = Optimizer::Sgd { weight_decay: 0.5 };
        let mut p = [2.0f32, -1.0];
        opt.step(1, 0.1, &mut p, &[1.0, 1.0], &mut OptimState::new(&opt, 2));
        assert_eq!(p, [2.0 - 0.1 * (1.0 + 1.0), -1.0 - 0.1 * (1.0 - 0.5)]);
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        use Schedule::*;
        assert_eq!(learning_rate(Constant, 1.0, 0, 5, 10), 1.0);
        assert_eq!(learning_rate(Constant, 1.0, 4, 1, 10), 0.25);
        assert_eq!(learning_rate(Constant, 1.0, 4, 4, 10), 1.0);
        assert!((learning_rate(Cosine, 1.0, 0, 5, 10) - 0.5).abs() < 1e-12);
        assert!(learning_rate(Cosine, 1.0, 0, 10, 10).abs() < 1e-12);
        assert!((learning_rate(Cosine, 1.0, 2, 6, 10) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = [3.0f32, 4.0];
        let n = global_norm(&g);
        assert_eq!(n, 5.0);
        clip(&mut g, n, 1.0);
        assert!((global_norm(&g) - 1.0).abs() < 1e-6);
        let mut h = [0.3f32, 0.4];
        clip(&mut h, 0.5, 1.0);
        assert_eq!(h, [0.3, 0.4]);
        clip(&mut h, 0.5, 0.0);
        assert_eq!(h, [0.3, 0.4]);
    }
}
