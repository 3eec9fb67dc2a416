//! The CPU forward pass in the channel-blocked layout NCHW8c (issue #12).
//!
//! A model on the CPU in f32 packs every convolution as it loads it ([`Blocked::choose`]); its forward
//! then reads the NCHW input with the stem's convolution, keeps every block, shortcut, pool and
//! residual in NCHW8c, and converts back only what the caller sees: a feature map asked for, the
//! last feature map, or the pooled embedding (pooled in NCHW8c). Activations come from one
//! [`Arena`] per model, so a forward allocates no activation once the first has run.
//!
//! A model the blocked kernels do not cover (GroupNorm, a grouping that does not fit the blocks,
//! another device or dtype, `RESNET_ZOO_ISA=off`) runs the NCHW path of `model.rs` instead.

use std::borrow::Cow;

use candle_core::{bail, DType, Device, Result, Tensor};
use rayon::prelude::*;
use resnet_zoo_layers::nchwc::{
    avg_pool_ceil, max_pool, zero_pad_shortcut, AffineRelu, Arena, Input, InputLayout, Isa, Nchw8c,
    PackedConv,
};
use resnet_zoo_layers::{ConvBn, NormAct, Shortcut};

use crate::block::{Block, BlockPlan};
use crate::config::{NormKind, ResNetConfig};
use crate::model::ResNet;
use crate::stem::stem_plan;

pub(crate) mod timing;
use timing::{Site, Timing};

/// What a packed model keeps for its blocked forward: the kernels, the norms that are layers of
/// their own (pre-activation networks) as per-channel affines, and the activation arena.
#[derive(Debug, Clone)]
pub(crate) struct Blocked {
    isa: Isa,
    /// `norm1` of every block, by stage (empty for post-activation networks).
    norm1: Vec<Vec<Option<AffineRelu>>>,
    /// The norm after the last stage (pre-activation networks).
    final_norm: Option<AffineRelu>,
    arena: Arena,
    /// Per-convolution wall times, off unless switched on.
    timing: Timing,
}

/// The per-channel affine of a BatchNorm + ReLU layer.
fn affine(norm: &NormAct) -> Result<AffineRelu> {
    match norm {
        NormAct::Affine { scale, shift } => AffineRelu::new(
            &scale.flatten_all()?.to_vec1::<f32>()?,
            &shift.flatten_all()?.to_vec1::<f32>()?,
        ),
        NormAct::Group { .. } => bail!("nchwc: GroupNorm has no blocked kernel"),
    }
}

impl Blocked {
    /// The kernels a model of `cfg` (with its stage `plans`) loaded on `device` in `dtype` runs in NCHW8c: `None` unless it
    /// is an f32 model on the CPU with BatchNorm, every convolution fits the blocked layout, and
    /// `RESNET_ZOO_ISA` allows ([`Isa::configured`]).
    pub(crate) fn choose(
        cfg: &ResNetConfig,
        plans: &[Vec<BlockPlan>],
        device: &Device,
        dtype: DType,
    ) -> Result<Option<Isa>> {
        if !device.is_cpu() || dtype != DType::F32 || cfg.norm != NormKind::BatchNorm {
            return Ok(None);
        }
        let Some(isa) = Isa::configured()? else {
            return Ok(None);
        };
        let stem = stem_plan(cfg).convs;
        let stem_fits = stem.iter().enumerate().all(|(i, c)| {
            let layout = match i {
                0 => InputLayout::Nchw,
                _ => InputLayout::Blocked,
            };
            c.cfg.can_pack(layout)
        });
        let blocks_fit = plans
            .iter()
            .flatten()
            .flat_map(|b| b.layers().all())
            .all(|c| c.cfg.can_pack(InputLayout::Blocked));
        Ok((stem_fits && blocks_fit).then_some(isa))
    }

    /// The blocked path of `model`, whose convolutions were packed as it was built.
    pub(crate) fn new(model: &ResNet, isa: Isa) -> Result<Self> {
        let norm1 = model
            .stages
            .iter()
            .map(|s| {
                s.blocks
                    .iter()
                    .map(|b| match b {
                        Block::PreActBottleneck(b) => affine(&b.norm1).map(Some),
                        _ => Ok(None),
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = model.norm.as_ref().map(affine).transpose()?;
        Ok(Self {
            isa,
            norm1,
            final_norm,
            arena: Arena::new(),
            timing: Timing::default(),
        })
    }

    /// The kernels this model runs.
    pub(crate) fn isa(&self) -> Isa {
        self.isa
    }

    fn conv(
        &self,
        site: Site,
        layer: &ConvBn,
        x: &Nchw8c,
        residual: Option<&Nchw8c>,
        relu: bool,
    ) -> Result<Nchw8c> {
        self.timing.time(site, layer, x.n, (x.h, x.w), || {
            packed(layer)?.forward_in(Input::Blocked(x), residual, relu, self.isa, &self.arena)
        })
    }

    /// The shortcut of block `at` (stage, block).
    fn shortcut<'a>(
        &self,
        at: (usize, usize),
        s: &Shortcut,
        x: &'a Nchw8c,
    ) -> Result<Cow<'a, Nchw8c>> {
        let site = block_site(at, "shortcut");
        Ok(Cow::Owned(match s {
            Shortcut::Identity => return Ok(Cow::Borrowed(x)),
            Shortcut::Projection(proj) => self.conv(site, proj, x, None, false)?,
            Shortcut::AvgDown { stride, proj } if *stride > 1 => {
                let pooled = avg_pool_ceil(x, *stride, &self.arena)?;
                let y = self.conv(site, proj, &pooled, None, false)?;
                self.arena.recycle(pooled);
                y
            }
            Shortcut::AvgDown { proj, .. } => self.conv(site, proj, x, None, false)?,
            Shortcut::ZeroPad {
                stride,
                before,
                after,
            } => zero_pad_shortcut(x, *stride, *before, *after, &self.arena)?,
        }))
    }

    fn recycle(&self, x: Cow<'_, Nchw8c>) {
        if let Cow::Owned(x) = x {
            self.arena.recycle(x);
        }
    }

    /// Residual block `at` (stage, block) on `x` (see `Block::forward` for the same computation
    /// in NCHW).
    fn block(
        &self,
        at: (usize, usize),
        block: &Block,
        norm1: Option<&AffineRelu>,
        x: &Nchw8c,
    ) -> Result<Nchw8c> {
        let [c1, c2, c3] = ["conv1", "conv2", "conv3"].map(|c| block_site(at, c));
        match block {
            Block::Basic(b) => {
                let y = self.conv(c1, &b.conv1, x, None, true)?;
                let sc = self.shortcut(at, &b.shortcut, x)?;
                let out = self.conv(c2, &b.conv2, &y, Some(&sc), true)?;
                self.arena.recycle(y);
                self.recycle(sc);
                Ok(out)
            }
            Block::Bottleneck(b) => {
                let y1 = self.conv(c1, &b.conv1, x, None, true)?;
                let y2 = self.conv(c2, &b.conv2, &y1, None, true)?;
                self.arena.recycle(y1);
                let sc = self.shortcut(at, &b.shortcut, x)?;
                let out = self.conv(c3, &b.conv3, &y2, Some(&sc), true)?;
                self.arena.recycle(y2);
                self.recycle(sc);
                Ok(out)
            }
            Block::PreActBottleneck(b) => {
                let Some(norm1) = norm1 else {
                    bail!("nchwc: a pre-activation block without its norm");
                };
                let pre = norm1.forward(x, &self.arena)?;
                let sc = match &b.shortcut {
                    Shortcut::Identity => Cow::Borrowed(x),
                    // Not the identity, so owned: `into_owned` moves it out of `pre`'s borrow.
                    s => Cow::Owned(self.shortcut(at, s, &pre)?.into_owned()),
                };
                // `norm2` and `norm3` are folded into `conv1` and `conv2`, leaving their ReLUs.
                let y1 = self.conv(c1, &b.conv1, &pre, None, true)?;
                self.arena.recycle(pre);
                let y2 = self.conv(c2, &b.conv2, &y1, None, true)?;
                self.arena.recycle(y1);
                let out = self.conv(c3, &b.conv3, &y2, Some(&sc), false)?;
                self.arena.recycle(y2);
                self.recycle(sc);
                Ok(out)
            }
        }
    }

    /// Runs `model` on `x` (`[N, C, H, W]` f32, checked by the caller) through stage `last`
    /// (0 = the stem alone), calling `tap(i, map)` with feature map `i` as it is made (0 = the stem
    /// before its pool, `i` = stage `i`). Returns the last map.
    ///
    /// The whole pass runs on a thread of the rayon pool: each layer's parallel loop then starts
    /// from a worker, which takes part in it, rather than handing work to the pool and sleeping
    /// until it is done, once per layer (on a virtual machine each such wake-up can take tens of
    /// microseconds).
    pub(crate) fn run(
        &self,
        model: &ResNet,
        x: &Tensor,
        last: usize,
        tap: impl FnMut(usize, &Nchw8c) -> Result<()> + Send,
    ) -> Result<Nchw8c> {
        rayon::scope(|_| self.run_here(model, x, last, tap))
    }

    fn run_here(
        &self,
        model: &ResNet,
        x: &Tensor,
        last: usize,
        mut tap: impl FnMut(usize, &Nchw8c) -> Result<()>,
    ) -> Result<Nchw8c> {
        let (n, _, h, w) = x.dims4()?;
        let data = x.flatten_all()?.to_vec1::<f32>()?;
        let stem = &model.stem;
        let Some((first, rest)) = stem.convs.split_first() else {
            bail!("nchwc: a stem without a convolution");
        };
        let input = Input::Nchw {
            data: &data,
            n,
            h,
            w,
        };
        let mut y = self.timing.time(Site::Stem(0), first, n, (h, w), || {
            packed(first)?.forward_in(input, None, stem.relu, self.isa, &self.arena)
        })?;
        for (i, conv) in rest.iter().enumerate() {
            let next = self.conv(Site::Stem(i + 1), conv, &y, None, stem.relu)?;
            self.arena.recycle(std::mem::replace(&mut y, next));
        }
        tap(0, &y)?;
        if last == 0 {
            return Ok(y);
        }
        let pool = stem.pool.map(|p| (p.kernel_size, p.stride, p.padding));
        if pool.is_some() || stem.zero_pad > 0 {
            // Without a pool, the zero padding alone is a 1x1 max of the padded map.
            let (k, s, p) = pool.unwrap_or((1, 1, 0));
            let pooled = max_pool(&y, k, s, p, stem.zero_pad, &self.arena)?;
            self.arena.recycle(std::mem::replace(&mut y, pooled));
        }
        for (i, stage) in model.stages.iter().enumerate().take(last) {
            for (b, block) in stage.blocks.iter().enumerate() {
                let norm1 = self
                    .norm1
                    .get(i)
                    .and_then(|s| s.get(b))
                    .and_then(Option::as_ref);
                let next = self.block((i, b), block, norm1, &y)?;
                self.arena.recycle(std::mem::replace(&mut y, next));
            }
            tap(i + 1, &y)?;
        }
        Ok(y)
    }

    /// The last stage's map after the final norm (pre-activation networks), in NCHW8c.
    ///
    /// A batch runs image by image, one image per thread, rather than layer by layer over the whole
    /// batch: no thread then waits for the other at the end of every layer, and one image's maps
    /// stay in the caches where a batch's stream through memory (25 MB per layer for ResNet-50 at
    /// batch 8). A thread that runs out of images takes part in the layers of the others' (rayon's
    /// work stealing), so an odd batch still keeps both busy. Each image's arithmetic is the same
    /// either way, so the values are identical.
    pub(crate) fn features(&self, model: &ResNet, x: &Tensor) -> Result<Nchw8c> {
        let n = x.dim(0)?;
        if n < 2 || rayon::current_num_threads() < 2 {
            return self.features_of(model, x);
        }
        let maps = (0..n)
            .into_par_iter()
            .map(|i| self.features_of(model, &x.narrow(0, i, 1)?))
            .collect::<Result<Vec<_>>>()?;
        let out = Nchw8c::concat(&maps, &self.arena);
        for map in maps {
            self.arena.recycle(map);
        }
        out
    }

    /// [`Blocked::features`] of the whole of `x` in one pass.
    fn features_of(&self, model: &ResNet, x: &Tensor) -> Result<Nchw8c> {
        let y = self.run(model, x, model.stages.len(), |_, _| Ok(()))?;
        match &self.final_norm {
            Some(norm) => {
                let normed = norm.forward(&y, &self.arena)?;
                self.arena.recycle(y);
                Ok(normed)
            }
            None => Ok(y),
        }
    }

    /// Returns a map's buffer to the arena.
    pub(crate) fn recycle_map(&self, x: Nchw8c) {
        self.arena.recycle(x);
    }
}

fn block_site((stage, block): (usize, usize), conv: &'static str) -> Site {
    Site::Block { stage, block, conv }
}

fn packed(layer: &ConvBn) -> Result<&PackedConv> {
    match layer.packed() {
        Some(p) => Ok(p),
        None => bail!("nchwc: a layer of a packed model is not packed"),
    }
}

#[cfg(test)]
mod tests;
