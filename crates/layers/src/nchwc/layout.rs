//! The blocked activation layout NCHW8c and its conversions from and to NCHW.
//!
//! `[N, C, H, W]` becomes `[N, ceil(C / 8), H, W, 8]`: the 8 channels of one block are adjacent, so
//! one 256-bit load reads 8 channels of one pixel. Channels past `C` in the last block are zero
//! (and stay zero through every kernel: their packed weights, bias and residual lanes are zero).

use candle_core::{bail, DType, Device, Result, Tensor};
use std::sync::Mutex;

use rayon::prelude::*;

/// Channels per block: one AVX2 register of f32.
pub const BLOCK: usize = 8;

/// An f32 activation in the NCHW8c layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Nchw8c {
    /// At least [`Nchw8c::len`] values, `[N, C/8, H, W, 8]`; a buffer from an [`Arena`] may be
    /// longer (the values past `len` are not part of the activation).
    data: Vec<f32>,
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

    /// An activation of the given shape in a buffer from `arena`, holding stale values: the caller
    /// writes every element, the padded lanes included (with zeros).
    pub(crate) fn scratch(arena: &Arena, n: usize, c: usize, h: usize, w: usize) -> Self {
        let len = n * c.div_ceil(BLOCK) * h * w * BLOCK;
        Self {
            data: arena.take(len),
            n,
            c,
            h,
            w,
        }
    }

    /// The batches of `parts` one after the other, in a buffer from `arena`; the parts must agree
    /// in channels, height and width.
    pub fn concat(parts: &[Nchw8c], arena: &Arena) -> Result<Self> {
        let Some(first) = parts.first() else {
            bail!("nchwc: nothing to concatenate");
        };
        let (c, h, w) = (first.c, first.h, first.w);
        if let Some(p) = parts.iter().find(|p| (p.c, p.h, p.w) != (c, h, w)) {
            bail!(
                "nchwc: cannot concatenate [{}, {}, {}, {}] to [_, {c}, {h}, {w}]",
                p.n,
                p.c,
                p.h,
                p.w
            );
        }
        let n = parts.iter().map(|p| p.n).sum();
        let mut out = Self::scratch(arena, n, c, h, w);
        let mut at = 0;
        for p in parts {
            out.as_mut_slice()[at..at + p.len()].copy_from_slice(p.as_slice());
            at += p.len();
        }
        Ok(out)
    }

    /// Values of the activation: `n * blocks() * h * w * 8`.
    pub fn len(&self) -> usize {
        self.n * self.blocks() * self.h * self.w * BLOCK
    }

    /// Whether the activation has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values, `[N, C/8, H, W, 8]`.
    pub fn as_slice(&self) -> &[f32] {
        &self.data[..self.len()]
    }

    /// The values, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        let len = self.len();
        &mut self.data[..len]
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
                let src = &self.as_slice()[(image * cb + block) * plane * BLOCK..][..plane * BLOCK];
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

/// Activation buffers reused across the layers of a forward pass and across passes, so that a
/// forward allocates nothing once the first one has run (fresh memory also costs page faults).
///
/// Shared by the threads of a model (a mutex around the free list, taken twice per layer).
#[derive(Debug, Default)]
pub struct Arena {
    free: Mutex<Vec<Vec<f32>>>,
}

impl Clone for Arena {
    /// A clone starts with no buffers of its own.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Arena {
    /// An empty arena.
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer of at least `len` values: the smallest free one that is long enough, else the
    /// longest grown (zeros past its old length), else a new one.
    fn take(&self, len: usize) -> Vec<f32> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let fit = (0..free.len())
            .filter(|&i| free[i].len() >= len)
            .min_by_key(|&i| free[i].len());
        let pick = fit.or_else(|| (0..free.len()).max_by_key(|&i| free[i].len()));
        let mut buf = match pick {
            Some(i) => free.swap_remove(i),
            None => Vec::new(),
        };
        drop(free);
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        buf
    }

    /// Returns an activation's buffer for later layers.
    pub fn recycle(&self, x: Nchw8c) {
        if x.data.capacity() > 0 {
            self.free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(x.data);
        }
    }

    /// Frees every buffer.
    pub fn clear(&self) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).clear();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn concat_appends_batches_and_refuses_other_shapes() {
        let values = |n: usize, c: usize, start: f32| -> Vec<f32> {
            (0..n * c * 3 * 2).map(|i| start + i as f32).collect()
        };
        let a = Nchw8c::from_nchw(&values(1, 5, 0.), 1, 5, 3, 2).unwrap();
        let b = Nchw8c::from_nchw(&values(2, 5, 100.), 2, 5, 3, 2).unwrap();
        let arena = Arena::new();
        let ab = Nchw8c::concat(&[a.clone(), b], &arena).unwrap();
        assert_eq!((ab.n, ab.c, ab.h, ab.w), (3, 5, 3, 2));
        let mut expected = values(1, 5, 0.);
        expected.extend(values(2, 5, 100.));
        assert_eq!(ab.to_nchw(), expected);
        let other = Nchw8c::zeros(1, 6, 3, 2);
        let err = Nchw8c::concat(&[a, other], &arena).unwrap_err().to_string();
        assert!(err.contains("[1, 6, 3, 2]"), "{err}");
        assert!(Nchw8c::concat(&[], &arena).is_err());
    }
}
