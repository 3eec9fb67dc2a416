//! Weights reordered once, at load time, into the layout the micro-kernel reads.

use candle_core::{bail, DType, Result, Tensor};

use super::layout::BLOCK;

/// Which layout a packed convolution reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputLayout {
    /// NCHW8c (every convolution after the stem).
    Blocked,
    /// Plain NCHW, read in place: the stem, whose 3 input channels would waste 5 of 8 lanes.
    Nchw,
}

/// Output channels of a pair of blocks: one AVX-512 register, two AVX2 ones.
pub(super) const PAIR: usize = 2 * BLOCK;

/// 16 f32 on a 64-byte boundary: the packed weights are a vector of these, so that every weight
/// load of the micro-kernels is aligned.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
pub(super) struct Lanes(pub(super) [f32; PAIR]);

/// A convolution with its weights and bias packed for the NCHWc micro-kernels.
///
/// The weight `[C_out, C_in, k_h, k_w]` becomes
/// `[C_out / 16][C_in blocks][k_h][k_w][channels per block][16 output lanes]`: a micro-kernel
/// reads, for one input channel, the 16 output channels of a pair of output blocks as one AVX-512
/// vector or two AVX2 ones. With a blocked input
/// there are `ceil(C_in / 8)` blocks of 8 channels; with a plain NCHW input (the stem) there is one
/// block of `C_in` channels. Channels past `C_out` or `C_in` are zero.
#[derive(Debug, Clone)]
pub struct PackedConv {
    pub(super) weights: Vec<Lanes>,
    /// `ceil(C_out / 16) * 16` values, zero past `C_out`.
    pub(super) bias: Vec<Lanes>,
    pub(super) c_in: usize,
    pub(super) c_out: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) stride: usize,
    pub(super) padding: usize,
    pub(super) input: InputLayout,
}

impl PackedConv {
    /// Packs an OIHW weight (`c_out * c_in * kh * kw` values) and an optional bias (`c_out`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        weight: &[f32],
        [c_out, c_in, kh, kw]: [usize; 4],
        bias: Option<&[f32]>,
        stride: usize,
        padding: usize,
        input: InputLayout,
    ) -> Result<Self> {
        if weight.len() != c_out * c_in * kh * kw || c_out * c_in * kh * kw == 0 {
            bail!(
                "nchwc: {} values are not an OIHW weight [{c_out}, {c_in}, {kh}, {kw}]",
                weight.len()
            );
        }
        if stride == 0 {
            bail!("nchwc: stride 0");
        }
        if let Some(b) = bias {
            if b.len() != c_out {
                bail!(
                    "nchwc: bias of {} values for {c_out} output channels",
                    b.len()
                );
            }
        }
        let (in_blocks, per_block) = match input {
            InputLayout::Blocked => (c_in.div_ceil(BLOCK), BLOCK),
            InputLayout::Nchw => (1, c_in),
        };
        let pairs = c_out.div_ceil(PAIR);
        let mut weights = vec![Lanes::default(); pairs * in_blocks * kh * kw * per_block];
        let mut at = 0;
        for ob in 0..pairs {
            for ib in 0..in_blocks {
                for ky in 0..kh {
                    for kx in 0..kw {
                        for ic in 0..per_block {
                            let i = ib * per_block + ic;
                            for (lane, v) in weights[at].0.iter_mut().enumerate() {
                                let o = ob * PAIR + lane;
                                if o < c_out && i < c_in {
                                    *v = weight[((o * c_in + i) * kh + ky) * kw + kx];
                                }
                            }
                            at += 1;
                        }
                    }
                }
            }
        }
        let mut packed_bias = vec![Lanes::default(); pairs];
        if let Some(b) = bias {
            for (o, &v) in b.iter().enumerate() {
                packed_bias[o / PAIR].0[o % PAIR] = v;
            }
        }
        Ok(Self {
            weights,
            bias: packed_bias,
            c_in,
            c_out,
            kh,
            kw,
            stride,
            padding,
            input,
        })
    }

    /// Packs Candle tensors: a weight `[C_out, C_in, k_h, k_w]` and a bias with `C_out` values
    /// (any shape), both f32 (a model packs its folded conv+BN this way once, at load).
    pub fn from_tensors(
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
        input: InputLayout,
    ) -> Result<Self> {
        let (o, i, kh, kw) = weight.dims4()?;
        let f32s = |t: &Tensor| -> Result<Vec<f32>> {
            if t.dtype() != DType::F32 {
                bail!("nchwc: takes f32 weights, not {:?}", t.dtype());
            }
            t.flatten_all()?.to_vec1::<f32>()
        };
        let w = f32s(weight)?;
        let b = bias.map(f32s).transpose()?;
        Self::new(&w, [o, i, kh, kw], b.as_deref(), stride, padding, input)
    }

    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.c_out
    }

    /// Input channels.
    pub fn c_in(&self) -> usize {
        self.c_in
    }

    /// The layout this convolution reads.
    pub fn input_layout(&self) -> InputLayout {
        self.input
    }

    /// Output height and width for an `h x w` input, or `None` if the kernel does not fit.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (hp, wp) = (h + 2 * self.padding, w + 2 * self.padding);
        (hp >= self.kh && wp >= self.kw).then(|| {
            (
                (hp - self.kh) / self.stride + 1,
                (wp - self.kw) / self.stride + 1,
            )
        })
    }

    /// Multiply-adds of one image (counting the logical channels only).
    pub fn macs_per_image(&self, h: usize, w: usize) -> usize {
        let (ho, wo) = self.output_size(h, w).unwrap_or((0, 0));
        ho * wo * self.c_out * self.c_in * self.kh * self.kw
    }

    /// Input channels per weight block and the number of blocks.
    pub(super) fn in_blocks(&self) -> (usize, usize) {
        match self.input {
            InputLayout::Blocked => (self.c_in.div_ceil(BLOCK), BLOCK),
            InputLayout::Nchw => (1, self.c_in),
        }
    }
}
