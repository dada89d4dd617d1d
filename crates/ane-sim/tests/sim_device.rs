//! The simulator through the object-safe `Device` trait: I/O binding order (and the faulty
//! declaration-order mode), the compile budget, compile-time checks, surface helpers, stats.

mod common;

use ane::{ChipProfile, CompileBudget, Device, DeviceError, KernelSpec};
use ane_sim::{Binding, Precision, SimDevice, SimOptions};
use common::*;

const S: usize = 32;

/// Inputs declared (q, b) and outputs returned (z, a) — neither in sorted order.
/// z = q − b, a = q + 2·b, all `[1, 4, 1, 32]` fp16.
fn unsorted_io_program() -> String {
    let t = "tensor<fp16, [1, 4, 1, 32]>";
    format!(
        "program(1.3)\n{{\n    func main<ios18>({t} q, {t} b) {{\n        {t} z = sub(x=q,y=b)[name=string(\"z\")];\n        fp16 two = const()[name=string(\"two\"), val=fp16(2.0)];\n        {t} b2 = mul(x=b,y=two)[name=string(\"b2\")];\n        {t} a = add(x=q,y=b2)[name=string(\"a\")];\n    }} -> (z, a);\n}}\n"
    )
}

/// The unsorted program as a kernel spec, and its surfaces' byte size.
fn unsorted_spec() -> (KernelSpec, usize) {
    let bytes = 4 * S * 2;
    let spec = KernelSpec {
        program: mil::parse(&unsorted_io_program()).expect("test program parses"),
        weights: vec![],
        input_bytes: vec![bytes, bytes],
        output_bytes: vec![bytes, bytes],
    };
    (spec, bytes)
}

fn sim(binding: Binding) -> Box<dyn Device> {
    Box::new(SimDevice::new(SimOptions {
        binding,
        ..Default::default()
    }))
}

/// Compile the unsorted program, bind surface 0 := `first`, 1 := `second`, return the two
/// output surfaces' contents (slot order).
fn eval_unsorted(dev: &mut dyn Device, first: &[f32], second: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (spec, bytes) = unsorted_spec();
    let k = dev.compile(&spec).expect("compiles");
    let ins = [
        dev.new_surface(bytes).unwrap(),
        dev.new_surface(bytes).unwrap(),
    ];
    let outs = [
        dev.new_surface(bytes).unwrap(),
        dev.new_surface(bytes).unwrap(),
    ];
    dev.write_channels_f32(ins[0], S, 0, first).unwrap();
    dev.write_channels_f32(ins[1], S, 0, second).unwrap();
    dev.eval(k, &ins, &outs).expect("evals");
    let mut o0 = vec![0f32; 4 * S];
    let mut o1 = vec![0f32; 4 * S];
    dev.read_channels_f32(outs[0], S, 0, &mut o0).unwrap();
    dev.read_channels_f32(outs[1], S, 0, &mut o1).unwrap();
    for s in ins.into_iter().chain(outs) {
        dev.free_surface(s).unwrap();
    }
    dev.unload(k).unwrap();
    (o0, o1)
}

#[test]
fn io_is_bound_in_byte_wise_sorted_name_order() {
    let mut rng = Rng::new(5);
    // slot 0 = `b` (sorted: b < q), slot 1 = `q`
    let b = r16(&rng.vec(4 * S, 1.0));
    let q = r16(&rng.vec(4 * S, 1.0));
    let mut dev = sim(Binding::Alphabetical);
    let (o0, o1) = eval_unsorted(dev.as_mut(), &b, &q);
    // output slot 0 = `a` (a < z) = q + 2b; slot 1 = `z` = q − b
    let a: Vec<f32> = q.iter().zip(&b).map(|(q, b)| q + 2.0 * b).collect();
    let z: Vec<f32> = q.iter().zip(&b).map(|(q, b)| q - b).collect();
    assert_eq!(o0, r16(&a), "output 0 is `a`");
    assert_eq!(o1, r16(&z), "output 1 is `z`");
}

#[test]
fn faulty_mode_binds_in_declaration_order() {
    let mut rng = Rng::new(5);
    let b = r16(&rng.vec(4 * S, 1.0));
    let q = r16(&rng.vec(4 * S, 1.0));
    let mut dev = sim(Binding::DeclarationOrder);
    assert!(dev.name().contains("faulty"), "{}", dev.name());
    // The host writes sorted order (b, q), the faulty device reads them as (q, b) and
    // returns (z, a): silently wrong, no error.
    let (o0, o1) = eval_unsorted(dev.as_mut(), &b, &q);
    let (q_seen, b_seen) = (&b, &q);
    let z: Vec<f32> = q_seen.iter().zip(b_seen).map(|(q, b)| q - b).collect();
    let a: Vec<f32> = q_seen
        .iter()
        .zip(b_seen)
        .map(|(q, b)| q + 2.0 * b)
        .collect();
    assert_eq!(
        o0,
        r16(&z),
        "faulty output 0 is `z` computed from swapped inputs"
    );
    assert_eq!(o1, r16(&a));
    // and it differs from the correct answer
    let correct: Vec<f32> = r16(&q
        .iter()
        .zip(&b)
        .map(|(q, b)| q + 2.0 * b)
        .collect::<Vec<_>>());
    assert_ne!(o0, correct);
}

#[test]
fn faulty_mode_with_unequal_sizes_fails_at_eval() {
    // out `a` [1,8,1,32] and `z` [1,4,1,32]: sorted (a, z) sizes are accepted at compile,
    // but the faulty device routes `z`... to slot 0 and `a` (16 KiB) to the 8 KiB slot 1.
    let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4, 1, 32]> x) {\n        tensor<fp16, [1, 4, 1, 32]> z = relu(x=x)[name=string(\"z\")];\n        int32 ax = const()[name=string(\"ax\"), val=int32(1)];\n        bool il = const()[name=string(\"il\"), val=bool(false)];\n        tensor<fp16, [1, 8, 1, 32]> a = concat(axis=ax,interleave=il,values=(x,x))[name=string(\"a\")];\n    } -> (z, a);\n}\n";
    let spec = KernelSpec {
        program: mil::parse(text).expect("test program parses"),
        weights: vec![],
        input_bytes: vec![4 * S * 2],
        output_bytes: vec![8 * S * 2, 4 * S * 2],
    };
    for (binding, ok) in [
        (Binding::Alphabetical, true),
        (Binding::DeclarationOrder, false),
    ] {
        let mut dev = sim(binding);
        let k = dev
            .compile(&spec)
            .expect("sizes in sorted order compile in both modes");
        let x = dev.new_surface(4 * S * 2).unwrap();
        let o = [
            dev.new_surface(8 * S * 2).unwrap(),
            dev.new_surface(4 * S * 2).unwrap(),
        ];
        let r = dev.eval(k, &[x], &o);
        assert_eq!(r.is_ok(), ok, "{binding:?}: {r:?}");
        if let Err(e) = r {
            assert!(e.to_string().contains("status=0x1d"), "{e}");
        }
    }
    // Sizes given in return order are rejected at compile with a message naming the slot.
    let mut dev = sim(Binding::Alphabetical);
    let wrong = KernelSpec {
        output_bytes: vec![4 * S * 2, 8 * S * 2],
        ..spec
    };
    let err = dev
        .compile(&wrong)
        .expect_err("return-order sizes")
        .to_string();
    assert!(err.contains("output slot 0 is `a`"), "{err}");
}

#[test]
fn compile_budget_fails_the_next_compile() {
    let budget = CompileBudget::private(3);
    let mut dev = SimDevice::new(SimOptions {
        budget: budget.clone(),
        ..Default::default()
    });
    let spec = KernelSpec {
        program: mil::parse(&unsorted_io_program()).expect("test program parses"),
        weights: vec![],
        input_bytes: vec![256, 256],
        output_bytes: vec![256, 256],
    };
    for i in 0..3 {
        dev.compile(&spec)
            .unwrap_or_else(|e| panic!("compile {i}: {e}"));
    }
    let err = dev.compile(&spec).expect_err("4th compile");
    assert!(
        matches!(
            err,
            DeviceError::CompileBudgetExhausted { used: 3, budget: 3 }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("119"),
        "message explains the hardware limit: {err}"
    );
    assert_eq!(dev.stats().compiles, 3);
    // A failed compile (a result declared with the wrong type) does not use up budget.
    budget.set_used(0);
    let mut bad = spec.clone();
    bad.program.functions[0].body[0].out_type = mil::ValueType::Scalar(mil::DType::Fp32);
    assert!(matches!(
        dev.compile(&bad),
        Err(DeviceError::Compile { .. })
    ));
    assert_eq!(budget.used(), 0);
    // Default budget is the observed hardware limit.
    assert_eq!(SimOptions::default().budget.limit(), 119);
}

#[test]
fn shared_budget_counts_across_devices() {
    let shared = CompileBudget::private(2);
    let opts = SimOptions {
        budget: shared.clone(),
        ..Default::default()
    };
    let mut d1 = SimDevice::new(opts.clone());
    let mut d2 = SimDevice::new(opts);
    let spec = KernelSpec {
        program: mil::parse(&unsorted_io_program()).expect("test program parses"),
        weights: vec![],
        input_bytes: vec![256, 256],
        output_bytes: vec![256, 256],
    };
    d1.compile(&spec).unwrap();
    d2.compile(&spec).unwrap();
    assert!(d1.compile(&spec).is_err());
    assert!(d2.compile(&spec).is_err());
    assert_eq!(shared.used(), 2);
}

/// The process-wide counter (the one the hardware limit applies to) is shared by every
/// device created with it. Only this test in this binary touches it.
#[test]
fn process_wide_budget_is_one_counter() {
    let a = CompileBudget::process_wide(5);
    let b = CompileBudget::process_wide(5);
    a.set_used(3);
    assert_eq!(b.used(), 3);
    let mut dev = SimDevice::new(SimOptions {
        budget: b,
        ..Default::default()
    });
    let spec = KernelSpec {
        program: mil::parse(&unsorted_io_program()).expect("test program parses"),
        weights: vec![],
        input_bytes: vec![256, 256],
        output_bytes: vec![256, 256],
    };
    dev.compile(&spec).unwrap();
    dev.compile(&spec).unwrap();
    assert_eq!(a.used(), 5);
    assert!(matches!(
        dev.compile(&spec),
        Err(DeviceError::CompileBudgetExhausted { used: 5, budget: 5 })
    ));
    a.set_used(0);
}

#[test]
fn compile_checks_blobs_and_arguments() {
    let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4, 1, 32]> x) {\n        tensor<fp16, [1,4,1,1]> w = const()[name=string(\"w\"), val=tensor<fp16, [1,4,1,1]>(BLOBFILE(path=string(\"@model_path/weights/g.bin\"), offset=uint64(64)))];\n        tensor<fp16, [1, 4, 1, 32]> y = mul(x=x,y=w)[name=string(\"y\")];\n    } -> (y);\n}\n";
    let mut dev = SimDevice::default();
    let base = KernelSpec {
        program: mil::parse(text).expect("test program parses"),
        weights: vec![],
        input_bytes: vec![256],
        output_bytes: vec![256],
    };
    let missing = dev.compile(&base).expect_err("blob missing").to_string();
    assert!(missing.contains("g.bin"), "{missing}");
    let short = KernelSpec {
        weights: vec![("@model_path/weights/g.bin".into(), blob(&[1.0; 3]))],
        ..base.clone()
    };
    let e = dev.compile(&short).expect_err("blob too small").to_string();
    assert!(e.contains("payload"), "{e}");
    let escape = KernelSpec {
        weights: vec![("@model_path/../g.bin".into(), blob(&[1.0; 4]))],
        ..base.clone()
    };
    assert!(matches!(
        dev.compile(&escape),
        Err(DeviceError::InvalidArgument(_))
    ));
    let ok = KernelSpec {
        weights: vec![(
            "@model_path/weights/g.bin".into(),
            blob(&[1.0, 2.0, 3.0, 4.0]),
        )],
        ..base
    };
    let k = dev.compile(&ok).expect("compiles");
    let x = dev.new_surface(256).unwrap();
    let y = dev.new_surface(256).unwrap();
    dev.write_lane_f32(x, S, 7, 0, &[1.0, 1.0, 1.0, 1.0])
        .unwrap();
    dev.eval(k, &[x], &[y]).unwrap();
    let mut lane = [0f32; 4];
    dev.read_lane_f32(y, S, 7, 0, &mut lane).unwrap();
    assert_eq!(
        lane,
        [1.0, 2.0, 3.0, 4.0],
        "per-channel weight broadcast over lanes"
    );
    assert!(matches!(dev.eval(k, &[x], &[]), Err(DeviceError::Eval(_))));
    dev.unload(k).unwrap();
    assert!(matches!(
        dev.eval(k, &[x], &[y]),
        Err(DeviceError::UnknownKernel(_))
    ));
}

#[test]
fn surface_helpers_through_the_trait() {
    let mut dev: Box<dyn Device> = Box::new(SimDevice::default());
    let (c, s) = (10usize, 4usize);
    let a = dev.new_surface(c * s * 2).unwrap();
    let b = dev.new_surface(c * s * 2).unwrap();
    let data: Vec<f32> = (0..c * s).map(|i| i as f32 * 0.5).collect();
    dev.write_channels_f32(a, s, 0, &data).unwrap();
    // copy channels 2..5 of a into b at 6..9
    dev.copy_channels(a, 2, b, 6, 3, s).unwrap();
    let mut got = vec![0f32; 3 * s];
    dev.read_channels_f32(b, s, 6, &mut got).unwrap();
    assert_eq!(got, data[2 * s..5 * s]);
    // overlapping copy within one surface (memmove semantics)
    dev.copy_channels(a, 0, a, 1, 5, s).unwrap();
    let mut all = vec![0f32; c * s];
    dev.read_channels_f32(a, s, 0, &mut all).unwrap();
    assert_eq!(all[s..6 * s], data[..5 * s]);
    // argmax on lane 3: ties → lowest channel
    dev.zero_surface(b).unwrap();
    dev.write_lane_f32(b, s, 3, 0, &[0.0, 5.0, -1.0, 5.0, 4.0])
        .unwrap();
    assert_eq!(dev.argmax_lane(b, s, 3, c).unwrap(), 1);
    assert_eq!(dev.argmax_lane(b, s, 0, c).unwrap(), 0, "all-zero lane → 0");
    // out of range
    assert!(dev.copy_channels(a, 8, b, 0, 3, s).is_err());
    assert!(dev.read_lane_f32(a, s, 4, 0, &mut [0.0]).is_err());
    // raw f32 access
    let f = dev.new_surface(16).unwrap();
    dev.write_f32_raw(f, 1, &[2.5, -1.0]).unwrap();
    let mut raw = [0f32; 4];
    dev.read_f32_raw(f, 0, &mut raw).unwrap();
    assert_eq!(raw, [0.0, 2.5, -1.0, 0.0]);
    assert_eq!(dev.surface_len(f).unwrap(), 16);
    dev.free_surface(f).unwrap();
    assert!(matches!(
        dev.surface_len(f),
        Err(DeviceError::UnknownSurface(_))
    ));
    assert!(dev.new_surface(0).is_err());
    assert_eq!(dev.stats().live_surfaces, 2);
}

#[test]
fn stats_accumulate_the_cost_model_prediction() {
    let mut dev = SimDevice::new(SimOptions {
        profile: ChipProfile::M1,
        precision: Precision::F32,
        ..Default::default()
    });
    let spec = KernelSpec {
        program: mil::parse(&unsorted_io_program()).expect("test program parses"),
        weights: vec![],
        input_bytes: vec![256, 256],
        output_bytes: vec![256, 256],
    };
    let k = dev.compile(&spec).unwrap();
    let cost = dev.kernel_cost(k).unwrap();
    assert_eq!(cost.io_bytes, 1024.0);
    assert_eq!(cost.weight_bytes, 0.0);
    assert_eq!(cost.flops, 3.0 * 128.0, "sub + mul + add over 128 elements");
    let ins = [dev.new_surface(256).unwrap(), dev.new_surface(256).unwrap()];
    let outs = [dev.new_surface(256).unwrap(), dev.new_surface(256).unwrap()];
    for _ in 0..3 {
        dev.eval(k, &ins, &outs).unwrap();
    }
    let one = ChipProfile::M1.predict(&cost).predicted_ane_ms;
    let st = dev.stats();
    assert_eq!(st.evals, 3);
    assert!((st.predicted_ane_ms - 3.0 * one).abs() < 1e-12);
    assert_eq!(st.chip_profile.as_deref(), Some("M1"));
    assert!(
        st.to_string().contains("predicted (cost model) on M1"),
        "{st}"
    );
    assert!(dev
        .last_prediction()
        .unwrap()
        .to_string()
        .contains("predicted (cost model)"));
}

/// The device decodes an input surface once and then only the chunks whose bytes changed:
/// after writes between evaluations — one element, the last element (a partial chunk), a
/// whole rewrite, the same bytes again — every result equals a fresh device's.
#[test]
fn changed_input_bytes_are_decoded_again_and_only_they_matter() {
    let (spec, bytes) = unsorted_spec();
    let mut dev = SimDevice::new(SimOptions::default());
    let k = dev.compile(&spec).expect("compiles");
    let ins = [
        dev.new_surface(bytes).unwrap(),
        dev.new_surface(bytes).unwrap(),
    ];
    let outs = [
        dev.new_surface(bytes).unwrap(),
        dev.new_surface(bytes).unwrap(),
    ];
    let mut q: Vec<f32> = (0..4 * S).map(|i| i as f32 * 0.25).collect();
    let b: Vec<f32> = (0..4 * S).map(|i| 1.0 - i as f32 * 0.125).collect();
    dev.write_channels_f32(ins[1], S, 0, &b).unwrap();
    for step in 0..4 {
        match step {
            0 => q[5] = -3.5,
            1 => q[4 * S - 1] = 7.0,
            2 => q.iter_mut().for_each(|v| *v += 1.0),
            _ => {} // the same bytes again
        }
        dev.write_channels_f32(ins[0], S, 0, &q).unwrap();
        // `ins` binds (b, q) in sorted order: slot 0 = b, slot 1 = q.
        dev.eval(k, &[ins[1], ins[0]], &outs).expect("evals");
        let mut got = vec![0f32; 4 * S];
        dev.read_channels_f32(outs[1], S, 0, &mut got).unwrap();
        let (_, fresh) = eval_unsorted(&mut SimDevice::new(SimOptions::default()), &b, &q);
        assert_eq!(got, fresh, "step {step}");
    }
}
