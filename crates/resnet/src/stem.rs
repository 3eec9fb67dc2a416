//! The stem: the convolutions before the first stage (torchvision's 7x7, ResNet-D's deep 3x3
//! stack, the CIFAR nets' 3x3, the pre-activation stem without a norm), then the max pool.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use resnet_zoo_layers::nchwc::{Algorithm, InputLayout, Packing};
use resnet_zoo_layers::{ConvBn, ConvBnConfig, MaxPool2d};

use crate::block::ConvPlan;
use crate::config::{ResNetConfig, Stem};

/// The layers of a stem: convolutions (ReLU after each unless pre-activation), then an optional
/// zero padding and max-pool.
#[derive(Debug, Clone)]
pub(crate) struct StemLayers {
    pub(crate) convs: Vec<ConvBn>,
    pub(crate) relu: bool,
    pub(crate) zero_pad: usize,
    pub(crate) pool: Option<MaxPool2d>,
}

/// What a stem is made of, for building, specs and counting.
pub(crate) struct StemPlan {
    pub(crate) convs: Vec<ConvPlan>,
    pub(crate) relu: bool,
    pub(crate) zero_pad: usize,
    pub(crate) pool: Option<MaxPool2d>,
}

fn conv(path: &'static str, bn: Option<&'static str>, cfg: ConvBnConfig) -> ConvPlan {
    ConvPlan::new(path, bn, cfg)
}

pub(crate) fn stem_plan(cfg: &ResNetConfig) -> StemPlan {
    let c = cfg.in_channels;
    let pool = Some(MaxPool2d::new(3, 2, 1));
    match cfg.stem {
        Stem::Classic { width } => StemPlan {
            convs: vec![conv(
                "conv1",
                Some("bn1"),
                ConvBnConfig::new(c, width, 7, 2),
            )],
            relu: true,
            zero_pad: 0,
            pool,
        },
        Stem::Deep { width } => StemPlan {
            convs: vec![
                conv(
                    "conv1.0",
                    Some("conv1.1"),
                    ConvBnConfig::new(c, width, 3, 2),
                ),
                conv(
                    "conv1.3",
                    Some("conv1.4"),
                    ConvBnConfig::new(width, width, 3, 1),
                ),
                conv(
                    "conv1.6",
                    Some("bn1"),
                    ConvBnConfig::new(width, 2 * width, 3, 1),
                ),
            ],
            relu: true,
            zero_pad: 0,
            pool,
        },
        Stem::Cifar { width } => StemPlan {
            convs: vec![conv(
                "conv1",
                Some("bn1"),
                ConvBnConfig::new(c, width, 3, 1),
            )],
            relu: true,
            zero_pad: 0,
            pool: None,
        },
        Stem::PreAct {
            width,
            fixed_padding,
        } => StemPlan {
            convs: vec![conv("conv1", None, ConvBnConfig::new(c, width, 7, 2))],
            relu: false,
            zero_pad: usize::from(fixed_padding),
            pool: Some(MaxPool2d::new(3, 2, usize::from(!fixed_padding))),
        },
    }
}

impl StemLayers {
    /// The stem's layers, packed for the NCHW8c kernels if `pack` (the first convolution reads the
    /// NCHW input, later ones NCHW8c).
    pub(crate) fn new(cfg: &ResNetConfig, vb: &VarBuilder, pack: bool) -> Result<Self> {
        let plan = stem_plan(cfg);
        Ok(Self {
            convs: plan
                .convs
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let layout = match i {
                        0 => InputLayout::Nchw,
                        _ => InputLayout::Blocked,
                    };
                    let packing = Packing {
                        layout,
                        algorithm: Algorithm::Auto,
                    };
                    c.build(vb, cfg.weight_standardization, pack.then_some(packing))
                })
                .collect::<Result<_>>()?,
            relu: plan.relu,
            zero_pad: plan.zero_pad,
            pool: plan.pool,
        })
    }

    /// The stem's feature map (before pooling).
    pub(crate) fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.convs
            .iter()
            .try_fold(x.clone(), |x, conv| conv.forward_with(&x, None, self.relu))
    }

    pub(crate) fn pool(&self, x: Tensor) -> Result<Tensor> {
        let x = if self.zero_pad > 0 {
            x.pad_with_zeros(2, self.zero_pad, self.zero_pad)?
                .pad_with_zeros(3, self.zero_pad, self.zero_pad)?
        } else {
            x
        };
        match &self.pool {
            Some(pool) => pool.forward(&x),
            None => Ok(x),
        }
    }
}
