//! Deterministic random-weight models for benchmarks (`--synthetic SEED`), and their export as
//! GGUF so that llama.cpp can run the very same weights.
//!
//! Weights are uniform in `±sqrt(3 / cols)` (unit-variance outputs for unit-variance inputs), norm
//! gains are 1, drawn from SplitMix64 seeded by `seed` and the tensor's name, so each tensor is
//! reproducible on its own.

use crate::config::LlamaConfig;
use crate::gguf::{write_gguf, MetaValue, WriteTensor};
use crate::quant::{quantize, GgmlType};
use crate::weights::{Tensor, TensorSource};

/// A model whose weights live in memory.
pub struct SyntheticModel {
    pub config: LlamaConfig,
    pub seed: u64,
    tensors: Vec<WriteTensor>,
}

struct SplitMix64(u64);
impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn name_hash(name: &str) -> u64 {
    // FNV-1a: stable across platforms and releases.
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

impl SyntheticModel {
    /// Build the model of `config` with weights stored as `ty` (F32 or F16).
    pub fn new(config: LlamaConfig, seed: u64, ty: GgmlType) -> Self {
        let (d, kv, h, v) = (
            config.dim,
            config.kv_dim(),
            config.ffn_dim,
            config.vocab_size,
        );
        let mut tensors = Vec::new();
        let mut add = |name: String, rows: usize, cols: usize, norm: bool| {
            let values: Vec<f32> = if norm {
                vec![1.0; rows * cols]
            } else {
                let mut rng = SplitMix64(seed ^ name_hash(&name));
                let a = (3.0 / cols as f32).sqrt();
                (0..rows * cols).map(|_| rng.next_f32() * a).collect()
            };
            let dims = if rows == 1 {
                vec![cols as u64]
            } else {
                vec![cols as u64, rows as u64]
            };
            let ty = if norm { GgmlType::F32 } else { ty };
            tensors.push(WriteTensor {
                data: quantize(ty, &values),
                name,
                dims,
                ty,
            });
        };
        add("token_embd.weight".into(), v, d, false);
        for i in 0..config.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            add(n("attn_norm"), 1, d, true);
            add(n("attn_q"), d, d, false);
            add(n("attn_k"), kv, d, false);
            add(n("attn_v"), kv, d, false);
            add(n("attn_output"), d, d, false);
            add(n("ffn_norm"), 1, d, true);
            add(n("ffn_gate"), h, d, false);
            add(n("ffn_up"), h, d, false);
            add(n("ffn_down"), d, h, false);
        }
        add("output_norm.weight".into(), 1, d, true);
        add("output.weight".into(), v, d, false);
        Self {
            config,
            seed,
            tensors,
        }
    }

    /// GGUF metadata describing this model (llama architecture, a placeholder SPM vocabulary
    /// so that llama.cpp accepts the file).
    fn metadata(&self) -> Vec<(String, MetaValue)> {
        let c = &self.config;
        let mut tokens = Vec::with_capacity(c.vocab_size);
        let mut types = Vec::with_capacity(c.vocab_size);
        for i in 0..c.vocab_size {
            let (t, ty) = match i {
                0 => ("<unk>".to_string(), 2),
                1 => ("<s>".to_string(), 3),
                2 => ("</s>".to_string(), 3),
                3..=258 => (format!("<0x{:02X}>", i - 3), 6),
                _ => (format!("\u{2581}t{i}"), 1),
            };
            tokens.push(MetaValue::Str(t));
            types.push(MetaValue::I32(ty));
        }
        let scores = (0..c.vocab_size)
            .map(|i| MetaValue::F32(-(i as f32)))
            .collect();
        let mut meta = c.gguf_metadata();
        meta.insert(
            1,
            (
                "general.name".into(),
                MetaValue::Str(format!("espresso-synthetic-{}", self.seed)),
            ),
        );
        meta.extend([
            (
                "tokenizer.ggml.model".into(),
                MetaValue::Str("llama".into()),
            ),
            ("tokenizer.ggml.tokens".into(), MetaValue::Array(tokens)),
            ("tokenizer.ggml.scores".into(), MetaValue::Array(scores)),
            ("tokenizer.ggml.token_type".into(), MetaValue::Array(types)),
            ("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(1)),
            ("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(2)),
        ]);
        meta
    }

    /// Write the model as a GGUF file.
    pub fn write_gguf(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        write_gguf(out, &self.metadata(), &self.tensors)
    }
}

impl TensorSource for SyntheticModel {
    fn find(&self, name: &str) -> Option<Tensor<'_>> {
        let t = self.tensors.iter().find(|t| t.name == name)?;
        let cols = t.dims[0] as usize;
        let rows = t.dims.get(1).copied().unwrap_or(1) as usize;
        Some(Tensor {
            name: &t.name,
            ty: t.ty,
            rows,
            cols,
            data: &t.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GgufFile, LlamaWeights};

    fn small() -> LlamaConfig {
        LlamaConfig {
            n_layers: 2,
            dim: 64,
            ffn_dim: 96,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            vocab_size: 300,
            context_length: 32,
            rope_theta: 10000.0,
            rms_eps: 1e-5,
        }
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let a = SyntheticModel::new(small(), 7, GgmlType::F32);
        let b = SyntheticModel::new(small(), 7, GgmlType::F32);
        let c = SyntheticModel::new(small(), 8, GgmlType::F32);
        let t = |m: &SyntheticModel| m.find("blk.1.attn_q.weight").unwrap().to_f32();
        assert_eq!(t(&a), t(&b));
        assert_ne!(t(&a), t(&c));
        let w = t(&a);
        let bound = (3.0f32 / 64.0).sqrt();
        assert!(w.iter().all(|x| x.abs() <= bound));
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        assert!(mean.abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn exported_gguf_loads_with_same_weights() {
        let m = SyntheticModel::new(small(), 3, GgmlType::F16);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.gguf");
        m.write_gguf(&mut std::fs::File::create(&p).unwrap())
            .unwrap();
        let f = GgufFile::open(&p).unwrap();
        let w = LlamaWeights::from_gguf(&f).unwrap();
        assert_eq!(w.config, small());
        let direct = LlamaWeights::from_source(&m, small()).unwrap();
        assert_eq!(
            w.layers[1].w_down.to_f32(),
            direct.layers[1].w_down.to_f32()
        );
        assert_eq!(w.output.to_f32(), direct.output.to_f32());
    }
}
