//! The `resnet-zoo` binary: output formats, per-image errors and exit codes (0 ok, 1 some inputs
//! failed, 2 usage), `list`, `info`, a closed stdout and download failures. `bench` and `--dtype`
//! are in tests/cli_bench.rs; `--labels`, the preprocessing recipe and `--strip-prefix` in
//! tests/cli_classify_flags.rs.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::{assert_stderr_has, image, run, stderr, weights};

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
