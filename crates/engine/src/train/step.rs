//! One optimizer step: gradient accumulation over micro-batches, clipping and the update.

use super::optim::{clip, global_norm, OptimState, Optimizer};
use super::{Batch, Params, StepError, TrainBackend};

/// What one optimizer step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Mean loss over the step's counted tokens, from the forward before the update.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Counted tokens (the mean's denominator).
    pub tokens: usize,
}

/// Accumulate the gradient of the mean loss over all `micro` batches into `grads` (zeroed
/// first), clip it to `max_norm` (0 = off) and apply `opt` with learning rate `lr` as update
/// number `step`. A non-finite loss or gradient leaves `params` and `state` untouched and is
/// an error.
#[allow(clippy::too_many_arguments)]
pub fn optimizer_step(
    backend: &mut dyn TrainBackend,
    params: &mut Params,
    grads: &mut [f32],
    state: &mut OptimState,
    opt: &Optimizer,
    micro: &[Batch],
    step: u64,
    lr: f64,
    max_norm: f64,
) -> Result<StepReport, StepError> {
    let tokens: usize = micro.iter().map(Batch::counted).sum();
    if tokens == 0 {
        return Err(StepError::NoTargets { step });
    }
    grads.fill(0.0);
    let scale = 1.0 / tokens as f32;
    let mut sum = 0f64;
    for b in micro {
        sum += backend.accumulate(params, b, scale, grads)?;
    }
    let loss = sum / tokens as f64;
    let grad_norm = global_norm(grads);
    if !loss.is_finite() || !grad_norm.is_finite() {
        return Err(StepError::NonFinite {
            step,
            loss,
            grad_norm,
        });
    }
    clip(grads, grad_norm, max_norm);
    opt.step(step, lr, &mut params.data, grads, state);
    Ok(StepReport {
        loss,
        grad_norm,
        tokens,
    })
}

/// Mean loss over `batches` (forward only), e.g. a held-out set.
pub fn mean_loss(
    backend: &mut dyn TrainBackend,
    params: &Params,
    batches: &[Batch],
) -> Result<f64, StepError> {
    let tokens: usize = batches.iter().map(Batch::counted).sum();
    let mut sum = 0f64;
    for b in batches {
        sum += backend.loss(params, b)?;
    }
    Ok(sum / tokens.max(1) as f64)
}
