//! Helpers shared by the kernels' tests.

#![allow(clippy::unwrap_used)]

use candle_core::{DType, Tensor, D};

/// `max|a - b|` in f64.
pub(crate) fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// `(n, c, h, w, c_out, k, stride, padding, groups)`.
pub(crate) type Case = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

/// Grouped convolutions `(n, c, h, w, c_out, k, stride, padding, groups)` every grouped kernel
/// (`grouped.rs`, `grouped_matmul.rs`) is checked on: strides 1-3, paddings, odd sizes, 1x1 to 5x5
/// kernels, windows that reach past the padded input, depthwise.
pub(crate) const CASES: &[Case] = &[
    (2, 8, 9, 7, 8, 3, 1, 1, 4),
    (1, 8, 9, 7, 16, 3, 2, 1, 2),
    (2, 6, 10, 11, 6, 3, 2, 1, 3),
    (1, 4, 5, 5, 8, 1, 2, 0, 2),
    (1, 6, 8, 9, 12, 5, 3, 2, 3),
    (3, 4, 3, 4, 4, 3, 1, 0, 1),
    (1, 6, 2, 3, 6, 3, 1, 2, 3),
    (1, 32, 14, 14, 32, 3, 2, 1, 32),
    (1, 8, 7, 7, 8, 3, 2, 0, 4),
];
