//! Float products of a block of weight rows with a chunk of tokens, for prompt chunks.
//!
//! `rt[i][t] = sum_c w[i][c] * x[t][c]` for `w: [nr][cols]` (row-major f32: the rows as
//! converted from their stored type) and `x: [n_tok][cols]`. The tokens are laid out once
//! per product ([`Tokens`]: slabs of up to [`SLAB`] tokens, column-major, so the 16 lanes of
//! a vector are 16 tokens); the kernel keeps a tile of six rows × up to four token vectors in
//! registers and, per column, loads the token vectors once, broadcasts each row's weight and
//! does the fused multiply-adds. The weights are read row by row as they are; the columns go
//! in blocks so that a slab's tokens stay in the L1 cache while every row runs over them.
//!
//! Ours rather than the `gemm` crate's: that crate packs both operands into its layout on
//! every call, and for a prefill chunk of 64 tokens the weights' packing cost about as much
//! as the arithmetic (seed shape F16 pp64 on 2 threads: 23% of the time in its packing, 33%
//! in its microkernel); here only the tokens, a small fraction of the data, are laid out.
//!
//! **Every output is one plain fused multiply-add chain**, `acc = fma(w[c], x[c], acc)` for
//! `c = 0, 1, …` from +0 ([`portable::dot`]), whatever tile or column block it falls in (a
//! chain continues from its stored value, and an f32 stored and loaded back is the same f32):
//! a token's result does not depend on how many tokens share the chunk, so a prompt gives
//! bitwise the same logits however it is cut into chunks.

/// Most tokens per slab of [`Tokens`]: four vectors of 16.
pub const SLAB: usize = 64;

/// Tokens per vector.
const LANES: usize = 16;

/// True when the SIMD kernel runs on this CPU (AVX-512 F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A chunk of tokens laid out for [`products`]: slabs of up to [`SLAB`] tokens, each
/// `[cols][width]` with `width` its token count rounded up to 16 (zeros past the last token).
pub struct Tokens {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the x86 kernel only
    data: Vec<f32>,
    cols: usize,
    n_tok: usize,
}

impl Tokens {
    /// Lay out `x: [n_tok][cols]` (in parallel on the current rayon pool, sixteen columns
    /// per task).
    pub fn new(x: &[f32], cols: usize, n_tok: usize) -> Self {
        use rayon::prelude::*;
        assert_eq!(x.len(), n_tok * cols, "tiles::Tokens: shape");
        let mut data = vec![0f32; n_tok.next_multiple_of(LANES) * cols];
        for s in 0..n_tok.div_ceil(SLAB) {
            let (t0, width) = Self::slab(s, n_tok);
            let n = SLAB.min(n_tok - t0);
            let slab = &mut data[t0 * cols..(t0 + width) * cols];
            // Each task: columns c0..c0 + 16, `[16][width]`; its reads stay in sixteen
            // lines per token and its writes go in order.
            slab.par_chunks_mut(16 * width)
                .enumerate()
                .for_each(|(b, block)| {
                    let c0 = 16 * b;
                    for (t, xt) in x[t0 * cols..].chunks_exact(cols).take(n).enumerate() {
                        for (c, &v) in xt[c0..].iter().take(16).enumerate() {
                            block[c * width + t] = v;
                        }
                    }
                });
        }
        Self { data, cols, n_tok }
    }

    /// First token and width (token count rounded up to 16) of slab `s`.
    fn slab(s: usize, n_tok: usize) -> (usize, usize) {
        let t0 = s * SLAB;
        (t0, (n_tok - t0).min(SLAB).next_multiple_of(LANES))
    }

    pub fn n_tok(&self) -> usize {
        self.n_tok
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// `rt[i * n_tok + t] = sum_c w[i * cols + c] * x[t * cols + c]` (see the module docs).
///
/// Memory traffic that would otherwise wait until the arithmetic is done is asked for while
/// it runs: `ahead` (e.g. the stored rows the caller converts next), and with `streamed`
/// (`w` is where the weights are stored, not a cache-resident copy) each tile's rows in the
/// next block of columns.
///
/// # Panics
/// If [`available`] is false, or `w` and `rt` do not have the shapes above.
pub fn products(w: &[f32], x: &Tokens, rt: &mut [f32], ahead: &[u8], streamed: bool) {
    let (cols, n_tok) = (x.cols, x.n_tok);
    assert!(cols > 0, "tiles::products: no columns");
    let nr = w.len() / cols;
    assert_eq!(w.len(), nr * cols, "tiles::products: weight shape");
    assert_eq!(rt.len(), nr * n_tok, "tiles::products: output shape");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512 F detected; the shapes are checked above and `Tokens` holds its
        // slabs as `Tokens::slab` describes them.
        unsafe { avx512::products(w, x, rt, ahead, streamed) };
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, x, rt, ahead, streamed);
    panic!("tiles::products: no AVX-512 F on this CPU");
}

/// The reference arithmetic of one output.
pub mod portable {
    /// `sum_c w[c] * x[c]` as one fused multiply-add chain from +0: the kernel's arithmetic.
    pub fn dot(w: &[f32], x: &[f32]) -> f32 {
        assert_eq!(w.len(), x.len(), "tiles::portable::dot: length");
        w.iter().zip(x).fold(0.0, |acc, (&a, &b)| a.mul_add(b, acc))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tokens, LANES, SLAB};
    use std::arch::x86_64::*;

    /// Weight rows per tile.
    const NR: usize = 6;

    /// Columns per block: a slab's tokens over this many columns (32 KB for 64 tokens) stay in
    /// the L1 cache while every row tile runs over them.
    const COLS_PER_BLOCK: usize = 128;

    /// Where a tile reads and writes.
    #[derive(Clone, Copy)]
    struct At {
        /// First row, at the block's first column; rows `cols` f32 apart.
        w: *const f32,
        /// First token vector, at the block's first column: `[len][16 V]`.
        x: *const f32,
        /// Output of the first row and token; rows `ld` f32 apart.
        rt: *mut f32,
        cols: usize,
        ld: usize,
        /// Columns in this block.
        len: usize,
        /// Lanes of the last token vector that are tokens.
        last: __mmask16,
        /// Continue the chains from the values in `rt` (else from +0).
        resume: bool,
    }

    /// One tile: `R` rows × `V` token vectors over one block of columns.
    ///
    /// # Safety
    /// AVX-512 F; `at` addresses `R` rows with `len` columns, `16 V len` token values, and
    /// an output whose positions for those rows and tokens (the last vector's masked) exist.
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const V: usize>(at: At) {
        let mask = |v: usize| if v + 1 == V { at.last } else { 0xffff };
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        if at.resume {
            #[allow(clippy::needless_range_loop)] // constant indices keep `acc` in registers
            for i in 0..R {
                for v in 0..V {
                    let o = at.rt.add(i * at.ld + v * LANES);
                    acc[i][v] = _mm512_maskz_loadu_ps(mask(v), o);
                }
            }
        }
        for c in 0..at.len {
            let mut xv = [_mm512_setzero_ps(); V];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = _mm512_loadu_ps(at.x.add((c * V + v) * LANES));
            }
            #[allow(clippy::needless_range_loop)]
            for i in 0..R {
                let wi = _mm512_set1_ps(*at.w.add(i * at.cols + c));
                for v in 0..V {
                    acc[i][v] = _mm512_fmadd_ps(wi, xv[v], acc[i][v]);
                }
            }
        }
        #[allow(clippy::needless_range_loop)]
        for i in 0..R {
            for v in 0..V {
                _mm512_mask_storeu_ps(at.rt.add(i * at.ld + v * LANES), mask(v), acc[i][v]);
            }
        }
    }

    /// A tile of `R` rows and `v` token vectors (1 ≤ v ≤ 4).
    ///
    /// # Safety
    /// As [`tile`].
    #[target_feature(enable = "avx512f")]
    unsafe fn vectors<const R: usize>(at: At, v: usize) {
        match v {
            1 => tile::<R, 1>(at),
            2 => tile::<R, 2>(at),
            3 => tile::<R, 3>(at),
            4 => tile::<R, 4>(at),
            _ => unreachable!("a slab holds one to four vectors"),
        }
    }

    /// # Safety
    /// AVX-512 F; `w: [nr][cols]`, `rt: [nr][n_tok]` (checked by the caller).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn products(w: &[f32], x: &Tokens, rt: &mut [f32], ahead: &[u8], streamed: bool) {
        let (cols, n_tok) = (x.cols, x.n_tok);
        let nr = w.len() / cols;
        // `ahead`'s cache lines, spread evenly over the tiles.
        let tiles = n_tok.div_ceil(SLAB) * cols.div_ceil(COLS_PER_BLOCK) * nr.div_ceil(NR);
        let per_tile = ahead.len().div_ceil(64).div_ceil(tiles.max(1));
        let mut lines = ahead.chunks(64).map(|l| l.as_ptr() as *const i8);
        for s in 0..n_tok.div_ceil(SLAB) {
            let (t0, width) = Tokens::slab(s, n_tok);
            let v = width / LANES;
            let in_last = n_tok - t0 - LANES * (v - 1);
            let last = ((1u32 << in_last.min(LANES)) - 1) as __mmask16;
            for k0 in (0..cols).step_by(COLS_PER_BLOCK) {
                for i in (0..nr).step_by(NR) {
                    let at = At {
                        w: w.as_ptr().add(i * cols + k0),
                        x: x.data.as_ptr().add(t0 * cols + k0 * width),
                        rt: rt.as_mut_ptr().add(i * n_tok + t0),
                        cols,
                        ld: n_tok,
                        len: COLS_PER_BLOCK.min(cols - k0),
                        last,
                        resume: k0 > 0,
                    };
                    for p in lines.by_ref().take(per_tile) {
                        _mm_prefetch::<_MM_HINT_T1>(p);
                    }
                    // This tile's rows in the next block of columns.
                    if streamed && k0 + COLS_PER_BLOCK < cols {
                        for r in i..(i + NR).min(nr) {
                            let row = w.as_ptr().add(r * cols + k0 + COLS_PER_BLOCK) as *const i8;
                            for l in (0..4 * COLS_PER_BLOCK).step_by(64) {
                                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(l));
                            }
                        }
                    }
                    match NR.min(nr - i) {
                        1 => vectors::<1>(at, v),
                        2 => vectors::<2>(at, v),
                        3 => vectors::<3>(at, v),
                        4 => vectors::<4>(at, v),
                        5 => vectors::<5>(at, v),
                        6 => vectors::<6>(at, v),
                        _ => unreachable!("one to six rows per tile"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every output of the SIMD kernel is bitwise the portable arithmetic, for whole and
    /// partial tiles of rows, one to four slabs with partial vectors, and column counts with
    /// a partial block.
    #[test]
    fn kernel_is_bitwise_the_portable_arithmetic() {
        if !available() {
            eprintln!("tiles: no AVX-512 F here; the SIMD kernel is not exercised");
            assert!(
                std::env::var_os("ESPRESSO_EXPECT_TILES").is_none(),
                "ESPRESSO_EXPECT_TILES is set but the kernel cannot run"
            );
            return;
        }
        for (nr, n_tok, cols) in [
            (1, 1, 1),
            (6, 16, 16),
            (13, 17, 33),
            (7, 64, 96),
            (5, 11, 15),
            (12, 70, 77),
            (8, 200, 9),
            (11, 70, 300),
        ] {
            let w = values(nr * cols, nr as u64);
            let x = values(n_tok * cols, cols as u64);
            let mut rt = vec![f32::NAN; nr * n_tok];
            let streamed = cols % 2 == 0;
            products(&w, &Tokens::new(&x, cols, n_tok), &mut rt, &[], streamed);
            for i in 0..nr {
                for t in 0..n_tok {
                    let want =
                        portable::dot(&w[i * cols..(i + 1) * cols], &x[t * cols..(t + 1) * cols]);
                    assert_eq!(
                        rt[i * n_tok + t].to_bits(),
                        want.to_bits(),
                        "nr={nr} n_tok={n_tok} cols={cols} ({i}, {t})"
                    );
                }
            }
        }
    }

    /// The portable arithmetic is a dot product (within f32 rounding of an f64 sum).
    #[test]
    fn portable_dot_is_a_dot_product() {
        let (w, x) = (values(1001, 1), values(1001, 2));
        let plain: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
        let got = portable::dot(&w, &x) as f64;
        assert!((got - plain).abs() < 1e-4, "{got} vs {plain}");
    }
}
