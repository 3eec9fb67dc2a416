//! The layers between convolutions, in NCHW8c: max pooling (the stem's), ResNet-D's average
//! pooling, the paper's zero-padding shortcut, a per-channel affine + ReLU (a pre-activation
//! BatchNorm) and the global average pool.
//!
//! Each writes every element of its output, the padded lanes of the last block included: they are
//! zero in every input, and stay zero here (max and mean of zeros, zero scale and shift).

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::layout::{Arena, Nchw8c, BLOCK};

type Lanes = [f32; BLOCK];

fn lanes(x: &[f32], at: usize) -> Lanes {
    let mut v = [0.0; BLOCK];
    v.copy_from_slice(&x[at..at + BLOCK]);
    v
}

/// `MaxPool2d(k, stride, padding)` (implicit `-inf` padding) of the input zero-padded by
/// `zero_pad` on every side first (timm's fixed-padding stems; 0 elsewhere).
pub fn max_pool(
    x: &Nchw8c,
    k: usize,
    stride: usize,
    padding: usize,
    zero_pad: usize,
    arena: &Arena,
) -> Result<Nchw8c> {
    let (hz, wz) = (x.h + 2 * zero_pad, x.w + 2 * zero_pad);
    if k == 0 || stride == 0 || padding >= k || hz + 2 * padding < k || wz + 2 * padding < k {
        bail!(
            "nchwc max pool: kernel {k} stride {stride} padding {padding} on {}x{}",
            x.h,
            x.w
        );
    }
    let ho = (hz + 2 * padding - k) / stride + 1;
    let wo = (wz + 2 * padding - k) / stride + 1;
    let mut out = Nchw8c::scratch(arena, x.n, x.c, ho, wo);
    let (h, w) = (x.h, x.w);
    let src = x.as_slice();
    // A position of the zero-padded input: `None` in the `-inf` padding, `Some(None)` in the zeros.
    let at = |p: usize, size: usize| -> Option<Option<usize>> {
        let p = p.checked_sub(padding)?;
        (p < size + 2 * zero_pad).then(|| p.checked_sub(zero_pad).filter(|&q| q < size))
    };
    out.as_mut_slice()
        .par_chunks_mut(ho * wo * BLOCK)
        .zip(src.par_chunks(h * w * BLOCK))
        .for_each(|(dst, plane)| {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut m = [f32::NEG_INFINITY; BLOCK];
                    for ky in 0..k {
                        let Some(y) = at(oy * stride + ky, h) else {
                            continue;
                        };
                        for kx in 0..k {
                            let Some(xx) = at(ox * stride + kx, w) else {
                                continue;
                            };
                            let v = match (y, xx) {
                                (Some(y), Some(xx)) => lanes(plane, (y * w + xx) * BLOCK),
                                _ => [0.0; BLOCK],
                            };
                            for l in 0..BLOCK {
                                m[l] = m[l].max(v[l]);
                            }
                        }
                    }
                    dst[(oy * wo + ox) * BLOCK..][..BLOCK].copy_from_slice(&m);
                }
            }
        });
    Ok(out)
}

/// `AvgPool2d(k, stride=k, ceil_mode=True, count_include_pad=False)`: ResNet-D's shortcut pool.
pub fn avg_pool_ceil(x: &Nchw8c, k: usize, arena: &Arena) -> Result<Nchw8c> {
    if k == 0 {
        bail!("nchwc avg pool: kernel 0");
    }
    let (h, w) = (x.h, x.w);
    let (ho, wo) = (h.div_ceil(k), w.div_ceil(k));
    let mut out = Nchw8c::scratch(arena, x.n, x.c, ho, wo);
    out.as_mut_slice()
        .par_chunks_mut(ho * wo * BLOCK)
        .zip(x.as_slice().par_chunks(h * w * BLOCK))
        .for_each(|(dst, plane)| {
            for oy in 0..ho {
                let rows = oy * k..(oy * k + k).min(h);
                for ox in 0..wo {
                    let cols = ox * k..(ox * k + k).min(w);
                    let mut sum = [0f32; BLOCK];
                    for y in rows.clone() {
                        for xx in cols.clone() {
                            let v = lanes(plane, (y * w + xx) * BLOCK);
                            for l in 0..BLOCK {
                                sum[l] += v[l];
                            }
                        }
                    }
                    let count = (rows.len() * cols.len()) as f32;
                    let d = &mut dst[(oy * wo + ox) * BLOCK..][..BLOCK];
                    for l in 0..BLOCK {
                        d[l] = sum[l] / count;
                    }
                }
            }
        });
    Ok(out)
}

/// The paper's option-A shortcut: `x[:, :, ::stride, ::stride]` with `before` and `after` zero
/// channels around the input's.
pub fn zero_pad_shortcut(
    x: &Nchw8c,
    stride: usize,
    before: usize,
    after: usize,
    arena: &Arena,
) -> Result<Nchw8c> {
    if stride == 0 {
        bail!("nchwc zero-pad shortcut: stride 0");
    }
    let (h, w) = (x.h, x.w);
    let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
    let c = x.c + before + after;
    let mut out = Nchw8c::scratch(arena, x.n, c, ho, wo);
    let (in_blocks, out_blocks) = (x.blocks(), out.blocks());
    let src = x.as_slice();
    out.as_mut_slice()
        .par_chunks_mut(ho * wo * BLOCK)
        .enumerate()
        .for_each(|(idx, dst)| {
            let (image, ob) = (idx / out_blocks, idx % out_blocks);
            dst.fill(0.0);
            for l in 0..BLOCK {
                let Some(ic) = (ob * BLOCK + l).checked_sub(before).filter(|&i| i < x.c) else {
                    continue;
                };
                let plane = &src[(image * in_blocks + ic / BLOCK) * h * w * BLOCK..];
                for oy in 0..ho {
                    for ox in 0..wo {
                        let v = plane[((oy * stride) * w + ox * stride) * BLOCK + ic % BLOCK];
                        dst[(oy * wo + ox) * BLOCK + l] = v;
                    }
                }
            }
        });
    Ok(out)
}

/// A per-channel `relu(x * scale + shift)` (an inference BatchNorm and its ReLU), with the scale and
/// shift padded to whole blocks with zeros.
#[derive(Debug, Clone)]
pub struct AffineRelu {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl AffineRelu {
    /// `scale` and `shift` hold one value per channel.
    pub fn new(scale: &[f32], shift: &[f32]) -> Result<Self> {
        if scale.len() != shift.len() {
            bail!(
                "nchwc affine: {} scales for {} shifts",
                scale.len(),
                shift.len()
            );
        }
        let padded = |v: &[f32]| {
            let mut p = v.to_vec();
            p.resize(v.len().div_ceil(BLOCK) * BLOCK, 0.0);
            p
        };
        Ok(Self {
            scale: padded(scale),
            shift: padded(shift),
        })
    }

    /// Channels.
    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    /// `relu(x * scale + shift)`, into a buffer from `arena`.
    pub fn forward(&self, x: &Nchw8c, arena: &Arena) -> Result<Nchw8c> {
        if x.blocks() * BLOCK != self.scale.len() {
            bail!(
                "nchwc affine of {} channels on an input of {}",
                self.scale.len(),
                x.c
            );
        }
        let mut out = Nchw8c::scratch(arena, x.n, x.c, x.h, x.w);
        let (plane, blocks) = (x.h * x.w * BLOCK, x.blocks());
        out.as_mut_slice()
            .par_chunks_mut(plane)
            .zip(x.as_slice().par_chunks(plane))
            .enumerate()
            .for_each(|(idx, (dst, src))| {
                let b = idx % blocks;
                let scale = lanes(&self.scale, b * BLOCK);
                let shift = lanes(&self.shift, b * BLOCK);
                for (d, s) in dst.chunks_exact_mut(BLOCK).zip(src.chunks_exact(BLOCK)) {
                    for l in 0..BLOCK {
                        d[l] = (s[l] * scale[l] + shift[l]).max(0.0);
                    }
                }
            });
        Ok(out)
    }
}

/// The mean of every channel over its plane: `[N, C]` values, image-major.
pub fn global_avg_pool(x: &Nchw8c) -> Vec<f32> {
    let (plane, blocks, c) = (x.h * x.w, x.blocks(), x.c);
    let mut out = vec![0f32; x.n * c];
    if plane == 0 {
        return out;
    }
    out.par_chunks_mut(c).enumerate().for_each(|(image, dst)| {
        for b in 0..blocks {
            let src = &x.as_slice()[(image * blocks + b) * plane * BLOCK..][..plane * BLOCK];
            let mut sum = [0f32; BLOCK];
            for px in src.chunks_exact(BLOCK) {
                for l in 0..BLOCK {
                    sum[l] += px[l];
                }
            }
            for l in 0..BLOCK.min(c - b * BLOCK) {
                dst[b * BLOCK + l] = sum[l] / plane as f32;
            }
        }
    });
    out
}
