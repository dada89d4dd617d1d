//! Rotary position embedding (RoFormer, Su et al. 2021) over a sequence, GGUF `llama` convention:
//! adjacent pairs `(x[2i], x[2i+1])` of every head rotate by `theta_i = pos * base^(-2i / hd)`.

use super::Real;

/// The rotation angles of a run of positions: `cos, sin: [T][hd / 2]`. Built once per sequence
/// and shared by Q and K of every layer; it is all [`rope_backward`] needs.
#[derive(Debug, Clone)]
pub struct RopeTable<R> {
    pub head_dim: usize,
    pub cos: Vec<R>,
    pub sin: Vec<R>,
}

impl<R: Real> RopeTable<R> {
    /// Angles of positions `pos0 .. pos0 + seq_len`, computed in f64 like
    /// [`crate::ops::rope_angles`].
    pub fn new(seq_len: usize, head_dim: usize, pos0: usize, base: f64) -> Self {
        assert!(
            head_dim.is_multiple_of(2),
            "rope: head_dim {head_dim} is odd"
        );
        let half = head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(seq_len * half), Vec::new());
        for pos in pos0..pos0 + seq_len {
            for i in 0..half {
                let freq = base.powf(-2.0 * i as f64 / head_dim as f64);
                let theta = pos as f64 * freq;
                cos.push(R::of(theta.cos()));
                sin.push(R::of(theta.sin()));
            }
        }
        RopeTable { head_dim, cos, sin }
    }

    /// Number of positions.
    pub fn seq_len(&self) -> usize {
        self.cos.len() / (self.head_dim / 2)
    }
}

/// Rotate every head of every token by its position's angles, `sign = 1` forward and `-1` for the
/// inverse rotation. Shapes: `x, y: [T, n_heads * hd]`.
fn rotate<R: Real>(x: &[R], table: &RopeTable<R>, sign: R) -> Vec<R> {
    let (hd, half) = (table.head_dim, table.head_dim / 2);
    let seq_len = table.seq_len();
    assert_eq!(
        x.len() % (seq_len * hd),
        0,
        "rope: x is not [{seq_len}, n * {hd}]"
    );
    let width = x.len() / seq_len;
    let mut y = vec![R::zero(); x.len()];
    for t in 0..seq_len {
        let cos = &table.cos[t * half..(t + 1) * half];
        let sin = &table.sin[t * half..(t + 1) * half];
        let (xt, yt) = (
            &x[t * width..(t + 1) * width],
            &mut y[t * width..(t + 1) * width],
        );
        for (xh, yh) in xt.chunks_exact(hd).zip(yt.chunks_exact_mut(hd)) {
            for i in 0..half {
                let (x0, x1) = (xh[2 * i], xh[2 * i + 1]);
                let s = sign * sin[i];
                yh[2 * i] = x0 * cos[i] - x1 * s;
                yh[2 * i + 1] = x0 * s + x1 * cos[i];
            }
        }
    }
    y
}

/// `y = R(theta_pos) x` per head and token, as [`crate::ops::rope_apply`].
/// Shapes: `x, y: [T, n_heads * hd]` with `T = table.seq_len()`.
pub fn rope<R: Real>(x: &[R], table: &RopeTable<R>) -> Vec<R> {
    rotate(x, table, R::one())
}

/// Backward of [`rope`]: a rotation is orthogonal, so `dx = R(theta)^T dy = R(-theta) dy`.
pub fn rope_backward<R: Real>(dy: &[R], table: &RopeTable<R>) -> Vec<R> {
    rotate(dy, table, -R::one())
}
