//! [`ResNetConfig`]: every member of the family is a value of this one struct.

use candle_core::{bail, Result};
pub use resnet_zoo_layers::NormKind;

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
    /// Pre-activation Bottleneck (He et al. 2016, "Identity Mappings in Deep Residual Networks"; timm's
    /// `PreActBottleneck`): `x + conv3(act(norm3(conv2(act(norm2(conv1(act(norm1(x)))))))))`, nothing
    /// after the addition; the projection shortcut reads the normalised input. Expansion 4. The
    /// network ends with a norm + ReLU before pooling. Needs [`Stem::PreAct`].
    PreActBottleneck,
}

impl BlockKind {
    /// Output channels of a block divided by its `planes`.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck | BlockKind::PreActBottleneck => 4,
        }
    }

    /// Whether the block normalises its input (ResNet V2) instead of its output.
    pub fn is_preact(self) -> bool {
        self == BlockKind::PreActBottleneck
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
    /// ResNet-C/D's deep stem (timm `stem_type='deep'`): three 3x3 convolutions with `width`, `width`
    /// and `2 * width` channels, the first with stride 2, each followed by BatchNorm and ReLU, then
    /// the 3x3 stride-2 max-pool. timm names: `conv1.0`, `conv1.1` (BN), `conv1.3`, `conv1.4`,
    /// `conv1.6`, `bn1`.
    Deep { width: usize },
    /// The paper's CIFAR stem: one 3x3 stride-1 convolution, BatchNorm, ReLU; no pooling (output
    /// stride 1).
    Cifar { width: usize },
    /// ResNet V2's stem: the 7x7 stride-2 convolution alone (the first block normalises), then the
    /// 3x3 stride-2 max-pool. `fixed_padding` is BiT's variant: pad with one row and column of
    /// zeros, then pool without padding (timm `stem_type='fixed'`), instead of PyTorch's `-inf`
    /// padding.
    PreAct { width: usize, fixed_padding: bool },
}

impl Stem {
    /// Channels out of the stem.
    pub fn out_channels(&self) -> usize {
        match *self {
            Stem::Classic { width } | Stem::Cifar { width } | Stem::PreAct { width, .. } => width,
            Stem::Deep { width } => 2 * width,
        }
    }

    /// Input size divided by the size of the stem's feature map (before its pooling).
    pub fn reduction(&self) -> usize {
        match self {
            Stem::Cifar { .. } => 1,
            _ => 2,
        }
    }

    /// Stride of the stem's pooling (1 = none).
    pub fn pool_stride(&self) -> usize {
        match self {
            Stem::Cifar { .. } => 1,
            _ => 2,
        }
    }
}

/// How a block that changes shape (stride or channels) carries its input to the addition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ShortcutKind {
    /// A strided 1x1 convolution + BatchNorm (the paper's option B; torchvision's `downsample.0/.1`;
    /// a bare convolution in pre-activation blocks).
    #[default]
    Projection,
    /// ResNet-D: 2x2 average pool (ceil mode) then a stride-1 1x1 convolution + BatchNorm (timm
    /// `avg_down=True`; `downsample.1/.2`).
    AvgDown,
    /// The paper's option A: subsample, then zero-pad the new channels (half before, half after the
    /// input's, as in the widely used CIFAR implementations). No parameters; needs `out >= in`.
    ZeroPad,
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
    /// The shortcut of blocks that change shape.
    pub shortcut: ShortcutKind,
    /// The norm of pre-activation blocks and of the final norm (BatchNorm or GroupNorm). Networks
    /// with post-activation blocks use BatchNorm, folded into the convolutions.
    pub norm: NormKind,
    /// Weight standardisation of every convolution (BiT's `StdConv2d`, eps 1e-8), applied once at
    /// load time. Pre-activation networks only.
    pub weight_standardization: bool,
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
        let preact = self.block.is_preact();
        if preact != matches!(self.stem, Stem::PreAct { .. }) {
            bail!(
                "ResNetConfig: pre-activation blocks and Stem::PreAct go together (block {:?}, stem {:?})",
                self.block,
                self.stem
            );
        }
        if !preact && (self.norm != NormKind::BatchNorm || self.weight_standardization) {
            bail!(
                "ResNetConfig: GroupNorm and weight standardisation need pre-activation blocks (block {:?})",
                self.block
            );
        }
        if preact && self.shortcut != ShortcutKind::Projection {
            bail!(
                "ResNetConfig: pre-activation blocks support the projection shortcut only, got {:?}",
                self.shortcut
            );
        }
        if let Stem::Deep { width } = self.stem {
            if width == 0 {
                bail!("ResNetConfig: the deep stem needs a positive width");
            }
        }
        if self.shortcut == ShortcutKind::ZeroPad {
            let mut in_channels = self.stem.out_channels();
            for i in 0..self.planes.len() {
                if self.stage_channels(i) < in_channels {
                    bail!(
                        "ResNetConfig: the zero-padding shortcut cannot reduce channels ({in_channels} -> {} in stage {})",
                        self.stage_channels(i),
                        i + 1
                    );
                }
                in_channels = self.stage_channels(i);
            }
        }
        if preact {
            let mut channels = vec![self.stem.out_channels(), self.num_features()];
            for &p in &self.planes {
                channels.extend([self.bottleneck_width(p), p * self.block.expansion()]);
            }
            for c in channels {
                self.norm.check(c)?;
            }
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

    /// The input side the architecture is designed for: 32 for the CIFAR stem, 224 otherwise.
    pub fn default_input_size(&self) -> usize {
        match self.stem {
            Stem::Cifar { .. } => 32,
            _ => 224,
        }
    }

    /// A one-line description of the layout, e.g. `bottleneck [3, 4, 6, 3], deep stem, avg-pool
    /// shortcut`, derived from the fields (what `resnet-zoo list` prints).
    pub fn summary(&self) -> String {
        let mut parts = vec![format!(
            "{} {:?}",
            match self.block {
                BlockKind::Basic => "basic",
                BlockKind::Bottleneck => "bottleneck",
                BlockKind::PreActBottleneck => "pre-act bottleneck",
            },
            self.layers
        )];
        if self.groups > 1 {
            parts.push(format!("{}x{}d groups", self.groups, self.width_per_group));
        } else if self.block != BlockKind::Basic && self.width_per_group != 64 {
            parts.push(format!("{}x wide 3x3", self.width_per_group as f64 / 64.0));
        }
        if self.block != BlockKind::Basic && self.stride_on == StridePlacement::Conv1x1 {
            parts.push("stride on 1x1 (V1)".into());
        }
        parts.push(
            match self.stem {
                Stem::Classic { .. } => "7x7 stem",
                Stem::Deep { .. } => "deep 3x3 stem",
                Stem::Cifar { .. } => "3x3 stem, no pool",
                Stem::PreAct {
                    fixed_padding: true,
                    ..
                } => "7x7 stem, zero-padded pool",
                Stem::PreAct { .. } => "7x7 stem",
            }
            .into(),
        );
        match self.shortcut {
            ShortcutKind::Projection => {}
            ShortcutKind::AvgDown => parts.push("avg-pool shortcut".into()),
            ShortcutKind::ZeroPad => parts.push("zero-pad shortcut (A)".into()),
        }
        if let NormKind::GroupNorm { groups } = self.norm {
            parts.push(format!("GroupNorm({groups})"));
        }
        if self.weight_standardization {
            parts.push("weight std".into());
        }
        parts.join(", ")
    }

    /// The same config with another classifier size (`None` = headless).
    pub fn with_num_classes(self, num_classes: Option<usize>) -> Self {
        Self {
            num_classes,
            ..self
        }
    }
}
