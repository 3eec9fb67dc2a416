//! Winograd F(2x2, 3x3) and F(4x4, 3x3) for stride-1, padding-1 3x3 convolutions in NCHW8c.
//!
//! Each `m x m` block of outputs ("tile") is computed from the `(m + 2) x (m + 2)` input patch
//! around it: `Y = A^T [(G g G^T) * (B^T d B)] A` (`transform.rs`). The weight transform
//! `U = G g G^T` runs once, at load, in f64; per forward, with `P = (m + 2)^2` positions:
//!
//! 1. the input transform writes `V = B^T d B` of every tile as `P` planes `[pos][C_in/8][tiles][8]`;
//! 2. `P` GEMMs, one per position, `M[pos] = V[pos] x U[pos]`, run on the 1x1-convolution
//!    micro-kernels (tiles play the part of pixels), all in one parallel pass;
//! 3. the output transform `A^T M A` adds the bias and the residual, applies the ReLU and writes
//!    the `m x m` outputs of each tile (dropping those past the edge).
//!
//! F(2x2) cuts a 3x3 convolution's multiplies 2.25x with transforms of additions and halvings, so
//! its f32 error stays close to the direct convolution's; F(4x4) cuts them 4x, with larger
//! constants and somewhat larger error (see the tests).

mod transform;

pub use transform::Variant;
use transform::{at4, at6, InputPlane, V8};

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::driver::Shared;
use super::kernel::{kernel, max_blocks, max_pixels, Isa, Tile};
use super::layout::{Arena, Nchw8c, BLOCK};
use super::pack::{Lanes, PAIR};

/// Input blocks per GEMM chunk (as the direct 1x1 path: 128 channels).
const CHUNK: usize = 16;
/// Tiles a GEMM task aims for.
const TASK_TILES: usize = 256;

/// Weights transformed for F(m x m, 3x3): `[C_out/16][positions][C_in/8][8][16 lanes]`.
#[derive(Debug, Clone)]
pub(super) struct Winograd {
    variant: Variant,
    u: Vec<Lanes>,
    /// Zeros, one pair per output pair: the GEMM's starting "bias".
    zero: Vec<Lanes>,
}

impl Winograd {
    /// Transforms an OIHW `[c_out, c_in, 3, 3]` weight, each filter scaled by `scale[o]` first
    /// (in f32, as a separate BatchNorm fold does).
    pub(super) fn new(
        variant: Variant,
        weight: &[f32],
        c_out: usize,
        c_in: usize,
        scale: Option<&[f32]>,
    ) -> Self {
        let (pairs, n_ib) = (c_out.div_ceil(PAIR), c_in.div_ceil(BLOCK));
        let per_pos = n_ib * BLOCK;
        let pos = variant.positions();
        let mut u = vec![Lanes::default(); pairs * pos * per_pos];
        u.par_chunks_mut(pos * per_pos)
            .enumerate()
            .for_each(|(pair, dst)| {
                for (lane, o) in (pair * PAIR..(pair * PAIR + PAIR).min(c_out)).enumerate() {
                    let s = scale.map_or(1.0, |s| s[o]);
                    for i in 0..c_in {
                        let f = &weight[(o * c_in + i) * 9..][..9];
                        let g = std::array::from_fn(|r| {
                            std::array::from_fn(|c| f64::from(f[r * 3 + c] * s))
                        });
                        let t = variant.transform_filter(g);
                        for (p, &v) in t[..pos].iter().enumerate() {
                            dst[p * per_pos + i].0[lane] = v as f32;
                        }
                    }
                }
            });
        Self {
            variant,
            u,
            zero: vec![Lanes::default(); pairs],
        }
    }

    /// The transform these weights are for.
    pub(super) fn variant(&self) -> Variant {
        self.variant
    }

    /// The OIHW weight back (to rounding).
    pub(super) fn unpack(&self, c_out: usize, c_in: usize) -> Vec<f32> {
        let per_pos = c_in.div_ceil(BLOCK) * BLOCK;
        let pos = self.variant.positions();
        let mut w = vec![0f32; c_out * c_in * 9];
        for o in 0..c_out {
            let base = o / PAIR * pos * per_pos;
            for i in 0..c_in {
                let u: Vec<f64> = (0..pos)
                    .map(|p| f64::from(self.u[base + p * per_pos + i].0[o % PAIR]))
                    .collect();
                let g = self.variant.untransform_filter(&u);
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

/// [`Variant::input_plane`] compiled for AVX2 + FMA (256-bit vectors for the `[f32; 8]` lanes).
///
/// # Safety
/// The CPU has AVX2 and FMA; as [`Variant::input_plane`] otherwise.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_plane_avx2(variant: Variant, job: &InputPlane) {
    variant.input_plane(job)
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
        let variant = self.variant;
        let (th, tw) = (h.div_ceil(variant.m()), w.div_ceil(variant.m()));
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
        // Per image: V and M are a plane of tiles per position (4x the input and the output for
        // F(2x2), 2.25x for F(4x4)).
        let pos = variant.positions();
        let mut v = Nchw8c::scratch(arena, pos, x.c, 1, d.tiles);
        let mut m = Nchw8c::scratch(arena, pos, c_out, 1, d.tiles);
        let plane_in = h * w * BLOCK;
        let image_in = d.n_ib * plane_in;
        let image_out = d.n_ob * plane_in;
        for image in 0..x.n {
            let xi = &x.as_slice()[image * image_in..][..image_in];
            let vp = Shared(v.as_mut_slice().as_mut_ptr());
            let pos_stride = d.n_ib * d.tiles * BLOCK;
            xi.par_chunks(plane_in).enumerate().for_each(|(ib, plane)| {
                let job = InputPlane {
                    x: plane,
                    h,
                    w,
                    th,
                    tw,
                    // SAFETY: block `ib`'s tiles, at offset `ib * tiles * 8` of each position plane.
                    v: Shared(unsafe { vp.get().add(ib * d.tiles * BLOCK) }),
                    pos_stride,
                };
                #[cfg(target_arch = "x86_64")]
                if isa != Isa::Portable {
                    // SAFETY: the SIMD kernels only run where the CPU has AVX2 and FMA
                    // (`Isa::available`, checked by `PackedConv::forward_in`).
                    return unsafe { input_plane_avx2(variant, &job) };
                }
                variant.input_plane(&job);
            });
            self.gemm(&d, v.as_slice(), m.as_mut_slice(), isa);
            let r = residual.map(|r| &r.as_slice()[image * image_out..][..image_out]);
            let o = &mut out.as_mut_slice()[image * image_out..][..image_out];
            output_transform(variant, &d, m.as_slice(), bias, r, relu, o, isa);
        }
        arena.recycle(v);
        arena.recycle(m);
        Ok(out)
    }

    /// The GEMMs `M[pos] = V[pos] x U[pos]` of one image, as tasks of (position, group of
    /// output pairs, run of tiles).
    fn gemm(&self, d: &Dims, v: &[f32], m: &mut [f32], isa: Isa) {
        // Weights `[pair][pos][C_in/8][8][16]`: a position's are `w_pos` apart, a pair's `w_pair`.
        let w_ib = BLOCK * PAIR;
        let w_pos = d.n_ib * w_ib;
        let positions = self.variant.positions();
        let w_pair = positions * w_pos;
        let unit = max_blocks(isa);
        let units = d.n_ob.div_ceil(unit);
        let runs = d.tiles.div_ceil(TASK_TILES);
        let per_run = d.tiles.div_ceil(runs);
        let threads = rayon::current_num_threads();
        let groups = (4 * threads).div_ceil(positions * runs).clamp(1, units);
        let units_per = units.div_ceil(groups);
        let groups = units.div_ceil(units_per);
        let dst = Shared(m.as_mut_ptr());
        let x_ib = d.tiles * BLOCK;
        (0..positions * groups * runs)
            .into_par_iter()
            .for_each(|task| {
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
                                prefetch: 0,
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
#[allow(clippy::too_many_arguments)]
fn output_transform(
    variant: Variant,
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
            variant,
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
    variant: Variant,
    d: &'a Dims,
    m: &'a [f32],
    ob: usize,
    b: V8,
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
        match self.variant {
            Variant::F2 => self.run_tiles::<4, 2>(o, at4),
            Variant::F4 => self.run_tiles::<6, 4>(o, at6),
        }
    }

    /// `T x T` transformed tiles to `M x M` outputs (`M = T - 2`) with `at` = `A^T`.
    #[allow(clippy::needless_range_loop)] // `r` is the tile's row: of `cols` and of the output
    #[inline(always)]
    fn run_tiles<const T: usize, const M: usize>(&self, o: &mut [f32], at: fn([V8; T]) -> [V8; M]) {
        let (d, ob, b) = (self.d, self.ob, self.b);
        let pos_stride = d.n_ob * d.tiles * BLOCK;
        for ty in 0..d.th {
            for tx in 0..d.tw {
                let t = ty * d.tw + tx;
                let get = |pos: usize| -> V8 {
                    let i = pos * pos_stride + (ob * d.tiles + t) * BLOCK;
                    let mut p = [0.0; BLOCK];
                    p.copy_from_slice(&self.m[i..i + BLOCK]);
                    p
                };
                // A^T over each column of the tile, then over the M rows.
                let cols: [[V8; M]; T] =
                    std::array::from_fn(|c| at(std::array::from_fn(|r| get(r * T + c))));
                for r in 0..M {
                    let row = at(std::array::from_fn(|c| cols[c][r]));
                    let y = M * ty + r;
                    if y >= d.h {
                        continue;
                    }
                    for (c, vals) in row.iter().enumerate() {
                        let xx = M * tx + c;
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
