//! The weight map of a Llama-family model: which tensor is which, with shapes checked.
//!
//! Tensors are borrowed views into the memory-mapped file (or into owned buffers for synthetic
//! models); they stay in their stored type. Matrices follow the `nn.Linear` convention: `rows`
//! output features, each row `cols` contiguous input features (GGUF `dims = [cols, rows]`).

use crate::config::{ConfigError, LlamaConfig};
use crate::gguf::GgufFile;
use crate::quant::{dequantize, GgmlType};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("missing tensor '{0}'")]
    Missing(String),
    #[error("tensor '{name}' has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
}

/// A 1-D or 2-D weight in its stored type. `data` holds `rows * cols` elements.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> Tensor<'a> {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows
    }

    /// The stored bytes of row `r`.
    pub fn row_data(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Dequantize row `r` into `out` (`out.len() == cols`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize(self.ty, self.row_data(r), out);
    }

    /// The whole tensor as f32, row-major `[rows][cols]`. For tests, export and kernel
    /// generation; inference never calls this on a whole model.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        dequantize(self.ty, self.data, &mut out);
        out
    }
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct LayerWeights<'a> {
    pub attn_norm: Tensor<'a>, // [dim]
    pub wq: Tensor<'a>,        // [dim, dim]
    pub wk: Tensor<'a>,        // [kv_dim, dim]
    pub wv: Tensor<'a>,        // [kv_dim, dim]
    pub wo: Tensor<'a>,        // [dim, dim]
    pub ffn_norm: Tensor<'a>,  // [dim]
    pub w_gate: Tensor<'a>,    // [ffn, dim]
    pub w_up: Tensor<'a>,      // [ffn, dim]
    pub w_down: Tensor<'a>,    // [dim, ffn]
}

/// All weights of a Llama-family model.
#[derive(Debug, Clone)]
pub struct LlamaWeights<'a> {
    pub config: LlamaConfig,
    pub token_embd: Tensor<'a>, // [vocab, dim]
    pub layers: Vec<LayerWeights<'a>>,
    pub output_norm: Tensor<'a>, // [dim]
    /// The classifier `[vocab, dim]`; the embedding itself when the model ties them.
    pub output: Tensor<'a>,
}

/// Look up a tensor by name in any store and check its `[rows, cols]` shape.
pub trait TensorSource {
    fn find(&self, name: &str) -> Option<Tensor<'_>>;
}

impl TensorSource for GgufFile {
    fn find(&self, name: &str) -> Option<Tensor<'_>> {
        let info = self.tensor_info(name)?;
        let (cols, rows) = match info.dims.as_slice() {
            [c] => (*c as usize, 1),
            [c, r] => (*c as usize, *r as usize),
            _ => return None,
        };
        Some(Tensor {
            name: &info.name,
            ty: info.ty,
            rows,
            cols,
            data: self.tensor_data(info),
        })
    }
}

fn get<'a>(
    src: &'a impl TensorSource,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<Tensor<'a>, WeightsError> {
    let t = src
        .find(name)
        .ok_or_else(|| WeightsError::Missing(name.to_string()))?;
    if t.rows != rows || t.cols != cols {
        return Err(WeightsError::Shape {
            name: name.to_string(),
            found: vec![t.cols as u64, t.rows as u64],
            expected: vec![cols as u64, rows as u64],
        });
    }
    Ok(t)
}

impl<'a> LlamaWeights<'a> {
    /// Map the tensors of a `llama` GGUF (names as llama.cpp writes them).
    /// Every tensor once (a classifier tied to the embedding is not listed twice).
    pub fn tensors(&self) -> Vec<&Tensor<'a>> {
        let mut all = vec![&self.token_embd];
        for l in &self.layers {
            all.extend([
                &l.attn_norm,
                &l.wq,
                &l.wk,
                &l.wv,
                &l.wo,
                &l.ffn_norm,
                &l.w_gate,
                &l.w_up,
                &l.w_down,
            ]);
        }
        all.push(&self.output_norm);
        if self.output.name != self.token_embd.name {
            all.push(&self.output);
        }
        all
    }

    pub fn from_gguf(f: &'a GgufFile) -> Result<Self, WeightsError> {
        let config = LlamaConfig::from_gguf(f)?;
        Self::from_source(f, config)
    }

    pub fn from_source(
        src: &'a impl TensorSource,
        config: LlamaConfig,
    ) -> Result<Self, WeightsError> {
        let (d, kv, h, v) = (
            config.dim,
            config.kv_dim(),
            config.ffn_dim,
            config.vocab_size,
        );
        let token_embd = get(src, "token_embd.weight", v, d)?;
        let output = match src.find("output.weight") {
            Some(_) => get(src, "output.weight", v, d)?,
            None => token_embd,
        };
        let layers = (0..config.n_layers)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                Ok(LayerWeights {
                    attn_norm: get(src, &n("attn_norm"), 1, d)?,
                    wq: get(src, &n("attn_q"), d, d)?,
                    wk: get(src, &n("attn_k"), kv, d)?,
                    wv: get(src, &n("attn_v"), kv, d)?,
                    wo: get(src, &n("attn_output"), d, d)?,
                    ffn_norm: get(src, &n("ffn_norm"), 1, d)?,
                    w_gate: get(src, &n("ffn_gate"), h, d)?,
                    w_up: get(src, &n("ffn_up"), h, d)?,
                    w_down: get(src, &n("ffn_down"), d, h)?,
                })
            })
            .collect::<Result<Vec<_>, WeightsError>>()?;
        Ok(Self {
            output_norm: get(src, "output_norm.weight", 1, d)?,
            config,
            token_embd,
            layers,
            output,
        })
    }
}
