//! `espresso bench --vs coreml MODEL.mlpackage`: the argument checks, and the plain error on
//! systems without CoreML (the comparison itself needs macOS 15+).

use std::process::{Command, Output};

fn espresso(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_espresso"))
        .args(args)
        .output()
        .expect("run espresso")
}

/// Non-zero exit, one `error:` line mentioning `needle`, no panic.
fn assert_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains(needle),
        "should mention {needle:?}: {stderr}"
    );
}

#[test]
fn only_coreml_and_only_the_ane_backends_are_compared() {
    let out = espresso(&["bench", "--backend", "ane", "--vs", "onnx", "m.onnx"]);
    assert_error(&out, "only `coreml` is supported");
    let out = espresso(&["bench", "--backend", "cpu", "--vs", "coreml", "m.mlpackage"]);
    assert_error(&out, "use --backend ane");
}

#[cfg(not(target_vendor = "apple"))]
#[test]
fn without_coreml_the_error_says_what_is_needed() {
    for backend in ["ane", "ane-sim"] {
        let out = espresso(&[
            "bench",
            "--backend",
            backend,
            "--vs",
            "coreml",
            "m.mlpackage",
        ]);
        assert_error(&out, "CoreML is not available on this system");
        assert_error(&out, "macOS 15");
    }
}

#[cfg(target_vendor = "apple")]
#[test]
fn a_missing_package_is_named() {
    let out = espresso(&[
        "bench",
        "--backend",
        "ane",
        "--vs",
        "coreml",
        "/nonexistent/m.mlpackage",
    ]);
    assert_error(&out, "/nonexistent/m.mlpackage: no such CoreML package");
}
