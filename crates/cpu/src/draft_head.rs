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
use std::path::{Path, PathBuf};

/// `general.architecture` of a head file.
pub const HEAD_ARCH: &str = "espresso-draft-head";
/// Format version this code reads and writes.
pub const HEAD_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error(transparent)]
    Gguf(#[from] model::GgufError),
    #[error(transparent)]
    Hash(#[from] model::cache::PullError),
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
    /// `[B, D]`: `rms_norm(z) * g`, the head's stand-in for the model's next hidden state
    /// (what a chained proposal starts from).
    pub n: Vec<R>,
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
    (
        logits,
        HeadCache {
            x,
            a,
            s,
            z,
            norm,
            n,
        },
    )
}

/// Backward of [`head_logits`]: adds the gradients of `W1`, `W2` and `g` into `grads` given
/// `dlogits: [B, V]` and, when a loss also reads the normalized state `n` (a feature
/// regression towards the model's next hidden state), its gradient `dn: [B, D]`. The hidden
/// states, embeddings and output rows are frozen (no gradient).
pub fn head_logits_backward<R: Real>(
    dlogits: &[R],
    dn_extra: Option<&[R]>,
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
    if let Some(extra) = dn_extra {
        assert_eq!(extra.len(), dn.len(), "head_logits_backward: dn shape");
        dn.iter_mut().zip(extra).for_each(|(a, &b)| *a += b);
    }
    // n = rms_norm(z) * g
    let dz = rms_norm_backward(&dn, &cache.z, &p.norm, &cache.norm, &mut grads.norm);
    // z = h + s W2ᵀ (h is an input: its gradient is not needed)
    let ds = linear_backward(&dz, &cache.s, &p.w2, hid, d, &mut grads.w2);
    // s = silu(a) = swiglu(a, 1)
    let (da, _) = swiglu_backward(&ds, &cache.a, &vec![R::one(); cache.a.len()]);
    // a = x W1ᵀ
    linear_backward(&da, &cache.x, &p.w1, 2 * d, hid, &mut grads.w1);
}

/// SHA-256 (lower-case hex) and byte size of a model file: what a head records of its model
/// (the default model in the cache is not re-read, see [`model::cache::model_sha256`]).
pub fn file_fingerprint(path: &Path) -> Result<(String, u64), HeadError> {
    let size = std::fs::metadata(path)
        .map_err(|source| HeadError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    Ok((model::cache::model_sha256(path)?, size))
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
    /// Propose only when the head gives its token at least this probability.
    min_p: f32,
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
            min_p: 0.0,
        })
    }

    /// Propose only when the head's probability of its token (softmax over its vocabulary)
    /// is at least `p` (0 = always). A proposal that is likely rejected costs a wider verify
    /// pass for nothing where extra rows are not free (the CPU backend), so the drafter can
    /// skip it and the pass stays one row.
    pub fn set_min_p(&mut self, p: f32) {
        self.min_p = p;
    }

    /// The head's probability (softmax over its vocabulary) of its first choice after the
    /// last [`DraftHead::step`].
    fn top_probability(&self) -> f32 {
        let max = self.logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
        let sum: f32 = self.logits.iter().map(|&l| (l - max).exp()).sum();
        1.0 / sum
    }

    /// The head's token to follow `c`, chosen from hidden state `h` (`None` if `h` is not
    /// `dim` floats, `c` is not a token of the model, or the head's probability of its token
    /// is below the [`DraftHead::set_min_p`] threshold).
    pub fn propose_one(&mut self, c: u32, h: &[f32]) -> Option<u32> {
        self.propose_chain(c, h, 1).first().copied()
    }

    /// Up to `max` tokens to follow `c`: the head's token from `(h, c)`, then the head applied
    /// again to its own normalized state `n` (which it computes as a stand-in for the model's
    /// next hidden state: the classifier rows read it as they read `h`) and its own token, and
    /// so on. The chain stops where the product of the head's probabilities falls below the
    /// [`DraftHead::set_min_p`] threshold.
    pub fn propose_chain(&mut self, c: u32, h: &[f32], max: usize) -> Vec<u32> {
        let d = self.dim;
        let mut out = Vec::new();
        if h.len() != d || c as usize >= self.embd_rows {
            return out;
        }
        let mut state = h.to_vec();
        let (mut c, mut p) = (c, 1.0f32);
        while out.len() < max {
            self.step(c, &state);
            // The softmax is needed only for a threshold (none on the ANE).
            if self.min_p > 0.0 {
                p *= self.top_probability();
                if p < self.min_p {
                    break;
                }
            }
            c = self.vocab[engine::argmax(&self.logits) as usize];
            out.push(c);
            state.copy_from_slice(&self.n);
        }
        out
    }

    /// One application of the head: `self.logits` (over its vocabulary) and `self.n` from
    /// hidden state `h` (`dim` floats) and token `c` (a token of the model).
    fn step(&mut self, c: u32, h: &[f32]) {
        let (d, hid) = (self.dim, self.hidden);
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
    }
}

impl engine::Drafter for DraftHead {
    fn name(&self) -> &str {
        "head"
    }

    fn propose(&mut self, context: &[u32], hidden: Option<&[f32]>, max: usize) -> Vec<u32> {
        match (context.last(), hidden) {
            (Some(&c), Some(h)) => self.propose_chain(c, h, max),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::synthetic::SyntheticModel;

    fn random(n: usize, scale: f64, rng: &mut SplitMix) -> Vec<f64> {
        (0..n).map(|_| (rng.unit() * 2.0 - 1.0) * scale).collect()
    }

    /// A small head with every parameter random (norm weights around 1).
    fn small_head(d: usize, hid: usize, seed: u64) -> HeadParams<f64> {
        let mut rng = SplitMix(seed);
        HeadParams {
            dim: d,
            hidden: hid,
            w1: random(hid * 2 * d, 0.5, &mut rng),
            w2: random(d * hid, 0.5, &mut rng),
            norm: random(d, 0.3, &mut rng).iter().map(|v| 1.0 + v).collect(),
        }
    }

    /// The module docs' formula, one row at a time with scalar loops in f64: the reference
    /// for [`head_logits`], written without the training ops.
    fn reference_logits(
        p: &HeadParams<f64>,
        h: &[f64],
        e: &[f64],
        out: &[f64],
        eps: f64,
    ) -> Vec<f64> {
        let (d, hid) = (p.dim, p.hidden);
        let v = out.len() / d;
        let mut logits = Vec::new();
        for (ht, et) in h.chunks(d).zip(e.chunks(d)) {
            let x: Vec<f64> = ht.iter().chain(et).copied().collect();
            let s: Vec<f64> = (0..hid)
                .map(|j| {
                    let a: f64 = (0..2 * d).map(|i| p.w1[j * 2 * d + i] * x[i]).sum();
                    a / (1.0 + (-a).exp())
                })
                .collect();
            let z: Vec<f64> = (0..d)
                .map(|i| ht[i] + (0..hid).map(|j| p.w2[i * hid + j] * s[j]).sum::<f64>())
                .collect();
            let r = 1.0 / (z.iter().map(|x| x * x).sum::<f64>() / d as f64 + eps).sqrt();
            for k in 0..v {
                logits.push((0..d).map(|i| out[k * d + i] * z[i] * r * p.norm[i]).sum());
            }
        }
        logits
    }

    #[test]
    fn forward_matches_a_scalar_reference() {
        let (d, hid, v, b) = (8, 12, 7, 3);
        let p = small_head(d, hid, 1);
        let mut rng = SplitMix(2);
        let (h, e, out) = (
            random(b * d, 1.0, &mut rng),
            random(b * d, 1.0, &mut rng),
            random(v * d, 1.0, &mut rng),
        );
        let (got, _) = head_logits(&p, &h, &e, &out, 1e-5);
        let want = reference_logits(&p, &h, &e, &out, 1e-5);
        assert_eq!(got.len(), b * v);
        for (g, w) in got.iter().zip(&want) {
            // Same math in f64, different summation order: agreement to rounding.
            assert!((g - w).abs() < 1e-12 * (1.0 + w.abs()), "{g} vs {w}");
        }
    }

    /// Central finite differences in f64 of `L = Σ r ⊙ logits + Σ rn ⊙ n` (r, rn random) against
    /// [`head_logits_backward`], for every parameter of W1, W2 and g.
    #[test]
    fn backward_matches_finite_differences() {
        let (d, hid, v, b) = (4, 6, 5, 3);
        let p = small_head(d, hid, 3);
        let mut rng = SplitMix(4);
        let (h, e, out) = (
            random(b * d, 1.0, &mut rng),
            random(b * d, 1.0, &mut rng),
            random(v * d, 1.0, &mut rng),
        );
        let r = random(b * v, 1.0, &mut rng);
        let rn = random(b * d, 1.0, &mut rng);
        // L = Σ r ⊙ logits + Σ rn ⊙ n: the logits and the normalized state both read.
        let loss = |p: &HeadParams<f64>| -> f64 {
            let (l, c) = head_logits(p, &h, &e, &out, 1e-5);
            let on_n: f64 = c.n.iter().zip(&rn).map(|(a, b)| a * b).sum();
            l.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>() + on_n
        };
        let (_, cache) = head_logits(&p, &h, &e, &out, 1e-5);
        let mut grads = HeadParams::<f64>::zeros(d, hid);
        head_logits_backward(&r, Some(&rn), &p, &out, &cache, &mut grads);
        let step = 1e-6;
        let mut worst = 0f64;
        let mut check = |which: usize, n: usize| {
            for i in 0..n {
                let mut plus = p.clone();
                let mut minus = p.clone();
                let pick = |q: &mut HeadParams<f64>| -> *mut f64 {
                    match which {
                        0 => &mut q.w1[i],
                        1 => &mut q.w2[i],
                        _ => &mut q.norm[i],
                    }
                };
                // SAFETY: each pointer is into its own live clone, used immediately.
                unsafe {
                    *pick(&mut plus) += step;
                    *pick(&mut minus) -= step;
                }
                let numeric = (loss(&plus) - loss(&minus)) / (2.0 * step);
                let analytic = [&grads.w1, &grads.w2, &grads.norm][which][i];
                let err = (numeric - analytic).abs() / (1e-3 + numeric.abs());
                worst = worst.max(err);
                assert!(err < 1e-6, "param {which}[{i}]: {analytic} vs {numeric}");
            }
        };
        check(0, p.w1.len());
        check(1, p.w2.len());
        check(2, p.norm.len());
        assert!(worst > 0.0, "the check compared nothing");
    }

    fn test_head(d: usize, hid: usize, vocab: Vec<u32>, seed: u64) -> HeadFile {
        let p = small_head(d, hid, seed);
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        HeadFile {
            params: HeadParams {
                dim: d,
                hidden: hid,
                w1: f(&p.w1),
                w2: f(&p.w2),
                norm: f(&p.norm),
            },
            vocab,
            eps: 1e-5,
            model_sha256: "ab".repeat(32),
            model_size: 1234,
            path: "test.head.gguf".into(),
        }
    }

    fn bytes_of(h: &HeadFile) -> Vec<u8> {
        let mut b = Vec::new();
        h.write(&mut b).expect("write");
        b
    }

    #[test]
    fn file_round_trips_with_f16_weights() {
        let h = test_head(32, 64, vec![5, 9, 2, 40000], 5);
        let back = HeadFile::from_bytes("test.head.gguf", bytes_of(&h)).expect("read");
        let f16 = |v: &[f32]| -> Vec<f32> {
            v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
        };
        assert_eq!(back.params.w1, f16(&h.params.w1));
        assert_eq!(back.params.w2, f16(&h.params.w2));
        assert_eq!(back.params.norm, h.params.norm);
        assert_eq!(back.vocab, h.vocab);
        assert_eq!(back.model_sha256, h.model_sha256);
        assert_eq!(back.model_size, 1234);
        assert_eq!(back.eps, 1e-5);
    }

    #[test]
    fn corrupt_or_foreign_files_are_errors() {
        let good = bytes_of(&test_head(32, 32, vec![1, 2, 3], 6));
        // Every truncation is an error, never a panic.
        for cut in (0..good.len()).step_by(97) {
            assert!(
                HeadFile::from_bytes("t", good[..cut].to_vec()).is_err(),
                "cut {cut}"
            );
        }
        // A model file is not a head.
        let mut model = Vec::new();
        SyntheticModel::new(tiny_config(), 1, GgmlType::F32)
            .write_gguf(&mut model)
            .expect("model");
        let e = HeadFile::from_bytes("m.gguf", model).expect_err("a model is not a head");
        assert!(e.to_string().contains("general.architecture"), "{e}");
        // NaN weights are refused.
        let mut h = test_head(32, 32, vec![1], 7);
        h.params.norm[3] = f32::NAN;
        let e = HeadFile::from_bytes("t", bytes_of(&h)).expect_err("NaN");
        assert!(e.to_string().contains("NaN"), "{e}");
    }

    #[test]
    fn another_model_is_refused_naming_both_hashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.bin");
        std::fs::write(&path, b"not the model").expect("write");
        let (sha, size) = file_fingerprint(&path).expect("hash");
        let mut h = test_head(32, 32, vec![1], 8);
        let e = h.check_model(&path, true).expect_err("other model");
        let msg = e.to_string();
        assert!(msg.contains(&sha) && msg.contains(&h.model_sha256), "{msg}");
        h.model_sha256 = sha;
        h.model_size = size;
        h.check_model(&path, false).expect("its own model");
    }

    fn tiny_config() -> model::LlamaConfig {
        model::LlamaConfig {
            n_layers: 1,
            dim: 64,
            ffn_dim: 64,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 32,
            vocab_size: 300,
            ..model::LlamaConfig::synthetic()
        }
    }

    /// The inference path (Q8_0 weights, 8-bit activations) proposes the token the f32
    /// training forward ranks first, or one within quantization error of it.
    #[test]
    fn inference_agrees_with_the_training_forward() {
        let cfg = tiny_config();
        let synth = SyntheticModel::new(cfg.clone(), 3, GgmlType::F32);
        let w = LlamaWeights::from_source(&synth, cfg.clone()).expect("weights");
        let vocab: Vec<u32> = (0..200).map(|i| (i * 7 % 300) as u32).collect();
        let file = test_head(64, 96, vocab.clone(), 9);
        let mut head = DraftHead::new(&file, &w, 1).expect("head");
        let out = {
            let mut o = vec![0f32; vocab.len() * 64];
            for (&t, row) in vocab.iter().zip(o.chunks_exact_mut(64)) {
                w.output.dequantize_row(t as usize, row);
            }
            o
        };
        let mut rng = SplitMix(10);
        let mut exact = 0;
        for trial in 0..20 {
            let h: Vec<f32> = random(64, 1.0, &mut rng)
                .iter()
                .map(|&x| x as f32)
                .collect();
            let c = (trial * 13 % 300) as u32;
            let mut e = vec![0f32; 64];
            w.token_embd.dequantize_row(c as usize, &mut e);
            let (logits, _) = head_logits(&file.params, &h, &e, &out, 1e-5);
            let best = engine::argmax(&logits) as usize;
            let got = head.propose_one(c, &h).expect("a proposal");
            let row = vocab.iter().position(|&t| t == got).expect("in vocab");
            // 8-bit activations and weights: logits move by ~1% of their spread.
            let spread = logits.iter().fold(0f32, |m, &l| m.max(l.abs()));
            assert!(logits[best] - logits[row] <= 0.03 * spread, "trial {trial}");
            exact += usize::from(row == best);
        }
        assert!(exact >= 15, "only {exact}/20 proposals were the f32 argmax");
        // No hidden state or an unknown token: no proposal.
        assert_eq!(head.propose_one(1, &[0.0; 3]), None);
        assert_eq!(head.propose_one(300, &[0.0; 64]), None);
        use engine::Drafter;
        assert!(head.propose(&[1, 2], None, 1).is_empty());
        // A chain: its first token is the one-token proposal, each next one the head applied
        // to its own state and token.
        let h: Vec<f32> = random(64, 1.0, &mut rng)
            .iter()
            .map(|&x| x as f32)
            .collect();
        let chain = head.propose(&[1, 2], Some(&h), 3);
        assert_eq!(chain.len(), 3);
        assert_eq!(Some(chain[0]), head.propose_one(2, &h));
        head.step(2, &h);
        let n = head.n.clone();
        assert_eq!(head.propose_one(chain[0], &n), Some(chain[1]));
        // A threshold above every probability: no proposal; at 0: always.
        head.set_min_p(1.01);
        assert!(head.propose(&[1, 2], Some(&h), 3).is_empty());
        head.set_min_p(0.0);
        assert_eq!(head.propose(&[1, 2], Some(&h), 2).len(), 2);
    }
}
