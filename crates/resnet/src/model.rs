//! The generic [`ResNet`]: one struct for every depth, ResNeXt and Wide ResNet.

use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use resnet_zoo_layers::{global_avg_pool, ConvBn, ConvBnConfig, MaxPool2d, TensorSpec};

use crate::block::{stage_plans, Block};
use crate::config::{ResNetConfig, Stem};

/// Channels and output stride of one feature map, as timm's `feature_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureInfo {
    /// Module name of the feature in torchvision/timm terms: `act1` (the stem, before the max-pool),
    /// then `layer1`, `layer2`, ...
    pub name: String,
    /// Channels of the map.
    pub channels: usize,
    /// Input size divided by the map's size (2, 4, 8, 16, 32 for ImageNet ResNets).
    pub reduction: usize,
}

/// One stage (`layer1`, `layer2`, ...): a sequence of residual blocks.
#[derive(Debug, Clone)]
pub struct Stage {
    pub blocks: Vec<Block>,
}

impl Module for Stage {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.blocks.iter().try_fold(x.clone(), |x, b| b.forward(&x))
    }
}

/// A ResNet built from a [`ResNetConfig`], in inference mode (BatchNorm folded into the convolutions).
///
/// Module paths equal torchvision's `state_dict` keys (`conv1`, `bn1`, `layer1.0.conv1`, ...,
/// `fc`), so torchvision and timm safetensors load with no renaming.
#[derive(Debug, Clone)]
pub struct ResNet {
    /// `conv1` + `bn1` (folded).
    stem_conv: ConvBn,
    stem_pool: MaxPool2d,
    stages: Vec<Stage>,
    fc: Option<Linear>,
    config: ResNetConfig,
    feature_info: Vec<FeatureInfo>,
}

fn stem_layer(cfg: &ResNetConfig) -> (ConvBnConfig, MaxPool2d) {
    match cfg.stem {
        Stem::Classic { width } => (
            ConvBnConfig::new(cfg.in_channels, width, 7, 2),
            MaxPool2d::new(3, 2, 1),
        ),
    }
}

impl ResNet {
    /// Builds the model, reading every tensor through `vb` (whose dtype is the run dtype).
    ///
    /// For a checked load of a file, with one report of every missing, unexpected or mis-shaped
    /// tensor, use `resnet_zoo_hub::load_safetensors`, which checks [`ResNet::tensor_specs`] first.
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (stem_cfg, stem_pool) = stem_layer(cfg);
        let stem_conv = ConvBn::new(&stem_cfg, vb.pp("conv1"), vb.pp("bn1"))?;
        let stages = stage_plans(cfg)
            .iter()
            .enumerate()
            .map(|(i, plans)| {
                let vb = vb.pp(format!("layer{}", i + 1));
                let blocks = plans
                    .iter()
                    .enumerate()
                    .map(|(b, plan)| Block::new(plan, vb.pp(b)))
                    .collect::<Result<_>>()?;
                Ok(Stage { blocks })
            })
            .collect::<Result<_>>()?;
        let fc = match cfg.num_classes {
            Some(n) => Some(linear(cfg.num_features(), n, vb.pp("fc"))?),
            None => None,
        };
        Ok(Self {
            stem_conv,
            stem_pool,
            stages,
            fc,
            config: cfg.clone(),
            feature_info: Self::feature_info_for(cfg),
        })
    }

    /// Every tensor a checkpoint for `cfg` must hold, with its shape, in torchvision's names.
    pub fn tensor_specs(cfg: &ResNetConfig) -> Vec<TensorSpec> {
        let (stem_cfg, _) = stem_layer(cfg);
        let mut specs = stem_cfg.tensor_specs("conv1", "bn1");
        for (i, plans) in stage_plans(cfg).iter().enumerate() {
            for (b, plan) in plans.iter().enumerate() {
                specs.extend(plan.tensor_specs(&format!("layer{}.{b}", i + 1)));
            }
        }
        if let Some(n) = cfg.num_classes {
            specs.push(TensorSpec::new("fc", "weight", &[n, cfg.num_features()]));
            specs.push(TensorSpec::new("fc", "bias", &[n]));
        }
        specs
    }

    /// Trainable parameters of `cfg` (what torchvision's `meta["num_params"]` counts: conv, BN and fc
    /// weights and biases, not the BN running statistics).
    pub fn num_params(cfg: &ResNetConfig) -> usize {
        let (stem_cfg, _) = stem_layer(cfg);
        let blocks: usize = stage_plans(cfg)
            .iter()
            .flatten()
            .map(|p| p.num_params())
            .sum();
        let fc = cfg.num_classes.map_or(0, |n| n * cfg.num_features() + n);
        stem_cfg.num_params() + blocks + fc
    }

    /// Multiply-accumulates of one forward pass on a `height` x `width` image: convolutions and the
    /// classifier (torchvision's "GFLOPS" and the paper's "FLOPs" count the same thing).
    pub fn macs(cfg: &ResNetConfig, height: usize, width: usize) -> u64 {
        let (stem_cfg, pool) = stem_layer(cfg);
        let mut macs = stem_cfg.macs(height, width);
        let (h, w) = stem_cfg.output_size(height, width);
        let pooled =
            |x: usize| (x + 2 * pool.padding).saturating_sub(pool.kernel_size) / pool.stride + 1;
        let mut size = (pooled(h), pooled(w));
        for plan in stage_plans(cfg).iter().flatten() {
            let (m, out) = plan.macs(size.0, size.1);
            macs += m;
            size = out;
        }
        macs + cfg
            .num_classes
            .map_or(0, |n| (n * cfg.num_features()) as u64)
    }

    /// Channels and reduction of the stem (`act1`) and of every stage, without running the model.
    pub fn feature_info_for(cfg: &ResNetConfig) -> Vec<FeatureInfo> {
        let mut info = vec![FeatureInfo {
            name: "act1".into(),
            channels: cfg.stem.out_channels(),
            reduction: 2,
        }];
        let mut reduction = 4;
        for (i, plans) in stage_plans(cfg).iter().enumerate() {
            reduction *= plans.first().map_or(1, |p| p.stride);
            info.push(FeatureInfo {
                name: format!("layer{}", i + 1),
                channels: cfg.stage_channels(i),
                reduction,
            });
        }
        info
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// Channels and reduction of each feature map: index 0 is the stem, 1.. the stages.
    pub fn feature_info(&self) -> &[FeatureInfo] {
        &self.feature_info
    }

    /// The device the model's weights live on.
    pub fn device(&self) -> &candle_core::Device {
        self.stem_conv.weight().device()
    }

    /// The dtype of the model's weights.
    pub fn dtype(&self) -> DType {
        self.stem_conv.weight().dtype()
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        match x.dims() {
            &[_, c, h, w] if c == self.config.in_channels && h > 0 && w > 0 => {}
            dims => bail!(
                "ResNet input must be [batch, {}, height, width], got {dims:?}",
                self.config.in_channels
            ),
        }
        if x.dtype() != self.dtype() {
            bail!(
                "ResNet input has dtype {:?} but the model is {:?}",
                x.dtype(),
                self.dtype()
            );
        }
        Ok(())
    }

    /// Feature maps at the given indices of [`ResNet::feature_info`] (0 = stem at stride 2,
    /// 1..=4 = `layer1`..`layer4`), in increasing order of index; stops after the deepest one asked.
    pub fn forward_intermediates(&self, x: &Tensor, indices: &[usize]) -> Result<Vec<Tensor>> {
        self.check_input(x)?;
        let n = self.feature_info.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            bail!("feature index {bad} out of range: this model has features 0..{n}");
        }
        let last = indices.iter().copied().max().unwrap_or(0);
        let mut out = Vec::with_capacity(indices.len());
        let mut x = self.stem_conv.forward(x)?.relu()?;
        if indices.contains(&0) {
            out.push(x.clone());
        }
        x = self.stem_pool.forward(&x)?;
        for (i, stage) in self.stages.iter().enumerate().take(last) {
            x = stage.forward(&x)?;
            if indices.contains(&(i + 1)) {
                out.push(x.clone());
            }
        }
        Ok(out)
    }

    /// The last stage's feature map, `[N, num_features, H/32, W/32]`.
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let x = self.stem_conv.forward(x)?.relu()?;
        let x = self.stem_pool.forward(&x)?;
        self.stages.iter().try_fold(x, |x, s| s.forward(&x))
    }

    /// Global average pool, then the classifier unless `pre_logits` is set or the model is headless.
    pub fn forward_head(&self, features: &Tensor, pre_logits: bool) -> Result<Tensor> {
        let pooled = global_avg_pool(features)?;
        match (&self.fc, pre_logits) {
            (Some(fc), false) => fc.forward(&pooled),
            _ => Ok(pooled),
        }
    }
}

impl Module for ResNet {
    /// Logits `[N, num_classes]`, or the pooled embedding `[N, num_features]` for a headless model.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_head(&self.forward_features(x)?, false)
    }
}

fn linear(in_features: usize, out_features: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_with_hints((out_features, in_features), "weight", Init::Const(0.))?;
    let bias = vb.get_with_hints(out_features, "bias", Init::Const(0.))?;
    Ok(Linear::new(weight, Some(bias)))
}
