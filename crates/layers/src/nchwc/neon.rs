//! The aarch64 NEON micro-kernels: the direct tile, the AVX2 kernel's loops on 128-bit vectors
//! with an NCHW8c block as two `float32x4_t` halves (NEON has 32 vector registers: 2 blocks x 6
//! pixels or 1 x 12 is 24 accumulators, plus the weight halves and a broadcast), and the tile of
//! 4-channel groups (`lanes4.rs`), one group to a vector.

use std::arch::aarch64::*;

use super::kernel::{for_each_input, Tile, TileFn};
use super::layout::BLOCK;
use super::pack::PAIR;

/// f32 lanes of one vector.
const HALF: usize = BLOCK / 2;

/// Pixels a tile of `ob` output blocks (1 or 2) takes at most.
pub(super) fn max_pixels(ob: usize) -> usize {
    if ob == 1 {
        12
    } else {
        6
    }
}

/// `$f::<[$ob,] wt>` for a run-time `wt` among the listed pixel counts.
macro_rules! pick {
    ($f:ident; $($wt:literal)+) => {
        |wt: usize| match wt {
            $($wt => $f::<$wt> as TileFn,)+
            _ => unreachable!("{wt} pixels"),
        }
    };
    ($f:ident, $ob:literal; $($wt:literal)+) => {
        |wt: usize| match wt {
            $($wt => $f::<$ob, $wt> as TileFn,)+
            _ => unreachable!("{wt} pixels"),
        }
    };
}

/// The kernel for `ob` output blocks (1 or 2) and `wt` pixels (`1..=max_pixels(ob)`).
pub(super) fn kernel(ob: usize, wt: usize) -> TileFn {
    debug_assert!((1..=max_pixels(ob)).contains(&wt));
    if ob == 1 {
        pick!(tile_neon, 1; 1 2 3 4 5 6 7 8 9 10 11 12)(wt)
    } else {
        pick!(tile_neon, 2; 1 2 3 4 5 6)(wt)
    }
}

/// # Safety
/// The CPU has NEON (every aarch64 CPU); every address the strides of `t` reach for its
/// `nky x nkx` taps, `n_ib` blocks, `icb` channels, `WT` pixels and `OB` blocks is in bounds
/// (inputs readable, `out` writable by this call alone).
#[target_feature(enable = "neon")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_neon<const OB: usize, const WT: usize>(t: &Tile) {
    let mut acc = [[[vdupq_n_f32(0.0); 2]; WT]; OB];
    for b in 0..OB {
        for p in 0..WT {
            for h in 0..2 {
                let at = b * t.out_ob + p * BLOCK + h * HALF;
                acc[b][p][h] = if t.accumulate {
                    // SAFETY: this tile's output, written by an earlier chunk of this task.
                    unsafe { vld1q_f32(t.out.add(at)) }
                } else {
                    // SAFETY: the bias has 8 values per output block of the tile.
                    unsafe { vld1q_f32(t.bias.add(b * BLOCK + h * HALF)) }
                };
            }
        }
    }
    for_each_input!(t, |xp, wp| {
        let mut wv = [[vdupq_n_f32(0.0); 2]; OB];
        for b in 0..OB {
            for h in 0..2 {
                // SAFETY: the weights of this tap, channel and block are in bounds.
                wv[b][h] = unsafe { vld1q_f32(wp.add(b * BLOCK + h * HALF)) };
            }
        }
        for p in 0..WT {
            // SAFETY: this pixel's input at this tap and channel is inside the input.
            let xv = unsafe { *xp.add(p * t.x_pix) };
            for b in 0..OB {
                for h in 0..2 {
                    acc[b][p][h] = vfmaq_n_f32(acc[b][p][h], wv[b][h], xv);
                }
            }
        }
    });
    let zero = vdupq_n_f32(0.0);
    for b in 0..OB {
        for p in 0..WT {
            for h in 0..2 {
                let at = b * t.out_ob + p * BLOCK + h * HALF;
                let mut v = acc[b][p][h];
                if t.finish && !t.residual.is_null() {
                    // SAFETY: the residual is laid out like the output, which holds `at..at + 4`.
                    v = vaddq_f32(v, unsafe { vld1q_f32(t.residual.add(at)) });
                }
                if t.finish && t.relu {
                    v = vmaxnmq_f32(v, zero);
                }
                // SAFETY: `at..at + 4` is this tile's output, written by this call only.
                unsafe { vst1q_f32(t.out.add(at), v) };
            }
        }
    }
}

/// Pixels a 4-channel-group tile (one block: two groups, one per vector) takes at most: 16
/// accumulators, the 8 weight halves of a tap and a pixel's two vectors.
pub(super) const LANES4_PIXELS: usize = 8;

/// The 4-channel-group kernel (`lanes4.rs`) for `wt` pixels (`1..=LANES4_PIXELS`): a vector holds
/// one group's 4 inputs, and `vfmaq_laneq_f32` broadcasts input `k` from its lane, so that every
/// FMA does only the group's own MACs.
pub(super) fn lanes4_kernel(wt: usize) -> TileFn {
    pick!(tile_lanes4; 1 2 3 4 5 6 7 8)(wt)
}

/// # Safety
/// The CPU has NEON; every address the strides of `t` reach for its `nky x nkx` taps and `WT`
/// pixels of one input block is in bounds (inputs readable, `out`, 8 values per pixel, writable
/// by this call alone); `w` points at the block's 8 lanes of a tap's 4 weight vectors, `PAIR`
/// apart.
#[target_feature(enable = "neon")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_lanes4<const WT: usize>(t: &Tile) {
    // SAFETY: the bias has 8 values for the tile's block.
    let bias = unsafe { [vld1q_f32(t.bias), vld1q_f32(t.bias.add(HALF))] };
    let mut acc = [bias; WT];
    for ky in 0..t.nky {
        for kx in 0..t.nkx {
            let xp = t.x.wrapping_add(ky * t.x_row + kx * t.x_col);
            let wp = t.w.wrapping_add(ky * t.w_row + kx * t.w_col);
            let mut w = [[vdupq_n_f32(0.0); 2]; 4];
            for (k, wk) in w.iter_mut().enumerate() {
                for (h, v) in wk.iter_mut().enumerate() {
                    // SAFETY: the block's 8 lanes of the 4 weight vectors of this tap are in
                    // bounds.
                    *v = unsafe { vld1q_f32(wp.add(k * PAIR + h * HALF)) };
                }
            }
            for p in 0..WT {
                for h in 0..2 {
                    // SAFETY: this pixel's 8 channels at this tap are inside the input.
                    let x = unsafe { vld1q_f32(xp.add(p * t.x_pix + h * HALF)) };
                    let a = vfmaq_laneq_f32::<0>(acc[p][h], w[0][h], x);
                    let a = vfmaq_laneq_f32::<1>(a, w[1][h], x);
                    let a = vfmaq_laneq_f32::<2>(a, w[2][h], x);
                    acc[p][h] = vfmaq_laneq_f32::<3>(a, w[3][h], x);
                }
            }
        }
    }
    let zero = vdupq_n_f32(0.0);
    for p in 0..WT {
        for h in 0..2 {
            let at = p * BLOCK + h * HALF;
            let mut v = acc[p][h];
            if !t.residual.is_null() {
                // SAFETY: the residual is laid out like the output, which holds `at..at + 4`.
                v = vaddq_f32(v, unsafe { vld1q_f32(t.residual.add(at)) });
            }
            if t.relu {
                v = vmaxnmq_f32(v, zero);
            }
            // SAFETY: `at..at + 4` is this tile's output, written by this call only.
            unsafe { vst1q_f32(t.out.add(at), v) };
        }
    }
}
