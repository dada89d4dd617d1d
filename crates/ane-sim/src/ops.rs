//! Pointwise op vocabulary of the simulator: what each unary/binary MIL op computes in f32.

use super::tensor::{max_nan, min_nan};

/// A one-input pointwise op (parameters already resolved).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Identity,
    Abs,
    Ceil,
    Floor,
    Round,
    Sign,
    Sin,
    Cos,
    Tan,
    Tanh,
    Exp,
    Exp2,
    /// `ln(x + epsilon)`.
    Log(f32),
    Sqrt,
    /// `1 / sqrt(x + epsilon)`.
    Rsqrt(f32),
    /// `1 / (x + epsilon)`.
    Inverse(f32),
    Square,
    Sigmoid,
    Relu,
    Relu6,
    /// `x · sigmoid(x)`.
    Silu,
    Softplus,
    Erf,
    /// `0.5·x·(1 + erf(x/√2))`.
    GeluExact,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    GeluTanh,
    /// `x · sigmoid(1.702·x)`.
    GeluSigmoid,
    /// `x` if `x ≥ 0` else `alpha·x`.
    LeakyRelu(f32),
    /// `min(max(x, lo), hi)`.
    Clip(f32, f32),
    /// `1` where `x == 0`, else `0` (bool as 0/1).
    LogicalNot,
}

impl Unary {
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Unary::Identity => x,
            Unary::Abs => x.abs(),
            Unary::Ceil => x.ceil(),
            Unary::Floor => x.floor(),
            Unary::Round => x.round_ties_even(),
            Unary::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Unary::Sin => x.sin(),
            Unary::Cos => x.cos(),
            Unary::Tan => x.tan(),
            Unary::Tanh => x.tanh(),
            Unary::Exp => x.exp(),
            Unary::Exp2 => x.exp2(),
            Unary::Log(eps) => (x + eps).ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Rsqrt(eps) => 1.0 / (x + eps).sqrt(),
            Unary::Inverse(eps) => 1.0 / (x + eps),
            Unary::Square => x * x,
            Unary::Sigmoid => sigmoid(x),
            Unary::Relu => x.max(0.0),
            Unary::Relu6 => x.clamp(0.0, 6.0),
            Unary::Silu => x * sigmoid(x),
            Unary::Softplus => {
                if x > 20.0 {
                    x
                } else {
                    x.exp().ln_1p()
                }
            }
            Unary::Erf => erf(x),
            Unary::GeluExact => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
            Unary::GeluTanh => 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh()),
            Unary::GeluSigmoid => x * sigmoid(1.702 * x),
            Unary::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Unary::Clip(lo, hi) => min_nan(max_nan(x, lo), hi),
            Unary::LogicalNot => (x == 0.0) as u8 as f32,
        }
    }

    /// FLOPs charged per element by the cost model (transcendentals count a few).
    pub fn flops(self) -> f64 {
        match self {
            Unary::Identity => 0.0,
            Unary::Sigmoid | Unary::Silu | Unary::Tanh | Unary::Exp | Unary::Exp2 => 4.0,
            Unary::GeluExact | Unary::GeluTanh | Unary::GeluSigmoid | Unary::Erf => 8.0,
            _ => 1.0,
        }
    }
}

/// Logistic function, written to avoid overflow for large |x|.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Error function (Abramowitz & Stegun 7.1.26 refined with f64; |error| < 2e-7).
pub fn erf(x: f32) -> f32 {
    let x = x as f64;
    let s = x.signum();
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    (s * (1.0 - poly * (-a * a).exp())) as f32
}

/// A two-input pointwise op with NumPy broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    RealDiv,
    FloorDiv,
    Mod,
    Pow,
    Maximum,
    Minimum,
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    LogicalAnd,
    LogicalOr,
    LogicalXor,
}

impl Binary {
    /// The kernel of a two-operand op of the MIL table (`None` for other ops).
    pub fn from_op(op: mil::Op) -> Option<Binary> {
        use mil::Op;
        Some(match op {
            Op::Add => Binary::Add,
            Op::Sub => Binary::Sub,
            Op::Mul => Binary::Mul,
            Op::RealDiv => Binary::RealDiv,
            Op::FloorDiv => Binary::FloorDiv,
            Op::Mod => Binary::Mod,
            Op::Pow => Binary::Pow,
            Op::Maximum => Binary::Maximum,
            Op::Minimum => Binary::Minimum,
            Op::Equal => Binary::Equal,
            Op::NotEqual => Binary::NotEqual,
            Op::Less => Binary::Less,
            Op::LessEqual => Binary::LessEqual,
            Op::Greater => Binary::Greater,
            Op::GreaterEqual => Binary::GreaterEqual,
            Op::LogicalAnd => Binary::LogicalAnd,
            Op::LogicalOr => Binary::LogicalOr,
            Op::LogicalXor => Binary::LogicalXor,
            _ => return None,
        })
    }

    /// True for ops whose result is `bool` (stored as 0/1).
    pub fn is_predicate(self) -> bool {
        matches!(
            self,
            Binary::Equal
                | Binary::NotEqual
                | Binary::Less
                | Binary::LessEqual
                | Binary::Greater
                | Binary::GreaterEqual
                | Binary::LogicalAnd
                | Binary::LogicalOr
                | Binary::LogicalXor
        )
    }

    pub fn apply(self, a: f32, b: f32) -> f32 {
        let flag = |c: bool| c as u8 as f32;
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::RealDiv => a / b,
            Binary::FloorDiv => (a / b).floor(),
            Binary::Mod => a - (a / b).floor() * b,
            Binary::Pow => a.powf(b),
            Binary::Maximum => max_nan(a, b),
            Binary::Minimum => min_nan(a, b),
            Binary::Equal => flag(a == b),
            Binary::NotEqual => flag(a != b),
            Binary::Less => flag(a < b),
            Binary::LessEqual => flag(a <= b),
            Binary::Greater => flag(a > b),
            Binary::GreaterEqual => flag(a >= b),
            Binary::LogicalAnd => flag(a != 0.0 && b != 0.0),
            Binary::LogicalOr => flag(a != 0.0 || b != 0.0),
            Binary::LogicalXor => flag((a != 0.0) != (b != 0.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_and_gelu_reference_values() {
        // erf(0.5) = 0.5204998778, erf(-1.5) = -0.9661051465
        assert!((erf(0.5) - 0.520_499_9).abs() < 1e-6);
        assert!((erf(-1.5) + 0.966_105_1).abs() < 1e-6);
        // gelu(1) exact = 0.8413447461; tanh form = 0.8411919906
        assert!((Unary::GeluExact.apply(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((Unary::GeluTanh.apply(1.0) - 0.841_192).abs() < 1e-5);
    }

    #[test]
    fn sigmoid_is_stable_and_pointwise_ops_compute() {
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert!((sigmoid(0.3) - 1.0 / (1.0 + (-0.3f32).exp())).abs() < 1e-7);
        assert_eq!(Unary::Rsqrt(0.0).apply(4.0), 0.5);
        assert_eq!(Unary::Clip(-1.0, 2.0).apply(5.0), 2.0);
        assert_eq!(Binary::Pow.apply(4.0, -0.5), 0.5);
        assert_eq!(Binary::Mod.apply(-1.0, 3.0), 2.0);
        assert_eq!(Binary::GreaterEqual.apply(2.0, 2.0), 1.0);
        assert!(Binary::Maximum.apply(f32::NAN, 1.0).is_nan());
    }
}
