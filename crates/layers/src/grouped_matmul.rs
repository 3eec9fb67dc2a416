//! Grouped convolution from portable tensor ops: one im2col and one batched matmul.
//!
//! The CPU kernel in `grouped.rs` takes f32/f64 on the CPU; CUDA, Metal and the half precisions
//! come here. Candle's own `conv2d` with `groups > 1` runs one convolution per group and a
//! concatenation (32 or 64 convolutions per ResNeXt 3x3 layer, and as many kernel launches); this
//! runs a fixed handful of ops whatever the group count:
//!
//! 1. zero-pad the input and move channels first: `[C, N, H_p, W_p]` (one copy);
//! 2. one strided view per kernel tap, stacked: `[C, k_h * k_w, N, H_out, W_out]`, which read as
//!    `[G, C/G * k_h * k_w, N * H_out * W_out]` is every group's im2col matrix (one copy);
//! 3. `[G, C_out/G, K] x [G, K, N * H_out * W_out]` as one batched matmul (cuBLAS strided batched
//!    GEMM on CUDA);
//! 4. back to `[N, C_out, H_out, W_out]` (one copy).
//!
//! The im2col matrix is `k_h * k_w` times the input; for ResNeXt-50's largest 3x3 layer at batch
//! 128 that is 1.8 GB in f32, 0.9 GB in f16.

use candle_core::{Result, Tensor};

use crate::geometry::ConvShape;

/// `conv2d(x, w, stride, padding, dilation = 1, groups)` for `x: [N, C, H, W]` and
/// `w: [C_out, C / groups, k_h, k_w]` on any device and dtype.
pub(crate) fn grouped_conv2d_matmul(x: &Tensor, w: &Tensor, d: ConvShape) -> Result<Tensor> {
    let (s, groups) = (d.stride(), d.groups());
    // Tap (i, j) reads padded rows i, i + s, ..., i + s * (H_out - 1): a window of s * H_out rows
    // starting at i, of which every s-th is kept. Pad the bottom and right so every window fits.
    let hp = (d.kh - 1 + s * d.ho).max(d.h + 2 * d.padding());
    let wp = (d.kw - 1 + s * d.wo).max(d.w + 2 * d.padding());
    let x = x
        .pad_with_zeros(2, d.padding(), hp - d.h - d.padding())?
        .pad_with_zeros(3, d.padding(), wp - d.w - d.padding())?
        .transpose(0, 1)?
        .contiguous()?; // [C, N, H_p, W_p]
    let mut taps = Vec::with_capacity(d.kh * d.kw);
    for i in 0..d.kh {
        for j in 0..d.kw {
            let mut tap = x.narrow(2, i, s * d.ho)?.narrow(3, j, s * d.wo)?;
            if s > 1 {
                // [C, N, H_out, s, W_out, s] and the first of each s.
                tap = tap
                    .reshape((d.c, d.n, d.ho, s, d.wo, s))?
                    .narrow(3, 0, 1)?
                    .narrow(5, 0, 1)?
                    .reshape((d.c, d.n, d.ho, d.wo))?;
            }
            taps.push(tap);
        }
    }
    let k = d.c_in_g * d.kh * d.kw;
    let c_out_g = d.c_out_g();
    let cols = Tensor::stack(&taps, 1)?.reshape((groups, k, d.n * d.ho * d.wo))?;
    let w = w.contiguous()?.reshape((groups, c_out_g, k))?;
    w.matmul(&cols)? // [G, C_out/G, N * H_out * W_out]
        .reshape((d.c_out, d.n, d.ho, d.wo))?
        .transpose(0, 1)?
        .contiguous()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::testutil::{max_abs, CASES};
    use crate::ConvGeometry;

    /// Against Candle's per-group convolution on the grouped kernel's cases, with non-contiguous
    /// input, in f32 and f16.
    #[test]
    fn matches_candle_grouped_conv() {
        let dev = Device::Cpu;
        for &(n, c, h, w, c_out, k, stride, padding, groups) in CASES {
            let x = Tensor::randn(0f32, 1., (n, c, w, h), &dev)
                .unwrap()
                .transpose(2, 3)
                .unwrap();
            let wt = Tensor::randn(0f32, 1., (c_out, c / groups, k, k), &dev).unwrap();
            let geometry = ConvGeometry {
                stride,
                padding,
                groups,
            };
            let d = ConvShape::new(x.shape(), wt.shape(), geometry).unwrap();
            let theirs = x.conv2d(&wt, padding, stride, 1, groups).unwrap();
            let case = (n, c, h, w, k, stride, padding, groups);
            let ours = grouped_conv2d_matmul(&x, &wt, d).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "case {case:?}");
            let err = max_abs(&ours, &theirs);
            assert!(err < 1e-4, "case {case:?}: max diff {err}");
            // Half precision: products rounded to 11 bits, sums of up to 200 terms of |x| ~ 1.
            let (xh, wh) = (
                x.to_dtype(DType::F16).unwrap(),
                wt.to_dtype(DType::F16).unwrap(),
            );
            let half = grouped_conv2d_matmul(&xh, &wh, d).unwrap();
            assert_eq!(half.dtype(), DType::F16);
            let err = max_abs(&half.to_dtype(DType::F32).unwrap(), &theirs);
            assert!(err < 5e-2, "case {case:?} in f16: max diff {err}");
        }
    }
}
