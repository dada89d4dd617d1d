//! The builder reproduces the reference generators' fixtures: the built program equals the
//! parsed fixture (same ops, shapes, constants, blob references, names) and prints back to
//! the fixture text byte for byte.

mod common;

use mil::{parse, print_with, Builder, DType, Program, Style, Value};

const D: usize = 768;
const H: usize = 2048;
const S: usize = 256;
const NH: usize = 12;
const HD: usize = D / NH;

fn check(name: &str, built: Program, style: Style) {
    let text = common::read_generator_fixture(name);
    let fixture = parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let main = built.main().expect("main");
    mil::infer_shapes(main).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        built, fixture,
        "{name}: built program differs from the fixture"
    );
    assert_eq!(print_with(&built, style), text, "{name}: text differs");
}

fn d4(c: usize, s: usize) -> [usize; 4] {
    [1, c, 1, s]
}

#[test]
fn builder_reproduces_conv_fixture() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp32, d4(4, 2));
    let cp = b.conv_params(
        [
            "c_pad_type",
            "c_strides",
            "c_pad",
            "c_dilations",
            "c_groups",
        ],
        1,
    );
    let to16 = b.string("to_fp16", "fp16");
    let x16 = b.cast(("x16", "cast_in"), x, to16);
    let w = b.weight("W", [6, 4, 1, 1], "@model_path/weights/weight.bin");
    let y16 = b.conv_with(("y16", "conv"), x16, w, &cp);
    let to32 = b.string("to_fp32", "fp32");
    let y = b.cast(("y", "cast_out"), y16, to32);
    b.output(y);
    check("conv.mil", b.finish().expect("build"), Style::Spaced);
}

#[test]
fn builder_reproduces_matmul_fixture() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp32, [1, 4, 2]);
    let w = b.input("W", DType::Fp32, [1, 6, 4]);
    let to16 = b.string("to_fp16", "fp16");
    let x16 = b.cast(("x16", "cast_x"), x, to16);
    let w16 = b.cast(("W16", "cast_W"), w, to16);
    let tx = b.bool("tx", false);
    let ty = b.bool("ty", false);
    let y16 = b.matmul(("y16", "mm"), w16, x16, tx, ty);
    assert_eq!(b.shape(y16), [1, 6, 2]);
    let to32 = b.string("to_fp32", "fp32");
    let y = b.cast(("y", "cast_out"), y16, to32);
    b.output(y);
    check("matmul.mil", b.finish().expect("build"), Style::Spaced);
}

/// RMSNorm over channels as the legacy generators emit it (§5.5), weight blob `rms_path`.
fn rmsnorm(b: &mut Builder, x: Value, rms_path: &str) -> Value {
    let sq = b.mul("sq", x, x);
    let rax = b.int32s("rax", &[1]);
    let kd = b.bool("kd", true);
    let ss = b.reduce_sum("ss", sq, rax, kd);
    let invd = b.fp16_f("invd", 1.0 / D as f64);
    let ss2 = b.mul("ss2", ss, invd);
    let eps = b.fp16("eps", 0.00001);
    let ss3 = b.add("ss3", ss2, eps);
    let nhalf = b.fp16("nhalf", -0.5);
    let rrms = b.pow("rrms", ss3, nhalf);
    let xr = b.mul("xr", x, rrms);
    let rw = b.weight("rw", [1, D, 1, 1], rms_path);
    b.mul("xn", xr, rw)
}

fn taps(b: &mut Builder, values: &[Value]) -> Value {
    let cax = b.int32("cax", 1);
    let cid = b.bool("cid", false);
    b.concat(("out", "cat"), values, cax, cid)
}

#[test]
fn builder_reproduces_sdpa_forward_fixture() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, d4(D, S));
    let xn = rmsnorm(&mut b, x, "@model_path/weights/rms1.bin");
    b.default_conv_params();
    let wq = b.weight("Wq", [D, D, 1, 1], "@model_path/weights/wq.bin");
    let wk = b.weight("Wk", [D, D, 1, 1], "@model_path/weights/wk.bin");
    let wv = b.weight("Wv", [D, D, 1, 1], "@model_path/weights/wv.bin");
    let wo = b.weight("Wo", [D, D, 1, 1], "@model_path/weights/wo.bin");
    let qf = b.conv(("qf", "cq"), xn, wq);
    let kf = b.conv(("kf", "ck"), xn, wk);
    let vf = b.conv(("vf", "cv"), xn, wv);
    let qsh = b.int32s("qsh", &[1, NH as i32, HD as i32, S as i32]);
    let pm = b.int32s("pm", &[0, 1, 3, 2]);
    let mut heads = Vec::new();
    for (t, f) in [("q", qf), ("k", kf), ("v", vf)] {
        let r = b.reshape((format!("{t}4"), format!("r{t}")), f, qsh);
        heads.push(b.transpose((t.to_string(), format!("t{t}")), r, pm));
    }
    let (q, k, v) = (heads[0], heads[1], heads[2]);
    let tx = b.bool("tx", false);
    let ty = b.bool("ty", true);
    let sc1 = b.matmul(("sc1", "mm1"), q, k, tx, ty);
    assert_eq!(b.shape(sc1), [1, NH, S, S]);
    let scv = b.fp16_f("scv", 1.0 / (HD as f64).sqrt());
    let sc2 = b.mul(("sc2", "scl"), sc1, scv);
    let cm = b.weight("cm", [1, 1, S, S], "@model_path/weights/mask.bin");
    let ms = b.add(("ms", "msk"), sc2, cm);
    let sax = b.int32("sax", -1);
    let aw = b.softmax(("aw", "sm"), ms, sax);
    let a4 = b.matmul(("a4", "mm2"), aw, v, tx, tx);
    let at = b.transpose(("at", "ta"), a4, pm);
    let os = b.int32s("os", &[1, D as i32, 1, S as i32]);
    let af = b.reshape(("af", "ra"), at, os);
    let oo = b.conv(("oo", "co"), af, wo);
    let out = taps(&mut b, &[oo, qf, kf, vf, af, xn]);
    assert_eq!(b.shape(out), d4(6 * D, S));
    b.output(out);
    check(
        "sdpa_fwd_taps.mil",
        b.finish().expect("build"),
        Style::Compact,
    );
}

#[test]
fn builder_reproduces_ffn_forward_fixture() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, d4(D, S));
    let xn = rmsnorm(&mut b, x, "@model_path/weights/rms2.bin");
    b.default_conv_params();
    let w1 = b.weight("W1", [H, D, 1, 1], "@model_path/weights/w1.bin");
    let w3 = b.weight("W3", [H, D, 1, 1], "@model_path/weights/w3.bin");
    let w2 = b.weight("W2", [D, H, 1, 1], "@model_path/weights/w2.bin");
    let h1 = b.conv(("h1", "c1"), xn, w1);
    let h3 = b.conv(("h3", "c3"), xn, w3);
    let sig = b.sigmoid(("sig", "sg"), h1);
    let silu = b.mul(("silu", "si"), h1, sig);
    let gate = b.mul(("gate", "gt"), silu, h3);
    let y = b.conv(("y", "c2"), gate, w2);
    let out = taps(&mut b, &[y, h1, h3, gate, xn]);
    assert_eq!(b.shape(out), d4(2 * D + 3 * H, S));
    b.output(out);
    check(
        "ffn_fwd_taps.mil",
        b.finish().expect("build"),
        Style::Compact,
    );
}

#[test]
fn builder_reproduces_ffn_backward_fixture() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, d4(D + 2 * H, S));
    b.default_conv_params();
    let bd = b.int32s("bd", &[0, 0, 0, 0]);
    let sd = b.int32s("sd", &[1, D as i32, 1, S as i32]);
    let dffn = b.slice_by_size(("dffn", "s0"), x, bd, sd);
    let b1 = b.int32s("b1", &[0, D as i32, 0, 0]);
    let s1 = b.int32s("s1", &[1, H as i32, 1, S as i32]);
    let h1 = b.slice_by_size(("h1", "s1x"), x, b1, s1);
    let b3 = b.int32s("b3", &[0, (D + H) as i32, 0, 0]);
    let h3 = b.slice_by_size(("h3", "s3x"), x, b3, s1);
    let w2t = b.weight("W2t", [H, D, 1, 1], "@model_path/weights/w2t.bin");
    let dsilu = b.conv(("dsilu", "cw2"), dffn, w2t);
    let sig = b.sigmoid(("sig", "sg"), h1);
    let one = b.fp16("one", 1.0);
    let oms = b.sub("oms", one, sig);
    let homs = b.mul("homs", h1, oms);
    let brk = b.add("brk", one, homs);
    let dsd = b.mul("dsd", sig, brk);
    let t1 = b.mul("t1", dsilu, h3);
    let dh1 = b.mul("dh1", t1, dsd);
    let slh = b.mul("slh", h1, sig);
    let dh3 = b.mul("dh3", dsilu, slh);
    let w1t = b.weight("W1t", [D, H, 1, 1], "@model_path/weights/w1t.bin");
    let w3t = b.weight("W3t", [D, H, 1, 1], "@model_path/weights/w3t.bin");
    let dx1 = b.conv(("dx1", "cw1"), dh1, w1t);
    let dx3 = b.conv(("dx3", "cw3"), dh3, w3t);
    let dx = b.add(("dx", "adx"), dx1, dx3);
    let out = taps(&mut b, &[dx, dh1, dh3]);
    b.output(out);
    check("ffn_bwd.mil", b.finish().expect("build"), Style::Compact);
}

#[test]
fn builder_records_shape_errors_with_the_op_name() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, d4(D, S));
    let w = b.weight("W", [D, 512, 1, 1], "@model_path/weights/w.bin");
    let y = b.conv(("y", "bad_conv"), x, w);
    b.output(y);
    let err = b
        .finish()
        .expect_err("mismatched conv must fail")
        .to_string();
    assert!(err.contains("`conv`") && err.contains("`y`"), "{err}");
    assert!(err.contains("512"), "{err}");
}

#[test]
fn builder_rejects_duplicate_names_and_missing_outputs() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, d4(4, 32));
    let y = b.relu("y", x);
    let _ = b.relu("y", y);
    b.output(y);
    assert_eq!(
        b.finish().expect_err("duplicate"),
        mil::BuildError::DuplicateName("y".into())
    );
    let mut b = Builder::new();
    b.input("x", DType::Fp16, d4(4, 32));
    assert_eq!(
        b.finish().expect_err("no outputs"),
        mil::BuildError::NoOutputs
    );
}

/// The generic fused programs: several convs whose weights are chunks of one multi-chunk
/// blob, at the offsets `blob::chunk_offsets` computes (the same blobs the writer
/// reproduces in tests/blob.rs).
fn fused(cout: usize, weights: &[(&str, &str, &str)], outs: &[&str]) -> Program {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp32, d4(4, 2));
    let cp = b.conv_params(
        [
            "c_pad_type",
            "c_strides",
            "c_pad",
            "c_dilations",
            "c_groups",
        ],
        1,
    );
    let to16 = b.string("to_fp16", "fp16");
    let x16 = b.cast(("x16", "cast_in"), x, to16);
    let offsets = mil::blob::chunk_offsets(&vec![cout * 4; weights.len()]);
    let ws: Vec<Value> = weights
        .iter()
        .zip(&offsets)
        .map(|((w, _, _), &off)| {
            b.weight_at(*w, [cout, 4, 1, 1], "@model_path/weights/weight.bin", off)
        })
        .collect();
    let hs: Vec<Value> = weights
        .iter()
        .zip(&ws)
        .map(|((_, h, op), &w)| b.conv_with((*h, *op), x16, w, &cp))
        .collect();
    let to32 = b.string("to_fp32", "fp32");
    for ((out, (_, h, _)), &hv) in outs.iter().zip(weights).zip(&hs) {
        let y = b.cast(
            (
                out.to_string(),
                format!("cast_{}", h.trim_end_matches("16")),
            ),
            hv,
            to32,
        );
        b.output(y);
    }
    b.finish().expect("build")
}

#[test]
fn builder_reproduces_fused_qkv_and_ffn_fixtures() {
    let qkv = fused(
        4,
        &[
            ("Wq", "q16", "conv_q"),
            ("Wk", "k16", "conv_k"),
            ("Wv", "v16", "conv_v"),
        ],
        &["q", "k", "v"],
    );
    check("fused_qkv.mil", qkv, Style::Spaced);
    let ffn = fused(
        6,
        &[("W1", "h1", "conv_w1"), ("W3", "h3", "conv_w3")],
        &["out1", "out3"],
    );
    check("fused_ffn.mil", ffn, Style::Spaced);
}

#[test]
fn builder_reproduces_qkv_backward_fixture() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, d4(3 * D, S));
    b.default_conv_params();
    let sz = b.int32s("sz", &[1, D as i32, 1, S as i32]);
    let mut grads = Vec::new();
    for (k, g) in ["dq", "dk", "dv"].iter().enumerate() {
        let begin = b.int32s(format!("b{k}"), &[0, (k * D) as i32, 0, 0]);
        grads.push(b.slice_by_size((g.to_string(), format!("s{k}")), x, begin, sz));
    }
    let ws: Vec<Value> = ["q", "k", "v"]
        .iter()
        .map(|t| {
            let path = format!("@model_path/weights/w{t}t.bin");
            b.weight(format!("W{t}t"), [D, D, 1, 1], &path)
        })
        .collect();
    let dx: Vec<Value> = ["q", "k", "v"]
        .iter()
        .enumerate()
        .map(|(k, t)| b.conv((format!("dx{t}"), format!("c{t}")), grads[k], ws[k]))
        .collect();
    let dxqk = b.add(("dxqk", "aqk"), dx[0], dx[1]);
    let out = b.add("out", dxqk, dx[2]);
    b.output(out);
    check("qkvb.mil", b.finish().expect("build"), Style::Compact);
}

/// `[1,D,1,S]` → heads `[1,NH,S,HD]` (reshape then transpose `[0,1,3,2]`).
fn to_heads(b: &mut Builder, f: Value, t: &str, rsh: Value, pm: Value) -> Value {
    let r = b.reshape((format!("{t}r"), format!("r{t}")), f, rsh);
    b.transpose((t.to_string(), format!("t{t}")), r, pm)
}

#[test]
fn builder_reproduces_sdpa_backward1_fixture() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, d4(4 * D, S));
    b.default_conv_params();
    let sz = b.int32s("sz", &[1, D as i32, 1, S as i32]);
    let mut parts = Vec::new();
    for (k, name) in ["qf", "kf", "vf", "dx2f"].iter().enumerate() {
        let begin = b.int32s(format!("b{k}"), &[0, (k * D) as i32, 0, 0]);
        parts.push(b.slice_by_size((name.to_string(), format!("s{k}")), x, begin, sz));
    }
    let wot = b.weight("Wot", [D, D, 1, 1], "@model_path/weights/wot.bin");
    let df = b.conv(("df", "cwo"), parts[3], wot);
    let rsh = b.int32s("rsh", &[1, NH as i32, HD as i32, S as i32]);
    let pm = b.int32s("pm", &[0, 1, 3, 2]);
    let q = to_heads(&mut b, parts[0], "q", rsh, pm);
    let k = to_heads(&mut b, parts[1], "k", rsh, pm);
    let v = to_heads(&mut b, parts[2], "v", rsh, pm);
    let dr = b.reshape(("dr", "rd"), df, rsh);
    let da = b.transpose(("da", "td"), dr, pm);
    let f = b.bool("bF", false);
    let t = b.bool("bT", true);
    let sc1 = b.matmul(("sc1", "mm1"), q, k, f, t);
    let scv = b.fp16_f("scv", 0.125);
    let sc2 = b.mul(("sc2", "scl"), sc1, scv);
    let cm = b.weight("cm", [1, 1, S, S], "@model_path/weights/mask.bin");
    let ms = b.add(("ms", "msk"), sc2, cm);
    let sax = b.int32("sax", -1);
    let probs = b.softmax(("probs", "sm"), ms, sax);
    let dv4 = b.matmul(("dv4", "dv"), probs, da, t, f);
    let dp4 = b.matmul(("dp4", "dp"), da, v, f, t);
    let dvt = b.transpose("dvt", dv4, pm);
    let dvs = b.int32s("dvs", &[1, D as i32, 1, S as i32]);
    let dvf = b.reshape("dvf", dvt, dvs);
    let scs = b.int32s("scs", &[1, (NH * S) as i32, 1, S as i32]);
    let pf = b.reshape("pf", probs, scs);
    let dpf = b.reshape("dpf", dp4, scs);
    let out = taps(&mut b, &[dvf, pf, dpf]);
    assert_eq!(b.shape(out), d4(D + 2 * NH * S, S));
    b.output(out);
    check("sdpa_bwd1.mil", b.finish().expect("build"), Style::Compact);
}

#[test]
fn builder_reproduces_sdpa_backward2_fixture() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Fp16, d4(2 * NH * S + 2 * D, S));
    let sz_sc = b.int32s(("sz_sc", "szsc"), &[1, (NH * S) as i32, 1, S as i32]);
    let b0 = b.int32s("b0", &[0, 0, 0, 0]);
    let pf = b.slice_by_size(("pf", "s0"), x, b0, sz_sc);
    let b1 = b.int32s("b1", &[0, (NH * S) as i32, 0, 0]);
    let dpf = b.slice_by_size(("dpf", "s1"), x, b1, sz_sc);
    let sz_d = b.int32s(("sz_d", "szd"), &[1, D as i32, 1, S as i32]);
    let b2 = b.int32s("b2", &[0, (2 * NH * S) as i32, 0, 0]);
    let qf = b.slice_by_size(("qf", "s2"), x, b2, sz_d);
    let b3 = b.int32s("b3", &[0, (2 * NH * S + D) as i32, 0, 0]);
    let kf = b.slice_by_size(("kf", "s3"), x, b3, sz_d);
    let ssh = b.int32s("ssh", &[1, NH as i32, S as i32, S as i32]);
    let probs = b.reshape(("probs", "rp"), pf, ssh);
    let dp = b.reshape(("dp", "rdp"), dpf, ssh);
    let rsh = b.int32s("rsh", &[1, NH as i32, HD as i32, S as i32]);
    let pm = b.int32s("pm", &[0, 1, 3, 2]);
    let q = to_heads(&mut b, qf, "q", rsh, pm);
    let k = to_heads(&mut b, kf, "k", rsh, pm);
    let pdp = b.mul("pdp", probs, dp);
    let rax = b.int32s("rax", &[-1]);
    let kd = b.bool("kd", true);
    let spdp = b.reduce_sum(("spdp", "rs"), pdp, rax, kd);
    let dps = b.sub("dps", dp, spdp);
    let ds0 = b.mul("ds0", probs, dps);
    let scv = b.fp16_f("scv", 0.125);
    let ds = b.mul("ds", ds0, scv);
    let f = b.bool("bF", false);
    let t = b.bool("bT", true);
    let dq4 = b.matmul(("dq4", "dq"), ds, k, f, f);
    let dk4 = b.matmul(("dk4", "dk"), ds, q, t, f);
    let dqt = b.transpose("dqt", dq4, pm);
    let dkt = b.transpose("dkt", dk4, pm);
    let fs = b.int32s("fs", &[1, D as i32, 1, S as i32]);
    let dqf = b.reshape("dqf", dqt, fs);
    let dkf = b.reshape("dkf", dkt, fs);
    let out = taps(&mut b, &[dqf, dkf]);
    b.output(out);
    check("sdpa_bwd2.mil", b.finish().expect("build"), Style::Compact);
}
