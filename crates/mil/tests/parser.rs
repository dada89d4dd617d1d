//! Parser details: both whitespace styles, literals, errors with line:column.

use mil::{parse, print, print_with, Arg, DType, Literal, Style, TensorData, ValueType};

const HEADER: &str = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 768, 1, 32]> x) {\n";

fn wrap(body: &str, outs: &str) -> String {
    format!("{HEADER}{body}    }} -> ({outs});\n}}\n")
}

#[test]
fn both_whitespace_styles_parse_to_the_same_program() {
    let compact = wrap(
        "        tensor<int32, [4]> pm = const()[name=string(\"pm\"), val=tensor<int32, [4]>([0,1,3,2])];\n        tensor<fp16, [1,768,32,1]> y = transpose(perm=pm,x=x)[name=string(\"t\")];\n",
        "y",
    );
    let spaced = wrap(
        "        tensor<int32, [4]> pm = const()[name = string(\"pm\"), val = tensor<int32, [4]>([0, 1, 3, 2])];\n        tensor<fp16, [1, 768, 32, 1]> y = transpose(perm = pm, x = x)[name = string(\"t\")];\n",
        "y",
    );
    let a = parse(&compact).expect("compact");
    let b = parse(&spaced).expect("spaced");
    assert_eq!(a, b);
    assert_eq!(print(&a), compact);
    assert_eq!(print_with(&a, Style::Spaced), spaced);
    let t = &a.functions[0].body[1];
    assert_eq!((t.op.as_str(), t.op_name.as_str()), ("transpose", "t"));
    assert_eq!(
        t.out_type,
        ValueType::Tensor(mil::TensorType::new(DType::Fp16, [1, 768, 32, 1]))
    );
}

#[test]
fn literals_of_every_kind() {
    let body = "        fp16 a = const()[name=string(\"a\"), val=fp16(0.125000)];\n        fp32 b = const()[name=string(\"b\"), val=fp32(-2.5)];\n        bool c = const()[name=string(\"c\"), val=bool(false)];\n        string d = const()[name=string(\"d\"), val=string(\"q\\\"uote\\\\\")];\n        tensor<bool, [2]> e = const()[name=string(\"e\"), val=tensor<bool, [2]>([true,false])];\n        tensor<fp16, [2]> f = const()[name=string(\"f\"), val=tensor<fp16, [2]>([1.5,-0.25])];\n        tensor<fp16, [1,768,1,32]> y = add(x=x,y=fp16(1.0))[name=string(\"y\")];\n";
    let p = parse(&wrap(body, "y")).expect("parse");
    let f = &p.functions[0];
    assert_eq!(
        f.const_value("a"),
        Some(&Literal::Float {
            dtype: DType::Fp16,
            value: 0.125,
            decimals: Some(6)
        })
    );
    assert_eq!(f.const_value("b").and_then(Literal::as_f64), Some(-2.5));
    assert_eq!(f.const_value("c").and_then(Literal::as_bool), Some(false));
    assert_eq!(
        f.const_value("d").and_then(Literal::as_str),
        Some("q\"uote\\")
    );
    assert!(matches!(
        f.const_value("e"),
        Some(Literal::Tensor { data: TensorData::Bool(v), .. }) if v == &[true, false]
    ));
    assert!(matches!(
        f.const_value("f"),
        Some(Literal::Tensor { data: TensorData::Float(v), .. }) if v == &[1.5, -0.25]
    ));
    assert!(
        matches!(f.body[6].arg("y"), Some(Arg::Literal(Literal::Float { value, .. })) if *value == 1.0)
    );
    // Printing keeps `0.125000` and the escapes, and is a fixed point.
    let text = print(&p);
    assert!(
        text.contains("fp16(0.125000)") && text.contains(r#"string("q\"uote\\")"#),
        "{text}"
    );
    assert_eq!(parse(&text).expect("reparse"), p);
    mil::infer_shapes(f).expect("types");
}

#[test]
fn build_info_is_optional_and_kept_in_order() {
    let p = parse(&wrap("", "x")).expect("parse");
    assert!(p.build_info.is_empty());
    assert!(!print(&p).contains("buildInfo"));
    let with =
        "program(1.3)\n[buildInfo = dict<string, string>({{\"b\", \"2\"}, {\"a\", \"\"}})]\n{\n}\n";
    let p = parse(with).expect("parse");
    assert_eq!(
        p.build_info,
        [
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), String::new())
        ]
    );
    assert!(p.functions.is_empty());
    assert_eq!(print(&p), with);
}

fn error_of(text: &str) -> mil::ParseError {
    parse(text).expect_err("must not parse")
}

#[test]
fn errors_report_line_column_and_expectation() {
    let e = error_of(&wrap(
        "        tensor<fp16, [1,768,1,32]> y = relu(x=x)[name=string(\"y\")]\n",
        "y",
    ));
    assert_eq!((e.line, e.column), (5, 5), "{e}");
    assert!(e.message.contains("expected `;`"), "{e}");

    let e = error_of(&wrap("        tensor<fp17, [1]> y = relu(x=x);\n", "y"));
    assert_eq!((e.line, e.column), (4, 16), "{e}");
    assert!(e.message.contains("dtype"), "{e}");

    let e =
        error_of("program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 2, 3, 4, 5, 6]> x) {\n");
    assert!(e.message.contains("rank 6"), "{e}");

    let e = error_of(&wrap("        tensor<int32, [3]> a = const()[name=string(\"a\"), val=tensor<int32, [3]>([1,2])];\n", "a"));
    assert!(
        e.message.contains("2 elements") && e.message.contains("needs 3"),
        "{e}"
    );

    let e = error_of(&wrap(
        "        int32 a = const()[name=string(\"a\"), val=int32(4294967296)];\n",
        "a",
    ));
    assert!(e.message.contains("out of range for int32"), "{e}");

    let e = error_of(&wrap(
        "        fp16 a = const()[name=string(\"a\"), val=fp16(1e999)];\n",
        "a",
    ));
    assert!(e.message.contains("non-finite"), "{e}");

    let e = error_of("program(-1)\n{\n}\n");
    assert_eq!((e.line, e.column), (1, 9), "{e}");
    assert!(e.message.contains("invalid program version"), "{e}");

    let e = error_of("program(1.3)\n{\n}\ntrailing");
    assert_eq!((e.line, e.column), (4, 1), "{e}");

    let e = error_of("program(1.3)\n{\n    func main<ios18>(");
    assert!(e.message.contains("end of input"), "{e}");

    let e = mil::parse_bytes(b"program(1.3)\n{\xff}").expect_err("bad utf8");
    assert_eq!(
        (e.line, e.column, e.message.as_str()),
        (2, 2, "invalid UTF-8")
    );
}

#[test]
fn deeply_nested_tuples_are_rejected_not_overflowing() {
    let deep = format!("{}x{}", "(".repeat(10_000), ")".repeat(10_000));
    let body =
        format!("        tensor<fp16, [1,768,1,32]> y = identity(x={deep})[name=string(\"y\")];\n");
    let e = error_of(&wrap(&body, "y"));
    assert!(e.message.contains("nested deeper"), "{e}");
}

#[test]
fn multiple_functions_round_trip() {
    let text = "program(1.3)\n{\n    func a<ios17>(tensor<fp32, [2]> x) {\n    } -> (x);\n    func main<ios18>(tensor<fp16, [1]> y) {\n    } -> (y);\n}\n";
    let p = parse(text).expect("parse");
    assert_eq!(p.functions.len(), 2);
    assert_eq!(p.main().map(|f| f.opset.as_str()), Some("ios18"));
    assert_eq!(print(&p), text);
}
