//! The generic [`ResNet`]: one struct for every member of the family (V1/V1.5, ResNeXt, Wide,
//! ResNet-D, pre-activation V2 and BiT, the paper's CIFAR nets).

use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use resnet_zoo_layers::nchwc::{self, Algorithm, Isa};
use resnet_zoo_layers::{global_avg_pool, needs_f32_compute, ConvBn, NormAct, TensorSpec};

use crate::block::{stage_plans, Block, ConvPlan};
use crate::blocked::Blocked;
use crate::config::ResNetConfig;
use crate::stem::{stem_plan, StemLayers};

/// Channels and output stride of one feature map, as timm's `feature_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureInfo {
    /// Module name of the feature in torchvision/timm terms: `act1` (the stem, before the max-pool;
    /// `conv1` for pre-activation stems, which have no norm), then `layer1`, `layer2`, ...
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
/// `fc`), so torchvision and timm safetensors load with no renaming; timm's ResNet V2 names
/// (`stem.conv`, `stages.0.blocks.0`, `head.fc`) are mapped by the hub crate.
#[derive(Debug, Clone)]
pub struct ResNet {
    pub(crate) stem: StemLayers,
    pub(crate) stages: Vec<Stage>,
    /// Pre-activation networks: the norm + ReLU after the last stage.
    pub(crate) norm: Option<NormAct>,
    fc: Option<Linear>,
    config: ResNetConfig,
    feature_info: Vec<FeatureInfo>,
    /// The NCHW8c CPU path, when the model's convolutions are packed for it.
    pub(crate) blocked: Option<Blocked>,
}

impl ResNet {
    /// Builds the model, reading every tensor through `vb` (whose dtype is the run dtype).
    ///
    /// For a checked load of a file, with one report of every missing, unexpected or mis-shaped
    /// tensor, use `resnet_zoo_hub::load_safetensors`, which checks [`ResNet::tensor_specs`] first.
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        // The NCHW8c kernels, if they cover this model here: then every convolution is packed as
        // it is loaded.
        let plans = stage_plans(cfg);
        let isa = Blocked::choose(cfg, &plans, vb.device(), vb.dtype())?;
        let pack = isa.is_some();
        let stem = StemLayers::new(cfg, &vb, pack)?;
        let stages = plans
            .iter()
            .enumerate()
            .map(|(i, plans)| {
                // The last stage's maps are the smallest (7x7 at 224x224): there Winograd gains
                // least and its weights (16/9 of the direct ones) cost most, so it runs direct.
                let algorithm = if i + 1 == cfg.layers.len() {
                    Algorithm::Direct
                } else {
                    Algorithm::Auto
                };
                let vb = vb.pp(format!("layer{}", i + 1));
                let blocks = plans
                    .iter()
                    .enumerate()
                    .map(|(b, plan)| Block::new(plan, vb.pp(b), pack.then_some(algorithm)))
                    .collect::<Result<_>>()?;
                Ok(Stage { blocks })
            })
            .collect::<Result<_>>()?;
        let norm = match cfg.block.is_preact() {
            true => Some(NormAct::new(cfg.norm, cfg.num_features(), vb.pp("norm"))?),
            false => None,
        };
        let fc = match cfg.num_classes {
            Some(n) => Some(linear(cfg, n, vb.pp("fc"))?),
            None => None,
        };
        let mut model = Self {
            stem,
            stages,
            norm,
            fc,
            config: cfg.clone(),
            feature_info: Self::feature_info_for(cfg),
            blocked: None,
        };
        model.blocked = isa.map(|isa| Blocked::new(&model, isa)).transpose()?;
        Ok(model)
    }

    /// The SIMD kernels the CPU forward runs, when the model runs in the blocked NCHW8c layout
    /// (f32 on a CPU with AVX2 or AVX-512 unless `RESNET_ZOO_ISA` says otherwise, or on aarch64
    /// with `RESNET_ZOO_ISA=neon`); `None` for the NCHW path (GEMM kernels on the CPU, Candle's
    /// ops on other devices).
    pub fn cpu_kernels(&self) -> Option<Isa> {
        self.blocked.as_ref().map(Blocked::isa)
    }

    /// Every tensor a checkpoint for `cfg` must hold, with its shape, in torchvision's names.
    pub fn tensor_specs(cfg: &ResNetConfig) -> Vec<TensorSpec> {
        let mut specs: Vec<TensorSpec> = stem_plan(cfg)
            .convs
            .iter()
            .flat_map(|c| c.tensor_specs(""))
            .collect();
        for (i, plans) in stage_plans(cfg).iter().enumerate() {
            for (b, plan) in plans.iter().enumerate() {
                specs.extend(plan.tensor_specs(&format!("layer{}.{b}", i + 1)));
            }
        }
        if cfg.block.is_preact() {
            specs.extend(cfg.norm.tensor_specs("norm", cfg.num_features()));
        }
        if let Some(n) = cfg.num_classes {
            specs.push(TensorSpec::new("fc", "weight", &fc_weight_shape(cfg, n)));
            specs.push(TensorSpec::new("fc", "bias", &[n]));
        }
        specs
    }

    /// Trainable parameters of `cfg` (what torchvision's `meta["num_params"]` counts: conv, BN and fc
    /// weights and biases, not the BN running statistics).
    pub fn num_params(cfg: &ResNetConfig) -> usize {
        let stem: usize = stem_plan(cfg).convs.iter().map(ConvPlan::num_params).sum();
        let blocks: usize = stage_plans(cfg)
            .iter()
            .flatten()
            .map(|p| p.num_params())
            .sum();
        let norm = if cfg.block.is_preact() {
            2 * cfg.num_features()
        } else {
            0
        };
        let fc = cfg.num_classes.map_or(0, |n| n * cfg.num_features() + n);
        stem + blocks + norm + fc
    }

    /// Multiply-accumulates of one forward pass on a `height` x `width` image: convolutions and the
    /// classifier (torchvision's "GFLOPS" and the paper's "FLOPs" count the same thing).
    pub fn macs(cfg: &ResNetConfig, height: usize, width: usize) -> u64 {
        let stem = stem_plan(cfg);
        let mut macs = 0;
        let mut size = (height, width);
        for conv in &stem.convs {
            macs += conv.cfg.macs(size.0, size.1);
            size = conv.cfg.output_size(size.0, size.1);
        }
        if let Some(pool) = stem.pool {
            let pooled = |x: usize| {
                (x + 2 * (pool.padding + stem.zero_pad)).saturating_sub(pool.kernel_size)
                    / pool.stride
                    + 1
            };
            size = (pooled(size.0), pooled(size.1));
        }
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
            name: if cfg.block.is_preact() {
                "conv1"
            } else {
                "act1"
            }
            .into(),
            channels: cfg.stem.out_channels(),
            reduction: cfg.stem.reduction(),
        }];
        let mut reduction = cfg.stem.reduction() * cfg.stem.pool_stride();
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
        self.first_conv().device()
    }

    /// The dtype of the model's weights.
    pub fn dtype(&self) -> DType {
        self.first_conv().dtype()
    }

    fn first_conv(&self) -> &ConvBn {
        // `validate` guarantees a stem with at least one convolution.
        &self.stem.convs[0]
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
    /// Stage outputs are the raw residual stream, also in pre-activation networks (as timm's
    /// `features_only`), where [`ResNet::forward_features`] adds the final norm.
    pub fn forward_intermediates(&self, x: &Tensor, indices: &[usize]) -> Result<Vec<Tensor>> {
        self.check_input(x)?;
        let n = self.feature_info.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            bail!("feature index {bad} out of range: this model has features 0..{n}");
        }
        let last = indices.iter().copied().max().unwrap_or(0);
        let mut out = Vec::with_capacity(indices.len());
        if let Some(blocked) = &self.blocked {
            let y = blocked.run(self, x, last, |i, map| {
                if indices.contains(&i) {
                    out.push(map.to_tensor(x.device())?);
                }
                Ok(())
            })?;
            blocked.recycle_map(y);
            return Ok(out);
        }
        let mut x = self.stem.features(x)?;
        if indices.contains(&0) {
            out.push(x.clone());
        }
        x = self.stem.pool(x)?;
        for (i, stage) in self.stages.iter().enumerate().take(last) {
            x = stage.forward(&x)?;
            if indices.contains(&(i + 1)) {
                out.push(x.clone());
            }
        }
        Ok(out)
    }

    /// The last stage's feature map, `[N, num_features, H/32, W/32]` (after the final norm + ReLU
    /// in pre-activation networks): what the head pools.
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        if let Some(blocked) = &self.blocked {
            let y = blocked.features(self, x)?;
            let t = y.to_tensor(x.device());
            blocked.recycle_map(y);
            return t;
        }
        let x = self.stem.pool(self.stem.features(x)?)?;
        let x = self.stages.iter().try_fold(x, |x, s| s.forward(&x))?;
        match &self.norm {
            Some(norm) => norm.forward(&x),
            None => Ok(x),
        }
    }

    /// The pooled embedding `[N, num_features]` (2048 for ResNet-50, 512 for ResNet-18): the global
    /// average of [`ResNet::forward_features`], what the classifier reads (timm's `pre_logits`).
    pub fn forward_embedding(&self, x: &Tensor) -> Result<Tensor> {
        self.pooled(x)
    }

    /// The global average of the last feature map, `[N, num_features]`; in NCHW8c on the blocked
    /// path (the map itself is never converted).
    fn pooled(&self, x: &Tensor) -> Result<Tensor> {
        match &self.blocked {
            Some(blocked) => {
                self.check_input(x)?;
                let y = blocked.features(self, x)?;
                let pooled = nchwc::global_avg_pool(&y);
                let (n, c) = (y.n, y.c);
                blocked.recycle_map(y);
                Tensor::from_vec(pooled, (n, c), x.device())
            }
            None => global_avg_pool(&self.forward_features(x)?),
        }
    }

    /// Replaces the classifier. `Some(n)` reads a new `weight` `[n, num_features]` and `bias` `[n]`
    /// through `vb` (a `VarMap`-backed builder to train one, a file for a fine-tuned head); `None`
    /// removes it, leaving a backbone whose `forward` returns the pooled embedding.
    pub fn reset_classifier(&mut self, num_classes: Option<usize>, vb: VarBuilder) -> Result<()> {
        if num_classes == Some(0) {
            bail!("reset_classifier: num_classes must be positive, or None for no classifier");
        }
        let c = self.config.num_features();
        self.fc = match num_classes {
            Some(n) => {
                let weight = vb.get_with_hints((n, c), "weight", Init::Const(0.))?;
                let bias = vb.get_with_hints(n, "bias", Init::Const(0.))?;
                Some(Linear::new(weight, Some(bias)))
            }
            None => None,
        };
        self.config.num_classes = num_classes;
        Ok(())
    }

    /// Global average pool, then the classifier unless `pre_logits` is set or the model is headless.
    pub fn forward_head(&self, features: &Tensor, pre_logits: bool) -> Result<Tensor> {
        let pooled = global_avg_pool(features)?;
        self.classify_pooled(pooled, pre_logits)
    }

    fn classify_pooled(&self, pooled: Tensor, pre_logits: bool) -> Result<Tensor> {
        match (&self.fc, pre_logits) {
            // Candle's CPU matmul has no bf16 kernel: classify in f32, round the logits.
            (Some(fc), false) if needs_f32_compute(&pooled) => {
                let f32 = |t: &Tensor| t.to_dtype(DType::F32);
                let bias = fc.bias().map(f32).transpose()?;
                Linear::new(f32(fc.weight())?, bias)
                    .forward(&f32(&pooled)?)?
                    .to_dtype(pooled.dtype())
            }
            (Some(fc), false) => fc.forward(&pooled),
            _ => Ok(pooled),
        }
    }
}

impl Module for ResNet {
    /// Logits `[N, num_classes]`, or the pooled embedding `[N, num_features]` for a headless model.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.classify_pooled(self.pooled(x)?, false)
    }
}

/// The classifier weight's shape in the checkpoint: `[n, C]` (`nn.Linear`), or `[n, C, 1, 1]` for
/// pre-activation networks, whose reference (timm's ResNetV2) classifies with a 1x1 convolution.
fn fc_weight_shape(cfg: &ResNetConfig, n: usize) -> Vec<usize> {
    let c = cfg.num_features();
    if cfg.block.is_preact() {
        vec![n, c, 1, 1]
    } else {
        vec![n, c]
    }
}

fn linear(cfg: &ResNetConfig, n: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb
        .get_with_hints(fc_weight_shape(cfg, n), "weight", Init::Const(0.))?
        .reshape((n, cfg.num_features()))?;
    let bias = vb.get_with_hints(n, "bias", Init::Const(0.))?;
    Ok(Linear::new(weight, Some(bias)))
}
