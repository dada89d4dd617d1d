//! Kernel families against the CPU backend's math on random weights, and the structural rules
//! (binding-order names, surface sizes, axis limits) for the two model shapes.
//!
//! Tolerances: with the simulator in f32 mode and f32 surfaces the kernels must reproduce the
//! CPU math to 1e-5 relative (weights are drawn as fp16 values, so the blobs are exact); in
//! fp16 mode to 3e-2 relative RMS.

use std::collections::HashSet;

use ane::Device;
use ane_llm::backend::{compare, eval_once};
use ane_llm::kernels::head::{classifier_chunks, head};
use ane_llm::kernels::host::position_input;
use ane_llm::kernels::layers::{fused_layers, LayerF32};
use ane_llm::kernels::{Geometry, Kernel, MAX_AXIS, MIN_SURFACE_BYTES};
use ane_sim::{Precision, SimDevice, SimOptions};
use cpu::ops::{attention, rms_norm, rope, swiglu};
use mil::DType;
use model::LlamaConfig;

/// Deterministic values in [−a, a), rounded to fp16 (so fp16 blobs hold them exactly).
fn rand(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut z = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            z ^= z << 13;
            z ^= z >> 7;
            z ^= z << 17;
            let u = (z >> 40) as f32 / (1u64 << 24) as f32;
            half::f16::from_f32((2.0 * u - 1.0) * a).to_f32()
        })
        .collect()
}

/// Per-slot (or per-token) rows.
type Rows = Vec<Vec<f32>>;

/// `x` rounded to fp16.
fn f16r(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

fn random_layer(g: &Geometry, seed: u64) -> LayerF32 {
    let (d, kv, h) = (g.dim, g.kv_dim, g.ffn_dim);
    let s = |cols: usize| (3.0 / cols as f32).sqrt();
    LayerF32 {
        attn_norm: rand(d, seed, 1.0)
            .iter()
            .map(|v| f16r(1.0 + 0.5 * v))
            .collect(),
        wq: rand(d * d, seed + 1, s(d)),
        wk: rand(kv * d, seed + 2, s(d)),
        wv: rand(kv * d, seed + 3, s(d)),
        wo: rand(d * d, seed + 4, s(d)),
        ffn_norm: rand(d, seed + 5, 1.0)
            .iter()
            .map(|v| f16r(1.0 + 0.5 * v))
            .collect(),
        w_gate: rand(h * d, seed + 6, s(d)),
        w_up: rand(h * d, seed + 7, s(d)),
        w_down: rand(d * h, seed + 8, s(h)),
    }
}

fn gqa_geometry(io: DType) -> Geometry {
    Geometry {
        dim: 64,
        kv_dim: 32,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        ffn_dim: 96,
        vocab: 70_000,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
        lanes: 8,
        max_seq: 32,
        io,
    }
}

fn matvec(w: &[f32], x: &[f32], rows: usize) -> Vec<f32> {
    let cols = x.len();
    (0..rows)
        .map(|r| {
            w[r * cols..(r + 1) * cols]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect()
}

/// CPU reference of one block for `n` tokens at positions `pos..pos+n`, given the caches
/// `[S][KV]` (slots < pos filled). Returns (x out per token, k rows, v rows).
fn cpu_block(
    g: &Geometry,
    w: &LayerF32,
    xs: &[Vec<f32>],
    pos: usize,
    k_cache: &mut [Vec<f32>],
    v_cache: &mut [Vec<f32>],
) -> (Rows, Rows, Rows) {
    let (d, kv) = (g.dim, g.kv_dim);
    let mut ks = Vec::new();
    let mut vs = Vec::new();
    let mut qs = Vec::new();
    for (t, x) in xs.iter().enumerate() {
        let mut xn = vec![0f32; d];
        rms_norm(&mut xn, x, &w.attn_norm, g.rms_eps);
        let mut q = matvec(&w.wq, &xn, d);
        let mut k = matvec(&w.wk, &xn, kv);
        let v = matvec(&w.wv, &xn, kv);
        rope(&mut q, g.head_dim, pos + t, g.rope_theta);
        rope(&mut k, g.head_dim, pos + t, g.rope_theta);
        k_cache[pos + t] = k.clone();
        v_cache[pos + t] = v.clone();
        qs.push(q);
        ks.push(k);
        vs.push(v);
    }
    let mut outs = Vec::new();
    for (t, x) in xs.iter().enumerate() {
        let n_pos = pos + t + 1;
        let kc: Vec<f32> = k_cache[..n_pos].concat();
        let vc: Vec<f32> = v_cache[..n_pos].concat();
        let mut att = vec![0f32; d];
        attention(&qs[t], &kc, &vc, n_pos, g.n_heads, g.n_kv_heads, &mut att);
        let o = matvec(&w.wo, &att, d);
        let x1: Vec<f32> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
        let mut xn = vec![0f32; d];
        rms_norm(&mut xn, &x1, &w.ffn_norm, g.rms_eps);
        let mut gate = matvec(&w.w_gate, &xn, g.ffn_dim);
        let up = matvec(&w.w_up, &xn, g.ffn_dim);
        swiglu(&mut gate, &up);
        let y = matvec(&w.w_down, &gate, d);
        outs.push(x1.iter().zip(&y).map(|(a, b)| a + b).collect());
    }
    (outs, ks, vs)
}

fn sim(precision: Precision) -> SimDevice {
    SimDevice::new(SimOptions {
        precision,
        ..SimOptions::default()
    })
}

/// `[C][L]` channel-major lanes from per-token rows (lanes ≥ rows.len() stay 0).
fn lanes_of(rows: &[Vec<f32>], channels: usize, lanes: usize) -> Vec<f32> {
    let mut out = vec![0f32; channels * lanes];
    for (t, r) in rows.iter().enumerate() {
        for (c, &v) in r.iter().enumerate() {
            out[c * lanes + t] = v;
        }
    }
    out
}

/// Lane `t` of channels `ch..ch+n` of a `[C][L]` buffer.
fn lane(buf: &[f32], lanes: usize, t: usize, ch: usize, n: usize) -> Vec<f32> {
    (ch..ch + n).map(|c| buf[c * lanes + t]).collect()
}

/// Run `layers` fused at `pos` with `n` tokens against the CPU; returns the worst relative
/// RMS difference over x and the K/V rows.
fn layer_case(
    g: &Geometry,
    precision: Precision,
    layers: &[LayerF32],
    pos: usize,
    n: usize,
    seed: u64,
) -> f32 {
    let (d, kv, l, s) = (g.dim, g.kv_dim, g.lanes, g.max_seq);
    let kernel = fused_layers(g, 0, layers).expect("generate");
    let xs: Vec<Vec<f32>> = (0..n)
        .map(|t| rand(d, seed + 100 + t as u64, 2.0))
        .collect();
    // Caches with slots < pos filled with random rows; slots ≥ pos hold garbage the mask must hide.
    let mut caches: Vec<(Rows, Rows)> = (0..layers.len())
        .map(|j| {
            let k = (0..s)
                .map(|i| rand(kv, seed + 1000 * j as u64 + i as u64, 1.0))
                .collect();
            let v = (0..s)
                .map(|i| rand(kv, seed + 7000 + 1000 * j as u64 + i as u64, 1.0))
                .collect();
            (k, v)
        })
        .collect();
    let mut inputs = vec![lanes_of(&xs, d, l), position_input(g, pos, n)];
    for (k, v) in &caches {
        // [S][KV] → [KV][S]
        inputs.push(lanes_of(k, kv, s));
        inputs.push(lanes_of(v, kv, s));
    }
    let mut dev = sim(precision);
    let id = dev.compile(&kernel.spec()).expect("compile");
    let outs = eval_once(&mut dev, id, &kernel, &inputs).expect("eval");
    // CPU: chain the blocks.
    let mut x = xs.clone();
    let mut worst = 0f32;
    for (j, w) in layers.iter().enumerate() {
        let (kc, vc) = &mut caches[j];
        let (x2, ks, vs) = cpu_block(g, w, &x, pos, kc, vc);
        for t in 0..n {
            let k_got = lane(&outs[1], l, t, 2 * j * kv, kv);
            let v_got = lane(&outs[1], l, t, (2 * j + 1) * kv, kv);
            worst = worst
                .max(compare(&k_got, &ks[t]).0)
                .max(compare(&v_got, &vs[t]).0);
        }
        x = x2;
    }
    for (t, want) in x.iter().enumerate() {
        let got = lane(&outs[0], l, t, 0, d);
        worst = worst.max(compare(&got, want).0);
    }
    worst
}

#[test]
fn decode_layer_matches_cpu_with_gqa_at_the_start_and_near_the_end_of_the_cache() {
    let g = gqa_geometry(DType::Fp32);
    let w = [random_layer(&g, 1)];
    for pos in [0, 5, g.max_seq - 1] {
        let dev = layer_case(&g, Precision::F32, &w, pos, 1, 40 + pos as u64);
        eprintln!("decode pos {pos}: f32 relative RMS diff {dev:.2e}");
        assert!(dev < 1e-5, "pos {pos}: {dev}");
    }
}

#[test]
fn prefill_chunk_matches_cpu_with_the_causal_mask() {
    let g = gqa_geometry(DType::Fp32);
    let w = [random_layer(&g, 2)];
    // A full chunk of 8 tokens ending at the last slot, and a partial chunk mid-cache.
    for (pos, n) in [(g.max_seq - 8, 8), (3, 5)] {
        let dev = layer_case(&g, Precision::F32, &w, pos, n, 77);
        eprintln!("prefill pos {pos} n {n}: f32 relative RMS diff {dev:.2e}");
        assert!(dev < 1e-5, "pos {pos} n {n}: {dev}");
    }
}

#[test]
fn fused_three_layers_equal_three_cpu_blocks_in_f32_and_fp16() {
    let g32 = gqa_geometry(DType::Fp32);
    let ws: Vec<LayerF32> = (0..3).map(|i| random_layer(&g32, 10 + 10 * i)).collect();
    let f32_dev = layer_case(&g32, Precision::F32, &ws, 20, 3, 5);
    eprintln!("fused 3 layers: f32 relative RMS diff {f32_dev:.2e}");
    assert!(f32_dev < 1e-5, "{f32_dev}");
    let g16 = gqa_geometry(DType::Fp16);
    let fp16_dev = layer_case(&g16, Precision::Fp16, &ws, 20, 3, 5);
    eprintln!("fused 3 layers: fp16 relative RMS diff {fp16_dev:.2e}");
    assert!(fp16_dev < 3e-2, "{fp16_dev}");
    assert!(fp16_dev > f32_dev, "fp16 mode must round");
}

#[test]
fn head_matches_cpu_norm_classifier_and_max_over_chunks() {
    let g = gqa_geometry(DType::Fp32);
    let (d, v, l) = (g.dim, g.vocab, g.lanes);
    assert_eq!(
        classifier_chunks(v).len(),
        2,
        "70,000 > 65,536 needs two chunks"
    );
    let norm: Vec<f32> = rand(d, 3, 1.0)
        .iter()
        .map(|x| f16r(1.0 + 0.5 * x))
        .collect();
    let cls = rand(v * d, 4, 0.2);
    let kernel = head(&g, &norm, &cls).expect("head");
    let xs: Vec<Vec<f32>> = (0..3).map(|t| rand(d, 50 + t, 3.0)).collect();
    let mut dev = sim(Precision::F32);
    let id = dev.compile(&kernel.spec()).expect("compile");
    let outs = eval_once(&mut dev, id, &kernel, &[lanes_of(&xs, d, l)]).expect("eval");
    assert_eq!(
        outs.len(),
        4,
        "two logits chunks, the max, the hidden state"
    );
    for (t, x) in xs.iter().enumerate() {
        let mut xn = vec![0f32; d];
        rms_norm(&mut xn, x, &norm, g.rms_eps);
        let (rel, _) = compare(&lane(&outs[3], l, t, 0, d), &xn);
        assert!(
            rel < 1e-5,
            "lane {t}: the hidden output is the normed state ({rel})"
        );
        let want = matvec(&cls, &xn, v);
        let mut got = lane(&outs[0], l, t, 0, outs[0].len() / l);
        got.extend(lane(&outs[1], l, t, 0, outs[1].len() / l));
        let (rel, _) = compare(&got, &want);
        assert!(rel < 1e-5, "lane {t}: {rel}");
        let max = got.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        assert_eq!(outs[2][t], max, "lane {t}: the max output is the max logit");
        let top = want
            .iter()
            .enumerate()
            .fold(0, |b, (i, &x)| if x > want[b] { i } else { b });
        assert_eq!(ane_llm::backend::argmax_with_hint(&got, outs[2][t]), top);
    }
}

/// Outputs of `program` on `inputs` (declaration order), with and without lane sharing;
/// asserts they are bitwise equal in every lane (idle ones included) and returns how many
/// lanes the shared run computed.
fn shared_equals_every_lane(program: &ane_sim::Program, inputs: &[Vec<f32>]) -> Option<usize> {
    let tensors: Vec<ane_sim::Tensor> = program
        .inputs()
        .iter()
        .zip(inputs)
        .map(|(io, v)| ane_sim::Tensor::new(io.shape.clone(), v.clone()))
        .collect();
    let mut every = program.clone();
    every.set_lane_sharing(false);
    let shared = program.shared_lanes(&tensors);
    let got = program.run(tensors.clone()).expect("shared run");
    let want = every.run(tensors).expect("every-lane run");
    assert_eq!(got.len(), want.len());
    for (o, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.shape, b.shape, "output {o}");
        let differ = a
            .data
            .iter()
            .zip(&b.data)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "output {o}: {differ} values differ with lanes shared"
        );
    }
    shared
}

/// The simulator computes bitwise-identical lanes once ("lane sharing"); that is exact:
/// every output lane, idle ones included, equals computing all lanes bit for bit — for a
/// decode step (one live lane), a two-token verify pass (two), partial and full prefill
/// chunks, two fused layers, the head, in f32 and fp16. The cache blends contract over
/// the lanes and are summed from the shared lanes; only the one reduction across lanes runs
/// at full size.
#[test]
fn lane_sharing_is_bitwise_computing_every_lane() {
    // A cache of 32 slots (attention over the cache in the streaming kernel) and of 128
    // (the short-contraction and blocked kernels).
    let cases = [
        (DType::Fp32, Precision::F32, 32),
        (DType::Fp16, Precision::Fp16, 32),
        (DType::Fp16, Precision::Fp16, 128),
    ];
    for (io, precision, max_seq) in cases {
        let g = Geometry {
            max_seq,
            ..gqa_geometry(io)
        };
        let (d, kv, l, s) = (g.dim, g.kv_dim, g.lanes, g.max_seq);
        let ws: Vec<LayerF32> = (0..2).map(|i| random_layer(&g, 60 + i)).collect();
        let kernel = fused_layers(&g, 0, &ws).expect("generate");
        let program = ane_sim::compile_program(&kernel.spec(), precision).expect("compile");
        let unshared = program.unshared_ops();
        assert_eq!(unshared.len(), 1, "{unshared:?}");
        assert!(unshared[0].contains("reduce_sum"), "{unshared:?}");
        for (pos, n) in [(5, 1), (9, 2), (3, 5), (0, l), (s - 2, 2)] {
            let xs: Vec<Vec<f32>> = (0..n).map(|t| rand(d, 300 + t as u64, 2.0)).collect();
            let mut inputs = vec![lanes_of(&xs, d, l), position_input(&g, pos, n)];
            for j in 0..ws.len() as u64 {
                inputs.push(rand(kv * s, 500 + j, 1.0));
                inputs.push(rand(kv * s, 600 + j, 1.0));
            }
            let shared = shared_equals_every_lane(&program, &inputs);
            // Lanes n.. carry no token and are identical: one class for all of them.
            let want = (n < l).then_some(n + 1);
            assert_eq!(shared, want, "{io} pos {pos} n {n}");
        }
        let norm: Vec<f32> = rand(d, 3, 1.0)
            .iter()
            .map(|x| f16r(1.0 + 0.5 * x))
            .collect();
        let head_kernel = head(&g, &norm, &rand(g.vocab * d, 4, 0.2)).expect("head");
        let program = ane_sim::compile_program(&head_kernel.spec(), precision).expect("compile");
        assert_eq!(program.unshared_ops(), Vec::<&str>::new());
        let xs: Vec<Vec<f32>> = (0..2).map(|t| rand(d, 50 + t, 3.0)).collect();
        let shared = shared_equals_every_lane(&program, &[lanes_of(&xs, d, l)]);
        assert_eq!(shared, Some(3), "{io} head");
    }
}

// ---- structure: names, sizes, axes, for the two real model shapes ----

/// Both kernels in both I/O types: the typed program prints, parses back to itself, passes
/// the validator, references exactly its weight blobs and keeps the I/O names.
#[test]
fn programs_round_trip_through_text_and_validate() {
    for io in [DType::Fp16, DType::Fp32] {
        let g = gqa_geometry(io);
        let ws: Vec<LayerF32> = (0..2).map(|i| random_layer(&g, 3 + i)).collect();
        let fused = fused_layers(&g, 4, &ws).expect("fused");
        let h = head(&g, &vec![1.0; g.dim], &rand(g.vocab * g.dim, 9, 0.2)).expect("head");
        for k in [&fused, &h] {
            let text = k.spec().mil_text();
            let back = mil::parse(&text).unwrap_or_else(|e| panic!("{}: {e:?}", k.label));
            assert_eq!(back, k.program, "{} ({io}): print → parse", k.label);
            let paths: HashSet<String> = k.weights.iter().map(|(p, _)| p.clone()).collect();
            let f = k.program.main().expect("main");
            let refs: HashSet<String> = f.blob_refs().iter().map(|r| r.2.path.clone()).collect();
            assert_eq!(refs, paths, "{}: blobs and BLOBFILE consts", k.label);
            let diags = mil::validate(
                &k.program,
                &mil::ValidateOptions {
                    weight_paths: Some(&paths),
                    ..Default::default()
                },
            );
            assert!(!mil::has_errors(&diags), "{} ({io}): {diags:?}", k.label);
            let ins: Vec<&str> = f.inputs.iter().map(|(n, _)| n.as_str()).collect();
            let host: Vec<&str> = k.io.inputs.iter().map(|i| i.name.as_str()).collect();
            assert_eq!(ins, host);
            assert!(k.io.inputs.iter().all(|i| i.dt == io));
            assert!(k.io.outputs.iter().all(|o| o.dt == io));
        }
        assert_eq!(
            fused.program.main().expect("main").outputs,
            vec!["o00_x".to_string(), "o01_kv".to_string()]
        );
        assert_eq!(
            h.program.main().expect("main").outputs,
            vec!["o00_logits", "o01_logits", "o02_max", "o03_hidden"]
        );
        let fi: Vec<&str> = fused.io.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            fi,
            ["i00_x", "i01_pos", "i02_k0", "i03_v0", "i04_k1", "i05_v1"]
        );
    }
}

fn smollm2() -> LlamaConfig {
    LlamaConfig {
        n_layers: 30,
        dim: 576,
        ffn_dim: 1536,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        vocab_size: 49_152,
        context_length: 8192,
        rope_theta: 100_000.0,
        rms_eps: 1e-5,
    }
}

fn zero_layer(g: &Geometry) -> LayerF32 {
    let (d, kv, h) = (g.dim, g.kv_dim, g.ffn_dim);
    LayerF32 {
        attn_norm: vec![1.0; d],
        wq: vec![0.0; d * d],
        wk: vec![0.0; kv * d],
        wv: vec![0.0; kv * d],
        wo: vec![0.0; d * d],
        ffn_norm: vec![1.0; d],
        w_gate: vec![0.0; h * d],
        w_up: vec![0.0; h * d],
        w_down: vec![0.0; d * h],
    }
}

fn real_shape_kernels(cfg: &LlamaConfig, max_seq: usize) -> (Geometry, Vec<Kernel>) {
    let g = Geometry::new(cfg, max_seq, DType::Fp16).expect("geometry");
    let layers: Vec<LayerF32> = (0..3).map(|_| zero_layer(&g)).collect();
    let fused = fused_layers(&g, 0, &layers).expect("fused");
    let h = head(&g, &vec![1.0; g.dim], &vec![0.0; g.vocab * g.dim]).expect("head");
    (g, vec![fused, h])
}

fn check_structure(cfg: &LlamaConfig, max_seq: usize, want_lanes: usize) {
    let (g, kernels) = real_shape_kernels(cfg, max_seq);
    assert_eq!(g.lanes, want_lanes);
    for k in &kernels {
        let program =
            mil::parse(&mil::print(&k.program)).unwrap_or_else(|e| panic!("{}: {e:?}", k.label));
        assert_eq!(program, k.program, "{}: print → parse changes it", k.label);
        let f = program.main().expect("main");
        // Binding order: declaration order is byte-wise sorted, and the host's I/O list is it.
        let declared: Vec<&str> = f.inputs.iter().map(|(n, _)| n.as_str()).collect();
        let mut sorted = declared.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(
            declared, sorted,
            "{}: inputs not declared in sorted order",
            k.label
        );
        let host: Vec<&str> = k.io.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(host, declared, "{}", k.label);
        let outs: Vec<&str> = f.outputs.iter().map(String::as_str).collect();
        let mut sorted_outs = outs.clone();
        sorted_outs.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(
            outs, sorted_outs,
            "{}: outputs not returned in sorted order",
            k.label
        );
        let host_outs: Vec<&str> = k.io.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(host_outs, outs, "{}", k.label);
        // Surface sizes: every I/O ≥ 49,152 bytes except the head's per-lane max (the
        // reference's headline head has the same small maxVal output, §3.3).
        for io in k.io.inputs.iter().chain(&k.io.outputs) {
            if io.name.ends_with("_max") {
                assert_eq!(io.shape, vec![1, 1, 1, g.lanes]);
                continue;
            }
            assert!(
                io.bytes() >= MIN_SURFACE_BYTES,
                "{} {}: {} bytes",
                k.label,
                io.name,
                io.bytes()
            );
            assert_eq!(
                io.spatial() % 32,
                0,
                "{} {}: lanes must be a multiple of 32",
                k.label,
                io.name
            );
        }
        // The simulator's compile checks the declared shapes against the sizes and every
        // result shape; the axis limit and the softmax rule are checked on the text.
        for st in &f.body {
            if let mil::ValueType::Tensor(t) = &st.out_type {
                assert!(
                    t.shape.iter().all(|&d| d <= MAX_AXIS),
                    "{}: {} {:?}",
                    k.label,
                    st.out_name,
                    t.shape
                );
                assert!(t.shape.len() <= 5);
                if st.op == "softmax" {
                    let last = t.shape[t.shape.len() - 1];
                    assert!(last.is_power_of_two(), "softmax over {last}");
                }
            }
        }
        // The `mil` validator: no errors, sorted I/O, and no small surface but the max.
        let paths: HashSet<String> = k.weights.iter().map(|(p, _)| p.clone()).collect();
        let diags = mil::validate(
            &program,
            &mil::ValidateOptions {
                weight_paths: Some(&paths),
                ..Default::default()
            },
        );
        for d in &diags {
            eprintln!("{} [{}]: {d:?}", k.label, g.lanes);
        }
        assert!(!mil::has_errors(&diags), "{}: validator errors", k.label);
        assert!(
            !diags.iter().any(|d| d.code == mil::Code::IoNotSorted),
            "{}",
            k.label
        );
        for d in diags
            .iter()
            .filter(|d| d.code == mil::Code::SurfaceTooSmall)
        {
            assert!(format!("{d:?}").contains("_max"), "{}: {d:?}", k.label);
        }
        let mut dev = sim(Precision::Fp16);
        dev.compile(&k.spec())
            .unwrap_or_else(|e| panic!("{}: {e}", k.label));
    }
}

#[test]
fn smollm2_kernels_follow_the_binding_size_and_axis_rules() {
    check_structure(&smollm2(), 512, 64);
}

#[test]
fn seed_shape_kernels_follow_the_binding_size_and_axis_rules() {
    check_structure(&LlamaConfig::synthetic(), 256, 32);
}
