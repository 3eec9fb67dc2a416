use candle_core::{Module, Result, Tensor, D};

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
        let x = if self.padding > 0 {
            let x = pad_neg_inf(x, 2, self.padding)?;
            pad_neg_inf(&x, 3, self.padding)?
        } else {
            x.clone()
        };
        x.max_pool2d_with_stride(self.kernel_size, self.stride)
    }
}

/// Global average pooling of an NCHW tensor to `[N, C]`
/// (equivalent to `adaptive_avg_pool2d(x, 1).flatten(1)`).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.mean(D::Minus1)
}
