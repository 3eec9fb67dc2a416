//! Weights reordered once, at load time, into the layout the micro-kernel reads.

use candle_core::{bail, DType, Result, Storage, Tensor};
use rayon::prelude::*;

use super::lanes4::GROUP;
use super::layout::BLOCK;
use super::winograd::{Variant, Winograd};
use crate::ConvGeometry;

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
/// The weight `[C_out, C_in / groups, k_h, k_w]` becomes
/// `[C_out / 16][input blocks][k_h][k_w][channels per block][16 output lanes]`: a micro-kernel
/// reads, for one input channel, the 16 output channels of a pair of output blocks as one AVX-512
/// vector or two AVX2 ones. With a blocked input a pair reads `n_ib` blocks of 8 channels from
/// block `ib0[pair]` on (every block for an ungrouped convolution; the blocks holding its groups'
/// channels for a grouped one, whose weights are zero across groups). With a plain NCHW input
/// (the stem) there is one block of `C_in` channels. Channels past `C_out` or `C_in` are zero.
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
    pub(super) groups: usize,
    pub(super) input: InputLayout,
    /// The first input block each pair of output blocks reads.
    pub(super) ib0: Vec<usize>,
    /// Input blocks every pair reads.
    pub(super) n_ib: usize,
    /// Which input blocks each output block reads, and so how `weights` are laid out.
    pub(super) reads: Reads,
    /// Stride-1 3x3 convolutions chosen for Winograd F(2x2, 3x3) hold their transformed weights
    /// here instead (and `weights` is empty).
    pub(super) winograd: Option<Winograd>,
}

/// The Winograd transform a stride-1 3x3 convolution runs by default, by its channels (which in
/// the ResNets set its map size: 64 and 128 channels run on 56x56 and 28x28 maps at 224x224):
/// - up to 128 x 128 channels, from 64: F(4x4, 3x3), 1.2-2.0x faster than direct per layer on
///   56x56 and 28x28 maps, where F(2x2)'s transforms cost about what it saves at 64 channels;
/// - up to 512 x 512, from 128: F(2x2, 3x3), 1.3-1.8x faster than direct. F(4x4) gains
///   little more on 14x14 maps (its 4x4 tiles cover 16x16) for 4x the direct weights, and loses
///   on 7x7 ones;
/// - wider: direct (1024 x 1024 at 7x7 loses with either).
///
/// A model packs its last stage (7x7 maps at 224x224, where Winograd's gain is smallest and its
/// weights cost the most memory) as [`Algorithm::Direct`].
fn winograd_by_default(c_in: usize, c_out: usize) -> Option<Variant> {
    let (lo, hi) = (c_in.min(c_out), c_in * c_out);
    if lo >= 64 && hi <= 128 * 128 {
        Some(Variant::F4)
    } else if lo >= 128 && hi <= 512 * 512 {
        Some(Variant::F2)
    } else {
        None
    }
}

/// How a model packs a layer: the layout it reads and the algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    pub layout: InputLayout,
    pub algorithm: Algorithm,
}

/// How a convolution is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Winograd for the stride-1 3x3 convolutions from 64 x 64 up to 512 x 512 channels, where
    /// it is faster: F(4x4, 3x3) up to 128 x 128, F(2x2, 3x3) above; direct otherwise. The
    /// `RESNET_ZOO_WINOGRAD` environment variable overrides it: `off`, `all` (F(2x2) on every
    /// stride-1 3x3), `f4` (F(4x4) wherever Winograd runs), `all-f4`.
    #[default]
    Auto,
    /// The direct micro-kernels.
    Direct,
    /// Winograd F(2x2, 3x3) if the convolution is a stride-1, padding-1, ungrouped 3x3 with a
    /// blocked input; direct otherwise.
    Winograd,
    /// Winograd F(4x4, 3x3) where [`Algorithm::Winograd`] would run F(2x2, 3x3): 4x fewer
    /// multiplies than direct (2.25x for F(2x2)), 4x the direct weights (16/9 for F(2x2)), and a
    /// larger f32 error (still within 1e-5 of the direct result on the tests' layers).
    Winograd4x4,
}

/// Which Winograd transform a convolution runs, if any; `Auto` reads `RESNET_ZOO_WINOGRAD`: unset
/// or `auto`, `off` (or `0`), `all` (F(2x2) on every stride-1 3x3), `f4` (F(4x4) wherever `auto`
/// runs Winograd), `all-f4`; anything else is an error naming the variable.
fn winograd_variant(
    algorithm: Algorithm,
    c_in: usize,
    c_out: usize,
    [kh, kw]: [usize; 2],
    g: ConvGeometry,
) -> Result<Option<Variant>> {
    let shape = kh == 3 && kw == 3 && g.stride == 1 && g.padding == 1 && g.groups == 1;
    if !shape {
        return Ok(None);
    }
    let default = winograd_by_default(c_in, c_out);
    Ok(match algorithm {
        Algorithm::Direct => None,
        Algorithm::Winograd => Some(Variant::F2),
        Algorithm::Winograd4x4 => Some(Variant::F4),
        Algorithm::Auto => {
            let value = std::env::var("RESNET_ZOO_WINOGRAD").unwrap_or_default();
            match value.trim().to_ascii_lowercase().as_str() {
                "" | "auto" => default,
                "off" | "0" => None,
                "all" => Some(Variant::F2),
                "f4" => default.map(|_| Variant::F4),
                "all-f4" => Some(Variant::F4),
                other => bail!(
                    "RESNET_ZOO_WINOGRAD={other:?} is not a setting: use auto, off, all, f4 or all-f4"
                ),
            }
        }
    })
}

/// For each pair of output blocks, the first input block it reads, and how many blocks every pair
/// reads; `None` when a grouping does not fit the blocked layout (a pair's first input channel off a
/// block boundary, or the blocks running past the input), or for a grouped NCHW input.
fn input_blocks(
    c_in: usize,
    c_out: usize,
    groups: usize,
    input: InputLayout,
) -> Option<(Vec<usize>, usize)> {
    let pairs = c_out.div_ceil(PAIR);
    if groups == 1 {
        let n_ib = match input {
            InputLayout::Blocked => c_in.div_ceil(BLOCK),
            InputLayout::Nchw => 1,
        };
        return Some((vec![0; pairs], n_ib));
    }
    if input == InputLayout::Nchw
        || groups == 0
        || !c_in.is_multiple_of(groups)
        || !c_out.is_multiple_of(groups)
    {
        return None;
    }
    let (cin_g, cout_g) = (c_in / groups, c_out / groups);
    let ranges: Vec<(usize, usize)> = (0..pairs)
        .map(|p| {
            let (o0, o1) = (p * PAIR, ((p + 1) * PAIR).min(c_out));
            (o0 / cout_g * cin_g, ((o1 - 1) / cout_g + 1) * cin_g)
        })
        .collect();
    if ranges.iter().any(|&(i0, _)| !i0.is_multiple_of(BLOCK)) {
        return None;
    }
    let n_ib = ranges
        .iter()
        .map(|&(i0, i1)| (i1 - i0).div_ceil(BLOCK))
        .max()?;
    let ib0: Vec<usize> = ranges.iter().map(|&(i0, _)| i0 / BLOCK).collect();
    ib0.iter()
        .all(|&b| b + n_ib <= c_in.div_ceil(BLOCK))
        .then_some((ib0, n_ib))
}

/// Which input blocks a convolution's output blocks read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reads {
    /// Every output block of a pair reads the pair's `n_ib` input blocks (weights as described
    /// on [`PackedConv`]).
    Pair,
    /// Each output block reads only the input block at its own place among the pair's two
    /// (`ib0[pair] + block % 2`): groups of 2 or 8 channels in and out (ResNeXt's second stage).
    /// The blocks run one at a time over that block alone, skipping the other block's weights,
    /// all zero (same layout as `Pair`).
    Diagonal,
    /// Groups of 4 channels in and 4 out, every pair full: each output lane reads its group's 4
    /// lanes of the pair's two input blocks (`lanes4.rs`, whose layout the weights take).
    Lanes4,
}

impl Reads {
    /// Lanes vectors one pair of output blocks holds: `taps` per input channel (of `n_ib` blocks
    /// of `per_block`), or per input of a 4-channel group.
    fn per_pair(self, n_ib: usize, taps: usize, per_block: usize) -> usize {
        match self {
            Self::Lanes4 => taps * GROUP,
            Self::Pair | Self::Diagonal => n_ib * taps * per_block,
        }
    }

    /// Where within its pair the weight of tap `tap` for input `i` of an output's group lives,
    /// that input being channel `ic` of the pair's input block `ib`.
    fn index(
        self,
        taps: usize,
        per_block: usize,
        ib: usize,
        ic: usize,
        tap: usize,
        i: usize,
    ) -> usize {
        match self {
            Self::Lanes4 => tap * GROUP + i,
            Self::Pair | Self::Diagonal => (ib * taps + tap) * per_block + ic,
        }
    }
}

/// Whether every output block reads only the input block at its place in its pair
/// ([`Reads::Diagonal`]), given the pairs' first input blocks and the blocks each reads.
fn block_diagonal(c_in: usize, c_out: usize, groups: usize, ib0: &[usize], n_ib: usize) -> bool {
    if groups <= 1 || n_ib != 2 {
        return false;
    }
    let (cin_g, cout_g) = (c_in / groups, c_out / groups);
    (0..c_out.div_ceil(BLOCK)).all(|ob| {
        let (o0, o1) = (ob * BLOCK, ((ob + 1) * BLOCK).min(c_out));
        let (i0, i1) = (o0 / cout_g * cin_g, ((o1 - 1) / cout_g + 1) * cin_g);
        let own = ib0[ob / 2] + ob % 2;
        i0 >= own * BLOCK && i1 <= (own + 1) * BLOCK
    })
}

impl PackedConv {
    /// Whether a convolution of this shape can be packed (every ungrouped one can; a grouped one
    /// when each pair of output blocks reads whole input blocks, as ResNeXt's do).
    pub fn supports(c_in: usize, c_out: usize, groups: usize, input: InputLayout) -> bool {
        input_blocks(c_in, c_out, groups, input).is_some()
    }

    /// Packs an OIHW weight (`c_out * c_in / groups * kh * kw` values; the shape is given as
    /// PyTorch's `[c_out, c_in / groups, kh, kw]`) and an optional bias (`c_out`).
    pub fn new(
        weight: &[f32],
        shape: [usize; 4],
        bias: Option<&[f32]>,
        geometry: ConvGeometry,
        input: InputLayout,
    ) -> Result<Self> {
        Self::new_scaled(weight, shape, None, bias, geometry, input, Algorithm::Auto)
    }

    /// [`PackedConv::new`] of the weight with each output channel's filter multiplied by
    /// `scale[o]` on the way (an inference BatchNorm folded while packing: the product is the f32
    /// one a separate fold computes, without a folded copy of the weights).
    #[allow(clippy::too_many_arguments)]
    pub fn new_scaled(
        weight: &[f32],
        [c_out, cin_g, kh, kw]: [usize; 4],
        scale: Option<&[f32]>,
        bias: Option<&[f32]>,
        geometry: ConvGeometry,
        input: InputLayout,
        algorithm: Algorithm,
    ) -> Result<Self> {
        let ConvGeometry {
            stride,
            padding,
            groups,
        } = geometry;
        if weight.len() != c_out * cin_g * kh * kw || c_out * cin_g * kh * kw == 0 {
            bail!(
                "nchwc: {} values are not an OIHW weight [{c_out}, {cin_g}, {kh}, {kw}]",
                weight.len()
            );
        }
        if stride == 0 || groups == 0 {
            bail!("nchwc: stride {stride}, groups {groups}");
        }
        for (what, v) in [("bias", bias), ("scale", scale)] {
            if let Some(v) = v {
                if v.len() != c_out {
                    bail!(
                        "nchwc: {what} of {} values for {c_out} output channels",
                        v.len()
                    );
                }
            }
        }
        let c_in = cin_g * groups;
        let Some((ib0, n_ib)) = input_blocks(c_in, c_out, groups, input) else {
            bail!(
                "nchwc: a {c_in} -> {c_out} convolution in {groups} groups does not fit the \
                 blocked layout ({input:?} input)"
            );
        };
        let per_block = match input {
            InputLayout::Blocked => BLOCK,
            InputLayout::Nchw => c_in,
        };
        let cout_g = c_out / groups;
        let pairs = c_out.div_ceil(PAIR);
        let taps = kh * kw;
        let reads = if input == InputLayout::Nchw || groups == 1 {
            Reads::Pair
        } else if cin_g == GROUP && cout_g == GROUP && c_out.is_multiple_of(PAIR) {
            Reads::Lanes4
        } else if block_diagonal(c_in, c_out, groups, &ib0, n_ib) {
            Reads::Diagonal
        } else {
            Reads::Pair
        };
        let per_pair = reads.per_pair(n_ib, taps, per_block);
        let variant = match input {
            InputLayout::Blocked => winograd_variant(algorithm, c_in, c_out, [kh, kw], geometry)?,
            InputLayout::Nchw => None,
        };
        let winograd = variant.map(|v| Winograd::new(v, weight, c_out, c_in, scale));
        let direct = if winograd.is_some() { 0 } else { pairs };
        let mut weights = vec![Lanes::default(); direct * per_pair];
        // Each pair's 16 filters are read in order and scattered into its (L2-sized) part.
        weights
            .par_chunks_mut(per_pair)
            .enumerate()
            .for_each(|(pair, dst)| {
                for lane in 0..PAIR.min(c_out - pair * PAIR) {
                    let o = pair * PAIR + lane;
                    let first = o / cout_g * cin_g;
                    let s = scale.map_or(1.0, |s| s[o]);
                    let filter = &weight[o * cin_g * taps..][..cin_g * taps];
                    for (i, taps_of_i) in filter.chunks_exact(taps).enumerate() {
                        let channel = first + i;
                        let ib = channel / per_block - ib0[pair];
                        let ic = channel % per_block;
                        for (t, &v) in taps_of_i.iter().enumerate() {
                            dst[reads.index(taps, per_block, ib, ic, t, i)].0[lane] = v * s;
                        }
                    }
                }
            });
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
            groups,
            input,
            ib0,
            n_ib,
            reads,
            winograd,
        })
    }

    /// Packs Candle tensors: a weight `[C_out, C_in / groups, k_h, k_w]` and a bias with `C_out`
    /// values (any shape), both f32 on the CPU (a model packs its folded conv+BN this way once, at
    /// load; the weight is read in place when it is contiguous).
    pub fn from_tensors(
        weight: &Tensor,
        bias: Option<&Tensor>,
        geometry: ConvGeometry,
        input: InputLayout,
    ) -> Result<Self> {
        Self::from_tensors_scaled(weight, None, bias, geometry, input, Algorithm::Auto)
    }

    /// [`PackedConv::from_tensors`] with a per-output-channel scale folded in
    /// ([`PackedConv::new_scaled`]).
    pub fn from_tensors_scaled(
        weight: &Tensor,
        scale: Option<&Tensor>,
        bias: Option<&Tensor>,
        geometry: ConvGeometry,
        input: InputLayout,
        algorithm: Algorithm,
    ) -> Result<Self> {
        let (o, i, kh, kw) = weight.dims4()?;
        let with_f32s = |t: &Tensor, f: &mut dyn FnMut(&[f32]) -> Result<Self>| -> Result<Self> {
            if t.dtype() != DType::F32 {
                bail!("nchwc: takes f32 weights, not {:?}", t.dtype());
            }
            let (storage, layout) = t.storage_and_layout();
            if let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
                return f(&cpu.as_slice::<f32>()?[a..b]);
            }
            drop(storage);
            f(&t.flatten_all()?.to_vec1::<f32>()?)
        };
        let vec = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let b = bias.map(vec).transpose()?;
        let s = scale.map(vec).transpose()?;
        with_f32s(weight, &mut |w| {
            Self::new_scaled(
                w,
                [o, i, kh, kw],
                s.as_deref(),
                b.as_deref(),
                geometry,
                input,
                algorithm,
            )
        })
    }

    /// The weight back in PyTorch's OIHW layout, `[C_out, C_in / groups, k_h, k_w]`, and the bias
    /// (a Winograd layer's weight to f32 rounding, from its transform).
    pub fn unpack(&self) -> (Vec<f32>, Vec<f32>) {
        (self.unpack_weight(), self.unpack_bias())
    }

    /// The bias, `C_out` values (zeros for a convolution packed without one).
    pub fn unpack_bias(&self) -> Vec<f32> {
        (0..self.c_out)
            .map(|o| self.bias[o / PAIR].0[o % PAIR])
            .collect()
    }

    /// The weight in OIHW (see [`PackedConv::unpack`]).
    pub fn unpack_weight(&self) -> Vec<f32> {
        if let Some(w) = &self.winograd {
            return w.unpack(self.c_out, self.c_in);
        }
        let (c_out, kh, kw) = (self.c_out, self.kh, self.kw);
        let cin_g = self.c_in / self.groups;
        let cout_g = c_out / self.groups;
        let per_block = self.in_blocks().1;
        let taps = kh * kw;
        let per_pair = self.reads.per_pair(self.n_ib, taps, per_block);
        let mut weight = vec![0f32; c_out * cin_g * kh * kw];
        for o in 0..c_out {
            let (pair, lane, g) = (o / PAIR, o % PAIR, o / cout_g);
            for i in 0..cin_g {
                let gi = g * cin_g + i;
                let ib = gi / per_block - self.ib0[pair];
                let ic = gi % per_block;
                for ky in 0..kh {
                    for kx in 0..kw {
                        let tap = ky * kw + kx;
                        let at =
                            pair * per_pair + self.reads.index(taps, per_block, ib, ic, tap, i);
                        weight[((o * cin_g + i) * kh + ky) * kw + kx] = self.weights[at].0[lane];
                    }
                }
            }
        }
        weight
    }

    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.c_out
    }

    /// Input channels.
    pub fn c_in(&self) -> usize {
        self.c_in
    }

    /// Whether this convolution runs as Winograd (F(2x2, 3x3) or F(4x4, 3x3)).
    pub fn is_winograd(&self) -> bool {
        self.winograd.is_some()
    }

    /// The Winograd transform this convolution runs, if any.
    pub fn winograd_variant(&self) -> Option<Variant> {
        self.winograd.as_ref().map(Winograd::variant)
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

    /// Multiply-adds of one image (counting the logical channels only, per group).
    pub fn macs_per_image(&self, h: usize, w: usize) -> usize {
        let (ho, wo) = self.output_size(h, w).unwrap_or((0, 0));
        ho * wo * self.c_out * self.c_in / self.groups * self.kh * self.kw
    }

    /// Input blocks a pair of output blocks reads, and channels per block.
    pub(super) fn in_blocks(&self) -> (usize, usize) {
        match self.input {
            InputLayout::Blocked => (self.n_ib, BLOCK),
            InputLayout::Nchw => (1, self.c_in),
        }
    }
}
