//! One task of a direct convolution: its tiles of output blocks x its output rows, walked in
//! micro-kernel tiles over chunks of input blocks, with the weights of the next tile prefetched
//! where they come from memory.

use super::kernel::{kernel, max_pixels, Isa, Tile};
use super::lanes4::{self, GROUP};
use super::layout::BLOCK;
use super::pack::{PackedConv, Reads, PAIR};

/// Input channels x kernel taps per chunk: a task runs its tiles over one chunk of input blocks,
/// then the next (accumulating into the output), so that a chunk's weights for one tile of output
/// blocks (16 KiB for 4 blocks) stay in L1 and its input rows in L2.
const CHUNK_TAPS: usize = 128;
/// Input bytes of a task up to which it runs each tile of output blocks over all input chunks
/// before the next tile (weights read in one sequential stream per pair), rather than each chunk
/// over all tiles (a chunk's input kept in L2).
const WEIGHTS_OUTER_INPUT: usize = 512 << 10;
/// Weight bytes from which every tile prefetches the next tile's weights, which then come from
/// memory on every forward (smaller ones largely stay in L2 or L3, where prefetching did not pay).
const PREFETCH_WEIGHTS: usize = 1 << 20;

/// Everything one image's convolution needs, in f32 elements.
#[derive(Clone, Copy)]
pub(super) struct Plan {
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
    /// Input blocks a pair of output blocks reads, channels per block, strides of input block,
    /// row, column and channel.
    pub(super) n_ib: usize,
    pub(super) icb: usize,
    pub(super) x_ib: usize,
    pub(super) x_row: usize,
    pub(super) x_col: usize,
    pub(super) x_ic: usize,
    /// Output blocks.
    pub(super) out_blocks: usize,
    /// Zero padding still to apply (0 when the input was padded in a copy).
    pub(super) pad: usize,
    /// A 1x1 stride-1 unpadded convolution: rows of a task are one run of pixels.
    pub(super) flat: bool,
}

impl PackedConv {
    /// Output blocks `blocks` (by pairs) of output rows `rows` of one image.
    ///
    /// # Safety
    /// `out` points at this image's output (`plan`'s shape) and no other thread writes these
    /// blocks' rows meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn run_task(
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
        let lanes4 = self.reads == Reads::Lanes4;
        // A tap's weights: one 16-lane vector per input channel, or per input of a 4-channel
        // group (`lanes4.rs`, whose weights hold no input blocks).
        let w_col = if lanes4 {
            GROUP * PAIR
        } else {
            plan.icb * PAIR
        };
        let w_row = kw * w_col;
        let w_ib = if lanes4 { 0 } else { kh * w_row };
        let w_pair = if lanes4 { kh * w_row } else { plan.n_ib * w_ib };
        let out_ob = plan.ho * plan.wo * BLOCK;
        let weights = self.weights.as_ptr().cast::<f32>();
        let bias = self.bias.as_ptr().cast::<f32>();
        let chunk = (CHUNK_TAPS / (BLOCK * kh * kw)).max(1);
        // A block-diagonal convolution runs each output block over the one input block it reads;
        // a 4-channel-group one runs each pair (AVX-512) or block over its pair's input blocks.
        let diagonal = self.reads != Reads::Pair;
        let n_ib = if diagonal { 1 } else { plan.n_ib };
        // Where the weights of chunk `c0` for output block `ob` start (for a diagonal block: its
        // own input block, and its 8 of the pair's 16 lanes; an odd `ob` is a single block).
        let w_at = |c0: usize, ob: usize| {
            let own = if diagonal { ob % 2 * (w_ib + BLOCK) } else { 0 };
            ob / 2 * w_pair + c0 * w_ib + own
        };
        // Tiles of output blocks start on a pair (even block): 4 blocks (two pairs reading the
        // same input blocks), 2, or an odd last one; a diagonal convolution's are single blocks,
        // a 4-channel-group one's pairs with AVX-512, else single blocks.
        let block_tiles = || {
            let mut ob = blocks.start;
            std::iter::from_fn(move || {
                let left = blocks.end.checked_sub(ob).filter(|&l| l > 0)?;
                let pair = ob / 2;
                let nb = if lanes4 {
                    // Whole pairs: tasks' blocks start on a unit of `max_blocks` and end on one
                    // or at `C_out`, a multiple of 16 here.
                    debug_assert!(left >= lanes4::blocks(isa));
                    lanes4::blocks(isa)
                } else if diagonal {
                    1
                } else if left >= 4 && isa == Isa::Avx512 && self.ib0[pair] == self.ib0[pair + 1] {
                    4
                } else {
                    left.min(2)
                };
                ob += nb;
                Some((ob - nb, nb))
            })
        };
        let prefetch = std::mem::size_of_val(&self.weights[..]) >= PREFETCH_WEIGHTS;
        // The input rows this task reads, over every input block.
        let in_rows = ((rows.len().max(1) - 1) * s + kh).min(plan.h);
        let task_input = in_rows * plan.x_row * n_ib * std::mem::size_of::<f32>();
        let run_tile = |c0: usize, ob: usize, nb: usize, next: Option<(usize, usize)>| {
            let pair = ob / 2;
            let max_px = if lanes4 {
                lanes4::max_pixels(isa)
            } else {
                max_pixels(isa, nb)
            };
            let base = Tile {
                x: x.as_ptr().wrapping_add(
                    (self.ib0[pair] + if diagonal { ob % 2 } else { 0 } + c0) * plan.x_ib,
                ),
                w: weights.wrapping_add(w_at(c0, ob)),
                // SAFETY: `ob` is an output block; the bias has 8 values per block (16 per pair).
                bias: unsafe { bias.add(ob * BLOCK) },
                out,
                residual: std::ptr::null(),
                relu,
                accumulate: c0 > 0,
                finish: c0 + chunk >= n_ib,
                n_ib: chunk.min(n_ib - c0),
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
                prefetch: next.filter(|_| prefetch).map_or(0, |(c1, ob1)| {
                    // Both offsets index the weights, whose length fits an isize.
                    w_at(c1, ob1) as isize - w_at(c0, ob) as isize
                }),
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
                    unsafe {
                        if lanes4 {
                            lanes4::kernel(isa, wt)(&t)
                        } else {
                            kernel(isa, nb, wt)(&t)
                        }
                    };
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
        };
        // Each tile runs once its successor is known (the weights it prefetches).
        let mut pending = None;
        let mut visit = |c0: usize, ob: usize, nb: usize| {
            if let Some((p0, pob, pnb)) = pending.replace((c0, ob, nb)) {
                run_tile(p0, pob, pnb, Some((c0, ob)));
            }
        };
        let chunks = (0..n_ib).step_by(chunk);
        if task_input <= WEIGHTS_OUTER_INPUT {
            // The task's input stays in L2 across its tiles of output blocks: walk each tile's
            // weights from the first input block to the last, one sequential stream per pair.
            for (ob, nb) in block_tiles() {
                for c0 in chunks.clone() {
                    visit(c0, ob, nb);
                }
            }
        } else {
            for c0 in chunks {
                for (ob, nb) in block_tiles() {
                    visit(c0, ob, nb);
                }
            }
        }
        if let Some((c0, ob, nb)) = pending {
            run_tile(c0, ob, nb, None);
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
