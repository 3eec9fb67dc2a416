//! `resnet-zoo classify` flags that change what a model file means: `--labels` for a non-ImageNet
//! head, the preprocessing recipe of local weights (`--preprocess` and its single-value flags) and
//! `--strip-prefix` for a DDP checkpoint.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::cli::{assert_stderr_has, image, run, stderr, weights};

/// A 10-class CIFAR head prints class numbers (and says why), not ImageNet names; `--labels` names
/// them, and a file with the wrong number of lines is refused naming it and both counts.
#[test]
fn labels_follow_the_models_classes() {
    if common::skip_without_fixtures() {
        return;
    }
    let resnet20 = common::fixture("resnet20.safetensors");
    let img = image("chelsea.jpg");
    let classify = |more: &[&str]| {
        let mut args = vec!["classify", "--arch", "resnet20", "--weights"];
        args.push(resnet20.to_str().unwrap());
        args.extend_from_slice(more);
        args.push(&img);
        run(&args)
    };
    let o = classify(&["--json", "--top-k", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_stderr_has(&o, "has 10 classes, not ImageNet's 1000");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let top = v[0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 10);
    for p in top {
        assert_eq!(p["label"], format!("class {}", p["index"]), "{v}");
    }
    let dir = std::env::temp_dir().join(format!("resnet-zoo-cli-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];
    let good = dir.join("cifar10.txt");
    std::fs::write(&good, names.join("\n") + "\n").unwrap();
    let o = classify(&["--json", "--labels", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("note:"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for p in v[0]["top"].as_array().unwrap() {
        let i = p["index"].as_u64().unwrap() as usize;
        assert_eq!(p["label"], names[i], "{v}");
    }
    let short = dir.join("short.txt");
    std::fs::write(&short, "cat\ndog\n").unwrap();
    let o = classify(&["--labels", short.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_stderr_has(&o, "short.txt: 2 lines, but the model has 10 classes");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A local file takes its arch's default weights row's recipe (timm's bicubic 235 for resnet50d,
/// not torchvision's V1); `--preprocess TAG` and the single-value flags override it, and
/// `--verbose` and the JSON say which recipe ran and why.
#[test]
fn local_weights_get_their_arch_recipe() {
    if common::skip_without_fixtures() {
        return;
    }
    let img = image("chelsea.jpg");
    let classify = |arch: &str, more: &[&str]| {
        let file = common::fixture(&format!("{arch}.safetensors"));
        let mut args = vec!["classify", "--arch", arch, "--weights"];
        args.push(file.to_str().unwrap());
        args.extend_from_slice(more);
        args.push(&img);
        let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        run(&refs)
    };
    let o = classify("resnet50d", &["--verbose", "--top-k", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_stderr_has(
        &o,
        "preprocessing: resize 235 bicubic, crop 224, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225] \
         (from weights row resnet50d.a1_in1k (the default of arch resnet50d))",
    );
    let o = classify(
        "resnet18",
        &[
            "--json",
            "--preprocess",
            "a1_in1k",
            "--resize",
            "240",
            "--mean",
            "0.5,0.5,0.5",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &v[0]["preprocess"];
    assert_eq!(p["resize"], 240, "{p}");
    assert_eq!(p["crop"], 224, "{p}");
    assert_eq!(p["interpolation"], "bicubic", "{p}");
    assert_eq!(p["mean"], serde_json::json!([0.5, 0.5, 0.5]), "{p}");
    assert_eq!(
        p["source"],
        "weights row resnet18.a1_in1k (--preprocess), with --resize 240, --mean"
    );
    // The recipe changes the answer: torchvision's own recipe gives other probabilities.
    let tv = classify("resnet18", &["--json"]);
    let tv: serde_json::Value = serde_json::from_slice(&tv.stdout).unwrap();
    assert_eq!(tv[0]["preprocess"]["resize"], 256);
    assert_ne!(
        tv[0]["top"][0]["probability"],
        v[0]["top"][0]["probability"]
    );
    for (more, needle) in [
        (
            &["--preprocess", "xx_in1k"][..],
            "--preprocess: unknown model",
        ),
        (&["--mean", "0.5,0.5"][..], "--mean"),
        (&["--std", "0,1,1"][..], "--std"),
        (&["--interpolation", "nearest"][..], "--interpolation"),
    ] {
        let o = classify("resnet18", more);
        assert_eq!(o.status.code(), Some(2), "{more:?}: {}", stderr(&o));
        assert_stderr_has(&o, needle);
    }
}

/// A DDP checkpoint on the command line: the hint gives the flag, and the flag loads it.
#[test]
fn strip_prefix_flag_loads_a_ddp_checkpoint() {
    if common::skip_without_fixtures() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("resnet-zoo-cli-ddp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tensors = candle_core::safetensors::load(
        common::fixture("resnet18.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let ddp: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (format!("module.{k}"), v))
        .collect();
    let path = dir.join("ddp.safetensors");
    candle_core::safetensors::save(&ddp, &path).unwrap();
    let img = image("chelsea.jpg");
    let classify = |more: &[&str]| {
        let mut args = vec!["classify", "--arch", "resnet18", "--json", "--weights"];
        args.push(path.to_str().unwrap());
        args.extend_from_slice(more);
        args.push(&img);
        run(&args)
    };
    let o = classify(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_stderr_has(&o, "(on the command line: --strip-prefix PREFIX)");
    let o = classify(&["--strip-prefix", "module."]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ours: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let plain = run(&[
        "classify",
        "--arch",
        "resnet18",
        "--json",
        "--weights",
        &weights(),
        &img,
    ]);
    let reference: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(ours[0]["top"], reference[0]["top"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
