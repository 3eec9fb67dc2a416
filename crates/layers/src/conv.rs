//! Inference convolution with its epilogue fused: `relu?(conv(x, w) + bias + residual?)`.
//!
//! On the CPU in f32 this is one custom op. Every ResNet convolution, its folded BatchNorm, the
//! residual add and the ReLU become one pass that writes each output value once: ungrouped
//! convolutions run the tiled kernel of `tiled.rs`, which fills each output tile with the bias and
//! residual before its GEMM accumulates into it; grouped ones run the kernels of
//! [`crate::grouped_conv2d`] and then the same epilogue over the finished planes (`epilogue.rs`).
//! Other devices and dtypes compose Candle's `conv2d` with broadcast ops, giving the same result.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor};

use crate::epilogue::{Epilogue, EpilogueData};
use crate::geometry::ConvGeometry;
use crate::geometry::ConvShape;
use crate::grouped::{grouped, grouped_conv2d};
use crate::tiled::conv_tiled;

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
    let ConvShape {
        n, c_out, ho, wo, ..
    } = ConvShape::new(x.shape(), w.shape(), geometry)?;
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
        let d = ConvShape::new(layout.shape(), self.w.shape(), self.geometry)?;
        let (CpuStorage::F32(x), Some((x0, x1))) = (storage, layout.contiguous_offsets()) else {
            bail!("conv2d: the fused CPU kernel takes a contiguous f32 input");
        };
        let x = &x[x0..x1];
        let out = with_f32(&self.w, |w| {
            with_opt_f32(self.bias.as_ref(), |bias| {
                with_opt_f32(self.residual.as_ref(), |residual| {
                    let e = EpilogueData {
                        bias,
                        residual,
                        relu: self.relu,
                    };
                    Ok(if d.groups() == 1 {
                        conv_tiled(x, w, d, e)
                    } else {
                        let mut out = grouped(x, w, d);
                        e.apply_to_planes(&mut out, d);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testutil::max_abs;
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
