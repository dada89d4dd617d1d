//! `AneDevice`: the [`Device`] trait on the real Apple Neural Engine (macOS only).
//!
//! compile: validate → weight dictionary → descriptor → model → `hexStringIdentifier` →
//! materialise `<tmp>/<hexId>/` → compile (option fallback, retry on compiler failures) →
//! load → persist `net.plist` (non-fatal). Every `compileWithQoS` call takes one unit of the
//! process-wide budget *before* it runs (the leak behind the ~119 limit is per compile call).
//! Surfaces are flat IOSurfaces (§3.1) read and written under IOSurface locks; evaluation
//! builds one `_ANERequest` per distinct surface binding and reuses it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use objc2::rc::{autoreleasepool, Retained};
use objc2::runtime::AnyObject;
use objc2_core_foundation::CFRetained;
use objc2_foundation::{NSDictionary, NSString, NSTemporaryDirectory};
use objc2_io_surface::IOSurfaceRef;

use super::bridge::{self, Framework};
use super::layout;
use super::options::{CachePolicy, CompileOptions, RetryPolicy};
use ane::binding;
use ane::budget::CompileBudget;
use ane::device::{Device, DeviceError, DeviceStats, KernelId, KernelSpec, SurfaceId};
use ane::policy::BudgetedDevice;

type Options = Retained<NSDictionary<NSString, AnyObject>>;

struct HwKernel {
    model: Retained<AnyObject>,
    hex_id: String,
    dir: PathBuf,
    /// The program, kept to recognise a donor with the same program (weight reload).
    program: mil::Program,
    /// The options dictionary that was accepted at load; reused for every eval.
    options: Options,
    input_bytes: Vec<usize>,
    output_bytes: Vec<usize>,
    /// The last request and the surfaces it binds.
    request: Option<(Vec<SurfaceId>, Vec<SurfaceId>, Retained<AnyObject>)>,
}

struct HwSurface {
    surface: CFRetained<IOSurfaceRef>,
    /// `_ANEIOSurfaceObject` wrapping `surface`.
    object: Retained<AnyObject>,
    len: usize,
}

/// The hardware device.
pub struct AneDevice {
    fw: &'static Framework,
    options: CompileOptions,
    retry: RetryPolicy,
    budget: CompileBudget,
    tmp_root: PathBuf,
    cache_root: Option<PathBuf>,
    kernels: HashMap<u64, HwKernel>,
    surfaces: HashMap<u64, HwSurface>,
    next_id: u64,
    stats: DeviceStats,
}

// SAFETY: the framework objects held here are not bound to the creating thread (the reference
// drives them from arbitrary threads, no main-thread requirement), every method takes `&self`
// or `&mut self` so Rust's borrow rules serialise access, and nothing is shared with other
// devices except the immutable, `Sync` framework classes.
unsafe impl Send for AneDevice {}

impl AneDevice {
    /// Load the framework and create a device with the process-wide hardware budget and the
    /// options from the environment.
    pub fn open() -> Result<Self, DeviceError> {
        Self::with_budget(super::hardware_budget()?)
    }

    /// Like [`AneDevice::open`] with an explicit budget (tests).
    pub fn with_budget(budget: CompileBudget) -> Result<Self, DeviceError> {
        let fw = bridge::framework()?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Ok(Self {
            fw,
            options: CompileOptions::from_env()?,
            retry: RetryPolicy::default(),
            budget,
            tmp_root: PathBuf::from(autoreleasepool(|_| NSTemporaryDirectory().to_string())),
            cache_root: layout::default_cache_root(|k| std::env::var(k).ok(), home),
            kernels: HashMap::new(),
            surfaces: HashMap::new(),
            next_id: 1,
            stats: DeviceStats::default(),
        })
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn surface(&self, s: SurfaceId) -> Result<&HwSurface, DeviceError> {
        self.surfaces
            .get(&s.0)
            .ok_or(DeviceError::UnknownSurface(s))
    }

    /// Remove a model directory unless kept on request or still used by another live kernel
    /// with the same identifier (§2.7).
    fn remove_dir(&self, hex_id: &str, dir: &std::path::Path) {
        let shared = self.kernels.values().any(|k| k.hex_id == hex_id);
        if !self.options.keep_tmpdir && !shared {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Descriptor + model + materialised directory for `spec`.
    fn prepare(
        &self,
        spec: &KernelSpec,
    ) -> Result<(Retained<AnyObject>, String, PathBuf), DeviceError> {
        let entries = layout::weight_dictionary(spec)?;
        let weights = bridge::weight_dictionary(&entries);
        let mil_text = spec.mil_text();
        let model = bridge::new_model(self.fw, &mil_text, &weights)?;
        let hex_id = bridge::hex_identifier(&model)?;
        let dir = layout::model_dir(&self.tmp_root, &hex_id)?;
        if let Err(e) = layout::materialize_model_tree(&dir, spec, &mil_text) {
            self.remove_dir(&hex_id, &dir);
            return Err(e);
        }
        Ok((model, hex_id, dir))
    }

    /// `step` with each options dictionary in turn (configured, then `{}` unless strict).
    fn with_option_fallback(
        &self,
        mut step: impl FnMut(&NSDictionary<NSString, AnyObject>) -> Result<(), DeviceError>,
    ) -> Result<Options, DeviceError> {
        let mut last = None;
        for entries in self.options.attempts() {
            let dict = bridge::options_dictionary(&entries);
            match step(&dict) {
                Ok(()) => return Ok(dict),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| DeviceError::Compile {
            diagnostics: vec!["no options dictionary to try".into()],
        }))
    }

    fn compile_and_load(&mut self, spec: &KernelSpec) -> Result<HwKernel, DeviceError> {
        let (model, hex_id, dir) = self.prepare(spec)?;
        let result = (|| {
            let budget = self.budget.clone();
            let cached = match (&self.cache_root, self.options.cache_policy) {
                (Some(root), CachePolicy::PreferCached) => {
                    layout::restore_net_plist(root, &hex_id, &dir)?
                }
                _ => false,
            };
            if cached {
                // Cache-hit loads through this entry point count too (§2.3 step 19).
                budget.take()?;
            } else {
                if self.options.cache_policy == CachePolicy::ForceCold {
                    bridge::purge_compiled(&model);
                }
                self.with_option_fallback(|opts| {
                    self.retry.run(std::thread::sleep, |_| {
                        budget.take()?;
                        bridge::compile(&model, opts)
                    })
                })?;
            }
            self.with_option_fallback(|opts| bridge::load_model(&model, opts))
        })();
        match result {
            Ok(options) => {
                if let Some(root) = &self.cache_root {
                    // Non-fatal: the cache only saves later compiles.
                    let _ = layout::persist_net_plist(&dir, root, &hex_id);
                }
                Ok(HwKernel {
                    model,
                    hex_id,
                    dir,
                    program: spec.program.clone(),
                    options,
                    input_bytes: spec.input_bytes.clone(),
                    output_bytes: spec.output_bytes.clone(),
                    request: None,
                })
            }
            Err(e) => {
                self.remove_dir(&hex_id, &dir);
                Err(e)
            }
        }
    }

    fn insert_kernel(&mut self, k: HwKernel) -> KernelId {
        let id = self.id();
        self.kernels.insert(id, k);
        KernelId(id)
    }

    fn check_binding(
        &self,
        k: &HwKernel,
        inputs: &[SurfaceId],
        outputs: &[SurfaceId],
    ) -> Result<(), DeviceError> {
        if inputs.len() != k.input_bytes.len() || outputs.len() != k.output_bytes.len() {
            return Err(DeviceError::Eval(format!(
                "kernel has {} inputs / {} outputs, {} / {} surfaces given",
                k.input_bytes.len(),
                k.output_bytes.len(),
                inputs.len(),
                outputs.len()
            )));
        }
        let pairs = inputs
            .iter()
            .zip(&k.input_bytes)
            .map(|p| ("input", p))
            .chain(outputs.iter().zip(&k.output_bytes).map(|p| ("output", p)));
        for (what, (&sid, &want)) in pairs {
            let have = self.surface(sid)?.len;
            if have < want {
                return Err(DeviceError::Eval(format!(
                    "{what} surface {sid:?} has {have} bytes, the kernel was compiled for {want} \
                     (the ANE would fail with status=0x1d or read garbage)"
                )));
            }
        }
        Ok(())
    }

    fn request_for(
        &mut self,
        kernel: KernelId,
        inputs: &[SurfaceId],
        outputs: &[SurfaceId],
    ) -> Result<Retained<AnyObject>, DeviceError> {
        let k = self
            .kernels
            .get(&kernel.0)
            .ok_or(DeviceError::UnknownKernel(kernel))?;
        if let Some((i, o, r)) = &k.request {
            if i == inputs && o == outputs {
                return Ok(r.clone());
            }
        }
        let objects = |ids: &[SurfaceId]| -> Result<Vec<&AnyObject>, DeviceError> {
            ids.iter()
                .map(|s| self.surface(*s).map(|h| &*h.object))
                .collect()
        };
        let request = bridge::new_request(self.fw, &objects(inputs)?, &objects(outputs)?)?;
        if let Some(k) = self.kernels.get_mut(&kernel.0) {
            k.request = Some((inputs.to_vec(), outputs.to_vec(), request.clone()));
        }
        Ok(request)
    }
}

impl Device for AneDevice {
    fn name(&self) -> String {
        "ane (AppleNeuralEngine.framework, _ANEInMemoryModel)".into()
    }

    fn compile(&mut self, spec: &KernelSpec) -> Result<KernelId, DeviceError> {
        spec.validate_arguments()?;
        binding::check_io_sizes(spec, binding::Padding::Allowed)?;
        self.budget.check()?;
        let kernel = autoreleasepool(|_| self.compile_and_load(spec))?;
        self.stats.compiles += 1;
        Ok(self.insert_kernel(kernel))
    }

    fn unload(&mut self, kernel: KernelId) -> Result<(), DeviceError> {
        let k = self
            .kernels
            .remove(&kernel.0)
            .ok_or(DeviceError::UnknownKernel(kernel))?;
        let result = autoreleasepool(|_| bridge::unload_model(&k.model));
        self.remove_dir(&k.hex_id, &k.dir);
        result
    }

    fn new_surface(&mut self, bytes: usize) -> Result<SurfaceId, DeviceError> {
        let fw = self.fw;
        let (surface, object) = autoreleasepool(|_| {
            let surface = bridge::create_surface(bytes)?;
            let object = bridge::wrap_surface(fw, &surface)?;
            Ok::<_, DeviceError>((surface, object))
        })?;
        // IOSurfaces are not guaranteed to be zero-filled.
        bridge::write_surface(&surface, bytes, &mut |b| b.fill(0))?;
        let id = self.id();
        self.surfaces.insert(
            id,
            HwSurface {
                surface,
                object,
                len: bytes,
            },
        );
        Ok(SurfaceId(id))
    }

    fn free_surface(&mut self, surface: SurfaceId) -> Result<(), DeviceError> {
        self.surfaces
            .remove(&surface.0)
            .ok_or(DeviceError::UnknownSurface(surface))?;
        // Drop cached requests that bind the freed surface.
        for k in self.kernels.values_mut() {
            let binds = k
                .request
                .as_ref()
                .is_some_and(|(i, o, _)| i.contains(&surface) || o.contains(&surface));
            if binds {
                k.request = None;
            }
        }
        Ok(())
    }

    fn surface_len(&self, surface: SurfaceId) -> Result<usize, DeviceError> {
        self.surface(surface).map(|s| s.len)
    }

    fn with_surface(
        &self,
        surface: SurfaceId,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DeviceError> {
        let s = self.surface(surface)?;
        bridge::read_surface(&s.surface, s.len, f)
    }

    fn with_surface_mut(
        &mut self,
        surface: SurfaceId,
        f: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DeviceError> {
        let s = self.surface(surface)?;
        bridge::write_surface(&s.surface, s.len, f)
    }

    fn eval(
        &mut self,
        kernel: KernelId,
        inputs: &[SurfaceId],
        outputs: &[SurfaceId],
    ) -> Result<(), DeviceError> {
        let start = Instant::now();
        {
            let k = self
                .kernels
                .get(&kernel.0)
                .ok_or(DeviceError::UnknownKernel(kernel))?;
            self.check_binding(k, inputs, outputs)?;
        }
        autoreleasepool(|_| {
            let request = self.request_for(kernel, inputs, outputs)?;
            let k = self
                .kernels
                .get(&kernel.0)
                .ok_or(DeviceError::UnknownKernel(kernel))?;
            bridge::evaluate(&k.model, &k.options, &request)
        })?;
        self.stats.evals += 1;
        self.stats.host_eval_ms += start.elapsed().as_secs_f64() * 1e3;
        Ok(())
    }

    fn stats(&self) -> DeviceStats {
        DeviceStats {
            live_kernels: self.kernels.len() as u64,
            live_surfaces: self.surfaces.len() as u64,
            ..self.stats.clone()
        }
    }
}

impl BudgetedDevice for AneDevice {
    fn compile_budget(&self) -> CompileBudget {
        self.budget.clone()
    }

    /// Donor reload (§2.9): new descriptor/model with the new weights, the donor's compiled
    /// `net.plist` copied into the new directory, then only `loadWithQoS`. Not counted.
    fn reload_weights(
        &mut self,
        donor: KernelId,
        spec: &KernelSpec,
    ) -> Result<Option<KernelId>, DeviceError> {
        spec.validate_arguments()?;
        let d = self
            .kernels
            .get(&donor.0)
            .ok_or(DeviceError::UnknownKernel(donor))?;
        if d.program != spec.program
            || d.input_bytes != spec.input_bytes
            || d.output_bytes != spec.output_bytes
        {
            return Ok(None);
        }
        let (donor_dir, donor_hex) = (d.dir.clone(), d.hex_id.clone());
        let kernel = autoreleasepool(|_| {
            let (model, hex_id, dir) = self.prepare(spec)?;
            let plist = donor_dir.join(layout::NET_PLIST);
            let copied = match std::fs::read(&plist) {
                Ok(bytes) => {
                    layout::write_atomic(&dir.join(layout::NET_PLIST), &bytes).map(|_| true)
                }
                Err(_) => match &self.cache_root {
                    Some(root) => layout::restore_net_plist(root, &donor_hex, &dir),
                    None => Ok(false),
                },
            };
            match copied {
                Ok(true) => {}
                Ok(false) => {
                    self.remove_dir(&hex_id, &dir);
                    return Ok(None);
                }
                Err(e) => {
                    self.remove_dir(&hex_id, &dir);
                    return Err(e);
                }
            }
            match self.with_option_fallback(|opts| bridge::load_model(&model, opts)) {
                Ok(options) => Ok(Some(HwKernel {
                    model,
                    hex_id,
                    dir,
                    program: spec.program.clone(),
                    options,
                    input_bytes: spec.input_bytes.clone(),
                    output_bytes: spec.output_bytes.clone(),
                    request: None,
                })),
                Err(e) => {
                    self.remove_dir(&hex_id, &dir);
                    Err(e)
                }
            }
        })?;
        Ok(kernel.map(|k| self.insert_kernel(k)))
    }
}

impl Drop for AneDevice {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.kernels.keys().copied().collect();
        for id in ids {
            // Best effort: a failing unload cannot be reported from drop.
            let _ = self.unload(KernelId(id));
        }
    }
}
