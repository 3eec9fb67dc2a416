//! Micro-kernels for grouped convolutions of 4 channels in and 4 out per group (ResNeXt 32x4d's
//! first stage), which the block-diagonal packing runs at 2x (AVX2) or 4x (AVX-512) the groups'
//! MACs.
//!
//! An NCHW8c pixel holds two such groups per block; a pair of output blocks has four groups, whose
//! inputs are the same 16 channels (the pair's two input blocks) at the same lanes. So one vector
//! load of a pixel's channels holds every group's input in its own 4 lanes, and `vpermilps`, which
//! shuffles within each 128-bit lane (4 f32), broadcasts input `k` of every group to that group's
//! lanes at once: per pixel and tap 4 shuffles and 4 FMAs, each FMA doing only real MACs. The
//! weights are packed as `[pair][k_h][k_w][4 inputs k][16 output lanes]` (lane `j` holds output
//! `j`'s weight for input `k` of its group).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::kernel::{Isa, Tile, TileFn};
use super::layout::BLOCK;
use super::pack::PAIR;

/// Inputs (and outputs) per group.
pub(super) const GROUP: usize = 4;

/// Pixels a tile takes at most: AVX-512, one pair x 12 pixels in 12 zmm accumulators (plus the 4
/// weight vectors, a pixel and a shuffle); AVX2, one block x 8 (8 + 4 + 2 of the 16 ymm).
pub(super) fn max_pixels(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 12,
        Isa::Avx2Fma => 8,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => super::neon::LANES4_PIXELS,
        _ => 6,
    }
}

/// Output blocks one tile covers: a pair with AVX-512 (one zmm), else one block.
pub(super) fn blocks(isa: Isa) -> usize {
    if isa == Isa::Avx512 {
        2
    } else {
        1
    }
}

macro_rules! pick {
    ($f:ident, $($wt:literal)+) => {
        |wt: usize| match wt {
            $($wt => $f::<$wt> as TileFn,)+
            _ => unreachable!("{wt} pixels"),
        }
    };
}

/// The micro-kernel for `wt` pixels (`1..=max_pixels(isa)`). A tile's `x` points at its first
/// pixel's first tap in its (first) input block, `x_ib` on to the second block (AVX-512), `w` at
/// that tap's 4 weight vectors (plus 8 for the second block of a pair with AVX2 and portable);
/// `w_row` and `w_col` step taps. `isa` must be [`Isa::available`].
pub(super) fn kernel(isa: Isa, wt: usize) -> TileFn {
    debug_assert!((1..=max_pixels(isa)).contains(&wt));
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => pick!(tile_avx512, 1 2 3 4 5 6 7 8 9 10 11 12)(wt),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => pick!(tile_avx2, 1 2 3 4 5 6 7 8)(wt),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => super::neon::lanes4_kernel(wt),
        _ => pick!(tile_portable, 1 2 3 4 5 6)(wt),
    }
}

/// # Safety
/// The CPU has AVX-512F; every address the strides of `t` reach for its `nky x nkx` taps, `WT`
/// pixels and both input blocks is in bounds (inputs readable, `out` and `out + out_ob`, 8 values
/// per pixel each, writable by this call alone).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_avx512<const WT: usize>(t: &Tile) {
    // SAFETY: the bias has 16 values for the tile's pair.
    let mut acc = [unsafe { _mm512_loadu_ps(t.bias) }; WT];
    for ky in 0..t.nky {
        for kx in 0..t.nkx {
            let xp = t.x.wrapping_add(ky * t.x_row + kx * t.x_col);
            let wp = t.w.wrapping_add(ky * t.w_row + kx * t.w_col);
            // SAFETY: the 4 weight vectors of this tap are in bounds.
            let w = unsafe {
                [
                    _mm512_loadu_ps(wp),
                    _mm512_loadu_ps(wp.add(PAIR)),
                    _mm512_loadu_ps(wp.add(2 * PAIR)),
                    _mm512_loadu_ps(wp.add(3 * PAIR)),
                ]
            };
            for p in 0..WT {
                let px = xp.wrapping_add(p * t.x_pix);
                // SAFETY: this pixel's 8 channels at this tap in both input blocks are inside the
                // input.
                let (lo, hi) = unsafe { (_mm256_loadu_ps(px), _mm256_loadu_ps(px.add(t.x_ib))) };
                let x = _mm512_castpd_ps(_mm512_insertf64x4(
                    _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                    _mm256_castps_pd(hi),
                    1,
                ));
                let a = _mm512_fmadd_ps(_mm512_permute_ps::<0x00>(x), w[0], acc[p]);
                let a = _mm512_fmadd_ps(_mm512_permute_ps::<0x55>(x), w[1], a);
                let a = _mm512_fmadd_ps(_mm512_permute_ps::<0xAA>(x), w[2], a);
                acc[p] = _mm512_fmadd_ps(_mm512_permute_ps::<0xFF>(x), w[3], a);
            }
        }
    }
    let zero = _mm256_setzero_ps();
    for p in 0..WT {
        let v = acc[p];
        let halves = [
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
        ];
        for (h, mut v) in halves.into_iter().enumerate() {
            let at = h * t.out_ob + p * BLOCK;
            if !t.residual.is_null() {
                // SAFETY: the residual is laid out like the output, which holds `at..at + 8`.
                v = _mm256_add_ps(v, unsafe { _mm256_loadu_ps(t.residual.add(at)) });
            }
            if t.relu {
                v = _mm256_max_ps(v, zero);
            }
            // SAFETY: `at..at + 8` is this tile's output, written by this call only.
            unsafe { _mm256_storeu_ps(t.out.add(at), v) };
        }
    }
}

/// # Safety
/// The CPU has AVX2 and FMA; every address the strides of `t` reach for its `nky x nkx` taps and
/// `WT` pixels of one input block is in bounds (inputs readable, `out`, 8 values per pixel,
/// writable by this call alone).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_avx2<const WT: usize>(t: &Tile) {
    // SAFETY: the bias has 8 values for the tile's block.
    let mut acc = [unsafe { _mm256_loadu_ps(t.bias) }; WT];
    for ky in 0..t.nky {
        for kx in 0..t.nkx {
            let xp = t.x.wrapping_add(ky * t.x_row + kx * t.x_col);
            let wp = t.w.wrapping_add(ky * t.w_row + kx * t.w_col);
            // SAFETY: the block's 8 lanes of the 4 weight vectors of this tap are in bounds.
            let w = unsafe {
                [
                    _mm256_loadu_ps(wp),
                    _mm256_loadu_ps(wp.add(PAIR)),
                    _mm256_loadu_ps(wp.add(2 * PAIR)),
                    _mm256_loadu_ps(wp.add(3 * PAIR)),
                ]
            };
            for p in 0..WT {
                // SAFETY: this pixel's 8 channels at this tap are inside the input.
                let x = unsafe { _mm256_loadu_ps(xp.add(p * t.x_pix)) };
                let a = _mm256_fmadd_ps(_mm256_permute_ps::<0x00>(x), w[0], acc[p]);
                let a = _mm256_fmadd_ps(_mm256_permute_ps::<0x55>(x), w[1], a);
                let a = _mm256_fmadd_ps(_mm256_permute_ps::<0xAA>(x), w[2], a);
                acc[p] = _mm256_fmadd_ps(_mm256_permute_ps::<0xFF>(x), w[3], a);
            }
        }
    }
    let zero = _mm256_setzero_ps();
    for p in 0..WT {
        let at = p * BLOCK;
        let mut v = acc[p];
        if !t.residual.is_null() {
            // SAFETY: the residual is laid out like the output, which holds `at..at + 8`.
            v = _mm256_add_ps(v, unsafe { _mm256_loadu_ps(t.residual.add(at)) });
        }
        if t.relu {
            v = _mm256_max_ps(v, zero);
        }
        // SAFETY: `at..at + 8` is this tile's output, written by this call only.
        unsafe { _mm256_storeu_ps(t.out.add(at), v) };
    }
}

/// The portable kernel: the AVX2 one's loops over `[f32; 8]` lanes.
///
/// # Safety
/// As for the AVX2 kernel, without the CPU requirement.
#[allow(clippy::needless_range_loop)]
unsafe fn tile_portable<const WT: usize>(t: &Tile) {
    // SAFETY: the bias has 8 values for the tile's block.
    let mut acc = [unsafe { *t.bias.cast::<[f32; BLOCK]>() }; WT];
    for ky in 0..t.nky {
        for kx in 0..t.nkx {
            let xp = t.x.wrapping_add(ky * t.x_row + kx * t.x_col);
            let wp = t.w.wrapping_add(ky * t.w_row + kx * t.w_col);
            // SAFETY: the block's 8 lanes of the 4 weight vectors of this tap are in bounds.
            let w = [0, 1, 2, 3].map(|k| unsafe { *wp.add(k * PAIR).cast::<[f32; BLOCK]>() });
            for p in 0..WT {
                // SAFETY: this pixel's 8 channels at this tap are inside the input.
                let x = unsafe { xp.add(p * t.x_pix).cast::<[f32; BLOCK]>().read_unaligned() };
                for l in 0..BLOCK {
                    let first = l / GROUP * GROUP;
                    for k in 0..GROUP {
                        acc[p][l] += x[first + k] * w[k][l];
                    }
                }
            }
        }
    }
    for p in 0..WT {
        let at = p * BLOCK;
        let mut v = acc[p];
        if !t.residual.is_null() {
            // SAFETY: the residual is laid out like the output, which holds `at..at + 8`.
            let r = unsafe { *t.residual.add(at).cast::<[f32; BLOCK]>() };
            for l in 0..BLOCK {
                v[l] += r[l];
            }
        }
        if t.relu {
            for x in &mut v {
                *x = x.max(0.0);
            }
        }
        // SAFETY: `at..at + 8` is this tile's output, written by this call only.
        unsafe { t.out.add(at).cast::<[f32; BLOCK]>().write_unaligned(v) };
    }
}
