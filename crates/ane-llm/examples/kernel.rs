//! One kernel, end to end: build a MIL program, compile it on the best device here, write
//! the inputs, `eval`, and read the output surface in place (no copy).
//!
//! The built-in kernel is `y = conv(x, W) + k·x` over an activation `x: [1, C, 1, S]` (a 1×1
//! conv is a matmul over channels), checked against the same sum in plain Rust. Given a
//! `.mil` file instead, it runs that program on random inputs and checks the device against
//! the f32 simulator; its BLOBFILE weights `@model_path/weights/x.bin` are read from
//! `DIR/weights/x.bin`, where `DIR` is the file's folder.
//!
//! The device is the Apple Neural Engine where `ane_macos::decide_auto()` finds a healthy
//! one, else the simulator (`ane-sim`); the program prints which.
//!
//! ```text
//! cargo run -p ane-llm --example kernel                # built-in conv kernel
//! cargo run -p ane-llm --example kernel -- FILE.mil    # a MIL program from a file
//! ```
//!
//! Exits non-zero (one `error:` line) when the device's output does not match.

use ane::binding::declared_io;
use ane::{Device, KernelSpec, SurfaceId};
use ane_sim::{Precision, SimDevice, SimOptions};
use mil::{Builder, DType};
use std::error::Error;
use std::path::Path;
use std::process::ExitCode;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Channels and spatial positions: 128 · 192 fp16 values = 48 KiB, the smallest surface the
/// hardware is known to handle reliably.
const C: usize = 128;
const S: usize = 192;
/// The scalar `k` of `y = conv(x, W) + k·x`.
const K: f32 = 0.5;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut device = best_device();
    println!("device: {}", device.name());
    match std::env::args_os().nth(1) {
        Some(path) => run_file(device.as_mut(), Path::new(&path)),
        None => run_builtin(device.as_mut()),
    }
}

/// The hardware ANE when present and its probes pass; otherwise the simulator.
fn best_device() -> Box<dyn Device> {
    let auto = ane_macos::decide_auto();
    match auto.device {
        Some(dev) => dev,
        None => {
            println!(
                "no usable ANE ({}); using the simulator",
                auto.choice.reason
            );
            Box::new(SimDevice::default())
        }
    }
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift; no dependency needed).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn run_builtin(device: &mut dyn Device) -> Result<()> {
    // 1. The program: typed values, one method per op, shapes checked as we go.
    let w: Vec<f32> = noise(C * C, 1).iter().map(|v| v / C as f32).collect();
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, [1, C, 1, S]);
    let wv = b.weight_data("W", [C, C, 1, 1], "@model_path/weights/w.bin", &w);
    let conv = b.conv("xw", x, wv);
    let k = b.fp16("k", K as f64);
    let kx = b.mul("kx", x, k);
    let y = b.add("y", conv, kx);
    b.output(y);
    let (program, weights) = b.finish_with_weights()?;
    println!("{}", mil::print(&program));

    // 2. Compile: surface sizes come from the declared I/O, in binding order.
    let spec = KernelSpec::new(program, weights)?;
    let kernel = device.compile(&spec)?;

    // 3. Surfaces: one per input and output, sized as the spec says.
    let input = device.new_surface(spec.input_bytes[0])?;
    let output = device.new_surface(spec.output_bytes[0])?;
    let xs = noise(C * S, 2);
    device.write_channels_f32(input, S, 0, &xs)?;

    // 4. Run.
    device.eval(kernel, &[input], &[output])?;

    // 5. The same sum in plain Rust, with the inputs rounded to fp16 as the device sees them.
    let xr: Vec<f32> = xs.iter().map(|&v| ane::fp16::round_f16(v)).collect();
    let wr: Vec<f32> = w.iter().map(|&v| ane::fp16::round_f16(v)).collect();
    let mut want = vec![0f32; C * S];
    for o in 0..C {
        for c in 0..C {
            let wi = wr[o * C + c];
            for s in 0..S {
                want[o * S + s] += wi * xr[c * S + s];
            }
        }
        for s in 0..S {
            want[o * S + s] += K * xr[o * S + s];
        }
    }

    // 6. Read the output in place: the closure sees the surface bytes themselves.
    let worst = compare_in_place(device, output, &want)?;
    println!("y = conv(x, W) + {K}·x over [1, {C}, 1, {S}]: max |device - rust| = {worst:.2e}");
    device.unload(kernel)?;
    device.free_surface(input)?;
    device.free_surface(output)?;
    check(worst, 2e-2)
}

/// Largest absolute difference between an fp16 surface and `want`, decoded in place.
fn compare_in_place(device: &dyn Device, surface: SurfaceId, want: &[f32]) -> Result<f32> {
    let mut worst = 0f32;
    device.with_surface(surface, &mut |bytes| {
        for (pair, &w) in bytes.chunks_exact(2).zip(want) {
            let got = ane::fp16::f16_bits_to_f32(u16::from_le_bytes([pair[0], pair[1]]));
            // NaN never compares greater: count it as infinitely wrong.
            let d = if got.is_nan() {
                f32::INFINITY
            } else {
                (got - w).abs()
            };
            worst = worst.max(d);
        }
    })?;
    Ok(worst)
}

fn check(worst: f32, tolerance: f32) -> Result<()> {
    if worst <= tolerance {
        println!("ok (tolerance {tolerance:.0e})");
        Ok(())
    } else {
        Err(format!("mismatch: max difference {worst:.3e} exceeds {tolerance:.0e}").into())
    }
}

/// Run a MIL program from a file on random inputs; compare against the f32 simulator.
fn run_file(device: &mut dyn Device, path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let program = mil::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let io = declared_io(&program)?;
    if let Some(t) = io
        .inputs
        .iter()
        .chain(&io.outputs)
        .find(|t| t.ty.dtype != DType::Fp16)
    {
        return Err(format!(
            "`{}` is not fp16; this example handles fp16 I/O only",
            t.name
        )
        .into());
    }

    // Weights: every BLOBFILE the program names, read from the file's folder.
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut weights = Vec::new();
    for blob in blob_paths(&program) {
        let file = dir.join(blob.trim_start_matches("@model_path/"));
        let bytes =
            std::fs::read(&file).map_err(|e| format!("weight {blob}: {}: {e}", file.display()))?;
        weights.push((blob, bytes));
    }
    let spec = KernelSpec::new(program, weights)?;
    // Random fp16 inputs, one per declared input, in binding order (sorted MIL names).
    let inputs: Vec<Vec<f32>> = io
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| noise(t.bytes / 2, 10 + i as u64))
        .collect();

    // The reference: the same spec on the simulator in pure f32 (fp16 surfaces, f32 math).
    let mut reference = SimDevice::new(SimOptions {
        precision: Precision::F32,
        ..SimOptions::default()
    });
    let outs = run_spec(&mut reference, &spec, &inputs)?;
    let mut want = Vec::new();
    for (&s, t) in outs.iter().zip(&io.outputs) {
        let mut v = vec![0f32; t.bytes / 2];
        reference.read_channels_f32(s, v.len(), 0, &mut v)?;
        want.push(v);
    }

    // The device under test, read in place.
    let outs = run_spec(device, &spec, &inputs)?;
    let mut worst = 0f32;
    for ((s, t), w) in outs.iter().zip(&io.outputs).zip(&want) {
        let d = compare_in_place(device, *s, w)?;
        println!(
            "{}: {:?}, max |device - f32 sim| = {d:.2e}",
            t.name, t.ty.shape
        );
        worst = worst.max(d);
    }
    check(worst, 5e-2)
}

/// Compile `spec`, write `inputs` (f32, one per input in binding order) and eval once.
/// Returns the output surfaces (binding order).
fn run_spec(
    dev: &mut dyn Device,
    spec: &KernelSpec,
    inputs: &[Vec<f32>],
) -> Result<Vec<SurfaceId>> {
    let kernel = dev.compile(spec)?;
    let mut ins = Vec::new();
    for (&bytes, xs) in spec.input_bytes.iter().zip(inputs) {
        let s = dev.new_surface(bytes)?;
        // Viewed as one channel of all elements: no shape needed to fill it.
        dev.write_channels_f32(s, xs.len(), 0, xs)?;
        ins.push(s);
    }
    let outs = spec
        .output_bytes
        .iter()
        .map(|&b| dev.new_surface(b))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    dev.eval(kernel, &ins, &outs)?;
    Ok(outs)
}

/// The distinct BLOBFILE paths a program's main function reads.
fn blob_paths(program: &mil::Program) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    if let Some(f) = program.main() {
        for st in &f.body {
            for (_, lit) in &st.attrs {
                if let mil::Literal::Blob { blob, .. } = lit {
                    if !paths.contains(&blob.path) {
                        paths.push(blob.path.clone());
                    }
                }
            }
        }
    }
    paths
}
