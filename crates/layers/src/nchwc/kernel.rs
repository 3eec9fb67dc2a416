//! The direct-convolution micro-kernels: `WT` output pixels of one row x `OB` (1 or 2) blocks of 8
//! output channels, accumulated in registers over every input channel and every kernel tap that
//! lands inside the input, then `relu?(acc + residual)` (the accumulators start from the bias) and
//! one store per output vector.
//!
//! A 1x1 convolution is the same loop with one tap: a GEMM over the blocked layout whose
//! `WT x OB` register tile is the micro-kernel, reading pixels in place (no packing of the input).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::layout::BLOCK;

/// Output pixels per tile at most (2 blocks x 6 pixels = 12 accumulators of the 16 ymm registers,
/// plus 2 weight vectors and a broadcast).
pub(super) const MAX_PIXELS: usize = 6;

/// The addresses and strides of one tile, in f32 elements. Pointers point at valid data: `x` at
/// the first tap that lands inside the input for every pixel of the tile (block 0, channel 0),
/// `w` at the weights of that tap for the tile's first output block.
#[derive(Clone, Copy)]
pub(super) struct Tile {
    pub(super) x: *const f32,
    pub(super) w: *const f32,
    pub(super) bias: *const f32,
    pub(super) out: *mut f32,
    /// Null when there is no residual; else laid out like `out`.
    pub(super) residual: *const f32,
    pub(super) relu: bool,
    /// Input blocks, and the input and weight strides between them.
    pub(super) n_ib: usize,
    pub(super) x_ib: usize,
    pub(super) w_ib: usize,
    /// Channels per input block and the input stride between two channels.
    pub(super) icb: usize,
    pub(super) x_ic: usize,
    /// Kernel rows to run, and the input and weight strides between two rows.
    pub(super) nky: usize,
    pub(super) x_row: usize,
    pub(super) w_row: usize,
    /// Kernel columns to run, and the input stride between two columns (weights: `icb * 8`).
    pub(super) nkx: usize,
    pub(super) x_col: usize,
    /// Input stride between two output pixels (`stride * x_col`).
    pub(super) x_pix: usize,
    /// Weight and output strides between two output blocks.
    pub(super) w_ob: usize,
    pub(super) out_ob: usize,
}

/// A micro-kernel for one `(OB, WT)`.
pub(super) type TileFn = unsafe fn(&Tile);

/// Instruction set of the micro-kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// 256-bit AVX2 + FMA intrinsics (x86-64 CPUs that have them, checked at run time).
    Avx2Fma,
    /// Plain Rust over `[f32; 8]` lanes, which the compiler vectorises for the target it builds for.
    Portable,
}

impl Isa {
    /// The fastest kernels this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Self::Avx2Fma;
        }
        Self::Portable
    }

    /// Whether this CPU can run these kernels.
    pub fn available(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx2Fma => false,
        }
    }
}

macro_rules! pick {
    ($f:ident, $ob:expr, $wt:expr) => {
        match ($ob, $wt) {
            (1, 1) => $f::<1, 1> as TileFn,
            (1, 2) => $f::<1, 2>,
            (1, 3) => $f::<1, 3>,
            (1, 4) => $f::<1, 4>,
            (1, 5) => $f::<1, 5>,
            (1, _) => $f::<1, 6>,
            (_, 1) => $f::<2, 1>,
            (_, 2) => $f::<2, 2>,
            (_, 3) => $f::<2, 3>,
            (_, 4) => $f::<2, 4>,
            (_, 5) => $f::<2, 5>,
            (_, _) => $f::<2, 6>,
        }
    };
}

/// The micro-kernel for `ob` (1 or 2) output blocks and `wt` (1..=6) pixels. `isa` must be
/// [`Isa::available`].
pub(super) fn kernel(isa: Isa, ob: usize, wt: usize) -> TileFn {
    debug_assert!((1..=2).contains(&ob) && (1..=MAX_PIXELS).contains(&wt));
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => pick!(tile_avx2, ob, wt),
        _ => pick!(tile_portable, ob, wt),
    }
}

/// # Safety
/// The CPU has AVX2 and FMA; every address the strides of `t` reach for its `nky x nkx` taps,
/// `n_ib` blocks, `icb` channels, `WT` pixels and `OB` blocks is in bounds (inputs readable,
/// `out` writable by this call alone).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_avx2<const OB: usize, const WT: usize>(t: &Tile) {
    let mut acc = [[_mm256_setzero_ps(); WT]; OB];
    for b in 0..OB {
        // SAFETY: the bias has 8 values per output block of the tile (the caller's contract).
        let bias = unsafe { _mm256_loadu_ps(t.bias.add(b * BLOCK)) };
        acc[b] = [bias; WT];
    }
    for ib in 0..t.n_ib {
        for ky in 0..t.nky {
            for kx in 0..t.nkx {
                let mut xp = t.x.wrapping_add(ib * t.x_ib + ky * t.x_row + kx * t.x_col);
                let mut wp =
                    t.w.wrapping_add(ib * t.w_ib + ky * t.w_row + kx * t.icb * BLOCK);
                for _ in 0..t.icb {
                    let mut wv = [_mm256_setzero_ps(); OB];
                    for b in 0..OB {
                        // SAFETY: the weights of this tap, channel and block are in bounds
                        // (32-byte aligned, but read unaligned-tolerant).
                        wv[b] = unsafe { _mm256_loadu_ps(wp.add(b * t.w_ob)) };
                    }
                    for p in 0..WT {
                        // SAFETY: this pixel's input at this tap and channel is inside the input.
                        let xv = unsafe { _mm256_broadcast_ss(&*xp.add(p * t.x_pix)) };
                        for b in 0..OB {
                            acc[b][p] = _mm256_fmadd_ps(xv, wv[b], acc[b][p]);
                        }
                    }
                    xp = xp.wrapping_add(t.x_ic);
                    wp = wp.wrapping_add(BLOCK);
                }
            }
        }
    }
    let zero = _mm256_setzero_ps();
    for b in 0..OB {
        for p in 0..WT {
            let at = b * t.out_ob + p * BLOCK;
            let mut v = acc[b][p];
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

/// The portable kernel: the same loops over `[f32; 8]` lanes.
///
/// # Safety
/// As for the AVX2 kernel, without the CPU requirement.
#[allow(clippy::needless_range_loop)]
unsafe fn tile_portable<const OB: usize, const WT: usize>(t: &Tile) {
    let mut acc = [[[0f32; BLOCK]; WT]; OB];
    for b in 0..OB {
        // SAFETY: the bias has 8 values per output block of the tile (the caller's contract).
        let bias = unsafe { *t.bias.add(b * BLOCK).cast::<[f32; BLOCK]>() };
        acc[b] = [bias; WT];
    }
    for ib in 0..t.n_ib {
        for ky in 0..t.nky {
            for kx in 0..t.nkx {
                let mut xp = t.x.wrapping_add(ib * t.x_ib + ky * t.x_row + kx * t.x_col);
                let mut wp =
                    t.w.wrapping_add(ib * t.w_ib + ky * t.w_row + kx * t.icb * BLOCK);
                for _ in 0..t.icb {
                    let mut wv = [[0f32; BLOCK]; OB];
                    for b in 0..OB {
                        // SAFETY: the weights of this tap, channel and block are in bounds.
                        wv[b] = unsafe { *wp.add(b * t.w_ob).cast::<[f32; BLOCK]>() };
                    }
                    for p in 0..WT {
                        // SAFETY: this pixel's input at this tap and channel is inside the input.
                        let xv = unsafe { *xp.add(p * t.x_pix) };
                        for b in 0..OB {
                            for l in 0..BLOCK {
                                acc[b][p][l] += xv * wv[b][l];
                            }
                        }
                    }
                    xp = xp.wrapping_add(t.x_ic);
                    wp = wp.wrapping_add(BLOCK);
                }
            }
        }
    }
    for b in 0..OB {
        for p in 0..WT {
            let at = b * t.out_ob + p * BLOCK;
            let mut v = acc[b][p];
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
}
