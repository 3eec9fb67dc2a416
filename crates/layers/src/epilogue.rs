//! What follows a convolution, `relu?(y + bias + residual)`: the public [`Epilogue`] of tensors,
//! and [`EpilogueData`], its slices as the CPU kernels read them, either written into a tile before
//! its GEMM accumulates (`tiled.rs`) or applied to finished output planes (grouped convolutions).

use candle_core::Tensor;
use rayon::prelude::*;

use crate::geometry::ConvShape;

/// What follows the convolution: `relu?(y + bias + residual)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// One value per output channel, any shape with `C_out` elements (`[C_out]`, `[1, C_out, 1, 1]`).
    pub bias: Option<&'a Tensor>,
    /// A tensor of the output's shape, added before the ReLU (a residual block's shortcut).
    pub residual: Option<&'a Tensor>,
    pub relu: bool,
}

/// An [`Epilogue`] as contiguous f32 slices: `bias` has `C_out` values, `residual` the output's.
#[derive(Clone, Copy)]
pub(crate) struct EpilogueData<'a> {
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) residual: Option<&'a [f32]>,
    pub(crate) relu: bool,
}

impl EpilogueData<'_> {
    /// Whether the output starts from a bias or a residual rather than from zero.
    pub(crate) fn fills(&self) -> bool {
        self.bias.is_some() || self.residual.is_some()
    }

    /// Writes `bias[channel] + residual[offset..]` into `dst` (output offset `offset`).
    pub(crate) fn write(&self, dst: &mut [f32], channel: usize, offset: usize) {
        let b = self.bias.map_or(0.0, |b| b[channel]);
        match self.residual {
            Some(r) => {
                for (o, &r) in dst.iter_mut().zip(&r[offset..]) {
                    *o = r + b;
                }
            }
            None => dst.fill(b),
        }
    }

    /// The whole epilogue as a pass over finished output planes of shape `d`.
    pub(crate) fn apply_to_planes(&self, out: &mut [f32], d: ConvShape) {
        let plane = d.ho * d.wo;
        if !self.fills() && !self.relu {
            return;
        }
        out.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(idx, dst)| {
                let b = self.bias.map_or(0.0, |b| b[idx % d.c_out]);
                match self.residual {
                    Some(r) => {
                        for (o, &r) in dst.iter_mut().zip(&r[idx * plane..]) {
                            *o += r + b;
                        }
                    }
                    None if b != 0.0 => dst.iter_mut().for_each(|o| *o += b),
                    None => {}
                }
                if self.relu {
                    relu_in_place(dst);
                }
            });
    }
}

pub(crate) fn relu_in_place(v: &mut [f32]) {
    for o in v {
        *o = o.max(0.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use candle_core::Shape;

    use super::*;
    use crate::ConvGeometry;

    /// The tile path (`write` then accumulate, ReLU after) and the plane path give the same values.
    #[test]
    fn fill_and_planes_agree() {
        let g = ConvGeometry {
            stride: 1,
            padding: 0,
            groups: 1,
        };
        // Output [2, 3, 1, 2]: 12 values.
        let d = ConvShape::new(&Shape::from((2, 1, 1, 2)), &Shape::from((3, 1, 1, 1)), g).unwrap();
        let conv: Vec<f32> = (0..12).map(|i| i as f32 - 6.0).collect();
        let bias = [0.5f32, -1.0, 2.0];
        let residual: Vec<f32> = (0..12).map(|i| (i % 5) as f32 - 2.0).collect();
        for (bias, residual, relu) in [
            (None, None, true),
            (Some(&bias[..]), None, false),
            (Some(&bias[..]), Some(&residual[..]), true),
            (None, Some(&residual[..]), false),
        ] {
            let e = EpilogueData {
                bias,
                residual,
                relu,
            };
            let want: Vec<f32> = (0..12)
                .map(|i| {
                    let y = conv[i]
                        + bias.map_or(0.0, |b| b[i / 2 % 3])
                        + residual.map_or(0.0, |r| r[i]);
                    if relu {
                        y.max(0.0)
                    } else {
                        y
                    }
                })
                .collect();
            let mut planes = conv.clone();
            e.apply_to_planes(&mut planes, d);
            assert_eq!(planes, want);
            let mut tiles = vec![f32::NAN; 12];
            for (idx, dst) in tiles.chunks_mut(2).enumerate() {
                e.write(dst, idx % 3, idx * 2);
                for (o, c) in dst.iter_mut().zip(&conv[idx * 2..]) {
                    *o += c;
                }
                if relu {
                    relu_in_place(dst);
                }
            }
            assert_eq!(tiles, want);
        }
    }
}
