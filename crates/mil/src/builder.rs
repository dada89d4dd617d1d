//! A builder for MIL kernels: typed values, one method per op, shape inference as you go.
//!
//! ```
//! use mil::{Builder, DType};
//! let mut b = Builder::new();
//! let x = b.input("x", DType::Fp16, [1, 768, 1, 32]);
//! let w = b.weight("Wq", [768, 768, 1, 1], "@model_path/weights/wq.bin");
//! let y = b.conv("y", x, w);
//! b.output(y);
//! let program = b.finish().unwrap();
//! assert_eq!(program.functions[0].body.last().unwrap().op, "conv");
//! ```
//!
//! Names: every op takes `impl Into<Names>`: `"y"` names the result and the op's debug
//! name alike, `("h1", "c1")` gives the result `h1` the debug name `c1` (as the fixtures do).
//! Parameters the dialect requires as named consts (conv settings, axes, flags) are passed as
//! [`Value`]s of `const` statements, so kernels control constant names and order exactly;
//! convenience methods (`conv`, `matmul_t`) create them automatically.
//!
//! Errors (bad shapes, duplicate names) are recorded and returned by [`Builder::finish`];
//! the op methods always return a value so kernel code stays linear.

use crate::ast::*;
use crate::blob::BlobError;
use crate::shape::{infer_statement, ShapeError, TypeEnv};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// Handle to a value (input or statement result) of the function being built. Handles
/// carry their builder's id, so using one with another builder is an error, not an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Value {
    builder: u32,
    index: usize,
}

/// Source of distinct builder ids.
static NEXT_BUILDER_ID: AtomicU32 = AtomicU32::new(0);

/// Result name and op debug name of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub out: String,
    pub op: String,
}

impl From<&str> for Names {
    fn from(s: &str) -> Names {
        Names {
            out: s.to_string(),
            op: s.to_string(),
        }
    }
}

impl From<String> for Names {
    fn from(s: String) -> Names {
        Names {
            op: s.clone(),
            out: s,
        }
    }
}

impl From<&String> for Names {
    fn from(s: &String) -> Names {
        Names::from(s.as_str())
    }
}

impl From<(&str, &str)> for Names {
    fn from((out, op): (&str, &str)) -> Names {
        Names {
            out: out.to_string(),
            op: op.to_string(),
        }
    }
}

impl From<(String, String)> for Names {
    fn from((out, op): (String, String)) -> Names {
        Names { out, op }
    }
}

/// The five named consts a 1×1 `conv` takes (§5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams {
    pub pad_type: Value,
    pub strides: Value,
    pub pad: Value,
    pub dilations: Value,
    pub groups: Value,
}

/// Why a build failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("`{0}` is defined twice")]
    DuplicateName(String),
    #[error("a value handle from another builder was used (value #{0} of that builder)")]
    ForeignValue(usize),
    #[error("the function has no outputs")]
    NoOutputs,
    #[error("`{0}` is not a MIL identifier ([A-Za-z_][A-Za-z0-9_]*)")]
    InvalidName(String),
    #[error("weight `{name}` has {got} values, its shape needs {expected}")]
    WeightSize {
        name: String,
        expected: usize,
        got: usize,
    },
    #[error("weight blob `{0}` is registered twice")]
    DuplicateBlob(String),
    #[error("weight blob `{path}`: {error}")]
    Blob { path: String, error: BlobError },
}

/// Weight blobs registered with [`Builder::weight_data`]: `(path, file bytes)` in
/// declaration order.
pub type Weights = Vec<(String, Vec<u8>)>;

/// Builds one function (default `main<ios18>`) and wraps it into a [`Program`].
#[derive(Debug, Clone)]
pub struct Builder {
    id: u32,
    func: Function,
    values: Vec<(String, ValueType)>,
    env: TypeEnv,
    consts: HashMap<String, Literal>,
    default_conv: Option<ConvParams>,
    default_keep_dims: Option<Value>,
    weights: Weights,
    next_fresh: usize,
    error: Option<BuildError>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder for `func main<ios18>`.
    pub fn new() -> Builder {
        Builder::with_function("main", "ios18")
    }

    /// A builder for `func <name><<opset>>`.
    pub fn with_function(name: &str, opset: &str) -> Builder {
        Builder {
            id: NEXT_BUILDER_ID.fetch_add(1, Ordering::Relaxed),
            func: Function {
                name: name.to_string(),
                opset: opset.to_string(),
                inputs: Vec::new(),
                body: Vec::new(),
                outputs: Vec::new(),
            },
            values: Vec::new(),
            env: TypeEnv::new(),
            consts: HashMap::new(),
            default_conv: None,
            default_keep_dims: None,
            weights: Vec::new(),
            next_fresh: 0,
            error: None,
        }
    }

    /// The first error recorded so far, if any.
    pub fn error(&self) -> Option<&BuildError> {
        self.error.as_ref()
    }

    fn fail(&mut self, e: BuildError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn slot(&self, v: Value) -> Option<&(String, ValueType)> {
        if v.builder == self.id {
            self.values.get(v.index)
        } else {
            None
        }
    }

    /// Name of a value (empty for a foreign handle, which is recorded as an error when used).
    pub fn name(&self, v: Value) -> &str {
        self.slot(v).map_or("", |(n, _)| n.as_str())
    }

    /// Type of a value (`None` for a foreign handle).
    pub fn value_type(&self, v: Value) -> Option<&ValueType> {
        self.slot(v).map(|(_, t)| t)
    }

    /// Shape of a value (`[]` for scalars and foreign handles).
    pub fn shape(&self, v: Value) -> &[usize] {
        self.value_type(v).map_or(&[], |t| t.shape())
    }

    /// A fresh name `<stem>_<n>` for an intermediate value: one counter per builder,
    /// counting up across all stems (`mul_1`, `c_2`, `mul_3`), skipping names already defined.
    pub fn fresh(&mut self, stem: &str) -> String {
        loop {
            self.next_fresh += 1;
            let name = format!("{stem}_{}", self.next_fresh);
            if !self.env.contains_key(&name) {
                return name;
            }
        }
    }

    fn var(&mut self, v: Value) -> Arg {
        if self.slot(v).is_none() {
            self.fail(BuildError::ForeignValue(v.index));
        }
        Arg::Var(self.name(v).to_string())
    }

    fn define(&mut self, name: &str, ty: ValueType) -> Value {
        if !is_identifier(name) {
            self.fail(BuildError::InvalidName(name.to_string()));
        }
        if self.env.contains_key(name) {
            self.fail(BuildError::DuplicateName(name.to_string()));
        }
        self.env.insert(name.to_string(), ty.clone());
        self.values.push((name.to_string(), ty));
        Value {
            builder: self.id,
            index: self.values.len() - 1,
        }
    }

    /// Declare a function input `tensor<dtype, shape> name`.
    pub fn input(&mut self, name: &str, dtype: DType, shape: impl Into<Vec<usize>>) -> Value {
        let ty = TensorType::new(dtype, shape);
        self.func.inputs.push((name.to_string(), ty.clone()));
        self.define(name, ValueType::Tensor(ty))
    }

    /// Append a statement with inferred result type. Works for any op the shape inference
    /// knows; the typed methods below are thin wrappers.
    pub fn op(
        &mut self,
        names: impl Into<Names>,
        op: &str,
        args: Vec<(&str, Arg)>,
        attrs: Vec<(&str, Literal)>,
    ) -> Value {
        let names = names.into();
        let mut s = Statement {
            out_name: names.out.clone(),
            out_type: ValueType::Scalar(DType::Fp16),
            op: op.to_string(),
            args: args.into_iter().map(|(k, a)| (k.to_string(), a)).collect(),
            op_name: names.op,
            attrs: attrs.into_iter().map(|(k, l)| (k.to_string(), l)).collect(),
        };
        let index = self.func.body.len();
        match infer_statement(index, &s, &self.env, &self.consts) {
            Ok(t) => s.out_type = t,
            Err(e) => self.fail(e.into()),
        }
        if let Some(lit) = s.const_value() {
            self.consts.insert(s.out_name.clone(), lit.clone());
        }
        let v = self.define(&s.out_name, s.out_type.clone());
        self.func.body.push(s);
        v
    }

    fn op_vars(&mut self, names: impl Into<Names>, op: &str, args: &[(&str, Value)]) -> Value {
        let args = args.iter().map(|&(k, v)| (k, self.var(v))).collect();
        self.op(names, op, args, Vec::new())
    }

    // ----- constants -------------------------------------------------------------------

    /// `const()[name=..., val=<literal>]`.
    pub fn constant(&mut self, names: impl Into<Names>, val: Literal) -> Value {
        self.op(names, "const", Vec::new(), vec![("val", val)])
    }

    /// `fp16 name = const(... val=fp16(v))`, printed in the shortest form (`-0.5`, `1.0`).
    pub fn fp16(&mut self, names: impl Into<Names>, v: f64) -> Value {
        self.constant(names, Literal::float(DType::Fp16, v))
    }

    /// fp16 scalar rounded and printed like C `%f` (`1/768` → `0.001302`), as the legacy
    /// emitters do.
    pub fn fp16_f(&mut self, names: impl Into<Names>, v: f64) -> Value {
        self.constant(names, Literal::float_fixed(DType::Fp16, v, 6))
    }

    pub fn int32(&mut self, names: impl Into<Names>, v: i32) -> Value {
        self.constant(names, Literal::int32(v))
    }

    pub fn bool(&mut self, names: impl Into<Names>, v: bool) -> Value {
        self.constant(names, Literal::Bool(v))
    }

    pub fn string(&mut self, names: impl Into<Names>, s: &str) -> Value {
        self.constant(names, Literal::Str(s.to_string()))
    }

    /// `tensor<int32, [n]>([...])` const (axes, shapes, perms, slice bounds).
    pub fn int32s(&mut self, names: impl Into<Names>, v: &[i32]) -> Value {
        self.constant(names, Literal::int32_tensor(v))
    }

    /// fp16 weight `[shape]` from `path` at offset 64 (a single-tensor blob, §4.1).
    pub fn weight(
        &mut self,
        names: impl Into<Names>,
        shape: impl Into<Vec<usize>>,
        path: &str,
    ) -> Value {
        self.weight_at(names, shape, path, 64)
    }

    /// fp16 weight from chunk metadata `offset` of a (multi-chunk) blob (§4.2).
    pub fn weight_at(
        &mut self,
        names: impl Into<Names>,
        shape: impl Into<Vec<usize>>,
        path: &str,
        offset: u64,
    ) -> Value {
        let val = Literal::Blob {
            ty: TensorType::new(DType::Fp16, shape),
            blob: BlobRef {
                path: path.to_string(),
                offset,
            },
        };
        self.constant(names, val)
    }

    /// fp16 weight `values` (row-major in `shape`) stored as its own single-tensor blob at
    /// `path` (e.g. `@model_path/weights/wq.bin`): registers the blob bytes (see
    /// [`Builder::weights`], [`Builder::finish_with_weights`]) and declares its BLOBFILE
    /// const at offset 64 (§4.1). Values are rounded to fp16.
    pub fn weight_data(
        &mut self,
        names: impl Into<Names>,
        shape: impl Into<Vec<usize>>,
        path: &str,
        values: &[f32],
    ) -> Value {
        let names = names.into();
        let shape = shape.into();
        let expected = shape.iter().product::<usize>();
        if values.len() != expected {
            self.fail(BuildError::WeightSize {
                name: names.out.clone(),
                expected,
                got: values.len(),
            });
        } else if self.weights.iter().any(|(p, _)| p == path) {
            self.fail(BuildError::DuplicateBlob(path.to_string()));
        } else {
            match crate::blob::write_blob(values) {
                Ok(bytes) => self.weights.push((path.to_string(), bytes)),
                Err(error) => self.fail(BuildError::Blob {
                    path: path.to_string(),
                    error,
                }),
            }
        }
        self.weight(names, shape, path)
    }

    /// The blobs registered with [`Builder::weight_data`] so far, in declaration order.
    pub fn weights(&self) -> &[(String, Vec<u8>)] {
        &self.weights
    }

    // ----- conv / matmul ---------------------------------------------------------------

    /// Declare the five conv consts with the given names, in the order the fixtures use
    /// (pad_type "valid", strides `[1,1]`, pad `[0,0,0,0]`, dilations `[1,1]`, groups).
    pub fn conv_params(&mut self, names: [&str; 5], groups: i32) -> ConvParams {
        ConvParams {
            pad_type: self.string(names[0], "valid"),
            strides: self.int32s(names[1], &[1, 1]),
            pad: self.int32s(names[2], &[0, 0, 0, 0]),
            dilations: self.int32s(names[3], &[1, 1]),
            groups: self.int32(names[4], groups),
        }
    }

    /// The transformer generators' shared conv consts `pt, st, pd, dl, gr` (groups 1);
    /// also becomes the default for [`Builder::conv`].
    pub fn default_conv_params(&mut self) -> ConvParams {
        if let Some(p) = self.default_conv {
            return p;
        }
        let p = self.conv_params(["pt", "st", "pd", "dl", "gr"], 1);
        self.default_conv = Some(p);
        p
    }

    /// 1×1 conv `weight · x` with the default consts (created on first use).
    pub fn conv(&mut self, names: impl Into<Names>, x: Value, weight: Value) -> Value {
        let p = self.default_conv_params();
        self.conv_with(names, x, weight, &p)
    }

    /// conv with explicit consts (arguments in the fixtures' alphabetical order).
    pub fn conv_with(
        &mut self,
        names: impl Into<Names>,
        x: Value,
        weight: Value,
        p: &ConvParams,
    ) -> Value {
        self.op_vars(
            names,
            "conv",
            &[
                ("dilations", p.dilations),
                ("groups", p.groups),
                ("pad", p.pad),
                ("pad_type", p.pad_type),
                ("strides", p.strides),
                ("weight", weight),
                ("x", x),
            ],
        )
    }

    /// `matmul(transpose_x=tx, transpose_y=ty, x, y)` with bool const flags.
    pub fn matmul(
        &mut self,
        names: impl Into<Names>,
        x: Value,
        y: Value,
        transpose_x: Value,
        transpose_y: Value,
    ) -> Value {
        self.op_vars(
            names,
            "matmul",
            &[
                ("transpose_x", transpose_x),
                ("transpose_y", transpose_y),
                ("x", x),
                ("y", y),
            ],
        )
    }

    /// matmul creating its flag consts `<out>_tx`, `<out>_ty`.
    pub fn matmul_t(
        &mut self,
        names: impl Into<Names>,
        x: Value,
        y: Value,
        transpose_x: bool,
        transpose_y: bool,
    ) -> Value {
        let names = names.into();
        let tx = self.bool(format!("{}_tx", names.out), transpose_x);
        let ty = self.bool(format!("{}_ty", names.out), transpose_y);
        self.matmul(names, x, y, tx, ty)
    }

    // ----- elementwise -----------------------------------------------------------------

    fn binary(&mut self, names: impl Into<Names>, op: &str, x: Value, y: Value) -> Value {
        self.op_vars(names, op, &[("x", x), ("y", y)])
    }

    pub fn add(&mut self, names: impl Into<Names>, x: Value, y: Value) -> Value {
        self.binary(names, "add", x, y)
    }
    pub fn sub(&mut self, names: impl Into<Names>, x: Value, y: Value) -> Value {
        self.binary(names, "sub", x, y)
    }
    pub fn mul(&mut self, names: impl Into<Names>, x: Value, y: Value) -> Value {
        self.binary(names, "mul", x, y)
    }
    pub fn real_div(&mut self, names: impl Into<Names>, x: Value, y: Value) -> Value {
        self.binary(names, "real_div", x, y)
    }
    pub fn pow(&mut self, names: impl Into<Names>, x: Value, y: Value) -> Value {
        self.binary(names, "pow", x, y)
    }
    pub fn maximum(&mut self, names: impl Into<Names>, x: Value, y: Value) -> Value {
        self.binary(names, "maximum", x, y)
    }
    pub fn minimum(&mut self, names: impl Into<Names>, x: Value, y: Value) -> Value {
        self.binary(names, "minimum", x, y)
    }

    /// `select(cond, a, b)`: `a` where `cond`, else `b` (broadcasting).
    pub fn select(&mut self, names: impl Into<Names>, cond: Value, a: Value, b: Value) -> Value {
        self.op_vars(names, "select", &[("a", a), ("b", b), ("cond", cond)])
    }

    fn unary(&mut self, names: impl Into<Names>, op: &str, x: Value) -> Value {
        self.op_vars(names, op, &[("x", x)])
    }

    pub fn sigmoid(&mut self, names: impl Into<Names>, x: Value) -> Value {
        self.unary(names, "sigmoid", x)
    }
    pub fn tanh(&mut self, names: impl Into<Names>, x: Value) -> Value {
        self.unary(names, "tanh", x)
    }
    pub fn relu(&mut self, names: impl Into<Names>, x: Value) -> Value {
        self.unary(names, "relu", x)
    }
    pub fn exp(&mut self, names: impl Into<Names>, x: Value) -> Value {
        self.unary(names, "exp", x)
    }
    pub fn sqrt(&mut self, names: impl Into<Names>, x: Value) -> Value {
        self.unary(names, "sqrt", x)
    }
    pub fn identity(&mut self, names: impl Into<Names>, x: Value) -> Value {
        self.unary(names, "identity", x)
    }

    // ----- reductions / shape ops ------------------------------------------------------

    /// `softmax(axis=AX, x)`.
    pub fn softmax(&mut self, names: impl Into<Names>, x: Value, axis: Value) -> Value {
        self.op_vars(names, "softmax", &[("axis", axis), ("x", x)])
    }

    /// `reduce_sum(x, axes=AXES, keep_dims=KD)`.
    pub fn reduce_sum(
        &mut self,
        names: impl Into<Names>,
        x: Value,
        axes: Value,
        keep_dims: Value,
    ) -> Value {
        self.op_vars(
            names,
            "reduce_sum",
            &[("x", x), ("axes", axes), ("keep_dims", keep_dims)],
        )
    }

    /// The shared `bool kd = true` const the `*_keep` reductions use (created on first
    /// use; call it early to place it with the other shared consts).
    pub fn default_keep_dims(&mut self) -> Value {
        if let Some(v) = self.default_keep_dims {
            return v;
        }
        let v = self.bool("kd", true);
        self.default_keep_dims = Some(v);
        v
    }

    /// `reduce_sum(x, axes=AXES, keep_dims=kd)` with the default `keep_dims = true` const.
    pub fn reduce_sum_keep(&mut self, names: impl Into<Names>, x: Value, axes: Value) -> Value {
        let kd = self.default_keep_dims();
        self.reduce_sum(names, x, axes, kd)
    }

    /// `reduce_max(x, axes=AXES, keep_dims=kd)` with the default `keep_dims = true` const.
    pub fn reduce_max_keep(&mut self, names: impl Into<Names>, x: Value, axes: Value) -> Value {
        let kd = self.default_keep_dims();
        self.reduce_max(names, x, axes, kd)
    }

    /// `reduce_max(x, axes=AXES, keep_dims=KD)`.
    pub fn reduce_max(
        &mut self,
        names: impl Into<Names>,
        x: Value,
        axes: Value,
        keep_dims: Value,
    ) -> Value {
        self.op_vars(
            names,
            "reduce_max",
            &[("x", x), ("axes", axes), ("keep_dims", keep_dims)],
        )
    }

    /// `reshape(shape=SH, x)`.
    pub fn reshape(&mut self, names: impl Into<Names>, x: Value, shape: Value) -> Value {
        self.op_vars(names, "reshape", &[("shape", shape), ("x", x)])
    }

    /// `transpose(perm=PM, x)`.
    pub fn transpose(&mut self, names: impl Into<Names>, x: Value, perm: Value) -> Value {
        self.op_vars(names, "transpose", &[("perm", perm), ("x", x)])
    }

    /// `cast(dtype=DT, x)` with `DT` a string const (`"fp16"`).
    pub fn cast(&mut self, names: impl Into<Names>, x: Value, dtype: Value) -> Value {
        self.op_vars(names, "cast", &[("dtype", dtype), ("x", x)])
    }

    /// `slice_by_size(x, begin=B, size=SZ)`.
    pub fn slice_by_size(
        &mut self,
        names: impl Into<Names>,
        x: Value,
        begin: Value,
        size: Value,
    ) -> Value {
        self.op_vars(
            names,
            "slice_by_size",
            &[("x", x), ("begin", begin), ("size", size)],
        )
    }

    /// `slice_by_index` with all masks given as bool-tensor consts.
    #[allow(clippy::too_many_arguments)]
    pub fn slice_by_index(
        &mut self,
        names: impl Into<Names>,
        x: Value,
        begin: Value,
        end: Value,
        stride: Value,
        begin_mask: Value,
        end_mask: Value,
        squeeze_mask: Value,
    ) -> Value {
        self.op_vars(
            names,
            "slice_by_index",
            &[
                ("begin", begin),
                ("begin_mask", begin_mask),
                ("end", end),
                ("end_mask", end_mask),
                ("squeeze_mask", squeeze_mask),
                ("stride", stride),
                ("x", x),
            ],
        )
    }

    /// `concat(axis=CAX, interleave=CID, values=(a,b,...))`.
    pub fn concat(
        &mut self,
        names: impl Into<Names>,
        values: &[Value],
        axis: Value,
        interleave: Value,
    ) -> Value {
        let axis = self.var(axis);
        let interleave = self.var(interleave);
        let list = Arg::List(values.iter().map(|&v| self.var(v)).collect());
        self.op(
            names,
            "concat",
            vec![("axis", axis), ("interleave", interleave), ("values", list)],
            Vec::new(),
        )
    }

    /// `expand_dims(axes=AX, x)`.
    pub fn expand_dims(&mut self, names: impl Into<Names>, x: Value, axes: Value) -> Value {
        self.op_vars(names, "expand_dims", &[("axes", axes), ("x", x)])
    }

    /// `squeeze(axes=AX, x)`.
    pub fn squeeze(&mut self, names: impl Into<Names>, x: Value, axes: Value) -> Value {
        self.op_vars(names, "squeeze", &[("axes", axes), ("x", x)])
    }

    // ----- finishing -------------------------------------------------------------------

    /// Append `v` to the function's return tuple.
    pub fn output(&mut self, v: Value) {
        let Arg::Var(name) = self.var(v) else {
            return;
        };
        self.func.outputs.push(name);
    }

    /// The function built so far (even if an error was recorded).
    pub fn function(&self) -> &Function {
        &self.func
    }

    /// The finished function, or the first error.
    pub fn finish_function(self) -> Result<Function, BuildError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.func.outputs.is_empty() {
            return Err(BuildError::NoOutputs);
        }
        Ok(self.func)
    }

    /// A `program(1.3)` with the default buildInfo holding the built function.
    pub fn finish(self) -> Result<Program, BuildError> {
        Ok(Program::with_function(self.finish_function()?))
    }

    /// [`Builder::finish`] plus the blobs registered with [`Builder::weight_data`].
    pub fn finish_with_weights(mut self) -> Result<(Program, Weights), BuildError> {
        let weights = std::mem::take(&mut self.weights);
        Ok((self.finish()?, weights))
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: the names the parser accepts for values.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
