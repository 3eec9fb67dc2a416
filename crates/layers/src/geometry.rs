//! The geometry of a convolution, spelled once: [`ConvGeometry`] (stride, padding, groups) is what
//! a layer says; `ConvShape` is that geometry applied to an input and a weight, with the output size
//! derived from them, and is what the CPU kernels (`tiled.rs`, `grouped.rs`) and the tensor-op path
//! (`grouped_matmul.rs`) read.

use candle_core::{bail, Result, Shape};

/// Geometry of a convolution: square stride and zero padding, and the number of groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

/// The shapes of one convolution `conv2d(x, w)` under a [`ConvGeometry`]: input `[n, c, h, w]`,
/// weight `[c_out, c_in_g, kh, kw]` (`c_in_g = c / groups`), output `[n, c_out, ho, wo]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvShape {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c_out: usize,
    pub(crate) c_in_g: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
    pub(crate) geometry: ConvGeometry,
}

impl ConvShape {
    /// The shapes of `conv2d(x, w)` for `x: [N, C, H, W]` and `w: [C_out, C / groups, k_h, k_w]`,
    /// or an error naming both shapes when they do not fit each other, the groups, or the padding.
    pub(crate) fn new(x: &Shape, w: &Shape, geometry: ConvGeometry) -> Result<Self> {
        let ConvGeometry {
            stride,
            padding,
            groups,
        } = geometry;
        let (n, c, h, wd) = x.dims4()?;
        let (c_out, c_in_g, kh, kw) = w.dims4()?;
        if groups == 0 || stride == 0 || c != c_in_g * groups || !c_out.is_multiple_of(groups) {
            bail!(
                "conv2d: input {:?}, weight {:?}, groups {groups}, stride {stride} do not fit",
                x.dims(),
                w.dims()
            );
        }
        if h + 2 * padding < kh || wd + 2 * padding < kw {
            bail!(
                "conv2d: input {:?} with padding {padding} is smaller than the {kh}x{kw} kernel",
                x.dims()
            );
        }
        Ok(Self {
            n,
            c,
            h,
            w: wd,
            c_out,
            c_in_g,
            kh,
            kw,
            ho: (h + 2 * padding - kh) / stride + 1,
            wo: (wd + 2 * padding - kw) / stride + 1,
            geometry,
        })
    }

    pub(crate) fn stride(&self) -> usize {
        self.geometry.stride
    }

    pub(crate) fn padding(&self) -> usize {
        self.geometry.padding
    }

    pub(crate) fn groups(&self) -> usize {
        self.geometry.groups
    }

    /// Output channels per group.
    pub(crate) fn c_out_g(&self) -> usize {
        self.c_out / self.groups()
    }

    /// Output columns `[lo, hi)` whose input column `ow * stride + kj - padding` lies in `[0, w)`.
    pub(crate) fn valid_columns(&self, kj: usize) -> (usize, usize) {
        let (stride, padding) = (self.stride(), self.padding());
        let lo = padding.saturating_sub(kj).div_ceil(stride);
        let hi = if self.w + padding > kj {
            ((self.w + padding - kj - 1) / stride + 1).min(self.wo)
        } else {
            0
        };
        (lo, hi.max(lo))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn shape(
        x: (usize, usize, usize, usize),
        w: (usize, usize, usize, usize),
        g: ConvGeometry,
    ) -> Result<ConvShape> {
        ConvShape::new(&Shape::from(x), &Shape::from(w), g)
    }

    #[test]
    fn output_size_follows_pytorch() {
        let g = ConvGeometry {
            stride: 2,
            padding: 3,
            groups: 1,
        };
        // ResNet's stem: 224 -> 112; an odd 33x31 input -> 17x16.
        let s = shape((1, 3, 224, 224), (64, 3, 7, 7), g).unwrap();
        assert_eq!((s.ho, s.wo, s.c_out_g()), (112, 112, 64));
        let s = shape((2, 3, 33, 31), (8, 3, 7, 7), g).unwrap();
        assert_eq!((s.n, s.ho, s.wo), (2, 17, 16));
        let g = ConvGeometry {
            stride: 1,
            padding: 1,
            groups: 32,
        };
        let s = shape((1, 128, 56, 56), (128, 4, 3, 3), g).unwrap();
        assert_eq!((s.c_in_g, s.c_out_g(), s.ho, s.wo), (4, 4, 56, 56));
    }

    #[test]
    fn valid_columns_skip_the_padding() {
        let g = ConvGeometry {
            stride: 2,
            padding: 1,
            groups: 1,
        };
        // w = 5, wo = 3: tap 0 reads columns -1, 1, 3 (first one padding); tap 2 reads 1, 3, 5.
        let s = shape((1, 1, 5, 5), (1, 1, 3, 3), g).unwrap();
        assert_eq!(s.wo, 3);
        assert_eq!(s.valid_columns(0), (1, 3));
        assert_eq!(s.valid_columns(1), (0, 3));
        assert_eq!(s.valid_columns(2), (0, 2));
    }

    #[test]
    fn refuses_shapes_that_do_not_fit() {
        let g = |stride, padding, groups| ConvGeometry {
            stride,
            padding,
            groups,
        };
        let err = shape((1, 6, 4, 4), (4, 2, 3, 3), g(1, 1, 2)).unwrap_err();
        assert!(err.to_string().contains("groups 2"), "{err}");
        assert!(shape((1, 4, 4, 4), (4, 2, 3, 3), g(0, 1, 2)).is_err());
        assert!(shape((1, 4, 4, 4), (4, 4, 3, 3), g(1, 1, 0)).is_err());
        assert!(shape((1, 4, 4, 4), (5, 2, 3, 3), g(1, 1, 2)).is_err()); // 5 % 2 != 0
        let err = shape((1, 4, 1, 1), (4, 2, 3, 3), g(1, 0, 2)).unwrap_err();
        assert!(
            err.to_string().contains("smaller than the 3x3 kernel"),
            "{err}"
        );
    }
}
