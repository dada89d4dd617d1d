//! Token embedding: a table lookup, and its backward, a scatter-add.

use super::{Real, TrainError};

fn check_tokens(tokens: &[u32], vocab: usize) -> Result<(), TrainError> {
    match tokens.iter().position(|&t| t as usize >= vocab) {
        Some(pos) => Err(TrainError::TokenOutOfRange {
            token: tokens[pos],
            pos,
            vocab,
        }),
        None => Ok(()),
    }
}

/// `x[t] = table[tokens[t]]`. Shapes: `table: [V, D]`, `tokens: [T]`, `x: [T, D]`.
pub fn embedding<R: Real>(table: &[R], dim: usize, tokens: &[u32]) -> Result<Vec<R>, TrainError> {
    assert_eq!(table.len() % dim, 0, "embedding: table is not [V, {dim}]");
    check_tokens(tokens, table.len() / dim)?;
    let mut x = Vec::with_capacity(tokens.len() * dim);
    for &tok in tokens {
        let row = tok as usize * dim;
        x.extend_from_slice(&table[row..row + dim]);
    }
    Ok(x)
}

/// Backward of [`embedding`]: `dtable[tokens[t]] += dx[t]` (a token seen twice gets both rows).
/// Shapes: `dx: [T, D]`, `dtable: [V, D]`.
pub fn embedding_backward<R: Real>(
    dx: &[R],
    tokens: &[u32],
    dim: usize,
    dtable: &mut [R],
) -> Result<(), TrainError> {
    assert_eq!(dx.len(), tokens.len() * dim);
    assert_eq!(dtable.len() % dim, 0);
    check_tokens(tokens, dtable.len() / dim)?;
    for (&tok, dxt) in tokens.iter().zip(dx.chunks_exact(dim)) {
        let row = &mut dtable[tok as usize * dim..(tok as usize + 1) * dim];
        for (g, &d) in row.iter_mut().zip(dxt) {
            *g += d;
        }
    }
    Ok(())
}
