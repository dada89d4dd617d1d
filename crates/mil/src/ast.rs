//! The program model: a parsed or built MIL program, exactly as much structure as the
//! `program(1.3)` / `func main<ios18>` text dialect carries (ane-reference §5.1–5.3).
//!
//! Statement order is execution order. Every value is named (SSA); arguments refer to
//! earlier names, or (rarely) carry an inline literal.

use std::fmt;

/// Largest tensor rank the ANE accepts (ane-reference §11.7).
pub const MAX_RANK: usize = 5;

/// Element type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    Fp16,
    Fp32,
    Fp64,
    Int8,
    Uint8,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Uint64,
    Bool,
    String,
}

impl DType {
    /// Every dtype, in a fixed order (used by the parser's keyword lookup).
    pub const ALL: [DType; 13] = [
        DType::Fp16,
        DType::Fp32,
        DType::Fp64,
        DType::Int8,
        DType::Uint8,
        DType::Int16,
        DType::Uint16,
        DType::Int32,
        DType::Uint32,
        DType::Int64,
        DType::Uint64,
        DType::Bool,
        DType::String,
    ];

    /// The MIL keyword (`fp16`, `int32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::Fp16 => "fp16",
            DType::Fp32 => "fp32",
            DType::Fp64 => "fp64",
            DType::Int8 => "int8",
            DType::Uint8 => "uint8",
            DType::Int16 => "int16",
            DType::Uint16 => "uint16",
            DType::Int32 => "int32",
            DType::Uint32 => "uint32",
            DType::Int64 => "int64",
            DType::Uint64 => "uint64",
            DType::Bool => "bool",
            DType::String => "string",
        }
    }

    /// Parse a MIL dtype keyword.
    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Bytes per element in a surface or blob (`None` for `string`).
    pub fn size_bytes(self) -> Option<usize> {
        match self {
            DType::Int8 | DType::Uint8 | DType::Bool => Some(1),
            DType::Fp16 | DType::Int16 | DType::Uint16 => Some(2),
            DType::Fp32 | DType::Int32 | DType::Uint32 => Some(4),
            DType::Fp64 | DType::Int64 | DType::Uint64 => Some(8),
            DType::String => None,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::Fp16 | DType::Fp32 | DType::Fp64)
    }

    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::Int8
                | DType::Uint8
                | DType::Int16
                | DType::Uint16
                | DType::Int32
                | DType::Uint32
                | DType::Int64
                | DType::Uint64
        )
    }

    /// Inclusive value range of an integer dtype (`uint64` is capped at `i64::MAX`).
    pub fn int_range(self) -> Option<(i64, i64)> {
        match self {
            DType::Int8 => Some((i8::MIN as i64, i8::MAX as i64)),
            DType::Uint8 => Some((0, u8::MAX as i64)),
            DType::Int16 => Some((i16::MIN as i64, i16::MAX as i64)),
            DType::Uint16 => Some((0, u16::MAX as i64)),
            DType::Int32 => Some((i32::MIN as i64, i32::MAX as i64)),
            DType::Uint32 => Some((0, u32::MAX as i64)),
            DType::Int64 => Some((i64::MIN, i64::MAX)),
            DType::Uint64 => Some((0, i64::MAX)),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `tensor<dtype, [d0, d1, ...]>`. Rank 0 (`[]`) is allowed; rank is at most [`MAX_RANK`]
/// in parsed programs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>) -> TensorType {
        TensorType {
            dtype,
            shape: shape.into(),
        }
    }

    /// Number of elements, `None` on overflow.
    pub fn num_elements(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// Bytes of a densely packed buffer of this tensor, `None` on overflow or for strings.
    pub fn size_bytes(&self) -> Option<usize> {
        self.num_elements()?.checked_mul(self.dtype.size_bytes()?)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tensor<{}, {:?}>", self.dtype, self.shape)
    }
}

/// Type of a statement's result: a tensor or a bare scalar (`fp16 eps = const()...`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ValueType {
    Tensor(TensorType),
    Scalar(DType),
}

impl ValueType {
    pub fn dtype(&self) -> DType {
        match self {
            ValueType::Tensor(t) => t.dtype,
            ValueType::Scalar(d) => *d,
        }
    }

    pub fn as_tensor(&self) -> Option<&TensorType> {
        match self {
            ValueType::Tensor(t) => Some(t),
            ValueType::Scalar(_) => None,
        }
    }

    /// Shape with scalars as rank 0.
    pub fn shape(&self) -> &[usize] {
        match self {
            ValueType::Tensor(t) => &t.shape,
            ValueType::Scalar(_) => &[],
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Tensor(t) => t.fmt(f),
            ValueType::Scalar(d) => d.fmt(f),
        }
    }
}

/// Reference to weights stored in a blob file:
/// `BLOBFILE(path=string("@model_path/weights/x.bin"), offset=uint64(64))`.
/// `offset` points at the 64-byte chunk metadata record, not at the payload (§4.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobRef {
    pub path: String,
    pub offset: u64,
}

/// Elements of an inline tensor literal (`tensor<int32, [4]>([0,1,3,2])`), flat row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::Int(v) => v.len(),
            TensorData::Float(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A literal value.
///
/// Float scalars remember how many decimals they were written with when that differs from
/// the shortest form (`fp16(0.125000)` has `decimals = Some(6)`, C `%f` style) so fixtures
/// print back byte for byte; `None` prints the shortest text that reads back to the same
/// `f64` (with `.0` if integral: `1.0`, `-0.5`, `0.00001`). The parser and
/// [`Literal::float_fixed`] keep this canonical, so equal text ⇔ equal literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Bool(bool),
    /// Integer scalar of an integer dtype: `int32(1)`, `uint64(64)`.
    Int {
        dtype: DType,
        value: i64,
    },
    /// Float scalar of a float dtype: `fp16(0.001302)`.
    Float {
        dtype: DType,
        value: f64,
        decimals: Option<u8>,
    },
    /// `string("valid")`.
    Str(String),
    /// Inline tensor: `tensor<int32, [4]>([0,1,3,2])`.
    Tensor {
        ty: TensorType,
        data: TensorData,
    },
    /// Weights from a blob file: `tensor<fp16, [..]>(BLOBFILE(...))`.
    Blob {
        ty: TensorType,
        blob: BlobRef,
    },
}

impl Literal {
    /// `int32(v)`.
    pub fn int32(v: i32) -> Literal {
        Literal::Int {
            dtype: DType::Int32,
            value: v as i64,
        }
    }

    /// Float scalar printed in the shortest form (`1.0`, `-0.5`).
    pub fn float(dtype: DType, value: f64) -> Literal {
        Literal::Float {
            dtype,
            value,
            decimals: None,
        }
    }

    /// Float scalar printed like C `printf("%.Nf")`; the value is rounded to N decimals
    /// first, as the reference emitters do (`1/768` → `0.001302`).
    pub fn float_fixed(dtype: DType, value: f64, decimals: u8) -> Literal {
        let text = format!("{:.*}", decimals as usize, value);
        let rounded = text.parse::<f64>().unwrap_or(value);
        // Canonical form: `None` when the shortest text is the same (`0.001302`).
        let shortest = crate::printer::float_text(rounded, None) == text;
        Literal::Float {
            dtype,
            value: rounded,
            decimals: (!shortest).then_some(decimals),
        }
    }

    /// `tensor<int32, [n]>([..])`.
    pub fn int32_tensor(values: &[i32]) -> Literal {
        Literal::Tensor {
            ty: TensorType::new(DType::Int32, vec![values.len()]),
            data: TensorData::Int(values.iter().map(|&v| v as i64).collect()),
        }
    }

    /// The type this literal has as a value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Literal::Bool(_) => ValueType::Scalar(DType::Bool),
            Literal::Int { dtype, .. } | Literal::Float { dtype, .. } => ValueType::Scalar(*dtype),
            Literal::Str(_) => ValueType::Scalar(DType::String),
            Literal::Tensor { ty, .. } | Literal::Blob { ty, .. } => ValueType::Tensor(ty.clone()),
        }
    }

    /// Scalar as `i64` (ints, bools as 0/1).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Literal::Int { value, .. } => Some(*value),
            Literal::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Scalar as `f64` (floats and ints).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Literal::Float { value, .. } => Some(*value),
            Literal::Int { value, .. } => Some(*value as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Literal::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Literal::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Integer vector: an int tensor literal, or an int scalar as a 1-vector.
    pub fn as_int_vec(&self) -> Option<Vec<i64>> {
        match self {
            Literal::Tensor {
                data: TensorData::Int(v),
                ..
            } => Some(v.clone()),
            Literal::Int { value, .. } => Some(vec![*value]),
            _ => None,
        }
    }

    pub fn as_blob(&self) -> Option<&BlobRef> {
        match self {
            Literal::Blob { blob, .. } => Some(blob),
            _ => None,
        }
    }
}

/// An operation argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// Name of an input or of an earlier statement's result.
    Var(String),
    /// Inline literal (the reference emitters never use these; every non-tensor argument
    /// is a named `const`).
    Literal(Literal),
    /// Tuple, e.g. `values=(a,b,c)` of `concat`.
    List(Vec<Arg>),
}

impl Arg {
    pub fn as_var(&self) -> Option<&str> {
        match self {
            Arg::Var(v) => Some(v),
            _ => None,
        }
    }
}

/// `<type> <out_name> = <op>(<args>)[name=string("<op_name>"), <attrs>];`
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub out_name: String,
    pub out_type: ValueType,
    /// Op type, e.g. `conv`, `const`.
    pub op: String,
    /// Keyword arguments in the order written.
    pub args: Vec<(String, Arg)>,
    /// The `name=string(..)` attribute: the op's debug name.
    pub op_name: String,
    /// Other attributes in the order written; `const` has `val`.
    pub attrs: Vec<(String, Literal)>,
}

impl Statement {
    /// Keyword argument by name.
    pub fn arg(&self, key: &str) -> Option<&Arg> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, a)| a)
    }

    /// Attribute by name (`val` of a `const`).
    pub fn attr(&self, key: &str) -> Option<&Literal> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, a)| a)
    }

    /// The op of the statement in the known vocabulary ([`crate::op::Op`]); `None` for an
    /// op the toolkit does not know (it still parses, and the validator reports it).
    pub fn known_op(&self) -> Option<crate::op::Op> {
        crate::op::Op::from_name(&self.op)
    }

    /// The literal of a `const` statement.
    pub fn const_value(&self) -> Option<&Literal> {
        if self.op == "const" {
            self.attr("val")
        } else {
            None
        }
    }
}

/// `func <name><<opset>>(<inputs>) { <body> } -> (<outputs>);`
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    /// Deployment target, `ios18` by default.
    pub opset: String,
    pub inputs: Vec<(String, TensorType)>,
    pub body: Vec<Statement>,
    pub outputs: Vec<String>,
}

impl Function {
    /// Statement producing `name`.
    pub fn statement(&self, name: &str) -> Option<&Statement> {
        self.body.iter().find(|s| s.out_name == name)
    }

    /// The literal behind a `const` named `name`.
    pub fn const_value(&self, name: &str) -> Option<&Literal> {
        self.statement(name).and_then(Statement::const_value)
    }

    /// Declared type of an input or statement result.
    pub fn value_type(&self, name: &str) -> Option<ValueType> {
        if let Some((_, t)) = self.inputs.iter().find(|(n, _)| n == name) {
            return Some(ValueType::Tensor(t.clone()));
        }
        self.statement(name).map(|s| s.out_type.clone())
    }

    /// All BLOBFILE references in statement order, with the const's name.
    pub fn blob_refs(&self) -> Vec<(&str, &TensorType, &BlobRef)> {
        self.body
            .iter()
            .filter_map(|s| match s.const_value() {
                Some(Literal::Blob { ty, blob }) => Some((s.out_name.as_str(), ty, blob)),
                _ => None,
            })
            .collect()
    }
}

/// A whole MIL program.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// `program(1.3)` → `"1.3"`.
    pub version: String,
    /// `[buildInfo = dict<string, string>({{k, v}, ...})]` pairs in order (may be empty:
    /// then the line is not printed).
    pub build_info: Vec<(String, String)>,
    pub functions: Vec<Function>,
}

impl Program {
    /// The four buildInfo pairs every reference kernel carries (§5.1).
    pub fn default_build_info() -> Vec<(String, String)> {
        [
            ("coremlc-component-MIL", "3510.2.1"),
            ("coremlc-version", "3505.4.1"),
            ("coremltools-component-milinternal", ""),
            ("coremltools-version", "9.0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A program holding one function, with version 1.3 and the default buildInfo.
    pub fn with_function(function: Function) -> Program {
        Program {
            version: "1.3".to_string(),
            build_info: Program::default_build_info(),
            functions: vec![function],
        }
    }

    /// The function called `main`, or the first function.
    pub fn main(&self) -> Option<&Function> {
        self.functions
            .iter()
            .find(|f| f.name == "main")
            .or_else(|| self.functions.first())
    }
}
