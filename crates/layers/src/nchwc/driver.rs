//! Running a packed convolution: the output is cut into tasks of (image, group of output-block
//! pairs, block of output rows), run in parallel; each task walks its rows in micro-kernel tiles
//! (`task.rs`).

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::kernel::{max_blocks, Isa};
use super::layout::{pad_planes, Arena, Nchw8c, BLOCK, PADDED};
use super::pack::{InputLayout, PackedConv};
use super::task::Plan;

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
}
