//! Candle layers that `candle-nn` lacks, for the ResNet family.
//!
//! - [`ConvBn`]: a convolution followed by an inference-mode BatchNorm, folded into one convolution with
//!   bias when the weights are loaded (`w' = w * gamma / sqrt(var + eps)`, `b' = beta - mean * gamma /
//!   sqrt(var + eps)`), computed in f32 (f64 for f64 models) whatever the file's or the run's dtype.
//! - [`MaxPool2d`]: max pooling with PyTorch's implicit `-inf` padding.
//! - [`global_avg_pool`]: `adaptive_avg_pool2d(1)` followed by `flatten(1)`.
//! - [`TensorSpec`]: the name and shape of one checkpoint tensor, so a model can say which tensors it
//!   expects before anything is loaded (strict loading).
//!
//! Every layer is a plain struct with `new(config, vb)` and `impl Module`, so `{:?}` prints the tree.

mod conv_bn;
mod pool;
mod spec;

pub use conv_bn::{ConvBn, ConvBnConfig};
pub use pool::{global_avg_pool, MaxPool2d};
pub use spec::TensorSpec;
