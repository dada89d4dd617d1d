//! Transformer kernels for the ANE, built as typed [`mil::Program`]s (with [`mil::Builder`])
//! plus fp16 weight blobs.
//!
//! Two kernel families cover a Llama-family model (GQA aware):
//!
//! * [`layers`]: N fused transformer blocks over a chunk of `L` lanes (one token per lane).
//!   The same kernel serves decode (one token in lane 0) and prefill (up to `L` tokens with the
//!   causal mask): RMSNorm, Q/K/V projections, RoPE from cos/sin inputs, causal attention over
//!   the per-layer K/V cache surfaces with the chunk's own keys blended in, output projection,
//!   residual, RMSNorm, SwiGLU, residual. It returns the new residual stream and the new K/V
//!   rows of every layer (one concat output) for the host to write into the caches.
//! * [`head`]: final RMSNorm + classifier (chunks of ≤ 65,536 channels) + per-lane max, and
//!   the normed hidden state itself (for a draft head).
//!
//! Layout: activations `[1, C, 1, L]` channel-major, token t in lane t (reference §3.2–3.3);
//! K/V caches `[1, kv_dim, 1, S]`, slot s = position s. Every I/O name starts with a
//! fixed-width index (`i00_x`, `i01_pos`, `o00_x`, …) so byte-wise sorted order — the binding
//! order (§3.6) — equals declaration order; [`KernelIo`] records that order for the host.

pub mod head;
pub mod host;
pub mod layers;

use mil::{Builder, DType, Program, Value};
use model::LlamaConfig;

use ane::device::KernelSpec;

/// Minimum bytes of an I/O surface the hardware evaluates reliably (reference §3.3, §11.7).
pub const MIN_SURFACE_BYTES: usize = 49_152;
/// Largest extent of one tensor axis (reference §11.7): the classifier is split above it.
pub const MAX_AXIS: usize = 65_536;
/// Additive mask value for hidden key slots (the reference's decode masks use −1e4).
pub const MASK_HIDDEN: f32 = -1.0e4;

/// Shapes every kernel of one model shares.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    pub dim: usize,
    pub kv_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    /// Lanes `L` of every activation surface (tokens per dispatch).
    pub lanes: usize,
    /// KV-cache slots `S` (a power of two; the softmax axis).
    pub max_seq: usize,
    /// Element type of every I/O surface (compute is always fp16-typed inside).
    pub io: DType,
}

/// Errors of kernel generation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    #[error("invalid kernel geometry: {0}")]
    Geometry(String),
    #[error("weights do not fit the model shape: {0}")]
    Weights(String),
    #[error("cannot build a kernel program")]
    Build(#[from] mil::BuildError),
}

/// Smallest multiple of 32 lanes with `channels · L · elem_bytes ≥ 49,152` (reference §3.3).
pub fn lanes_for(channels: usize, elem_bytes: usize) -> usize {
    let mut l = 32;
    while channels * l * elem_bytes < MIN_SURFACE_BYTES {
        l += 32;
    }
    l
}

impl Geometry {
    /// The geometry of `cfg` with `max_seq` cache slots and `io` surfaces; lanes from
    /// [`lanes_for`] on the model width.
    pub fn new(cfg: &LlamaConfig, max_seq: usize, io: DType) -> Result<Self, KernelError> {
        let g = Self::new_unchecked(cfg, max_seq, io);
        g.check()?;
        Ok(g)
    }

    /// [`Geometry::new`] without [`Geometry::check`] (to adjust fields first).
    pub fn new_unchecked(cfg: &LlamaConfig, max_seq: usize, io: DType) -> Self {
        Self {
            dim: cfg.dim,
            kv_dim: cfg.kv_dim(),
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            ffn_dim: cfg.ffn_dim,
            vocab: cfg.vocab_size,
            rms_eps: cfg.rms_eps,
            rope_theta: cfg.rope_theta,
            lanes: lanes_for(cfg.dim, io.size_bytes().unwrap_or(1)),
            max_seq,
            io,
        }
    }

    /// Check the invariants the generators rely on.
    pub fn check(&self) -> Result<(), KernelError> {
        let bad = |m: String| Err(KernelError::Geometry(m));
        if !matches!(self.io, DType::Fp16 | DType::Fp32) {
            return bad(format!("{} I/O surfaces (fp16 or fp32 only)", self.io));
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} heads, {} KV heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.n_heads * self.head_dim != self.dim
            || self.n_kv_heads * self.head_dim != self.kv_dim
        {
            return bad("head_dim × heads must give dim and kv_dim".into());
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("odd head_dim {}", self.head_dim));
        }
        if !self.max_seq.is_power_of_two() || self.max_seq < 2 {
            return bad(format!(
                "max_seq {} is not a power of two ≥ 2 (softmax axis)",
                self.max_seq
            ));
        }
        if self.lanes == 0 || self.lanes > self.max_seq {
            return bad(format!(
                "{} lanes for {} cache slots",
                self.lanes, self.max_seq
            ));
        }
        Ok(())
    }

    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Channels of the position input: cos (D) | sin (D) | maskᵀ (S) | scatterᵀ (S).
    pub fn pos_channels(&self) -> usize {
        2 * self.dim + 2 * self.max_seq
    }

    /// Bytes per element of the I/O surfaces.
    pub fn io_bytes(&self) -> usize {
        self.io.size_bytes().unwrap_or(1)
    }
}

/// A generated kernel: the MIL program, its weight blobs and its I/O in binding order.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Short label for messages (e.g. `layers 0-2`, `head`).
    pub label: String,
    pub program: Program,
    /// `(path, blob bytes)` for every BLOBFILE the program references.
    pub weights: Vec<(String, Vec<u8>)>,
    pub io: KernelIo,
}

/// I/O of a kernel in binding order (byte-wise sorted names = declaration order).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelIo {
    pub inputs: Vec<IoDesc>,
    pub outputs: Vec<IoDesc>,
}

/// One input or output surface.
#[derive(Debug, Clone, PartialEq)]
pub struct IoDesc {
    pub name: String,
    pub dt: DType,
    /// `[1, C, 1, S]`.
    pub shape: Vec<usize>,
}

impl IoDesc {
    /// The description of input or output `v` of the program being built.
    fn of(b: &Builder, v: Value) -> Self {
        Self {
            name: b.name(v).to_string(),
            dt: b.value_type(v).map_or(DType::Fp16, |t| t.dtype()),
            shape: b.shape(v).to_vec(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dt.size_bytes().unwrap_or(0)
    }

    /// Channels `C` of a `[1, C, 1, S]` surface.
    pub fn channels(&self) -> usize {
        self.shape[1]
    }

    /// Spatial extent `S` of a `[1, C, 1, S]` surface.
    pub fn spatial(&self) -> usize {
        self.shape[3]
    }
}

impl Kernel {
    /// The device compile request (surface sizes in binding order). The only place a
    /// kernel becomes a [`KernelSpec`].
    pub fn spec(&self) -> KernelSpec {
        KernelSpec {
            program: self.program.clone(),
            weights: self.weights.clone(),
            input_bytes: self.io.inputs.iter().map(IoDesc::bytes).collect(),
            output_bytes: self.io.outputs.iter().map(IoDesc::bytes).collect(),
        }
    }
}

/// `i{index:02}_{stem}`: input names that sort in index order.
pub fn input_name(index: usize, stem: &str) -> String {
    format!("i{index:02}_{stem}")
}

/// `o{index:02}_{stem}`: output names that sort in index order.
pub fn output_name(index: usize, stem: &str) -> String {
    format!("o{index:02}_{stem}")
}

/// Shared building blocks on top of [`mil::Builder`]: conv parameters and the other shared
/// consts declared once per function, fresh names for every intermediate.
pub(crate) struct Blocks {
    pub b: Builder,
    ax_c: Value,
    f: Value,
    t: Value,
    perm: Value,
}

impl Blocks {
    pub fn new() -> Self {
        let mut b = Builder::new();
        b.default_conv_params();
        b.default_keep_dims();
        let ax_c = b.int32s("ax_c", &[1]);
        let f = b.bool("flag_f", false);
        let t = b.bool("flag_t", true);
        let perm = b.int32s("perm", &[0, 1, 3, 2]);
        Self {
            b,
            ax_c,
            f,
            t,
            perm,
        }
    }

    /// Declare a function input of type `dt`.
    pub fn input(&mut self, name: &str, dt: DType, shape: &[usize]) -> Value {
        self.b.input(name, dt, shape)
    }

    /// The I/O description of `v`.
    pub fn io(&self, v: Value) -> IoDesc {
        IoDesc::of(&self.b, v)
    }

    /// An fp16 scalar const of the f32 `v` (the simulator reads back exactly `v`).
    pub fn scalar(&mut self, v: f32) -> Value {
        let n = self.b.fresh("c");
        self.b.fp16(n, f64::from(v))
    }

    pub fn int(&mut self, v: i32) -> Value {
        let n = self.b.fresh("i");
        self.b.int32(n, v)
    }

    pub fn string(&mut self, v: &str) -> Value {
        let n = self.b.fresh("s");
        self.b.string(n, v)
    }

    pub fn ints(&mut self, v: &[usize]) -> Value {
        let v: Vec<i32> = v.iter().map(|&d| d as i32).collect();
        self.ints_signed(&v)
    }

    fn ints_signed(&mut self, v: &[i32]) -> Value {
        let n = self.b.fresh("t");
        self.b.int32s(n, v)
    }

    /// An fp16 weight const stored as `@model_path/weights/<file>.bin`. `values` is
    /// row-major in `shape` (a 1×1 conv weight `[out, in, 1, 1]` is `[out][in]`).
    pub fn weight(&mut self, file: &str, shape: &[usize], values: &[f32]) -> Value {
        let n = self.b.fresh(&format!("w_{file}"));
        let path = format!("@model_path/weights/{file}.bin");
        self.b.weight_data(n, shape, &path, values)
    }

    /// Cast an I/O value to fp16 compute (no-op for fp16 surfaces).
    pub fn as_compute(&mut self, v: Value) -> Value {
        if self.b.value_type(v).map(|t| t.dtype()) == Some(DType::Fp16) {
            return v;
        }
        let dt = self.string("fp16");
        let n = self.b.fresh("cast");
        self.b.cast(n, v, dt)
    }

    /// Finish an output: cast to the I/O type under the output's name.
    pub fn as_io_output(&mut self, v: Value, io: DType, name: &str) -> Value {
        if io == DType::Fp16 {
            return self.b.identity(name, v);
        }
        let dt = self.string(io.name());
        self.b.cast(name, v, dt)
    }

    pub fn add(&mut self, x: Value, y: Value) -> Value {
        let n = self.b.fresh("add");
        self.b.add(n, x, y)
    }

    pub fn sub(&mut self, x: Value, y: Value) -> Value {
        let n = self.b.fresh("sub");
        self.b.sub(n, x, y)
    }

    pub fn mul(&mut self, x: Value, y: Value) -> Value {
        let n = self.b.fresh("mul");
        self.b.mul(n, x, y)
    }

    pub fn pow(&mut self, x: Value, y: Value) -> Value {
        let n = self.b.fresh("pow");
        self.b.pow(n, x, y)
    }

    pub fn relu(&mut self, x: Value) -> Value {
        let n = self.b.fresh("relu");
        self.b.relu(n, x)
    }

    pub fn sigmoid(&mut self, x: Value) -> Value {
        let n = self.b.fresh("sigmoid");
        self.b.sigmoid(n, x)
    }

    /// `softmax` over `axis`.
    pub fn softmax(&mut self, x: Value, axis: i32) -> Value {
        let ax = self.int(axis);
        let n = self.b.fresh("softmax");
        self.b.softmax(n, x, ax)
    }

    /// `y = W x` as a 1×1 conv; `w` is `[out][in]` row-major. `x: [1, in, 1, L]`.
    pub fn linear(&mut self, file: &str, w: &[f32], out: usize, x: Value) -> Value {
        let cin = self.b.shape(x)[1];
        let wv = self.weight(file, &[out, cin, 1, 1], w);
        let n = self.b.fresh("conv");
        self.b.conv(n, x, wv)
    }

    /// RMSNorm over channels (Zhang & Sennrich 2019): `x / sqrt(mean(x²) + eps) · g`.
    ///
    /// fp16-safe form: real models carry "massive activations" (SmolLM2: |x| ≈ 22,000,
    /// RMS ≈ 950), whose squares overflow fp16. RMSNorm is scale invariant, so each lane is
    /// first divided by its max |x| (`m`, plus 2⁻¹⁴ so an all-zero lane stays finite):
    /// `xs = x / m`, `xn = xs / sqrt(mean(xs²) + eps/m²) · g` — the same value, with every
    /// square ≤ 1 and the sum ≤ D. `|x| = relu(x) + relu(−x)`.
    pub fn rms_norm(&mut self, file: &str, gain: &[f32], eps: f32, x: Value) -> Value {
        let d = self.b.shape(x)[1];
        let pos = self.relu(x);
        let minus = self.scalar(-1.0);
        let neg_x = self.mul(x, minus);
        let neg = self.relu(neg_x);
        let abs = self.add(pos, neg);
        let m = self.reduce_max(abs, 1, None);
        let tiny = self.scalar(2f32.powi(-14));
        let m_safe = self.add(m, tiny);
        let minus_one = self.scalar(-1.0);
        let inv = self.pow(m_safe, minus_one);
        let xs = self.mul(x, inv);
        let sq = self.mul(xs, xs);
        let n = self.b.fresh("reduce_sum");
        let ss = self.b.reduce_sum_keep(n, sq, self.ax_c);
        let inv_d = self.scalar(1.0 / d as f32);
        let ms = self.mul(ss, inv_d);
        let e = self.scalar(eps);
        let inv_e = self.mul(inv, e);
        let eps_scaled = self.mul(inv_e, inv);
        let mse = self.add(ms, eps_scaled);
        let nh = self.scalar(-0.5);
        let rrms = self.pow(mse, nh);
        let xr = self.mul(xs, rrms);
        let g = self.weight(file, &[1, d, 1, 1], gain);
        self.mul(xr, g)
    }

    pub fn reshape(&mut self, x: Value, shape: &[usize]) -> Value {
        let sh = self.ints(shape);
        let n = self.b.fresh("reshape");
        self.b.reshape(n, x, sh)
    }

    /// Swap the last two axes of a rank-4 value.
    pub fn transpose_last(&mut self, x: Value) -> Value {
        let n = self.b.fresh("transpose");
        self.b.transpose(n, x, self.perm)
    }

    pub fn slice(&mut self, x: Value, begin: &[usize], size: &[usize]) -> Value {
        let (bv, sv) = (self.ints(begin), self.ints(size));
        let n = self.b.fresh("slice_by_size");
        self.b.slice_by_size(n, x, bv, sv)
    }

    /// Batched matmul, `y` optionally transposed.
    pub fn matmul(&mut self, x: Value, y: Value, ty: bool) -> Value {
        let fy = if ty { self.t } else { self.f };
        let n = self.b.fresh("matmul");
        self.b.matmul(n, x, y, self.f, fy)
    }

    /// `reduce_max` over `axis`, keeping dims; `name` = `None` picks a fresh name.
    pub fn reduce_max(&mut self, x: Value, axis: i32, name: Option<&str>) -> Value {
        let ax = self.ints_signed(&[axis]);
        let n = name.map_or_else(|| self.b.fresh("reduce_max"), str::to_string);
        self.b.reduce_max_keep(n, x, ax)
    }

    /// `reduce_sum` over `axis`, keeping dims.
    pub fn reduce_sum(&mut self, x: Value, axis: i32) -> Value {
        let ax = self.ints_signed(&[axis]);
        let n = self.b.fresh("reduce_sum");
        self.b.reduce_sum_keep(n, x, ax)
    }

    pub fn concat_channels(&mut self, xs: &[Value], name: Option<&str>) -> Value {
        let ax = self.int(1);
        let n = name.map_or_else(|| self.b.fresh("concat"), str::to_string);
        self.b.concat(n, xs, ax, self.f)
    }

    /// Return `outputs` in order and finish the program with its weight blobs.
    pub fn finish(mut self, outputs: &[Value]) -> Result<(Program, mil::Weights), KernelError> {
        for &v in outputs {
            self.b.output(v);
        }
        Ok(self.b.finish_with_weights()?)
    }
}
