//! Each op of the simulator against a straightforward f32 computation written here.
//!
//! Every program is a single op (plus consts) on fp16 I/O. Inputs are fp16 values, so the
//! f32 reference sees exactly what the simulator sees. `Precision::Fp16` runs through the
//! device (validated compile, surfaces) and must equal the reference rounded to fp16 within
//! one fp16 ulp (accumulation order in GEMMs and reductions differs). `Precision::F32` runs
//! through the lowering API, whose outputs are not squeezed through an fp16 surface, and
//! must match the reference to 1e-5 relative.

mod common;

use ane::fp16::round_f16;
use ane_sim::{Precision, Program, SimDevice, SimOptions, Tensor};
use common::*;

const SHAPE: [usize; 4] = [1, 4, 1, 8];

/// Reference functions of the op tables.
type BinaryRef = fn(f32, f32) -> f32;
type UnaryRef = fn(f32) -> f32;
type ReduceRef = fn(&[f32]) -> f32;
type TensorRef = Box<dyn Fn(&[f32]) -> Vec<f32>>;

fn ty(shape: &[usize]) -> String {
    format!(
        "tensor<fp16, [{}]>",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A program with the given inputs, body lines and outputs.
fn program(inputs: &[(&str, &[usize])], body: &[String], outputs: &[&str]) -> String {
    let params: Vec<String> = inputs
        .iter()
        .map(|(n, s)| format!("{} {n}", ty(s)))
        .collect();
    format!(
        "program(1.3)\n{{\n    func main<ios18>({}) {{\n{}\n    }} -> ({});\n}}\n",
        params.join(", "),
        body.iter()
            .map(|l| format!("        {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        outputs.join(", ")
    )
}

/// Run on the simulator device (validated compile) and return the outputs in return order.
fn run(text: &str, inputs: &[(&str, &[f32])], precision: Precision) -> Vec<Tensor> {
    let mut dev = SimDevice::new(SimOptions {
        precision,
        ..Default::default()
    });
    dev.run_once(&mil::parse(text).expect("parses"), vec![], inputs)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

/// Run through the lowering API (no validator, no surfaces).
fn run_unvalidated(text: &str, inputs: Vec<Vec<f32>>, precision: Precision) -> Vec<Tensor> {
    run_program(text, &[], inputs, precision)
}

fn run_program(
    text: &str,
    weights: &[(String, Vec<u8>)],
    inputs: Vec<Vec<f32>>,
    precision: Precision,
) -> Vec<Tensor> {
    let parsed = mil::parse(text).expect("parses");
    let lookup = |p: &str| {
        weights
            .iter()
            .find(|(k, _)| k == p)
            .map(|(_, b)| b.as_slice())
    };
    let p = Program::build(parsed.main().expect("main"), &lookup, precision)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let ins = p
        .inputs()
        .iter()
        .zip(inputs)
        .map(|(io, v)| Tensor::new(io.shape.clone(), v))
        .collect();
    p.run(ins).expect("runs")
}

/// Compare in both precisions (see module doc).
fn assert_matches(what: &str, got16: &[f32], got32: &[f32], want: &[f32]) {
    assert_eq!(got16.len(), want.len(), "{what}: length");
    for (i, ((&a, &b), &w)) in got16.iter().zip(got32).zip(want).enumerate() {
        let tol32 = 1e-5 * w.abs().max(1e-3);
        assert!(
            (b - w).abs() <= tol32 || (b.is_nan() && w.is_nan()),
            "{what}[{i}] f32: {b} vs {w}"
        );
        let w16 = round_f16(w);
        let ulp = (w16.abs() * 2f32.powi(-10)).max(2f32.powi(-24));
        assert!(
            (a - w16).abs() <= ulp * 1.01 || (a.is_nan() && w16.is_nan()),
            "{what}[{i}] fp16: {a} vs {w16}"
        );
    }
}

fn both(text: &str, inputs: &[(&str, &[f32])]) -> (Vec<Tensor>, Vec<Tensor>) {
    let values = inputs.iter().map(|(_, v)| v.to_vec()).collect();
    (
        run(text, inputs, Precision::Fp16),
        run_unvalidated(text, values, Precision::F32),
    )
}

/// Broadcast index of `out` (row-major over `out_shape`) into a tensor of `shape`.
fn bidx(i: usize, out_shape: &[usize], shape: &[usize]) -> usize {
    let pad = out_shape.len() - shape.len();
    let mut rem = i;
    let mut idx = vec![0; out_shape.len()];
    for a in (0..out_shape.len()).rev() {
        idx[a] = rem % out_shape[a];
        rem /= out_shape[a];
    }
    let mut off = 0;
    for a in 0..shape.len() {
        let k = if shape[a] == 1 { 0 } else { idx[a + pad] };
        off = off * shape[a] + k;
    }
    off
}

#[test]
fn binary_ops_with_broadcasting() {
    let mut rng = Rng::new(11);
    let x = r16(&rng.vec(32, 2.0));
    let ops: [(&str, BinaryRef); 6] = [
        ("add", |a, b| a + b),
        ("sub", |a, b| a - b),
        ("mul", |a, b| a * b),
        ("real_div", |a, b| a / b),
        ("maximum", f32::max),
        ("minimum", f32::min),
    ];
    for yshape in [vec![1, 4, 1, 8], vec![1, 1, 1, 8], vec![1, 4, 1, 1]] {
        let n: usize = yshape.iter().product();
        // denominators away from 0
        let y: Vec<f32> = r16(&rng
            .vec(n, 1.0)
            .into_iter()
            .map(|v| if v.abs() < 0.25 { v + 0.5 } else { v })
            .collect::<Vec<_>>());
        for (op, f) in ops {
            let text = program(
                &[("x", &SHAPE), ("y", &yshape)],
                &[format!(
                    "{} z = {op}(x=x,y=y)[name=string(\"z\")];",
                    ty(&SHAPE)
                )],
                &["z"],
            );
            let want: Vec<f32> = (0..32)
                .map(|i| f(x[i], y[bidx(i, &SHAPE, &yshape)]))
                .collect();
            let (a, b) = both(&text, &[("x", &x), ("y", &y)]);
            assert_matches(&format!("{op} y{yshape:?}"), &a[0].data, &b[0].data, &want);
        }
    }
}

#[test]
fn pow_and_scalar_const_operand() {
    let mut rng = Rng::new(12);
    let x: Vec<f32> = r16(&rng.vec(32, 1.0).iter().map(|v| v + 1.5).collect::<Vec<_>>());
    let text = program(
        &[("x", &SHAPE)],
        &[
            "fp16 e = const()[name=string(\"e\"), val=fp16(-0.5)];".into(),
            format!("{} z = pow(x=x,y=e)[name=string(\"z\")];", ty(&SHAPE)),
            "fp16 c = const()[name=string(\"c\"), val=fp16(0.001302)];".into(),
            format!("{} w = mul(x=x,y=c)[name=string(\"w\")];", ty(&SHAPE)),
        ],
        &["z", "w"],
    );
    let (a, b) = both(&text, &[("x", &x)]);
    let want: Vec<f32> = x.iter().map(|v| v.powf(-0.5)).collect();
    assert_matches("pow", &a[0].data, &b[0].data, &want);
    // fp16 mode: the const itself is fp16 (0.001302 → 0.0013017654); f32 mode keeps 0.001302.
    let c16 = round_f16(0.001302);
    for (i, &xi) in x.iter().enumerate() {
        assert_eq!(a[1].data[i], round_f16(xi * c16), "fp16 scalar const");
        assert!(
            (b[1].data[i] - xi * 0.001302).abs() < 1e-7,
            "f32 scalar const"
        );
    }
}

#[test]
fn unary_ops() {
    let mut rng = Rng::new(13);
    let x = r16(&rng.vec(32, 3.0));
    let pos: Vec<f32> = x.iter().map(|v| round_f16(v.abs() + 0.1)).collect();
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    let ops: [(&str, bool, UnaryRef); 9] = [
        ("sigmoid", false, |v| 1.0 / (1.0 + (-v).exp())),
        ("tanh", false, f32::tanh),
        ("relu", false, |v| v.max(0.0)),
        ("exp", false, f32::exp),
        ("log", true, f32::ln),
        ("sqrt", true, f32::sqrt),
        ("abs", false, f32::abs),
        ("silu", false, |v| v / (1.0 + (-v).exp())),
        ("identity", false, |v| v),
    ];
    for (op, positive, f) in ops {
        let input = if positive { &pos } else { &x };
        let text = program(
            &[("x", &SHAPE)],
            &[format!("{} y = {op}(x=x)[name=string(\"y\")];", ty(&SHAPE))],
            &["y"],
        );
        let (a, b) = both(&text, &[("x", input)]);
        let want: Vec<f32> = input.iter().map(|&v| f(v)).collect();
        assert_matches(op, &a[0].data, &b[0].data, &want);
    }
    assert!((sig(0.0) - 0.5).abs() < 1e-7);
}

/// rsqrt, reduce_mean and gelu are rejected by the validator (the ANE compiler refuses them
/// in text MIL), so the device compile fails; the lowering API still computes them.
#[test]
fn validator_rejected_ops_fail_compile_but_compute() {
    let mut rng = Rng::new(14);
    let x: Vec<f32> = r16(&rng
        .vec(32, 2.0)
        .iter()
        .map(|v| v.abs() + 0.5)
        .collect::<Vec<_>>());
    let cases: [(&str, String, TensorRef); 3] = [
        (
            "rsqrt",
            format!("{} y = rsqrt(x=x)[name=string(\"y\")];", ty(&SHAPE)),
            Box::new(|v: &[f32]| v.iter().map(|x| 1.0 / (x + 1e-12).sqrt()).collect()),
        ),
        (
            "gelu",
            format!("{} y = gelu(x=x)[name=string(\"y\")];", ty(&SHAPE)),
            Box::new(|v: &[f32]| {
                // exact gelu via a high-accuracy erf series
                v.iter()
                    .map(|&x| 0.5 * x * (1.0 + erf64(x as f64 / 2f64.sqrt()) as f32))
                    .collect()
            }),
        ),
        (
            "reduce_mean",
            [
                "tensor<int32, [1]> ax = const()[name=string(\"ax\"), val=tensor<int32, [1]>([1])];".to_string(),
                "bool kd = const()[name=string(\"kd\"), val=bool(true)];".to_string(),
                format!("{} y = reduce_mean(x=x,axes=ax,keep_dims=kd)[name=string(\"y\")];", ty(&[1, 1, 1, 8])),
            ]
            .join("\n        "),
            Box::new(|v: &[f32]| (0..8).map(|s| (0..4).map(|c| v[c * 8 + s]).sum::<f32>() / 4.0).collect()),
        ),
    ];
    for (op, line, f) in cases {
        let text = program(&[("x", &SHAPE)], &[line], &["y"]);
        let mut dev = SimDevice::default();
        let err = dev
            .run_once(&mil::parse(&text).expect("parses"), vec![], &[("x", &x)])
            .expect_err("validator rejects")
            .to_string();
        assert!(err.contains("rejected-op"), "{op}: {err}");
        let a = run_unvalidated(&text, vec![x.clone()], Precision::Fp16);
        let b = run_unvalidated(&text, vec![x.clone()], Precision::F32);
        assert_matches(op, &a[0].data, &b[0].data, &f(&x));
    }
}

fn erf64(x: f64) -> f64 {
    // Maclaurin series, converges fast for |x| < 3.
    let mut sum = 0.0;
    let mut term = x;
    let mut n = 0;
    while term.abs() > 1e-17 && n < 200 {
        sum += term / (2 * n + 1) as f64;
        n += 1;
        term *= -x * x / n as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn softmax_on_both_axes() {
    let mut rng = Rng::new(15);
    let x = r16(&rng.vec(32, 4.0));
    for (axis, n, stride) in [(-1i32, 8usize, 1usize), (1, 4, 8)] {
        let text = program(
            &[("x", &SHAPE)],
            &[
                format!("int32 ax = const()[name=string(\"ax\"), val=int32({axis})];"),
                format!(
                    "{} y = softmax(axis=ax,x=x)[name=string(\"y\")];",
                    ty(&SHAPE)
                ),
            ],
            &["y"],
        );
        let (a, b) = both(&text, &[("x", &x)]);
        let mut want = vec![0f32; 32];
        for (i, w) in want.iter_mut().enumerate() {
            // the group of i along the axis
            let base = if stride == 1 { i - i % n } else { i % 8 };
            let m = (0..n)
                .map(|r| x[base + r * stride])
                .fold(f32::MIN, f32::max);
            let z: f32 = (0..n).map(|r| (x[base + r * stride] - m).exp()).sum();
            *w = (x[i] - m).exp() / z;
        }
        assert_matches(
            &format!("softmax axis {axis}"),
            &a[0].data,
            &b[0].data,
            &want,
        );
    }
}

#[test]
fn reductions() {
    let mut rng = Rng::new(16);
    let x = r16(&rng.vec(32, 2.0));
    let ops: [(&str, ReduceRef); 3] = [
        ("reduce_sum", |v| v.iter().sum()),
        ("reduce_max", |v| v.iter().copied().fold(f32::MIN, f32::max)),
        ("reduce_min", |v| v.iter().copied().fold(f32::MAX, f32::min)),
    ];
    for (op, f) in ops {
        // over channels, keep dims → [1,1,1,8]
        let text = program(
            &[("x", &SHAPE)],
            &[
                "tensor<int32, [1]> ax = const()[name=string(\"ax\"), val=tensor<int32, [1]>([1])];".into(),
                "bool kd = const()[name=string(\"kd\"), val=bool(true)];".into(),
                format!("{} y = {op}(x=x,axes=ax,keep_dims=kd)[name=string(\"y\")];", ty(&[1, 1, 1, 8])),
                "tensor<int32, [2]> ax2 = const()[name=string(\"ax2\"), val=tensor<int32, [2]>([1, -1])];".into(),
                "bool nk = const()[name=string(\"nk\"), val=bool(false)];".into(),
                format!("{} z = {op}(x=x,axes=ax2,keep_dims=nk)[name=string(\"z\")];", ty(&[1, 1])),
            ],
            &["y", "z"],
        );
        let (a, b) = both(&text, &[("x", &x)]);
        let want: Vec<f32> = (0..8)
            .map(|s| f(&(0..4).map(|c| x[c * 8 + s]).collect::<Vec<_>>()))
            .collect();
        assert_matches(op, &a[0].data, &b[0].data, &want);
        assert_eq!(a[1].shape, vec![1, 1]);
        assert_matches(&format!("{op} all"), &a[1].data, &b[1].data, &[f(&x)]);
    }
}

#[test]
fn layout_ops_reshape_transpose_slice_concat() {
    let x: Vec<f32> = (0..32).map(|i| i as f32).collect();
    let text = program(
        &[("x", &SHAPE)],
        &[
            // heads view: [1,4,1,8] -> [1,2,2,8] -> transpose [0,1,3,2] -> [1,2,8,2]
            "tensor<int32, [4]> sh = const()[name=string(\"sh\"), val=tensor<int32, [4]>([1,2,2,8])];".into(),
            format!("{} r = reshape(shape=sh,x=x)[name=string(\"r\")];", ty(&[1, 2, 2, 8])),
            "tensor<int32, [4]> pm = const()[name=string(\"pm\"), val=tensor<int32, [4]>([0,1,3,2])];".into(),
            format!("{} t = transpose(perm=pm,x=r)[name=string(\"t\")];", ty(&[1, 2, 8, 2])),
            // slice_by_size: channels 1..3, lanes 2..7
            "tensor<int32, [4]> b = const()[name=string(\"b\"), val=tensor<int32, [4]>([0,1,0,2])];".into(),
            "tensor<int32, [4]> sz = const()[name=string(\"sz\"), val=tensor<int32, [4]>([1,2,1,5])];".into(),
            format!("{} s = slice_by_size(x=x,begin=b,size=sz)[name=string(\"s\")];", ty(&[1, 2, 1, 5])),
            // slice_by_index: every second lane from 1, last channel squeezed away
            "tensor<int32, [4]> ib = const()[name=string(\"ib\"), val=tensor<int32, [4]>([0,3,0,1])];".into(),
            "tensor<int32, [4]> ie = const()[name=string(\"ie\"), val=tensor<int32, [4]>([1,4,1,8])];".into(),
            "tensor<int32, [4]> is = const()[name=string(\"is\"), val=tensor<int32, [4]>([1,1,1,2])];".into(),
            "tensor<bool, [4]> fm = const()[name=string(\"fm\"), val=tensor<bool, [4]>([false,false,false,false])];".into(),
            "tensor<bool, [4]> sq = const()[name=string(\"sq\"), val=tensor<bool, [4]>([false,true,false,false])];".into(),
            format!("{} i = slice_by_index(x=x,begin=ib,end=ie,stride=is,begin_mask=fm,end_mask=fm,squeeze_mask=sq)[name=string(\"i\")];", ty(&[1, 1, 4])),
            // concat along channels: (s, s)
            "int32 cax = const()[name=string(\"cax\"), val=int32(1)];".into(),
            "bool cid = const()[name=string(\"cid\"), val=bool(false)];".into(),
            format!("{} c = concat(axis=cax,interleave=cid,values=(s,s))[name=string(\"c\")];", ty(&[1, 4, 1, 5])),
            // expand_dims / squeeze round trip
            "tensor<int32, [1]> ea = const()[name=string(\"ea\"), val=tensor<int32, [1]>([0])];".into(),
            format!("{} e = expand_dims(x=x,axes=ea)[name=string(\"e\")];", ty(&[1, 1, 4, 1, 8])),
            format!("{} q = squeeze(x=e,axes=ea)[name=string(\"q\")];", ty(&SHAPE)),
        ],
        &["t", "s", "i", "c", "q"],
    );
    let (a, b) = both(&text, &[("x", &x)]);
    for (k, t) in a.iter().enumerate() {
        assert_eq!(t.data, b[k].data, "layout ops are exact in both precisions");
    }
    // t[0,h,s,d] = x[(h*2+d)*8 + s]
    let want_t: Vec<f32> = (0..32)
        .map(|i| {
            let (h, s, d) = (i / 16, (i / 2) % 8, i % 2);
            x[(h * 2 + d) * 8 + s]
        })
        .collect();
    assert_eq!(a[0].data, want_t);
    let want_s: Vec<f32> = (1..3)
        .flat_map(|c| (2..7).map(move |s| (c * 8 + s) as f32))
        .collect();
    assert_eq!(a[1].data, want_s);
    assert_eq!(a[2].shape, vec![1, 1, 4]);
    assert_eq!(a[2].data, vec![25.0, 27.0, 29.0, 31.0]);
    let want_c: Vec<f32> = want_s.iter().chain(&want_s).copied().collect();
    assert_eq!(a[3].data, want_c);
    assert_eq!(a[4].data, x);
}

#[test]
fn cast_rounds_to_fp16_only_in_fp16_mode() {
    let x = vec![
        0.1f32,
        1.0 / 3.0,
        65519.0,
        70000.0,
        -2.5e-8,
        1e-3,
        -7.0,
        0.5,
    ];
    let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp32, [1, 1, 1, 8]> x) {\n        string h = const()[name=string(\"h\"), val=string(\"fp16\")];\n        tensor<fp16, [1, 1, 1, 8]> a = cast(dtype=h,x=x)[name=string(\"a\")];\n        string f = const()[name=string(\"f\"), val=string(\"fp32\")];\n        tensor<fp32, [1, 1, 1, 8]> y = cast(dtype=f,x=a)[name=string(\"y\")];\n    } -> (y);\n}\n";
    let a = run(text, &[("x", &x)], Precision::Fp16);
    let b = run(text, &[("x", &x)], Precision::F32);
    // fp32 I/O: the device returns exactly what the program computed.
    assert_eq!(a[0].data, r16(&x), "fp16 cast = RNE with overflow to inf");
    assert!(a[0].data[3].is_infinite());
    assert_eq!(b[0].data, x, "f32 mode does not round intermediates");
}

#[test]
fn compare_and_select() {
    let mut rng = Rng::new(17);
    let x = r16(&rng.vec(32, 1.0));
    let y = r16(&rng.vec(32, 1.0));
    let text = program(
        &[("x", &SHAPE), ("y", &SHAPE)],
        &[
            "tensor<bool, [1, 4, 1, 8]> g = greater(x=x,y=y)[name=string(\"g\")];".into(),
            format!(
                "{} m = select(cond=g,a=x,b=y)[name=string(\"m\")];",
                ty(&SHAPE)
            ),
        ],
        &["m"],
    );
    let (a, b) = both(&text, &[("x", &x), ("y", &y)]);
    let want: Vec<f32> = x
        .iter()
        .zip(&y)
        .map(|(&p, &q)| if p > q { p } else { q })
        .collect();
    assert_matches("select(greater)", &a[0].data, &b[0].data, &want);
}

fn conv_text(cin: usize, cout: usize, groups: usize, s: usize) -> String {
    program(
        &[("x", &[1, cin, 1, s])],
        &[
            "string pt = const()[name=string(\"pt\"), val=string(\"valid\")];".into(),
            "tensor<int32, [2]> st = const()[name=string(\"st\"), val=tensor<int32, [2]>([1,1])];".into(),
            "tensor<int32, [4]> pd = const()[name=string(\"pd\"), val=tensor<int32, [4]>([0,0,0,0])];".into(),
            "tensor<int32, [2]> dl = const()[name=string(\"dl\"), val=tensor<int32, [2]>([1,1])];".into(),
            format!("int32 gr = const()[name=string(\"gr\"), val=int32({groups})];"),
            format!(
                "tensor<fp16, [{cout},{},1,1]> W = const()[name=string(\"W\"), val=tensor<fp16, [{cout},{},1,1]>(BLOBFILE(path=string(\"@model_path/weights/w.bin\"), offset=uint64(64)))];",
                cin / groups,
                cin / groups
            ),
            format!("{} y = conv(dilations=dl,groups=gr,pad=pd,pad_type=pt,strides=st,weight=W,x=x)[name=string(\"y\")];", ty(&[1, cout, 1, s])),
        ],
        &["y"],
    )
}

#[test]
fn conv_1x1_dense_and_grouped() {
    let mut rng = Rng::new(18);
    for (cin, cout, groups, s) in [
        (16usize, 24usize, 1usize, 8usize),
        (16, 8, 2, 8),
        (12, 12, 3, 40),
    ] {
        let cin_g = cin / groups;
        let cout_g = cout / groups;
        let w = r16(&rng.vec(cout * cin_g, 0.5));
        let x = r16(&rng.vec(cin * s, 1.0));
        let mut want = vec![0f32; cout * s];
        for g in 0..groups {
            let wg = &w[g * cout_g * cin_g..(g + 1) * cout_g * cin_g];
            let xg = &x[g * cin_g * s..(g + 1) * cin_g * s];
            let y = matmul(wg, xg, cout_g, cin_g, s);
            want[g * cout_g * s..(g + 1) * cout_g * s].copy_from_slice(&y);
        }
        let text = conv_text(cin, cout, groups, s);
        let weights = vec![("@model_path/weights/w.bin".to_string(), blob(&w))];
        let mut d16 = SimDevice::default();
        let a = d16
            .run_once(
                &mil::parse(&text).expect("parses"),
                weights.clone(),
                &[("x", &x)],
            )
            .unwrap();
        let b = run_program(&text, &weights, vec![x.clone()], Precision::F32);
        assert_matches(
            &format!("conv {cin}->{cout} g{groups}"),
            &a[0].1.data,
            &b[0].data,
            &want,
        );
    }
}

#[test]
fn matmul_transposes_and_batch_broadcast() {
    let mut rng = Rng::new(19);
    let (h, m, k, n) = (3usize, 5usize, 4usize, 6usize);
    for (tx, ty_) in [(false, false), (true, false), (false, true), (true, true)] {
        let xs = if tx { [1, h, k, m] } else { [1, h, m, k] };
        let ys = if ty_ { [1, 1, n, k] } else { [1, 1, k, n] }; // broadcast over heads
        let x = r16(&rng.vec(h * m * k, 1.0));
        let y = r16(&rng.vec(k * n, 1.0));
        let text = program(
            &[("x", &xs), ("y", &ys)],
            &[
                format!("bool tx = const()[name=string(\"tx\"), val=bool({tx})];"),
                format!("bool ty = const()[name=string(\"ty\"), val=bool({ty_})];"),
                format!(
                    "{} z = matmul(transpose_x=tx,transpose_y=ty,x=x,y=y)[name=string(\"z\")];",
                    ty(&[1, h, m, n])
                ),
            ],
            &["z"],
        );
        let ymat = if ty_ { transpose(&y, n, k) } else { y.clone() };
        let mut want = vec![];
        for hh in 0..h {
            let xh = &x[hh * m * k..(hh + 1) * m * k];
            let xmat = if tx { transpose(xh, k, m) } else { xh.to_vec() };
            want.extend(matmul(&xmat, &ymat, m, k, n));
        }
        let (a, b) = both(&text, &[("x", &x), ("y", &y)]);
        assert_matches(
            &format!("matmul tx={tx} ty={ty_}"),
            &a[0].data,
            &b[0].data,
            &want,
        );
    }
}

#[test]
fn shape_mismatch_is_a_compile_error() {
    // declared [1,4,1,8] but conv computes [1,24,1,8]
    let text = conv_text(16, 24, 1, 8).replace(
        "tensor<fp16, [1, 24, 1, 8]> y",
        "tensor<fp16, [1, 4, 1, 8]> y",
    );
    let w = vec![0.0; 24 * 16];
    let mut dev = SimDevice::default();
    let err = dev
        .run_once(
            &mil::parse(&text).expect("parses"),
            vec![("@model_path/weights/w.bin".into(), blob(&w))],
            &[("x", &[0.0; 128])],
        )
        .expect_err("shape mismatch")
        .to_string();
    assert!(err.contains("compile failed"), "{err}");
    assert!(
        err.contains("type-error") || err.contains("declared"),
        "{err}"
    );
}
