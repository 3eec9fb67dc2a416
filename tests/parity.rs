//! PyTorch parity: every preset against torchvision, on random weights with randomised BatchNorm
//! statistics, at 224x224 (batch 2) and 160x192 (batch 1).
//!
//! Reference tensors come from `tests/parity/make_fixtures.py` (torch 2.15, torchvision 0.29; run by
//! `make test`). Tolerance: `max|ours - torch| / max|torch| <= 1e-4` on the stem, every stage, the
//! pooled embedding and the logits; top-5 classes identical. The measured errors are printed
//! (`cargo test --release --test parity -- --nocapture`).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use candle_core::{DType, Device, Module};
use common::{load_tensors, rel_err, top_k};
use resnet_zoo::{hub, ResNet, ResNetConfig};

const TOL: f64 = 1e-4;
const SIZES: [&str; 2] = ["224", "160x192"];

/// Compares every output of `model` with the reference tensors of `io` and returns the worst error.
fn check_outputs(label: &str, model: &ResNet, io: &str, tol: f64) -> f64 {
    let t = load_tensors(io);
    let mut worst: f64 = 0.0;
    for size in SIZES {
        let get = |name: &str| t[&format!("{name}_{size}")].clone();
        let x = get("input").to_dtype(model.dtype()).unwrap();
        let feats = model.forward_intermediates(&x, &[0, 1, 2, 3, 4]).unwrap();
        let pooled = model.forward_head(&feats[4], true).unwrap();
        let logits = model.forward_head(&feats[4], false).unwrap();
        let names = ["stem", "layer1", "layer2", "layer3", "layer4"];
        let mut line = format!("{label} @{size}:");
        for (name, ours) in names.iter().zip(&feats).chain(
            [("pooled", &pooled), ("logits", &logits)]
                .iter()
                .map(|(n, t)| (n, *t)),
        ) {
            let err = rel_err(ours, &get(name));
            line += &format!(" {name} {err:.2e}");
            assert!(
                err <= tol,
                "{label} {name} at {size}: relative error {err:.3e} > {tol:.0e}"
            );
            worst = worst.max(err);
        }
        println!("{line}");
        assert_eq!(
            top_k(&logits, 5),
            top_k(&get("logits"), 5),
            "{label} top-5 at {size}"
        );
        // The plain forward is the same computation as features + head.
        let direct = model.forward(&x).unwrap();
        assert_eq!(
            rel_err(&direct, &logits),
            0.0,
            "{label}: forward != forward_head(forward_features)"
        );
    }
    worst
}

fn check_preset(name: &str) {
    let cfg = ResNetConfig::preset(name).unwrap();
    let path = common::fixture(&format!("{name}.safetensors"));
    let model = hub::load_safetensors(&path, &cfg, DType::F32, &Device::Cpu).unwrap();
    let worst = check_outputs(name, &model, &format!("{name}.io.safetensors"), TOL);
    println!("{name}: worst relative error {worst:.2e} (tolerance {TOL:.0e})");
}

#[test]
fn resnet18_matches_torchvision() {
    check_preset("resnet18");
}

#[test]
fn resnet34_matches_torchvision() {
    check_preset("resnet34");
}

#[test]
fn resnet50_matches_torchvision() {
    check_preset("resnet50");
}

#[test]
fn resnet101_matches_torchvision() {
    check_preset("resnet101");
}

#[test]
fn resnet152_matches_torchvision() {
    check_preset("resnet152");
}

#[test]
fn resnext50_32x4d_matches_torchvision() {
    check_preset("resnext50_32x4d");
}

#[test]
fn wide_resnet50_2_matches_torchvision() {
    check_preset("wide_resnet50_2");
}

/// The paper's original V1 (stride on the first 1x1), against torchvision's Bottleneck with the stride
/// moved in the harness.
#[test]
fn resnet50_v1_matches_the_paper_layout() {
    check_preset("resnet50_v1");
    // Same tensors as resnet50, different computation: loaded as resnet50 the stage outputs differ.
    let t = load_tensors("resnet50_v1.io.safetensors");
    let v15 = hub::load_safetensors(
        common::fixture("resnet50_v1.safetensors"),
        &ResNetConfig::resnet50(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let l2 = v15.forward_intermediates(&t["input_224"], &[2]).unwrap();
    assert!(rel_err(&l2[0], &t["layer2_224"]) > 0.1);
}

/// f64, f16 and bf16 files are converted to the f32 run dtype; f16/bf16 references were computed by
/// torch with the same rounded weights, so the tolerance is unchanged.
#[test]
fn half_and_double_files_load_into_f32() {
    let cfg = ResNetConfig::resnet18();
    for (file, io) in [
        ("resnet18_f64.safetensors", "resnet18.io.safetensors"),
        ("resnet18_f16.safetensors", "resnet18_f16.io.safetensors"),
        ("resnet18_bf16.safetensors", "resnet18_bf16.io.safetensors"),
    ] {
        let model =
            hub::load_safetensors(common::fixture(file), &cfg, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.dtype(), DType::F32);
        check_outputs(file, &model, io, TOL);
    }
}

/// The model also runs in f64 (folding in f64), and agrees with the f32 reference to f32 precision.
#[test]
fn f64_model_matches() {
    let cfg = ResNetConfig::resnet18();
    let path = common::fixture("resnet18.safetensors");
    let model = hub::load_safetensors(&path, &cfg, DType::F64, &Device::Cpu).unwrap();
    assert_eq!(model.dtype(), DType::F64);
    check_outputs("resnet18 (f64 run)", &model, "resnet18.io.safetensors", TOL);
}

/// A headless backbone (num_classes: None) gives the pooled embedding and rejects the file's `fc`
/// tensors by name rather than ignoring them.
#[test]
fn headless_model_reports_classifier_tensors() {
    let cfg = ResNetConfig::resnet18().with_num_classes(None);
    let path = common::fixture("resnet18.safetensors");
    let err = hub::load_safetensors(&path, &cfg, DType::F32, &Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("2 unexpected tensors")
            && msg.contains("fc.weight")
            && msg.contains("fc.bias"),
        "{msg}"
    );
}

/// Hugging Face transformers checkpoints (`microsoft/resnet-*` naming) load through the key map and
/// give the torchvision outputs; the reference file was written by transformers' own
/// `ResNetForImageClassification`, whose logits the harness checked against torchvision's.
#[test]
fn transformers_names_load_through_the_key_map() {
    for (file, preset, io) in [
        (
            "resnet50_hf.safetensors",
            "resnet50",
            "resnet50.io.safetensors",
        ),
        (
            "resnet18_hf.safetensors",
            "resnet18",
            "resnet18.io.safetensors",
        ),
    ] {
        let cfg = ResNetConfig::preset(preset).unwrap();
        let model =
            hub::load_safetensors(common::fixture(file), &cfg, DType::F32, &Device::Cpu).unwrap();
        check_outputs(file, &model, io, TOL);
    }
    // A headless `ResNetModel` (no prefix, no classifier) loads as a headless backbone.
    let cfg = ResNetConfig::resnet18().with_num_classes(None);
    let path = common::fixture("resnet18_hf_headless.safetensors");
    let model = hub::load_safetensors(&path, &cfg, DType::F32, &Device::Cpu).unwrap();
    let t = load_tensors("resnet18.io.safetensors");
    let pooled = model.forward(&t["input_224"]).unwrap();
    assert!(rel_err(&pooled, &t["pooled_224"]) <= TOL);
    // Loaded as the wrong depth, the report names the detected scheme.
    let err = hub::load_safetensors(
        &path,
        &ResNetConfig::resnet34().with_num_classes(None),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("(transformers names)") && err.contains("layer1.2.conv1.weight"),
        "{err}"
    );
}
