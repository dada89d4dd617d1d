//! Type and shape inference for every op of the op table ([`crate::op::Op`]): the single
//! source of result types for the validator, the builder and the `ane` simulator. Every
//! error names the op, its result and its statement index.
//!
//! Parameters that the dialect requires to be `const` (axes, perm, shapes, conv settings,
//! matmul flags) are resolved from `const` statements or inline literals. [`OpContext`]
//! exposes that resolution (and the resolved axes, perms and slice windows) to executors,
//! so they read parameter values without re-deriving any shape rule.

use crate::ast::*;
use crate::op::Op;
use std::collections::HashMap;

/// Type of every named value (inputs and statement results) of a function.
pub type TypeEnv = HashMap<String, ValueType>;

/// A shape/type error at one statement (or at the function's signature/outputs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ShapeError {
    /// Statement index in the body; `None` for signature/output errors.
    pub index: Option<usize>,
    /// Op type (`conv`), or `"func"` for signature/output errors.
    pub op: String,
    /// Result name of the statement (or the offending input/output name).
    pub out_name: String,
    pub message: String,
}

impl ShapeError {
    fn describe(&self) -> String {
        match self.index {
            Some(i) => format!(
                "op `{}` producing `{}` (statement {}): {}",
                self.op, self.out_name, i, self.message
            ),
            None => format!("{} `{}`: {}", self.op, self.out_name, self.message),
        }
    }
}

/// Every op the inference knows, by name (derived from [`Op::ALL`]; the validator reports
/// anything else as unknown).
pub fn known_ops() -> impl Iterator<Item = &'static str> {
    Op::ALL.iter().map(|op| op.name())
}

/// Modes of `gelu`.
pub const GELU_MODES: &[&str] = &["EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION"];

/// Infer the type of every value and check it against the declared types.
///
/// Checks: inputs are unique, every name is defined before use and defined once, every
/// statement's declared type equals the inferred type, every output exists.
pub fn infer_shapes(f: &Function) -> Result<TypeEnv, ShapeError> {
    infer_shapes_with(f, &InferOptions::default())
}

/// Leniencies of [`infer_shapes_with`]; the default is strict ([`infer_shapes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InferOptions {
    /// Accept a `const` that re-declares an earlier `const` of the same name with the
    /// identical literal (some generator snapshots do; the validator still reports it as
    /// `duplicate-name`). Executors that only need the value can run such programs.
    pub allow_repeated_consts: bool,
}

/// [`infer_shapes`] with [`InferOptions`].
pub fn infer_shapes_with(f: &Function, options: &InferOptions) -> Result<TypeEnv, ShapeError> {
    let mut env = TypeEnv::new();
    for (name, ty) in &f.inputs {
        if ty.shape.len() > MAX_RANK {
            return Err(sig_error(
                name,
                format!("input rank {} > {MAX_RANK}", ty.shape.len()),
            ));
        }
        if env
            .insert(name.clone(), ValueType::Tensor(ty.clone()))
            .is_some()
        {
            return Err(sig_error(name, "input declared twice".to_string()));
        }
    }
    let mut consts: HashMap<String, Literal> = HashMap::new();
    for (index, s) in f.body.iter().enumerate() {
        let inferred = infer_statement(index, s, &env, &consts)?;
        if inferred != s.out_type {
            return Err(statement_error(
                index,
                s,
                format!(
                    "declared type {} but the op produces {}",
                    s.out_type, inferred
                ),
            ));
        }
        if env.contains_key(&s.out_name) {
            let repeated_const = options.allow_repeated_consts
                && s.const_value().is_some()
                && s.const_value() == consts.get(&s.out_name);
            if repeated_const {
                continue;
            }
            return Err(statement_error(
                index,
                s,
                format!("`{}` is already defined", s.out_name),
            ));
        }
        env.insert(s.out_name.clone(), inferred);
        if let Some(lit) = s.const_value() {
            consts.insert(s.out_name.clone(), lit.clone());
        }
    }
    for out in &f.outputs {
        if !env.contains_key(out) {
            return Err(ShapeError {
                index: None,
                op: "output".to_string(),
                out_name: out.clone(),
                message: "returned but never defined".to_string(),
            });
        }
    }
    Ok(env)
}

/// Infer the result type of one statement given the types of everything defined before
/// it (`env`) and the literals of the `const`s among them (`consts`). `index` is only used
/// in error messages.
pub fn infer_statement(
    index: usize,
    s: &Statement,
    env: &TypeEnv,
    consts: &HashMap<String, Literal>,
) -> Result<ValueType, ShapeError> {
    OpContext::new(index, s, env, consts).infer()
}

fn statement_error(index: usize, s: &Statement, message: String) -> ShapeError {
    ShapeError {
        index: Some(index),
        op: s.op.clone(),
        out_name: s.out_name.clone(),
        message,
    }
}

fn sig_error(name: &str, message: String) -> ShapeError {
    ShapeError {
        index: None,
        op: "input".to_string(),
        out_name: name.to_string(),
        message,
    }
}

/// NumPy broadcast of two shapes (right-aligned; dims equal or 1).
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = dim_from_right(a, rank - 1 - i);
        let db = dim_from_right(b, rank - 1 - i);
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

fn dim_from_right(shape: &[usize], k: usize) -> usize {
    if k < shape.len() {
        shape[shape.len() - 1 - k]
    } else {
        1
    }
}

/// Normalise a possibly negative axis against `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// The window a slice reads: per input axis, the first index, the step and the number of
/// elements taken. Axes with `squeeze` set take one element and are dropped from the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceWindow {
    pub begin: Vec<i64>,
    pub stride: Vec<i64>,
    pub counts: Vec<usize>,
    pub squeeze: Vec<bool>,
}

/// One statement in its context (types of the values before it, literals of the consts
/// before it): infers its type and resolves its `const` parameters. Every failure is a
/// [`ShapeError`] naming the statement.
pub struct OpContext<'a> {
    index: usize,
    s: &'a Statement,
    env: &'a TypeEnv,
    consts: &'a HashMap<String, Literal>,
}

impl<'a> OpContext<'a> {
    /// Context of statement `s` (at body `index`, used in errors).
    pub fn new(
        index: usize,
        s: &'a Statement,
        env: &'a TypeEnv,
        consts: &'a HashMap<String, Literal>,
    ) -> Self {
        OpContext {
            index,
            s,
            env,
            consts,
        }
    }

    /// An error about this statement.
    pub fn err(&self, message: String) -> ShapeError {
        statement_error(self.index, self.s, message)
    }

    fn arg(&self, key: &str) -> Result<&'a Arg, ShapeError> {
        self.s
            .arg(key)
            .ok_or_else(|| self.err(format!("missing argument `{key}`")))
    }

    /// Type of a value argument (variable or inline literal).
    pub fn arg_type(&self, a: &Arg, key: &str) -> Result<ValueType, ShapeError> {
        match a {
            Arg::Var(v) => self
                .env
                .get(v)
                .cloned()
                .ok_or_else(|| self.err(format!("argument `{key}` uses undefined value `{v}`"))),
            Arg::Literal(l) => Ok(l.value_type()),
            Arg::List(_) => Err(self.err(format!("argument `{key}` must be a value, not a tuple"))),
        }
    }

    pub fn typed(&self, key: &str) -> Result<ValueType, ShapeError> {
        self.arg_type(self.arg(key)?, key)
    }

    pub fn tensor(&self, key: &str) -> Result<TensorType, ShapeError> {
        match self.typed(key)? {
            ValueType::Tensor(t) => Ok(t),
            ValueType::Scalar(d) => {
                Err(self.err(format!("argument `{key}` must be a tensor, got scalar {d}")))
            }
        }
    }

    /// Literal behind a parameter argument (a `const` name or an inline literal).
    pub fn const_arg(&self, key: &str) -> Result<Option<&'a Literal>, ShapeError> {
        match self.s.arg(key) {
            None => Ok(None),
            Some(Arg::Literal(l)) => Ok(Some(l)),
            Some(Arg::Var(v)) => match self.consts.get(v.as_str()) {
                Some(l) => Ok(Some(l)),
                None if self.env.contains_key(v) => Err(self.err(format!(
                    "argument `{key}` must be a const, but `{v}` is computed"
                ))),
                None => Err(self.err(format!("argument `{key}` uses undefined value `{v}`"))),
            },
            Some(Arg::List(_)) => Err(self.err(format!("argument `{key}` must not be a tuple"))),
        }
    }

    pub fn const_ints(&self, key: &str) -> Result<Option<Vec<i64>>, ShapeError> {
        match self.const_arg(key)? {
            None => Ok(None),
            Some(l) => l
                .as_int_vec()
                .map(Some)
                .ok_or_else(|| self.err(format!("argument `{key}` must be an integer const"))),
        }
    }

    fn req_ints(&self, key: &str) -> Result<Vec<i64>, ShapeError> {
        self.const_ints(key)?
            .ok_or_else(|| self.err(format!("missing argument `{key}`")))
    }

    pub fn const_int(&self, key: &str) -> Result<Option<i64>, ShapeError> {
        match self.const_arg(key)? {
            None => Ok(None),
            Some(Literal::Int { value, .. }) => Ok(Some(*value)),
            Some(_) => Err(self.err(format!("argument `{key}` must be an integer scalar const"))),
        }
    }

    pub fn const_bool(&self, key: &str) -> Result<Option<bool>, ShapeError> {
        match self.const_arg(key)? {
            None => Ok(None),
            Some(Literal::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.err(format!("argument `{key}` must be a bool const"))),
        }
    }

    pub fn const_bools(&self, key: &str) -> Result<Option<Vec<bool>>, ShapeError> {
        match self.const_arg(key)? {
            None => Ok(None),
            Some(Literal::Tensor {
                data: TensorData::Bool(v),
                ..
            }) => Ok(Some(v.clone())),
            Some(Literal::Bool(b)) => Ok(Some(vec![*b])),
            Some(_) => Err(self.err(format!("argument `{key}` must be a bool tensor const"))),
        }
    }

    pub fn const_str(&self, key: &str) -> Result<Option<&'a str>, ShapeError> {
        match self.const_arg(key)? {
            None => Ok(None),
            Some(Literal::Str(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(self.err(format!("argument `{key}` must be a string const"))),
        }
    }

    fn axis(&self, axis: i64, rank: usize) -> Result<usize, ShapeError> {
        normalize_axis(axis, rank)
            .ok_or_else(|| self.err(format!("axis {axis} out of range for rank {rank}")))
    }

    /// A float scalar parameter (float or int const).
    pub fn const_float(&self, key: &str) -> Result<Option<f64>, ShapeError> {
        match self.const_arg(key)? {
            None => Ok(None),
            Some(l @ (Literal::Float { .. } | Literal::Int { .. })) => Ok(l.as_f64()),
            Some(_) => Err(self.err(format!("argument `{key}` must be a numeric scalar const"))),
        }
    }

    /// The statement's op in the table; an error for an unknown op.
    pub fn op(&self) -> Result<Op, ShapeError> {
        self.s
            .known_op()
            .ok_or_else(|| self.err("unknown op".to_string()))
    }

    fn infer(&self) -> Result<ValueType, ShapeError> {
        use Op::*;
        match self.op()? {
            Const => self.infer_const(),
            Conv => self.infer_conv(),
            Matmul => self.infer_matmul(),
            Linear => self.infer_linear(),
            Add | Sub | Mul | RealDiv | FloorDiv | Mod | Pow | Maximum | Minimum => {
                self.infer_binary(false)
            }
            Equal | NotEqual | Less | LessEqual | Greater | GreaterEqual => self.infer_binary(true),
            LogicalAnd | LogicalOr | LogicalXor => self.infer_logical(&["x", "y"]),
            LogicalNot => self.infer_logical(&["x"]),
            Select => self.infer_select(),
            Identity | Abs | Ceil | Floor | Round | Sign | Sin | Cos | Tan | Tanh | Exp | Exp2
            | Sqrt | Square | Sigmoid | Relu | Relu6 | Silu | Softplus | Erf => self.typed("x"),
            Log | Rsqrt | Inverse => self.infer_unary(&["epsilon"], &[]),
            LeakyRelu => self.infer_unary(&["alpha"], &[]),
            Clip => self.infer_unary(&[], &["alpha", "beta"]),
            Gelu => self.infer_gelu(),
            Softmax => {
                self.softmax_axis()?;
                Ok(ValueType::Tensor(self.tensor("x")?))
            }
            LayerNorm => self.infer_layer_norm(),
            ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceSumSquare
            | ReduceL2Norm | ReduceLogSumExp => self.infer_reduce(),
            Reshape => self.infer_reshape(),
            Transpose => self.infer_transpose(),
            Cast => self.infer_cast(),
            SliceBySize | SliceByIndex => self.infer_slice(),
            Concat => self.infer_concat(),
            ExpandDims => self.infer_expand_dims(),
            Squeeze => self.infer_squeeze(),
        }
    }

    /// Pointwise op with float parameters (`optional` may be absent, `required` may not):
    /// the result has the type of `x`.
    fn infer_unary(&self, optional: &[&str], required: &[&str]) -> Result<ValueType, ShapeError> {
        let x = self.typed("x")?;
        for key in optional {
            self.const_float(key)?;
        }
        for key in required {
            self.const_float(key)?
                .ok_or_else(|| self.err(format!("missing argument `{key}`")))?;
        }
        Ok(x)
    }

    fn infer_gelu(&self) -> Result<ValueType, ShapeError> {
        let x = self.typed("x")?;
        if let Some(mode) = self.const_str("mode")? {
            if !GELU_MODES.contains(&mode) {
                return Err(self.err(format!(
                    "gelu mode `{mode}` (expected one of {})",
                    GELU_MODES.join(", ")
                )));
            }
        }
        Ok(x)
    }

    /// logical_and/or/xor (`x`, `y`) and logical_not (`x`): bool operands, bool result.
    fn infer_logical(&self, keys: &[&str]) -> Result<ValueType, ShapeError> {
        let vals = keys
            .iter()
            .map(|k| self.typed(k))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some((k, v)) = keys
            .iter()
            .zip(&vals)
            .find(|(_, v)| v.dtype() != DType::Bool)
        {
            return Err(self.err(format!("`{k}` must be bool, got {}", v.dtype())));
        }
        self.broadcast_result(DType::Bool, &vals.iter().collect::<Vec<_>>())
    }

    /// linear: x `[..., in]`, weight `[out, in]`, optional bias `[out]` → `[..., out]`.
    fn infer_linear(&self) -> Result<ValueType, ShapeError> {
        let x = self.tensor("x")?;
        let w = self.tensor("weight")?;
        if x.dtype != w.dtype {
            return Err(self.err(format!("x is {} but weight is {}", x.dtype, w.dtype)));
        }
        let fits = w.shape.len() == 2 && x.shape.last() == Some(&w.shape[1]);
        if !fits {
            return Err(self.err(format!(
                "weight {:?} must be [out, in] with in = the last axis of x {:?}",
                w.shape, x.shape
            )));
        }
        let out = w.shape[0];
        if let Some(b) = self.s.arg("bias") {
            let bt = self.arg_type(b, "bias")?;
            if bt.shape() != [out] || bt.dtype() != x.dtype {
                return Err(self.err(format!("bias {bt} must be {}[{out}]", x.dtype)));
            }
        }
        let mut shape = x.shape;
        if let Some(last) = shape.last_mut() {
            *last = out;
        }
        Ok(ValueType::Tensor(TensorType::new(x.dtype, shape)))
    }

    /// The axis `softmax` normalises along (default −1), normalised.
    pub fn softmax_axis(&self) -> Result<usize, ShapeError> {
        let x = self.tensor("x")?;
        let axis = self.const_int("axis")?.unwrap_or(-1);
        self.axis(axis, x.shape.len())
    }

    /// The axes `layer_norm` normalises over (default: the last), normalised and sorted.
    pub fn layer_norm_axes(&self) -> Result<Vec<usize>, ShapeError> {
        let x = self.tensor("x")?;
        let rank = x.shape.len();
        let axes = self.const_ints("axes")?.unwrap_or(vec![rank as i64 - 1]);
        self.distinct_axes(&axes, rank)
    }

    /// The `epsilon` of `layer_norm` (default 1e-5).
    pub fn layer_norm_epsilon(&self) -> Result<f64, ShapeError> {
        Ok(self.const_float("epsilon")?.unwrap_or(1e-5))
    }

    /// layer_norm: result = x; `gamma`/`beta` (optional) have the shape of the normalised axes.
    fn infer_layer_norm(&self) -> Result<ValueType, ShapeError> {
        let x = self.tensor("x")?;
        let axes = self.layer_norm_axes()?;
        self.layer_norm_epsilon()?;
        let norm: Vec<usize> = axes.iter().map(|&a| x.shape[a]).collect();
        for key in ["gamma", "beta"] {
            if let Some(a) = self.s.arg(key) {
                let t = self.arg_type(a, key)?;
                if t.shape() != norm.as_slice() || t.dtype() != x.dtype {
                    return Err(self.err(format!(
                        "{key} {t} must be {}{norm:?} (the normalised axes {axes:?})",
                        x.dtype
                    )));
                }
            }
        }
        Ok(ValueType::Tensor(x))
    }

    /// Normalised, sorted axes; repeated axes are an error.
    fn distinct_axes(&self, axes: &[i64], rank: usize) -> Result<Vec<usize>, ShapeError> {
        let mut out: Vec<usize> = axes
            .iter()
            .map(|&a| self.axis(a, rank))
            .collect::<Result<_, _>>()?;
        out.sort_unstable();
        out.dedup();
        if out.len() != axes.len() {
            return Err(self.err(format!("repeated axes {axes:?}")));
        }
        Ok(out)
    }

    /// The axes a `reduce_*` reduces (default: all), normalised and sorted.
    pub fn reduce_axes(&self) -> Result<Vec<usize>, ShapeError> {
        let rank = self.tensor("x")?.shape.len();
        match self.const_ints("axes")? {
            Some(a) => self.distinct_axes(&a, rank),
            None => Ok((0..rank).collect()),
        }
    }

    /// The `transpose` permutation, normalised and checked.
    pub fn transpose_perm(&self) -> Result<Vec<usize>, ShapeError> {
        let rank = self.tensor("x")?.shape.len();
        let perm = self.req_ints("perm")?;
        if perm.len() != rank {
            return Err(self.err(format!("perm {perm:?} has wrong length for rank {rank}")));
        }
        let mut seen = vec![false; rank];
        perm.iter()
            .map(|&p| {
                let a = self.axis(p, rank)?;
                if std::mem::replace(&mut seen[a], true) {
                    return Err(self.err(format!("perm {perm:?} is not a permutation")));
                }
                Ok(a)
            })
            .collect()
    }

    /// The `concat` axis (normalised) and `interleave` flag.
    pub fn concat_axis(&self) -> Result<(usize, bool), ShapeError> {
        let first = self.concat_values()?[0].clone();
        let axis = self
            .const_int("axis")?
            .ok_or_else(|| self.err("missing argument `axis`".to_string()))?;
        let interleave = self.const_bool("interleave")?.unwrap_or(false);
        Ok((self.axis(axis, first.shape.len())?, interleave))
    }

    fn concat_values(&self) -> Result<Vec<TensorType>, ShapeError> {
        let values = match self.arg("values")? {
            Arg::List(items) if !items.is_empty() => items,
            _ => return Err(self.err("`values` must be a non-empty tuple".to_string())),
        };
        values
            .iter()
            .map(|v| match self.arg_type(v, "values")? {
                ValueType::Tensor(t) => Ok(t),
                ValueType::Scalar(_) => Err(self.err("concat of a scalar".to_string())),
            })
            .collect()
    }

    fn infer_const(&self) -> Result<ValueType, ShapeError> {
        if !self.s.args.is_empty() {
            return Err(self.err("const takes no arguments".to_string()));
        }
        let lit = self
            .s
            .attr("val")
            .ok_or_else(|| self.err("const without a `val` attribute".to_string()))?;
        Ok(lit.value_type())
    }

    /// conv: x `[N, Cin, H, W]`, weight `[Cout, Cin/groups, kH, kW]` → `[N, Cout, H', W']`.
    fn infer_conv(&self) -> Result<ValueType, ShapeError> {
        let x = self.tensor("x")?;
        let w = self.tensor("weight")?;
        if x.shape.len() != 4 || w.shape.len() != 4 {
            return Err(self.err(format!(
                "conv needs rank-4 x and weight, got x {:?} and weight {:?}",
                x.shape, w.shape
            )));
        }
        if x.dtype != w.dtype {
            return Err(self.err(format!("x is {} but weight is {}", x.dtype, w.dtype)));
        }
        let groups = self.const_int("groups")?.unwrap_or(1);
        if w.shape.contains(&0) {
            return Err(self.err(format!("weight {:?} has a zero dimension", w.shape)));
        }
        let (cin, cout) = (x.shape[1], w.shape[0]);
        if groups < 1
            || !cin.is_multiple_of(groups as usize)
            || !cout.is_multiple_of(groups as usize)
        {
            return Err(self.err(format!(
                "groups {groups} must divide Cin {cin} and Cout {cout}"
            )));
        }
        if w.shape[1] != cin / groups as usize {
            return Err(self.err(format!(
                "weight {:?} needs {} input channels per group (x has {cin} channels, groups {groups})",
                w.shape,
                cin / groups as usize
            )));
        }
        if let Some(b) = self.s.arg("bias") {
            let bt = self.arg_type(b, "bias")?;
            if bt.shape() != [cout] {
                return Err(self.err(format!("bias shape {:?} must be [{cout}]", bt.shape())));
            }
        }
        let strides = self.const_ints("strides")?.unwrap_or(vec![1, 1]);
        let dilations = self.const_ints("dilations")?.unwrap_or(vec![1, 1]);
        let pad_type = self.const_str("pad_type")?.unwrap_or("valid");
        let pad = self.const_ints("pad")?.unwrap_or(vec![0, 0, 0, 0]);
        if strides.len() != 2 || dilations.len() != 2 || pad.len() != 4 {
            return Err(self.err("strides and dilations need 2 values, pad needs 4".to_string()));
        }
        if strides.iter().chain(&dilations).any(|&v| v < 1) || pad.iter().any(|&v| v < 0) {
            return Err(self.err("strides/dilations must be ≥ 1 and pad ≥ 0".to_string()));
        }
        let mut out = vec![x.shape[0], cout, 0, 0];
        for k in 0..2 {
            let size = x.shape[2 + k] as i64;
            let kernel = w.shape[2 + k] as i64;
            let (s, d) = (strides[k], dilations[k]);
            let span = d.saturating_mul(kernel - 1).saturating_add(1);
            // Extent available to the kernel: `None` means the kernel does not fit.
            let o = match pad_type {
                "valid" => (size >= span).then(|| (size - span) / s + 1),
                "same" => Some(size.saturating_add(s - 1) / s),
                "custom" => {
                    let padded = size
                        .saturating_add(pad[2 * k])
                        .saturating_add(pad[2 * k + 1]);
                    (padded >= span).then(|| (padded - span) / s + 1)
                }
                other => {
                    return Err(self.err(format!(
                        "pad_type `{other}` (expected valid, same or custom)"
                    )))
                }
            };
            match o {
                Some(o) if o >= 1 => out[2 + k] = o as usize,
                _ => {
                    return Err(self.err(format!(
                        "kernel extent {span} does not fit spatial size {size}"
                    )))
                }
            }
        }
        Ok(ValueType::Tensor(TensorType::new(x.dtype, out)))
    }

    /// matmul: `[..., M, K] × [..., K, N] → [..., M, N]` (after the transpose flags), batch
    /// dims broadcast.
    fn infer_matmul(&self) -> Result<ValueType, ShapeError> {
        let x = self.tensor("x")?;
        let y = self.tensor("y")?;
        if x.dtype != y.dtype {
            return Err(self.err(format!("x is {} but y is {}", x.dtype, y.dtype)));
        }
        if x.shape.len() < 2 || y.shape.len() < 2 {
            return Err(self.err(format!(
                "matmul needs rank ≥ 2 operands, got {:?} and {:?}",
                x.shape, y.shape
            )));
        }
        let tx = self.const_bool("transpose_x")?.unwrap_or(false);
        let ty = self.const_bool("transpose_y")?.unwrap_or(false);
        let (xr, yr) = (x.shape.len(), y.shape.len());
        let (m, kx) = if tx {
            (x.shape[xr - 1], x.shape[xr - 2])
        } else {
            (x.shape[xr - 2], x.shape[xr - 1])
        };
        let (ky, n) = if ty {
            (y.shape[yr - 1], y.shape[yr - 2])
        } else {
            (y.shape[yr - 2], y.shape[yr - 1])
        };
        if kx != ky {
            return Err(self.err(format!(
                "inner dimensions differ: x {:?} (transpose_x={tx}) gives K={kx}, y {:?} (transpose_y={ty}) gives K={ky}",
                x.shape, y.shape
            )));
        }
        let mut out =
            broadcast_shapes(&x.shape[..xr - 2], &y.shape[..yr - 2]).ok_or_else(|| {
                self.err(format!(
                    "batch dims of {:?} and {:?} do not broadcast",
                    x.shape, y.shape
                ))
            })?;
        out.push(m);
        out.push(n);
        Ok(ValueType::Tensor(TensorType::new(x.dtype, out)))
    }

    fn infer_binary(&self, compare: bool) -> Result<ValueType, ShapeError> {
        let x = self.typed("x")?;
        let y = self.typed("y")?;
        if x.dtype() != y.dtype() {
            return Err(self.err(format!("x is {} but y is {}", x.dtype(), y.dtype())));
        }
        let dtype = if compare { DType::Bool } else { x.dtype() };
        self.broadcast_result(dtype, &[&x, &y])
    }

    fn broadcast_result(&self, dtype: DType, vals: &[&ValueType]) -> Result<ValueType, ShapeError> {
        if vals.iter().all(|v| matches!(v, ValueType::Scalar(_))) {
            return Ok(ValueType::Scalar(dtype));
        }
        let mut shape: Vec<usize> = Vec::new();
        for v in vals {
            shape = broadcast_shapes(&shape, v.shape()).ok_or_else(|| {
                self.err(format!(
                    "shapes {:?} do not broadcast",
                    vals.iter().map(|v| v.shape().to_vec()).collect::<Vec<_>>()
                ))
            })?;
        }
        Ok(ValueType::Tensor(TensorType::new(dtype, shape)))
    }

    fn infer_select(&self) -> Result<ValueType, ShapeError> {
        let cond = self.typed("cond")?;
        let a = self.typed("a")?;
        let b = self.typed("b")?;
        if cond.dtype() != DType::Bool {
            return Err(self.err(format!("cond must be bool, got {}", cond.dtype())));
        }
        if a.dtype() != b.dtype() {
            return Err(self.err(format!("a is {} but b is {}", a.dtype(), b.dtype())));
        }
        self.broadcast_result(a.dtype(), &[&cond, &a, &b])
    }

    fn infer_reduce(&self) -> Result<ValueType, ShapeError> {
        let x = self.tensor("x")?;
        let keep = self.const_bool("keep_dims")?.unwrap_or(false);
        let axes = self.reduce_axes()?;
        let shape: Vec<usize> = x
            .shape
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        Ok(ValueType::Tensor(TensorType::new(x.dtype, shape)))
    }

    /// reshape: one `-1` entry is inferred; element counts must match.
    fn infer_reshape(&self) -> Result<ValueType, ShapeError> {
        let x = self.tensor("x")?;
        let target = self.req_ints("shape")?;
        let count = x
            .num_elements()
            .ok_or_else(|| self.err("input element count overflows".to_string()))?;
        if target.len() > MAX_RANK {
            return Err(self.err(format!("target rank {} > {MAX_RANK}", target.len())));
        }
        let known = target
            .iter()
            .filter(|&&d| d != -1)
            .try_fold(1usize, |n, &d| {
                usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
            })
            .ok_or_else(|| self.err(format!("invalid target shape {target:?}")))?;
        let wildcards = target.iter().filter(|&&d| d == -1).count();
        let fill = match wildcards {
            0 if known == count => 0,
            1 if known > 0 && count.is_multiple_of(known) => count / known,
            _ => {
                return Err(self.err(format!(
                    "cannot reshape {:?} ({count} elements) to {target:?}",
                    x.shape
                )))
            }
        };
        let shape: Vec<usize> = target
            .iter()
            .map(|&d| if d == -1 { fill } else { d as usize })
            .collect();
        Ok(ValueType::Tensor(TensorType::new(x.dtype, shape)))
    }

    fn infer_transpose(&self) -> Result<ValueType, ShapeError> {
        let x = self.tensor("x")?;
        let shape: Vec<usize> = self.transpose_perm()?.iter().map(|&a| x.shape[a]).collect();
        Ok(ValueType::Tensor(TensorType::new(x.dtype, shape)))
    }

    fn infer_cast(&self) -> Result<ValueType, ShapeError> {
        let x = self.typed("x")?;
        let name = self
            .const_str("dtype")?
            .ok_or_else(|| self.err("missing argument `dtype`".to_string()))?;
        let dtype = DType::from_name(name)
            .ok_or_else(|| self.err(format!("unknown cast target `{name}`")))?;
        Ok(match x {
            ValueType::Tensor(t) => ValueType::Tensor(TensorType::new(dtype, t.shape)),
            ValueType::Scalar(_) => ValueType::Scalar(dtype),
        })
    }

    /// The window a `slice_by_size` or `slice_by_index` reads.
    ///
    /// slice_by_size: `begin` per axis (negative counts from the end), `size` per axis
    /// (`-1` = to the end). slice_by_index: Python-style `begin:end:stride` per axis with
    /// begin/end/squeeze masks.
    pub fn slice_window(&self) -> Result<SliceWindow, ShapeError> {
        match self.op()? {
            Op::SliceBySize => self.slice_by_size_window(),
            _ => self.slice_by_index_window(),
        }
    }

    fn slice_by_size_window(&self) -> Result<SliceWindow, ShapeError> {
        let x = self.tensor("x")?;
        let begin = self.req_ints("begin")?;
        let size = self.req_ints("size")?;
        let rank = x.shape.len();
        if begin.len() != rank || size.len() != rank {
            return Err(self.err(format!(
                "begin {begin:?} and size {size:?} need {rank} entries"
            )));
        }
        let mut window = SliceWindow {
            begin: Vec::with_capacity(rank),
            stride: vec![1; rank],
            counts: Vec::with_capacity(rank),
            squeeze: vec![false; rank],
        };
        for i in 0..rank {
            // i128: begin/size come from arbitrary int64 consts.
            let dim = x.shape[i] as i128;
            let b = if begin[i] < 0 {
                begin[i] as i128 + dim
            } else {
                begin[i] as i128
            };
            let n = if size[i] == -1 {
                dim - b
            } else {
                size[i] as i128
            };
            if b < 0 || n < 0 || b + n > dim {
                return Err(self.err(format!(
                    "slice begin {} size {} out of bounds for axis {i} of {:?}",
                    begin[i], size[i], x.shape
                )));
            }
            window.begin.push(b as i64);
            window.counts.push(n as usize);
        }
        Ok(window)
    }

    fn slice_by_index_window(&self) -> Result<SliceWindow, ShapeError> {
        let x = self.tensor("x")?;
        let rank = x.shape.len();
        let begin = self.req_ints("begin")?;
        let end = self.req_ints("end")?;
        let stride = self.const_ints("stride")?.unwrap_or(vec![1; rank]);
        let bm = self.const_bools("begin_mask")?.unwrap_or(vec![false; rank]);
        let em = self.const_bools("end_mask")?.unwrap_or(vec![false; rank]);
        let sm = self
            .const_bools("squeeze_mask")?
            .unwrap_or(vec![false; rank]);
        if [
            begin.len(),
            end.len(),
            stride.len(),
            bm.len(),
            em.len(),
            sm.len(),
        ]
        .iter()
        .any(|&n| n != rank)
        {
            return Err(self.err(format!("begin/end/stride/masks need {rank} entries")));
        }
        let mut window = SliceWindow {
            begin: Vec::with_capacity(rank),
            stride: stride.clone(),
            counts: Vec::with_capacity(rank),
            squeeze: sm.clone(),
        };
        for i in 0..rank {
            let dim = x.shape[i] as i64;
            let (b, e) = slice_bounds(begin[i], end[i], stride[i], bm[i], em[i], dim)
                .ok_or_else(|| self.err(format!("invalid slice on axis {i} of {:?}", x.shape)))?;
            let n = strided_len(b, e, stride[i]);
            if sm[i] && n != 1 {
                return Err(self.err(format!("squeezed axis {i} has {n} elements, not 1")));
            }
            window.begin.push(b);
            window.counts.push(n as usize);
        }
        Ok(window)
    }

    fn infer_slice(&self) -> Result<ValueType, ShapeError> {
        let x = self.tensor("x")?;
        let w = self.slice_window()?;
        let shape: Vec<usize> = w
            .counts
            .iter()
            .zip(&w.squeeze)
            .filter(|(_, &sq)| !sq)
            .map(|(&n, _)| n)
            .collect();
        Ok(ValueType::Tensor(TensorType::new(x.dtype, shape)))
    }

    /// concat: equal ranks and dtypes, equal sizes off `axis` (and on it with `interleave`).
    fn infer_concat(&self) -> Result<ValueType, ShapeError> {
        let values = self.concat_values()?;
        let (axis, interleave) = self.concat_axis()?;
        let first = &values[0];
        let rank = first.shape.len();
        let mut shape = first.shape.clone();
        for t in &values[1..] {
            let fits = t.dtype == first.dtype
                && t.shape.len() == rank
                && (0..rank).all(|i| i == axis || t.shape[i] == first.shape[i])
                && (!interleave || t.shape[axis] == first.shape[axis]);
            if !fits {
                let how = if interleave { "interleave" } else { "concat" };
                return Err(self.err(format!("cannot {how} {first} with {t} along axis {axis}")));
            }
            shape[axis] = shape[axis]
                .checked_add(t.shape[axis])
                .ok_or_else(|| self.err("concat size overflows".to_string()))?;
        }
        Ok(ValueType::Tensor(TensorType::new(first.dtype, shape)))
    }

    fn infer_expand_dims(&self) -> Result<ValueType, ShapeError> {
        let x = self.tensor("x")?;
        let axes = self.req_ints("axes")?;
        let rank = x.shape.len() + axes.len();
        if rank > MAX_RANK {
            return Err(self.err(format!("result rank {rank} > {MAX_RANK}")));
        }
        let mut new_axes: Vec<usize> = axes
            .iter()
            .map(|&a| self.axis(a, rank))
            .collect::<Result<_, _>>()?;
        new_axes.sort_unstable();
        new_axes.dedup();
        if new_axes.len() != axes.len() {
            return Err(self.err(format!("repeated axes {axes:?}")));
        }
        let mut src = x.shape.iter();
        let shape: Vec<usize> = (0..rank)
            .map(|i| {
                if new_axes.contains(&i) {
                    1
                } else {
                    src.next().copied().unwrap_or(1)
                }
            })
            .collect();
        Ok(ValueType::Tensor(TensorType::new(x.dtype, shape)))
    }

    fn infer_squeeze(&self) -> Result<ValueType, ShapeError> {
        let x = self.tensor("x")?;
        let rank = x.shape.len();
        let axes: Vec<usize> = match self.const_ints("axes")? {
            Some(a) => a
                .iter()
                .map(|&a| self.axis(a, rank))
                .collect::<Result<_, _>>()?,
            None => (0..rank).filter(|&i| x.shape[i] == 1).collect(),
        };
        if let Some(&a) = axes.iter().find(|&&a| x.shape[a] != 1) {
            return Err(self.err(format!("axis {a} of {:?} is not 1", x.shape)));
        }
        let shape: Vec<usize> = (0..rank)
            .filter(|i| !axes.contains(i))
            .map(|i| x.shape[i])
            .collect();
        Ok(ValueType::Tensor(TensorType::new(x.dtype, shape)))
    }
}

/// Number of elements of the strided range `b..e` (bounds already clamped by
/// [`slice_bounds`]; stride ≠ 0).
pub fn strided_len(b: i64, e: i64, stride: i64) -> i64 {
    let (b, e, s) = (b as i128, e as i128, stride as i128);
    let n = if s > 0 {
        if e > b {
            (e - b - 1) / s + 1
        } else {
            0
        }
    } else if b > e {
        (b - e - 1) / -s + 1
    } else {
        0
    };
    n as i64
}

/// Resolve `begin:end` of a strided slice on an axis of length `dim`, clamped like NumPy.
/// Returns `None` for stride 0.
pub fn slice_bounds(
    begin: i64,
    end: i64,
    stride: i64,
    begin_mask: bool,
    end_mask: bool,
    dim: i64,
) -> Option<(i64, i64)> {
    if stride == 0 {
        return None;
    }
    let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    let (lo, hi) = if stride > 0 { (0, dim) } else { (-1, dim - 1) };
    let b = if begin_mask {
        if stride > 0 {
            lo
        } else {
            hi
        }
    } else {
        norm(begin).clamp(lo, hi)
    };
    let e = if end_mask {
        if stride > 0 {
            hi
        } else {
            lo
        }
    } else {
        norm(end).clamp(lo, hi)
    };
    Some((b, e))
}
