//! The model as a feature-extraction backbone: headless loading with the classifier skipped by
//! name, a new classifier, multi-scale features and pooled embeddings in f32, f16 and bf16, against
//! the PyTorch references of `tests/parity/make_fixtures.py`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use candle_core::{DType, Device, Module, Tensor};
use common::{load_tensors, rel_err};
use resnet_zoo::hub::{self, LoadOptions};
use resnet_zoo::{ResNet, ResNetConfig};

const SKIP: LoadOptions = LoadOptions {
    skip_classifier: true,
    allow_non_finite: false,
    strip_prefix: None,
};

fn backbone(preset: &str, file: &str, dtype: DType) -> ResNet {
    let cfg = ResNetConfig::preset(preset).unwrap().with_num_classes(None);
    hub::load_safetensors_with(common::fixture(file), &cfg, dtype, &common::device(), SKIP).unwrap()
}

/// A classifier's file loads as a headless backbone only through the named allowance; its pooled
/// output is the reference's pooled embedding. Works through key maps (transformers' classifier).
#[test]
fn headless_load_skips_the_classifier_by_name() {
    if common::skip_without_fixtures() {
        return;
    }
    let io = load_tensors("resnet18.io.safetensors");
    for file in ["resnet18.safetensors", "resnet18_hf.safetensors"] {
        let model = backbone("resnet18", file, DType::F32);
        assert_eq!(model.config().num_classes, None);
        let pooled = model.forward(&io["input_224"]).unwrap();
        assert!(rel_err(&pooled, &io["pooled_224"]) <= 1e-4, "{file}");
    }
    // Without the allowance the classifier tensors are unexpected, by name.
    let cfg = ResNetConfig::resnet18().with_num_classes(None);
    let path = common::fixture("resnet18.safetensors");
    let err = hub::load_safetensors(&path, &cfg, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fc.weight") && err.contains("fc.bias"),
        "{err}"
    );
    // The allowance covers the classifier only: a wrong architecture is still reported.
    let cfg34 = ResNetConfig::resnet34().with_num_classes(None);
    let err = hub::load_safetensors_with(&path, &cfg34, DType::F32, &Device::Cpu, SKIP)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer1.2.conv1.weight"), "{err}");
    // And it needs a headless config.
    let err = hub::load_safetensors_with(
        &path,
        &ResNetConfig::resnet18(),
        DType::F32,
        &Device::Cpu,
        SKIP,
    )
    .unwrap_err();
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        err.to_string().contains("resnet18.safetensors") && cause.contains("num_classes: None"),
        "{err}: {cause}"
    );
}

/// `reset_classifier` puts a new head on a backbone (here 10 classes from given tensors) or removes it.
#[test]
fn reset_classifier_swaps_the_head() {
    if common::skip_without_fixtures() {
        return;
    }
    let io = load_tensors("resnet18.io.safetensors");
    let mut model = backbone("resnet18", "resnet18.safetensors", DType::F32);
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 0.05, (10, 512), &dev).unwrap();
    let b = Tensor::randn(0f32, 0.05, 10, &dev).unwrap();
    let head = [
        ("weight".to_string(), w.clone()),
        ("bias".to_string(), b.clone()),
    ]
    .into();
    let vb = candle_nn::VarBuilder::from_tensors(head, DType::F32, &dev);
    model.reset_classifier(Some(10), vb).unwrap();
    assert_eq!(model.config().num_classes, Some(10));
    let logits = model.forward(&io["input_224"]).unwrap();
    let want = io["pooled_224"]
        .matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(&b)
        .unwrap();
    assert!(rel_err(&logits, &want) <= 1e-5);
    let vb = candle_nn::VarBuilder::zeros(DType::F32, &dev);
    model.reset_classifier(None, vb).unwrap();
    assert_eq!(model.forward(&io["input_224"]).unwrap().dims(), &[2, 512]);
    let vb = candle_nn::VarBuilder::zeros(DType::F32, &dev);
    assert!(model.reset_classifier(Some(0), vb).is_err());
}

/// Multi-scale features and pooled embeddings of one preset per family, in f32, f16 and bf16,
/// against the PyTorch f32 reference. f32 must meet the parity tolerance; half precisions have
/// their own stated tolerances (weights and activations rounded to 11 / 8 significant bits; the
/// raw residual stream of the deep pre-activation stages accumulates the most rounding).
#[test]
fn features_and_embeddings_in_every_dtype() {
    if common::skip_without_fixtures() {
        return;
    }
    // (dtype, tolerance on stage outputs, on the pooled embedding; max|.|-relative).
    let dtypes = [
        (DType::F32, 1e-4, 1e-4),
        (DType::F16, 2e-2, 5e-3),
        (DType::BF16, 1.5e-1, 5e-2),
    ];
    for preset in [
        "resnet50",
        "resnext50_32x4d",
        "resnet50d",
        "resnetv2_50",
        "resnetv2_50x1_bit",
        "resnet56",
    ] {
        let io = load_tensors(&format!("{preset}.io.safetensors"));
        let size = if preset == "resnet56" { "32" } else { "224" };
        let input = &io[&format!("input_{size}")];
        for (dtype, tol, pooled_tol) in dtypes {
            let model = backbone(preset, &format!("{preset}.safetensors"), dtype);
            let x = input
                .to_dtype(dtype)
                .unwrap()
                .to_device(model.device())
                .unwrap();
            let n = model.feature_info().len();
            let feats = model
                .forward_intermediates(&x, &(0..n).collect::<Vec<_>>())
                .unwrap();
            let mut worst: f64 = 0.0;
            let mut line = format!("{preset:18} {dtype:?}:");
            for (i, (f, info)) in feats.iter().zip(model.feature_info()).enumerate() {
                let name = if i == 0 {
                    "stem".to_string()
                } else {
                    info.name.clone()
                };
                // Shapes: channels and reduction as feature_info says.
                let (h, w) = (input.dim(2).unwrap(), input.dim(3).unwrap());
                assert_eq!(
                    f.dims(),
                    &[
                        2,
                        info.channels,
                        h.div_ceil(info.reduction),
                        w.div_ceil(info.reduction)
                    ],
                    "{preset} {name}"
                );
                assert_eq!(f.dtype(), dtype);
                let err = rel_err(f, &io[&format!("{name}_{size}")]);
                line += &format!(" {name} {err:.1e}");
                worst = worst.max(err);
            }
            let pooled = model.forward_embedding(&x).unwrap();
            let err = rel_err(&pooled, &io[&format!("pooled_{size}")]);
            line += &format!(" pooled {err:.1e}");
            println!("{line}");
            assert!(
                worst <= tol,
                "{preset} in {dtype:?}: stage relative error {worst:.2e} > {tol:.0e}"
            );
            assert!(
                err <= pooled_tol,
                "{preset} in {dtype:?}: pooled relative error {err:.2e} > {pooled_tol:.0e}"
            );
        }
    }
}
