//! ANE cost model: a **planning estimate** of per-dispatch ANE time, not a measurement.
//!
//! For one evaluation:
//!
//! ```text
//! predicted_ane_ms = dispatch_overhead_ms + max(bytes / bandwidth, flops / peak_fp16)
//! bytes = weight bytes (fp16 blobs streamed once) + input and output surface bytes
//! ```
//!
//! Chip figures are the published ones collected in reference §11 (Apple-rated Neural Engine
//! throughput, anemll-bench ANE DRAM bandwidth, ~0.095 ms dispatch overhead). They are upper
//! bounds of what the hardware can do: measured utilisation in real programs is far lower
//! (5–9% of peak in training, §11.1), and SRAM effects (~32 MB cliff) are not modelled. Use the
//! numbers to compare plans (fusing dispatches, weight traffic), never as a benchmark result.
//!
//! Lanes: a kernel's cost is counted from its program, whose activations have a fixed number
//! of lanes `L` (tokens per dispatch), so every dispatch is charged for all `L` lanes however
//! many carry tokens — the hardware computes them all. A k-row verify pass of speculative
//! decoding (k ≤ L) is therefore predicted to cost exactly a one-token step. For decode that
//! is also what the model's terms say physically: the weights are streamed once per dispatch
//! whatever the lanes, and the compute of all `L` lanes stays below that memory term
//! (SmolLM2-135M at L = 64 on M4: 0.88 ms of classifier weights vs 0.19 ms of compute).

use std::fmt;

/// Published figures for one chip (reference §11.1–§11.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipProfile {
    /// Chip name, e.g. "M4".
    pub name: &'static str,
    /// FP16 peak throughput, TFLOPS (Apple rating; for M4 the fp16 equivalent of the
    /// INT8-era 38 TOPS rating, ≈ 19).
    pub peak_fp16_tflops: f64,
    /// ANE DRAM bandwidth, GB/s (anemll-bench).
    pub bandwidth_gbps: f64,
    /// Fixed cost of one evaluation (dispatch), milliseconds (published range 0.07–0.2).
    pub dispatch_overhead_ms: f64,
}

/// Dispatch overhead used for every profile: ~0.095 ms (rustane; Espresso blog), §11.3.
pub const DEFAULT_DISPATCH_MS: f64 = 0.095;

impl ChipProfile {
    pub const M1: ChipProfile = ChipProfile {
        name: "M1",
        peak_fp16_tflops: 11.0,
        bandwidth_gbps: 61.0,
        dispatch_overhead_ms: DEFAULT_DISPATCH_MS,
    };
    pub const M2: ChipProfile = ChipProfile {
        name: "M2",
        peak_fp16_tflops: 15.8,
        bandwidth_gbps: 60.0,
        dispatch_overhead_ms: DEFAULT_DISPATCH_MS,
    };
    pub const M3: ChipProfile = ChipProfile {
        name: "M3",
        peak_fp16_tflops: 18.0,
        bandwidth_gbps: 63.0,
        dispatch_overhead_ms: DEFAULT_DISPATCH_MS,
    };
    pub const M3_MAX: ChipProfile = ChipProfile {
        name: "M3 Max",
        peak_fp16_tflops: 18.0,
        bandwidth_gbps: 120.0,
        dispatch_overhead_ms: DEFAULT_DISPATCH_MS,
    };
    pub const M4: ChipProfile = ChipProfile {
        name: "M4",
        peak_fp16_tflops: 19.0,
        bandwidth_gbps: 64.0,
        dispatch_overhead_ms: DEFAULT_DISPATCH_MS,
    };
    pub const M4_PRO: ChipProfile = ChipProfile {
        name: "M4 Pro",
        peak_fp16_tflops: 19.0,
        bandwidth_gbps: 126.0,
        dispatch_overhead_ms: DEFAULT_DISPATCH_MS,
    };
    pub const M4_MAX: ChipProfile = ChipProfile {
        name: "M4 Max",
        peak_fp16_tflops: 19.0,
        bandwidth_gbps: 119.0,
        dispatch_overhead_ms: DEFAULT_DISPATCH_MS,
    };

    /// Every built-in profile.
    pub const ALL: [ChipProfile; 7] = [
        Self::M1,
        Self::M2,
        Self::M3,
        Self::M3_MAX,
        Self::M4,
        Self::M4_PRO,
        Self::M4_MAX,
    ];

    /// Look a profile up by name, ignoring case, spaces, `-` and `_` ("m4max" = "M4 Max").
    pub fn by_name(name: &str) -> Option<ChipProfile> {
        let norm = |s: &str| {
            s.chars()
                .filter(|c| !matches!(c, ' ' | '-' | '_'))
                .flat_map(char::to_lowercase)
                .collect::<String>()
        };
        let want = norm(name);
        Self::ALL.into_iter().find(|p| norm(p.name) == want)
    }

    /// Predicted time of one dispatch with this cost (planning estimate).
    pub fn predict(&self, cost: &KernelCost) -> Prediction {
        let memory_ms = cost.bytes() / (self.bandwidth_gbps * 1e6);
        let compute_ms = cost.flops / (self.peak_fp16_tflops * 1e9);
        Prediction {
            chip: self.name,
            dispatch_ms: self.dispatch_overhead_ms,
            memory_ms,
            compute_ms,
            predicted_ane_ms: self.dispatch_overhead_ms + memory_ms.max(compute_ms),
        }
    }
}

impl Default for ChipProfile {
    fn default() -> Self {
        Self::M4
    }
}

/// Work done by one evaluation of a kernel, counted from its MIL program.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KernelCost {
    /// Floating-point operations (a multiply-add counts 2).
    pub flops: f64,
    /// Bytes of constant weights (BLOBFILE tensors and inline tensors).
    pub weight_bytes: f64,
    /// Bytes of input and output surfaces.
    pub io_bytes: f64,
}

impl KernelCost {
    /// Total bytes streamed per dispatch.
    pub fn bytes(&self) -> f64 {
        self.weight_bytes + self.io_bytes
    }
}

/// One dispatch's predicted time, split into its terms (planning estimate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub chip: &'static str,
    pub dispatch_ms: f64,
    pub memory_ms: f64,
    pub compute_ms: f64,
    /// `dispatch_ms + max(memory_ms, compute_ms)`.
    pub predicted_ane_ms: f64,
}

impl fmt::Display for Prediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bound = if self.memory_ms >= self.compute_ms {
            "memory-bound"
        } else {
            "compute-bound"
        };
        write!(
            f,
            "{:.4} ms predicted (cost model) on {}: dispatch {:.4} + max(memory {:.4}, compute {:.4}), {bound}",
            self.predicted_ane_ms, self.chip, self.dispatch_ms, self.memory_ms, self.compute_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifier_head_is_memory_bound_at_published_bandwidth() {
        // 32000 x 768 fp16 classifier over 32 lanes: 49.152 MB of weights.
        let cost = KernelCost {
            flops: 2.0 * 32000.0 * 768.0 * 32.0,
            weight_bytes: 32000.0 * 768.0 * 2.0,
            io_bytes: (768.0 + 32000.0) * 32.0 * 2.0,
        };
        let p = ChipProfile::M4.predict(&cost);
        let want_mem = cost.bytes() / 64e6;
        assert!((p.memory_ms - want_mem).abs() < 1e-9);
        assert!(p.memory_ms > p.compute_ms);
        assert!((p.predicted_ane_ms - (0.095 + want_mem)).abs() < 1e-9);
        // ~0.8 ms at 64 GB/s; twice the bandwidth roughly halves the memory term.
        assert!(p.predicted_ane_ms > 0.8 && p.predicted_ane_ms < 0.95, "{p}");
        let q = ChipProfile::M4_MAX.predict(&cost);
        assert!(q.predicted_ane_ms < p.predicted_ane_ms);
        assert!(p.to_string().contains("predicted (cost model) on M4"));
    }

    #[test]
    fn big_matmul_is_compute_bound_and_empty_kernel_costs_the_dispatch() {
        let cost = KernelCost {
            flops: 2.0 * 4096.0 * 4096.0 * 4096.0,
            weight_bytes: 0.0,
            io_bytes: 3.0 * 4096.0 * 4096.0 * 2.0,
        };
        let p = ChipProfile::M1.predict(&cost);
        assert!(p.compute_ms > p.memory_ms);
        assert!((p.compute_ms - cost.flops / 11e9).abs() < 1e-9);
        let empty = ChipProfile::M2.predict(&KernelCost::default());
        assert_eq!(empty.predicted_ane_ms, DEFAULT_DISPATCH_MS);
    }

    #[test]
    fn profiles_by_name() {
        assert_eq!(ChipProfile::by_name("m4max"), Some(ChipProfile::M4_MAX));
        assert_eq!(ChipProfile::by_name("M3-Max"), Some(ChipProfile::M3_MAX));
        assert_eq!(ChipProfile::by_name("M1"), Some(ChipProfile::M1));
        assert_eq!(ChipProfile::by_name("M9"), None);
    }
}
