//! Named configs, one line each, named after torchvision's builders.
//!
//! Every Bottleneck preset except the `_v1` ones puts the stride of a downsampling block on the 3x3
//! convolution (torchvision's "ResNet V1.5"; +~0.5% top-1 over the paper's V1, slightly slower);
//! `resnet50_v1`, `resnet101_v1`, `resnet152_v1` keep the paper's placement on the first 1x1.
//! Names of timm architectures (`resnet50d`, `resnetv2_50`, `resnetv2_50x1_bit`) are timm's.

use candle_core::{bail, Result};

use crate::config::{BlockKind, NormKind, ResNetConfig, ShortcutKind, Stem, StridePlacement};

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
        shortcut: ShortcutKind::Projection,
        norm: NormKind::BatchNorm,
        weight_standardization: false,
        in_channels: 3,
        num_classes: Some(1000),
    }
}

/// ResNet V2 (pre-activation) with BatchNorm, timm's `resnetv2_*`.
fn preact(layers: [usize; 4]) -> ResNetConfig {
    ResNetConfig {
        stem: Stem::PreAct {
            width: 64,
            fixed_padding: false,
        },
        ..imagenet(BlockKind::PreActBottleneck, layers)
    }
}

/// The paper's CIFAR-10 ResNet of depth `6n + 2`: 3x3 stem of 16, three stages of `n` Basic
/// blocks with 16, 32, 64 channels, 10 classes (He et al. 2015, section 4.2).
fn cifar(n: usize, shortcut: ShortcutKind) -> ResNetConfig {
    ResNetConfig {
        layers: vec![n; 3],
        planes: vec![16, 32, 64],
        stem: Stem::Cifar { width: 16 },
        shortcut,
        num_classes: Some(10),
        ..imagenet(BlockKind::Basic, [1; 4])
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

    /// ResNet-50-D (timm `resnet50d`): deep 3x3 stem (32-32-64) and average-pool shortcuts,
    /// "Bag of Tricks", <https://arxiv.org/abs/1812.01187>.
    pub fn resnet50d() -> Self {
        Self {
            stem: Stem::Deep { width: 32 },
            shortcut: ShortcutKind::AvgDown,
            ..Self::resnet50()
        }
    }
    /// ResNet-101-D (timm `resnet101d`), <https://arxiv.org/abs/1812.01187>.
    pub fn resnet101d() -> Self {
        Self {
            stem: Stem::Deep { width: 32 },
            shortcut: ShortcutKind::AvgDown,
            ..Self::resnet101()
        }
    }
    /// Pre-activation ResNet-50 (timm `resnetv2_50`), "Identity Mappings in Deep Residual
    /// Networks", <https://arxiv.org/abs/1603.05027>.
    pub fn resnetv2_50() -> Self {
        preact([3, 4, 6, 3])
    }
    /// Pre-activation ResNet-101 (timm `resnetv2_101`), <https://arxiv.org/abs/1603.05027>.
    pub fn resnetv2_101() -> Self {
        preact([3, 4, 23, 3])
    }
    /// BiT-M ResNet-50x1 (timm `resnetv2_50x1_bit`): pre-activation, GroupNorm(32) and
    /// weight-standardised convolutions, zero padding before the stem pool, "Big Transfer",
    /// <https://arxiv.org/abs/1912.11370>.
    pub fn resnetv2_50x1_bit() -> Self {
        Self {
            stem: Stem::PreAct {
                width: 64,
                fixed_padding: true,
            },
            norm: NormKind::GroupNorm { groups: 32 },
            weight_standardization: true,
            ..preact([3, 4, 6, 3])
        }
    }

    /// CIFAR ResNet-20 with the zero-padding shortcut (option A, the paper's CIFAR choice),
    /// <https://arxiv.org/abs/1512.03385>.
    pub fn resnet20() -> Self {
        cifar(3, ShortcutKind::ZeroPad)
    }
    /// CIFAR ResNet-32, option A.
    pub fn resnet32() -> Self {
        cifar(5, ShortcutKind::ZeroPad)
    }
    /// CIFAR ResNet-44, option A.
    pub fn resnet44() -> Self {
        cifar(7, ShortcutKind::ZeroPad)
    }
    /// CIFAR ResNet-56, option A.
    pub fn resnet56() -> Self {
        cifar(9, ShortcutKind::ZeroPad)
    }
    /// CIFAR ResNet-110, option A.
    pub fn resnet110() -> Self {
        cifar(18, ShortcutKind::ZeroPad)
    }
    /// CIFAR ResNet-20 with projection shortcuts where the shape changes (option B).
    pub fn resnet20_b() -> Self {
        cifar(3, ShortcutKind::Projection)
    }
    /// CIFAR ResNet-32, option B.
    pub fn resnet32_b() -> Self {
        cifar(5, ShortcutKind::Projection)
    }
    /// CIFAR ResNet-44, option B.
    pub fn resnet44_b() -> Self {
        cifar(7, ShortcutKind::Projection)
    }
    /// CIFAR ResNet-56, option B.
    pub fn resnet56_b() -> Self {
        cifar(9, ShortcutKind::Projection)
    }
    /// CIFAR ResNet-110, option B.
    pub fn resnet110_b() -> Self {
        cifar(18, ShortcutKind::Projection)
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
    ("resnet50d", ResNetConfig::resnet50d),
    ("resnet101d", ResNetConfig::resnet101d),
    ("resnetv2_50", ResNetConfig::resnetv2_50),
    ("resnetv2_101", ResNetConfig::resnetv2_101),
    ("resnetv2_50x1_bit", ResNetConfig::resnetv2_50x1_bit),
    ("resnet20", ResNetConfig::resnet20),
    ("resnet32", ResNetConfig::resnet32),
    ("resnet44", ResNetConfig::resnet44),
    ("resnet56", ResNetConfig::resnet56),
    ("resnet110", ResNetConfig::resnet110),
    ("resnet20_b", ResNetConfig::resnet20_b),
    ("resnet32_b", ResNetConfig::resnet32_b),
    ("resnet44_b", ResNetConfig::resnet44_b),
    ("resnet56_b", ResNetConfig::resnet56_b),
    ("resnet110_b", ResNetConfig::resnet110_b),
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
