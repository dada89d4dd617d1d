//! Llama-family hyper-parameters, read from GGUF metadata.

use crate::gguf::{GgufFile, MetaValue};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unsupported architecture '{0}': Espresso runs the llama family (general.architecture = llama)")]
    Architecture(String),
    #[error("missing metadata key '{0}'")]
    Missing(String),
    #[error("invalid model configuration: {0}")]
    Invalid(String),
}

/// Shape and constants of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub n_layers: usize,
    /// Model width `D`.
    pub dim: usize,
    /// SwiGLU hidden width `H`.
    pub ffn_dim: usize,
    pub n_heads: usize,
    /// Key/value heads (GQA: `n_heads % n_kv_heads == 0`).
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
}

impl LlamaConfig {
    /// Width of the K and V projections: `n_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// The reference shape used by `--synthetic` (6 layers, dim 768, 12 heads, ffn 2048, vocab 32000).
    pub fn synthetic() -> Self {
        Self {
            n_layers: 6,
            dim: 768,
            ffn_dim: 2048,
            n_heads: 12,
            n_kv_heads: 12,
            head_dim: 64,
            vocab_size: 32000,
            context_length: 256,
            rope_theta: 10000.0,
            rms_eps: 1e-5,
        }
    }

    /// Check the invariants every backend relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.n_layers == 0 || self.dim == 0 || self.ffn_dim == 0 || self.vocab_size == 0 {
            return bad(format!("zero-sized dimension in {self:?}"));
        }
        if self.n_heads == 0
            || self.n_kv_heads == 0
            || !self.n_heads.is_multiple_of(self.n_kv_heads)
        {
            return bad(format!(
                "{} heads is not a multiple of {} KV heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim == 0
            || !self.head_dim.is_multiple_of(2)
            || self.n_heads * self.head_dim != self.dim
        {
            return bad(format!(
                "head_dim {} x {} heads does not give dim {} (or is odd)",
                self.head_dim, self.n_heads, self.dim
            ));
        }
        if self.context_length == 0 {
            return bad("context length is zero".into());
        }
        Ok(())
    }

    /// The GGUF metadata that describes this shape, typed as llama.cpp writes it (u32 counts,
    /// f32 constants): `general.architecture = "llama"` and every `llama.*` key [`Self::from_gguf`]
    /// reads. Writers add `general.name`, `general.file_type` and the tokenizer.
    pub fn gguf_metadata(&self) -> Vec<(String, MetaValue)> {
        let u = |k: &str, x: usize| (format!("llama.{k}"), MetaValue::U32(x as u32));
        let f = |k: &str, x: f32| (format!("llama.{k}"), MetaValue::F32(x));
        vec![
            (
                "general.architecture".into(),
                MetaValue::Str("llama".into()),
            ),
            u("block_count", self.n_layers),
            u("embedding_length", self.dim),
            u("feed_forward_length", self.ffn_dim),
            u("attention.head_count", self.n_heads),
            u("attention.head_count_kv", self.n_kv_heads),
            u("rope.dimension_count", self.head_dim),
            u("context_length", self.context_length),
            u("vocab_size", self.vocab_size),
            f("rope.freq_base", self.rope_theta),
            f("attention.layer_norm_rms_epsilon", self.rms_eps),
        ]
    }

    /// Read the configuration of a `llama` GGUF.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, ConfigError> {
        let arch = f
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ConfigError::Missing("general.architecture".into()))?;
        if arch != "llama" {
            return Err(ConfigError::Architecture(arch.to_string()));
        }
        let int = |k: &str| -> Result<usize, ConfigError> {
            let key = format!("llama.{k}");
            f.get(&key)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or(ConfigError::Missing(key))
        };
        let float = |k: &str, default: f32| -> f32 {
            f.get(&format!("llama.{k}"))
                .and_then(|v| v.as_f64())
                .map(|v| v as f32)
                .unwrap_or(default)
        };
        let dim = int("embedding_length")?;
        let n_heads = int("attention.head_count")?;
        let n_kv_heads = int("attention.head_count_kv").unwrap_or(n_heads);
        let head_dim = dim.checked_div(n_heads).unwrap_or(0);
        let vocab_size = match int("vocab_size") {
            Ok(v) => v,
            Err(_) => f
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .ok_or_else(|| ConfigError::Missing("llama.vocab_size".into()))?,
        };
        let cfg = Self {
            n_layers: int("block_count")?,
            dim,
            ffn_dim: int("feed_forward_length")?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length: int("context_length")?,
            rope_theta: float("rope.freq_base", 10000.0),
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
        };
        if let Ok(rd) = int("rope.dimension_count") {
            if rd != head_dim {
                return Err(ConfigError::Invalid(format!(
                    "partial rotary embedding (rope.dimension_count {rd} != head_dim {head_dim}) is not supported"
                )));
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }
}
