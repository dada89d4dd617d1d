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
