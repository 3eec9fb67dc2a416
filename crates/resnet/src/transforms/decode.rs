//! Decoding: bytes or a file to 8-bit RGB pixels as PIL's `Image.open(...).convert("RGB")` gives
//! them, within [`ImageLimits`].

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use super::{jpeg, Rgb8};

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
    if format == Some(image::ImageFormat::Jpeg) && !jpeg::has_end(bytes) {
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
            DynamicImage::ImageRgb8(super::libjpeg::decode_rgb(bytes, path)?)
        }
        _ => DynamicImage::from_decoder(decoder).map_err(decode)?,
    };
    let mut image = image;
    image.apply_orientation(orientation);
    Ok(to_rgb8_like_pil(image))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
