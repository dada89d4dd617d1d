//! Training checkpoints: the whole state of a run in one file, so `--resume DIR` continues
//! bit-identically.
//!
//! This module owns the on-disk format and its crash safety; *what* goes into [`Checkpoint::meta`]
//! and which buffers are saved is the trainer's choice.
//!
//! # Format (`DIR/checkpoint.bin`, all integers little-endian)
//!
//! | bytes            | content                                                              |
//! |------------------|----------------------------------------------------------------------|
//! | 8                | magic `ESPCKPT\0`                                                    |
//! | 4                | format version (u32, currently 1)                                    |
//! | 8                | header length `H` (u64)                                              |
//! | `H`              | JSON header: `{step, meta, config, tied, buffers: [{name, len}]}`    |
//! | `4 · Σ len`      | the buffers in header order, raw f32 (exact bits)                    |
//! | 32               | SHA-256 of every byte before it                                      |
//!
//! # Crash safety
//!
//! [`save`] streams into `DIR/checkpoint.bin.tmp` (hashing as it goes), fsyncs it, renames it
//! over `checkpoint.bin` and fsyncs the directory. A process killed at any moment therefore leaves
//! either the previous checkpoint or the new one, never a mix; a stale temp file is simply
//! overwritten by the next save and never read. One writer per directory.

use model::LlamaConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Name of the data file inside a checkpoint directory.
pub const FILE_NAME: &str = "checkpoint.bin";
/// Where [`save`] writes before the atomic rename.
pub const TEMP_NAME: &str = "checkpoint.bin.tmp";
const MAGIC: &[u8; 8] = b"ESPCKPT\0";
/// The format version [`save`] writes and [`load`] reads.
pub const VERSION: u32 = 1;
const PREFIX: u64 = 8 + 4 + 8;
const HASH_LEN: u64 = 32;
/// Bytes moved per read/write call when streaming buffers.
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("no checkpoint in {}", .dir.display())]
    NotFound { dir: PathBuf },
    #[error("{}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an Espresso checkpoint (bad magic bytes)", .path.display())]
    BadMagic { path: PathBuf },
    #[error("{}: unsupported checkpoint format version {version} (this build reads version {VERSION})", .path.display())]
    Version { path: PathBuf, version: u32 },
    #[error("{}: file is truncated ({found} bytes, expected {expected})", .path.display())]
    Truncated {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("{}: checksum mismatch: the file is corrupt", .path.display())]
    Checksum { path: PathBuf },
    #[error("{}: corrupt: {msg}", .path.display())]
    Corrupt { path: PathBuf, msg: String },
    #[error("checkpoint is for a different model: {0}")]
    Shape(String),
    #[error("cannot encode checkpoint header: {0}")]
    Encode(String),
}

/// Everything needed to continue a training run.
/// Buffers are `Cow`s so the trainer saves its live weights and moments by reference (no copy of
/// the model per save); [`load`] returns owned ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint<'a> {
    /// Optimizer steps done.
    pub step: u64,
    /// Run settings chosen by the trainer (seed, batch, seq_len, optimizer, data fingerprint, …).
    pub meta: serde_json::Value,
    /// The model shape.
    pub config: LlamaConfig,
    pub tied: bool,
    /// Named f32 buffers (`params`, `adam_m`, `adam_v`, …), saved bit-exactly.
    pub buffers: Vec<(String, Cow<'a, [f32]>)>,
}

impl Checkpoint<'_> {
    /// The buffer called `name`.
    pub fn buffer(&self, name: &str) -> Option<&[f32]> {
        self.buffers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_ref())
    }

    /// Check that this checkpoint was written for a model of shape `config` / `tied`.
    pub fn check_shape(&self, config: &LlamaConfig, tied: bool) -> Result<(), CheckpointError> {
        let c = &self.config;
        let fields = [
            ("n_layers", c.n_layers, config.n_layers),
            ("dim", c.dim, config.dim),
            ("ffn_dim", c.ffn_dim, config.ffn_dim),
            ("n_heads", c.n_heads, config.n_heads),
            ("n_kv_heads", c.n_kv_heads, config.n_kv_heads),
            ("head_dim", c.head_dim, config.head_dim),
            ("vocab_size", c.vocab_size, config.vocab_size),
            ("context_length", c.context_length, config.context_length),
        ];
        let mut diffs: Vec<String> = fields
            .iter()
            .filter(|(_, a, b)| a != b)
            .map(|(k, a, b)| format!("{k} {a} (checkpoint) vs {b} (model)"))
            .collect();
        if c.rope_theta.to_bits() != config.rope_theta.to_bits() {
            diffs.push(format!(
                "rope_theta {} (checkpoint) vs {} (model)",
                c.rope_theta, config.rope_theta
            ));
        }
        if c.rms_eps.to_bits() != config.rms_eps.to_bits() {
            diffs.push(format!(
                "rms_eps {} (checkpoint) vs {} (model)",
                c.rms_eps, config.rms_eps
            ));
        }
        if self.tied != tied {
            let s = |t: bool| if t { "tied" } else { "untied" };
            diffs.push(format!(
                "{} classifier (checkpoint) vs {} (model)",
                s(self.tied),
                s(tied)
            ));
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::Shape(diffs.join(", ")))
        }
    }
}

#[derive(Serialize, Deserialize)]
struct BufferEntry {
    name: String,
    len: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    step: u64,
    meta: serde_json::Value,
    config: LlamaConfig,
    tied: bool,
    buffers: Vec<BufferEntry>,
}

/// A writer that hashes every byte it passes on.
struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Write `ck` to `dir` (created if missing), atomically replacing any previous checkpoint.
pub fn save(dir: &Path, ck: &Checkpoint<'_>) -> Result<(), CheckpointError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let header = Header {
        step: ck.step,
        meta: ck.meta.clone(),
        config: ck.config.clone(),
        tied: ck.tied,
        buffers: ck
            .buffers
            .iter()
            .map(|(name, b)| BufferEntry {
                name: name.clone(),
                len: b.len() as u64,
            })
            .collect(),
    };
    let json = serde_json::to_vec(&header).map_err(|e| CheckpointError::Encode(e.to_string()))?;

    let tmp = dir.join(TEMP_NAME);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io(&tmp))?;
    let mut w = HashWriter {
        inner: BufWriter::with_capacity(CHUNK, file),
        hash: Sha256::new(),
    };
    let write_all = |w: &mut HashWriter<BufWriter<File>>| -> std::io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(&json)?;
        let mut bytes = Vec::with_capacity(CHUNK);
        for (_, b) in &ck.buffers {
            for chunk in b.chunks(CHUNK / 4) {
                bytes.clear();
                bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
                w.write_all(&bytes)?;
            }
        }
        Ok(())
    };
    write_all(&mut w).map_err(io(&tmp))?;
    let HashWriter { mut inner, hash } = w;
    inner.write_all(&hash.finalize()).map_err(io(&tmp))?;
    let file = inner.into_inner().map_err(|e| CheckpointError::Io {
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    let dst = dir.join(FILE_NAME);
    fs::rename(&tmp, &dst).map_err(io(&dst))?;
    sync_dir(dir).map_err(io(dir))?;
    Ok(())
}

/// Make the rename durable (directories can be fsynced on Unix; elsewhere this is a no-op).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Read the checkpoint in `dir`, verifying its structure and checksum.
pub fn load(dir: &Path) -> Result<Checkpoint<'static>, CheckpointError> {
    let path = dir.join(FILE_NAME);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointError::NotFound {
                dir: dir.to_path_buf(),
            })
        }
        Err(source) => return Err(CheckpointError::Io { path, source }),
    };
    let io = |source| CheckpointError::Io {
        path: path.clone(),
        source,
    };
    let file_len = file.metadata().map_err(io)?.len();
    let mut r = BufReader::with_capacity(CHUNK, file);
    let mut hash = Sha256::new();
    let truncated = |expected: u64| CheckpointError::Truncated {
        path: path.clone(),
        found: file_len,
        expected,
    };

    // Magic, version and header length.
    let mut prefix = [0u8; PREFIX as usize];
    let have = (file_len.min(PREFIX)) as usize;
    r.read_exact(&mut prefix[..have]).map_err(io)?;
    let magic_have = have.min(MAGIC.len());
    if prefix[..magic_have] != MAGIC[..magic_have] {
        return Err(CheckpointError::BadMagic { path: path.clone() });
    }
    if file_len < PREFIX + HASH_LEN {
        return Err(truncated(PREFIX + HASH_LEN));
    }
    hash.update(prefix);
    let version = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
    if version != VERSION {
        return Err(CheckpointError::Version {
            path: path.clone(),
            version,
        });
    }
    let mut hl = [0u8; 8];
    hl.copy_from_slice(&prefix[12..20]);
    let header_len = u64::from_le_bytes(hl);
    let header_end = PREFIX.checked_add(header_len);
    match header_end {
        Some(end) if end.saturating_add(HASH_LEN) <= file_len => {}
        Some(end) => return Err(truncated(end.saturating_add(HASH_LEN))),
        None => return Err(truncated(u64::MAX)),
    }

    // Header.
    let mut json = vec![0u8; header_len as usize];
    r.read_exact(&mut json).map_err(io)?;
    hash.update(&json);
    let header: Header = match serde_json::from_slice(&json) {
        Ok(h) => h,
        Err(e) => {
            // A damaged header is most likely a damaged file: say so if the checksum agrees.
            drop(r);
            return Err(
                if whole_file_checksum_ok(&path, file_len).unwrap_or(false) {
                    CheckpointError::Corrupt {
                        path: path.clone(),
                        msg: format!("header: {e}"),
                    }
                } else {
                    CheckpointError::Checksum { path: path.clone() }
                },
            );
        }
    };
    let data_bytes = header.buffers.iter().try_fold(0u64, |a, b| {
        b.len.checked_mul(4).and_then(|n| a.checked_add(n))
    });
    let expected = data_bytes
        .and_then(|d| d.checked_add(PREFIX + header_len + HASH_LEN))
        .unwrap_or(u64::MAX);
    if expected > file_len {
        return Err(truncated(expected));
    }
    if expected < file_len {
        return Err(CheckpointError::Corrupt {
            path: path.clone(),
            msg: format!("{} unexpected bytes after the data", file_len - expected),
        });
    }

    // Buffers (sizes are now bounded by the file length).
    let mut buffers = Vec::with_capacity(header.buffers.len());
    let mut bytes = vec![0u8; CHUNK];
    for entry in &header.buffers {
        let len = entry.len as usize;
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            let n = (len - v.len()).min(CHUNK / 4);
            let chunk = &mut bytes[..n * 4];
            r.read_exact(chunk).map_err(io)?;
            hash.update(&*chunk);
            v.extend(
                chunk
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        buffers.push((entry.name.clone(), Cow::Owned(v)));
    }
    let mut stored = [0u8; HASH_LEN as usize];
    r.read_exact(&mut stored).map_err(io)?;
    if hash.finalize().as_slice() != stored {
        return Err(CheckpointError::Checksum { path: path.clone() });
    }
    Ok(Checkpoint {
        step: header.step,
        meta: header.meta,
        config: header.config,
        tied: header.tied,
        buffers,
    })
}

/// Whether the trailing SHA-256 of `path` matches its contents.
fn whole_file_checksum_ok(path: &Path, file_len: u64) -> std::io::Result<bool> {
    let mut r = BufReader::with_capacity(CHUNK, File::open(path)?);
    let mut hash = Sha256::new();
    let mut left = file_len.saturating_sub(HASH_LEN);
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        r.read_exact(&mut buf[..n])?;
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    let mut stored = [0u8; HASH_LEN as usize];
    r.read_exact(&mut stored)?;
    Ok(hash.finalize().as_slice() == stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::params::splitmix64;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    fn config() -> LlamaConfig {
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

    /// A state whose every bit is a function of `step` (NaN/inf/-0 patterns included).
    fn state(step: u64, len: usize) -> Checkpoint<'static> {
        let buf = |k: u64| -> Vec<f32> {
            (0..len as u64)
                .map(|i| f32::from_bits(splitmix64(step ^ (k << 48) ^ i) as u32))
                .collect()
        };
        Checkpoint {
            step,
            meta: serde_json::json!({"seed": 7, "batch": 4, "optimizer": "adamw", "lr": 3e-4}),
            config: config(),
            tied: true,
            buffers: vec![
                ("params".into(), buf(0).into()),
                ("adam_m".into(), buf(1).into()),
                ("adam_v".into(), buf(2).into()),
            ],
        }
    }

    fn bits(ck: &Checkpoint<'_>) -> Vec<(String, Vec<u32>)> {
        ck.buffers
            .iter()
            .map(|(n, b)| (n.clone(), b.iter().map(|v| v.to_bits()).collect()))
            .collect()
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        let mut ck = state(42, 10_000);
        ck.config.rope_theta = 100000.0;
        ck.config.rms_eps = 1e-6;
        save(&sub, &ck).unwrap();
        let back = load(&sub).unwrap();
        assert_eq!(back.step, 42);
        assert_eq!(back.meta, ck.meta);
        assert_eq!(back.config, ck.config);
        assert_eq!(back.tied, ck.tied);
        assert_eq!(bits(&back), bits(&ck));
        back.check_shape(&ck.config, true).unwrap();
        // Overwriting replaces the state and leaves no temp file behind.
        save(&sub, &state(43, 5)).unwrap();
        assert_eq!(bits(&load(&sub).unwrap()), bits(&state(43, 5)));
        assert!(!sub.join(TEMP_NAME).exists());
    }

    #[test]
    fn missing_checkpoint_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(e, CheckpointError::NotFound { .. }), "{e}");
        assert!(e.to_string().starts_with("no checkpoint in "), "{e}");
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, CheckpointError::NotFound { .. }), "{e}");
    }

    #[test]
    fn truncated_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &state(1, 1000)).unwrap();
        let p = dir.path().join(FILE_NAME);
        let full = fs::read(&p).unwrap();
        for cut in [1, 31, 32, 33, 4000, full.len() - 25, full.len() - 1] {
            fs::write(&p, &full[..full.len() - cut]).unwrap();
            let e = load(dir.path()).unwrap_err();
            assert!(
                matches!(e, CheckpointError::Truncated { .. }),
                "cut {cut}: {e}"
            );
        }
        fs::write(&p, b"").unwrap();
        assert!(matches!(
            load(dir.path()).unwrap_err(),
            CheckpointError::Truncated { .. }
        ));
    }

    #[test]
    fn flipped_byte_is_a_checksum_error() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &state(1, 1000)).unwrap();
        let p = dir.path().join(FILE_NAME);
        let full = fs::read(&p).unwrap();
        let header_len = u64::from_le_bytes(full[12..20].try_into().unwrap()) as usize;
        // In the data, in the stored hash, and in the JSON header (a value and a structural byte).
        let json_step = 20
            + full[20..]
                .windows(6)
                .position(|w| w == b"\"step\"")
                .unwrap()
            + 7;
        for pos in [20 + header_len + 5, full.len() - 1, json_step, 20] {
            let mut b = full.clone();
            b[pos] ^= 0x10;
            fs::write(&p, &b).unwrap();
            let e = load(dir.path()).unwrap_err();
            assert!(
                matches!(e, CheckpointError::Checksum { .. }),
                "byte {pos}: {e}"
            );
            assert!(e.to_string().contains("checksum mismatch"), "{e}");
        }
    }

    #[test]
    fn bad_magic_and_version_are_named() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &state(1, 10)).unwrap();
        let p = dir.path().join(FILE_NAME);
        let full = fs::read(&p).unwrap();
        let mut b = full.clone();
        b[0] = b'X';
        fs::write(&p, &b).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, CheckpointError::BadMagic { .. }), "{e}");
        fs::write(&p, b"GGUF").unwrap();
        assert!(matches!(
            load(dir.path()).unwrap_err(),
            CheckpointError::BadMagic { .. }
        ));
        let mut b = full;
        b[8..12].copy_from_slice(&9u32.to_le_bytes());
        fs::write(&p, &b).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(
            matches!(e, CheckpointError::Version { version: 9, .. }),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("unsupported checkpoint format version 9"),
            "{e}"
        );
    }

    #[test]
    fn other_shape_is_an_error() {
        let ck = state(1, 1);
        ck.check_shape(&config(), true).unwrap();
        let e = ck.check_shape(&config(), false).unwrap_err().to_string();
        assert!(e.contains("tied classifier (checkpoint) vs untied"), "{e}");
        let mut c = config();
        c.dim = 128;
        c.n_layers = 3;
        let e = ck.check_shape(&c, true).unwrap_err().to_string();
        assert!(e.contains("different model"), "{e}");
        assert!(e.contains("n_layers 2 (checkpoint) vs 3 (model)"), "{e}");
        assert!(e.contains("dim 64 (checkpoint) vs 128 (model)"), "{e}");
    }

    const WRITER_ENV: &str = "ESPRESSO_CKPT_KILL_WRITER_DIR";
    const KILL_LEN: usize = 400_000;

    /// Child side of [`kill_9_leaves_a_loadable_checkpoint`]: when started by it (the env var
    /// names a directory), resume from the checkpoint there and save states step+1, step+2, …
    /// until killed (or a deadline, so an orphan never runs forever). Otherwise a no-op.
    #[test]
    fn kill_9_writer_child() {
        let Some(dir) = std::env::var_os(WRITER_ENV) else {
            return;
        };
        let dir = PathBuf::from(dir);
        let mut step = load(&dir).map(|c| c.step).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            step += 1;
            save(&dir, &state(step, KILL_LEN)).unwrap();
        }
    }

    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn kill_9_leaves_a_loadable_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &state(0, KILL_LEN)).unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut rng = 0x5eed_u64 ^ std::process::id() as u64;
        let mut last = 0;
        let mut saw_temp = false;
        for round in 0..8 {
            let child = Command::new(&exe)
                .args([
                    "train::checkpoint::tests::kill_9_writer_child",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(WRITER_ENV, dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut child = KillOnDrop(child);
            rng = splitmix64(rng);
            std::thread::sleep(Duration::from_millis(30 + rng % 400));
            // `Child::kill` is SIGKILL on Unix.
            child.0.kill().unwrap();
            child.0.wait().unwrap();
            saw_temp |= dir.path().join(TEMP_NAME).exists();
            let ck = load(dir.path())
                .unwrap_or_else(|e| panic!("round {round}: checkpoint unreadable after kill: {e}"));
            assert!(
                ck.step >= last,
                "round {round}: step went back {last} -> {}",
                ck.step
            );
            assert_eq!(
                bits(&ck),
                bits(&state(ck.step, KILL_LEN)),
                "round {round}: step {} holds another state's data",
                ck.step
            );
            last = ck.step;
        }
        assert!(last > 0, "the writer never completed a save");
        eprintln!("kill -9: last step {last}, temp file left behind at some kill: {saw_temp}");
        // A leftover temp file does not disturb the next save or load.
        fs::write(dir.path().join(TEMP_NAME), b"garbage").unwrap();
        assert_eq!(load(dir.path()).unwrap().step, last);
        save(dir.path(), &state(last + 1, 3)).unwrap();
        assert_eq!(bits(&load(dir.path()).unwrap()), bits(&state(last + 1, 3)));
    }
}
