//! Property tests of hostile inputs, bounded to seconds: random truncations and byte flips of a
//! valid weights file and of valid images never panic, and a damaged weights file never loads as
//! different tensors.
//!
//! A flipped byte in the *data* section of a safetensors file is a different but valid file (the
//! format has no checksum; the Hub download path verifies the sha256 instead), so flips are drawn
//! from the header, where every change must be refused or be harmless (JSON whitespace).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::sync::LazyLock;

use candle_core::{DType, Device, Module, Tensor};
use proptest::prelude::*;
use resnet_zoo::hub::{self, LoadOptions};
use resnet_zoo::transforms::{decode_rgb, ImageLimits, Preprocess};
use resnet_zoo::{ResNet, ResNetConfig};

fn cfg() -> ResNetConfig {
    ResNetConfig::resnet20()
}

/// A valid resnet20 checkpoint, and the output of the model built from it on a fixed input.
static VALID: LazyLock<(Vec<u8>, Tensor, Tensor)> = LazyLock::new(|| {
    let tensors: std::collections::HashMap<String, Tensor> = ResNet::tensor_specs(&cfg())
        .into_iter()
        .map(|s| {
            let t = Tensor::rand(0.5f32, 1.5, s.shape.as_slice(), &Device::Cpu).unwrap();
            (s.name, t)
        })
        .collect();
    let path = std::env::temp_dir().join(format!(
        "resnet-zoo-prop-{}.safetensors",
        std::process::id()
    ));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let x = Tensor::rand(-1f32, 1., (1, 3, 8, 8), &Device::Cpu).unwrap();
    let y = load(&bytes).unwrap().forward(&x).unwrap();
    (bytes, x, y)
});

fn load(bytes: &[u8]) -> Result<ResNet, hub::LoadError> {
    let opts = LoadOptions::default();
    hub::load_safetensors_bytes(
        bytes,
        Path::new("prop.safetensors"),
        &cfg(),
        DType::F32,
        &Device::Cpu,
        opts,
    )
}

fn header_len(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// Loads damaged bytes: an error, or a model that computes exactly what the valid file's does.
fn refused_or_same(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (_, x, want) = &*VALID;
    if let Ok(model) = load(bytes) {
        let got = model.forward(x).unwrap();
        let diff: f32 = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        prop_assert_eq!(diff, 0.0, "a damaged file loaded as different tensors");
    }
    Ok(())
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/images")
            .join(name),
    )
    .unwrap()
}

static JPEG: LazyLock<Vec<u8>> = LazyLock::new(|| photo("coffee_small.jpg"));
static PNG: LazyLock<Vec<u8>> = LazyLock::new(|| photo("chelsea_palette.png"));

/// Decodes and preprocesses: any outcome but a panic is fine.
fn decode(bytes: &[u8]) -> bool {
    let limits = ImageLimits {
        max_side: 4096,
        max_alloc: 64 << 20,
        ..ImageLimits::default()
    };
    match decode_rgb(bytes, Path::new("prop.img"), &limits) {
        Ok(rgb) => Preprocess::imagenet_v2().apply(&rgb, &Device::Cpu).is_ok(),
        Err(e) => {
            assert!(e.to_string().contains("prop.img"), "{e}");
            false
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn truncated_weights_are_refused(cut in 0.0f64..1.0) {
        let bytes = &VALID.0;
        let n = (bytes.len() as f64 * cut) as usize;
        prop_assert!(load(&bytes[..n]).is_err(), "{} of {} bytes loaded", n, bytes.len());
    }

    #[test]
    fn header_byte_flips_are_refused_or_harmless(pos in 0.0f64..1.0, xor in 1u8..=255) {
        let mut bytes = VALID.0.clone();
        let i = (header_len(&bytes) as f64 * pos) as usize;
        bytes[i] ^= xor;
        refused_or_same(&bytes)?;
    }

    #[test]
    fn damaged_images_never_panic(pos in 0.0f64..1.0, xor in 1u8..=255, cut in 0.0f64..1.0, png in any::<bool>()) {
        let src: &[u8] = if png { &PNG } else { &JPEG };
        let mut bytes = src.to_vec();
        let i = (bytes.len() as f64 * pos) as usize;
        bytes[i] ^= xor;
        decode(&bytes);
        let n = (src.len() as f64 * cut) as usize;
        // A JPEG cut before its end marker is refused (as PIL refuses it), never decoded half gray.
        let ok = decode(&src[..n]);
        if !png && n + 2 < src.len() {
            prop_assert!(!ok, "a JPEG cut at {} of {} bytes decoded", n, src.len());
        }
    }
}
