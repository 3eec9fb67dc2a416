//! The direct-convolution micro-kernels: `WT` output pixels of one row x `OB` blocks of 8 output
//! channels (AVX2: 2 blocks x up to 6 pixels or 1 x 12; portable: 1 or 2 blocks x 6; AVX-512: 2 or
//! 4 blocks, one zmm per pair, up to 12 pixels; NEON, in `neon.rs`: as AVX2, two vectors a
//! block), accumulated in registers over every input channel and every kernel tap that lands
//! inside the input, then `relu?(acc + residual)` (the accumulators start from the bias) and one
//! store per output vector.
//!
//! A 1x1 convolution is the same loop with one tap: a GEMM over the blocked layout whose
//! `WT x OB` register tile is the micro-kernel, reading pixels in place (no packing of the input).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use candle_core::{bail, Result};

use super::layout::BLOCK;
#[cfg(target_arch = "x86_64")]
use super::pack::PAIR;

/// The addresses and strides of one tile, in f32 elements. Pointers point at valid data: `x` at
/// the first tap that lands inside the input for every pixel of the tile (block 0, channel 0),
/// `w` at the weights of that tap for the tile's first output pair (the weights of one input
/// channel are 16 values: the tile's first block, then the next).
#[derive(Clone, Copy)]
pub(super) struct Tile {
    pub(super) x: *const f32,
    pub(super) w: *const f32,
    pub(super) bias: *const f32,
    pub(super) out: *mut f32,
    /// Null when there is no residual; else laid out like `out`.
    pub(super) residual: *const f32,
    pub(super) relu: bool,
    /// Start from the partial sums already in `out` (a later chunk of input channels), not the bias.
    pub(super) accumulate: bool,
    /// The last chunk of input channels: add the residual and apply the ReLU before storing.
    pub(super) finish: bool,
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
    /// Kernel columns to run, and the input and weight strides between two columns.
    pub(super) nkx: usize,
    pub(super) x_col: usize,
    pub(super) w_col: usize,
    /// Input stride between two output pixels (`stride * x_col`).
    pub(super) x_pix: usize,
    /// Weight stride between two pairs of output blocks (AVX-512), output stride between two
    /// blocks.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) w_pair: usize,
    pub(super) out_ob: usize,
    /// Elements from these weights to the next tile's (0: no prefetch): each weight load also
    /// prefetches the line that far on, so that weights streamed from memory arrive ahead (x86).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) prefetch: isize,
}

/// A micro-kernel for one `(OB, WT)`.
pub(super) type TileFn = unsafe fn(&Tile);

/// Instruction set of the micro-kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// 512-bit AVX-512F intrinsics on the same NCHW8c layout (a zmm holds two blocks), with the
    /// AVX2 kernel for an odd last block.
    Avx512,
    /// 256-bit AVX2 + FMA intrinsics (x86-64 CPUs that have them, checked at run time).
    Avx2Fma,
    /// 128-bit NEON intrinsics (every aarch64 CPU), a block being two vectors.
    Neon,
    /// Plain Rust over `[f32; 8]` lanes, which the compiler vectorises for the target it builds for.
    Portable,
}

impl Isa {
    /// The fastest kernels this CPU runs.
    pub fn detect() -> Self {
        if Self::Avx512.available() {
            return Self::Avx512;
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Self::Avx2Fma;
        }
        if Self::Neon.available() {
            return Self::Neon;
        }
        Self::Portable
    }

    /// The kernels chosen by the `RESNET_ZOO_ISA` environment variable: unset or `auto`, the
    /// fastest x86 SIMD kernels this CPU has ([`Isa::detect`]), or `None` where it has neither AVX2
    /// nor AVX-512 (the portable kernels are then not faster than the GEMM path; the NEON ones pass
    /// every kernel test under emulation but have not been timed on Arm hardware against the GEMM
    /// path, so they are not the default yet); `avx512`, `avx2`, `neon` or `portable` to force one
    /// (an error if this CPU lacks it); `off` for the GEMM path.
    pub fn configured() -> Result<Option<Self>> {
        let value = std::env::var("RESNET_ZOO_ISA").unwrap_or_default();
        let isa = match value.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => {
                return Ok(Some(Self::detect()).filter(|&i| i == Self::Avx512 || i == Self::Avx2Fma))
            }
            "off" => return Ok(None),
            "avx512" => Self::Avx512,
            "avx2" => Self::Avx2Fma,
            "neon" => Self::Neon,
            "portable" => Self::Portable,
            other => bail!(
                "RESNET_ZOO_ISA={other:?} is not a kernel set: use auto, avx512, avx2, neon, portable or off"
            ),
        };
        if !isa.available() {
            bail!("RESNET_ZOO_ISA={value}: this CPU cannot run the {isa:?} kernels (unset it, or use auto)");
        }
        Ok(Some(isa))
    }

    /// Whether this CPU can run these kernels.
    pub fn available(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => Self::Avx2Fma.available() && is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx2Fma | Self::Avx512 => false,
            #[cfg(target_arch = "aarch64")]
            Self::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(not(target_arch = "aarch64"))]
            Self::Neon => false,
        }
    }
}

/// Runs `$body` once per input channel of every input block and kernel tap of the tile `$t`, with
/// `$xp` at that channel's input for the tile's first pixel and `$wp` at its weights: the loop
/// nest every direct micro-kernel shares. A macro rather than a function taking a closure, so that
/// each kernel's body is compiled inside its own `target_feature` function.
macro_rules! for_each_input {
    ($t:expr, |$xp:ident, $wp:ident| $body:block) => {
        for ib in 0..$t.n_ib {
            for ky in 0..$t.nky {
                for kx in 0..$t.nkx {
                    let mut $xp = $t.x.wrapping_add(ib * $t.x_ib + ky * $t.x_row + kx * $t.x_col);
                    let mut $wp = $t.w.wrapping_add(ib * $t.w_ib + ky * $t.w_row + kx * $t.w_col);
                    for _ in 0..$t.icb {
                        $body
                        $xp = $xp.wrapping_add($t.x_ic);
                        $wp = $wp.wrapping_add($crate::nchwc::pack::PAIR);
                    }
                }
            }
        }
    };
}
#[cfg(target_arch = "aarch64")]
pub(super) use for_each_input;

macro_rules! pick {
    ($f:ident, $ob:literal, $($wt:literal)+) => {
        |wt: usize| match wt {
            $($wt => $f::<$ob, $wt> as TileFn,)+
            _ => unreachable!("{wt} pixels"),
        }
    };
}

/// Pixels a tile of `ob` output blocks takes at most with `isa`: AVX2, 2 blocks x 6 pixels or
/// 1 x 12 = 12 accumulators of the 16 ymm registers (plus the weight vectors and a broadcast);
/// AVX-512, 2 pairs x 8 pixels = 16 of the 32 zmm registers (from 2 x 9 on, LLVM spills
/// accumulators to the stack); NEON, as AVX2 with two vectors per block (`neon.rs`). Fewer than 8
/// accumulators leave the two FMA pipes idle part of the time (4 cycles of latency each).
pub(super) fn max_pixels(isa: Isa, ob: usize) -> usize {
    match (isa, ob) {
        (Isa::Avx512, 4) => 8,
        (Isa::Avx512, 2) | (Isa::Avx512 | Isa::Avx2Fma, 1) => 12,
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon, _) => super::neon::max_pixels(ob),
        _ => 6,
    }
}

/// The blocks a tile takes at most with `isa` (the output is walked by tiles of this many).
pub(super) fn max_blocks(isa: Isa) -> usize {
    if isa == Isa::Avx512 {
        4
    } else {
        2
    }
}

/// The micro-kernel for `ob` output blocks (1 or 2; with AVX-512 also 4) and `wt` pixels
/// (`1..=max_pixels(isa, ob)`). `isa` must be [`Isa::available`].
pub(super) fn kernel(isa: Isa, ob: usize, wt: usize) -> TileFn {
    debug_assert!((1..=max_pixels(isa, ob)).contains(&wt));
    match (isa, ob) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, 4) => pick!(tile_avx512, 2, 1 2 3 4 5 6 7 8)(wt),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, 2) => pick!(tile_avx512, 1, 1 2 3 4 5 6 7 8 9 10 11 12)(wt),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2Fma | Isa::Avx512, 1) => pick!(tile_avx2, 1, 1 2 3 4 5 6 7 8 9 10 11 12)(wt),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2Fma, _) => pick!(tile_avx2, 2, 1 2 3 4 5 6)(wt),
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon, _) => super::neon::kernel(ob, wt),
        (_, 1) => pick!(tile_portable, 1, 1 2 3 4 5 6)(wt),
        _ => pick!(tile_portable, 2, 1 2 3 4 5 6)(wt),
    }
}

/// Prefetches the cache line holding `p` into L1. `p` may point anywhere: a prefetch never faults.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch(p: *const f32) {
    // SAFETY: `prefetcht0` only hints the cache; it reads nothing and cannot fault on any address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) };
}

/// # Safety
/// The CPU has AVX-512F; every address the strides of `t` reach for its `nky x nkx` taps, `n_ib`
/// blocks, `icb` channels, `WT` pixels and `NP` pairs of output blocks is in bounds (inputs
/// readable, `out` writable by this call alone).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_avx512<const NP: usize, const WT: usize>(t: &Tile) {
    let mut acc = [[_mm512_setzero_ps(); WT]; NP];
    for q in 0..NP {
        if t.accumulate {
            for p in 0..WT {
                let at = 2 * q * t.out_ob + p * BLOCK;
                // SAFETY: this tile's output (both blocks of the pair), written by an earlier
                // chunk of this task.
                let (lo, hi) = unsafe {
                    (
                        _mm256_loadu_ps(t.out.add(at)),
                        _mm256_loadu_ps(t.out.add(at + t.out_ob)),
                    )
                };
                acc[q][p] = _mm512_castpd_ps(_mm512_insertf64x4(
                    _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                    _mm256_castps_pd(hi),
                    1,
                ));
            }
        } else {
            // SAFETY: the bias has 16 values per pair of output blocks of the tile.
            let bias = unsafe { _mm512_loadu_ps(t.bias.add(q * PAIR)) };
            acc[q] = [bias; WT];
        }
    }
    for_each_input!(t, |xp, wp| {
        let mut wv = [_mm512_setzero_ps(); NP];
        for q in 0..NP {
            // SAFETY: the weights of this tap, channel and pair are in bounds.
            wv[q] = unsafe { _mm512_loadu_ps(wp.add(q * t.w_pair)) };
            if t.prefetch != 0 {
                prefetch(wp.wrapping_add(q * t.w_pair).wrapping_offset(t.prefetch));
            }
        }
        for p in 0..WT {
            // SAFETY: this pixel's input at this tap and channel is inside the input.
            let xv = _mm512_set1_ps(unsafe { *xp.add(p * t.x_pix) });
            for q in 0..NP {
                acc[q][p] = _mm512_fmadd_ps(xv, wv[q], acc[q][p]);
            }
        }
    });
    let zero = _mm256_setzero_ps();
    for q in 0..NP {
        for p in 0..WT {
            let v = acc[q][p];
            let halves = [
                _mm512_castps512_ps256(v),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
            ];
            for (h, mut v) in halves.into_iter().enumerate() {
                let at = (2 * q + h) * t.out_ob + p * BLOCK;
                if t.finish && !t.residual.is_null() {
                    // SAFETY: the residual is laid out like the output, which holds `at..at + 8`.
                    v = _mm256_add_ps(v, unsafe { _mm256_loadu_ps(t.residual.add(at)) });
                }
                if t.finish && t.relu {
                    v = _mm256_max_ps(v, zero);
                }
                // SAFETY: `at..at + 8` is this tile's output, written by this call only.
                unsafe { _mm256_storeu_ps(t.out.add(at), v) };
            }
        }
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
        if t.accumulate {
            for p in 0..WT {
                // SAFETY: this tile's output, written by an earlier chunk of this task.
                acc[b][p] = unsafe { _mm256_loadu_ps(t.out.add(b * t.out_ob + p * BLOCK)) };
            }
        } else {
            // SAFETY: the bias has 8 values per output block of the tile (the caller's contract).
            let bias = unsafe { _mm256_loadu_ps(t.bias.add(b * BLOCK)) };
            acc[b] = [bias; WT];
        }
    }
    for_each_input!(t, |xp, wp| {
        let mut wv = [_mm256_setzero_ps(); OB];
        for b in 0..OB {
            // SAFETY: the weights of this tap, channel and block are in bounds.
            wv[b] = unsafe { _mm256_loadu_ps(wp.add(b * BLOCK)) };
        }
        if t.prefetch != 0 {
            prefetch(wp.wrapping_offset(t.prefetch));
        }
        for p in 0..WT {
            // SAFETY: this pixel's input at this tap and channel is inside the input.
            let xv = unsafe { _mm256_broadcast_ss(&*xp.add(p * t.x_pix)) };
            for b in 0..OB {
                acc[b][p] = _mm256_fmadd_ps(xv, wv[b], acc[b][p]);
            }
        }
    });
    let zero = _mm256_setzero_ps();
    for b in 0..OB {
        for p in 0..WT {
            let at = b * t.out_ob + p * BLOCK;
            let mut v = acc[b][p];
            if t.finish && !t.residual.is_null() {
                // SAFETY: the residual is laid out like the output, which holds `at..at + 8`.
                v = _mm256_add_ps(v, unsafe { _mm256_loadu_ps(t.residual.add(at)) });
            }
            if t.finish && t.relu {
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
        if t.accumulate {
            for p in 0..WT {
                // SAFETY: this tile's output, written by an earlier chunk of this task.
                acc[b][p] = unsafe {
                    t.out
                        .add(b * t.out_ob + p * BLOCK)
                        .cast::<[f32; BLOCK]>()
                        .read_unaligned()
                };
            }
        } else {
            // SAFETY: the bias has 8 values per output block of the tile (the caller's contract).
            let bias = unsafe { *t.bias.add(b * BLOCK).cast::<[f32; BLOCK]>() };
            acc[b] = [bias; WT];
        }
    }
    for_each_input!(t, |xp, wp| {
        let mut wv = [[0f32; BLOCK]; OB];
        for b in 0..OB {
            // SAFETY: the weights of this tap, channel and block are in bounds.
            wv[b] = unsafe { *wp.add(b * BLOCK).cast::<[f32; BLOCK]>() };
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
    });
    for b in 0..OB {
        for p in 0..WT {
            let at = b * t.out_ob + p * BLOCK;
            let mut v = acc[b][p];
            if t.finish && !t.residual.is_null() {
                // SAFETY: the residual is laid out like the output, which holds `at..at + 8`.
                let r = unsafe { *t.residual.add(at).cast::<[f32; BLOCK]>() };
                for l in 0..BLOCK {
                    v[l] += r[l];
                }
            }
            if t.finish && t.relu {
                for x in &mut v {
                    *x = x.max(0.0);
                }
            }
            // SAFETY: `at..at + 8` is this tile's output, written by this call only.
            unsafe { t.out.add(at).cast::<[f32; BLOCK]>().write_unaligned(v) };
        }
    }
}
