//! The builder's kernel helpers: fresh names, weight blobs with their BLOBFILE consts and the
//! default-keep_dims reductions.

use mil::{blob, parse, print, validate, BuildError, Builder, DType, Literal};

#[test]
fn fresh_names_count_up_and_skip_defined_names() {
    let mut b = Builder::new();
    let x = b.input("mul_2", DType::Fp16, [1, 4, 1, 2]);
    assert_eq!(b.fresh("c"), "c_1");
    // `mul_2` is taken by the input, so the counter moves on.
    assert_eq!(b.fresh("mul"), "mul_3");
    let n = b.fresh("relu");
    assert_eq!(n, "relu_4");
    let y = b.relu(n, x);
    b.output(y);
    let p = b.finish().expect("builds");
    assert_eq!(p.main().expect("main").body[0].out_name, "relu_4");
}

#[test]
fn weight_data_registers_the_blob_and_its_const() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, [1, 3, 1, 2]);
    let values = [0.5f32, -1.0, 2.0, 0.25, 3.0, -0.125];
    let w = b.weight_data("w", [2, 3, 1, 1], "@model_path/weights/w.bin", &values);
    let y = b.conv("y", x, w);
    b.output(y);
    assert_eq!(b.weights().len(), 1);
    let (program, weights) = b.finish_with_weights().expect("builds");
    assert_eq!(weights.len(), 1);
    assert_eq!(weights[0].0, "@model_path/weights/w.bin");
    assert_eq!(weights[0].1, blob::write_blob(&values).expect("blob"));
    let f = program.main().expect("main");
    let refs = f.blob_refs();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].0, "w");
    assert_eq!(refs[0].1.shape, vec![2, 3, 1, 1]);
    assert_eq!(refs[0].2.path, "@model_path/weights/w.bin");
    assert_eq!(refs[0].2.offset, 64);
    let chunks = blob::read_blob(&weights[0].1).expect("reads");
    let got: Vec<f32> = chunks[0].values.iter().map(|v| v.to_f32()).collect();
    assert_eq!(got, values);
    assert_eq!(parse(&print(&program)).expect("parses"), program);
}

#[test]
fn weight_data_rejects_wrong_sizes_and_duplicate_paths() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, [1, 2, 1, 2]);
    b.weight_data("w", [2, 2, 1, 1], "@model_path/weights/w.bin", &[1.0; 3]);
    b.output(x);
    assert!(matches!(
        b.finish(),
        Err(BuildError::WeightSize {
            expected: 4,
            got: 3,
            ..
        })
    ));

    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, [1, 2, 1, 2]);
    b.weight_data("w1", [2, 2, 1, 1], "@model_path/weights/w.bin", &[1.0; 4]);
    b.weight_data("w2", [2, 2, 1, 1], "@model_path/weights/w.bin", &[1.0; 4]);
    b.output(x);
    assert_eq!(
        b.finish().err(),
        Some(BuildError::DuplicateBlob(
            "@model_path/weights/w.bin".into()
        ))
    );
}

#[test]
fn keep_reductions_share_one_keep_dims_const() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, [1, 8, 1, 4]);
    let ax = b.int32s("ax", &[1]);
    let s = b.reduce_sum_keep("s", x, ax);
    let m = b.reduce_max_keep("m", x, ax);
    assert_eq!(b.shape(s), [1, 1, 1, 4]);
    assert_eq!(b.shape(m), [1, 1, 1, 4]);
    let y = b.add("y", s, m);
    b.output(y);
    let p = b.finish().expect("builds");
    let f = p.main().expect("main");
    let kds: Vec<_> = f.body.iter().filter(|s| s.out_name == "kd").collect();
    assert_eq!(kds.len(), 1);
    assert_eq!(kds[0].const_value(), Some(&Literal::Bool(true)));
    for name in ["s", "m"] {
        let st = f.statement(name).expect("reduction");
        assert_eq!(st.arg("keep_dims").and_then(|a| a.as_var()), Some("kd"));
    }
    assert!(!mil::has_errors(&validate(&p, &Default::default())));
    assert_eq!(parse(&print(&p)).expect("parses"), p);
}

#[test]
fn fp16_consts_of_f32_values_keep_the_f32() {
    // Kernels pass `f64::from(v_f32)`; the printed text reads back to the same f32.
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, [1, 2, 1, 2]);
    let v = 1e-5f32;
    let c = b.fp16("c", f64::from(v));
    let y = b.mul("y", x, c);
    b.output(y);
    let p = b.finish().expect("builds");
    let back = parse(&print(&p)).expect("parses");
    assert_eq!(back, p);
    let lit = back.main().and_then(|f| f.const_value("c")).expect("const");
    assert_eq!(lit.as_f64().map(|v| v as f32), Some(v));
}
