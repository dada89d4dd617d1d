//! One optimizer step: gradient accumulation over micro-batches, clipping and the update.

use super::optim::{clip, global_norm, OptimState, Optimizer};
use super::scale::LossScaler;
use super::{Batch, Params, StepError, TrainBackend};

/// What one optimizer step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Mean loss over the step's counted tokens, from the forward before the update.
    pub loss: f64,
    /// Global gradient norm before clipping (unscaled; not finite when the step was skipped).
    pub grad_norm: f64,
    /// Counted tokens (the mean's denominator).
    pub tokens: usize,
    /// The loss scale the gradients were computed with (1 without scaling).
    pub loss_scale: f32,
    /// The gradients overflowed under loss scaling: nothing was applied.
    pub skipped: bool,
}

/// Accumulate the gradient of the mean loss over all `micro` batches into `grads` (zeroed
/// first), clip it to `max_norm` (0 = off) and apply `opt` with learning rate `lr` as update
/// number `step`. A non-finite loss or gradient leaves `params` and `state` untouched and is
/// an error. (No loss scaling: [`optimizer_step_scaled`] with scaling off.)
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
    let mut off = LossScaler::new(super::LossScaling::Off);
    optimizer_step_scaled(
        backend, params, grads, state, opt, micro, step, lr, max_norm, &mut off,
    )
}

/// [`optimizer_step`] with loss scaling: the backends see the gradient of `S ×` the mean loss,
/// the host unscales it before clipping and the update. When scaling is on, gradients that
/// overflowed (finite loss, non-finite gradient) skip the step — `params` and `state`
/// untouched, [`StepReport::skipped`] set — and the scaler backs off; a non-finite loss is
/// always an error.
#[allow(clippy::too_many_arguments)]
pub fn optimizer_step_scaled(
    backend: &mut dyn TrainBackend,
    params: &mut Params,
    grads: &mut [f32],
    state: &mut OptimState,
    opt: &Optimizer,
    micro: &[Batch],
    step: u64,
    lr: f64,
    max_norm: f64,
    scaler: &mut LossScaler,
) -> Result<StepReport, StepError> {
    let tokens: usize = micro.iter().map(Batch::counted).sum();
    if tokens == 0 {
        return Err(StepError::NoTargets { step });
    }
    grads.fill(0.0);
    let loss_scale = scaler.scale;
    let scale = loss_scale / tokens as f32;
    let mut sum = 0f64;
    for b in micro {
        sum += backend.accumulate(params, b, scale, grads)?;
    }
    let loss = sum / tokens as f64;
    if loss_scale != 1.0 {
        // Exact: the scale is a power of two.
        let inv = 1.0 / loss_scale;
        grads.iter_mut().for_each(|g| *g *= inv);
    }
    let grad_norm = global_norm(grads);
    let report = StepReport {
        loss,
        grad_norm,
        tokens,
        loss_scale,
        skipped: false,
    };
    if loss.is_finite() && !grad_norm.is_finite() && scaler.enabled() {
        scaler.overflowed();
        return Ok(StepReport {
            skipped: true,
            ..report
        });
    }
    if !loss.is_finite() || !grad_norm.is_finite() {
        return Err(StepError::NonFinite {
            step,
            loss,
            grad_norm,
        });
    }
    scaler.good_step();
    clip(grads, grad_norm, max_norm);
    opt.step(step, lr, &mut params.data, grads, state);
    Ok(report)
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
