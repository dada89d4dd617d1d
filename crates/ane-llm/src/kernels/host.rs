//! Host-side data for the kernels: the per-dispatch position input, lane reads in the I/O
//! element type (through `ane::surface`'s codec), and the K/V-row scatter into the caches.

use mil::DType;

use super::{Geometry, MASK_HIDDEN};
use ane::{surface, DeviceError};

/// RoPE angles of one position (RoFormer, Su et al. 2021): `theta_i = pos · base^(−2i/hd)`
/// for `i in 0..hd/2`, as `(cos, sin)` — the same f64 computation as the CPU backend.
pub fn rope_angles(pos: usize, head_dim: usize, base: f32) -> (Vec<f32>, Vec<f32>) {
    (0..head_dim / 2)
        .map(|i| {
            let freq = (base as f64).powf(-2.0 * i as f64 / head_dim as f64);
            let theta = pos as f64 * freq;
            (theta.cos() as f32, theta.sin() as f32)
        })
        .unzip()
}

/// The `i01_pos` input for tokens at positions `pos .. pos + n` in lanes `0 .. n`,
/// `[2D + 2S][L]` row-major (channel-major surface layout):
///
/// * channels `0..D`: cos of the angle of channel c's pair (`i = (c mod hd) / 2`);
///   channels `D..2D`: the sin (adjacent-pair RoPE: both members of a pair share an angle);
/// * channels `2D + s`: additive mask, 0 where slot `s ≤ pos + t`, −1e4 elsewhere;
/// * channels `2D + S + s`: 1 where slot `s = pos + t` (the chunk's new K/V go there).
///
/// Lanes `n..L` carry no token: identity rotation, lane 0's mask, no scatter.
pub fn position_input(g: &Geometry, pos: usize, n: usize) -> Vec<f32> {
    let (d, s, l, hd) = (g.dim, g.max_seq, g.lanes, g.head_dim);
    let mut out = vec![0f32; g.pos_channels() * l];
    for t in 0..l {
        let p = if t < n { pos + t } else { pos };
        let (cos, sin) = if t < n {
            rope_angles(p, hd, g.rope_theta)
        } else {
            (vec![1.0; hd / 2], vec![0.0; hd / 2])
        };
        for c in 0..d {
            let i = (c % hd) / 2;
            out[c * l + t] = cos[i];
            out[(d + c) * l + t] = sin[i];
        }
        for slot in 0..s {
            out[(2 * d + slot) * l + t] = if slot <= p { 0.0 } else { MASK_HIDDEN };
            if t < n && slot == p {
                out[(2 * d + s + slot) * l + t] = 1.0;
            }
        }
    }
    out
}

/// Lane `lane` of channels `0..channels` of a `[C, spatial]` surface of type `dt`.
pub fn read_lane(
    dt: DType,
    bytes: &[u8],
    spatial: usize,
    lane: usize,
    channels: usize,
) -> Result<Vec<f32>, DeviceError> {
    (0..channels)
        .map(|c| {
            surface::element(dt, bytes, c * spatial + lane).ok_or_else(|| {
                DeviceError::OutOfBounds(format!(
                    "lane {lane} of channel {c} outside a {}-byte [{channels}, {spatial}] {dt} surface",
                    bytes.len()
                ))
            })
        })
        .collect()
}

/// Copy lanes `0..n` of channels `src_ch .. src_ch + rows` of `src` (`[C, lanes]`) into slots
/// `slot .. slot + n` of `dst` (`[rows, slots]`), element size `esz` bytes.
#[allow(clippy::too_many_arguments)]
pub fn scatter_rows(
    src: &[u8],
    lanes: usize,
    src_ch: usize,
    rows: usize,
    n: usize,
    dst: &mut [u8],
    slots: usize,
    slot: usize,
    esz: usize,
) {
    for r in 0..rows {
        let from = ((src_ch + r) * lanes) * esz;
        let to = (r * slots + slot) * esz;
        dst[to..to + n * esz].copy_from_slice(&src[from..from + n * esz]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom() -> Geometry {
        Geometry {
            dim: 8,
            kv_dim: 4,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
            ffn_dim: 16,
            vocab: 10,
            rms_eps: 1e-5,
            rope_theta: 100.0,
            lanes: 4,
            max_seq: 8,
            io: DType::Fp16,
        }
    }

    #[test]
    fn position_input_layout() {
        let g = geom();
        let (l, d, s) = (g.lanes, g.dim, g.max_seq);
        let p = position_input(&g, 3, 2);
        let at = |c: usize, t: usize| p[c * l + t];
        // lane 1 = position 4; channel 6 is head 1, pair 1 → theta = 4 · 100^(−2/4) = 0.4.
        assert!((at(6, 1) - 0.4f32.cos()).abs() < 1e-6);
        assert!((at(d + 7, 1) - 0.4f32.sin()).abs() < 1e-6);
        // mask of lane 0 (position 3): slots 0..=3 visible.
        let mask0: Vec<f32> = (0..s).map(|slot| at(2 * d + slot, 0)).collect();
        assert_eq!(&mask0[..4], &[0.0; 4]);
        assert!(mask0[4..].iter().all(|&m| m == MASK_HIDDEN));
        // scatter: lane 0 → slot 3, lane 1 → slot 4, lanes 2.. → nowhere.
        for t in 0..l {
            let row: Vec<f32> = (0..s).map(|slot| at(2 * d + s + slot, t)).collect();
            let want: Vec<f32> = (0..s)
                .map(|slot| if t < 2 && slot == 3 + t { 1.0 } else { 0.0 })
                .collect();
            assert_eq!(row, want, "lane {t}");
        }
        // idle lanes rotate by nothing.
        assert_eq!(at(0, 3), 1.0);
        assert_eq!(at(d, 3), 0.0);
    }

    #[test]
    fn scatter_moves_lanes_into_slots() {
        // src [3 channels, 2 lanes] fp32; copy channels 1..3, 2 lanes → dst [2 rows, 4 slots] at slot 1.
        let src = surface::encode(DType::Fp32, &[0.0, 0.5, 1.0, 1.5, 2.0, 2.5]).unwrap();
        let mut dst = vec![0u8; 2 * 4 * 4];
        scatter_rows(&src, 2, 1, 2, 2, &mut dst, 4, 1, 4);
        let mut got = vec![0f32; 8];
        surface::decode_into(DType::Fp32, &dst, &mut got).unwrap();
        assert_eq!(got, vec![0.0, 1.0, 1.5, 0.0, 0.0, 2.0, 2.5, 0.0]);
    }
}
