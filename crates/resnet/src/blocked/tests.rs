#![allow(clippy::unwrap_used)]
use std::collections::HashMap;
use std::time::Duration;

use candle_core::{Device, Module};

use super::*;

/// A model of `cfg` with random weights (positive running variances).
fn random_model(cfg: &ResNetConfig) -> ResNet {
    let dev = Device::Cpu;
    let tensors: HashMap<String, Tensor> = ResNet::tensor_specs(cfg)
        .into_iter()
        .map(|s| {
            let t = Tensor::randn(0f32, 0.1, s.shape.as_slice(), &dev).unwrap();
            let t = match s.name.ends_with("running_var") {
                true => (t.abs().unwrap() + 0.5).unwrap(),
                false => t,
            };
            (s.name, t)
        })
        .collect();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &dev);
    ResNet::new(cfg, vb).unwrap()
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() / scale
}

/// The layers of a packed model also run on NCHW tensors one by one (each converting to NCHW8c
/// and back), as a user calling `Stage::forward` does, and agree with the blocked pass.
#[test]
fn packed_layers_run_on_nchw_tensors_too() {
    if Isa::configured().ok().flatten().is_none() {
        return; // this CPU (or RESNET_ZOO_ISA=off) runs the NCHW path: nothing is packed
    }
    for (name, side) in [("resnet20", 16), ("resnet50d", 40), ("resnetv2_50", 40)] {
        let cfg = ResNetConfig::preset(name).unwrap();
        let model = random_model(&cfg);
        assert!(model.cpu_kernels().is_some(), "{name} is packed");
        let x = Tensor::randn(0f32, 1., (2, 3, side, side + 8), &Device::Cpu).unwrap();
        let all: Vec<usize> = (0..model.feature_info().len()).collect();
        let feats = model.forward_intermediates(&x, &all).unwrap();
        for i in 2..feats.len() {
            let by_layer = model.stages[i - 1].forward(&feats[i - 1]).unwrap();
            let err = max_rel(&by_layer, &feats[i]);
            assert!(err < 1e-5, "{name} stage {i}: {err:.2e}");
        }
        // The pooled path pools in NCHW8c; the head on the converted map agrees.
        let direct = model.forward_embedding(&x).unwrap();
        let head = model
            .forward_head(&model.forward_features(&x).unwrap(), true)
            .unwrap();
        assert!(max_rel(&direct, &head) < 1e-6, "{name}: pooled");
    }
}

/// A batch runs image by image on two threads (`Blocked::features`); every image's pooled
/// embedding is the value of that image run alone, and the last map the value of the batch in one
/// layer-by-layer pass (`forward_intermediates`, which keeps the batch together), to the bit.
#[test]
fn a_batch_split_over_threads_gives_each_image_its_own_values() {
    if Isa::configured().ok().flatten().is_none() {
        return; // this CPU (or RESNET_ZOO_ISA=off) runs the NCHW path: nothing is packed
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let diff = |a: &Tensor, b: &Tensor| {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap()
    };
    for (name, side) in [("resnet18", 64), ("resnet50", 40), ("resnetv2_50", 48)] {
        let model = random_model(&ResNetConfig::preset(name).unwrap());
        let x = Tensor::randn(0f32, 1., (3, 3, side, side), &Device::Cpu).unwrap();
        let last = model.feature_info().len() - 1;
        let (batch, alone, features, together) = pool.install(|| {
            let alone: Vec<Tensor> = (0..3)
                .map(|i| {
                    model
                        .forward_embedding(&x.narrow(0, i, 1).unwrap())
                        .unwrap()
                })
                .collect();
            (
                model.forward_embedding(&x).unwrap(),
                Tensor::cat(&alone, 0).unwrap(),
                model.forward_features(&x).unwrap(),
                model.forward_intermediates(&x, &[last]).unwrap().remove(0),
            )
        });
        assert_eq!(diff(&batch, &alone), 0.0, "{name}: image by image");
        // Pre-activation networks add the final norm to the last stage's map.
        if !model.config().block.is_preact() {
            assert_eq!(diff(&features, &together), 0.0, "{name}: one pass");
        }
    }
}

/// With timing on, every convolution of the blocked pass is recorded once per forward under its
/// torchvision-style name, with its shape and direct multiply-adds; off (the default) nothing is,
/// and taking the times forgets them.
#[test]
fn layer_timing_records_every_convolution_once_per_forward() {
    if Isa::configured().ok().flatten().is_none() {
        return; // the NCHW path: nothing is timed (`time_layers` documents it)
    }
    let model = random_model(&ResNetConfig::preset("resnet18").unwrap());
    let x = Tensor::randn(0f32, 1., (1, 3, 64, 64), &Device::Cpu).unwrap();
    model.forward(&x).unwrap();
    assert!(
        model.take_layer_times().is_empty(),
        "timing is off by default"
    );
    model.time_layers(true);
    for _ in 0..3 {
        model.forward(&x).unwrap();
    }
    model.time_layers(false);
    model.forward(&x).unwrap();
    let times = model.take_layer_times();
    let names: Vec<&str> = times.iter().map(|t| t.name.as_str()).collect();
    // The stem, two convolutions in each of 8 blocks, a projection opening stages 2 to 4.
    assert_eq!(times.len(), 1 + 16 + 3, "{names:?}");
    assert_eq!(
        names[..6],
        [
            "stem.0",
            "layer1.0.conv1",
            "layer1.0.conv2",
            "layer1.1.conv1",
            "layer1.1.conv2",
            "layer2.0.conv1"
        ]
    );
    assert_eq!(names[6..8], ["layer2.0.shortcut", "layer2.0.conv2"]);
    assert_eq!(names.last(), Some(&"layer4.1.conv2"));
    let shortcut = &times[6];
    assert_eq!(
        (
            shortcut.in_channels,
            shortcut.out_channels,
            shortcut.kernel_size,
            shortcut.stride
        ),
        (64, 128, 1, 2)
    );
    assert_eq!((shortcut.input, shortcut.output), ((16, 16), (8, 8)));
    assert_eq!(times[0].input, (64, 64));
    for t in &times {
        assert_eq!((t.times.len(), t.batch), (3, 1), "{}", t.name);
        assert!(
            t.min() <= t.median() && t.min() > Duration::ZERO,
            "{}",
            t.name
        );
        let k = t.kernel_size * t.kernel_size;
        let direct = t.out_channels * t.in_channels / t.groups * k * t.output.0 * t.output.1;
        assert_eq!(t.macs, direct as u64, "{}", t.name);
    }
    assert!(model.take_layer_times().is_empty(), "taken once");
}
