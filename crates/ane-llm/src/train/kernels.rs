//! The four training kernels of one transformer block (see the I/O tables in [`super`]).
//! Every weight is a function input used by `matmul`, so one compiled set serves every layer
//! and every optimizer step.

use mil::{DType, Value};

use super::TrainGeometry;
use crate::kernels::{
    input_name, output_name, Blocks, IoDesc, Kernel, KernelError, KernelIo, MASK_HIDDEN,
};

/// A kernel under construction: the builder plus its I/O descriptions in binding order.
struct Gen {
    b: Blocks,
    io: DType,
    inputs: Vec<IoDesc>,
    outputs: Vec<(Value, String)>,
}

impl Gen {
    fn new(io: DType) -> Self {
        Self {
            b: Blocks::new(),
            io,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Input `i{n}_{stem}` of shape `[1, c, 1, s]`, cast to fp16 compute.
    fn input(&mut self, stem: &str, c: usize, s: usize) -> Value {
        let name = input_name(self.inputs.len(), stem);
        let v = self.b.input(&name, self.io, &[1, c, 1, s]);
        self.inputs.push(self.b.io(v));
        self.b.as_compute(v)
    }

    /// A weight matrix `[out][in]` (an input surface `[1, out, 1, in]`) viewed `[1, 1, out, in]`.
    fn weight(&mut self, stem: &str, out: usize, inp: usize) -> Value {
        let w = self.input(stem, out, inp);
        self.b.reshape(w, &[1, 1, out, inp])
    }

    /// Queue output `o{n}_{stem}`.
    fn output(&mut self, stem: &str, v: Value) {
        let name = output_name(self.outputs.len(), stem);
        self.outputs.push((v, name));
    }

    fn finish(mut self, label: &str) -> Result<Kernel, KernelError> {
        let mut outs = Vec::new();
        let mut descs = Vec::new();
        for (v, name) in std::mem::take(&mut self.outputs) {
            let o = self.b.as_io_output(v, self.io, &name);
            descs.push(self.b.io(o));
            outs.push(o);
        }
        let (program, weights) = self.b.finish(&outs)?;
        Ok(Kernel {
            label: label.to_string(),
            program,
            weights,
            io: KernelIo {
                inputs: self.inputs,
                outputs: descs,
            },
        })
    }

    /// `y = W x` with `w: [1, 1, out, in]`, `x: [1, in, 1, T]` → `[1, out, 1, T]`.
    fn linear(&mut self, w: Value, x: Value) -> Value {
        let (out, t) = (self.b.b.shape(w)[2], self.b.b.shape(x)[3]);
        let cin = self.b.b.shape(x)[1];
        let x4 = self.b.reshape(x, &[1, 1, cin, t]);
        let y = self.matmul(w, x4, false, false);
        self.b.reshape(y, &[1, out, 1, t])
    }

    /// `dx = Wᵀ dy` with `w: [1, 1, out, in]`, `dy: [1, out, 1, T]` → `[1, in, 1, T]`.
    fn linear_t(&mut self, w: Value, dy: Value) -> Value {
        let (out, inp, t) = (
            self.b.b.shape(w)[2],
            self.b.b.shape(w)[3],
            self.b.b.shape(dy)[3],
        );
        let d4 = self.b.reshape(dy, &[1, 1, out, t]);
        let x = self.matmul(w, d4, true, false);
        self.b.reshape(x, &[1, inp, 1, t])
    }

    fn matmul(&mut self, x: Value, y: Value, tx: bool, ty: bool) -> Value {
        let n = self.b.b.fresh("matmul");
        self.b.b.matmul_t(n, x, y, tx, ty)
    }

    /// RMSNorm over channels with a runtime gain `g: [1, D, 1, 1]`:
    /// `x / sqrt(mean(x²) + eps) · g`, with each lane first divided by its max |x| so no
    /// square overflows fp16 (the same value; see `Blocks::rms_norm`).
    fn rms_norm(&mut self, x: Value, g: Value, eps: f32) -> Value {
        let b = &mut self.b;
        let d = b.b.shape(x)[1];
        let pos = b.relu(x);
        let minus = b.scalar(-1.0);
        let neg_x = b.mul(x, minus);
        let neg = b.relu(neg_x);
        let abs = b.add(pos, neg);
        let m = b.reduce_max(abs, 1, None);
        let tiny = b.scalar(2f32.powi(-14));
        let m_safe = b.add(m, tiny);
        let minus_one = b.scalar(-1.0);
        let inv = b.pow(m_safe, minus_one);
        let xs = b.mul(x, inv);
        let sq = b.mul(xs, xs);
        let ss = b.reduce_sum(sq, 1);
        let inv_d = b.scalar(1.0 / d as f32);
        let ms = b.mul(ss, inv_d);
        let e = b.scalar(eps);
        let inv_e = b.mul(inv, e);
        let eps_scaled = b.mul(inv_e, inv);
        let mse = b.add(ms, eps_scaled);
        let nh = b.scalar(-0.5);
        let rrms = b.pow(mse, nh);
        let xr = b.mul(xs, rrms);
        b.mul(xr, g)
    }

    /// The RoPE partner `P z`: `(Pz)[2i] = −z[2i+1]`, `(Pz)[2i+1] = z[2i]` per channel pair.
    /// `z: [1, C, 1, T]`.
    fn pair_swap(&mut self, z: Value) -> Value {
        let (c, t) = (self.b.b.shape(z)[1], self.b.b.shape(z)[3]);
        let pairs = self.b.reshape(z, &[1, c / 2, 2, t]);
        let even = self.b.slice(pairs, &[0, 0, 0, 0], &[1, c / 2, 1, t]);
        let odd = self.b.slice(pairs, &[0, 0, 1, 0], &[1, c / 2, 1, t]);
        let minus = self.b.scalar(-1.0);
        let neg_odd = self.b.mul(odd, minus);
        let ax = self.b.int(2);
        let f = self.b.b.fresh("flag");
        let f = self.b.b.bool(f, false);
        let n = self.b.b.fresh("concat");
        let swapped = self.b.b.concat(n, &[neg_odd, even], ax, f);
        self.b.reshape(swapped, &[1, c, 1, t])
    }

    /// `rope(z) = z ⊙ cos + (P z) ⊙ sin` (`sign = 1`), its inverse / backward with `sign = −1`.
    fn rotate(&mut self, z: Value, cos: Value, sin: Value, sign: f32) -> Value {
        let p = self.pair_swap(z);
        let a = self.b.mul(z, cos);
        let c = self.b.mul(p, sin);
        if sign > 0.0 {
            self.b.add(a, c)
        } else {
            self.b.sub(a, c)
        }
    }

    /// `cos, sin` for `channels` channels from a rope input `[1, 2D, 1, T]` (cos | sin).
    fn rope_tables(&mut self, g: &TrainGeometry, rope: Value, channels: usize) -> (Value, Value) {
        let t = g.seq;
        let cos = self.b.slice(rope, &[0, 0, 0, 0], &[1, channels, 1, t]);
        let sin = self.b.slice(rope, &[0, g.dim, 0, 0], &[1, channels, 1, t]);
        (cos, sin)
    }
}

/// Queries grouped by KV head: `q: [1, D, 1, T]` → `[1, NKV, G·T, hd]` (the G query heads of
/// one KV head stacked as rows).
fn group_queries(gen: &mut Gen, g: &TrainGeometry, q: Value) -> Value {
    let b = &mut gen.b;
    let q4 = b.reshape(q, &[1, g.n_heads, g.head_dim, g.seq]);
    let qt = b.transpose_last(q4);
    b.reshape(qt, &[1, g.n_kv_heads, g.group() * g.seq, g.head_dim])
}

/// Inverse of [`group_queries`] for a per-query-head result `[1, NKV, G·T, hd]` → `[1, D, 1, T]`.
fn ungroup(gen: &mut Gen, g: &TrainGeometry, x: Value) -> Value {
    let b = &mut gen.b;
    let h = b.reshape(x, &[1, g.n_heads, g.seq, g.head_dim]);
    let ht = b.transpose_last(h);
    b.reshape(ht, &[1, g.dim, 1, g.seq])
}

/// A per-KV-head result `[1, NKV, T, hd]` → `[1, KV, 1, T]`.
fn kv_channels(gen: &mut Gen, g: &TrainGeometry, x: Value) -> Value {
    let b = &mut gen.b;
    let xt = b.transpose_last(x);
    b.reshape(xt, &[1, g.kv_dim(), 1, g.seq])
}

/// Causal attention weights `P = softmax(q kᵀ/√hd + mask)`, grouped: `[1, NKV, G·T, T]`.
/// The mask is an explicit `[1, 1, T, T]` constant of the program (0 on and below the
/// diagonal, −1e4 above): hardware `sdpa` ignores masks (reference §11), so nothing here uses it.
fn probs(gen: &mut Gen, g: &TrainGeometry, qg: Value, k4: Value) -> Value {
    let (t, nh) = (g.seq, g.n_heads);
    let scores = gen.matmul(qg, k4, false, false);
    let b = &mut gen.b;
    let scale = b.scalar(g.attn_scale());
    let scaled = b.mul(scores, scale);
    let per_head = b.reshape(scaled, &[1, nh, t, t]);
    let mask: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { MASK_HIDDEN } else { 0.0 })
        .collect();
    let m = b.weight("causal_mask", &[1, 1, t, t], &mask);
    let masked = b.add(per_head, m);
    let p = b.softmax(masked, -1);
    b.reshape(p, &[1, g.n_kv_heads, g.group() * t, t])
}

/// The block forward with taps.
///
/// ```text
/// xn1 = RMSNorm(x; attn_norm)
/// q   = rope(Wq·xn1)   k = rope(Wk·xn1)   v = Wv·xn1
/// att = softmax(q kᵀ/√hd + mask) v      per query head, KV head h / G
/// h   = x + Wo·att
/// hn  = RMSNorm(h; ffn_norm)
/// g   = W_gate·hn   u = W_up·hn   s = silu(g) ⊙ u
/// out = h + W_down·s
/// ```
pub fn layer_forward(g: &TrainGeometry) -> Result<Kernel, KernelError> {
    let (d, kv, h, t) = (g.dim, g.kv_dim(), g.ffn_dim, g.seq);
    let mut k = Gen::new(g.io);
    let x = k.input("x", d, t);
    let rope = k.input("rope", 2 * d, t);
    let attn_norm = k.input("attn_norm", d, 1);
    let wq = k.weight("wq", d, d);
    let wk = k.weight("wk", kv, d);
    let wv = k.weight("wv", kv, d);
    let wo = k.weight("wo", d, d);
    let ffn_norm = k.input("ffn_norm", d, 1);
    let w_gate = k.weight("w_gate", h, d);
    let w_up = k.weight("w_up", h, d);
    let w_down = k.weight("w_down", d, h);
    // Attention.
    let xn1 = k.rms_norm(x, attn_norm, g.rms_eps);
    let (cos, sin) = k.rope_tables(g, rope, d);
    let (cos_k, sin_k) = k.rope_tables(g, rope, kv);
    let q0 = k.linear(wq, xn1);
    let q = k.rotate(q0, cos, sin, 1.0);
    let k0 = k.linear(wk, xn1);
    let kr = k.rotate(k0, cos_k, sin_k, 1.0);
    let v = k.linear(wv, xn1);
    let qg = group_queries(&mut k, g, q);
    let k4 = k.b.reshape(kr, &[1, g.n_kv_heads, g.head_dim, t]);
    let v4 = k.b.reshape(v, &[1, g.n_kv_heads, g.head_dim, t]);
    let p = probs(&mut k, g, qg, k4);
    let ctx = k.matmul(p, v4, false, true);
    let att = ungroup(&mut k, g, ctx);
    let o = k.linear(wo, att);
    let hres = k.b.add(x, o);
    // SwiGLU feed-forward.
    let hn = k.rms_norm(hres, ffn_norm, g.rms_eps);
    let gate = k.linear(w_gate, hn);
    let up = k.linear(w_up, hn);
    let sig = k.b.sigmoid(gate);
    let silu = k.b.mul(gate, sig);
    let s = k.b.mul(silu, up);
    let y = k.linear(w_down, s);
    let out = k.b.add(hres, y);
    for (stem, v) in [
        ("out", out),
        ("xn1", xn1),
        ("q", q),
        ("k", kr),
        ("v", v),
        ("att", att),
        ("h", hres),
        ("hn", hn),
        ("g", gate),
        ("u", up),
        ("s", s),
    ] {
        k.output(stem, v);
    }
    k.finish("train layer forward")
}

/// FFN backward to the normed input (the SwiGLU backward of `cpu::train::swiglu_backward`):
///
/// ```text
/// ds  = W_downᵀ·dout
/// sig = σ(g);  du = ds ⊙ g ⊙ sig;  dg = ds ⊙ u ⊙ sig ⊙ (1 + g ⊙ (1 − sig))
/// dhn = W_gateᵀ·dg + W_upᵀ·du
/// ```
pub fn ffn_backward(g: &TrainGeometry) -> Result<Kernel, KernelError> {
    let (d, h, t) = (g.dim, g.ffn_dim, g.seq);
    let mut k = Gen::new(g.io);
    let dout = k.input("dout", d, t);
    let gate = k.input("g", h, t);
    let up = k.input("u", h, t);
    let w_gate = k.weight("w_gate", h, d);
    let w_up = k.weight("w_up", h, d);
    let w_down = k.weight("w_down", d, h);
    let ds = k.linear_t(w_down, dout);
    let b = &mut k.b;
    let sig = b.sigmoid(gate);
    let dsg = b.mul(ds, gate);
    let du = b.mul(dsg, sig);
    let one = b.scalar(1.0);
    let one_minus = b.sub(one, sig);
    let g1 = b.mul(gate, one_minus);
    let one2 = b.scalar(1.0);
    let dsilu = b.add(one2, g1);
    let dsu = b.mul(ds, up);
    let dsus = b.mul(dsu, sig);
    let dg = b.mul(dsus, dsilu);
    let a = k.linear_t(w_gate, dg);
    let c = k.linear_t(w_up, du);
    let dhn = k.b.add(a, c);
    k.output("dhn", dhn);
    k.output("dg", dg);
    k.output("du", du);
    k.finish("train ffn backward")
}

/// Attention backward to the rotated q, k and to v (`cpu::train::attention_backward` after
/// the output projection), recomputing the weights `P` exactly as the forward does:
///
/// ```text
/// dO = Woᵀ·dh
/// dv = Pᵀ dO            dP = dO v          (grouped: the G query heads of a KV head sum)
/// dS = P ⊙ (dP − rowsum(P ⊙ dP)) / √hd
/// dq = dS k             dk = dSᵀ q
/// ```
pub fn attention_backward(g: &TrainGeometry) -> Result<Kernel, KernelError> {
    let (d, kv, t) = (g.dim, g.kv_dim(), g.seq);
    let mut k = Gen::new(g.io);
    let dh = k.input("dh", d, t);
    let q = k.input("q", d, t);
    let kr = k.input("k", kv, t);
    let v = k.input("v", kv, t);
    let wo = k.weight("wo", d, d);
    let datt = k.linear_t(wo, dh);
    let qg = group_queries(&mut k, g, q);
    let k4 = k.b.reshape(kr, &[1, g.n_kv_heads, g.head_dim, t]);
    let v4 = k.b.reshape(v, &[1, g.n_kv_heads, g.head_dim, t]);
    let p = probs(&mut k, g, qg, k4);
    let dog = group_queries(&mut k, g, datt);
    // dv = Pᵀ dO: [T, G·T] · [G·T, hd] sums the group's heads.
    let dv = k.matmul(p, dog, true, false);
    // dP = dO v: [G·T, hd] · [hd, T].
    let dp = k.matmul(dog, v4, false, false);
    let b = &mut k.b;
    let pdp = b.mul(p, dp);
    let rows = b.reduce_sum(pdp, 3);
    let centred = b.sub(dp, rows);
    let pc = b.mul(p, centred);
    let scale = b.scalar(g.attn_scale());
    let ds = b.mul(pc, scale);
    // dq = dS k: [G·T, T] · [T, hd];  dk = dSᵀ q: [T, G·T] · [G·T, hd].
    let dqg = k.matmul(ds, k4, false, true);
    let dkg = k.matmul(ds, qg, true, false);
    let dq = ungroup(&mut k, g, dqg);
    let dk = kv_channels(&mut k, g, dkg);
    let dv = kv_channels(&mut k, g, dv);
    k.output("dq", dq);
    k.output("dk", dk);
    k.output("dv", dv);
    k.finish("train attention backward")
}

/// QKV backward: RoPE backward (the inverse rotation) on dq and dk, then the projections'
/// input gradient. Returns the un-rotated dq, dk too (the host's weight-gradient GEMMs).
///
/// ```text
/// dq0 = rope⁻¹(dq)   dk0 = rope⁻¹(dk)       rope⁻¹(z) = z ⊙ cos − (P z) ⊙ sin
/// dxn1 = Wqᵀ·dq0 + Wkᵀ·dk0 + Wvᵀ·dv
/// ```
pub fn qkv_backward(g: &TrainGeometry) -> Result<Kernel, KernelError> {
    let (d, kv, t) = (g.dim, g.kv_dim(), g.seq);
    let mut k = Gen::new(g.io);
    let dq = k.input("dq", d, t);
    let dk = k.input("dk", kv, t);
    let dv = k.input("dv", kv, t);
    let rope = k.input("rope", 2 * d, t);
    let wq = k.weight("wq", d, d);
    let wk = k.weight("wk", kv, d);
    let wv = k.weight("wv", kv, d);
    let (cos, sin) = k.rope_tables(g, rope, d);
    let (cos_k, sin_k) = k.rope_tables(g, rope, kv);
    let dq0 = k.rotate(dq, cos, sin, -1.0);
    let dk0 = k.rotate(dk, cos_k, sin_k, -1.0);
    let a = k.linear_t(wq, dq0);
    let bk = k.linear_t(wk, dk0);
    let c = k.linear_t(wv, dv);
    let ab = k.b.add(a, bk);
    let dxn1 = k.b.add(ab, c);
    k.output("dxn1", dxn1);
    k.output("dq0", dq0);
    k.output("dk0", dk0);
    k.finish("train qkv backward")
}
