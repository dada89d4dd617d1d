//! The compile-budget policy (reference §2.4, §2.8–§2.9, §11.5).
//!
//! The ANE stack fails after ~119 compiles per process, so every compile is precious.
//! [`CompilePolicy`] wraps any [`BudgetedDevice`] and is itself a [`Device`]; on `compile` it
//!
//! 1. reuses a live kernel compiled from identical MIL text, weights and I/O sizes (keyed by a
//!    128-bit fingerprint of the MIL and of the weights), counting references so that `unload`
//!    releases the kernel only when its last user is done;
//! 2. when weight reload is trusted ([`WeightReload::Trusted`], only after a probe on this
//!    machine showed that outputs change) and a live kernel has the same MIL and I/O sizes but
//!    other weights, loads the new weights through the device's donor reload, which does not
//!    count as a compile;
//! 3. compiles if the budget allows;
//! 4. otherwise fails with [`DeviceError::CompileBudgetExhausted`], which tells the user to
//!    restart the process or reuse kernels.
//!
//! The same policy runs on Linux against [`SimDevice`] and its simulated budget.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::budget::CompileBudget;
use crate::cost::ChipProfile;
use crate::device::{Device, DeviceError, DeviceStats, KernelId, KernelSpec, SurfaceId};
use crate::sim::SimDevice;

/// What the policy needs from a device besides [`Device`].
pub trait BudgetedDevice: Device {
    /// The budget the device's compiles count against (a clone sharing the counter).
    fn compile_budget(&self) -> CompileBudget;

    /// Load `spec` — same MIL text and I/O sizes as the live kernel `donor`, other weights —
    /// without compiling (donor reload, §2.9). `Ok(None)` when the device cannot.
    fn reload_weights(
        &mut self,
        donor: KernelId,
        spec: &KernelSpec,
    ) -> Result<Option<KernelId>, DeviceError> {
        let _ = (donor, spec);
        Ok(None)
    }
}

impl BudgetedDevice for SimDevice {
    fn compile_budget(&self) -> CompileBudget {
        self.options().budget.clone()
    }
}

/// Whether the policy may use the device's weight reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightReload {
    /// Never (default: peers disagree whether reloaded weights take effect, §2.9).
    #[default]
    Off,
    /// A probe on this machine showed that a reload changes the outputs.
    Trusted,
}

/// 128-bit fingerprint of byte strings (two keyed SipHash passes; collisions are not a
/// concern for non-adversarial inputs).
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]> + Clone) -> u128 {
    let pass = |seed: u64| {
        let mut h = DefaultHasher::new();
        seed.hash(&mut h);
        for p in parts.clone() {
            p.len().hash(&mut h);
            h.write(p);
        }
        h.finish()
    };
    (u128::from(pass(0x5eed_0001)) << 64) | u128::from(pass(0x5eed_0002))
}

/// What makes two compiles interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProgramKey {
    /// Fingerprint of the MIL text.
    pub mil: u128,
    /// Fingerprint of the weight paths and blobs, in spec order.
    pub weights: u128,
    pub input_bytes: Vec<usize>,
    pub output_bytes: Vec<usize>,
}

impl ProgramKey {
    pub fn of(spec: &KernelSpec) -> Self {
        let weight_parts = spec
            .weights
            .iter()
            .flat_map(|(p, b)| [p.as_bytes(), b.as_slice()]);
        Self {
            mil: fingerprint([spec.mil_text.as_bytes()]),
            weights: fingerprint(weight_parts),
            input_bytes: spec.input_bytes.clone(),
            output_bytes: spec.output_bytes.clone(),
        }
    }

    /// Same program shape, possibly other weights (a donor candidate).
    pub fn same_program(&self, other: &Self) -> bool {
        self.mil == other.mil
            && self.input_bytes == other.input_bytes
            && self.output_bytes == other.output_bytes
    }
}

/// How the policy satisfied compile requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyStats {
    /// Real compiles (counted against the budget).
    pub compiled: u64,
    /// Requests answered with an identical live kernel.
    pub reused: u64,
    /// Requests answered by a donor weight reload (not counted).
    pub reloaded: u64,
    /// Requests refused because the budget was used up.
    pub refused: u64,
}

#[derive(Debug)]
struct LiveKernel {
    key: ProgramKey,
    refs: usize,
}

/// A device with the compile-budget policy in front of its `compile`.
pub struct CompilePolicy<D> {
    inner: D,
    reload: WeightReload,
    live: HashMap<KernelId, LiveKernel>,
    stats: PolicyStats,
}

impl<D: BudgetedDevice> CompilePolicy<D> {
    pub fn new(inner: D, reload: WeightReload) -> Self {
        Self {
            inner,
            reload,
            live: HashMap::new(),
            stats: PolicyStats::default(),
        }
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    pub fn policy_stats(&self) -> PolicyStats {
        self.stats
    }

    pub fn set_weight_reload(&mut self, reload: WeightReload) {
        self.reload = reload;
    }

    /// Compiles left before the policy refuses.
    pub fn compiles_left(&self) -> u64 {
        let b = self.inner.compile_budget();
        b.limit().saturating_sub(b.used())
    }

    fn find(&self, pred: impl Fn(&ProgramKey) -> bool) -> Option<KernelId> {
        // Lowest id first, so the choice does not depend on hash order.
        let mut ids: Vec<KernelId> = self
            .live
            .iter()
            .filter(|(_, k)| pred(&k.key))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids.first().copied()
    }

    fn add_live(&mut self, id: KernelId, key: ProgramKey) {
        self.live
            .entry(id)
            .and_modify(|k| k.refs += 1)
            .or_insert(LiveKernel { key, refs: 1 });
    }

    fn try_reload(&mut self, key: &ProgramKey, spec: &KernelSpec) -> Option<KernelId> {
        if self.reload != WeightReload::Trusted {
            return None;
        }
        let donor = self.find(|k| k.same_program(key))?;
        // A failed reload is not fatal: a real compile may still succeed.
        self.inner.reload_weights(donor, spec).ok().flatten()
    }
}

impl<D: BudgetedDevice> Device for CompilePolicy<D> {
    fn name(&self) -> String {
        let b = self.inner.compile_budget();
        format!(
            "{} [compile policy: {}/{} compiles used]",
            self.inner.name(),
            b.used(),
            b.limit()
        )
    }

    fn compile(&mut self, spec: &KernelSpec) -> Result<KernelId, DeviceError> {
        spec.validate_arguments()?;
        let key = ProgramKey::of(spec);
        if let Some(id) = self.find(|k| *k == key) {
            self.add_live(id, key);
            self.stats.reused += 1;
            return Ok(id);
        }
        if let Some(id) = self.try_reload(&key, spec) {
            self.add_live(id, key);
            self.stats.reloaded += 1;
            return Ok(id);
        }
        if let Err(e) = self.inner.compile_budget().check() {
            self.stats.refused += 1;
            return Err(e);
        }
        let id = self.inner.compile(spec)?;
        self.add_live(id, key);
        self.stats.compiled += 1;
        Ok(id)
    }

    fn unload(&mut self, kernel: KernelId) -> Result<(), DeviceError> {
        let k = self
            .live
            .get_mut(&kernel)
            .ok_or(DeviceError::UnknownKernel(kernel))?;
        k.refs -= 1;
        if k.refs == 0 {
            self.live.remove(&kernel);
            self.inner.unload(kernel)?;
        }
        Ok(())
    }

    fn new_surface(&mut self, bytes: usize) -> Result<SurfaceId, DeviceError> {
        self.inner.new_surface(bytes)
    }

    fn free_surface(&mut self, surface: SurfaceId) -> Result<(), DeviceError> {
        self.inner.free_surface(surface)
    }

    fn surface_len(&self, surface: SurfaceId) -> Result<usize, DeviceError> {
        self.inner.surface_len(surface)
    }

    fn with_surface(
        &self,
        surface: SurfaceId,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DeviceError> {
        self.inner.with_surface(surface, f)
    }

    fn with_surface_mut(
        &mut self,
        surface: SurfaceId,
        f: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DeviceError> {
        self.inner.with_surface_mut(surface, f)
    }

    fn eval(
        &mut self,
        kernel: KernelId,
        inputs: &[SurfaceId],
        outputs: &[SurfaceId],
    ) -> Result<(), DeviceError> {
        self.inner.eval(kernel, inputs, outputs)
    }

    fn stats(&self) -> DeviceStats {
        self.inner.stats()
    }

    fn chip_profile(&self) -> Option<ChipProfile> {
        self.inner.chip_profile()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::single_fp16_blob;
    use crate::sim::SimOptions;

    const C: usize = 4;
    const S: usize = 8;
    const BYTES: usize = C * S * 2;

    /// `y = conv(x, W)` with W `[C, C, 1, 1]` from `weights/w.bin`, fp16 `[1, C, 1, S]`.
    fn conv_mil() -> String {
        format!(
            "program(1.3)\n{{\n    func main<ios18>(tensor<fp16, [1, {C}, 1, {S}]> x) {{\n\
             string pt = const()[name = string(\"pt\"), val = string(\"valid\")];\n\
             tensor<int32, [2]> st = const()[name = string(\"st\"), val = tensor<int32, [2]>([1, 1])];\n\
             tensor<int32, [4]> pd = const()[name = string(\"pd\"), val = tensor<int32, [4]>([0, 0, 0, 0])];\n\
             tensor<int32, [2]> dl = const()[name = string(\"dl\"), val = tensor<int32, [2]>([1, 1])];\n\
             int32 gr = const()[name = string(\"gr\"), val = int32(1)];\n\
             tensor<fp16, [{C}, {C}, 1, 1]> W = const()[name = string(\"W\"), val = tensor<fp16, [{C}, {C}, 1, 1]>(BLOBFILE(path = string(\"@model_path/weights/w.bin\"), offset = uint64(64)))];\n\
             tensor<fp16, [1, {C}, 1, {S}]> y = conv(dilations = dl, groups = gr, pad = pd, pad_type = pt, strides = st, weight = W, x = x)[name = string(\"conv\")];\n\
             }} -> (y);\n}}\n"
        )
    }

    /// Kernel spec of `y = scale · x` (W = scale · I).
    fn scaled(scale: f32) -> KernelSpec {
        let mut w = vec![0.0f32; C * C];
        for i in 0..C {
            w[i * C + i] = scale;
        }
        KernelSpec {
            mil_text: conv_mil(),
            weights: vec![("@model_path/weights/w.bin".into(), single_fp16_blob(&w))],
            input_bytes: vec![BYTES],
            output_bytes: vec![BYTES],
        }
    }

    fn sim(limit: u64) -> SimDevice {
        SimDevice::new(SimOptions {
            budget: CompileBudget::private(limit),
            ..Default::default()
        })
    }

    /// Run `kernel` on x = 1, 2, … and return y.
    fn run(dev: &mut dyn Device, kernel: KernelId) -> Vec<f32> {
        let x: Vec<f32> = (0..C * S).map(|i| (i % 7) as f32).collect();
        let xi = dev.new_surface(BYTES).unwrap();
        let yo = dev.new_surface(BYTES).unwrap();
        dev.write_channels_f32(xi, S, 0, &x).unwrap();
        dev.eval(kernel, &[xi], &[yo]).unwrap();
        let mut y = vec![0.0; C * S];
        dev.read_channels_f32(yo, S, 0, &mut y).unwrap();
        dev.free_surface(xi).unwrap();
        dev.free_surface(yo).unwrap();
        y.iter()
            .zip(&x)
            .map(|(y, x)| if *x == 0.0 { 0.0 } else { y / x })
            .collect()
    }

    #[test]
    fn fingerprints_separate_inputs() {
        assert_eq!(
            fingerprint([b"ab".as_slice()]),
            fingerprint([b"ab".as_slice()])
        );
        assert_ne!(
            fingerprint([b"ab".as_slice()]),
            fingerprint([b"ba".as_slice()])
        );
        // Length-prefixed: the split between parts matters.
        assert_ne!(
            fingerprint([b"a".as_slice(), b"bc".as_slice()]),
            fingerprint([b"ab".as_slice(), b"c".as_slice()])
        );
        let a = ProgramKey::of(&scaled(2.0));
        let b = ProgramKey::of(&scaled(3.0));
        assert_eq!(a.mil, b.mil);
        assert_ne!(a.weights, b.weights);
        assert!(a.same_program(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn identical_programs_are_compiled_once_and_refcounted() {
        let mut p = CompilePolicy::new(sim(119), WeightReload::Off);
        let a = p.compile(&scaled(2.0)).unwrap();
        let b = p.compile(&scaled(2.0)).unwrap();
        assert_eq!(a, b);
        assert_eq!(p.inner().compile_budget().used(), 1);
        assert_eq!(p.policy_stats().reused, 1);
        assert!(run(&mut p, a).iter().all(|&r| r == 0.0 || r == 2.0));
        // First unload keeps the shared kernel loaded; the second releases it.
        p.unload(a).unwrap();
        assert_eq!(p.stats().live_kernels, 1);
        p.unload(b).unwrap();
        assert_eq!(p.stats().live_kernels, 0);
        assert!(matches!(p.unload(a), Err(DeviceError::UnknownKernel(_))));
        // After release a new request compiles again.
        p.compile(&scaled(2.0)).unwrap();
        assert_eq!(p.inner().compile_budget().used(), 2);
    }

    #[test]
    fn budget_is_enforced_with_an_actionable_error() {
        let mut p = CompilePolicy::new(sim(2), WeightReload::Off);
        p.compile(&scaled(1.0)).unwrap();
        p.compile(&scaled(2.0)).unwrap();
        assert_eq!(p.compiles_left(), 0);
        // Identical programs are still served from the live kernels.
        p.compile(&scaled(2.0)).unwrap();
        let err = p.compile(&scaled(3.0)).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::CompileBudgetExhausted { used: 2, budget: 2 }
        ));
        let text = err.to_string();
        assert!(text.contains("restart the process"), "{text}");
        assert_eq!(
            p.policy_stats(),
            PolicyStats {
                compiled: 2,
                reused: 1,
                reloaded: 0,
                refused: 1
            }
        );
    }

    #[test]
    fn process_wide_budget_is_shared_between_devices() {
        // Tests run in parallel; use a limit relative to the current count.
        let probe = CompileBudget::process_wide(u64::MAX);
        let mut a = CompilePolicy::new(
            SimDevice::new(SimOptions {
                budget: CompileBudget::process_wide(u64::MAX),
                ..Default::default()
            }),
            WeightReload::Off,
        );
        let before = probe.used();
        a.compile(&scaled(5.0)).unwrap();
        let mut b = CompilePolicy::new(
            SimDevice::new(SimOptions {
                budget: CompileBudget::process_wide(u64::MAX),
                ..Default::default()
            }),
            WeightReload::Off,
        );
        b.compile(&scaled(5.0)).unwrap();
        // Two devices, two compiles on the one process counter (other tests may add more).
        assert!(probe.used() >= before + 2);
    }

    /// A simulator with the hardware's reload semantics: compiles count against `budget`,
    /// weight reloads (same MIL) load without counting (§2.9).
    struct ReloadingSim {
        sim: SimDevice,
        budget: CompileBudget,
        reloads: u64,
    }

    impl ReloadingSim {
        fn new(limit: u64) -> Self {
            Self {
                sim: sim(u64::MAX),
                budget: CompileBudget::private(limit),
                reloads: 0,
            }
        }
    }

    impl Device for ReloadingSim {
        fn name(&self) -> String {
            "reloading sim".into()
        }
        fn compile(&mut self, spec: &KernelSpec) -> Result<KernelId, DeviceError> {
            self.budget.take()?;
            self.sim.compile(spec)
        }
        fn unload(&mut self, kernel: KernelId) -> Result<(), DeviceError> {
            self.sim.unload(kernel)
        }
        fn new_surface(&mut self, bytes: usize) -> Result<SurfaceId, DeviceError> {
            self.sim.new_surface(bytes)
        }
        fn free_surface(&mut self, surface: SurfaceId) -> Result<(), DeviceError> {
            self.sim.free_surface(surface)
        }
        fn surface_len(&self, surface: SurfaceId) -> Result<usize, DeviceError> {
            self.sim.surface_len(surface)
        }
        fn with_surface(
            &self,
            surface: SurfaceId,
            f: &mut dyn FnMut(&[u8]),
        ) -> Result<(), DeviceError> {
            self.sim.with_surface(surface, f)
        }
        fn with_surface_mut(
            &mut self,
            surface: SurfaceId,
            f: &mut dyn FnMut(&mut [u8]),
        ) -> Result<(), DeviceError> {
            self.sim.with_surface_mut(surface, f)
        }
        fn eval(
            &mut self,
            kernel: KernelId,
            inputs: &[SurfaceId],
            outputs: &[SurfaceId],
        ) -> Result<(), DeviceError> {
            self.sim.eval(kernel, inputs, outputs)
        }
        fn stats(&self) -> DeviceStats {
            self.sim.stats()
        }
    }

    impl BudgetedDevice for ReloadingSim {
        fn compile_budget(&self) -> CompileBudget {
            self.budget.clone()
        }
        fn reload_weights(
            &mut self,
            donor: KernelId,
            spec: &KernelSpec,
        ) -> Result<Option<KernelId>, DeviceError> {
            self.sim
                .program(donor)
                .ok_or(DeviceError::UnknownKernel(donor))?;
            self.reloads += 1;
            self.sim.compile(spec).map(Some)
        }
    }

    #[test]
    fn trusted_reload_serves_new_weights_without_compiling() {
        let mut p = CompilePolicy::new(ReloadingSim::new(1), WeightReload::Trusted);
        let a = p.compile(&scaled(2.0)).unwrap();
        let b = p.compile(&scaled(3.0)).unwrap();
        assert_ne!(a, b);
        assert_eq!(p.inner().budget.used(), 1);
        assert_eq!(p.inner().reloads, 1);
        assert_eq!(p.policy_stats().reloaded, 1);
        assert!(run(&mut p, a).iter().all(|&r| r == 0.0 || r == 2.0));
        assert!(run(&mut p, b).iter().all(|&r| r == 0.0 || r == 3.0));
        // Without a live donor of the same program, the budget still applies.
        p.unload(a).unwrap();
        p.unload(b).unwrap();
        assert!(matches!(
            p.compile(&scaled(4.0)),
            Err(DeviceError::CompileBudgetExhausted { .. })
        ));
    }

    #[test]
    fn untrusted_reload_is_never_used() {
        let mut p = CompilePolicy::new(ReloadingSim::new(1), WeightReload::Off);
        p.compile(&scaled(2.0)).unwrap();
        assert!(matches!(
            p.compile(&scaled(3.0)),
            Err(DeviceError::CompileBudgetExhausted { .. })
        ));
        assert_eq!(p.inner().reloads, 0);
        p.set_weight_reload(WeightReload::Trusted);
        p.compile(&scaled(3.0)).unwrap();
        assert_eq!(p.inner().reloads, 1);
    }

    #[test]
    fn invalid_specs_fail_before_touching_the_budget() {
        let mut p = CompilePolicy::new(sim(5), WeightReload::Off);
        let mut bad = scaled(1.0);
        bad.weights[0].0 = "@model_path/../w.bin".into();
        assert!(matches!(
            p.compile(&bad),
            Err(DeviceError::InvalidArgument(_))
        ));
        assert_eq!(p.inner().compile_budget().used(), 0);
        assert!(p.name().contains("0/5 compiles used"), "{}", p.name());
    }
}
