//! Mapping of bridge failures to [`DeviceError`] (reference §2.3 error codes, §2.6, §3.3).
//!
//! The framework reports failures as a `BOOL NO` plus an optional `NSError` (domain, code,
//! localized description); evaluation failures carry `status=0x..` / `statusType=0x..` in the
//! description. Each failure becomes the [`DeviceError`] variant of its class, with text that
//! says what probably went wrong and what to do.

use ane::device::DeviceError;

/// The bridge's last-compile-error codes (§2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeCode {
    None = 0,
    InvalidArguments = 1,
    DuplicateWeightPath = 2,
    SurfaceAllocation = 3,
    CompilerFailure = 4,
}

impl BridgeCode {
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => Self::None,
            1 => Self::InvalidArguments,
            2 => Self::DuplicateWeightPath,
            3 => Self::SurfaceAllocation,
            4 => Self::CompilerFailure,
            _ => return None,
        })
    }

    /// The code a [`DeviceError`] corresponds to (for logs and for the retry policy).
    pub fn of(err: &DeviceError) -> Self {
        match err {
            DeviceError::InvalidArgument(_) => Self::InvalidArguments,
            DeviceError::DuplicateWeightPath(_) => Self::DuplicateWeightPath,
            DeviceError::SurfaceAllocation { .. } => Self::SurfaceAllocation,
            DeviceError::Compile { .. } | DeviceError::Unavailable(_) => Self::CompilerFailure,
            _ => Self::None,
        }
    }
}

/// Which bridge call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `+[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:]` returned nil.
    Descriptor,
    /// `+[_ANEInMemoryModel inMemoryModelWithDescriptor:]` returned nil.
    Model,
    /// `-compileWithQoS:options:error:`.
    Compile,
    /// `-loadWithQoS:options:error:`.
    Load,
    /// Building the `_ANERequest` (no factory selector answered, or it returned nil).
    Request,
    /// `-evaluateWithQoS:options:request:error:`.
    Eval,
    /// `-unloadWithQoS:error:`.
    Unload,
}

impl Stage {
    fn call(self) -> &'static str {
        match self {
            Stage::Descriptor => "modelWithMILText:weights:optionsPlist:",
            Stage::Model => "inMemoryModelWithDescriptor:",
            Stage::Compile => "compileWithQoS:options:error:",
            Stage::Load => "loadWithQoS:options:error:",
            Stage::Request => "_ANERequest factory",
            Stage::Eval => "evaluateWithQoS:options:request:error:",
            Stage::Unload => "unloadWithQoS:error:",
        }
    }
}

/// The parts of an `NSError` the mapping uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NsErrorInfo {
    pub domain: String,
    pub code: i64,
    pub description: String,
}

/// Parse a hexadecimal or decimal number at the start of `s` (`0x1d`, `29`).
fn parse_number(s: &str) -> Option<u32> {
    let s = s.trim_start();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let end = hex
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(hex.len());
        u32::from_str_radix(&hex[..end], 16).ok()
    } else {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    }
}

/// `key=value` (or `key = value`, `key: value`) in `text`, value parsed as a number.
fn find_value(text: &str, key: &str) -> Option<u32> {
    let mut rest = text;
    while let Some(at) = rest.find(key) {
        let after = &rest[at + key.len()..];
        let after = after.trim_start();
        if let Some(v) = after
            .strip_prefix('=')
            .or_else(|| after.strip_prefix(':'))
            .and_then(parse_number)
        {
            return Some(v);
        }
        rest = &rest[at + key.len()..];
    }
    None
}

/// `(status, statusType)` from an evaluation error description, e.g.
/// `"... status=0x1d statusType=0x9: Program Inference error"` → `(0x1d, Some(0x9))`.
pub fn parse_status(description: &str) -> Option<(u32, Option<u32>)> {
    // `statusType` contains `status`: look for the longer key first and mask it out.
    let status_type = find_value(description, "statusType");
    let masked = description.replace("statusType", "_");
    let status = find_value(&masked, "status")?;
    Some((status, status_type))
}

/// Known meanings of evaluation status values.
pub fn explain_status(status: u32, status_type: Option<u32>) -> String {
    let kind = match status_type {
        Some(0x9) => " (statusType=0x9: Program Inference error)".to_string(),
        Some(t) => format!(" (statusType={t:#x})"),
        None => String::new(),
    };
    match status {
        0x1d => format!(
            "I/O surface below minimum size (status=0x1d){kind}: the ANE rejects I/O surfaces \
             smaller than about 49,152 bytes (e.g. [768, 32] fp16) and kernels whose inputs or \
             outputs differ in size; pad the spatial axis to 32 lanes and give all inputs (and \
             all outputs) of a kernel equal sizes (run `espresso doctor` to see the minimum here)"
        ),
        s => format!("evaluation failed with status={s:#x}{kind}"),
    }
}

fn describe(info: &NsErrorInfo) -> String {
    format!(
        "{} (domain {}, code {})",
        info.description, info.domain, info.code
    )
}

/// The [`DeviceError`] for a failed bridge call. `info` is the `NSError`, if the framework set
/// one.
pub fn map_failure(stage: Stage, info: Option<&NsErrorInfo>) -> DeviceError {
    let what = match info {
        Some(i) => describe(i),
        None => "no NSError was returned".to_string(),
    };
    match stage {
        Stage::Descriptor | Stage::Model => DeviceError::Compile {
            diagnostics: vec![
                format!("{} returned nil: {what}", stage.call()),
                "hint: the MIL text must parse (milText is passed as NSData) and every BLOBFILE \
                 path must be in the weight dictionary"
                    .into(),
            ],
        },
        Stage::Compile | Stage::Load => {
            let mut diagnostics = vec![format!("{} failed: {what}", stage.call())];
            diagnostics.push(
                "hint: the ANE compiler rejects some ops and shapes that MIL allows (see \
                 ane-reference §11.7-§11.8); after ~119 compiles in one process every compile \
                 fails, so restart the process if many kernels were compiled"
                    .into(),
            );
            DeviceError::Compile { diagnostics }
        }
        Stage::Request => DeviceError::Eval(format!(
            "cannot build an _ANERequest: {what}; this macOS release may have changed the \
             private selectors (run `espresso doctor`)"
        )),
        Stage::Eval => match info.and_then(|i| parse_status(&i.description)) {
            Some((status, ty)) => {
                DeviceError::Eval(format!("{} [{what}]", explain_status(status, ty)))
            }
            None => DeviceError::Eval(format!("{} failed: {what}", stage.call())),
        },
        Stage::Unload => DeviceError::Eval(format!("{} failed: {what}", stage.call())),
    }
}

/// The [`DeviceError`] for a bridge error code with free-text detail.
pub fn map_code(code: i32, detail: &str) -> Option<DeviceError> {
    Some(match BridgeCode::from_code(code)? {
        BridgeCode::None => return None,
        BridgeCode::InvalidArguments => DeviceError::InvalidArgument(detail.to_string()),
        BridgeCode::DuplicateWeightPath => DeviceError::DuplicateWeightPath(detail.to_string()),
        BridgeCode::SurfaceAllocation => DeviceError::SurfaceAllocation {
            bytes: 0,
            reason: detail.to_string(),
        },
        BridgeCode::CompilerFailure => DeviceError::Compile {
            diagnostics: vec![detail.to_string()],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(desc: &str) -> NsErrorInfo {
        NsErrorInfo {
            domain: "com.apple.appleneuralengine".into(),
            code: 8,
            description: desc.into(),
        }
    }

    #[test]
    fn status_values_are_parsed_from_descriptions() {
        assert_eq!(
            parse_status(
                "Error Domain=x Code=8 \"status=0x1d statusType=0x9: Program Inference error\""
            ),
            Some((0x1d, Some(0x9)))
        );
        assert_eq!(
            parse_status("statusType=0x9 then status = 29"),
            Some((29, Some(9)))
        );
        assert_eq!(parse_status("status: 0X1D"), Some((0x1d, None)));
        assert_eq!(parse_status("statusType=0x9 only"), None);
        assert_eq!(parse_status("no numbers here"), None);
    }

    #[test]
    fn status_0x1d_says_surface_below_minimum_size() {
        let e = map_failure(
            Stage::Eval,
            Some(&ns("status=0x1d statusType=0x9: Program Inference error")),
        );
        let text = e.to_string();
        assert!(matches!(e, DeviceError::Eval(_)));
        assert!(text.contains("I/O surface below minimum size"), "{text}");
        assert!(text.contains("49,152"), "{text}");
        assert!(text.contains("Program Inference error"), "{text}");
        assert!(text.contains("code 8"), "{text}");
    }

    #[test]
    fn unknown_status_keeps_the_number() {
        let text = map_failure(Stage::Eval, Some(&ns("status=0x2a"))).to_string();
        assert!(text.contains("status=0x2a"), "{text}");
        assert!(!text.contains("minimum size"), "{text}");
        let text = map_failure(Stage::Eval, None).to_string();
        assert!(text.contains("no NSError"), "{text}");
    }

    #[test]
    fn stages_map_to_error_classes() {
        let info = ns("ANECCompile() FAILED");
        for stage in [Stage::Descriptor, Stage::Model, Stage::Compile, Stage::Load] {
            match map_failure(stage, Some(&info)) {
                DeviceError::Compile { diagnostics } => {
                    assert!(diagnostics[0].contains(stage.call()), "{diagnostics:?}");
                    assert!(diagnostics.len() >= 2, "no hint: {diagnostics:?}");
                }
                e => panic!("{stage:?} → {e}"),
            }
        }
        assert!(map_failure(Stage::Compile, Some(&info))
            .to_string()
            .contains("ANECCompile() FAILED"));
        assert!(matches!(
            map_failure(Stage::Request, None),
            DeviceError::Eval(m) if m.contains("selectors")
        ));
        assert!(matches!(
            map_failure(Stage::Unload, Some(&info)),
            DeviceError::Eval(m) if m.contains("unloadWithQoS")
        ));
    }

    #[test]
    fn bridge_codes_round_trip() {
        assert!(map_code(0, "x").is_none());
        assert!(map_code(9, "x").is_none());
        for code in 1..=4 {
            let e = map_code(code, "detail").unwrap();
            assert_eq!(BridgeCode::of(&e) as i32, code, "{e}");
            assert!(e.to_string().contains("detail"), "{e}");
        }
        assert_eq!(
            BridgeCode::of(&DeviceError::Eval("x".into())),
            BridgeCode::None
        );
    }
}
