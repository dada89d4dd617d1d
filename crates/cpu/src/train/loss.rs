//! Mean token cross-entropy from logits, through a numerically stable log-softmax.

use super::{Real, TrainError};

/// A target equal to this is not predicted (no loss, no gradient), like PyTorch's `ignore_index`;
/// e.g. prompt tokens when only assistant tokens carry loss.
pub const IGNORE_INDEX: u32 = u32::MAX;

/// What [`cross_entropy_backward`] needs beyond the logits and targets.
#[derive(Debug, Clone)]
pub struct CrossEntropyCache<R> {
    /// `log(sum_v exp(logits[t][v]))` of every token: `[T]`.
    pub log_sum_exp: Vec<R>,
    /// Number of targets that are not [`IGNORE_INDEX`] (the mean's denominator).
    pub count: usize,
}

/// `loss = (1 / N) sum_t -log softmax(logits[t])[targets[t]]` over the `N` targets that are not
/// [`IGNORE_INDEX`] (0 if there are none). `log softmax(l)[y] = l[y] - (m + log sum_v e^(l[v]-m))`
/// with `m = max_v l[v]`, so nothing overflows. Shapes: `logits: [T, V]`, `targets: [T]`.
pub fn cross_entropy<R: Real>(
    logits: &[R],
    vocab: usize,
    targets: &[u32],
) -> Result<(R, CrossEntropyCache<R>), TrainError> {
    assert_eq!(
        logits.len(),
        targets.len() * vocab,
        "cross_entropy: logits are not [T, {vocab}]"
    );
    let mut log_sum_exp = Vec::with_capacity(targets.len());
    let (mut total, mut count) = (0f64, 0usize);
    for (pos, (lt, &y)) in logits.chunks_exact(vocab).zip(targets).enumerate() {
        let m = lt.iter().fold(R::neg_infinity(), |a, &v| a.max(v));
        let sum: f64 = lt.iter().map(|&v| (v - m).exp().f64()).sum();
        let lse = m.f64() + sum.ln();
        log_sum_exp.push(R::of(lse));
        if y == IGNORE_INDEX {
            continue;
        }
        let Some(&ly) = lt.get(y as usize) else {
            return Err(TrainError::TargetOutOfRange {
                target: y,
                pos,
                vocab,
            });
        };
        total += lse - ly.f64();
        count += 1;
    }
    let loss = if count == 0 {
        0.0
    } else {
        total / count as f64
    };
    Ok((R::of(loss), CrossEntropyCache { log_sum_exp, count }))
}

/// Backward of [`cross_entropy`]: `dlogits[t][v] = dloss * (softmax(logits[t])[v] - [v == y_t]) / N`
/// for counted targets, 0 for ignored ones. Returns `dlogits: [T, V]`.
pub fn cross_entropy_backward<R: Real>(
    dloss: R,
    logits: &[R],
    targets: &[u32],
    cache: &CrossEntropyCache<R>,
) -> Vec<R> {
    let vocab = logits.len() / targets.len().max(1);
    assert_eq!(logits.len(), targets.len() * vocab);
    assert_eq!(cache.log_sum_exp.len(), targets.len());
    let mut dlogits = vec![R::zero(); logits.len()];
    if cache.count == 0 {
        return dlogits;
    }
    let scale = dloss / R::of(cache.count as f64);
    let rows = logits
        .chunks_exact(vocab)
        .zip(dlogits.chunks_exact_mut(vocab));
    for ((lt, dt), (&y, &lse)) in rows.zip(targets.iter().zip(&cache.log_sum_exp)) {
        if y == IGNORE_INDEX {
            continue;
        }
        for (d, &l) in dt.iter_mut().zip(lt) {
            *d = (l - lse).exp() * scale;
        }
        if let Some(d) = dt.get_mut(y as usize) {
            *d -= scale;
        }
    }
    dlogits
}

/// [`cross_entropy`] and [`cross_entropy_backward`] in one pass for training: overwrites
/// `logits: [T, V]` with `scale · ∂(Σ_t loss_t)/∂logits` (rows of ignored targets become 0) and
/// returns `(Σ_t loss_t, counted targets)`. Each logit is exponentiated once and rows run in
/// parallel on the current rayon pool, so the `[T, V]` buffer is read twice instead of four
/// times and never copied.
pub fn cross_entropy_grad<R: Real>(
    logits: &mut [R],
    vocab: usize,
    targets: &[u32],
    scale: R,
) -> Result<(f64, usize), TrainError> {
    use rayon::prelude::*;
    assert_eq!(
        logits.len(),
        targets.len() * vocab,
        "cross_entropy_grad: logits are not [T, {vocab}]"
    );
    if let Some((pos, &y)) = targets
        .iter()
        .enumerate()
        .find(|(_, &y)| y != IGNORE_INDEX && y as usize >= vocab)
    {
        return Err(TrainError::TargetOutOfRange {
            target: y,
            pos,
            vocab,
        });
    }
    let per_row = logits
        .par_chunks_mut(vocab)
        .zip(targets.par_iter())
        .map(|(row, &y)| {
            if y == IGNORE_INDEX {
                row.iter_mut().for_each(|v| *v = R::zero());
                return (0.0, 0);
            }
            // Eight independent lanes for the maximum and the sum, so neither is one long
            // dependency chain and both vectorize.
            const L: usize = 8;
            let mut lanes = [R::neg_infinity(); L];
            let chunks = row.chunks_exact(L);
            let tail = chunks
                .remainder()
                .iter()
                .fold(R::neg_infinity(), |a, &v| a.max(v));
            for c in chunks {
                for (l, &v) in lanes.iter_mut().zip(c) {
                    *l = l.max(v);
                }
            }
            let m = lanes.iter().fold(tail, |a, &v| a.max(v));
            let ly = row[y as usize];
            let mut sums = [R::zero(); L];
            let mut chunks = row.chunks_exact_mut(L);
            for c in &mut chunks {
                for (s, v) in sums.iter_mut().zip(c) {
                    *v = (*v - m).exp_nonpositive();
                    *s += *v;
                }
            }
            let mut sum: f64 = sums.iter().map(|s| s.f64()).sum();
            for v in chunks.into_remainder() {
                *v = (*v - m).exp_nonpositive();
                sum += v.f64();
            }
            let lse = m.f64() + sum.ln();
            let k = scale / R::of(sum);
            row.iter_mut().for_each(|v| *v *= k);
            row[y as usize] -= scale;
            (lse - ly.f64(), 1usize)
        })
        .collect::<Vec<_>>();
    Ok(per_row
        .into_iter()
        .fold((0.0, 0), |(s, n), (l, c)| (s + l, n + c)))
}
