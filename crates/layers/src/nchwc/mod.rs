//! CPU convolutions in the channel-blocked layout NCHW8c, with their own micro-kernels.
//!
//! What an f32 ResNet on the CPU runs (issue #12; `crates/resnet/src/blocked.rs` keeps the layout
//! from the stem to the pooling; figures in docs/performance.md):
//!
//! - [`Nchw8c`]: activations as `[N, C/8, H, W, 8]`, converted from and to NCHW (channel counts
//!   that are not a multiple of 8 are zero-padded);
//! - [`PackedConv`]: an OIHW weight and its bias reordered once (at load) into the micro-kernel's
//!   layout, `[C_out/16][C_in/8][k_h][k_w][8 in][16 out]`;
//! - [`PackedConv::forward`]: a direct convolution, no im2col: a micro-kernel keeps a row of output
//!   pixels x blocks of 8 output channels in registers (AVX2: 6 x 2 blocks in 12 ymm; AVX-512: 8 x
//!   4 blocks in 16 zmm, a zmm holding two blocks of the same NCHW8c layout), started from the bias,
//!   while it runs over a chunk of input channels and every kernel tap; after the last chunk it adds
//!   the residual, applies the ReLU and stores each output vector. Taps that fall into the padding are skipped, not multiplied
//!   by zeros. 1x1 convolutions are the same kernel with one tap: a GEMM over the blocked layout
//!   that reads pixels in place. The stem reads its 3-channel NCHW input directly
//!   ([`InputLayout::Nchw`]) rather than padding 3 channels to 8;
//! - grouped convolutions (ResNeXt) packed block-diagonally, each pair of output blocks reading
//!   its groups' input blocks; groups that fit one block run block by block, and 4-channel groups
//!   on their own kernels that broadcast each group's inputs within 128-bit lanes (`lanes4.rs`);
//! - kernels: AVX-512F or AVX2 + FMA intrinsics where `is_x86_feature_detected!` finds them, NEON
//!   on aarch64 (`neon.rs`; opt-in until timed on Arm hardware), else a portable one ([`Isa`]);
//! - [`Algorithm::Winograd`] and [`Algorithm::Winograd4x4`]: F(2x2, 3x3) and F(4x4, 3x3) for
//!   stride-1 3x3 convolutions (`winograd/`);
//! - the layers between convolutions in the same layout (`ops.rs`): max pool, ResNet-D's average
//!   pool, the zero-padding shortcut, a per-channel affine + ReLU, the global average pool;
//! - [`Arena`]: activation buffers reused across layers and forward passes;
//! - threads: tasks of (image, group of output-block pairs, block of output rows), enough of them
//!   that both cores are busy at batch 1.

mod driver;
mod kernel;
mod lanes4;
mod layout;
#[cfg(target_arch = "aarch64")]
mod neon;
mod ops;
mod pack;
mod task;
mod winograd;

#[cfg(test)]
mod tests;

pub use driver::Input;
pub use kernel::Isa;
pub use layout::{Arena, Nchw8c, BLOCK};
pub use ops::{avg_pool_ceil, global_avg_pool, max_pool, zero_pad_shortcut, AffineRelu};
pub use pack::{Algorithm, InputLayout, PackedConv, Packing};
pub use winograd::Variant as WinogradVariant;
