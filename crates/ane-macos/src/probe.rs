//! Start-up probes of an ANE-shaped device (reference §11.9, §14): a tiny compile + eval, the
//! observed I/O binding order (outputs of equal and of different sizes, inputs), the minimum
//! working surface size, and whether a weight reload changes outputs.
//!
//! Every probe is generic over `&mut dyn Device`, so `espresso doctor`, the hardware test suite
//! and the Linux tests run the same code against `AneDevice` or `SimDevice`. Each probe
//! compiles one small program (the minimum-size probe one per size) and releases everything it
//! allocated, also on failure.

use std::fmt;

use ane::blob::single_fp16_blob;
use ane::device::{Device, DeviceError, KernelId, KernelSpec, SurfaceId};
use ane::policy::BudgetedDevice;
use mil::{Builder, DType, Program, Value};

/// Channels of the probe tensors: `[1, 384, 1, 64]` fp16 = 49,152 bytes, the reported minimum.
pub const PROBE_C: usize = 384;
/// Spatial width of the probe tensors.
pub const PROBE_S: usize = 64;

/// A probe program built with `mil::Builder` (the printer is the only producer of MIL text).
fn probe_program(build: impl FnOnce(&mut Builder)) -> Result<Program, DeviceError> {
    let mut b = Builder::new();
    build(&mut b);
    b.finish()
        .map_err(|e| DeviceError::InvalidArgument(format!("probe program: {e}")))
}

/// fp16 input `[1, c, 1, s]`.
fn input(b: &mut Builder, name: &str, c: usize, s: usize) -> Value {
    b.input(name, DType::Fp16, [1, c, 1, s])
}

/// `out = x · k` with an fp16 scalar constant `<out>_k`.
fn scale(b: &mut Builder, out: &str, x: Value, k: f32) -> Value {
    let kv = b.fp16(format!("{out}_k"), f64::from(k));
    b.mul(out, x, kv)
}

/// `out = conv(x, W)` with W `[cout, cin, 1, 1]` from `@model_path/weights/<wname>.bin` and
/// the conv consts `<out>_pt`, `<out>_st`, … .
fn conv(b: &mut Builder, out: &str, x: Value, wname: &str, cin: usize, cout: usize) -> Value {
    let n: Vec<String> = ["pt", "st", "pd", "dl", "gr"]
        .iter()
        .map(|p| format!("{out}_{p}"))
        .collect();
    let p = b.conv_params([&n[0], &n[1], &n[2], &n[3], &n[4]], 1);
    let w = b.weight(
        format!("{out}_W"),
        [cout, cin, 1, 1],
        &format!("@model_path/weights/{wname}.bin"),
    );
    b.conv_with(out, x, w, &p)
}

/// `y = conv(x, W)` on `[1, c, 1, s]`: the doubling and reload probe.
fn conv_program(c: usize, s: usize) -> Result<Program, DeviceError> {
    probe_program(|b| {
        let x = input(b, "x", c, s);
        let y = conv(b, "y", x, "w", c, c);
        b.output(y);
    })
}

/// BLOBFILE of a `[cout, cin]` matrix whose row r is `scale · e_(r mod cin)` (stacked identities).
fn stacked_identity(cout: usize, cin: usize, scale: f32) -> Vec<u8> {
    let mut w = vec![0.0f32; cout * cin];
    for r in 0..cout {
        w[r * cin + r % cin] = scale;
    }
    single_fp16_blob(&w)
}

/// Deterministic small-integer probe input (exact in fp16 after ×2 and ×3).
fn probe_input(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7 + 3) % 23) as f32 - 11.0).collect()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-3 * (1.0 + y.abs()))
}

/// Surfaces and kernel of one probe, released on drop of the run.
struct Run<'d> {
    dev: &'d mut dyn Device,
    kernel: Option<KernelId>,
    surfaces: Vec<SurfaceId>,
}

impl<'d> Run<'d> {
    fn new(dev: &'d mut dyn Device) -> Self {
        Run {
            dev,
            kernel: None,
            surfaces: vec![],
        }
    }

    fn compile(&mut self, spec: &KernelSpec) -> Result<KernelId, DeviceError> {
        let k = self.dev.compile(spec)?;
        self.kernel = Some(k);
        Ok(k)
    }

    fn surface(&mut self, bytes: usize) -> Result<SurfaceId, DeviceError> {
        let s = self.dev.new_surface(bytes)?;
        self.surfaces.push(s);
        Ok(s)
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        // Best effort: a probe that failed half-way must not leak device resources.
        for s in self.surfaces.drain(..) {
            let _ = self.dev.free_surface(s);
        }
        if let Some(k) = self.kernel.take() {
            let _ = self.dev.unload(k);
        }
    }
}

/// Compile + eval `y = conv(x, 2·I)` on `[1, 384, 1, 64]`; `Ok` when y = 2x.
pub fn tiny_compile_eval(dev: &mut dyn Device) -> Result<(), DeviceError> {
    let (c, s) = (PROBE_C, PROBE_S);
    let bytes = c * s * 2;
    let spec = KernelSpec {
        program: conv_program(c, s)?,
        weights: vec![(
            "@model_path/weights/w.bin".into(),
            stacked_identity(c, c, 2.0),
        )],
        input_bytes: vec![bytes],
        output_bytes: vec![bytes],
    };
    let (x, y) = run_doubling(dev, &spec, c, s)?;
    if close(&y, &x.iter().map(|v| 2.0 * v).collect::<Vec<_>>()) {
        Ok(())
    } else {
        Err(DeviceError::Eval(format!(
            "tiny probe: y = conv(x, 2I) gave {:?}… for x = {:?}…",
            &y[..4],
            &x[..4]
        )))
    }
}

/// Compile `spec` (one `[c, s]` input `x`, one `[c, s]` output `y`), run it on the probe input
/// and return `(x, y)`; every resource is released by [`Run`] on return.
fn run_doubling(
    dev: &mut dyn Device,
    spec: &KernelSpec,
    c: usize,
    s: usize,
) -> Result<(Vec<f32>, Vec<f32>), DeviceError> {
    let bytes = c * s * 2;
    let mut run = Run::new(dev);
    let k = run.compile(spec)?;
    let (xi, yo) = (run.surface(bytes)?, run.surface(bytes)?);
    let x = probe_input(c * s);
    run.dev.write_channels_f32(xi, s, 0, &x)?;
    run.dev.eval(k, &[xi], &[yo])?;
    let mut y = vec![0.0; c * s];
    run.dev.read_channels_f32(yo, s, 0, &mut y)?;
    Ok((x, y))
}

/// Which MIL name a surface slot was bound to.
#[derive(Debug, Clone, PartialEq)]
pub enum BindingObservation {
    /// Byte-wise sorted MIL names (what the host layer assumes).
    Alphabetical,
    /// Declaration order of inputs / return-tuple order of outputs.
    DeclarationOrder,
    /// The probe failed (compile or eval error).
    Failed(String),
    /// Eval ran but the data matches neither order.
    Unrecognised(String),
}

impl fmt::Display for BindingObservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Alphabetical => f.write_str("alphabetical (byte-wise sorted MIL names)"),
            Self::DeclarationOrder => {
                f.write_str("declaration / return-tuple order (NOT what the host assumes)")
            }
            Self::Failed(e) => write!(f, "probe failed: {}", e.replace('\n', "; ")),
            Self::Unrecognised(d) => write!(f, "unrecognised data: {d}"),
        }
    }
}

fn observed(result: Result<BindingObservation, DeviceError>) -> BindingObservation {
    result.unwrap_or_else(|e| BindingObservation::Failed(e.to_string()))
}

/// Outputs returned as `(z_first = 2x, a_second = 3x)` — tuple order ≠ sorted order. With
/// `differ_in_size`, `a_second` is `[2C, S]` (a conv with stacked identities), else `[C, S]`.
/// Surfaces are allocated in sorted order (slot 0 = `a_second`) and slot 0 is inspected.
pub fn output_binding(dev: &mut dyn Device, differ_in_size: bool) -> BindingObservation {
    observed(output_binding_inner(dev, differ_in_size))
}

fn output_binding_inner(
    dev: &mut dyn Device,
    differ_in_size: bool,
) -> Result<BindingObservation, DeviceError> {
    let (c, s) = (PROBE_C, PROBE_S);
    let c_a = if differ_in_size { 2 * c } else { c };
    let program = probe_program(|b| {
        let x = input(b, "x", c, s);
        let z = scale(b, "z_first", x, 2.0);
        let a = conv(b, "a_second", x, "w", c, c_a);
        b.output(z);
        b.output(a);
    })?;
    let spec = KernelSpec {
        program,
        weights: vec![(
            "@model_path/weights/w.bin".into(),
            stacked_identity(c_a, c, 3.0),
        )],
        input_bytes: vec![c * s * 2],
        output_bytes: vec![c_a * s * 2, c * s * 2],
    };
    let mut run = Run::new(dev);
    let k = run.compile(&spec)?;
    let xi = run.surface(c * s * 2)?;
    let slot0 = run.surface(c_a * s * 2)?;
    let slot1 = run.surface(c * s * 2)?;
    let x = probe_input(c * s);
    run.dev.write_channels_f32(xi, s, 0, &x)?;
    run.dev.eval(k, &[xi], &[slot0, slot1])?;
    let mut got = vec![0.0; c * s];
    run.dev.read_channels_f32(slot0, s, 0, &mut got)?;
    let times = |m: f32| x.iter().map(|v| m * v).collect::<Vec<f32>>();
    Ok(if close(&got, &times(3.0)) {
        BindingObservation::Alphabetical
    } else if close(&got, &times(2.0)) {
        BindingObservation::DeclarationOrder
    } else {
        BindingObservation::Unrecognised(format!(
            "slot 0 holds {:?}… for x = {:?}…",
            &got[..3],
            &x[..3]
        ))
    })
}

/// Inputs declared `(z_in, a_in)`, output `y = z_in − a_in`. The host writes 1 to slot 0 and
/// 10 to slot 1: sorted binding (slot 0 = `a_in`) gives y = 9, declaration order y = −9.
pub fn input_binding(dev: &mut dyn Device) -> BindingObservation {
    observed(input_binding_inner(dev))
}

fn input_binding_inner(dev: &mut dyn Device) -> Result<BindingObservation, DeviceError> {
    let (c, s) = (PROBE_C, PROBE_S);
    let bytes = c * s * 2;
    let program = probe_program(|b| {
        let z = input(b, "z_in", c, s);
        let a = input(b, "a_in", c, s);
        let y = b.sub("y", z, a);
        b.output(y);
    })?;
    let spec = KernelSpec {
        program,
        weights: vec![],
        input_bytes: vec![bytes, bytes],
        output_bytes: vec![bytes],
    };
    let mut run = Run::new(dev);
    let k = run.compile(&spec)?;
    let (slot0, slot1, yo) = (
        run.surface(bytes)?,
        run.surface(bytes)?,
        run.surface(bytes)?,
    );
    run.dev.write_channels_f32(slot0, s, 0, &vec![1.0; c * s])?;
    run.dev
        .write_channels_f32(slot1, s, 0, &vec![10.0; c * s])?;
    run.dev.eval(k, &[slot0, slot1], &[yo])?;
    let mut y = vec![0.0; c * s];
    run.dev.read_channels_f32(yo, s, 0, &mut y)?;
    Ok(if close(&y, &vec![9.0; c * s]) {
        BindingObservation::Alphabetical
    } else if close(&y, &vec![-9.0; c * s]) {
        BindingObservation::DeclarationOrder
    } else {
        BindingObservation::Unrecognised(format!("y = {:?}…", &y[..3]))
    })
}

/// Shapes `[1, C, 1, S]` tried by [`minimum_surface`], largest first.
pub const SIZE_LADDER: [(usize, usize); 6] =
    [(768, 32), (256, 32), (64, 32), (16, 32), (1, 32), (1, 16)];

/// Result of one size of the minimum-size probe.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeTrial {
    pub channels: usize,
    pub spatial: usize,
    pub bytes: usize,
    /// `None` = correct output; `Some(error)` otherwise.
    pub failure: Option<String>,
}

/// `y = 2x` at each size of `SIZE_LADDER` (input and output equally sized).
pub fn minimum_surface(dev: &mut dyn Device) -> Vec<SizeTrial> {
    SIZE_LADDER
        .iter()
        .map(|&(c, s)| SizeTrial {
            channels: c,
            spatial: s,
            bytes: c * s * 2,
            failure: scale_roundtrip(dev, c, s).err().map(|e| e.to_string()),
        })
        .collect()
}

/// Smallest size such that it and every larger size tried worked.
pub fn smallest_working(trials: &[SizeTrial]) -> Option<usize> {
    trials
        .iter()
        .take_while(|t| t.failure.is_none())
        .map(|t| t.bytes)
        .min()
}

fn scale_roundtrip(dev: &mut dyn Device, c: usize, s: usize) -> Result<(), DeviceError> {
    let bytes = c * s * 2;
    let spec = KernelSpec {
        program: probe_program(|b| {
            let x = input(b, "x", c, s);
            let y = scale(b, "y", x, 2.0);
            b.output(y);
        })?,
        weights: vec![],
        input_bytes: vec![bytes],
        output_bytes: vec![bytes],
    };
    let (x, y) = run_doubling(dev, &spec, c, s)?;
    if close(&y, &x.iter().map(|v| 2.0 * v).collect::<Vec<_>>()) {
        Ok(())
    } else {
        Err(DeviceError::Eval(format!("wrong output at {bytes} bytes")))
    }
}

/// Outcome of the weight-reload probe (§2.9, §14 question 3).
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadObservation {
    /// The device has no reload path.
    Unsupported,
    /// Outputs followed the new weights: the policy may trust reloads.
    ChangesOutputs,
    /// Outputs still reflect the donor's weights: reloads must not be used.
    StaleWeights,
    Failed(String),
}

/// Compile `y = conv(x, 2I)`, reload it with `3I`, eval both; see [`ReloadObservation`].
pub fn weight_reload<D: BudgetedDevice>(dev: &mut D) -> ReloadObservation {
    match weight_reload_inner(dev) {
        Ok(o) => o,
        Err(e) => ReloadObservation::Failed(e.to_string()),
    }
}

fn weight_reload_inner<D: BudgetedDevice>(dev: &mut D) -> Result<ReloadObservation, DeviceError> {
    let (c, s) = (PROBE_C, PROBE_S);
    let bytes = c * s * 2;
    let program = conv_program(c, s)?;
    let spec = |scale: f32| KernelSpec {
        program: program.clone(),
        weights: vec![(
            "@model_path/weights/w.bin".into(),
            stacked_identity(c, c, scale),
        )],
        input_bytes: vec![bytes],
        output_bytes: vec![bytes],
    };
    let donor = dev.compile(&spec(2.0))?;
    let reloaded = match dev.reload_weights(donor, &spec(3.0)) {
        Ok(Some(k)) => k,
        Ok(None) => {
            dev.unload(donor)?;
            return Ok(ReloadObservation::Unsupported);
        }
        Err(e) => {
            dev.unload(donor)?;
            return Err(e);
        }
    };
    let x = probe_input(c * s);
    let mut outputs = vec![];
    let result = (|| {
        let mut run = Run::new(dev);
        let (xi, yo) = (run.surface(bytes)?, run.surface(bytes)?);
        run.dev.write_channels_f32(xi, s, 0, &x)?;
        for k in [donor, reloaded] {
            run.dev.eval(k, &[xi], &[yo])?;
            let mut y = vec![0.0; c * s];
            run.dev.read_channels_f32(yo, s, 0, &mut y)?;
            outputs.push(y);
        }
        Ok::<(), DeviceError>(())
    })();
    dev.unload(reloaded)?;
    dev.unload(donor)?;
    result?;
    let times = |m: f32| x.iter().map(|v| m * v).collect::<Vec<f32>>();
    Ok(if close(&outputs[1], &times(3.0)) {
        ReloadObservation::ChangesOutputs
    } else if close(&outputs[1], &times(2.0)) {
        ReloadObservation::StaleWeights
    } else {
        ReloadObservation::Failed(format!("reloaded kernel gave {:?}…", &outputs[1][..3]))
    })
}

/// Everything `espresso doctor` reports about a device.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    pub device: String,
    pub tiny: Result<(), String>,
    pub outputs_equal_sizes: BindingObservation,
    pub outputs_differing_sizes: BindingObservation,
    pub inputs: BindingObservation,
    pub sizes: Vec<SizeTrial>,
    /// Compiles this device has done (including the probes').
    pub compiles: u64,
}

/// Run every [`Device`]-level probe on `dev`.
pub fn run_all(dev: &mut dyn Device) -> ProbeReport {
    let tiny = tiny_compile_eval(dev).map_err(|e| e.to_string());
    let outputs_equal_sizes = output_binding(dev, false);
    let outputs_differing_sizes = output_binding(dev, true);
    let inputs = input_binding(dev);
    let sizes = minimum_surface(dev);
    ProbeReport {
        device: dev.name(),
        tiny,
        outputs_equal_sizes,
        outputs_differing_sizes,
        inputs,
        sizes,
        compiles: dev.stats().compiles,
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "device:                 {}", self.device)?;
        match &self.tiny {
            Ok(()) => writeln!(
                f,
                "compile + eval probe:   ok (y = conv(x, 2I) on [1, {PROBE_C}, 1, {PROBE_S}] fp16)"
            )?,
            Err(e) => writeln!(
                f,
                "compile + eval probe:   FAILED: {}",
                e.replace('\n', "; ")
            )?,
        }
        writeln!(
            f,
            "output binding (equal sizes):     {}",
            self.outputs_equal_sizes
        )?;
        writeln!(
            f,
            "output binding (different sizes): {}",
            self.outputs_differing_sizes
        )?;
        writeln!(f, "input binding:                    {}", self.inputs)?;
        writeln!(f, "surface sizes (y = 2x, equal I/O sizes):")?;
        for t in &self.sizes {
            let status = match &t.failure {
                None => "ok".to_string(),
                Some(e) => format!("failed: {}", e.replace('\n', "; ")),
            };
            writeln!(
                f,
                "  [1, {:>3}, 1, {:>2}] {:>6} bytes  {status}",
                t.channels, t.spatial, t.bytes
            )?;
        }
        match smallest_working(&self.sizes) {
            Some(b) => writeln!(f, "minimum working surface: {b} bytes (of the sizes tried)")?,
            None => writeln!(f, "minimum working surface: none of the sizes tried worked")?,
        }
        write!(f, "compiles so far:        {}", self.compiles)
    }
}

/// Largest I/O surface the probes consider "small enough": kernels with `[768, 32]` fp16
/// activations (the reference's decode lanes) need this to work.
pub const REQUIRED_MIN_SURFACE: usize = 49_152;

/// What `--backend auto` picks, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoChoice {
    /// `"ane"` or `"cpu"`.
    pub backend: &'static str,
    /// One line saying why, for messages (e.g. why the ANE is not used).
    pub reason: String,
}

/// The `auto` rule: the ANE when it is available and its probes show the behaviour the host
/// layer relies on (compile + eval works, alphabetical binding of inputs and equal-size
/// outputs, [`REQUIRED_MIN_SURFACE`]-byte surfaces work); otherwise the CPU backend. The
/// simulator is never picked automatically: it is a test device, not a fast one.
pub fn auto_backend(
    availability: &Result<(), String>,
    hardware: Option<&ProbeReport>,
) -> AutoChoice {
    let cpu = |reason: String| AutoChoice {
        backend: "cpu",
        reason,
    };
    let r = match (availability, hardware) {
        (Err(why), _) => {
            return cpu(format!(
                "{why} (the simulator, ane-sim, is for testing and is never picked by auto)"
            ))
        }
        (Ok(()), None) => return cpu("the ANE probes have not been run".into()),
        (Ok(()), Some(r)) => r,
    };
    if let Err(e) = &r.tiny {
        return cpu(format!("the ANE compile + eval probe failed: {e}"));
    }
    for (what, o) in [("outputs", &r.outputs_equal_sizes), ("inputs", &r.inputs)] {
        if *o != BindingObservation::Alphabetical {
            return cpu(format!("the ANE binds {what} in an unexpected order: {o}"));
        }
    }
    match smallest_working(&r.sizes) {
        Some(b) if b <= REQUIRED_MIN_SURFACE => AutoChoice {
            backend: "ane",
            reason: format!(
                "the ANE compiled and ran the probes, binds I/O alphabetically and accepts \
                 surfaces down to {b} bytes"
            ),
        },
        _ => cpu(format!(
            "the ANE failed the probe with {REQUIRED_MIN_SURFACE}-byte surfaces that the kernels use"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ane::budget::CompileBudget;
    use ane_sim::{SimDevice, SimOptions};

    fn sim() -> SimDevice {
        SimDevice::new(SimOptions {
            budget: CompileBudget::private(1000),
            ..Default::default()
        })
    }

    #[test]
    fn probe_programs_print_parse_and_validate() {
        let p = probe_program(|b| {
            let x = input(b, "x", 4, 8);
            let z = scale(b, "z_first", x, 2.0);
            let a = conv(b, "a_second", x, "w", 4, 8);
            b.output(z);
            b.output(a);
        })
        .unwrap();
        let text = mil::print(&p);
        assert_eq!(mil::parse(&text).as_ref(), Ok(&p), "{text}");
        assert!(text.contains("fp16(2.0)"), "{text}");
        assert!(!mil::has_errors(&mil::validate(&p, &Default::default())));
        let c = conv_program(4, 8).unwrap();
        assert_eq!(
            c.main().map(|f| f.outputs.clone()),
            Some(vec!["y".to_string()])
        );
    }

    #[test]
    fn simulator_passes_every_probe_and_binds_alphabetically() {
        let mut dev = sim();
        let r = run_all(&mut dev);
        assert_eq!(r.tiny, Ok(()));
        assert_eq!(r.outputs_equal_sizes, BindingObservation::Alphabetical);
        assert_eq!(r.outputs_differing_sizes, BindingObservation::Alphabetical);
        assert_eq!(r.inputs, BindingObservation::Alphabetical);
        assert_eq!(r.sizes.len(), SIZE_LADDER.len());
        assert!(r.sizes.iter().all(|t| t.failure.is_none()), "{:?}", r.sizes);
        assert_eq!(smallest_working(&r.sizes), Some(32));
        // 1 tiny + 3 binding + 6 sizes, and nothing left behind.
        assert_eq!(r.compiles, 10);
        let st = dev.stats();
        assert_eq!((st.live_kernels, st.live_surfaces), (0, 0));
        let text = r.to_string();
        assert!(text.contains("minimum working surface: 32 bytes"), "{text}");
    }

    #[test]
    fn faulty_binding_is_detected() {
        let mut dev = SimDevice::faulty_declaration_order(SimOptions::default());
        assert_eq!(
            output_binding(&mut dev, false),
            BindingObservation::DeclarationOrder
        );
        assert_eq!(
            input_binding(&mut dev),
            BindingObservation::DeclarationOrder
        );
        // Different sizes mis-routed: the small surface receives the big tensor.
        match output_binding(&mut dev, true) {
            BindingObservation::Failed(e) => assert!(e.contains("0x1d"), "{e}"),
            o => panic!("{o:?}"),
        }
        let st = dev.stats();
        assert_eq!((st.live_kernels, st.live_surfaces), (0, 0));
    }

    #[test]
    fn size_ladder_summary_stops_at_the_first_failure() {
        let t = |bytes, ok: bool| SizeTrial {
            channels: 1,
            spatial: 1,
            bytes,
            failure: (!ok).then(|| "status=0x1d".to_string()),
        };
        assert_eq!(
            smallest_working(&[t(100, true), t(50, true), t(10, false)]),
            Some(50)
        );
        assert_eq!(
            smallest_working(&[t(100, true), t(50, false), t(10, true)]),
            Some(100)
        );
        assert_eq!(smallest_working(&[t(100, false)]), None);
    }

    #[test]
    fn failed_probes_report_and_release() {
        // A budget of 0: every compile is refused, nothing leaks, the error is reported.
        let mut dev = SimDevice::new(SimOptions {
            budget: CompileBudget::private(0),
            ..Default::default()
        });
        let r = run_all(&mut dev);
        assert!(
            r.tiny.as_ref().unwrap_err().contains("budget"),
            "{:?}",
            r.tiny
        );
        assert!(matches!(r.inputs, BindingObservation::Failed(_)));
        assert_eq!(smallest_working(&r.sizes), None);
        assert_eq!(dev.stats().live_surfaces, 0);
    }

    #[test]
    fn auto_prefers_a_healthy_ane_and_otherwise_the_cpu() {
        let mut dev = sim();
        let good = run_all(&mut dev);
        assert_eq!(auto_backend(&Ok(()), Some(&good)).backend, "ane");
        let off = auto_backend(&Err("no ANE here".into()), Some(&good));
        assert_eq!(off.backend, "cpu");
        assert!(off.reason.starts_with("no ANE here"), "{}", off.reason);
        assert_eq!(auto_backend(&Ok(()), None).backend, "cpu");
        let mut faulty = SimDevice::faulty_declaration_order(SimOptions::default());
        let bad = run_all(&mut faulty);
        let c = auto_backend(&Ok(()), Some(&bad));
        assert_eq!(c.backend, "cpu");
        assert!(c.reason.contains("unexpected order"), "{}", c.reason);
        // Each condition failing alone sends auto to the CPU, with the reason.
        let mut outputs_only = good.clone();
        outputs_only.outputs_equal_sizes = BindingObservation::DeclarationOrder;
        let c = auto_backend(&Ok(()), Some(&outputs_only));
        assert_eq!(c.backend, "cpu");
        assert!(c.reason.contains("binds outputs"), "{}", c.reason);
        let mut inputs_only = good.clone();
        inputs_only.inputs = BindingObservation::Failed("eval failed".into());
        let c = auto_backend(&Ok(()), Some(&inputs_only));
        assert_eq!(c.backend, "cpu");
        assert!(c.reason.contains("binds inputs"), "{}", c.reason);
        let mut small_only = good.clone();
        small_only.sizes[0].failure = Some("status=0x1d".into());
        let c = auto_backend(&Ok(()), Some(&small_only));
        assert_eq!(c.backend, "cpu");
        assert!(c.reason.contains("49152-byte surfaces"), "{}", c.reason);
        let mut broken = good;
        broken.tiny = Err("compile failed".into());
        assert!(auto_backend(&Ok(()), Some(&broken))
            .reason
            .contains("compile failed"));
    }

    #[test]
    fn simulator_has_no_reload_path() {
        let mut dev = sim();
        assert_eq!(weight_reload(&mut dev), ReloadObservation::Unsupported);
        assert_eq!(dev.stats().live_kernels, 0);
    }
}
