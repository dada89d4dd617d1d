//! [`AneBackend`]: a Llama-family model on an ANE-shaped [`Device`] (the simulator or the
//! hardware), implementing [`engine::Backend`].
//!
//! At creation every kernel is generated and compiled once — `ceil(n_layers / N)` fused
//! N-layer kernels and the head — and each is self-checked against the simulator in f32 mode
//! on a probe input. Surfaces live for the backend's lifetime: the residual stream ping-pongs
//! between two `[D, L]` surfaces, the position input is shared by every layer kernel, and each
//! layer owns a K and a V cache surface `[KV, S]`. Per dispatch of T ≤ L tokens (lane t holds
//! position `pos + t`): write the embeddings and the position input, run the layer kernels in
//! order (after each, the host copies the new K/V rows into cache slots `pos..pos+T`), then the
//! head, whose logits and normed hidden states are read back for the last token (prefill) or
//! every token (`decode`, `forward_all`).
//!
//! A verify pass of speculative decoding ([`Backend::decode`]) is such a dispatch with k ≤ L
//! lanes: the same kernels and the same number of dispatches as a one-token step, each lane
//! bitwise the one-token step at its position (the kernels never mix lanes).
//!
//! The usable context is the cache: [`Backend::config`] reports `context_length = S`, so the
//! generation loop stops with `ContextFull` there instead of failing.

use engine::{Backend, BackendError, BackendStats};
use mil::DType;
use model::{LlamaConfig, LlamaWeights, Tensor};

use crate::kernels::head::head;
use crate::kernels::host::{position_input, read_lane, scatter_rows};
use crate::kernels::layers::{fused_layers, LayerF32};
use crate::kernels::{Geometry, IoDesc, Kernel, KernelError};
use ane::device::{Device, DeviceError, KernelId, SurfaceId};
use ane::surface;
use ane_sim::{Precision, SimDevice, SimOptions};

/// Relative RMS difference above which a self-check fails (fp16 rounding of a few fused layers
/// stays well below it; a mis-bound surface does not).
pub const SELF_CHECK_TOLERANCE: f32 = 0.03;

/// Options of the ANE backend.
#[derive(Debug, Clone, PartialEq)]
pub struct AneOptions {
    /// KV-cache slots (a power of two ≤ the context length); `None`: 512, or the largest
    /// power of two within the context length.
    pub max_seq: Option<usize>,
    /// Transformer blocks fused into one kernel (one dispatch).
    pub layers_per_kernel: usize,
    /// Element type of every I/O surface; `None`: fp16 (the ANE's native type).
    pub io: Option<DType>,
    /// Run every compiled kernel once on a probe and compare with the f32 simulator.
    pub self_check: bool,
    /// Lanes per dispatch; `None`: the minimum-surface-size rule ([`crate::kernels::lanes_for`]).
    /// Small test models override it.
    pub lanes: Option<usize>,
}

impl Default for AneOptions {
    fn default() -> Self {
        Self {
            max_seq: None,
            layers_per_kernel: 3,
            io: None,
            self_check: true,
            lanes: None,
        }
    }
}

/// Why an [`AneBackend`] could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum AneError {
    /// A kernel could not be generated for this model.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The device refused a compile, allocation or evaluation.
    #[error("ANE device error")]
    Device(#[from] DeviceError),
    /// The options (or the model's shape) do not fit the ANE path.
    #[error("invalid ANE backend options: {0}")]
    Options(String),
    /// A compiled kernel disagreed with the f32 simulator on its probe input; hosts should
    /// fall back to the CPU backend (as the CLI does).
    #[error(
        "ANE self-check failed for kernel `{kernel}`: {detail} (max |diff| {max_diff} against \
         the f32 simulator); the ANE path is disabled and the CPU backend is used instead"
    )]
    SelfCheckFailed {
        kernel: String,
        detail: String,
        max_diff: f32,
    },
}

/// Per wanted lane of a chunk: its logits `[vocab]` and its normed hidden state `[dim]`.
type Rows = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// One fused layer kernel.
struct LayerKernel {
    id: KernelId,
    first: usize,
    count: usize,
    /// `o01_kv` surface `[2·count·KV, L]`.
    kv_out: SurfaceId,
}

/// A Llama-family model on an ANE-shaped device. See the module docs.
pub struct AneBackend<'a> {
    device: Box<dyn Device>,
    config: LlamaConfig,
    geom: Geometry,
    embed: Tensor<'a>,
    layers: Vec<LayerKernel>,
    head: KernelId,
    /// Head outputs in binding order: logits chunks, then the max.
    head_io: Vec<IoDesc>,
    head_out: Vec<SurfaceId>,
    /// Residual stream ping-pong `[D, L]`.
    x: [SurfaceId; 2],
    pos: SurfaceId,
    k_cache: Vec<SurfaceId>,
    v_cache: Vec<SurfaceId>,
    dispatches: u64,
    /// Device prediction accumulated before the first forward (self-check probes).
    predicted_base: f64,
    last_argmax: Option<u32>,
    /// Normed hidden states `[rows][dim]` of the rows the last call returned.
    hidden: Vec<f32>,
}

/// `ane-sim` on the simulator with `precision`: fp16 surfaces for [`Precision::Fp16`], f32
/// surfaces for [`Precision::F32`] (so that f32 mode separates kernel logic from rounding;
/// weights are fp16 in both). What `--backend ane-sim --sim-precision fp16|f32` builds.
pub fn ane_sim_backend<'a>(
    weights: LlamaWeights<'a>,
    precision: Precision,
    mut opts: AneOptions,
) -> Result<AneBackend<'a>, AneError> {
    let device = SimDevice::new(SimOptions {
        precision,
        ..SimOptions::default()
    });
    if opts.io.is_none() {
        opts.io = Some(match precision {
            Precision::Fp16 => DType::Fp16,
            Precision::F32 => DType::Fp32,
        });
    }
    AneBackend::new(weights, Box::new(device), opts)
}

/// Largest power of two ≤ `n`.
fn pow2_floor(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

impl<'a> AneBackend<'a> {
    /// Generate, compile (and self-check) every kernel of `weights` on `device`.
    pub fn new(
        weights: LlamaWeights<'a>,
        mut device: Box<dyn Device>,
        opts: AneOptions,
    ) -> Result<Self, AneError> {
        let cfg = weights.config.clone();
        cfg.validate()
            .map_err(|e| AneError::Options(e.to_string()))?;
        let max_seq = opts
            .max_seq
            .unwrap_or_else(|| pow2_floor(cfg.context_length).min(512));
        if max_seq > cfg.context_length {
            return Err(AneError::Options(format!(
                "max_seq {max_seq} exceeds the context length {}",
                cfg.context_length
            )));
        }
        if opts.layers_per_kernel == 0 {
            return Err(AneError::Options("layers_per_kernel must be ≥ 1".into()));
        }
        let mut geom = Geometry::new_unchecked(&cfg, max_seq, opts.io.unwrap_or(DType::Fp16));
        // The usable context is the cache: callers (the generation loop) stop there.
        let mut cfg = cfg;
        cfg.context_length = max_seq;
        if let Some(l) = opts.lanes {
            geom.lanes = l;
        }
        geom.check()?;
        let (d, kv, l, s) = (geom.dim, geom.kv_dim, geom.lanes, geom.max_seq);
        let esz = geom.io_bytes();

        let mut layers = Vec::new();
        for first in (0..cfg.n_layers).step_by(opts.layers_per_kernel) {
            let count = opts.layers_per_kernel.min(cfg.n_layers - first);
            let ws: Vec<LayerF32> = weights.layers[first..first + count]
                .iter()
                .map(LayerF32::from_weights)
                .collect();
            let kernel = fused_layers(&geom, first, &ws)?;
            drop(ws);
            let id = compile_checked(device.as_mut(), &kernel, &geom, opts.self_check)?;
            let kv_out = device.new_surface(2 * count * kv * l * esz)?;
            layers.push(LayerKernel {
                id,
                first,
                count,
                kv_out,
            });
        }
        let head_kernel = head(
            &geom,
            &weights.output_norm.to_f32(),
            &weights.output.to_f32(),
        )?;
        let head_id = compile_checked(device.as_mut(), &head_kernel, &geom, opts.self_check)?;
        let head_io = head_kernel.io.outputs.clone();
        drop(head_kernel);
        let head_out = head_io
            .iter()
            .map(|o| device.new_surface(o.bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let x = [
            device.new_surface(d * l * esz)?,
            device.new_surface(d * l * esz)?,
        ];
        let pos = device.new_surface(geom.pos_channels() * l * esz)?;
        let mut k_cache = Vec::new();
        let mut v_cache = Vec::new();
        for _ in 0..cfg.n_layers {
            k_cache.push(device.new_surface(kv * s * esz)?);
            v_cache.push(device.new_surface(kv * s * esz)?);
        }
        let predicted_base = device.stats().predicted_ane_ms;
        Ok(Self {
            device,
            config: cfg,
            geom,
            embed: weights.token_embd,
            layers,
            head: head_id,
            head_io,
            head_out,
            x,
            pos,
            k_cache,
            v_cache,
            dispatches: 0,
            predicted_base,
            last_argmax: None,
            hidden: Vec::new(),
        })
    }

    /// The kernel geometry (lanes, cache slots, I/O type).
    pub fn geometry(&self) -> &Geometry {
        &self.geom
    }

    /// Dispatches per decode token: the layer kernels plus the head.
    pub fn dispatches_per_token(&self) -> usize {
        self.layers.len() + 1
    }

    /// Greedy token of the most recent forward's last position: the first channel whose fp16
    /// logit equals the head's per-lane max (lowest index wins ties).
    pub fn last_argmax(&self) -> Option<u32> {
        self.last_argmax
    }

    /// The underlying device (stats, surfaces).
    pub fn device(&self) -> &dyn Device {
        self.device.as_ref()
    }

    fn write_surface(&mut self, s: SurfaceId, values: &[f32]) -> Result<(), DeviceError> {
        let bytes = surface::encode(self.geom.io, values)?;
        let mut res = Ok(());
        self.device.with_surface_mut(s, &mut |b| {
            if b.len() < bytes.len() {
                res = Err(DeviceError::OutOfBounds(format!(
                    "{} bytes into a {}-byte surface",
                    bytes.len(),
                    b.len()
                )));
            } else {
                b[..bytes.len()].copy_from_slice(&bytes);
            }
        })?;
        res
    }

    fn read_bytes(&self, s: SurfaceId) -> Result<Vec<u8>, DeviceError> {
        let mut out = Vec::new();
        self.device.with_surface(s, &mut |b| out = b.to_vec())?;
        Ok(out)
    }

    /// Run one chunk of `tokens.len() ≤ L` tokens at `pos..` (lane t = position `pos + t`) in
    /// one dispatch per kernel; returns the logits of the lanes in `want` (each `[vocab]`) and
    /// their normed hidden states (each `[dim]`, the head's `hidden` output).
    ///
    /// Every op of the kernels works lane by lane (1×1 convs, per-lane norms, per-row
    /// attention with the causal mask in the position input), so a lane's values do not
    /// depend on what the other lanes hold: a chunk's lane t is bitwise the one-token step at
    /// `pos + t` — the verify pass of [`Backend::decode`] relies on it.
    fn run_chunk(&mut self, tokens: &[u32], pos: usize, want: &[usize]) -> Result<Rows, AneError> {
        let g = self.geom.clone();
        let (d, kv, l, s) = (g.dim, g.kv_dim, g.lanes, g.max_seq);
        let n = tokens.len();
        // Embeddings into lanes 0..n of x: [D][L].
        let mut x = vec![0f32; d * l];
        let mut row = vec![0f32; d];
        for (t, &tok) in tokens.iter().enumerate() {
            self.embed.dequantize_row(tok as usize, &mut row);
            for (c, &v) in row.iter().enumerate() {
                x[c * l + t] = v;
            }
        }
        self.write_surface(self.x[0], &x)?;
        self.write_surface(self.pos, &position_input(&g, pos, n))?;
        let esz = g.io_bytes();
        let mut cur = 0;
        for li in 0..self.layers.len() {
            let (id, first, count, kv_out) = {
                let k = &self.layers[li];
                (k.id, k.first, k.count, k.kv_out)
            };
            let mut inputs = vec![self.x[cur], self.pos];
            for j in first..first + count {
                inputs.push(self.k_cache[j]);
                inputs.push(self.v_cache[j]);
            }
            self.device.eval(id, &inputs, &[self.x[1 - cur], kv_out])?;
            self.dispatches += 1;
            cur = 1 - cur;
            // New K/V rows (lanes 0..n) into cache slots pos..pos+n.
            let rows = self.read_bytes(kv_out)?;
            for j in 0..count {
                for (which, cache) in [(0, self.k_cache[first + j]), (1, self.v_cache[first + j])] {
                    let src_ch = (2 * j + which) * kv;
                    self.device.with_surface_mut(cache, &mut |dst| {
                        scatter_rows(&rows, l, src_ch, kv, n, dst, s, pos, esz);
                    })?;
                }
            }
        }
        let outs = self.head_out.clone();
        self.device.eval(self.head, &[self.x[cur]], &outs)?;
        self.dispatches += 1;
        // Outputs: the logits chunks, the per-lane max, the normed hidden state.
        let n_chunks = self.head_io.len() - 2;
        let mut logits = vec![Vec::with_capacity(g.vocab); want.len()];
        for (o, desc) in outs.iter().zip(&self.head_io).take(n_chunks) {
            let bytes = self.read_bytes(*o)?;
            for (dst, &lane) in logits.iter_mut().zip(want) {
                dst.extend(read_lane(g.io, &bytes, l, lane, desc.channels())?);
            }
        }
        let hidden_bytes = self.read_bytes(outs[n_chunks + 1])?;
        let hidden = want
            .iter()
            .map(|&lane| read_lane(g.io, &hidden_bytes, l, lane, d))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(last) = logits.last() {
            let bytes = self.read_bytes(outs[n_chunks])?;
            let lane = want[want.len() - 1];
            let hint = surface::element(g.io, &bytes, lane).ok_or_else(|| {
                DeviceError::OutOfBounds(format!("lane {lane} outside the head's max output"))
            })?;
            self.last_argmax = Some(argmax_with_hint(last, hint) as u32);
        }
        Ok((logits, hidden))
    }

    /// Every row of `tokens` at `pos..` (chunks of L lanes, one pass of the kernels each):
    /// the logits `[n][vocab]` flattened, and the hidden states kept for
    /// [`Backend::hidden_states`].
    fn all_rows(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        self.check(tokens, pos)?;
        self.hidden.clear();
        let l = self.geom.lanes;
        let mut all = Vec::with_capacity(tokens.len() * self.config.vocab_size);
        let mut hidden = Vec::with_capacity(tokens.len() * self.geom.dim);
        for (i, chunk) in tokens.chunks(l).enumerate() {
            let lanes: Vec<usize> = (0..chunk.len()).collect();
            let (rows, h) = self
                .run_chunk(chunk, pos + i * l, &lanes)
                .map_err(to_backend)?;
            all.extend(rows.into_iter().flatten());
            hidden.extend(h.into_iter().flatten());
        }
        self.hidden = hidden;
        Ok(all)
    }

    fn check(&self, tokens: &[u32], pos: usize) -> Result<(), BackendError> {
        if tokens.is_empty() {
            return Err(BackendError::Device("forward called with no tokens".into()));
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(BackendError::BadToken(bad));
        }
        let last = pos + tokens.len() - 1;
        if last >= self.geom.max_seq {
            return Err(BackendError::ContextFull {
                pos: last,
                ctx: self.geom.max_seq,
            });
        }
        Ok(())
    }
}

/// First index whose value equals `hint` (the head's max); plain argmax (strict `>`, lowest
/// index wins) when no value equals it.
pub fn argmax_with_hint(logits: &[f32], hint: f32) -> usize {
    if let Some(i) = logits.iter().position(|&v| v == hint) {
        return i;
    }
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best
}

fn to_backend(e: AneError) -> BackendError {
    BackendError::Device(engine::error_chain(&e))
}

impl Backend for AneBackend<'_> {
    /// A verify pass of k ≤ L rows is the dispatches of a one-token step.
    fn extra_rows_free(&self) -> bool {
        true
    }

    fn name(&self) -> String {
        if self.device.name().starts_with("ane-sim") {
            "ane-sim".into()
        } else {
            "ane".into()
        }
    }

    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        self.check(tokens, pos)?;
        self.hidden.clear();
        let l = self.geom.lanes;
        let mut last = Vec::new();
        for (i, chunk) in tokens.chunks(l).enumerate() {
            let (mut out, mut h) = self
                .run_chunk(chunk, pos + i * l, &[chunk.len() - 1])
                .map_err(to_backend)?;
            last = out.pop().unwrap_or_default();
            self.hidden = h.pop().unwrap_or_default();
        }
        Ok(last)
    }

    /// The verify pass: up to L tokens (the sampled one and the drafted ones) in lanes
    /// `0..k` of one pass of the kernels — the dispatches of a one-token step — with the
    /// causal mask among them in the position input; longer inputs take one pass per L.
    /// Row-invariant (see `run_chunk`): row i is bitwise the one-token step at `pos + i`.
    /// Rows whose tokens are rejected leave K/V in slots the next call overwrites (and
    /// until then masks out).
    fn decode(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        self.all_rows(tokens, pos)
    }

    fn forward_all(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, BackendError> {
        self.all_rows(tokens, pos)
    }

    fn hidden_states(&self) -> Option<&[f32]> {
        // Empty only after a failed call: then there is no last call's rows to report.
        (!self.hidden.is_empty()).then_some(self.hidden.as_slice())
    }

    fn stats(&self) -> BackendStats {
        let s = self.device.stats();
        BackendStats {
            dispatches: self.dispatches,
            compiles: s.compiles,
            // A prediction only exists when the device has a cost model (a chip profile).
            predicted_device_ms: s
                .chip_profile
                .is_some()
                .then_some(s.predicted_ane_ms - self.predicted_base),
            chip_profile: s.chip_profile,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Self-check
// ---------------------------------------------------------------------------------------

/// Compile `kernel` on `device`; with `check`, run it once on a probe and compare with the
/// f32 simulator. A failed check unloads the kernel and returns [`AneError::SelfCheckFailed`].
fn compile_checked(
    device: &mut dyn Device,
    kernel: &Kernel,
    geom: &Geometry,
    check: bool,
) -> Result<KernelId, AneError> {
    let spec = kernel.spec();
    let id = device.compile(&spec)?;
    if check {
        if let Err(e) = self_check(device, id, kernel, geom) {
            let _ = device.unload(id);
            return Err(e);
        }
    }
    Ok(id)
}

/// Deterministic probe values in [−amp, amp).
fn probe_values(n: usize, seed: u64, amp: f32) -> Vec<f32> {
    let mut z = seed;
    (0..n)
        .map(|_| {
            z = z
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
        })
        .collect()
}

/// Probe inputs of `kernel` in binding order: random residual lanes, the position input of
/// two tokens at position 2 (so the cache slots 0..2 are read), random caches.
pub fn probe_inputs(kernel: &Kernel, geom: &Geometry) -> Vec<Vec<f32>> {
    kernel
        .io
        .inputs
        .iter()
        .enumerate()
        .map(|(i, io)| {
            let n = io.shape.iter().product();
            if io.name.ends_with("_pos") {
                position_input(geom, 2, 2)
            } else if io.name.ends_with("_x") {
                probe_values(n, 17 + i as u64, 1.0)
            } else {
                probe_values(n, 17 + i as u64, 0.5)
            }
        })
        .collect()
}

/// Outputs of one eval of `id` on `device` with `inputs` (binding order), as f32.
pub fn eval_once(
    device: &mut dyn Device,
    id: KernelId,
    kernel: &Kernel,
    inputs: &[Vec<f32>],
) -> Result<Vec<Vec<f32>>, DeviceError> {
    let mut ins = Vec::new();
    let mut outs = Vec::new();
    let result = (|| {
        for (io, vals) in kernel.io.inputs.iter().zip(inputs) {
            let s = device.new_surface(io.bytes())?;
            ins.push(s);
            let bytes = surface::encode(io.dt, vals)?;
            device.with_surface_mut(s, &mut |b| b.copy_from_slice(&bytes))?;
        }
        for io in &kernel.io.outputs {
            outs.push(device.new_surface(io.bytes())?);
        }
        device.eval(id, &ins, &outs)?;
        let mut values = Vec::new();
        for (io, &s) in kernel.io.outputs.iter().zip(&outs) {
            let n: usize = io.shape.iter().product();
            let mut v = vec![0f32; n];
            let mut res = Ok(());
            device.with_surface(s, &mut |b| res = surface::decode_into(io.dt, b, &mut v))?;
            res?;
            values.push(v);
        }
        Ok(values)
    })();
    for s in ins.into_iter().chain(outs) {
        let _ = device.free_surface(s);
    }
    result
}

/// Run the probe on `device` and on a fresh f32 simulator; compare every output.
fn self_check(
    device: &mut dyn Device,
    id: KernelId,
    kernel: &Kernel,
    geom: &Geometry,
) -> Result<(), AneError> {
    let fail = |detail: String, max_diff: f32| AneError::SelfCheckFailed {
        kernel: kernel.label.clone(),
        detail,
        max_diff,
    };
    let inputs = probe_inputs(kernel, geom);
    let got = eval_once(device, id, kernel, &inputs)
        .map_err(|e| fail(format!("probe eval failed: {e}"), f32::INFINITY))?;
    let mut reference = SimDevice::new(SimOptions {
        precision: Precision::F32,
        ..SimOptions::default()
    });
    let ref_id = reference.compile(&kernel.spec())?;
    let want = eval_once(&mut reference, ref_id, kernel, &inputs)?;
    for ((io, a), b) in kernel.io.outputs.iter().zip(&got).zip(&want) {
        let (rel, max_diff) = compare(a, b);
        if rel.is_nan() || rel > SELF_CHECK_TOLERANCE {
            return Err(fail(
                format!(
                    "output `{}` differs by {rel:.4} relative RMS (tolerance {SELF_CHECK_TOLERANCE}) \
                     — wrong I/O binding or miscompile",
                    io.name
                ),
                max_diff,
            ));
        }
    }
    Ok(())
}

/// (relative RMS difference ‖a − b‖/‖b‖, max |a − b|); NaN/inf anywhere gives (inf, inf).
pub fn compare(a: &[f32], b: &[f32]) -> (f32, f32) {
    let (mut num, mut den, mut max) = (0f64, 0f64, 0f32);
    for (&x, &y) in a.iter().zip(b) {
        if !x.is_finite() || !y.is_finite() {
            return (f32::INFINITY, f32::INFINITY);
        }
        let dlt = x - y;
        num += (dlt as f64) * (dlt as f64);
        den += (y as f64) * (y as f64);
        max = max.max(dlt.abs());
    }
    ((num.sqrt() / den.sqrt().max(1e-30)) as f32, max)
}
