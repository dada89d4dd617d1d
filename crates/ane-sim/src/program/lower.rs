//! Lowering a parsed MIL function into an executable plan ([`Program::build`]).

use super::*;

/// Weight lookup used during lowering: `@model_path/...` → blob bytes.
pub type WeightLookup<'a> = dyn Fn(&str) -> Option<&'a [u8]> + 'a;

struct Builder<'a> {
    func: &'a Function,
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
    errors: Vec<String>,
}

type R<T> = Result<T, String>;

fn axis_index(axis: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

fn literal_tensor(lit: &Literal) -> R<Option<Tensor>> {
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

    /// The literal an argument stands for: inline, or the `val` of a named const.
    fn lit(&self, st: &'a Statement, key: &str) -> R<Option<&'a Literal>> {
        match st.arg(key) {
            None => Ok(None),
            Some(Arg::Literal(l)) => Ok(Some(l)),
            Some(Arg::Var(v)) => match self.const_lits.get(v.as_str()) {
                Some(l) => Ok(Some(*l)),
                None => Err(format!("parameter `{key}` must be a const (got `{v}`)")),
            },
            Some(Arg::List(_)) => Err(format!("parameter `{key}` cannot be a tuple")),
        }
    }

    fn req<T>(&self, st: &'a Statement, key: &str, v: R<Option<T>>) -> R<T> {
        v?.ok_or_else(|| format!("`{}` needs parameter `{key}`", st.op))
    }

    fn int(&self, st: &'a Statement, key: &str) -> R<Option<i64>> {
        match self.lit(st, key)? {
            None => Ok(None),
            Some(l) => l
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("parameter `{key}` must be an integer")),
        }
    }

    fn ints(&self, st: &'a Statement, key: &str) -> R<Option<Vec<i64>>> {
        match self.lit(st, key)? {
            None => Ok(None),
            Some(l) => l
                .as_int_vec()
                .map(Some)
                .ok_or_else(|| format!("parameter `{key}` must be an int tensor")),
        }
    }

    fn bools(&self, st: &'a Statement, key: &str) -> R<Option<Vec<bool>>> {
        match self.lit(st, key)? {
            None => Ok(None),
            Some(Literal::Tensor {
                data: TensorData::Bool(v),
                ..
            }) => Ok(Some(v.clone())),
            Some(Literal::Bool(b)) => Ok(Some(vec![*b])),
            Some(_) => Err(format!("parameter `{key}` must be a bool tensor")),
        }
    }

    fn flag(&self, st: &'a Statement, key: &str, default: bool) -> R<bool> {
        match self.lit(st, key)? {
            None => Ok(default),
            Some(l) => l
                .as_bool()
                .ok_or_else(|| format!("parameter `{key}` must be a bool")),
        }
    }

    fn float(&self, st: &'a Statement, key: &str, default: f32) -> R<f32> {
        match self.lit(st, key)? {
            None => Ok(default),
            Some(l) => l
                .as_f64()
                .map(|v| v as f32)
                .ok_or_else(|| format!("parameter `{key}` must be a number")),
        }
    }

    fn string(&self, st: &'a Statement, key: &str) -> R<Option<&'a str>> {
        match self.lit(st, key)? {
            None => Ok(None),
            Some(l) => l
                .as_str()
                .map(Some)
                .ok_or_else(|| format!("parameter `{key}` must be a string")),
        }
    }

    /// Value index of a tensor operand (materialising consts on first use).
    fn operand_arg(&mut self, arg: &'a Arg) -> R<usize> {
        match arg {
            Arg::Var(v) => {
                if let Some(&i) = self.const_values.get(v.as_str()) {
                    return Ok(i);
                }
                if let Some(lit) = self.const_lits.get(v.as_str()).copied() {
                    let i = self.materialise(lit)?;
                    self.const_values.insert(v.as_str(), i);
                    return Ok(i);
                }
                self.names
                    .get(v.as_str())
                    .copied()
                    .ok_or_else(|| format!("unknown value `{v}`"))
            }
            Arg::Literal(l) => self.materialise(l),
            Arg::List(_) => Err("a tensor operand cannot be a tuple".into()),
        }
    }

    fn operand(&mut self, st: &'a Statement, key: &str) -> R<usize> {
        let arg = st
            .arg(key)
            .ok_or_else(|| format!("`{}` needs operand `{key}`", st.op))?;
        self.operand_arg(arg)
    }

    fn materialise(&mut self, lit: &'a Literal) -> R<usize> {
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

    fn push(
        &mut self,
        st: &'a Statement,
        kind: Kind,
        inputs: Vec<usize>,
        shape: Vec<usize>,
        flops: f64,
    ) -> R<()> {
        let declared = &st.out_type;
        let dtype = declared.dtype();
        let shape = match declared {
            ValueType::Tensor(t) if t.shape == shape => shape,
            ValueType::Scalar(_) if numel(&shape) == 1 => vec![],
            _ => {
                return Err(format!(
                    "declared {declared} but `{}` computes shape {shape:?}",
                    st.op
                ))
            }
        };
        let out = self.new_value(shape.clone(), dtype);
        if self.names.insert(st.out_name.as_str(), out).is_some() {
            return Err(format!("`{}` is defined twice", st.out_name));
        }
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
        Ok(())
    }

    fn statement(&mut self, st: &'a Statement) -> R<()> {
        let op = st.op.as_str();
        if op == "const" {
            let lit = st
                .const_value()
                .ok_or_else(|| "const without `val`".to_string())?;
            self.const_lits.insert(st.out_name.as_str(), lit);
            return Ok(());
        }
        if let Some(b) = Binary::from_op(op) {
            let x = self.operand(st, "x")?;
            let y = self.operand(st, "y")?;
            let shape = broadcast_shapes(self.shape(x), self.shape(y)).ok_or_else(|| {
                format!(
                    "shapes {:?} and {:?} do not broadcast",
                    self.shape(x),
                    self.shape(y)
                )
            })?;
            let flops = numel(&shape) as f64;
            return self.push(st, Kind::Binary(b), vec![x, y], shape, flops);
        }
        if let Some(u) = self.unary(st)? {
            let x = self.operand(st, "x")?;
            let shape = self.shape(x).to_vec();
            let flops = numel(&shape) as f64 * u.flops();
            return self.push(st, Kind::Unary(u), vec![x], shape, flops);
        }
        match op {
            "conv" => self.conv(st),
            "matmul" => self.matmul(st),
            "linear" => self.linear(st),
            "softmax" => {
                let x = self.operand(st, "x")?;
                let rank = self.shape(x).len();
                let axis = axis_index(self.int(st, "axis")?.unwrap_or(-1), rank)?;
                let shape = self.shape(x).to_vec();
                let flops = 5.0 * numel(&shape) as f64;
                self.push(st, Kind::Softmax { axis }, vec![x], shape, flops)
            }
            "reduce_sum" | "reduce_mean" | "reduce_max" | "reduce_min" | "reduce_prod"
            | "reduce_sum_square" | "reduce_l2_norm" | "reduce_log_sum_exp" => self.reduce(st),
            "reshape" => {
                let x = self.operand(st, "x")?;
                let want = self.req(st, "shape", self.ints(st, "shape"))?;
                let shape = reshape_target(self.shape(x), &want)?;
                self.push(st, Kind::Reshape, vec![x], shape, 0.0)
            }
            "squeeze" => {
                let x = self.operand(st, "x")?;
                let src = self.shape(x).to_vec();
                let axes = match self.ints(st, "axes")? {
                    Some(a) => norm_axes(&a, src.len())?,
                    None => (0..src.len()).filter(|&i| src[i] == 1).collect(),
                };
                if axes.iter().any(|&a| src[a] != 1) {
                    return Err(format!("squeeze of a non-1 axis in {src:?}"));
                }
                let shape = (0..src.len())
                    .filter(|a| !axes.contains(a))
                    .map(|a| src[a])
                    .collect();
                self.push(st, Kind::Reshape, vec![x], shape, 0.0)
            }
            "expand_dims" => {
                let x = self.operand(st, "x")?;
                let mut shape = self.shape(x).to_vec();
                let axes = self.req(st, "axes", self.ints(st, "axes"))?;
                let out_rank = shape.len() + axes.len();
                let mut ax = norm_axes(&axes, out_rank)?;
                ax.sort_unstable();
                for a in ax {
                    shape.insert(a, 1);
                }
                self.push(st, Kind::Reshape, vec![x], shape, 0.0)
            }
            "transpose" => {
                let x = self.operand(st, "x")?;
                let src = self.shape(x).to_vec();
                let perm = self.req(st, "perm", self.ints(st, "perm"))?;
                let perm = norm_axes(&perm, src.len())?;
                let mut seen = perm.clone();
                seen.sort_unstable();
                if perm.len() != src.len() || seen != (0..src.len()).collect::<Vec<_>>() {
                    return Err(format!(
                        "perm {perm:?} is not a permutation of rank {}",
                        src.len()
                    ));
                }
                let shape = perm.iter().map(|&p| src[p]).collect();
                self.push(st, Kind::Transpose { perm }, vec![x], shape, 0.0)
            }
            "cast" => {
                let x = self.operand(st, "x")?;
                let dt = self.req(st, "dtype", self.string(st, "dtype"))?;
                let want = DType::from_name(dt).ok_or_else(|| format!("unknown dtype {dt:?}"))?;
                if want != st.out_type.dtype() {
                    return Err(format!(
                        "cast to {want} but the result is declared {}",
                        st.out_type.dtype()
                    ));
                }
                let shape = self.shape(x).to_vec();
                self.push(st, Kind::Cast, vec![x], shape, 0.0)
            }
            "select" => {
                let c = self.operand(st, "cond")?;
                let x = self.operand(st, "a")?;
                let y = self.operand(st, "b")?;
                let shape = broadcast_shapes(self.shape(c), self.shape(x))
                    .and_then(|s| broadcast_shapes(&s, self.shape(y)))
                    .ok_or_else(|| "select operands do not broadcast".to_string())?;
                let flops = numel(&shape) as f64;
                self.push(st, Kind::Select, vec![c, x, y], shape, flops)
            }
            "slice_by_size" => self.slice_by_size(st),
            "slice_by_index" => self.slice_by_index(st),
            "concat" => self.concat(st),
            "layer_norm" => self.layer_norm(st),
            _ => Err(format!(
                "op `{op}` is not supported by the simulator (supported: {})",
                SUPPORTED_OPS.join(", ")
            )),
        }
    }

    fn unary(&self, st: &'a Statement) -> R<Option<Unary>> {
        Ok(Some(match st.op.as_str() {
            "identity" => Unary::Identity,
            "abs" => Unary::Abs,
            "ceil" => Unary::Ceil,
            "floor" => Unary::Floor,
            "round" => Unary::Round,
            "sign" => Unary::Sign,
            "sin" => Unary::Sin,
            "cos" => Unary::Cos,
            "tan" => Unary::Tan,
            "tanh" => Unary::Tanh,
            "exp" => Unary::Exp,
            "exp2" => Unary::Exp2,
            "log" => Unary::Log(self.float(st, "epsilon", 1e-45)?),
            "sqrt" => Unary::Sqrt,
            "rsqrt" => Unary::Rsqrt(self.float(st, "epsilon", 1e-12)?),
            "inverse" => Unary::Inverse(self.float(st, "epsilon", 1e-4)?),
            "square" => Unary::Square,
            "sigmoid" => Unary::Sigmoid,
            "relu" => Unary::Relu,
            "relu6" => Unary::Relu6,
            "silu" => Unary::Silu,
            "softplus" => Unary::Softplus,
            "erf" => Unary::Erf,
            "logical_not" => Unary::LogicalNot,
            "leaky_relu" => Unary::LeakyRelu(self.float(st, "alpha", 0.01)?),
            "clip" => Unary::Clip(
                self.req(
                    st,
                    "alpha",
                    self.lit(st, "alpha").map(|l| l.and_then(Literal::as_f64)),
                )? as f32,
                self.req(
                    st,
                    "beta",
                    self.lit(st, "beta").map(|l| l.and_then(Literal::as_f64)),
                )? as f32,
            ),
            "gelu" => match self.string(st, "mode")?.unwrap_or("EXACT") {
                "EXACT" => Unary::GeluExact,
                "TANH_APPROXIMATION" => Unary::GeluTanh,
                "SIGMOID_APPROXIMATION" => Unary::GeluSigmoid,
                m => return Err(format!("unknown gelu mode {m:?}")),
            },
            _ => return Ok(None),
        }))
    }

    fn conv(&mut self, st: &'a Statement) -> R<()> {
        let x = self.operand(st, "x")?;
        let w = self.operand(st, "weight")?;
        let xs = self.shape(x).to_vec();
        let ws = self.shape(w).to_vec();
        if xs.len() != 4 || ws.len() != 4 {
            return Err(format!(
                "conv needs rank-4 x and weight, got {xs:?} and {ws:?}"
            ));
        }
        if ws[2] != 1 || ws[3] != 1 {
            return Err(format!("only 1x1 conv is supported, weight is {ws:?}"));
        }
        for key in ["strides", "dilations"] {
            if let Some(v) = self.ints(st, key)? {
                if v.iter().any(|&s| s != 1) {
                    return Err(format!("conv {key} {v:?} not supported (only 1)"));
                }
            }
        }
        if let Some(p) = self.ints(st, "pad")? {
            if p.iter().any(|&s| s != 0) {
                return Err(format!("conv pad {p:?} not supported (only 0)"));
            }
        }
        let groups = self.int(st, "groups")?.unwrap_or(1);
        if groups < 1 {
            return Err(format!("conv groups {groups}"));
        }
        let g = groups as usize;
        let (cout, cin_g) = (ws[0], ws[1]);
        if cin_g * g != xs[1] || cout % g != 0 {
            return Err(format!(
                "conv weight {ws:?} with groups {g} does not fit input {xs:?}"
            ));
        }
        let mut inputs = vec![x, w];
        if st.arg("bias").is_some() {
            let b = self.operand(st, "bias")?;
            if numel(self.shape(b)) != cout {
                return Err(format!("conv bias {:?} for {cout} outputs", self.shape(b)));
            }
            inputs.push(b);
        }
        let shape = vec![xs[0], cout, xs[2], xs[3]];
        let flops = 2.0 * (xs[0] * cout * cin_g * xs[2] * xs[3]) as f64;
        self.push(st, Kind::Conv { groups: g }, inputs, shape, flops)
    }

    fn matmul(&mut self, st: &'a Statement) -> R<()> {
        let x = self.operand(st, "x")?;
        let y = self.operand(st, "y")?;
        let tx = self.flag(st, "transpose_x", false)?;
        let ty = self.flag(st, "transpose_y", false)?;
        let (xs, ys) = (self.shape(x).to_vec(), self.shape(y).to_vec());
        if xs.len() < 2 || ys.len() < 2 {
            return Err(format!(
                "matmul needs rank ≥ 2 operands, got {xs:?} and {ys:?}"
            ));
        }
        let (m, k) = mat_dims(&xs, tx);
        let (k2, n) = mat_dims(&ys, ty);
        if k != k2 {
            return Err(format!(
                "matmul inner dimensions differ: {xs:?}{} · {ys:?}{}",
                if tx { "ᵀ" } else { "" },
                if ty { "ᵀ" } else { "" }
            ));
        }
        let batch = broadcast_shapes(&xs[..xs.len() - 2], &ys[..ys.len() - 2])
            .ok_or_else(|| format!("matmul batch dims of {xs:?} and {ys:?} do not broadcast"))?;
        let flops = 2.0 * (numel(&batch) * m * n * k) as f64;
        let mut shape = batch;
        shape.extend([m, n]);
        self.push(st, Kind::Matmul { tx, ty }, vec![x, y], shape, flops)
    }

    fn linear(&mut self, st: &'a Statement) -> R<()> {
        let x = self.operand(st, "x")?;
        let w = self.operand(st, "weight")?;
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        if ws.len() != 2 || xs.is_empty() || xs[xs.len() - 1] != ws[1] {
            return Err(format!("linear weight {ws:?} does not fit input {xs:?}"));
        }
        let mut inputs = vec![x, w];
        if st.arg("bias").is_some() {
            let b = self.operand(st, "bias")?;
            if numel(self.shape(b)) != ws[0] {
                return Err(format!(
                    "linear bias {:?} for {} outputs",
                    self.shape(b),
                    ws[0]
                ));
            }
            inputs.push(b);
        }
        let mut shape = xs.clone();
        *shape.last_mut().unwrap_or(&mut 0) = ws[0];
        let flops = 2.0 * (numel(&xs) * ws[0]) as f64;
        self.push(st, Kind::Linear, inputs, shape, flops)
    }

    fn reduce(&mut self, st: &'a Statement) -> R<()> {
        let kind = match st.op.as_str() {
            "reduce_sum" => ReduceKind::Sum,
            "reduce_mean" => ReduceKind::Mean,
            "reduce_max" => ReduceKind::Max,
            "reduce_min" => ReduceKind::Min,
            "reduce_prod" => ReduceKind::Prod,
            "reduce_sum_square" => ReduceKind::SumSquare,
            "reduce_l2_norm" => ReduceKind::L2Norm,
            _ => ReduceKind::LogSumExp,
        };
        let x = self.operand(st, "x")?;
        let src = self.shape(x).to_vec();
        let mut axes = match self.ints(st, "axes")? {
            Some(a) => norm_axes(&a, src.len())?,
            None => (0..src.len()).collect(),
        };
        axes.sort_unstable();
        axes.dedup();
        let keep = self.flag(st, "keep_dims", false)?;
        let shape: Vec<usize> = (0..src.len())
            .filter_map(|a| match (axes.contains(&a), keep) {
                (false, _) => Some(src[a]),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let flops = numel(&src) as f64;
        self.push(st, Kind::Reduce { kind, axes }, vec![x], shape, flops)
    }

    fn slice_by_size(&mut self, st: &'a Statement) -> R<()> {
        let x = self.operand(st, "x")?;
        let src = self.shape(x).to_vec();
        let begin = self.req(st, "begin", self.ints(st, "begin"))?;
        let size = self.req(st, "size", self.ints(st, "size"))?;
        if begin.len() != src.len() || size.len() != src.len() {
            return Err(format!(
                "slice_by_size begin/size rank differs from {src:?}"
            ));
        }
        let mut b = vec![0; src.len()];
        let mut shape = vec![0; src.len()];
        for a in 0..src.len() {
            let d = src[a] as i64;
            let bi = if begin[a] < 0 { begin[a] + d } else { begin[a] };
            let sz = if size[a] < 0 { d - bi } else { size[a] };
            if bi < 0 || sz < 0 || bi + sz > d {
                return Err(format!(
                    "slice_by_size begin {begin:?} size {size:?} outside {src:?}"
                ));
            }
            b[a] = bi as usize;
            shape[a] = sz as usize;
        }
        let step = vec![1; src.len()];
        let kind = Kind::Slice {
            begin: b,
            step,
            counts: shape.clone(),
        };
        self.push(st, kind, vec![x], shape, 0.0)
    }

    fn slice_by_index(&mut self, st: &'a Statement) -> R<()> {
        let x = self.operand(st, "x")?;
        let src = self.shape(x).to_vec();
        let rank = src.len();
        let begin = self.req(st, "begin", self.ints(st, "begin"))?;
        let end = self.req(st, "end", self.ints(st, "end"))?;
        let stride = self.ints(st, "stride")?.unwrap_or_else(|| vec![1; rank]);
        let bm = self
            .bools(st, "begin_mask")?
            .unwrap_or_else(|| vec![false; rank]);
        let em = self
            .bools(st, "end_mask")?
            .unwrap_or_else(|| vec![false; rank]);
        let sm = self
            .bools(st, "squeeze_mask")?
            .unwrap_or_else(|| vec![false; rank]);
        if [
            begin.len(),
            end.len(),
            stride.len(),
            bm.len(),
            em.len(),
            sm.len(),
        ]
        .iter()
        .any(|&l| l != rank)
        {
            return Err(format!(
                "slice_by_index parameters must all have rank {rank}"
            ));
        }
        let (mut b, mut step, mut full, mut squeezed) = (vec![], vec![], vec![], vec![]);
        for a in 0..rank {
            let d = src[a] as i64;
            if stride[a] <= 0 {
                return Err(format!(
                    "slice_by_index stride {} not supported (only > 0)",
                    stride[a]
                ));
            }
            let clamp = |v: i64| (if v < 0 { v + d } else { v }).clamp(0, d);
            let bi = if bm[a] { 0 } else { clamp(begin[a]) };
            let ei = if em[a] { d } else { clamp(end[a]) };
            let n = if ei > bi {
                (ei - bi + stride[a] - 1) / stride[a]
            } else {
                0
            };
            if sm[a] && n != 1 {
                return Err(format!("slice_by_index squeezes axis {a} of length {n}"));
            }
            b.push(bi as usize);
            step.push(stride[a] as usize);
            full.push(n as usize);
            if !sm[a] {
                squeezed.push(n as usize);
            }
        }
        let kind = Kind::Slice {
            begin: b,
            step,
            counts: full,
        };
        self.push(st, kind, vec![x], squeezed, 0.0)
    }

    fn concat(&mut self, st: &'a Statement) -> R<()> {
        let list = match st.arg("values") {
            Some(Arg::List(v)) => v,
            Some(other) => std::slice::from_ref(other),
            None => return Err("concat needs `values`".into()),
        };
        if list.is_empty() {
            return Err("concat of nothing".into());
        }
        let mut inputs = Vec::with_capacity(list.len());
        for a in list {
            inputs.push(self.operand_arg(a)?);
        }
        let first = self.shape(inputs[0]).to_vec();
        let axis = axis_index(self.req(st, "axis", self.int(st, "axis"))?, first.len())?;
        let interleave = self.flag(st, "interleave", false)?;
        let mut shape = first.clone();
        shape[axis] = 0;
        for &i in &inputs {
            let s = self.shape(i);
            let same_rest =
                s.len() == first.len() && (0..s.len()).all(|a| a == axis || s[a] == first[a]);
            if !same_rest || (interleave && s[axis] != first[axis]) {
                return Err(format!(
                    "concat inputs {first:?} and {s:?} do not fit on axis {axis}"
                ));
            }
            shape[axis] += s[axis];
        }
        self.push(st, Kind::Concat { axis, interleave }, inputs, shape, 0.0)
    }

    fn layer_norm(&mut self, st: &'a Statement) -> R<()> {
        let x = self.operand(st, "x")?;
        let src = self.shape(x).to_vec();
        let mut axes = match self.ints(st, "axes")? {
            Some(a) => norm_axes(&a, src.len())?,
            None => vec![src.len().saturating_sub(1)],
        };
        axes.sort_unstable();
        axes.dedup();
        if axes
            .iter()
            .enumerate()
            .any(|(i, &a)| a != src.len() - axes.len() + i)
        {
            return Err(format!(
                "layer_norm axes {axes:?} must be the trailing axes of {src:?}"
            ));
        }
        let eps = self.float(st, "epsilon", 1e-5)?;
        let mut inputs = vec![x];
        let gamma = st.arg("gamma").is_some();
        let beta = st.arg("beta").is_some();
        let norm_shape: Vec<usize> = axes.iter().map(|&a| src[a]).collect();
        for (present, key) in [(gamma, "gamma"), (beta, "beta")] {
            if present {
                let v = self.operand(st, key)?;
                if numel(self.shape(v)) != numel(&norm_shape) {
                    return Err(format!(
                        "layer_norm {key} {:?} for axes {axes:?}",
                        self.shape(v)
                    ));
                }
                inputs.push(v);
            }
        }
        let flops = 8.0 * numel(&src) as f64;
        self.push(
            st,
            Kind::LayerNorm {
                axes,
                eps,
                gamma,
                beta,
            },
            inputs,
            src,
            flops,
        )
    }
}

fn mat_dims(shape: &[usize], transposed: bool) -> (usize, usize) {
    let (a, b) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if transposed {
        (b, a)
    } else {
        (a, b)
    }
}

fn norm_axes(axes: &[i64], rank: usize) -> R<Vec<usize>> {
    axes.iter().map(|&a| axis_index(a, rank)).collect()
}

fn reshape_target(src: &[usize], want: &[i64]) -> R<Vec<usize>> {
    let total = numel(src);
    let mut infer = None;
    let mut known = 1usize;
    let mut out = Vec::with_capacity(want.len());
    for (i, &d) in want.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(0);
            }
            d if d >= 0 => {
                known = known.saturating_mul(d as usize);
                out.push(d as usize);
            }
            _ => return Err(format!("bad reshape target {want:?}")),
        }
    }
    if let Some(i) = infer {
        if total.checked_rem(known) != Some(0) {
            return Err(format!("cannot reshape {src:?} to {want:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {src:?} ({total} elements) to {want:?}"
        ));
    }
    Ok(out)
}

impl Program {
    /// Lower `func`. `weights` resolves BLOBFILE paths to blob bytes.
    /// On failure returns one message per problem found.
    pub fn build<'a>(
        func: &'a Function,
        weights: &'a WeightLookup<'a>,
        precision: Precision,
    ) -> Result<Program, Vec<String>> {
        let mut b = Builder {
            func,
            weights,
            precision,
            names: HashMap::new(),
            const_lits: HashMap::new(),
            types: vec![],
            consts: vec![],
            const_values: HashMap::new(),
            steps: vec![],
            weight_bytes: 0.0,
            errors: vec![],
        };
        let mut inputs = vec![];
        let mut input_values = vec![];
        for (name, ty) in &func.inputs {
            if ty.dtype.size_bytes().is_none() {
                b.errors.push(format!(
                    "input `{name}`: {} cannot live in a surface",
                    ty.dtype
                ));
            }
            let v = b.new_value(ty.shape.clone(), ty.dtype);
            if b.names.insert(name.as_str(), v).is_some() {
                b.errors.push(format!("input `{name}` is declared twice"));
            }
            inputs.push(IoTensor {
                name: name.clone(),
                dtype: ty.dtype,
                shape: ty.shape.clone(),
            });
            input_values.push(v);
        }
        for st in &b.func.body {
            if let Err(e) = b.statement(st) {
                b.errors
                    .push(format!("`{}` ({}): {e}", st.out_name, st.op_name));
            }
        }
        let mut outputs = vec![];
        let mut output_values = vec![];
        for name in &func.outputs {
            let v = match b.names.get(name.as_str()).copied() {
                Some(v) => v,
                None if b.const_lits.contains_key(name.as_str()) => {
                    match b.operand_arg_owned(name) {
                        Ok(v) => v,
                        Err(e) => {
                            b.errors.push(format!("output `{name}`: {e}"));
                            continue;
                        }
                    }
                }
                None => {
                    b.errors.push(format!("output `{name}` is not defined"));
                    continue;
                }
            };
            let (shape, dtype) = b.types[v].clone();
            if dtype.size_bytes().is_none() {
                b.errors
                    .push(format!("output `{name}`: {dtype} cannot live in a surface"));
            }
            outputs.push(IoTensor {
                name: name.clone(),
                dtype,
                shape,
            });
            output_values.push(v);
        }
        if !b.errors.is_empty() {
            return Err(b.errors);
        }
        let mut steps = b.steps;
        plan_frees(&mut steps, &output_values);
        let flops = steps.iter().map(|s| s.flops).sum();
        Ok(Program {
            inputs,
            outputs,
            input_values,
            output_values,
            consts: b.consts,
            steps,
            n_values: b.types.len(),
            precision,
            flops,
            weight_bytes: b.weight_bytes,
        })
    }
}

impl Builder<'_> {
    fn operand_arg_owned(&mut self, name: &str) -> R<usize> {
        let key = self
            .const_lits
            .keys()
            .find(|k| **k == name)
            .copied()
            .ok_or_else(|| format!("unknown value `{name}`"))?;
        if let Some(&i) = self.const_values.get(key) {
            return Ok(i);
        }
        let lit = self.const_lits[key];
        let i = self.materialise(lit)?;
        self.const_values.insert(key, i);
        Ok(i)
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
