//! # resnet-zoo-hub
//!
//! Pretrained weights: the weights table ([`registry`], one row per `arch.tag`), downloads from the
//! Hugging Face Hub into a verified cache ([`download`], feature `download`), and strict loading of
//! ResNet checkpoints.
//!
//! Strict loading: Before a single tensor is read, the file's safetensors header
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

// Without `download` only the cache's lookups are used; its writers serve the downloader.
#[cfg_attr(not(feature = "download"), allow(dead_code))]
pub mod cache;
#[cfg(feature = "download")]
pub mod download;
mod error;
pub mod keymap;
mod load;
pub mod pth;
mod read;
pub mod registry;
mod tensors;

#[cfg(feature = "download")]
pub use download::{fetch, HubOptions, Progress};
pub use error::{HubError, LoadError, MismatchReport, ShapeMismatch};
pub use load::{
    load_safetensors, load_safetensors_bytes, load_safetensors_with, read_weights_file, LoadOptions,
};
pub use pth::{convert_pth, convert_pth_with, read_pth, read_pth_bytes};
pub use read::MAX_WEIGHTS_BYTES;
pub use registry::WeightsInfo;

/// Resolves `name` in the weights table (`resnet50.tv2_in1k`, or `resnet50` for the arch's default
/// row), downloads the file into the verified cache if needed, and loads it strictly. Returns the
/// model and its row, whose [`WeightsInfo::preprocess`] is the matching preprocessing.
#[cfg(feature = "download")]
pub fn load_pretrained(
    name: &str,
    dtype: candle_core::DType,
    device: &candle_core::Device,
    options: &HubOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(resnet_zoo_resnet::ResNet, &'static WeightsInfo), HubError> {
    load_pretrained_with(
        name,
        dtype,
        device,
        options,
        LoadOptions::default(),
        progress,
    )
}

/// [`load_pretrained`] as a headless backbone (`num_classes: None`): the file's classifier is
/// skipped by name ([`LoadOptions::skip_classifier`]); `forward` returns the pooled embedding.
#[cfg(feature = "download")]
pub fn load_pretrained_backbone(
    name: &str,
    dtype: candle_core::DType,
    device: &candle_core::Device,
    options: &HubOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(resnet_zoo_resnet::ResNet, &'static WeightsInfo), HubError> {
    let skip = LoadOptions {
        skip_classifier: true,
        ..LoadOptions::default()
    };
    load_pretrained_with(name, dtype, device, options, skip, progress)
}

/// [`load_pretrained`] with [`LoadOptions`]; with `skip_classifier` the model is headless.
#[cfg(feature = "download")]
pub fn load_pretrained_with(
    name: &str,
    dtype: candle_core::DType,
    device: &candle_core::Device,
    options: &HubOptions,
    load: LoadOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(resnet_zoo_resnet::ResNet, &'static WeightsInfo), HubError> {
    let info = registry::find(name)?;
    let mut cfg = info.config()?;
    if load.skip_classifier {
        cfg = cfg.with_num_classes(None);
    }
    let path = fetch(options, &info.repo, &info.revision, &info.file, progress)?;
    let model = load_safetensors_with(&path, &cfg, dtype, device, load)?;
    Ok((model, info))
}

/// The examples of this crate's README.md, compiled by `cargo test --doc` (they download).
#[cfg(all(doctest, feature = "download"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
