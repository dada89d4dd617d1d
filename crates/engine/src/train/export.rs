//! GGUF export of trained parameters: a llama GGUF that Espresso and llama.cpp load directly.
//!
//! This module owns the mapping from [`Params`] (flat f32, row-major `[out, in]`) to a llama.cpp
//! file: tensor names and dims (`[cols, rows]`, norms 1-D `[dim]`), tensor types (norms always
//! F32, matrices in the chosen [`OutType`]), the `general.*` / `llama.*` metadata (from
//! [`model::LlamaConfig::gguf_metadata`]) and the tokenizer, copied key by key from a base GGUF. The file
//! appears atomically: it is written to a temp file next to the target and renamed into place,
//! so a failed or interrupted export never leaves a partial file at the target path.

use super::params::Params;
use model::gguf::{write_gguf, GgufFile, MetaValue, WriteTensor};
use model::quant::{quantize, GgmlType, QK};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The type of the exported matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    Q8_0,
}

impl OutType {
    pub fn ggml(self) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 => GgmlType::F16,
            Self::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// llama.cpp's `general.file_type` (`enum llama_ftype`): ALL_F32 = 0, MOSTLY_F16 = 1,
    /// MOSTLY_Q8_0 = 7.
    pub fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 7,
        }
    }
}

/// ggml's quantization format version (`GGML_QNT_VERSION`), written as llama.cpp does.
const QUANTIZATION_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot export: {0}")]
    Config(String),
    #[error(
        "cannot export: the parameter buffer holds {found} values, the layout needs {expected}"
    )]
    Length { found: usize, expected: usize },
    #[error(
        "cannot export '{tensor}' as Q8_0: its rows have {cols} values, not a multiple of {QK}"
    )]
    BlockSize { tensor: String, cols: usize },
    #[error("{}: no tokenizer (tokenizer.ggml.tokens) to copy into the exported model", .path.display())]
    NoTokenizer { path: PathBuf },
    #[error("{}: the tokenizer has {found} tokens but the model's vocabulary is {expected}", .path.display())]
    Vocab {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    #[error("cannot write {}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Write `params` as a llama GGUF at `path` (atomically: temp file + rename): the llama.*
/// hyper-parameter keys from `params.layout.config` (plus `general.architecture`,
/// `general.name` = the file stem, `general.file_type`), tensors in llama.cpp names/dims
/// (`output.weight` omitted when tied), and every `tokenizer.*` key copied from `base`.
/// Norm weights are F32; matrices `out_type`. Everything is validated before any file is created.
pub fn export_gguf(
    path: &Path,
    params: &Params,
    out_type: OutType,
    base: &GgufFile,
) -> Result<(), ExportError> {
    let layout = &params.layout;
    let config = &layout.config;
    config
        .validate()
        .map_err(|e| ExportError::Config(e.to_string()))?;
    if params.data.len() != layout.len {
        return Err(ExportError::Length {
            found: params.data.len(),
            expected: layout.len,
        });
    }
    let ty = out_type.ggml();
    if let Some(t) = layout
        .tensors
        .iter()
        .find(|t| t.rows > 1 && t.cols % ty.block_elems() != 0)
    {
        return Err(ExportError::BlockSize {
            tensor: t.name.clone(),
            cols: t.cols,
        });
    }
    let n_tokens = base
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .map(|a| a.len())
        .ok_or_else(|| ExportError::NoTokenizer {
            path: base.path.clone(),
        })?;
    if n_tokens != config.vocab_size {
        return Err(ExportError::Vocab {
            path: base.path.clone(),
            found: n_tokens,
            expected: config.vocab_size,
        });
    }

    let mut metadata = config.gguf_metadata();
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "espresso".into());
    metadata.extend([
        ("general.name".to_string(), MetaValue::Str(name)),
        (
            "general.file_type".to_string(),
            MetaValue::U32(out_type.file_type()),
        ),
        (
            "general.quantization_version".to_string(),
            MetaValue::U32(QUANTIZATION_VERSION),
        ),
    ]);
    metadata.extend(
        base.metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .map(|(k, v)| (k.clone(), v.clone())),
    );

    let tensors: Vec<WriteTensor> = layout
        .tensors
        .iter()
        .map(|t| {
            let values = &params.data[t.range.clone()];
            // Norm gains are the only 1-D tensors: `[dim]`, F32 (llama.cpp convention).
            if t.rows == 1 {
                WriteTensor {
                    name: t.name.clone(),
                    dims: vec![t.cols as u64],
                    ty: GgmlType::F32,
                    data: quantize(GgmlType::F32, values),
                }
            } else {
                WriteTensor {
                    name: t.name.clone(),
                    dims: vec![t.cols as u64, t.rows as u64],
                    ty,
                    data: quantize(ty, values),
                }
            }
        })
        .collect();

    write_atomically(path, |w| write_gguf(w, &metadata, &tensors))
}

/// Run `write` into a temp file in `path`'s directory, fsync it and rename it to `path`. On
/// any error the temp file is removed and `path` is untouched.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> Result<(), ExportError> {
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".espresso-export-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    let tmp_path = tmp.path().to_path_buf();
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        write(&mut w).map_err(io(&tmp_path))?;
        w.flush().map_err(io(&tmp_path))?;
    }
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    #[cfg(unix)]
    {
        // Temp files are created 0600; a model file is for everyone to read, like `File::create`.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(io(tmp.path()))?;
    }
    tmp.persist(path).map_err(|e| ExportError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{LlamaConfig, LlamaWeights, Tokenizer};
    use std::fs;

    const VOCAB: usize = 128;
    const TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}";

    fn config(ffn_dim: usize) -> LlamaConfig {
        LlamaConfig {
            n_layers: 2,
            dim: 64,
            ffn_dim,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            vocab_size: VOCAB,
            context_length: 64,
            rope_theta: 100000.0,
            rms_eps: 1e-6,
        }
    }

    /// A tokenizer-only GGUF (no tensors): a tiny byte-level BPE vocabulary of `VOCAB` tokens
    /// (printable ASCII as GPT-2 maps it, `Ġ`, two merges, a control token, fillers) and a chat
    /// template, as SmolLM2's GGUF spells these keys.
    fn base(dir: &Path) -> GgufFile {
        let s = |v: &str| MetaValue::Str(v.to_string());
        let mut tokens: Vec<String> = (b'!'..=b'~').map(|b| char::from(b).to_string()).collect();
        tokens.extend(["Ġ", "he", "Ġhe", "<|im_end|>"].map(String::from));
        let eos = tokens.len() - 1;
        let mut types = vec![MetaValue::I32(1); VOCAB];
        types[eos] = MetaValue::I32(3);
        tokens.extend((tokens.len()..VOCAB).map(|i| format!("<filler{i}>")));
        let meta = vec![
            ("general.architecture".to_string(), s("llama")),
            ("tokenizer.ggml.model".into(), s("gpt2")),
            ("tokenizer.ggml.pre".into(), s("smollm")),
            (
                "tokenizer.ggml.tokens".into(),
                MetaValue::Array(tokens.iter().map(|t| s(t)).collect()),
            ),
            ("tokenizer.ggml.token_type".into(), MetaValue::Array(types)),
            (
                "tokenizer.ggml.merges".into(),
                MetaValue::Array(vec![s("h e"), s("Ġ he")]),
            ),
            (
                "tokenizer.ggml.eos_token_id".into(),
                MetaValue::U32(eos as u32),
            ),
            (
                "tokenizer.ggml.add_bos_token".into(),
                MetaValue::Bool(false),
            ),
            ("tokenizer.chat_template".into(), s(TEMPLATE)),
        ];
        let p = dir.join("base.gguf");
        write_gguf(&mut fs::File::create(&p).unwrap(), &meta, &[]).unwrap();
        GgufFile::open(&p).unwrap()
    }

    fn reload(path: &Path) -> (GgufFile, Params) {
        let f = GgufFile::open(path).unwrap();
        let p = Params::from_weights(&LlamaWeights::from_gguf(&f).unwrap());
        (f, p)
    }

    fn u32_key(f: &GgufFile, k: &str) -> u32 {
        match f.get(k) {
            Some(MetaValue::U32(v)) => *v,
            other => panic!("{k}: {other:?}"),
        }
    }

    #[test]
    fn f32_export_round_trips_bit_exactly_with_metadata_and_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path());
        for tied in [true, false] {
            let params = Params::init(&config(96), tied, 5);
            let out = dir.path().join(format!("model-{tied}.gguf"));
            export_gguf(&out, &params, OutType::F32, &base).unwrap();
            let (f, back) = reload(&out);
            assert_eq!(back.layout, params.layout, "tied {tied}");
            let bits = |p: &Params| p.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back), bits(&params));
            assert_eq!(f.tensor_info("output.weight").is_some(), !tied);
            assert_eq!(f.tensors.len(), params.layout.tensors.len());

            // Metadata as llama.cpp writes it.
            assert_eq!(
                f.get("general.architecture"),
                Some(&MetaValue::Str("llama".into()))
            );
            assert_eq!(
                f.get("general.name"),
                Some(&MetaValue::Str(format!("model-{tied}")))
            );
            assert_eq!(u32_key(&f, "general.file_type"), 0);
            assert_eq!(u32_key(&f, "llama.block_count"), 2);
            assert_eq!(u32_key(&f, "llama.vocab_size"), VOCAB as u32);
            assert_eq!(u32_key(&f, "llama.rope.dimension_count"), 16);
            assert_eq!(
                f.get("llama.rope.freq_base"),
                Some(&MetaValue::F32(100000.0))
            );
            assert_eq!(
                f.get("llama.attention.layer_norm_rms_epsilon"),
                Some(&MetaValue::F32(1e-6))
            );
            assert_eq!(LlamaConfig::from_gguf(&f).unwrap(), config(96));
            let norm = f.tensor_info("blk.1.ffn_norm.weight").unwrap();
            assert_eq!((norm.dims.clone(), norm.ty), (vec![64], GgmlType::F32));
            let down = f.tensor_info("blk.0.ffn_down.weight").unwrap();
            assert_eq!(down.dims, vec![96, 64]);

            // Every tokenizer key, unchanged; the tokenizer and template load from the output.
            for (k, v) in base
                .metadata
                .iter()
                .filter(|(k, _)| k.starts_with("tokenizer."))
            {
                assert_eq!(f.get(k), Some(v), "{k}");
            }
            assert_eq!(
                f.get("tokenizer.chat_template").and_then(|v| v.as_str()),
                Some(TEMPLATE)
            );
            let (a, b) = (
                Tokenizer::from_gguf(&base).unwrap(),
                Tokenizer::from_gguf(&f).unwrap(),
            );
            assert_eq!(b.vocab_size(), VOCAB);
            assert_eq!(a.vocab_size(), b.vocab_size());
            assert_eq!(a.eos_id(), b.eos_id());
            for id in 0..VOCAB as u32 {
                assert_eq!(a.token_text(id), b.token_text(id));
            }
            let text = "he said: hello <|im_end|>";
            assert_eq!(
                a.encode(text, false).unwrap(),
                b.encode(text, false).unwrap()
            );
        }
    }

    #[test]
    fn f16_and_q8_0_are_within_rounding() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path());
        for tied in [true, false] {
            let params = Params::init(&config(96), tied, 9);
            for out_type in [OutType::F16, OutType::Q8_0] {
                let out = dir.path().join("m.gguf");
                export_gguf(&out, &params, out_type, &base).unwrap();
                let (f, back) = reload(&out);
                assert_eq!(back.layout, params.layout);
                assert_eq!(u32_key(&f, "general.file_type"), out_type.file_type());
                for t in &params.layout.tensors {
                    let info = f.tensor_info(&t.name).unwrap();
                    let (x, y) = (params.slice(&t.range), back.slice(&t.range));
                    if t.rows == 1 {
                        assert_eq!(info.ty, GgmlType::F32, "{}", t.name);
                        assert_eq!(x, y, "{}", t.name);
                        continue;
                    }
                    assert_eq!(info.ty, out_type.ggml(), "{}", t.name);
                    match out_type {
                        OutType::F16 => {
                            for (a, b) in x.iter().zip(y) {
                                let tol = a.abs() * 2f32.powi(-11) + 2f32.powi(-24);
                                assert!((a - b).abs() <= tol, "{}: {a} vs {b}", t.name);
                            }
                        }
                        _ => {
                            for (xb, yb) in x.chunks(QK).zip(y.chunks(QK)) {
                                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                                // Half a step of amax/127, plus the f16 rounding of the scale.
                                let tol = amax / 127.0 * 0.5 + amax * 2f32.powi(-10);
                                for (a, b) in xb.iter().zip(yb) {
                                    assert!((a - b).abs() <= tol, "{}: {a} vs {b}", t.name);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Entries of `dir` other than the fixtures.
    fn leftovers(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "base.gguf")
            .collect();
        v.sort();
        v
    }

    #[test]
    fn invalid_input_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path());
        let out = dir.path().join("m.gguf");

        // ffn_down rows of 80 values are not whole Q8_0 blocks.
        let params = Params::init(&config(80), true, 1);
        let e = export_gguf(&out, &params, OutType::Q8_0, &base).unwrap_err();
        assert!(matches!(e, ExportError::BlockSize { cols: 80, .. }), "{e}");
        assert!(e.to_string().contains("ffn_down"), "{e}");
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
        // ... but are fine as F16.
        export_gguf(&out, &params, OutType::F16, &base).unwrap();
        assert_eq!(leftovers(dir.path()), ["m.gguf"]);

        // A failed export keeps the previous file intact.
        let before = fs::read(&out).unwrap();
        let mut short = Params::init(&config(96), true, 1);
        short.data.pop();
        let e = export_gguf(&out, &short, OutType::F32, &base).unwrap_err();
        assert!(matches!(e, ExportError::Length { .. }), "{e}");
        let mut wrong_vocab = config(96);
        wrong_vocab.vocab_size = 320;
        let e = export_gguf(
            &out,
            &Params::init(&wrong_vocab, true, 1),
            OutType::F32,
            &base,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ExportError::Vocab {
                    found: VOCAB,
                    expected: 320,
                    ..
                }
            ),
            "{e}"
        );
        let e = export_gguf(&out, &Params::init(&config(96), true, 1), OutType::F32, &{
            let p = dir.path().join("empty.gguf");
            write_gguf(&mut fs::File::create(&p).unwrap(), &[], &[]).unwrap();
            GgufFile::open(&p).unwrap()
        })
        .unwrap_err();
        assert!(matches!(e, ExportError::NoTokenizer { .. }), "{e}");
        assert_eq!(fs::read(&out).unwrap(), before);
        assert_eq!(leftovers(dir.path()), ["empty.gguf", "m.gguf"]);
    }

    #[test]
    fn unwritable_target_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path());
        let params = Params::init(&config(96), true, 1);

        // The parent is a regular file.
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let e = export_gguf(&file.join("m.gguf"), &params, OutType::F32, &base).unwrap_err();
        assert!(matches!(e, ExportError::Io { .. }), "{e}");
        assert_eq!(fs::read(&file).unwrap(), b"x");

        // A read-only directory (root ignores permissions: then only the above applies).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let ro = dir.path().join("ro");
            fs::create_dir(&ro).unwrap();
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
            let enforced = fs::write(ro.join("probe"), b"").is_err();
            let out = ro.join("m.gguf");
            let r = export_gguf(&out, &params, OutType::F32, &base);
            if enforced {
                let e = r.unwrap_err();
                assert!(matches!(e, ExportError::Io { .. }), "{e}");
                assert!(e.to_string().contains("cannot write"), "{e}");
                assert_eq!(fs::read_dir(&ro).unwrap().count(), 0);
            } else {
                eprintln!("read-only directories are writable here (root): skipped");
            }
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}
