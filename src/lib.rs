//! # resnet-zoo
//!
//! The ResNet family on [Candle](https://github.com/huggingface/candle), reproducing PyTorch
//! (torchvision) outputs, with strict weight loading and torchvision-exact preprocessing.
//!
//! This facade re-exports the workspace crates:
//! - [`layers`] (`resnet-zoo-layers`): folded conv+BN, pooling;
//! - the model (`resnet-zoo-resnet`): [`ResNet`], [`ResNetConfig`], [`transforms`], [`imagenet`];
//! - [`hub`] (`resnet-zoo-hub`): strict loading of safetensors checkpoints;
//! - [`classify`] (a batch through the model to its top-k classes; [`imagenet::top_k`] for
//!   logits) and [`cam`] (class-activation maps);
//! - [`alloc::HugePageAlloc`]: an optional global allocator that backs large buffers with huge pages.
//!
//! ```no_run
//! use candle_core::{DType, Device, Module};
//! use resnet_zoo::{transforms::Preprocess, ResNetConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::Cpu;
//! let model = resnet_zoo::hub::load_safetensors(
//!     "resnet50.safetensors", &ResNetConfig::resnet50(), DType::F32, &device)?;
//! let x = Preprocess::imagenet_v1().load("cat.jpg", &device)?.unsqueeze(0)?;
//! let probs = candle_nn::ops::softmax_last_dim(&model.forward(&x)?)?;
//! # Ok(()) }
//! ```

/// The Candle crates this version is built on, so users need no version-matched `candle-core`
/// line of their own: `use resnet_zoo::candle_core::{DType, Device, Module};`.
pub use candle_core;
pub use candle_nn;
pub use resnet_zoo_hub as hub;
pub use resnet_zoo_layers as layers;
pub use resnet_zoo_resnet::{
    block, config, fswrite, imagenet, model, preset_names, presets, suggest, transforms, BlockKind,
    FeatureInfo, LayerTime, NormKind, ResNet, ResNetConfig, ShortcutKind, Stage, Stem,
    StridePlacement, PRESETS,
};

pub mod alloc;
pub mod cam;
pub mod classify;
pub mod index;

/// The Rust snippets of the README and docs/, compiled (and run unless marked `no_run`) by
/// `cargo test --doc`, so the documentation cannot drift from the API. resnet-zoo-hub and
/// resnet-zoo-resnet test their own READMEs; resnet-zoo-layers' is tested here.
#[cfg(doctest)]
pub mod doc_snippets {
    // These two load pretrained weights by name (feature `download`).
    #[cfg(feature = "download")]
    #[doc = include_str!("../README.md")]
    pub struct Readme;
    #[doc = include_str!("../docs/architecture.md")]
    pub struct Architecture;
    #[cfg(feature = "download")]
    #[doc = include_str!("../docs/backbone.md")]
    pub struct Backbone;
    #[doc = include_str!("../docs/cache.md")]
    pub struct Cache;
    #[doc = include_str!("../docs/errors.md")]
    pub struct Errors;
    #[doc = include_str!("../docs/performance.md")]
    pub struct Performance;
    #[doc = include_str!("../docs/weights.md")]
    pub struct Weights;
    #[doc = include_str!("../crates/layers/README.md")]
    pub struct LayersReadme;
}
