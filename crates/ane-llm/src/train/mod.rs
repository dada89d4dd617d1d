//! Training on the ANE: the transformer blocks' forward and backward as MIL kernels whose
//! **weights are inputs**, so a run of any length compiles a fixed set of four kernels once.
//!
//! # Why here
//!
//! The kernels reuse this crate's `Blocks` helper (the shared fp16-safe building blocks of the
//! inference kernels) and its `Kernel`/`KernelIo` types, so they live next to them; the host
//! side needs `cpu::train` (the CPU trainer's ops, reused for everything the ANE does not run)
//! and `engine::train` (the `TrainBackend` seam). A separate crate would have had to copy
//! `Blocks`.
//!
//! # Weights as inputs
//!
//! A weight matrix `W: [out][in]` (the `nn.Linear` / GGUF layout of the flat `Params`) is an
//! input surface `[1, out, 1, in]` — its bytes are the matrix rows as they are — reshaped in the
//! program to `[1, 1, out, in]` and applied with `matmul(W, x)` to `x: [1, 1, in, T]` (a
//! 1×1 conv needs a constant weight, so it cannot take a runtime operand). The transposed
//! products of the backward are `matmul(W, dy, transpose_x = true)`. RMSNorm gains are inputs
//! `[1, D, 1, 1]` broadcast over the lanes. Because nothing of a layer is baked in, **one
//! compiled set of kernels serves every layer** (each layer has its own weight surfaces, bound at
//! eval) and every step: compiles = 4 per sequence length, independent of the number of layers
//! and steps (the budget is ~119 per process). A weight update is a surface write (all weight
//! surfaces are rewritten from `Params` at the start of each `accumulate` / `loss`).
//!
//! # Kernels (per block; `T` = sequence length, one sequence per dispatch)
//!
//! Activations are channel-major `[1, C, 1, T]`, token t in lane t. Names carry a fixed-width
//! index so the binding order (byte-wise sorted names) is the declaration order.
//!
//! | kernel | inputs | outputs |
//! |---|---|---|
//! | [`kernels::layer_forward`] | `x [D]`, `rope [2D]` (cos \| sin), `attn_norm [D,1]`, `wq [D,D]`, `wk [KV,D]`, `wv [KV,D]`, `wo [D,D]`, `ffn_norm [D,1]`, `w_gate [H,D]`, `w_up [H,D]`, `w_down [D,H]` | `out [D]` and the taps `xn1 [D]`, `q [D]`, `k [KV]` (rotated), `v [KV]`, `att [D]`, `h [D]`, `hn [D]`, `g [H]`, `u [H]`, `s [H]` |
//! | [`kernels::ffn_backward`] | `dout [D]`, `g [H]`, `u [H]`, `w_gate`, `w_up`, `w_down` | `dhn [D]`, `dg [H]`, `du [H]` |
//! | [`kernels::attention_backward`] | `dh [D]`, `q [D]`, `k [KV]`, `v [KV]`, `wo` | `dq [D]`, `dk [KV]` (w.r.t. the rotated q, k), `dv [KV]` |
//! | [`kernels::qkv_backward`] | `dq [D]`, `dk [KV]`, `dv [KV]`, `rope [2D]`, `wq`, `wk`, `wv` | `dxn1 [D]`, `dq0 [D]`, `dk0 [KV]` (un-rotated) |
//!
//! The attention backward's output surfaces *are* the QKV backward's first three input
//! surfaces (bound to both kernels), so that hand-off costs no copy.
//!
//! - **RoPE** (GGUF adjacent pairs) runs in the programs: `rope(z) = z ⊙ cos + (P z) ⊙ sin`
//!   where `P` swaps each channel pair with a sign (`(Pz)[2i] = −z[2i+1]`, `(Pz)[2i+1] = z[2i]`),
//!   built from a reshape to `[1, C/2, 2, T]`, two slices and a concat (the inference kernels
//!   pre-multiply `P·W` instead, which would need a second weight surface here). A rotation is
//!   orthogonal, so the backward is the inverse rotation `dz = dy ⊙ cos − (P dy) ⊙ sin`. The
//!   cos/sin table is one input surface written once per sequence length (fp16 constants would
//!   round the angles).
//! - **Causal mask**: an explicit `[1, 1, T, T]` additive constant (0 / −1e4) in the forward and
//!   in the attention backward, which recomputes the attention weights rather than reading a
//!   `[NH, T, T]` tap; MIL `sdpa` is never used (it ignores masks, reference §11).
//!
//! # CPU / ANE split
//!
//! | work | where |
//! |---|---|
//! | embedding, final RMSNorm, classifier, cross-entropy and their backward | CPU (`cpu::train::model::loss_and_grad_with`) |
//! | per block: RMSNorm, QKV, RoPE, attention, Wo, residual, RMSNorm, SwiGLU, residual (+ taps) | ANE: `layer_forward` |
//! | dx through W_down, SwiGLU, W_gate/W_up | ANE: `ffn_backward` |
//! | RMSNorm backward (both norms), residual gradient adds | CPU (`cpu::train::rms_norm_backward`: O(T·D)) |
//! | dx through Wo and attention | ANE: `attention_backward` |
//! | RoPE backward, dx through Wq/Wk/Wv | ANE: `qkv_backward` |
//! | every weight gradient `dW += dyᵀ x` | CPU GEMMs over all rows of the batch (`cpu::train::linear_backward_weight`) |
//! | AdamW, clipping | CPU (`engine::train`) |
//!
//! Weight gradients stay on the CPU: on the device they would be one more matmul per weight per
//! sequence with the result read back and summed on the host anyway (f32 master gradients), and
//! the cost model puts the ANE's matmul (not conv) throughput well below its conv peak; the CPU
//! GEMM runs over all `B·S` rows at once. Dispatches per micro-batch: `4 · layers · B`.
//!
//! # Numerics
//!
//! Surfaces are fp32 with the f32 simulator (then every kernel equals the CPU op within 1e-5
//! relative) and fp16 otherwise; master weights, gradients and optimizer state are f32 on the host.
//! With fp16 surfaces the trainer runs under **loss scaling** (`engine::train::scale`): the
//! gradient entering the blocks is `S` (a power of two, dynamic by default) times the true one,
//! so it stays above fp16's underflow; the host unscales the f32 gradient exactly, and a step
//! whose gradients overflowed is skipped and logged. Every kernel is **self-checked** when it
//! is compiled: one eval on probe inputs on the device and on the f32 simulator, outputs within
//! 3e-2 relative RMS, or the trainer refuses to start ([`self_check`]).

pub mod kernels;
pub mod predict;
mod trainer;

#[cfg(test)]
mod tests;

pub use predict::{predict_step, KernelShare, StepPrediction};
pub use trainer::{probe_inputs, self_check, AneTrainError, AneTrainer, TrainKernels};

use mil::DType;
use model::LlamaConfig;

use crate::kernels::KernelError;

/// Shapes of one set of training kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainGeometry {
    pub dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    /// Tokens per dispatch (the sequence length `T`).
    pub seq: usize,
    pub rms_eps: f32,
    /// Element type of every I/O surface.
    pub io: DType,
}

impl TrainGeometry {
    /// The geometry of `cfg` for sequences of `seq` tokens with `io` surfaces.
    pub fn new(cfg: &LlamaConfig, seq: usize, io: DType) -> Result<Self, KernelError> {
        let g = Self {
            dim: cfg.dim,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            ffn_dim: cfg.ffn_dim,
            seq,
            rms_eps: cfg.rms_eps,
            io,
        };
        let bad = |m: String| Err(KernelError::Geometry(m));
        if !matches!(io, DType::Fp16 | DType::Fp32) {
            return bad(format!("{io} I/O surfaces (fp16 or fp32 only)"));
        }
        if g.n_kv_heads == 0 || !g.n_heads.is_multiple_of(g.n_kv_heads) {
            return bad(format!("{} heads, {} KV heads", g.n_heads, g.n_kv_heads));
        }
        if g.n_heads * g.head_dim != g.dim || !g.head_dim.is_multiple_of(2) {
            return bad("head_dim × heads must give dim, with an even head_dim".into());
        }
        if seq == 0 {
            return bad("empty sequence".into());
        }
        Ok(g)
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// `1/√hd`.
    pub fn attn_scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// `[T, C]` row-major → `[C, T]` channel-major (the surface layout).
pub fn to_channels(rows: &[f32], t: usize, c: usize) -> Vec<f32> {
    assert_eq!(rows.len(), t * c);
    let mut out = vec![0f32; rows.len()];
    for (i, row) in rows.chunks_exact(c).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            out[j * t + i] = v;
        }
    }
    out
}

/// `[C, T]` channel-major → `[T, C]` row-major.
pub fn to_rows(chans: &[f32], t: usize, c: usize) -> Vec<f32> {
    to_channels(chans, c, t)
}

/// The rope input `[2D, T]`: channel `h·hd + 2i` and `+ 1` of every head carry
/// `cos/sin(t · θ^(−2i/hd))`, first all cos channels, then all sin channels (the angles of
/// `cpu::train::RopeTable`, so both trainers rotate by the same f32 values).
pub fn rope_input(g: &TrainGeometry, table: &cpu::train::RopeTable<f32>) -> Vec<f32> {
    let (d, t, half) = (g.dim, g.seq, g.head_dim / 2);
    let mut out = vec![0f32; 2 * d * t];
    for c in 0..d {
        let i = (c % g.head_dim) / 2;
        for pos in 0..t {
            out[c * t + pos] = table.cos[pos * half + i];
            out[(d + c) * t + pos] = table.sin[pos * half + i];
        }
    }
    out
}
