#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor};

use super::pack::Reads;
use super::*;
use crate::ConvGeometry;
use candle_core::Module;

/// `max |a - b| / max |b|`.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

fn isas() -> Vec<Isa> {
    [Isa::Portable, Isa::Avx2Fma, Isa::Avx512, Isa::Neon]
        .into_iter()
        .filter(|isa| isa.available())
        .collect()
}

#[test]
fn layout_round_trips_and_pads_with_zeros() {
    for &(n, c, h, w) in &[(1, 3, 5, 7), (2, 13, 4, 3), (3, 20, 1, 1), (1, 16, 2, 2)] {
        let x: Vec<f32> = (0..n * c * h * w).map(|i| i as f32 + 0.5).collect();
        let b = Nchw8c::from_nchw(&x, n, c, h, w).unwrap();
        assert_eq!(b.as_slice().len(), n * c.div_ceil(8) * h * w * 8);
        // Element (image, channel, y, x) lives at [image][channel / 8][y][x][channel % 8].
        for i in 0..n {
            for ch in 0..c.div_ceil(8) * 8 {
                for p in 0..h * w {
                    let v = b.as_slice()[((i * c.div_ceil(8) + ch / 8) * h * w + p) * 8 + ch % 8];
                    let want = if ch < c {
                        x[(i * c + ch) * h * w + p]
                    } else {
                        0.0
                    };
                    assert_eq!(v, want, "{n} {c} {h} {w}: ({i}, {ch}, {p})");
                }
            }
        }
        assert_eq!(b.to_nchw(), x);
    }
    assert!(Nchw8c::from_nchw(&[0.0; 5], 1, 2, 2, 2).is_err());
}

/// One case: (batch, in channels, height, width, out channels, kernel, stride, padding).
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

pub(super) fn geometry(stride: usize, padding: usize, groups: usize) -> ConvGeometry {
    ConvGeometry {
        stride,
        padding,
        groups,
    }
}

/// Every kernel path against Candle's conv2d followed by the epilogue as separate ops.
fn check(cases: &[Case], input: InputLayout) {
    check_grouped(cases, input, 1);
}

fn check_grouped(cases: &[Case], input: InputLayout, groups: usize) {
    let dev = Device::Cpu;
    for &(n, c, h, w, c_out, k, stride, padding) in cases {
        let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1., (c_out, c / groups, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1., c_out, &dev).unwrap();
        let plain = x.conv2d(&wt, padding, stride, 1, groups).unwrap();
        let residual = Tensor::randn(0f32, 1., plain.shape(), &dev).unwrap();
        let res_blocked = Nchw8c::from_tensor(&residual).unwrap();
        let x_blocked = Nchw8c::from_tensor(&x).unwrap();
        let x_plain = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Every case three ways: direct, and Winograd F(2x2) and F(4x4) where the shape allows.
        for (with_bias, with_residual, relu, algorithm) in [
            (false, false, false, Algorithm::Direct),
            (true, false, true, Algorithm::Winograd4x4),
            (true, true, true, Algorithm::Winograd),
            (false, true, false, Algorithm::Winograd4x4),
        ] {
            let (wv, bv) = (
                wt.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                bias.to_vec1::<f32>().unwrap(),
            );
            let packed = PackedConv::new_scaled(
                &wv,
                [c_out, c / groups, k, k],
                None,
                with_bias.then_some(&bv[..]),
                geometry(stride, padding, groups),
                input,
                algorithm,
            )
            .unwrap();
            let winograd_shape = k == 3
                && stride == 1
                && padding == 1
                && groups == 1
                && input == InputLayout::Blocked;
            let want_variant = match algorithm {
                Algorithm::Winograd if winograd_shape => Some(WinogradVariant::F2),
                Algorithm::Winograd4x4 if winograd_shape => Some(WinogradVariant::F4),
                _ => None,
            };
            assert_eq!(packed.winograd_variant(), want_variant, "{algorithm:?}");
            let (w_back, b_back) = packed.unpack();
            let w_want = wt.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            if packed.is_winograd() {
                // Back from the transform: equal to rounding.
                let err = rel_err(&w_back, &w_want);
                assert!(err < 1e-6, "unpacked Winograd weight: {err}");
            } else {
                assert!(w_back == w_want, "unpacked weight differs");
            }
            if with_bias {
                assert_eq!(b_back, bias.to_vec1::<f32>().unwrap());
            }
            let mut want = plain.clone();
            if with_bias {
                want = want
                    .broadcast_add(&bias.reshape((1, c_out, 1, 1)).unwrap())
                    .unwrap();
            }
            if with_residual {
                want = (want + &residual).unwrap();
            }
            if relu {
                want = want.relu().unwrap();
            }
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for isa in isas() {
                let inp = match input {
                    InputLayout::Blocked => Input::Blocked(&x_blocked),
                    InputLayout::Nchw => Input::Nchw {
                        data: &x_plain,
                        n,
                        h,
                        w,
                    },
                };
                let r = with_residual.then_some(&res_blocked);
                let got = packed.forward(inp, r, relu, isa).unwrap();
                let case = (
                    n, c, h, w, c_out, k, stride, padding, groups, input, isa, algorithm,
                );
                let (_, _, ho, wo) = plain.dims4().unwrap();
                assert_eq!((got.n, got.c, got.h, got.w), (n, c_out, ho, wo), "{case:?}");
                // Padded output lanes stay zero, so the result can feed the next layer.
                for (i, px) in got.as_slice().chunks_exact(8).enumerate() {
                    let block = i / (ho * wo) % c_out.div_ceil(8);
                    for (lane, &v) in px.iter().enumerate() {
                        if block * 8 + lane >= c_out {
                            assert_eq!(v, 0.0, "{case:?}: padded lane");
                        }
                    }
                }
                let err = rel_err(&got.to_nchw(), &want);
                // F(4x4)'s transforms (constants up to 8 in A, 5 in B, 1/24 in G) make its rounding error
                // about 6x the direct kernel's: over 40 runs of these cases the largest was
                // 1.4e-5 (192 channels; direct 2.4e-6, F(2x2) 1.2e-6 at most).
                let tolerance = match packed.winograd_variant() {
                    Some(WinogradVariant::F4) => 5e-5,
                    _ => 1e-5,
                };
                assert!(
                    err < tolerance,
                    "{case:?} bias {with_bias} residual {with_residual} relu {relu}: {err}"
                );
            }
        }
    }
}

#[test]
fn conv_3x3_matches_candle() {
    check(
        &[
            (1, 13, 9, 11, 20, 3, 1, 1),
            (3, 20, 10, 7, 13, 3, 2, 1),
            (1, 16, 14, 14, 32, 3, 1, 1),
            (1, 8, 15, 15, 16, 3, 2, 1),
            (3, 3, 6, 5, 8, 3, 1, 0),
            (1, 20, 2, 3, 24, 3, 1, 1),
            (1, 5, 4, 4, 3, 3, 2, 3),
            (1, 64, 7, 7, 64, 3, 1, 1),
            (1, 16, 30, 30, 72, 3, 1, 1),
            (3, 24, 11, 29, 40, 3, 2, 1),
            // Wider than `NARROW`: edge columns as 1-pixel tiles, not a padded copy.
            (1, 13, 20, 40, 20, 3, 2, 1),
            (3, 8, 5, 18, 16, 3, 1, 1),
        ],
        InputLayout::Blocked,
    );
}

#[test]
fn conv_1x1_matches_candle() {
    check(
        &[
            (1, 13, 9, 11, 20, 1, 1, 0),
            (3, 20, 7, 7, 40, 1, 1, 0),
            (1, 64, 14, 14, 24, 1, 2, 0),
            (3, 13, 9, 8, 3, 1, 2, 0),
            (1, 24, 5, 5, 16, 1, 1, 1),
            (1, 256, 7, 7, 64, 1, 1, 0),
            (3, 32, 9, 9, 56, 1, 1, 0),
        ],
        InputLayout::Blocked,
    );
}

#[test]
fn large_convs_match_candle_in_both_loop_orders_and_with_prefetch() {
    // The driver walks a task's chunks of input blocks inside each tile of output blocks while
    // the task's input is at most 512 KiB, and tiles inside chunks above; from 1 MiB of packed
    // weights every tile prefetches the next one's. Neither may change a value.
    check(
        &[
            // 815 KiB of input per task (one task: 392 pixels), 5 chunks, 83 KiB of weights.
            (1, 520, 28, 14, 40, 1, 1, 0),
            // 52 KiB of input, 1.1 MiB of weights: prefetching, an odd last output block.
            (1, 520, 5, 5, 520, 1, 1, 0),
            // Both: the prefetch distance turns negative where a chunk's tiles start over.
            (1, 520, 28, 14, 520, 1, 1, 0),
            // A 3x3 with 1.4 MiB of weights, one input block per chunk.
            (1, 192, 9, 9, 200, 3, 1, 1),
        ],
        InputLayout::Blocked,
    );
}

#[test]
fn conv_7x7_matches_candle() {
    let cases = [
        (1, 3, 33, 31, 64, 7, 2, 3),
        (3, 3, 16, 17, 20, 7, 2, 3),
        (1, 3, 9, 9, 13, 7, 1, 0),
        (1, 13, 12, 10, 16, 7, 2, 3),
        (1, 5, 40, 40, 8, 7, 2, 3),
    ];
    // The stem reads NCHW in place; a blocked input must give the same.
    check(&cases, InputLayout::Nchw);
    check(&cases, InputLayout::Blocked);
}

#[test]
fn plain_input_3x3_and_1x1_match_candle() {
    check(
        &[(1, 3, 8, 9, 16, 3, 1, 1), (3, 13, 6, 6, 20, 1, 2, 0)],
        InputLayout::Nchw,
    );
}

#[test]
fn refuses_mismatched_inputs() {
    let w = vec![0f32; 16 * 8 * 9];
    let conv = PackedConv::new(
        &w,
        [16, 8, 3, 3],
        None,
        geometry(1, 1, 1),
        InputLayout::Blocked,
    )
    .unwrap();
    let x = Nchw8c::zeros(1, 4, 5, 5);
    assert!(conv
        .forward(Input::Blocked(&x), None, false, Isa::Portable)
        .is_err());
    let x = Nchw8c::zeros(1, 8, 5, 5);
    let plain = Input::Nchw {
        data: x.as_slice(),
        n: 1,
        h: 5,
        w: 5,
    };
    assert!(conv.forward(plain, None, false, Isa::Portable).is_err());
    let r = Nchw8c::zeros(1, 16, 4, 5);
    let err = conv
        .forward(Input::Blocked(&x), Some(&r), false, Isa::Portable)
        .unwrap_err();
    assert!(err.to_string().contains("residual"), "{err}");
    assert!(PackedConv::new(
        &w,
        [16, 8, 3, 2],
        None,
        geometry(1, 1, 1),
        InputLayout::Blocked
    )
    .is_err());
    assert!(PackedConv::new(
        &w,
        [16, 8, 3, 3],
        Some(&[0.0; 3]),
        geometry(1, 1, 1),
        InputLayout::Blocked
    )
    .is_err());
}

#[test]
fn grouped_convs_match_candle() {
    // ResNeXt's groups: 4, 8, 16 and 32 channels each; then groups spanning several pairs, a
    // grouped 1x1, and 3 images.
    let cases = [
        (1, 128, 9, 9, 128, 3, 1, 1),
        (1, 256, 7, 6, 256, 3, 2, 1),
        (3, 64, 5, 5, 64, 3, 1, 1),
    ];
    check_grouped(&cases, InputLayout::Blocked, 32);
    check_grouped(&[(1, 256, 5, 5, 256, 3, 1, 1)], InputLayout::Blocked, 16);
    check_grouped(&[(1, 512, 5, 4, 512, 3, 1, 1)], InputLayout::Blocked, 16);
    check_grouped(&[(2, 64, 20, 20, 64, 3, 2, 1)], InputLayout::Blocked, 4);
    check_grouped(&[(1, 32, 6, 6, 64, 1, 1, 0)], InputLayout::Blocked, 2);
    // Block-diagonal ones (each output block reads one input block) on 3 images, strided, and
    // wider than `NARROW` (edge columns as 1-pixel tiles, 12-pixel tiles between them).
    check_grouped(&[(3, 128, 11, 19, 128, 3, 2, 1)], InputLayout::Blocked, 32);
    check_grouped(&[(3, 256, 6, 40, 256, 3, 1, 1)], InputLayout::Blocked, 32);
    // 4 channels per group (`lanes4.rs`): a 1x1, and a 3x3 with taps wholly in the padding.
    check_grouped(&[(2, 48, 7, 5, 48, 1, 1, 0)], InputLayout::Blocked, 12);
    check_grouped(&[(1, 64, 6, 7, 64, 3, 2, 3)], InputLayout::Blocked, 16);
}

#[test]
fn groups_within_one_block_run_block_diagonally() {
    // (channels in and out, groups, reads): ResNeXt-50 32x4d's four stages, then groups of 2
    // channels, groups whose inputs are 4 channels but outputs 8 (one input block per pair), 4
    // channels per group on 3 pairs, and no groups.
    for (c, c_out, groups, want) in [
        (128, 128, 32, Reads::Lanes4),
        (256, 256, 32, Reads::Diagonal),
        (512, 512, 32, Reads::Pair),
        (1024, 1024, 32, Reads::Pair),
        (64, 64, 32, Reads::Diagonal),
        (64, 128, 16, Reads::Pair),
        (48, 48, 12, Reads::Lanes4),
        (64, 64, 1, Reads::Pair),
    ] {
        let w = vec![0f32; c_out * c / groups * 9];
        let packed = PackedConv::new(
            &w,
            [c_out, c / groups, 3, 3],
            None,
            geometry(1, 1, groups),
            InputLayout::Blocked,
        )
        .unwrap();
        assert_eq!(packed.reads, want, "{c} -> {c_out} in {groups} groups");
    }
}

#[test]
fn groupings_that_do_not_fit_blocks_are_refused() {
    // 3 channels per group: the second pair would start mid-block.
    assert!(!PackedConv::supports(48, 48, 16, InputLayout::Blocked));
    assert!(!PackedConv::supports(64, 64, 32, InputLayout::Nchw));
    assert!(PackedConv::supports(128, 128, 32, InputLayout::Blocked));
    assert!(PackedConv::supports(13, 20, 1, InputLayout::Blocked));
    let w = vec![0f32; 48 * 3 * 9];
    let err = PackedConv::new(
        &w,
        [48, 3, 3, 3],
        None,
        geometry(1, 1, 16),
        InputLayout::Blocked,
    )
    .unwrap_err();
    assert!(err.to_string().contains("16 groups"), "{err}");
}

/// `x` as a random `[n, c, h, w]` tensor and its NCHW8c copy.
fn random(n: usize, c: usize, h: usize, w: usize) -> (Tensor, Nchw8c) {
    let x = Tensor::randn(0f32, 1., (n, c, h, w), &Device::Cpu).unwrap();
    let b = Nchw8c::from_tensor(&x).unwrap();
    (x, b)
}

/// Stale values in the arena's buffers must not leak into any output, padded lanes included.
fn dirty_arena() -> Arena {
    let arena = Arena::new();
    for len in [64, 4096, 1 << 16] {
        let mut x = Nchw8c::zeros(1, 8, 1, len / 8);
        x.as_mut_slice().fill(f32::NAN);
        arena.recycle(x);
    }
    arena
}

fn assert_same(got: &Nchw8c, want: &Tensor, what: &str) {
    let (n, c, h, w) = want.dims4().unwrap();
    assert_eq!((got.n, got.c, got.h, got.w), (n, c, h, w), "{what}");
    let back = Nchw8c::from_tensor(want).unwrap();
    // Equal up to rounding, the padded lanes (zero) included.
    let diff = got
        .as_slice()
        .iter()
        .zip(back.as_slice())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff <= 1e-6, "{what}: max difference {diff}");
}

#[test]
fn max_pool_matches_the_nchw_layer() {
    let arena = dirty_arena();
    for &(n, c, h, w, k, s, p) in &[
        (1, 64, 112, 112, 3, 2, 1),
        (2, 13, 9, 8, 3, 2, 1),
        (1, 8, 7, 7, 3, 1, 0),
        (3, 20, 5, 6, 2, 2, 1),
    ] {
        let (x, b) = random(n, c, h, w);
        let want = crate::MaxPool2d::new(k, s, p).forward(&x).unwrap();
        let got = max_pool(&b, k, s, p, 0, &arena).unwrap();
        assert_same(
            &got,
            &want,
            &format!("max pool {k}/{s}/{p} on {n}x{c}x{h}x{w}"),
        );
        arena.recycle(got);
    }
    // timm's fixed padding: zeros first (which win over negative values), then an unpadded pool.
    let (x, b) = random(2, 12, 9, 10);
    let padded = x
        .pad_with_zeros(2, 1, 1)
        .unwrap()
        .pad_with_zeros(3, 1, 1)
        .unwrap();
    let want = crate::MaxPool2d::new(3, 2, 0).forward(&padded).unwrap();
    assert_same(
        &max_pool(&b, 3, 2, 0, 1, &arena).unwrap(),
        &want,
        "zero-padded pool",
    );
    assert!(max_pool(&b, 3, 2, 3, 0, &arena).is_err());
}

#[test]
fn avg_pool_and_zero_pad_shortcut_match_the_nchw_layers() {
    let arena = dirty_arena();
    for &(n, c, h, w, k) in &[(1, 64, 56, 56, 2), (2, 13, 7, 9, 2), (1, 24, 5, 5, 3)] {
        let (x, b) = random(n, c, h, w);
        let want = crate::avg_pool2d_ceil(&x, k).unwrap();
        let got = avg_pool_ceil(&b, k, &arena).unwrap();
        assert_same(&got, &want, &format!("avg pool {k} on {n}x{c}x{h}x{w}"));
        arena.recycle(got);
    }
    for &(n, c, h, w, s, before, after) in &[
        (1, 16, 32, 32, 2, 8, 8),
        (2, 32, 15, 16, 2, 16, 16),
        (1, 5, 6, 7, 2, 3, 4),
        (3, 8, 4, 4, 1, 0, 3),
    ] {
        let (x, b) = random(n, c, h, w);
        let want = crate::Shortcut::ZeroPad {
            stride: s,
            before,
            after,
        }
        .forward(&x)
        .unwrap();
        let got = zero_pad_shortcut(&b, s, before, after, &arena).unwrap();
        assert_same(
            &got,
            &want,
            &format!("zero pad {s}/{before}/{after} on {c}x{h}x{w}"),
        );
        arena.recycle(got);
    }
}

#[test]
fn affine_relu_and_global_pool_match_candle() {
    let arena = dirty_arena();
    let dev = Device::Cpu;
    for &(n, c, h, w) in &[(1, 256, 7, 7), (3, 13, 5, 4)] {
        let (x, b) = random(n, c, h, w);
        let scale = Tensor::randn(0f32, 1., (1, c, 1, 1), &dev).unwrap();
        let shift = Tensor::randn(0f32, 1., (1, c, 1, 1), &dev).unwrap();
        let want = x
            .broadcast_mul(&scale)
            .unwrap()
            .broadcast_add(&shift)
            .unwrap()
            .relu()
            .unwrap();
        let affine = AffineRelu::new(
            &scale.flatten_all().unwrap().to_vec1().unwrap(),
            &shift.flatten_all().unwrap().to_vec1().unwrap(),
        )
        .unwrap();
        let got = affine.forward(&b, &arena).unwrap();
        assert_same(&got, &want, "affine + relu");
        let pooled = crate::global_avg_pool(&x).unwrap();
        let pooled = pooled.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let err = rel_err(&global_avg_pool(&b), &pooled);
        assert!(err < 1e-6, "global pool: {err}");
        assert!(affine.forward(&random(1, c + 8, 2, 2).1, &arena).is_err());
    }
}

#[test]
fn arena_buffers_are_reused() {
    let arena = Arena::new();
    let conv = PackedConv::new(
        &vec![0.5f32; 16 * 16 * 9],
        [16, 16, 3, 3],
        None,
        geometry(1, 1, 1),
        InputLayout::Blocked,
    )
    .unwrap();
    let x = Nchw8c::zeros(1, 16, 9, 9);
    let y = conv
        .forward_in(Input::Blocked(&x), None, false, Isa::Portable, &arena)
        .unwrap();
    let at = y.as_slice().as_ptr();
    arena.recycle(y);
    let y = conv
        .forward_in(Input::Blocked(&x), None, false, Isa::Portable, &arena)
        .unwrap();
    assert_eq!(
        y.as_slice().as_ptr(),
        at,
        "the second output reuses the first's buffer"
    );
    assert!(y.as_slice().iter().all(|&v| v == 0.0));
}

#[test]
fn scaling_while_packing_equals_packing_the_scaled_weight() {
    let blocked = InputLayout::Blocked;
    // Grouped (2 groups, 16 -> 32 channels, direct) and ungrouped 3x3 (Winograd).
    for (ig, groups, algorithm) in [(8, 2, Algorithm::Direct), (16, 1, Algorithm::Winograd)] {
        let (o, k) = (32, 3);
        let per_filter = ig * k * k;
        let w: Vec<f32> = (0..o * per_filter)
            .map(|v| (v as f32 * 0.37).sin())
            .collect();
        let scale: Vec<f32> = (0..o).map(|v| 0.5 + v as f32 * 0.1).collect();
        let folded: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(at, &v)| v * scale[at / per_filter])
            .collect();
        let (g, shape) = (geometry(1, 1, groups), [o, ig, k, k]);
        let scaled =
            PackedConv::new_scaled(&w, shape, Some(&scale), None, g, blocked, algorithm).unwrap();
        let plain =
            PackedConv::new_scaled(&folded, shape, None, None, g, blocked, algorithm).unwrap();
        assert_eq!(scaled.is_winograd(), algorithm == Algorithm::Winograd);
        // The fold happens before Winograd's transform, in f32: the same packed values.
        assert_eq!(scaled.unpack(), plain.unpack(), "{algorithm:?}");
        let short = Some(&scale[1..]);
        assert!(PackedConv::new_scaled(&w, shape, short, None, g, blocked, algorithm).is_err());
    }
}
