//! Strict loading: one report naming the file and every missing, unexpected, mis-shaped or
//! wrongly-typed tensor, checked before the model is built. Uses small synthetic checkpoints written
//! from the model's own tensor specs, so no Python is needed.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use resnet_zoo::{hub, BlockKind, ResNet, ResNetConfig, Stem};

/// A tiny Bottleneck ResNet (4 stages, few channels) for fast synthetic checkpoints.
fn tiny(block: BlockKind) -> ResNetConfig {
    ResNetConfig {
        block,
        layers: vec![1, 2, 1, 1],
        planes: vec![4, 8, 8, 16],
        stem: Stem::Classic { width: 8 },
        num_classes: Some(10),
        ..ResNetConfig::resnet50()
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("resnet-zoo-loading-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a checkpoint with every tensor `cfg` expects (positive random-ish values, so running_var is
/// valid), then applies `edit` to the table.
fn write_checkpoint(
    path: &Path,
    cfg: &ResNetConfig,
    dtype: DType,
    edit: impl FnOnce(&mut HashMap<String, Tensor>),
) {
    let mut tensors: HashMap<String, Tensor> = ResNet::tensor_specs(cfg)
        .into_iter()
        .map(|s| {
            let t = Tensor::rand(0.5f32, 1.5, s.shape.as_slice(), &Device::Cpu).unwrap();
            (s.name, t.to_dtype(dtype).unwrap())
        })
        .collect();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, path).unwrap();
}

#[test]
fn exact_checkpoint_loads_and_runs() {
    let dir = temp_dir("exact");
    for block in [BlockKind::Basic, BlockKind::Bottleneck] {
        let cfg = tiny(block);
        let path = dir.join(format!("{block:?}.safetensors"));
        write_checkpoint(&path, &cfg, DType::F32, |t| {
            // PyTorch's integer BatchNorm counter must be ignored, not reported.
            t.insert(
                "bn1.num_batches_tracked".into(),
                Tensor::new(&[3i64], &Device::Cpu)
                    .unwrap()
                    .squeeze(0)
                    .unwrap(),
            );
        });
        let model = hub::load_safetensors(&path, &cfg, DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::rand(0f32, 1., (2, 3, 64, 48), &Device::Cpu).unwrap();
        assert_eq!(model.forward(&x).unwrap().dims(), &[2, 10]);
    }
}

#[test]
fn one_error_lists_every_problem() {
    let dir = temp_dir("report");
    let cfg = tiny(BlockKind::Bottleneck);
    let path = dir.join("broken.safetensors");
    write_checkpoint(&path, &cfg, DType::F32, |t| {
        t.remove("layer2.1.conv2.weight");
        t.remove("fc.bias");
        t.insert(
            "layer5.0.conv1.weight".into(),
            Tensor::zeros((1, 1), DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            "layer1.0.bn1.weight".into(),
            Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            "layer1.0.bn1.bias".into(),
            Tensor::zeros(4, DType::U8, &Device::Cpu).unwrap(),
        );
    });
    let err = hub::load_safetensors(&path, &cfg, DType::F32, &Device::Cpu).unwrap_err();
    let hub::LoadError::Mismatch(report) = &err else {
        panic!("expected a mismatch report, got {err}")
    };
    assert_eq!(report.path, path);
    assert_eq!(
        report
            .missing
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["layer2.1.conv2.weight", "fc.bias"]
    );
    assert_eq!(report.unexpected, ["layer5.0.conv1.weight"]);
    assert_eq!(report.shape_mismatches.len(), 1);
    assert_eq!(report.shape_mismatches[0].name, "layer1.0.bn1.weight");
    assert_eq!(
        (
            report.shape_mismatches[0].expected.as_slice(),
            report.shape_mismatches[0].found.as_slice()
        ),
        (&[4usize][..], &[5usize][..])
    );
    assert_eq!(
        report.bad_dtypes,
        [("layer1.0.bn1.bias".to_string(), "U8".to_string())]
    );
    let msg = err.to_string();
    for needle in [
        path.display().to_string().as_str(),
        "2 missing tensors",
        "1 unexpected tensors",
        "expected [4], file has [5]",
        "U8",
        "hint:",
    ] {
        assert!(msg.contains(needle), "message lacks {needle:?}:\n{msg}");
    }
}

#[test]
fn wrong_arch_names_the_matching_preset() {
    // A resnet18-shaped file checked as resnet34: the report lists what resnet34 needs and says the file
    // is a resnet18. Written from specs (45 MB of zeros would be slow; rand is fine at this size).
    let dir = temp_dir("arch");
    let path = dir.join("resnet18.safetensors");
    write_checkpoint(&path, &ResNetConfig::resnet18(), DType::F16, |_| {});
    let err = hub::load_safetensors(&path, &ResNetConfig::resnet34(), DType::F32, &Device::Cpu)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("does not match architecture resnet34"),
        "{msg}"
    );
    assert!(msg.contains("layer1.2.conv1.weight"), "{msg}");
    assert!(msg.contains("the file matches resnet18"), "{msg}");
    // And it loads as what it is, converting f16 to f32.
    let model =
        hub::load_safetensors(&path, &ResNetConfig::resnet18(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.dtype(), DType::F32);
}

#[test]
fn not_safetensors_files_are_named() {
    let dir = temp_dir("junk");
    let cfg = tiny(BlockKind::Basic);
    let cases: [(&str, &[u8], &str); 4] = [
        ("empty.safetensors", b"", "is empty"),
        (
            "lfs.safetensors",
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n",
            "Git LFS pointer",
        ),
        (
            "page.safetensors",
            b"<!DOCTYPE html><html><body>404</body></html>",
            "HTML page",
        ),
        (
            "junk.safetensors",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}",
            "not a valid safetensors file",
        ),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let msg = hub::load_safetensors(&path, &cfg, DType::F32, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(needle) && msg.contains(name), "{name}: {msg}");
    }
    let missing = dir.join("nope.safetensors");
    let msg = hub::load_safetensors(&missing, &cfg, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cannot read weights file") && msg.contains("nope.safetensors"),
        "{msg}"
    );
}

#[test]
fn tensor_specs_are_what_the_builder_reads() {
    // The spec list used for strict checking must be exactly the set of tensors `ResNet::new` reads:
    // build from a VarMap (which records every variable created) and compare.
    let presets = resnet_zoo::PRESETS
        .iter()
        .map(|(_, build)| build().with_num_classes(Some(10)));
    for cfg in [tiny(BlockKind::Basic), tiny(BlockKind::Bottleneck)]
        .into_iter()
        .chain(presets)
    {
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        ResNet::new(&cfg, vb).unwrap();
        let mut built: Vec<(String, Vec<usize>)> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), v.dims().to_vec()))
            .collect();
        let mut specs: Vec<(String, Vec<usize>)> = ResNet::tensor_specs(&cfg)
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect();
        built.sort();
        specs.sort();
        assert_eq!(built, specs);
    }
}

#[test]
fn parameter_counts_equal_torchvision() {
    // torchvision `weights.meta["num_params"]`.
    for (name, params) in [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
        ("resnext50_32x4d", 25_028_904),
        ("resnext101_32x8d", 88_791_336),
        ("resnext101_64x4d", 83_455_272),
        ("wide_resnet50_2", 68_883_240),
        ("wide_resnet101_2", 126_886_696),
        // The stride placement changes no shape.
        ("resnet50_v1", 25_557_032),
        ("resnet101_v1", 44_549_160),
        ("resnet152_v1", 60_192_808),
        // timm 1.0.31 `sum(p.numel() for p in timm.create_model(name).parameters())`.
        ("resnet50d", 25_576_264),
        ("resnet101d", 44_568_392),
        ("resnetv2_50", 25_549_352),
        ("resnetv2_101", 44_541_480),
        ("resnetv2_50x1_bit", 25_549_352),
    ] {
        assert_eq!(
            ResNet::num_params(&ResNetConfig::preset(name).unwrap()),
            params,
            "{name}"
        );
    }
}

#[test]
fn cifar_parameter_counts_equal_the_paper() {
    // He et al. 2015, Table 6 (option A, so the shortcuts add nothing): 0.27M ... 1.7M.
    for (name, millions) in [
        ("resnet20", 0.27),
        ("resnet32", 0.46),
        ("resnet44", 0.66),
        ("resnet56", 0.85),
        ("resnet110", 1.7),
    ] {
        let a = ResNet::num_params(&ResNetConfig::preset(name).unwrap());
        let digits = if millions < 1.0 { 100.0 } else { 10.0 };
        let rounded = (a as f64 / 1e6 * digits).round() / digits;
        assert_eq!(rounded, millions, "{name}: {a} parameters");
        // Option B adds one 1x1 projection + BN at each of the two stage transitions.
        let b = ResNet::num_params(&ResNetConfig::preset(&format!("{name}_b")).unwrap());
        let projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64);
        assert_eq!(b - a, projections, "{name}_b");
    }
}

#[test]
fn feature_info_of_every_family() {
    let table = |name: &str| -> Vec<(String, usize, usize)> {
        ResNet::feature_info_for(&ResNetConfig::preset(name).unwrap())
            .into_iter()
            .map(|f| (f.name, f.channels, f.reduction))
            .collect()
    };
    let imagenet = |stem: &str| {
        [
            (stem, 64, 2),
            ("layer1", 256, 4),
            ("layer2", 512, 8),
            ("layer3", 1024, 16),
            ("layer4", 2048, 32),
        ]
        .map(|(n, c, r)| (n.to_string(), c, r))
        .to_vec()
    };
    assert_eq!(table("resnet50d"), imagenet("act1"));
    assert_eq!(table("resnetv2_50"), imagenet("conv1"));
    assert_eq!(table("resnetv2_50x1_bit"), imagenet("conv1"));
    let cifar: Vec<(String, usize, usize)> = [
        ("act1", 16, 1),
        ("layer1", 16, 1),
        ("layer2", 32, 2),
        ("layer3", 64, 4),
    ]
    .map(|(n, c, r)| (n.to_string(), c, r))
    .to_vec();
    assert_eq!(table("resnet56"), cifar);
    assert_eq!(table("resnet56_b"), cifar);
}

#[test]
fn feature_info_has_torchvision_strides() {
    let info = ResNet::feature_info_for(&ResNetConfig::resnet50());
    let got: Vec<(&str, usize, usize)> = info
        .iter()
        .map(|f| (f.name.as_str(), f.channels, f.reduction))
        .collect();
    assert_eq!(
        got,
        [
            ("act1", 64, 2),
            ("layer1", 256, 4),
            ("layer2", 512, 8),
            ("layer3", 1024, 16),
            ("layer4", 2048, 32)
        ]
    );
}

#[test]
fn invalid_configs_and_inputs_are_errors() {
    let bad = ResNetConfig {
        groups: 32,
        ..ResNetConfig::resnet18()
    };
    let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
    let msg = ResNet::new(&bad, vb).unwrap_err().to_string();
    assert!(msg.contains("BasicBlock only supports groups=1"), "{msg}");
    for (bad, want) in [
        (
            ResNetConfig {
                block: BlockKind::PreActBottleneck,
                ..ResNetConfig::resnet50()
            },
            "pre-activation blocks and Stem::PreAct go together",
        ),
        (
            ResNetConfig {
                norm: resnet_zoo::NormKind::GroupNorm { groups: 32 },
                ..ResNetConfig::resnet50()
            },
            "GroupNorm and weight standardisation need pre-activation blocks",
        ),
        (
            ResNetConfig {
                norm: resnet_zoo::NormKind::GroupNorm { groups: 24 },
                ..ResNetConfig::resnetv2_50()
            },
            "64 channels cannot be split into 24 groups",
        ),
        (
            ResNetConfig {
                shortcut: resnet_zoo::ShortcutKind::AvgDown,
                ..ResNetConfig::resnetv2_50()
            },
            "projection shortcut only",
        ),
        (
            ResNetConfig {
                planes: vec![64, 32, 64, 64],
                shortcut: resnet_zoo::ShortcutKind::ZeroPad,
                ..ResNetConfig::resnet18()
            },
            "cannot reduce channels (64 -> 32 in stage 2)",
        ),
    ] {
        let msg = bad.validate().unwrap_err().to_string();
        assert!(msg.contains(want), "{msg}");
    }
    let msg = ResNetConfig::preset("resnet05").unwrap_err().to_string();
    assert!(
        msg.contains("unknown architecture 'resnet05'") && msg.contains("did you mean 'resnet50'"),
        "{msg}"
    );

    let model = ResNet::new(
        &tiny(BlockKind::Basic),
        candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu),
    );
    // zeros() gives running_var = 0, which is fine for shape checks (eps keeps sqrt positive).
    let model = model.unwrap();
    let gray = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let msg = model.forward(&gray).unwrap_err().to_string();
    assert!(msg.contains("[batch, 3, height, width]"), "{msg}");
    let msg = model
        .forward_intermediates(
            &Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap(),
            &[7],
        )
        .unwrap_err()
        .to_string();
    assert!(msg.contains("feature index 7 out of range"), "{msg}");
}

#[test]
fn macs_match_published_figures() {
    // torchvision `meta["_ops"]` (GFLOPS = GMACs) at 224x224.
    for (name, gmacs) in [
        ("resnet18", 1.814),
        ("resnet34", 3.664),
        ("resnet50", 4.089),
        ("resnet101", 7.801),
        ("resnet152", 11.514),
        ("resnext50_32x4d", 4.23),
        ("resnext101_32x8d", 16.414),
        ("resnext101_64x4d", 15.46),
        ("wide_resnet50_2", 11.398),
        ("wide_resnet101_2", 22.753),
        // The paper's Table 1 (x10^9 FLOPs, multiply-adds), for its original V1 layout.
        ("resnet50_v1", 3.8),
        ("resnet101_v1", 7.6),
        ("resnet152_v1", 11.3),
        // timm's model card of `resnetv2_50.a1h_in1k` (GMACs at 224).
        ("resnetv2_50", 4.11),
    ] {
        let ours = ResNet::macs(&ResNetConfig::preset(name).unwrap(), 224, 224) as f64 / 1e9;
        let rel = (ours - gmacs).abs() / gmacs;
        assert!(
            rel <= 0.02,
            "{name}: {ours:.3} GMACs vs published {gmacs} ({:.1}%)",
            rel * 100.0
        );
    }
    // timm's model card of `resnetv2_50x1_bit.goog_in21k_ft_in1k`: 16.62 GMACs at 448x448.
    let bit = ResNet::macs(&ResNetConfig::resnetv2_50x1_bit(), 448, 448) as f64 / 1e9;
    assert!((bit - 16.62).abs() / 16.62 <= 0.02, "BiT: {bit:.3} GMACs");
    // The paper's ResNet-18/34 figures (1.8, 3.6) describe the same layout as torchvision's.
    for (name, gmacs) in [("resnet18", 1.8), ("resnet34", 3.6)] {
        let ours = ResNet::macs(&ResNetConfig::preset(name).unwrap(), 224, 224) as f64 / 1e9;
        assert!((ours - gmacs).abs() / gmacs <= 0.02, "{name}: {ours:.3}");
    }
}

/// A DistributedDataParallel checkpoint (`module.` before every name) is refused with a hint naming
/// the prefix and `LoadOptions::strip_prefix`; with it, the model equals the one from plain names.
#[test]
fn ddp_prefix_is_named_and_stripped() {
    let dir = temp_dir("ddp");
    let cfg = tiny(BlockKind::Bottleneck);
    let plain = dir.join("plain.safetensors");
    write_checkpoint(&plain, &cfg, DType::F32, |_| {});
    let tensors = candle_core::safetensors::load(&plain, &Device::Cpu).unwrap();
    let prefixed: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| (format!("module.{k}"), v.clone()))
        .collect();
    let ddp = dir.join("ddp.safetensors");
    candle_core::safetensors::save(&prefixed, &ddp).unwrap();
    let err = hub::load_safetensors(&ddp, &cfg, DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(
            "every tensor name starts with 'module.' (a DistributedDataParallel checkpoint)"
        ) && err.contains("LoadOptions::strip_prefix = Some(\"module.\")"),
        "{err}"
    );
    let options = hub::LoadOptions {
        strip_prefix: Some("module.".into()),
        ..hub::LoadOptions::default()
    };
    let stripped =
        hub::load_safetensors_with(&ddp, &cfg, DType::F32, &Device::Cpu, options).unwrap();
    let reference = hub::load_safetensors(&plain, &cfg, DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::rand(0f32, 1., (1, 3, 64, 48), &Device::Cpu).unwrap();
    let (a, b) = (
        stripped.forward(&x).unwrap(),
        reference.forward(&x).unwrap(),
    );
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);
    // A prefix that does not make the file match gives no such hint.
    let other: HashMap<String, Tensor> = tensors
        .iter()
        .filter(|(k, _)| k.as_str() != "fc.bias")
        .map(|(k, v)| (format!("module.{k}"), v.clone()))
        .collect();
    let partial = dir.join("partial.safetensors");
    candle_core::safetensors::save(&other, &partial).unwrap();
    let err = hub::load_safetensors(&partial, &cfg, DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(!err.contains("strip_prefix"), "{err}");
}
