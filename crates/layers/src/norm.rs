//! Normalisation followed by ReLU, for pre-activation networks, where a norm cannot always be
//! folded into a convolution (it sits on the residual stream, or is a GroupNorm).

use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::TensorSpec;

/// Which normalisation a [`NormAct`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NormKind {
    /// Inference-mode `BatchNorm2d` (eps 1e-5): tensors `weight`, `bias`, `running_mean`,
    /// `running_var`; folded to a per-channel scale and shift at load time.
    #[default]
    BatchNorm,
    /// `GroupNorm(groups, channels)` (eps 1e-5): tensors `weight`, `bias`; statistics per image and
    /// group, computed in f32 (f64 for f64 models).
    GroupNorm { groups: usize },
}

/// PyTorch's default epsilon of `BatchNorm2d` and `GroupNorm`.
const EPS: f64 = 1e-5;

impl NormKind {
    /// The checkpoint tensors of a norm over `channels` at `path`.
    pub fn tensor_specs(self, path: &str, channels: usize) -> Vec<TensorSpec> {
        let mut names = vec!["weight", "bias"];
        if self == NormKind::BatchNorm {
            names.extend(["running_mean", "running_var"]);
        }
        names
            .into_iter()
            .map(|n| TensorSpec::new(path, n, &[channels]))
            .collect()
    }

    /// Checks that the norm can normalise `channels` channels.
    pub fn check(self, channels: usize) -> Result<()> {
        match self {
            NormKind::GroupNorm { groups } if groups == 0 || !channels.is_multiple_of(groups) => {
                bail!("GroupNorm: {channels} channels cannot be split into {groups} groups")
            }
            _ => Ok(()),
        }
    }
}

/// `relu(norm(x))`: timm's `BatchNormAct2d` / `GroupNormAct` in inference mode.
#[derive(Debug, Clone)]
pub enum NormAct {
    /// BatchNorm folded to `x * scale + shift`, both `[1, C, 1, 1]`.
    Affine { scale: Tensor, shift: Tensor },
    /// GroupNorm with its affine `weight` and `bias`, both `[1, C, 1, 1]`.
    Group {
        groups: usize,
        weight: Tensor,
        bias: Tensor,
    },
}

impl NormAct {
    /// Loads the norm's tensors under `vb` (whose dtype is the run dtype).
    pub fn new(kind: NormKind, channels: usize, vb: VarBuilder) -> Result<Self> {
        kind.check(channels)?;
        let run_dtype = vb.dtype();
        let work = if run_dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let get = |name: &str| vb.get_with_hints_dtype(channels, name, Init::Const(0.), work);
        let shape = (1, channels, 1, 1);
        match kind {
            NormKind::BatchNorm => {
                let (gamma, beta) = (get("weight")?, get("bias")?);
                let (mean, var) = (get("running_mean")?, get("running_var")?);
                let scale = (gamma / (var + EPS)?.sqrt()?)?;
                let shift = (beta - (mean * &scale)?)?;
                Ok(NormAct::Affine {
                    scale: scale.to_dtype(run_dtype)?.reshape(shape)?,
                    shift: shift.to_dtype(run_dtype)?.reshape(shape)?,
                })
            }
            NormKind::GroupNorm { groups } => Ok(NormAct::Group {
                groups,
                weight: get("weight")?.reshape(shape)?,
                bias: get("bias")?.reshape(shape)?,
            }),
        }
    }
}

impl Module for NormAct {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            NormAct::Affine { scale, shift } => {
                x.broadcast_mul(scale)?.broadcast_add(shift)?.relu()
            }
            NormAct::Group {
                groups,
                weight,
                bias,
            } => {
                let (n, c, h, w) = x.dims4()?;
                if !c.is_multiple_of(*groups) {
                    bail!("GroupNorm: input has {c} channels, not divisible by {groups} groups");
                }
                let run_dtype = x.dtype();
                // Statistics in the weight's dtype (f32, or f64 for f64 models).
                let g = x
                    .to_dtype(weight.dtype())?
                    .reshape((n, *groups, c / groups * h * w))?;
                let mean = g.mean_keepdim(2)?;
                let centred = g.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(2)?;
                let normed = centred
                    .broadcast_div(&(var + EPS)?.sqrt()?)?
                    .reshape((n, c, h, w))?;
                normed
                    .broadcast_mul(weight)?
                    .broadcast_add(bias)?
                    .relu()?
                    .to_dtype(run_dtype)
            }
        }
    }
}
