//! Lowering a parsed MIL function into an executable plan, and running it.
//!
//! Lowering resolves every parameter (axes, perms, shapes, flags: all must be `const`s),
//! materialises constants (inline literals and BLOBFILE weights), infers every result shape
//! and checks it against the declared type, and counts FLOPs and weight bytes for the cost
//! model. Running walks the steps in order; with [`Precision::Fp16`] every fp16-typed result
//! is rounded to fp16 (round-to-nearest-even) after its op, while conv/matmul/reductions
//! accumulate in f32 — the ANE's numerics as far as they are public.

use std::collections::HashMap;
use std::sync::Arc;

use mil::ast::{Arg, DType, Function, Literal, Statement, TensorData, ValueType};

use super::gemm::{gemm, MatRef};
use super::ops::{sigmoid, Binary, Unary};
use super::tensor::{
    broadcast_map2, broadcast_map2_into, broadcast_shapes, concat_interleave, concat_into,
    give_buf, numel, reduce, softmax_into, strided_copy_into, strides, take_buf, ReduceKind,
    Tensor,
};
use crate::blob;
use crate::fp16::{round_f16, round_f16_slice};

mod exec;
mod lower;

pub use lower::WeightLookup;

/// Numerics of the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// ANE-like: fp16 storage between ops (RNE), f32 accumulation inside ops.
    #[default]
    Fp16,
    /// Pure f32 everywhere (surfaces still hold their declared dtype).
    F32,
}

/// One input or output of a program, in declaration (inputs) or return (outputs) order.
#[derive(Debug, Clone, PartialEq)]
pub struct IoTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl IoTensor {
    /// Bytes of a densely packed surface holding this tensor.
    pub fn bytes(&self) -> usize {
        numel(&self.shape) * self.dtype.size_bytes().unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Unary(Unary),
    Binary(Binary),
    /// 1×1 convolution; inputs `[x, weight]` or `[x, weight, bias]`.
    Conv {
        groups: usize,
    },
    /// Batched matmul; inputs `[x, y]`.
    Matmul {
        tx: bool,
        ty: bool,
    },
    /// `linear`: `x · Wᵀ (+ b)` over the last axis; inputs `[x, weight]` or `+ bias`.
    Linear,
    Softmax {
        axis: usize,
    },
    Reduce {
        kind: ReduceKind,
        axes: Vec<usize>,
    },
    /// reshape / squeeze / expand_dims / identity: same data, new shape.
    Reshape,
    Transpose {
        perm: Vec<usize>,
    },
    Cast,
    /// Strided window: `begin` and positive `step` per axis of the input.
    Slice {
        begin: Vec<usize>,
        step: Vec<usize>,
        /// Elements taken per input axis (squeezed axes have count 1 and are then dropped
        /// from the result shape; that does not change the data order).
        counts: Vec<usize>,
    },
    Concat {
        axis: usize,
        interleave: bool,
    },
    /// `select(cond, a, b)`: `a` where `cond` ≠ 0, else `b` (three-way broadcast).
    Select,
    /// layer_norm over `axes` (contiguous, trailing) with optional gamma/beta inputs.
    LayerNorm {
        axes: Vec<usize>,
        eps: f32,
        gamma: bool,
        beta: bool,
    },
}

#[derive(Debug, Clone)]
struct Step {
    kind: Kind,
    inputs: Vec<usize>,
    out: usize,
    shape: Vec<usize>,
    dtype: DType,
    /// Values whose last use is this step (dropped after it runs).
    free: Vec<usize>,
    flops: f64,
    label: String,
}

/// A compiled MIL function, ready to run.
#[derive(Debug, Clone)]
pub struct Program {
    inputs: Vec<IoTensor>,
    outputs: Vec<IoTensor>,
    input_values: Vec<usize>,
    output_values: Vec<usize>,
    consts: Vec<(usize, Arc<Tensor>)>,
    steps: Vec<Step>,
    n_values: usize,
    precision: Precision,
    flops: f64,
    weight_bytes: f64,
}

/// Every MIL op the simulator executes (a superset of `mil::shape::KNOWN_OPS`).
pub const SUPPORTED_OPS: &[&str] = &[
    "const",
    "conv",
    "matmul",
    "linear",
    "add",
    "sub",
    "mul",
    "real_div",
    "floor_div",
    "mod",
    "pow",
    "maximum",
    "minimum",
    "equal",
    "not_equal",
    "less",
    "less_equal",
    "greater",
    "greater_equal",
    "logical_and",
    "logical_or",
    "logical_xor",
    "logical_not",
    "select",
    "identity",
    "abs",
    "ceil",
    "floor",
    "round",
    "sign",
    "sin",
    "cos",
    "tan",
    "tanh",
    "exp",
    "exp2",
    "log",
    "sqrt",
    "rsqrt",
    "inverse",
    "square",
    "sigmoid",
    "relu",
    "relu6",
    "silu",
    "softplus",
    "erf",
    "leaky_relu",
    "clip",
    "gelu",
    "softmax",
    "reduce_sum",
    "reduce_mean",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "reduce_sum_square",
    "reduce_l2_norm",
    "reduce_log_sum_exp",
    "reshape",
    "squeeze",
    "expand_dims",
    "transpose",
    "cast",
    "slice_by_size",
    "slice_by_index",
    "concat",
    "layer_norm",
];

impl Program {
    /// Inputs in declaration order.
    pub fn inputs(&self) -> &[IoTensor] {
        &self.inputs
    }

    /// Outputs in return-tuple order.
    pub fn outputs(&self) -> &[IoTensor] {
        &self.outputs
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// FLOPs of one evaluation (cost model count).
    pub fn flops(&self) -> f64 {
        self.flops
    }

    /// fp16 bytes of BLOBFILE weights.
    pub fn weight_bytes(&self) -> f64 {
        self.weight_bytes
    }

    /// Number of executable (non-const) ops.
    pub fn op_count(&self) -> usize {
        self.steps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mil_op_is_supported() {
        for op in mil::shape::KNOWN_OPS {
            assert!(
                SUPPORTED_OPS.contains(op),
                "mil op `{op}` missing in the simulator"
            );
        }
    }

    #[test]
    fn unsupported_op_names_the_supported_ones() {
        let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 2]> x) {\n        tensor<fp16, [1, 2]> y = frob(x=x)[name=string(\"y\")];\n    } -> (y);\n}\n";
        let p = mil::parse(text).unwrap();
        let none = |_: &str| None;
        let err = Program::build(p.main().unwrap(), &none, Precision::Fp16).unwrap_err();
        assert!(
            err[0].contains("`frob` is not supported") && err[0].contains("layer_norm"),
            "{err:?}"
        );
    }

    fn run_text(text: &str, inputs: Vec<Tensor>) -> Vec<Tensor> {
        let p = mil::parse(text).unwrap();
        let none = |_: &str| None;
        let prog = Program::build(p.main().unwrap(), &none, Precision::F32).unwrap();
        prog.run(inputs).unwrap()
    }

    #[test]
    fn layer_norm_and_linear_outside_the_mil_vocabulary() {
        let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp32, [2, 3]> x, tensor<fp32, [4, 3]> w, tensor<fp32, [3]> g) {\n        tensor<int32, [1]> ax = const()[name=string(\"ax\"), val=tensor<int32, [1]>([-1])];\n        fp32 e = const()[name=string(\"e\"), val=fp32(0.001)];\n        tensor<fp32, [2, 3]> n = layer_norm(x=x,axes=ax,gamma=g,epsilon=e)[name=string(\"n\")];\n        tensor<fp32, [2, 4]> y = linear(x=x,weight=w)[name=string(\"y\")];\n    } -> (n, y);\n}\n";
        let x = vec![1.0, 2.0, 4.0, -1.0, 0.0, 1.0];
        let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let g = vec![1.0, 2.0, 0.5];
        let out = run_text(
            text,
            vec![
                Tensor::new(vec![2, 3], x.clone()),
                Tensor::new(vec![4, 3], w.clone()),
                Tensor::new(vec![3], g.clone()),
            ],
        );
        for r in 0..2 {
            let row = &x[r * 3..r * 3 + 3];
            let mean = row.iter().sum::<f32>() / 3.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 3.0;
            for c in 0..3 {
                let want = (row[c] - mean) / (var + 0.001).sqrt() * g[c];
                assert!((out[0].data[r * 3 + c] - want).abs() < 1e-5);
            }
            for o in 0..4 {
                let want: f32 = (0..3).map(|k| row[k] * w[o * 3 + k]).sum();
                assert!((out[1].data[r * 4 + o] - want).abs() < 1e-5);
            }
        }
    }
}
