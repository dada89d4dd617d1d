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
//!
//! # Embedding
//!
//! Running one kernel: build (or [`mil::parse`]) a program, wrap it in a [`KernelSpec`] with
//! its weight blobs (surface sizes follow from the declared I/O), compile it, bind surfaces in
//! binding order, [`Device::eval`], and read the output where it lies with
//! [`Device::with_surface`]. Any [`Device`] works: `ane_sim::SimDevice` here, the hardware
//! from `ane_macos::decide_auto()` or `ane_macos::open_device()` on a Mac. The runnable
//! version is `cargo run -p ane-llm --example kernel`.
//!
//! ```
//! use ane::{Device, KernelSpec};
//! use mil::{Builder, DType};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // y = conv(x, W) + x with W = 2·I over 4 channels, 8 positions.
//! let (c, s) = (4, 8);
//! let w: Vec<f32> = (0..c * c).map(|i| if i % (c + 1) == 0 { 2.0 } else { 0.0 }).collect();
//! let mut b = Builder::new();
//! let x = b.input("x", DType::Fp16, [1, c, 1, s]);
//! let wv = b.weight_data("W", [c, c, 1, 1], "@model_path/weights/w.bin", &w);
//! let xw = b.conv("xw", x, wv);
//! let y = b.add("y", xw, x);
//! b.output(y);
//! let (program, weights) = b.finish_with_weights()?;
//!
//! let mut device: Box<dyn Device> = Box::new(ane_sim::SimDevice::default());
//! let spec = KernelSpec::new(program, weights)?;
//! let kernel = device.compile(&spec)?;
//! let input = device.new_surface(spec.input_bytes[0])?;
//! let output = device.new_surface(spec.output_bytes[0])?;
//! let xs: Vec<f32> = (0..c * s).map(|i| i as f32 / 8.0).collect();
//! device.write_channels_f32(input, s, 0, &xs)?; // channel-major [C, S], stored as fp16
//! device.eval(kernel, &[input], &[output])?;
//!
//! // Zero-copy read: the closure borrows the surface's fp16 bytes.
//! let mut ok = true;
//! device.with_surface(output, &mut |bytes| {
//!     for (pair, &x) in bytes.chunks_exact(2).zip(&xs) {
//!         let y = ane::fp16::f16_bits_to_f32(u16::from_le_bytes([pair[0], pair[1]]));
//!         ok &= (y - 3.0 * x).abs() < 1e-2;
//!     }
//! })?;
//! assert!(ok);
//! # Ok(())
//! # }
//! ```

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
