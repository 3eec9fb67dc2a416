//! Candle layers that `candle-nn` lacks, for the ResNet family.
//!
//! - [`ConvBn`]: a convolution followed by an inference-mode BatchNorm, folded into one convolution with
//!   bias when the weights are loaded (`w' = w * gamma / sqrt(var + eps)`, `b' = beta - mean * gamma /
//!   sqrt(var + eps)`), computed in f32 (f64 for f64 models) whatever the file's or the run's dtype.
//!   Without a norm ([`ConvBn::conv_only`]) it can standardise its weight once at load (BiT's StdConv).
//! - [`conv2d_fused`]: `relu?(conv(x) + bias + residual)` as one CPU op (f32) that writes each output
//!   value once, tile by tile, with no im2col for 1x1 convolutions; Candle ops elsewhere.
//! - [`grouped_conv2d`]: a grouped convolution (ResNeXt) as one op, not one conv per group: a CPU
//!   kernel for f32/f64, one im2col and one batched matmul on CUDA, Metal and in half precision.
//! - [`NormAct`]: BatchNorm (folded to scale and shift) or GroupNorm, then ReLU: the pre-activation
//!   norms of ResNet V2 / BiT.
//! - [`Shortcut`]: identity, projection (option B), ResNet-D's average-pool projection, and the
//!   paper's parameter-free zero-padding shortcut (option A).
//! - [`MaxPool2d`]: max pooling with PyTorch's implicit `-inf` padding; [`avg_pool2d_ceil`]: average
//!   pooling with `ceil_mode=True, count_include_pad=False`.
//! - [`global_avg_pool`]: `adaptive_avg_pool2d(1)` followed by `flatten(1)`.
//! - [`TensorSpec`]: the name and shape of one checkpoint tensor, so a model can say which tensors it
//!   expects before anything is loaded (strict loading).
//! - [`nchwc`]: the CPU f32 path of the models: activations in the channel-blocked layout NCHW8c,
//!   weights packed once at load, direct AVX-512 / AVX2 micro-kernels (and a portable one) chosen at
//!   run time, Winograd F(2x2, 3x3), and the pools, shortcuts and norms in the same layout.
//!
//! Every layer is a plain struct with `new(config, vb)` and `impl Module`, so `{:?}` prints the tree.

#![warn(clippy::undocumented_unsafe_blocks)]

mod conv;
mod conv_bn;
mod epilogue;
mod geometry;
mod grouped;
mod grouped_matmul;
pub mod nchwc;
mod norm;
mod pool;
mod shortcut;
mod spec;
#[cfg(test)]
mod testutil;
mod tiled;

pub use conv::conv2d_fused;
pub use conv_bn::{needs_f32_compute, ConvBn, ConvBnConfig};
pub use epilogue::Epilogue;
pub use geometry::ConvGeometry;
pub use grouped::grouped_conv2d;
pub use norm::{NormAct, NormKind};
pub use pool::{avg_pool2d_ceil, global_avg_pool, MaxPool2d};
pub use shortcut::Shortcut;
pub use spec::TensorSpec;
