//! Lowering a parsed MIL function into an executable plan, and running it.
//!
//! Lowering takes every result type from `mil`'s shape inference (which checks it against
//! the declared type), resolves every parameter (axes, perms, flags: all must be `const`s)
//! through `mil`, materialises constants (inline literals and BLOBFILE weights), and counts
//! FLOPs and weight bytes for the cost model. The op vocabulary is `mil::Op`: every op of
//! the table lowers to a step. Running walks the steps in order; with [`Precision::Fp16`] every fp16-typed result
//! is rounded to fp16 (round-to-nearest-even) after its op, while conv/matmul/reductions
//! accumulate in f32 — the ANE's numerics as far as they are public. Lanes whose inputs are
//! bitwise identical are computed once (`lanes`: exact, on by default; see
//! [`Program::set_lane_sharing`]).

use std::collections::HashMap;
use std::sync::Arc;

use mil::ast::{Arg, DType, Function, Literal, Statement, TensorData, ValueType};

use super::gemm::{gemm, gemm_terms, MatRef};
use super::ops::{sigmoid, Binary, Unary};
use super::panels::{gemm_panels, Panels, PANEL_MAX_N};
use super::tensor::{
    broadcast_map2, broadcast_map2_into, concat_interleave, concat_into, give_buf, numel, reduce,
    softmax_into, strided_copy_into, strides, take_buf, ReduceKind, Tensor,
};
use ane::blob;
use ane::fp16::{round_f16, round_f16_slice};

mod exec;
mod lanes;
mod lower;

use lanes::LanePlan;

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
    /// 1×1 convolution; inputs `[x, weight]` or `[x, weight, bias]`; `panels`: a constant
    /// weight (groups = 1) packed for few lanes.
    Conv {
        groups: usize,
        panels: Option<Arc<Panels>>,
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
    /// How lanes can be shared (`None`: the program gains nothing from it).
    lanes: Option<LanePlan>,
    /// Compute identical lanes once (default; see `lanes`).
    share_lanes: bool,
}

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

    /// Compute lanes whose inputs are bitwise identical once (on by default). Exact: every
    /// output lane holds what computing all lanes gives; off computes every lane (the
    /// reference the tests compare with).
    pub fn set_lane_sharing(&mut self, on: bool) {
        self.share_lanes = on;
    }

    /// Whether some ops of this program can run on shared lanes.
    pub fn can_share_lanes(&self) -> bool {
        self.lanes.is_some()
    }

    /// Labels of the ops that run at full size when lanes are shared (those that mix lanes,
    /// or whose lanes the analysis cannot follow); empty if no op can share lanes.
    pub fn unshared_ops(&self) -> Vec<&str> {
        let Some(plan) = &self.lanes else {
            return vec![];
        };
        self.steps
            .iter()
            .zip(&plan.modes)
            .filter(|(_, &m)| m == lanes::Mode::Expanded)
            .map(|(s, _)| s.label.as_str())
            .collect()
    }

    /// How many lanes a run on `inputs` (declaration order) computes with lane sharing:
    /// one per class of bitwise-identical lanes; `None` when it would compute every lane.
    pub fn shared_lanes(&self, inputs: &[Tensor]) -> Option<usize> {
        self.lane_classes(inputs.iter())
            .map(|(_, classes)| classes.reps.len())
    }

    /// The lane plan and the classes of identical lanes for `inputs` (declaration order),
    /// when sharing is on and some lanes are identical.
    fn lane_classes<'t>(
        &self,
        inputs: impl Iterator<Item = &'t Tensor>,
    ) -> Option<(&LanePlan, lanes::LaneClasses)> {
        let plan = self.lanes.as_ref().filter(|_| self.share_lanes)?;
        let keyed: Vec<(usize, &Tensor)> = self.input_values.iter().copied().zip(inputs).collect();
        let classes = plan.classes(&keyed);
        (classes.reps.len() < plan.lanes).then_some((plan, classes))
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
    fn unknown_op_is_a_shape_error_naming_the_statement() {
        let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 2]> x) {\n        tensor<fp16, [1, 2]> y = frob(x=x)[name=string(\"y\")];\n    } -> (y);\n}\n";
        let p = mil::parse(text).unwrap();
        let none = |_: &str| None;
        let err = Program::build(p.main().unwrap(), &none, Precision::Fp16).unwrap_err();
        assert_eq!(
            err,
            ["op `frob` producing `y` (statement 0): unknown op".to_string()]
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

    /// `x` of the per-op programs below, shape `[2, 3]`.
    const X: [f32; 6] = [0.5, -1.0, 2.0, -0.25, 3.0, 0.0];

    /// Body lines (using input `x: fp32[2, 3]`) that define `y`, and `y`'s expected values.
    fn op_case(op: mil::Op) -> (Vec<String>, Vec<f32>) {
        use mil::Op::*;
        let t = |s: &str| format!("tensor<fp32, {s}>");
        let x23 = t("[2, 3]");
        let map = |f: &dyn Fn(f32) -> f32| X.iter().map(|&v| f(v)).collect::<Vec<f32>>();
        let flag = |c: bool| c as u8 as f32;
        let two = "fp32 two = const()[name=string(\"two\"), val=fp32(2.0)];".to_string();
        let zero = "fp32 zero = const()[name=string(\"zero\"), val=fp32(0.0)];".to_string();
        let pq = vec![
            zero.clone(),
            "fp32 one = const()[name=string(\"one\"), val=fp32(1.0)];".to_string(),
            "tensor<bool, [2, 3]> p = greater(x=x,y=zero)[name=string(\"p\")];".to_string(),
            "tensor<bool, [2, 3]> q = less(x=x,y=one)[name=string(\"q\")];".to_string(),
        ];
        let (p, q): (Vec<bool>, Vec<bool>) = X.iter().map(|&v| (v > 0.0, v < 1.0)).unzip();
        let ints = |name: &str, v: &str, n: usize| {
            format!("tensor<int32, [{n}]> {name} = const()[name=string(\"{name}\"), val=tensor<int32, [{n}]>([{v}])];")
        };
        let reduce = |f: &dyn Fn(&[f32]) -> f32| -> (Vec<String>, Vec<f32>) {
            let line = format!("{} y = {op}(x=x,axes=ax)[name=string(\"y\")];", t("[2]"));
            (vec![ints("ax", "1", 1), line], vec![f(&X[..3]), f(&X[3..])])
        };
        let binary = |f: &dyn Fn(f32, f32) -> f32| {
            let line = format!("{x23} y = {op}(x=x,y=two)[name=string(\"y\")];");
            (vec![two.clone(), line], map(&|v| f(v, 2.0)))
        };
        let compare = |f: &dyn Fn(f32, f32) -> bool| {
            let line = format!("tensor<bool, [2, 3]> y = {op}(x=x,y=two)[name=string(\"y\")];");
            (vec![two.clone(), line], map(&|v| flag(f(v, 2.0))))
        };
        let logical = |f: &dyn Fn(bool, bool) -> bool| {
            let mut lines = pq.clone();
            lines.push(format!(
                "tensor<bool, [2, 3]> y = {op}(x=p,y=q)[name=string(\"y\")];"
            ));
            let want = p.iter().zip(&q).map(|(&a, &b)| flag(f(a, b))).collect();
            (lines, want)
        };
        let unary = |f: &dyn Fn(f32) -> f32| {
            (
                vec![format!("{x23} y = {op}(x=x)[name=string(\"y\")];")],
                map(f),
            )
        };
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        match op {
            Const => (
                vec![format!(
                    "{x23} y = const()[name=string(\"y\"), val={x23}([1, 2, 3, 4, 5, 6])];"
                )],
                vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            ),
            Conv => (
                vec![
                    ints("s4", "1, 6, 1, 1", 4),
                    format!(
                        "{} x4 = reshape(x=x,shape=s4)[name=string(\"x4\")];",
                        t("[1, 6, 1, 1]")
                    ),
                    format!(
                        "{} w = const()[name=string(\"w\"), val={}([1, 1, 1, 1, 1, 2])];",
                        t("[1, 6, 1, 1]"),
                        t("[1, 6, 1, 1]")
                    ),
                    format!(
                        "{} y = conv(x=x4,weight=w)[name=string(\"y\")];",
                        t("[1, 1, 1, 1]")
                    ),
                ],
                vec![4.25],
            ),
            Matmul => (
                vec![
                    format!(
                        "{} w = const()[name=string(\"w\"), val={}([1, 0, 2])];",
                        t("[3, 1]"),
                        t("[3, 1]")
                    ),
                    format!("{} y = matmul(x=x,y=w)[name=string(\"y\")];", t("[2, 1]")),
                ],
                vec![4.5, -0.25],
            ),
            Linear => (
                vec![
                    format!(
                        "{} w = const()[name=string(\"w\"), val={}([1, 1, 1])];",
                        t("[1, 3]"),
                        t("[1, 3]")
                    ),
                    format!(
                        "{} b = const()[name=string(\"b\"), val={}([0.5])];",
                        t("[1]"),
                        t("[1]")
                    ),
                    format!(
                        "{} y = linear(x=x,weight=w,bias=b)[name=string(\"y\")];",
                        t("[2, 1]")
                    ),
                ],
                vec![2.0, 3.25],
            ),
            Add => binary(&|a, b| a + b),
            Sub => binary(&|a, b| a - b),
            Mul => binary(&|a, b| a * b),
            RealDiv => binary(&|a, b| a / b),
            FloorDiv => binary(&|a, b| (a / b).floor()),
            Mod => binary(&|a, b| a - (a / b).floor() * b),
            Pow => binary(&|a, b| a.powf(b)),
            Maximum => binary(&f32::max),
            Minimum => binary(&f32::min),
            Equal => compare(&|a, b| a == b),
            NotEqual => compare(&|a, b| a != b),
            Less => compare(&|a, b| a < b),
            LessEqual => compare(&|a, b| a <= b),
            Greater => compare(&|a, b| a > b),
            GreaterEqual => compare(&|a, b| a >= b),
            LogicalAnd => logical(&|a, b| a && b),
            LogicalOr => logical(&|a, b| a || b),
            LogicalXor => logical(&|a, b| a != b),
            LogicalNot => {
                let mut lines = pq.clone();
                lines.push("tensor<bool, [2, 3]> y = logical_not(x=p)[name=string(\"y\")];".into());
                (lines, p.iter().map(|&a| flag(!a)).collect())
            }
            Select => {
                let mut lines = pq.clone();
                lines.push(format!(
                    "{x23} y = select(cond=p,a=x,b=zero)[name=string(\"y\")];"
                ));
                (lines, map(&|v| v.max(0.0)))
            }
            Identity => unary(&|v| v),
            Abs => unary(&f32::abs),
            Ceil => unary(&f32::ceil),
            Floor => unary(&f32::floor),
            Round => unary(&f32::round_ties_even),
            Sign => unary(&|v| if v == 0.0 { 0.0 } else { v.signum() }),
            Sin => unary(&f32::sin),
            Cos => unary(&f32::cos),
            Tan => unary(&f32::tan),
            Tanh => unary(&f32::tanh),
            Exp => unary(&f32::exp),
            Exp2 => unary(&f32::exp2),
            Log => unary(&|v| (v + 1e-45).ln()),
            Sqrt => unary(&f32::sqrt),
            Rsqrt => unary(&|v| 1.0 / (v + 1e-12).sqrt()),
            Inverse => unary(&|v| 1.0 / (v + 1e-4)),
            Square => unary(&|v| v * v),
            Sigmoid => unary(&sig),
            Relu => unary(&|v| v.max(0.0)),
            Relu6 => unary(&|v| v.clamp(0.0, 6.0)),
            Silu => unary(&|v| v * sig(v)),
            Softplus => unary(&|v| v.exp().ln_1p()),
            Erf => unary(&super::super::ops::erf),
            Gelu => unary(&|v| 0.5 * v * (1.0 + super::super::ops::erf(v / 2f32.sqrt()))),
            LeakyRelu => (
                vec![
                    "fp32 a = const()[name=string(\"a\"), val=fp32(0.1)];".into(),
                    format!("{x23} y = leaky_relu(x=x,alpha=a)[name=string(\"y\")];"),
                ],
                map(&|v| if v >= 0.0 { v } else { 0.1 * v }),
            ),
            Clip => (
                vec![
                    "fp32 lo = const()[name=string(\"lo\"), val=fp32(-0.5)];".into(),
                    "fp32 hi = const()[name=string(\"hi\"), val=fp32(1.0)];".into(),
                    format!("{x23} y = clip(x=x,alpha=lo,beta=hi)[name=string(\"y\")];"),
                ],
                map(&|v| v.clamp(-0.5, 1.0)),
            ),
            Softmax => {
                let row = |r: &[f32]| {
                    let s: f32 = r.iter().map(|v| v.exp()).sum();
                    r.iter().map(|v| v.exp() / s).collect::<Vec<_>>()
                };
                let want = [row(&X[..3]), row(&X[3..])].concat();
                (
                    vec![format!("{x23} y = softmax(x=x)[name=string(\"y\")];")],
                    want,
                )
            }
            LayerNorm => {
                let row = |r: &[f32]| {
                    let m = r.iter().sum::<f32>() / 3.0;
                    let var = r.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / 3.0;
                    r.iter()
                        .map(|v| (v - m) / (var + 1e-5).sqrt())
                        .collect::<Vec<_>>()
                };
                let want = [row(&X[..3]), row(&X[3..])].concat();
                (
                    vec![format!("{x23} y = layer_norm(x=x)[name=string(\"y\")];")],
                    want,
                )
            }
            ReduceSum => reduce(&|r| r.iter().sum()),
            ReduceMean => reduce(&|r| r.iter().sum::<f32>() / 3.0),
            ReduceMax => reduce(&|r| r.iter().copied().fold(f32::MIN, f32::max)),
            ReduceMin => reduce(&|r| r.iter().copied().fold(f32::MAX, f32::min)),
            ReduceProd => reduce(&|r| r.iter().product()),
            ReduceSumSquare => reduce(&|r| r.iter().map(|v| v * v).sum()),
            ReduceL2Norm => reduce(&|r| r.iter().map(|v| v * v).sum::<f32>().sqrt()),
            ReduceLogSumExp => reduce(&|r| r.iter().map(|v| v.exp()).sum::<f32>().ln()),
            Reshape => (
                vec![
                    ints("s", "3, 2", 2),
                    format!(
                        "{} y = reshape(x=x,shape=s)[name=string(\"y\")];",
                        t("[3, 2]")
                    ),
                ],
                X.to_vec(),
            ),
            ExpandDims => (
                vec![
                    ints("ax", "0", 1),
                    format!(
                        "{} y = expand_dims(x=x,axes=ax)[name=string(\"y\")];",
                        t("[1, 2, 3]")
                    ),
                ],
                X.to_vec(),
            ),
            Squeeze => (
                vec![
                    ints("ax", "-2", 1),
                    format!(
                        "{} e = expand_dims(x=x,axes=ax)[name=string(\"e\")];",
                        t("[2, 1, 3]")
                    ),
                    format!("{x23} y = squeeze(x=e,axes=ax)[name=string(\"y\")];"),
                ],
                X.to_vec(),
            ),
            Transpose => (
                vec![
                    ints("pm", "1, 0", 2),
                    format!(
                        "{} y = transpose(x=x,perm=pm)[name=string(\"y\")];",
                        t("[3, 2]")
                    ),
                ],
                vec![0.5, -0.25, -1.0, 3.0, 2.0, 0.0],
            ),
            Cast => (
                vec![
                    "string dt = const()[name=string(\"dt\"), val=string(\"fp16\")];".into(),
                    "tensor<fp16, [2, 3]> y = cast(x=x,dtype=dt)[name=string(\"y\")];".into(),
                ],
                X.to_vec(),
            ),
            SliceBySize => (
                vec![
                    ints("b", "0, 1", 2),
                    ints("sz", "2, -1", 2),
                    format!(
                        "{} y = slice_by_size(x=x,begin=b,size=sz)[name=string(\"y\")];",
                        t("[2, 2]")
                    ),
                ],
                vec![-1.0, 2.0, 3.0, 0.0],
            ),
            SliceByIndex => (
                vec![
                    ints("b", "1, 0", 2),
                    ints("e", "2, 3", 2),
                    ints("st", "1, 2", 2),
                    format!(
                        "{} y = slice_by_index(x=x,begin=b,end=e,stride=st)[name=string(\"y\")];",
                        t("[1, 2]")
                    ),
                ],
                vec![-0.25, 0.0],
            ),
            Concat => (
                vec![
                    "int32 ax = const()[name=string(\"ax\"), val=int32(0)];".into(),
                    "bool il = const()[name=string(\"il\"), val=bool(false)];".into(),
                    format!(
                        "{} y = concat(values=(x,x),axis=ax,interleave=il)[name=string(\"y\")];",
                        t("[4, 3]")
                    ),
                ],
                [X, X].concat(),
            ),
        }
    }

    #[test]
    fn every_op_of_the_table_infers_lowers_and_computes() {
        for &op in mil::Op::ALL {
            let (body, want) = op_case(op);
            let text = format!(
                "program(1.3)\n{{\n    func main<ios18>(tensor<fp32, [2, 3]> x) {{\n        {}\n    }} -> (y);\n}}\n",
                body.join("\n        ")
            );
            let p = mil::parse(&text).unwrap_or_else(|e| panic!("{op}: {e}\n{text}"));
            let f = p.main().unwrap();
            assert_eq!(f.statement("y").and_then(|s| s.known_op()), Some(op));
            let env = mil::infer_shapes(f).unwrap_or_else(|e| panic!("{op}: {e}"));
            let got = run_text(&text, vec![Tensor::new(vec![2, 3], X.to_vec())]);
            assert_eq!(got[0].shape, env["y"].shape(), "{op}");
            assert_eq!(got[0].data.len(), want.len(), "{op}");
            for (i, (&g, &w)) in got[0].data.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0) || (g.is_nan() && w.is_nan()),
                    "{op}[{i}]: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn shape_errors_come_from_mil_and_sim_limits_name_the_statement() {
        let build = |text: &str| {
            let none = |_: &str| None;
            let p = mil::parse(text).unwrap();
            Program::build(p.main().unwrap(), &none, Precision::F32).unwrap_err()
        };
        let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp32, [2, 3]> x) {\n        tensor<fp32, [2, 3]> w = const()[name=string(\"w\"), val=tensor<fp32, [2, 3]>([1, 1, 1, 1, 1, 1])];\n        tensor<fp32, [2, 3]> y = linear(x=x,weight=w)[name=string(\"y\")];\n    } -> (y);\n}\n";
        let err = build(text);
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0]
                == "op `linear` producing `y` (statement 1): declared type tensor<fp32, [2, 3]> \
                    but the op produces tensor<fp32, [2, 2]>",
            "{err:?}"
        );
        let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp32, [2, 3]> x) {\n        tensor<int32, [2]> b = const()[name=string(\"b\"), val=tensor<int32, [2]>([0, 2])];\n        tensor<int32, [2]> e = const()[name=string(\"e\"), val=tensor<int32, [2]>([2, 0])];\n        tensor<int32, [2]> s = const()[name=string(\"s\"), val=tensor<int32, [2]>([1, -1])];\n        tensor<fp32, [2, 2]> y = slice_by_index(x=x,begin=b,end=e,stride=s)[name=string(\"y\")];\n    } -> (y);\n}\n";
        assert_eq!(
            build(text),
            ["op `slice_by_index` producing `y` (statement 3): slice stride -1 is not supported by the simulator (only > 0)"]
        );
    }
}
