//! Lowering a parsed MIL function into an executable plan ([`Program::build`]).
//!
//! Every result type comes from `mil`'s shape inference ([`mil::infer_shapes`]), which also
//! checks each declared type against the inferred one; parameter values (axes, perms, slice
//! windows, flags) are resolved through [`mil::shape::OpContext`]. The lowering itself has
//! no shape rules: it picks the compute kernel per [`Op`], materialises constants (inline
//! literals and fp16 BLOBFILE weights), rejects what the simulator cannot execute (e.g.
//! non-1×1 conv) and counts FLOPs and weight bytes for the cost model.

use mil::shape::{OpContext, TypeEnv};
use mil::{InferOptions, Op, ShapeError};

use super::*;

/// Weight lookup used during lowering: `@model_path/...` → blob bytes.
pub type WeightLookup<'a> = dyn Fn(&str) -> Option<&'a [u8]> + 'a;

struct Builder<'a> {
    weights: &'a WeightLookup<'a>,
    precision: Precision,
    /// name → value index
    names: HashMap<&'a str, usize>,
    /// const name → its literal
    const_lits: HashMap<&'a str, &'a Literal>,
    /// value index → (shape, dtype)
    types: Vec<(Vec<usize>, DType)>,
    consts: Vec<(usize, Arc<Tensor>)>,
    /// const name → materialised value index
    const_values: HashMap<&'a str, usize>,
    steps: Vec<Step>,
    weight_bytes: f64,
    /// const value index → its few-lane packing (`None`: not packable).
    panels: HashMap<usize, Option<Arc<Panels>>>,
}

type R<T> = Result<T, ShapeError>;

/// A non-string literal as an f32 tensor (`None` for strings).
fn literal_tensor(lit: &Literal) -> Result<Option<Tensor>, String> {
    Ok(Some(match lit {
        Literal::Bool(b) => Tensor::scalar(*b as u8 as f32),
        Literal::Int { value, .. } => Tensor::scalar(*value as f32),
        Literal::Float { value, .. } => Tensor::scalar(*value as f32),
        Literal::Str(_) => return Ok(None),
        Literal::Tensor { ty, data } => {
            let vals: Vec<f32> = match data {
                TensorData::Int(v) => v.iter().map(|&x| x as f32).collect(),
                TensorData::Float(v) => v.iter().map(|&x| x as f32).collect(),
                TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f32).collect(),
                TensorData::Str(_) => return Ok(None),
            };
            if vals.len() != numel(&ty.shape) {
                return Err(format!(
                    "literal has {} values for shape {:?}",
                    vals.len(),
                    ty.shape
                ));
            }
            Tensor::new(ty.shape.clone(), vals)
        }
        Literal::Blob { .. } => return Err("BLOBFILE literal needs the weights".into()),
    }))
}

/// Shape and dtype of an inferred type (a scalar is shape `[]`).
fn shape_dtype(t: &ValueType) -> (Vec<usize>, DType) {
    (t.shape().to_vec(), t.dtype())
}

impl<'a> Builder<'a> {
    fn new_value(&mut self, shape: Vec<usize>, dtype: DType) -> usize {
        self.types.push((shape, dtype));
        self.types.len() - 1
    }

    fn round_if_fp16(&self, dtype: DType, data: &mut [f32]) {
        if dtype == DType::Fp16 && self.precision == Precision::Fp16 {
            data.iter_mut().for_each(|x| *x = round_f16(*x));
        }
    }

    /// Value index of a tensor operand (materialising consts on first use).
    fn operand_arg(&mut self, arg: &'a Arg) -> Result<usize, String> {
        match arg {
            Arg::Var(v) => self.value(v),
            Arg::Literal(l) => self.materialise(l),
            Arg::List(_) => Err("a tensor operand cannot be a tuple".into()),
        }
    }

    /// Value index of a named value (materialising a const on first use).
    fn value(&mut self, name: &'a str) -> Result<usize, String> {
        if let Some(&i) = self.const_values.get(name) {
            return Ok(i);
        }
        if let Some(lit) = self.const_lits.get(name).copied() {
            let i = self.materialise(lit)?;
            self.const_values.insert(name, i);
            return Ok(i);
        }
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| format!("unknown value `{name}`"))
    }

    fn operand(&mut self, cx: &OpContext, st: &'a Statement, key: &str) -> R<usize> {
        let arg = st
            .arg(key)
            .ok_or_else(|| cx.err(format!("missing argument `{key}`")))?;
        self.operand_arg(arg).map_err(|e| cx.err(e))
    }

    fn optional_operand(
        &mut self,
        cx: &OpContext,
        st: &'a Statement,
        key: &str,
    ) -> R<Option<usize>> {
        match st.arg(key) {
            None => Ok(None),
            Some(_) => self.operand(cx, st, key).map(Some),
        }
    }

    fn materialise(&mut self, lit: &'a Literal) -> Result<usize, String> {
        let (mut t, dtype) = match lit {
            Literal::Blob { ty, blob: b } => {
                let bytes = (self.weights)(&b.path).ok_or_else(|| {
                    format!("BLOBFILE {:?} is not among the provided weights", b.path)
                })?;
                let data = blob::read_fp16_tensor(bytes, b.offset, numel(&ty.shape))
                    .map_err(|e| format!("BLOBFILE {:?} @{}: {e}", b.path, b.offset))?;
                if ty.dtype != DType::Fp16 {
                    return Err(format!(
                        "BLOBFILE {:?}: only fp16 weights are supported, declared {}",
                        b.path, ty.dtype
                    ));
                }
                self.weight_bytes += (data.len() * 2) as f64;
                (Tensor::new(ty.shape.clone(), data), ty.dtype)
            }
            other => match literal_tensor(other)? {
                Some(t) => (t, other.value_type().dtype()),
                None => return Err("a string constant cannot be a tensor operand".into()),
            },
        };
        if !matches!(lit, Literal::Blob { .. }) {
            // BLOBFILE payloads are fp16 already.
            self.round_if_fp16(dtype, &mut t.data);
        }
        let i = self.new_value(t.shape.clone(), dtype);
        self.consts.push((i, Arc::new(t)));
        Ok(i)
    }

    fn shape(&self, v: usize) -> &[usize] {
        &self.types[v].0
    }

    /// Append a step producing `st`'s result with its inferred type `out`.
    fn push(
        &mut self,
        st: &'a Statement,
        out: &ValueType,
        kind: Kind,
        inputs: Vec<usize>,
        flops: f64,
    ) {
        let (shape, dtype) = shape_dtype(out);
        let out = self.new_value(shape.clone(), dtype);
        self.names.insert(st.out_name.as_str(), out);
        self.steps.push(Step {
            kind,
            inputs,
            out,
            shape,
            dtype,
            free: vec![],
            flops,
            label: format!("{} = {}(..)[{}]", st.out_name, st.op, st.op_name),
        });
    }

    /// Lower statement `index`; `out` is its inferred (and declared) type.
    fn statement(&mut self, cx: &OpContext, st: &'a Statement, out: &ValueType) -> R<()> {
        use Op::*;
        let op = cx.op()?;
        let out_numel = numel(out.shape()) as f64;
        match op {
            Const => {
                let lit = st
                    .const_value()
                    .ok_or_else(|| cx.err("const without `val`".to_string()))?;
                self.const_lits.insert(st.out_name.as_str(), lit);
            }
            Conv => self.conv(cx, st, out)?,
            Matmul => {
                let x = self.operand(cx, st, "x")?;
                let y = self.operand(cx, st, "y")?;
                let tx = cx.const_bool("transpose_x")?.unwrap_or(false);
                let ty = cx.const_bool("transpose_y")?.unwrap_or(false);
                let xs = self.shape(x);
                let k = if tx {
                    xs[xs.len() - 2]
                } else {
                    xs[xs.len() - 1]
                };
                let flops = 2.0 * out_numel * k as f64;
                self.push(st, out, Kind::Matmul { tx, ty }, vec![x, y], flops);
            }
            Linear => {
                let x = self.operand(cx, st, "x")?;
                let w = self.operand(cx, st, "weight")?;
                let mut inputs = vec![x, w];
                inputs.extend(self.optional_operand(cx, st, "bias")?);
                let k = self.shape(x).last().copied().unwrap_or(1);
                let flops = 2.0 * out_numel * k as f64;
                self.push(st, out, Kind::Linear, inputs, flops);
            }
            Add | Sub | Mul | RealDiv | FloorDiv | Mod | Pow | Maximum | Minimum | Equal
            | NotEqual | Less | LessEqual | Greater | GreaterEqual | LogicalAnd | LogicalOr
            | LogicalXor => {
                let b = Binary::from_op(op)
                    .ok_or_else(|| cx.err("not a binary op in the simulator".to_string()))?;
                let x = self.operand(cx, st, "x")?;
                let y = self.operand(cx, st, "y")?;
                self.push(st, out, Kind::Binary(b), vec![x, y], out_numel);
            }
            Select => {
                let c = self.operand(cx, st, "cond")?;
                let a = self.operand(cx, st, "a")?;
                let b = self.operand(cx, st, "b")?;
                self.push(st, out, Kind::Select, vec![c, a, b], out_numel);
            }
            LogicalNot | Identity | Abs | Ceil | Floor | Round | Sign | Sin | Cos | Tan | Tanh
            | Exp | Exp2 | Log | Sqrt | Rsqrt | Inverse | Square | Sigmoid | Relu | Relu6
            | Silu | Softplus | Erf | LeakyRelu | Clip | Gelu => {
                let u = unary(cx, op)?;
                let x = self.operand(cx, st, "x")?;
                self.push(st, out, Kind::Unary(u), vec![x], out_numel * u.flops());
            }
            Softmax => {
                let axis = cx.softmax_axis()?;
                let x = self.operand(cx, st, "x")?;
                self.push(st, out, Kind::Softmax { axis }, vec![x], 5.0 * out_numel);
            }
            LayerNorm => self.layer_norm(cx, st, out)?,
            ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceSumSquare
            | ReduceL2Norm | ReduceLogSumExp => {
                let kind = match op {
                    ReduceSum => ReduceKind::Sum,
                    ReduceMean => ReduceKind::Mean,
                    ReduceMax => ReduceKind::Max,
                    ReduceMin => ReduceKind::Min,
                    ReduceProd => ReduceKind::Prod,
                    ReduceSumSquare => ReduceKind::SumSquare,
                    ReduceL2Norm => ReduceKind::L2Norm,
                    _ => ReduceKind::LogSumExp,
                };
                let axes = cx.reduce_axes()?;
                let x = self.operand(cx, st, "x")?;
                let flops = numel(self.shape(x)) as f64;
                self.push(st, out, Kind::Reduce { kind, axes }, vec![x], flops);
            }
            Reshape | Squeeze | ExpandDims => {
                let x = self.operand(cx, st, "x")?;
                self.push(st, out, Kind::Reshape, vec![x], 0.0);
            }
            Transpose => {
                let perm = cx.transpose_perm()?;
                let x = self.operand(cx, st, "x")?;
                self.push(st, out, Kind::Transpose { perm }, vec![x], 0.0);
            }
            Cast => {
                let x = self.operand(cx, st, "x")?;
                self.push(st, out, Kind::Cast, vec![x], 0.0);
            }
            SliceBySize | SliceByIndex => {
                let w = cx.slice_window()?;
                if let Some(s) = w.stride.iter().find(|&&s| s <= 0) {
                    return Err(cx.err(format!(
                        "slice stride {s} is not supported by the simulator (only > 0)"
                    )));
                }
                // With positive strides the window's begin lies in [0, dim].
                let kind = Kind::Slice {
                    begin: w.begin.iter().map(|&b| b.max(0) as usize).collect(),
                    step: w.stride.iter().map(|&s| s as usize).collect(),
                    counts: w.counts,
                };
                let x = self.operand(cx, st, "x")?;
                self.push(st, out, kind, vec![x], 0.0);
            }
            Concat => {
                let (axis, interleave) = cx.concat_axis()?;
                let list = match st.arg("values") {
                    Some(Arg::List(v)) => v,
                    _ => return Err(cx.err("`values` must be a tuple".to_string())),
                };
                let inputs = list
                    .iter()
                    .map(|a| self.operand_arg(a).map_err(|e| cx.err(e)))
                    .collect::<R<Vec<_>>>()?;
                self.push(st, out, Kind::Concat { axis, interleave }, inputs, 0.0);
            }
        }
        Ok(())
    }

    /// 1×1 convolution (the only kind the simulator executes).
    fn conv(&mut self, cx: &OpContext, st: &'a Statement, out: &ValueType) -> R<()> {
        let x = self.operand(cx, st, "x")?;
        let w = self.operand(cx, st, "weight")?;
        let ws = self.shape(w).to_vec();
        if ws[2..] != [1, 1] {
            return Err(cx.err(format!(
                "only 1x1 conv is supported by the simulator, weight is {ws:?}"
            )));
        }
        for (key, neutral) in [("strides", 1), ("dilations", 1), ("pad", 0)] {
            if let Some(v) = cx.const_ints(key)? {
                if v.iter().any(|&s| s != neutral) {
                    return Err(cx.err(format!(
                        "conv {key} {v:?} not supported by the simulator (only {neutral})"
                    )));
                }
            }
        }
        let groups = cx.const_int("groups")?.unwrap_or(1).max(1) as usize;
        let mut inputs = vec![x, w];
        inputs.extend(self.optional_operand(cx, st, "bias")?);
        let flops = 2.0 * numel(out.shape()) as f64 * ws[1] as f64;
        let panels = if groups == 1 { self.panels(w) } else { None };
        self.push(st, out, Kind::Conv { groups, panels }, inputs, flops);
        Ok(())
    }

    /// The few-lane packing of a constant weight `[cout, cin, 1, 1]` (once per constant).
    fn panels(&mut self, w: usize) -> Option<Arc<Panels>> {
        if let Some(p) = self.panels.get(&w) {
            return p.clone();
        }
        let t = self
            .consts
            .iter()
            .find(|(v, _)| *v == w)
            .map(|(_, t)| t.clone());
        let p = t.and_then(|t| {
            let (rows, cols) = (t.shape[0], t.shape[1]);
            Panels::pack(MatRef::row_major(&t.data, rows, cols)).map(Arc::new)
        });
        self.panels.insert(w, p.clone());
        p
    }

    fn layer_norm(&mut self, cx: &OpContext, st: &'a Statement, out: &ValueType) -> R<()> {
        let axes = cx.layer_norm_axes()?;
        let eps = cx.layer_norm_epsilon()? as f32;
        let rank = out.shape().len();
        if axes
            .iter()
            .enumerate()
            .any(|(i, &a)| a != rank - axes.len() + i)
        {
            return Err(cx.err(format!(
                "layer_norm over axes {axes:?} of rank {rank}: the simulator only normalises \
                 trailing axes"
            )));
        }
        let x = self.operand(cx, st, "x")?;
        let g = self.optional_operand(cx, st, "gamma")?;
        let b = self.optional_operand(cx, st, "beta")?;
        let kind = Kind::LayerNorm {
            axes,
            eps,
            gamma: g.is_some(),
            beta: b.is_some(),
        };
        let inputs = [Some(x), g, b].into_iter().flatten().collect();
        self.push(st, out, kind, inputs, 8.0 * numel(out.shape()) as f64);
        Ok(())
    }
}

/// The pointwise kernel of a one-operand op, with its parameters resolved.
fn unary(cx: &OpContext, op: Op) -> R<Unary> {
    let float =
        |key: &str, default: f64| -> R<f32> { Ok(cx.const_float(key)?.unwrap_or(default) as f32) };
    let required = |key: &str| -> R<f32> {
        cx.const_float(key)?
            .map(|v| v as f32)
            .ok_or_else(|| cx.err(format!("missing argument `{key}`")))
    };
    Ok(match op {
        Op::Identity => Unary::Identity,
        Op::Abs => Unary::Abs,
        Op::Ceil => Unary::Ceil,
        Op::Floor => Unary::Floor,
        Op::Round => Unary::Round,
        Op::Sign => Unary::Sign,
        Op::Sin => Unary::Sin,
        Op::Cos => Unary::Cos,
        Op::Tan => Unary::Tan,
        Op::Tanh => Unary::Tanh,
        Op::Exp => Unary::Exp,
        Op::Exp2 => Unary::Exp2,
        Op::Log => Unary::Log(float("epsilon", 1e-45)?),
        Op::Sqrt => Unary::Sqrt,
        Op::Rsqrt => Unary::Rsqrt(float("epsilon", 1e-12)?),
        Op::Inverse => Unary::Inverse(float("epsilon", 1e-4)?),
        Op::Square => Unary::Square,
        Op::Sigmoid => Unary::Sigmoid,
        Op::Relu => Unary::Relu,
        Op::Relu6 => Unary::Relu6,
        Op::Silu => Unary::Silu,
        Op::Softplus => Unary::Softplus,
        Op::Erf => Unary::Erf,
        Op::LogicalNot => Unary::LogicalNot,
        Op::LeakyRelu => Unary::LeakyRelu(float("alpha", 0.01)?),
        Op::Clip => Unary::Clip(required("alpha")?, required("beta")?),
        Op::Gelu => match cx.const_str("mode")?.unwrap_or("EXACT") {
            "EXACT" => Unary::GeluExact,
            "TANH_APPROXIMATION" => Unary::GeluTanh,
            "SIGMOID_APPROXIMATION" => Unary::GeluSigmoid,
            m => return Err(cx.err(format!("unknown gelu mode {m:?}"))),
        },
        other => return Err(cx.err(format!("`{other}` is not a pointwise op"))),
    })
}

impl Program {
    /// Lower `func`. `weights` resolves BLOBFILE paths to blob bytes.
    /// On failure returns one message per problem found (a shape error stops at the first).
    pub fn build<'a>(
        func: &'a Function,
        weights: &'a WeightLookup<'a>,
        precision: Precision,
    ) -> Result<Program, Vec<String>> {
        // Repeated identical consts are harmless to execute (the validator reports them).
        let lenient = InferOptions {
            allow_repeated_consts: true,
        };
        let env: TypeEnv =
            mil::infer_shapes_with(func, &lenient).map_err(|e| vec![e.to_string()])?;
        let const_env: HashMap<String, Literal> = func
            .body
            .iter()
            .filter_map(|s| Some((s.out_name.clone(), s.const_value()?.clone())))
            .collect();
        let mut b = Builder {
            weights,
            precision,
            names: HashMap::new(),
            const_lits: HashMap::new(),
            types: vec![],
            consts: vec![],
            const_values: HashMap::new(),
            steps: vec![],
            weight_bytes: 0.0,
            panels: HashMap::new(),
        };
        let mut errors = vec![];
        let mut inputs = vec![];
        let mut input_values = vec![];
        for (name, ty) in &func.inputs {
            if ty.dtype.size_bytes().is_none() {
                errors.push(format!(
                    "input `{name}`: {} cannot live in a surface",
                    ty.dtype
                ));
            }
            let v = b.new_value(ty.shape.clone(), ty.dtype);
            b.names.insert(name.as_str(), v);
            inputs.push(IoTensor {
                name: name.clone(),
                dtype: ty.dtype,
                shape: ty.shape.clone(),
            });
            input_values.push(v);
        }
        // Results whose statement failed (already reported; outputs naming them are skipped).
        let mut failed: Vec<&str> = vec![];
        for (index, st) in func.body.iter().enumerate() {
            let cx = OpContext::new(index, st, &env, &const_env);
            let Some(out) = env.get(&st.out_name) else {
                errors.push(
                    cx.err("result has no inferred type".to_string())
                        .to_string(),
                );
                continue;
            };
            if let Err(e) = b.statement(&cx, st, out) {
                errors.push(e.to_string());
                failed.push(st.out_name.as_str());
            }
        }
        let mut outputs = vec![];
        let mut output_values = vec![];
        for name in &func.outputs {
            let v = match b.value(name) {
                Ok(v) => v,
                Err(_) if failed.contains(&name.as_str()) => continue,
                Err(e) => {
                    errors.push(format!("output `{name}`: {e}"));
                    continue;
                }
            };
            let (shape, dtype) = b.types[v].clone();
            if dtype.size_bytes().is_none() {
                errors.push(format!("output `{name}`: {dtype} cannot live in a surface"));
            }
            outputs.push(IoTensor {
                name: name.clone(),
                dtype,
                shape,
            });
            output_values.push(v);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut steps = b.steps;
        plan_frees(&mut steps, &output_values);
        let flops = steps.iter().map(|s| s.flops).sum();
        let shapes: Vec<Vec<usize>> = b.types.into_iter().map(|(s, _)| s).collect();
        let lanes = LanePlan::analyse(&steps, &shapes, &input_values);
        Ok(Program {
            inputs,
            outputs,
            input_values,
            output_values,
            consts: b.consts,
            steps,
            n_values: shapes.len(),
            precision,
            flops,
            weight_bytes: b.weight_bytes,
            lanes,
            share_lanes: true,
        })
    }
}

fn plan_frees(steps: &mut [Step], outputs: &[usize]) {
    let mut last: HashMap<usize, usize> = HashMap::new();
    for (si, s) in steps.iter().enumerate() {
        for &i in &s.inputs {
            last.insert(i, si);
        }
    }
    for (v, si) in last {
        if !outputs.contains(&v) {
            steps[si].free.push(v);
        }
    }
}
