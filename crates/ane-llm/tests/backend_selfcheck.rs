//! The load-time self-check: a device that mis-binds surfaces is caught before it can produce
//! silent garbage, with a message that says the ANE path is disabled and CPU is used.

use ane::{Device, DeviceError, DeviceLayer, KernelId, SurfaceId};
use ane_llm::{ane_sim_backend, AneBackend, AneError, AneOptions};
use ane_sim::{Precision, SimDevice, SimOptions};
use engine::Backend;
use model::synthetic::SyntheticModel;
use model::{GgmlType, LlamaConfig, LlamaWeights};

fn config() -> LlamaConfig {
    LlamaConfig {
        n_layers: 2,
        dim: 64,
        ffn_dim: 96,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        vocab_size: 300,
        context_length: 64,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
    }
}

fn opts() -> AneOptions {
    AneOptions {
        max_seq: Some(32),
        layers_per_kernel: 2,
        io: None,
        self_check: true,
        lanes: Some(8),
    }
}

/// How the wrapper mis-wires an eval.
#[derive(Clone, Copy)]
enum Fault {
    /// Swap the last two input surfaces (same size: the last layer's K and V caches).
    SwapLastInputs,
    /// Bind outputs in reverse order (different sizes).
    ReverseOutputs,
}

/// A simulator whose host-visible binding is wrong in a chosen way.
struct Miswired {
    inner: SimDevice,
    fault: Fault,
}

impl DeviceLayer for Miswired {
    fn inner(&self) -> &dyn Device {
        &self.inner
    }
    fn inner_mut(&mut self) -> &mut dyn Device {
        &mut self.inner
    }
    fn layer_name(&self) -> String {
        format!("miswired {}", self.inner.name())
    }
    fn layer_eval(
        &mut self,
        kernel: KernelId,
        inputs: &[SurfaceId],
        outputs: &[SurfaceId],
    ) -> Result<(), DeviceError> {
        let mut ins = inputs.to_vec();
        let mut outs = outputs.to_vec();
        match self.fault {
            Fault::SwapLastInputs => {
                let n = ins.len();
                if n >= 2 {
                    ins.swap(n - 2, n - 1);
                }
            }
            Fault::ReverseOutputs => outs.reverse(),
        }
        self.inner.eval(kernel, &ins, &outs)
    }
}

fn load_on(m: &SyntheticModel, device: Box<dyn Device>) -> Result<AneBackend<'_>, AneError> {
    let w = LlamaWeights::from_source(m, m.config.clone()).expect("weights");
    AneBackend::new(w, device, opts())
}

fn assert_disabled_message(err: &AneError) {
    let text = err.to_string();
    assert!(text.contains("self-check failed"), "{text}");
    assert!(text.contains("layers 0-1"), "names the kernel: {text}");
    assert!(text.contains("ANE path is disabled"), "{text}");
    assert!(text.contains("CPU backend is used instead"), "{text}");
}

#[test]
fn swapped_cache_inputs_fail_the_self_check_with_a_fallback_message() {
    let m = SyntheticModel::new(config(), 5, GgmlType::F16);
    let dev = Miswired {
        inner: SimDevice::new(SimOptions::default()),
        fault: Fault::SwapLastInputs,
    };
    let err = load_on(&m, Box::new(dev))
        .err()
        .expect("a mis-bound device must not load");
    match &err {
        AneError::SelfCheckFailed {
            detail, max_diff, ..
        } => {
            assert!(detail.contains("o00_x"), "{detail}");
            assert!(*max_diff > 0.0);
        }
        other => panic!("unexpected error {other}"),
    }
    assert_disabled_message(&err);
}

#[test]
fn reversed_outputs_fail_the_self_check_with_a_fallback_message() {
    let m = SyntheticModel::new(config(), 6, GgmlType::F16);
    let dev = Miswired {
        inner: SimDevice::new(SimOptions::default()),
        fault: Fault::ReverseOutputs,
    };
    let err = load_on(&m, Box::new(dev))
        .err()
        .expect("a mis-bound device must not load");
    assert!(matches!(err, AneError::SelfCheckFailed { .. }), "{err}");
    assert_disabled_message(&err);
}

#[test]
fn declaration_order_binding_cannot_misroute_our_kernels() {
    // The simulator's faulty mode binds by declaration / return order. Our names sort in
    // declaration order, so both binding hypotheses give the same wiring: the self-check
    // passes and the logits equal the alphabetical device's exactly.
    let m = SyntheticModel::new(config(), 7, GgmlType::F16);
    let faulty = SimDevice::faulty_declaration_order(SimOptions::default());
    let mut a = load_on(&m, Box::new(faulty)).expect("declaration-order device loads");
    let mut b = ane_sim_backend(
        LlamaWeights::from_source(&m, m.config.clone()).expect("weights"),
        Precision::Fp16,
        opts(),
    )
    .expect("alphabetical device loads");
    let toks = [4u32, 77, 201];
    assert_eq!(
        a.forward(&toks, 0).expect("a"),
        b.forward(&toks, 0).expect("b")
    );
}

#[test]
fn self_check_can_be_disabled_and_then_garbage_goes_through() {
    // Without the check the swapped device loads and produces wrong logits: the check is
    // what stands between a mis-wired device and silent garbage.
    let m = SyntheticModel::new(config(), 8, GgmlType::F16);
    let dev = Miswired {
        inner: SimDevice::new(SimOptions::default()),
        fault: Fault::SwapLastInputs,
    };
    let w = LlamaWeights::from_source(&m, m.config.clone()).expect("weights");
    let mut bad = AneBackend::new(
        w,
        Box::new(dev),
        AneOptions {
            self_check: false,
            ..opts()
        },
    )
    .expect("loads");
    let mut good = ane_sim_backend(
        LlamaWeights::from_source(&m, m.config.clone()).expect("weights"),
        Precision::Fp16,
        opts(),
    )
    .expect("loads");
    // The prefill from position 0 reads no cache slot; the next token reads slots 0..4,
    // where the swapped K and V caches differ.
    let toks = [4u32, 77, 201, 9];
    bad.forward(&toks, 0).expect("bad");
    good.forward(&toks, 0).expect("good");
    let (x, y) = (
        bad.forward(&[5], 4).expect("bad"),
        good.forward(&[5], 4).expect("good"),
    );
    let diff = x
        .iter()
        .zip(&y)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff > 1e-2,
        "mis-wired logits should differ, max diff {diff}"
    );
}
