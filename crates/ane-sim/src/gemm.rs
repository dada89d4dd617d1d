//! f32 GEMM for the simulator: `C[m,n] = A[m,k] · B[k,n]` with arbitrary strides, fp32
//! accumulation, split over rows of `C` with rayon.
//!
//! Two kernels: `matrixmultiply`'s cache-blocked SIMD GEMM in general, and for the ANE's
//! typical 1×1 conv over few lanes (n ≤ 64: decode steps, classifier heads) a streaming
//! kernel that reads each weight row once and keeps the lanes in registers — there the
//! blocked GEMM spends most of its time packing the big weight matrix.

use rayon::prelude::*;

/// A strided read-only matrix view: element (i, j) is `data[i·row_stride + j·col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major `[rows, cols]`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Largest element index the view can touch, or `None` for an empty view.
    fn max_index(&self) -> Option<usize> {
        if self.rows == 0 || self.cols == 0 {
            return None;
        }
        Some((self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride)
    }

    fn fits(&self) -> bool {
        match self.max_index() {
            None => true,
            Some(i) => i < self.data.len(),
        }
    }
}

/// Work (m·n·k) below which one thread is used.
pub(crate) const PARALLEL_MIN_WORK: usize = 1 << 18;

/// `c` (row-major `[a.rows, b.cols]`) = `a · b`.
///
/// Panics if the shapes disagree or a view reaches outside its slice (programming errors:
/// the interpreter checks shapes at compile time).
pub fn gemm(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm inner dimensions differ");
    assert_eq!(c.len(), m * n, "gemm output size");
    assert!(a.fits() && b.fits(), "gemm view outside its data");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let streaming = n <= SMALL_N
        && a.col_stride == 1
        && b.col_stride == 1
        && b.row_stride == n
        && a.row_stride >= k;
    // Short contractions over many columns (attention scores over the cache, the cache
    // blend over lanes): one FMA chain per output over the terms that can change it.
    let few_k = (!streaming && k <= FEW_K && b.col_stride == 1 && avx512f_available())
        .then(|| live_terms(a, b, (0..k).map(|p| (p, p))));
    let block = |r0: usize, rows: usize, c_blk: &mut [f32]| {
        if streaming {
            small_n_rows(a, r0, rows, b.data, n, c_blk);
        } else if let Some(live) = &few_k {
            few_k_rows(a, r0, rows, b, live, c_blk);
        } else {
            gemm_block(a, r0, rows, b, c_blk);
        }
    };
    if m * n * k < PARALLEL_MIN_WORK || threads == 1 || m < 2 {
        block(0, m, c);
        return;
    }
    // Row blocks of C: a few per thread for balance, at least 16 rows each.
    let rows_per = m.div_ceil(threads * 2).max(16);
    c.par_chunks_mut(rows_per * n)
        .enumerate()
        .for_each(|(blk, c_blk)| {
            let r0 = blk * rows_per;
            let rows = c_blk.len() / n;
            block(r0, rows, c_blk);
        });
}

/// Widest `n` handled by the streaming kernel.
pub(crate) const SMALL_N: usize = 64;

/// Rows `r0 .. r0 + rows` of `a · x` for a row-major `x` `[k, n]` with n ≤ [`SMALL_N`].
fn small_n_rows(a: MatRef<'_>, r0: usize, rows: usize, x: &[f32], n: usize, c: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { small_n_rows_avx512(a, r0, rows, x, n, c) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above); the function only
            // uses safe slice indexing inside.
            unsafe { small_n_rows_avx2(a, r0, rows, x, n, c) };
            return;
        }
        stream_rows::<false>(a, r0, rows, x, n, c);
    }
    #[cfg(not(target_arch = "x86_64"))]
    stream_rows::<true>(a, r0, rows, x, n, c); // aarch64: FMA is baseline
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn small_n_rows_avx2(
    a: MatRef<'_>,
    r0: usize,
    rows: usize,
    x: &[f32],
    n: usize,
    c: &mut [f32],
) {
    stream_rows::<true>(a, r0, rows, x, n, c);
}

/// AVX-512 streaming kernel: four output rows × up to 64 lanes (16 accumulators) per
/// block. Every output is `fma(w[i], x[i, j], acc)` over i = 0..k in order — the same
/// operations, in the same order, as [`stream_rows`], so results are bit-identical.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn small_n_rows_avx512(
    a: MatRef<'_>,
    r0: usize,
    rows: usize,
    x: &[f32],
    n: usize,
    c: &mut [f32],
) {
    let k = a.cols;
    assert!(n <= SMALL_N && x.len() >= k * n && c.len() >= rows * n);
    assert!(rows == 0 || (r0 + rows - 1) * a.row_stride + k <= a.data.len());
    // Blocks of K_BLOCK inputs keep the slice of `x` in L1 while all rows stream past it;
    // accumulators round-trip through `c` in f32 between blocks (exact), so every output
    // still sees its FMAs in order i = 0..k.
    const K_BLOCK: usize = 96;
    let mut k0 = 0;
    while k0 < k {
        let kb = (k - k0).min(K_BLOCK);
        let first = k0 == 0;
        let mut r = 0;
        while r + 4 <= rows {
            // SAFETY: rows r0+r .. r0+r+4 of `a` and all of `x`, `c` are in bounds
            // (asserted above; `c` row r+3 ends at (r+4)·n ≤ rows·n; k0 + kb ≤ k).
            unsafe {
                rows_block_avx512::<4>(a, r0 + r, k0, kb, first, x, n, &mut c[r * n..(r + 4) * n])
            };
            r += 4;
        }
        while r < rows {
            // SAFETY: as above, for one row.
            unsafe {
                rows_block_avx512::<1>(a, r0 + r, k0, kb, first, x, n, &mut c[r * n..(r + 1) * n])
            };
            r += 1;
        }
        k0 += kb;
    }
}

/// `R` rows starting at `row` of `a · x` into `c` (`R·n` values), n ≤ 64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_block_avx512<const R: usize>(
    a: MatRef<'_>,
    row: usize,
    k0: usize,
    kb: usize,
    first: bool,
    x: &[f32],
    n: usize,
    c: &mut [f32],
) {
    use std::arch::x86_64::*;
    let nv = n.div_ceil(16);
    let mut masks = [0u16; 4];
    for (v, m) in masks.iter_mut().enumerate().take(nv) {
        let width = (n - v * 16).min(16);
        *m = if width == 16 {
            u16::MAX
        } else {
            (1u16 << width) - 1
        };
    }
    let xp = x.as_ptr();
    let wp = a.data.as_ptr();
    let cp = c.as_mut_ptr();
    // SAFETY: the caller guarantees rows row..row+R of `a` (k values each from
    // row·row_stride, and k0 + kb ≤ k) lie in `a.data`, `x` holds k·n values and `c` holds
    // R·n values. All loads/stores are masked to lanes < n (masked-off lanes are not
    // accessed).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        if !first {
            for (rr, acc_r) in acc.iter_mut().enumerate() {
                for v in 0..nv {
                    acc_r[v] = _mm512_maskz_loadu_ps(masks[v], cp.add(rr * n + v * 16));
                }
            }
        }
        macro_rules! run {
            ($nv:literal) => {
                for i in k0..k0 + kb {
                    let xr = xp.add(i * n);
                    let mut xv = [_mm512_setzero_ps(); $nv];
                    for v in 0..$nv {
                        xv[v] = _mm512_maskz_loadu_ps(masks[v], xr.add(v * 16));
                    }
                    for rr in 0..R {
                        let w = _mm512_set1_ps(*wp.add((row + rr) * a.row_stride + i));
                        for v in 0..$nv {
                            acc[rr][v] = _mm512_fmadd_ps(w, xv[v], acc[rr][v]);
                        }
                    }
                }
            };
        }
        match nv {
            1 => run!(1),
            2 => run!(2),
            3 => run!(3),
            _ => run!(4),
        }
        for (rr, acc_r) in acc.iter().enumerate() {
            for v in 0..nv {
                _mm512_mask_storeu_ps(cp.add(rr * n + v * 16), masks[v], acc_r[v]);
            }
        }
    }
}

#[inline(always)]
fn fmadd<const FMA: bool>(w: f32, x: f32, acc: f32) -> f32 {
    if FMA {
        w.mul_add(x, acc)
    } else {
        w * x + acc
    }
}

/// Streaming kernel: two output rows at a time, 32 lanes per register block.
#[inline(always)]
fn stream_rows<const FMA: bool>(
    a: MatRef<'_>,
    r0: usize,
    rows: usize,
    x: &[f32],
    n: usize,
    c: &mut [f32],
) {
    const W: usize = 32;
    let k = a.cols;
    let row = |r: usize| &a.data[(r0 + r) * a.row_stride..][..k];
    let mut r = 0;
    while r < rows {
        let pair = r + 1 < rows;
        let (w0, w1) = (row(r), if pair { row(r + 1) } else { row(r) });
        let mut j0 = 0;
        while j0 < n {
            let width = (n - j0).min(W);
            let mut acc0 = [0f32; W];
            let mut acc1 = [0f32; W];
            if width == W {
                for i in 0..k {
                    let xr = &x[i * n + j0..][..W];
                    let (p, q) = (w0[i], w1[i]);
                    for j in 0..W {
                        acc0[j] = fmadd::<FMA>(p, xr[j], acc0[j]);
                        acc1[j] = fmadd::<FMA>(q, xr[j], acc1[j]);
                    }
                }
            } else {
                for i in 0..k {
                    let xr = &x[i * n + j0..][..width];
                    let (p, q) = (w0[i], w1[i]);
                    for j in 0..width {
                        acc0[j] = fmadd::<FMA>(p, xr[j], acc0[j]);
                        acc1[j] = fmadd::<FMA>(q, xr[j], acc1[j]);
                    }
                }
            }
            c[r * n + j0..][..width].copy_from_slice(&acc0[..width]);
            if pair {
                c[(r + 1) * n + j0..][..width].copy_from_slice(&acc1[..width]);
            }
            j0 += W;
        }
        r += if pair { 2 } else { 1 };
    }
}

/// Longest contraction [`few_k_rows`] takes.
pub(crate) const FEW_K: usize = 64;

/// Whether this CPU has AVX-512F: the short-contraction kernel here and the few-lane panel
/// kernels (`crate::panels`) need it.
pub(crate) fn avx512f_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the term `a[:, ai] · b[bi, :]` can change a sum: all can but those whose row of
/// `b` is entirely +0.0 while the column of `a` is finite. Dropping such a term is exact:
/// it adds `a·(+0) = ±0` to the running sum, which leaves a nonzero sum unchanged, and a
/// sum that starts at +0 and is rounded to nearest is never −0, so a zero sum stays +0.
/// (A one-hot scatter over lanes, the cache blend, keeps one term per written slot.)
fn term_is_live(a: MatRef<'_>, b: MatRef<'_>, ai: usize, bi: usize) -> bool {
    let b_zero = (0..b.cols).all(|j| b.data[bi * b.row_stride + j * b.col_stride].to_bits() == 0);
    let a_finite = (0..a.rows).all(|i| a.data[i * a.row_stride + ai * a.col_stride].is_finite());
    !(b_zero && a_finite)
}

/// The live ones of `terms` (pairs `(column of a, row of b)`, in summation order).
fn live_terms(
    a: MatRef<'_>,
    b: MatRef<'_>,
    terms: impl Iterator<Item = (usize, usize)>,
) -> Vec<(usize, usize)> {
    let mut known: Vec<((usize, usize), bool)> = Vec::new();
    terms
        .filter(|&t| match known.iter().find(|(k, _)| *k == t) {
            Some(&(_, live)) => live,
            None => {
                let live = term_is_live(a, b, t.0, t.1);
                known.push((t, live));
                live
            }
        })
        .collect()
}

/// `c` (row-major `[a.rows, b.cols]`) = `Σ_t a[:, ai_t] · b[bi_t, :]` over `terms` in order,
/// dropping those that cannot change a sum ([`term_is_live`]): a contraction whose terms
/// repeat columns and rows (lanes shared by [`crate::program`]). `None` where the
/// short-contraction kernel does not exist ([`avx512f_available`]) or `b` is not row-major.
pub(crate) fn gemm_terms(
    a: MatRef<'_>,
    b: MatRef<'_>,
    terms: &[(usize, usize)],
    c: &mut [f32],
) -> Option<()> {
    if !avx512f_available() || b.col_stride != 1 || terms.len() > FEW_K {
        return None;
    }
    assert!(
        a.fits() && b.fits() && c.len() == a.rows * b.cols,
        "gemm_terms sizes"
    );
    assert!(terms.iter().all(|&(ai, bi)| ai < a.cols && bi < b.rows));
    let live = live_terms(a, b, terms.iter().copied());
    let (m, n) = (a.rows, b.cols);
    let threads = rayon::current_num_threads().max(1);
    if m * n * live.len() < PARALLEL_MIN_WORK || threads == 1 || m < 2 {
        few_k_rows(a, 0, m, b, &live, c);
        return Some(());
    }
    let rows_per = m.div_ceil(threads * 2).max(16);
    c.par_chunks_mut(rows_per * n)
        .enumerate()
        .for_each(|(blk, c_blk)| few_k_rows(a, blk * rows_per, c_blk.len() / n, b, &live, c_blk));
    Some(())
}

/// Rows `r0 .. r0 + rows` of `Σ_t a[:, ai_t] · b[bi_t, :]` (`b` with column stride 1):
/// every output is `fma(a[i, ai], b[bi, j], acc)` from +0 over the `terms` in order.
fn few_k_rows(
    a: MatRef<'_>,
    r0: usize,
    rows: usize,
    b: MatRef<'_>,
    terms: &[(usize, usize)],
    c: &mut [f32],
) {
    assert!(b.col_stride == 1 && c.len() == rows * b.cols);
    #[cfg(target_arch = "x86_64")]
    if avx512f_available() {
        // SAFETY: AVX-512F is available (checked); the callers checked both views lie
        // inside their slices, rows r0..r0+rows of `a` exist, every term indexes a column
        // of `a` and a row of `b`, and `c` holds rows × b.cols values.
        unsafe { few_k_rows_avx512(a, r0, rows, b, terms, c) };
        return;
    }
    few_k_rows_portable(a, r0, rows, b, terms, c);
}

/// [`few_k_rows`] without SIMD: the same FMA chains.
fn few_k_rows_portable(
    a: MatRef<'_>,
    r0: usize,
    rows: usize,
    b: MatRef<'_>,
    terms: &[(usize, usize)],
    c: &mut [f32],
) {
    let n = b.cols;
    for (i, c_row) in c.chunks_exact_mut(n.max(1)).enumerate().take(rows) {
        c_row.fill(0.0);
        for &(ai, bi) in terms {
            let av = a.data[(r0 + i) * a.row_stride + ai * a.col_stride];
            let b_row = &b.data[bi * b.row_stride..][..n];
            c_row
                .iter_mut()
                .zip(b_row)
                .for_each(|(o, &bv)| *o = av.mul_add(bv, *o));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn few_k_rows_avx512(
    a: MatRef<'_>,
    r0: usize,
    rows: usize,
    b: MatRef<'_>,
    terms: &[(usize, usize)],
    c: &mut [f32],
) {
    use std::arch::x86_64::*;
    let n = b.cols;
    let (bp, cp) = (b.data.as_ptr(), c.as_mut_ptr());
    for i in 0..rows {
        let arow = (r0 + i) * a.row_stride;
        let mut j0 = 0;
        while j0 < n {
            let width = (n - j0).min(64);
            let nv = width.div_ceil(16);
            let mut masks = [0u16; 4];
            for (v, m) in masks.iter_mut().enumerate().take(nv) {
                let w = (width - v * 16).min(16);
                *m = if w == 16 { u16::MAX } else { (1u16 << w) - 1 };
            }
            // SAFETY: ai < a.cols and (r0 + i) < a.rows index inside `a`; b row bi, columns
            // j0 .. j0 + width (masked) inside `b`; c row i, same columns, inside `c`.
            unsafe {
                let mut acc = [_mm512_setzero_ps(); 4];
                for &(ai, bi) in terms {
                    let av = _mm512_set1_ps(*a.data.get_unchecked(arow + ai * a.col_stride));
                    let brow = bp.add(bi * b.row_stride + j0);
                    for v in 0..nv {
                        let bv = _mm512_maskz_loadu_ps(masks[v], brow.add(v * 16));
                        acc[v] = _mm512_fmadd_ps(av, bv, acc[v]);
                    }
                }
                for v in 0..nv {
                    _mm512_mask_storeu_ps(cp.add(i * n + j0 + v * 16), masks[v], acc[v]);
                }
            }
            j0 += width;
        }
    }
}

/// Rows `r0 .. r0 + rows` of `a · b` into `c` (row-major `[rows, b.cols]`).
fn gemm_block(a: MatRef<'_>, r0: usize, rows: usize, b: MatRef<'_>, c: &mut [f32]) {
    let (k, n) = (a.cols, b.cols);
    debug_assert!(r0 + rows <= a.rows && c.len() == rows * n);
    let a_off = r0 * a.row_stride;
    // SAFETY: `gemm` checked that every element (i, j) with i < a.rows, j < a.cols of `a`
    // and every element of `b` lies inside its slice; rows r0..r0+rows are a subset, so the
    // pointer offset `a_off` and all strided reads stay in bounds. `c` holds exactly
    // rows × n elements written with row stride n, column stride 1. The slices do not alias
    // (`c` is a unique borrow). Strides fit in isize because they index existing slices.
    unsafe {
        matrixmultiply::sgemm(
            rows,
            k,
            n,
            1.0,
            a.data.as_ptr().add(a_off),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn naive(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut acc = 0.0f64;
                for p in 0..a.cols {
                    acc += a.data[i * a.row_stride + p * a.col_stride] as f64
                        * b.data[p * b.row_stride + j * b.col_stride] as f64;
                }
                c[i * b.cols + j] = acc as f32;
            }
        }
        c
    }

    /// Deterministic values in [−0.5, 0.5).
    pub(crate) fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn matches_naive_with_transposes_and_parallel_split() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 2),
            (130, 70, 33),
            (300, 128, 40),
            (301, 96, 64),
            (257, 100, 65),
            (5, 3, 32),
        ] {
            let a_data = lcg(m * k, 1);
            let b_data = lcg(k * n, 2);
            let a = MatRef::row_major(&a_data, m, k);
            let b = MatRef::row_major(&b_data, k, n);
            let mut c = vec![f32::NAN; m * n];
            gemm(a, b, &mut c);
            let want = naive(a, b);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4, "{m}x{k}x{n}: {x} vs {y}");
            }
            // Aᵀ stored as [k, m] then viewed transposed.
            let at_data: Vec<f32> = (0..k * m).map(|i| a_data[(i % m) * k + i / m]).collect();
            let at = MatRef::row_major(&at_data, k, m).t();
            let mut c2 = vec![0.0; m * n];
            gemm(at, b, &mut c2);
            for (x, y) in c2.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn simd_streaming_kernel_is_bit_identical_to_the_portable_one() {
        for &(m, k, n) in &[
            (9, 37, 1),
            (6, 20, 7),
            (5, 64, 16),
            (7, 33, 17),
            (4, 50, 50),
            (6, 250, 64),
            (5, 193, 20),
            (11, 96, 64),
        ] {
            let a_data = lcg(m * (k + 3), 3);
            let x = lcg(k * n, 4);
            // a row stride larger than k exercises the stride handling
            let a = MatRef {
                data: &a_data,
                rows: m,
                cols: k,
                row_stride: k + 3,
                col_stride: 1,
            };
            let mut got = vec![f32::NAN; m * n];
            small_n_rows(a, 0, m, &x, n, &mut got);
            let mut want = vec![f32::NAN; m * n];
            stream_rows::<true>(a, 0, m, &x, n, &mut want);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{m}x{k}x{n}"
            );
        }
    }

    /// The short-contraction kernel drops exactly the terms that cannot change a sum:
    /// bitwise equal with and without the dropping (and SIMD equal to portable), close to
    /// the f64 product, and a non-finite factor in a zero row is kept (it makes NaN).
    #[test]
    fn few_k_kernel_drops_only_terms_that_cannot_change_a_sum() {
        let (m, k, n) = (37, 64, 300);
        let a_data = lcg(m * k, 7);
        // A one-hot scatter over k: rows 3 and 10 write columns 5 and 6, the rest are +0.
        let mut b_data = vec![0f32; k * n];
        b_data[3 * n + 5] = 1.0;
        b_data[10 * n + 6] = 1.0;
        b_data[20 * n + 7] = -0.0; // −0 is not +0: row 20 stays a term
        let (a, b) = (
            MatRef::row_major(&a_data, m, k),
            MatRef::row_major(&b_data, k, n),
        );
        let live = live_terms(a, b, (0..k).map(|p| (p, p)));
        assert_eq!(live, vec![(3, 3), (10, 10), (20, 20)]);
        let mut sparse = vec![f32::NAN; m * n];
        few_k_rows(a, 0, m, b, &live, &mut sparse);
        let all: Vec<(usize, usize)> = (0..k).map(|p| (p, p)).collect();
        let mut dense = vec![f32::NAN; m * n];
        few_k_rows_portable(a, 0, m, b, &all, &mut dense);
        assert_eq!(
            sparse.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            dense.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let want = naive(a, b);
        assert!(sparse.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-6));
        // An infinite factor against a zero row is a term (inf · 0 = NaN).
        let mut a_inf = a_data.clone();
        a_inf[4 * k + 30] = f32::INFINITY;
        let a2 = MatRef::row_major(&a_inf, m, k);
        let live2 = live_terms(a2, b, (0..k).map(|p| (p, p)));
        assert_eq!(live2, vec![(3, 3), (10, 10), (20, 20), (30, 30)]);
        let mut c = vec![0f32; m * n];
        few_k_rows(a2, 0, m, b, &live2, &mut c);
        assert!(c[4 * n].is_nan() && !c[5 * n].is_nan());
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        let mut c = vec![1.0; 6];
        gemm(
            MatRef::row_major(&[], 2, 0),
            MatRef::row_major(&[], 0, 3),
            &mut c,
        );
        assert!(c.iter().all(|&x| x == 0.0));
    }
}
