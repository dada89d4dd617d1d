//! Dense row-major f32 tensors and the shape-generic kernels the interpreter is built from:
//! broadcasting elementwise maps, strided copies (transpose/slice), axis reductions,
//! softmax, concat. fp16 semantics are applied by the caller (round after each op).

/// A dense row-major tensor. fp16 tensors hold fp16-representable f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(numel(&shape), data.len());
        Self { shape, data }
    }

    pub fn scalar(v: f32) -> Self {
        Self {
            shape: vec![],
            data: vec![v],
        }
    }
}

thread_local! {
    /// Value buffers of finished ops, reused by later ops and evals on this thread: avoids
    /// a fresh allocation (and page faults on large buffers) per op.
    static POOL: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most buffers the per-thread pool keeps.
const POOL_MAX: usize = 192;

/// An empty buffer with capacity for at least `n` values (best fit from the pool).
pub fn take_buf(n: usize) -> Vec<f32> {
    let reused = POOL.with_borrow_mut(|p| {
        let mut best: Option<usize> = None;
        for (i, b) in p.iter().enumerate() {
            let cap = b.capacity();
            if cap >= n && best.is_none_or(|j| cap < p[j].capacity()) {
                best = Some(i);
            }
        }
        best.map(|i| p.swap_remove(i))
    });
    match reused {
        Some(mut b) => {
            b.clear();
            b
        }
        None => Vec::with_capacity(n),
    }
}

/// Return a buffer to the pool (dropped when the pool is full or the buffer empty).
pub fn give_buf(b: Vec<f32>) {
    if b.capacity() < 16 {
        return;
    }
    POOL.with_borrow_mut(|p| {
        if p.len() < POOL_MAX {
            p.push(b);
        }
    });
}

/// Number of elements of a shape (1 for rank 0).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// NumPy broadcast of two shapes: the MIL crate's rule, so shape inference and execution agree.
pub use mil::shape::broadcast_shapes;

/// Strides of `shape` when broadcast to `out` (0 on broadcast axes), aligned to `out`'s rank.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = strides(shape);
    let pad = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < pad || shape[i - pad] == 1 {
                0
            } else {
                own[i - pad]
            }
        })
        .collect()
}

/// Visit every index of `shape` except the last axis, calling `f(offsets)` with the running
/// offsets of each operand (`strides[k]` per operand `k`). Inner loops are left to `f`.
fn for_each_row<const K: usize>(
    shape: &[usize],
    operand_strides: [&[usize]; K],
    mut f: impl FnMut([usize; K]),
) {
    let rank = shape.len();
    if rank == 0 {
        f([0; K]);
        return;
    }
    if shape.contains(&0) {
        return;
    }
    let outer = &shape[..rank - 1];
    let mut idx = vec![0usize; outer.len()];
    let mut offs = [0usize; K];
    loop {
        f(offs);
        // odometer increment over the outer axes
        let mut ax = outer.len();
        loop {
            if ax == 0 {
                return;
            }
            ax -= 1;
            idx[ax] += 1;
            for (k, o) in offs.iter_mut().enumerate() {
                *o += operand_strides[k][ax];
            }
            if idx[ax] < outer[ax] {
                break;
            }
            for (k, o) in offs.iter_mut().enumerate() {
                *o -= operand_strides[k][ax] * outer[ax];
            }
            idx[ax] = 0;
        }
    }
}

/// `out[i] = f(x[i'], y[i''])` with NumPy broadcasting to `out_shape`.
pub fn broadcast_map2(
    x: &Tensor,
    y: &Tensor,
    out_shape: &[usize],
    f: impl Fn(f32, f32) -> f32,
) -> Vec<f32> {
    let n = numel(out_shape);
    if x.shape == y.shape && x.data.len() == n {
        return x.data.iter().zip(&y.data).map(|(&a, &b)| f(a, b)).collect();
    }
    if y.data.len() == 1 && x.data.len() == n {
        let b = y.data[0];
        return x.data.iter().map(|&a| f(a, b)).collect();
    }
    if x.data.len() == 1 && y.data.len() == n {
        let a = x.data[0];
        return y.data.iter().map(|&b| f(a, b)).collect();
    }
    let sx = broadcast_strides(&x.shape, out_shape);
    let sy = broadcast_strides(&y.shape, out_shape);
    let mut out = Vec::with_capacity(n);
    let last = out_shape.last().copied().unwrap_or(1);
    let (ix, iy) = (
        sx.last().copied().unwrap_or(0),
        sy.last().copied().unwrap_or(0),
    );
    for_each_row(out_shape, [&sx, &sy], |[ox, oy]| {
        for j in 0..last {
            out.push(f(x.data[ox + j * ix], y.data[oy + j * iy]));
        }
    });
    out
}

/// How an operand broadcast to an output shape lays out its values along the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    /// Same number of values: element i pairs with output element i.
    Full,
    /// The operand's values repeat with this period (leading broadcast axes).
    Tile(usize),
    /// Each value covers this many consecutive outputs (trailing broadcast axes).
    Repeat(usize),
    Other,
}

fn pattern(shape: &[usize], out: &[usize]) -> Pattern {
    let (len, n) = (numel(shape), numel(out));
    if len == n {
        return Pattern::Full;
    }
    if len == 0 || shape.len() > out.len() {
        return Pattern::Other;
    }
    let pad = out.len() - shape.len();
    let dim = |i: usize| if i < pad { 1 } else { shape[i - pad] };
    let rank = out.len();
    let first = (0..rank).find(|&i| dim(i) != 1).unwrap_or(rank);
    if (first..rank).all(|i| dim(i) == out[i]) {
        return Pattern::Tile(len);
    }
    let end = (0..rank).rfind(|&i| dim(i) != 1).map_or(0, |i| i + 1);
    if (0..end).all(|i| dim(i) == out[i]) {
        return Pattern::Repeat(n / len);
    }
    Pattern::Other
}

/// [`broadcast_map2`] appending to `out`, with fast loops for the common layouts (same
/// shape, scalar, an operand tiled along leading axes or repeated along trailing ones).
/// Computes exactly the same values.
#[inline]
pub fn broadcast_map2_into(
    x: &Tensor,
    y: &Tensor,
    out_shape: &[usize],
    out: &mut Vec<f32>,
    f: impl Fn(f32, f32) -> f32 + Copy,
) {
    let n = numel(out_shape);
    let (px, py) = (pattern(&x.shape, out_shape), pattern(&y.shape, out_shape));
    match (px, py) {
        (Pattern::Full, Pattern::Full) => {
            out.extend(x.data.iter().zip(&y.data).map(|(&a, &b)| f(a, b)))
        }
        (Pattern::Full, Pattern::Tile(p)) if p > 0 => {
            for xc in x.data.chunks_exact(p) {
                out.extend(xc.iter().zip(&y.data).map(|(&a, &b)| f(a, b)));
            }
        }
        (Pattern::Tile(p), Pattern::Full) if p > 0 => {
            for yc in y.data.chunks_exact(p) {
                out.extend(x.data.iter().zip(yc).map(|(&a, &b)| f(a, b)));
            }
        }
        (Pattern::Full, Pattern::Repeat(r)) if r > 0 => {
            for (xc, &b) in x.data.chunks_exact(r).zip(&y.data) {
                out.extend(xc.iter().map(|&a| f(a, b)));
            }
        }
        (Pattern::Repeat(r), Pattern::Full) if r > 0 => {
            for (yc, &a) in y.data.chunks_exact(r).zip(&x.data) {
                out.extend(yc.iter().map(|&b| f(a, b)));
            }
        }
        _ => out.extend(broadcast_map2(x, y, out_shape, f)),
    }
    debug_assert_eq!(out.len(), n);
}

/// Copy the strided view (`offset`, `view_strides`, `view_shape`) of `src` into a dense
/// row-major buffer. Used for transpose and slicing.
pub fn strided_copy(
    src: &[f32],
    offset: usize,
    view_strides: &[usize],
    view_shape: &[usize],
) -> Vec<f32> {
    let mut out = Vec::with_capacity(numel(view_shape));
    strided_copy_into(src, offset, view_strides, view_shape, &mut out);
    out
}

/// [`strided_copy`] appending to `out`.
pub fn strided_copy_into(
    src: &[f32],
    offset: usize,
    view_strides: &[usize],
    view_shape: &[usize],
    out: &mut Vec<f32>,
) {
    if view_shape.is_empty() {
        out.push(src[offset]);
        return;
    }
    let last = *view_shape.last().unwrap_or(&1);
    let inner = *view_strides.last().unwrap_or(&1);
    for_each_row(view_shape, [view_strides], |[o]| {
        let o = o + offset;
        if inner == 1 {
            out.extend_from_slice(&src[o..o + last]);
        } else {
            out.extend((0..last).map(|j| src[o + j * inner]));
        }
    });
}

/// Transpose: output axis i is input axis `perm[i]`.
pub fn transpose(x: &Tensor, perm: &[usize]) -> Tensor {
    let st = strides(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let vs: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    Tensor::new(shape.clone(), strided_copy(&x.data, 0, &vs, &shape))
}

/// (outer, n, inner) split of `shape` around the contiguous axis range `axes`.
pub fn split_around(shape: &[usize], first: usize, last: usize) -> (usize, usize, usize) {
    (
        numel(&shape[..first]),
        numel(&shape[first..=last]),
        numel(&shape[last + 1..]),
    )
}

/// Which axis reduction to perform (f32 accumulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    SumSquare,
    L2Norm,
    LogSumExp,
}

/// Reduce over the given (sorted, unique) axes; the result keeps those axes with size 1.
pub fn reduce(x: &Tensor, axes: &[usize], kind: ReduceKind) -> Tensor {
    let mut out_shape = x.shape.clone();
    for &a in axes {
        out_shape[a] = 1;
    }
    if axes.is_empty() {
        return x.clone();
    }
    // Move reduced axes to one contiguous block (after the kept axes) when they are not.
    let contiguous = axes.windows(2).all(|w| w[1] == w[0] + 1);
    let (src, shape, first, last) = if contiguous {
        (
            std::borrow::Cow::Borrowed(&x.data),
            x.shape.clone(),
            axes[0],
            axes[axes.len() - 1],
        )
    } else {
        let mut perm: Vec<usize> = (0..x.shape.len()).filter(|a| !axes.contains(a)).collect();
        let kept = perm.len();
        perm.extend_from_slice(axes);
        let t = transpose(x, &perm);
        (
            std::borrow::Cow::Owned(t.data),
            t.shape,
            kept,
            kept + axes.len() - 1,
        )
    };
    let (outer, n, inner) = split_around(&shape, first, last);
    let mut data = vec![0f32; outer * inner];
    for o in 0..outer {
        let acc = &mut data[o * inner..(o + 1) * inner];
        reduce_block(
            &src[o * n * inner..(o + 1) * n * inner],
            n,
            inner,
            kind,
            acc,
        );
    }
    Tensor::new(out_shape, data)
}

/// acc[i] = reduce_r block[r·inner + i].
fn reduce_block(block: &[f32], n: usize, inner: usize, kind: ReduceKind, acc: &mut [f32]) {
    let init = match kind {
        ReduceKind::Max | ReduceKind::LogSumExp => f32::NEG_INFINITY,
        ReduceKind::Min => f32::INFINITY,
        ReduceKind::Prod => 1.0,
        _ => 0.0,
    };
    acc.fill(init);
    for r in 0..n {
        let row = &block[r * inner..(r + 1) * inner];
        match kind {
            ReduceKind::Sum | ReduceKind::Mean => {
                acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v)
            }
            ReduceKind::SumSquare | ReduceKind::L2Norm => {
                acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v * v)
            }
            ReduceKind::Max | ReduceKind::LogSumExp => acc
                .iter_mut()
                .zip(row)
                .for_each(|(a, &v)| *a = max_nan(*a, v)),
            ReduceKind::Min => acc
                .iter_mut()
                .zip(row)
                .for_each(|(a, &v)| *a = min_nan(*a, v)),
            ReduceKind::Prod => acc.iter_mut().zip(row).for_each(|(a, &v)| *a *= v),
        }
    }
    match kind {
        ReduceKind::Mean => acc.iter_mut().for_each(|a| *a /= n as f32),
        ReduceKind::L2Norm => acc.iter_mut().for_each(|a| *a = a.sqrt()),
        ReduceKind::LogSumExp => {
            // acc holds the max; second pass for log Σ exp(v − max) + max.
            let mut sums = vec![0f32; acc.len()];
            for r in 0..n {
                let row = &block[r * inner..(r + 1) * inner];
                for ((s, &m), &v) in sums.iter_mut().zip(acc.iter()).zip(row) {
                    *s += (v - m).exp();
                }
            }
            for (a, s) in acc.iter_mut().zip(sums) {
                *a += s.ln();
            }
        }
        _ => {}
    }
}

/// max that propagates NaN.
pub fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// min that propagates NaN.
pub fn min_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.min(b)
    }
}

/// Softmax along `axis`: exp(x − max) / Σ exp(x − max), computed in f32.
pub fn softmax(x: &Tensor, axis: usize) -> Tensor {
    let mut out = vec![0f32; x.data.len()];
    softmax_into(x, axis, &mut out);
    Tensor::new(x.shape.clone(), out)
}

/// [`softmax`] into `out` (`x.data.len()` values).
pub fn softmax_into(x: &Tensor, axis: usize, out: &mut [f32]) {
    let (outer, n, inner) = split_around(&x.shape, axis, axis);
    if n == 0 {
        return;
    }
    if inner == 1 {
        // Contiguous rows: the same operations in the same order, without the gather.
        for (row, o) in x.data.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, max_nan);
            let mut sum = 0f32;
            for (c, &v) in o.iter_mut().zip(row) {
                *c = exp_or_zero(v - m);
                sum += *c;
            }
            for c in o.iter_mut() {
                *c /= sum;
            }
        }
        return;
    }
    let mut col = vec![0f32; n];
    for o in 0..outer {
        for i in 0..inner {
            let base = o * n * inner + i;
            for (r, c) in col.iter_mut().enumerate() {
                *c = x.data[base + r * inner];
            }
            let m = col.iter().copied().fold(f32::NEG_INFINITY, max_nan);
            let mut sum = 0f32;
            for c in col.iter_mut() {
                *c = (*c - m).exp();
                sum += *c;
            }
            for (r, c) in col.iter().enumerate() {
                out[base + r * inner] = c / sum;
            }
        }
    }
}

/// `x.exp()`, short-cutting arguments whose exponential rounds to +0 in f32 (e^-104 is
/// below half the smallest subnormal): masked attention slots, without libm's slow
/// underflow path. Bit-identical to `x.exp()`.
#[inline]
fn exp_or_zero(x: f32) -> f32 {
    if x < -110.0 {
        0.0
    } else {
        x.exp()
    }
}

/// Concatenate along `axis` (all other dimensions equal, checked by the caller).
pub fn concat(xs: &[&Tensor], axis: usize, out_shape: &[usize]) -> Tensor {
    let mut data = Vec::with_capacity(numel(out_shape));
    concat_into(xs, axis, out_shape, &mut data);
    Tensor::new(out_shape.to_vec(), data)
}

/// [`concat()`] appending to `data`.
pub fn concat_into(xs: &[&Tensor], axis: usize, out_shape: &[usize], data: &mut Vec<f32>) {
    let outer = numel(&out_shape[..axis]);
    for o in 0..outer {
        for x in xs {
            let chunk = numel(&x.shape[axis..]);
            data.extend_from_slice(&x.data[o * chunk..(o + 1) * chunk]);
        }
    }
}

/// Interleaved concat along `axis`: element k of input i goes to position k·n + i.
pub fn concat_interleave(xs: &[&Tensor], axis: usize, out_shape: &[usize]) -> Tensor {
    let outer = numel(&out_shape[..axis]);
    let len = xs[0].shape[axis];
    let inner = numel(&xs[0].shape[axis + 1..]);
    let mut data = Vec::with_capacity(numel(out_shape));
    for o in 0..outer {
        for k in 0..len {
            for x in xs {
                let at = (o * len + k) * inner;
                data.extend_from_slice(&x.data[at..at + inner]);
            }
        }
    }
    Tensor::new(out_shape.to_vec(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> Tensor {
        let n = numel(shape);
        Tensor::new(shape.to_vec(), (0..n).map(|i| i as f32).collect())
    }

    #[test]
    fn broadcasting_matches_index_arithmetic() {
        let x = t(&[1, 3, 1, 4]);
        let y = t(&[1, 1, 1, 4]);
        let z = t(&[1, 3, 1, 1]);
        let s = broadcast_shapes(&x.shape, &y.shape).unwrap();
        let a = broadcast_map2(&x, &y, &s, |a, b| a * 100.0 + b);
        for c in 0..3 {
            for w in 0..4 {
                assert_eq!(a[c * 4 + w], (c * 4 + w) as f32 * 100.0 + w as f32);
            }
        }
        let s2 = broadcast_shapes(&y.shape, &z.shape).unwrap();
        assert_eq!(s2, vec![1, 3, 1, 4]);
        let b = broadcast_map2(&y, &z, &s2, |a, b| a + 10.0 * b);
        for c in 0..3 {
            for w in 0..4 {
                assert_eq!(b[c * 4 + w], w as f32 + 10.0 * c as f32);
            }
        }
        assert!(broadcast_shapes(&[2, 3], &[4, 3]).is_none());
        assert_eq!(
            broadcast_shapes(&[5, 1, 3], &[4, 1]).unwrap(),
            vec![5, 4, 3]
        );
    }

    #[test]
    fn fast_broadcast_layouts_match_the_generic_path() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[1, 3, 2, 4], &[1, 1, 2, 4]),
            (&[1, 3, 2, 4], &[1, 3, 1, 1]),
            (&[1, 1, 1, 4], &[1, 3, 2, 4]),
            (&[2, 3, 1], &[1, 3, 4]),
            (&[5], &[]),
            (&[3, 4], &[3, 4]),
            (&[1, 3, 1, 4], &[1, 1, 2, 1]),
        ];
        for &(a, b) in cases {
            let (x, y) = (t(a), t(b));
            let s = broadcast_shapes(a, b).unwrap();
            let f = |p: f32, q: f32| p * 7.0 - q;
            for (x, y) in [(&x, &y), (&y, &x)] {
                let mut fast = vec![];
                broadcast_map2_into(x, y, &s, &mut fast, f);
                let sx = broadcast_strides(&x.shape, &s);
                let sy = broadcast_strides(&y.shape, &s);
                let mut want = vec![];
                let last = s.last().copied().unwrap_or(1);
                let (ix, iy) = (
                    sx.last().copied().unwrap_or(0),
                    sy.last().copied().unwrap_or(0),
                );
                for_each_row(&s, [&sx, &sy], |[ox, oy]| {
                    for j in 0..last {
                        want.push(f(x.data[ox + j * ix], y.data[oy + j * iy]));
                    }
                });
                assert_eq!(fast, want, "{:?} {:?}", x.shape, y.shape);
            }
        }
    }

    #[test]
    fn transpose_and_reduce() {
        let x = t(&[2, 3, 4]);
        let y = transpose(&x, &[2, 0, 1]);
        assert_eq!(y.shape, vec![4, 2, 3]);
        for a in 0..2 {
            for b in 0..3 {
                for c in 0..4 {
                    assert_eq!(y.data[c * 6 + a * 3 + b], x.data[a * 12 + b * 4 + c]);
                }
            }
        }
        let s = reduce(&x, &[1], ReduceKind::Sum);
        assert_eq!(s.shape, vec![2, 1, 4]);
        assert_eq!(s.data[0], 0.0 + 4.0 + 8.0);
        let s02 = reduce(&x, &[0, 2], ReduceKind::Max);
        assert_eq!(s02.shape, vec![1, 3, 1]);
        assert_eq!(s02.data, vec![15.0, 19.0, 23.0]);
        let m = reduce(&x, &[0, 1, 2], ReduceKind::Mean);
        assert_eq!(m.data, vec![11.5]);
        let lse = reduce(
            &Tensor::new(vec![2], vec![0.0, 0.0]),
            &[0],
            ReduceKind::LogSumExp,
        );
        assert!((lse.data[0] - 2f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn softmax_rows_sum_to_one_along_any_axis() {
        let x = t(&[2, 3, 4]);
        for axis in 0..3 {
            let y = softmax(&x, axis);
            let s = reduce(&y, &[axis], ReduceKind::Sum);
            assert!(s.data.iter().all(|v| (v - 1.0).abs() < 1e-5), "axis {axis}");
        }
        let y = softmax(&Tensor::new(vec![3], vec![1.0, 2.0, 3.0]), 0);
        let e: Vec<f32> = [1f32, 2.0, 3.0].iter().map(|v| v.exp()).collect();
        let z: f32 = e.iter().sum();
        for (a, b) in y.data.iter().zip(&e) {
            assert!((a - b / z).abs() < 1e-6);
        }
    }

    #[test]
    fn concat_both_modes() {
        let a = t(&[1, 2, 2]);
        let b = Tensor::new(vec![1, 1, 2], vec![9.0, 8.0]);
        let c = concat(&[&a, &b], 1, &[1, 3, 2]);
        assert_eq!(c.data, vec![0.0, 1.0, 2.0, 3.0, 9.0, 8.0]);
        let d = Tensor::new(vec![1, 2, 2], vec![10.0, 11.0, 12.0, 13.0]);
        let e = concat_interleave(&[&a, &d], 1, &[1, 4, 2]);
        assert_eq!(e.data, vec![0.0, 1.0, 10.0, 11.0, 2.0, 3.0, 12.0, 13.0]);
    }
}
