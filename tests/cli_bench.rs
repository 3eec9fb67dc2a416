//! The `resnet-zoo bench` command (what benches/compare.py runs) and the `--dtype` and
//! `--device auto` flags.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::Path;

use common::cli::{assert_stderr_has, image, run, save_one, stderr, weights};

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

    // `--layers`: every convolution timed in the model, the output unchanged. resnet20 has 19 (the
    // stem and two per block; its shortcuts pad with zeros). Each call times one image or the
    // batch of 2, depending on how the threads split it.
    let o = bench(
        &input,
        &[
            "--repeats",
            "2",
            "--layers",
            "--json",
            "--output",
            output.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let layers = line["layers"].as_array().unwrap();
    if layers.is_empty() {
        assert_stderr_has(&o, "--layers times the blocked CPU path only");
    } else {
        assert_eq!(layers.len(), 19, "{line}");
        assert_eq!(layers[0]["name"], "stem.0");
        assert_eq!(layers[0]["shape"], "3->16 3x3/1 32x32->32x32");
        assert_eq!(layers[18]["name"], "layer3.2.conv2");
        for l in layers {
            let images = l["calls"].as_u64().unwrap() * l["batch"].as_u64().unwrap();
            assert_eq!(images, 2 * 2, "{l}");
            let (min, med) = (
                l["min_ms"].as_f64().unwrap(),
                l["median_ms"].as_f64().unwrap(),
            );
            assert!(0.0 < min && min <= med, "{l}");
        }
    }
    let out = candle_core::safetensors::load(&output, &candle_core::Device::Cpu).unwrap();
    let err = common::rel_err(&out["output"], &io["logits_32"]);
    assert!(
        err < 1e-4,
        "bench --layers output differs from PyTorch: {err:e}"
    );

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

/// The CPU kernel switches are read strictly: a value that is not one, or a kernel set this CPU
/// lacks, fails the run (exit 1) with an error naming the variable, rather than quietly running
/// the default kernels.
#[test]
fn kernel_switches_refuse_unknown_values() {
    if common::skip_without_fixtures() {
        return;
    }
    let weights = weights();
    for (var, value) in [("RESNET_ZOO_ISA", "avx9"), ("RESNET_ZOO_WINOGRAD", "maybe")] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
            .args(["bench", "--arch", "resnet18", "--weights", &weights])
            .args(["--repeats", "1", "--device", "cpu"])
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{var}={value}: {}", stderr(&o));
        assert_stderr_has(&o, &format!("{var}=\"{value}\""));
    }
    // A kernel set this CPU cannot run is refused too, with a way out.
    let foreign = if cfg!(target_arch = "aarch64") {
        ("avx2", "Avx2Fma")
    } else {
        ("neon", "Neon")
    };
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .args(["bench", "--arch", "resnet18", "--weights", &weights])
        .args(["--repeats", "1", "--device", "cpu"])
        .env("RESNET_ZOO_ISA", foreign.0)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_stderr_has(
        &o,
        &format!(
            "cannot run the {} kernels (unset it, or use auto)",
            foreign.1
        ),
    );
}
