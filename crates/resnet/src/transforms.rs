//! Image preprocessing equal to torchvision's `ImageClassification` preset applied to a PIL image:
//! decode, apply the EXIF orientation, convert to RGB as PIL's `convert("RGB")` does, resize the
//! shorter side with Pillow's antialiased filter, center-crop, scale to `[0, 1]`, normalise.
//!
//! The resize is a port of Pillow's fixed-point resampler (`libImaging/Resample.c`: filter support
//! scaled by the downscale factor, coefficients normalised to 22-bit integers, horizontal pass then
//! vertical pass, each rounded and clamped to `u8`), so on the same RGB pixels it gives the same bytes
//! as PIL. The float steps use torchvision's operation order in f32 (`x / 255`, then `(x - mean) / std`).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

mod jpeg;

/// Resampling filter, as PIL's `Image.BILINEAR` / `Image.BICUBIC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interpolation {
    /// Triangle filter, support 1 (torchvision weights).
    Bilinear,
    /// Keys cubic with a = -0.5, support 2 (timm `a1` weights and others).
    Bicubic,
}

impl Interpolation {
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

/// The ImageNet normalisation every torchvision and most timm weights use.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// See [`IMAGENET_MEAN`].
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Decoder limits: images over these are refused before their pixels are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted width and height, in pixels.
    pub max_side: u32,
    /// Largest allocation the decoder may make, in bytes.
    pub max_alloc: u64,
    /// Largest image file read, in bytes, checked from the file's size before reading.
    pub max_file_bytes: u64,
    /// Most scans a JPEG may have. Every scan of a progressive JPEG is another pass over its pixels'
    /// coefficients; encoders write about 10, and thousands of empty scans are a denial of service.
    pub max_scans: u32,
}

impl Default for ImageLimits {
    /// 16384 pixels a side, 256 MiB of decoded pixels (a 9000x9000 RGB photo fits), files of up
    /// to 256 MiB and JPEGs of up to 100 scans.
    fn default() -> Self {
        Self {
            max_side: 16384,
            max_alloc: 256 << 20,
            max_file_bytes: 256 << 20,
            max_scans: 100,
        }
    }
}

/// Why an image could not be turned into a model input. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be opened or read.
    #[error("cannot read image {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an image in a supported format, or are corrupt or truncated.
    #[error("cannot decode image {path} (supported: JPEG, PNG, WebP, GIF, BMP, TIFF)")]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// The image is larger than the configured [`ImageLimits`].
    #[error("image {path} is {width}x{height}, over the limit of {max_side} pixels a side or {max_alloc} bytes decoded; raise ImageLimits if this is intended")]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        max_side: u32,
        max_alloc: u64,
    },
    /// The file is larger than [`ImageLimits::max_file_bytes`]; nothing was read.
    #[error("image file {path} is {size} bytes, over the limit of {limit} bytes; raise ImageLimits::max_file_bytes if this is intended")]
    FileTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// A JPEG with more scans than [`ImageLimits::max_scans`]; nothing was decoded.
    #[error("image {path} is a JPEG with more than {max_scans} scans ({scans} counted before stopping); encoders write about 10, so this file would only make decoding slow; raise ImageLimits::max_scans if this is intended")]
    TooManyScans {
        path: PathBuf,
        scans: usize,
        max_scans: u32,
    },
    /// The image has no pixels.
    #[error("image {path} is empty ({width}x{height})")]
    Empty {
        path: PathBuf,
        width: u32,
        height: u32,
    },
}

/// An 8-bit RGB image, row-major, 3 bytes a pixel (PIL mode "RGB").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Reads `path`, applies its EXIF orientation and converts it to RGB as PIL's `convert("RGB")` does:
/// gray is replicated, alpha is dropped (not composited), palettes are expanded, 16-bit samples keep
/// their high byte. Animated images give their first frame. With the `libjpeg` feature (default),
/// baseline and progressive YCbCr/gray/CMYK/YCCK JPEGs are decoded by libjpeg-turbo's decoder (CMYK
/// converted to RGB with PIL's formula), giving the same
/// pixels as PIL.
pub fn load_rgb(path: impl AsRef<Path>, limits: &ImageLimits) -> Result<Rgb8, ImageError> {
    let path = path.as_ref();
    let size = std::fs::metadata(path)
        .map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if size > limits.max_file_bytes {
        return Err(ImageError::FileTooLarge {
            path: path.to_path_buf(),
            size,
            limit: limits.max_file_bytes,
        });
    }
    // A regular file only, read up to its stat'ed size: a FIFO or /dev/zero must not hang.
    let bytes =
        crate::fsread::read_regular(path, limits.max_file_bytes).map_err(|e| ImageError::Io {
            path: path.to_path_buf(),
            source: match e {
                crate::fsread::ReadError::Io(source) => source,
                other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other.to_string()),
            },
        })?;
    decode_rgb(&bytes, path, limits)
}

/// Whether a JPEG stream reaches its end-of-image marker: the marker segments are walked by their
/// lengths up to the first start-of-scan (so an EXIF thumbnail's markers are skipped), then an `FF D9`
/// must follow (entropy-coded data stuffs every `FF` as `FF 00`, so it cannot occur inside a scan).
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let mut pos = 2; // after SOI
    while pos + 4 <= bytes.len() {
        if bytes[pos] != 0xff {
            return false;
        }
        let marker = bytes[pos + 1];
        match marker {
            0xff => pos += 1, // fill byte
            0x01 | 0xd0..=0xd7 => pos += 2,
            0xd9 => return true,
            _ => {
                let len = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
                if marker == 0xda {
                    let scan = bytes.get(pos + 2 + len..).unwrap_or_default();
                    return scan.windows(2).any(|w| w == [0xff, 0xd9]);
                }
                pos += 2 + len;
            }
        }
    }
    false
}

/// [`load_rgb`] on bytes already in memory; `path` only names the image in errors.
pub fn decode_rgb(bytes: &[u8], path: &Path, limits: &ImageLimits) -> Result<Rgb8, ImageError> {
    let decode = |source| ImageError::Decode {
        path: path.to_path_buf(),
        source,
    };
    if bytes.is_empty() {
        return Err(ImageError::Empty {
            path: path.to_path_buf(),
            width: 0,
            height: 0,
        });
    }
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let format = reader.format();
    let mut decoder = reader.into_decoder().map_err(decode)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::Empty {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    let too_large = || ImageError::TooLarge {
        path: path.to_path_buf(),
        width,
        height,
        max_side: limits.max_side,
        max_alloc: limits.max_alloc,
    };
    if width > limits.max_side
        || height > limits.max_side
        || decoder.total_bytes() > limits.max_alloc
    {
        return Err(too_large());
    }
    let mut image_limits = Limits::default();
    image_limits.max_image_width = Some(limits.max_side);
    image_limits.max_image_height = Some(limits.max_side);
    image_limits.max_alloc = Some(limits.max_alloc);
    decoder.set_limits(image_limits).map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(),
        e => decode(e),
    })?;
    if format == Some(image::ImageFormat::Jpeg) && !jpeg_has_end(bytes) {
        // Decoders fill a cut-off JPEG with gray and report success; PIL refuses it ("image file is
        // truncated"), and so do we: a half-gray photo would be classified without a word.
        return Err(decode(image::ImageError::Decoding(
            image::error::DecodingError::new(
                image::error::ImageFormatHint::Exact(image::ImageFormat::Jpeg),
                "truncated JPEG: the data ends before the end-of-image marker",
            ),
        )));
    }
    if format == Some(image::ImageFormat::Jpeg) {
        let max_scans = usize::try_from(limits.max_scans).unwrap_or(usize::MAX);
        let scans = jpeg::count_scans(bytes, max_scans);
        if scans > max_scans {
            return Err(ImageError::TooManyScans {
                path: path.to_path_buf(),
                scans,
                max_scans: limits.max_scans,
            });
        }
    }
    let orientation = decoder.orientation().map_err(decode)?;
    #[cfg(feature = "libjpeg")]
    let color = decoder.color_type();
    let image = match format {
        #[cfg(feature = "libjpeg")]
        Some(image::ImageFormat::Jpeg)
            if matches!(color, image::ColorType::L8 | image::ColorType::Rgb8) =>
        {
            DynamicImage::ImageRgb8(libjpeg::decode_rgb(bytes, path)?)
        }
        _ => DynamicImage::from_decoder(decoder).map_err(decode)?,
    };
    let mut image = image;
    image.apply_orientation(orientation);
    Ok(to_rgb8_like_pil(image))
}

#[cfg(feature = "libjpeg")]
mod libjpeg {
    use std::path::Path;

    use super::ImageError;

    fn corrupt(path: &Path, msg: String) -> ImageError {
        ImageError::Decode {
            path: path.to_path_buf(),
            source: image::ImageError::Decoding(image::error::DecodingError::new(
                image::error::ImageFormatHint::Exact(image::ImageFormat::Jpeg),
                msg,
            )),
        }
    }

    /// Decodes a YCbCr or grayscale JPEG to RGB with libjpeg's defaults (ISLOW IDCT, fancy
    /// upsampling), which are PIL's. Gray is replicated to RGB by libjpeg, as `convert("RGB")` does.
    pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<image::RgbImage, ImageError> {
        let run = || -> std::io::Result<image::RgbImage> {
            let decompress = mozjpeg::Decompress::new_mem(bytes)?;
            let cmyk = matches!(
                decompress.color_space(),
                mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK
            );
            let (w, h, raw) = if cmyk {
                // libjpeg turns YCCK into CMYK; PIL then reads Adobe files as inverted CMYK
                // ("CMYK;I") and converts to RGB with its own formula.
                let mut img = decompress.to_colorspace(mozjpeg::ColorSpace::JCS_CMYK)?;
                let (w, h) = (img.width() as u32, img.height() as u32);
                let pixels: Vec<[u8; 4]> = img.read_scanlines()?;
                img.finish()?;
                let inverted = super::has_adobe_marker(bytes);
                let raw: Vec<u8> = pixels
                    .into_iter()
                    .flat_map(|p| super::cmyk_to_rgb_like_pil(p, inverted))
                    .collect();
                (w, h, raw)
            } else {
                let mut img = decompress.rgb()?;
                let (w, h) = (img.width() as u32, img.height() as u32);
                let pixels: Vec<[u8; 3]> = img.read_scanlines()?;
                img.finish()?;
                (w, h, pixels.into_iter().flatten().collect())
            };
            image::RgbImage::from_raw(w, h, raw).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "fewer scanlines than the header declares",
                )
            })
        };
        // libjpeg reports fatal errors through a callback that mozjpeg turns into a panic; keep it in.
        match std::panic::catch_unwind(run) {
            Ok(Ok(img)) => Ok(img),
            Ok(Err(e)) => Err(corrupt(path, e.to_string())),
            Err(_) => Err(corrupt(path, "libjpeg could not decode the file".into())),
        }
    }
}

/// Whether a JPEG has an Adobe APP14 segment before its first scan: PIL then takes CMYK samples as
/// inverted (Photoshop's convention, which libjpeg's own CMYK encoder follows too).
#[cfg(feature = "libjpeg")]
fn has_adobe_marker(bytes: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 4 <= bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        if marker == 0xDA || marker == 0xD9 {
            return false; // start of scan / end of image
        }
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        if marker == 0xEE && bytes.get(i + 4..i + 9) == Some(b"Adobe".as_slice()) {
            return true;
        }
        i += 2 + len;
    }
    false
}

/// PIL's `cmyk2rgb` (`Convert.c`): `channel = nk - round(ink * nk / 255)` with `nk = 255 - black`,
/// on samples inverted first when the file is an Adobe one (rawmode `CMYK;I`).
#[cfg(feature = "libjpeg")]
fn cmyk_to_rgb_like_pil(p: [u8; 4], inverted: bool) -> [u8; 3] {
    let v = |x: u8| i32::from(if inverted { 255 - x } else { x });
    let nk = 255 - v(p[3]);
    // MULDIV255: (a * b + 128 + ((a * b + 128) >> 8)) >> 8.
    let muldiv255 = |a: i32| {
        let t = a * nk + 128;
        ((t >> 8) + t) >> 8
    };
    let ch = |x: u8| (nk - muldiv255(v(x))).clamp(0, 255) as u8;
    [ch(p[0]), ch(p[1]), ch(p[2])]
}

/// PIL `convert("RGB")` semantics for every pixel layout the decoders produce.
fn to_rgb8_like_pil(image: DynamicImage) -> Rgb8 {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let data = match image {
        DynamicImage::ImageRgb8(img) => img.into_raw(),
        DynamicImage::ImageRgba8(img) => rgb_from(img.as_raw(), 4, |p| [p[0], p[1], p[2]]),
        DynamicImage::ImageLuma8(img) => rgb_from(img.as_raw(), 1, |p| [p[0]; 3]),
        DynamicImage::ImageLumaA8(img) => rgb_from(img.as_raw(), 2, |p| [p[0]; 3]),
        // PIL reads 16-bit PNG samples keeping the most significant byte (rawmode "RGB;16B").
        DynamicImage::ImageRgb16(img) => rgb_from(img.as_raw(), 3, |p| hi3(p[0], p[1], p[2])),
        DynamicImage::ImageRgba16(img) => rgb_from(img.as_raw(), 4, |p| hi3(p[0], p[1], p[2])),
        DynamicImage::ImageLuma16(img) => rgb_from(img.as_raw(), 1, |p| hi3(p[0], p[0], p[0])),
        DynamicImage::ImageLumaA16(img) => rgb_from(img.as_raw(), 2, |p| hi3(p[0], p[0], p[0])),
        other => other.to_rgb8().into_raw(),
    };
    Rgb8 {
        width,
        height,
        data,
    }
}

fn hi3(r: u16, g: u16, b: u16) -> [u8; 3] {
    [(r >> 8) as u8, (g >> 8) as u8, (b >> 8) as u8]
}

fn rgb_from<T: Copy>(raw: &[T], channels: usize, f: impl Fn(&[T]) -> [u8; 3]) -> Vec<u8> {
    raw.chunks_exact(channels).flat_map(f).collect()
}

// ---------------------------------------------------------------------------------------------
// Pillow's resampler.

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

    /// 16-bit samples keep their high byte, as PIL does for 16-bit RGB (and, deliberately, also for
    /// 16-bit gray, which PIL would clip to 255); gray is replicated to RGB.
    #[test]
    fn sixteen_bit_images_keep_the_high_byte() {
        let dir = std::env::temp_dir().join(format!("resnet-zoo-l16-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gray: Vec<u16> = vec![0, 255, 256, 5371, 32768, 65535];
        let path = dir.join("gray16.png");
        image::ImageBuffer::<image::Luma<u16>, _>::from_raw(3, 2, gray.clone())
            .unwrap()
            .save(&path)
            .unwrap();
        let rgb = load_rgb(&path, &ImageLimits::default()).unwrap();
        let expected: Vec<u8> = gray.iter().flat_map(|&v| [(v >> 8) as u8; 3]).collect();
        assert_eq!(rgb.data, expected);
        let rgba = vec![5371u16, 256, 65535, 0, 1, 2, 300, 40000];
        let path = dir.join("rgba16.png");
        image::ImageBuffer::<image::Rgba<u16>, _>::from_raw(2, 1, rgba)
            .unwrap()
            .save(&path)
            .unwrap();
        // 5371 >> 8 = 20 (PIL), not round(5371 / 257) = 21.
        assert_eq!(
            load_rgb(&path, &ImageLimits::default()).unwrap().data,
            vec![20, 1, 255, 0, 0, 1]
        );
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
