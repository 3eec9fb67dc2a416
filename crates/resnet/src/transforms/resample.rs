//! Pillow's fixed-point resampler (`libImaging/Resample.c`), ported: filter support scaled by the
//! downscale factor (the antialiasing), coefficients normalised to 22-bit integers, a horizontal
//! pass then a vertical pass, each rounded and clamped to `u8`. On the same RGB pixels it gives the
//! same bytes as PIL's `Image.resize`.

use std::fmt;
use std::str::FromStr;

use super::Rgb8;

/// Resampling filter, as PIL's `Image.BILINEAR` / `Image.BICUBIC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interpolation {
    /// Triangle filter, support 1 (torchvision weights).
    Bilinear,
    /// Keys cubic with a = -0.5, support 2 (timm `a1` weights and others).
    Bicubic,
}

impl Interpolation {
    /// Every filter.
    pub const ALL: [Interpolation; 2] = [Interpolation::Bilinear, Interpolation::Bicubic];

    /// The filter's name as torchvision, timm and the weights table write it: `bilinear`, `bicubic`.
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        }
    }

    fn support(self) -> f64 {
        match self {
            Interpolation::Bilinear => 1.0,
            Interpolation::Bicubic => 2.0,
        }
    }

    fn filter(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Interpolation::Bilinear => (1.0 - x).max(0.0),
            Interpolation::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

impl fmt::Display for Interpolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An interpolation name that is not one of [`Interpolation::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown interpolation `{0}` (expected `bilinear` or `bicubic`)")]
pub struct UnknownInterpolation(pub String);

impl FromStr for Interpolation {
    type Err = UnknownInterpolation;

    /// [`Interpolation::name`]'s names, exactly (lower case, as in torchvision and timm).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| UnknownInterpolation(s.to_string()))
    }
}

/// Pillow keeps 32 - 8 - 2 bits of fraction in its 8-bit fixed-point coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output pixel: first input index, number of taps, and the fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for resizing `in_size` to `out_size`.
fn precompute_coeffs(in_size: usize, out_size: usize, filter: Interpolation) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    // Downscaling widens the filter by the scale factor: this is the antialiasing.
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // `(int)` in C truncates toward zero; the clamps make that equal to floor here.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = filter.filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for (x, kx) in k.iter().enumerate().take(xmax) {
            let w = if ww != 0.0 { kx / ww } else { *kx };
            // Round half away from zero, as `(int)(±0.5 + w * 2^22)`.
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            row[x] = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs {
        bounds,
        ksize,
        weights,
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes an RGB image to `out_w` x `out_h` exactly as PIL's `Image.resize(size, filter)` does for
/// mode "RGB" (no `box`, no `reducing_gap`).
pub fn resize(src: &Rgb8, out_w: usize, out_h: usize, filter: Interpolation) -> Rgb8 {
    if src.width == out_w && src.height == out_h {
        return src.clone();
    }
    if src.width == 0 || src.height == 0 || out_w == 0 || out_h == 0 {
        // Nothing to sample from, or nothing to produce (Pillow refuses both).
        return Rgb8 {
            width: out_w,
            height: out_h,
            data: vec![0; out_w * out_h * 3],
        };
    }
    let horiz = precompute_coeffs(src.width, out_w, filter);
    let vert = precompute_coeffs(src.height, out_h, filter);
    // Rows of the source that the vertical pass reads.
    let first_row = vert.bounds[0].0;
    let last_row = vert.bounds[out_h - 1].0 + vert.bounds[out_h - 1].1;

    let tmp = if src.width != out_w {
        let rows = last_row - first_row;
        let mut tmp = vec![0u8; rows * out_w * 3];
        for y in 0..rows {
            let in_row = &src.data[(y + first_row) * src.width * 3..][..src.width * 3];
            let out_row = &mut tmp[y * out_w * 3..][..out_w * 3];
            for (xx, &(xmin, n)) in horiz.bounds.iter().enumerate() {
                let k = &horiz.weights[xx * horiz.ksize..][..n];
                let mut acc = [HALF; 3];
                for (x, &w) in k.iter().enumerate() {
                    let p = &in_row[(xmin + x) * 3..][..3];
                    for c in 0..3 {
                        acc[c] += i32::from(p[c]) * w;
                    }
                }
                for c in 0..3 {
                    out_row[xx * 3 + c] = clip8(acc[c]);
                }
            }
        }
        Rgb8 {
            width: out_w,
            height: rows,
            data: tmp,
        }
    } else {
        Rgb8 {
            width: src.width,
            height: last_row - first_row,
            data: src.data[first_row * src.width * 3..last_row * src.width * 3].to_vec(),
        }
    };
    if src.height == out_h {
        return tmp;
    }
    let stride = tmp.width * 3;
    let mut out = vec![0u8; out_h * stride];
    for (yy, &(ymin, n)) in vert.bounds.iter().enumerate() {
        let k = &vert.weights[yy * vert.ksize..][..n];
        let ymin = ymin - first_row;
        let out_row = &mut out[yy * stride..][..stride];
        for (i, o) in out_row.iter_mut().enumerate() {
            let mut acc = HALF;
            for (y, &w) in k.iter().enumerate() {
                acc += i32::from(tmp.data[(ymin + y) * stride + i]) * w;
            }
            *o = clip8(acc);
        }
    }
    Rgb8 {
        width: tmp.width,
        height: out_h,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for i in Interpolation::ALL {
            assert_eq!(i.name().parse::<Interpolation>(), Ok(i));
            assert_eq!(i.to_string(), i.name());
        }
        let err = "Bicubic".parse::<Interpolation>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown interpolation `Bicubic` (expected `bilinear` or `bicubic`)"
        );
    }

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        for (i, o) in [(451, 384), (300, 256), (10, 300), (1000, 3), (7, 7)] {
            for f in [Interpolation::Bilinear, Interpolation::Bicubic] {
                let c = precompute_coeffs(i, o, f);
                for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
                    assert!(n >= 1 && xmin + n <= i);
                    let sum: i64 = c.weights[xx * c.ksize..][..n]
                        .iter()
                        .map(|&w| i64::from(w))
                        .sum();
                    assert!(
                        (sum - (1 << PRECISION_BITS)).abs() <= n as i64,
                        "{i}->{o} {f:?}: {sum}"
                    );
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = Rgb8 {
            width: 37,
            height: 23,
            data: [10u8, 128, 250].repeat(37 * 23),
        };
        for f in [Interpolation::Bilinear, Interpolation::Bicubic] {
            let out = resize(&src, 16, 50, f);
            assert_eq!((out.width, out.height), (16, 50));
            assert!(out.data.chunks(3).all(|p| p == [10, 128, 250]), "{f:?}");
        }
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let empty = Rgb8 {
            width: 0,
            height: 0,
            data: vec![],
        };
        assert_eq!(resize(&empty, 4, 4, Interpolation::Bilinear).data.len(), 48);
        let one = Rgb8 {
            width: 1,
            height: 1,
            data: vec![9, 9, 9],
        };
        assert!(resize(&one, 0, 3, Interpolation::Bicubic).data.is_empty());
    }
}
