//! Residual blocks. Module paths equal the reference `state_dict` keys (torchvision's `conv1`,
//! `bn1`, ..., `downsample.0` for the projection conv and `downsample.1` for its BatchNorm; timm's
//! `downsample.1/.2` for ResNet-D), so torchvision and timm checkpoints load without renaming.
//! Pre-activation blocks use timm's `norm1..3`, `conv1..3` and `downsample.0` for its
//! `downsample.conv` (see the hub crate's key map).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use resnet_zoo_layers::nchwc::{Algorithm, InputLayout, Packing};
use resnet_zoo_layers::{ConvBn, ConvBnConfig, NormAct, NormKind, Shortcut, TensorSpec};

use crate::config::{BlockKind, ResNetConfig, ShortcutKind, StridePlacement};

/// Weight-standardisation epsilon of BiT's `StdConv2d`.
pub(crate) const STD_CONV_EPS: f64 = 1e-8;

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
    /// The shortcut when the block changes shape, `None` for the identity.
    pub shortcut: Option<ShortcutKind>,
    pub norm: NormKind,
    pub weight_standardization: bool,
}

/// The plan of every block of every stage. The stride rule and the shortcut rule live here, once:
/// stage 1 keeps the resolution, every later stage halves it in its first block; a block has a
/// shortcut layer when `stride != 1 || in_channels != planes * expansion` (torchvision's full
/// condition), and a pre-activation block also whenever it is the first of its stage (timm).
pub(crate) fn stage_plans(cfg: &ResNetConfig) -> Vec<Vec<BlockPlan>> {
    let mut in_channels = cfg.stem.out_channels();
    let mut stages = Vec::with_capacity(cfg.layers.len());
    for (i, (&depth, &planes)) in cfg.layers.iter().zip(&cfg.planes).enumerate() {
        let out_channels = planes * cfg.block.expansion();
        let (width, groups) = match cfg.block {
            BlockKind::Basic => (planes, 1),
            BlockKind::Bottleneck | BlockKind::PreActBottleneck => {
                (cfg.bottleneck_width(planes), cfg.groups)
            }
        };
        let blocks = (0..depth)
            .map(|b| {
                let stride = if i > 0 && b == 0 { 2 } else { 1 };
                let reshapes = stride != 1 || in_channels != out_channels;
                let plan = BlockPlan {
                    kind: cfg.block,
                    in_channels,
                    planes,
                    width,
                    groups,
                    out_channels,
                    stride,
                    stride_on: cfg.stride_on,
                    shortcut: (reshapes || (cfg.block.is_preact() && b == 0))
                        .then_some(cfg.shortcut),
                    norm: cfg.norm,
                    weight_standardization: cfg.weight_standardization,
                };
                in_channels = out_channels;
                plan
            })
            .collect();
        stages.push(blocks);
    }
    stages
}

/// One convolution of a block: its path, the path of the BatchNorm folded into it (if any), and
/// its shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvPlan {
    pub conv: &'static str,
    pub bn: Option<&'static str>,
    pub cfg: ConvBnConfig,
}

impl ConvPlan {
    pub fn new(conv: &'static str, bn: Option<&'static str>, cfg: ConvBnConfig) -> Self {
        Self { conv, bn, cfg }
    }

    pub fn tensor_specs(&self, prefix: &str) -> Vec<TensorSpec> {
        let conv = join(prefix, self.conv);
        match self.bn {
            Some(bn) => self.cfg.tensor_specs(&conv, &join(prefix, bn)),
            None => self.cfg.conv_specs(&conv),
        }
    }

    pub fn num_params(&self) -> usize {
        match self.bn {
            Some(_) => self.cfg.num_params(),
            None => self.cfg.weight_numel(),
        }
    }

    /// Builds the layer: folded with its BatchNorm, or alone (weight-standardised if asked), and
    /// packed for the NCHW8c kernels reading `pack` if given.
    pub fn build(
        &self,
        vb: &VarBuilder,
        standardize: bool,
        pack: Option<Packing>,
    ) -> Result<ConvBn> {
        match self.bn {
            Some(bn) => ConvBn::new_packed(&self.cfg, vb.pp(self.conv), vb.pp(bn), pack),
            None => ConvBn::conv_only_packed(
                &self.cfg,
                vb.pp(self.conv),
                standardize.then_some(STD_CONV_EPS),
                pack,
            ),
        }
    }
}

pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl BlockPlan {
    /// `(stride of the first 1x1, stride of the 3x3)` of a Bottleneck.
    fn bottleneck_strides(&self) -> (usize, usize) {
        // V1.5 strides the 3x3 (conv2); the paper's V1 strides the first 1x1 (conv1).
        match self.stride_on {
            StridePlacement::Conv3x3 => (1, self.stride),
            StridePlacement::Conv1x1 => (self.stride, 1),
        }
    }

    /// The block's convolutions, by role.
    ///
    /// In a pre-activation block with BatchNorm, `norm2` and `norm3` directly follow `conv1` and
    /// `conv2`, so they are folded into them; `norm1` reads the residual stream and stays a layer
    /// ([`BlockPlan::norms`]). With GroupNorm nothing is folded.
    pub fn layers(&self) -> BlockLayers {
        let folds = self.norm == NormKind::BatchNorm;
        let main = match self.kind {
            BlockKind::Basic => MainConvs::Basic([
                ConvPlan::new(
                    "conv1",
                    Some("bn1"),
                    ConvBnConfig::new(self.in_channels, self.planes, 3, self.stride),
                ),
                ConvPlan::new(
                    "conv2",
                    Some("bn2"),
                    ConvBnConfig::new(self.planes, self.planes, 3, 1),
                ),
            ]),
            BlockKind::Bottleneck | BlockKind::PreActBottleneck => {
                let (s1, s3) = self.bottleneck_strides();
                let preact = self.kind.is_preact();
                let bn = |post: &'static str, pre: &'static str| match preact {
                    false => Some(post),
                    true => folds.then_some(pre),
                };
                MainConvs::Bottleneck([
                    ConvPlan::new(
                        "conv1",
                        bn("bn1", "norm2"),
                        ConvBnConfig::new(self.in_channels, self.width, 1, s1),
                    ),
                    ConvPlan::new(
                        "conv2",
                        bn("bn2", "norm3"),
                        ConvBnConfig::new(self.width, self.width, 3, s3).with_groups(self.groups),
                    ),
                    ConvPlan::new(
                        "conv3",
                        (!preact).then_some("bn3"),
                        ConvBnConfig::new(self.width, self.out_channels, 1, 1),
                    ),
                ])
            }
        };
        let projection = |bn| {
            let cfg = ConvBnConfig::new(self.in_channels, self.out_channels, 1, self.stride);
            ConvPlan::new("downsample.0", bn, cfg)
        };
        let shortcut = match self.shortcut {
            None => ShortcutPlan::Identity,
            Some(ShortcutKind::Projection) if self.kind.is_preact() => {
                ShortcutPlan::Projection(projection(None))
            }
            Some(ShortcutKind::Projection) => {
                ShortcutPlan::Projection(projection(Some("downsample.1")))
            }
            // `downsample.0` is the (parameter-free) pool; the convolution runs at stride 1.
            Some(ShortcutKind::AvgDown) => ShortcutPlan::AvgDown {
                stride: self.stride,
                proj: ConvPlan::new(
                    "downsample.1",
                    Some("downsample.2"),
                    ConvBnConfig::new(self.in_channels, self.out_channels, 1, 1),
                ),
            },
            Some(ShortcutKind::ZeroPad) => {
                let extra = self.out_channels - self.in_channels;
                ShortcutPlan::ZeroPad {
                    stride: self.stride,
                    before: extra / 2,
                    after: extra - extra / 2,
                }
            }
        };
        BlockLayers { main, shortcut }
    }

    /// The norms that are layers of their own (pre-activation blocks), as `(path, channels)`.
    pub fn norms(&self) -> Vec<(&'static str, usize)> {
        match (self.kind, self.norm) {
            (BlockKind::PreActBottleneck, NormKind::BatchNorm) => vec![("norm1", self.in_channels)],
            (BlockKind::PreActBottleneck, NormKind::GroupNorm { .. }) => vec![
                ("norm1", self.in_channels),
                ("norm2", self.width),
                ("norm3", self.width),
            ],
            _ => vec![],
        }
    }

    pub fn tensor_specs(&self, prefix: &str) -> Vec<TensorSpec> {
        let mut specs: Vec<TensorSpec> = self
            .norms()
            .iter()
            .flat_map(|&(path, c)| self.norm.tensor_specs(&join(prefix, path), c))
            .collect();
        specs.extend(
            self.layers()
                .all()
                .iter()
                .flat_map(|c| c.tensor_specs(prefix)),
        );
        specs
    }

    /// Multiply-accumulates of the block on an input of `(height, width)`, and its output size.
    pub fn macs(&self, height: usize, width: usize) -> (u64, (usize, usize)) {
        let layers = self.layers();
        let mut size = (height, width);
        let mut macs = 0;
        for conv in layers.main.convs() {
            macs += conv.cfg.macs(size.0, size.1);
            size = conv.cfg.output_size(size.0, size.1);
        }
        macs += match &layers.shortcut {
            ShortcutPlan::Projection(proj) => proj.cfg.macs(height, width),
            // The ResNet-D shortcut convolves the pooled input (ceil mode) at stride 1.
            ShortcutPlan::AvgDown { stride, proj } => proj
                .cfg
                .macs(height.div_ceil(*stride), width.div_ceil(*stride)),
            ShortcutPlan::Identity | ShortcutPlan::ZeroPad { .. } => 0,
        };
        (macs, size)
    }

    pub fn num_params(&self) -> usize {
        let norms: usize = self.norms().iter().map(|(_, c)| 2 * c).sum();
        norms
            + self
                .layers()
                .all()
                .iter()
                .map(ConvPlan::num_params)
                .sum::<usize>()
    }
}

/// The convolutions of a block's main path, by kind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MainConvs {
    /// `conv1`, `conv2` (3x3 each).
    Basic([ConvPlan; 2]),
    /// `conv1` (1x1), `conv2` (3x3, grouped for ResNeXt), `conv3` (1x1): post- and pre-activation.
    Bottleneck([ConvPlan; 3]),
}

impl MainConvs {
    /// In forward order.
    pub fn convs(&self) -> &[ConvPlan] {
        match self {
            MainConvs::Basic(c) => c,
            MainConvs::Bottleneck(c) => c,
        }
    }
}

/// A block's shortcut, with its convolution if it has one.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ShortcutPlan {
    Identity,
    Projection(ConvPlan),
    AvgDown {
        stride: usize,
        proj: ConvPlan,
    },
    ZeroPad {
        stride: usize,
        before: usize,
        after: usize,
    },
}

/// Every layer of one block, by role ([`BlockPlan::layers`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockLayers {
    pub main: MainConvs,
    pub shortcut: ShortcutPlan,
}

impl BlockLayers {
    /// Every convolution, the shortcut's last.
    pub fn all(&self) -> Vec<ConvPlan> {
        let mut all = self.main.convs().to_vec();
        match self.shortcut {
            ShortcutPlan::Projection(p) | ShortcutPlan::AvgDown { proj: p, .. } => all.push(p),
            ShortcutPlan::Identity | ShortcutPlan::ZeroPad { .. } => {}
        }
        all
    }
}

/// Two 3x3 conv+BN layers; `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    pub conv1: ConvBn,
    pub conv2: ConvBn,
    pub shortcut: Shortcut,
}

/// 1x1 reduce, 3x3 (grouped for ResNeXt, strided in a downsampling block: V1.5), 1x1 expand.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    pub conv1: ConvBn,
    pub conv2: ConvBn,
    pub conv3: ConvBn,
    pub shortcut: Shortcut,
}

/// Pre-activation Bottleneck (ResNet V2, BiT). With BatchNorm, `norm2`/`norm3` are folded into
/// `conv1`/`conv2` and are `None` here; with GroupNorm they are layers.
#[derive(Debug, Clone)]
pub struct PreActBottleneck {
    pub norm1: NormAct,
    pub conv1: ConvBn,
    pub norm2: Option<NormAct>,
    pub conv2: ConvBn,
    pub norm3: Option<NormAct>,
    pub conv3: ConvBn,
    /// Reads the normalised input (`norm1`'s output); the identity reads the raw input.
    pub shortcut: Shortcut,
}

/// One residual block of any kind.
#[derive(Debug, Clone)]
pub enum Block {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
    PreActBottleneck(PreActBottleneck),
}

impl Block {
    /// Builds the block, its convolutions packed for the NCHW8c kernels with `pack`'s algorithm
    /// if it is given.
    pub(crate) fn new(plan: &BlockPlan, vb: VarBuilder, pack: Option<Algorithm>) -> Result<Self> {
        let packing = pack.map(|algorithm| Packing {
            layout: InputLayout::Blocked,
            algorithm,
        });
        let build = |conv: &ConvPlan| conv.build(&vb, plan.weight_standardization, packing);
        let layers = plan.layers();
        let shortcut = match layers.shortcut {
            ShortcutPlan::Identity => Shortcut::Identity,
            ShortcutPlan::Projection(proj) => Shortcut::Projection(build(&proj)?),
            ShortcutPlan::AvgDown { stride, proj } => Shortcut::AvgDown {
                stride,
                proj: build(&proj)?,
            },
            ShortcutPlan::ZeroPad {
                stride,
                before,
                after,
            } => Shortcut::ZeroPad {
                stride,
                before,
                after,
            },
        };
        Ok(match layers.main {
            MainConvs::Basic([c1, c2]) => Block::Basic(BasicBlock {
                conv1: build(&c1)?,
                conv2: build(&c2)?,
                shortcut,
            }),
            MainConvs::Bottleneck([c1, c2, c3]) if plan.kind.is_preact() => {
                let norm = |path: &str, c: usize| NormAct::new(plan.norm, c, vb.pp(path));
                // With BatchNorm, norm2 and norm3 are folded into conv1 and conv2.
                let unfolded = |path: &str| match plan.norm {
                    NormKind::BatchNorm => Ok(None),
                    NormKind::GroupNorm { .. } => norm(path, plan.width).map(Some),
                };
                Block::PreActBottleneck(PreActBottleneck {
                    norm1: norm("norm1", plan.in_channels)?,
                    conv1: build(&c1)?,
                    norm2: unfolded("norm2")?,
                    conv2: build(&c2)?,
                    norm3: unfolded("norm3")?,
                    conv3: build(&c3)?,
                    shortcut,
                })
            }
            MainConvs::Bottleneck([c1, c2, c3]) => Block::Bottleneck(Bottleneck {
                conv1: build(&c1)?,
                conv2: build(&c2)?,
                conv3: build(&c3)?,
                shortcut,
            }),
        })
    }
}

impl Module for Block {
    /// Each convolution's bias, the residual add and the ReLU are fused into the convolution
    /// ([`ConvBn::forward_with`]).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Block::Basic(b) => {
                let y = b.conv1.forward_with(x, None, true)?;
                let shortcut = b.shortcut.forward(x)?;
                b.conv2.forward_with(&y, Some(&shortcut), true)
            }
            Block::Bottleneck(b) => {
                let y = b.conv1.forward_with(x, None, true)?;
                let y = b.conv2.forward_with(&y, None, true)?;
                let shortcut = b.shortcut.forward(x)?;
                b.conv3.forward_with(&y, Some(&shortcut), true)
            }
            Block::PreActBottleneck(b) => {
                let pre = b.norm1.forward(x)?;
                let shortcut = match &b.shortcut {
                    Shortcut::Identity => x.clone(),
                    s => s.forward(&pre)?,
                };
                // A folded norm leaves only its ReLU, which the convolution applies; a GroupNorm
                // runs as its own layer (norm, then ReLU).
                let conv_act = |conv: &ConvBn, norm: &Option<NormAct>, x: &Tensor| match norm {
                    None => conv.forward_with(x, None, true),
                    Some(norm) => norm.forward(&conv.forward(x)?),
                };
                let y = conv_act(&b.conv1, &b.norm2, &pre)?;
                let y = conv_act(&b.conv2, &b.norm3, &y)?;
                b.conv3.forward_with(&y, Some(&shortcut), false)
            }
        }
    }
}
