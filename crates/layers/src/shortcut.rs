//! The shortcut branch of a residual block.

use candle_core::{Module, Result, Tensor};

use crate::{avg_pool2d_ceil, ConvBn};

/// What a residual block adds its input through.
#[derive(Debug, Clone)]
pub enum Shortcut {
    /// `x` itself (same shape in and out).
    Identity,
    /// A strided 1x1 convolution with its BatchNorm folded in (the paper's option B; torchvision's
    /// `downsample`), or without a norm in pre-activation blocks.
    Projection(ConvBn),
    /// ResNet-D: `AvgPool2d(stride, ceil_mode=True, count_include_pad=False)` then a stride-1 1x1
    /// convolution with BatchNorm, so that no input position is skipped.
    AvgDown { stride: usize, proj: ConvBn },
    /// The paper's option A: every `stride`-th row and column, then `before` and `after` channels of
    /// zeros around the input's channels. No parameters.
    ZeroPad {
        stride: usize,
        before: usize,
        after: usize,
    },
}

/// `x[:, :, ::stride, ::stride]`.
fn subsample(x: &Tensor, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4()?;
    let rows = Tensor::arange_step(0u32, h as u32, stride as u32, x.device())?;
    let cols = Tensor::arange_step(0u32, w as u32, stride as u32, x.device())?;
    x.index_select(&rows, 2)?.index_select(&cols, 3)
}

impl Module for Shortcut {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Shortcut::Identity => Ok(x.clone()),
            Shortcut::Projection(proj) => proj.forward(x),
            Shortcut::AvgDown { stride, proj } => proj.forward(&avg_pool2d_ceil(x, *stride)?),
            Shortcut::ZeroPad {
                stride,
                before,
                after,
            } => subsample(x, *stride)?.pad_with_zeros(1, *before, *after),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    #[test]
    fn zero_pad_subsamples_and_pads_channels() {
        let x = Tensor::arange(0f32, 2. * 5. * 3., &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 5, 3))
            .unwrap();
        let y = Shortcut::ZeroPad {
            stride: 2,
            before: 1,
            after: 2,
        }
        .forward(&x)
        .unwrap();
        assert_eq!(y.dims(), &[1, 5, 3, 2]);
        let c1: Vec<Vec<f32>> = y.get(0).unwrap().get(1).unwrap().to_vec2().unwrap();
        assert_eq!(c1, [[0., 2.], [6., 8.], [12., 14.]]);
        let c2: Vec<Vec<f32>> = y.get(0).unwrap().get(2).unwrap().to_vec2().unwrap();
        assert_eq!(c2, [[15., 17.], [21., 23.], [27., 29.]]);
        for zero in [0, 3, 4] {
            let c: Vec<Vec<f32>> = y.get(0).unwrap().get(zero).unwrap().to_vec2().unwrap();
            assert!(c.iter().flatten().all(|&v| v == 0.), "channel {zero}");
        }
    }
}
