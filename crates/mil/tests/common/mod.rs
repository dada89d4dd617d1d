//! Shared test helpers: locating the reference fixtures.
#![allow(dead_code)]

use std::path::PathBuf;

/// The reference fixtures: `<repo>/fixtures/espresso-fixtures` (vendored, MIT, see its NOTICE.md),
/// else `<repo>/../shared/reference/espresso-fixtures`; failing loudly when neither exists.
pub fn fixtures_dir() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = [
        repo.join("fixtures/espresso-fixtures"),
        repo.join("../shared/reference/espresso-fixtures"),
    ];
    candidates
        .iter()
        .find(|d| d.is_dir())
        .cloned()
        .unwrap_or_else(|| panic!("reference fixtures not found at {:?}", candidates))
}

/// All `.mil` fixtures, sorted.
pub fn mil_fixtures() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = fixtures_dir().join("Tests");
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read fixture dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "mil") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A file from `Tests/MILGeneratorTests/Fixtures`.
pub fn generator_fixture_path(name: &str) -> PathBuf {
    fixtures_dir()
        .join("Tests/MILGeneratorTests/Fixtures")
        .join(name)
}

pub fn read_generator_fixture(name: &str) -> String {
    let path = generator_fixture_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn read_generator_fixture_bytes(name: &str) -> Vec<u8> {
    let path = generator_fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
