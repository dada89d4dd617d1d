//! The compile-budget policy on the simulator: kernel reuse, weight reload through a donor,
//! refusal at the budget.

use ane::blob::single_fp16_blob;
use ane::policy::*;
use ane::{CompileBudget, Device, DeviceError, DeviceLayer, KernelId, KernelSpec};
use ane_sim::{SimDevice, SimOptions};

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
        program: mil::parse(&conv_mil()).expect("test program parses"),
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

impl DeviceLayer for ReloadingSim {
    fn inner(&self) -> &dyn Device {
        &self.sim
    }
    fn inner_mut(&mut self) -> &mut dyn Device {
        &mut self.sim
    }
    fn layer_name(&self) -> String {
        "reloading sim".into()
    }
    fn layer_compile(&mut self, spec: &KernelSpec) -> Result<KernelId, DeviceError> {
        self.budget.take()?;
        self.sim.compile(spec)
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
