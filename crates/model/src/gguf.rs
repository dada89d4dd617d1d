//! GGUF container, versions 2 and 3: a memory-mapped reader and a small writer.
//!
//! Layout: magic `GGUF`, u32 version, u64 tensor count, u64 metadata count, then the metadata
//! key/value pairs, then tensor infos (name, dims with `ne[0]` innermost, type, offset relative to
//! the data section), then padding to `general.alignment` (default 32) and the tensor data.
//! Every length and offset read from the file is bounds-checked: a corrupt file is an error,
//! never a panic.

use crate::quant::GgmlType;
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open {}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a GGUF file (magic bytes are {found:?}, expected \"GGUF\")", .path.display())]
    BadMagic { path: PathBuf, found: String },
    #[error("{}: unsupported GGUF version {version} (supported: 2, 3)", .path.display())]
    Version { path: PathBuf, version: u32 },
    #[error("{}: file is truncated or corrupt: {what} at byte {offset}", .path.display())]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
    },
    #[error("{}: corrupt: {msg}", .path.display())]
    Corrupt { path: PathBuf, msg: String },
    #[error("{}: tensor '{tensor}' has unsupported type code {code} (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)", .path.display())]
    UnsupportedType {
        path: PathBuf,
        tensor: String,
        code: u32,
    },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// Any integer type as u64 (negative values give `None`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v as u64),
            Self::U16(v) => Some(v as u64),
            Self::U32(v) => Some(v as u64),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v as f64),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where a tensor lives and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) axis, e.g. `[in_features, out_features]`.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// An opened, memory-mapped GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    mmap: Bytes,
}

/// Where a file's bytes live: mapped from disk, or owned (a file embedded in a binary).
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                offset: self.pos as u64,
            }),
        }
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let bytes = self.take(len, what)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<MetaValue, GgufError> {
        Ok(match ty {
            0 => MetaValue::U8(self.arr::<1>(key)?[0]),
            1 => MetaValue::I8(self.arr::<1>(key)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.arr(key)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.arr(key)?)),
            4 => MetaValue::U32(self.u32(key)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.arr(key)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.arr(key)?)),
            7 => MetaValue::Bool(self.arr::<1>(key)?[0] != 0),
            8 => MetaValue::Str(self.string(key)?),
            9 => {
                if depth > 4 {
                    return Err(self.corrupt(format!("metadata '{key}': arrays nested too deep")));
                }
                let ety = self.u32(key)?;
                let n = self.u64(key)?;
                // Every element takes at least one byte: a count beyond the file is corrupt.
                if n > (self.buf.len() - self.pos) as u64 {
                    return Err(self.corrupt(format!(
                        "metadata '{key}': array of {n} elements is longer than the file"
                    )));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, key, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.arr(key)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.arr(key)?)),
            t => return Err(self.corrupt(format!("metadata '{key}': unknown value type {t}"))),
        })
    }
    fn corrupt(&self, msg: String) -> GgufError {
        GgufError::Corrupt {
            path: self.path.to_path_buf(),
            msg,
        }
    }
}

impl GgufFile {
    /// Open and validate a GGUF file. Tensor data is memory-mapped, not read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the file is opened read-only; like every mmap-based model loader we assume it
        // is not truncated by another process while mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, Bytes::Mapped(mmap))
    }

    /// Hold the file's bytes in anonymous memory backed by transparent huge pages (on Linux,
    /// where the kernel offers them for memory that asks) instead of reading them through the
    /// file mapping. Every decode step streams all the weights; through the 4 KB pages of a
    /// file mapping that is a page walk per 4 KB (seed shape F32, 268 MB per token: decode
    /// ~15-17 -> ~13-14 ms/token on 2 threads, alternating). Reads the whole file now (and
    /// the kernel zeroes the pages first); the memory is the process's own, as with a mapping
    /// that has been read once. Does nothing elsewhere, or for a file already held in memory.
    pub fn make_resident(&mut self) -> Result<(), GgufError> {
        #[cfg(target_os = "linux")]
        if let Bytes::Mapped(mapped) = &self.mmap {
            let io = |source| GgufError::Io {
                path: self.path.clone(),
                source,
            };
            let mut anon = memmap2::MmapMut::map_anon(mapped.len()).map_err(io)?;
            // Only a hint: without huge pages the copy is still as good as the mapping.
            let _ = anon.advise(memmap2::Advice::HugePage);
            anon.copy_from_slice(mapped);
            self.mmap = Bytes::Mapped(anon.make_read_only().map_err(io)?);
        }
        Ok(())
    }

    /// Parse and validate a GGUF file held in memory (e.g. embedded in the binary); `path`
    /// only names it in messages.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(path.into(), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, mmap: Bytes) -> Result<Self, GgufError> {
        let mut c = Cursor {
            buf: &mmap,
            pos: 0,
            path: &path,
        };
        let magic = c.take(4, "magic").map_err(|_| GgufError::BadMagic {
            path: path.clone(),
            found: String::from_utf8_lossy(&mmap[..mmap.len().min(4)]).into_owned(),
        })?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic {
                path: path.clone(),
                found: String::from_utf8_lossy(magic).into_owned(),
            });
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version { path, version });
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        let remaining = (mmap.len() - c.pos) as u64;
        if n_tensors > remaining || n_kv > remaining {
            return Err(c.corrupt(format!(
                "header claims {n_tensors} tensors and {n_kv} metadata entries, more than the file can hold"
            )));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let alignment = match metadata.get("general.alignment") {
            Some(v) => v
                .as_u64()
                .filter(|a| *a > 0 && a.is_power_of_two())
                .ok_or_else(|| {
                    c.corrupt(format!("general.alignment {v:?} is not a power of two"))
                })?,
            None => DEFAULT_ALIGNMENT,
        };
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32(&name)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(c.corrupt(format!("tensor '{name}' has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&name)?);
            }
            let code = c.u32(&name)?;
            let offset = c.u64(&name)?;
            raw.push((name, dims, code, offset));
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = mmap.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, code, offset) in raw {
            let ty = GgmlType::from_code(code).ok_or_else(|| GgufError::UnsupportedType {
                path: path.clone(),
                tensor: name.clone(),
                code,
            })?;
            let n = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| c.corrupt(format!("tensor '{name}': dims {dims:?} overflow")))?;
            // ggml stores whole blocks per row (dims[0] is the row length).
            if dims[0] % ty.block_elems() as u64 != 0 {
                return Err(c.corrupt(format!(
                    "tensor '{name}': rows of {} elements are not a whole number of {} blocks ({})",
                    dims[0],
                    ty.name(),
                    ty.block_elems()
                )));
            }
            let n_bytes = ty.bytes_for(n).ok_or_else(|| {
                c.corrupt(format!(
                    "tensor '{name}': {n} elements is not a whole number of {} blocks",
                    ty.name()
                ))
            })?;
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(n_bytes));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => tensors.push(TensorInfo {
                    name,
                    dims,
                    ty,
                    offset: start,
                    n_bytes,
                }),
                _ => {
                    return Err(GgufError::Truncated {
                        path: path.clone(),
                        what: format!("data of tensor '{name}' ({n_bytes} bytes)"),
                        offset: data_start.saturating_add(offset),
                    })
                }
            }
        }
        Ok(Self {
            path,
            version,
            metadata,
            tensors,
            alignment,
            mmap,
        })
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw (still quantized) bytes of a tensor.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        // Bounds were validated in `parse`.
        &self.mmap[info.offset as usize..(info.offset + info.n_bytes) as usize]
    }
}

/// A tensor to be written by [`write_gguf`]: raw bytes already in `ty`'s layout.
pub struct WriteTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub data: Vec<u8>,
}

fn write_str(w: &mut Vec<u8>, s: &str) {
    w.extend((s.len() as u64).to_le_bytes());
    w.extend(s.as_bytes());
}

fn write_value(w: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => w.push(*x),
        MetaValue::I8(x) => w.push(*x as u8),
        MetaValue::U16(x) => w.extend(x.to_le_bytes()),
        MetaValue::I16(x) => w.extend(x.to_le_bytes()),
        MetaValue::U32(x) => w.extend(x.to_le_bytes()),
        MetaValue::I32(x) => w.extend(x.to_le_bytes()),
        MetaValue::F32(x) => w.extend(x.to_le_bytes()),
        MetaValue::Bool(x) => w.push(*x as u8),
        MetaValue::Str(s) => write_str(w, s),
        MetaValue::Array(a) => {
            let ety = a.first().map(value_type).unwrap_or(4);
            w.extend(ety.to_le_bytes());
            w.extend((a.len() as u64).to_le_bytes());
            a.iter().for_each(|x| write_value(w, x));
        }
        MetaValue::U64(x) => w.extend(x.to_le_bytes()),
        MetaValue::I64(x) => w.extend(x.to_le_bytes()),
        MetaValue::F64(x) => w.extend(x.to_le_bytes()),
    }
}

fn value_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::Str(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

/// Serialize a GGUF v3 file (alignment 32) into `out`.
pub fn write_gguf(
    out: &mut impl Write,
    metadata: &[(String, MetaValue)],
    tensors: &[WriteTensor],
) -> std::io::Result<()> {
    let mut w = Vec::new();
    w.extend(MAGIC);
    w.extend(3u32.to_le_bytes());
    w.extend((tensors.len() as u64).to_le_bytes());
    w.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        write_str(&mut w, k);
        w.extend(value_type(v).to_le_bytes());
        write_value(&mut w, v);
    }
    let mut offset = 0u64;
    for t in tensors {
        write_str(&mut w, &t.name);
        w.extend((t.dims.len() as u32).to_le_bytes());
        t.dims.iter().for_each(|d| w.extend(d.to_le_bytes()));
        w.extend(t.ty.code().to_le_bytes());
        w.extend(offset.to_le_bytes());
        offset = (offset + t.data.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    }
    w.resize(
        w.len().div_ceil(DEFAULT_ALIGNMENT as usize) * DEFAULT_ALIGNMENT as usize,
        0,
    );
    out.write_all(&w)?;
    for t in tensors {
        out.write_all(&t.data)?;
        let pad = t.data.len().div_ceil(DEFAULT_ALIGNMENT as usize) * DEFAULT_ALIGNMENT as usize
            - t.data.len();
        out.write_all(&vec![0u8; pad])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, quantize};

    fn sample() -> Vec<u8> {
        let meta = vec![
            (
                "general.architecture".to_string(),
                MetaValue::Str("llama".into()),
            ),
            ("a.u32".to_string(), MetaValue::U32(7)),
            ("a.f32".to_string(), MetaValue::F32(0.5)),
            ("a.bool".to_string(), MetaValue::Bool(true)),
            ("a.i64".to_string(), MetaValue::I64(-3)),
            ("a.f64".to_string(), MetaValue::F64(2.25)),
            ("a.u8".to_string(), MetaValue::U8(1)),
            ("a.i8".to_string(), MetaValue::I8(-1)),
            ("a.u16".to_string(), MetaValue::U16(9)),
            ("a.i16".to_string(), MetaValue::I16(-9)),
            ("a.i32".to_string(), MetaValue::I32(-90)),
            ("a.u64".to_string(), MetaValue::U64(1 << 40)),
            (
                "a.arr".to_string(),
                MetaValue::Array(vec![
                    MetaValue::Str("x".into()),
                    MetaValue::Str("yz".into()),
                ]),
            ),
        ];
        let vals: Vec<f32> = (0..64).map(|i| i as f32 / 8.0 - 4.0).collect();
        let tensors = vec![
            WriteTensor {
                name: "q".into(),
                dims: vec![32, 2],
                ty: GgmlType::Q4_1,
                data: quantize(GgmlType::Q4_1, &vals),
            },
            WriteTensor {
                name: "f".into(),
                dims: vec![3],
                ty: GgmlType::F32,
                data: quantize(GgmlType::F32, &[1.0, 2.0, 3.0]),
            },
        ];
        let mut buf = Vec::new();
        write_gguf(&mut buf, &meta, &tensors).unwrap();
        buf
    }

    fn open_bytes(bytes: &[u8]) -> Result<GgufFile, GgufError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        std::fs::write(&p, bytes).unwrap();
        GgufFile::open(&p)
    }

    #[test]
    fn round_trip_all_metadata_types_and_tensors() {
        let f = open_bytes(&sample()).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.get("a.u32"), Some(&MetaValue::U32(7)));
        assert_eq!(f.get("a.i64"), Some(&MetaValue::I64(-3)));
        assert_eq!(f.get("a.f64").and_then(|v| v.as_f64()), Some(2.25));
        assert_eq!(
            f.get("a.arr").and_then(|v| v.as_array()).map(|a| a.len()),
            Some(2)
        );
        let q = f.tensor_info("q").unwrap();
        assert_eq!(q.ty, GgmlType::Q4_1);
        assert_eq!(q.offset % 32, 0);
        let mut out = vec![0f32; 64];
        dequantize(q.ty, f.tensor_data(q), &mut out);
        assert!((out[0] + 4.0).abs() < 0.3 && (out[63] - 3.875).abs() < 0.3);
        let t = f.tensor_info("f").unwrap();
        let mut out = vec![0f32; 3];
        dequantize(t.ty, f.tensor_data(t), &mut out);
        assert_eq!(out, [1.0, 2.0, 3.0]);
    }

    /// A file made resident holds the same bytes at the same offsets, no longer through the
    /// file: changing the file afterwards does not change what the model reads.
    #[test]
    fn a_resident_file_keeps_its_bytes_and_leaves_the_file() {
        let bytes = sample();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        std::fs::write(&p, &bytes).unwrap();
        let mut f = GgufFile::open(&p).unwrap();
        let q = f.tensor_info("q").unwrap().clone();
        let before = f.tensor_data(&q).to_vec();
        f.make_resident().unwrap();
        assert_eq!(f.tensor_data(&q), &before[..]);
        assert_eq!(&f.mmap[..], &bytes[..]);
        if cfg!(target_os = "linux") {
            // Rewritten in place (same inode): a file mapping would show the new bytes.
            let mut changed = bytes.clone();
            for b in changed.iter_mut().rev().take(8) {
                *b ^= 0xff;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|mut h| std::io::Write::write_all(&mut h, &changed))
                .unwrap();
            assert_eq!(&f.mmap[..], &bytes[..], "resident bytes follow the file");
        }
    }

    #[test]
    fn wrong_magic_is_named() {
        let mut b = sample();
        b[..4].copy_from_slice(b"GGML");
        let e = open_bytes(&b).unwrap_err().to_string();
        assert!(e.contains("not a GGUF file"), "{e}");
    }

    #[test]
    fn truncated_file_is_an_error_at_every_length() {
        let b = sample();
        // The last 20 bytes are the final tensor's alignment padding, which no reader needs.
        for len in (0..b.len() - 20).step_by(7) {
            let e = open_bytes(&b[..len]).unwrap_err().to_string();
            assert!(
                e.contains("truncated") || e.contains("not a GGUF") || e.contains("corrupt"),
                "len {len}: {e}"
            );
        }
    }

    #[test]
    fn unknown_tensor_type_is_named() {
        let mut b = sample();
        // The first tensor info's type field: find "q" name then skip dims.
        let pos = b
            .windows(9)
            .position(|w| w == b"\x01\0\0\0\0\0\0\0q")
            .unwrap()
            + 9;
        let ty_pos = pos + 4 + 16;
        b[ty_pos..ty_pos + 4].copy_from_slice(&16u32.to_le_bytes());
        let e = open_bytes(&b).unwrap_err().to_string();
        assert!(e.contains("unsupported type code 16"), "{e}");
    }

    /// K-quant rows must be whole 256-element blocks: a clear error, not a panic later.
    #[test]
    fn k_quant_rows_must_be_whole_blocks() {
        let mut b = sample();
        let pos = b
            .windows(9)
            .position(|w| w == b"\x01\0\0\0\0\0\0\0q")
            .unwrap()
            + 9;
        let ty_pos = pos + 4 + 16;
        b[ty_pos..ty_pos + 4].copy_from_slice(&12u32.to_le_bytes());
        let e = open_bytes(&b).unwrap_err().to_string();
        assert!(
            e.contains("rows of 32 elements are not a whole number of Q4_K blocks (256)"),
            "{e}"
        );
    }

    #[test]
    fn bad_version_is_named() {
        let mut b = sample();
        b[4..8].copy_from_slice(&9u32.to_le_bytes());
        let e = open_bytes(&b).unwrap_err().to_string();
        assert!(e.contains("unsupported GGUF version 9"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        #[test]
        fn never_panics_on_mutated_input(idx in 0usize..2000, byte in 0u8..=255, cut in 0usize..2000) {
            let mut b = sample();
            let i = idx % b.len();
            b[i] = byte;
            b.truncate(b.len() - cut % b.len());
            let _ = open_bytes(&b);
        }
    }
}
