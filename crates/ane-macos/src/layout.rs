//! Weight dictionary and on-disk model directory of one kernel (reference §2.3 steps 2, 9, 13
//! and §2.8–§2.9).
//!
//! The framework is given a dictionary `{ "@model_path/<rel>": { "offset": 0, "data": blob } }`
//! and compiles from a tree it reads under `NSTemporaryDirectory()/<hexId>/`:
//!
//! ```text
//! <tmp>/<hexId>/model.mil          MIL text (UTF-8)
//! <tmp>/<hexId>/weights/           always created
//! <tmp>/<hexId>/<rel>              one file per weight key "@model_path/<rel>"
//! <tmp>/<hexId>/net.plist          written by the compiler service
//! ```
//!
//! The compiled `net.plist` is persisted as `<cacheRoot>/<hexId>/net.plist`; a later load of the
//! same program (or a donor reload with new weights) copies it back instead of compiling.

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use ane::device::{validate_weight_path, DeviceError, KernelSpec, MODEL_PATH_PREFIX};

/// MIL file name inside the model directory.
pub const MODEL_MIL_FILE: &str = "model.mil";
/// Weight directory inside the model directory (always created).
pub const WEIGHTS_DIR: &str = "weights";
/// Compiled program description written by the compiler service.
pub const NET_PLIST: &str = "net.plist";
/// Inner dictionary key of the blob bytes.
pub const DATA_KEY: &str = "data";
/// Inner dictionary key of the offset into the blob (always 0; the MIL-side `offset=uint64(64)`
/// is a position inside the blob file).
pub const OFFSET_KEY: &str = "offset";

/// One weight dictionary entry: `key → { "offset": offset, "data": data }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightEntry<'a> {
    /// `"@model_path/weights/x.bin"`.
    pub key: &'a str,
    /// Always 0.
    pub offset: u64,
    /// The whole BLOBFILE.
    pub data: &'a [u8],
}

/// The weight dictionary of `spec`, after the bridge's argument checks (§2.3 step 1). An empty
/// list means "pass an empty dictionary, never nil".
pub fn weight_dictionary(spec: &KernelSpec) -> Result<Vec<WeightEntry<'_>>, DeviceError> {
    spec.validate_arguments()?;
    Ok(spec
        .weights
        .iter()
        .map(|(key, data)| WeightEntry {
            key,
            offset: 0,
            data,
        })
        .collect())
}

/// The relative file path a weight key names inside the model directory
/// (`"@model_path/weights/x.bin"` → `weights/x.bin`).
pub fn weight_file(key: &str) -> Result<PathBuf, DeviceError> {
    validate_weight_path(key)?;
    let rel = &key[MODEL_PATH_PREFIX.len()..];
    let path = PathBuf::from(rel);
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(DeviceError::InvalidArgument(format!(
            "weight path {key:?} does not stay inside the model directory"
        )));
    }
    Ok(path)
}

/// Check a framework-supplied `hexStringIdentifier` before using it as a directory name:
/// non-empty ASCII letters, digits, `_` or `-` only.
pub fn check_hex_id(hex_id: &str) -> Result<(), DeviceError> {
    let ok = !hex_id.is_empty()
        && hex_id.len() <= 255
        && hex_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(DeviceError::InvalidArgument(format!(
            "model identifier {hex_id:?} is not a plain directory name"
        )))
    }
}

/// `<tmp>/<hexId>`: the directory the framework compiles from.
pub fn model_dir(tmp: &Path, hex_id: &str) -> Result<PathBuf, DeviceError> {
    check_hex_id(hex_id)?;
    Ok(tmp.join(hex_id))
}

/// One file of the model tree: path relative to the model directory and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile<'a> {
    pub rel: PathBuf,
    pub bytes: &'a [u8],
}

/// Every file of the model tree of `spec`, `model.mil` first (`mil_text`: the printed program,
/// printed once by the caller), then the weights in spec order.
pub fn plan_model_tree<'a>(
    spec: &'a KernelSpec,
    mil_text: &'a str,
) -> Result<Vec<PlannedFile<'a>>, DeviceError> {
    let entries = weight_dictionary(spec)?;
    let mut files = vec![PlannedFile {
        rel: PathBuf::from(MODEL_MIL_FILE),
        bytes: mil_text.as_bytes(),
    }];
    for e in entries {
        let rel = weight_file(e.key)?;
        if rel == Path::new(MODEL_MIL_FILE) || rel == Path::new(NET_PLIST) {
            return Err(DeviceError::InvalidArgument(format!(
                "weight path {:?} would overwrite {}",
                e.key,
                rel.display()
            )));
        }
        files.push(PlannedFile { rel, bytes: e.data });
    }
    Ok(files)
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> DeviceError {
    DeviceError::Compile {
        diagnostics: vec![format!("{what} {}: {e}", path.display())],
    }
}

/// Write `bytes` to `path` atomically (temporary sibling, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DeviceError> {
    let name = path.file_name().ok_or_else(|| {
        DeviceError::InvalidArgument(format!("{} has no file name", path.display()))
    })?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("cannot write", path, e)
    })
}

/// Write the model tree of `spec` under `dir` (created if missing; `weights/` always created).
/// Every written path is re-checked to stay inside `dir`.
pub fn materialize_model_tree(
    dir: &Path,
    spec: &KernelSpec,
    mil_text: &str,
) -> Result<(), DeviceError> {
    let files = plan_model_tree(spec, mil_text)?;
    fs::create_dir_all(dir.join(WEIGHTS_DIR)).map_err(|e| io_err("cannot create", dir, e))?;
    for f in files {
        let path = dir.join(&f.rel);
        if !path.starts_with(dir) {
            return Err(DeviceError::InvalidArgument(format!(
                "{} escapes the model directory",
                f.rel.display()
            )));
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io_err("cannot create", parent, e))?;
        }
        write_atomic(&path, f.bytes)?;
    }
    Ok(())
}

/// `<cacheRoot>/<hexId>/net.plist`.
pub fn cached_plist(cache_root: &Path, hex_id: &str) -> Result<PathBuf, DeviceError> {
    check_hex_id(hex_id)?;
    Ok(cache_root.join(hex_id).join(NET_PLIST))
}

/// Copy the compiled `net.plist` of `model_dir` into the cache (atomically). Non-fatal on
/// hardware: the caller may ignore the error.
pub fn persist_net_plist(
    model_dir: &Path,
    cache_root: &Path,
    hex_id: &str,
) -> Result<PathBuf, DeviceError> {
    let src = model_dir.join(NET_PLIST);
    let dst = cached_plist(cache_root, hex_id)?;
    let bytes = fs::read(&src).map_err(|e| io_err("cannot read", &src, e))?;
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(|e| io_err("cannot create", parent, e))?;
    }
    write_atomic(&dst, &bytes)?;
    Ok(dst)
}

/// Copy the cached `net.plist` of `donor_hex_id` into `model_dir` (load without compiling,
/// §2.8 / donor reload §2.9). `Ok(false)` when the cache has no such entry.
pub fn restore_net_plist(
    cache_root: &Path,
    donor_hex_id: &str,
    model_dir: &Path,
) -> Result<bool, DeviceError> {
    let src = cached_plist(cache_root, donor_hex_id)?;
    if !src.is_file() {
        return Ok(false);
    }
    let bytes = fs::read(&src).map_err(|e| io_err("cannot read", &src, e))?;
    write_atomic(&model_dir.join(NET_PLIST), &bytes)?;
    Ok(true)
}

/// Where compiled programs are cached: `ANE_INTEROP_CACHE_ROOT` if set, else
/// `<home>/Library/Caches/espresso-ane`.
pub fn default_cache_root(
    env: impl Fn(&str) -> Option<String>,
    home: Option<PathBuf>,
) -> Option<PathBuf> {
    if let Some(root) = env("ANE_INTEROP_CACHE_ROOT").filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(root));
    }
    home.map(|h| h.join("Library").join("Caches").join("espresso-ane"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed on drop (the crate has no `tempfile` dev-dependency).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("ane-hw-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const MIL: &str =
        "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4]> x) {\n    } -> (x);\n}\n";

    fn spec(weights: &[(&str, &[u8])]) -> KernelSpec {
        KernelSpec {
            program: mil::parse(MIL).expect("test program parses"),
            weights: weights
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            input_bytes: vec![64],
            output_bytes: vec![64],
        }
    }

    #[test]
    fn dictionary_keys_are_the_paths_with_inner_offset_zero() {
        let s = spec(&[
            ("@model_path/weights/wq.bin", &[1, 2, 3]),
            ("@model_path/weights/wk.bin", &[4]),
        ]);
        let d = weight_dictionary(&s).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].key, "@model_path/weights/wq.bin");
        assert_eq!(d[0].data, &[1, 2, 3]);
        assert_eq!(d[1].key, "@model_path/weights/wk.bin");
        assert!(d.iter().all(|e| e.offset == 0));
        // Weight-free programs get an empty dictionary, not an error.
        assert!(weight_dictionary(&spec(&[])).unwrap().is_empty());
    }

    #[test]
    fn dictionary_rejects_bad_and_duplicate_paths() {
        for bad in [
            "weights/x.bin",
            "@model_path/../x.bin",
            "@model_path//abs.bin",
            "@model_path/weights/./x.bin",
            "/@model_path/x.bin",
        ] {
            let s = spec(&[(bad, &[0])]);
            let r = weight_dictionary(&s);
            assert!(
                matches!(r, Err(DeviceError::InvalidArgument(_))),
                "{bad}: {r:?}"
            );
        }
        let dup = spec(&[
            ("@model_path/weights/a.bin", &[0]),
            ("@model_path/weights/a.bin", &[1]),
        ]);
        assert!(matches!(
            weight_dictionary(&dup),
            Err(DeviceError::DuplicateWeightPath(_))
        ));
    }

    #[test]
    fn weight_keys_map_to_relative_files() {
        assert_eq!(
            weight_file("@model_path/weights/wq.bin").unwrap(),
            PathBuf::from("weights/wq.bin")
        );
        assert_eq!(
            weight_file("@model_path/a/b/c.bin").unwrap(),
            PathBuf::from("a/b/c.bin")
        );
        assert!(weight_file("@model_path/a/../../etc/passwd").is_err());
        assert!(weight_file("@model_path/").is_err());
    }

    #[test]
    fn tree_plan_puts_mil_first_and_refuses_to_overwrite_it() {
        let s = spec(&[("@model_path/weights/w.bin", &[9, 9])]);
        let plan = plan_model_tree(&s, MIL).unwrap();
        assert_eq!(plan[0].rel, PathBuf::from("model.mil"));
        assert_eq!(plan[0].bytes, MIL.as_bytes());
        assert_eq!(plan[1].rel, PathBuf::from("weights/w.bin"));
        assert_eq!(plan[1].bytes, &[9, 9]);
        for clash in ["@model_path/model.mil", "@model_path/net.plist"] {
            assert!(
                plan_model_tree(&spec(&[(clash, &[0])]), MIL).is_err(),
                "{clash}"
            );
        }
    }

    #[test]
    fn hex_ids_must_be_plain_names() {
        assert!(check_hex_id("A1B2c3_d-4").is_ok());
        for bad in ["", "..", "a/b", "a\\b", "x y", "é"] {
            assert!(check_hex_id(bad).is_err(), "{bad:?}");
        }
        let tmp = Path::new("/tmp/x");
        assert_eq!(model_dir(tmp, "abc").unwrap(), tmp.join("abc"));
        assert!(model_dir(tmp, "../abc").is_err());
    }

    #[test]
    fn materialized_tree_matches_the_reference_layout() {
        let root = Scratch::new("tree");
        let dir = model_dir(root.path(), "0123abcd").unwrap();
        let s = spec(&[
            ("@model_path/weights/wq.bin", &[1, 2, 3, 4]),
            ("@model_path/extra/deep/b.bin", &[5]),
        ]);
        materialize_model_tree(&dir, &s, MIL).unwrap();
        assert_eq!(fs::read(dir.join("model.mil")).unwrap(), MIL.as_bytes());
        assert_eq!(fs::read(dir.join("weights/wq.bin")).unwrap(), [1, 2, 3, 4]);
        assert_eq!(fs::read(dir.join("extra/deep/b.bin")).unwrap(), [5]);
        // No temporary files are left behind.
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["extra", "model.mil", "weights"]);
        // A weight-free program still gets `weights/`.
        let empty = model_dir(root.path(), "feed").unwrap();
        materialize_model_tree(&empty, &spec(&[]), MIL).unwrap();
        assert!(empty.join("weights").is_dir());
        assert_eq!(fs::read_dir(empty.join("weights")).unwrap().count(), 0);
    }

    #[test]
    fn net_plist_round_trips_through_the_cache() {
        let root = Scratch::new("plist");
        let cache = root.path().join("cache");
        let donor_dir = root.path().join("donor");
        fs::create_dir_all(&donor_dir).unwrap();
        fs::write(donor_dir.join(NET_PLIST), b"<plist>compiled</plist>").unwrap();
        let at = persist_net_plist(&donor_dir, &cache, "D0").unwrap();
        assert_eq!(at, cache.join("D0").join("net.plist"));
        let new_dir = root.path().join("new");
        fs::create_dir_all(&new_dir).unwrap();
        assert!(restore_net_plist(&cache, "D0", &new_dir).unwrap());
        assert_eq!(
            fs::read(new_dir.join(NET_PLIST)).unwrap(),
            b"<plist>compiled</plist>"
        );
        assert!(!restore_net_plist(&cache, "missing", &new_dir).unwrap());
        // Without a compiled plist there is nothing to persist.
        assert!(persist_net_plist(&new_dir.join("nope"), &cache, "E0").is_err());
    }

    #[test]
    fn cache_root_prefers_the_override() {
        let env = |k: &str| (k == "ANE_INTEROP_CACHE_ROOT").then(|| "/x/cache".to_string());
        assert_eq!(
            default_cache_root(env, Some("/home/u".into())),
            Some(PathBuf::from("/x/cache"))
        );
        assert_eq!(
            default_cache_root(|_| None, Some("/home/u".into())),
            Some(PathBuf::from("/home/u/Library/Caches/espresso-ane"))
        );
        assert_eq!(default_cache_root(|_| None, None), None);
    }
}
