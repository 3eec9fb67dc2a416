//! # resnet-zoo-hub
//!
//! Strict loading of ResNet checkpoints. Before a single tensor is read, the file's safetensors header
//! is compared with the names, shapes and dtypes the [`ResNetConfig`] expects, and every missing
//! tensor, unexpected tensor, shape mismatch and non-float dtype is reported in **one** error that names
//! the file (PyTorch's `load_state_dict(strict=True)`, but before any work is done). Integer
//! `num_batches_tracked` buffers are ignored. Files in f16, bf16 or f64 are converted to the run dtype;
//! BatchNorm folding happens in f32.
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use resnet_zoo_resnet::ResNetConfig;
//!
//! # fn main() -> Result<(), resnet_zoo_hub::LoadError> {
//! let model = resnet_zoo_hub::load_safetensors(
//!     "resnet50.safetensors",
//!     &ResNetConfig::resnet50(),
//!     DType::F32,
//!     &Device::Cpu,
//! )?;
//! # Ok(()) }
//! ```
//!
//! [`ResNetConfig`]: resnet_zoo_resnet::ResNetConfig

mod error;
mod load;

pub use error::{LoadError, MismatchReport, ShapeMismatch};
pub use load::{check_header, load_safetensors, read_weights_file};
