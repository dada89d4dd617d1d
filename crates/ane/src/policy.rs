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
//! The same policy runs on Linux against `ane_sim::SimDevice` and its simulated budget.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::budget::CompileBudget;
use crate::device::{Device, DeviceError, DeviceLayer, KernelId, KernelSpec};

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
    /// Fingerprint of the MIL program (its printed text: the printer is canonical).
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
            mil: fingerprint([spec.mil_text().as_bytes()]),
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

impl<D: BudgetedDevice> DeviceLayer for CompilePolicy<D> {
    fn inner(&self) -> &dyn Device {
        &self.inner
    }

    fn inner_mut(&mut self) -> &mut dyn Device {
        &mut self.inner
    }

    fn layer_name(&self) -> String {
        let b = self.inner.compile_budget();
        format!(
            "{} [compile policy: {}/{} compiles used]",
            self.inner.name(),
            b.used(),
            b.limit()
        )
    }

    fn layer_compile(&mut self, spec: &KernelSpec) -> Result<KernelId, DeviceError> {
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

    fn layer_unload(&mut self, kernel: KernelId) -> Result<(), DeviceError> {
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
}
