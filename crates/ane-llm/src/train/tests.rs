//! Every training kernel against the CPU trainer's ops (`cpu::train`), on the f32 simulator
//! (1e-5 relative) and the fp16 simulator (3e-2 relative RMS); and the whole trainer against
//! the CPU trainer over 20 AdamW steps.

use std::collections::HashMap;

use ane_sim::{Precision, SimDevice, SimOptions};
use cpu::train as ct;
use engine::train::{optimizer_step, Batch, OptimState, Optimizer, Params};
use mil::DType;
use model::LlamaConfig;

use super::kernels;
use super::{rope_input, to_channels, to_rows, AneTrainer, TrainGeometry};
use crate::kernels::Kernel;

const T: usize = 16;

fn config() -> LlamaConfig {
    LlamaConfig {
        n_layers: 2,
        dim: 64,
        ffn_dim: 128,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        vocab_size: 96,
        context_length: 32,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
    }
}

/// Deterministic uniform values in `[-scale, scale)`.
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let u = engine::train::params::uniform(seed, 0, i) as f32;
            (2.0 * u - 1.0) * scale
        })
        .collect()
}

/// `max |a − b| / max |b|`.
fn rel_max(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max);
    let den = b.iter().map(|&y| (y as f64).abs()).fold(0.0, f64::max);
    num / den.max(1e-30)
}

/// `‖a − b‖₂ / ‖b‖₂`.
fn rel_rms(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Check every `(name, device, cpu)` pair: f32 within 1e-5 relative (max-norm), fp16 within
/// 3e-2 relative RMS.
fn agree(precision: Precision, kernel: &str, pairs: &[(&str, Vec<f32>, Vec<f32>)]) {
    for (name, dev, cpu) in pairs {
        let (err, tol) = match precision {
            Precision::F32 => (rel_max(dev, cpu), 1e-5),
            Precision::Fp16 => (rel_rms(dev, cpu), 3e-2),
        };
        eprintln!("{kernel} {precision} {name}: relative error {err:.2e}");
        assert!(
            err <= tol,
            "{kernel} ({precision}) {name}: relative error {err:.3e} > {tol:e}"
        );
    }
}

fn geometry(precision: Precision) -> TrainGeometry {
    let io = match precision {
        Precision::F32 => DType::Fp32,
        Precision::Fp16 => DType::Fp16,
    };
    TrainGeometry::new(&config(), T, io).expect("valid geometry")
}

/// Run `k` once on the simulator with inputs by stem (channel-major values); outputs by stem,
/// row-major `[T, C]` for activations.
fn run(k: &Kernel, precision: Precision, inputs: &[(&str, &[f32])]) -> HashMap<String, Vec<f32>> {
    let mut sim = SimDevice::new(SimOptions {
        precision,
        ..SimOptions::default()
    });
    let named: Vec<(String, &[f32])> =
        k.io.inputs
            .iter()
            .map(|d| {
                let stem = &d.name[4..];
                let (_, v) = inputs
                    .iter()
                    .find(|(s, _)| *s == stem)
                    .unwrap_or_else(|| panic!("test gives no input {stem}"));
                (d.name.clone(), *v)
            })
            .collect();
    let refs: Vec<(&str, &[f32])> = named.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let outs = sim
        .run_once(&k.program, k.weights.clone(), &refs)
        .expect("kernel runs on the simulator");
    outs.into_iter()
        .map(|(name, t)| {
            let c = t.shape[1];
            (name[4..].to_string(), to_rows(&t.data, T, c))
        })
        .collect()
}

/// One block's weights and an input, row-major like `cpu::train`.
struct Block {
    an: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    wo: Vec<f32>,
    fnw: Vec<f32>,
    wg: Vec<f32>,
    wu: Vec<f32>,
    wd: Vec<f32>,
}

fn block() -> Block {
    let c = config();
    let (d, kv, h) = (c.dim, c.kv_dim(), c.ffn_dim);
    let ws = 1.0 / (d as f32).sqrt();
    Block {
        an: values(1, d, 0.5).iter().map(|v| 1.0 + v).collect(),
        wq: values(2, d * d, ws),
        wk: values(3, kv * d, ws),
        wv: values(4, kv * d, ws),
        wo: values(5, d * d, ws),
        fnw: values(6, d, 0.5).iter().map(|v| 1.0 + v).collect(),
        wg: values(7, h * d, ws),
        wu: values(8, h * d, ws),
        wd: values(9, d * h, 1.0 / (h as f32).sqrt()),
    }
}

fn shape() -> ct::AttentionShape {
    let c = config();
    ct::AttentionShape {
        seq_len: T,
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
    }
}

fn rope_table() -> ct::RopeTable<f32> {
    ct::RopeTable::new(T, config().head_dim, 0, 10000.0)
}

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// `dx` of `linear` (the weight gradient goes to a scratch buffer).
fn linear_dx(dy: &[f32], x: &[f32], w: &[f32], i: usize, o: usize) -> Vec<f32> {
    let mut dw = vec![0f32; w.len()];
    ct::linear_backward(dy, x, w, i, o, &mut dw)
}

/// The CPU trainer's block forward, op by op: (name, value) for every tap.
fn cpu_forward(w: &Block, x: &[f32]) -> Vec<(&'static str, Vec<f32>)> {
    let c = config();
    let (d, kv, h) = (c.dim, c.kv_dim(), c.ffn_dim);
    let rt = rope_table();
    let (xn1, _) = ct::rms_norm(x, &w.an, 1e-5);
    let q = ct::rope(&ct::linear(&xn1, &w.wq, d, d), &rt);
    let k = ct::rope(&ct::linear(&xn1, &w.wk, d, kv), &rt);
    let v = ct::linear(&xn1, &w.wv, d, kv);
    let (att, _) = ct::attention(&q, &k, &v, shape());
    let hres = add(x, &ct::linear(&att, &w.wo, d, d));
    let (hn, _) = ct::rms_norm(&hres, &w.fnw, 1e-5);
    let g = ct::linear(&hn, &w.wg, d, h);
    let u = ct::linear(&hn, &w.wu, d, h);
    let s = ct::swiglu(&g, &u);
    let out = add(&hres, &ct::linear(&s, &w.wd, h, d));
    vec![
        ("out", out),
        ("xn1", xn1),
        ("q", q),
        ("k", k),
        ("v", v),
        ("att", att),
        ("h", hres),
        ("hn", hn),
        ("g", g),
        ("u", u),
        ("s", s),
    ]
}

fn cm(rows: &[f32], c: usize) -> Vec<f32> {
    to_channels(rows, T, c)
}

fn layer_forward_case(precision: Precision) {
    let g = geometry(precision);
    let c = config();
    let w = block();
    let x = values(10, T * c.dim, 2.0);
    let k = kernels::layer_forward(&g).expect("kernel builds");
    let rope = rope_input(&g, &rope_table());
    let xc = cm(&x, c.dim);
    let out = run(
        &k,
        precision,
        &[
            ("x", &xc),
            ("rope", &rope),
            ("attn_norm", &w.an),
            ("wq", &w.wq),
            ("wk", &w.wk),
            ("wv", &w.wv),
            ("wo", &w.wo),
            ("ffn_norm", &w.fnw),
            ("w_gate", &w.wg),
            ("w_up", &w.wu),
            ("w_down", &w.wd),
        ],
    );
    let pairs: Vec<_> = cpu_forward(&w, &x)
        .into_iter()
        .map(|(n, v)| (n, out[n].clone(), v))
        .collect();
    assert_eq!(pairs.len(), out.len(), "every output is checked");
    agree(precision, "layer_forward", &pairs);
}

fn ffn_backward_case(precision: Precision) {
    let g = geometry(precision);
    let c = config();
    let (d, h) = (c.dim, c.ffn_dim);
    let w = block();
    let taps: HashMap<_, _> = cpu_forward(&w, &values(10, T * d, 2.0))
        .into_iter()
        .collect();
    let dout = values(11, T * d, 1.0);
    // CPU: ds = dout·W_down, SwiGLU backward, dhn = dg·W_gate + du·W_up.
    let ds = linear_dx(&dout, &taps["s"], &w.wd, h, d);
    let (dg, du) = ct::swiglu_backward(&ds, &taps["g"], &taps["u"]);
    let dhn = add(
        &linear_dx(&dg, &taps["hn"], &w.wg, d, h),
        &linear_dx(&du, &taps["hn"], &w.wu, d, h),
    );
    let k = kernels::ffn_backward(&g).expect("kernel builds");
    let out = run(
        &k,
        precision,
        &[
            ("dout", &cm(&dout, d)),
            ("g", &cm(&taps["g"], h)),
            ("u", &cm(&taps["u"], h)),
            ("w_gate", &w.wg),
            ("w_up", &w.wu),
            ("w_down", &w.wd),
        ],
    );
    agree(
        precision,
        "ffn_backward",
        &[
            ("dhn", out["dhn"].clone(), dhn),
            ("dg", out["dg"].clone(), dg),
            ("du", out["du"].clone(), du),
        ],
    );
}

fn attention_backward_case(precision: Precision) {
    let g = geometry(precision);
    let c = config();
    let (d, kv) = (c.dim, c.kv_dim());
    let w = block();
    let taps: HashMap<_, _> = cpu_forward(&w, &values(10, T * d, 2.0))
        .into_iter()
        .collect();
    let dh = values(12, T * d, 1.0);
    // CPU: datt = dh·Wo, then the attention backward.
    let datt = linear_dx(&dh, &taps["att"], &w.wo, d, d);
    let (_, cache) = ct::attention(&taps["q"], &taps["k"], &taps["v"], shape());
    let want = ct::attention_backward(&datt, &taps["q"], &taps["k"], &taps["v"], shape(), &cache);
    let k = kernels::attention_backward(&g).expect("kernel builds");
    let out = run(
        &k,
        precision,
        &[
            ("dh", &cm(&dh, d)),
            ("q", &cm(&taps["q"], d)),
            ("k", &cm(&taps["k"], kv)),
            ("v", &cm(&taps["v"], kv)),
            ("wo", &w.wo),
        ],
    );
    agree(
        precision,
        "attention_backward",
        &[
            ("dq", out["dq"].clone(), want.dq),
            ("dk", out["dk"].clone(), want.dk),
            ("dv", out["dv"].clone(), want.dv),
        ],
    );
}

fn qkv_backward_case(precision: Precision) {
    let g = geometry(precision);
    let c = config();
    let (d, kv) = (c.dim, c.kv_dim());
    let w = block();
    let xn1 = values(13, T * d, 1.0);
    let (dq, dk, dv) = (
        values(14, T * d, 1.0),
        values(15, T * kv, 1.0),
        values(16, T * kv, 1.0),
    );
    // CPU: RoPE backward, then the three projections' dx.
    let rt = rope_table();
    let dq0 = ct::rope_backward(&dq, &rt);
    let dk0 = ct::rope_backward(&dk, &rt);
    let dxn1 = add(
        &add(
            &linear_dx(&dq0, &xn1, &w.wq, d, d),
            &linear_dx(&dk0, &xn1, &w.wk, d, kv),
        ),
        &linear_dx(&dv, &xn1, &w.wv, d, kv),
    );
    let k = kernels::qkv_backward(&g).expect("kernel builds");
    let rope = rope_input(&g, &rt);
    let out = run(
        &k,
        precision,
        &[
            ("dq", &cm(&dq, d)),
            ("dk", &cm(&dk, kv)),
            ("dv", &cm(&dv, kv)),
            ("rope", &rope),
            ("wq", &w.wq),
            ("wk", &w.wk),
            ("wv", &w.wv),
        ],
    );
    agree(
        precision,
        "qkv_backward",
        &[
            ("dxn1", out["dxn1"].clone(), dxn1),
            ("dq0", out["dq0"].clone(), dq0),
            ("dk0", out["dk0"].clone(), dk0),
        ],
    );
}

#[test]
fn layer_forward_matches_cpu_f32() {
    layer_forward_case(Precision::F32);
}

#[test]
fn layer_forward_matches_cpu_fp16() {
    layer_forward_case(Precision::Fp16);
}

#[test]
fn ffn_backward_matches_cpu_f32() {
    ffn_backward_case(Precision::F32);
}

#[test]
fn ffn_backward_matches_cpu_fp16() {
    ffn_backward_case(Precision::Fp16);
}

#[test]
fn attention_backward_matches_cpu_f32() {
    attention_backward_case(Precision::F32);
}

#[test]
fn attention_backward_matches_cpu_fp16() {
    attention_backward_case(Precision::Fp16);
}

#[test]
fn qkv_backward_matches_cpu_f32() {
    qkv_backward_case(Precision::F32);
}

#[test]
fn qkv_backward_matches_cpu_fp16() {
    qkv_backward_case(Precision::Fp16);
}

#[test]
fn every_training_kernel_is_validator_clean() {
    let g = geometry(Precision::Fp16);
    for k in [
        kernels::layer_forward(&g),
        kernels::ffn_backward(&g),
        kernels::attention_backward(&g),
        kernels::qkv_backward(&g),
    ] {
        let k = k.expect("kernel builds");
        let errors = ane::milcheck::errors(&k.program, None);
        assert!(errors.is_empty(), "{}: {errors:?}", k.label);
    }
}

/// `steps` micro-batches of 2 sequences of `T` tokens (deterministic), cycling through 2
/// distinct batches so 20 steps can visibly lower the loss.
fn batches(steps: usize, vocab: usize) -> Vec<Batch> {
    (0..steps as u64)
        .map(|s| s % 2)
        .map(|s| {
            let tok = |i: u64| (engine::train::params::uniform(99, s, i) * vocab as f64) as u32;
            let inputs: Vec<u32> = (0..2 * T as u64).map(tok).collect();
            let targets: Vec<u32> = (1..=2 * T as u64).map(tok).collect();
            Batch {
                batch: 2,
                seq_len: T,
                inputs,
                targets,
            }
        })
        .collect()
}

/// 20 AdamW steps of one backend; the loss of every step, and the backend.
fn train<B: engine::train::TrainBackend>(mut backend: B, steps: &[Batch]) -> (Vec<f64>, B) {
    let c = config();
    let mut p = Params::init(&c, true, 7);
    let opt = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let mut state = OptimState::new(&opt, p.data.len());
    let mut grads = vec![0f32; p.data.len()];
    let mut losses = Vec::new();
    for (i, b) in steps.iter().enumerate() {
        let r = optimizer_step(
            &mut backend,
            &mut p,
            &mut grads,
            &mut state,
            &opt,
            std::slice::from_ref(b),
            i as u64 + 1,
            3e-3,
            1.0,
        )
        .expect("step runs");
        losses.push(r.loss);
    }
    (losses, backend)
}

fn sim_trainer(precision: Precision) -> AneTrainer {
    let dev = SimDevice::new(SimOptions {
        precision,
        ..SimOptions::default()
    });
    let io = match precision {
        Precision::F32 => DType::Fp32,
        Precision::Fp16 => DType::Fp16,
    };
    AneTrainer::new(Box::new(dev), &config(), io, T).expect("trainer builds")
}

#[test]
fn ane_sim_f32_trains_like_the_cpu_with_zero_compiles_per_step() {
    let steps = batches(20, config().vocab_size);
    let (cpu, _) = train(ct::model::CpuTrainer::new(1).expect("pool"), &steps);
    let ane = sim_trainer(Precision::F32);
    let compiles_at_setup = ane.compiles();
    assert_eq!(compiles_at_setup, 4, "four kernels serve every layer");
    let (first, ane) = train(ane, &steps[..1]);
    let after_one = ane.compiles();
    let (ane_losses, ane) = {
        // Continue the same run: re-run all 20 steps from the start on this trainer instance.
        let (l, a) = train(ane, &steps);
        (l, a)
    };
    assert_eq!(after_one, compiles_at_setup);
    assert_eq!(ane.compiles(), after_one, "no compiles after step 1");
    // Dispatches: 4 kernels · 2 layers · 2 sequences per step, 21 steps run.
    assert_eq!(ane.dispatches(), 21 * 4 * 2 * 2);
    assert!((first[0] - cpu[0]).abs() <= 1e-4 * cpu[0]);
    for (i, (a, c)) in ane_losses.iter().zip(&cpu).enumerate() {
        let rel = (a - c).abs() / c.abs();
        eprintln!(
            "step {:2}: cpu {c:.6} ane-sim f32 {a:.6} rel {rel:.2e}",
            i + 1
        );
        assert!(rel <= 1e-4, "step {}: {a} vs cpu {c} ({rel:.2e})", i + 1);
    }
    assert!(
        cpu[19] < cpu[0] - 0.1,
        "the run learns: {} → {}",
        cpu[0],
        cpu[19]
    );
}

#[test]
fn ane_sim_fp16_follows_the_cpu_loss_curve() {
    let steps = batches(20, config().vocab_size);
    let (cpu, _) = train(ct::model::CpuTrainer::new(1).expect("pool"), &steps);
    let (ane, _) = train(sim_trainer(Precision::Fp16), &steps);
    for (i, (a, c)) in ane.iter().zip(&cpu).enumerate() {
        let rel = (a - c).abs() / c.abs();
        eprintln!(
            "step {:2}: cpu {c:.6} ane-sim fp16 {a:.6} rel {rel:.2e}",
            i + 1
        );
        assert!(rel <= 2e-2, "step {}: {a} vs cpu {c} ({rel:.2e})", i + 1);
    }
    assert!(
        ane[19] < ane[0] - 0.1,
        "fp16 run learns: {} → {}",
        ane[0],
        ane[19]
    );
}

/// Gradients of one batch: (the CPU trainer's f32, the fp16 simulator's) at `scale`.
fn grads_at_scale(scale: f32) -> (Vec<f32>, Vec<f32>) {
    use engine::train::TrainBackend;
    let p = Params::init(&config(), true, 7);
    let b = &batches(1, config().vocab_size)[0];
    let mut cpu = vec![0f32; p.data.len()];
    let mut fp16 = vec![0f32; p.data.len()];
    ct::model::CpuTrainer::new(1)
        .expect("pool")
        .accumulate(&p, b, scale, &mut cpu)
        .expect("cpu");
    sim_trainer(Precision::Fp16)
        .accumulate(&p, b, scale, &mut fp16)
        .expect("fp16 sim");
    (cpu, fp16)
}

/// Why fp16 devices need loss scaling: gradients of the size a mean over ~10⁶ tokens gives
/// (here: the step's `1/N` times 2^-20) underflow in fp16 — flushed to zero or rounded to a
/// few bits — while the same gradient computed at 2^20 times the scale and unscaled on the
/// host (exact: a power of two) is within the fp16 tolerance of the CPU's f32 gradient.
#[test]
fn fp16_gradients_underflow_without_loss_scaling_and_not_with_it() {
    let tiny = 2f32.powi(-20) / (2 * T) as f32;
    let (cpu, unscaled) = grads_at_scale(tiny);
    let (_, mut scaled) = grads_at_scale(tiny * 2f32.powi(20));
    scaled.iter_mut().for_each(|g| *g *= 2f32.powi(-20));
    let (bad, good) = (rel_rms(&unscaled, &cpu), rel_rms(&scaled, &cpu));
    eprintln!("fp16 gradient vs cpu: unscaled {bad:.3e}, loss scale 2^20 {good:.3e}");
    assert!(
        bad > 0.2,
        "unscaled fp16 gradients should underflow ({bad:.3e})"
    );
    assert!(good <= 3e-2, "scaled fp16 gradients ({good:.3e})");
}

/// A loss scale too large for fp16 makes the device's gradients overflow: with dynamic scaling
/// those steps are skipped (weights and optimizer state bit-for-bit untouched) and the scale
/// halves each time until the gradients fit, after which steps apply. The same scale on the
/// f32 simulator overflows nothing (it is fp16's range, not a bug).
#[test]
fn overflowing_fp16_steps_are_skipped_and_the_scale_backs_off() {
    use engine::train::{optimizer_step_scaled, LossScaler, LossScaling};
    let steps = batches(30, config().vocab_size);
    let opt = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let init = 2f32.powi(40);
    let mode = LossScaling::Dynamic {
        init,
        growth_interval: 1000,
    };
    for precision in [Precision::Fp16, Precision::F32] {
        let mut backend = sim_trainer(precision);
        let mut p = Params::init(&config(), true, 7);
        let mut state = OptimState::new(&opt, p.data.len());
        let mut grads = vec![0f32; p.data.len()];
        let mut scaler = LossScaler::new(mode);
        let mut skipped = 0;
        let mut losses = Vec::new();
        for (i, b) in steps.iter().enumerate() {
            let (before, m_before) = (p.data.clone(), state.m.clone());
            let r = optimizer_step_scaled(
                &mut backend,
                &mut p,
                &mut grads,
                &mut state,
                &opt,
                std::slice::from_ref(b),
                i as u64 + 1,
                3e-3,
                1.0,
                &mut scaler,
            )
            .expect("a step with overflowing gradients is skipped, not an error");
            assert!(r.loss.is_finite());
            if r.skipped {
                skipped += 1;
                assert!(
                    p.data == before && state.m == m_before,
                    "skipped step applied"
                );
                assert_eq!(scaler.scale, r.loss_scale / 2.0, "the scale halves");
            } else {
                assert!(p.data != before, "an applied step changes the weights");
                losses.push(r.loss);
            }
        }
        eprintln!(
            "{precision}: {skipped} skipped steps, scale now 2^{}",
            scaler.scale.log2()
        );
        match precision {
            Precision::Fp16 => {
                assert!(skipped >= 10, "2^40 overflows fp16 ({skipped} skipped)");
                assert!(skipped < 30, "the scale backs off until steps apply");
                let n = losses.len();
                assert!(losses[n - 1] < losses[0], "the applied steps learn");
            }
            Precision::F32 => assert_eq!(skipped, 0, "f32 holds 2^40-scaled gradients"),
        }
    }
}

/// A simulator that binds the last two inputs of every eval swapped: for the training kernels
/// two weights of equal size (`w_up` ↔ `w_down`, `[H, D]` and `[D, H]`), a silent miswiring.
struct SwappedWeights(SimDevice);

impl ane::DeviceLayer for SwappedWeights {
    fn inner(&self) -> &dyn ane::Device {
        &self.0
    }
    fn inner_mut(&mut self) -> &mut dyn ane::Device {
        &mut self.0
    }
    fn layer_eval(
        &mut self,
        kernel: ane::KernelId,
        inputs: &[ane::SurfaceId],
        outputs: &[ane::SurfaceId],
    ) -> Result<(), ane::DeviceError> {
        let mut ins = inputs.to_vec();
        let n = ins.len();
        ins.swap(n - 2, n - 1);
        ane::Device::eval(&mut self.0, kernel, &ins, outputs)
    }
}

/// The training kernels are self-checked against the f32 simulator when compiled: a device
/// that swaps two same-sized weight surfaces computes plausible but wrong numbers, and the
/// trainer refuses to start with a message naming the kernel and the way out; the fp16
/// simulator (a correct device with ANE-like rounding) passes.
#[test]
fn a_miswired_device_fails_the_training_self_check() {
    let dev = SwappedWeights(SimDevice::new(SimOptions::default()));
    let err = AneTrainer::new(Box::new(dev), &config(), DType::Fp16, T)
        .err()
        .expect("a miswired device must not train");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(matches!(err, super::AneTrainError::SelfCheckFailed { .. }));
    assert!(
        text.contains("self-check") && text.contains("--backend cpu"),
        "{text}"
    );
    assert!(
        text.contains("train layer forward"),
        "names the kernel: {text}"
    );
    let _ok = sim_trainer(Precision::Fp16);
}

/// The static prediction of a step equals what the simulator's cost model charges when the
/// step actually runs: the same dispatches (4 per layer per sequence) and the same predicted
/// ANE milliseconds.
#[test]
fn predicted_step_equals_the_simulators_accounting_of_a_real_step() {
    use engine::train::TrainBackend;
    let c = config();
    let prediction = super::predict_step(&c, T, 2, ane::cost::ChipProfile::M4).expect("predicts");
    assert_eq!(prediction.dispatches, (4 * c.n_layers * 2) as u64);
    assert!(prediction.kernels.iter().all(|k| k.dispatches == 4));
    let mut ane = sim_trainer(Precision::Fp16);
    let before = ane.device().stats();
    let p = Params::init(&c, true, 7);
    let mut grads = vec![0f32; p.data.len()];
    ane.accumulate(&p, &batches(1, c.vocab_size)[0], 1e-2, &mut grads)
        .expect("step");
    let after = ane.device().stats();
    assert_eq!(after.evals - before.evals, prediction.dispatches);
    let charged = after.predicted_ane_ms - before.predicted_ane_ms;
    eprintln!(
        "predicted {:.4} ms, charged {charged:.4} ms",
        prediction.ane_ms
    );
    assert!((charged - prediction.ane_ms).abs() <= 1e-9 * charged.max(1.0));
}

/// Lane sharing in the simulator is exact for the training kernels too: with some positions
/// (lanes) identical in every lane-carrying input, each kernel's outputs are bitwise those of
/// computing every lane, and at least one kernel does compute fewer lanes.
#[test]
fn training_kernels_share_identical_lanes_exactly() {
    let g = geometry(Precision::Fp16);
    let kernels = [
        kernels::layer_forward(&g),
        kernels::ffn_backward(&g),
        kernels::attention_backward(&g),
        kernels::qkv_backward(&g),
    ];
    let mut shared_somewhere = false;
    for (ki, k) in kernels.into_iter().enumerate() {
        let k = k.expect("generate");
        let program = ane_sim::compile_program(&k.spec(), Precision::Fp16).expect("compile");
        let lanes = *program.inputs()[0].shape.last().expect("rank ≥ 1");
        let inputs: Vec<ane_sim::Tensor> = program
            .inputs()
            .iter()
            .enumerate()
            .map(|(i, io)| {
                let n: usize = io.shape.iter().product();
                let mut v = values(900 + 10 * ki as u64 + i as u64, n, 0.5);
                if io.shape.last() == Some(&lanes) {
                    // Positions 3, 7 and 11 repeat position 1 in every lane-carrying input.
                    for row in v.chunks_exact_mut(lanes) {
                        for t in [3, 7, 11] {
                            row[t] = row[1];
                        }
                    }
                }
                ane_sim::Tensor::new(io.shape.clone(), v)
            })
            .collect();
        let mut every = program.clone();
        every.set_lane_sharing(false);
        let shared = program.shared_lanes(&inputs);
        shared_somewhere |= shared.is_some();
        let got = program.run(inputs.clone()).expect("shared run");
        let want = every.run(inputs).expect("every-lane run");
        for (o, (a, b)) in got.iter().zip(&want).enumerate() {
            let same = a
                .data
                .iter()
                .zip(&b.data)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same && a.shape == b.shape, "kernel {ki} output {o} differs");
        }
        eprintln!("training kernel {ki}: {lanes} lanes, computed {shared:?}");
    }
    assert!(shared_somewhere, "no training kernel shared lanes");
}
