//! Hostile inputs: every broken weights file and image is generated here (nothing large is
//! committed), and each must give one error naming the file with a hint, from the library and from
//! the CLI (exit code 1, never 101 = a Rust panic), and never a half-loaded model.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use resnet_zoo::hub::{self, LoadOptions};
use resnet_zoo::transforms::{load_rgb, ImageLimits, Preprocess};
use resnet_zoo::{ResNet, ResNetConfig};

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("resnet-zoo-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The error and all its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        out += ": ";
        out += &c.to_string();
        source = c.source();
    }
    out
}

/// The smallest preset (CIFAR ResNet-20, 0.27M parameters), so every case loads in milliseconds.
fn cfg() -> ResNetConfig {
    ResNetConfig::resnet20()
}

fn valid_tensors() -> HashMap<String, Tensor> {
    ResNet::tensor_specs(&cfg())
        .into_iter()
        .map(|s| {
            let t = Tensor::rand(0.5f32, 1.5, s.shape.as_slice(), &Device::Cpu).unwrap();
            (s.name, t)
        })
        .collect()
}

fn bytes_of(tensors: &HashMap<String, Tensor>) -> Vec<u8> {
    let dir = temp_dir("ser");
    let path = dir.join("w.safetensors");
    candle_core::safetensors::save(tensors, &path).unwrap();
    std::fs::read(path).unwrap()
}

/// Splits safetensors bytes into (header JSON, data).
fn split(bytes: &[u8]) -> (serde_json::Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn join(header_text: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header_text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header_text.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Loads `bytes` saved as `name` through the library, and through `classify`, expecting failure
/// with every `want` in the message (and in stderr, with exit code 1).
fn refused(dir: &Path, name: &str, bytes: &[u8], want: &[&str]) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    refused_path(&path, want);
}

fn refused_path(path: &Path, want: &[&str]) {
    let Err(err) = hub::load_safetensors(path, &cfg(), DType::F32, &Device::Cpu) else {
        panic!("{} loaded", path.display());
    };
    let msg = chain(&err);
    assert!(
        msg.contains(&path.display().to_string()),
        "names the file: {msg}"
    );
    for w in want {
        assert!(msg.contains(w), "{}: {w:?} not in: {msg}", path.display());
    }
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/coffee_small.jpg");
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .args(["classify", "--arch", "resnet20", "--weights"])
        .arg(path)
        .arg(image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}: {stderr}", path.display());
    assert!(
        stderr.contains(&path.display().to_string()) && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn broken_weights_files_are_refused_with_the_reason() {
    let dir = temp_dir("weights");
    let valid = bytes_of(&valid_tensors());
    let (header, data) = split(&valid);
    let not_safetensors = "not a valid safetensors file";

    refused(
        &dir,
        "truncated.safetensors",
        &valid[..valid.len() / 2],
        &[not_safetensors],
    );
    refused(
        &dir,
        "header_only.safetensors",
        &valid[..100],
        &[not_safetensors],
    );
    let mut long = valid.clone();
    long[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    refused(
        &dir,
        "header_too_long.safetensors",
        &long,
        &[not_safetensors],
    );
    refused(
        &dir,
        "not_json.safetensors",
        &join("{not json at all", &data),
        &[not_safetensors],
    );
    refused(
        &dir,
        "lfs.safetensors",
        b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1234\n",
        &["Git LFS pointer", "git lfs pull"],
    );
    refused(
        &dir,
        "page.safetensors",
        b"<!DOCTYPE html><html><body>Sign in</body></html>",
        &["HTML page"],
    );
    refused(&dir, "empty.safetensors", b"", &["is empty", "interrupted"]);
    refused(
        &dir,
        "pickle.safetensors",
        b"PK\x03\x04 a torch.save zip",
        &[".pth"],
    );

    // Offsets out of bounds, overlapping, a duplicate name, an unknown dtype: header edits.
    let edit = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut h = header.as_object().unwrap().clone();
        f(&mut h);
        join(&serde_json::Value::Object(h).to_string(), &data)
    };
    let first = header
        .as_object()
        .unwrap()
        .keys()
        .find(|k| *k != "__metadata__")
        .unwrap()
        .clone();
    let out_of_bounds = edit(&|h| {
        h[&first]["data_offsets"][1] = serde_json::json!(data.len() + 4096);
    });
    refused(
        &dir,
        "out_of_bounds.safetensors",
        &out_of_bounds,
        &[not_safetensors],
    );
    let later = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, v)| *k != "__metadata__" && v["data_offsets"][0].as_u64() > Some(0))
        .map(|(k, _)| k.clone())
        .unwrap();
    let overlapping = edit(&|h| {
        let start = h[&later]["data_offsets"][0].as_u64().unwrap();
        h[&later]["data_offsets"][0] = serde_json::json!(start - 4);
    });
    refused(
        &dir,
        "overlapping.safetensors",
        &overlapping,
        &[not_safetensors],
    );
    let unknown_dtype = edit(&|h| h[&first]["dtype"] = serde_json::json!("F7"));
    refused(
        &dir,
        "unknown_dtype.safetensors",
        &unknown_dtype,
        &[not_safetensors],
    );
    // A name twice (JSON allows it textually): the second entry must not silently win.
    let text = serde_json::Value::Object(header.as_object().unwrap().clone()).to_string();
    let entry = format!(
        "\"{first}\":{}",
        serde_json::to_string(&header[&first]).unwrap()
    );
    let duplicated = text.replacen('{', &format!("{{{entry},"), 1);
    let dup_bytes = join(&duplicated, &data);
    refused(
        &dir,
        "duplicate.safetensors",
        &dup_bytes,
        &["names a tensor more than once", &first],
    );

    // Integer, mis-shaped, missing and unexpected tensors: one report.
    let mut t = valid_tensors();
    t.insert(
        "conv1.weight".into(),
        Tensor::zeros((16, 3, 3, 3), DType::I64, &Device::Cpu).unwrap(),
    );
    t.insert(
        "fc.weight".into(),
        Tensor::zeros((10, 63), DType::F32, &Device::Cpu).unwrap(),
    );
    t.remove("layer1.0.bn1.running_var");
    t.insert(
        "extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    refused(
        &dir,
        "mismatch.safetensors",
        &bytes_of(&t),
        &[
            "non-float dtype",
            "conv1.weight",
            "fc.weight",
            "layer1.0.bn1.running_var",
            "extra.weight",
        ],
    );

    // NaN and Inf: refused by default, naming the tensors; allowed explicitly.
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let mut t: HashMap<String, Tensor> = valid_tensors()
            .into_iter()
            .map(|(k, v)| (k, v.to_dtype(dtype).unwrap()))
            .collect();
        let poison = |t: &mut HashMap<String, Tensor>, name: &str, value: f32| {
            let v = &t[name];
            let mut data: Vec<f32> = v
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            data[1] = value;
            let new = Tensor::from_vec(data, v.shape(), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            t.insert(name.to_string(), new);
        };
        poison(&mut t, "layer2.0.conv1.weight", f32::NAN);
        poison(&mut t, "fc.bias", f32::INFINITY);
        let name = format!("nonfinite_{dtype:?}.safetensors");
        refused(
            &dir,
            &name,
            &bytes_of(&t),
            &[
                "NaN or infinite values in 2 tensors",
                "fc.bias (1 values)",
                "layer2.0.conv1.weight (1 values)",
                "set LoadOptions::allow_non_finite to load it anyway",
            ],
        );
        let allow = LoadOptions {
            allow_non_finite: true,
            ..LoadOptions::default()
        };
        hub::load_safetensors_with(dir.join(&name), &cfg(), DType::F32, &Device::Cpu, allow)
            .unwrap();
    }

    // A directory, a missing file.
    refused_path(&dir, &["cannot read weights file"]);
    refused_path(
        &dir.join("missing.safetensors"),
        &["cannot read weights file", "No such file"],
    );
}

fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn photo() -> image::DynamicImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/coffee_small.jpg");
    image::open(path).unwrap()
}

/// Decoding through the library: Ok((width, height)) or the error message.
fn decode(path: &Path) -> Result<(usize, usize), String> {
    let rgb = load_rgb(path, &ImageLimits::default()).map_err(|e| chain(&e))?;
    Preprocess::imagenet_v2()
        .apply(&rgb, &Device::Cpu)
        .map_err(|e| chain(&e))?;
    Ok((rgb.width, rgb.height))
}

#[test]
fn broken_images_are_refused_and_odd_ones_decoded() {
    if common::skip_without_fixtures() {
        return;
    }
    let dir = temp_dir("images");
    let img = photo();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let jpeg = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/coffee_small.jpg"),
    )
    .unwrap();
    let png = encode(&img, image::ImageFormat::Png);
    let gif = encode(&img, image::ImageFormat::Gif);
    let webp = encode(&img, image::ImageFormat::WebP);
    let bomb = common::png_bomb(30000, 30000);
    let mut corrupt_png = png.clone();
    let mid = corrupt_png.len() / 2;
    corrupt_png[mid] ^= 0xff; // breaks the IDAT CRC / deflate stream

    for (name, bytes, want) in [
        ("zero.jpg", &b""[..], "is empty"),
        (
            "truncated.jpg",
            &jpeg[..jpeg.len() / 2],
            "cannot decode image",
        ),
        (
            "truncated.png",
            &png[..png.len() / 2],
            "cannot decode image",
        ),
        ("corrupt.png", &corrupt_png[..], "cannot decode image"),
        (
            "truncated.gif",
            &gif[..gif.len() / 2],
            "cannot decode image",
        ),
        (
            "truncated.webp",
            &webp[..webp.len() / 2],
            "cannot decode image",
        ),
        (
            "text.jpg",
            &b"just some text, not an image"[..],
            "cannot decode image",
        ),
        (
            "bomb.png",
            &bomb[..],
            "over the limit of 16384 pixels a side",
        ),
    ] {
        let path = write(name, bytes);
        let err = decode(&path).unwrap_err();
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
    }
    // A bomb is refused from its header, before any pixel is allocated: even with a tiny allocation
    // limit the message is the size one.
    assert!(bomb.len() < 8 * 1024);

    // Extreme aspect ratio: 1x10000 would resize to 256x2560000 (1.9 GB); refused by the same limit.
    let thin = image::DynamicImage::new_rgb8(1, 10000);
    let path = write("thin.png", &encode(&thin, image::ImageFormat::Png));
    let err = decode(&path).unwrap_err();
    assert!(
        err.contains("extreme aspect ratio") && err.contains("232x2320000"),
        "{err}"
    );

    // Odd but valid: decoded.
    let wrong_ext = write("really_a_png.jpg", &png);
    assert_eq!(
        decode(&wrong_ext).unwrap(),
        (img.width() as usize, img.height() as usize)
    );
    let tiny = write(
        "one.png",
        &encode(
            &image::DynamicImage::new_rgb8(1, 1),
            image::ImageFormat::Png,
        ),
    );
    assert_eq!(decode(&tiny).unwrap(), (1, 1));
    let la = write(
        "gray_alpha.png",
        &encode(
            &image::DynamicImage::ImageLumaA8(img.to_luma_alpha8()),
            image::ImageFormat::Png,
        ),
    );
    assert_eq!(
        decode(&la).unwrap(),
        (img.width() as usize, img.height() as usize)
    );
    let rgb16 = write(
        "rgb16.png",
        &encode(
            &image::DynamicImage::ImageRgb16(img.to_rgb16()),
            image::ImageFormat::Png,
        ),
    );
    assert!(decode(&rgb16).is_ok());

    // Animated GIF: the first frame.
    let frames: Vec<image::Frame> = [
        image::Rgba([255u8, 0, 0, 255]),
        image::Rgba([0, 0, 255, 255]),
    ]
    .into_iter()
    .map(|c| image::Frame::new(image::RgbaImage::from_pixel(8, 6, c)))
    .collect();
    let mut anim = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut anim);
        enc.encode_frames(frames).unwrap();
    }
    let path = write("anim.gif", &anim);
    let rgb = load_rgb(&path, &ImageLimits::default()).unwrap();
    assert_eq!((rgb.width, rgb.height), (8, 6));
    assert_eq!(
        &rgb.data[..3],
        &[255, 0, 0],
        "first frame (red), not the second"
    );

    // The CLI reports each bad image, classifies the others: exit 1, never a panic.
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .args(["classify", "--arch", "resnet18", "--weights"])
        .arg(common::fixture("resnet18.safetensors"))
        .arg(dir.join("bomb.png"))
        .arg(dir.join("truncated.jpg"))
        .arg(&wrong_ext)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bomb.png")
            && stderr.contains("truncated.jpg")
            && stderr.contains("2 of 3 images failed"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("really_a_png.jpg"));
}

/// EXIF orientations 1-8 on a JPEG with a known asymmetric pattern: the decoded image is the
/// upright one for every orientation (PIL's `exif_transpose` semantics).
#[test]
fn every_exif_orientation_is_applied() {
    let dir = temp_dir("exif");
    // 4 wide x 2 high, stored as a JPEG at 8x scale so compression keeps the colours distinct.
    let (w, h) = (32u32, 16u32);
    let colour = |x: u32, y: u32| match (x * 4 / w, y * 2 / h) {
        (0, 0) => [255u8, 0, 0],
        (3, 1) => [0, 0, 255],
        _ => [128, 128, 128],
    };
    let upright = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(colour(x, y)));
    // PIL's exif_transpose reads output pixel (x, y) from stored pixel f(x, y) (stored image
    // `sw` x `sh`); so the stored image for orientation `o` is made by writing upright[x, y] there.
    let stored = |o: u16| -> image::RgbImage {
        let (sw, sh) = if o >= 5 { (h, w) } else { (w, h) };
        let f = |x: u32, y: u32| match o {
            1 => (x, y),
            2 => (sw - 1 - x, y),
            3 => (sw - 1 - x, sh - 1 - y),
            4 => (x, sh - 1 - y),
            5 => (y, x),
            6 => (y, sh - 1 - x),
            7 => (sw - 1 - y, sh - 1 - x),
            8 => (sw - 1 - y, x),
            _ => unreachable!(),
        };
        let mut img = image::RgbImage::new(sw, sh);
        for (x, y, p) in upright.enumerate_pixels() {
            let (sx, sy) = f(x, y);
            img.put_pixel(sx, sy, *p);
        }
        img
    };
    for o in 1..=8u16 {
        let jpeg = encode(
            &image::DynamicImage::ImageRgb8(stored(o)),
            image::ImageFormat::Jpeg,
        );
        let path = dir.join(format!("exif{o}.jpg"));
        std::fs::write(&path, with_orientation(&jpeg, o)).unwrap();
        let rgb = load_rgb(&path, &ImageLimits::default()).unwrap();
        assert_eq!(
            (rgb.width, rgb.height),
            (w as usize, h as usize),
            "orientation {o}"
        );
        let px = |x: usize, y: usize| &rgb.data[(y * rgb.width + x) * 3..][..3];
        let near = |p: &[u8], c: [u8; 3]| p.iter().zip(c).all(|(&a, b)| a.abs_diff(b) < 40);
        assert!(
            near(px(2, 2), [255, 0, 0]),
            "orientation {o}: top-left is {:?}",
            px(2, 2)
        );
        assert!(
            near(px(29, 13), [0, 0, 255]),
            "orientation {o}: bottom-right is {:?}",
            px(29, 13)
        );
    }
}

/// `jpeg` with an EXIF APP1 segment holding only the Orientation tag, right after SOI.
fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec(); // big-endian, IFD at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}
