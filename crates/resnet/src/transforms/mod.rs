//! Image preprocessing equal to torchvision's `ImageClassification` preset applied to a PIL image:
//! decode, apply the EXIF orientation, convert to RGB as PIL's `convert("RGB")` does, resize the
//! shorter side with Pillow's antialiased filter, center-crop, scale to `[0, 1]`, normalise.
//!
//! Nothing here knows about the model; the pieces are:
//!
//! - decoding ([`load_rgb`], [`decode_rgb`], [`ImageLimits`]): a file or bytes to [`Rgb8`], with
//!   JPEGs through libjpeg-turbo's decoder (feature `libjpeg`, default) and their marker stream
//!   checked first (truncation, scan count);
//! - resampling ([`resize`], [`Interpolation`]): a port of Pillow's fixed-point resampler, so on
//!   the same RGB pixels it gives the same bytes as PIL;
//! - the recipe ([`Preprocess`]): torchvision's `Resize` and `CenterCrop` geometry, then the float
//!   steps in torchvision's order in f32 (`x / 255`, then `(x - mean) / std`).

mod decode;
mod jpeg;
#[cfg(feature = "libjpeg")]
mod libjpeg;
mod recipe;
mod resample;

pub use decode::{decode_rgb, load_rgb, ImageError, ImageLimits};
pub use recipe::{
    center_crop, resize_shorter_side, LoadImageError, Preprocess, IMAGENET_MEAN, IMAGENET_STD,
};
pub use resample::{resize, Interpolation, UnknownInterpolation};

/// An 8-bit RGB image, row-major, 3 bytes a pixel (PIL mode "RGB").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}
