//! The trainable parameters of a Llama-family model as one flat f32 buffer.
//!
//! Every tensor is a named slice of one `Vec<f32>` ([`Params::data`]), in a fixed order
//! ([`ParamLayout`]); gradients and the optimizer's moments use the same layout, so the optimizer,
//! the checkpoint and the GGUF export treat "the model" as one array and backends find each
//! tensor by its [`Range`]. Names are llama.cpp's GGUF names; matrices are row-major
//! `[rows = out features, cols = in features]` as in [`model::weights`].

use model::weights::LlamaWeights;
use model::LlamaConfig;
use std::ops::Range;

/// One tensor of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// GGUF tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// `[rows, cols]`; norms are `[1, dim]`.
    pub rows: usize,
    pub cols: usize,
    /// Where it lives in the flat buffer.
    pub range: Range<usize>,
}

/// The slices of one transformer block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRanges {
    pub attn_norm: Range<usize>, // [D]
    pub wq: Range<usize>,        // [D, D]
    pub wk: Range<usize>,        // [KV, D]
    pub wv: Range<usize>,        // [KV, D]
    pub wo: Range<usize>,        // [D, D]
    pub ffn_norm: Range<usize>,  // [D]
    pub w_gate: Range<usize>,    // [H, D]
    pub w_up: Range<usize>,      // [H, D]
    pub w_down: Range<usize>,    // [D, H]
}

/// Where every tensor of a model lives in the flat buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamLayout {
    pub config: LlamaConfig,
    /// True when the classifier reuses `token_embd` (no `output.weight`), as SmolLM2 does.
    pub tied: bool,
    pub token_embd: Range<usize>, // [V, D]
    pub layers: Vec<LayerRanges>,
    pub output_norm: Range<usize>, // [D]
    /// `output.weight` `[V, D]`; equal to `token_embd` when tied.
    pub output: Range<usize>,
    /// Every tensor in buffer order (a tied head appears once, as `token_embd.weight`).
    pub tensors: Vec<ParamInfo>,
    pub len: usize,
}

impl ParamLayout {
    pub fn new(config: &LlamaConfig, tied: bool) -> Self {
        let (d, kv, h, v) = (
            config.dim,
            config.kv_dim(),
            config.ffn_dim,
            config.vocab_size,
        );
        let mut tensors = Vec::new();
        let mut push = |name: String, rows: usize, cols: usize| {
            let start = tensors.last().map_or(0, |t: &ParamInfo| t.range.end);
            let range = start..start + rows * cols;
            tensors.push(ParamInfo {
                name,
                rows,
                cols,
                range: range.clone(),
            });
            range
        };
        let token_embd = push("token_embd.weight".into(), v, d);
        let layers = (0..config.n_layers)
            .map(|i| {
                let mut n = |s: &str, rows, cols| push(format!("blk.{i}.{s}.weight"), rows, cols);
                LayerRanges {
                    attn_norm: n("attn_norm", 1, d),
                    wq: n("attn_q", d, d),
                    wk: n("attn_k", kv, d),
                    wv: n("attn_v", kv, d),
                    wo: n("attn_output", d, d),
                    ffn_norm: n("ffn_norm", 1, d),
                    w_gate: n("ffn_gate", h, d),
                    w_up: n("ffn_up", h, d),
                    w_down: n("ffn_down", d, h),
                }
            })
            .collect();
        let output_norm = push("output_norm.weight".into(), 1, d);
        let output = if tied {
            token_embd.clone()
        } else {
            push("output.weight".into(), v, d)
        };
        let len = tensors.last().map_or(0, |t| t.range.end);
        Self {
            config: config.clone(),
            tied,
            token_embd,
            layers,
            output_norm,
            output,
            tensors,
            len,
        }
    }

    /// The layout of a loaded model (tied when its classifier is the embedding table).
    pub fn of_weights(w: &LlamaWeights<'_>) -> Self {
        let tied = std::ptr::eq(w.output.data.as_ptr(), w.token_embd.data.as_ptr());
        Self::new(&w.config, tied)
    }

    /// Number of scalars in matrices that multiply activations (for FLOP estimates): every
    /// layer matrix plus the classifier (the embedding lookup is not a product).
    pub fn matmul_params(&self) -> usize {
        let layer: usize = self
            .layers
            .iter()
            .map(|l| {
                l.wq.len()
                    + l.wk.len()
                    + l.wv.len()
                    + l.wo.len()
                    + l.w_gate.len()
                    + l.w_up.len()
                    + l.w_down.len()
            })
            .sum();
        layer + self.output.len()
    }
}

/// A model's parameters: the layout and the flat f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub layout: ParamLayout,
    pub data: Vec<f32>,
}

impl Params {
    /// Dequantize a loaded model into f32 master weights.
    pub fn from_weights(w: &LlamaWeights<'_>) -> Self {
        let layout = ParamLayout::of_weights(w);
        let tied = layout.tied;
        let mut data = vec![0f32; layout.len];
        let mut put = |r: &Range<usize>, t: &model::Tensor<'_>| {
            model::quant::dequantize(t.ty, t.data, &mut data[r.clone()]);
        };
        put(&layout.token_embd, &w.token_embd);
        for (lr, lw) in layout.layers.iter().zip(&w.layers) {
            put(&lr.attn_norm, &lw.attn_norm);
            put(&lr.wq, &lw.wq);
            put(&lr.wk, &lw.wk);
            put(&lr.wv, &lw.wv);
            put(&lr.wo, &lw.wo);
            put(&lr.ffn_norm, &lw.ffn_norm);
            put(&lr.w_gate, &lw.w_gate);
            put(&lr.w_up, &lw.w_up);
            put(&lr.w_down, &lw.w_down);
        }
        put(&layout.output_norm, &w.output_norm);
        if !tied {
            put(&layout.output, &w.output);
        }
        Self { layout, data }
    }

    /// Deterministic initialization for training from scratch (GPT-2 / llama2.c style): norms
    /// are 1, matrices are `N(0, 0.02²)`, and the two projections that write into the residual
    /// stream (`attn_output`, `ffn_down`) are scaled by `1/sqrt(2·n_layers)`. The same `seed`
    /// always gives the same values (on every platform).
    pub fn init(config: &LlamaConfig, tied: bool, seed: u64) -> Self {
        let layout = ParamLayout::new(config, tied);
        let mut data = vec![0f32; layout.len];
        let resid = 0.02 / (2.0 * config.n_layers as f64).sqrt();
        let is_resid =
            |name: &str| name.ends_with("attn_output.weight") || name.ends_with("ffn_down.weight");
        for (ti, t) in layout.tensors.iter().enumerate() {
            let out = &mut data[t.range.clone()];
            if t.name.ends_with("norm.weight") {
                out.fill(1.0);
                continue;
            }
            let std = if is_resid(&t.name) { resid } else { 0.02 };
            for (i, v) in out.iter_mut().enumerate() {
                *v = (std * normal(seed, ti as u64, i as u64)) as f32;
            }
        }
        Self { layout, data }
    }

    /// The values of one tensor.
    pub fn slice(&self, r: &Range<usize>) -> &[f32] {
        &self.data[r.clone()]
    }
}

/// SplitMix64: a counter-based generator (the state is the input), so any element of any stream
/// can be drawn directly and a resumed run needs no saved generator state beyond the seed.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in `(0, 1)` for element `i` of stream `stream` under `seed`.
pub fn uniform(seed: u64, stream: u64, i: u64) -> f64 {
    let h = splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ i);
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A standard normal draw (Box–Muller on two uniforms) for element `i` of stream `stream`.
pub fn normal(seed: u64, stream: u64, i: u64) -> f64 {
    let u1 = uniform(seed, stream, 2 * i);
    let u2 = uniform(seed, stream, 2 * i + 1);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_the_buffer_once() {
        let mut c = LlamaConfig::synthetic();
        c.n_layers = 2;
        for tied in [true, false] {
            let l = ParamLayout::new(&c, tied);
            let mut end = 0;
            for t in &l.tensors {
                assert_eq!(t.range.start, end, "{}", t.name);
                assert_eq!(t.range.len(), t.rows * t.cols);
                end = t.range.end;
            }
            assert_eq!(end, l.len);
            assert_eq!(l.tensors.len(), 1 + 9 * 2 + 1 + usize::from(!tied));
            assert_eq!(l.output == l.token_embd, tied);
        }
    }

    #[test]
    fn init_is_deterministic_and_scaled() {
        let mut c = LlamaConfig::synthetic();
        c.n_layers = 1;
        c.vocab_size = 512;
        let a = Params::init(&c, true, 7);
        assert_eq!(a, Params::init(&c, true, 7));
        assert_ne!(a.data, Params::init(&c, true, 8).data);
        let e = a.slice(&a.layout.token_embd);
        let mean = e.iter().map(|&v| v as f64).sum::<f64>() / e.len() as f64;
        let std =
            (e.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / e.len() as f64).sqrt();
        assert!(
            mean.abs() < 1e-3 && (std - 0.02).abs() < 1e-3,
            "mean {mean} std {std}"
        );
        assert!(a.slice(&a.layout.output_norm).iter().all(|&v| v == 1.0));
    }
}
