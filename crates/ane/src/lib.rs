//! The ANE device layer: the [`Device`] trait every ANE-shaped backend programs against, the
//! CPU simulator [`SimDevice`] (fp16 numerics, alphabetical I/O binding, compile budget, and a
//! deliberately faulty binding mode), host-side surface layout helpers, the BLOBFILE reader
//! the simulator needs, and the ANE cost model (a planning estimate, never a measurement).
//!
//! Layout of every activation surface: fp16 `[1, C, 1, S]`, channel-major (element (c, s) at
//! `c·S + s`), I/O bound in byte-wise sorted MIL-name order (ane-reference §3).

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
