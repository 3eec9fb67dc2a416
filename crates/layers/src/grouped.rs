//! Grouped convolution (ResNeXt) as one operation.
//!
//! Candle's `conv2d` runs a grouped convolution as one convolution per group followed by a
//! concatenation: 32 or 64 small im2col + GEMM calls per ResNeXt block, each copying its slice of
//! the input, one after the other. Here one custom op computes every group, in parallel, two ways:
//!
//! - wide stride-1 maps (ResNeXt's early stages): directly, one output plane per task (batch x
//!   output channels), accumulating `C/groups * k * k` shifted input rows into a plane that stays in
//!   L1 cache: no im2col copy at all;
//! - otherwise: per (group, chunk of images) task, an im2col of that group's channels only and one
//!   GEMM (the `gemm` crate's kernels, which Candle's matmul also uses) of `[C_out/groups, K]` by
//!   `[K, images * H_out * W_out]`; chunks are sized so that small deep maps still give the GEMM
//!   ~1k columns.
//!
//! Other devices and dtypes (CUDA, Metal, f16, bf16) run one im2col and one batched matmul of
//! portable tensor ops (`grouped_matmul.rs`).

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::geometry::{ConvGeometry, ConvShape};
use crate::grouped_matmul::grouped_conv2d_matmul;

/// `conv2d(x, w, stride, padding, dilation = 1, groups)` for `x: [N, C, H, W]` and
/// `w: [C_out, C / groups, k_h, k_w]`, returning `[N, C_out, H_out, W_out]`.
pub fn grouped_conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    let geometry = ConvGeometry {
        stride,
        padding,
        groups,
    };
    let shape = ConvShape::new(x.shape(), w.shape(), geometry)?;
    if x.dtype() != w.dtype() {
        // Candle's error names both dtypes.
        return x.conv2d(w, padding, stride, 1, groups);
    }
    let direct = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
    if !direct {
        if groups == 1 {
            return x.conv2d(w, padding, stride, 1, 1);
        }
        return grouped_conv2d_matmul(x, w, shape);
    }
    x.contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &GroupedConv { geometry })
}

struct GroupedConv {
    geometry: ConvGeometry,
}

fn conv_planes<T>(x: &[T], w: &[T], d: ConvShape) -> Vec<T>
where
    T: Copy + Default + Send + Sync + std::ops::Mul<Output = T> + std::ops::AddAssign,
{
    let plane = d.ho * d.wo;
    let mut out = vec![T::default(); d.n * d.c_out * plane];
    let c_out_g = d.c_out_g();
    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(idx, acc)| {
            let (b, o) = (idx / d.c_out, idx % d.c_out);
            let first_in = o / c_out_g * d.c_in_g;
            for ci in 0..d.c_in_g {
                let input = &x[(b * d.c + first_in + ci) * d.h * d.w..][..d.h * d.w];
                for ki in 0..d.kh {
                    for kj in 0..d.kw {
                        let wv = w[((o * d.c_in_g + ci) * d.kh + ki) * d.kw + kj];
                        let (lo, hi) = d.valid_columns(kj);
                        for oh in 0..d.ho {
                            let Some(ih) = (oh * d.stride() + ki).checked_sub(d.padding()) else {
                                continue;
                            };
                            if ih >= d.h || lo >= hi {
                                continue;
                            }
                            let row = &input[ih * d.w..][..d.w];
                            let out_row = &mut acc[oh * d.wo + lo..oh * d.wo + hi];
                            // First input column read: lo * stride + kj - padding (>= 0 by `lo`).
                            let start = lo * d.stride() + kj - d.padding();
                            if d.stride() == 1 {
                                for (o, &i) in out_row.iter_mut().zip(&row[start..]) {
                                    *o += wv * i;
                                }
                            } else {
                                for (o, &i) in out_row
                                    .iter_mut()
                                    .zip(row[start..].iter().step_by(d.stride()))
                                {
                                    *o += wv * i;
                                }
                            }
                        }
                    }
                }
            }
        });
    out
}

/// Output maps at least this wide take the direct kernel when the stride is 1 (measured on
/// ResNeXt-50 at batch 8: direct 16 ms vs GEMM 25 ms at 56x56, 25 ms vs 13 ms at 28x28).
const DIRECT_MIN_WIDTH: usize = 48;
/// Columns a GEMM task aims for: images per task = this / (H_out * W_out), at least 1.
const GEMM_COLUMNS: usize = 1024;

fn conv_gemm<T>(x: &[T], w: &[T], d: ConvShape) -> Vec<T>
where
    T: Copy + Default + Send + Sync + From<f32> + 'static,
{
    let plane = d.ho * d.wo;
    let groups = d.groups();
    let c_out_g = d.c_out_g();
    let k = d.c_in_g * d.kh * d.kw;
    let chunk = (GEMM_COLUMNS / plane).clamp(1, d.n);
    let n_chunks = d.n.div_ceil(chunk);
    let products: Vec<Vec<T>> = (0..groups * n_chunks)
        .into_par_iter()
        .map(|task| {
            let (g, first) = (task / n_chunks, task % n_chunks * chunk);
            let images = chunk.min(d.n - first);
            let cols_n = images * plane;
            // im2col of this group: row (ci, ki, kj), column (image, oh, ow); padding stays 0.
            let mut cols = vec![T::default(); k * cols_n];
            for ci in 0..d.c_in_g {
                for ki in 0..d.kh {
                    for kj in 0..d.kw {
                        let row = ((ci * d.kh + ki) * d.kw + kj) * cols_n;
                        let (lo, hi) = d.valid_columns(kj);
                        if lo >= hi {
                            continue;
                        }
                        let start = lo * d.stride() + kj - d.padding();
                        for b in 0..images {
                            let input = &x[((first + b) * d.c + g * d.c_in_g + ci) * d.h * d.w..]
                                [..d.h * d.w];
                            for oh in 0..d.ho {
                                let Some(ih) = (oh * d.stride() + ki).checked_sub(d.padding())
                                else {
                                    continue;
                                };
                                if ih >= d.h {
                                    continue;
                                }
                                let src = input[ih * d.w + start..].iter().step_by(d.stride());
                                let dst = &mut cols[row + b * plane + oh * d.wo..][lo..hi];
                                for (o, &i) in dst.iter_mut().zip(src) {
                                    *o = i;
                                }
                            }
                        }
                    }
                }
            }
            let mut product = vec![T::default(); c_out_g * cols_n];
            let lhs = &w[g * c_out_g * k..][..c_out_g * k];
            // SAFETY: `product` is c_out_g x cols_n, `lhs` c_out_g x k and `cols` k x cols_n, all
            // row-major and in bounds (checked by the slicing above); nothing else aliases them.
            unsafe {
                gemm::gemm(
                    c_out_g,
                    cols_n,
                    k,
                    product.as_mut_ptr(),
                    1,
                    cols_n as isize,
                    false,
                    lhs.as_ptr(),
                    1,
                    k as isize,
                    cols.as_ptr(),
                    1,
                    cols_n as isize,
                    T::from(0.0),
                    T::from(1.0),
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            product
        })
        .collect();
    let mut out = vec![T::default(); d.n * d.c_out * plane];
    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(idx, dst)| {
            let (b, o) = (idx / d.c_out, idx % d.c_out);
            let (task, image) = ((o / c_out_g) * n_chunks + b / chunk, b % chunk);
            let images = chunk.min(d.n - b / chunk * chunk);
            let src = &products[task][((o % c_out_g) * images + image) * plane..][..plane];
            dst.copy_from_slice(src);
        });
    out
}

pub(crate) fn grouped<T>(x: &[T], w: &[T], d: ConvShape) -> Vec<T>
where
    T: Copy
        + Default
        + Send
        + Sync
        + From<f32>
        + std::ops::Mul<Output = T>
        + std::ops::AddAssign
        + 'static,
{
    if d.stride() == 1 && d.wo >= DIRECT_MIN_WIDTH {
        conv_planes(x, w, d)
    } else {
        conv_gemm(x, w, d)
    }
}

impl CustomOp2 for GroupedConv {
    fn name(&self) -> &'static str {
        "grouped-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = ConvShape::new(xl.shape(), wl.shape(), self.geometry)?;
        let (Some((x0, x1)), Some((w0, w1))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            bail!("grouped conv2d: inputs must be contiguous");
        };
        let shape = Shape::from((d.n, d.c_out, d.ho, d.wo));
        let out = match (xs, ws) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                CpuStorage::F32(grouped(&x[x0..x1], &w[w0..w1], d))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                CpuStorage::F64(grouped(&x[x0..x1], &w[w0..w1], d))
            }
            _ => bail!("grouped conv2d: the CPU kernel takes f32 or f64 input and weight"),
        };
        Ok((out, shape))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testutil::{max_abs, CASES};
    use candle_core::Device;

    /// Against Candle's own per-group convolution, over strides, paddings, odd sizes, kernels and
    /// dtypes, including non-contiguous input.
    #[test]
    fn matches_candle_grouped_conv() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            for &(n, c, h, w, c_out, k, stride, padding, groups) in CASES {
                let x = Tensor::randn(0f32, 1., (n, c, w, h), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
                    .transpose(2, 3)
                    .unwrap();
                let wt = Tensor::randn(0f32, 1., (c_out, c / groups, k, k), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let ours = grouped_conv2d(&x, &wt, stride, padding, groups).unwrap();
                let theirs = x.conv2d(&wt, padding, stride, 1, groups).unwrap();
                assert_eq!(ours.dims(), theirs.dims());
                let err = max_abs(&ours, &theirs);
                let case = (n, c, h, w, k, stride, groups);
                assert!(err < 1e-4, "case {case:?}: max diff {err}");
                // Both kernels, whichever the size picked.
                if dtype == DType::F32 {
                    let xs: Vec<f32> = x
                        .contiguous()
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    let ws: Vec<f32> = wt.flatten_all().unwrap().to_vec1().unwrap();
                    let (ho, wo) = (theirs.dim(2).unwrap(), theirs.dim(3).unwrap());
                    let geometry = ConvGeometry {
                        stride,
                        padding,
                        groups,
                    };
                    let d = ConvShape::new(x.shape(), wt.shape(), geometry).unwrap();
                    assert_eq!((d.ho, d.wo), (ho, wo), "case {case:?}");
                    for out in [conv_planes(&xs, &ws, d), conv_gemm(&xs, &ws, d)] {
                        let out = Tensor::from_vec(out, theirs.shape(), &dev).unwrap();
                        let err = max_abs(&out, &theirs);
                        assert!(err < 1e-4, "case {case:?}: max diff {err}");
                    }
                }
            }
        }
    }

    #[test]
    fn rejects_shapes_that_do_not_fit() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 6, 4, 4), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 2, 3, 3), DType::F32, &dev).unwrap();
        assert!(grouped_conv2d(&x, &w, 1, 1, 2).is_err()); // 6 != 2 * 2
        let small = Tensor::zeros((1, 4, 1, 1), DType::F32, &dev).unwrap();
        assert!(grouped_conv2d(&small, &w, 1, 0, 2).is_err()); // 1x1 input, 3x3 kernel
    }
}
