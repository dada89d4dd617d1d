//! Everything ANE-shaped: the [`Device`] trait every ANE backend programs against; the CPU
//! simulator [`SimDevice`] (fp16 numerics or pure f32, alphabetical I/O binding, compile budget,
//! a deliberately faulty binding mode); the macOS private-API device and its platform-independent
//! policy, layout and probes ([`hw`]); the transformer kernel generators ([`kernels`]: fused
//! layers and the classifier head as MIL + fp16 blobs); the ANE backend ([`AneBackend`]); and the
//! ANE cost model (a planning estimate, never a measurement).
//!
//! Layout of every activation surface: `[1, C, 1, S]`, channel-major (element (c, s) at
//! `c·S + s`), fp16 on the device (f32 only in the simulator's f32 mode), I/O bound in byte-wise
//! sorted MIL-name order (ane-reference §3).

pub mod backend;
pub mod blob;
pub mod budget;
pub mod cost;
pub mod device;
pub mod fp16;
pub mod hw;
pub mod kernels;
pub mod milcheck;
pub mod sim;
pub mod surface;

pub use backend::{ane_sim_backend, AneBackend, AneError, AneOptions};
pub use budget::{CompileBudget, DEFAULT_COMPILE_BUDGET};
pub use cost::{ChipProfile, KernelCost, Prediction};
pub use device::{Device, DeviceError, DeviceStats, KernelId, KernelSpec, SurfaceId};
pub use sim::{Binding, Precision, SimDevice, SimOptions};
