//! One negative test per validator rule, plus a clean baseline that triggers none.

use mil::{parse, validate, Code, Severity, ValidateOptions};
use std::collections::HashSet;

const X: &str = "tensor<fp16, [1, 768, 1, 32]> x";
const T: &str = "tensor<fp16, [1,768,1,32]>";

/// A one-function program; `params` and `outs` are comma-separated.
fn program(params: &str, body: &[&str], outs: &str) -> String {
    let mut s = String::from("program(1.3)\n{\n    func main<ios18>(");
    s.push_str(params);
    s.push_str(") {\n");
    for line in body {
        s.push_str("        ");
        s.push_str(line);
        s.push('\n');
    }
    s.push_str(&format!("    }} -> ({outs});\n}}\n"));
    s
}

fn codes_with(text: &str, options: &ValidateOptions) -> Vec<Code> {
    let p = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    validate(&p, options).into_iter().map(|d| d.code).collect()
}

fn codes(text: &str) -> Vec<Code> {
    codes_with(text, &ValidateOptions::default())
}

fn assert_flags(text: &str, code: Code) {
    let found = codes(text);
    assert!(
        found.contains(&code),
        "expected {code:?}, got {found:?}\n{text}"
    );
}

fn relu_body() -> Vec<String> {
    vec![format!("{T} y = relu(x=x)[name=string(\"y\")];")]
}

#[test]
fn clean_program_has_no_diagnostics() {
    let body = relu_body();
    let body: Vec<&str> = body.iter().map(String::as_str).collect();
    assert_eq!(codes(&program(X, &body, "y")), []);
}

#[test]
fn every_code_has_a_name_and_severity() {
    assert_eq!(
        Code::SoftmaxNonPowerOfTwo.name(),
        "softmax-non-power-of-two"
    );
    assert_eq!(Code::RejectedOp.severity(), Severity::Error);
    assert_eq!(Code::Concat.severity(), Severity::Warning);
    assert_eq!(Code::SpatialLanes.severity(), Severity::Info);
}

#[test]
fn missing_main() {
    let text = program(X, &[], "x").replace("func main", "func other");
    assert_flags(&text, Code::MissingMain);
}

#[test]
fn duplicate_name() {
    let line = format!("{T} y = relu(x=x)[name=string(\"y\")];");
    assert_flags(&program(X, &[&line, &line], "y"), Code::DuplicateName);
}

#[test]
fn undefined_value() {
    let line = format!("{T} y = relu(x=nope)[name=string(\"y\")];");
    assert_flags(&program(X, &[&line], "y"), Code::UndefinedValue);
    assert_flags(&program(X, &[], "ghost"), Code::UndefinedValue);
}

#[test]
fn type_error_names_the_op() {
    let line = "tensor<fp16, [1,768,1,16]> y = relu(x=x)[name=string(\"y\")];";
    let p = parse(&program(X, &[line], "y")).expect("parse");
    let d = validate(&p, &ValidateOptions::default());
    let e = d
        .iter()
        .find(|d| d.code == Code::TypeError)
        .expect("type error");
    assert!(
        e.message.contains("`relu`") && e.message.contains("[1, 768, 1, 32]"),
        "{e}"
    );
}

#[test]
fn unknown_op() {
    let line = format!("{T} y = frobnicate(x=x)[name=string(\"y\")];");
    assert_flags(&program(X, &[&line], "y"), Code::UnknownOp);
}

#[test]
fn rejected_ops() {
    for op in ["rsqrt", "gelu"] {
        let line = format!("{T} y = {op}(x=x)[name=string(\"y\")];");
        assert_flags(&program(X, &[&line], "y"), Code::RejectedOp);
    }
    let body = [
        "tensor<int32, [1]> ax = const()[name=string(\"ax\"), val=tensor<int32, [1]>([1])];",
        "bool kd = const()[name=string(\"kd\"), val=bool(true)];",
        "tensor<fp16, [1,1,1,32]> m = reduce_mean(x=x,axes=ax,keep_dims=kd)[name=string(\"m\")];",
    ];
    assert_flags(&program(X, &body, "m"), Code::RejectedOp);
}

#[test]
fn sdpa_ignores_mask() {
    let line = format!("{T} y = sdpa(query=x,key=x,value=x)[name=string(\"y\")];");
    assert_flags(&program(X, &[&line], "y"), Code::SdpaIgnoresMask);
}

#[test]
fn sqrt_after_reduction() {
    let body = [
        "tensor<int32, [1]> ax = const()[name=string(\"ax\"), val=tensor<int32, [1]>([1])];",
        "bool kd = const()[name=string(\"kd\"), val=bool(true)];",
        "tensor<fp16, [1,1,1,32]> s = reduce_sum(x=x,axes=ax,keep_dims=kd)[name=string(\"s\")];",
        "tensor<fp16, [1,1,1,32]> r = sqrt(x=s)[name=string(\"r\")];",
    ];
    assert_flags(&program(X, &body, "r"), Code::SqrtAfterReduction);
    // sqrt of a non-reduction is fine.
    let line = format!("{T} y = sqrt(x=x)[name=string(\"y\")];");
    assert!(!codes(&program(X, &[&line], "y")).contains(&Code::SqrtAfterReduction));
}

#[test]
fn non_fp16_weights() {
    let w = "tensor<fp32, [1,768,1,1]> w = const()[name=string(\"w\"), val=tensor<fp32, [1,768,1,1]>(BLOBFILE(path=string(\"@model_path/weights/w.bin\"), offset=uint64(64)))];";
    assert_flags(&program(X, &[w], "x"), Code::NonFp16Weight);
    let q = format!("{T} y = constexpr_affine_dequantize(x=x)[name=string(\"y\")];");
    assert_flags(&program(X, &[&q], "y"), Code::NonFp16Weight);
    let body = [
        "string to16 = const()[name=string(\"to16\"), val=string(\"fp16\")];",
        "tensor<fp16, [1,768,1,32]> y = cast(dtype=to16,x=q)[name=string(\"y\")];",
    ];
    let text = program("tensor<int8, [1, 768, 1, 32]> q", &body, "y");
    assert_flags(&text, Code::NonFp16Weight);
}

#[test]
fn softmax_on_non_power_of_two_axis() {
    let ax = |a: i32| format!("int32 ax = const()[name=string(\"ax\"), val=int32({a})];");
    let sm = format!("{T} y = softmax(axis=ax,x=x)[name=string(\"y\")];");
    // Axis 1 has 768 channels: not a power of two.
    let a1 = ax(1);
    assert_flags(&program(X, &[&a1, &sm], "y"), Code::SoftmaxNonPowerOfTwo);
    // Axis -1 has 32 lanes: fine.
    let am1 = ax(-1);
    assert!(!codes(&program(X, &[&am1, &sm], "y")).contains(&Code::SoftmaxNonPowerOfTwo));
}

#[test]
fn axis_too_large() {
    let w = "tensor<fp16, [70000,8,1,1]> w = const()[name=string(\"w\"), val=tensor<fp16, [70000,8,1,1]>(BLOBFILE(path=string(\"@model_path/weights/w.bin\"), offset=uint64(64)))];";
    assert_flags(&program(X, &[w], "x"), Code::AxisTooLarge);
}

#[test]
fn rank_too_large() {
    // The parser refuses rank 6, so build the program directly.
    let mut p = parse(&program(X, &[], "x")).expect("parse");
    p.functions[0].inputs[0].1.shape = vec![1, 768, 1, 32, 1, 1];
    let found: Vec<Code> = validate(&p, &ValidateOptions::default())
        .into_iter()
        .map(|d| d.code)
        .collect();
    assert!(found.contains(&Code::RankTooLarge), "{found:?}");
}

#[test]
fn surface_too_small() {
    let text = program("tensor<fp16, [1, 4, 1, 32]> x", &[], "x");
    let p = parse(&text).expect("parse");
    let d = validate(&p, &ValidateOptions::default());
    let e = d
        .iter()
        .find(|d| d.code == Code::SurfaceTooSmall)
        .expect("small surface");
    assert!(e.message.contains("sources disagree"), "{e}");
    assert_eq!(e.severity, Severity::Warning);
}

#[test]
fn non_uniform_io_sizes() {
    let text = program(&format!("{X}, tensor<fp16, [1, 1536, 1, 32]> y"), &[], "x");
    assert_flags(&text, Code::NonUniformIoSize);
}

#[test]
fn spatial_width_and_lanes() {
    assert_flags(
        &program("tensor<fp16, [1, 2048, 1, 24]> x", &[], "x"),
        Code::SpatialWidth,
    );
    let lanes16 = codes(&program("tensor<fp16, [1, 1536, 1, 16]> x", &[], "x"));
    assert!(lanes16.contains(&Code::SpatialLanes) && !lanes16.contains(&Code::SpatialWidth));
}

fn weight_at(name: &str, offset: u64, path: &str) -> String {
    format!(
        "tensor<fp16, [4,4,1,1]> {name} = const()[name=string(\"{name}\"), val=tensor<fp16, [4,4,1,1]>(BLOBFILE(path=string(\"{path}\"), offset=uint64({offset})))];"
    )
}

#[test]
fn blob_offsets() {
    let p = "@model_path/weights/w.bin";
    let single = weight_at("a", 128, p);
    assert_flags(&program(X, &[&single], "x"), Code::BlobOffset);
    // Chunks of 16 fp16 (32 bytes): records at 64, 160, 256.
    let (a, b, c) = (
        weight_at("a", 64, p),
        weight_at("b", 160, p),
        weight_at("c", 256, p),
    );
    assert!(!codes(&program(X, &[&a, &b, &c], "x")).contains(&Code::BlobOffset));
    let bad = weight_at("c", 250, p);
    assert_flags(&program(X, &[&a, &b, &bad], "x"), Code::BlobOffset);
}

#[test]
fn unknown_weight_path() {
    let w = weight_at("a", 64, "@model_path/weights/w.bin");
    let text = program(X, &[&w], "x");
    let mut provided = HashSet::new();
    provided.insert("@model_path/weights/other.bin".to_string());
    let opts = ValidateOptions {
        weight_paths: Some(&provided),
        ..Default::default()
    };
    assert!(codes_with(&text, &opts).contains(&Code::UnknownWeightPath));
    provided.insert("@model_path/weights/w.bin".to_string());
    let opts = ValidateOptions {
        weight_paths: Some(&provided),
        ..Default::default()
    };
    assert!(!codes_with(&text, &opts).contains(&Code::UnknownWeightPath));
}

#[test]
fn weight_path_outside_model() {
    let w = weight_at("a", 64, "/tmp/w.bin");
    assert_flags(&program(X, &[&w], "x"), Code::WeightPathOutsideModel);
}

#[test]
fn blob_too_large_and_sram_spill() {
    let big = "tensor<fp16, [65536,40000,1,1]> w = const()[name=string(\"w\"), val=tensor<fp16, [65536,40000,1,1]>(BLOBFILE(path=string(\"@model_path/weights/w.bin\"), offset=uint64(64)))];";
    let found = codes(&program(X, &[big], "x"));
    assert!(found.contains(&Code::BlobTooLarge), "{found:?}");
    let mid = "tensor<fp16, [8192,4096,1,1]> w = const()[name=string(\"w\"), val=tensor<fp16, [8192,4096,1,1]>(BLOBFILE(path=string(\"@model_path/weights/w.bin\"), offset=uint64(64)))];";
    let found = codes(&program(X, &[mid], "x"));
    assert!(
        found.contains(&Code::SramSpill) && !found.contains(&Code::BlobTooLarge),
        "{found:?}"
    );
}

#[test]
fn concat_is_flagged_as_disputed() {
    let body = [
        "int32 cax = const()[name=string(\"cax\"), val=int32(1)];".to_string(),
        "bool cid = const()[name=string(\"cid\"), val=bool(false)];".to_string(),
        "tensor<fp16, [1,1536,1,32]> y = concat(axis=cax,interleave=cid,values=(x,x))[name=string(\"y\")];".to_string(),
    ];
    let body: Vec<&str> = body.iter().map(String::as_str).collect();
    let p = parse(&program(X, &body, "y")).expect("parse");
    let d = validate(&p, &ValidateOptions::default());
    let c = d.iter().find(|d| d.code == Code::Concat).expect("concat");
    assert!(c.message.contains("sources disagree") && c.severity == Severity::Warning);
}

#[test]
fn slice_by_index_on_input() {
    let body = [
        "tensor<int32, [4]> b = const()[name=string(\"b\"), val=tensor<int32, [4]>([0,0,0,0])];",
        "tensor<int32, [4]> e = const()[name=string(\"e\"), val=tensor<int32, [4]>([1,384,1,32])];",
        "tensor<fp16, [1,384,1,32]> y = slice_by_index(begin=b,end=e,x=x)[name=string(\"y\")];",
    ];
    assert_flags(&program(X, &body, "y"), Code::SliceByIndexOnInput);
}

#[test]
fn io_not_sorted() {
    let body = [
        format!("{T} b = relu(x=x)[name=string(\"b\")];"),
        format!("{T} a = sigmoid(x=x)[name=string(\"a\")];"),
    ];
    let body: Vec<&str> = body.iter().map(String::as_str).collect();
    assert_flags(&program(X, &body, "b, a"), Code::IoNotSorted);
    assert!(!codes(&program(X, &body, "a, b")).contains(&Code::IoNotSorted));
}

#[test]
fn io_dtype() {
    assert_flags(
        &program("tensor<int32, [1, 768, 1, 32]> x", &[], "x"),
        Code::IoDtype,
    );
}

#[test]
fn kernel_too_wide() {
    let body = [
        "tensor<fp16, [768,768,1,17]> w = const()[name=string(\"w\"), val=tensor<fp16, [768,768,1,17]>(BLOBFILE(path=string(\"@model_path/weights/w.bin\"), offset=uint64(64)))];",
        "tensor<fp16, [1,768,1,16]> y = conv(weight=w,x=x)[name=string(\"y\")];",
    ];
    let found = codes(&program(X, &body, "y"));
    assert!(
        found.contains(&Code::KernelTooWide) && !found.contains(&Code::TypeError),
        "{found:?}"
    );
}

#[test]
fn inline_literal() {
    let line = format!("{T} y = add(x=x,y=fp16(1.0))[name=string(\"y\")];");
    let found = codes(&program(X, &[&line], "y"));
    assert!(
        found.contains(&Code::InlineLiteral) && !found.contains(&Code::TypeError),
        "{found:?}"
    );
}

#[test]
fn rejected_and_unverified_ops_come_from_the_op_table() {
    use mil::{AneSupport, Op};
    for &op in Op::ALL {
        if !op.is_unary_elementwise() {
            continue;
        }
        let line = format!("{T} y = {}(x=x)[name=string(\"y\")];", op.name());
        let got = codes(&program(X, &[&line], "y"));
        match op.ane_support() {
            AneSupport::Rejected(_) => assert!(got.contains(&Code::RejectedOp), "{op}: {got:?}"),
            AneSupport::Unverified => {
                assert!(got.contains(&Code::UnverifiedOp), "{op}: {got:?}");
                assert!(!got.contains(&Code::UnknownOp), "{op}: {got:?}");
            }
            AneSupport::Documented => assert!(
                !got.contains(&Code::RejectedOp)
                    && !got.contains(&Code::UnverifiedOp)
                    && !got.contains(&Code::UnknownOp),
                "{op}: {got:?}"
            ),
        }
    }
    assert_eq!(Code::UnverifiedOp.severity(), Severity::Error);
    assert_eq!(Code::UnverifiedOp.name(), "unverified-op");
    let line = format!("{T} y = relu7(x=x)[name=string(\"y\")];");
    assert_eq!(
        codes(&program(X, &[&line], "y"))
            .iter()
            .filter(|c| **c == Code::UnknownOp)
            .count(),
        1
    );
}
