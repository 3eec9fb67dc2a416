use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// 2-D max pooling with PyTorch semantics: implicit `-inf` padding, floor output size.
///
/// Candle's `max_pool2d_with_stride` has no padding; padding with zeros is only equivalent after a
/// ReLU, so the border is filled with `-inf` explicitly and the layer is correct for any input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    pub kernel_size: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool2d {
    pub fn new(kernel_size: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel_size,
            stride,
            padding,
        }
    }
}

fn pad_neg_inf(x: &Tensor, dim: usize, p: usize) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    dims[dim] = p;
    let border = Tensor::full(f32::NEG_INFINITY, dims, x.device())?.to_dtype(x.dtype())?;
    Tensor::cat(&[&border, x, &border], dim)
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if self.kernel_size == 0 || self.stride == 0 || self.padding >= self.kernel_size {
            candle_core::bail!(
                "max pool: kernel {} stride {} padding {} (padding must be below the kernel size)",
                self.kernel_size,
                self.stride,
                self.padding
            );
        }
        if h + 2 * self.padding < self.kernel_size || w + 2 * self.padding < self.kernel_size {
            candle_core::bail!(
                "max pool: input {:?} is smaller than the {k}x{k} window",
                x.dims(),
                k = self.kernel_size
            );
        }
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return x.contiguous()?.apply_op1_no_bwd(self);
        }
        let x = if self.padding > 0 {
            let x = pad_neg_inf(x, 2, self.padding)?;
            pad_neg_inf(&x, 3, self.padding)?
        } else {
            x.clone()
        };
        x.max_pool2d_with_stride(self.kernel_size, self.stride)
    }
}

/// The CPU kernel (f32): one task per output plane, reading only the window's in-bounds values.
impl CustomOp1 for MaxPool2d {
    fn name(&self) -> &'static str {
        "max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let (k, s, p) = (self.kernel_size, self.stride, self.padding);
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let (CpuStorage::F32(x), Some((x0, x1))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("max pool: the CPU kernel takes a contiguous f32 input");
        };
        let x = &x[x0..x1];
        // The in-bounds input range of window `o` along a dimension of size `size`.
        let span = |o: usize, size: usize| {
            let start = (o * s).saturating_sub(p);
            let end = (o * s + k - p).min(size);
            (start, end)
        };
        let mut out = vec![0f32; n * c * ho * wo];
        out.par_chunks_mut(ho * wo)
            .zip(x.par_chunks(h * w))
            .for_each(|(dst, plane)| {
                for oh in 0..ho {
                    let (r0, r1) = span(oh, h);
                    for ow in 0..wo {
                        let (c0, c1) = span(ow, w);
                        let mut m = f32::NEG_INFINITY;
                        for row in plane[r0 * w..r1 * w].chunks_exact(w) {
                            for &v in &row[c0..c1] {
                                // NaN propagates, as in PyTorch.
                                m = if v > m || v.is_nan() { v } else { m };
                            }
                        }
                        dst[oh * wo + ow] = m;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}

/// Global average pooling of an NCHW tensor to `[N, C]`
/// (equivalent to `adaptive_avg_pool2d(x, 1).flatten(1)`).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.mean(D::Minus1)
}

/// `AvgPool2d(k, stride=k, ceil_mode=True, count_include_pad=False)` of an NCHW tensor: the
/// ResNet-D shortcut's pooling. With an odd size the last window hangs over the border and averages
/// only the values inside it, as PyTorch does.
pub fn avg_pool2d_ceil(x: &Tensor, k: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if k <= 1 {
        return Ok(x.clone());
    }
    if h.is_multiple_of(k) && w.is_multiple_of(k) {
        return x.avg_pool2d(k);
    }
    // Zero-pad to whole windows, average, then rescale the partial windows by k^2 / (values inside).
    let (ho, wo) = (h.div_ceil(k), w.div_ceil(k));
    let padded = x
        .pad_with_zeros(2, 0, ho * k - h)?
        .pad_with_zeros(3, 0, wo * k - w)?;
    let inside = |i: usize, n: usize, len: usize| if i + 1 == n { len - i * k } else { k };
    let factors: Vec<f32> = (0..ho)
        .flat_map(|i| (0..wo).map(move |j| (i, j)))
        .map(|(i, j)| (k * k) as f32 / (inside(i, ho, h) * inside(j, wo, w)) as f32)
        .collect();
    let factors = Tensor::from_vec(factors, (1, 1, ho, wo), x.device())?.to_dtype(x.dtype())?;
    padded.avg_pool2d(k)?.broadcast_mul(&factors)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    #[test]
    fn ceil_avg_pool_averages_only_inside_values() {
        // 3x5: windows rows {0,1},{2}; cols {0,1},{2,3},{4}.
        let x = Tensor::arange(0f32, 15., &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 3, 5))
            .unwrap();
        let y = avg_pool2d_ceil(&x, 2).unwrap();
        let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let want = [
            (0. + 1. + 5. + 6.) / 4.,
            (2. + 3. + 7. + 8.) / 4.,
            (4. + 9.) / 2.,
            (10. + 11.) / 2.,
            (12. + 13.) / 2.,
            14.,
        ];
        assert_eq!(y.dims(), &[1, 1, 2, 3]);
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn max_pool_pads_with_minus_infinity() {
        let x = Tensor::full(-3f32, (1, 1, 2, 2), &Device::Cpu).unwrap();
        let y = MaxPool2d::new(3, 2, 1).forward(&x).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [-3.]);
    }

    /// The f32 CPU kernel against the padded Candle path (which f64 takes), on odd sizes.
    #[test]
    fn max_pool_kernel_matches_the_padded_path() {
        for &(h, w, k, s, p) in &[
            (7, 9, 3, 2, 1),
            (8, 8, 3, 2, 1),
            (5, 6, 3, 1, 0),
            (4, 3, 2, 2, 1),
        ] {
            let x = Tensor::randn(0f32, 1., (2, 3, h, w), &Device::Cpu).unwrap();
            let pool = MaxPool2d::new(k, s, p);
            let fast = pool.forward(&x).unwrap();
            let reference = pool
                .forward(&x.to_dtype(DType::F64).unwrap())
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            assert_eq!(fast.dims(), reference.dims());
            assert_eq!(
                fast.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                reference.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{h}x{w} k{k} s{s} p{p}"
            );
        }
    }
}
