#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor};

use super::*;

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
    [Isa::Portable, Isa::Avx2Fma, Isa::Avx512]
        .into_iter()
        .filter(|isa| isa.available())
        .collect()
}

#[test]
fn layout_round_trips_and_pads_with_zeros() {
    for &(n, c, h, w) in &[(1, 3, 5, 7), (2, 13, 4, 3), (3, 20, 1, 1), (1, 16, 2, 2)] {
        let x: Vec<f32> = (0..n * c * h * w).map(|i| i as f32 + 0.5).collect();
        let b = Nchw8c::from_nchw(&x, n, c, h, w).unwrap();
        assert_eq!(b.data.len(), n * c.div_ceil(8) * h * w * 8);
        // Element (image, channel, y, x) lives at [image][channel / 8][y][x][channel % 8].
        for i in 0..n {
            for ch in 0..c.div_ceil(8) * 8 {
                for p in 0..h * w {
                    let v = b.data[((i * c.div_ceil(8) + ch / 8) * h * w + p) * 8 + ch % 8];
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

/// Every kernel path against Candle's conv2d followed by the epilogue as separate ops.
fn check(cases: &[Case], input: InputLayout) {
    let dev = Device::Cpu;
    for &(n, c, h, w, c_out, k, stride, padding) in cases {
        let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1., (c_out, c, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1., c_out, &dev).unwrap();
        let plain = x.conv2d(&wt, padding, stride, 1, 1).unwrap();
        let residual = Tensor::randn(0f32, 1., plain.shape(), &dev).unwrap();
        let res_blocked = Nchw8c::from_tensor(&residual).unwrap();
        let x_blocked = Nchw8c::from_tensor(&x).unwrap();
        let x_plain = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (with_bias, with_residual, relu) in [
            (false, false, false),
            (true, false, true),
            (true, true, true),
            (false, true, false),
        ] {
            let packed =
                PackedConv::from_tensors(&wt, with_bias.then_some(&bias), stride, padding, input)
                    .unwrap();
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
                let case = (n, c, h, w, c_out, k, stride, padding, input, isa);
                let (_, _, ho, wo) = plain.dims4().unwrap();
                assert_eq!((got.n, got.c, got.h, got.w), (n, c_out, ho, wo), "{case:?}");
                // Padded output lanes stay zero, so the result can feed the next layer.
                for (i, px) in got.data.chunks_exact(8).enumerate() {
                    let block = i / (ho * wo) % c_out.div_ceil(8);
                    for (lane, &v) in px.iter().enumerate() {
                        if block * 8 + lane >= c_out {
                            assert_eq!(v, 0.0, "{case:?}: padded lane");
                        }
                    }
                }
                let err = rel_err(&got.to_nchw(), &want);
                assert!(
                    err < 1e-5,
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
    let conv = PackedConv::new(&w, [16, 8, 3, 3], None, 1, 1, InputLayout::Blocked).unwrap();
    let x = Nchw8c::zeros(1, 4, 5, 5);
    assert!(conv
        .forward(Input::Blocked(&x), None, false, Isa::Portable)
        .is_err());
    let x = Nchw8c::zeros(1, 8, 5, 5);
    let plain = Input::Nchw {
        data: &x.data,
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
    assert!(PackedConv::new(&w, [16, 8, 3, 2], None, 1, 1, InputLayout::Blocked).is_err());
    assert!(PackedConv::new(
        &w,
        [16, 8, 3, 3],
        Some(&[0.0; 3]),
        1,
        1,
        InputLayout::Blocked
    )
    .is_err());
}
