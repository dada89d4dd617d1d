//! The cost model's prediction of one training step on the ANE, from the kernels' programs
//! alone (nothing is run): each of the four kernels is compiled on the simulator, its work
//! counted ([`ane::cost::KernelCost`]) and priced on a chip profile, and multiplied by how
//! often a step dispatches it. A **planning estimate, never a measurement** (see `ane::cost`).

use ane::cost::{ChipProfile, Prediction};
use ane::device::Device;
use mil::DType;
use model::LlamaConfig;

use super::{kernels, AneTrainError, TrainGeometry};

/// One kernel's share of a step.
#[derive(Debug, Clone)]
pub struct KernelShare {
    pub label: String,
    /// Dispatches of this kernel per optimizer step.
    pub dispatches: u64,
    /// One dispatch, priced by the cost model.
    pub per_dispatch: Prediction,
}

/// A step's predicted ANE time and the host work that comes with it.
#[derive(Debug, Clone)]
pub struct StepPrediction {
    pub chip: &'static str,
    pub kernels: Vec<KernelShare>,
    /// Σ dispatches × predicted ms: the ANE's time per optimizer step (planning estimate).
    pub ane_ms: f64,
    pub dispatches: u64,
    /// Matrix-product work left on the host per step (weight gradients of every block matrix,
    /// classifier forward + both backward products), GFLOP. Not priced: no CPU model.
    pub host_gflop: f64,
}

/// Predict one optimizer step of `sequences` sequences (`--batch × --grad-accum`) of `seq`
/// tokens for a model of shape `cfg` on `chip`.
pub fn predict_step(
    cfg: &LlamaConfig,
    seq: usize,
    sequences: usize,
    chip: ChipProfile,
) -> Result<StepPrediction, AneTrainError> {
    let g = TrainGeometry::new(cfg, seq, DType::Fp16)?;
    let mut sim = ane_sim::SimDevice::new(ane_sim::SimOptions::default());
    // Per layer and sequence: one forward, then the three backward kernels.
    let per_step = (cfg.n_layers * sequences) as u64;
    let mut shares = Vec::new();
    for k in [
        kernels::layer_forward(&g)?,
        kernels::ffn_backward(&g)?,
        kernels::attention_backward(&g)?,
        kernels::qkv_backward(&g)?,
    ] {
        let id = sim.compile(&k.spec())?;
        let cost = sim
            .kernel_cost(id)
            .expect("a kernel just compiled has a cost");
        shares.push(KernelShare {
            label: k.label.clone(),
            dispatches: per_step,
            per_dispatch: chip.predict(&cost),
        });
    }
    let ane_ms = shares
        .iter()
        .map(|s| s.dispatches as f64 * s.per_dispatch.predicted_ane_ms)
        .sum();
    let tokens = (seq * sequences) as f64;
    let (d, kv, h, v) = (
        cfg.dim as f64,
        (cfg.n_kv_heads * cfg.head_dim) as f64,
        cfg.ffn_dim as f64,
        cfg.vocab_size as f64,
    );
    let block_matrix_params = cfg.n_layers as f64 * (2.0 * d * d + 2.0 * kv * d + 3.0 * h * d);
    let host_flops = 2.0 * tokens * block_matrix_params + 6.0 * tokens * v * d;
    Ok(StepPrediction {
        chip: chip.name,
        dispatches: shares.iter().map(|s| s.dispatches).sum(),
        kernels: shares,
        ane_ms,
        host_gflop: host_flops / 1e9,
    })
}
