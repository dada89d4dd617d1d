//! Validator for the known ANE compiler rules and silent-failure traps (ane-reference §3.3,
//! §3.6, §4, §5.14, §11.6–11.8). Every rule is a [`Code`] with a fixed [`Severity`]; rules
//! that public sources disagree on say so in their message and are warnings unless the
//! reference project itself enforces them.

use crate::ast::*;
use crate::op::{AneSupport, Op};
use crate::shape::infer_shapes;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Useful to know; not a known failure.
    Info,
    /// May fail or misbehave on some hardware/OS; sources disagree or evidence is thin.
    Warning,
    /// Known to fail to compile, fail at eval, or give silently wrong data.
    Error,
}

/// The rules. [`Code::name`] gives a stable kebab-case id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The program has no `main` function.
    MissingMain,
    /// A name is defined twice (MIL is SSA).
    DuplicateName,
    /// An argument or output refers to a name that is not defined before it.
    UndefinedValue,
    /// Shape/type inference failed (wrong operand shapes, declared type ≠ inferred type).
    TypeError,
    /// An op the toolkit does not know.
    UnknownOp,
    /// An op the ANE compiler rejects in text MIL (`rsqrt`, `reduce_mean`, `gelu`; see
    /// [`Op::ane_support`]).
    RejectedOp,
    /// A known op (shape inference, simulator) that no public source shows the ANE compiler
    /// accepting in text MIL.
    UnverifiedOp,
    /// The MIL `sdpa` op compiles but ignores the causal mask.
    SdpaIgnoresMask,
    /// `sqrt` applied to a reduction result (reported to fail; use `pow(x, -0.5)`).
    SqrtAfterReduction,
    /// Weights that are not fp16 (quantised or fp32 BLOBFILE, `constexpr_*`, cast from int8).
    NonFp16Weight,
    /// softmax along an axis whose length is not a power of two.
    SoftmaxNonPowerOfTwo,
    /// Some tensor axis is longer than 65,536.
    AxisTooLarge,
    /// Tensor rank above 5.
    RankTooLarge,
    /// An I/O tensor smaller than the minimum surface size (49,152 bytes).
    SurfaceTooSmall,
    /// Inputs (or outputs) of one kernel have different byte sizes.
    NonUniformIoSize,
    /// Last (spatial) axis of an I/O tensor is not a multiple of 16.
    SpatialWidth,
    /// Last axis of an I/O tensor is not a multiple of 32 lanes.
    SpatialLanes,
    /// BLOBFILE offset is not 64 (single chunk) or not on a chunk boundary (multi-chunk).
    BlobOffset,
    /// BLOBFILE path not among the provided weight files.
    UnknownWeightPath,
    /// BLOBFILE path outside `@model_path/`.
    WeightPathOutsideModel,
    /// One weight blob exceeds the u32 size field (4 GiB).
    BlobTooLarge,
    /// A tensor larger than the on-chip SRAM hint (~32 MiB).
    SramSpill,
    /// `concat` (compiles for Espresso/maderix, failed for Orion).
    Concat,
    /// `slice_by_index` on a function input (sometimes `InvalidMILProgram`).
    SliceByIndexOnInput,
    /// Inputs or outputs not declared in byte-wise sorted name order (I/O is bound alphabetically).
    IoNotSorted,
    /// An I/O tensor whose dtype is neither fp16 nor fp32.
    IoDtype,
    /// Conv kernel wider than 15.
    KernelTooWide,
    /// An inline literal argument where the reference emits a named const.
    InlineLiteral,
}

impl Code {
    /// Stable kebab-case id.
    pub fn name(self) -> &'static str {
        match self {
            Code::MissingMain => "missing-main",
            Code::DuplicateName => "duplicate-name",
            Code::UndefinedValue => "undefined-value",
            Code::TypeError => "type-error",
            Code::UnknownOp => "unknown-op",
            Code::RejectedOp => "rejected-op",
            Code::UnverifiedOp => "unverified-op",
            Code::SdpaIgnoresMask => "sdpa-ignores-mask",
            Code::SqrtAfterReduction => "sqrt-after-reduction",
            Code::NonFp16Weight => "non-fp16-weight",
            Code::SoftmaxNonPowerOfTwo => "softmax-non-power-of-two",
            Code::AxisTooLarge => "axis-too-large",
            Code::RankTooLarge => "rank-too-large",
            Code::SurfaceTooSmall => "surface-too-small",
            Code::NonUniformIoSize => "non-uniform-io-size",
            Code::SpatialWidth => "spatial-width",
            Code::SpatialLanes => "spatial-lanes",
            Code::BlobOffset => "blob-offset",
            Code::UnknownWeightPath => "unknown-weight-path",
            Code::WeightPathOutsideModel => "weight-path-outside-model",
            Code::BlobTooLarge => "blob-too-large",
            Code::SramSpill => "sram-spill",
            Code::Concat => "concat",
            Code::SliceByIndexOnInput => "slice-by-index-on-input",
            Code::IoNotSorted => "io-not-sorted",
            Code::IoDtype => "io-dtype",
            Code::KernelTooWide => "kernel-too-wide",
            Code::InlineLiteral => "inline-literal",
        }
    }

    /// The fixed severity of the rule.
    pub fn severity(self) -> Severity {
        match self {
            Code::MissingMain
            | Code::DuplicateName
            | Code::UndefinedValue
            | Code::TypeError
            | Code::UnknownOp
            | Code::RejectedOp
            | Code::SdpaIgnoresMask
            | Code::SqrtAfterReduction
            | Code::NonFp16Weight
            | Code::SoftmaxNonPowerOfTwo
            | Code::AxisTooLarge
            | Code::RankTooLarge
            | Code::BlobOffset
            | Code::UnknownWeightPath
            | Code::BlobTooLarge
            | Code::UnverifiedOp => Severity::Error,
            Code::SurfaceTooSmall
            | Code::NonUniformIoSize
            | Code::SpatialWidth
            | Code::WeightPathOutsideModel
            | Code::SramSpill
            | Code::Concat
            | Code::SliceByIndexOnInput
            | Code::IoNotSorted
            | Code::IoDtype
            | Code::KernelTooWide
            | Code::InlineLiteral => Severity::Warning,
            Code::SpatialLanes => Severity::Info,
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    /// Function name.
    pub function: String,
    /// Value (statement result, input or output) the finding is about, if any.
    pub value: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{sev}[{}] in `{}`", self.code.name(), self.function)?;
        if let Some(v) = &self.value {
            write!(f, " at `{v}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Validator settings. The numbers default to the reference's values.
#[derive(Debug, Clone)]
pub struct ValidateOptions<'a> {
    /// Weight files that will be provided (`@model_path/weights/x.bin`); `None` skips the
    /// unknown-path check.
    pub weight_paths: Option<&'a HashSet<String>>,
    /// Minimum I/O surface size in bytes (49,152 = 768 × 32 × fp16).
    pub min_surface_bytes: usize,
    /// SRAM hint in bytes (32 MiB).
    pub sram_bytes: usize,
    /// Longest allowed axis (65,536).
    pub max_axis: usize,
}

impl Default for ValidateOptions<'_> {
    fn default() -> Self {
        ValidateOptions {
            weight_paths: None,
            min_surface_bytes: 49_152,
            sram_bytes: 32 << 20,
            max_axis: 65_536,
        }
    }
}

/// True if any diagnostic is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(|d| d.severity == Severity::Error)
}

/// Check a program against every rule.
pub fn validate(program: &Program, options: &ValidateOptions) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if !program.functions.iter().any(|f| f.name == "main") {
        out.push(Diagnostic {
            code: Code::MissingMain,
            severity: Code::MissingMain.severity(),
            function: String::new(),
            value: None,
            message: "the program has no `func main` (the bridge compiles `main`)".to_string(),
        });
    }
    for f in &program.functions {
        FunctionCheck {
            f,
            options,
            out: &mut out,
        }
        .run();
    }
    out
}

struct FunctionCheck<'a, 'o> {
    f: &'a Function,
    options: &'a ValidateOptions<'o>,
    out: &'a mut Vec<Diagnostic>,
}

impl FunctionCheck<'_, '_> {
    fn report(&mut self, code: Code, value: Option<&str>, message: String) {
        self.out.push(Diagnostic {
            code,
            severity: code.severity(),
            function: self.f.name.clone(),
            value: value.map(str::to_string),
            message,
        });
    }

    fn run(&mut self) {
        if self.check_names() {
            if let Err(e) = infer_shapes(self.f) {
                let value = e.out_name.clone();
                self.report(Code::TypeError, Some(&value), e.to_string());
            }
        }
        self.check_ops();
        self.check_tensor_sizes();
        self.check_blobs();
        self.check_io();
    }

    /// SSA structure: every name defined once, and before use. Returns true if clean.
    fn check_names(&mut self) -> bool {
        let mut defined: HashSet<&str> = HashSet::new();
        let mut clean = true;
        for (name, _) in &self.f.inputs {
            if !defined.insert(name) {
                clean = false;
                self.report(
                    Code::DuplicateName,
                    Some(name),
                    "input declared twice".to_string(),
                );
            }
        }
        for s in &self.f.body {
            let mut used = Vec::new();
            for (_, a) in &s.args {
                collect_vars(a, &mut used);
            }
            for v in used {
                if !defined.contains(v) {
                    clean = false;
                    self.report(
                        Code::UndefinedValue,
                        Some(&s.out_name),
                        format!("`{}` uses `{v}`, which is not defined before it", s.op),
                    );
                }
            }
            if !defined.insert(&s.out_name) {
                clean = false;
                self.report(
                    Code::DuplicateName,
                    Some(&s.out_name),
                    format!(
                        "`{}` is defined again by `{}` (MIL values are single-assignment)",
                        s.out_name, s.op
                    ),
                );
            }
        }
        for o in &self.f.outputs {
            if !defined.contains(o.as_str()) {
                clean = false;
                self.report(
                    Code::UndefinedValue,
                    Some(o),
                    "returned but never defined".to_string(),
                );
            }
        }
        clean
    }

    fn check_ops(&mut self) {
        let inputs: HashSet<&str> = self.f.inputs.iter().map(|(n, _)| n.as_str()).collect();
        let reductions: HashSet<&str> = self
            .f
            .body
            .iter()
            .filter(|s| s.known_op().is_some_and(Op::is_reduction))
            .map(|s| s.out_name.as_str())
            .collect();
        let input_types: Vec<(&str, ValueType)> = self
            .f
            .inputs
            .iter()
            .map(|(n, t)| (n.as_str(), ValueType::Tensor(t.clone())))
            .collect();
        let types: HashMap<&str, &ValueType> = input_types
            .iter()
            .map(|(n, t)| (*n, t))
            .chain(
                self.f
                    .body
                    .iter()
                    .map(|s| (s.out_name.as_str(), &s.out_type)),
            )
            .collect();
        for s in &self.f.body {
            let at = Some(s.out_name.as_str());
            let x = s.arg("x").and_then(Arg::as_var);
            let op = s.known_op();
            match op.map(Op::ane_support) {
                Some(AneSupport::Documented) => {}
                Some(AneSupport::Rejected(why)) => {
                    self.report(Code::RejectedOp, at, why.to_string())
                }
                Some(AneSupport::Unverified) => self.report(
                    Code::UnverifiedOp,
                    at,
                    format!(
                        "`{}` is outside the reference's MIL vocabulary: the simulator runs it, but \
                         no public source shows the ANE compiler accepting it in text MIL, so devices refuse it \
                         (run it with `ane_sim::Program` directly)",
                        s.op
                    ),
                ),
                None => self.check_unknown_op(s),
            }
            if op == Some(Op::Sqrt) && x.is_some_and(|v| reductions.contains(v)) {
                self.report(
                    Code::SqrtAfterReduction,
                    at,
                    "`sqrt` after a reduction is reported to fail (Espresso author, hollance/neural-engine #44); \
                     use `pow(x, -0.5)`"
                        .to_string(),
                );
            }
            if op == Some(Op::Cast) {
                let src = x.and_then(|v| types.get(v)).map(|t| t.dtype());
                if matches!(src, Some(DType::Int8 | DType::Uint8)) {
                    self.report(
                        Code::NonFp16Weight,
                        at,
                        "cast from 8-bit integers (quantised weights) is rejected by the reference's \
                         validation (sources disagree: maderix INT8 on M4)"
                            .to_string(),
                    );
                }
            }
            if op == Some(Op::Softmax) {
                self.check_softmax(s, &types);
            }
            if op == Some(Op::Concat) {
                self.report(
                    Code::Concat,
                    at,
                    "`concat` — sources disagree: all 7 concat training kernels failed to compile for \
                     Orion (M4 Max), while maderix and Espresso training kernels use it"
                        .to_string(),
                );
            }
            if op == Some(Op::SliceByIndex) && x.is_some_and(|v| inputs.contains(v)) {
                self.report(
                    Code::SliceByIndexOnInput,
                    at,
                    "`slice_by_index` on a function input feeding RMSNorm/conv sometimes fails with \
                     InvalidMILProgram in larger programs; `slice_by_size` is the proven form"
                        .to_string(),
                );
            }
            if op == Some(Op::Conv) {
                let w = s
                    .arg("weight")
                    .and_then(Arg::as_var)
                    .and_then(|v| types.get(v));
                if let Some(w) = w.and_then(|t| t.as_tensor()) {
                    if w.shape.len() == 4 && (w.shape[2] > 15 || w.shape[3] > 15) {
                        self.report(
                            Code::KernelTooWide,
                            at,
                            format!(
                                "conv kernel {}×{} exceeds width 15 (ANEForge; single source)",
                                w.shape[2], w.shape[3]
                            ),
                        );
                    }
                }
            }
            for (k, a) in &s.args {
                if matches!(a, Arg::Literal(_)) {
                    self.report(
                        Code::InlineLiteral,
                        at,
                        format!(
                            "argument `{k}` is an inline literal; the reference always passes a \
                             named const (untested on hardware)"
                        ),
                    );
                }
            }
        }
    }

    /// An op outside the table: known traps by name, else unknown.
    fn check_unknown_op(&mut self, s: &Statement) {
        let at = Some(s.out_name.as_str());
        match s.op.as_str() {
            "sdpa" | "scaled_dot_product_attention" => self.report(
                Code::SdpaIgnoresMask,
                at,
                "the MIL `sdpa` op ignores the causal mask (silently wrong); decompose into \
                 matmul → scale → add mask → softmax → matmul"
                    .to_string(),
            ),
            op if op.starts_with("constexpr_") => self.report(
                Code::NonFp16Weight,
                at,
                format!(
                    "quantised weights (`{op}`) are rejected by the reference's validation \
                     (sources disagree: maderix ran INT8 W8A8 on M4)"
                ),
            ),
            op => self.report(Code::UnknownOp, at, format!("unknown op `{op}`")),
        }
    }

    fn check_softmax(&mut self, s: &Statement, types: &HashMap<&str, &ValueType>) {
        let x = s.arg("x").and_then(Arg::as_var);
        let shape = x.and_then(|v| types.get(v).map(|t| t.shape().to_vec()));
        let axis = match s.arg("axis") {
            Some(Arg::Var(v)) => self.f.const_value(v).and_then(Literal::as_i64),
            Some(Arg::Literal(l)) => l.as_i64(),
            _ => Some(-1),
        };
        if let (Some(shape), Some(axis)) = (shape, axis) {
            if let Some(a) = crate::shape::normalize_axis(axis, shape.len()) {
                let n = shape[a];
                if !n.is_power_of_two() {
                    self.report(
                        Code::SoftmaxNonPowerOfTwo,
                        Some(&s.out_name),
                        format!(
                            "softmax along axis {a} of length {n}, not a power of two \
                             (InvalidMILProgram per the reference; pad the axis)"
                        ),
                    );
                }
            }
        }
    }

    /// Axis limit, rank limit and SRAM hint on every tensor.
    fn check_tensor_sizes(&mut self) {
        let mut tensors: Vec<(&str, &TensorType)> =
            self.f.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for s in &self.f.body {
            if let ValueType::Tensor(t) = &s.out_type {
                tensors.push((&s.out_name, t));
            }
        }
        for (name, t) in tensors {
            if t.shape.len() > MAX_RANK {
                self.report(
                    Code::RankTooLarge,
                    Some(name),
                    format!("rank {} exceeds {MAX_RANK}", t.shape.len()),
                );
            }
            if let Some(&d) = t.shape.iter().find(|&&d| d > self.options.max_axis) {
                self.report(
                    Code::AxisTooLarge,
                    Some(name),
                    format!(
                        "axis of length {d} in {t} exceeds {} (ANEForge; split the tensor, e.g. a \
                         large LM head into chunks)",
                        self.options.max_axis
                    ),
                );
            }
            match t.size_bytes() {
                Some(b) if b <= self.options.sram_bytes => {}
                size => self.report(
                    Code::SramSpill,
                    Some(name),
                    format!(
                        "{t} is {} bytes, over the ~{} MiB SRAM hint (spills to DRAM, ~30% slower; \
                         warning only)",
                        size.map_or("more than usize::MAX".to_string(), |b| b.to_string()),
                        self.options.sram_bytes >> 20
                    ),
                ),
            }
        }
    }

    fn check_blobs(&mut self) {
        let mut by_path: HashMap<&str, Vec<(&str, &TensorType, u64)>> = HashMap::new();
        for (name, ty, blob) in self.f.blob_refs() {
            by_path
                .entry(blob.path.as_str())
                .or_default()
                .push((name, ty, blob.offset));
            if ty.dtype != DType::Fp16 {
                self.report(
                    Code::NonFp16Weight,
                    Some(name),
                    format!(
                        "BLOBFILE weight is {}; the ANE path takes fp16 weights only",
                        ty.dtype
                    ),
                );
            }
            if !matches!(ty.size_bytes(), Some(b) if b <= u32::MAX as usize) {
                self.report(
                    Code::BlobTooLarge,
                    Some(name),
                    format!("{ty} does not fit the blob's u32 size field (4 GiB)"),
                );
            }
            if !blob.path.starts_with("@model_path/") {
                self.report(
                    Code::WeightPathOutsideModel,
                    Some(name),
                    format!(
                        "path {:?} does not start with `@model_path/`; the weight dictionary is \
                         keyed by `@model_path/weights/<name>.bin`",
                        blob.path
                    ),
                );
            }
            if let Some(paths) = self.options.weight_paths {
                if !paths.contains(&blob.path) {
                    self.report(
                        Code::UnknownWeightPath,
                        Some(name),
                        format!("no weight file is provided for {:?}", blob.path),
                    );
                }
            }
        }
        let mut paths: Vec<_> = by_path.into_iter().collect();
        paths.sort_by(|a, b| a.0.cmp(b.0));
        for (path, mut refs) in paths {
            self.check_chunk_offsets(path, &mut refs);
        }
    }

    /// One reference → offset 64. Several → distinct offsets forming the chunk chain
    /// `64, 64 + (64 + P0), ...` (§4.2).
    fn check_chunk_offsets(&mut self, path: &str, refs: &mut [(&str, &TensorType, u64)]) {
        refs.sort_by_key(|r| r.2);
        let mut expected = crate::blob::FIRST_CHUNK_OFFSET;
        let mut prev: Option<u64> = None;
        for &(name, ty, offset) in refs.iter() {
            if prev == Some(offset) {
                continue; // the same chunk referenced twice
            }
            if offset != expected {
                let message = if refs.len() == 1 {
                    format!(
                        "BLOBFILE offset {offset} for {path:?}; a single-chunk blob must use \
                         offset 64 (the metadata record) — any other offset gives silent garbage"
                    )
                } else {
                    format!(
                        "BLOBFILE offset {offset} for {path:?} is not the next chunk record \
                         (expected {expected} = previous record + 64 + payload bytes)"
                    )
                };
                self.report(Code::BlobOffset, Some(name), message);
                return;
            }
            let payload = ty.size_bytes().unwrap_or(usize::MAX) as u64;
            expected = offset.saturating_add(64).saturating_add(payload);
            prev = Some(offset);
        }
    }

    fn check_io(&mut self) {
        let output_types: Vec<(&str, Option<TensorType>)> = self
            .f
            .outputs
            .iter()
            .map(|o| {
                let t = self.f.value_type(o).and_then(|t| t.as_tensor().cloned());
                (o.as_str(), t)
            })
            .collect();
        let input_types: Vec<(&str, Option<TensorType>)> = self
            .f
            .inputs
            .iter()
            .map(|(n, t)| (n.as_str(), Some(t.clone())))
            .collect();
        for (kind, list) in [("input", &input_types), ("output", &output_types)] {
            for (name, t) in list.iter() {
                let Some(t) = t else {
                    if self.f.value_type(name).is_some() {
                        self.report(
                            Code::IoDtype,
                            Some(name),
                            format!("{kind} is a scalar; surfaces carry tensors"),
                        );
                    }
                    continue;
                };
                self.check_surface(kind, name, t);
            }
            let sizes: Vec<usize> = list
                .iter()
                .filter_map(|(_, t)| t.as_ref().and_then(TensorType::size_bytes))
                .collect();
            if sizes.windows(2).any(|w| w[0] != w[1]) {
                self.report(
                    Code::NonUniformIoSize,
                    None,
                    format!(
                        "{kind} surfaces have different sizes {sizes:?}: Orion reports eval failure \
                         status=0x1d and pads all to the largest; sources disagree (the reference's \
                         head returns 2,048,000-byte logits next to a 64-byte maxVal)"
                    ),
                );
            }
            let names: Vec<&str> = list.iter().map(|(n, _)| *n).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            if names != sorted {
                let note = if kind == "output" {
                    "outputs are bound in byte-wise sorted name order, not tuple order (Orion; the \
                     reference's hybrid decode path)"
                } else {
                    "Orion reports inputs are bound in sorted name order too (the reference has no \
                     decisive evidence)"
                };
                self.report(
                    Code::IoNotSorted,
                    None,
                    format!(
                        "{kind}s declared as {names:?} but sorted order is {sorted:?}: {note}; name \
                         them so sorted order equals declaration order (the collation is unverified, \
                         so prefer lowercase names with fixed-width indices)"
                    ),
                );
            }
        }
    }

    fn check_surface(&mut self, kind: &str, name: &str, t: &TensorType) {
        if !matches!(t.dtype, DType::Fp16 | DType::Fp32) {
            self.report(
                Code::IoDtype,
                Some(name),
                format!("{kind} dtype {} (surfaces are fp16 or fp32)", t.dtype),
            );
        }
        if let Some(bytes) = t.size_bytes() {
            if bytes < self.options.min_surface_bytes {
                self.report(
                    Code::SurfaceTooSmall,
                    Some(name),
                    format!(
                        "{kind} {t} is {bytes} bytes, below the {}-byte minimum surface \
                         (eval status=0x1d per Espresso and Orion; sources disagree: the reference's \
                         headline head has a 64-byte maxVal output)",
                        self.options.min_surface_bytes
                    ),
                );
            }
        }
        let Some(&width) = t.shape.last() else {
            return;
        };
        if !width.is_multiple_of(16) {
            self.report(
                Code::SpatialWidth,
                Some(name),
                format!(
                    "{kind} last axis {width} is not a multiple of 16 (rustane: multiple of 16; \
                     Orion: seq stride 16; CoreML pads rows to 64 bytes)"
                ),
            );
        } else if !width.is_multiple_of(32) {
            self.report(
                Code::SpatialLanes,
                Some(name),
                format!(
                    "{kind} last axis {width} is not a multiple of 32 (the reference needed 32 lanes \
                     for stable eval across M1–M4)"
                ),
            );
        }
    }
}

fn collect_vars<'a>(a: &'a Arg, out: &mut Vec<&'a str>) {
    match a {
        Arg::Var(v) => out.push(v),
        Arg::Literal(_) => {}
        Arg::List(items) => items.iter().for_each(|i| collect_vars(i, out)),
    }
}
