//! [`ResNetConfig`]: every member of the family is a value of this one struct.

use candle_core::{bail, Result};

/// The residual block a ResNet is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34). Expansion 1.
    Basic,
    /// 1x1 reduce, 3x3, 1x1 expand (ResNet-50 and deeper, ResNeXt, Wide ResNet). Expansion 4.
    ///
    /// The stride of a downsampling block sits on the 3x3 convolution, as in torchvision ("ResNet
    /// V1.5"); the original paper put it on the first 1x1.
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block divided by its `planes`.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Which convolution of a downsampling Bottleneck carries the stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StridePlacement {
    /// On the 3x3 (`conv2`): torchvision's "ResNet V1.5", used by torchvision and timm weights.
    #[default]
    Conv3x3,
    /// On the first 1x1 (`conv1`): the paper's original V1 (and Caffe's), which skips three quarters
    /// of the positions before the 3x3 sees them.
    Conv1x1,
}

/// The layers before the first stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stem {
    /// A 7x7 stride-2 convolution with `width` output channels, BatchNorm, ReLU and a 3x3 stride-2
    /// max-pool: torchvision's `conv1`, `bn1`, `relu`, `maxpool` (output stride 4).
    Classic { width: usize },
}

impl Stem {
    /// Channels out of the stem.
    pub fn out_channels(&self) -> usize {
        match *self {
            Stem::Classic { width } => width,
        }
    }
}

/// The shape of a ResNet. Fields are public so that new variants need no new code; the presets in
/// [`crate::presets`] are named after torchvision's builders.
///
/// Channel vocabulary: `planes` is the pre-expansion width of a stage (64, 128, 256, 512 for
/// ImageNet ResNets); a stage outputs `planes * block.expansion()` channels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResNetConfig {
    /// Basic or Bottleneck.
    pub block: BlockKind,
    /// Number of blocks per stage, e.g. `[3, 4, 6, 3]` for ResNet-50.
    pub layers: Vec<usize>,
    /// `planes` per stage, e.g. `[64, 128, 256, 512]`. Same length as `layers`.
    pub planes: Vec<usize>,
    /// Groups of the 3x3 convolution in a Bottleneck (ResNeXt cardinality; 1 = plain ResNet).
    pub groups: usize,
    /// Width of each group in a Bottleneck at `planes = 64`: 64 for ResNet, 128 for Wide ResNet,
    /// 4 or 8 for ResNeXt. The 3x3 convolution has `planes * width_per_group / 64 * groups` channels.
    pub width_per_group: usize,
    /// Where a downsampling Bottleneck strides (V1.5 vs V1). Basic blocks ignore it.
    pub stride_on: StridePlacement,
    /// The layers before the first stage.
    pub stem: Stem,
    /// Channels of the input image.
    pub in_channels: usize,
    /// Size of the classifier (`fc`), or `None` for a headless backbone.
    pub num_classes: Option<usize>,
}

impl ResNetConfig {
    /// Checks the config for values no model can be built from; called by `ResNet::new`.
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() || self.layers.len() != self.planes.len() {
            bail!(
                "ResNetConfig: layers {:?} and planes {:?} must be non-empty and of equal length",
                self.layers,
                self.planes
            );
        }
        if let Some(i) = self.layers.iter().position(|&n| n == 0) {
            bail!(
                "ResNetConfig: stage {} has 0 blocks (layers {:?})",
                i + 1,
                self.layers
            );
        }
        if self.planes.contains(&0) || self.stem.out_channels() == 0 || self.in_channels == 0 {
            bail!("ResNetConfig: channel counts must be positive ({self:?})");
        }
        if self.groups == 0 || self.width_per_group == 0 {
            bail!(
                "ResNetConfig: groups ({}) and width_per_group ({}) must be positive",
                self.groups,
                self.width_per_group
            );
        }
        if self.block == BlockKind::Basic && (self.groups != 1 || self.width_per_group != 64) {
            bail!(
                "ResNetConfig: BasicBlock only supports groups=1 and width_per_group=64, got groups={} width_per_group={}",
                self.groups,
                self.width_per_group
            );
        }
        if self.num_classes == Some(0) {
            bail!("ResNetConfig: num_classes must be positive, or None for a headless backbone");
        }
        for &p in &self.planes {
            if self.bottleneck_width(p) == 0 {
                bail!(
                    "ResNetConfig: planes {p} with width_per_group {} gives a 0-wide bottleneck",
                    self.width_per_group
                );
            }
        }
        Ok(())
    }

    /// Channels of the Bottleneck's 3x3 convolution for a stage of `planes`
    /// (torchvision: `int(planes * (base_width / 64.0)) * groups`).
    pub fn bottleneck_width(&self, planes: usize) -> usize {
        planes * self.width_per_group / 64 * self.groups
    }

    /// Channels out of stage `i` (0-based).
    pub fn stage_channels(&self, i: usize) -> usize {
        self.planes[i] * self.block.expansion()
    }

    /// Channels of the final feature map (the pooled embedding size: 2048 for ResNet-50).
    pub fn num_features(&self) -> usize {
        self.stage_channels(self.planes.len() - 1)
    }

    /// The same config with another classifier size (`None` = headless).
    pub fn with_num_classes(self, num_classes: Option<usize>) -> Self {
        Self {
            num_classes,
            ..self
        }
    }
}
