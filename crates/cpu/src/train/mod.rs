//! Training math for the Llama family: every op's forward and its hand-written backward.
//!
//! This is the foundation of `espresso train` (no autograd framework): each op is a forward
//! function and, next to it, `<op>_backward`, which turns the gradient of the loss with respect to
//! the op's output into gradients with respect to its inputs and weights. The math is the
//! inference math of [`crate::ops`] (same formulas), lifted from one position to a whole sequence
//! of `T` tokens held row-major as `[T, D]` and computed with GEMMs where the inference path uses
//! dot products, so a model trained here computes what inference computes up to f32 summation
//! order (tests check the f32 forwards against [`crate::ops`] and [`crate::matmul`], and every
//! backward against central finite differences in f64). [`model`] chains the ops into the whole
//! Llama forward and backward ([`model::CpuTrainer`]).
//!
//! Conventions:
//! - Every op is generic over [`Real`] (f32 for training, f64 for gradient checks).
//! - A forward returns its output and, when the backward needs something beyond the forward's
//!   inputs, a small cache struct (e.g. [`RmsNormCache`]: the per-token inverse RMS). A backward
//!   takes the output gradient, the forward's inputs and the cache.
//! - Activation gradients are returned as fresh vectors; weight gradients are **added** into
//!   caller-owned buffers (`dweight += ...`), so gradient accumulation over micro-batches and tied
//!   embeddings need no extra copies.
//! - Shape mismatches between internal buffers are programming errors and panic; problems in user
//!   data (a token id outside the vocabulary) are [`TrainError`]s.
//!
//! The ops: [`rms_norm`], [`rope`] (with its angle table [`RopeTable`]), causal GQA
//! [`attention`], [`swiglu`], [`embedding`], [`cross_entropy`] and [`linear`].
//!
//! Matrix products ([`linear`] and its backward) use the `gemm` crate: a well-kept, pure-Rust
//! packed GEMM (BLIS-style packing and register-blocked AVX2/AVX-512/NEON micro-kernels, rayon
//! threading) that serves f32 and f64 from one entry point, reads arbitrary row/column strides (so
//! `x·Wᵀ`, `dy·W` and `dyᵀ·x` need no transposed copies) and can accumulate into its destination
//! (`dW += ...`). A blocked kernel of our own would have to reach the same speed on every ISA to
//! matter for the trainer's throughput target, which is what that crate already does.

mod attention;
mod embedding;
mod linear;
mod loss;
pub mod model;
mod norm;
mod rope;
mod swiglu;

#[cfg(test)]
mod tests;

pub use attention::{
    attention, attention_backward, AttentionCache, AttentionGrads, AttentionShape,
};
pub use embedding::{embedding, embedding_backward};
pub use linear::{linear, linear_backward, linear_backward_weight, matmul};
pub use loss::{
    cross_entropy, cross_entropy_backward, cross_entropy_grad, CrossEntropyCache, IGNORE_INDEX,
};
pub use norm::{rms_norm, rms_norm_backward, RmsNormCache};
pub use rope::{rope, rope_backward, RopeTable};
pub use swiglu::{silu, swiglu, swiglu_backward};

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// The float types the training ops run in: f32 (training) and f64 (gradient checks).
pub trait Real:
    num_traits::Float
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Default
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Round an f64 to this type.
    fn of(v: f64) -> Self;
    /// Widen to f64.
    fn f64(self) -> f64;
    /// `e^x` for `x <= 0` (softmax after subtracting the maximum), in a branch-free form the
    /// compiler vectorizes: f32 uses [`exp_nonpositive_f32`], f64 the libm `exp`.
    fn exp_nonpositive(self) -> Self;
}

impl Real for f32 {
    #[inline]
    fn of(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp_nonpositive(self) -> Self {
        exp_nonpositive_f32(self)
    }
}

impl Real for f64 {
    #[inline]
    fn of(v: f64) -> Self {
        v
    }
    #[inline]
    fn f64(self) -> f64 {
        self
    }
    #[inline]
    fn exp_nonpositive(self) -> Self {
        self.exp()
    }
}

/// `e^x` for `x <= 0` in f32, Cephes' `expf` method without branches: `x = n·ln2 + r` with
/// `|r| <= ln2/2` (ln2 split in two so `r` is exact), a degree-7 polynomial for `e^r`, and `2^n`
/// built in the exponent bits. Relative error below 2e-7 (about 1 ulp, like libm's `expf`);
/// inputs below -87 return `e^-87 ≈ 1.6e-38` instead of underflowing (they are 0 to any sum).
/// Plain arithmetic only, so loops over slices vectorize.
#[inline(always)]
pub fn exp_nonpositive_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest with the 1.5·2^23 trick (no SSE4.1 `round` needed).
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Errors caused by the data fed to the training ops.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrainError {
    #[error("token id {token} at position {pos} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange {
        token: u32,
        pos: usize,
        vocab: usize,
    },
    #[error("target id {target} at position {pos} is outside the vocabulary of {vocab} tokens")]
    TargetOutOfRange {
        target: u32,
        pos: usize,
        vocab: usize,
    },
}
