//! Lane sharing: identical lanes are computed once.
//!
//! An ANE kernel runs over `L` lanes (the last axis of its activation surfaces), and the
//! hardware computes every lane even when the host uses one: a decode step carries one
//! token in lane 0 and `L − 1` idle lanes that all hold the same values. The simulator
//! finds lanes whose inputs are bitwise identical at run time and, where the program lets
//! it, computes each class of identical lanes once, then writes the result into every lane
//! of the class. That is exact, not an approximation: every lane-wise op applies the same
//! arithmetic to each lane, so identical lanes in give identical lanes out, and every lane
//! of the output (idle ones included) holds what computing all `L` lanes gives — the test
//! `lane_sharing_is_bitwise_computing_every_lane` and the kernel tests in `ane-llm` check
//! it bit for bit.
//!
//! **Which inputs carry lanes**: the first input's last axis is the lane axis (2 to 64
//! lanes: the ANE's decode widths; wider kernels compute every lane); every input
//! whose last axis has that size carries lanes (a K/V cache whose length happens to equal
//! `L` is then treated as lane-carrying too: its slots differ, so sharing simply finds
//! fewer identical lanes — never a wrong answer).
//!
//! **Following the lane axis through the program** ([`LanePlan::analyse`]): for each value
//! the analysis knows whether it has no lane axis ([`Lanes::Free`]), where its lane factor
//! sits ([`Lanes::At`]: dimension `dim` of size `outer · L · inner`), or that it lost track
//! ([`Lanes::Full`]). Lane-wise ops (elementwise with broadcasting, 1×1 conv, linear,
//! matmul rows/columns, softmax and reductions over other axes, slices that keep every
//! lane, reshapes and transposes that keep the lane factor in one dimension, concat along
//! another axis) run on the shared lanes. A matmul contracting over the lanes (the cache
//! blend) sums its `L` terms with each term read from its class ([`Mode::Contract`]).
//! Every other op that mixes lanes (a reduction across them) runs at full size on its
//! operands expanded back to `L` lanes; its result has no lane axis (a contraction or a
//! reduction over the whole lane dimension) or stays at full size from then on.

use super::{Kind, Step};
use crate::gemm::{avx512f_available, FEW_K, SMALL_N};
use crate::tensor::{numel, take_buf, Tensor};

/// Where a value keeps its lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lanes {
    /// No lane axis: the same value whatever the lanes hold.
    Free,
    /// Dimension `dim` has size `outer · L · inner` and index `(o · L + lane) · inner + i`.
    At {
        dim: usize,
        outer: usize,
        inner: usize,
    },
    /// Has lanes the analysis cannot follow: held and computed at full size.
    Full,
}

/// How a step runs when lanes are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// On the shared lanes (shapes with `L'` lanes in place of `L`).
    Shared,
    /// At full size, on operands expanded back to `L` lanes.
    Expanded,
    /// A matmul contracting over the lanes, computed from the shared lanes: the sum over
    /// all `L` lanes, each term read from its class (`gemm::gemm_terms`).
    Contract,
}

/// The lane analysis of a program.
#[derive(Debug, Clone)]
pub(super) struct LanePlan {
    /// `L`: the lane count of the first input.
    pub lanes: usize,
    /// Per value index: where its lanes are.
    pub values: Vec<Lanes>,
    /// Per step: how it runs.
    pub modes: Vec<Mode>,
}

/// Lane classes of one evaluation: `reps[c]` is the first lane of class `c`, `class_of[j]`
/// the class of lane `j`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LaneClasses {
    pub reps: Vec<usize>,
    pub class_of: Vec<usize>,
}

/// `(before, after)`: the element counts outside the lane factor of `shape` in flat order,
/// so that the data is laid out as `[before, L, after]`.
fn split(shape: &[usize], dim: usize, outer: usize, inner: usize) -> (usize, usize) {
    (
        numel(&shape[..dim]) * outer,
        inner * numel(&shape[dim + 1..]),
    )
}

/// The dimension of `shape` holding a lane factor laid out as `[before, L, after]` in flat
/// order, if one dimension holds it whole.
fn locate(shape: &[usize], lanes: usize, after: usize) -> Option<Lanes> {
    if shape.contains(&0) {
        return None;
    }
    let mut suffix = 1; // numel(shape[i+1..])
    for dim in (0..shape.len()).rev() {
        let with = suffix * shape[dim];
        if with >= after * lanes {
            if !after.is_multiple_of(suffix) {
                return None;
            }
            let inner = after / suffix;
            if !shape[dim].is_multiple_of(lanes * inner) {
                return None;
            }
            return Some(Lanes::At {
                dim,
                outer: shape[dim] / (lanes * inner),
                inner,
            });
        }
        suffix = with;
    }
    None
}

/// `shape` with `shared` lanes in place of `L` (unchanged unless the value has [`Lanes::At`]).
pub(super) fn shared_shape(shape: &[usize], lanes: Lanes, shared: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let Lanes::At { dim, outer, inner } = lanes {
        s[dim] = outer * shared * inner;
    }
    s
}

impl LanePlan {
    /// Analyse `steps`; `shapes` holds the full shape of every value, `inputs` the value
    /// index of each program input. `None` when nothing could run on shared lanes.
    pub fn analyse(steps: &[Step], shapes: &[Vec<usize>], inputs: &[usize]) -> Option<Self> {
        let lanes = *shapes[*inputs.first()?].last()?;
        // Up to SMALL_N lanes every product over lanes runs the streaming kernel whatever
        // the lane count, so shared lanes compute exactly what all lanes do; above it the
        // full product would take the blocked GEMM (another summation order).
        if !(2..=SMALL_N).contains(&lanes) {
            return None;
        }
        let mut values = vec![Lanes::Free; shapes.len()];
        for &v in inputs {
            let s = &shapes[v];
            if s.last() == Some(&lanes) {
                values[v] = Lanes::At {
                    dim: s.len() - 1,
                    outer: 1,
                    inner: 1,
                };
            }
        }
        let mut modes = Vec::with_capacity(steps.len());
        for step in steps {
            let ins: Vec<(Lanes, &[usize])> = step
                .inputs
                .iter()
                .map(|&i| (values[i], shapes[i].as_slice()))
                .collect();
            let (mode, out) = rule(&step.kind, &ins, &step.shape, lanes);
            modes.push(mode);
            values[step.out] = out;
        }
        let useful = steps
            .iter()
            .zip(&modes)
            .any(|(s, &m)| m == Mode::Shared && matches!(values[s.out], Lanes::At { .. }));
        useful.then_some(Self {
            lanes,
            values,
            modes,
        })
    }

    /// Group the lanes of the lane-carrying `inputs` (value index, tensor) by bitwise
    /// equality across all of them.
    pub fn classes(&self, inputs: &[(usize, &Tensor)]) -> LaneClasses {
        let l = self.lanes;
        let carrying: Vec<&[f32]> = inputs
            .iter()
            .filter(|(v, _)| matches!(self.values[*v], Lanes::At { .. }))
            .map(|(_, t)| t.data.as_slice())
            .collect();
        // Column j of an input is data[r·L + j]: hash each lane, then confirm equality.
        let mut hash = vec![0xcbf2_9ce4_8422_2325u64; l];
        for data in &carrying {
            for row in data.chunks_exact(l) {
                for (h, &x) in hash.iter_mut().zip(row) {
                    *h = (*h ^ u64::from(x.to_bits())).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        let same = |a: usize, b: usize| {
            carrying.iter().all(|data| {
                data.chunks_exact(l)
                    .all(|row| row[a].to_bits() == row[b].to_bits())
            })
        };
        let mut reps: Vec<usize> = Vec::new();
        let mut class_of = Vec::with_capacity(l);
        for j in 0..l {
            let found = reps.iter().position(|&r| hash[r] == hash[j] && same(r, j));
            class_of.push(found.unwrap_or_else(|| {
                reps.push(j);
                reps.len() - 1
            }));
        }
        LaneClasses { reps, class_of }
    }
}

/// `[before, from, after]` → `[before, idx.len(), after]`: element `(b, i, a)` is
/// `src[b, idx[i], a]` (a pooled buffer).
fn pick(src: &[f32], from: usize, before: usize, after: usize, idx: &[usize]) -> Vec<f32> {
    let mut data = take_buf(before * idx.len() * after);
    if after == 1 {
        // Lanes last (activation surfaces): one value per lane.
        for row in src.chunks_exact(from).take(before) {
            data.extend(idx.iter().map(|&i| row[i]));
        }
        return data;
    }
    for b in 0..before {
        for &i in idx {
            let at = (b * from + i) * after;
            data.extend_from_slice(&src[at..at + after]);
        }
    }
    data
}

/// The representative lanes of `t` (full size, lanes `At`): `[before, L, after]` →
/// `[before, L', after]`.
pub(super) fn gather(t: &Tensor, lanes: Lanes, l: usize, cls: &LaneClasses) -> Tensor {
    let Lanes::At { dim, outer, inner } = lanes else {
        return t.clone();
    };
    let (before, after) = split(&t.shape, dim, outer, inner);
    let data = pick(&t.data, l, before, after, &cls.reps);
    Tensor::new(shared_shape(&t.shape, lanes, cls.reps.len()), data)
}

/// Every lane of `t` (shared lanes, `At`) written back: `[before, L', after]` →
/// `[before, L, after]` with `full_shape`.
pub(super) fn expand(t: &Tensor, full_shape: &[usize], lanes: Lanes, cls: &LaneClasses) -> Tensor {
    let Lanes::At { dim, outer, inner } = lanes else {
        return t.clone();
    };
    let (before, after) = split(full_shape, dim, outer, inner);
    let data = pick(&t.data, cls.reps.len(), before, after, &cls.class_of);
    Tensor::new(full_shape.to_vec(), data)
}

const EXPANDED_FULL: (Mode, Lanes) = (Mode::Expanded, Lanes::Full);

/// How `kind` runs and where its result keeps lanes, given its operands' lanes and shapes.
fn rule(kind: &Kind, ins: &[(Lanes, &[usize])], out: &[usize], l: usize) -> (Mode, Lanes) {
    if ins.iter().all(|(s, _)| *s == Lanes::Free) {
        return (Mode::Shared, Lanes::Free);
    }
    if ins.iter().any(|(s, _)| *s == Lanes::Full) {
        return EXPANDED_FULL;
    }
    let shared = |lanes: Lanes| (Mode::Shared, lanes);
    let only_first = || ins[1..].iter().all(|(s, _)| *s == Lanes::Free);
    match kind {
        Kind::Unary(_) | Kind::Cast => shared(ins[0].0),
        Kind::Binary(_) | Kind::Select => broadcast(ins, out).map_or(EXPANDED_FULL, shared),
        Kind::Conv { .. } => match ins[0].0 {
            Lanes::At { dim, outer, inner } if dim != 1 && only_first() => {
                shared(Lanes::At { dim, outer, inner })
            }
            _ => EXPANDED_FULL,
        },
        Kind::Linear | Kind::LayerNorm { .. } => {
            let axes: Vec<usize> = match kind {
                Kind::LayerNorm { axes, .. } => axes.clone(),
                _ => vec![ins[0].1.len() - 1],
            };
            match ins[0].0 {
                Lanes::At { dim, .. } if !axes.contains(&dim) && only_first() => shared(ins[0].0),
                _ => EXPANDED_FULL,
            }
        }
        Kind::Matmul { tx, ty } => matmul(ins, *tx, *ty, out.len(), l),
        Kind::Softmax { axis } => match ins[0].0 {
            Lanes::At { dim, .. } if dim != *axis => shared(ins[0].0),
            _ => EXPANDED_FULL,
        },
        Kind::Reduce { axes, .. } => {
            let Lanes::At { dim, outer, inner } = ins[0].0 else {
                return EXPANDED_FULL;
            };
            if axes.contains(&dim) {
                // The whole lane dimension is summed out.
                return (Mode::Expanded, Lanes::Free);
            }
            let mut kept = ins[0].1.to_vec();
            axes.iter().for_each(|&a| kept[a] = 1);
            let (_, after) = split(&kept, dim, outer, inner);
            locate(out, l, after).map_or(EXPANDED_FULL, shared)
        }
        Kind::Reshape => {
            let Lanes::At { dim, outer, inner } = ins[0].0 else {
                return EXPANDED_FULL;
            };
            let (_, after) = split(ins[0].1, dim, outer, inner);
            locate(out, l, after).map_or(EXPANDED_FULL, shared)
        }
        Kind::Transpose { perm } => match ins[0].0 {
            Lanes::At { dim, outer, inner } => match perm.iter().position(|&p| p == dim) {
                Some(to) => shared(Lanes::At {
                    dim: to,
                    outer,
                    inner,
                }),
                None => EXPANDED_FULL,
            },
            _ => EXPANDED_FULL,
        },
        Kind::Slice {
            begin,
            step,
            counts,
        } => match ins[0].0 {
            Lanes::At { dim, outer, inner }
                if begin[dim] == 0 && step[dim] == 1 && counts[dim] == ins[0].1[dim] =>
            {
                let (_, after) = split(counts, dim, outer, inner);
                locate(out, l, after).map_or(EXPANDED_FULL, shared)
            }
            _ => EXPANDED_FULL,
        },
        Kind::Concat { axis, .. } => {
            let first = ins[0];
            let same = ins.iter().all(|(s, shape)| {
                *s == first.0 && shape.len() == first.1.len() && {
                    let Lanes::At { dim, .. } = s else {
                        return false;
                    };
                    shape[*dim] == first.1[*dim]
                }
            });
            match first.0 {
                Lanes::At { dim, .. } if same && dim != *axis => shared(first.0),
                _ => EXPANDED_FULL,
            }
        }
    }
}

/// Elementwise with NumPy broadcasting: every lane-carrying operand must have the lane
/// dimension and everything after it exactly as the result has them (so the flat layout
/// after the lanes is the result's), and every lane-free operand size 1 at that dimension.
fn broadcast(ins: &[(Lanes, &[usize])], out: &[usize]) -> Option<Lanes> {
    let mut found: Option<Lanes> = None;
    for &(s, shape) in ins {
        let Lanes::At { dim, outer, inner } = s else {
            continue;
        };
        let at = dim + out.len() - shape.len();
        if shape[dim..] != out[at..] {
            return None;
        }
        let here = Lanes::At {
            dim: at,
            outer,
            inner,
        };
        if found.is_some_and(|f| f != here) {
            return None;
        }
        found = Some(here);
    }
    let Some(Lanes::At { dim: at, .. }) = found else {
        return None;
    };
    for &(s, shape) in ins {
        if s == Lanes::Free {
            let pad = out.len() - shape.len();
            if at >= pad && shape[at - pad] != 1 {
                return None;
            }
        }
    }
    found
}

/// Batched matmul `x · y` (optionally transposed): lanes in the rows of `x` or the columns
/// of `y` (the other operand lane-free) stay where they are; lanes in the contracted
/// dimension are summed out (run expanded, result lane-free); lanes in batch dimensions or
/// on both sides are not followed.
fn matmul(ins: &[(Lanes, &[usize])], tx: bool, ty: bool, rank: usize, l: usize) -> (Mode, Lanes) {
    let ((xs, xshape), (ys, yshape)) = (ins[0], ins[1]);
    let (rx, ry) = (xshape.len(), yshape.len());
    if rx < 2 || ry < 2 {
        return EXPANDED_FULL;
    }
    let (x_rows, x_inner) = if tx {
        (rx - 1, rx - 2)
    } else {
        (rx - 2, rx - 1)
    };
    let (y_inner, y_cols) = if ty {
        (ry - 1, ry - 2)
    } else {
        (ry - 2, ry - 1)
    };
    let contracted = |s: Lanes, inner_dim: usize| match s {
        Lanes::At { dim, .. } => dim == inner_dim,
        _ => true,
    };
    if contracted(xs, x_inner) && contracted(ys, y_inner) {
        // From the shared lanes where the short-contraction kernel computes it — the one
        // `gemm` itself uses for it (or the streaming kernel, the same FMA chains): exactly
        // `L` terms, one matrix, `y` row-major.
        let whole = |s: Lanes| match s {
            Lanes::At { outer, inner, .. } => outer == 1 && inner == 1,
            _ => true,
        };
        let single = xshape[..rx - 2]
            .iter()
            .chain(&yshape[..ry - 2])
            .all(|&d| d == 1);
        let by_terms = whole(xs) && whole(ys) && single && !ty && l <= FEW_K && avx512f_available();
        let mode = if by_terms {
            Mode::Contract
        } else {
            Mode::Expanded
        };
        return (mode, Lanes::Free);
    }
    match (xs, ys) {
        (Lanes::At { dim, outer, inner }, Lanes::Free) if dim == x_rows => (
            Mode::Shared,
            Lanes::At {
                dim: rank - 2,
                outer,
                inner,
            },
        ),
        (Lanes::Free, Lanes::At { dim, outer, inner }) if dim == y_cols => (
            Mode::Shared,
            Lanes::At {
                dim: rank - 1,
                outer,
                inner,
            },
        ),
        _ => EXPANDED_FULL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_the_dimension_holding_the_lane_factor() {
        // [1, D=6, 1, L=4]: lanes last.
        let at = |dim, outer, inner| Some(Lanes::At { dim, outer, inner });
        assert_eq!(locate(&[1, 6, 1, 4], 4, 1), at(3, 1, 1));
        // [1, 2, 4, 3] with lanes before the last axis (a transpose of the above).
        assert_eq!(locate(&[1, 2, 4, 3], 4, 3), at(2, 1, 1));
        // Lanes merged with a group axis: [1, 3, 2·4, 5], lanes inside dim 2 with outer 2.
        assert_eq!(locate(&[1, 3, 8, 5], 4, 5), at(2, 2, 1));
        // Lanes merged with the axis after them: [1, 4·5] with after = 5.
        assert_eq!(locate(&[1, 20], 4, 5), at(1, 1, 5));
        // Lane factor split over two dimensions: [2, 2, 3] with L = 4, after = 3.
        assert_eq!(locate(&[2, 2, 3], 4, 3), None);
    }

    #[test]
    fn shared_shape_and_expand_round_trip() {
        // [2, L=3, 2] with lanes 0 and 2 identical.
        let lanes = Lanes::At {
            dim: 1,
            outer: 1,
            inner: 1,
        };
        let full = Tensor::new(
            vec![2, 3, 2],
            vec![1., 2., 3., 4., 1., 2., 5., 6., 7., 8., 5., 6.],
        );
        let cls = LaneClasses {
            reps: vec![0, 1],
            class_of: vec![0, 1, 0],
        };
        let g = gather(&full, lanes, 3, &cls);
        assert_eq!(g.shape, vec![2, 2, 2]);
        assert_eq!(g.data, vec![1., 2., 3., 4., 5., 6., 7., 8.]);
        assert_eq!(expand(&g, &full.shape, lanes, &cls), full);
    }
}
