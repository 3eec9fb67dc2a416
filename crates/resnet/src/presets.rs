//! Named configs, one line each, named after torchvision's builders.
//!
//! Every Bottleneck preset puts the stride of a downsampling block on the 3x3 convolution
//! (torchvision's "ResNet V1.5"; +~0.5% top-1 over the paper's V1, slightly slower).

use candle_core::{bail, Result};

use crate::config::{BlockKind, ResNetConfig, Stem};

/// The ImageNet layout shared by every preset: 7x7 stem of 64, stages of 64-128-256-512 planes.
fn imagenet(block: BlockKind, layers: [usize; 4]) -> ResNetConfig {
    ResNetConfig {
        block,
        layers: layers.to_vec(),
        planes: vec![64, 128, 256, 512],
        groups: 1,
        width_per_group: 64,
        stem: Stem::Classic { width: 64 },
        in_channels: 3,
        num_classes: Some(1000),
    }
}

impl ResNetConfig {
    /// ResNet-18, <https://arxiv.org/abs/1512.03385>.
    pub fn resnet18() -> Self {
        imagenet(BlockKind::Basic, [2, 2, 2, 2])
    }
    /// ResNet-34, <https://arxiv.org/abs/1512.03385>.
    pub fn resnet34() -> Self {
        imagenet(BlockKind::Basic, [3, 4, 6, 3])
    }
    /// ResNet-50 (V1.5: stride on the 3x3), <https://arxiv.org/abs/1512.03385>.
    pub fn resnet50() -> Self {
        imagenet(BlockKind::Bottleneck, [3, 4, 6, 3])
    }
    /// ResNet-101 (V1.5: stride on the 3x3), <https://arxiv.org/abs/1512.03385>.
    pub fn resnet101() -> Self {
        imagenet(BlockKind::Bottleneck, [3, 4, 23, 3])
    }
    /// ResNet-152 (V1.5: stride on the 3x3), <https://arxiv.org/abs/1512.03385>.
    pub fn resnet152() -> Self {
        imagenet(BlockKind::Bottleneck, [3, 8, 36, 3])
    }

    /// The preset called `name` (e.g. `"resnet50"`); an unknown name is an error listing the
    /// closest known names.
    pub fn preset(name: &str) -> Result<Self> {
        match PRESETS.iter().find(|(n, _)| *n == name) {
            Some((_, build)) => Ok(build()),
            None => bail!(
                "unknown architecture '{name}'{}; known: {}",
                crate::suggest::did_you_mean(name, PRESETS.iter().map(|(n, _)| *n)),
                preset_names().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// A preset constructor.
pub type Builder = fn() -> ResNetConfig;

/// Every preset by name, in the order `resnet-zoo list` prints them.
pub const PRESETS: &[(&str, Builder)] = &[
    ("resnet18", ResNetConfig::resnet18),
    ("resnet34", ResNetConfig::resnet34),
    ("resnet50", ResNetConfig::resnet50),
    ("resnet101", ResNetConfig::resnet101),
    ("resnet152", ResNetConfig::resnet152),
];

/// The names of [`PRESETS`].
pub fn preset_names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|(n, _)| *n)
}

/// The preset name of `cfg`, ignoring `num_classes`, if it is one.
pub fn name_of(cfg: &ResNetConfig) -> Option<&'static str> {
    PRESETS
        .iter()
        .find(|(_, build)| build().with_num_classes(cfg.num_classes) == *cfg)
        .map(|(n, _)| *n)
}
