use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::conv::{conv2d_fused, ConvGeometry, Epilogue};
use crate::TensorSpec;

/// Shape of a [`ConvBn`]: a bias-free `Conv2d` followed by `BatchNorm2d(out_channels)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvBnConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel_size: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    /// BatchNorm epsilon (PyTorch's default is 1e-5).
    pub eps: f64,
}

impl ConvBnConfig {
    /// A `kernel_size` x `kernel_size` convolution with "same" padding for odd kernels (`k / 2`).
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize, stride: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding: kernel_size / 2,
            groups: 1,
            eps: 1e-5,
        }
    }

    /// The same convolution split into `groups` groups (ResNeXt).
    pub fn with_groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    fn weight_shape(&self) -> [usize; 4] {
        let k = self.kernel_size;
        [self.out_channels, self.in_channels / self.groups, k, k]
    }

    /// The checkpoint tensor of a convolution with no norm after it (or a pre-activation norm that
    /// belongs to the next layer): `{conv}.weight`.
    pub fn conv_specs(&self, conv: &str) -> Vec<TensorSpec> {
        vec![TensorSpec::new(conv, "weight", &self.weight_shape())]
    }

    /// Number of elements of the convolution weight alone.
    pub fn weight_numel(&self) -> usize {
        self.weight_shape().iter().product()
    }

    /// The checkpoint tensors this layer reads: `{conv}.weight` and the four BatchNorm tensors
    /// `{bn}.weight`, `{bn}.bias`, `{bn}.running_mean`, `{bn}.running_var`.
    pub fn tensor_specs(&self, conv: &str, bn: &str) -> Vec<TensorSpec> {
        let c = [self.out_channels];
        vec![
            TensorSpec::new(conv, "weight", &self.weight_shape()),
            TensorSpec::new(bn, "weight", &c),
            TensorSpec::new(bn, "bias", &c),
            TensorSpec::new(bn, "running_mean", &c),
            TensorSpec::new(bn, "running_var", &c),
        ]
    }

    /// Output `(height, width)` for an input of `(height, width)` (PyTorch's floor rule).
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        let out =
            |x: usize| (x + 2 * self.padding).saturating_sub(self.kernel_size) / self.stride + 1;
        (out(height), out(width))
    }

    /// Multiply-accumulates of the convolution on an input of `(height, width)` (the bias add and
    /// the folded BatchNorm are not counted, as torchvision's and the paper's figures do not).
    pub fn macs(&self, height: usize, width: usize) -> u64 {
        let (h, w) = self.output_size(height, width);
        let per_output =
            (self.in_channels / self.groups * self.kernel_size * self.kernel_size) as u64;
        (h * w * self.out_channels) as u64 * per_output
    }

    /// Number of trainable parameters (conv weight, BN weight and bias; not the running statistics).
    pub fn num_params(&self) -> usize {
        self.weight_numel() + 2 * self.out_channels
    }
}

/// A bias-free convolution, with the inference-mode BatchNorm that follows it folded in
/// ([`ConvBn::new`]), or alone ([`ConvBn::conv_only`], for pre-activation networks whose norms come
/// before the convolution, optionally weight-standardised as in BiT).
///
/// PyTorch evaluates `(conv(x) - mean) / sqrt(var + eps) * gamma + beta`; folding computes the same
/// affine map once at load time. The fold runs in f32 (f64 for f64 models) before the result is cast
/// to the run dtype, so an f16 model does not lose precision in `1 / sqrt(var + eps)`.
#[derive(Debug, Clone)]
pub struct ConvBn {
    weight: Tensor,
    /// Shape `[1, out_channels, 1, 1]`, ready to broadcast over NCHW; `None` without a folded norm.
    bias: Option<Tensor>,
    config: ConvBnConfig,
}

/// The dtype load-time arithmetic runs in: f64 for f64 models, f32 otherwise.
fn fold_dtype(run_dtype: DType) -> DType {
    if run_dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

fn check_groups(config: &ConvBnConfig, conv: &VarBuilder) -> Result<()> {
    if config.groups == 0
        || !config.in_channels.is_multiple_of(config.groups)
        || !config.out_channels.is_multiple_of(config.groups)
    {
        candle_core::bail!(
            "conv {}: in_channels {} and out_channels {} must be divisible by groups {}",
            conv.prefix(),
            config.in_channels,
            config.out_channels,
            config.groups
        );
    }
    Ok(())
}

impl ConvBn {
    /// Loads `conv.weight` and the BatchNorm tensors under `bn`, folds them, and casts to `conv`'s dtype.
    pub fn new(config: &ConvBnConfig, conv: VarBuilder, bn: VarBuilder) -> Result<Self> {
        check_groups(config, &conv)?;
        let run_dtype = conv.dtype();
        let fold_dtype = fold_dtype(run_dtype);
        let c = config.out_channels;
        let get = |vb: &VarBuilder, shape: &[usize], name: &str| {
            vb.get_with_hints_dtype(shape, name, Init::Const(0.), fold_dtype)
        };
        let weight = get(&conv, &config.weight_shape(), "weight")?;
        let gamma = get(&bn, &[c], "weight")?;
        let beta = get(&bn, &[c], "bias")?;
        let mean = get(&bn, &[c], "running_mean")?;
        let var = get(&bn, &[c], "running_var")?;

        let scale = (gamma / (var + config.eps)?.sqrt()?)?;
        let weight = weight.broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?;
        let bias = (beta - (mean * &scale)?)?;
        Ok(Self {
            weight: weight.to_dtype(run_dtype)?.contiguous()?,
            bias: Some(bias.to_dtype(run_dtype)?.reshape((1, c, 1, 1))?),
            config: *config,
        })
    }

    /// Loads `conv.weight` alone (no norm, no bias). With `standardize = Some(eps)` the weight is
    /// standardised per output channel at load time, `(w - mean) / sqrt(var + eps)` over
    /// `in/groups * k * k` with the biased variance: timm's `StdConv2d` (BiT uses `eps = 1e-8`),
    /// which recomputes the same thing on every forward.
    pub fn conv_only(
        config: &ConvBnConfig,
        conv: VarBuilder,
        standardize: Option<f64>,
    ) -> Result<Self> {
        check_groups(config, &conv)?;
        let run_dtype = conv.dtype();
        let weight = conv.get_with_hints_dtype(
            &config.weight_shape()[..],
            "weight",
            Init::Const(0.),
            fold_dtype(run_dtype),
        )?;
        let weight = match standardize {
            Some(eps) => {
                let c = config.out_channels;
                let flat = weight.reshape((c, ()))?;
                let mean = flat.mean_keepdim(1)?;
                let centred = flat.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(1)?;
                centred
                    .broadcast_div(&(var + eps)?.sqrt()?)?
                    .reshape(weight.shape())?
            }
            None => weight,
        };
        Ok(Self {
            weight: weight.to_dtype(run_dtype)?.contiguous()?,
            bias: None,
            config: *config,
        })
    }

    /// The layer's shape.
    pub fn config(&self) -> &ConvBnConfig {
        &self.config
    }

    /// The folded convolution weight, `[out, in / groups, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The folded bias, `[1, out, 1, 1]`, or `None` for a convolution without a norm.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

/// Whether Candle lacks a kernel for this dtype on this device: its CPU matmul (and so its CPU
/// convolution) has no bf16 implementation. Such layers compute in f32 and round the result.
pub fn needs_f32_compute(x: &Tensor) -> bool {
    x.dtype() == DType::BF16 && x.device().is_cpu()
}

impl ConvBn {
    fn geometry(&self) -> ConvGeometry {
        ConvGeometry {
            stride: self.config.stride,
            padding: self.config.padding,
            groups: self.config.groups,
        }
    }

    /// `relu?(self(x) + residual)`, fused into the convolution's write-out where the device and
    /// dtype allow ([`conv2d_fused`]): what a residual block's last convolution computes.
    pub fn forward_with(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor> {
        if needs_f32_compute(x) {
            let f32 = |t: &Tensor| t.to_dtype(DType::F32);
            let bias = self.bias.as_ref().map(f32).transpose()?;
            let residual = residual.map(f32).transpose()?;
            let epilogue = Epilogue {
                bias: bias.as_ref(),
                residual: residual.as_ref(),
                relu,
            };
            return conv2d_fused(&f32(x)?, &f32(&self.weight)?, self.geometry(), epilogue)?
                .to_dtype(x.dtype());
        }
        let epilogue = Epilogue {
            bias: self.bias.as_ref(),
            residual,
            relu,
        };
        conv2d_fused(x, &self.weight, self.geometry(), epilogue)
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, None, false)
    }
}
