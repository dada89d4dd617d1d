//! The ANE device contract: what every ANE-shaped device (the simulator in `ane-sim`, the
//! Apple Neural Engine in `ane-macos`, test doubles) provides and what every host relies on.
//! It owns the [`Device`] trait and [`KernelSpec`] (a typed `mil::Program` plus weight blobs
//! and I/O sizes), the surface layout and its one codec ([`surface`], [`fp16`]), the I/O
//! binding and size rules ([`binding`]), the compile budget and the policy wrapper that
//! spends it ([`budget`], [`policy`]), the validator gate every compile passes
//! ([`milcheck`]) and the ANE cost model ([`cost`]: a planning estimate, never a
//! measurement). No device is implemented here.
//!
//! Layout of every activation surface: `[1, C, 1, S]`, channel-major (element (c, s) at
//! `c·S + s`), fp16 on the device (f32 only in the simulator's f32 mode), I/O bound in byte-wise
//! sorted MIL-name order (ane-reference §3).

pub mod binding;
pub mod blob;
pub mod budget;
pub mod cost;
pub mod device;
pub mod fp16;
pub mod milcheck;
pub mod policy;
pub mod surface;

pub use budget::{CompileBudget, DEFAULT_COMPILE_BUDGET};
pub use cost::{ChipProfile, KernelCost, Prediction};
pub use device::{Device, DeviceError, DeviceLayer, DeviceStats, KernelId, KernelSpec, SurfaceId};
pub use policy::{BudgetedDevice, CompilePolicy, WeightReload};
