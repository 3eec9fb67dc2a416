//! The `resnet-zoo` binary: output formats, per-image errors and exit codes (0 ok, 1 some inputs
//! failed, 2 usage).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env(
            "HF_HUB_CACHE",
            std::env::temp_dir().join("resnet-zoo-cli-empty-cache"),
        )
        .output()
        .unwrap()
}

fn image(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/images")
        .join(name)
        .display()
        .to_string()
}

fn weights() -> String {
    common::fixture("resnet18.safetensors")
        .display()
        .to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_stderr_has(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
}

#[test]
fn json_has_one_element_per_image_and_bad_images_do_not_stop_the_batch() {
    if common::skip_without_fixtures() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("resnet-zoo-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corrupt: PathBuf = dir.join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 this is not really a jpeg").unwrap();
    let missing = dir.join("missing.png");
    let out = run(&[
        "classify",
        "--arch",
        "resnet18",
        "--weights",
        &weights(),
        "--json",
        "--top-k",
        "3",
        &image("chelsea.jpg"),
        corrupt.to_str().unwrap(),
        missing.to_str().unwrap(),
        &image("coffee.png"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = json.as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["image"], image("chelsea.jpg"));
    assert_eq!(items[3]["image"], image("coffee.png"));
    for good in [&items[0], &items[3]] {
        let top = good["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let probs: Vec<f64> = top
            .iter()
            .map(|p| p["probability"].as_f64().unwrap())
            .collect();
        assert!(
            probs.windows(2).all(|w| w[0] >= w[1]) && probs.iter().all(|&p| p > 0.0 && p <= 1.0)
        );
        let index = top[0]["index"].as_u64().unwrap() as usize;
        assert_eq!(top[0]["label"], resnet_zoo::imagenet::label(index).unwrap());
    }
    assert!(items[1]["error"].as_str().unwrap().contains("corrupt.jpg"));
    assert!(items[2]["error"].as_str().unwrap().contains("missing.png"));
    assert_stderr_has(&out, "2 of 4 images failed");
}

#[test]
fn text_output_lists_top_k_per_image() {
    if common::skip_without_fixtures() {
        return;
    }
    let out = run(&[
        "classify",
        "--arch",
        "resnet18",
        "--weights",
        &weights(),
        &image("coffee_small.jpg"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].ends_with("coffee_small.jpg"));
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains('%') && l.trim_end().ends_with(')')),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_2_with_the_flag_named() {
    if common::skip_without_fixtures() {
        return;
    }
    let w = weights();
    let img = image("chelsea.jpg");
    // `classify --arch resnet18 --weights FILE <extra> IMAGE`
    let local = |extra: &[&'static str]| -> Vec<String> {
        let head = ["classify", "--arch", "resnet18", "--weights", &w];
        let all: Vec<&str> = head
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .chain([img.as_str()])
            .collect();
        all.into_iter().map(String::from).collect()
    };
    let owned = |args: &[&str]| -> Vec<String> { args.iter().map(|a| a.to_string()).collect() };
    for (args, needle) in [
        (local(&["--top-k", "0"]), "--top-k"),
        (local(&["--crop", "0"]), "--crop"),
        (local(&["--device", "cuda"]), "--features cuda"),
        (local(&["--device", "tpu"]), "unknown device"),
        (
            owned(&["classify", "--arch", "resnet19", "--weights", &w, &img]),
            "did you mean 'resnet18'",
        ),
        (
            owned(&["classify", "--model", "resnet50.tv3_in1k", &img]),
            "unknown model",
        ),
        (owned(&["classify", &img]), "--model"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_stderr_has(&out, needle);
        // The message alone, even when the user asked for backtraces (of panics).
        let traced = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert_eq!(
            traced.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&traced)
        );
        let text = stderr(&traced);
        assert!(
            !text.to_lowercase().contains("backtrace") && !text.contains("   0: "),
            "{args:?} with RUST_BACKTRACE=1 printed more than its message:\n{text}"
        );
    }
}

#[test]
fn model_failures_exit_1_with_the_file_named() {
    if common::skip_without_fixtures() {
        return;
    }
    let img = image("chelsea.jpg");
    // Wrong architecture for the file: the strict-loading report, not a panic.
    let out = run(&[
        "classify",
        "--arch",
        "resnet34",
        "--weights",
        &weights(),
        &img,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("does not match architecture resnet34")
            && err.contains("the file matches resnet18")
            && err.contains("(on the command line: --arch resnet18)"),
        "{err}"
    );
    // Offline with an empty cache (a build without `download` refuses --model alone as usage).
    let out = run(&["classify", "--model", "resnet50.tv2_in1k", &img]);
    if cfg!(feature = "download") {
        assert_eq!(out.status.code(), Some(1));
        assert_stderr_has(&out, "offline mode is on");
    } else {
        assert_eq!(out.status.code(), Some(2));
        assert_stderr_has(&out, "--features download");
    }
}

#[test]
fn list_prints_presets_and_pretrained_rows() {
    let out = run(&["list"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("resnet50") && text.contains("25557032"),
        "{text}"
    );
    for name in resnet_zoo::preset_names() {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name));
        assert!(line.is_some(), "{name} missing:\n{text}");
    }
    let out = run(&["list", "--pretrained"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for w in resnet_zoo::hub::registry::all().unwrap() {
        assert!(text.contains(&w.name), "{} missing:\n{text}", w.name);
    }
    // --json: one object per row, the same facts.
    let out = run(&["list", "--json"]);
    let archs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let archs = archs.as_array().unwrap();
    assert_eq!(archs.len(), resnet_zoo::preset_names().count());
    let r50 = archs.iter().find(|a| a["arch"] == "resnet50").unwrap();
    assert_eq!(r50["params"], 25_557_032);
    assert_eq!(r50["num_classes"], 1000);
    let out = run(&["list", "--pretrained", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let table: Vec<String> = resnet_zoo::hub::registry::all()
        .unwrap()
        .iter()
        .map(|w| w.name.clone())
        .collect();
    assert_eq!(names, table);
}

#[test]
fn docs_weights_page_lists_every_row() {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/weights.md"))
            .unwrap();
    for w in resnet_zoo::hub::registry::all().unwrap() {
        assert!(
            page.contains(&format!("`{}`", w.name)),
            "docs/weights.md lacks {}",
            w.name
        );
    }
}

#[test]
fn info_reports_model_facts() {
    let out = run(&["info", "--arch", "resnet50", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["params"], 25_557_032);
    assert_eq!(v["output_stride"], 32);
    assert_eq!(v["num_features"], 2048);
    let macs = v["macs"].as_u64().unwrap() as f64 / 1e9;
    assert!((macs - 4.089).abs() < 0.02, "{macs}");
    let channels: Vec<u64> = v["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["channels"].as_u64().unwrap())
        .collect();
    assert_eq!(channels, [64, 256, 512, 1024, 2048]);
    // CIFAR nets are counted at their own 32x32 unless --size says otherwise.
    let out = run(&["info", "--arch", "resnet20", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["input_size"].as_u64(), v["output_stride"].as_u64()),
        (Some(32), Some(4))
    );
    assert_eq!(v["params"], 269_722);
    let out = run(&["info", "--arch", "resnet5"]);
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_has(&out, "did you mean");
}

/// `bench` (what benches/compare.py runs): one JSON line with the timings, and the output it
/// writes is the model's, checked against PyTorch's logits.
#[test]
fn bench_reports_timings_and_writes_the_models_output() {
    if common::skip_without_fixtures() {
        return;
    }
    let io = common::load_tensors("resnet20.io.safetensors");
    let dir = std::env::temp_dir().join(format!("resnet-zoo-cli-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("input.safetensors");
    let output = dir.join("output.safetensors");
    save_one(&input, "input", &io["input_32"]);
    let weights = common::fixture("resnet20.safetensors");
    let bench = |input: &Path, more: &[&str]| {
        let mut args = vec![
            "bench",
            "--arch",
            "resnet20",
            "--weights",
            weights.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ];
        args.extend_from_slice(more);
        run(&args)
    };
    let o = bench(
        &input,
        &[
            "--repeats",
            "3",
            "--output",
            output.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(line["engine"], "resnet-zoo");
    assert_eq!(line["model"], "resnet20");
    assert_eq!(line["batch"], 2);
    let times = line["times_ms"].as_array().unwrap();
    assert_eq!(times.len(), 3);
    assert!(times.iter().all(|t| t.as_f64().unwrap() > 0.0), "{line}");
    assert!(line["load_ms"].as_f64().unwrap() > 0.0, "{line}");
    let out = candle_core::safetensors::load(&output, &candle_core::Device::Cpu).unwrap();
    let err = common::rel_err(&out["output"], &io["logits_32"]);
    assert!(err < 1e-4, "bench output differs from PyTorch: {err:e}");

    // An input file without an `input` tensor: exit 1, the file and the expected name said.
    let wrong = dir.join("wrong.safetensors");
    save_one(&wrong, "x", &io["input_32"]);
    let o = bench(&wrong, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_stderr_has(&o, "wrong.safetensors: no tensor named `input`");
    let o = run(&[
        "bench",
        "--arch",
        "resnet20",
        "--weights",
        weights.to_str().unwrap(),
        "--repeats",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_stderr_has(&o, "--repeats");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--dtype f16|bf16` runs the model in that dtype (bench reports it, and the output stays within
/// the half precisions' tolerances of PyTorch's f32 logits); `--device auto` is the CPU in a build
/// without GPU features; an unknown dtype is a usage error naming the flag.
#[test]
fn dtype_and_auto_device_flags() {
    if common::skip_without_fixtures() {
        return;
    }
    let io = common::load_tensors("resnet20.io.safetensors");
    let dir = std::env::temp_dir().join(format!("resnet-zoo-cli-dtype-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("input.safetensors");
    save_one(&input, "input", &io["input_32"]);
    let resnet20 = common::fixture("resnet20.safetensors");
    // (dtype, relative tolerance on the logits): 11 and 8 significant bits.
    for (dtype, tol) in [("f32", 1e-4), ("f16", 2e-2), ("bf16", 1.5e-1)] {
        let output = dir.join(format!("output_{dtype}.safetensors"));
        let o = run(&[
            "bench",
            "--arch",
            "resnet20",
            "--weights",
            resnet20.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--repeats",
            "1",
            "--device",
            "auto",
            "--dtype",
            dtype,
            "--out",
            output.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{dtype}: {}", stderr(&o));
        let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(line["dtype"], dtype, "{line}");
        assert_eq!(line["device"], "cpu", "{line}");
        let out = candle_core::safetensors::load(&output, &candle_core::Device::Cpu).unwrap();
        let err = common::rel_err(&out["output"], &io["logits_32"]);
        assert!(
            err < tol,
            "{dtype}: logits differ from PyTorch's by {err:e}"
        );
    }
    let o = run(&[
        "classify",
        "--arch",
        "resnet18",
        "--weights",
        &weights(),
        "--dtype",
        "f64",
        &image("chelsea.jpg"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_stderr_has(&o, "--dtype");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `resnet-zoo list | head -1`: the reader goes away, and the process ends without a panic.
#[test]
fn closed_stdout_ends_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .args(["list", "--pretrained"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The read end closes at once, long before the process gets to its first line of output.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
}

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

/// Without network (or with --offline and an empty cache) the error says how to run anyway: the
/// file's URL, once, and `--weights FILE`.
#[test]
fn download_failures_name_the_offline_way() {
    let img = image("chelsea.jpg");
    let cache = std::env::temp_dir().join(format!("resnet-zoo-cli-nonet-{}", std::process::id()));
    let url = "http://127.0.0.1:9/timm/resnet50.tv2_in1k/resolve/main/model.safetensors";
    for offline in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"));
        cmd.args(["classify", "--model", "resnet50.tv2_in1k"])
            .arg(&img)
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .env("HF_HUB_CACHE", &cache)
            .env("RESNET_ZOO_HUB_TIMEOUT", "5")
            .env_remove("HF_HUB_OFFLINE");
        if offline {
            cmd.arg("--offline");
        }
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("--model resnet50.tv2_in1k --weights FILE"),
            "{err}"
        );
        assert_eq!(err.matches(url).count(), 1, "the URL once:\n{err}");
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

/// Writes one tensor under `name` to a .safetensors file.
fn save_one(path: &Path, name: &str, t: &candle_core::Tensor) {
    candle_core::safetensors::save(
        &std::collections::HashMap::from([(name.to_string(), t.clone())]),
        path,
    )
    .unwrap();
}
