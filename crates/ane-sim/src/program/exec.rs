//! Running a lowered plan ([`Program::run`]): the interpreter loop and the compute kernels.

use super::*;

impl Program {
    /// Run with `inputs` in declaration order (element counts must match); returns outputs in
    /// return order. fp16 inputs are rounded to fp16 first (a surface cannot hold more).
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        self.check_inputs(inputs.len(), inputs.iter().map(|t| t.data.len()))?;
        let inputs = inputs
            .into_iter()
            .zip(&self.inputs)
            .map(|(mut t, io)| {
                t.shape.clone_from(&io.shape);
                if io.dtype == DType::Fp16 {
                    round_f16_slice(&mut t.data);
                }
                Arc::new(t)
            })
            .collect();
        self.run_inner(inputs)
    }

    /// [`Program::run`] for inputs decoded from their declared surface dtypes, with their
    /// declared shapes: fp16 inputs are already fp16 values, so there is no rounding pass,
    /// and they are shared, not copied (the device keeps them between evaluations).
    pub(crate) fn run_decoded(&self, inputs: Vec<Arc<Tensor>>) -> Result<Vec<Tensor>, String> {
        self.check_inputs(inputs.len(), inputs.iter().map(|t| t.data.len()))?;
        if let Some((t, io)) = inputs
            .iter()
            .zip(&self.inputs)
            .find(|(t, io)| t.shape != io.shape)
        {
            return Err(format!(
                "input `{}` has shape {:?}, expected {:?}",
                io.name, t.shape, io.shape
            ));
        }
        self.run_inner(inputs)
    }

    /// `count` inputs with these element counts fit the declared inputs.
    fn check_inputs(&self, count: usize, lens: impl Iterator<Item = usize>) -> Result<(), String> {
        if count != self.inputs.len() {
            return Err(format!(
                "{count} inputs given, program has {}",
                self.inputs.len()
            ));
        }
        for (len, io) in lens.zip(&self.inputs) {
            if len != numel(&io.shape) {
                return Err(format!(
                    "input `{}` has {len} values, expected {} ({:?})",
                    io.name,
                    numel(&io.shape),
                    io.shape
                ));
            }
        }
        Ok(())
    }

    fn run_inner(&self, inputs: Vec<Arc<Tensor>>) -> Result<Vec<Tensor>, String> {
        // Lane sharing: only when some lanes are identical (see `lanes`).
        let sharing = self.lane_classes(inputs.iter().map(|t| &**t));
        let mut values: Vec<Option<Arc<Tensor>>> = vec![None; self.n_values];
        for &(v, ref t) in &self.consts {
            values[v] = Some(t.clone());
        }
        for (t, &v) in inputs.into_iter().zip(&self.input_values) {
            let t = match &sharing {
                Some((plan, cls)) if matches!(plan.values[v], lanes::Lanes::At { .. }) => {
                    Arc::new(lanes::gather(&t, plan.values[v], plan.lanes, cls))
                }
                _ => t,
            };
            values[v] = Some(t);
        }
        for (si, step) in self.steps.iter().enumerate() {
            // Shape and op of this step as it runs: on shared lanes the lane dimension holds
            // one lane per class (a slice then takes that many).
            let mode = sharing.as_ref().map(|(plan, _)| plan.modes[si]);
            let (shape, kind) = match (&sharing, mode) {
                (Some((plan, cls)), Some(lanes::Mode::Shared)) => {
                    let n_shared = cls.reps.len();
                    let shape = lanes::shared_shape(&step.shape, plan.values[step.out], n_shared);
                    let kind = match &step.kind {
                        Kind::Slice {
                            begin,
                            step: st,
                            counts,
                        } => Kind::Slice {
                            begin: begin.clone(),
                            step: st.clone(),
                            counts: lanes::shared_shape(
                                counts,
                                plan.values[step.inputs[0]],
                                n_shared,
                            ),
                        },
                        k => k.clone(),
                    };
                    (
                        std::borrow::Cow::Owned(shape),
                        std::borrow::Cow::Owned(kind),
                    )
                }
                _ => (
                    std::borrow::Cow::Borrowed(&step.shape),
                    std::borrow::Cow::Borrowed(&step.kind),
                ),
            };
            let n = numel(&shape);
            // A matmul over the lanes, from the shared lanes (else it runs expanded).
            let contracted = match (&sharing, mode) {
                (Some((plan, cls)), Some(lanes::Mode::Contract)) => {
                    contract_lanes(step, &values, plan, cls, n)
                }
                _ => None,
            };
            let expanded = mode == Some(lanes::Mode::Expanded)
                || (mode == Some(lanes::Mode::Contract) && contracted.is_none());
            // reshape / cast of a value whose last use this is: move its buffer.
            let moved = match step.kind {
                Kind::Reshape | Kind::Cast if !expanded && step.free.contains(&step.inputs[0]) => {
                    match values[step.inputs[0]].take().map(Arc::try_unwrap) {
                        Some(Ok(t)) => Some(t.data),
                        Some(Err(shared)) => {
                            values[step.inputs[0]] = Some(shared);
                            None
                        }
                        None => None,
                    }
                }
                _ => None,
            };
            let mut data = match moved.or(contracted) {
                Some(d) => d,
                None => {
                    // Operands of an expanded step with their lanes written back in full.
                    let full: Vec<Option<Tensor>> = match (&sharing, expanded) {
                        (Some((plan, cls)), true) => step
                            .inputs
                            .iter()
                            .map(|&i| {
                                let l = plan.values[i];
                                let t = values[i].as_deref()?;
                                matches!(l, lanes::Lanes::At { .. }).then(|| {
                                    lanes::expand(
                                        t,
                                        &lanes::shared_shape(&t.shape, l, plan.lanes),
                                        l,
                                        cls,
                                    )
                                })
                            })
                            .collect(),
                        _ => vec![],
                    };
                    let args: Vec<&Tensor> = step
                        .inputs
                        .iter()
                        .enumerate()
                        .map(|(k, &i)| match full.get(k).and_then(Option::as_ref) {
                            Some(t) => Ok(t),
                            None => values[i]
                                .as_deref()
                                .ok_or_else(|| format!("{}: operand missing", step.label)),
                        })
                        .collect::<Result<_, _>>()?;
                    let mut out = take_buf(n);
                    self.exec(&kind, &shape, &args, &mut out);
                    out
                }
            };
            debug_assert_eq!(data.len(), n, "{}", step.label);
            if step.dtype == DType::Fp16 && self.precision == Precision::Fp16 {
                round_f16_slice(&mut data);
            } else if step.dtype.is_int() || step.dtype == DType::Bool {
                data.iter_mut().for_each(|x| *x = x.trunc());
            }
            values[step.out] = Some(Arc::new(Tensor::new(shape.into_owned(), data)));
            for &f in &step.free {
                if let Some(Ok(t)) = values[f].take().map(Arc::try_unwrap) {
                    give_buf(t.data);
                }
            }
        }
        let outs: Vec<Option<Arc<Tensor>>> = self
            .output_values
            .iter()
            .map(|&v| values[v].clone())
            .collect();
        drop(values);
        outs.into_iter()
            .zip(&self.output_values)
            .map(|(v, &vi)| {
                let v = v.ok_or_else(|| "output missing".to_string())?;
                let t = Arc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone());
                Ok(match &sharing {
                    Some((plan, cls)) if matches!(plan.values[vi], lanes::Lanes::At { .. }) => {
                        let full = lanes::shared_shape(&t.shape, plan.values[vi], plan.lanes);
                        let e = lanes::expand(&t, &full, plan.values[vi], cls);
                        give_buf(t.data);
                        e
                    }
                    _ => t,
                })
            })
            .collect()
    }

    /// Compute `step` into the empty buffer `out` (leaves `numel(shape)` values); `kind` and `shape` are
    /// the step's, or their shared-lanes forms.
    fn exec(&self, kind: &Kind, shape: &[usize], a: &[&Tensor], out: &mut Vec<f32>) {
        let n = numel(shape);
        match kind {
            Kind::Unary(u) => unary_into(*u, &a[0].data, out),
            Kind::Binary(b) => binary_into(*b, a[0], a[1], shape, out),
            Kind::Conv { groups, panels } => {
                out.resize(n, 0.0);
                conv1x1(
                    a[0],
                    a[1],
                    a.get(2).copied(),
                    *groups,
                    panels.as_deref(),
                    out,
                );
            }
            Kind::Matmul { tx, ty } => {
                out.resize(n, 0.0);
                batched_matmul(a[0], a[1], *tx, *ty, shape, out);
            }
            Kind::Linear => {
                let (x, w) = (a[0], a[1]);
                let (n_out, k) = (w.shape[0], w.shape[1]);
                let rows = x.data.len() / k.max(1);
                out.resize(rows * n_out, 0.0);
                gemm(
                    MatRef::row_major(&x.data, rows, k),
                    MatRef::row_major(&w.data, n_out, k).t(),
                    out,
                );
                if let Some(b) = a.get(2) {
                    for row in out.chunks_exact_mut(n_out) {
                        row.iter_mut().zip(&b.data).for_each(|(o, &bv)| *o += bv);
                    }
                }
            }
            Kind::Softmax { axis } => {
                out.resize(n, 0.0);
                softmax_into(a[0], *axis, out);
            }
            Kind::Reduce { kind, axes } => replace(out, reduce(a[0], axes, *kind).data),
            Kind::Reshape | Kind::Cast => out.extend_from_slice(&a[0].data),
            Kind::Transpose { perm } => {
                let x = a[0];
                let st = strides(&x.shape);
                let vs: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
                strided_copy_into(&x.data, 0, &vs, shape, out);
            }
            Kind::Slice {
                begin,
                step: st,
                counts,
            } => {
                let x = a[0];
                let xs = strides(&x.shape);
                let offset: usize = begin.iter().zip(&xs).map(|(b, s)| b * s).sum();
                let vs: Vec<usize> = xs.iter().zip(st).map(|(s, k)| s * k).collect();
                strided_copy_into(&x.data, offset, &vs, counts, out);
            }
            Kind::Concat { axis, interleave } => {
                if *interleave {
                    replace(out, concat_interleave(a, *axis, shape).data)
                } else {
                    concat_into(a, *axis, shape, out)
                }
            }
            Kind::LayerNorm {
                axes,
                eps,
                gamma,
                beta,
            } => replace(out, layer_norm(a, axes, *eps, *gamma, *beta)),
            Kind::Select => {
                let none = Tensor::scalar(0.0);
                let c = broadcast_map2(a[0], &none, shape, |c, _| c);
                let x = broadcast_map2(a[1], &none, shape, |x, _| x);
                let y = broadcast_map2(a[2], &none, shape, |y, _| y);
                out.extend(
                    c.iter()
                        .zip(x.iter().zip(&y))
                        .map(|(&c, (&x, &y))| if c != 0.0 { x } else { y }),
                );
            }
        }
    }
}

/// A batch-1 matmul contracting over the lanes, on shared lanes: term `t` of the sum over
/// all `L` lanes reads lane `t`'s class from each lane-carrying operand (see
/// `lanes::Mode::Contract`). `None` if the short-contraction kernel cannot take it.
fn contract_lanes(
    step: &Step,
    values: &[Option<Arc<Tensor>>],
    plan: &lanes::LanePlan,
    cls: &lanes::LaneClasses,
    n: usize,
) -> Option<Vec<f32>> {
    let Kind::Matmul { tx, ty } = step.kind else {
        return None;
    };
    let (xi, yi) = (step.inputs[0], step.inputs[1]);
    let (x, y) = (values[xi].as_deref()?, values[yi].as_deref()?);
    let (a, b) = (last_two(x, tx), last_two(y, ty));
    let lane = |v: usize, t: usize| match plan.values[v] {
        lanes::Lanes::At { .. } => cls.class_of[t],
        _ => t,
    };
    let terms: Vec<(usize, usize)> = (0..plan.lanes)
        .map(|t| (lane(xi, t), lane(yi, t)))
        .collect();
    let mut out = take_buf(n);
    out.resize(n, 0.0);
    match gemm_terms(a, b, &terms, &mut out) {
        Some(()) => Some(out),
        None => {
            give_buf(out);
            None
        }
    }
}

/// The last two axes of `t` as a matrix (transposed if asked).
fn last_two(t: &Tensor, transposed: bool) -> MatRef<'_> {
    let r = t.shape.len();
    let m = MatRef::row_major(&t.data, t.shape[r - 2], t.shape[r - 1]);
    if transposed {
        m.t()
    } else {
        m
    }
}

/// Swap a freshly computed vector into `out`, returning the old buffer to the pool.
fn replace(out: &mut Vec<f32>, v: Vec<f32>) {
    give_buf(std::mem::replace(out, v));
}

/// Pointwise `u` over `x` appended to `out`; the hot ops get their own inlined loops.
fn unary_into(u: Unary, x: &[f32], out: &mut Vec<f32>) {
    match u {
        Unary::Sigmoid => out.extend(x.iter().map(|&v| sigmoid(v))),
        Unary::Identity => out.extend_from_slice(x),
        Unary::Square => out.extend(x.iter().map(|&v| v * v)),
        Unary::Sqrt => out.extend(x.iter().map(|&v| v.sqrt())),
        Unary::Exp => out.extend(x.iter().map(|&v| v.exp())),
        Unary::Rsqrt(eps) => out.extend(x.iter().map(|&v| 1.0 / (v + eps).sqrt())),
        _ => out.extend(x.iter().map(|&v| u.apply(v))),
    }
}

/// Broadcasting `b` appended to `out`; the hot ops get their own inlined loops.
fn binary_into(b: Binary, x: &Tensor, y: &Tensor, shape: &[usize], out: &mut Vec<f32>) {
    match b {
        Binary::Add => broadcast_map2_into(x, y, shape, out, |p, q| p + q),
        Binary::Sub => broadcast_map2_into(x, y, shape, out, |p, q| p - q),
        Binary::Mul => broadcast_map2_into(x, y, shape, out, |p, q| p * q),
        Binary::RealDiv => broadcast_map2_into(x, y, shape, out, |p, q| p / q),
        _ => broadcast_map2_into(x, y, shape, out, move |p, q| b.apply(p, q)),
    }
}

/// 1×1 convolution: per batch n and group g, `Y_g[Cout/g, H·W] = W_g[Cout/g, Cin/g] · X_g`.
/// With `panels` (the weight packed for few lanes) and at most [`PANEL_MAX_N`] positions,
/// the panel kernel runs: bitwise the same products.
fn conv1x1(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    groups: usize,
    panels: Option<&Panels>,
    out: &mut [f32],
) {
    let (n, cin, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3]);
    let cout = w.shape[0];
    let (cin_g, cout_g) = (cin / groups, cout / groups);
    debug_assert_eq!(out.len(), n * cout * hw);
    let panels = panels.filter(|p| {
        groups == 1 && (1..=PANEL_MAX_N).contains(&hw) && p.rows() == cout && p.cols() == cin
    });
    for b in 0..n {
        if let Some(p) = panels {
            let xb = &x.data[b * cin * hw..(b + 1) * cin * hw];
            gemm_panels(p, xb, hw, &mut out[b * cout * hw..(b + 1) * cout * hw]);
            continue;
        }
        for g in 0..groups {
            let wg = &w.data[g * cout_g * cin_g..(g + 1) * cout_g * cin_g];
            let x0 = (b * cin + g * cin_g) * hw;
            let xg = &x.data[x0..x0 + cin_g * hw];
            let y0 = (b * cout + g * cout_g) * hw;
            gemm(
                MatRef::row_major(wg, cout_g, cin_g),
                MatRef::row_major(xg, cin_g, hw),
                &mut out[y0..y0 + cout_g * hw],
            );
        }
    }
    if let Some(bias) = bias {
        for row in out.chunks_exact_mut(hw).enumerate() {
            let c = row.0 % cout;
            row.1.iter_mut().for_each(|v| *v += bias.data[c]);
        }
    }
}

/// Batched matmul with NumPy broadcasting over the leading axes.
fn batched_matmul(
    x: &Tensor,
    y: &Tensor,
    tx: bool,
    ty: bool,
    out_shape: &[usize],
    out: &mut [f32],
) {
    let (xr, yr) = (x.shape.len(), y.shape.len());
    let (xa, xb) = (x.shape[xr - 2], x.shape[xr - 1]);
    let (ya, yb) = (y.shape[yr - 2], y.shape[yr - 1]);
    let (m, n) = (
        out_shape[out_shape.len() - 2],
        out_shape[out_shape.len() - 1],
    );
    let batch = &out_shape[..out_shape.len() - 2];
    let nb = numel(batch);
    let bx = batch_offsets(&x.shape[..xr - 2], batch, xa * xb);
    let by = batch_offsets(&y.shape[..yr - 2], batch, ya * yb);
    debug_assert_eq!(out.len(), nb * m * n);
    for (i, c) in out.chunks_exact_mut((m * n).max(1)).enumerate().take(nb) {
        let mut a = MatRef::row_major(&x.data[bx[i]..bx[i] + xa * xb], xa, xb);
        if tx {
            a = a.t();
        }
        let mut b = MatRef::row_major(&y.data[by[i]..by[i] + ya * yb], ya, yb);
        if ty {
            b = b.t();
        }
        gemm(a, b, c);
    }
}

/// Element offset of each broadcast batch index into an operand with batch dims `own`.
fn batch_offsets(own: &[usize], batch: &[usize], mat: usize) -> Vec<usize> {
    let nb = numel(batch);
    let pad = batch.len() - own.len();
    let own_strides = strides(own);
    (0..nb)
        .map(|mut lin| {
            let mut off = 0;
            for ax in (0..batch.len()).rev() {
                let idx = lin % batch[ax];
                lin /= batch[ax];
                if ax >= pad && own[ax - pad] != 1 {
                    off += idx * own_strides[ax - pad];
                }
            }
            off * mat
        })
        .collect()
}

/// layer_norm over trailing contiguous `axes`: (x − mean) / sqrt(var + eps) · γ + β.
fn layer_norm(a: &[&Tensor], axes: &[usize], eps: f32, gamma: bool, beta: bool) -> Vec<f32> {
    let x = a[0];
    let inner: usize = axes.iter().map(|&i| x.shape[i]).product();
    let g = gamma.then(|| a[1]);
    let b = beta.then(|| a[1 + gamma as usize]);
    let mut out = x.data.clone();
    for row in out.chunks_exact_mut(inner.max(1)) {
        let mean = row.iter().sum::<f32>() / inner as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / inner as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (j, v) in row.iter_mut().enumerate() {
            let mut y = (*v - mean) * inv;
            if let Some(g) = g {
                y *= g.data[j];
            }
            if let Some(b) = b {
                y += b.data[j];
            }
            *v = y;
        }
    }
    out
}
