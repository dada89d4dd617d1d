//! Training: the loop behind `espresso train`, independent of the device that computes gradients.
//!
//! A [`TrainBackend`] (the CPU trainer in `cpu::train::model`; later the ANE) turns parameters and
//! a [`Batch`] into a loss and gradients. This module owns everything around it: the flat
//! parameter buffer and its layout ([`params`]), the token data and how windows are cut from it
//! ([`data`]), the optimizers, learning-rate schedule and clipping ([`optim`]), checkpoints
//! ([`checkpoint`]), loss scaling for fp16 devices ([`scale`]), GGUF export ([`export`]) and
//! the loop with its log ([`trainer`]); [`mod@bench`] times steps for `espresso bench-train`.

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod export;
pub mod optim;
pub mod params;
pub mod scale;
pub mod step;
pub mod trainer;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use data::{DataError, Shuffle, TokenData};
pub use export::{export_gguf, ExportError, OutType};
pub use optim::{OptimState, Optimizer, Schedule};
pub use params::{LayerRanges, ParamInfo, ParamLayout, Params};
pub use scale::{LossScaler, LossScaling};
pub use step::{mean_loss, optimizer_step, optimizer_step_scaled, StepReport};

/// A target equal to this carries no loss (a prompt token of a chat example), like PyTorch's
/// `ignore_index`.
pub const IGNORE_INDEX: u32 = u32::MAX;

/// `batch` sequences of `seq_len` tokens, row-major: `inputs[b * seq_len + t]` predicts
/// `targets[b * seq_len + t]` ([`IGNORE_INDEX`] = no loss there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub batch: usize,
    pub seq_len: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

impl Batch {
    /// Number of targets that carry loss.
    pub fn counted(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE_INDEX).count()
    }
}

/// Errors a backend reports for one batch.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("token id {token} is outside the vocabulary of {vocab} tokens")]
    BadToken { token: u32, vocab: usize },
    #[error("step {step} has no target tokens that carry loss")]
    NoTargets { step: u64 },
    #[error("the loss became {loss} (gradient norm {grad_norm}) at step {step}; stopped without applying it")]
    NonFinite {
        step: u64,
        loss: f64,
        grad_norm: f64,
    },
    #[error("{0}")]
    Device(String),
}

/// A device that computes the loss of a batch and its gradient.
pub trait TrainBackend {
    /// Short name for logs (e.g. "cpu").
    fn name(&self) -> String;

    /// Run forward and backward on `batch` and **add** `scale · ∂(Σ token losses)/∂params` into
    /// `grads` (same layout as `params`). Returns the sum of the counted token losses (f64).
    /// The trainer passes `scale = 1/N` with `N` the counted targets of the whole step, so the
    /// accumulated gradient is the gradient of the step's mean loss.
    fn accumulate(
        &mut self,
        params: &Params,
        batch: &Batch,
        scale: f32,
        grads: &mut [f32],
    ) -> Result<f64, StepError>;

    /// The sum of the counted token losses of `batch`, forward only.
    fn loss(&mut self, params: &Params, batch: &Batch) -> Result<f64, StepError>;

    /// Cumulative compiles and dispatches of a device backend (`None`: no device, e.g. the CPU).
    fn device_counters(&self) -> Option<DeviceCounters> {
        None
    }
}

/// Cumulative work of a device backend, for the training log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceCounters {
    /// Kernel compiles so far (after setup this must not grow).
    pub compiles: u64,
    /// Kernel evaluations so far.
    pub dispatches: u64,
}
