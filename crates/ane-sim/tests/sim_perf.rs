//! Model-sized kernels on the simulator: results checked against direct dot products, and the
//! time printed for information. Speed goals live in benchmarks (`espresso bench --backend
//! ane-sim`), not in timed tests, so nothing here asserts a duration.

mod common;

use std::time::Instant;

use ane::{Device, KernelSpec};
use ane_sim::SimDevice;
use common::*;

fn conv_program(cin: usize, cout: usize, lanes: usize) -> String {
    format!(
        r#"program(1.3)
{{
    func main<ios18>(tensor<fp16, [1, {cin}, 1, {lanes}]> x) {{
        string pt = const()[name=string("pt"), val=string("valid")];
        tensor<int32, [2]> st = const()[name=string("st"), val=tensor<int32, [2]>([1,1])];
        tensor<int32, [4]> pd = const()[name=string("pd"), val=tensor<int32, [4]>([0,0,0,0])];
        tensor<int32, [2]> dl = const()[name=string("dl"), val=tensor<int32, [2]>([1,1])];
        int32 gr = const()[name=string("gr"), val=int32(1)];
        tensor<fp16, [{cout},{cin},1,1]> W = const()[name=string("W"), val=tensor<fp16, [{cout},{cin},1,1]>(BLOBFILE(path=string("@model_path/weights/w.bin"), offset=uint64(64)))];
        tensor<fp16, [1,{cout},1,{lanes}]> y = conv(dilations=dl,groups=gr,pad=pd,pad_type=pt,strides=st,weight=W,x=x)[name=string("y")];
    }} -> (y);
}}
"#
    )
}

/// Compile a conv kernel, eval it `reps` times, return (compile ms, best eval ms).
fn time_conv(cin: usize, cout: usize, lanes: usize, reps: usize) -> (f64, f64) {
    let mut rng = Rng::new(3);
    let w = rng.vec(cin * cout, 1.0 / (cin as f32).sqrt());
    let spec = KernelSpec {
        program: mil::parse(&conv_program(cin, cout, lanes)).expect("test program parses"),
        weights: vec![("@model_path/weights/w.bin".into(), blob(&w))],
        input_bytes: vec![cin * lanes * 2],
        output_bytes: vec![cout * lanes * 2],
    };
    let mut dev = SimDevice::default();
    let t0 = Instant::now();
    let k = dev.compile(&spec).expect("compiles");
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    let x = dev.new_surface(cin * lanes * 2).unwrap();
    let y = dev.new_surface(cout * lanes * 2).unwrap();
    dev.write_channels_f32(x, lanes, 0, &rng.vec(cin * lanes, 1.0))
        .unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        dev.eval(k, &[x], &[y]).unwrap();
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    // Spot-check one output lane against a direct dot product.
    let mut xin = vec![0f32; cin * lanes];
    dev.read_channels_f32(x, lanes, 0, &mut xin).unwrap();
    let mut lane = vec![0f32; cout];
    dev.read_lane_f32(y, lanes, 5, 0, &mut lane).unwrap();
    let w16 = r16(&w);
    for o in (0..cout).step_by(cout / 7 + 1) {
        let want: f32 = (0..cin)
            .map(|i| w16[o * cin + i] * xin[i * lanes + 5])
            .sum();
        assert!(
            (lane[o] - want).abs() <= 2e-3 * want.abs().max(1.0),
            "out {o}: {} vs {want}",
            lane[o]
        );
    }
    (compile_ms, best)
}

#[test]
fn conv_768x768_over_32_lanes_is_correct() {
    let (c, e) = time_conv(768, 768, 32, 20);
    println!("conv 768x768 x 32 lanes: compile {c:.1} ms, eval {e:.3} ms (best of 20)");
}

#[test]
fn classifier_49152x576_over_32_lanes_is_correct() {
    let (c, e) = time_conv(576, 49152, 32, 3);
    println!("classifier 49152x576 x 32 lanes: compile {c:.1} ms, eval {e:.1} ms (best of 3)");
}
