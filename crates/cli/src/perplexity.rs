//! `espresso perplexity`: token-mean loss and perplexity of the model over a text, in
//! non-overlapping windows of `--ctx` tokens (see `engine::perplexity` for the exact metric).
//!
//! The text is a UTF-8 file, or every `.txt` file of a folder concatenated in sorted name order
//! with nothing between them. It is tokenized as plain text (special-token text is not parsed)
//! with no BOS in front; when the model's tokenizer adds BOS (`tokenizer.ggml.add_bos_token`,
//! false for SmolLM2), the first token of each window is replaced by BOS, as llama.cpp's
//! perplexity tool does. `scripts/perplexity_llamacpp.py` does exactly the same with llama.cpp.

use crate::load::Loaded;
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A UTF-8 text file, or a folder whose .txt files are concatenated in sorted name order.
    #[arg(long, value_name = "PATH")]
    data: PathBuf,
    /// Window size in tokens (at most the model's context length).
    #[arg(long, value_name = "N", default_value_t = 512)]
    ctx: usize,
    /// Score only the first N windows (default: the whole text).
    #[arg(long = "max-windows", value_name = "N")]
    max_windows: Option<usize>,
    /// Print one JSON object (loss, perplexity, tokens, windows, input_tokens, ctx, backend).
    #[arg(long)]
    json: bool,
}

/// The text at `path`: a file, or a folder's `.txt` files concatenated in sorted order.
pub fn read_text(path: &Path) -> Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_dir() {
        return std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {} as UTF-8 text", path.display()));
    }
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?
    {
        let p = entry
            .with_context(|| format!("cannot list {}", path.display()))?
            .path();
        if p.is_file() && p.extension().is_some_and(|e| e == "txt") {
            files.push(p);
        }
    }
    if files.is_empty() {
        bail!("{} has no .txt files", path.display());
    }
    files.sort();
    let mut text = String::new();
    for f in files {
        text.push_str(
            &std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read {} as UTF-8 text", f.display()))?,
        );
    }
    Ok(text)
}

/// `12345` → `"12,345"`.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn run(a: PerplexityArgs) -> Result<()> {
    if a.ctx < 2 {
        bail!("--ctx must be at least 2 tokens, got {}", a.ctx);
    }
    if a.max_windows == Some(0) {
        bail!("--max-windows must be at least 1");
    }
    let text = read_text(&a.data)?;
    if text.trim().is_empty() {
        bail!("{} has no text", a.data.display());
    }
    let loaded = Loaded::open_resident(a.model.model.as_deref())?;
    let max = model::LlamaConfig::from_gguf(&loaded.gguf)?.context_length;
    if a.ctx > max {
        bail!(
            "--ctx is {} but the model's context holds {max} tokens",
            a.ctx
        );
    }
    let mut tokens = loaded
        .tokenizer
        .encode(&text, false)
        .with_context(|| format!("cannot tokenize {}", a.data.display()))?;
    let input_tokens = tokens.len();
    if input_tokens < 2 {
        bail!(
            "{} is only {input_tokens} token(s); perplexity needs at least 2",
            a.data.display()
        );
    }
    if let Some(n) = a.max_windows {
        tokens.truncate(n.saturating_mul(a.ctx));
    }
    let bos = if loaded.tokenizer.add_bos() {
        loaded.tokenizer.bos_id()
    } else {
        None
    };
    let mut backend = loaded.backend(a.model.spec())?;
    let total = engine::perplexity::windows(tokens.len(), a.ctx).len();
    let bar = crate::progress::counter("perplexity", total as u64, "windows");
    let r = engine::perplexity(backend.as_mut(), &tokens, a.ctx, bos, &mut |done, _| {
        bar.set_position(done as u64)
    });
    bar.finish_and_clear();
    let r = r?;
    if a.json {
        let v = serde_json::json!({
            "loss": r.loss,
            "perplexity": r.perplexity,
            "tokens": r.tokens,
            "windows": r.windows,
            "input_tokens": input_tokens,
            "ctx": a.ctx,
            "backend": backend.name(),
        });
        println!("{v}");
    } else {
        println!(
            "loss {:.4}  perplexity {:.2}  ({} tokens, {} windows)",
            r.loss,
            r.perplexity,
            thousands(r.tokens),
            r.windows
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12345), "12,345");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn a_folder_is_its_txt_files_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.txt"), "second").unwrap();
        std::fs::write(dir.path().join("a.txt"), "first ").unwrap();
        std::fs::write(dir.path().join("c.md"), "ignored").unwrap();
        assert_eq!(read_text(dir.path()).unwrap(), "first second");
        let empty = tempfile::tempdir().unwrap();
        let e = read_text(empty.path()).unwrap_err();
        assert!(format!("{e:#}").contains("no .txt files"), "{e:#}");
    }
}
