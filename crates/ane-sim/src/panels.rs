//! Constant 1×1-conv weights packed for products with few lanes (decode steps, whose idle
//! lanes [`crate::program`] shares): sixteen rows per panel, k-major, so one vector holds
//! sixteen rows' weights at one input channel and each lane costs one FMA per vector.
//!
//! Every output is `fma(w[i], x[i, j], acc)` over i = 0..k in order from +0 — the
//! arithmetic of the streaming GEMM kernel ([`crate::gemm`]) — so results are bitwise those
//! of [`crate::gemm::gemm`] on the f32 weights. The storage is lossless, in the smallest
//! form proved exact when packing:
//!
//! * **affine 4-bit**: every block of 32 values of a row is exactly
//!   `fp16(q·d + m)` (f32 multiply, f32 add, rounded to fp16) for 4-bit `q` and one `d`,
//!   `m` per block (or its negation) — what a Q4_1 model dequantizes to, and the negated
//!   rows of the RoPE pair swap. Stored as `d`, `m` and nibbles: 0.75 bytes per weight, so the
//!   weights of SmolLM2 stay in a large L3 cache instead of streaming 2 bytes per weight
//!   from DRAM on every decode step. Decoding recomputes the same f32 operations and
//!   fp16 rounding, bit for bit.
//! * **fp16** otherwise (the blob's own values): 2 bytes per weight.
//!
//! Weights that are not all fp16 values are not packed (the f32 kernels run). The kernels
//! are x86-64 AVX-512F; elsewhere nothing is packed.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::gemm::{avx512f_available, MatRef, PARALLEL_MIN_WORK};

/// Rows in one panel.
const PANEL: usize = 16;

/// Values of a row per affine block.
const BLOCK: usize = 32;

/// Bytes of one affine block of a panel: `d[16]`, `m[16]` (f32), then for each pair of
/// inputs (2i, 2i+1) sixteen bytes, byte r holding row r's two nibbles (input 2i low).
const BLOCK_BYTES: usize = 2 * PANEL * 4 + BLOCK * PANEL / 2;

/// Bytes ahead the kernels ask the cache for.
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 8192;

/// Widest lane count [`gemm_panels`] takes.
pub const PANEL_MAX_N: usize = 8;

#[derive(Clone)]
enum Storage {
    /// `data[(p·k + i)·16 + r]` = fp16 bits of row `16p + r`, column `i` (0 past the end).
    F16(Vec<u16>),
    /// Per panel, per block of 32 inputs, [`BLOCK_BYTES`] bytes (see there).
    Affine4(Vec<u8>),
}

/// A weight matrix packed for few-lane products (see the module doc).
#[derive(Clone)]
pub struct Panels {
    rows: usize,
    cols: usize,
    storage: Storage,
}

impl std::fmt::Debug for Panels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Panels({}x{}, {})", self.rows, self.cols, self.format())
    }
}

/// `fp16(q·d + m)` as the affine kernel computes it.
#[inline]
fn affine_value(q: u8, d: f32, m: f32) -> f32 {
    f16::from_f32(f32::from(q) * d + m).to_f32()
}

/// `(d, m, q)` with `affine_value(q[i], d, m)` bitwise `w[i]` for every value, if some
/// exist: `m` is the value at `q = 0` (the block's smallest), `d ≥ 0` an fp16 value near
/// the spread / 15 (within three fp16 steps, to absorb the rounding of the largest value).
fn fit_affine4(w: &[f32; BLOCK]) -> Option<(f32, f32, [u8; BLOCK])> {
    if w.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let lo = w.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // The values' fp16 bits; a value fp16 cannot hold exactly fits no block.
    let mut bits = [f16::ZERO; BLOCK];
    bits.convert_from_f32_slice(w);
    let mut back = [0f32; BLOCK];
    bits.convert_to_f32_slice(&mut back);
    if back.iter().zip(w).any(|(b, v)| b.to_bits() != v.to_bits()) {
        return None;
    }
    let fit = |d: f32, m: f32| -> Option<[u8; BLOCK]> {
        let mut q = [0u8; BLOCK];
        for (qi, &v) in q.iter_mut().zip(w) {
            // Nearest level (truncation of a non-negative value + 0.5), checked below.
            *qi = if d == 0.0 {
                0
            } else {
                ((v - m) / d + 0.5).clamp(0.0, 15.0) as u8
            };
        }
        let mut t = [0f32; BLOCK];
        for (ti, &qi) in t.iter_mut().zip(&q) {
            *ti = f32::from(qi) * d + m;
        }
        let mut got = [f16::ZERO; BLOCK];
        got.convert_from_f32_slice(&t);
        for i in 0..BLOCK {
            if got[i].to_bits() != bits[i].to_bits() {
                // The rounding of the largest values can put the nearest level one off.
                let g = q[i];
                q[i] = [g.wrapping_sub(1), g + 1]
                    .into_iter()
                    .filter(|&c| c < 16)
                    .find(|&c| affine_value(c, d, m).to_bits() == w[i].to_bits())?;
            }
        }
        Some(q)
    };
    if lo == hi {
        return fit(0.0, lo).map(|q| (0.0, lo, q));
    }
    let base = f16::from_f32((hi - lo) / 15.0).to_bits() as i32;
    [0, -1, 1, -2, 2, -3, 3].into_iter().find_map(|delta| {
        let d = f16::from_bits(u16::try_from(base + delta).ok()?).to_f32();
        if !d.is_finite() || d <= 0.0 {
            return None;
        }
        fit(d, lo).map(|q| (d, lo, q))
    })
}

/// One affine block: `w = fp16(q·d + m)`, negated (sign bit flipped after the rounding)
/// where `negate` — the RoPE pair swap negates rows, and −fp16(x) is not fp16(−x) at zero.
struct AffineBlock {
    d: f32,
    m: f32,
    negate: bool,
    q: [u8; BLOCK],
}

impl AffineBlock {
    fn fit(w: &[f32; BLOCK]) -> Option<Self> {
        if let Some((d, m, q)) = fit_affine4(w) {
            return Some(Self {
                d,
                m,
                negate: false,
                q,
            });
        }
        let neg = w.map(|v| -v);
        fit_affine4(&neg).map(|(d, m, q)| Self {
            d,
            m,
            negate: true,
            q,
        })
    }

    /// `d` as stored: its sign bit (free: `d ≥ 0`) marks a negated block.
    fn stored_d(&self) -> f32 {
        if self.negate {
            -self.d
        } else {
            self.d
        }
    }
}

impl Panels {
    /// Pack `w` (`[rows, cols]`, column stride 1) when this CPU has the kernels and every
    /// value is an fp16 value: affine 4-bit if every block fits exactly, else fp16.
    pub fn pack(w: MatRef<'_>) -> Option<Self> {
        if !avx512f_available() || w.col_stride != 1 || w.rows == 0 || w.cols == 0 {
            return None;
        }
        if w.rows.checked_sub(1)? * w.row_stride + w.cols > w.data.len() {
            return None;
        }
        // An affine fit proves every value is an fp16 value; the fp16 packing checks it.
        let storage = match pack_affine4(w) {
            Some(data) => Storage::Affine4(data),
            None => Storage::F16(pack_f16(w)?),
        };
        Some(Self {
            rows: w.rows,
            cols: w.cols,
            storage,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `"affine4"` or `"fp16"`: how the weights are stored.
    pub fn format(&self) -> &'static str {
        match self.storage {
            Storage::F16(_) => "fp16",
            Storage::Affine4(_) => "affine4",
        }
    }

    /// Bytes the packed weights take.
    pub fn bytes(&self) -> usize {
        match &self.storage {
            Storage::F16(d) => d.len() * 2,
            Storage::Affine4(d) => d.len(),
        }
    }
}

/// The fp16 packing, if every value is exactly an fp16 value.
fn pack_f16(w: MatRef<'_>) -> Option<Vec<u16>> {
    let (rows, cols) = (w.rows, w.cols);
    let mut data = vec![0u16; rows.div_ceil(PANEL) * cols * PANEL];
    let exact = data
        .par_chunks_mut(cols * PANEL)
        .enumerate()
        .all(|(p, panel)| {
            for lane in 0..PANEL.min(rows - p * PANEL) {
                let row = &w.data[(p * PANEL + lane) * w.row_stride..][..cols];
                for (i, &v) in row.iter().enumerate() {
                    let h = f16::from_f32(v);
                    if h.to_f32().to_bits() != v.to_bits() {
                        return false;
                    }
                    panel[i * PANEL + lane] = h.to_bits();
                }
            }
            true
        });
    exact.then_some(data)
}

/// The affine 4-bit packing, if every block of every row fits.
fn pack_affine4(w: MatRef<'_>) -> Option<Vec<u8>> {
    let (rows, cols) = (w.rows, w.cols);
    let blocks = cols.div_ceil(BLOCK);
    let mut data = vec![0u8; rows.div_ceil(PANEL) * blocks * BLOCK_BYTES];
    let fits = data
        .par_chunks_mut(blocks * BLOCK_BYTES)
        .enumerate()
        .all(|(p, panel)| {
            for lane in 0..PANEL.min(rows - p * PANEL) {
                let row = &w.data[(p * PANEL + lane) * w.row_stride..][..cols];
                for (b, blk) in panel.chunks_exact_mut(BLOCK_BYTES).enumerate() {
                    let vals = &row[b * BLOCK..((b + 1) * BLOCK).min(cols)];
                    let mut padded = [0f32; BLOCK];
                    padded[..vals.len()].copy_from_slice(vals);
                    // A short last block is padded with its first value (any fit works).
                    padded[vals.len()..].fill(vals[0]);
                    let Some(fit) = AffineBlock::fit(&padded) else {
                        return false;
                    };
                    let (d, m) = (fit.stored_d(), fit.m);
                    blk[lane * 4..lane * 4 + 4].copy_from_slice(&d.to_le_bytes());
                    blk[64 + lane * 4..64 + lane * 4 + 4].copy_from_slice(&m.to_le_bytes());
                    for (i, &qi) in fit.q.iter().enumerate() {
                        let byte = &mut blk[128 + (i / 2) * PANEL + lane];
                        *byte |= if i % 2 == 0 { qi } else { qi << 4 };
                    }
                }
            }
            true
        });
    fits.then_some(data)
}

/// `c` (row-major `[rows, n]`) = `W · x` for `x` row-major `[cols, n]`, 1 ≤ n ≤
/// [`PANEL_MAX_N`]: bitwise what [`crate::gemm::gemm`] gives with `W` as f32.
pub fn gemm_panels(p: &Panels, x: &[f32], n: usize, c: &mut [f32]) {
    assert!((1..=PANEL_MAX_N).contains(&n), "gemm_panels: n = {n}");
    assert!(
        x.len() >= p.cols * n && c.len() == p.rows * n,
        "gemm_panels sizes"
    );
    let n_panels = p.rows.div_ceil(PANEL);
    let threads = rayon::current_num_threads().max(1);
    // Several panels per call where whole: independent FMA chains hide their latency.
    let group = (PANELS_AT_ONCE / n).max(1);
    let run = |p0: usize, c_blk: &mut [f32]| {
        let mut rest = c_blk;
        let mut panel = p0;
        while !rest.is_empty() {
            let whole = rest.len() / (PANEL * n);
            let take = if whole >= group { group } else { 1 };
            let len = (take * PANEL * n).min(rest.len());
            let (c_now, tail) = rest.split_at_mut(len);
            panel_product(p, panel, take, x, n, c_now);
            panel += take;
            rest = tail;
        }
    };
    if p.rows * n * p.cols < PARALLEL_MIN_WORK || threads == 1 || n_panels < 2 {
        run(0, c);
        return;
    }
    // Blocks of whole groups: a lone panel would run one latency-bound chain per lane.
    let per = n_panels.div_ceil(threads * 2).next_multiple_of(group);
    c.par_chunks_mut(per * PANEL * n)
        .enumerate()
        .for_each(|(blk, c_blk)| run(blk * per, c_blk));
}

/// Lane-panels (panels × lanes) one kernel call keeps in registers at most.
const PANELS_AT_ONCE: usize = 8;

/// Panels `panel .. panel + take` of `p · x` into `c` (their rows × n; `take` is 1 or
/// `max(PANELS_AT_ONCE / n, 1)`, and only a single panel may be partial).
fn panel_product(p: &Panels, panel: usize, take: usize, x: &[f32], n: usize, c: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! by_n {
            ($f:ident) => {
                // SAFETY: `Panels` exist only where AVX-512F is available (`Panels::pack`);
                // `gemm_panels` checked `x` holds cols·n values; `c` holds these panels'
                // rows·n values (`run` splits it so).
                unsafe {
                    match (take > 1, n) {
                        (false, 1) => $f::<1, 1>(p, panel, x, c),
                        (false, 2) => $f::<1, 2>(p, panel, x, c),
                        (false, 3) => $f::<1, 3>(p, panel, x, c),
                        (false, 4) => $f::<1, 4>(p, panel, x, c),
                        (false, 5) => $f::<1, 5>(p, panel, x, c),
                        (false, 6) => $f::<1, 6>(p, panel, x, c),
                        (false, 7) => $f::<1, 7>(p, panel, x, c),
                        (false, _) => $f::<1, 8>(p, panel, x, c),
                        (true, 1) => $f::<8, 1>(p, panel, x, c),
                        (true, 2) => $f::<4, 2>(p, panel, x, c),
                        (true, 3) => $f::<2, 3>(p, panel, x, c),
                        (true, _) => $f::<2, 4>(p, panel, x, c),
                    }
                }
            };
        }
        debug_assert!(take == 1 || take == (PANELS_AT_ONCE / n).max(1));
        match p.storage {
            Storage::F16(_) => by_n!(f16_avx512),
            Storage::Affine4(_) => by_n!(affine4_avx512),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, panel, take, x, n, c);
        unreachable!("Panels are only built on x86-64 with AVX-512F");
    }
}

/// `P` panels' accumulators (one vector of sixteen rows per panel and lane) into `c`
/// (`[rows, N]`: P·16 rows, or fewer when P = 1 and the panel is the partial last one).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_panels<const P: usize, const N: usize>(
    acc: &[[std::arch::x86_64::__m512; N]; P],
    c: &mut [f32],
) {
    use std::arch::x86_64::*;
    for (q, acc_q) in acc.iter().enumerate() {
        let mut out = [[0f32; PANEL]; N];
        for (o, a) in out.iter_mut().zip(acc_q) {
            // SAFETY: `o` holds 16 f32.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *a) };
        }
        let from = (q * PANEL * N).min(c.len());
        let c_q = &mut c[from..];
        for r in 0..(c_q.len() / N).min(PANEL) {
            for j in 0..N {
                c_q[r * N + j] = out[j][r];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn f16_avx512<const P: usize, const N: usize>(
    p: &Panels,
    panel: usize,
    x: &[f32],
    c: &mut [f32],
) {
    use std::arch::x86_64::*;
    let Storage::F16(data) = &p.storage else {
        unreachable!("f16 kernel on f16 panels");
    };
    let k = p.cols;
    debug_assert!(x.len() >= k * N && panel + P <= p.rows.div_ceil(PANEL));
    // SAFETY: panels panel..panel+P each hold k·16 values from (panel·k)·16 (`pack_f16`
    // sized the data for every panel); `x` holds k·N values (checked by `gemm_panels`);
    // prefetches may point past the data (wrapping pointer, never dereferenced).
    unsafe {
        let wp = data.as_ptr().add(panel * k * PANEL);
        let xp = x.as_ptr();
        let mut acc = [[_mm512_setzero_ps(); N]; P];
        for i in 0..k {
            for (q, acc_q) in acc.iter_mut().enumerate() {
                let at = (q * k + i) * PANEL;
                if i % 2 == 0 {
                    let ahead = (wp as *const i8).wrapping_add(at * 2 + PREFETCH_AHEAD);
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                }
                let w = _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(at) as *const __m256i));
                for (j, a) in acc_q.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(w, _mm512_set1_ps(*xp.add(i * N + j)), *a);
                }
            }
        }
        store_panels(&acc, c);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn affine4_avx512<const P: usize, const N: usize>(
    p: &Panels,
    panel: usize,
    x: &[f32],
    c: &mut [f32],
) {
    use std::arch::x86_64::*;
    let Storage::Affine4(data) = &p.storage else {
        unreachable!("affine kernel on affine panels");
    };
    let k = p.cols;
    let blocks = k.div_ceil(BLOCK);
    debug_assert!(x.len() >= k * N && panel + P <= p.rows.div_ceil(PANEL));
    // SAFETY: panels panel..panel+P each hold `blocks` blocks of BLOCK_BYTES from
    // panel·blocks·BLOCK_BYTES (`pack_affine4` sized the data for every panel); `x` holds
    // k·N values (checked by `gemm_panels`); prefetches may point past the data (wrapping
    // pointer, never dereferenced).
    unsafe {
        let base = data.as_ptr().add(panel * blocks * BLOCK_BYTES);
        let xp = x.as_ptr();
        let low = _mm_set1_epi8(0x0f);
        let sign_bit = _mm512_set1_epi32(i32::MIN);
        let mut acc = [[_mm512_setzero_ps(); N]; P];
        for b in 0..blocks {
            let mut d = [_mm512_setzero_ps(); P];
            let mut m = [_mm512_setzero_ps(); P];
            let mut sign = [_mm512_setzero_si512(); P];
            for q in 0..P {
                let blk = base.add((q * blocks + b) * BLOCK_BYTES);
                for line in 0..BLOCK_BYTES.div_ceil(64) {
                    let ahead = blk.wrapping_add(PREFETCH_AHEAD + 64 * line) as *const i8;
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                }
                // The sign bit of d marks a negated row (see `AffineBlock`).
                let d_signed = _mm512_castps_si512(_mm512_loadu_ps(blk as *const f32));
                sign[q] = _mm512_and_si512(d_signed, sign_bit);
                d[q] = _mm512_castsi512_ps(_mm512_andnot_si512(sign_bit, d_signed));
                m[q] = _mm512_loadu_ps(blk.add(64) as *const f32);
            }
            let kb = BLOCK.min(k - b * BLOCK);
            for i in (0..kb).step_by(2) {
                for (q, acc_q) in acc.iter_mut().enumerate() {
                    let nib = base.add((q * blocks + b) * BLOCK_BYTES + 128 + (i / 2) * PANEL);
                    let v = _mm_loadu_si128(nib as *const __m128i);
                    // Input i in the low nibbles, input i + 1 in the high ones.
                    let pair = [
                        _mm_and_si128(v, low),
                        _mm_and_si128(_mm_srli_epi16::<4>(v), low),
                    ];
                    for (h, &bytes) in pair.iter().enumerate().take(kb - i) {
                        let qv = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes));
                        // fp16(q·d + m): f32 multiply, f32 add, round to nearest even fp16.
                        let t = _mm512_add_ps(_mm512_mul_ps(qv, d[q]), m[q]);
                        let w = _mm512_cvtph_ps(_mm512_cvtps_ph::<
                            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                        >(t));
                        let w =
                            _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(w), sign[q]));
                        let xi = xp.add((b * BLOCK + i + h) * N);
                        for (j, a) in acc_q.iter_mut().enumerate() {
                            *a = _mm512_fmadd_ps(w, _mm512_set1_ps(*xi.add(j)), *a);
                        }
                    }
                }
            }
        }
        store_panels(&acc, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::gemm;
    use crate::gemm::tests::lcg;

    fn fp16(v: Vec<f32>) -> Vec<f32> {
        v.into_iter().map(|x| f16::from_f32(x).to_f32()).collect()
    }

    /// Rows dequantized as a Q4_1 model does (`q·d + m` in f32, then fp16 in the blob),
    /// every other row negated (the RoPE pair swap).
    fn q4_1_rows(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let r = lcg(rows * cols + 2 * rows * cols.div_ceil(BLOCK), seed);
        let mut out = vec![0f32; rows * cols];
        for row in 0..rows {
            for b in 0..cols.div_ceil(BLOCK) {
                let at = rows * cols + 2 * (row * cols.div_ceil(BLOCK) + b);
                let d = f16::from_f32(r[at].abs() * 0.1).to_f32();
                // Centred blocks, as trained weights are: m ≈ −8d.
                let m = f16::from_f32(-8.0 * d * (1.0 + 0.2 * r[at + 1])).to_f32();
                for i in b * BLOCK..((b + 1) * BLOCK).min(cols) {
                    let q = ((r[row * cols + i] + 0.5) * 16.0).clamp(0.0, 15.0) as u8;
                    // As a quantizer does: the block's minimum is q = 0, its maximum 15.
                    let q = match i - b * BLOCK {
                        0 => 0,
                        1 => 15,
                        _ if row == 3 && b == 0 => 0,
                        _ => q,
                    };
                    let v = f16::from_f32(f32::from(q) * d + m).to_f32();
                    out[row * cols + i] = if row % 2 == 1 { -v } else { v };
                }
            }
        }
        out
    }

    fn check_against_gemm(w: &[f32], m: usize, k: usize, n: usize, format: &str) {
        let a = MatRef::row_major(w, m, k);
        let p = Panels::pack(a).expect("fp16 values pack");
        assert_eq!(p.format(), format, "{m}x{k}");
        let x = lcg(k * n, 6);
        let mut got = vec![f32::NAN; m * n];
        gemm_panels(&p, &x, n, &mut got);
        let mut want = vec![f32::NAN; m * n];
        gemm(a, MatRef::row_major(&x, k, n), &mut want);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{m}x{k}x{n} {format}"
        );
    }

    /// Both storages give bitwise the streaming GEMM's products, for partial panels,
    /// a short last block and 1–8 lanes; Q4_1-like rows are stored affine, others fp16.
    #[test]
    fn panel_kernels_are_bit_identical_to_the_gemm() {
        if !avx512f_available() {
            assert!(Panels::pack(MatRef::row_major(&[1.0; 4], 2, 2)).is_none());
            eprintln!("no AVX-512F: nothing is packed, the f32 kernels run (checked)");
            return;
        }
        for &(m, k, n) in &[
            (1, 5, 1),
            (16, 37, 2),
            (17, 64, 3),
            (45, 96, 8),
            (300, 250, 5),
        ] {
            check_against_gemm(&fp16(lcg(m * k, 5)), m, k, n, "fp16");
            check_against_gemm(&q4_1_rows(m, k, 9), m, k, n, "affine4");
        }
        let q = q4_1_rows(64, 128, 3);
        let p = Panels::pack(MatRef::row_major(&q, 64, 128)).expect("pack");
        assert_eq!(p.bytes() * 8, 64 * 128 * 6, "0.75 bytes per weight");
        // Values fp16 cannot hold exactly: not packed (the f32 kernels run).
        assert!(Panels::pack(MatRef::row_major(&[0.1f32; 32], 2, 16)).is_none());
    }

    #[test]
    fn affine_fit_is_exact_or_absent() {
        let d = f16::from_f32(0.0123).to_f32();
        let m = f16::from_f32(-0.37).to_f32();
        let w: [f32; BLOCK] = std::array::from_fn(|i| affine_value((i % 16) as u8, d, m));
        let (fd, fm, q) = fit_affine4(&w).expect("a Q4_1 block fits");
        for (qi, v) in q.iter().zip(&w) {
            assert_eq!(affine_value(*qi, fd, fm).to_bits(), v.to_bits());
        }
        // A negated block whose value at q = 8 is exactly zero: +0 negates to −0, which
        // fp16(q·d + m) cannot give; the block is stored negated.
        let d8 = f16::from_f32(0.03).to_f32();
        let w: [f32; BLOCK] = std::array::from_fn(|i| -affine_value((i % 16) as u8, d8, -8.0 * d8));
        assert!(w.iter().any(|v| v.to_bits() == (-0.0f32).to_bits()));
        assert!(fit_affine4(&w).is_none());
        let b = AffineBlock::fit(&w).expect("negated fit");
        assert!(b.negate && b.stored_d() < 0.0);
        // 17 distinct levels cannot come from 4 bits.
        let w: [f32; BLOCK] = std::array::from_fn(|i| f16::from_f32(i as f32 * 0.01).to_f32());
        assert!(AffineBlock::fit(&w).is_none());
        assert!(AffineBlock::fit(&[f32::NAN; BLOCK]).is_none());
    }
}
