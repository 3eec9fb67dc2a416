use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::conv::conv2d_fused;
use crate::nchwc::{Algorithm, Input, InputLayout, Isa, Nchw8c, PackedConv, Packing};
use crate::TensorSpec;
use crate::{ConvGeometry, Epilogue};

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

    /// Whether the NCHW8c kernels cover this convolution with an input in `layout` (every
    /// ungrouped one; a grouped one when its groups fill whole blocks, as ResNeXt's do).
    pub fn can_pack(&self, layout: InputLayout) -> bool {
        PackedConv::supports(self.in_channels, self.out_channels, self.groups, layout)
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
///
/// On the CPU in f32 a model packs its layers once at load ([`ConvBn::pack`]) for the NCHW8c kernels
/// of [`crate::nchwc`]; the Candle tensors are then dropped, so the weights are held once.
#[derive(Debug, Clone)]
pub struct ConvBn {
    kernel: Kernel,
    config: ConvBnConfig,
    device: Device,
    dtype: DType,
}

/// How a [`ConvBn`] holds its weights.
#[derive(Debug, Clone)]
enum Kernel {
    /// Candle tensors: the weight `[out, in / groups, k, k]` and the bias `[1, out, 1, 1]`
    /// (`None` without a folded norm).
    Tensors {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// Packed for the NCHW8c kernels (f32 on the CPU).
    Packed(Arc<PackedConv>),
}

/// The dtype load-time arithmetic runs in: f64 for f64 models, f32 otherwise.
fn fold_dtype(run_dtype: DType) -> DType {
    if run_dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

fn geometry(config: &ConvBnConfig) -> ConvGeometry {
    ConvGeometry {
        stride: config.stride,
        padding: config.padding,
        groups: config.groups,
    }
}

fn check_packable(
    config: &ConvBnConfig,
    device: &Device,
    dtype: DType,
    layout: InputLayout,
) -> Result<()> {
    if !device.is_cpu() || dtype != DType::F32 || !config.can_pack(layout) {
        candle_core::bail!(
            "conv {config:?}: cannot be packed for the NCHW8c kernels ({dtype:?} on {device:?}, \
             {layout:?} input)"
        );
    }
    Ok(())
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
        Self::new_packed(config, conv, bn, None)
    }

    /// [`ConvBn::new`], packed for the NCHW8c kernels reading `pack` when it is given (an f32 CPU
    /// model, [`ConvBn::can_pack`]): the BatchNorm is folded while packing, so the weights are
    /// copied once, never held twice.
    pub fn new_packed(
        config: &ConvBnConfig,
        conv: VarBuilder,
        bn: VarBuilder,
        pack: Option<Packing>,
    ) -> Result<Self> {
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
        let bias = (beta - (mean * &scale)?)?;
        if let Some(Packing { layout, algorithm }) = pack {
            let (device, dtype) = (weight.device().clone(), run_dtype);
            check_packable(config, &device, dtype, layout)?;
            let geometry = geometry(config);
            let (s, b) = (Some(&scale), Some(&bias));
            let packed =
                PackedConv::from_tensors_scaled(&weight, s, b, geometry, layout, algorithm)?;
            return Ok(Self {
                kernel: Kernel::Packed(Arc::new(packed)),
                config: *config,
                device,
                dtype,
            });
        }
        let weight = weight.broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?;
        Self::from_tensors(
            weight.to_dtype(run_dtype)?.contiguous()?,
            Some(bias.to_dtype(run_dtype)?.reshape((1, c, 1, 1))?),
            config,
        )
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
        Self::conv_only_packed(config, conv, standardize, None)
    }

    /// [`ConvBn::conv_only`], packed for the NCHW8c kernels reading `pack` when it is given.
    pub fn conv_only_packed(
        config: &ConvBnConfig,
        conv: VarBuilder,
        standardize: Option<f64>,
        pack: Option<Packing>,
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
        let mut layer =
            Self::from_tensors(weight.to_dtype(run_dtype)?.contiguous()?, None, config)?;
        if let Some(Packing { layout, algorithm }) = pack {
            check_packable(config, &layer.device, layer.dtype, layout)?;
            layer.pack_as(layout, algorithm)?;
        }
        Ok(layer)
    }

    fn from_tensors(weight: Tensor, bias: Option<Tensor>, config: &ConvBnConfig) -> Result<Self> {
        Ok(Self {
            device: weight.device().clone(),
            dtype: weight.dtype(),
            kernel: Kernel::Tensors { weight, bias },
            config: *config,
        })
    }

    /// The layer's shape.
    pub fn config(&self) -> &ConvBnConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the weights (the run dtype).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The folded convolution weight, `[out, in / groups, k, k]` (unpacked into a new tensor when
    /// the layer is packed).
    pub fn weight(&self) -> Result<Tensor> {
        match &self.kernel {
            Kernel::Tensors { weight, .. } => Ok(weight.clone()),
            Kernel::Packed(p) => {
                let c = &self.config;
                let k = c.kernel_size;
                let shape = (c.out_channels, c.in_channels / c.groups, k, k);
                Tensor::from_vec(p.unpack_weight(), shape, &self.device)
            }
        }
    }

    /// The folded bias, `[1, out, 1, 1]`, or `None` for a convolution without a norm (a packed
    /// layer's bias is zero then).
    pub fn bias(&self) -> Result<Option<Tensor>> {
        match &self.kernel {
            Kernel::Tensors { bias, .. } => Ok(bias.clone()),
            Kernel::Packed(p) => {
                let shape = (1, self.config.out_channels, 1, 1);
                Tensor::from_vec(p.unpack_bias(), shape, &self.device).map(Some)
            }
        }
    }

    /// The layer packed for the NCHW8c kernels, if it is.
    pub fn packed(&self) -> Option<&PackedConv> {
        match &self.kernel {
            Kernel::Packed(p) => Some(p),
            Kernel::Tensors { .. } => None,
        }
    }

    /// Whether [`ConvBn::pack`] can pack this layer for an input in `layout`: f32 on the CPU, and a
    /// grouping that fits the blocks ([`ConvBnConfig::can_pack`]).
    pub fn can_pack(&self, layout: InputLayout) -> bool {
        self.device.is_cpu() && self.dtype == DType::F32 && self.config.can_pack(layout)
    }

    /// Packs the weights for the NCHW8c kernels, reading an input in `layout`, and drops the Candle
    /// tensors ([`ConvBn::can_pack`] says whether this works). Packing a packed layer is a no-op.
    pub fn pack(&mut self, layout: InputLayout) -> Result<()> {
        self.pack_as(layout, Algorithm::Auto)
    }

    /// [`ConvBn::pack`] with the algorithm chosen.
    pub fn pack_as(&mut self, layout: InputLayout, algorithm: Algorithm) -> Result<()> {
        if let Kernel::Tensors { weight, bias } = &self.kernel {
            check_packable(&self.config, &self.device, self.dtype, layout)?;
            let packed = PackedConv::from_tensors_scaled(
                weight,
                None,
                bias.as_ref(),
                geometry(&self.config),
                layout,
                algorithm,
            )?;
            self.kernel = Kernel::Packed(Arc::new(packed));
        }
        Ok(())
    }
}

/// Whether Candle lacks a kernel for this dtype on this device: its CPU matmul (and so its CPU
/// convolution) has no bf16 implementation. Such layers compute in f32 and round the result.
pub fn needs_f32_compute(x: &Tensor) -> bool {
    x.dtype() == DType::BF16 && x.device().is_cpu()
}

impl ConvBn {
    fn geometry(&self) -> ConvGeometry {
        geometry(&self.config)
    }

    /// `relu?(self(x) + residual)`, fused into the convolution's write-out where the device and
    /// dtype allow ([`conv2d_fused`]): what a residual block's last convolution computes.
    ///
    /// A packed layer converts `x` to NCHW8c and back around its kernel (a model keeps the blocked
    /// layout from layer to layer instead).
    pub fn forward_with(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor> {
        let (weight, bias) = match &self.kernel {
            Kernel::Tensors { weight, bias } => (weight, bias),
            Kernel::Packed(p) => return packed_forward(p, x, residual, relu),
        };
        if needs_f32_compute(x) {
            let f32 = |t: &Tensor| t.to_dtype(DType::F32);
            let bias = bias.as_ref().map(f32).transpose()?;
            let residual = residual.map(f32).transpose()?;
            let epilogue = Epilogue {
                bias: bias.as_ref(),
                residual: residual.as_ref(),
                relu,
            };
            return conv2d_fused(&f32(x)?, &f32(weight)?, self.geometry(), epilogue)?
                .to_dtype(x.dtype());
        }
        let epilogue = Epilogue {
            bias: bias.as_ref(),
            residual,
            relu,
        };
        conv2d_fused(x, weight, self.geometry(), epilogue)
    }
}

/// A packed layer run on NCHW tensors: the input (unless the layer reads NCHW itself) and the
/// residual are converted to NCHW8c, the output back.
fn packed_forward(
    p: &PackedConv,
    x: &Tensor,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    if x.dtype() != DType::F32 || !x.device().is_cpu() {
        candle_core::bail!(
            "conv: this layer is packed for f32 on the CPU, the input is {:?} on {:?}",
            x.dtype(),
            x.device()
        );
    }
    let isa = Isa::configured()?.unwrap_or(Isa::Portable);
    let residual = residual.map(Nchw8c::from_tensor).transpose()?;
    let y = match p.input_layout() {
        InputLayout::Blocked => {
            let x = Nchw8c::from_tensor(x)?;
            p.forward(Input::Blocked(&x), residual.as_ref(), relu, isa)?
        }
        InputLayout::Nchw => {
            let (n, _, h, w) = x.dims4()?;
            let data = x.flatten_all()?.to_vec1::<f32>()?;
            let input = Input::Nchw {
                data: &data,
                n,
                h,
                w,
            };
            p.forward(input, residual.as_ref(), relu, isa)?
        }
    };
    y.to_tensor(x.device())
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, None, false)
    }
}
