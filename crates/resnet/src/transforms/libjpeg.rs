//! JPEG decoding through libjpeg-turbo's decoder (`mozjpeg-sys`), the library PIL links, so the
//! pixels equal PIL's; CMYK and YCCK files are converted to RGB with PIL's own formula.

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
            let inverted = has_adobe_marker(bytes);
            let raw: Vec<u8> = pixels
                .into_iter()
                .flat_map(|p| cmyk_to_rgb_like_pil(p, inverted))
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

/// Whether a JPEG has an Adobe APP14 segment before its first scan: PIL then takes CMYK samples as
/// inverted (Photoshop's convention, which libjpeg's own CMYK encoder follows too).
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
