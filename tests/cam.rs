//! Class-activation maps (`resnet_zoo::cam`) against PyTorch: the fixtures `{P}.cam.safetensors`
//! of `tests/parity/make_fixtures.py` (`make_cam_fixtures`: `einsum("nc,nchw->nhw", W[top1], F)`
//! on the reference model's last feature map, min-max normalised, then `F.interpolate(bilinear,
//! align_corners=False)` to 224x224; the generator also checks that Grad-CAM gives the same map).
//! Regenerate with `make fixtures`; run with `cargo test --release --test cam`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use resnet_zoo::cam::{self, Map};
use resnet_zoo::{hub, ResNet, ResNetConfig};

/// Largest `|ours - torch|` of maps against a `[N, h, w]` tensor.
fn max_diff(maps: &[Map], torch: &Tensor) -> f32 {
    let (n, h, w) = torch.dims3().unwrap();
    assert_eq!(maps.len(), n);
    let rows = torch.to_vec3::<f32>().unwrap();
    let mut worst = 0f32;
    for (map, rows) in maps.iter().zip(rows) {
        assert_eq!((map.height, map.width), (h, w));
        for (a, b) in map.data.iter().zip(rows.iter().flatten()) {
            worst = worst.max((a - b).abs());
        }
    }
    worst
}

fn check_preset(preset: &str) {
    let t = common::load_tensors(&format!("{preset}.cam.safetensors"));
    let cfg = ResNetConfig::preset(preset).unwrap();
    let path = common::fixture(&format!("{preset}.safetensors"));
    let model = hub::load_safetensors(&path, &cfg, DType::F32, &common::device()).unwrap();
    let input = t["input"].to_device(model.device()).unwrap();
    let features = model.forward_features(&input).unwrap();
    let logits = model.forward_head(&features, false).unwrap();
    let classes: Vec<usize> = logits
        .argmax(1)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap()
        .into_iter()
        .map(|k| k as usize)
        .collect();
    let torch_classes: Vec<usize> = t["classes"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|k| k as usize)
        .collect();
    assert_eq!(classes, torch_classes, "{preset}: top-1 classes");
    let maps = cam::class_activation_maps(&model, &features, &classes).unwrap();
    let d = max_diff(&maps, &t["cam"]);
    let (_, _, h, w) = input.dims4().unwrap();
    let up: Vec<Map> = maps
        .iter()
        .map(|m| cam::upsample_bilinear(m, w, h))
        .collect();
    let d_up = max_diff(&up, &t["cam_224"]);
    eprintln!("{preset}: max|CAM - torch| = {d:.2e} at 7x7, {d_up:.2e} at 224x224");
    assert!(d <= 1e-4, "{preset}: CAM differs from PyTorch's by {d}");
    assert!(d_up <= 1e-4, "{preset}: upsampled CAM differs by {d_up}");
    // Normalised: each map spans exactly [0, 1].
    for m in &maps {
        let lo = m.data.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = m.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!((lo, hi), (0.0, 1.0), "{preset}");
    }
}

#[test]
fn resnet18_cam_matches_pytorch() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnet18");
}

/// Pre-activation: the map is taken after the final norm + ReLU (what the head pools), and the
/// classifier is timm's 1x1 convolution.
#[test]
fn resnetv2_50_cam_matches_pytorch() {
    if common::skip_without_fixtures() {
        return;
    }
    check_preset("resnetv2_50");
}

/// A CIFAR ResNet-20 with random weights (He-uniform convolutions, BatchNorm near identity, a
/// random classifier).
fn random_resnet20(num_classes: Option<usize>) -> ResNet {
    let cfg = ResNetConfig::resnet20().with_num_classes(num_classes);
    let tensors: HashMap<String, Tensor> = ResNet::tensor_specs(&cfg)
        .into_iter()
        .map(|s| {
            let shape = s.shape.as_slice();
            let t = if shape.len() > 1 {
                let fan_in: usize = shape[1..].iter().product();
                let a = (6.0 / fan_in as f64).sqrt() as f32;
                Tensor::rand(-a, a, shape, &Device::Cpu).unwrap()
            } else if s.name.ends_with("running_var") || s.name.ends_with("weight") {
                Tensor::ones(shape, DType::F32, &Device::Cpu).unwrap()
            } else {
                Tensor::rand(-0.1f32, 0.1, shape, &Device::Cpu).unwrap()
            };
            (s.name, t)
        })
        .collect();
    ResNet::new(
        &cfg,
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
    )
    .unwrap()
}

/// Without fixtures: the head is an average of per-position scores, so the mean of each class
/// map (before normalisation) is that class's logit, for every class asked.
#[test]
fn class_scores_average_to_the_logits() {
    let model = random_resnet20(Some(10));
    let x = Tensor::randn(0f32, 1.0, (3, 3, 36, 28), &Device::Cpu).unwrap();
    let features = model.forward_features(&x).unwrap();
    let logits = model.forward(&x).unwrap().to_vec2::<f32>().unwrap();
    let classes = [0usize, 7, 9];
    let scores = cam::class_scores(&model, &features, &classes).unwrap();
    let (_, _, h, w) = features.dims4().unwrap();
    for (n, (map, &k)) in scores.iter().zip(&classes).enumerate() {
        assert_eq!((map.height, map.width), (h, w));
        let mean = map.data.iter().sum::<f32>() / map.data.len() as f32;
        let scale = logits[n][k].abs().max(1.0);
        assert!(
            (mean - logits[n][k]).abs() <= 1e-4 * scale,
            "image {n}, class {k}: mean score {mean}, logit {}",
            logits[n][k]
        );
        // Not a constant map: the positions really differ.
        assert!(map.data.iter().any(|&v| (v - map.data[0]).abs() > 1e-4));
    }
}

#[test]
fn bad_requests_are_errors_naming_the_problem() {
    let model = random_resnet20(Some(10));
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let features = model.forward_features(&x).unwrap();
    let err = cam::class_scores(&model, &features, &[1]).unwrap_err();
    assert!(
        err.to_string().contains("1 classes for a batch of 2"),
        "{err}"
    );
    let err = cam::class_scores(&model, &features, &[1, 10]).unwrap_err();
    assert!(err.to_string().contains("class 10 does not exist"), "{err}");
    let headless = random_resnet20(None);
    let features = headless.forward_features(&x).unwrap();
    let err = cam::class_scores(&headless, &features, &[0, 0]).unwrap_err();
    assert!(err.to_string().contains("headless"), "{err}");
}
