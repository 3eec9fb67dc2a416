//! PyTorch parity: every preset against its reference (torchvision, timm, or the harness's CIFAR
//! module written from the paper), on random weights with randomised normalisation statistics, at
//! the reference size (224x224 at batch 2, 32x32 for CIFAR) and one non-square size at batch 1.
//!
//! Reference tensors come from `tests/parity/make_fixtures.py` (torch 2.15, torchvision 0.29,
//! timm 1.0.31; run by `make test`). Tolerance: `max|ours - torch| / max|torch| <= 1e-4` on the
//! stem, every stage, the final feature map, the pooled embedding and the logits; top-5 classes
//! identical. The measured errors are printed (`cargo test --release --test parity -- --nocapture`).
//! Models run on `$RESNET_ZOO_TEST_DEVICE` (default `cpu`; `scripts/gpu-check.sh` sets `cuda`).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::HashMap;

use candle_core::{DType, Module, Tensor};
use common::{load_tensors, rel_err, top_k};
use resnet_zoo::{hub, ResNet, ResNetConfig};

const TOL: f64 = 1e-4;

/// The input size tags of an io file (`input_224`, `input_160x192`, ... -> `224`, `160x192`).
fn size_tags(t: &HashMap<String, Tensor>) -> Vec<String> {
    let mut tags: Vec<String> = t
        .keys()
        .filter_map(|k| k.strip_prefix("input_").map(str::to_string))
        .collect();
    tags.sort();
    assert!(!tags.is_empty(), "io file without inputs");
    tags
}

/// Compares every output of `model` with the reference tensors of `io` and returns the worst error.
fn check_outputs(label: &str, model: &ResNet, io: &str, tol: f64) -> f64 {
    let t = load_tensors(io);
    let mut worst: f64 = 0.0;
    for size in size_tags(&t) {
        let get = |name: &str| {
            t.get(&format!("{name}_{size}"))
                .unwrap_or_else(|| panic!("{io} has no {name}_{size}"))
                .clone()
        };
        let x = get("input")
            .to_dtype(model.dtype())
            .unwrap()
            .to_device(model.device())
            .unwrap();
        let all: Vec<usize> = (0..model.feature_info().len()).collect();
        let feats = model.forward_intermediates(&x, &all).unwrap();
        let features = model.forward_features(&x).unwrap();
        let pooled = model.forward_head(&features, true).unwrap();
        let logits = model.forward_head(&features, false).unwrap();
        let mut outputs: Vec<(String, &Tensor)> = vec![("stem".into(), &feats[0])];
        for (i, f) in feats.iter().enumerate().skip(1) {
            outputs.push((format!("layer{i}"), f));
        }
        outputs.extend([
            ("features".into(), &features),
            ("pooled".into(), &pooled),
            ("logits".into(), &logits),
        ]);
        let mut line = format!("{label} @{size}:");
        for (name, ours) in outputs {
            let err = rel_err(ours, &get(&name));
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
        // The plain forward is the same computation as features + head (on the blocked CPU path it
        // pools in NCHW8c, summing in another order: equal to f32 rounding).
        let direct = model.forward(&x).unwrap();
        let err = rel_err(&direct, &logits);
        assert!(
            err <= 1e-6,
            "{label}: forward differs from forward_head(forward_features) by {err:.2e}"
        );
    }
    worst
}

fn check_preset(name: &str) {
    let cfg = ResNetConfig::preset(name).unwrap();
    let path = common::fixture(&format!("{name}.safetensors"));
    let model = hub::load_safetensors(&path, &cfg, DType::F32, &common::device()).unwrap();
    let worst = check_outputs(name, &model, &format!("{name}.io.safetensors"), TOL);
    println!("{name}: worst relative error {worst:.2e} (tolerance {TOL:.0e})");
}

#[test]
fn resnet18_matches_torchvision() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnet18");
}

#[test]
fn resnet34_matches_torchvision() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnet34");
}

#[test]
fn resnet50_matches_torchvision() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnet50");
}

#[test]
fn resnet101_matches_torchvision() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnet101");
}

#[test]
fn resnet152_matches_torchvision() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnet152");
}

#[test]
fn resnext50_32x4d_matches_torchvision() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnext50_32x4d");
}

#[test]
fn wide_resnet50_2_matches_torchvision() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("wide_resnet50_2");
}

/// ResNet-D: deep stem and average-pool shortcuts, against timm; the 200x168 input gives odd
/// stage sizes, where the shortcut's ceil-mode pool averages partial windows.
#[test]
fn resnet50d_matches_timm() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnet50d");
}

#[test]
fn resnet101d_matches_timm() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnet101d");
}

/// Pre-activation V2 with BatchNorm, from timm-named files (`stem.conv`, `stages.N.blocks.M`,
/// `head.fc`) through the key map.
#[test]
fn resnetv2_50_matches_timm() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnetv2_50");
}

#[test]
fn resnetv2_101_matches_timm() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnetv2_101");
}

/// BiT: GroupNorm, weight standardisation (eps 1e-8) and zero padding before the stem pool.
#[test]
fn resnetv2_50x1_bit_matches_timm() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnetv2_50x1_bit");
}

/// The paper's CIFAR ResNets, options A (zero-padding shortcut) and B (projection), against the
/// harness's module written from the paper, at 32x32 and 28x36.
#[test]
fn cifar_resnets_match_the_paper_module() {
    if common::skip_without_fixtures() {
        return;
    }
    for depth in [20, 32, 44, 56, 110] {
        check_preset(&format!("resnet{depth}"));
        check_preset(&format!("resnet{depth}_b"));
    }
}

/// Parameters and multiply-accumulates of every preset equal what the harness counted on the
/// reference module: `sum(p.numel())` and `torch.utils.flop_counter.FlopCounterMode` / 2 (which
/// counts convolutions and matmuls, as our MACs do) at 224x224 (32x32 for CIFAR).
#[test]
fn every_preset_counts_like_its_reference() {
    if common::skip_without_fixtures() {
        return;
    }
    let path = common::fixture("models.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    for name in resnet_zoo::preset_names() {
        let entry = &manifest["models"][name];
        assert!(entry.is_object(), "models.json has no entry for {name}");
        let cfg = ResNetConfig::preset(name).unwrap();
        // `[1, 3, H, W]`, square.
        let size = entry["input_size"][3].as_u64().unwrap() as usize;
        let (params, macs) = (ResNet::num_params(&cfg), ResNet::macs(&cfg, size, size));
        println!(
            "{name:18} {params:>11} params {:>8.3} GMACs at {size} ({})",
            macs as f64 / 1e9,
            entry["reference"].as_str().unwrap_or("?")
        );
        assert_eq!(
            params as u64,
            entry["params"].as_u64().unwrap(),
            "{name} params"
        );
        assert_eq!(macs, entry["macs"].as_u64().unwrap(), "{name} MACs");
    }
}

/// The paper's original V1 (stride on the first 1x1), against torchvision's Bottleneck with the stride
/// moved in the harness.
#[test]
fn resnet50_v1_matches_the_paper_layout() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnet50_v1");
    // Same tensors as resnet50, different computation: loaded as resnet50 the stage outputs differ.
    let t = load_tensors("resnet50_v1.io.safetensors");
    let v15 = hub::load_safetensors(
        common::fixture("resnet50_v1.safetensors"),
        &ResNetConfig::resnet50(),
        DType::F32,
        &common::device(),
    )
    .unwrap();
    let x = t["input_224"].to_device(v15.device()).unwrap();
    let l2 = v15.forward_intermediates(&x, &[2]).unwrap();
    assert!(rel_err(&l2[0], &t["layer2_224"]) > 0.1);
}

/// f64, f16 and bf16 files are converted to the f32 run dtype; f16/bf16 references were computed by
/// torch with the same rounded weights, so the tolerance is unchanged.
#[test]
fn half_and_double_files_load_into_f32() {
    if common::skip_without_fixtures() {
        return;
    }
    let cfg = ResNetConfig::resnet18();
    for (file, io) in [
        ("resnet18_f64.safetensors", "resnet18.io.safetensors"),
        ("resnet18_f16.safetensors", "resnet18_f16.io.safetensors"),
        ("resnet18_bf16.safetensors", "resnet18_bf16.io.safetensors"),
    ] {
        let model =
            hub::load_safetensors(common::fixture(file), &cfg, DType::F32, &common::device())
                .unwrap();
        assert_eq!(model.dtype(), DType::F32);
        check_outputs(file, &model, io, TOL);
    }
}

/// The model also runs in f64 (folding in f64), and agrees with the f32 reference to f32 precision.
#[test]
fn f64_model_matches() {
    if common::skip_without_fixtures() {
        return;
    }
    let cfg = ResNetConfig::resnet18();
    let path = common::fixture("resnet18.safetensors");
    let model = hub::load_safetensors(&path, &cfg, DType::F64, &common::device()).unwrap();
    assert_eq!(model.dtype(), DType::F64);
    check_outputs("resnet18 (f64 run)", &model, "resnet18.io.safetensors", TOL);
}

/// A headless backbone (num_classes: None) gives the pooled embedding and rejects the file's `fc`
/// tensors by name rather than ignoring them.
#[test]
fn headless_model_reports_classifier_tensors() {
    if common::skip_without_fixtures() {
        return;
    }
    let cfg = ResNetConfig::resnet18().with_num_classes(None);
    let path = common::fixture("resnet18.safetensors");
    let err = hub::load_safetensors(&path, &cfg, DType::F32, &common::device()).unwrap_err();
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
    if common::skip_without_fixtures() {
        return;
    }
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
            hub::load_safetensors(common::fixture(file), &cfg, DType::F32, &common::device())
                .unwrap();
        check_outputs(file, &model, io, TOL);
    }
    // A headless `ResNetModel` (no prefix, no classifier) loads as a headless backbone.
    let cfg = ResNetConfig::resnet18().with_num_classes(None);
    let path = common::fixture("resnet18_hf_headless.safetensors");
    let model = hub::load_safetensors(&path, &cfg, DType::F32, &common::device()).unwrap();
    let t = load_tensors("resnet18.io.safetensors");
    let pooled = model
        .forward(&t["input_224"].to_device(model.device()).unwrap())
        .unwrap();
    assert!(rel_err(&pooled, &t["pooled_224"]) <= TOL);
    // Loaded as the wrong depth, the report names the detected scheme.
    let err = hub::load_safetensors(
        &path,
        &ResNetConfig::resnet34().with_num_classes(None),
        DType::F32,
        &common::device(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("(transformers names)") && err.contains("layer1.2.conv1.weight"),
        "{err}"
    );
}
