//! Named configs, one line each, named after torchvision's builders.
//!
//! Every Bottleneck preset except the `_v1` ones puts the stride of a downsampling block on the 3x3
//! convolution (torchvision's "ResNet V1.5"; +~0.5% top-1 over the paper's V1, slightly slower);
//! `resnet50_v1`, `resnet101_v1`, `resnet152_v1` keep the paper's placement on the first 1x1.

use candle_core::{bail, Result};

use crate::config::{BlockKind, ResNetConfig, Stem, StridePlacement};

/// The ImageNet layout shared by every preset: 7x7 stem of 64, stages of 64-128-256-512 planes.
fn imagenet(block: BlockKind, layers: [usize; 4]) -> ResNetConfig {
    ResNetConfig {
        block,
        layers: layers.to_vec(),
        planes: vec![64, 128, 256, 512],
        groups: 1,
        width_per_group: 64,
        stride_on: StridePlacement::Conv3x3,
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

    /// ResNeXt-50 32x4d (V1.5), <https://arxiv.org/abs/1611.05431>.
    pub fn resnext50_32x4d() -> Self {
        Self {
            groups: 32,
            width_per_group: 4,
            ..Self::resnet50()
        }
    }
    /// ResNeXt-101 32x8d (V1.5), <https://arxiv.org/abs/1611.05431>.
    pub fn resnext101_32x8d() -> Self {
        Self {
            groups: 32,
            width_per_group: 8,
            ..Self::resnet101()
        }
    }
    /// ResNeXt-101 64x4d (V1.5), <https://arxiv.org/abs/1611.05431>.
    pub fn resnext101_64x4d() -> Self {
        Self {
            groups: 64,
            width_per_group: 4,
            ..Self::resnet101()
        }
    }
    /// Wide ResNet-50-2 (V1.5): Bottleneck 3x3s twice as wide, e.g. 2048-1024-2048 in the last stage
    /// where ResNet-50 has 2048-512-2048, <https://arxiv.org/abs/1605.07146>.
    pub fn wide_resnet50_2() -> Self {
        Self {
            width_per_group: 128,
            ..Self::resnet50()
        }
    }
    /// Wide ResNet-101-2 (V1.5), <https://arxiv.org/abs/1605.07146>.
    pub fn wide_resnet101_2() -> Self {
        Self {
            width_per_group: 128,
            ..Self::resnet101()
        }
    }
    /// The paper's original ResNet-50 (V1: stride on the first 1x1), <https://arxiv.org/abs/1512.03385>.
    pub fn resnet50_v1() -> Self {
        Self {
            stride_on: StridePlacement::Conv1x1,
            ..Self::resnet50()
        }
    }
    /// The paper's original ResNet-101 (V1), <https://arxiv.org/abs/1512.03385>.
    pub fn resnet101_v1() -> Self {
        Self {
            stride_on: StridePlacement::Conv1x1,
            ..Self::resnet101()
        }
    }
    /// The paper's original ResNet-152 (V1), <https://arxiv.org/abs/1512.03385>.
    pub fn resnet152_v1() -> Self {
        Self {
            stride_on: StridePlacement::Conv1x1,
            ..Self::resnet152()
        }
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
    ("resnet50_v1", ResNetConfig::resnet50_v1),
    ("resnet101_v1", ResNetConfig::resnet101_v1),
    ("resnet152_v1", ResNetConfig::resnet152_v1),
    ("resnext50_32x4d", ResNetConfig::resnext50_32x4d),
    ("resnext101_32x8d", ResNetConfig::resnext101_32x8d),
    ("resnext101_64x4d", ResNetConfig::resnext101_64x4d),
    ("wide_resnet50_2", ResNetConfig::wide_resnet50_2),
    ("wide_resnet101_2", ResNetConfig::wide_resnet101_2),
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
