//! The `Device` trait: what a compute backend needs from an ANE-shaped device.
//!
//! The trait mirrors the private-API bridge (reference §2): a kernel is compiled from a MIL
//! program plus a dictionary of weight blobs keyed by `@model_path/...` strings, with the byte sizes of
//! its input and output surfaces given in **binding order** (byte-wise sorted MIL names, §3.6);
//! surfaces are flat byte buffers (IOSurfaces on hardware) addressed by opaque [`SurfaceId`]s;
//! evaluation is synchronous. It is object-safe so a backend can hold a `Box<dyn Device>` and
//! pick the simulator, a deliberately faulty simulator or the hardware device at run time.
//!
//! Surface contents are reached through two primitives, [`Device::with_surface`] and
//! [`Device::with_surface_mut`] (lock → base address → unlock on hardware). Every layout helper
//! (fp16 `[1, C, 1, S]` channel-major regions, single lanes, argmax) is a default method built
//! on them using [`crate::surface`], so every device shares one checked implementation.

use std::fmt;

use crate::cost::ChipProfile;
use crate::surface;

/// Handle of a compiled, loaded kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelId(pub u64);

/// Handle of a device surface (a flat byte buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SurfaceId(pub u64);

/// Everything needed to compile one kernel (bridge call sequence, reference §2.3): the typed
/// MIL program — devices take the program, not text; the hardware device prints it for
/// `_ANEInMemoryModelDescriptor`, the simulator lowers it directly — its weight blobs and the
/// surface sizes the host will bind.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelSpec {
    /// The MIL program; its `main` function (or its first) is the kernel.
    pub program: mil::Program,
    /// Weight blobs: (`"@model_path/weights/x.bin"`, whole BLOBFILE bytes).
    pub weights: Vec<(String, Vec<u8>)>,
    /// Input surface byte sizes in binding order (byte-wise sorted MIL input names).
    pub input_bytes: Vec<usize>,
    /// Output surface byte sizes in binding order (byte-wise sorted MIL output names).
    pub output_bytes: Vec<usize>,
}

impl Default for KernelSpec {
    /// A spec with an empty program (no function): every device refuses to compile it.
    fn default() -> Self {
        Self {
            program: mil::Program {
                version: "1.3".to_string(),
                build_info: Vec::new(),
                functions: Vec::new(),
            },
            weights: Vec::new(),
            input_bytes: Vec::new(),
            output_bytes: Vec::new(),
        }
    }
}

impl KernelSpec {
    /// A spec whose surface sizes are exactly the program's declared I/O sizes in binding
    /// order ([`crate::binding::declared_io`]).
    pub fn new(
        program: mil::Program,
        weights: Vec<(String, Vec<u8>)>,
    ) -> Result<KernelSpec, DeviceError> {
        let io = crate::binding::declared_io(&program).map_err(DeviceError::InvalidArgument)?;
        let (input_bytes, output_bytes) = io.sizes();
        Ok(KernelSpec {
            program,
            weights,
            input_bytes,
            output_bytes,
        })
    }

    /// Check the arguments the way the bridge does before compiling (reference §2.3 step 1):
    /// a program with a function that returns something, unique weight paths, each path
    /// `@model_path/<relative>` with no empty, `.` or `..` components.
    pub fn validate_arguments(&self) -> Result<(), DeviceError> {
        match self.program.main() {
            None => return Err(DeviceError::InvalidArgument("empty MIL program".into())),
            Some(f) if f.outputs.is_empty() => {
                return Err(DeviceError::InvalidArgument(
                    "the MIL function returns nothing".into(),
                ))
            }
            Some(_) => {}
        }
        let mut seen = std::collections::HashSet::new();
        for (path, _) in &self.weights {
            validate_weight_path(path)?;
            if !seen.insert(path.as_str()) {
                return Err(DeviceError::DuplicateWeightPath(path.clone()));
            }
        }
        Ok(())
    }

    /// The program as MIL text (what the hardware compiler reads; `mil`'s printer is the only
    /// producer of MIL text).
    pub fn mil_text(&self) -> String {
        mil::print(&self.program)
    }

    /// The blob bytes registered under `path`, if any.
    pub fn weight(&self, path: &str) -> Option<&[u8]> {
        self.weights
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.as_slice())
    }
}

/// Prefix every weight path must carry.
pub const MODEL_PATH_PREFIX: &str = "@model_path/";

/// Check one weight dictionary key (reference §2.3 step 1, error code 1 on hardware).
pub fn validate_weight_path(path: &str) -> Result<(), DeviceError> {
    let bad = |why: &str| DeviceError::InvalidArgument(format!("weight path {path:?}: {why}"));
    let rel = path
        .strip_prefix(MODEL_PATH_PREFIX)
        .ok_or_else(|| bad("must start with @model_path/"))?;
    if rel.is_empty() || rel.starts_with('/') {
        return Err(bad("must be a non-empty relative path"));
    }
    if rel
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad("must not contain empty, '.' or '..' components"));
    }
    Ok(())
}

/// Errors of any device. Variants follow the bridge's error classes (reference §2.3).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Bad arguments (hardware error code 1).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Duplicate weight path (hardware error code 2).
    #[error("duplicate weight path {0:?}")]
    DuplicateWeightPath(String),
    /// Surface allocation failed (hardware error code 3).
    #[error("surface allocation of {bytes} bytes failed: {reason}")]
    SurfaceAllocation { bytes: usize, reason: String },
    /// The compiler rejected the program (hardware error code 4); one line per diagnostic.
    #[error("compile failed:\n{}", .diagnostics.join("\n"))]
    Compile { diagnostics: Vec<String> },
    /// The per-process compile budget (hardware: ~119 compiles) is used up.
    #[error(
        "compile budget exhausted: {used} compiles already done, budget is {budget} \
         (the ANE stack fails after ~119 compiles per process; restart the process or reuse kernels)"
    )]
    CompileBudgetExhausted { used: u64, budget: u64 },
    #[error("unknown kernel {0:?}")]
    UnknownKernel(KernelId),
    #[error("unknown surface {0:?}")]
    UnknownSurface(SurfaceId),
    /// A surface access outside the surface or with an inconsistent geometry.
    #[error("surface access out of bounds: {0}")]
    OutOfBounds(String),
    /// Evaluation failed (hardware: e.g. `status=0x1d` for too-small surfaces).
    #[error("eval failed: {0}")]
    Eval(String),
    /// Anything the device cannot do (e.g. hardware device on a non-macOS host).
    #[error("device unavailable: {0}")]
    Unavailable(String),
}

/// Counters of one device. `predicted_ane_ms` is a **planning estimate from the cost model**
/// (`crate::cost`), never a measurement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceStats {
    /// Successful compiles made by this device (its budget counter may be shared; see
    /// `CompileBudget`).
    pub compiles: u64,
    /// Completed evaluations.
    pub evals: u64,
    /// Kernels currently loaded.
    pub live_kernels: u64,
    /// Surfaces currently allocated.
    pub live_surfaces: u64,
    /// Sum over evals of the cost model's predicted ANE time, milliseconds (estimate).
    pub predicted_ane_ms: f64,
    /// Sum over evals of floating-point operations counted by the cost model.
    pub flops: f64,
    /// Sum over evals of weight + I/O bytes counted by the cost model.
    pub bytes_moved: f64,
    /// Chip profile the prediction assumes (e.g. "M4"); `None` when the device has no model.
    pub chip_profile: Option<String>,
    /// Measured wall-clock time spent inside `eval` on the host, milliseconds.
    pub host_eval_ms: f64,
}

impl fmt::Display for DeviceStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} compiles, {} evals, {} kernels / {} surfaces live; ",
            self.compiles, self.evals, self.live_kernels, self.live_surfaces
        )?;
        match &self.chip_profile {
            Some(chip) => write!(
                f,
                "ANE time {:.3} ms predicted (cost model) on {chip} for {:.3} GFLOP / {:.1} MB",
                self.predicted_ane_ms,
                self.flops / 1e9,
                self.bytes_moved / 1e6
            )?,
            None => write!(f, "no ANE time prediction")?,
        }
        write!(f, "; host eval time {:.3} ms", self.host_eval_ms)
    }
}

/// An ANE-shaped compute device. Object-safe: backends hold `Box<dyn Device>`.
///
/// I/O binding: `eval(kernel, inputs, outputs)` binds `inputs[i]` / `outputs[i]` to the i-th
/// MIL input / output in **byte-wise sorted name order** — the order observed on hardware
/// (reference §3.6). Hosts must allocate and address surfaces in that order.
pub trait Device: Send {
    /// Short description, e.g. `"sim (fp16, alphabetical binding, M4)"`.
    fn name(&self) -> String;

    /// Compile and load a kernel. Counts against the compile budget on success.
    fn compile(&mut self, spec: &KernelSpec) -> Result<KernelId, DeviceError>;

    /// Unload a kernel and release its resources.
    fn unload(&mut self, kernel: KernelId) -> Result<(), DeviceError>;

    /// Allocate a zero-filled surface of `bytes` bytes.
    fn new_surface(&mut self, bytes: usize) -> Result<SurfaceId, DeviceError>;

    /// Release a surface.
    fn free_surface(&mut self, surface: SurfaceId) -> Result<(), DeviceError>;

    /// Allocation size of a surface in bytes.
    fn surface_len(&self, surface: SurfaceId) -> Result<usize, DeviceError>;

    /// Give `f` read access to the whole surface (hardware: read lock for the duration).
    fn with_surface(&self, surface: SurfaceId, f: &mut dyn FnMut(&[u8]))
        -> Result<(), DeviceError>;

    /// Give `f` write access to the whole surface (hardware: write lock for the duration).
    fn with_surface_mut(
        &mut self,
        surface: SurfaceId,
        f: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DeviceError>;

    /// Run a kernel synchronously. `inputs` / `outputs` are in binding order (sorted MIL names).
    fn eval(
        &mut self,
        kernel: KernelId,
        inputs: &[SurfaceId],
        outputs: &[SurfaceId],
    ) -> Result<(), DeviceError>;

    /// Counters, including the cost model's predicted ANE time.
    fn stats(&self) -> DeviceStats;

    /// The chip profile used for predictions, if any.
    fn chip_profile(&self) -> Option<ChipProfile> {
        None
    }

    // ---- layout helpers (fp16 `[1, C, 1, S]`, channel-major: element (c, s) at c·S + s) ----

    /// Write `data` (`[n][spatial]` f32, row-major) as fp16 into channels
    /// `ch_offset .. ch_offset + n` of a surface viewed as `[C, spatial]`.
    fn write_channels_f32(
        &mut self,
        surface: SurfaceId,
        spatial: usize,
        ch_offset: usize,
        data: &[f32],
    ) -> Result<(), DeviceError> {
        let mut res = Ok(());
        self.with_surface_mut(surface, &mut |bytes| {
            res = surface::write_channels_f32(bytes, spatial, ch_offset, data);
        })?;
        res
    }

    /// Read channels `ch_offset .. ch_offset + out.len()/spatial` (fp16) into `out` as f32.
    fn read_channels_f32(
        &self,
        surface: SurfaceId,
        spatial: usize,
        ch_offset: usize,
        out: &mut [f32],
    ) -> Result<(), DeviceError> {
        let mut res = Ok(());
        self.with_surface(surface, &mut |bytes| {
            res = surface::read_channels_f32(bytes, spatial, ch_offset, out);
        })?;
        res
    }

    /// Write one value per channel at spatial index `lane` (lane packing, reference §3.3):
    /// channel `ch_offset + i` gets `data[i]`.
    fn write_lane_f32(
        &mut self,
        surface: SurfaceId,
        spatial: usize,
        lane: usize,
        ch_offset: usize,
        data: &[f32],
    ) -> Result<(), DeviceError> {
        let mut res = Ok(());
        self.with_surface_mut(surface, &mut |bytes| {
            res = surface::write_lane_f32(bytes, spatial, lane, ch_offset, data);
        })?;
        res
    }

    /// Read one value per channel at spatial index `lane` into `out`.
    fn read_lane_f32(
        &self,
        surface: SurfaceId,
        spatial: usize,
        lane: usize,
        ch_offset: usize,
        out: &mut [f32],
    ) -> Result<(), DeviceError> {
        let mut res = Ok(());
        self.with_surface(surface, &mut |bytes| {
            res = surface::read_lane_f32(bytes, spatial, lane, ch_offset, out);
        })?;
        res
    }

    /// Argmax over channels `0 .. channels` at spatial index `lane`: strict `>` on fp16 values,
    /// so the lowest index wins ties (reference §3.5). NaNs never win.
    fn argmax_lane(
        &self,
        surface: SurfaceId,
        spatial: usize,
        lane: usize,
        channels: usize,
    ) -> Result<usize, DeviceError> {
        let mut res = Ok(0);
        self.with_surface(surface, &mut |bytes| {
            res = surface::argmax_lane(bytes, spatial, lane, channels);
        })?;
        res
    }

    /// Copy `channels` fp16 channels (`[channels, spatial]`) from `src` at `src_ch` to `dst`
    /// at `dst_ch`; both surfaces viewed with the same `spatial`. `src == dst` is allowed
    /// (memmove semantics).
    fn copy_channels(
        &mut self,
        src: SurfaceId,
        src_ch: usize,
        dst: SurfaceId,
        dst_ch: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<(), DeviceError> {
        let mut staged = Vec::new();
        let mut res = Ok(());
        self.with_surface(src, &mut |bytes| {
            res = surface::channel_range(bytes.len(), spatial, src_ch, channels)
                .map(|r| staged = bytes[r].to_vec());
        })?;
        res?;
        let mut res_dst = Ok(());
        self.with_surface_mut(dst, &mut |bytes| {
            res_dst = surface::channel_range(bytes.len(), spatial, dst_ch, channels)
                .map(|r| bytes[r].copy_from_slice(&staged));
        })?;
        res_dst
    }

    /// Write raw little-endian f32 values starting at element `elem_offset` (fp32 surfaces).
    fn write_f32_raw(
        &mut self,
        surface: SurfaceId,
        elem_offset: usize,
        data: &[f32],
    ) -> Result<(), DeviceError> {
        let mut res = Ok(());
        self.with_surface_mut(surface, &mut |bytes| {
            res = surface::write_f32_raw(bytes, elem_offset, data);
        })?;
        res
    }

    /// Read raw little-endian f32 values starting at element `elem_offset` (fp32 surfaces).
    fn read_f32_raw(
        &self,
        surface: SurfaceId,
        elem_offset: usize,
        out: &mut [f32],
    ) -> Result<(), DeviceError> {
        let mut res = Ok(());
        self.with_surface(surface, &mut |bytes| {
            res = surface::read_f32_raw(bytes, elem_offset, out);
        })?;
        res
    }

    /// Set every byte of a surface to zero.
    fn zero_surface(&mut self, surface: SurfaceId) -> Result<(), DeviceError> {
        self.with_surface_mut(surface, &mut |bytes| bytes.fill(0))
    }
}

/// A device built on another device (a policy, a test double): it names its inner device and
/// overrides only the operations it changes. Every type implementing `DeviceLayer` is a
/// [`Device`]; the methods it does not override, and all surface access, go to the inner
/// device. The hooks carry a `layer_` prefix so they never shadow the `Device` methods.
pub trait DeviceLayer: Send {
    /// The device this layer wraps.
    fn inner(&self) -> &dyn Device;

    /// The device this layer wraps, mutably.
    fn inner_mut(&mut self) -> &mut dyn Device;

    /// [`Device::name`] of the layer (default: the inner device's name).
    fn layer_name(&self) -> String {
        self.inner().name()
    }

    /// [`Device::compile`] through the layer.
    fn layer_compile(&mut self, spec: &KernelSpec) -> Result<KernelId, DeviceError> {
        self.inner_mut().compile(spec)
    }

    /// [`Device::unload`] through the layer.
    fn layer_unload(&mut self, kernel: KernelId) -> Result<(), DeviceError> {
        self.inner_mut().unload(kernel)
    }

    /// [`Device::eval`] through the layer.
    fn layer_eval(
        &mut self,
        kernel: KernelId,
        inputs: &[SurfaceId],
        outputs: &[SurfaceId],
    ) -> Result<(), DeviceError> {
        self.inner_mut().eval(kernel, inputs, outputs)
    }
}

impl<T: DeviceLayer> Device for T {
    fn name(&self) -> String {
        self.layer_name()
    }
    fn compile(&mut self, spec: &KernelSpec) -> Result<KernelId, DeviceError> {
        self.layer_compile(spec)
    }
    fn unload(&mut self, kernel: KernelId) -> Result<(), DeviceError> {
        self.layer_unload(kernel)
    }
    fn new_surface(&mut self, bytes: usize) -> Result<SurfaceId, DeviceError> {
        self.inner_mut().new_surface(bytes)
    }
    fn free_surface(&mut self, surface: SurfaceId) -> Result<(), DeviceError> {
        self.inner_mut().free_surface(surface)
    }
    fn surface_len(&self, surface: SurfaceId) -> Result<usize, DeviceError> {
        self.inner().surface_len(surface)
    }
    fn with_surface(
        &self,
        surface: SurfaceId,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DeviceError> {
        self.inner().with_surface(surface, f)
    }
    fn with_surface_mut(
        &mut self,
        surface: SurfaceId,
        f: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DeviceError> {
        self.inner_mut().with_surface_mut(surface, f)
    }
    fn eval(
        &mut self,
        kernel: KernelId,
        inputs: &[SurfaceId],
        outputs: &[SurfaceId],
    ) -> Result<(), DeviceError> {
        self.layer_eval(kernel, inputs, outputs)
    }
    fn stats(&self) -> DeviceStats {
        self.inner().stats()
    }
    fn chip_profile(&self) -> Option<ChipProfile> {
        self.inner().chip_profile()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_paths_are_checked_like_the_bridge() {
        assert!(validate_weight_path("@model_path/weights/wq.bin").is_ok());
        for bad in [
            "weights/wq.bin",
            "@model_path/",
            "@model_path//x.bin",
            "@model_path/../x.bin",
            "@model_path/weights/./x.bin",
            "@model_path//etc/passwd",
        ] {
            assert!(
                matches!(
                    validate_weight_path(bad),
                    Err(DeviceError::InvalidArgument(_))
                ),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn duplicate_weight_paths_are_rejected() {
        let spec = KernelSpec {
            program: mil::parse(
                "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1]> x) {\n    } -> (x);\n}\n",
            )
            .expect("parses"),
            weights: vec![
                ("@model_path/weights/a.bin".into(), vec![0; 4]),
                ("@model_path/weights/a.bin".into(), vec![1; 4]),
            ],
            ..Default::default()
        };
        assert!(matches!(
            spec.validate_arguments(),
            Err(DeviceError::DuplicateWeightPath(p)) if p == "@model_path/weights/a.bin"
        ));
        let empty = KernelSpec::default();
        assert!(matches!(
            empty.validate_arguments(),
            Err(DeviceError::InvalidArgument(_))
        ));
    }

    #[test]
    fn stats_display_labels_the_prediction() {
        let s = DeviceStats {
            compiles: 2,
            evals: 3,
            predicted_ane_ms: 1.5,
            chip_profile: Some("M4".into()),
            ..Default::default()
        };
        let text = s.to_string();
        assert!(text.contains("predicted (cost model) on M4"), "{text}");
        assert!(text.contains("1.500 ms"), "{text}");
    }
}
