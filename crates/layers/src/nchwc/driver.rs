//! Running a packed convolution: the output is cut into tasks of (image, group of output-block
//! pairs, block of output rows), run in parallel; each task walks its rows in micro-kernel tiles.

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::kernel::{kernel, max_blocks, max_pixels, Isa, Tile};
use super::layout::{pad_planes, Arena, Nchw8c, BLOCK, PADDED};
use super::pack::{InputLayout, PackedConv, PAIR};

/// The input of [`PackedConv::forward`].
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// An NCHW8c activation (for convolutions packed with [`InputLayout::Blocked`]).
    Blocked(&'a Nchw8c),
    /// NCHW data `[n, c, h, w]` (for [`InputLayout::Nchw`], the stem).
    Nchw {
        data: &'a [f32],
        n: usize,
        h: usize,
        w: usize,
    },
}

/// Output pixels a task aims for: its rows' input and output and one pair of output blocks'
/// weights then stay in the L2 cache.
const TASK_PIXELS: usize = 392;
/// Tasks per thread, so that uneven tasks still balance.
const TASKS_PER_THREAD: usize = 4;
/// Input channels x kernel taps per chunk: a task runs its tiles over one chunk of input blocks,
/// then the next (accumulating into the output), so that a chunk's weights for one tile of output
/// blocks (16 KiB for 4 blocks) stay in L1 and its input rows in L2.
const CHUNK_TAPS: usize = 128;
/// Output widths up to which a padded convolution runs on a zero-padded copy of its input.
const NARROW: usize = 16;

/// A pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
pub(super) struct Shared(pub(super) *mut f32);
// SAFETY: tasks write disjoint parts of the output (see `forward` here and Winograd's `forward`
// and `gemm`), which outlives them.
unsafe impl Send for Shared {}
// SAFETY: as for `Send`: no two tasks touch the same element.
unsafe impl Sync for Shared {}

impl Shared {
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Everything one image's convolution needs, in f32 elements.
#[derive(Clone, Copy)]
struct Plan {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    /// Input blocks a pair of output blocks reads, channels per block, strides of input block,
    /// row, column and channel.
    n_ib: usize,
    icb: usize,
    x_ib: usize,
    x_row: usize,
    x_col: usize,
    x_ic: usize,
    /// Output blocks.
    out_blocks: usize,
    /// Zero padding still to apply (0 when the input was padded in a copy).
    pad: usize,
    /// A 1x1 stride-1 unpadded convolution: rows of a task are one run of pixels.
    flat: bool,
}

impl PackedConv {
    /// `relu?(conv(x) + bias + residual?)`, in NCHW8c, with the kernels of `isa` (which must be
    /// [`Isa::available`]; [`Isa::detect`] picks the fastest).
    pub fn forward(
        &self,
        x: Input,
        residual: Option<&Nchw8c>,
        relu: bool,
        isa: Isa,
    ) -> Result<Nchw8c> {
        self.forward_in(x, residual, relu, isa, &Arena::new())
    }

    /// [`PackedConv::forward`] writing into a buffer from `arena`.
    pub fn forward_in(
        &self,
        x: Input,
        residual: Option<&Nchw8c>,
        relu: bool,
        isa: Isa,
        arena: &Arena,
    ) -> Result<Nchw8c> {
        if !isa.available() {
            bail!("nchwc: this CPU cannot run the {isa:?} kernels");
        }
        let (data, n, c, h, w) = match (x, self.input) {
            (Input::Blocked(t), InputLayout::Blocked) => (t.as_slice(), t.n, t.c, t.h, t.w),
            (Input::Nchw { data, n, h, w }, InputLayout::Nchw) => {
                (data, n, data.len() / (n * h * w).max(1), h, w)
            }
            _ => bail!(
                "nchwc: input layout does not match the packed {:?}",
                self.input
            ),
        };
        let (n_ib, icb) = self.in_blocks();
        let all_ib = self.c_in.div_ceil(BLOCK);
        let expected = match self.input {
            InputLayout::Blocked => n * all_ib * BLOCK * h * w,
            InputLayout::Nchw => n * self.c_in * h * w,
        };
        if c != self.c_in || data.len() != expected || n == 0 {
            bail!(
                "nchwc: input [{n}, {c}, {h}, {w}] ({} values) for a convolution of {} channels",
                data.len(),
                self.c_in
            );
        }
        let Some((ho, wo)) = self.output_size(h, w) else {
            bail!(
                "nchwc: input {h}x{w} with padding {} is smaller than the {}x{} kernel",
                self.padding,
                self.kh,
                self.kw
            );
        };
        if let Some(r) = residual {
            if (r.n, r.c, r.h, r.w) != (n, self.c_out, ho, wo) {
                bail!(
                    "nchwc: residual [{}, {}, {}, {}] does not match the output [{n}, {}, {ho}, {wo}]",
                    r.n,
                    r.c,
                    r.h,
                    r.w,
                    self.c_out
                );
            }
        }
        if let (Some(wino), Input::Blocked(x)) = (&self.winograd, x) {
            return wino.forward(x, self.c_out, &self.bias, residual, relu, isa, arena);
        }
        // Narrow maps: pad the input once, so that no output column is an edge one (those run as
        // 1-pixel tiles, 2 of every 7 columns of a 7x7 map).
        let mut scratch = PADDED.take();
        let (data, h, w, pad) =
            if self.input == InputLayout::Blocked && self.padding > 0 && wo <= NARROW {
                let p = self.padding;
                pad_planes(data, n * all_ib, h, w, p, &mut scratch);
                (&scratch[..], h + 2 * p, w + 2 * p, 0)
            } else {
                (data, h, w, self.padding)
            };
        let plan = match self.input {
            InputLayout::Blocked => Plan {
                x_ib: h * w * BLOCK,
                x_row: w * BLOCK,
                x_col: BLOCK,
                x_ic: 1,
                ..self.plan_base(h, w, ho, wo, pad)
            },
            InputLayout::Nchw => Plan {
                x_ib: 0,
                x_row: w,
                x_col: 1,
                x_ic: h * w,
                ..self.plan_base(h, w, ho, wo, pad)
            },
        };
        debug_assert_eq!((plan.n_ib, plan.icb), (n_ib, icb));
        let image_in = data.len() / n;
        // Every element of the output is written below (padded lanes with zeros).
        let mut out = Nchw8c::scratch(arena, n, self.c_out, ho, wo);
        let image_out = out.len() / n;
        // Output blocks are handed out in units of the widest tile.
        let unit = max_blocks(isa);
        let units = plan.out_blocks.div_ceil(unit);
        let threads = rayon::current_num_threads();
        let row_blocks = (ho * wo).div_ceil(TASK_PIXELS).clamp(1, ho);
        let rows_per = ho.div_ceil(row_blocks);
        let row_blocks = ho.div_ceil(rows_per);
        let wanted = (TASKS_PER_THREAD * threads).div_ceil(n * row_blocks);
        let groups = wanted.clamp(1, units);
        let units_per = units.div_ceil(groups);
        let groups = units.div_ceil(units_per);
        let dst = Shared(out.as_mut_slice().as_mut_ptr());
        let res = residual.map(Nchw8c::as_slice);
        (0..n * groups * row_blocks)
            .into_par_iter()
            .for_each(|task| {
                let image = task / (groups * row_blocks);
                let g = task / row_blocks % groups;
                let r0 = task % row_blocks * rows_per;
                let rows = r0..(r0 + rows_per).min(ho);
                let per = units_per * unit;
                let blocks = g * per..((g + 1) * per).min(plan.out_blocks);
                let x = &data[image * image_in..][..image_in];
                let r = res.map(|r| &r[image * image_out..][..image_out]);
                // SAFETY: tasks differ in image, block group or row block, so the parts of the output
                // they write (these blocks' rows `rows` of this image) are disjoint.
                unsafe {
                    self.run_task(
                        &plan,
                        isa,
                        x,
                        r,
                        relu,
                        dst.get().add(image * image_out),
                        blocks,
                        rows,
                    )
                };
            });
        PADDED.set(scratch);
        Ok(out)
    }

    fn plan_base(&self, h: usize, w: usize, ho: usize, wo: usize, pad: usize) -> Plan {
        let (n_ib, icb) = self.in_blocks();
        Plan {
            h,
            w,
            ho,
            wo,
            n_ib,
            icb,
            x_ib: 0,
            x_row: 0,
            x_col: 0,
            x_ic: 0,
            out_blocks: self.c_out.div_ceil(BLOCK),
            pad,
            flat: self.kh == 1 && self.kw == 1 && self.stride == 1 && pad == 0,
        }
    }

    /// Output blocks `blocks` (by pairs) of output rows `rows` of one image.
    ///
    /// # Safety
    /// `out` points at this image's output (`plan`'s shape) and no other thread writes these
    /// blocks' rows meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_task(
        &self,
        plan: &Plan,
        isa: Isa,
        x: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
        out: *mut f32,
        blocks: std::ops::Range<usize>,
        rows: std::ops::Range<usize>,
    ) {
        let (kh, kw, s, pad) = (self.kh, self.kw, self.stride, plan.pad);
        let w_col = plan.icb * PAIR;
        let w_row = kw * w_col;
        let w_ib = kh * w_row;
        let w_pair = plan.n_ib * w_ib;
        let out_ob = plan.ho * plan.wo * BLOCK;
        let weights = self.weights.as_ptr().cast::<f32>();
        let bias = self.bias.as_ptr().cast::<f32>();
        let chunk = (CHUNK_TAPS / (BLOCK * kh * kw)).max(1);
        for c0 in (0..plan.n_ib).step_by(chunk) {
            let mut ob = blocks.start;
            while ob < blocks.end {
                // Tiles start on a pair (`ob` is even): 4 blocks (two pairs reading the same input
                // blocks), 2, or an odd last one.
                let pair = ob / 2;
                let nb = match blocks.end - ob {
                    left if left >= 4
                        && isa == Isa::Avx512
                        && self.ib0[pair] == self.ib0[pair + 1] =>
                    {
                        4
                    }
                    left => left.min(2),
                };
                let max_px = max_pixels(isa, nb);
                let base = Tile {
                    x: x.as_ptr().wrapping_add((self.ib0[pair] + c0) * plan.x_ib),
                    w: weights.wrapping_add(ob / 2 * w_pair + c0 * w_ib),
                    // SAFETY: `ob` is an output block; the bias has 8 values per block (16 per pair).
                    bias: unsafe { bias.add(ob * BLOCK) },
                    out,
                    residual: std::ptr::null(),
                    relu,
                    accumulate: c0 > 0,
                    finish: c0 + chunk >= plan.n_ib,
                    n_ib: chunk.min(plan.n_ib - c0),
                    x_ib: plan.x_ib,
                    w_ib,
                    icb: plan.icb,
                    x_ic: plan.x_ic,
                    nky: kh,
                    x_row: plan.x_row,
                    w_row,
                    nkx: kw,
                    x_col: plan.x_col,
                    w_col,
                    x_pix: s * plan.x_col,
                    w_pair,
                    out_ob,
                };
                let emit = |run: Run| {
                    let mut done = 0;
                    let tiles = run.count.div_ceil(max_px);
                    for i in 0..tiles {
                        // Balanced tiles: 7 pixels run as 4 + 3, not 6 + 1.
                        let wt = (run.count - done).div_ceil(tiles - i);
                        let at = (ob * plan.ho * plan.wo + run.o_px + done) * BLOCK;
                        let t = Tile {
                            x: base.x.wrapping_add(run.x_off + done * base.x_pix),
                            w: base.w.wrapping_add(run.sky * w_row + run.skx * w_col),
                            out: out.wrapping_add(at),
                            residual: residual
                                .map_or(std::ptr::null(), |r| r.as_ptr().wrapping_add(at)),
                            nky: run.nky,
                            nkx: run.nkx,
                            ..base
                        };
                        // SAFETY: the tile's taps were clipped to the input, its pixels and blocks
                        // lie in this task's part of the output, and `isa` is available.
                        unsafe { kernel(isa, nb, wt)(&t) };
                        done += wt;
                    }
                };
                if plan.flat {
                    let px = rows.start * plan.wo;
                    emit(Run {
                        o_px: px,
                        x_off: px * plan.x_col,
                        sky: 0,
                        nky: 1,
                        skx: 0,
                        nkx: 1,
                        count: rows.len() * plan.wo,
                    });
                } else {
                    // Columns whose every tap lands inside the input.
                    let ow_a = pad.div_ceil(s).min(plan.wo);
                    let ow_b = if plan.w + pad >= kw {
                        ((plan.w + pad - kw) / s + 1).min(plan.wo)
                    } else {
                        0
                    };
                    let ow_b = ow_b.max(ow_a);
                    for oh in rows.clone() {
                        let (sky, nky) = clip(oh * s, pad, kh, plan.h);
                        let row_off = if nky > 0 {
                            (oh * s + sky - pad) * plan.x_row
                        } else {
                            0
                        };
                        for ow in (0..ow_a).chain(ow_b..plan.wo) {
                            let (skx, nkx) = clip(ow * s, pad, kw, plan.w);
                            let col_off = if nkx > 0 {
                                (ow * s + skx - pad) * plan.x_col
                            } else {
                                0
                            };
                            emit(Run {
                                o_px: oh * plan.wo + ow,
                                x_off: row_off + col_off,
                                sky,
                                nky: if nkx == 0 { 0 } else { nky },
                                skx,
                                nkx,
                                count: 1,
                            });
                        }
                        if ow_b > ow_a {
                            emit(Run {
                                o_px: oh * plan.wo + ow_a,
                                x_off: row_off + (ow_a * s - pad) * plan.x_col,
                                sky,
                                nky,
                                skx: 0,
                                nkx: kw,
                                count: ow_b - ow_a,
                            });
                        }
                    }
                }
                ob += nb;
            }
        }
    }
}

/// A run of output pixels along one row that share their kernel taps: the output offset of its
/// first pixel within a block, the input offset of its first pixel's first tap, the kernel rows
/// and columns to skip and to run, and the pixel count.
struct Run {
    o_px: usize,
    x_off: usize,
    sky: usize,
    nky: usize,
    skx: usize,
    nkx: usize,
    count: usize,
}

/// The taps `[skip, skip + count)` of a `k`-wide kernel at padded position `pos` (input position
/// `pos - pad + tap`) that land inside `[0, size)`.
fn clip(pos: usize, pad: usize, k: usize, size: usize) -> (usize, usize) {
    let skip = pad.saturating_sub(pos).min(k);
    let end = (size + pad).saturating_sub(pos).min(k);
    (skip, end.saturating_sub(skip))
}
