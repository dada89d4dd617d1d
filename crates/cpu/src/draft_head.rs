//! A draft head for speculative decoding: proposes the token after next from the model's last
//! hidden state and the embedding of the token just chosen (an EAGLE-style head reduced to one
//! MLP block), scored over a reduced vocabulary with the model's own output embedding.
//!
//! For a context ending in token `c`, chosen from the final hidden state `h` (after the output
//! norm; `c = argmax(W_out · h)`), the head computes
//!
//! ```text
//! x      = [h ; E[c]]                  [2D]   E: the model's token embedding (frozen)
//! a      = W1 · x                      [H]
//! s      = silu(a)                     [H]
//! z      = h + W2 · s                  [D]    residual: the head edits the hidden state
//! n      = rms_norm(z) * g             [D]
//! logits = W_out[vocab] · n            [V]    the model's output rows of the reduced vocabulary
//! ```
//!
//! and proposes `vocab[argmax(logits)]`. Trained weights: `W1 [H, 2D]`, `W2 [D, H]`, `g [D]`.
//! The output rows are not shipped: they are taken from the model at load.
//!
//! [`head_logits`] / [`head_logits_backward`] are the training math on batches (`[B, ·]` rows,
//! generic over f32/f64, built from the [`crate::train`] ops); [`DraftHead`] is the inference
//! side, an [`engine::Drafter`] running the same formula on the quantized kernels of
//! [`crate::matmul`]. [`HeadFile`] reads and writes the head as GGUF (`f16` weights; metadata:
//! version, shapes, the vocabulary, and the SHA-256 and byte size of the model it belongs to).

use crate::matmul::{matmul as qmatmul, Precision};
use crate::train::{
    linear, linear_backward, matmul, rms_norm, rms_norm_backward, swiglu, swiglu_backward, Real,
    RmsNormCache,
};
use model::gguf::WriteTensor;
use model::{GgmlType, GgufFile, LlamaWeights, MetaValue, Tensor};
use rayon::ThreadPool;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `general.architecture` of a head file.
pub const HEAD_ARCH: &str = "espresso-draft-head";
/// Format version this code reads and writes.
pub const HEAD_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error(transparent)]
    Gguf(#[from] model::GgufError),
    #[error("{}: not a usable draft head: {why}", .path.display())]
    Invalid { path: PathBuf, why: String },
    #[error("draft head {} was trained for another model: it records sha256 {head_sha256} ({head_size} bytes), {} has sha256 {model_sha256} ({model_size} bytes)", .head.display(), .model.display())]
    WrongModel {
        head: PathBuf,
        model: PathBuf,
        head_sha256: String,
        head_size: u64,
        model_sha256: String,
        model_size: u64,
    },
    #[error("draft head {} does not fit the model: {why}", .head.display())]
    Mismatch { head: PathBuf, why: String },
    #[error("cannot read {}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the backend does not expose hidden states, which a draft head needs")]
    NoHiddenStates,
    #[error("cannot start the draft head's threads: {0}")]
    Threads(String),
    #[error(transparent)]
    Backend(#[from] engine::BackendError),
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
}

/// The head's trained weights. Shapes: `w1: [hidden, 2·dim]`, `w2: [dim, hidden]`,
/// `norm: [dim]`, row-major (`[out][in]`, like `nn.Linear`).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadParams<R> {
    pub dim: usize,
    pub hidden: usize,
    pub w1: Vec<R>,
    pub w2: Vec<R>,
    pub norm: Vec<R>,
}

impl<R: Real> HeadParams<R> {
    /// All-zero parameters of this shape (a gradient buffer).
    pub fn zeros(dim: usize, hidden: usize) -> Self {
        Self {
            dim,
            hidden,
            w1: vec![R::zero(); hidden * 2 * dim],
            w2: vec![R::zero(); dim * hidden],
            norm: vec![R::zero(); dim],
        }
    }

    /// Seeded initialization: `W1` uniform in ±1/√(2D) (`nn.Linear`'s default), `W2` ten times
    /// smaller (the head starts close to `z = h`), `g = norm_scale` (the typical RMS of `h`,
    /// so the initial logits have the model's own scale).
    pub fn init(dim: usize, hidden: usize, norm_scale: f64, seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        let mut uniform = |n: usize, bound: f64| -> Vec<R> {
            (0..n)
                .map(|_| R::of((rng.unit() * 2.0 - 1.0) * bound))
                .collect()
        };
        let w1 = uniform(hidden * 2 * dim, 1.0 / ((2 * dim) as f64).sqrt());
        let w2 = uniform(dim * hidden, 0.1 / (hidden as f64).sqrt());
        Self {
            dim,
            hidden,
            w1,
            w2,
            norm: vec![R::of(norm_scale); dim],
        }
    }
}

/// SplitMix64: a tiny seeded generator (initialization and shuffling).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// What [`head_logits_backward`] needs from the forward pass.
#[derive(Debug, Clone)]
pub struct HeadCache<R> {
    /// `[B, 2D]`: `[h ; E[c]]` of every row.
    pub x: Vec<R>,
    /// `[B, H]`: `W1 · x`.
    pub a: Vec<R>,
    /// `[B, H]`: `silu(a)`.
    pub s: Vec<R>,
    /// `[B, D]`: `h + W2 · s`.
    pub z: Vec<R>,
    pub norm: RmsNormCache<R>,
}

/// The head's logits over the reduced vocabulary for a batch. Shapes: `h, e: [B, D]` (hidden
/// states and embeddings of the chosen tokens), `out: [V, D]` (the model's output rows of the
/// vocabulary), returns `logits: [B, V]`.
pub fn head_logits<R: Real>(
    p: &HeadParams<R>,
    h: &[R],
    e: &[R],
    out: &[R],
    eps: f64,
) -> (Vec<R>, HeadCache<R>) {
    let (d, hid) = (p.dim, p.hidden);
    assert_eq!(h.len(), e.len(), "head_logits: h and e differ");
    assert_eq!(h.len() % d, 0, "head_logits: h is not [B, {d}]");
    assert_eq!(out.len() % d, 0, "head_logits: out is not [V, {d}]");
    let vocab = out.len() / d;
    // x = [h ; e]: [B, 2D]
    let mut x = Vec::with_capacity(2 * h.len());
    for (ht, et) in h.chunks_exact(d).zip(e.chunks_exact(d)) {
        x.extend_from_slice(ht);
        x.extend_from_slice(et);
    }
    // a = x W1ᵀ: [B, H]; s = silu(a) (SwiGLU with an all-ones up projection)
    let a = linear(&x, &p.w1, 2 * d, hid);
    let s = swiglu(&a, &vec![R::one(); a.len()]);
    // z = h + s W2ᵀ: [B, D]
    let mut z = linear(&s, &p.w2, hid, d);
    z.iter_mut().zip(h).for_each(|(zi, &hi)| *zi += hi);
    // n = rms_norm(z) * g; logits = n outᵀ: [B, V]
    let (n, norm) = rms_norm(&z, &p.norm, eps);
    let logits = linear(&n, out, d, vocab);
    (logits, HeadCache { x, a, s, z, norm })
}

/// Backward of [`head_logits`]: adds the gradients of `W1`, `W2` and `g` into `grads` given
/// `dlogits: [B, V]`. The hidden states, embeddings and output rows are frozen (no gradient).
pub fn head_logits_backward<R: Real>(
    dlogits: &[R],
    p: &HeadParams<R>,
    out: &[R],
    cache: &HeadCache<R>,
    grads: &mut HeadParams<R>,
) {
    let (d, hid) = (p.dim, p.hidden);
    let vocab = out.len() / d;
    let b = cache.z.len() / d;
    assert_eq!(
        dlogits.len(),
        b * vocab,
        "head_logits_backward: dlogits shape"
    );
    // dn = dlogits · out: [B, V] · [V, D]
    let mut dn = vec![R::zero(); b * d];
    matmul(
        (b, d, vocab),
        &mut dn,
        (d, 1),
        false,
        dlogits,
        (vocab, 1),
        out,
        (d, 1),
    );
    // n = rms_norm(z) * g
    let dz = rms_norm_backward(&dn, &cache.z, &p.norm, &cache.norm, &mut grads.norm);
    // z = h + s W2ᵀ (h is an input: its gradient is not needed)
    let ds = linear_backward(&dz, &cache.s, &p.w2, hid, d, &mut grads.w2);
    // s = silu(a) = swiglu(a, 1)
    let (da, _) = swiglu_backward(&ds, &cache.a, &vec![R::one(); cache.a.len()]);
    // a = x W1ᵀ
    linear_backward(&da, &cache.x, &p.w1, 2 * d, hid, &mut grads.w1);
}

/// SHA-256 (lower-case hex) and byte size of a file: what a head records of its model.
pub fn file_fingerprint(path: &Path) -> Result<(String, u64), HeadError> {
    use sha2::{Digest, Sha256};
    let io = |source| HeadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, size))
}

/// A head as stored: weights, the reduced vocabulary and the model it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadFile {
    pub params: HeadParams<f32>,
    /// Full-vocabulary token id of each output row, most frequent first.
    pub vocab: Vec<u32>,
    /// RMSNorm epsilon (the model's).
    pub eps: f32,
    /// SHA-256 (hex) and byte size of the model file the head was trained on.
    pub model_sha256: String,
    pub model_size: u64,
    /// Where it was read from (messages only).
    pub path: PathBuf,
}

impl HeadFile {
    /// Serialize as GGUF: `head.w1` and `head.w2` in f16, `head.norm` in f32.
    pub fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let p = &self.params;
        let u32v = |v: usize| MetaValue::U32(v as u32);
        let meta = vec![
            (
                "general.architecture".into(),
                MetaValue::Str(HEAD_ARCH.into()),
            ),
            ("draft_head.version".into(), MetaValue::U32(HEAD_VERSION)),
            ("draft_head.dim".into(), u32v(p.dim)),
            ("draft_head.hidden".into(), u32v(p.hidden)),
            ("draft_head.norm_eps".into(), MetaValue::F32(self.eps)),
            (
                "draft_head.vocab".into(),
                MetaValue::Array(self.vocab.iter().map(|&t| MetaValue::U32(t)).collect()),
            ),
            (
                "draft_head.model.sha256".into(),
                MetaValue::Str(self.model_sha256.clone()),
            ),
            (
                "draft_head.model.size".into(),
                MetaValue::U64(self.model_size),
            ),
        ];
        let tensor = |name: &str, dims: Vec<u64>, ty, values: &[f32]| WriteTensor {
            name: name.into(),
            dims,
            ty,
            data: model::quant::quantize(ty, values),
        };
        let (d, h) = (p.dim as u64, p.hidden as u64);
        let tensors = [
            tensor("head.w1", vec![2 * d, h], GgmlType::F16, &p.w1),
            tensor("head.w2", vec![h, d], GgmlType::F16, &p.w2),
            tensor("head.norm", vec![d], GgmlType::F32, &p.norm),
        ];
        model::gguf::write_gguf(out, &meta, &tensors)
    }

    /// Read a head file from disk.
    pub fn open(path: &Path) -> Result<Self, HeadError> {
        Self::from_gguf(&GgufFile::open(path)?)
    }

    /// Read a head from bytes (e.g. embedded in the binary); `name` for messages.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self, HeadError> {
        Self::from_gguf(&GgufFile::from_bytes(name, bytes)?)
    }

    /// Check and read a parsed GGUF as a head: every field present, shapes consistent.
    pub fn from_gguf(g: &GgufFile) -> Result<Self, HeadError> {
        let bad = |why: String| HeadError::Invalid {
            path: g.path.clone(),
            why,
        };
        let arch = g.get("general.architecture").and_then(MetaValue::as_str);
        if arch != Some(HEAD_ARCH) {
            return Err(bad(format!(
                "general.architecture is {arch:?}, expected \"{HEAD_ARCH}\""
            )));
        }
        let uint = |key: &str| {
            g.get(key)
                .and_then(MetaValue::as_u64)
                .ok_or_else(|| bad(format!("metadata {key} is missing or not an integer")))
        };
        let version = uint("draft_head.version")?;
        if version != HEAD_VERSION as u64 {
            return Err(bad(format!(
                "format version {version} (this build reads {HEAD_VERSION})"
            )));
        }
        let dim = uint("draft_head.dim")? as usize;
        let hidden = uint("draft_head.hidden")? as usize;
        if dim == 0 || hidden == 0 || dim > 1 << 16 || hidden > 1 << 16 {
            return Err(bad(format!("shape dim {dim}, hidden {hidden}")));
        }
        let eps = g
            .get("draft_head.norm_eps")
            .and_then(MetaValue::as_f64)
            .filter(|e| e.is_finite() && *e > 0.0)
            .ok_or_else(|| bad("metadata draft_head.norm_eps is missing or invalid".into()))?;
        let vocab = g
            .get("draft_head.vocab")
            .and_then(MetaValue::as_array)
            .ok_or_else(|| bad("metadata draft_head.vocab is missing".into()))?
            .iter()
            .map(|v| v.as_u64().and_then(|t| u32::try_from(t).ok()))
            .collect::<Option<Vec<u32>>>()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad("draft_head.vocab is not a non-empty list of token ids".into()))?;
        let model_sha256 = g
            .get("draft_head.model.sha256")
            .and_then(MetaValue::as_str)
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| bad("metadata draft_head.model.sha256 is missing or invalid".into()))?
            .to_ascii_lowercase();
        let model_size = uint("draft_head.model.size")?;
        let read = |name: &str, dims: &[u64]| -> Result<Vec<f32>, HeadError> {
            let info = g
                .tensor_info(name)
                .ok_or_else(|| bad(format!("tensor {name} is missing")))?;
            if info.dims != dims {
                return Err(bad(format!(
                    "tensor {name} has shape {:?}, expected {dims:?}",
                    info.dims
                )));
            }
            if info.ty.block_elems() != 1 {
                return Err(bad(format!(
                    "tensor {name} is {}, expected F16 or F32",
                    info.ty.name()
                )));
            }
            let mut v = vec![0f32; info.n_elements() as usize];
            model::quant::dequantize(info.ty, g.tensor_data(info), &mut v);
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("tensor {name} holds NaN or infinite values")));
            }
            Ok(v)
        };
        let (d, h) = (dim as u64, hidden as u64);
        let params = HeadParams {
            dim,
            hidden,
            w1: read("head.w1", &[2 * d, h])?,
            w2: read("head.w2", &[h, d])?,
            norm: read("head.norm", &[d])?,
        };
        Ok(Self {
            params,
            vocab,
            eps: eps as f32,
            model_sha256,
            model_size,
            path: g.path.clone(),
        })
    }

    /// Whether this head was trained on the model file at `model`: refuses another model
    /// naming both SHA-256s. Hashes the model only when the byte sizes agree, unless
    /// `always_hash` (to name the model's hash in the refusal).
    pub fn check_model(&self, model: &Path, always_hash: bool) -> Result<(), HeadError> {
        let size = std::fs::metadata(model)
            .map_err(|source| HeadError::Io {
                path: model.to_path_buf(),
                source,
            })?
            .len();
        let (sha, size) = if size == self.model_size || always_hash {
            file_fingerprint(model)?
        } else {
            ("(not hashed: the sizes differ)".into(), size)
        };
        if size == self.model_size && sha == self.model_sha256 {
            return Ok(());
        }
        Err(HeadError::WrongModel {
            head: self.path.clone(),
            model: model.to_path_buf(),
            head_sha256: self.model_sha256.clone(),
            head_size: self.model_size,
            model_sha256: sha,
            model_size: size,
        })
    }
}

/// A tensor view of owned bytes for the quantized kernels.
fn view<'a>(name: &'a str, ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Tensor<'a> {
    Tensor {
        name,
        ty,
        rows,
        cols,
        data,
    }
}

/// The head at inference: [`head_logits`] for one row on the quantized kernels — `W1`, `W2`
/// as Q8_0 (converted at load), the output rows in the model's own stored type — proposing
/// one token.
pub struct DraftHead {
    dim: usize,
    hidden: usize,
    eps: f32,
    w1: Vec<u8>,
    w2: Vec<u8>,
    norm: Vec<f32>,
    out_ty: GgmlType,
    /// `[V, D]` rows of the model's output matrix, stored type.
    out_rows: Vec<u8>,
    embd_ty: GgmlType,
    embd_rows: usize,
    /// The model's token embedding `[vocab, D]`, stored type.
    embd: Vec<u8>,
    vocab: Vec<u32>,
    pool: ThreadPool,
    x: Vec<f32>,
    a: Vec<f32>,
    y: Vec<f32>,
    n: Vec<f32>,
    logits: Vec<f32>,
}

impl DraftHead {
    /// Put `head` on the model whose weights are `w` (checks the shapes; the caller checks
    /// the model's identity with [`HeadFile::check_model`]). `threads` for the products.
    pub fn new(head: &HeadFile, w: &LlamaWeights, threads: usize) -> Result<Self, HeadError> {
        let mismatch = |why: String| HeadError::Mismatch {
            head: head.path.clone(),
            why,
        };
        let p = &head.params;
        let (d, hid) = (p.dim, p.hidden);
        if d != w.config.dim {
            return Err(mismatch(format!(
                "the head has dim {d}, the model {}",
                w.config.dim
            )));
        }
        let qk = GgmlType::Q8_0.block_elems();
        if d % qk != 0 || hid % qk != 0 {
            return Err(mismatch(format!(
                "dim {d} and hidden {hid} must be multiples of {qk}"
            )));
        }
        let n_vocab = w.output.rows;
        if let Some(&t) = head.vocab.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(mismatch(format!(
                "token {t} is outside the model's {n_vocab}-token vocabulary"
            )));
        }
        let mut out_rows = Vec::with_capacity(head.vocab.len() * w.output.row_bytes());
        for &t in &head.vocab {
            out_rows.extend_from_slice(w.output.row_data(t as usize));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(|e| HeadError::Threads(e.to_string()))?;
        Ok(Self {
            dim: d,
            hidden: hid,
            eps: head.eps,
            w1: model::quant::quantize(GgmlType::Q8_0, &p.w1),
            w2: model::quant::quantize(GgmlType::Q8_0, &p.w2),
            norm: p.norm.clone(),
            out_ty: w.output.ty,
            out_rows,
            embd_ty: w.token_embd.ty,
            embd_rows: w.token_embd.rows,
            embd: w.token_embd.data.to_vec(),
            vocab: head.vocab.clone(),
            pool,
            x: vec![0.0; 2 * d],
            a: vec![0.0; hid],
            y: vec![0.0; d],
            n: vec![0.0; d],
            logits: vec![0.0; head.vocab.len()],
        })
    }

    /// The head's token to follow `c`, chosen from hidden state `h` (`None` if `h` is not
    /// `dim` floats or `c` is not a token of the model).
    pub fn propose_one(&mut self, c: u32, h: &[f32]) -> Option<u32> {
        let (d, hid) = (self.dim, self.hidden);
        if h.len() != d || c as usize >= self.embd_rows {
            return None;
        }
        // x = [h ; E[c]]
        let embd = view("token_embd", self.embd_ty, self.embd_rows, d, &self.embd);
        self.x[..d].copy_from_slice(h);
        embd.dequantize_row(c as usize, &mut self.x[d..]);
        // a = W1 x; s = silu(a)
        let w1 = view("head.w1", GgmlType::Q8_0, hid, 2 * d, &self.w1);
        qmatmul(&self.pool, &w1, &self.x, 1, Precision::Fast, &mut self.a);
        self.a.iter_mut().for_each(|v| *v = crate::ops::silu(*v));
        // z = h + W2 s
        let w2 = view("head.w2", GgmlType::Q8_0, d, hid, &self.w2);
        qmatmul(&self.pool, &w2, &self.a, 1, Precision::Fast, &mut self.y);
        self.y.iter_mut().zip(h).for_each(|(z, &hi)| *z += hi);
        // n = rms_norm(z) * g; logits = W_out[vocab] n
        crate::ops::rms_norm(&mut self.n, &self.y, &self.norm, self.eps);
        let v = self.vocab.len();
        let out = view("output[vocab]", self.out_ty, v, d, &self.out_rows);
        qmatmul(
            &self.pool,
            &out,
            &self.n,
            1,
            Precision::Fast,
            &mut self.logits,
        );
        Some(self.vocab[engine::argmax(&self.logits) as usize])
    }
}

impl engine::Drafter for DraftHead {
    fn name(&self) -> &str {
        "head"
    }

    fn propose(&mut self, context: &[u32], hidden: Option<&[f32]>, max: usize) -> Vec<u32> {
        match (context.last(), hidden) {
            (Some(&c), Some(h)) if max > 0 => self.propose_one(c, h).into_iter().collect(),
            _ => Vec::new(),
        }
    }
}
