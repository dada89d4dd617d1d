//! Matrix products `out = x W^T` of a chunk of activations with a stored weight matrix.
//!
//! Shapes: `W: [rows][cols]` (stored type, e.g. Q4_1), `x: [n_tok][cols]` f32,
//! `out: [n_tok][rows]` f32. Work is split over output rows on a rayon pool; inside a task each
//! weight row is read once and dotted with every token of the chunk, so a prefill chunk streams
//! the weights once, not once per token.
//!
//! Two precisions:
//! - [`Precision::Fast`]: block-quantized rows are dotted with 8-bit activation blocks
//!   ([`crate::quant::BlockQ8`]) in integer arithmetic; float rows with f32 activations.
//! - [`Precision::Exact`]: every row is dequantized to f32 on the fly and dotted with the f32
//!   activations, accumulating in f32. The fast path is measured against this.
//!
//! The K-quants (`Q4_K`, `Q5_K`, `Q6_K`: 256-element super-blocks) have integer kernels too,
//! over the same 32-element activation blocks.
//!
//! A weight may come with a repacked copy ([`Packed`], sixteen rows interleaved); the fast
//! path's products then use it ([`matmuls_packed`]), with the same arithmetic per output
//! whatever the number of tokens.

use crate::dot::{dequantize_row, dot_f32, dot_float_row, dot_q_rows};
use crate::packed::{Packed, GROUP};
use crate::quant::{quantize_q8, BlockQ8};
use crate::tiles;
use model::quant::QK;
use model::Tensor;
use rayon::prelude::*;
use rayon::ThreadPool;

/// How weight products are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Quantized rows against 8-bit activation blocks, float rows against f32 activations,
    /// one weight row at a time (each output is computed the same way whatever `n_tok` is).
    Fast,
    /// For a prefill chunk: every weight matrix without a [`Packed`] form, quantized or
    /// float, is multiplied in f32 with rows converted to f32 once per chunk, which for many
    /// tokens is faster than the stored layout's integer kernels (SmolLM2 Q4_1 pp512: 518 vs
    /// 354 tok/s on 2 threads) and closer to the exact path (no 8-bit activations). With
    /// AVX-512 the products run in our tiled kernel ([`tiles`]: F32 rows read where they are
    /// stored; seed shape pp64 on 2 threads: F16 ~1.3x, F32 ~1.15x the `gemm` crate path),
    /// elsewhere through the `gemm` crate's packed, cache-blocked GEMM. Either way a token's
    /// result does not depend on the chunk it is part of.
    FastChunk,
    /// Every row dequantized to f32 and dotted in f32: the reference path.
    Exact,
}

/// Weight rows per GEMM task of [`Precision::FastChunk`] (converted to f32 per task).
const GEMM_PANEL: usize = 128;

/// Weight rows per task of [`Precision::FastChunk`] with the tiled kernel ([`tiles`]).
const TILE_TASK_ROWS: usize = 48;

thread_local! {
    /// A pool thread's buffers for the tiled kernel's tasks (rows in f32, their products),
    /// kept between tasks so that a prompt chunk does not allocate and zero them per task.
    static TILE_SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Most tokens per GEMM call of [`Precision::FastChunk`].
const GEMM_TOKENS: usize = 64;

/// Token rows of a GEMM call are padded with zero rows to a multiple of this. The `gemm`
/// crate's arithmetic for a row depends on the shape it is part of (small `m` takes other
/// kernels); with whole tiles of 16 rows a token's result depends only on its own activations,
/// never on how many tokens share the chunk, so a prompt gives bitwise the same logits however
/// it is cut (tested for m = 1..64 against 70; a fixed 64-row shape would also do, but costs
/// a short prompt four times the work).
const GEMM_ROWS: usize = 16;

/// Block types with integer kernels ([`dot_q_rows`]); their activations are quantized to 8 bits.
fn is_block_type(w: &Tensor) -> bool {
    crate::dot::is_block_type(w.ty)
}

/// Plain float rows, dotted directly with f32 activations ([`dot_float_row`]).
fn is_float_type(w: &Tensor) -> bool {
    w.ty.block_elems() == 1
}

/// Rows per rayon task: enough tasks to balance `threads`, at least a few rows each; whole
/// groups of rows for a packed weight.
fn task_rows(rows: usize, threads: usize, packed: bool) -> usize {
    let n = rows.div_ceil(threads.max(1) * 8).max(4);
    if packed {
        n.next_multiple_of(GROUP)
    } else {
        n
    }
}

/// `out[t][r] = sum_c W[r][c] * x[t][c]` for `t < n_tok`. See the module docs.
pub fn matmul(
    pool: &ThreadPool,
    w: &Tensor,
    x: &[f32],
    n_tok: usize,
    precision: Precision,
    out: &mut [f32],
) {
    matmuls(pool, &mut [(w, out)], x, n_tok, precision);
}

/// Several products sharing the input `x` (e.g. Q, K, V), computed in one parallel region so
/// that the activations are quantized once and the pool is woken once.
pub fn matmuls(
    pool: &ThreadPool,
    jobs: &mut [(&Tensor, &mut [f32])],
    x: &[f32],
    n_tok: usize,
    precision: Precision,
) {
    let mut jobs: Vec<(&Tensor, Option<&Packed>, &mut [f32])> = jobs
        .iter_mut()
        .map(|(w, out)| (*w, None, &mut **out))
        .collect();
    matmuls_packed(pool, &mut jobs, x, n_tok, precision);
}

/// [`matmuls`] where a weight may also come repacked ([`Packed`]): on the fast path its
/// products then go through the packed kernel, decode steps and prompt chunks alike.
pub fn matmuls_packed(
    pool: &ThreadPool,
    jobs: &mut [(&Tensor, Option<&Packed>, &mut [f32])],
    x: &[f32],
    n_tok: usize,
    precision: Precision,
) {
    let Some(cols) = jobs.first().map(|(w, _, _)| w.cols) else {
        return;
    };
    for (w, _, out) in jobs.iter() {
        assert_eq!(w.cols, cols, "matmuls {}: inputs differ", w.name);
        assert_eq!(x.len(), n_tok * cols, "matmul {}: input shape", w.name);
        assert_eq!(out.len(), n_tok * w.rows, "matmul {}: output shape", w.name);
    }
    // Packed weights are faster through their kernel than through the GEMM at every chunk
    // size measured (SmolLM2 Q4_1 on 2 threads: pp8 3.1x, pp16 2.0x, pp32 1.4x, pp64 1.03x,
    // pp512 1.1x), so a chunk whose weights are all packed takes it: one arithmetic for
    // prompts and decode steps, whatever the chunk.
    let precision = match precision {
        Precision::FastChunk if jobs.iter().all(|(_, p, _)| p.is_some()) => Precision::Fast,
        p => p,
    };
    if precision == Precision::FastChunk {
        let mut plain: Vec<(&Tensor, &mut [f32])> = jobs
            .iter_mut()
            .map(|(w, _, out)| (*w, &mut **out))
            .collect();
        if tiles::available() {
            tiled_panels(pool, &mut plain, x, n_tok);
        } else {
            gemm_panels(pool, &mut plain, x, n_tok);
        }
        return;
    }
    // xq: [n_tok][cols / 32], when some weight is block-quantized and we are on the fast path.
    let nb = cols / QK;
    let mut xq = Vec::new();
    if precision == Precision::Fast && jobs.iter().any(|(w, _, _)| is_block_type(w)) {
        xq.resize(n_tok * nb, BlockQ8::default());
        for (xs, qs) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(nb)) {
            quantize_q8(xs, qs);
        }
    }
    // Results are produced row-major over weight rows, `rt: [rows][n_tok]`, then transposed;
    // with one token that is already the output layout.
    let mut rts: Vec<Vec<f32>> = if n_tok == 1 {
        Vec::new()
    } else {
        jobs.iter()
            .map(|(w, _, _)| vec![0f32; w.rows * n_tok])
            .collect()
    };
    let threads = pool.current_num_threads();
    // (weight, its packed form when the fast path uses it, first row, output rows)
    type Task<'t> = (&'t Tensor<'t>, Option<&'t Packed>, usize, &'t mut [f32]);
    let mut tasks: Vec<Task> = Vec::new();
    let fast = precision == Precision::Fast;
    if n_tok == 1 {
        for (w, packed, out) in jobs.iter_mut() {
            let packed = packed.filter(|_| fast);
            let chunk = task_rows(w.rows, threads, packed.is_some());
            for (ci, rt_c) in out.chunks_mut(chunk).enumerate() {
                tasks.push((*w, packed, ci * chunk, rt_c));
            }
        }
    } else {
        for ((w, packed, _), rt) in jobs.iter().zip(rts.iter_mut()) {
            let packed = packed.filter(|_| fast);
            let chunk = task_rows(w.rows, threads, packed.is_some());
            for (ci, rt_c) in rt.chunks_mut(chunk * n_tok).enumerate() {
                tasks.push((*w, packed, ci * chunk, rt_c));
            }
        }
    }
    let (x, xq) = (x, &xq[..]);
    pool.install(|| {
        tasks
            .into_par_iter()
            .for_each(|(w, packed, r0, rt_c)| match packed {
                Some(p) => p.dot_rows(r0, &xq[..n_tok * (cols / QK)], n_tok, rt_c),
                None => row_block(w, r0, rt_c, x, xq, n_tok, precision),
            })
    });
    for ((w, _, out), rt) in jobs.iter_mut().zip(&rts) {
        // transpose [rows][n_tok] -> [n_tok][rows], 16 rows at a time
        for r0 in (0..w.rows).step_by(16) {
            let r1 = (r0 + 16).min(w.rows);
            for (t, o) in out.chunks_exact_mut(w.rows).enumerate() {
                for (r, o_r) in o[r0..r1].iter_mut().enumerate() {
                    *o_r = rt[(r0 + r) * n_tok + t];
                }
            }
        }
    }
}

/// [`Precision::FastChunk`] on CPUs with the tiled kernel: the tokens laid out once, every
/// job's rows in tasks of [`TILE_TASK_ROWS`] on the pool, each converting its rows to f32,
/// multiplying them with all tokens ([`tiles::products`]) and turning its results to
/// `[n_tok][rows]`; they are then put in place.
fn tiled_panels(pool: &ThreadPool, jobs: &mut [(&Tensor, &mut [f32])], x: &[f32], n_tok: usize) {
    // (job, first row, rows)
    let tasks: Vec<(usize, usize, usize)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, (w, _))| {
            (0..w.rows)
                .step_by(TILE_TASK_ROWS)
                .map(move |r0| (j, r0, TILE_TASK_ROWS.min(w.rows - r0)))
        })
        .collect();
    let weights: Vec<&Tensor> = jobs.iter().map(|(w, _)| *w).collect();
    let cols = weights[0].cols;
    let xt = pool.install(|| tiles::Tokens::new(x, cols, n_tok));
    let results: Vec<Vec<f32>> = pool.install(|| {
        tasks
            .par_iter()
            .map(|&(j, r0, nr)| {
                let w = weights[j];
                TILE_SCRATCH.with_borrow_mut(|(scratch, rt)| {
                    // wf: [nr][cols] the rows in f32 (F32 rows where they are stored, when
                    // aligned, as GGUF data is); rt: [nr][n_tok] their products
                    let rb = w.row_bytes();
                    let stored = &w.data[r0 * rb..(r0 + nr) * rb];
                    let in_place = match w.ty {
                        model::GgmlType::F32 => bytemuck::try_cast_slice::<u8, f32>(stored).ok(),
                        _ => None,
                    };
                    let wf = match in_place {
                        Some(rows) => rows,
                        None => {
                            scratch.resize(nr * cols, 0.0);
                            let wf = &mut scratch[..nr * cols];
                            for (i, row) in wf.chunks_exact_mut(cols).enumerate() {
                                dequantize_row(w.ty, w.row_data(r0 + i), row);
                            }
                            wf
                        }
                    };
                    rt.resize(nr * n_tok, 0.0);
                    let rt = &mut rt[..nr * n_tok];
                    // The rows after these, which this thread likely converts next.
                    let next = w.data.get((r0 + nr) * rb..).unwrap_or(&[]);
                    let ahead = match in_place {
                        Some(_) => &[],
                        None => &next[..next.len().min(nr * rb)],
                    };
                    tiles::products(wf, &xt, rt, ahead, in_place.is_some());
                    let mut res = vec![0f32; n_tok * nr]; // [n_tok][nr]
                    for (i, vals) in rt.chunks_exact(n_tok).enumerate() {
                        for (t, &v) in vals.iter().enumerate() {
                            res[t * nr + i] = v;
                        }
                    }
                    res
                })
            })
            .collect()
    });
    // Put in place on the pool, a token's outputs per job at a time.
    pool.install(|| {
        for (j, (w, out)) in jobs.iter_mut().enumerate() {
            let rows = w.rows;
            out.par_chunks_mut(rows).enumerate().for_each(|(t, o)| {
                for (&(_, r0, nr), res) in tasks.iter().zip(&results).filter(|(k, _)| k.0 == j) {
                    o[r0..r0 + nr].copy_from_slice(&res[t * nr..(t + 1) * nr]);
                }
            });
        }
    });
}

/// [`Precision::FastChunk`] elsewhere: every job's rows in panels of [`GEMM_PANEL`],
/// one task per panel on the pool, each converting its rows to f32 and multiplying them with
/// all tokens in one single-threaded packed GEMM; the panels' results are then put in place.
fn gemm_panels(pool: &ThreadPool, jobs: &mut [(&Tensor, &mut [f32])], x: &[f32], n_tok: usize) {
    // (job, first row, rows)
    let panels: Vec<(usize, usize, usize)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, (w, _))| {
            (0..w.rows)
                .step_by(GEMM_PANEL)
                .map(move |r0| (j, r0, GEMM_PANEL.min(w.rows - r0)))
        })
        .collect();
    let weights: Vec<&Tensor> = jobs.iter().map(|(w, _)| *w).collect();
    // The tokens in slabs of GEMM_TOKENS rows, the last padded with zeros: [slabs][64][cols].
    let cols = weights[0].cols;
    let mut slabs = vec![0f32; n_tok.div_ceil(GEMM_TOKENS) * GEMM_TOKENS * cols];
    slabs[..n_tok * cols].copy_from_slice(&x[..n_tok * cols]);
    let slabs = &slabs[..];
    let results: Vec<Vec<f32>> = pool.install(|| {
        panels
            .par_iter()
            .map(|&(j, r0, nr)| gemm_panel(weights[j], r0, nr, slabs, n_tok))
            .collect()
    });
    for (&(j, r0, nr), res) in panels.iter().zip(&results) {
        let (w, out) = &mut jobs[j];
        for (t, vals) in res.chunks_exact(nr).enumerate() {
            out[t * w.rows + r0..t * w.rows + r0 + nr].copy_from_slice(vals);
        }
    }
}

/// `x · W[r0..r0 + nr]ᵀ` as `[n_tok][nr]`: the rows converted to f32, then one packed GEMM
/// per slab of up to [`GEMM_TOKENS`] tokens (`slabs`: the tokens, zero-padded to whole slabs;
/// each call covers its tokens rounded up to [`GEMM_ROWS`]).
fn gemm_panel(w: &Tensor, r0: usize, nr: usize, slabs: &[f32], n_tok: usize) -> Vec<f32> {
    let cols = w.cols;
    // [nr][cols] f32: F32 rows are used where they are stored (when 4-byte aligned, as GGUF
    // data is); other types are converted.
    let rb = w.row_bytes();
    let stored = &w.data[r0 * rb..(r0 + nr) * rb];
    let in_place = w.ty == model::GgmlType::F32
        && stored.len() == nr * cols * 4
        && (stored.as_ptr() as usize).is_multiple_of(std::mem::align_of::<f32>());
    let mut converted = Vec::new();
    let wf: *const f32 = if in_place {
        stored.as_ptr() as *const f32
    } else {
        converted.resize(nr * cols, 0f32);
        for (i, row) in converted.chunks_exact_mut(cols).enumerate() {
            dequantize_row(w.ty, w.row_data(r0 + i), row);
        }
        converted.as_ptr()
    };
    let mut out = vec![0f32; slabs.len() / cols * nr]; // [padded tokens][nr]
    for (si, (xs, dst)) in slabs
        .chunks_exact(GEMM_TOKENS * cols)
        .zip(out.chunks_exact_mut(GEMM_TOKENS * nr))
        .enumerate()
    {
        // Rows of this slab, rounded up to whole GEMM_ROWS tiles (the zero padding).
        let m = (n_tok - si * GEMM_TOKENS)
            .min(GEMM_TOKENS)
            .next_multiple_of(GEMM_ROWS);
        // dst (m × n = nr) = xs (m × k = cols) · wfᵀ (k × n: element (c, r) at r * cols + c).
        // SAFETY: f32 is a type `gemm` supports; with these sizes and strides every access
        // stays inside `dst` (GEMM_TOKENS * nr), `xs` (GEMM_TOKENS * cols) and `wf`
        // (nr * cols f32: `converted`, or the stored little-endian F32 rows, checked above to
        // hold that many bytes and to be aligned), as m <= GEMM_TOKENS; `dst` is borrowed
        // mutably and aliases nothing.
        unsafe {
            gemm::gemm(
                m,
                nr,
                cols,
                dst.as_mut_ptr(),
                1,
                nr as isize,
                false,
                xs.as_ptr(),
                1,
                cols as isize,
                wf,
                cols as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
    out.truncate(n_tok * nr);
    out
}

/// Rows `r0..r0 + rt.len() / n_tok` of `W x^T` into `rt: [rows][n_tok]`; each weight row is
/// read once and dotted with every token.
fn row_block(
    w: &Tensor,
    r0: usize,
    rt: &mut [f32],
    x: &[f32],
    xq: &[BlockQ8],
    n_tok: usize,
    precision: Precision,
) {
    let cols = w.cols;
    let nb = cols / QK;
    match precision {
        Precision::Fast if is_block_type(w) => {
            // Each weight row's blocks are decoded once for up to four tokens.
            let n_rows = rt.len() / n_tok;
            let rb = w.row_data(0).len();
            let rows = &w.data[r0 * rb..(r0 + n_rows) * rb];
            dot_q_rows(w.ty, rows, &xq[..n_tok * nb], n_tok, rt);
        }
        Precision::Fast if is_float_type(w) => {
            for (i, o) in rt.chunks_exact_mut(n_tok).enumerate() {
                let row = w.row_data(r0 + i);
                for (t, o_t) in o.iter_mut().enumerate() {
                    *o_t = dot_float_row(w.ty, row, &x[t * cols..(t + 1) * cols]);
                }
            }
        }
        // Exact, and the fast path for types without a kernel yet (K-quants, Q5_0/Q5_1):
        // each row is dequantized once and dotted with every token's f32 activations.
        _ => {
            let mut wrow = vec![0f32; cols];
            for (i, o) in rt.chunks_exact_mut(n_tok).enumerate() {
                w.dequantize_row(r0 + i, &mut wrow);
                for (t, o_t) in o.iter_mut().enumerate() {
                    *o_t = dot_f32(&wrow, &x[t * cols..(t + 1) * cols]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::quant::quantize;
    use model::GgmlType;

    fn pool(n: usize) -> ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("thread pool")
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The GEMM path of prefill chunks (float weights) agrees with the exact path, and a
    /// token's result does not depend on how many tokens share the chunk (bitwise), so a
    /// prompt gives the same logits however it is cut into chunks.
    #[test]
    fn gemm_chunks_match_exact_and_do_not_depend_on_the_chunk() {
        let (rows, cols) = (150, 96);
        let p = pool(2);
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            let bytes = quantize(ty, &values(rows * cols, 3));
            let w = Tensor {
                name: "w",
                ty,
                rows,
                cols,
                data: &bytes,
            };
            let n_tok = 70;
            let x = values(n_tok * cols, 4);
            let mut chunk = vec![0f32; n_tok * rows];
            matmul(&p, &w, &x, n_tok, Precision::FastChunk, &mut chunk);
            let mut exact = vec![0f32; n_tok * rows];
            matmul(&p, &w, &x, n_tok, Precision::Exact, &mut exact);
            for (a, b) in chunk.iter().zip(&exact) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{ty:?}: {a} vs {b}"
                );
            }
            for m in [1usize, 2, 5, 15, 16, 17, 31, 33, 48, 63, 64] {
                let mut part = vec![0f32; m * rows];
                matmul(&p, &w, &x[..m * cols], m, Precision::FastChunk, &mut part);
                for (i, (a, b)) in part.iter().zip(&chunk).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{ty:?} m={m} element {i}");
                }
            }
        }
    }

    /// Exact matmul equals a triple loop over the dequantized matrix; fast matmul stays within
    /// the 8-bit activation rounding bound of it; batched equals token-by-token.
    #[test]
    fn matmul_paths_agree_for_every_type() {
        let (rows, n_tok) = (37, 5);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            // An odd number of 32-blocks; whole super-blocks for the K-quants.
            let cols = if ty.block_elems() > QK { 512 } else { 96 };
            let wf = values(rows * cols, 1);
            let x = values(n_tok * cols, 2);
            let data = quantize(ty, &wf);
            let w = Tensor {
                name: "w",
                ty,
                rows,
                cols,
                data: &data,
            };
            let wd = w.to_f32();
            for threads in [1, 3] {
                let p = pool(threads);
                let mut exact = vec![0f32; n_tok * rows];
                let mut fast = vec![0f32; n_tok * rows];
                matmul(&p, &w, &x, n_tok, Precision::Exact, &mut exact);
                matmul(&p, &w, &x, n_tok, Precision::Fast, &mut fast);
                for t in 0..n_tok {
                    let xt = &x[t * cols..(t + 1) * cols];
                    // Activation rounding bound: |sum w (x - x_q)| <= sum |w| * d/2 per block.
                    for r in 0..rows {
                        let wr = &wd[r * cols..(r + 1) * cols];
                        let naive: f32 = wr.iter().zip(xt).map(|(a, b)| a * b).sum();
                        let bound: f32 = if is_block_type(&w) {
                            wr.chunks(QK)
                                .zip(xt.chunks(QK))
                                .map(|(wb, xb)| {
                                    let d = xb.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                                    wb.iter().map(|v| v.abs()).sum::<f32>() * d * 0.5
                                })
                                .sum()
                        } else {
                            0.0
                        };
                        let e = exact[t * rows + r];
                        let f = fast[t * rows + r];
                        assert!((e - naive).abs() < 1e-4, "{ty:?} exact {e} vs {naive}");
                        assert!(
                            (f - e).abs() <= bound * 1.01 + 1e-4,
                            "{ty:?} fast {f} vs exact {e} (bound {bound})"
                        );
                    }
                    // One token at a time gives the same numbers as the batch.
                    let mut single = vec![0f32; rows];
                    matmul(&p, &w, xt, 1, Precision::Fast, &mut single);
                    assert_eq!(&single[..], &fast[t * rows..(t + 1) * rows]);
                }
            }
        }
    }

    /// Fused products (shared input, mixed types) equal the separate ones.
    #[test]
    fn fused_matmuls_equal_separate() {
        let (cols, n_tok) = (64, 3);
        let x = values(n_tok * cols, 9);
        let a = quantize(GgmlType::Q4_1, &values(20 * cols, 10));
        let b = quantize(GgmlType::F32, &values(7 * cols, 11));
        let wa = Tensor {
            name: "a",
            ty: GgmlType::Q4_1,
            rows: 20,
            cols,
            data: &a,
        };
        let wb = Tensor {
            name: "b",
            ty: GgmlType::F32,
            rows: 7,
            cols,
            data: &b,
        };
        let p = pool(2);
        for prec in [Precision::Fast, Precision::Exact] {
            for n in [1, n_tok] {
                let xs = &x[..n * cols];
                let (mut oa, mut ob) = (vec![0f32; n * 20], vec![0f32; n * 7]);
                matmuls(&p, &mut [(&wa, &mut oa), (&wb, &mut ob)], xs, n, prec);
                let (mut sa, mut sb) = (vec![0f32; n * 20], vec![0f32; n * 7]);
                matmul(&p, &wa, xs, n, prec, &mut sa);
                matmul(&p, &wb, xs, n, prec, &mut sb);
                assert_eq!((oa, ob), (sa, sb));
            }
        }
    }
}
