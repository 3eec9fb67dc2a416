//! Winograd F(2x2, 3x3) for stride-1, padding-1 3x3 convolutions in NCHW8c.
//!
//! Each 2x2 block of outputs ("tile") is computed from the 4x4 input patch around it with 16
//! multiplies per input/output channel pair instead of 36: `Y = A^T [(G g G^T) * (B^T d B)] A`.
//! The weight transform `U = G g G^T` runs once, at load, in f64; per forward:
//!
//! 1. the input transform writes `V = B^T d B` of every tile as 16 planes `[pos][C_in/8][tiles][8]`;
//! 2. 16 GEMMs, one per position, `M[pos] = V[pos] x U[pos]`, run on the 1x1-convolution
//!    micro-kernels (tiles play the part of pixels), all 16 in one parallel pass;
//! 3. the output transform `A^T M A` adds the bias and the residual, applies the ReLU and writes
//!    the 2x2 outputs of each tile (dropping those past an odd edge).
//!
//! The multiplies of a 3x3 convolution drop 2.25x; the transforms are additions only (and
//! halvings in `G`), so the f32 error stays close to the direct convolution's.

#![allow(clippy::needless_range_loop)] // 4x4 tiles: the indices are the transform's rows and columns

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::driver::Shared;
use super::kernel::{kernel, max_blocks, max_pixels, Isa, Tile};
use super::layout::{Arena, Nchw8c, BLOCK};
use super::pack::{Lanes, PAIR};

/// Positions of a 4x4 transformed tile.
const POS: usize = 16;
/// Input blocks per GEMM chunk (as the direct 1x1 path: 128 channels).
const CHUNK: usize = 16;
/// Tiles a GEMM task aims for.
const TASK_TILES: usize = 256;

/// Weights transformed for F(2x2, 3x3): `[C_out/16][16 pos][C_in/8][8][16 lanes]`.
#[derive(Debug, Clone)]
pub(super) struct Winograd {
    u: Vec<Lanes>,
    /// Zeros, one pair per output pair: the GEMM's starting "bias".
    zero: Vec<Lanes>,
}

/// `G g G^T` of one 3x3 filter (f64), `G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]`.
fn transform_filter(g: [[f64; 3]; 3]) -> [[f64; 4]; 4] {
    let rows = |v: [f64; 3]| {
        [
            v[0],
            (v[0] + v[1] + v[2]) / 2.0,
            (v[0] - v[1] + v[2]) / 2.0,
            v[2],
        ]
    };
    // G g: transform each column; then (G g) G^T: transform each row.
    let mut gg = [[0f64; 3]; 4];
    for c in 0..3 {
        let col = rows([g[0][c], g[1][c], g[2][c]]);
        for r in 0..4 {
            gg[r][c] = col[r];
        }
    }
    let mut u = [[0f64; 4]; 4];
    for r in 0..4 {
        u[r] = rows(gg[r]);
    }
    u
}

/// The inverse on rows 0, 1 and 3 of `G` (an invertible 3x3), giving the filter back from its
/// transform (to rounding).
fn untransform_filter(u: [[f64; 4]; 4]) -> [[f64; 3]; 3] {
    // From (g0, (g0 + g1 + g2) / 2, g2): g1 = 2 * u1 - g0 - g2.
    let back = |v: [f64; 4]| [v[0], 2.0 * v[1] - v[0] - v[3], v[3]];
    let mut half = [[0f64; 3]; 4];
    for r in 0..4 {
        half[r] = back(u[r]);
    }
    let mut g = [[0f64; 3]; 3];
    for c in 0..3 {
        let col = back([half[0][c], half[1][c], half[2][c], half[3][c]]);
        for r in 0..3 {
            g[r][c] = col[r];
        }
    }
    g
}

impl Winograd {
    /// Transforms an OIHW `[c_out, c_in, 3, 3]` weight, each filter scaled by `scale[o]` first
    /// (in f32, as a separate BatchNorm fold does).
    pub(super) fn new(weight: &[f32], c_out: usize, c_in: usize, scale: Option<&[f32]>) -> Self {
        let (pairs, n_ib) = (c_out.div_ceil(PAIR), c_in.div_ceil(BLOCK));
        let per_pos = n_ib * BLOCK;
        let mut u = vec![Lanes::default(); pairs * POS * per_pos];
        u.par_chunks_mut(POS * per_pos)
            .enumerate()
            .for_each(|(pair, dst)| {
                for (lane, o) in (pair * PAIR..(pair * PAIR + PAIR).min(c_out)).enumerate() {
                    let s = scale.map_or(1.0, |s| s[o]);
                    for i in 0..c_in {
                        let f = &weight[(o * c_in + i) * 9..][..9];
                        let g = std::array::from_fn(|r| {
                            std::array::from_fn(|c| f64::from(f[r * 3 + c] * s))
                        });
                        let t = transform_filter(g);
                        for pos in 0..POS {
                            dst[pos * per_pos + i].0[lane] = t[pos / 4][pos % 4] as f32;
                        }
                    }
                }
            });
        Self {
            u,
            zero: vec![Lanes::default(); pairs],
        }
    }

    /// The OIHW weight back (to rounding).
    pub(super) fn unpack(&self, c_out: usize, c_in: usize) -> Vec<f32> {
        let per_pos = c_in.div_ceil(BLOCK) * BLOCK;
        let mut w = vec![0f32; c_out * c_in * 9];
        for o in 0..c_out {
            let base = o / PAIR * POS * per_pos;
            for i in 0..c_in {
                let u = std::array::from_fn(|r| {
                    std::array::from_fn(|c| {
                        f64::from(self.u[base + (r * 4 + c) * per_pos + i].0[o % PAIR])
                    })
                });
                let g = untransform_filter(u);
                for r in 0..3 {
                    for c in 0..3 {
                        w[(o * c_in + i) * 9 + r * 3 + c] = g[r][c] as f32;
                    }
                }
            }
        }
        w
    }
}

/// `B^T d B` of the 4x4 patches along one 4-row band: `B^T = [[1, 0, -1, 0], [0, 1, 1, 0],
/// [0, -1, 1, 0], [0, 1, 0, -1]]`.
#[inline(always)]
fn bt(d: [[f32; BLOCK]; 4]) -> [[f32; BLOCK]; 4] {
    let mut t = [[0f32; BLOCK]; 4];
    for l in 0..BLOCK {
        t[0][l] = d[0][l] - d[2][l];
        t[1][l] = d[1][l] + d[2][l];
        t[2][l] = d[2][l] - d[1][l];
        t[3][l] = d[1][l] - d[3][l];
    }
    t
}

/// [`input_plane`] compiled for AVX2 + FMA (256-bit vectors for the `[f32; 8]` lanes).
///
/// # Safety
/// The CPU has AVX2 and FMA; as [`input_plane`] otherwise.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_plane_avx2(
    x: &[f32],
    h: usize,
    w: usize,
    tw: usize,
    th: usize,
    v: Shared,
    pos_stride: usize,
) {
    input_plane(x, h, w, tw, th, v, pos_stride)
}

/// The input transform of one input block's plane (`h x w` pixels of 8 channels) into the 16
/// position planes of that block (`v[pos]` is `tiles x 8` values at stride `pos_stride`), which
/// only this call writes.
#[inline(always)]
fn input_plane(x: &[f32], h: usize, w: usize, tw: usize, th: usize, v: Shared, pos_stride: usize) {
    let at = |y: isize, xx: isize| -> [f32; BLOCK] {
        if y < 0 || xx < 0 || y as usize >= h || xx as usize >= w {
            return [0.0; BLOCK];
        }
        let i = (y as usize * w + xx as usize) * BLOCK;
        let mut p = [0.0; BLOCK];
        p.copy_from_slice(&x[i..i + BLOCK]);
        p
    };
    for ty in 0..th {
        for tx in 0..tw {
            let (y0, x0) = (2 * ty as isize - 1, 2 * tx as isize - 1);
            // Columns of the patch, each transformed over its rows, then the rows over columns.
            let mut cols = [[[0f32; BLOCK]; 4]; 4];
            for (c, col) in cols.iter_mut().enumerate() {
                let d = std::array::from_fn(|r| at(y0 + r as isize, x0 + c as isize));
                *col = bt(d);
            }
            let t = ty * tw + tx;
            for r in 0..4 {
                let row = bt([cols[0][r], cols[1][r], cols[2][r], cols[3][r]]);
                for (c, vals) in row.iter().enumerate() {
                    // SAFETY: position `r * 4 + c`, tile `t` is inside `v` (the caller sized it),
                    // and only this call writes this block's tiles.
                    unsafe {
                        let dst = v.get().add((r * 4 + c) * pos_stride + t * BLOCK);
                        std::ptr::copy_nonoverlapping(vals.as_ptr(), dst, BLOCK);
                    }
                }
            }
        }
    }
}

/// `A^T m` over 4 values: `A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]`.
#[inline(always)]
fn at(m: [[f32; BLOCK]; 4]) -> [[f32; BLOCK]; 2] {
    let mut y = [[0f32; BLOCK]; 2];
    for l in 0..BLOCK {
        y[0][l] = m[0][l] + m[1][l] + m[2][l];
        y[1][l] = m[1][l] - m[2][l] - m[3][l];
    }
    y
}

/// The input and output shapes of one forward.
struct Dims {
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
    tiles: usize,
    n_ib: usize,
    n_ob: usize,
}

impl Winograd {
    /// `relu?(conv3x3(x) + bias + residual?)` with stride 1 and padding 1. `bias` holds 16 values
    /// per output pair; the shapes were checked by the caller.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &self,
        x: &Nchw8c,
        c_out: usize,
        bias: &[Lanes],
        residual: Option<&Nchw8c>,
        relu: bool,
        isa: Isa,
        arena: &Arena,
    ) -> Result<Nchw8c> {
        let (h, w) = (x.h, x.w);
        if h == 0 || w == 0 {
            bail!("nchwc winograd: empty input");
        }
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let d = Dims {
            h,
            w,
            th,
            tw,
            tiles: th * tw,
            n_ib: x.blocks(),
            n_ob: c_out.div_ceil(BLOCK),
        };
        let mut out = Nchw8c::scratch(arena, x.n, c_out, h, w);
        // Per image: V and M are 16 planes of tiles (4x the input and the output).
        let mut v = Nchw8c::scratch(arena, POS, x.c, 1, d.tiles);
        let mut m = Nchw8c::scratch(arena, POS, c_out, 1, d.tiles);
        let plane_in = h * w * BLOCK;
        let image_in = d.n_ib * plane_in;
        let image_out = d.n_ob * plane_in;
        for image in 0..x.n {
            let xi = &x.as_slice()[image * image_in..][..image_in];
            let vp = Shared(v.as_mut_slice().as_mut_ptr());
            let pos_stride = d.n_ib * d.tiles * BLOCK;
            xi.par_chunks(plane_in).enumerate().for_each(|(ib, plane)| {
                // SAFETY: block `ib`'s tiles, at offset `ib * tiles * 8` of each position plane.
                let dst = Shared(unsafe { vp.get().add(ib * d.tiles * BLOCK) });
                #[cfg(target_arch = "x86_64")]
                if isa != Isa::Portable {
                    // SAFETY: the SIMD kernels only run where the CPU has AVX2 and FMA
                    // (`Isa::available`, checked by `PackedConv::forward_in`).
                    return unsafe { input_plane_avx2(plane, h, w, tw, th, dst, pos_stride) };
                }
                input_plane(plane, h, w, tw, th, dst, pos_stride);
            });
            self.gemm(&d, v.as_slice(), m.as_mut_slice(), isa);
            let r = residual.map(|r| &r.as_slice()[image * image_out..][..image_out]);
            let o = &mut out.as_mut_slice()[image * image_out..][..image_out];
            output_transform(&d, m.as_slice(), bias, r, relu, o, isa);
        }
        arena.recycle(v);
        arena.recycle(m);
        Ok(out)
    }

    /// The 16 GEMMs `M[pos] = V[pos] x U[pos]` of one image, as tasks of (position, group of
    /// output pairs, run of tiles).
    fn gemm(&self, d: &Dims, v: &[f32], m: &mut [f32], isa: Isa) {
        // Weights `[pair][pos][C_in/8][8][16]`: a position's are `w_pos` apart, a pair's `w_pair`.
        let w_ib = BLOCK * PAIR;
        let w_pos = d.n_ib * w_ib;
        let w_pair = POS * w_pos;
        let unit = max_blocks(isa);
        let units = d.n_ob.div_ceil(unit);
        let runs = d.tiles.div_ceil(TASK_TILES);
        let per_run = d.tiles.div_ceil(runs);
        let threads = rayon::current_num_threads();
        let groups = (4 * threads).div_ceil(POS * runs).clamp(1, units);
        let units_per = units.div_ceil(groups);
        let groups = units.div_ceil(units_per);
        let dst = Shared(m.as_mut_ptr());
        let x_ib = d.tiles * BLOCK;
        (0..POS * groups * runs).into_par_iter().for_each(|task| {
            let u = self.u.as_ptr().cast::<f32>();
            let zero = self.zero.as_ptr().cast::<f32>();
            let pos = task / (groups * runs);
            let g = task / runs % groups;
            let t0 = task % runs * per_run;
            let tiles = t0..(t0 + per_run).min(d.tiles);
            let blocks = g * units_per * unit..((g + 1) * units_per * unit).min(d.n_ob);
            let x_pos = v[pos * d.n_ib * x_ib..].as_ptr();
            // SAFETY: this position's output planes.
            let out_pos = unsafe { dst.get().add(pos * d.n_ob * x_ib) };
            for c0 in (0..d.n_ib).step_by(CHUNK) {
                let mut ob = blocks.start;
                while ob < blocks.end {
                    let nb = match blocks.end - ob {
                        left if left >= 4 && isa == Isa::Avx512 => 4,
                        left => left.min(2),
                    };
                    let max_px = max_pixels(isa, nb);
                    let count = tiles.len();
                    let n_tiles = count.div_ceil(max_px);
                    let mut done = 0;
                    for i in 0..n_tiles {
                        let wt = (count - done).div_ceil(n_tiles - i);
                        let t = tiles.start + done;
                        let tile = Tile {
                            x: x_pos.wrapping_add(c0 * x_ib + t * BLOCK),
                            w: u.wrapping_add(ob / 2 * w_pair + pos * w_pos + c0 * w_ib),
                            bias: zero.wrapping_add(ob * BLOCK),
                            out: out_pos.wrapping_add((ob * d.tiles + t) * BLOCK),
                            residual: std::ptr::null(),
                            relu: false,
                            accumulate: c0 > 0,
                            finish: c0 + CHUNK >= d.n_ib,
                            n_ib: CHUNK.min(d.n_ib - c0),
                            x_ib,
                            w_ib,
                            icb: BLOCK,
                            x_ic: 1,
                            nky: 1,
                            x_row: 0,
                            w_row: 0,
                            nkx: 1,
                            x_col: 0,
                            w_col: 0,
                            x_pix: BLOCK,
                            w_pair,
                            out_ob: d.tiles * BLOCK,
                        };
                        // SAFETY: the tile's input (these tiles, input blocks c0..c0 + n_ib of this
                        // position), weights (this position, pairs of blocks ob..ob + nb) and
                        // output (these blocks and tiles, this task's alone) are in bounds, and
                        // `isa` is available (checked by the caller).
                        unsafe { kernel(isa, nb, wt)(&tile) };
                        done += wt;
                    }
                    ob += nb;
                }
            }
        });
    }
}

/// `A^T M A` of every tile of one image, plus bias and residual, then the ReLU, into `out`
/// (`[C_out/8][h][w][8]`).
fn output_transform(
    d: &Dims,
    m: &[f32],
    bias: &[Lanes],
    residual: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    isa: Isa,
) {
    let plane = d.h * d.w * BLOCK;
    out.par_chunks_mut(plane).enumerate().for_each(|(ob, o)| {
        let mut b = [0f32; BLOCK];
        b.copy_from_slice(&bias[ob / 2].0[ob % 2 * BLOCK..][..BLOCK]);
        let res = residual.map(|r| &r[ob * plane..][..plane]);
        let job = OutputPlane {
            d,
            m,
            ob,
            b,
            res,
            relu,
        };
        #[cfg(target_arch = "x86_64")]
        if isa != Isa::Portable {
            // SAFETY: the AVX2 and AVX-512 kernels only run where the CPU has AVX2 and FMA
            // (`Isa::available`, checked by `PackedConv::forward_in`).
            return unsafe { job.run_avx2(o) };
        }
        let _ = isa;
        job.run(o)
    });
}

/// The output transform of one output block's plane.
struct OutputPlane<'a> {
    d: &'a Dims,
    m: &'a [f32],
    ob: usize,
    b: [f32; BLOCK],
    res: Option<&'a [f32]>,
    relu: bool,
}

impl OutputPlane<'_> {
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, o: &mut [f32]) {
        self.run(o)
    }

    #[inline(always)]
    fn run(&self, o: &mut [f32]) {
        let (d, ob, b) = (self.d, self.ob, self.b);
        let pos_stride = d.n_ob * d.tiles * BLOCK;
        for ty in 0..d.th {
            for tx in 0..d.tw {
                let t = ty * d.tw + tx;
                let get = |pos: usize| -> [f32; BLOCK] {
                    let i = pos * pos_stride + (ob * d.tiles + t) * BLOCK;
                    let mut p = [0.0; BLOCK];
                    p.copy_from_slice(&self.m[i..i + BLOCK]);
                    p
                };
                // A^T over each column of the 4x4 tile, then over the two rows.
                let cols: [[[f32; BLOCK]; 2]; 4] =
                    std::array::from_fn(|c| at(std::array::from_fn(|r| get(r * 4 + c))));
                for r in 0..2 {
                    let row = at([cols[0][r], cols[1][r], cols[2][r], cols[3][r]]);
                    let y = 2 * ty + r;
                    if y >= d.h {
                        continue;
                    }
                    for (c, vals) in row.iter().enumerate().take(2) {
                        let xx = 2 * tx + c;
                        if xx >= d.w {
                            continue;
                        }
                        let i = (y * d.w + xx) * BLOCK;
                        let dst = &mut o[i..i + BLOCK];
                        for l in 0..BLOCK {
                            let mut v = vals[l] + b[l];
                            if let Some(r) = self.res {
                                v += r[i + l];
                            }
                            dst[l] = if self.relu { v.max(0.0) } else { v };
                        }
                    }
                }
            }
        }
    }
}
