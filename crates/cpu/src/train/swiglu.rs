//! SwiGLU (Shazeer 2020): `h = silu(gate) * up`.

use super::Real;

/// `silu(x) = x * sigmoid(x)`, written `x / (1 + e^-x)` as [`crate::ops::silu`].
#[inline]
pub fn silu<R: Real>(x: R) -> R {
    x / (R::one() + (-x).exp())
}

/// `h[i] = silu(gate[i]) * up[i]`. Shapes: `gate, up, h: [T, ffn]`. The backward needs only the
/// inputs, so there is no cache.
pub fn swiglu<R: Real>(gate: &[R], up: &[R]) -> Vec<R> {
    assert_eq!(gate.len(), up.len());
    gate.iter().zip(up).map(|(&g, &u)| silu(g) * u).collect()
}

/// Backward of [`swiglu`]: returns `(dgate, dup)`.
/// `dup = dh * silu(g)`, `dgate = dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g)))`.
pub fn swiglu_backward<R: Real>(dh: &[R], gate: &[R], up: &[R]) -> (Vec<R>, Vec<R>) {
    assert_eq!(dh.len(), gate.len());
    assert_eq!(dh.len(), up.len());
    let mut dgate = vec![R::zero(); dh.len()];
    let mut dup = vec![R::zero(); dh.len()];
    for i in 0..dh.len() {
        let (g, u, d) = (gate[i], up[i], dh[i]);
        let sig = R::one() / (R::one() + (-g).exp());
        dup[i] = d * g * sig;
        dgate[i] = d * u * sig * (R::one() + g * (R::one() - sig));
    }
    (dgate, dup)
}
