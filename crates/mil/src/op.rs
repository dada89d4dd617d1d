//! The op table: the one place the MIL op vocabulary is described.
//!
//! [`Op`] has one variant per op this toolkit knows — every op shape inference
//! ([`crate::shape`]) types and the `ane` simulator executes. Each op has its MIL name
//! ([`Op::name`], [`Op::from_name`]), a class ([`Op::class`]) that says which family of
//! shape rule and execution it belongs to, and the ANE facts the [validator](mod@crate::validate) uses
//! ([`Op::ane_support`]). Statements keep their op as text (so unknown ops still parse and
//! the validator can report them); [`crate::Statement::known_op`] looks it up here.
//!
//! Adding an op: add a line to the `ops!` table below; the exhaustive matches in
//! [`Op::class`], [`Op::ane_support`], the shape inference and the simulator's lowering
//! then fail to compile until the op is handled everywhere.

use std::fmt;

macro_rules! ops {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// One MIL op of the known vocabulary.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op {
            $($(#[$doc])* $variant,)*
        }

        impl Op {
            /// Every op, in table order.
            pub const ALL: &'static [Op] = &[$(Op::$variant,)*];

            /// The MIL name (`real_div`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Op::$variant => $name,)*
                }
            }

            /// The op with MIL name `name`, if known.
            pub fn from_name(name: &str) -> Option<Op> {
                match name {
                    $($name => Some(Op::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

ops! {
    /// A constant (`val` attribute; inline tensor or BLOBFILE weight).
    Const = "const",
    /// 2-D convolution `[N, Cin, H, W] * [Cout, Cin/groups, kH, kW]`.
    Conv = "conv",
    /// Batched matrix product with transpose flags and batch broadcasting.
    Matmul = "matmul",
    /// `x · weightᵀ (+ bias)` over the last axis; weight `[out, in]`.
    Linear = "linear",
    Add = "add",
    Sub = "sub",
    Mul = "mul",
    RealDiv = "real_div",
    FloorDiv = "floor_div",
    Mod = "mod",
    Pow = "pow",
    Maximum = "maximum",
    Minimum = "minimum",
    Equal = "equal",
    NotEqual = "not_equal",
    Less = "less",
    LessEqual = "less_equal",
    Greater = "greater",
    GreaterEqual = "greater_equal",
    LogicalAnd = "logical_and",
    LogicalOr = "logical_or",
    LogicalXor = "logical_xor",
    LogicalNot = "logical_not",
    /// `select(cond, a, b)`: three-way broadcast.
    Select = "select",
    Identity = "identity",
    Abs = "abs",
    Ceil = "ceil",
    Floor = "floor",
    Round = "round",
    Sign = "sign",
    Sin = "sin",
    Cos = "cos",
    Tan = "tan",
    Tanh = "tanh",
    Exp = "exp",
    Exp2 = "exp2",
    /// `ln(x + epsilon)`.
    Log = "log",
    Sqrt = "sqrt",
    /// `1 / sqrt(x + epsilon)`.
    Rsqrt = "rsqrt",
    /// `1 / (x + epsilon)`.
    Inverse = "inverse",
    Square = "square",
    Sigmoid = "sigmoid",
    Relu = "relu",
    Relu6 = "relu6",
    Silu = "silu",
    Softplus = "softplus",
    Erf = "erf",
    /// `x` if `x ≥ 0` else `alpha·x`.
    LeakyRelu = "leaky_relu",
    /// `min(max(x, alpha), beta)`.
    Clip = "clip",
    /// `mode` EXACT (default), TANH_APPROXIMATION or SIGMOID_APPROXIMATION.
    Gelu = "gelu",
    Softmax = "softmax",
    ReduceSum = "reduce_sum",
    ReduceMean = "reduce_mean",
    ReduceMax = "reduce_max",
    ReduceMin = "reduce_min",
    ReduceProd = "reduce_prod",
    ReduceSumSquare = "reduce_sum_square",
    ReduceL2Norm = "reduce_l2_norm",
    ReduceLogSumExp = "reduce_log_sum_exp",
    Reshape = "reshape",
    Squeeze = "squeeze",
    ExpandDims = "expand_dims",
    Transpose = "transpose",
    Cast = "cast",
    SliceBySize = "slice_by_size",
    SliceByIndex = "slice_by_index",
    Concat = "concat",
    /// Normalise over `axes` (default: the last), optional `gamma`/`beta`, `epsilon`.
    LayerNorm = "layer_norm",
}

/// The family of an op: which shape rule it follows and how it computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// `const`.
    Const,
    /// conv, matmul, linear: contractions against a second operand.
    Contraction,
    /// Two operands, NumPy broadcast, result has the operands' dtype.
    BinaryArithmetic,
    /// Two operands, NumPy broadcast, `bool` result.
    Comparison,
    /// Boolean logic on `bool` operands (`logical_not` takes one), `bool` result.
    Logical,
    /// `select(cond, a, b)`.
    Select,
    /// One operand, pointwise, result has the operand's type.
    UnaryElementwise,
    /// softmax and layer_norm: same shape, computed along axes.
    Normalization,
    /// `reduce_*(x, axes, keep_dims)`.
    Reduction,
    /// reshape, squeeze, expand_dims, transpose, slices, concat: data movement only.
    Layout,
    /// `cast(x, dtype)`.
    Cast,
}

/// What is known about an op on the ANE compiler path (text MIL → `_ANECompiler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AneSupport {
    /// In the reference's documented vocabulary (ane-reference §5.3).
    Documented,
    /// The ANE compiler rejects it in text MIL; the text says why and what to use instead.
    Rejected(&'static str),
    /// Executed by the simulator, but no public source shows the ANE compiler accepting it.
    Unverified,
}

impl Op {
    /// The family of the op.
    pub fn class(self) -> OpClass {
        use Op::*;
        match self {
            Const => OpClass::Const,
            Conv | Matmul | Linear => OpClass::Contraction,
            Add | Sub | Mul | RealDiv | FloorDiv | Mod | Pow | Maximum | Minimum => {
                OpClass::BinaryArithmetic
            }
            Equal | NotEqual | Less | LessEqual | Greater | GreaterEqual => OpClass::Comparison,
            LogicalAnd | LogicalOr | LogicalXor | LogicalNot => OpClass::Logical,
            Select => OpClass::Select,
            Identity | Abs | Ceil | Floor | Round | Sign | Sin | Cos | Tan | Tanh | Exp | Exp2
            | Log | Sqrt | Rsqrt | Inverse | Square | Sigmoid | Relu | Relu6 | Silu | Softplus
            | Erf | LeakyRelu | Clip | Gelu => OpClass::UnaryElementwise,
            Softmax | LayerNorm => OpClass::Normalization,
            ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceSumSquare
            | ReduceL2Norm | ReduceLogSumExp => OpClass::Reduction,
            Reshape | Squeeze | ExpandDims | Transpose | SliceBySize | SliceByIndex | Concat => {
                OpClass::Layout
            }
            Cast => OpClass::Cast,
        }
    }

    /// ANE compiler facts (ane-reference §5.3, §11.6) used by the validator.
    pub fn ane_support(self) -> AneSupport {
        use Op::*;
        match self {
            Rsqrt => AneSupport::Rejected(
                "`rsqrt` is rejected by the ANE compiler in text MIL; use `pow(x, -0.5)`",
            ),
            ReduceMean => AneSupport::Rejected(
                "`reduce_mean` is absent/rejected in raw MIL text; use `reduce_sum` × 1/n",
            ),
            Gelu => AneSupport::Rejected(
                "`gelu` failed to compile for Orion (sources disagree: a maderix fork compiled it \
                 through a different compile path); decompose to the tanh form",
            ),
            Const | Conv | Matmul | Add | Sub | Mul | RealDiv | Pow | Maximum | Minimum | Equal
            | NotEqual | Less | LessEqual | Greater | GreaterEqual | Select | Sigmoid | Tanh
            | Relu | Exp | Log | Sqrt | Abs | Silu | Identity | Softmax | ReduceSum | ReduceMax
            | ReduceMin | Reshape | Transpose | Cast | SliceBySize | SliceByIndex | Concat
            | ExpandDims | Squeeze => AneSupport::Documented,
            Linear | FloorDiv | Mod | LogicalAnd | LogicalOr | LogicalXor | LogicalNot | Ceil
            | Floor | Round | Sign | Sin | Cos | Tan | Exp2 | Inverse | Square | Relu6
            | Softplus | Erf | LeakyRelu | Clip | ReduceProd | ReduceSumSquare | ReduceL2Norm
            | ReduceLogSumExp | LayerNorm => AneSupport::Unverified,
        }
    }

    /// True for one-operand pointwise ops (result type = operand type).
    pub fn is_unary_elementwise(self) -> bool {
        self.class() == OpClass::UnaryElementwise
    }

    /// True for two-operand arithmetic (`add` … `minimum`).
    pub fn is_binary_arithmetic(self) -> bool {
        self.class() == OpClass::BinaryArithmetic
    }

    /// True for comparisons (`equal` … `greater_equal`), whose result is `bool`.
    pub fn is_comparison(self) -> bool {
        self.class() == OpClass::Comparison
    }

    /// True for `logical_*`.
    pub fn is_logical(self) -> bool {
        self.class() == OpClass::Logical
    }

    /// True for `reduce_*`.
    pub fn is_reduction(self) -> bool {
        self.class() == OpClass::Reduction
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for &op in Op::ALL {
            assert_eq!(Op::from_name(op.name()), Some(op));
        }
        let mut names: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Op::ALL.len());
        assert_eq!(Op::ALL.len(), 68);
        assert_eq!(Op::from_name("frobnicate"), None);
        assert_eq!(Op::from_name("Add"), None);
    }

    #[test]
    fn classes_and_ane_facts() {
        assert_eq!(Op::RealDiv.class(), OpClass::BinaryArithmetic);
        assert_eq!(Op::LessEqual.class(), OpClass::Comparison);
        assert_eq!(Op::LogicalNot.class(), OpClass::Logical);
        assert_eq!(Op::LeakyRelu.class(), OpClass::UnaryElementwise);
        assert_eq!(Op::ReduceLogSumExp.class(), OpClass::Reduction);
        assert_eq!(Op::LayerNorm.class(), OpClass::Normalization);
        assert_eq!(Op::Linear.class(), OpClass::Contraction);
        let rejected: Vec<&str> = Op::ALL
            .iter()
            .filter(|o| matches!(o.ane_support(), AneSupport::Rejected(_)))
            .map(|o| o.name())
            .collect();
        assert_eq!(rejected, ["rsqrt", "gelu", "reduce_mean"]);
        assert_eq!(Op::Conv.ane_support(), AneSupport::Documented);
        assert_eq!(Op::LayerNorm.ane_support(), AneSupport::Unverified);
        assert_eq!(Op::Rsqrt.to_string(), "rsqrt");
    }
}
