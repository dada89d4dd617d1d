//! The ANE simulator: [`SimDevice`] implements [`ane::Device`] on the CPU, and
//! [`SimDevice::run_once`] is the logic behind `espresso mil run`. This crate owns executing
//! MIL: nothing here parses or prints text, and it has no shape rules of its own.
//!
//! Compile takes the typed program of the `KernelSpec`, runs the `mil` validator (errors fail
//! the compile with the diagnostics), lowers the main function with every type from
//! `mil::shape` and every op from `mil::Op` (every BLOBFILE must be among the provided weights)
//! and checks the requested surface sizes with `ane::binding`'s one rule. Eval decodes the
//! bound input surfaces (again only where their bytes changed since the last eval), runs the
//! program with ANE-like numerics (see [`Precision`]) and encodes the outputs. Every eval adds
//! the cost model's predicted ANE time to the stats.
//!
//! Speed without changing a bit: lanes with identical inputs are computed once
//! ([`program`]'s lane sharing, [`SimOptions::share_lanes`]), constant conv weights are packed
//! losslessly for few-lane products ([`panels`]), and the GEMMs ([`gemm`]) pick kernels whose
//! per-output arithmetic does not depend on how many lanes they are given.
//!
//! Binding: [`Binding::Alphabetical`] (default) binds surface i to the i-th MIL name in
//! byte-wise sorted order, as the hardware does (reference §3.6). [`Binding::DeclarationOrder`]
//! is a deliberately faulty device: it accepts the same surface sizes but routes data by
//! declaration / return-tuple order — what a mis-wired host would assume — so hosts can test
//! their binding self-checks against silent misrouting.

pub mod gemm;
pub mod ops;
pub mod panels;
pub mod program;
pub mod tensor;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use mil::ast::DType;

use ane::binding::{binding_order, check_io_sizes, Padding};
use ane::budget::CompileBudget;
use ane::cost::{ChipProfile, KernelCost, Prediction};
use ane::device::{Device, DeviceError, DeviceStats, KernelId, KernelSpec, SurfaceId};
pub use program::{IoTensor, Precision, Program};
pub use tensor::Tensor;

/// How eval maps surfaces to MIL inputs/outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Binding {
    /// Byte-wise sorted MIL names (the hardware behaviour).
    #[default]
    Alphabetical,
    /// Declaration order of inputs, return-tuple order of outputs (deliberately wrong).
    DeclarationOrder,
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Binding::Alphabetical => "alphabetical",
            Binding::DeclarationOrder => "declaration-order (faulty)",
        })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp16 => "fp16",
            Precision::F32 => "f32",
        })
    }
}

/// Simulator configuration.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Numerics: ANE-like fp16 (default) or pure f32 (a reference for the fp16 path).
    pub precision: Precision,
    /// How surfaces bind to MIL names: alphabetical (default, as on hardware) or the
    /// deliberately faulty declaration order.
    pub binding: Binding,
    /// Compile counter and limit (default: private counter, 119).
    pub budget: CompileBudget,
    /// Chip whose published figures the cost model uses.
    pub profile: ChipProfile,
    /// Accept surfaces larger than the declared tensor (Orion pads all I/O of a kernel to the
    /// largest size); by default sizes must match exactly, which catches host layout bugs.
    pub allow_padded_io: bool,
    /// Compute lanes whose inputs are bitwise identical once (default on; exact — every
    /// output lane holds what computing all lanes gives). Off computes every lane.
    pub share_lanes: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            precision: Precision::Fp16,
            binding: Binding::Alphabetical,
            budget: CompileBudget::default(),
            profile: ChipProfile::default(),
            allow_padded_io: false,
            share_lanes: true,
        }
    }
}

#[derive(Debug)]
struct SimKernel {
    program: Program,
    /// surface slot → input index (declaration order), per the device's binding.
    in_route: Vec<usize>,
    /// surface slot → output index (return order), per the device's binding.
    out_route: Vec<usize>,
    cost: KernelCost,
}

/// The ANE simulator.
#[derive(Debug)]
pub struct SimDevice {
    opts: SimOptions,
    kernels: HashMap<u64, SimKernel>,
    surfaces: HashMap<u64, Vec<u8>>,
    /// Input surfaces as last decoded (see [`decode_cached`]).
    decoded: HashMap<u64, Decoded>,
    next_id: u64,
    stats: DeviceStats,
    last_prediction: Option<Prediction>,
}

/// Validate and lower the program of `spec` with its weights (no budget, no I/O check).
pub fn compile_program(spec: &KernelSpec, precision: Precision) -> Result<Program, DeviceError> {
    let paths: std::collections::HashSet<String> =
        spec.weights.iter().map(|(p, _)| p.clone()).collect();
    let mut diagnostics = ane::milcheck::errors(&spec.program, Some(&paths));
    let func = match spec.program.main() {
        Some(f) => f,
        None => {
            diagnostics.push("error: program has no function".into());
            return Err(DeviceError::Compile { diagnostics });
        }
    };
    let lookup = |path: &str| spec.weight(path);
    match Program::build(func, &lookup, precision) {
        Ok(p) if diagnostics.is_empty() => Ok(p),
        Ok(_) => Err(DeviceError::Compile { diagnostics }),
        Err(errs) => {
            diagnostics.extend(errs.into_iter().map(|e| format!("error [sim]: {e}")));
            Err(DeviceError::Compile { diagnostics })
        }
    }
}

/// An input surface as last decoded: its bytes then and their values.
#[derive(Debug)]
struct Decoded {
    dtype: DType,
    bytes: Vec<u8>,
    values: Arc<Tensor>,
}

/// Bytes compared (and decoded again when they differ) at a time by [`decode_cached`].
const DECODE_CHUNK: usize = 256;

/// The values of input surface `sid` (holding `io` in its first bytes): decoded once, then
/// only the chunks whose bytes changed since — a K/V cache surface gains a row or two per
/// step, and its other rows are not decoded again.
fn decode_cached(
    cache: &mut HashMap<u64, Decoded>,
    sid: SurfaceId,
    io: &IoTensor,
    bytes: &[u8],
) -> Result<Arc<Tensor>, DeviceError> {
    let bytes = &bytes[..io.bytes()];
    let esz = io.dtype.size_bytes().unwrap_or(1).max(1);
    match cache.get_mut(&sid.0) {
        Some(d)
            if d.dtype == io.dtype
                && d.bytes.len() == bytes.len()
                && d.values.shape == io.shape =>
        {
            let mut changed = d
                .bytes
                .chunks_mut(DECODE_CHUNK)
                .zip(bytes.chunks(DECODE_CHUNK))
                .enumerate()
                .filter(|(_, (old, new))| old != new)
                .peekable();
            if changed.peek().is_some() {
                // A copy only if a finished run still held these values (it does not).
                let values = Arc::make_mut(&mut d.values);
                for (c, (old, new)) in changed {
                    let at = c * DECODE_CHUNK / esz;
                    ane::surface::decode_into(
                        io.dtype,
                        new,
                        &mut values.data[at..at + new.len() / esz],
                    )?;
                    old.copy_from_slice(new);
                }
            }
            Ok(d.values.clone())
        }
        _ => {
            let values = Arc::new(Tensor::new(io.shape.clone(), decode(io, bytes)?));
            let entry = Decoded {
                dtype: io.dtype,
                bytes: bytes.to_vec(),
                values: values.clone(),
            };
            cache.insert(sid.0, entry);
            Ok(values)
        }
    }
}

/// Decode a surface prefix holding `io` into f32 values (pooled buffer; `ane::surface`'s codec).
fn decode(io: &IoTensor, bytes: &[u8]) -> Result<Vec<f32>, DeviceError> {
    let n = numel_of(io);
    let mut out = tensor::take_buf(n);
    out.resize(n, 0.0);
    ane::surface::decode_into(io.dtype, bytes, &mut out)?;
    Ok(out)
}

impl SimDevice {
    /// A simulator with `opts` (`SimDevice::default()`: fp16 numerics, alphabetical binding).
    pub fn new(opts: SimOptions) -> Self {
        let stats = DeviceStats {
            chip_profile: Some(opts.profile.name.to_string()),
            ..Default::default()
        };
        Self {
            opts,
            kernels: HashMap::new(),
            surfaces: HashMap::new(),
            decoded: HashMap::new(),
            next_id: 1,
            stats,
            last_prediction: None,
        }
    }

    /// A simulator that binds I/O in declaration order: deliberately wrong (see module doc).
    pub fn faulty_declaration_order(mut opts: SimOptions) -> Self {
        opts.binding = Binding::DeclarationOrder;
        Self::new(opts)
    }

    pub fn options(&self) -> &SimOptions {
        &self.opts
    }

    /// The compiled program of a kernel (inputs/outputs in declaration/return order).
    pub fn program(&self, kernel: KernelId) -> Option<&Program> {
        self.kernels.get(&kernel.0).map(|k| &k.program)
    }

    /// Work counted for one eval of `kernel`.
    pub fn kernel_cost(&self, kernel: KernelId) -> Option<KernelCost> {
        self.kernels.get(&kernel.0).map(|k| k.cost)
    }

    /// Cost model prediction of the most recent eval.
    pub fn last_prediction(&self) -> Option<Prediction> {
        self.last_prediction
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn surface(&self, s: SurfaceId) -> Result<&Vec<u8>, DeviceError> {
        self.surfaces
            .get(&s.0)
            .ok_or(DeviceError::UnknownSurface(s))
    }

    /// Convenience host: compile `program` with `weights`, bind `inputs` by name (values as
    /// f32, converted to each input's dtype), eval once, return every output by name in
    /// return order, then release everything. Goes through the normal Device path (sizes in
    /// sorted-name order), so a faulty binding mode shows here too.
    pub fn run_once(
        &mut self,
        program: &mil::Program,
        weights: Vec<(String, Vec<u8>)>,
        inputs: &[(&str, &[f32])],
    ) -> Result<Vec<(String, Tensor)>, DeviceError> {
        let spec = KernelSpec::new(program.clone(), weights).map_err(|e| DeviceError::Compile {
            diagnostics: vec![format!("error [io]: {e}")],
        })?;
        let kernel = self.compile(&spec)?;
        let program = self
            .program(kernel)
            .cloned()
            .ok_or(DeviceError::UnknownKernel(kernel))?;
        let result = self.run_kernel_by_name(kernel, &program, inputs);
        self.unload(kernel)?;
        result
    }

    fn run_kernel_by_name(
        &mut self,
        kernel: KernelId,
        program: &Program,
        inputs: &[(&str, &[f32])],
    ) -> Result<Vec<(String, Tensor)>, DeviceError> {
        let sorted_in = sorted_ios(program.inputs());
        let sorted_out = sorted_ios(program.outputs());
        let mut in_surfaces = vec![];
        for io in &sorted_in {
            let (_, values) = inputs.iter().find(|(n, _)| *n == io.name).ok_or_else(|| {
                DeviceError::InvalidArgument(format!("no value for input `{}`", io.name))
            })?;
            let want = numel_of(io);
            if values.len() != want {
                return Err(DeviceError::InvalidArgument(format!(
                    "input `{}` needs {want} values ({:?}), got {}",
                    io.name,
                    io.shape,
                    values.len()
                )));
            }
            let s = self.new_surface(io.bytes())?;
            let mut bytes = vec![0u8; io.bytes()];
            ane::surface::encode_into(io.dtype, values, &mut bytes)?;
            self.with_surface_mut(s, &mut |b| b.copy_from_slice(&bytes))?;
            in_surfaces.push(s);
        }
        let mut out_surfaces = vec![];
        for io in &sorted_out {
            out_surfaces.push(self.new_surface(io.bytes())?);
        }
        let res = self.eval(kernel, &in_surfaces, &out_surfaces);
        let mut outs = vec![];
        if res.is_ok() {
            for (io, &s) in sorted_out.iter().zip(&out_surfaces) {
                let bytes = self.surface(s)?;
                outs.push((
                    io.name.clone(),
                    Tensor::new(io.shape.clone(), decode(io, bytes)?),
                ));
            }
        }
        for s in in_surfaces.into_iter().chain(out_surfaces) {
            self.free_surface(s)?;
        }
        res?;
        // Return in the program's return order.
        let mut ordered = vec![];
        for io in program.outputs() {
            if let Some(i) = outs.iter().position(|(n, _)| *n == io.name) {
                ordered.push(outs.swap_remove(i));
            }
        }
        Ok(ordered)
    }
}

fn numel_of(io: &IoTensor) -> usize {
    io.shape.iter().product()
}

fn sorted_ios(ios: &[IoTensor]) -> Vec<IoTensor> {
    let names: Vec<&str> = ios.iter().map(|t| t.name.as_str()).collect();
    binding_order(&names)
        .into_iter()
        .map(|i| ios[i].clone())
        .collect()
}

impl ane::BudgetedDevice for SimDevice {
    fn compile_budget(&self) -> CompileBudget {
        self.opts.budget.clone()
    }
}

impl Default for SimDevice {
    fn default() -> Self {
        Self::new(SimOptions::default())
    }
}

impl Device for SimDevice {
    fn name(&self) -> String {
        format!(
            "ane-sim ({}, {} binding, cost model {})",
            self.opts.precision, self.opts.binding, self.opts.profile.name
        )
    }

    fn compile(&mut self, spec: &KernelSpec) -> Result<KernelId, DeviceError> {
        spec.validate_arguments()?;
        self.opts.budget.check()?;
        let mut program = compile_program(spec, self.opts.precision)?;
        program.set_lane_sharing(self.opts.share_lanes);
        // Sizes are checked as a correct host computes them (sorted names) in every mode.
        let padding = if self.opts.allow_padded_io {
            Padding::Allowed
        } else {
            Padding::Exact
        };
        check_io_sizes(spec, padding)?;
        let names = |ios: &[IoTensor]| ios.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        let (in_names, out_names) = (names(program.inputs()), names(program.outputs()));
        let (in_sorted, out_sorted) = (binding_order(&in_names), binding_order(&out_names));
        let (in_route, out_route) = match self.opts.binding {
            Binding::Alphabetical => (in_sorted, out_sorted),
            Binding::DeclarationOrder => (
                (0..in_names.len()).collect(),
                (0..out_names.len()).collect(),
            ),
        };
        let io_bytes = spec
            .input_bytes
            .iter()
            .chain(&spec.output_bytes)
            .sum::<usize>() as f64;
        let cost = KernelCost {
            flops: program.flops(),
            weight_bytes: program.weight_bytes(),
            io_bytes,
        };
        self.opts.budget.take()?;
        self.stats.compiles += 1;
        let id = self.id();
        self.kernels.insert(
            id,
            SimKernel {
                program,
                in_route,
                out_route,
                cost,
            },
        );
        Ok(KernelId(id))
    }

    fn unload(&mut self, kernel: KernelId) -> Result<(), DeviceError> {
        self.kernels
            .remove(&kernel.0)
            .map(|_| ())
            .ok_or(DeviceError::UnknownKernel(kernel))
    }

    fn new_surface(&mut self, bytes: usize) -> Result<SurfaceId, DeviceError> {
        if bytes == 0 {
            return Err(DeviceError::SurfaceAllocation {
                bytes,
                reason: "zero-sized surface".into(),
            });
        }
        let mut buf = Vec::new();
        buf.try_reserve_exact(bytes)
            .map_err(|e| DeviceError::SurfaceAllocation {
                bytes,
                reason: e.to_string(),
            })?;
        buf.resize(bytes, 0);
        let id = self.id();
        self.surfaces.insert(id, buf);
        Ok(SurfaceId(id))
    }

    fn free_surface(&mut self, surface: SurfaceId) -> Result<(), DeviceError> {
        self.decoded.remove(&surface.0);
        self.surfaces
            .remove(&surface.0)
            .map(|_| ())
            .ok_or(DeviceError::UnknownSurface(surface))
    }

    fn surface_len(&self, surface: SurfaceId) -> Result<usize, DeviceError> {
        self.surface(surface).map(Vec::len)
    }

    fn with_surface(
        &self,
        surface: SurfaceId,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DeviceError> {
        f(self.surface(surface)?);
        Ok(())
    }

    fn with_surface_mut(
        &mut self,
        surface: SurfaceId,
        f: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DeviceError> {
        let s = self
            .surfaces
            .get_mut(&surface.0)
            .ok_or(DeviceError::UnknownSurface(surface))?;
        f(s);
        Ok(())
    }

    fn eval(
        &mut self,
        kernel: KernelId,
        inputs: &[SurfaceId],
        outputs: &[SurfaceId],
    ) -> Result<(), DeviceError> {
        let start = Instant::now();
        let k = self
            .kernels
            .get(&kernel.0)
            .ok_or(DeviceError::UnknownKernel(kernel))?;
        let p = &k.program;
        if inputs.len() != p.inputs().len() || outputs.len() != p.outputs().len() {
            return Err(DeviceError::Eval(format!(
                "kernel has {} inputs / {} outputs, {} / {} surfaces given",
                p.inputs().len(),
                p.outputs().len(),
                inputs.len(),
                outputs.len()
            )));
        }
        let mut tensors: Vec<Option<Arc<Tensor>>> = vec![None; inputs.len()];
        for (slot, &sid) in inputs.iter().enumerate() {
            let io = &p.inputs()[k.in_route[slot]];
            let bytes = self
                .surfaces
                .get(&sid.0)
                .ok_or(DeviceError::UnknownSurface(sid))?;
            if bytes.len() < io.bytes() {
                return Err(DeviceError::Eval(format!(
                    "input surface {slot} has {} bytes, bound tensor `{}` needs {} \
                     (hardware: status=0x1d)",
                    bytes.len(),
                    io.name,
                    io.bytes()
                )));
            }
            tensors[k.in_route[slot]] = Some(decode_cached(&mut self.decoded, sid, io, bytes)?);
        }
        for (slot, &sid) in outputs.iter().enumerate() {
            let io = &p.outputs()[k.out_route[slot]];
            let len = self.surface(sid)?.len();
            if len < io.bytes() {
                return Err(DeviceError::Eval(format!(
                    "output surface {slot} has {len} bytes, bound tensor `{}` needs {} \
                     (hardware: status=0x1d)",
                    io.name,
                    io.bytes()
                )));
            }
        }
        let tensors: Vec<Arc<Tensor>> = tensors.into_iter().flatten().collect();
        let results = p.run_decoded(tensors).map_err(DeviceError::Eval)?;
        let routes: Vec<(usize, DType)> = k
            .out_route
            .iter()
            .map(|&o| (o, p.outputs()[o].dtype))
            .collect();
        let cost = k.cost;
        for (slot, &sid) in outputs.iter().enumerate() {
            let (o, dtype) = routes[slot];
            let buf = self
                .surfaces
                .get_mut(&sid.0)
                .ok_or(DeviceError::UnknownSurface(sid))?;
            ane::surface::encode_into(dtype, &results[o].data, buf)?;
        }
        for t in results {
            tensor::give_buf(t.data);
        }
        let pred = self.opts.profile.predict(&cost);
        self.stats.evals += 1;
        self.stats.predicted_ane_ms += pred.predicted_ane_ms;
        self.stats.flops += cost.flops;
        self.stats.bytes_moved += cost.bytes();
        self.stats.host_eval_ms += start.elapsed().as_secs_f64() * 1e3;
        self.last_prediction = Some(pred);
        Ok(())
    }

    fn stats(&self) -> DeviceStats {
        DeviceStats {
            live_kernels: self.kernels.len() as u64,
            live_surfaces: self.surfaces.len() as u64,
            ..self.stats.clone()
        }
    }

    fn chip_profile(&self) -> Option<ChipProfile> {
        Some(self.opts.profile)
    }
}
