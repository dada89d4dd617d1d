//! Shape inference per op, via the builder (which infers as it goes).

use mil::{BuildError, Builder, DType, ValueType};

fn x(b: &mut Builder, shape: &[usize]) -> mil::Value {
    b.input("x", DType::Fp16, shape.to_vec())
}

#[test]
fn grouped_conv_and_bias_shapes() {
    let mut b = Builder::new();
    let xv = x(&mut b, &[1, 8, 1, 32]);
    let p = b.conv_params(["pt", "st", "pd", "dl", "gr"], 4);
    let w = b.weight("w", [12, 2, 1, 1], "@model_path/weights/w.bin");
    let y = b.conv_with("y", xv, w, &p);
    assert_eq!(b.shape(y), [1, 12, 1, 32]);
    b.output(y);
    b.finish().expect("grouped conv is valid");

    let mut b = Builder::new();
    let xv = x(&mut b, &[1, 8, 1, 32]);
    let p = b.conv_params(["pt", "st", "pd", "dl", "gr"], 3);
    let w = b.weight("w", [12, 2, 1, 1], "@model_path/weights/w.bin");
    let y = b.conv_with("y", xv, w, &p);
    b.output(y);
    let e = b
        .finish()
        .expect_err("groups 3 does not divide 8")
        .to_string();
    assert!(e.contains("groups 3"), "{e}");
}

#[test]
fn matmul_transposes_and_broadcasts_batch() {
    let mut b = Builder::new();
    let q = b.input("q", DType::Fp16, [1, 12, 256, 64]);
    let k = b.input("k", DType::Fp16, [1, 1, 256, 64]);
    let s = b.matmul_t("s", q, k, false, true);
    assert_eq!(b.shape(s), [1, 12, 256, 256]);
    let t = b.matmul_t("t", q, k, true, false);
    assert_eq!(b.shape(t), [1, 12, 64, 64]);
    assert_eq!(
        b.function()
            .const_value("s_ty")
            .and_then(mil::Literal::as_bool),
        Some(true)
    );
    let bad = b.matmul_t("bad", q, k, false, false);
    b.output(bad);
    let e = b.finish().expect_err("K mismatch").to_string();
    assert!(
        e.contains("`matmul`") && e.contains("`bad`") && e.contains("K=64") && e.contains("K=256"),
        "{e}"
    );
}

#[test]
fn broadcasting_binary_ops_and_comparisons() {
    let mut b = Builder::new();
    let xv = x(&mut b, &[1, 768, 1, 32]);
    let g = b.weight("g", [1, 768, 1, 1], "@model_path/weights/g.bin");
    let s = b.input("s", DType::Fp16, [1, 1, 1, 32]);
    let y = b.mul("y", xv, g);
    assert_eq!(b.shape(y), [1, 768, 1, 32]);
    let z = b.real_div("z", y, s);
    assert_eq!(b.shape(z), [1, 768, 1, 32]);
    let half = b.fp16("half", 0.5);
    let m = b.maximum("m", z, half);
    assert_eq!(b.shape(m), [1, 768, 1, 32]);
    let c = b.op(
        "c",
        "greater",
        vec![
            ("x", mil::Arg::Var("m".into())),
            ("y", mil::Arg::Var("half".into())),
        ],
        vec![],
    );
    assert_eq!(b.value_type(c).map(ValueType::dtype), Some(DType::Bool));
    let sel = b.select("sel", c, m, half);
    assert_eq!(b.shape(sel), [1, 768, 1, 32]);
    let bad_w = b.weight("bad_w", [1, 5, 1, 1], "@model_path/weights/b.bin");
    let bad = b.add("bad", xv, bad_w);
    b.output(bad);
    let e = b.finish().expect_err("768 vs 5").to_string();
    assert!(e.contains("`add`") && e.contains("broadcast"), "{e}");
}

#[test]
fn reductions_with_and_without_keep_dims() {
    let mut b = Builder::new();
    let xv = x(&mut b, &[1, 12, 256, 256]);
    let ax = b.int32s("ax", &[-1]);
    let keep = b.bool("keep", true);
    let drop = b.bool("drop", false);
    let r = b.reduce_sum("r", xv, ax, keep);
    assert_eq!(b.shape(r), [1, 12, 256, 1]);
    let m = b.reduce_max("m", xv, ax, drop);
    assert_eq!(b.shape(m), [1, 12, 256]);
    let ax9 = b.int32s("ax9", &[4]);
    let bad = b.reduce_sum("bad", xv, ax9, keep);
    b.output(bad);
    let e = b.finish().expect_err("axis 4 of rank 4").to_string();
    assert!(e.contains("axis 4 out of range"), "{e}");
}

#[test]
fn reshape_transpose_and_wildcard() {
    let mut b = Builder::new();
    let xv = x(&mut b, &[1, 768, 1, 32]);
    let sh = b.int32s("sh", &[1, 12, -1, 32]);
    let r = b.reshape("r", xv, sh);
    assert_eq!(b.shape(r), [1, 12, 64, 32]);
    let pm = b.int32s("pm", &[0, 1, 3, 2]);
    let t = b.transpose("t", r, pm);
    assert_eq!(b.shape(t), [1, 12, 32, 64]);
    let bad_sh = b.int32s("bad_sh", &[1, 7, 1, 32]);
    let bad = b.reshape("bad", xv, bad_sh);
    b.output(bad);
    let e = b.finish().expect_err("element count").to_string();
    assert!(e.contains("cannot reshape"), "{e}");
}

#[test]
fn slices_concat_cast_and_dims() {
    let mut b = Builder::new();
    let xv = x(&mut b, &[1, 4864, 1, 256]);
    let begin = b.int32s("begin", &[0, 768, 0, 0]);
    let size = b.int32s("size", &[1, 2048, 1, -1]);
    let s = b.slice_by_size("s", xv, begin, size);
    assert_eq!(b.shape(s), [1, 2048, 1, 256]);
    let bi = b.int32s("bi", &[0, 0, 0, 1]);
    let ei = b.int32s("ei", &[1, 10, 1, 256]);
    let st = b.int32s("st", &[1, 3, 1, 2]);
    let f = b.constant(
        "f",
        mil::Literal::Tensor {
            ty: mil::TensorType::new(DType::Bool, [4]),
            data: mil::TensorData::Bool(vec![false; 4]),
        },
    );
    let sq = b.constant(
        "sq",
        mil::Literal::Tensor {
            ty: mil::TensorType::new(DType::Bool, [4]),
            data: mil::TensorData::Bool(vec![true, false, true, false]),
        },
    );
    let si = b.slice_by_index("si", xv, bi, ei, st, f, f, sq);
    // axis1: 0..10 step 3 → 4; axis3: 1..256 step 2 → 128; axes 0 and 2 squeezed.
    assert_eq!(b.shape(si), [4, 128]);
    let ax = b.int32("ax", 1);
    let il = b.bool("il", false);
    let c = b.concat("c", &[s, s, xv], ax, il);
    assert_eq!(b.shape(c), [1, 2048 * 2 + 4864, 1, 256]);
    let to32 = b.string("to32", "fp32");
    let c32 = b.cast("c32", c, to32);
    assert_eq!(b.value_type(c32).map(ValueType::dtype), Some(DType::Fp32));
    let ed = b.int32s("ed", &[0]);
    let e = b.expand_dims("e", c32, ed);
    assert_eq!(b.shape(e), [1, 1, 8960, 1, 256]);
    let q = b.int32s("q", &[0, 3]);
    let sqz = b.squeeze("sqz", e, q);
    assert_eq!(b.shape(sqz), [1, 8960, 256]);
    let oob = b.int32s("oob", &[0, 4800, 0, 0]);
    let bad = b.slice_by_size("bad", xv, oob, size);
    b.output(bad);
    let err = b.finish().expect_err("slice past the end").to_string();
    assert!(
        err.contains("`slice_by_size`") && err.contains("out of bounds"),
        "{err}"
    );
}

#[test]
fn params_must_be_consts_and_declared_types_must_match() {
    let mut b = Builder::new();
    let xv = x(&mut b, &[1, 4, 1, 32]);
    let computed_axis = b.relu("axis", xv);
    let y = b.softmax("y", xv, computed_axis);
    b.output(y);
    let e = b.finish().expect_err("axis computed").to_string();
    assert!(e.contains("must be a const"), "{e}");

    let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4, 1, 32]> x) {\n        tensor<fp32, [1,4,1,32]> y = relu(x=x)[name=string(\"y\")];\n    } -> (y);\n}\n";
    let p = mil::parse(text).expect("parse");
    let e = mil::infer_shapes(&p.functions[0]).expect_err("dtype mismatch");
    assert_eq!(
        (e.index, e.op.as_str(), e.out_name.as_str()),
        (Some(0), "relu", "y")
    );
    assert!(e.message.contains("declared type"), "{e}");
}

#[test]
fn foreign_value_handles_are_errors_not_panics() {
    let mut other = Builder::new();
    let a = other.input("a", DType::Fp16, [1, 4, 1, 32]);
    let v = other.relu("r", a);
    let mut b = Builder::new();
    let xv = x(&mut b, &[1, 4, 1, 32]);
    let y = b.add("y", xv, v);
    b.output(y);
    // Index 1 exists in `b` too (`y`), but the handle must not alias it.
    assert_eq!(
        b.finish().expect_err("foreign"),
        BuildError::ForeignValue(1)
    );
}

/// Infer the types of a `main(x: fp32[2, 3])` with `body`; the result of `y`, or the error.
fn infer_y(body: &[&str]) -> Result<ValueType, mil::ShapeError> {
    let text = format!(
        "program(1.3)\n{{\n    func main<ios18>(tensor<fp32, [2, 3]> x) {{\n        {}\n    }} -> (y);\n}}\n",
        body.join("\n        ")
    );
    let p = mil::parse(&text).expect("parse");
    mil::infer_shapes(&p.functions[0]).map(|env| env["y"].clone())
}

/// The type `y` must have for inference to pass: infer with a placeholder declaration and
/// read the inferred type from the error (or the success).
fn inferred(op_line: &str, consts: &[&str]) -> Result<ValueType, mil::ShapeError> {
    let mut body: Vec<&str> = consts.to_vec();
    let line = format!("tensor<fp32, [7]> y = {op_line}[name=string(\"y\")];");
    body.push(&line);
    match infer_y(&body) {
        Err(e) if e.message.starts_with("declared type") => {
            let ty = e.message.split("the op produces ").nth(1).unwrap_or("");
            let p = mil::parse(&format!(
                "program(1.3)\n{{\n    func main<ios18>(tensor<fp32, [2, 3]> x) {{\n        {}\n        {ty} y = {op_line}[name=string(\"y\")];\n    }} -> (y);\n}}\n",
                consts.join("\n        ")
            ))
            .expect("reparse");
            mil::infer_shapes(&p.functions[0]).map(|env| env["y"].clone())
        }
        other => other,
    }
}

fn tensor(dtype: DType, shape: &[usize]) -> ValueType {
    ValueType::Tensor(mil::TensorType::new(dtype, shape.to_vec()))
}

const W43: &str = "tensor<fp32, [4, 3]> w = const()[name=string(\"w\"), val=tensor<fp32, [4, 3]>([0,0,0,0,0,0,0,0,0,0,0,0])];";
const B4: &str =
    "tensor<fp32, [4]> b = const()[name=string(\"b\"), val=tensor<fp32, [4]>([0,0,0,0])];";
const TWO: &str = "fp32 two = const()[name=string(\"two\"), val=fp32(2.0)];";
const P: &str = "tensor<bool, [2, 3]> p = greater(x=x,y=two)[name=string(\"p\")];";
const AX1: &str =
    "tensor<int32, [1]> ax = const()[name=string(\"ax\"), val=tensor<int32, [1]>([1])];";

#[test]
fn linear_shapes() {
    assert_eq!(
        inferred("linear(x=x,weight=w,bias=b)", &[W43, B4]),
        Ok(tensor(DType::Fp32, &[2, 4]))
    );
    let e = inferred(
        "linear(x=x,weight=w)",
        &["tensor<fp32, [4, 2]> w = const()[name=string(\"w\"), val=tensor<fp32, [4, 2]>([0,0,0,0,0,0,0,0])];"],
    )
    .expect_err("in 2 ≠ 3");
    assert!(e.message.contains("[4, 2]") && e.op == "linear", "{e}");
    let e = inferred(
        "linear(x=x,weight=w,bias=b)",
        &[
            W43,
            "tensor<fp32, [3]> b = const()[name=string(\"b\"), val=tensor<fp32, [3]>([0,0,0])];",
        ],
    )
    .expect_err("bias [3] for 4 outputs");
    assert!(e.message.contains("bias"), "{e}");
}

#[test]
fn new_binary_logical_and_unary_shapes() {
    for op in ["floor_div", "mod"] {
        assert_eq!(
            inferred(&format!("{op}(x=x,y=two)"), &[TWO]),
            Ok(tensor(DType::Fp32, &[2, 3]))
        );
    }
    for op in ["logical_and", "logical_or", "logical_xor"] {
        assert_eq!(
            inferred(&format!("{op}(x=p,y=p)"), &[TWO, P]),
            Ok(tensor(DType::Bool, &[2, 3]))
        );
        let e = inferred(&format!("{op}(x=p,y=x)"), &[TWO, P]).expect_err("fp32 operand");
        assert!(e.message.contains("must be bool"), "{op}: {e}");
    }
    assert_eq!(
        inferred("logical_not(x=p)", &[TWO, P]),
        Ok(tensor(DType::Bool, &[2, 3]))
    );
    for op in [
        "ceil",
        "floor",
        "round",
        "sign",
        "sin",
        "cos",
        "tan",
        "exp2",
        "inverse",
        "square",
        "relu6",
        "softplus",
        "erf",
        "leaky_relu",
    ] {
        assert_eq!(
            inferred(&format!("{op}(x=x)"), &[]),
            Ok(tensor(DType::Fp32, &[2, 3])),
            "{op}"
        );
    }
    let lo = "fp32 lo = const()[name=string(\"lo\"), val=fp32(-1.0)];";
    assert_eq!(
        inferred("clip(x=x,alpha=lo,beta=two)", &[lo, TWO]),
        Ok(tensor(DType::Fp32, &[2, 3]))
    );
    let e = inferred("clip(x=x,alpha=lo)", &[lo]).expect_err("beta missing");
    assert!(e.message.contains("missing argument `beta`"), "{e}");
    let s = "string s = const()[name=string(\"s\"), val=string(\"x\")];";
    let e = inferred("leaky_relu(x=x,alpha=s)", &[s]).expect_err("string alpha");
    assert!(e.message.contains("`alpha` must be a numeric"), "{e}");
    let m = "string m = const()[name=string(\"m\"), val=string(\"CUBIC\")];";
    let e = inferred("gelu(x=x,mode=m)", &[m]).expect_err("bad mode");
    assert!(e.message.contains("gelu mode `CUBIC`"), "{e}");
}

#[test]
fn new_reductions_and_layer_norm_shapes() {
    let kd = "bool kd = const()[name=string(\"kd\"), val=bool(true)];";
    for op in [
        "reduce_prod",
        "reduce_sum_square",
        "reduce_l2_norm",
        "reduce_log_sum_exp",
    ] {
        assert_eq!(
            inferred(&format!("{op}(x=x,axes=ax)"), &[AX1]),
            Ok(tensor(DType::Fp32, &[2])),
            "{op}"
        );
        assert_eq!(
            inferred(&format!("{op}(x=x,axes=ax,keep_dims=kd)"), &[AX1, kd]),
            Ok(tensor(DType::Fp32, &[2, 1])),
            "{op}"
        );
        assert_eq!(
            inferred(&format!("{op}(x=x)"), &[]),
            Ok(tensor(DType::Fp32, &[])),
            "{op}: all axes"
        );
    }
    let g = "tensor<fp32, [3]> g = const()[name=string(\"g\"), val=tensor<fp32, [3]>([1,1,1])];";
    let eps = "fp32 eps = const()[name=string(\"eps\"), val=fp32(0.001)];";
    assert_eq!(
        inferred(
            "layer_norm(x=x,axes=ax,gamma=g,beta=g,epsilon=eps)",
            &[AX1, g, eps]
        ),
        Ok(tensor(DType::Fp32, &[2, 3]))
    );
    let ax0 = "tensor<int32, [1]> ax = const()[name=string(\"ax\"), val=tensor<int32, [1]>([0])];";
    let e =
        inferred("layer_norm(x=x,axes=ax,gamma=g)", &[ax0, g]).expect_err("gamma [3] on axis 0");
    assert!(
        e.message.contains("gamma") && e.message.contains("[2]"),
        "{e}"
    );
    let ax3 = "tensor<int32, [1]> ax = const()[name=string(\"ax\"), val=tensor<int32, [1]>([3])];";
    let e = inferred("layer_norm(x=x,axes=ax)", &[ax3]).expect_err("axis 3 of rank 2");
    assert!(e.message.contains("axis 3 out of range"), "{e}");
}

#[test]
fn every_op_has_a_shape_rule() {
    // An op without a rule would report "unknown op"; every table op must get further.
    for &op in mil::Op::ALL {
        let e = inferred(&format!("{}(x=x)", op.name()), &[]);
        if let Err(e) = e {
            assert_ne!(e.message, "unknown op", "{op}");
        }
    }
    let e = inferred("frobnicate(x=x)", &[]).expect_err("unknown");
    assert_eq!(e.message, "unknown op");
}

#[test]
fn interleaved_concat_needs_equal_sizes() {
    let ax = "int32 ax = const()[name=string(\"ax\"), val=int32(0)];";
    let il = "bool il = const()[name=string(\"il\"), val=bool(true)];";
    let s = "tensor<int32, [2]> b = const()[name=string(\"b\"), val=tensor<int32, [2]>([0, 0])];";
    let z = "tensor<int32, [2]> z = const()[name=string(\"z\"), val=tensor<int32, [2]>([1, 3])];";
    let h = "tensor<fp32, [1, 3]> h = slice_by_size(x=x,begin=b,size=z)[name=string(\"h\")];";
    assert_eq!(
        inferred("concat(values=(x,x),axis=ax,interleave=il)", &[ax, il]),
        Ok(tensor(DType::Fp32, &[4, 3]))
    );
    let e = inferred(
        "concat(values=(x,h),axis=ax,interleave=il)",
        &[ax, il, s, z, h],
    )
    .expect_err("2 vs 1 rows");
    assert!(e.message.contains("cannot interleave"), "{e}");
}
