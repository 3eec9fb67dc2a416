//! Inference convolution with its epilogue fused: `relu?(conv(x, w) + bias + residual?)`.
//!
//! On the CPU in f32 this is one custom op. Every ResNet convolution, its folded BatchNorm, the
//! residual add and the ReLU become one pass that writes each output value once:
//!
//! - the output is cut into tiles of (image, block of output rows, block of output channels): rows
//!   up to ~512 columns so that a tile's data stays in the L2 cache, then channels until every core
//!   has several tiles (what splits the small deep maps at batch 1);
//! - a tile's destination is filled with the bias (plus the residual), and one GEMM of the weight
//!   block `[C_out_block, K]` by the tile's columns `[K, rows x W_out]` accumulates into it
//!   (the `gemm` crate's kernels, which Candle's matmul also uses); the ReLU runs on the tile while it
//!   is still in cache;
//! - a 1x1 stride-1 convolution reads its input in place (NCHW is already `[C, H x W]` per image);
//!   other shapes copy their tile's im2col into a per-thread scratch buffer that lives across calls,
//!   so no layer allocates more than its output.
//!
//! Grouped convolutions run the kernels of [`crate::grouped_conv2d`] and apply the same epilogue.
//! Other devices and dtypes compose Candle's `conv2d` with broadcast ops, giving the same result.

use std::cell::RefCell;

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::grouped::{grouped, grouped_conv2d, valid_columns, Dims};

/// Geometry of a convolution: square stride and zero padding, and the number of groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

/// What follows the convolution: `relu?(y + bias + residual)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// One value per output channel, any shape with `C_out` elements (`[C_out]`, `[1, C_out, 1, 1]`).
    pub bias: Option<&'a Tensor>,
    /// A tensor of the output's shape, added before the ReLU (a residual block's shortcut).
    pub residual: Option<&'a Tensor>,
    pub relu: bool,
}

/// `relu?(conv2d(x, w) + bias + residual)` for `x: [N, C, H, W]` and `w: [C_out, C / groups, k, k]`.
///
/// The fused CPU kernel takes f32; everything else (f64, f16, bf16 on the CPU, and CUDA or Metal)
/// runs Candle's `conv2d` and the epilogue as separate ops.
pub fn conv2d_fused(
    x: &Tensor,
    w: &Tensor,
    geometry: ConvGeometry,
    epilogue: Epilogue,
) -> Result<Tensor> {
    let ConvGeometry {
        stride,
        padding,
        groups,
    } = geometry;
    let Dims {
        n, c_out, ho, wo, ..
    } = Dims::new(x.shape(), w.shape(), stride, padding, groups)?;
    if let Some(bias) = epilogue.bias {
        if bias.elem_count() != c_out {
            bail!(
                "conv2d: bias {:?} does not have one value per output channel ({c_out})",
                bias.dims()
            );
        }
    }
    if let Some(residual) = epilogue.residual {
        if residual.dims() != [n, c_out, ho, wo] {
            bail!(
                "conv2d: residual {:?} does not match the output [{n}, {c_out}, {ho}, {wo}]",
                residual.dims()
            );
        }
    }
    let fused = x.device().is_cpu()
        && [Some(x), Some(w), epilogue.bias, epilogue.residual]
            .into_iter()
            .flatten()
            .all(|t| t.dtype() == DType::F32);
    if !fused {
        return unfused(x, w, geometry, epilogue);
    }
    let contiguous = |t: Option<&Tensor>| t.map(Tensor::contiguous).transpose();
    let op = FusedConv {
        w: w.contiguous()?,
        bias: contiguous(epilogue.bias)?,
        residual: contiguous(epilogue.residual)?,
        relu: epilogue.relu,
        geometry,
    };
    x.contiguous()?.apply_op1_no_bwd(&op)
}

/// The same computation from Candle ops (and [`grouped_conv2d`] for grouped convolutions).
fn unfused(x: &Tensor, w: &Tensor, g: ConvGeometry, e: Epilogue) -> Result<Tensor> {
    let mut y = if g.groups == 1 {
        x.conv2d(w, g.padding, g.stride, 1, 1)?
    } else {
        grouped_conv2d(x, w, g.stride, g.padding, g.groups)?
    };
    if let Some(bias) = e.bias {
        y = y.broadcast_add(&bias.reshape((1, (), 1, 1))?)?;
    }
    if let Some(residual) = e.residual {
        y = (y + residual)?;
    }
    if e.relu {
        y = y.relu()?;
    }
    Ok(y)
}

struct FusedConv {
    w: Tensor,
    bias: Option<Tensor>,
    residual: Option<Tensor>,
    relu: bool,
    geometry: ConvGeometry,
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("conv2d: tensor {:?} is not contiguous", t.dims());
    };
    match &*storage {
        Storage::Cpu(CpuStorage::F32(data)) => f(&data[start..end]),
        _ => bail!("conv2d: the fused CPU kernel takes f32 tensors on the CPU"),
    }
}

fn with_opt_f32<R>(t: Option<&Tensor>, f: impl FnOnce(Option<&[f32]>) -> Result<R>) -> Result<R> {
    match t {
        Some(t) => with_f32(t, |s| f(Some(s))),
        None => f(None),
    }
}

impl CustomOp1 for FusedConv {
    fn name(&self) -> &'static str {
        "conv2d-fused"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let ConvGeometry {
            stride,
            padding,
            groups,
        } = self.geometry;
        let d = Dims::new(layout.shape(), self.w.shape(), stride, padding, groups)?;
        let (CpuStorage::F32(x), Some((x0, x1))) = (storage, layout.contiguous_offsets()) else {
            bail!("conv2d: the fused CPU kernel takes a contiguous f32 input");
        };
        let x = &x[x0..x1];
        let out = with_f32(&self.w, |w| {
            with_opt_f32(self.bias.as_ref(), |bias| {
                with_opt_f32(self.residual.as_ref(), |residual| {
                    let e = Fill { bias, residual };
                    Ok(if groups == 1 {
                        conv_tiled(x, w, d, e, self.relu)
                    } else {
                        let mut out = grouped(x, w, d, groups);
                        epilogue_planes(&mut out, d, e, self.relu);
                        out
                    })
                })
            })
        })?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((d.n, d.c_out, d.ho, d.wo)),
        ))
    }
}

/// The bias and residual slices an output is initialised from.
#[derive(Clone, Copy)]
struct Fill<'a> {
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
}

impl Fill<'_> {
    fn any(&self) -> bool {
        self.bias.is_some() || self.residual.is_some()
    }

    /// Writes `bias[channel] + residual[offset..]` into `dst` (output offset `offset`).
    fn write(&self, dst: &mut [f32], channel: usize, offset: usize) {
        let b = self.bias.map_or(0.0, |b| b[channel]);
        match self.residual {
            Some(r) => {
                for (o, &r) in dst.iter_mut().zip(&r[offset..]) {
                    *o = r + b;
                }
            }
            None => dst.fill(b),
        }
    }
}

fn relu_in_place(v: &mut [f32]) {
    for o in v {
        *o = o.max(0.0);
    }
}

/// The epilogue as a pass over finished output planes (grouped convolutions).
fn epilogue_planes(out: &mut [f32], d: Dims, e: Fill, relu: bool) {
    let plane = d.ho * d.wo;
    if !e.any() && !relu {
        return;
    }
    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(idx, dst)| {
            let b = e.bias.map_or(0.0, |b| b[idx % d.c_out]);
            match e.residual {
                Some(r) => {
                    for (o, &r) in dst.iter_mut().zip(&r[idx * plane..]) {
                        *o += r + b;
                    }
                }
                None if b != 0.0 => dst.iter_mut().for_each(|o| *o += b),
                None => {}
            }
            if relu {
                relu_in_place(dst);
            }
        });
}

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
fn conv_tiled(x: &[f32], w: &[f32], d: Dims, e: Fill, relu: bool) -> Vec<f32> {
    let plane = d.ho * d.wo;
    let t = tiling(d.n, d.c_out, d.ho, d.wo, rayon::current_num_threads());
    let row_blocks = d.ho.div_ceil(t.row_block);
    let mut out = vec![0f32; d.n * d.c_out * plane];
    let dst = SharedMut(out.as_mut_ptr());
    let co_blocks = d.c_out.div_ceil(t.co_block);
    let in_place = d.kh == 1 && d.kw == 1 && d.stride == 1 && d.padding == 0;
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
                unsafe { conv_tile(x, w, d, e, relu, dst, tile, Some(cols)) };
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
            unsafe { conv_tile(x, w, d, e, relu, dst, tile, None) };
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
#[allow(clippy::too_many_arguments)]
unsafe fn conv_tile(
    x: &[f32],
    w: &[f32],
    d: Dims,
    e: Fill,
    relu: bool,
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
    if e.any() {
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
                e.any(),
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
    let in_place = d.kh == 1 && d.kw == 1 && d.stride == 1 && d.padding == 0;
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
    if relu {
        for o in 0..t.cos {
            relu_in_place(row(o));
        }
    }
}

/// im2col of output rows `r0..r0 + rows` of one image: row `(ci, ki, kj)`, column `(oh, ow)`;
/// every element is written (padding as zeros), so the buffer may hold anything before.
fn im2col(image: &[f32], d: Dims, r0: usize, rows: usize, cols: &mut [f32]) {
    let per_channel = d.kh * d.kw * rows * d.wo;
    for (plane, dst) in image
        .chunks_exact(d.h * d.w)
        .zip(cols.chunks_exact_mut(per_channel))
    {
        im2col_channel(plane, d, r0, rows, dst);
    }
}

/// The `kh * kw` im2col rows of one input channel (`input` is its `h x w` plane).
fn im2col_channel(input: &[f32], d: Dims, r0: usize, rows: usize, cols: &mut [f32]) {
    let n_cols = rows * d.wo;
    for ki in 0..d.kh {
        for kj in 0..d.kw {
            let row = &mut cols[(ki * d.kw + kj) * n_cols..][..n_cols];
            let (lo, hi) = valid_columns(&d, kj);
            for (r, dst) in row.chunks_exact_mut(d.wo).enumerate() {
                let ih = ((r0 + r) * d.stride + ki).checked_sub(d.padding);
                match ih {
                    Some(ih) if ih < d.h && lo < hi => {
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        let start = ih * d.w + lo * d.stride + kj - d.padding;
                        if d.stride == 1 {
                            dst[lo..hi].copy_from_slice(&input[start..start + hi - lo]);
                        } else {
                            for (o, &i) in dst[lo..hi]
                                .iter_mut()
                                .zip(input[start..].iter().step_by(d.stride))
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
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::grouped::tests::max_abs;
    use candle_core::Device;

    /// Every path (in place 1x1, im2col, grouped; tiles by rows and by channels) against Candle's
    /// convolution followed by the epilogue as separate ops.
    #[test]
    fn matches_candle_with_every_epilogue() {
        let dev = Device::Cpu;
        for &(n, c, h, w, c_out, k, stride, padding, groups) in &[
            (1, 8, 9, 7, 24, 3, 1, 1, 1),
            (2, 6, 10, 11, 16, 3, 2, 1, 1),
            (1, 16, 40, 40, 32, 1, 1, 0, 1),
            (3, 16, 13, 11, 40, 1, 2, 0, 1),
            (1, 3, 33, 31, 8, 7, 2, 3, 1),
            (1, 64, 7, 7, 128, 3, 1, 1, 1),
            (1, 8, 9, 7, 8, 3, 1, 1, 4),
            (2, 64, 50, 50, 64, 3, 1, 1, 32),
            (1, 4, 2, 3, 8, 3, 1, 2, 1),
        ] {
            let x = Tensor::randn(0f32, 1., (n, c, w, h), &dev)
                .unwrap()
                .transpose(2, 3)
                .unwrap();
            let wt = Tensor::randn(0f32, 1., (c_out, c / groups, k, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1., (1, c_out, 1, 1), &dev).unwrap();
            let g = ConvGeometry {
                stride,
                padding,
                groups,
            };
            let plain = x.conv2d(&wt, padding, stride, 1, groups).unwrap();
            let residual = Tensor::randn(0f32, 1., plain.shape(), &dev).unwrap();
            for (with_bias, with_residual, relu) in [
                (false, false, false),
                (true, false, true),
                (true, true, true),
                (false, true, false),
            ] {
                let e = Epilogue {
                    bias: with_bias.then_some(&bias),
                    residual: with_residual.then_some(&residual),
                    relu,
                };
                let ours = conv2d_fused(&x, &wt, g, e).unwrap();
                let theirs = unfused(&x, &wt, g, e).unwrap();
                let reference = {
                    let mut y = plain.clone();
                    if with_bias {
                        y = y.broadcast_add(&bias).unwrap();
                    }
                    if with_residual {
                        y = (y + &residual).unwrap();
                    }
                    if relu {
                        y = y.relu().unwrap();
                    }
                    y
                };
                let case = (
                    n,
                    c,
                    h,
                    w,
                    c_out,
                    k,
                    stride,
                    groups,
                    with_bias,
                    with_residual,
                );
                assert_eq!(ours.dims(), reference.dims(), "{case:?}");
                let scale = max_abs(&reference, &reference.zeros_like().unwrap());
                for (what, y) in [("fused", &ours), ("unfused", &theirs)] {
                    let err = max_abs(y, &reference) / scale;
                    assert!(err < 1e-5, "{what} {case:?}: relative error {err}");
                }
            }
        }
    }

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

    #[test]
    fn refuses_mismatched_epilogues() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 4, 5, 5), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((6, 4, 3, 3), DType::F32, &dev).unwrap();
        let g = ConvGeometry {
            stride: 1,
            padding: 1,
            groups: 1,
        };
        let bias = Tensor::zeros(5, DType::F32, &dev).unwrap();
        let e = Epilogue {
            bias: Some(&bias),
            ..Default::default()
        };
        let err = conv2d_fused(&x, &w, g, e).unwrap_err().to_string();
        assert!(err.contains("bias [5]"), "{err}");
        let residual = Tensor::zeros((1, 6, 4, 4), DType::F32, &dev).unwrap();
        let e = Epilogue {
            residual: Some(&residual),
            ..Default::default()
        };
        let err = conv2d_fused(&x, &w, g, e).unwrap_err().to_string();
        assert!(err.contains("[1, 6, 5, 5]"), "{err}");
    }
}
