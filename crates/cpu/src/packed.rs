//! Block-quantized weights (`Q4_0`, `Q4_1`, `Q8_0`) repacked at load time for the decode
//! products: sixteen rows interleaved, so that one 512-bit integer product (`vpdpbusd`, AVX-512
//! VNNI) serves sixteen rows at once, or on aarch64 one `sdot` by element four rows (the
//! dot-product extension of Apple M1 and later; written as inline assembly, since stable Rust
//! has no intrinsic for it yet).
//!
//! In the stored `Q4_0`/`Q4_1` layout each weight row is a run of 32-element blocks, and a
//! product of one row with one activation block ends in a horizontal sum and a scalar scale
//! product: per-block work that dominates a decode step. Here the rows are taken sixteen at a
//! time (a *group*); for each 32-element block the group stores
//!
//! ```text
//! d[16]  f16   the rows' scales
//! c[16]  f16   the rows' offsets: Q4_1 `m`, Q4_0 `-8 d` (so w = d n + c for both)
//! q[4][16][4]  bytes: q[j][r] = the row's stored bytes 4j..4j+4 (low nibbles are elements
//!              4j..4j+4, high nibbles elements 16+4j..16+4j+4)
//! ```
//!
//! so that lane `r` of a vector holds row `r`: the byte product of `q[j]`'s low nibbles with
//! the activation bytes `4j..4j+4` broadcast to every lane adds four products to each row's
//! integer sum, and the scales are applied to all sixteen rows in one vector operation.
//! (llama.cpp repacks `Q4_0` for the same reason; this layout is ours.)
//!
//! A `Q8_0` group block is `d[16]` (f16, then 32 bytes of padding) and `q[8][16][4]`: the
//! row's values `4j..4j+4` plus 128 as unsigned bytes (the byte product takes unsigned weights);
//! the integer sum is then corrected exactly by `- 128 sum_k q_x[k]`.
//!
//! The arithmetic of one output (row `r`, activation vector `x`) is fixed and per output:
//!
//! ```text
//! a = 0, b = 0
//! for each block:  i = sum_k n[k] q_x[k]         (exact, i32; Q8_0: its values for n)
//!                  a = fma(i as f32, d * d_x, a)
//!                  b = fma(c, s_x, b)            (not for Q8_0: out = a)
//! out = a + b
//! ```
//!
//! It does not depend on how many vectors or rows share a call, so a token's logits are
//! bitwise the same alone, beside a draft token, or in a batch of slots (row invariance by
//! construction), and the SIMD kernel equals the portable one bitwise (tested).

use crate::quant::BlockQ8;
use model::quant::QK;
use model::{GgmlType, Tensor};

/// Rows per group (lanes of a 512-bit vector of i32).
pub const GROUP: usize = 16;

/// Bytes of one group's block of 4-bit rows: scales, offsets, nibbles.
const NIBBLE_BLOCK: usize = 2 * GROUP * 2 + GROUP * QK / 2;

/// Bytes of one group's block of `Q8_0` rows: scales, padding, bytes.
const BYTE_BLOCK: usize = 2 * GROUP * 2 + GROUP * QK;

/// Where the values start in a group block (after scales and offsets or padding).
const VALUES: usize = 4 * GROUP;

/// Most activation vectors one kernel call takes (register budget); more go in several calls
/// over the same group, whose bytes are then in L1.
const MAX_VECTORS: usize = 4;

/// One 64-byte line, so that every group block starts on a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A `Q4_0`/`Q4_1`/`Q8_0` matrix in groups of [`GROUP`] interleaved rows (see the module
/// docs). Rows past the last stored one (padding the last group) are zero and their outputs
/// dropped.
pub struct Packed {
    /// `Q8_0` (bytes) rather than 4-bit values with offsets.
    bytes: bool,
    /// This CPU has the SIMD kernel ([`available`], detected once at packing).
    simd: bool,
    rows: usize,
    /// 32-element blocks per row.
    nb: usize,
    /// `[groups][nb]` group blocks of [`NIBBLE_BLOCK`] or [`BYTE_BLOCK`] bytes.
    lines: Vec<Line>,
}

/// True when this CPU has a packed kernel: AVX-512 with VNNI (x86_64) or the `sdot`
/// dot-product instruction (aarch64: Apple M1 and later); elsewhere the stored layout's kernels
/// are used and nothing is packed.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::dot::vnni_available()
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

impl Packed {
    /// Repack `w` if it is `Q4_0`, `Q4_1` or `Q8_0` (else `None`). A `Q4_0` scale too large
    /// for `-8 d` to be an f16 also gives `None` (the stored kernels then serve it).
    pub fn new(w: &Tensor) -> Option<Packed> {
        let (bytes, block_bytes) = match w.ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 => (false, NIBBLE_BLOCK),
            GgmlType::Q8_0 => (true, BYTE_BLOCK),
            _ => return None,
        };
        if !w.cols.is_multiple_of(QK) {
            return None;
        }
        let nb = w.cols / QK;
        let groups = w.rows.div_ceil(GROUP);
        let mut lines = vec![Line([0; 64]); groups * nb * block_bytes / 64];
        // SAFETY: `Line` is 64 plain bytes with no padding.
        let all = unsafe {
            std::slice::from_raw_parts_mut(lines.as_mut_ptr() as *mut u8, lines.len() * 64)
        };
        for r in 0..w.rows {
            let row = w.row_data(r);
            let (g, lane) = (r / GROUP, r % GROUP);
            for b in 0..nb {
                let dst = &mut all[(g * nb + b) * block_bytes..][..block_bytes];
                pack_block(
                    w.ty,
                    &row[b * w.ty.block_bytes()..][..w.ty.block_bytes()],
                    lane,
                    dst,
                )?;
            }
        }
        Some(Packed {
            bytes,
            simd: available(),
            rows: w.rows,
            nb,
            lines,
        })
    }

    fn block_bytes(&self) -> usize {
        if self.bytes {
            BYTE_BLOCK
        } else {
            NIBBLE_BLOCK
        }
    }

    /// Group `g`'s bytes: `[nb][block bytes]`.
    fn group(&self, g: usize) -> &[u8] {
        let per = self.nb * self.block_bytes() / 64;
        let lines = &self.lines[g * per..(g + 1) * per];
        // SAFETY: `Line` is 64 plain bytes with no padding, so a run of lines is that many
        // initialized bytes.
        unsafe { std::slice::from_raw_parts(lines.as_ptr() as *const u8, lines.len() * 64) }
    }

    /// `out[r - r0][t] = row r · x_t` for rows `r0..r0 + out.len() / n_tok` (`r0` a multiple
    /// of [`GROUP`]), `xq: [n_tok][nb]` activation blocks, `out: [rows][n_tok]`.
    pub fn dot_rows(&self, r0: usize, xq: &[BlockQ8], n_tok: usize, out: &mut [f32]) {
        assert!(r0.is_multiple_of(GROUP), "packed rows start at a group");
        assert_eq!(xq.len(), n_tok * self.nb, "packed: activation length");
        let n_rows = out.len() / n_tok.max(1);
        assert!(r0 + n_rows <= self.rows, "packed: rows out of range");
        let simd = self.simd;
        let mut tile = [0f32; GROUP * MAX_VECTORS];
        for g in r0 / GROUP..(r0 + n_rows).div_ceil(GROUP) {
            let group = self.group(g);
            for t0 in (0..n_tok).step_by(MAX_VECTORS) {
                let nv = (n_tok - t0).min(MAX_VECTORS);
                let xs: [&[BlockQ8]; MAX_VECTORS] = std::array::from_fn(|t| {
                    let t = t0 + t.min(nv - 1);
                    &xq[t * self.nb..(t + 1) * self.nb]
                });
                if !(simd && simd_group_dot(nv, self.bytes, group, &xs, &mut tile)) {
                    portable::group_dot(group, self.bytes, &xs[..nv], &mut tile);
                }
                // tile: [vector][lane] -> out[row][t0 + vector]
                for lane in 0..GROUP {
                    let r = g * GROUP + lane;
                    if r < r0 || r >= r0 + n_rows {
                        continue;
                    }
                    for t in 0..nv {
                        out[(r - r0) * n_tok + t0 + t] = tile[t * GROUP + lane];
                    }
                }
            }
        }
    }
}

/// The SIMD kernel for `nv` vectors of a group (`bytes`: `Q8_0`), if this target has one;
/// false when it does not (the caller then runs the portable kernel). The caller checked
/// [`available`].
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_variables)
)]
fn simd_group_dot(
    nv: usize,
    bytes: bool,
    group: &[u8],
    xs: &[&[BlockQ8]; MAX_VECTORS],
    tile: &mut [f32; GROUP * MAX_VECTORS],
) -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        #[cfg(target_arch = "x86_64")]
        use avx512::group_dot as k;
        #[cfg(target_arch = "aarch64")]
        use neon::group_dot as k;
        // SAFETY: the caller checked `available()` (this target's kernel instructions); the
        // group holds as many group blocks of its kind as every vector has blocks.
        unsafe {
            match (nv, bytes) {
                (4, false) => k::<4, false>(group, xs, tile),
                (3, false) => k::<3, false>(group, xs, tile),
                (2, false) => k::<2, false>(group, xs, tile),
                (_, false) => k::<1, false>(group, xs, tile),
                (4, true) => k::<4, true>(group, xs, tile),
                (3, true) => k::<3, true>(group, xs, tile),
                (2, true) => k::<2, true>(group, xs, tile),
                (_, true) => k::<1, true>(group, xs, tile),
            }
        }
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Row `lane`'s part of one group block `dst` from its stored block `blk` (see the module docs).
/// `None` when a `Q4_0` scale is too large for `-8 d` to be an f16.
fn pack_block(ty: GgmlType, blk: &[u8], lane: usize, dst: &mut [u8]) -> Option<()> {
    let (d, c, values) = match ty {
        GgmlType::Q4_0 => {
            let d = half::f16::from_le_bytes([blk[0], blk[1]]);
            let c = half::f16::from_f32(-8.0 * d.to_f32());
            if c.to_f32() != -8.0 * d.to_f32() {
                return None;
            }
            ([blk[0], blk[1]], c.to_le_bytes(), &blk[2..18])
        }
        GgmlType::Q4_1 => ([blk[0], blk[1]], [blk[2], blk[3]], &blk[4..20]),
        _ => ([blk[0], blk[1]], [0, 0], &blk[2..34]),
    };
    dst[2 * lane..2 * lane + 2].copy_from_slice(&d);
    dst[2 * GROUP + 2 * lane..2 * GROUP + 2 * lane + 2].copy_from_slice(&c);
    // Four bytes of the row per chunk `j`: nibble pairs, or Q8_0 values + 128.
    for (j, four) in values.chunks_exact(4).enumerate() {
        let at = VALUES + j * 4 * GROUP + 4 * lane;
        for (o, &v) in dst[at..at + 4].iter_mut().zip(four) {
            *o = if ty == GgmlType::Q8_0 { v ^ 0x80 } else { v };
        }
    }
    Some(())
}

/// The reference kernel: the module docs' arithmetic, one output at a time.
pub mod portable {
    use super::*;
    use crate::quant::f16_at;

    /// `tile[t][lane]` = the group's row `lane` · `xs[t]` (`bytes`: a `Q8_0` group).
    pub fn group_dot(group: &[u8], bytes: bool, xs: &[&[BlockQ8]], tile: &mut [f32]) {
        let block = if bytes { BYTE_BLOCK } else { NIBBLE_BLOCK };
        for (t, x) in xs.iter().enumerate() {
            for lane in 0..GROUP {
                let (mut a, mut b) = (0f32, 0f32);
                for (blk, xb) in group.chunks_exact(block).zip(x.iter()) {
                    let d = f16_at(blk, 2 * lane);
                    let mut i = 0i32;
                    if bytes {
                        for j in 0..8 {
                            let q = &blk[VALUES + j * 4 * GROUP + 4 * lane..][..4];
                            for (k, &byte) in q.iter().enumerate() {
                                i += byte as i32 * xb.qs[4 * j + k] as i32;
                            }
                        }
                        i -= 128 * xb.sum;
                    } else {
                        for j in 0..4 {
                            let q = &blk[VALUES + j * 4 * GROUP + 4 * lane..][..4];
                            for (k, &byte) in q.iter().enumerate() {
                                i += (byte & 0x0f) as i32 * xb.qs[4 * j + k] as i32;
                                i += (byte >> 4) as i32 * xb.qs[QK / 2 + 4 * j + k] as i32;
                            }
                        }
                    }
                    a = (i as f32).mul_add(d * xb.d, a);
                    if !bytes {
                        b = f16_at(blk, 2 * GROUP + 2 * lane).mul_add(xb.s, b);
                    }
                }
                tile[t * GROUP + lane] = if bytes { a } else { a + b };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// Bytes ahead the kernel asks the cache for (about ten blocks of a group).
    const PREFETCH_AHEAD: usize = 4096;

    /// [`portable::group_dot`] for `N` vectors with sixteen rows per vector operation
    /// (`BYTES`: a `Q8_0` group).
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI and F16C available; `group` holds `xs[t].len()` group blocks.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
    pub unsafe fn group_dot<const N: usize, const BYTES: bool>(
        group: &[u8],
        xs: &[&[BlockQ8]; MAX_VECTORS],
        tile: &mut [f32; GROUP * MAX_VECTORS],
    ) {
        let nb = xs[0].len();
        let block = if BYTES { BYTE_BLOCK } else { NIBBLE_BLOCK };
        debug_assert!(group.len() >= nb * block);
        let low = _mm512_set1_epi8(0x0f);
        let mut a = [_mm512_setzero_ps(); N];
        let mut b = [_mm512_setzero_ps(); N];
        let p = group.as_ptr();
        // `blk` indexes the group's blocks and every vector's: a range reads plainest.
        #[allow(clippy::needless_range_loop)]
        for blk in 0..nb {
            // SAFETY: block `blk` of the group is `block` bytes inside `group`.
            let base = p.add(blk * block);
            // The group's blocks lie one after the other: ask for a few blocks ahead (a
            // wrapping pointer, never dereferenced).
            let ahead = (base as *const i8).wrapping_add(PREFETCH_AHEAD);
            for line in 0..block.div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
            }
            let v = base.add(VALUES) as *const __m512i;
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(base as *const __m256i));
            let c = _mm512_cvtph_ps(_mm256_loadu_si256(base.add(2 * GROUP) as *const __m256i));
            // w[j]: the unsigned bytes of chunk j (elements 4j..4j+4) of the sixteen rows.
            let mut w = [_mm512_setzero_si512(); 8];
            if BYTES {
                for (j, wj) in w.iter_mut().enumerate() {
                    *wj = _mm512_loadu_si512(v.add(j) as *const _);
                }
            } else {
                for j in 0..4 {
                    let raw = _mm512_loadu_si512(v.add(j) as *const _);
                    w[j] = _mm512_and_si512(raw, low);
                    w[4 + j] = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), low);
                }
            }
            for t in 0..N {
                let x = &xs[t][blk];
                // The activation bytes as eight little-endian i32 (four bytes each).
                let q = x.qs.as_ptr() as *const i32;
                let mut i0 = _mm512_setzero_si512();
                let mut i1 = _mm512_setzero_si512();
                for j in 0..4 {
                    let (q0, q1) = (q.add(j).read_unaligned(), q.add(4 + j).read_unaligned());
                    i0 = _mm512_dpbusd_epi32(i0, w[j], _mm512_set1_epi32(q0));
                    i1 = _mm512_dpbusd_epi32(i1, w[4 + j], _mm512_set1_epi32(q1));
                }
                let mut i = _mm512_add_epi32(i0, i1);
                if BYTES {
                    i = _mm512_sub_epi32(i, _mm512_set1_epi32(128 * x.sum));
                }
                let dd = _mm512_mul_ps(d, _mm512_set1_ps(x.d));
                a[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), dd, a[t]);
                if !BYTES {
                    b[t] = _mm512_fmadd_ps(c, _mm512_set1_ps(x.s), b[t]);
                }
            }
        }
        for t in 0..N {
            let out = if BYTES {
                a[t]
            } else {
                _mm512_add_ps(a[t], b[t])
            };
            _mm512_storeu_ps(tile.as_mut_ptr().add(t * GROUP), out);
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use std::arch::aarch64::*;
    use std::arch::asm;

    /// `acc[i] += sum_k w[4i + k] * x[4 LANE + k]` (signed bytes): `sdot` by element, which
    /// stable Rust has no intrinsic for yet.
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn sdot_lane<const LANE: i32>(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        // SAFETY: a register-only instruction; the caller's target has `dotprod`.
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{lane}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            lane = const LANE,
            options(pure, nomem, nostack, preserves_flags),
        );
        acc
    }

    /// Four f16 (little-endian, at `p`) as f32 (`fcvtl`, exact).
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn f16x4(p: *const u8) -> float32x4_t {
        // SAFETY (caller): `p` points at 8 readable bytes.
        let h = vld1_u16(p as *const u16);
        let out: float32x4_t;
        // SAFETY: a register-only instruction.
        asm!(
            "fcvtl {o:v}.4s, {h:v}.4h",
            o = out(vreg) out,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags),
        );
        out
    }

    /// Sum over chunks `j` of `sdot(w[j], x lane j)` for the eight chunks of one block:
    /// `w[0..4]` against the activation bytes 0..16 (`xl`), `w[4..8]` against 16..32 (`xh`).
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn block_isum(w: &[int8x16_t; 8], xl: int8x16_t, xh: int8x16_t) -> int32x4_t {
        let z = vdupq_n_s32(0);
        let i0 = sdot_lane::<0>(z, w[0], xl);
        let i1 = sdot_lane::<0>(z, w[4], xh);
        let i0 = sdot_lane::<1>(i0, w[1], xl);
        let i1 = sdot_lane::<1>(i1, w[5], xh);
        let i0 = sdot_lane::<2>(i0, w[2], xl);
        let i1 = sdot_lane::<2>(i1, w[6], xh);
        let i0 = sdot_lane::<3>(i0, w[3], xl);
        let i1 = sdot_lane::<3>(i1, w[7], xh);
        vaddq_s32(i0, i1)
    }

    /// [`portable::group_dot`] for `N` vectors, four rows (a quad) per vector operation:
    /// the integer sums are the same (a `Q8_0` row's signed values are dotted directly, which
    /// is exactly the portable `sum (w + 128) q - 128 sum q`), the float steps the same fused
    /// operations in the same order, so the results are bitwise the portable ones (tested
    /// under qemu).
    ///
    /// # Safety
    /// NEON and `dotprod` available; `group` holds `xs[t].len()` group blocks.
    #[target_feature(enable = "neon,dotprod")]
    pub unsafe fn group_dot<const N: usize, const BYTES: bool>(
        group: &[u8],
        xs: &[&[BlockQ8]; MAX_VECTORS],
        tile: &mut [f32; GROUP * MAX_VECTORS],
    ) {
        let nb = xs[0].len();
        let block = if BYTES { BYTE_BLOCK } else { NIBBLE_BLOCK };
        debug_assert!(group.len() >= nb * block);
        let p = group.as_ptr();
        for quad in 0..GROUP / 4 {
            let mut a = [vdupq_n_f32(0.0); N];
            let mut b = [vdupq_n_f32(0.0); N];
            // `blk` indexes the group's blocks and every vector's: a range reads plainest.
            #[allow(clippy::needless_range_loop)]
            for blk in 0..nb {
                // SAFETY: block `blk` of the group is `block` bytes inside `group`; a quad's
                // bytes of a chunk are 16 at `16 quad` in the chunk's 64.
                let base = p.add(blk * block);
                let d = f16x4(base.add(8 * quad));
                let c = f16x4(base.add(2 * GROUP + 8 * quad));
                let chunk = |j: usize| vld1q_u8(base.add(VALUES + j * 4 * GROUP + 16 * quad));
                let mut w = [vdupq_n_s8(0); 8];
                if BYTES {
                    for (j, wj) in w.iter_mut().enumerate() {
                        *wj = vreinterpretq_s8_u8(veorq_u8(chunk(j), vdupq_n_u8(0x80)));
                    }
                } else {
                    for j in 0..4 {
                        let raw = chunk(j);
                        w[j] = vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0f)));
                        w[4 + j] = vreinterpretq_s8_u8(vshrq_n_u8::<4>(raw));
                    }
                }
                for t in 0..N {
                    let x = &xs[t][blk];
                    let (xl, xh) = (vld1q_s8(x.qs.as_ptr()), vld1q_s8(x.qs.as_ptr().add(16)));
                    let i = vcvtq_f32_s32(block_isum(&w, xl, xh));
                    let dd = vmulq_f32(d, vdupq_n_f32(x.d));
                    a[t] = vfmaq_f32(a[t], i, dd);
                    if !BYTES {
                        b[t] = vfmaq_f32(b[t], c, vdupq_n_f32(x.s));
                    }
                }
            }
            for t in 0..N {
                let out = if BYTES { a[t] } else { vaddq_f32(a[t], b[t]) };
                vst1q_f32(tile.as_mut_ptr().add(t * GROUP + 4 * quad), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dot::dot_q;
    use crate::quant::quantize_q8_vec;
    use model::quant::quantize;

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

    fn tensor(ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Tensor<'_> {
        Tensor {
            name: "w",
            ty,
            rows,
            cols,
            data,
        }
    }

    /// Packed products equal the stored layout's within rounding (the same integer sums, the
    /// scale products in another order), for both types, a partial last group and any row
    /// range starting at a group.
    #[test]
    fn packed_products_match_the_stored_kernels() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let (rows, cols, n_tok) = (37, 96, 3);
            let data = quantize(ty, &values(rows * cols, 7));
            let w = tensor(ty, rows, cols, &data);
            let p = Packed::new(&w).expect("packs");
            let x = values(n_tok * cols, 11);
            let xq = quantize_q8_vec(&x);
            for r0 in [0, 16, 32] {
                let n = rows - r0;
                let mut out = vec![0f32; n * n_tok];
                p.dot_rows(r0, &xq, n_tok, &mut out);
                for r in 0..n {
                    for t in 0..n_tok {
                        let nb = cols / QK;
                        let want = dot_q(ty, w.row_data(r0 + r), &xq[t * nb..(t + 1) * nb]);
                        let got = out[r * n_tok + t];
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{ty:?} row {} vector {t}: {got} vs {want}",
                            r0 + r
                        );
                    }
                }
            }
        }
    }

    /// The SIMD kernel is bitwise the portable one, and an output does not depend on how many
    /// vectors share the call (1 to 9, across the kernel's groups of four).
    #[test]
    fn packed_kernel_is_bitwise_portable_and_row_invariant() {
        // scripts/test sets this where a SIMD kernel must run (the qemu `-cpu max` run has
        // `dotprod`), so this cannot silently compare the portable kernel with itself there.
        if std::env::var_os("ESPRESSO_EXPECT_PACKED_SIMD").is_some() {
            assert!(available(), "no packed SIMD kernel on this CPU");
        }
        eprintln!(
            "packed kernel under test: {}",
            if available() { "SIMD" } else { "portable" }
        );
        let (rows, cols) = (48, 160);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let data = quantize(ty, &values(rows * cols, 3));
            let w = tensor(ty, rows, cols, &data);
            let p = Packed::new(&w).expect("packs");
            let nb = cols / QK;
            let x = values(9 * cols, 5);
            let xq = quantize_q8_vec(&x);
            // Each vector alone, through the portable kernel.
            let mut alone = vec![0f32; rows * 9];
            for t in 0..9 {
                let xs = [&xq[t * nb..(t + 1) * nb]];
                let mut tile = [0f32; GROUP * MAX_VECTORS];
                for g in 0..rows / GROUP {
                    portable::group_dot(p.group(g), p.bytes, &xs, &mut tile);
                    for lane in 0..GROUP {
                        alone[(g * GROUP + lane) * 9 + t] = tile[lane];
                    }
                }
            }
            for n_tok in 1..=9 {
                let mut out = vec![0f32; rows * n_tok];
                p.dot_rows(0, &xq[..n_tok * nb], n_tok, &mut out);
                for r in 0..rows {
                    for t in 0..n_tok {
                        assert_eq!(
                            out[r * n_tok + t].to_bits(),
                            alone[r * 9 + t].to_bits(),
                            "{ty:?} row {r} vector {t} of {n_tok}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn other_types_are_not_packed() {
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q5_1, GgmlType::Q4_K] {
            let data = quantize(ty, &values(16 * 256, 1));
            assert!(Packed::new(&tensor(ty, 16, 256, &data)).is_none(), "{ty:?}");
        }
    }
}
