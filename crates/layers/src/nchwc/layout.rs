//! The blocked activation layout NCHW8c and its conversions from and to NCHW.
//!
//! `[N, C, H, W]` becomes `[N, ceil(C / 8), H, W, 8]`: the 8 channels of one block are adjacent, so
//! one 256-bit load reads 8 channels of one pixel. Channels past `C` in the last block are zero
//! (and stay zero through every kernel: their packed weights, bias and residual lanes are zero).

use candle_core::{bail, DType, Device, Result, Tensor};
use rayon::prelude::*;

/// Channels per block: one AVX2 register of f32.
pub const BLOCK: usize = 8;

/// An f32 activation in the NCHW8c layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Nchw8c {
    /// `n * blocks() * h * w * 8` values, `[N, C/8, H, W, 8]`.
    pub data: Vec<f32>,
    pub n: usize,
    /// Logical channels (the padded lanes of the last block are zero).
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Nchw8c {
    /// A zero activation of the given logical shape.
    pub fn zeros(n: usize, c: usize, h: usize, w: usize) -> Self {
        Self {
            data: vec![0.0; n * c.div_ceil(BLOCK) * h * w * BLOCK],
            n,
            c,
            h,
            w,
        }
    }

    /// Channel blocks: `ceil(c / 8)`.
    pub fn blocks(&self) -> usize {
        self.c.div_ceil(BLOCK)
    }

    /// Converts NCHW data (`n * c * h * w` values) to NCHW8c, zero-padding the last block.
    pub fn from_nchw(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Result<Self> {
        if x.len() != n * c * h * w {
            bail!(
                "nchwc: {} values are not an NCHW [{n}, {c}, {h}, {w}] tensor",
                x.len()
            );
        }
        let mut out = Self::zeros(n, c, h, w);
        let (plane, cb) = (h * w, out.blocks());
        if plane == 0 {
            return Ok(out);
        }
        out.data
            .par_chunks_mut(plane * BLOCK)
            .enumerate()
            .for_each(|(idx, dst)| {
                let (image, block) = (idx / cb, idx % cb);
                let lanes = BLOCK.min(c - block * BLOCK);
                for lane in 0..lanes {
                    let src = &x[(image * c + block * BLOCK + lane) * plane..][..plane];
                    for (px, &v) in dst.chunks_exact_mut(BLOCK).zip(src) {
                        px[lane] = v;
                    }
                }
            });
        Ok(out)
    }

    /// Back to NCHW (`n * c * h * w` values), dropping the padded lanes.
    pub fn to_nchw(&self) -> Vec<f32> {
        let (plane, cb, c) = (self.h * self.w, self.blocks(), self.c);
        let mut out = vec![0f32; self.n * c * plane];
        if plane == 0 {
            return out;
        }
        out.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(idx, dst)| {
                let (image, channel) = (idx / c, idx % c);
                let (block, lane) = (channel / BLOCK, channel % BLOCK);
                let src = &self.data[(image * cb + block) * plane * BLOCK..][..plane * BLOCK];
                for (o, px) in dst.iter_mut().zip(src.chunks_exact(BLOCK)) {
                    *o = px[lane];
                }
            });
        out
    }

    /// Converts a `[N, C, H, W]` f32 tensor (any device; copied to the CPU).
    pub fn from_tensor(x: &Tensor) -> Result<Self> {
        let (n, c, h, w) = x.dims4()?;
        if x.dtype() != DType::F32 {
            bail!("nchwc: takes f32 tensors, not {:?}", x.dtype());
        }
        let data = x.flatten_all()?.to_vec1::<f32>()?;
        Self::from_nchw(&data, n, c, h, w)
    }

    /// The `[N, C, H, W]` tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(self.to_nchw(), (self.n, self.c, self.h, self.w), device)
    }
}

thread_local! {
    /// The padded copy of a narrow input, kept across calls (fresh memory costs page faults).
    pub(super) static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies `planes` NCHW8c planes of `h x w` pixels into `buf` with `p` zero pixels on every side.
pub(super) fn pad_planes(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    p: usize,
    buf: &mut Vec<f32>,
) {
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    buf.resize(planes * hp * wp * BLOCK, 0.0);
    buf[..planes * hp * wp * BLOCK]
        .par_chunks_mut(hp * wp * BLOCK)
        .zip(x.par_chunks(h * w * BLOCK))
        .for_each(|(dst, src)| {
            for (r, row) in dst.chunks_exact_mut(wp * BLOCK).enumerate() {
                match r.checked_sub(p).filter(|&y| y < h) {
                    Some(y) => {
                        row[..p * BLOCK].fill(0.0);
                        row[(p + w) * BLOCK..].fill(0.0);
                        row[p * BLOCK..(p + w) * BLOCK]
                            .copy_from_slice(&src[y * w * BLOCK..(y + 1) * w * BLOCK]);
                    }
                    None => row.fill(0.0),
                }
            }
        });
}
