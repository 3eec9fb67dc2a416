//! The fused f32 CPU kernel of ungrouped convolutions, tile by tile.
//!
//! - The output is cut into tiles of (image, block of output rows, block of output channels): rows
//!   up to ~512 columns so that a tile's data stays in the L2 cache, then channels until every core
//!   has several tiles (what splits the small deep maps at batch 1);
//! - a tile's destination is filled with the bias (plus the residual), and one GEMM of the weight
//!   block `[C_out_block, K]` by the tile's columns `[K, rows x W_out]` accumulates into it
//!   (the `gemm` crate's kernels, which Candle's matmul also uses); the ReLU runs on the tile while it
//!   is still in cache;
//! - a 1x1 stride-1 convolution reads its input in place (NCHW is already `[C, H x W]` per image);
//!   other shapes copy their tile's im2col into a per-thread scratch buffer that lives across calls,
//!   so no layer allocates more than its output.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::epilogue::{relu_in_place, EpilogueData};
use crate::geometry::ConvShape;

/// Columns a tile aims for at most: a tile's output rows, its im2col and the GEMM's packed panels
/// then stay in the L2 cache (measured on ResNet-50 at batch 8: whole-image tiles of 56x56 maps ran
/// at 45-60 GFLOP/s, ~500-column tiles at 75-95).
const MAX_TILE_COLUMNS: usize = 512;
/// Tiles per thread, so that uneven tiles still balance.
const TILES_PER_THREAD: usize = 4;

/// How an output is cut into tiles: `row_block` output rows by `co_block` output channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tiling {
    row_block: usize,
    co_block: usize,
}

fn tiling(n: usize, c_out: usize, ho: usize, wo: usize, threads: usize) -> Tiling {
    // Row blocks of at most MAX_TILE_COLUMNS columns (at least one row).
    let row_blocks = (ho * wo).div_ceil(MAX_TILE_COLUMNS).clamp(1, ho);
    let row_block = ho.div_ceil(row_blocks);
    let row_blocks = ho.div_ceil(row_block);
    // Then channel blocks (of at least 16 channels) until every thread has a few tiles: this is
    // what splits the small deep maps at batch 1.
    let wanted = (TILES_PER_THREAD * threads).div_ceil(n.max(1) * row_blocks);
    let co_blocks = wanted.min(c_out.div_ceil(16)).max(1);
    // Multiples of 8 rows keep the GEMM's micro-kernel rows full.
    let co_block = c_out.div_ceil(co_blocks).next_multiple_of(8).min(c_out);
    Tiling {
        row_block,
        co_block,
    }
}

thread_local! {
    /// Per-thread im2col buffer, grown to the largest tile seen and kept across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The im2col that the channel blocks of one (image, row block) share, on the calling thread.
    static SHARED_COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every task writes a disjoint tile (see `conv_tiled`); the buffer outlives the tasks.
unsafe impl Send for SharedMut {}
// SAFETY: as for `Send`: no two tasks touch the same element.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer `offset` elements in (a method, so that closures capture the whole `Send` value).
    ///
    /// # Safety
    /// `offset` must lie within the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: in bounds by the caller's contract.
        unsafe { self.0.add(offset) }
    }
}

/// Ungrouped convolution with the epilogue fused, tile by tile.
pub(crate) fn conv_tiled(x: &[f32], w: &[f32], d: ConvShape, e: EpilogueData) -> Vec<f32> {
    let plane = d.ho * d.wo;
    let t = tiling(d.n, d.c_out, d.ho, d.wo, rayon::current_num_threads());
    let row_blocks = d.ho.div_ceil(t.row_block);
    let mut out = vec![0f32; d.n * d.c_out * plane];
    let dst = SharedMut(out.as_mut_ptr());
    let co_blocks = d.c_out.div_ceil(t.co_block);
    let in_place = d.kh == 1 && d.kw == 1 && d.stride() == 1 && d.padding() == 0;
    if co_blocks > 1 && !in_place {
        // Small maps split over output channels: the channel blocks of one (image, row block)
        // share its im2col, built once (in parallel over input channels) instead of once per block.
        let k = d.c * d.kh * d.kw;
        let mut fresh = Vec::new();
        let mut shared =
            SHARED_COLS.with(|c| c.try_borrow_mut().map(|mut v| std::mem::take(&mut *v)));
        let buf = match &mut shared {
            Ok(v) => v,
            Err(_) => &mut fresh, // re-entered from a nested parallel forward: a buffer of its own
        };
        for group in 0..d.n * row_blocks {
            let (image, r0) = (group / row_blocks, group % row_blocks * t.row_block);
            let rows = t.row_block.min(d.ho - r0);
            let n_cols = rows * d.wo;
            if buf.len() < k * n_cols {
                buf.resize(k * n_cols, 0.0);
            }
            let cols = &mut buf[..k * n_cols];
            let input = &x[image * d.c * d.h * d.w..][..d.c * d.h * d.w];
            cols.par_chunks_mut(d.kh * d.kw * n_cols)
                .zip(input.par_chunks(d.h * d.w))
                .for_each(|(dst, plane)| im2col_channel(plane, d, r0, rows, dst));
            let cols = &*cols;
            (0..co_blocks).into_par_iter().for_each(|cb| {
                let o0 = cb * t.co_block;
                let tile = Tile {
                    image,
                    r0,
                    rows,
                    o0,
                    cos: t.co_block.min(d.c_out - o0),
                };
                // SAFETY: tasks differ in channel block, so their tiles are disjoint parts of
                // `out`; `cols` is this tile's im2col.
                unsafe { conv_tile(x, w, d, e, dst, tile, Some(cols)) };
            });
        }
        if let Ok(v) = shared {
            SHARED_COLS.with(|c| *c.borrow_mut() = v);
        }
        return out;
    }
    (0..d.n * row_blocks * co_blocks)
        .into_par_iter()
        .for_each(|task| {
            let r0 = task / co_blocks % row_blocks * t.row_block;
            let o0 = task % co_blocks * t.co_block;
            let tile = Tile {
                image: task / (row_blocks * co_blocks),
                r0,
                rows: t.row_block.min(d.ho - r0),
                o0,
                cos: t.co_block.min(d.c_out - o0),
            };
            // SAFETY: tasks differ in image, row block or channel block, so their tiles are
            // disjoint parts of `out`.
            unsafe { conv_tile(x, w, d, e, dst, tile, None) };
        });
    out
}

/// Output rows `r0..r0 + rows` and channels `o0..o0 + cos` of one image.
#[derive(Clone, Copy)]
struct Tile {
    image: usize,
    r0: usize,
    rows: usize,
    o0: usize,
    cos: usize,
}

/// Computes one tile: epilogue fill, GEMM (reading the input in place or through the per-thread
/// im2col scratch), ReLU.
///
/// # Safety
/// `dst` must point to an output of `d`'s shape, and no other thread may touch this tile meanwhile.
unsafe fn conv_tile(
    x: &[f32],
    w: &[f32],
    d: ConvShape,
    e: EpilogueData,
    dst: SharedMut,
    t: Tile,
    im2col_done: Option<&[f32]>,
) {
    let plane = d.ho * d.wo;
    let k = d.c * d.kh * d.kw;
    let cols = t.rows * d.wo;
    let image = &x[t.image * d.c * d.h * d.w..][..d.c * d.h * d.w];
    // The tile: rows o0..o0+cos of the image's [C_out, plane] matrix, columns r0*wo..+cols.
    let tile_start = (t.image * d.c_out + t.o0) * plane + t.r0 * d.wo;
    let row = |o: usize| {
        // SAFETY: `tile_start + o * plane + cols` lies within the output (the tile is inside
        // it), and only this call touches the tile (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(dst.at(tile_start + o * plane), cols) }
    };
    if e.fills() {
        for o in 0..t.cos {
            e.write(row(o), t.o0 + o, tile_start + o * plane);
        }
    }
    let lhs = &w[t.o0 * k..][..t.cos * k];
    let gemm = |rhs: *const f32, rhs_rs: usize| {
        // SAFETY: dst is the `cos x cols` tile above with row stride `plane`; lhs is `cos x k`
        // row-major; rhs is `k x cols` with row stride `rhs_rs`, in bounds of its buffer (the
        // input image or the scratch im2col).
        unsafe {
            gemm::gemm(
                t.cos,
                cols,
                k,
                dst.at(tile_start),
                1,
                plane as isize,
                e.fills(),
                lhs.as_ptr(),
                1,
                k as isize,
                rhs,
                1,
                rhs_rs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    let in_place = d.kh == 1 && d.kw == 1 && d.stride() == 1 && d.padding() == 0;
    if in_place {
        gemm(image[t.r0 * d.w..].as_ptr(), d.h * d.w);
    } else if let Some(cols) = im2col_done {
        gemm(cols.as_ptr(), cols.len() / k);
    } else {
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < k * cols {
                scratch.resize(k * cols, 0.0);
            }
            let scratch = &mut scratch[..k * cols];
            im2col(image, d, t.r0, t.rows, scratch);
            gemm(scratch.as_ptr(), cols);
        });
    }
    if e.relu {
        for o in 0..t.cos {
            relu_in_place(row(o));
        }
    }
}

/// im2col of output rows `r0..r0 + rows` of one image: row `(ci, ki, kj)`, column `(oh, ow)`;
/// every element is written (padding as zeros), so the buffer may hold anything before.
fn im2col(image: &[f32], d: ConvShape, r0: usize, rows: usize, cols: &mut [f32]) {
    let per_channel = d.kh * d.kw * rows * d.wo;
    for (plane, dst) in image
        .chunks_exact(d.h * d.w)
        .zip(cols.chunks_exact_mut(per_channel))
    {
        im2col_channel(plane, d, r0, rows, dst);
    }
}

/// The `kh * kw` im2col rows of one input channel (`input` is its `h x w` plane).
fn im2col_channel(input: &[f32], d: ConvShape, r0: usize, rows: usize, cols: &mut [f32]) {
    let n_cols = rows * d.wo;
    for ki in 0..d.kh {
        for kj in 0..d.kw {
            let row = &mut cols[(ki * d.kw + kj) * n_cols..][..n_cols];
            let (lo, hi) = d.valid_columns(kj);
            for (r, dst) in row.chunks_exact_mut(d.wo).enumerate() {
                let ih = ((r0 + r) * d.stride() + ki).checked_sub(d.padding());
                match ih {
                    Some(ih) if ih < d.h && lo < hi => {
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        let start = ih * d.w + lo * d.stride() + kj - d.padding();
                        if d.stride() == 1 {
                            dst[lo..hi].copy_from_slice(&input[start..start + hi - lo]);
                        } else {
                            for (o, &i) in dst[lo..hi]
                                .iter_mut()
                                .zip(input[start..].iter().step_by(d.stride()))
                            {
                                *o = i;
                            }
                        }
                    }
                    _ => dst.fill(0.0),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_output_and_keep_cores_busy() {
        for &(n, c_out, ho, wo, threads) in &[
            (1, 64, 112, 112, 2),
            (1, 2048, 7, 7, 2),
            (8, 256, 56, 56, 2),
            (3, 5, 3, 3, 16),
            (1, 1, 1, 1, 1),
        ] {
            let t = tiling(n, c_out, ho, wo, threads);
            assert!(t.row_block >= 1 && t.row_block <= ho, "{t:?}");
            assert!(t.co_block >= 1 && t.co_block <= c_out, "{t:?}");
            let tiles = n * ho.div_ceil(t.row_block) * c_out.div_ceil(t.co_block);
            let want = (2 * threads).min(n * c_out.div_ceil(16));
            assert!((t.row_block - 1) * wo < MAX_TILE_COLUMNS, "{t:?}");
            assert!(
                tiles >= want,
                "{n} {c_out} {ho}x{wo} on {threads}: {tiles} tiles {t:?}"
            );
        }
    }
}
