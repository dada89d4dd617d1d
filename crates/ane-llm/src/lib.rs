//! Llama-family transformers on an ANE-shaped device: the kernel generators ([`kernels`]:
//! fused N-layer blocks and the classifier head, each a typed `mil::Program` plus fp16
//! weight blobs) and [`AneBackend`], the `engine::Backend` that compiles them once, keeps the
//! residual stream and the KV cache in device surfaces, self-checks every kernel against the
//! f32 simulator and runs prefill and decode. The only ANE crate that knows about models
//! (`model`) and generation (`engine`); the device itself comes in as a `Box<dyn ane::Device>`
//! (the simulator from `ane-sim`, the hardware from `ane-macos`, or a test double).

pub mod backend;
pub mod kernels;

pub use backend::{ane_sim_backend, AneBackend, AneError, AneOptions};
