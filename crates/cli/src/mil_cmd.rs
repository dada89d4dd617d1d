//! `espresso mil check` and `espresso mil run`: validate MIL programs and run them on the ANE
//! simulator.
//!
//! Weight files: a program's `@model_path/weights/NAME.bin` is read from `DIR/NAME.bin` where
//! `DIR` is `--weights DIR`. Input and output files are raw little-endian f32 in the tensor's
//! row-major order (for `[1, C, 1, S]` that is channel-major, element (c, s) at c·S + s).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use ane::{ChipProfile, Device, KernelSpec};
use ane_sim::{compile_program, Precision, SimDevice, SimOptions};
use mil::{Diagnostic, Severity};

/// `espresso mil ...`
#[derive(Debug, clap::Subcommand)]
pub enum MilCommand {
    /// Parse and validate a MIL program; prints `file:line: severity [code]: message` and
    /// exits non-zero when there are errors.
    Check {
        /// MIL program text.
        file: PathBuf,
        /// Folder of weight blobs (`@model_path/weights/NAME.bin` = `DIR/NAME.bin`); enables
        /// the weight-path and blob-content checks.
        #[arg(long, value_name = "DIR")]
        weights: Option<PathBuf>,
    },
    /// Run a MIL program on the ANE simulator and write each output as `DIR/NAME.f32`.
    Run {
        /// MIL program text.
        file: PathBuf,
        /// Folder of weight blobs (`@model_path/weights/NAME.bin` = `DIR/NAME.bin`).
        #[arg(long, value_name = "DIR")]
        weights: Option<PathBuf>,
        /// Input values: `NAME=FILE.f32` (little-endian f32), once per program input.
        #[arg(long = "input", value_name = "NAME=FILE")]
        inputs: Vec<String>,
        /// Folder to write `NAME.f32` for every output (created if missing).
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
        /// Simulator numerics: fp16 (ANE-like) or f32 (exact, to separate logic from rounding).
        #[arg(long, value_enum, default_value_t = PrecisionArg::Fp16)]
        precision: PrecisionArg,
        /// Chip profile for the cost-model estimate (M1, M2, M3, M3 Max, M4, M4 Pro, M4 Max).
        #[arg(long, default_value = "M4")]
        chip: String,
    },
}

/// `--precision` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    Fp16,
    F32,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Fp16 => Precision::Fp16,
            PrecisionArg::F32 => Precision::F32,
        }
    }
}

/// Run one `espresso mil` subcommand.
pub fn run(cmd: MilCommand) -> Result<()> {
    match cmd {
        MilCommand::Check { file, weights } => check(&file, weights.as_deref()),
        MilCommand::Run {
            file,
            weights,
            inputs,
            output,
            precision,
            chip,
        } => run_program(
            &file,
            weights.as_deref(),
            &inputs,
            &output,
            precision.into(),
            &chip,
        ),
    }
}

const WEIGHTS_PREFIX: &str = "@model_path/weights/";

/// File behind a BLOBFILE path.
fn weight_file(dir: &Path, blob_path: &str) -> Result<PathBuf> {
    let rel = blob_path
        .strip_prefix(WEIGHTS_PREFIX)
        .ok_or_else(|| anyhow!("weight path {blob_path:?} is not under {WEIGHTS_PREFIX}"))?;
    if rel
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        bail!("weight path {blob_path:?} escapes the weights folder");
    }
    Ok(dir.join(rel))
}

fn read_text(file: &Path) -> Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", file.display()))
}

/// 1-based line where `value` is defined (statement, input) or returned; 1 if not found.
fn line_of(text: &str, value: Option<&str>) -> usize {
    nth_line_of(text, value, 0)
}

/// Like [`line_of`], for the `nth` (0-based) definition of `value` (redefinitions).
fn nth_line_of(text: &str, value: Option<&str>, nth: usize) -> usize {
    let Some(v) = value else { return 1 };
    let lines: Vec<&str> = text.lines().collect();
    // `<type> v = op(...)`: the name comes before any `(` on its line.
    let defines = |l: &str| {
        [format!(" {v} ="), format!(" {v}=")]
            .iter()
            .filter_map(|pat| l.find(pat.as_str()))
            .any(|p| !l[..p].contains('('))
    };
    let input = |l: &str| {
        l.trim_start().starts_with("func ")
            && (l.contains(&format!("> {v},")) || l.contains(&format!("> {v})")))
    };
    let output = |l: &str| {
        l.trim_start().starts_with("} ->")
            && l.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == v)
    };
    let definitions: Vec<usize> = (0..lines.len()).filter(|&i| defines(lines[i])).collect();
    definitions
        .get(nth)
        .or(definitions.first())
        .copied()
        .or_else(|| lines.iter().position(|l| input(l)))
        .or_else(|| lines.iter().position(|l| output(l)))
        .map_or(1, |i| i + 1)
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
    }
}

/// One printable finding.
struct Finding {
    line: usize,
    severity: Severity,
    code: String,
    message: String,
}

impl Finding {
    fn from_diagnostic(text: &str, d: &Diagnostic) -> Self {
        let message = match &d.value {
            Some(v) => format!("`{v}`: {}", d.message),
            None => d.message.clone(),
        };
        // A redefinition is reported at its second definition.
        let nth = usize::from(d.code == mil::Code::DuplicateName);
        Finding {
            line: nth_line_of(text, d.value.as_deref(), nth),
            severity: d.severity,
            code: d.code.name().to_string(),
            message,
        }
    }

    fn print(&self, file: &Path) {
        println!(
            "{}:{}: {} [{}]: {}",
            file.display(),
            self.line,
            severity_name(self.severity),
            self.code,
            self.message
        );
    }
}

fn check(file: &Path, weights: Option<&Path>) -> Result<()> {
    let text = read_text(file)?;
    let program = match mil::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            println!(
                "{}:{}: error [parse]: {} (column {})",
                file.display(),
                e.line,
                e.message,
                e.column
            );
            bail!("{}: 1 error", file.display());
        }
    };
    let mut findings = vec![];
    // Weight paths present on disk (only when a folder is given).
    let mut present = HashSet::new();
    let mut blobs = vec![];
    if let (Some(dir), Some(func)) = (weights, program.main()) {
        for (name, ty, b) in func.blob_refs() {
            let line = line_of(&text, Some(name));
            let path = match weight_file(dir, &b.path) {
                Ok(p) => p,
                Err(e) => {
                    findings.push(Finding {
                        line,
                        severity: Severity::Error,
                        code: "weight-file".into(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let Ok(bytes) = std::fs::read(&path) else {
                continue; // reported by the validator as unknown-weight-path
            };
            present.insert(b.path.clone());
            let count = ty.num_elements().unwrap_or(0);
            if let Err(e) = ane::blob::read_fp16_tensor(&bytes, b.offset, count) {
                findings.push(Finding {
                    line,
                    severity: Severity::Error,
                    code: "blob".into(),
                    message: format!("`{name}` in {}: {e}", path.display()),
                });
            }
            if !blobs.iter().any(|(p, _): &(String, Vec<u8>)| *p == b.path) {
                blobs.push((b.path.clone(), bytes));
            }
        }
    }
    let diags = ane::milcheck::diagnostics(&program, weights.map(|_| &present));
    findings.extend(diags.iter().map(|d| Finding::from_diagnostic(&text, d)));
    // When the validator is clean, also lower the program for the simulator (unsupported
    // ops, shape mismatches the validator does not model).
    let errors_so_far = findings.iter().any(|f| f.severity == Severity::Error);
    let weight_free = program.main().is_some_and(|f| f.blob_refs().is_empty());
    if !errors_so_far && (weights.is_some() || weight_free) {
        let spec = KernelSpec {
            program: program.clone(),
            weights: blobs,
            ..Default::default()
        };
        if let Err(e) = compile_program(&spec, Precision::Fp16) {
            findings.push(Finding {
                line: 1,
                severity: Severity::Error,
                code: "sim".into(),
                message: e.to_string().replace('\n', " | "),
            });
        }
    }
    findings.sort_by_key(|f| (f.line, std::cmp::Reverse(f.severity)));
    for f in &findings {
        f.print(file);
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let (e, w, i) = (
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info),
    );
    println!(
        "{}: {e} error(s), {w} warning(s), {i} note(s)",
        file.display()
    );
    if e > 0 {
        bail!("{}: {e} error(s)", file.display());
    }
    Ok(())
}

fn read_f32_file(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() % 4 != 0 {
        bail!(
            "{}: {} bytes is not a whole number of f32 values",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn run_program(
    file: &Path,
    weights: Option<&Path>,
    inputs: &[String],
    output: &Path,
    precision: Precision,
    chip: &str,
) -> Result<()> {
    let text = read_text(file)?;
    let program = mil::parse(&text).map_err(|e| {
        anyhow!(
            "{}:{}: error [parse]: {} (column {})",
            file.display(),
            e.line,
            e.message,
            e.column
        )
    })?;
    let func = program
        .main()
        .ok_or_else(|| anyhow!("{}: no function to run", file.display()))?;
    let profile = ChipProfile::by_name(chip).ok_or_else(|| {
        let names: Vec<&str> = ChipProfile::ALL.iter().map(|p| p.name).collect();
        anyhow!("unknown chip {chip:?}; known: {}", names.join(", "))
    })?;

    let mut blobs: Vec<(String, Vec<u8>)> = vec![];
    for (_, _, b) in func.blob_refs() {
        if blobs.iter().any(|(p, _)| *p == b.path) {
            continue;
        }
        let dir = weights.ok_or_else(|| {
            anyhow!(
                "the program reads {} but no --weights DIR was given",
                b.path
            )
        })?;
        let path = weight_file(dir, &b.path)?;
        let bytes = std::fs::read(&path)
            .with_context(|| format!("cannot read {} (for {})", path.display(), b.path))?;
        blobs.push((b.path.clone(), bytes));
    }

    let mut values: Vec<(String, Vec<f32>)> = vec![];
    for spec in inputs {
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--input {spec:?}: expected NAME=FILE"))?;
        if !func.inputs.iter().any(|(n, _)| n == name) {
            let known: Vec<&str> = func.inputs.iter().map(|(n, _)| n.as_str()).collect();
            bail!(
                "--input {name}: the program has no such input (inputs: {})",
                known.join(", ")
            );
        }
        if values.iter().any(|(n, _)| n == name) {
            bail!("--input {name} given twice");
        }
        values.push((name.to_string(), read_f32_file(Path::new(path))?));
    }
    for (name, ty) in &func.inputs {
        if !values.iter().any(|(n, _)| n == name) {
            bail!(
                "missing --input {name}=FILE ({ty}, {} f32 values)",
                ty.num_elements().unwrap_or(0)
            );
        }
    }

    // Validator warnings go to stderr; errors fail the compile below with all diagnostics.
    let present: HashSet<String> = blobs.iter().map(|(p, _)| p.clone()).collect();
    for d in ane::milcheck::diagnostics(&program, Some(&present)) {
        if d.severity == Severity::Warning {
            let f = Finding::from_diagnostic(&text, &d);
            eprintln!(
                "{}:{}: warning [{}]: {}",
                file.display(),
                f.line,
                f.code,
                f.message
            );
        }
    }

    let mut dev = SimDevice::new(SimOptions {
        precision,
        profile,
        ..Default::default()
    });
    let named: Vec<(&str, &[f32])> = values
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let outs = dev
        .run_once(&program, blobs, &named)
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;

    std::fs::create_dir_all(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    for (name, t) in &outs {
        let path = output.join(format!("{name}.f32"));
        let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        let (lo, hi) = t
            .data
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let non_finite = t.data.iter().filter(|v| !v.is_finite()).count();
        println!(
            "{name} {:?} -> {} (min {lo}, max {hi}{})",
            t.shape,
            path.display(),
            if non_finite > 0 {
                format!(", {non_finite} non-finite")
            } else {
                String::new()
            }
        );
    }
    println!("{}: {}", dev.name(), dev.stats());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_files_map_into_the_folder() {
        let d = Path::new("/w");
        assert_eq!(
            weight_file(d, "@model_path/weights/wq.bin").unwrap(),
            PathBuf::from("/w/wq.bin")
        );
        assert!(weight_file(d, "@model_path/weights/../x.bin").is_err());
        assert!(weight_file(d, "@model_path/other/x.bin").is_err());
    }

    #[test]
    fn lines_of_definitions_inputs_and_outputs() {
        let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4]> x, tensor<fp16, [1, 4]> y) {\n        tensor<fp16, [1,4]> sq = mul(x = x, y = y)[name=string(\"sq\")];\n    } -> (sq, x);\n}\n";
        assert_eq!(line_of(text, Some("sq")), 4);
        assert_eq!(line_of(text, Some("y")), 3);
        assert_eq!(line_of(text, None), 1);
        assert_eq!(line_of(text, Some("nope")), 1);
    }

    const SCALE_PROGRAM: &str = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4, 1, 32]> x) {\n        tensor<fp16, [1,4,1,1]> g = const()[name=string(\"g\"), val=tensor<fp16, [1,4,1,1]>(BLOBFILE(path=string(\"@model_path/weights/g.bin\"), offset=uint64(64)))];\n        tensor<fp16, [1, 4, 1, 32]> y = mul(x=x,y=g)[name=string(\"y\")];\n    } -> (y);\n}\n";

    #[test]
    fn run_writes_outputs_and_check_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mil = dir.path().join("scale.mil");
        std::fs::write(&mil, SCALE_PROGRAM).unwrap();
        let weights = dir.path().join("weights");
        std::fs::create_dir(&weights).unwrap();
        let g = [0.5f32, -2.0, 1.0, 0.25];
        std::fs::write(weights.join("g.bin"), ane::blob::single_fp16_blob(&g)).unwrap();
        let x: Vec<f32> = (0..128).map(|i| i as f32 * 0.125).collect();
        let xfile = dir.path().join("x.f32");
        std::fs::write(
            &xfile,
            x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
        )
        .unwrap();
        let out = dir.path().join("out");
        run(MilCommand::Run {
            file: mil.clone(),
            weights: Some(weights.clone()),
            inputs: vec![format!("x={}", xfile.display())],
            output: out.clone(),
            precision: PrecisionArg::Fp16,
            chip: "M4".into(),
        })
        .unwrap();
        let y = read_f32_file(&out.join("y.f32")).unwrap();
        assert_eq!(y.len(), 128);
        for (i, v) in y.iter().enumerate() {
            assert_eq!(*v, x[i] * g[i / 32], "y[{i}]");
        }
        check(&mil, Some(&weights)).unwrap();
        // A missing weight file and a rejected op are errors.
        assert!(check(&mil, Some(dir.path())).is_err());
        let bad = dir.path().join("bad.mil");
        std::fs::write(&bad, SCALE_PROGRAM.replace("mul(x=x,y=g)", "rsqrt(x=x)")).unwrap();
        assert!(check(&bad, Some(&weights)).is_err());
        // Wrong input name and missing weights folder are clear errors.
        let err = run(MilCommand::Run {
            file: mil,
            weights: None,
            inputs: vec![format!("x={}", xfile.display())],
            output: out,
            precision: PrecisionArg::F32,
            chip: "M4".into(),
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("--weights"), "{err}");
    }
}
