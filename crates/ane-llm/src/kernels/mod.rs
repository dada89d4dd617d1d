//! Transformer kernels for the ANE, generated as MIL text plus fp16 weight blobs.
//!
//! Two kernel families cover a Llama-family model (GQA aware):
//!
//! * [`layers`]: N fused transformer blocks over a chunk of `L` lanes (one token per lane).
//!   The same kernel serves decode (one token in lane 0) and prefill (up to `L` tokens with the
//!   causal mask): RMSNorm, Q/K/V projections, RoPE from cos/sin inputs, causal attention over
//!   the per-layer K/V cache surfaces with the chunk's own keys blended in, output projection,
//!   residual, RMSNorm, SwiGLU, residual. It returns the new residual stream and the new K/V
//!   rows of every layer (one concat output) for the host to write into the caches.
//! * [`head`]: final RMSNorm + classifier (chunks of ≤ 65,536 channels) + per-lane max.
//!
//! Layout: activations `[1, C, 1, L]` channel-major, token t in lane t (reference §3.2–3.3);
//! K/V caches `[1, kv_dim, 1, S]`, slot s = position s. Every I/O name starts with a
//! fixed-width index (`i00_x`, `i01_pos`, `o00_x`, …) so byte-wise sorted order — the binding
//! order (§3.6) — equals declaration order; [`KernelIo`] records that order for the host.

pub mod emit;
pub mod head;
pub mod host;
pub mod layers;

use emit::{Dt, Mil, Val};
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
    pub io: Dt,
}

/// Errors of kernel generation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    #[error("invalid kernel geometry: {0}")]
    Geometry(String),
    #[error("weights do not fit the model shape: {0}")]
    Weights(String),
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
    pub fn new(cfg: &LlamaConfig, max_seq: usize, io: Dt) -> Result<Self, KernelError> {
        let g = Self::new_unchecked(cfg, max_seq, io);
        g.check()?;
        Ok(g)
    }

    /// [`Geometry::new`] without [`Geometry::check`] (to adjust fields first).
    pub fn new_unchecked(cfg: &LlamaConfig, max_seq: usize, io: Dt) -> Self {
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
            lanes: lanes_for(cfg.dim, io.bytes()),
            max_seq,
            io,
        }
    }

    /// Check the invariants the generators rely on.
    pub fn check(&self) -> Result<(), KernelError> {
        let bad = |m: String| Err(KernelError::Geometry(m));
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
}

/// A generated kernel: MIL text, weight blobs and its I/O in binding order.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Short label for messages (e.g. `layers 0-2`, `head`).
    pub label: String,
    pub mil_text: String,
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
    pub dt: Dt,
    /// `[1, C, 1, S]`.
    pub shape: Vec<usize>,
}

impl IoDesc {
    fn of(v: &Val) -> Self {
        Self {
            name: v.name.clone(),
            dt: v.dt,
            shape: v.shape.clone(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dt.bytes()
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
    /// The device compile request (surface sizes in binding order).
    pub fn spec(&self) -> KernelSpec {
        KernelSpec {
            program: mil::parse(&self.mil_text).expect("generated MIL parses"),
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

/// Shared building blocks on top of [`Mil`]: conv parameters declared once per function.
pub(crate) struct Blocks {
    pub m: Mil,
    pt: String,
    st: String,
    pd: String,
    dl: String,
    gr: String,
    kd: String,
    ax_c: String,
    f: String,
    t: String,
    perm: String,
}

impl Blocks {
    pub fn new() -> Self {
        let mut m = Mil::new();
        let pt = m.string("valid");
        let st = m.ints(&[1, 1]);
        let pd = m.ints(&[0, 0, 0, 0]);
        let dl = m.ints(&[1, 1]);
        let gr = m.int(1);
        let kd = m.boolean(true);
        let ax_c = m.ints(&[1]);
        let f = m.boolean(false);
        let t = m.boolean(true);
        let perm = m.ints(&[0, 1, 3, 2]);
        Self {
            m,
            pt,
            st,
            pd,
            dl,
            gr,
            kd,
            ax_c,
            f,
            t,
            perm,
        }
    }

    /// Cast an I/O value to fp16 compute (no-op for fp16 surfaces).
    pub fn as_compute(&mut self, v: Val) -> Val {
        if v.dt == Dt::Fp16 {
            return v;
        }
        let dt = self.m.string("fp16");
        self.m.op(
            None,
            "cast",
            &[("dtype", &dt), ("x", &v.name)],
            Dt::Fp16,
            &v.shape,
        )
    }

    /// Finish an output: cast to the I/O type under the output's name.
    pub fn as_io_output(&mut self, v: &Val, io: Dt, name: &str) -> Val {
        if io == Dt::Fp16 {
            return self.m.op(
                Some(name),
                "identity",
                &[("x", &v.name)],
                Dt::Fp16,
                &v.shape,
            );
        }
        let dt = self.m.string(io.name());
        self.m.op(
            Some(name),
            "cast",
            &[("dtype", &dt), ("x", &v.name)],
            io,
            &v.shape,
        )
    }

    pub fn binary(&mut self, op: &str, x: &Val, y: &str) -> Val {
        let shape = x.shape.clone();
        self.m
            .op(None, op, &[("x", &x.name), ("y", y)], Dt::Fp16, &shape)
    }

    /// Elementwise op of two tensors of possibly different (broadcastable) shapes.
    pub fn binary2(&mut self, op: &str, x: &Val, y: &Val) -> Val {
        let shape: Vec<usize> = x
            .shape
            .iter()
            .zip(&y.shape)
            .map(|(a, b)| *a.max(b))
            .collect();
        self.m.op(
            None,
            op,
            &[("x", &x.name), ("y", &y.name)],
            Dt::Fp16,
            &shape,
        )
    }

    /// `y = W x` as a 1×1 conv; `w` is `[out][in]` row-major. `x: [1, in, 1, L]`.
    pub fn linear(&mut self, file: &str, w: &[f32], out: usize, x: &Val) -> Val {
        let cin = x.shape[1];
        let wv = self.m.weight(file, &[out, cin, 1, 1], w);
        let shape = [1, out, 1, x.shape[3]];
        let (pt, st, pd, dl, gr) = (&self.pt, &self.st, &self.pd, &self.dl, &self.gr);
        self.m.op(
            None,
            "conv",
            &[
                ("dilations", dl),
                ("groups", gr),
                ("pad", pd),
                ("pad_type", pt),
                ("strides", st),
                ("weight", &wv.name),
                ("x", &x.name),
            ],
            Dt::Fp16,
            &shape,
        )
    }

    /// RMSNorm over channels (Zhang & Sennrich 2019): `x / sqrt(mean(x²) + eps) · g`.
    ///
    /// fp16-safe form: real models carry "massive activations" (SmolLM2: |x| ≈ 22,000,
    /// RMS ≈ 950), whose squares overflow fp16. RMSNorm is scale invariant, so each lane is
    /// first divided by its max |x| (`m`, plus 2⁻¹⁴ so an all-zero lane stays finite):
    /// `xs = x / m`, `xn = xs / sqrt(mean(xs²) + eps/m²) · g` — the same value, with every
    /// square ≤ 1 and the sum ≤ D. `|x| = relu(x) + relu(−x)`.
    pub fn rms_norm(&mut self, file: &str, gain: &[f32], eps: f32, x: &Val) -> Val {
        let d = x.shape[1];
        let lanes = x.shape[3];
        let pos = self
            .m
            .op(None, "relu", &[("x", &x.name)], Dt::Fp16, &x.shape);
        let minus = self.m.scalar(-1.0);
        let neg_x = self.binary("mul", x, &minus);
        let neg = self
            .m
            .op(None, "relu", &[("x", &neg_x.name)], Dt::Fp16, &x.shape);
        let abs = self.binary2("add", &pos, &neg);
        let m = self.reduce("reduce_max", &abs, 1, None);
        let tiny = self.m.scalar(2f32.powi(-14));
        let m_safe = self.binary("add", &m, &tiny);
        let minus_one = self.m.scalar(-1.0);
        let inv = self.binary("pow", &m_safe, &minus_one);
        let xs = self.binary2("mul", x, &inv);
        let sq = self.binary("mul", &xs, &xs.name.clone());
        let (ax, kd) = (self.ax_c.clone(), self.kd.clone());
        let ss = self.m.op(
            None,
            "reduce_sum",
            &[("axes", &ax), ("keep_dims", &kd), ("x", &sq.name)],
            Dt::Fp16,
            &[1, 1, 1, lanes],
        );
        let inv_d = self.m.scalar(1.0 / d as f32);
        let ms = self.binary("mul", &ss, &inv_d);
        let e = self.m.scalar(eps);
        let inv_e = self.binary("mul", &inv, &e);
        let eps_scaled = self.binary2("mul", &inv_e, &inv);
        let mse = self.binary2("add", &ms, &eps_scaled);
        let nh = self.m.scalar(-0.5);
        let rrms = self.binary("pow", &mse, &nh);
        let xr = self.binary2("mul", &xs, &rrms);
        let g = self.m.weight(file, &[1, d, 1, 1], gain);
        self.binary2("mul", &xr, &g)
    }

    pub fn reshape(&mut self, x: &Val, shape: &[usize]) -> Val {
        let s: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let sh = self.m.ints(&s);
        self.m.op(
            None,
            "reshape",
            &[("shape", &sh), ("x", &x.name)],
            Dt::Fp16,
            shape,
        )
    }

    /// Swap the last two axes of a rank-4 value.
    pub fn transpose_last(&mut self, x: &Val) -> Val {
        let s = &x.shape;
        let shape = [s[0], s[1], s[3], s[2]];
        let perm = self.perm.clone();
        self.m.op(
            None,
            "transpose",
            &[("perm", &perm), ("x", &x.name)],
            Dt::Fp16,
            &shape,
        )
    }

    pub fn slice(&mut self, x: &Val, begin: &[usize], size: &[usize]) -> Val {
        let b: Vec<i64> = begin.iter().map(|&d| d as i64).collect();
        let s: Vec<i64> = size.iter().map(|&d| d as i64).collect();
        let (bv, sv) = (self.m.ints(&b), self.m.ints(&s));
        self.m.op(
            None,
            "slice_by_size",
            &[("begin", &bv), ("size", &sv), ("x", &x.name)],
            Dt::Fp16,
            size,
        )
    }

    /// Batched matmul with optional transposes.
    pub fn matmul(&mut self, x: &Val, y: &Val, ty: bool, shape: &[usize]) -> Val {
        let fx = self.f.clone();
        let fy = if ty { self.t.clone() } else { self.f.clone() };
        self.m.op(
            None,
            "matmul",
            &[
                ("transpose_x", &fx),
                ("transpose_y", &fy),
                ("x", &x.name),
                ("y", &y.name),
            ],
            Dt::Fp16,
            shape,
        )
    }

    pub fn reduce(&mut self, op: &str, x: &Val, axis: i64, name: Option<&str>) -> Val {
        let ax = self.m.ints(&[axis]);
        let kd = self.kd.clone();
        let mut shape = x.shape.clone();
        let a = if axis < 0 {
            (shape.len() as i64 + axis) as usize
        } else {
            axis as usize
        };
        shape[a] = 1;
        self.m.op(
            name,
            op,
            &[("axes", &ax), ("keep_dims", &kd), ("x", &x.name)],
            Dt::Fp16,
            &shape,
        )
    }

    pub fn concat_channels(&mut self, xs: &[Val], name: Option<&str>) -> Val {
        let ax = self.m.int(1);
        let il = self.f.clone();
        let mut shape = xs[0].shape.clone();
        shape[1] = xs.iter().map(|v| v.shape[1]).sum();
        let list: Vec<&str> = xs.iter().map(|v| v.name.as_str()).collect();
        let values = format!("({})", list.join(","));
        self.m.op(
            name,
            "concat",
            &[("axis", &ax), ("interleave", &il), ("values", &values)],
            Dt::Fp16,
            &shape,
        )
    }
}
