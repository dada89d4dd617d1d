//! Adapter to the `mil` crate's validator: the simulator's compile step fails on exactly the
//! programs the validator marks as errors (known ANE compile failures and silent-wrong-data
//! traps), carrying its diagnostics.

use std::collections::HashSet;

use mil::ast::Program;
use mil::{validate, Diagnostic, Severity, ValidateOptions};

/// Every validator diagnostic for `program`; `weight_paths` (when given) enables the
/// unknown-weight-path check.
pub fn diagnostics(program: &Program, weight_paths: Option<&HashSet<String>>) -> Vec<Diagnostic> {
    let opts = ValidateOptions {
        weight_paths,
        ..Default::default()
    };
    validate(program, &opts)
}

/// Error-severity diagnostics as display lines.
pub fn errors(program: &Program, weight_paths: Option<&HashSet<String>>) -> Vec<String> {
    diagnostics(program, weight_paths)
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect()
}
