//! Residual blocks. Module paths equal torchvision's `state_dict` keys (`conv1`, `bn1`, ...,
//! `downsample.0` for the projection conv and `downsample.1` for its BatchNorm), so torchvision and
//! timm checkpoints load without renaming.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use resnet_zoo_layers::{ConvBn, ConvBnConfig, TensorSpec};

use crate::config::{BlockKind, ResNetConfig, StridePlacement};

/// Everything needed to build one block, computed once by [`stage_plans`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockPlan {
    pub kind: BlockKind,
    pub in_channels: usize,
    pub planes: usize,
    /// Channels of the Bottleneck's 3x3 (`planes` for a Basic block).
    pub width: usize,
    pub groups: usize,
    pub out_channels: usize,
    pub stride: usize,
    pub stride_on: StridePlacement,
    /// Whether the shortcut is a 1x1 projection (conv + BN) instead of the identity.
    pub downsample: bool,
}

/// The plan of every block of every stage. The stride rule and the shortcut rule live here, once:
/// stage 1 keeps the resolution, every later stage halves it in its first block; a block projects its
/// shortcut when `stride != 1 || in_channels != planes * expansion` (torchvision's full condition).
pub(crate) fn stage_plans(cfg: &ResNetConfig) -> Vec<Vec<BlockPlan>> {
    let mut in_channels = cfg.stem.out_channels();
    let mut stages = Vec::with_capacity(cfg.layers.len());
    for (i, (&depth, &planes)) in cfg.layers.iter().zip(&cfg.planes).enumerate() {
        let out_channels = planes * cfg.block.expansion();
        let (width, groups) = match cfg.block {
            BlockKind::Basic => (planes, 1),
            BlockKind::Bottleneck => (cfg.bottleneck_width(planes), cfg.groups),
        };
        let blocks = (0..depth)
            .map(|b| {
                let stride = if i > 0 && b == 0 { 2 } else { 1 };
                let plan = BlockPlan {
                    kind: cfg.block,
                    in_channels,
                    planes,
                    width,
                    groups,
                    out_channels,
                    stride,
                    stride_on: cfg.stride_on,
                    downsample: stride != 1 || in_channels != out_channels,
                };
                in_channels = out_channels;
                plan
            })
            .collect();
        stages.push(blocks);
    }
    stages
}

impl BlockPlan {
    /// The block's conv+BN layers as `(conv path, bn path, shape)`, in forward order, the
    /// projection shortcut last.
    fn layers(&self) -> Vec<(&'static str, &'static str, ConvBnConfig)> {
        let mut layers = match self.kind {
            BlockKind::Basic => vec![
                (
                    "conv1",
                    "bn1",
                    ConvBnConfig::new(self.in_channels, self.planes, 3, self.stride),
                ),
                (
                    "conv2",
                    "bn2",
                    ConvBnConfig::new(self.planes, self.planes, 3, 1),
                ),
            ],
            BlockKind::Bottleneck => {
                // V1.5 strides the 3x3 (conv2); the paper's V1 strides the first 1x1 (conv1).
                let (stride_1x1, stride_3x3) = match self.stride_on {
                    StridePlacement::Conv3x3 => (1, self.stride),
                    StridePlacement::Conv1x1 => (self.stride, 1),
                };
                vec![
                    (
                        "conv1",
                        "bn1",
                        ConvBnConfig::new(self.in_channels, self.width, 1, stride_1x1),
                    ),
                    (
                        "conv2",
                        "bn2",
                        ConvBnConfig::new(self.width, self.width, 3, stride_3x3)
                            .with_groups(self.groups),
                    ),
                    (
                        "conv3",
                        "bn3",
                        ConvBnConfig::new(self.width, self.out_channels, 1, 1),
                    ),
                ]
            }
        };
        if self.downsample {
            let proj = ConvBnConfig::new(self.in_channels, self.out_channels, 1, self.stride);
            layers.push(("downsample.0", "downsample.1", proj));
        }
        layers
    }

    pub fn tensor_specs(&self, prefix: &str) -> Vec<TensorSpec> {
        self.layers()
            .iter()
            .flat_map(|(conv, bn, cfg)| {
                cfg.tensor_specs(&format!("{prefix}.{conv}"), &format!("{prefix}.{bn}"))
            })
            .collect()
    }

    /// Multiply-accumulates of the block on an input of `(height, width)`, and its output size.
    pub fn macs(&self, height: usize, width: usize) -> (u64, (usize, usize)) {
        let mut size = (height, width);
        let mut macs = 0;
        for (conv, _, cfg) in self.layers() {
            if conv.starts_with("downsample") {
                macs += cfg.macs(height, width);
            } else {
                macs += cfg.macs(size.0, size.1);
                size = cfg.output_size(size.0, size.1);
            }
        }
        (macs, size)
    }

    pub fn num_params(&self) -> usize {
        self.layers().iter().map(|(_, _, c)| c.num_params()).sum()
    }
}

/// Two 3x3 conv+BN layers; `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    pub conv1: ConvBn,
    pub conv2: ConvBn,
    pub downsample: Option<ConvBn>,
}

/// 1x1 reduce, 3x3 (grouped for ResNeXt, strided in a downsampling block: V1.5), 1x1 expand.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    pub conv1: ConvBn,
    pub conv2: ConvBn,
    pub conv3: ConvBn,
    pub downsample: Option<ConvBn>,
}

/// One residual block of any kind.
#[derive(Debug, Clone)]
pub enum Block {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

impl Block {
    pub(crate) fn new(plan: &BlockPlan, vb: VarBuilder) -> Result<Self> {
        let mut convs = plan
            .layers()
            .into_iter()
            .map(|(conv, bn, cfg)| ConvBn::new(&cfg, vb.pp(conv), vb.pp(bn)))
            .collect::<Result<Vec<_>>>()?
            .into_iter();
        let downsample = if plan.downsample {
            convs.next_back()
        } else {
            None
        };
        let mut next = || {
            convs
                .next()
                .ok_or_else(|| candle_core::Error::Msg("block layout is inconsistent".into()))
        };
        Ok(match plan.kind {
            BlockKind::Basic => Block::Basic(BasicBlock {
                conv1: next()?,
                conv2: next()?,
                downsample,
            }),
            BlockKind::Bottleneck => Block::Bottleneck(Bottleneck {
                conv1: next()?,
                conv2: next()?,
                conv3: next()?,
                downsample,
            }),
        })
    }
}

fn shortcut(downsample: &Option<ConvBn>, x: &Tensor) -> Result<Tensor> {
    match downsample {
        Some(proj) => proj.forward(x),
        None => Ok(x.clone()),
    }
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (out, downsample) = match self {
            Block::Basic(b) => {
                let y = b.conv1.forward(x)?.relu()?;
                (b.conv2.forward(&y)?, &b.downsample)
            }
            Block::Bottleneck(b) => {
                let y = b.conv1.forward(x)?.relu()?;
                let y = b.conv2.forward(&y)?.relu()?;
                (b.conv3.forward(&y)?, &b.downsample)
            }
        };
        (out + shortcut(downsample, x)?)?.relu()
    }
}
