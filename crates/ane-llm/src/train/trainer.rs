//! [`AneTrainer`]: `engine::train::TrainBackend` with the transformer blocks on an ANE-shaped
//! device and everything else on the CPU (see the split in [`super`]).

use std::collections::HashMap;

use ane::device::{Device, DeviceError, KernelId, SurfaceId};
use cpu::train::model::{loss_and_grad_with, BlockCtx, BlockRunner};
use cpu::train::{linear_backward_weight, rms_norm, rms_norm_backward, RopeTable};
use engine::train::{Batch, LayerRanges, Params, StepError, TrainBackend};
use mil::DType;
use model::LlamaConfig;

use super::{kernels, rope_input, to_channels, to_rows, TrainGeometry};
use crate::kernels::{Kernel, KernelError};

/// Errors of building the ANE trainer or running its kernels.
#[derive(Debug, thiserror::Error)]
pub enum AneTrainError {
    #[error("training kernel: {0}")]
    Kernel(#[from] KernelError),
    #[error("device: {0}")]
    Device(#[from] DeviceError),
    #[error(
        "training kernel {kernel} failed its self-check against the f32 simulator: {detail} \
         (the device computes something else; train with --backend cpu)"
    )]
    SelfCheckFailed { kernel: String, detail: String },
}

impl From<AneTrainError> for StepError {
    fn from(e: AneTrainError) -> Self {
        StepError::Device(e.to_string())
    }
}

/// The weight inputs of the kernels, by input stem (equal to the `LayerRanges` field names).
const WEIGHTS: [&str; 9] = [
    "attn_norm",
    "wq",
    "wk",
    "wv",
    "wo",
    "ffn_norm",
    "w_gate",
    "w_up",
    "w_down",
];

fn weight_range<'a>(l: &'a LayerRanges, stem: &str) -> Option<&'a std::ops::Range<usize>> {
    Some(match stem {
        "attn_norm" => &l.attn_norm,
        "wq" => &l.wq,
        "wk" => &l.wk,
        "wv" => &l.wv,
        "wo" => &l.wo,
        "ffn_norm" => &l.ffn_norm,
        "w_gate" => &l.w_gate,
        "w_up" => &l.w_up,
        "w_down" => &l.w_down,
        _ => return None,
    })
}

/// The stem of an I/O name `i03_wq` → `wq`.
fn stem(name: &str) -> &str {
    name.get(4..).unwrap_or(name)
}

/// Where an input surface comes from at eval time.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// The kernel's own surface (or one shared with another kernel).
    Own(SurfaceId),
    /// The weight surface of the layer being run, by index into [`WEIGHTS`].
    Weight(usize),
}

/// One compiled kernel and its surfaces in binding order.
#[derive(Debug)]
struct Compiled {
    id: KernelId,
    inputs: Vec<(String, Slot)>,
    outputs: Vec<(String, SurfaceId)>,
}

impl Compiled {
    fn input(&self, stem: &str) -> SurfaceId {
        match self.inputs.iter().find(|(s, _)| s == stem) {
            Some((_, Slot::Own(id))) => *id,
            _ => panic!("training kernel has no activation input {stem}"),
        }
    }

    fn output(&self, stem: &str) -> SurfaceId {
        match self.outputs.iter().find(|(s, _)| s == stem) {
            Some((_, id)) => *id,
            None => panic!("training kernel has no output {stem}"),
        }
    }
}

/// Probe inputs of a training kernel in binding order: weights uniform in ±1/√fan_in (the
/// scale of a trained layer, so fp16 stays in range), everything else in ±1.
pub fn probe_inputs(k: &Kernel) -> Vec<Vec<f32>> {
    k.io.inputs
        .iter()
        .enumerate()
        .map(|(i, io)| {
            let n: usize = io.shape.iter().product();
            let s = stem(&io.name);
            let amp = if s.starts_with('w') {
                1.0 / (*io.shape.last().unwrap_or(&1) as f32).sqrt()
            } else {
                1.0
            };
            (0..n as u64)
                .map(|j| (2.0 * engine::train::params::uniform(31, i as u64, j) as f32 - 1.0) * amp)
                .collect()
        })
        .collect()
}

/// Run kernel `id` (compiled from `k`) once on probe inputs, on `dev` and on a fresh f32
/// simulator, and compare every output within [`crate::backend::SELF_CHECK_TOLERANCE`]
/// relative RMS — the inference kernels' load-time check, for the training kernels.
pub fn self_check(dev: &mut dyn Device, id: KernelId, k: &Kernel) -> Result<(), AneTrainError> {
    use crate::backend::{compare, eval_once, SELF_CHECK_TOLERANCE};
    let fail = |detail: String| AneTrainError::SelfCheckFailed {
        kernel: k.label.clone(),
        detail,
    };
    let inputs = probe_inputs(k);
    let got = eval_once(dev, id, k, &inputs).map_err(|e| fail(format!("probe eval: {e}")))?;
    let mut reference = ane_sim::SimDevice::new(ane_sim::SimOptions {
        precision: ane_sim::Precision::F32,
        ..ane_sim::SimOptions::default()
    });
    let ref_id = reference.compile(&k.spec())?;
    let want = eval_once(&mut reference, ref_id, k, &inputs)?;
    for ((io, a), b) in k.io.outputs.iter().zip(&got).zip(&want) {
        let (rel, max_diff) = compare(a, b);
        if rel.is_nan() || rel > SELF_CHECK_TOLERANCE {
            return Err(fail(format!(
                "output `{}` differs by {rel:.4} relative RMS (max |diff| {max_diff:.3e}; \
                 tolerance {SELF_CHECK_TOLERANCE})",
                io.name
            )));
        }
    }
    Ok(())
}

/// Compile `k` and self-check it; activation inputs get fresh surfaces unless `shared` names
/// one for their stem.
fn compile(
    dev: &mut dyn Device,
    k: &Kernel,
    shared: &[(&str, SurfaceId)],
) -> Result<Compiled, AneTrainError> {
    let id = dev.compile(&k.spec())?;
    if let Err(e) = self_check(dev, id, k) {
        let _ = dev.unload(id);
        return Err(e);
    }
    let mut inputs = Vec::new();
    for desc in &k.io.inputs {
        let s = stem(&desc.name).to_string();
        let slot = if let Some(w) = WEIGHTS.iter().position(|&w| w == s) {
            Slot::Weight(w)
        } else if let Some(&(_, id)) = shared.iter().find(|(n, _)| *n == s) {
            Slot::Own(id)
        } else {
            Slot::Own(dev.new_surface(desc.bytes())?)
        };
        inputs.push((s, slot));
    }
    let mut outputs = Vec::new();
    for desc in &k.io.outputs {
        outputs.push((stem(&desc.name).to_string(), dev.new_surface(desc.bytes())?));
    }
    Ok(Compiled {
        id,
        inputs,
        outputs,
    })
}

/// The four compiled training kernels of one sequence length and their surfaces.
#[derive(Debug)]
pub struct TrainKernels {
    pub geometry: TrainGeometry,
    fwd: Compiled,
    ffn: Compiled,
    attn: Compiled,
    qkv: Compiled,
}

impl TrainKernels {
    /// Generate, compile and self-check the kernels for `g` (4 compiles) and write the RoPE
    /// table.
    fn new(dev: &mut dyn Device, g: TrainGeometry, rope_theta: f64) -> Result<Self, AneTrainError> {
        let rope = dev.new_surface(2 * g.dim * g.seq * g.io.size_bytes().unwrap_or(2))?;
        let table = RopeTable::<f32>::new(g.seq, g.head_dim, 0, rope_theta);
        write(dev, rope, g.io, &rope_input(&g, &table))?;
        let fwd = compile(dev, &kernels::layer_forward(&g)?, &[("rope", rope)])?;
        let ffn = compile(dev, &kernels::ffn_backward(&g)?, &[])?;
        let attn = compile(dev, &kernels::attention_backward(&g)?, &[])?;
        let handoff = [
            ("dq", attn.output("dq")),
            ("dk", attn.output("dk")),
            ("dv", attn.output("dv")),
            ("rope", rope),
        ];
        let qkv = compile(dev, &kernels::qkv_backward(&g)?, &handoff)?;
        Ok(Self {
            geometry: g,
            fwd,
            ffn,
            attn,
            qkv,
        })
    }
}

/// Write f32 `data` at the start of a surface of element type `io`.
fn write(dev: &mut dyn Device, s: SurfaceId, io: DType, data: &[f32]) -> Result<(), DeviceError> {
    match io {
        DType::Fp32 => dev.write_f32_raw(s, 0, data),
        _ => dev.write_channels_f32(s, 1, 0, data),
    }
}

/// Read `n` f32 values from the start of a surface of element type `io`.
fn read(dev: &dyn Device, s: SurfaceId, io: DType, n: usize) -> Result<Vec<f32>, DeviceError> {
    let mut out = vec![0f32; n];
    match io {
        DType::Fp32 => dev.read_f32_raw(s, 0, &mut out)?,
        _ => dev.read_channels_f32(s, 1, 0, &mut out)?,
    }
    Ok(out)
}

/// What one block's backward needs from its forward. Row-major `[B·S, C]` for the host's
/// GEMMs and norms, channel-major `[C, S]` per sequence for what goes back into surfaces.
struct Tape {
    x: Vec<f32>,
    xn1: Vec<f32>,
    att: Vec<f32>,
    h: Vec<f32>,
    hn: Vec<f32>,
    s: Vec<f32>,
    q: Vec<Vec<f32>>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    g: Vec<Vec<f32>>,
    u: Vec<Vec<f32>>,
}

/// The ANE training backend: four kernels compiled once per sequence length, one set of weight
/// surfaces per layer rewritten from `Params` before every pass.
pub struct AneTrainer {
    dev: Box<dyn Device>,
    config: LlamaConfig,
    io: DType,
    sets: HashMap<usize, TrainKernels>,
    /// Per layer, one surface per entry of [`WEIGHTS`].
    layer_weights: Vec<Vec<SurfaceId>>,
    tapes: Vec<Option<Tape>>,
    dispatches: u64,
}

impl AneTrainer {
    /// A trainer for `config` on `dev` with `io` surfaces; compiles the kernels for sequences of
    /// `seq_len` tokens now (other lengths compile on first use).
    pub fn new(
        mut dev: Box<dyn Device>,
        config: &LlamaConfig,
        io: DType,
        seq_len: usize,
    ) -> Result<Self, AneTrainError> {
        let g = TrainGeometry::new(config, seq_len, io)?;
        let (d, kv, h) = (g.dim, g.kv_dim(), g.ffn_dim);
        let elem = io.size_bytes().unwrap_or(2);
        let sizes = [d, d * d, kv * d, kv * d, d * d, d, h * d, h * d, d * h];
        let mut layer_weights = Vec::with_capacity(config.n_layers);
        for _ in 0..config.n_layers {
            let mut surfaces = Vec::with_capacity(WEIGHTS.len());
            for n in sizes {
                surfaces.push(dev.new_surface(n * elem)?);
            }
            layer_weights.push(surfaces);
        }
        let set = TrainKernels::new(dev.as_mut(), g, config.rope_theta as f64)?;
        let mut sets = HashMap::new();
        sets.insert(seq_len, set);
        Ok(Self {
            dev,
            config: config.clone(),
            io,
            sets,
            layer_weights,
            tapes: Vec::new(),
            dispatches: 0,
        })
    }

    /// Compiles made by the device so far (cumulative).
    pub fn compiles(&self) -> u64 {
        self.dev.stats().compiles
    }

    /// Kernel evaluations made so far (cumulative).
    pub fn dispatches(&self) -> u64 {
        self.dispatches
    }

    /// The device (for its stats).
    pub fn device(&self) -> &dyn Device {
        self.dev.as_ref()
    }

    /// Every layer's weight surfaces from `p` (the "weight update is a surface write").
    fn write_weights(&mut self, p: &Params) -> Result<(), AneTrainError> {
        for (l, surfaces) in p.layout.layers.iter().zip(&self.layer_weights) {
            for (stem, &s) in WEIGHTS.iter().zip(surfaces) {
                let r = weight_range(l, stem).expect("every WEIGHTS entry has a range");
                write(self.dev.as_mut(), s, self.io, p.slice(r))?;
            }
        }
        Ok(())
    }

    /// Make sure the kernels for `seq` exist.
    fn ensure_kernels(&mut self, seq: usize) -> Result<(), AneTrainError> {
        if !self.sets.contains_key(&seq) {
            let g = TrainGeometry::new(&self.config, seq, self.io)?;
            let set = TrainKernels::new(self.dev.as_mut(), g, self.config.rope_theta as f64)?;
            self.sets.insert(seq, set);
        }
        Ok(())
    }

    fn run(
        &mut self,
        p: &Params,
        batch: &Batch,
        grad: Option<(f32, &mut [f32])>,
    ) -> Result<f64, StepError> {
        self.ensure_kernels(batch.seq_len)?;
        self.write_weights(p)?;
        let mut runner = Runner {
            dev: self.dev.as_mut(),
            k: &self.sets[&batch.seq_len],
            io: self.io,
            layer_weights: &self.layer_weights,
            tapes: &mut self.tapes,
            dispatches: &mut self.dispatches,
        };
        loss_and_grad_with(p, batch, grad, &mut runner)
    }
}

impl TrainBackend for AneTrainer {
    fn name(&self) -> String {
        format!("ane ({})", self.dev.name())
    }

    fn accumulate(
        &mut self,
        params: &Params,
        batch: &Batch,
        scale: f32,
        grads: &mut [f32],
    ) -> Result<f64, StepError> {
        assert_eq!(
            grads.len(),
            params.data.len(),
            "gradient buffer does not match the parameters"
        );
        self.run(params, batch, Some((scale, grads)))
    }

    fn loss(&mut self, params: &Params, batch: &Batch) -> Result<f64, StepError> {
        self.run(params, batch, None)
    }

    fn device_counters(&self) -> Option<engine::train::DeviceCounters> {
        Some(engine::train::DeviceCounters {
            compiles: self.compiles(),
            dispatches: self.dispatches,
        })
    }
}

/// The blocks of one pass on the device.
struct Runner<'a> {
    dev: &'a mut dyn Device,
    k: &'a TrainKernels,
    io: DType,
    layer_weights: &'a [Vec<SurfaceId>],
    tapes: &'a mut Vec<Option<Tape>>,
    dispatches: &'a mut u64,
}

impl Runner<'_> {
    /// Evaluate `c` with layer `layer`'s weights bound.
    fn eval(&mut self, c: &Compiled, layer: usize) -> Result<(), AneTrainError> {
        let inputs: Vec<SurfaceId> = c
            .inputs
            .iter()
            .map(|(_, slot)| match *slot {
                Slot::Own(id) => id,
                Slot::Weight(w) => self.layer_weights[layer][w],
            })
            .collect();
        let outputs: Vec<SurfaceId> = c.outputs.iter().map(|(_, id)| *id).collect();
        self.dev.eval(c.id, &inputs, &outputs)?;
        *self.dispatches += 1;
        Ok(())
    }

    fn put(&mut self, s: SurfaceId, data: &[f32]) -> Result<(), AneTrainError> {
        Ok(write(self.dev, s, self.io, data)?)
    }

    /// Channel-major `[c, T]` contents of output `s`.
    fn get(&self, s: SurfaceId, c: usize) -> Result<Vec<f32>, AneTrainError> {
        Ok(read(self.dev, s, self.io, c * self.k.geometry.seq)?)
    }

    /// Row-major `[T, c]` contents of output `s`.
    fn get_rows(&self, s: SurfaceId, c: usize) -> Result<Vec<f32>, AneTrainError> {
        let t = self.k.geometry.seq;
        Ok(to_rows(&self.get(s, c)?, t, c))
    }

    fn forward_impl(
        &mut self,
        layer: usize,
        x: Vec<f32>,
        n_seqs: usize,
        keep: bool,
    ) -> Result<Vec<f32>, AneTrainError> {
        let k = self.k;
        let g = &k.geometry;
        let (d, kv, h, t) = (g.dim, g.kv_dim(), g.ffn_dim, g.seq);
        assert_eq!(x.len(), n_seqs * t * d, "block input is not [B·S, D]");
        let mut out = Vec::with_capacity(x.len());
        let mut tape = Tape {
            x: Vec::new(),
            xn1: Vec::new(),
            att: Vec::new(),
            h: Vec::new(),
            hn: Vec::new(),
            s: Vec::new(),
            q: Vec::new(),
            k: Vec::new(),
            v: Vec::new(),
            g: Vec::new(),
            u: Vec::new(),
        };
        for xb in x.chunks_exact(t * d) {
            self.put(k.fwd.input("x"), &to_channels(xb, t, d))?;
            self.eval(&k.fwd, layer)?;
            out.extend(self.get_rows(k.fwd.output("out"), d)?);
            if keep {
                tape.xn1.extend(self.get_rows(k.fwd.output("xn1"), d)?);
                tape.att.extend(self.get_rows(k.fwd.output("att"), d)?);
                tape.h.extend(self.get_rows(k.fwd.output("h"), d)?);
                tape.hn.extend(self.get_rows(k.fwd.output("hn"), d)?);
                tape.s.extend(self.get_rows(k.fwd.output("s"), h)?);
                tape.q.push(self.get(k.fwd.output("q"), d)?);
                tape.k.push(self.get(k.fwd.output("k"), kv)?);
                tape.v.push(self.get(k.fwd.output("v"), kv)?);
                tape.g.push(self.get(k.fwd.output("g"), h)?);
                tape.u.push(self.get(k.fwd.output("u"), h)?);
            }
        }
        if keep {
            tape.x = x;
            self.tapes.resize_with(self.layer_weights.len(), || None);
            self.tapes[layer] = Some(tape);
        }
        Ok(out)
    }

    fn backward_impl(
        &mut self,
        p: &Params,
        layer: usize,
        dout: Vec<f32>,
        grads: &mut [f32],
    ) -> Result<Vec<f32>, AneTrainError> {
        let k = self.k;
        let g = &k.geometry;
        let (d, kv, h, t) = (g.dim, g.kv_dim(), g.ffn_dim, g.seq);
        let eps = p.layout.config.rms_eps as f64;
        let l = &p.layout.layers[layer];
        let tape = self
            .tapes
            .get_mut(layer)
            .and_then(Option::take)
            .expect("block backward without its forward tape");
        // FFN: dx through W_down, SwiGLU, W_gate / W_up on the device.
        let (mut dhn, mut dg, mut du) = (Vec::new(), Vec::new(), Vec::new());
        for (b, db) in dout.chunks_exact(t * d).enumerate() {
            self.put(k.ffn.input("dout"), &to_channels(db, t, d))?;
            self.put(k.ffn.input("g"), &tape.g[b])?;
            self.put(k.ffn.input("u"), &tape.u[b])?;
            self.eval(&k.ffn, layer)?;
            dhn.extend(self.get_rows(k.ffn.output("dhn"), d)?);
            dg.extend(self.get_rows(k.ffn.output("dg"), h)?);
            du.extend(self.get_rows(k.ffn.output("du"), h)?);
        }
        linear_backward_weight(&dout, &tape.s, h, d, &mut grads[l.w_down.clone()]);
        linear_backward_weight(&dg, &tape.hn, d, h, &mut grads[l.w_gate.clone()]);
        linear_backward_weight(&du, &tape.hn, d, h, &mut grads[l.w_up.clone()]);
        let w2 = p.slice(&l.ffn_norm);
        let (_, c2) = rms_norm(&tape.h, w2, eps);
        let mut dh = rms_norm_backward(&dhn, &tape.h, w2, &c2, &mut grads[l.ffn_norm.clone()]);
        add_into(&mut dh, &dout);
        linear_backward_weight(&dh, &tape.att, d, d, &mut grads[l.wo.clone()]);
        // Attention and QKV: dx through Wo, attention, RoPE and Wq/Wk/Wv on the device.
        let (mut dxn1, mut dq0, mut dk0, mut dv) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (b, db) in dh.chunks_exact(t * d).enumerate() {
            self.put(k.attn.input("dh"), &to_channels(db, t, d))?;
            self.put(k.attn.input("q"), &tape.q[b])?;
            self.put(k.attn.input("k"), &tape.k[b])?;
            self.put(k.attn.input("v"), &tape.v[b])?;
            self.eval(&k.attn, layer)?;
            self.eval(&k.qkv, layer)?;
            dxn1.extend(self.get_rows(k.qkv.output("dxn1"), d)?);
            dq0.extend(self.get_rows(k.qkv.output("dq0"), d)?);
            dk0.extend(self.get_rows(k.qkv.output("dk0"), kv)?);
            dv.extend(self.get_rows(k.attn.output("dv"), kv)?);
        }
        linear_backward_weight(&dq0, &tape.xn1, d, d, &mut grads[l.wq.clone()]);
        linear_backward_weight(&dk0, &tape.xn1, d, kv, &mut grads[l.wk.clone()]);
        linear_backward_weight(&dv, &tape.xn1, d, kv, &mut grads[l.wv.clone()]);
        let w1 = p.slice(&l.attn_norm);
        let (_, c1) = rms_norm(&tape.x, w1, eps);
        let mut dx = rms_norm_backward(&dxn1, &tape.x, w1, &c1, &mut grads[l.attn_norm.clone()]);
        add_into(&mut dx, &dh);
        Ok(dx)
    }
}

impl BlockRunner for Runner<'_> {
    fn forward(
        &mut self,
        _p: &Params,
        layer: usize,
        x: Vec<f32>,
        ctx: &BlockCtx<'_>,
        keep: bool,
    ) -> Result<Vec<f32>, StepError> {
        Ok(self.forward_impl(layer, x, ctx.n_seqs, keep)?)
    }

    fn backward(
        &mut self,
        p: &Params,
        layer: usize,
        dout: Vec<f32>,
        _ctx: &BlockCtx<'_>,
        grads: &mut [f32],
    ) -> Result<Vec<f32>, StepError> {
        Ok(self.backward_impl(p, layer, dout, grads)?)
    }
}

fn add_into(acc: &mut [f32], x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}
