//! # resnet-zoo-resnet
//!
//! One generic [`ResNet`] for the whole family, described by a public [`ResNetConfig`], with presets
//! named after torchvision's builders (`resnet18` ... `resnet152`), torchvision-exact preprocessing
//! ([`transforms`]) and the ImageNet-1k class names ([`imagenet`]).
//!
//! Reference implementation: torchvision `torchvision/models/resnet.py`. Bottleneck presets are
//! "ResNet V1.5": a downsampling block strides its 3x3 convolution, not its first 1x1 as the paper
//! (<https://arxiv.org/abs/1512.03385>) did.
//!
//! ```no_run
//! use candle_core::{DType, Device, Module};
//! use resnet_zoo_resnet::{transforms::Preprocess, ResNet, ResNetConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::Cpu;
//! let cfg = ResNetConfig::resnet50();
//! // Strict, checked loading lives in resnet-zoo-hub; this is the bare candle path.
//! let vb = unsafe {
//!     candle_nn::VarBuilder::from_mmaped_safetensors(&["resnet50.safetensors"], DType::F32, &device)?
//! };
//! let model = ResNet::new(&cfg, vb)?;
//! let image = Preprocess::imagenet_v2().load("cat.jpg", &device)?; // [3, 224, 224]
//! let logits = model.forward(&image.unsqueeze(0)?)?; // [1, 1000]
//! # Ok(()) }
//! ```

pub mod block;
mod blocked;
pub mod config;
pub mod fsread;
pub mod fswrite;
pub mod imagenet;
pub mod model;
pub mod presets;
mod stem;
pub mod suggest;
pub mod transforms;

pub use block::{BasicBlock, Block, Bottleneck, PreActBottleneck};
pub use blocked::timing::LayerTime;
pub use config::{BlockKind, NormKind, ResNetConfig, ShortcutKind, Stem, StridePlacement};
pub use model::{FeatureInfo, ResNet, Stage};
pub use presets::{preset_names, PRESETS};

/// The examples of this crate's README.md, compiled (and run unless `no_run`) by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
