//! Preprocessing against torchvision's `ResNet50_Weights.IMAGENET1K_V{1,2}.transforms()` applied to
//! `ImageOps.exif_transpose(Image.open(path)).convert("RGB")`, on the real photos in
//! `tests/data/images` (JPEG baseline/progressive/EXIF-rotated, RGB/gray/RGBA/palette/16-bit PNG).
//!
//! Three measurements per photo, printed with `--nocapture`:
//! 1. decode: our RGB pixels vs PIL's (identical; JPEG only with the default `libjpeg` feature);
//! 2. resize: our Pillow-port resize of PIL's own pixels vs PIL's resize: must be byte-identical;
//! 3. pipeline: our model input from the file vs torchvision's, and the resnet50 fixture's top-5 on
//!    both inputs, which must be identical.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use candle_core::{DType, Device, Module, Tensor};

use common::{load_tensors, max_abs_diff, top_k};
use resnet_zoo::transforms::{
    load_rgb, resize, resize_shorter_side, ImageLimits, Interpolation, Preprocess, Rgb8,
};
use resnet_zoo::{hub, ResNetConfig};

fn images() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("jpg" | "png")))
        .collect();
    v.sort();
    assert!(
        v.len() >= 6,
        "expected at least 6 test photos in {}",
        dir.display()
    );
    v
}

fn rgb_of(t: &Tensor) -> Rgb8 {
    let (h, w, c) = t.dims3().unwrap();
    assert_eq!(c, 3);
    Rgb8 {
        width: w,
        height: h,
        data: t.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
    }
}

fn count_diff(a: &[u8], b: &[u8]) -> (usize, u8) {
    a.iter().zip(b).fold((0, 0), |(n, m), (&x, &y)| {
        let d = x.abs_diff(y);
        (n + usize::from(d != 0), m.max(d))
    })
}

#[test]
fn resize_is_byte_identical_to_pillow() {
    if common::skip_without_fixtures() {
        return;
    }
    for path in images() {
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let t = load_tensors(&format!("images/{stem}.safetensors"));
        let pil_rgb = rgb_of(&t["rgb"]);
        let pil_resized = rgb_of(&t["resized_v1"]);
        let (w, h) = resize_shorter_side(pil_rgb.width, pil_rgb.height, 256);
        assert_eq!(
            (w, h),
            (pil_resized.width, pil_resized.height),
            "{stem}: resize size"
        );
        let ours = resize(&pil_rgb, w, h, Interpolation::Bilinear);
        let (n, max) = count_diff(&ours.data, &pil_resized.data);
        println!(
            "{stem}: resize {}x{} -> {w}x{h}, {n} bytes differ (max {max})",
            pil_rgb.width, pil_rgb.height
        );
        assert_eq!(
            n, 0,
            "{stem}: our resize differs from Pillow's in {n} bytes (max {max})"
        );
    }
}

#[test]
fn pipeline_matches_torchvision_on_real_photos() {
    if common::skip_without_fixtures() {
        return;
    }
    let model = hub::load_safetensors(
        common::fixture("resnet50.safetensors"),
        &ResNetConfig::resnet50(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let mut worst_exact: f64 = 0.0;
    for path in images() {
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let is_png = path.extension().unwrap() == "png";
        let t = load_tensors(&format!("images/{stem}.safetensors"));
        let ours_rgb = load_rgb(&path, &ImageLimits::default()).unwrap();
        let pil_rgb = rgb_of(&t["rgb"]);
        assert_eq!(
            (ours_rgb.width, ours_rgb.height),
            (pil_rgb.width, pil_rgb.height),
            "{stem}: size after EXIF orientation"
        );
        let (n, max) = count_diff(&ours_rgb.data, &pil_rgb.data);
        let mut line = format!(
            "{stem} ({}x{}): decode {n}/{} bytes differ (max {max})",
            pil_rgb.width,
            pil_rgb.height,
            pil_rgb.data.len()
        );
        // PNG decoding is lossless; JPEG goes through libjpeg-turbo's decoder, as in PIL. Without the
        // `libjpeg` feature, zune-jpeg rounds its IDCT and upsampling differently (measured: <= 4).
        let exact = is_png || cfg!(feature = "libjpeg");
        if exact {
            assert_eq!(
                n, 0,
                "{stem}: decoded pixels differ from PIL's in {n} bytes (max {max})"
            );
        } else {
            assert!(max <= 8, "{stem}: JPEG decode differs by up to {max}");
        }
        for (key, pre) in [
            ("v1", Preprocess::imagenet_v1()),
            ("v2", Preprocess::imagenet_v2()),
        ] {
            let ours = pre.load(&path, &Device::Cpu).unwrap();
            let diff = max_abs_diff(&ours, &t[key]);
            // Given the same pixels the float steps are the same f32 operations as torchvision.
            let same_pixels = max_abs_diff(&pre.apply(&pil_rgb, &Device::Cpu).unwrap(), &t[key]);
            assert_eq!(
                same_pixels, 0.0,
                "{stem} {key}: preprocessing of PIL's pixels is not exact"
            );
            line += &format!(", {key} input max|diff| {diff:.2e}");
            if exact {
                worst_exact = worst_exact.max(diff);
            }
        }
        let ours = Preprocess::imagenet_v1().load(&path, &Device::Cpu).unwrap();
        let logits = model.forward(&ours.unsqueeze(0).unwrap()).unwrap();
        let reference = t["logits_v1"].unsqueeze(0).unwrap();
        assert_eq!(
            top_k(&logits, 5),
            top_k(&reference, 5),
            "{stem}: top-5 differs from torchvision"
        );
        println!("{line}, top-5 equal");
    }
    assert_eq!(worst_exact, 0.0, "inputs must match torchvision exactly");
}

/// Bicubic (timm `a1` weights: resize 235, crop 224) equals PIL's BICUBIC resize byte for byte, and the
/// whole preprocessing equals torchvision's composition on the same photo.
#[test]
fn bicubic_matches_pillow() {
    if common::skip_without_fixtures() {
        return;
    }
    let pre = Preprocess {
        resize_size: 235,
        interpolation: Interpolation::Bicubic,
        ..Preprocess::imagenet_v1()
    };
    for path in images() {
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let t = load_tensors(&format!("images/{stem}.safetensors"));
        let pil_rgb = rgb_of(&t["rgb"]);
        let pil_resized = rgb_of(&t["resized_bicubic_235"]);
        let (w, h) = resize_shorter_side(pil_rgb.width, pil_rgb.height, 235);
        let ours = resize(&pil_rgb, w, h, Interpolation::Bicubic);
        let (n, max) = count_diff(&ours.data, &pil_resized.data);
        assert_eq!(
            n, 0,
            "{stem}: bicubic differs from Pillow's in {n} bytes (max {max})"
        );
        let input = pre.load(&path, &Device::Cpu).unwrap();
        assert_eq!(
            max_abs_diff(&input, &t["a1"]),
            0.0,
            "{stem}: a1 preprocessing differs"
        );
    }
}
