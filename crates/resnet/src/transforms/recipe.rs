//! torchvision's evaluation recipe (`ImageClassification`): resize the shorter side, center-crop,
//! scale to `[0, 1]`, normalise, in torchvision's operation order in f32.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::{load_rgb, resize, ImageError, ImageLimits, Interpolation, Rgb8};

/// The ImageNet normalisation every torchvision and most timm weights use.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// See [`IMAGENET_MEAN`].
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// torchvision's `Resize(size)` output size for an int `size`: the shorter side becomes `size`, the
/// longer one `int(size * long / short)`. Returns `(width, height)`.
pub fn resize_shorter_side(width: usize, height: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // Python: int(size * long / short) with a correctly rounded true division, then truncation.
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Python's `round()` for halves: to the nearest even integer.
fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - x.signum()) as i64
    } else {
        r as i64
    }
}

/// torchvision's `center_crop` on a PIL image: offsets `int(round((size - crop) / 2.0))`, zero padding
/// when the crop is larger than the image.
pub fn center_crop(src: &Rgb8, crop_w: usize, crop_h: usize) -> Rgb8 {
    let top = round_half_even((src.height as f64 - crop_h as f64) / 2.0);
    let left = round_half_even((src.width as f64 - crop_w as f64) / 2.0);
    let mut data = vec![0u8; crop_w * crop_h * 3];
    for y in 0..crop_h {
        let sy = y as i64 + top;
        if sy < 0 || sy >= src.height as i64 {
            continue;
        }
        for x in 0..crop_w {
            let sx = x as i64 + left;
            if sx < 0 || sx >= src.width as i64 {
                continue;
            }
            let s = (sy as usize * src.width + sx as usize) * 3;
            data[(y * crop_w + x) * 3..][..3].copy_from_slice(&src.data[s..s + 3]);
        }
    }
    Rgb8 {
        width: crop_w,
        height: crop_h,
        data,
    }
}

/// An evaluation preset: resize the shorter side, center-crop, normalise.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// The shorter side after resizing (256 for torchvision V1 weights, 232 for V2).
    pub resize_size: usize,
    /// Side of the square center crop (224).
    pub crop_size: usize,
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub limits: ImageLimits,
}

impl Preprocess {
    /// torchvision `IMAGENET1K_V1` weights: resize 256, crop 224, bilinear.
    pub fn imagenet_v1() -> Self {
        Self {
            resize_size: 256,
            crop_size: 224,
            interpolation: Interpolation::Bilinear,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            limits: ImageLimits::default(),
        }
    }

    /// torchvision `IMAGENET1K_V2` weights: resize 232, crop 224, bilinear.
    pub fn imagenet_v2() -> Self {
        Self {
            resize_size: 232,
            ..Self::imagenet_v1()
        }
    }

    /// Resize and crop only: the `u8` image the model input is made from.
    pub fn resize_crop(&self, rgb: &Rgb8) -> Rgb8 {
        let (w, h) = resize_shorter_side(rgb.width, rgb.height, self.resize_size);
        let resized = resize(rgb, w, h, self.interpolation);
        center_crop(&resized, self.crop_size, self.crop_size)
    }

    /// Pixels to a normalised `[3, crop, crop]` f32 tensor on `device`.
    pub fn apply(&self, rgb: &Rgb8, device: &Device) -> candle_core::Result<Tensor> {
        if self.resize_size == 0 || self.crop_size == 0 {
            candle_core::bail!(
                "Preprocess: resize_size ({}) and crop_size ({}) must be positive",
                self.resize_size,
                self.crop_size
            );
        }
        if rgb.width == 0 || rgb.height == 0 || rgb.data.len() != rgb.width * rgb.height * 3 {
            candle_core::bail!(
                "Preprocess: image of {}x{} with {} bytes is empty or inconsistent",
                rgb.width,
                rgb.height,
                rgb.data.len()
            );
        }
        // An extreme aspect ratio (1x10000) resizes to a huge image (256x2560000): refuse it by the
        // same allocation limit the decoder has, instead of allocating gigabytes.
        let (w, h) = resize_shorter_side(rgb.width, rgb.height, self.resize_size);
        let bytes = (w as u64).saturating_mul(h as u64).saturating_mul(3);
        if bytes > self.limits.max_alloc {
            candle_core::bail!(
                "image of {}x{} would be resized to {w}x{h} ({} MiB, extreme aspect ratio), over the {} MiB limit of ImageLimits::max_alloc",
                rgb.width,
                rgb.height,
                bytes >> 20,
                self.limits.max_alloc >> 20
            );
        }
        let img = self.resize_crop(rgb);
        let plane = img.width * img.height;
        let mut chw = vec![0f32; 3 * plane];
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                // torchvision: convert_image_dtype (x / 255), then normalize ((x - mean) / std), in f32.
                chw[c * plane + i] = (f32::from(px[c]) / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        Tensor::from_vec(chw, (3, img.height, img.width), device)
    }

    /// [`load_rgb`] then [`Preprocess::apply`].
    pub fn load(&self, path: impl AsRef<Path>, device: &Device) -> Result<Tensor, LoadImageError> {
        let rgb = load_rgb(path, &self.limits)?;
        Ok(self.apply(&rgb, device)?)
    }
}

/// Error of [`Preprocess::load`].
#[derive(Debug, thiserror::Error)]
pub enum LoadImageError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_round_is_half_even() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(16.0), 16);
        assert_eq!(round_half_even(-0.5), 0);
        assert_eq!(round_half_even(-1.5), -2);
    }

    #[test]
    fn shorter_side_resize_matches_torchvision() {
        // 451x300 (chelsea) -> short 256, long int(256 * 451 / 300) = 384
        assert_eq!(resize_shorter_side(451, 300, 256), (384, 256));
        assert_eq!(resize_shorter_side(300, 451, 232), (232, 348));
        assert_eq!(resize_shorter_side(100, 100, 256), (256, 256));
    }
    #[test]
    fn degenerate_inputs_are_errors() {
        let empty = Rgb8 {
            width: 0,
            height: 0,
            data: vec![],
        };
        let one = Rgb8 {
            width: 1,
            height: 1,
            data: vec![9, 9, 9],
        };
        assert!(Preprocess {
            crop_size: 0,
            ..Preprocess::imagenet_v1()
        }
        .apply(&one, &Device::Cpu)
        .is_err());
        assert!(Preprocess::imagenet_v1()
            .apply(&empty, &Device::Cpu)
            .is_err());
        // A 1x1 image upsamples to a constant crop.
        let t = Preprocess::imagenet_v1().apply(&one, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 224, 224]);
    }

    #[test]
    fn center_crop_pads_when_larger() {
        let src = Rgb8 {
            width: 2,
            height: 1,
            data: vec![1, 1, 1, 2, 2, 2],
        };
        let out = center_crop(&src, 4, 1);
        assert_eq!(out.data, vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0]);
    }
}
