//! `.pth` -> safetensors without executing pickle code: plain state_dicts convert exactly (strides,
//! offsets, f16, nn.Parameter), anything else is refused with the entry named, and nothing runs.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use resnet_zoo::hub;

/// A folder of this test's own: tests run in parallel, and one checks that no temporary file is
/// left next to its output.
fn out_dir(test: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("resnet-zoo-convert-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pth(name: &str) -> PathBuf {
    common::fixture(&format!("pth/{name}"))
}

/// All elements of `t`, as f64 (exact for every float and integer dtype used here).
fn values(t: &candle_core::Tensor) -> Vec<f64> {
    let t = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
    t.to_vec1::<f64>().unwrap()
}

/// Every tensor of `a` equals the same-named tensor of `b`, bit for bit.
fn assert_same_tensors(a: &Path, b: &Path) {
    let a = candle_core::safetensors::load(a, &Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(b, &Device::Cpu).unwrap();
    let mut names: Vec<_> = a.keys().collect();
    names.sort();
    let mut other: Vec<_> = b.keys().collect();
    other.sort();
    assert_eq!(names, other);
    for n in names {
        let (x, y) = (&a[n], &b[n]);
        assert_eq!((x.dims(), x.dtype()), (y.dims(), y.dtype()), "{n}");
        let (x, y) = (values(x), values(y));
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{n} differs"
        );
    }
}

#[test]
fn state_dicts_convert_exactly() {
    if common::skip_without_fixtures() {
        return;
    }
    let dir = out_dir("state_dicts_convert_exactly");
    for (input, reference) in [
        ("resnet18.pth", "resnet18.safetensors"),
        ("resnet18_params.pth", "resnet18.safetensors"),
        ("resnet18_f16.pth", "resnet18_f16.safetensors"),
    ] {
        let out = dir.join(format!("{input}.safetensors"));
        let n = hub::convert_pth(&pth(input), &out, None).unwrap();
        assert!(n >= 102, "{input}: {n} tensors");
        assert_same_tensors(&out, &common::fixture(reference));
    }
    // Non-contiguous views and storage offsets are read element by element.
    let out = dir.join("strided.safetensors");
    hub::convert_pth(&pth("strided.pth"), &out, None).unwrap();
    assert_same_tensors(&out, &pth("strided_expected.safetensors"));
    // And the converted file loads strictly as the model it is.
    let model = hub::load_safetensors(
        dir.join("resnet18.pth.safetensors"),
        &resnet_zoo::ResNetConfig::resnet18(),
        DType::F32,
        &Device::Cpu,
    );
    assert!(model.is_ok());
}

#[test]
fn malicious_pickle_is_refused_without_running_it() {
    if common::skip_without_fixtures() {
        return;
    }
    let marker = Path::new("/tmp/resnet-zoo-pwned");
    let _ = std::fs::remove_file(marker);
    let out =
        out_dir("malicious_pickle_is_refused_without_running_it").join("malicious.safetensors");
    let err = hub::convert_pth(&pth("malicious.pth"), &out, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("malicious.pth")
            && err.contains("system")
            && err.contains("nothing was executed"),
        "{err}"
    );
    assert!(!marker.exists(), "the pickle payload ran");
    assert!(!out.exists(), "an output file was written");
}

#[test]
fn other_checkpoints_are_refused_with_a_hint() {
    if common::skip_without_fixtures() {
        return;
    }
    let dir = out_dir("other_checkpoints_are_refused_with_a_hint");
    let err = hub::convert_pth(&pth("nested.pth"), &dir.join("n.safetensors"), None)
        .unwrap_err()
        .to_string();
    // The library names its own argument; the CLI adds the flag (src/cli/flags.rs).
    assert!(
        err.contains("key state_dict (the `key` argument of read_pth / convert_pth)")
            && !err.contains("--key"),
        "{err}"
    );
    let n = hub::convert_pth(
        &pth("nested.pth"),
        &dir.join("n.safetensors"),
        Some("state_dict"),
    )
    .unwrap();
    assert!(n >= 102);
    let err = hub::convert_pth(
        &pth("nested.pth"),
        &dir.join("n2.safetensors"),
        Some("epoch"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a dict"), "{err}");
    let err = hub::convert_pth(&pth("legacy.pth"), &dir.join("l.safetensors"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("legacy"), "{err}");
    let junk = dir.join("junk.pth");
    std::fs::write(&junk, b"PK\x03\x04 not really a zip").unwrap();
    let err = hub::convert_pth(&junk, &dir.join("j.safetensors"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("junk.pth"), "{err}");
}

#[test]
fn convert_command_is_atomic_and_reports() {
    if common::skip_without_fixtures() {
        return;
    }
    let dir = out_dir("convert_command_is_atomic_and_reports");
    let out = dir.join("cli.safetensors");
    std::fs::write(&out, b"previous").unwrap();
    let bin = env!("CARGO_BIN_EXE_resnet-zoo");
    // A refused input leaves the previous output untouched, exit 1.
    let o = Command::new(bin)
        .args(["convert"])
        .arg(pth("malicious.pth"))
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    // The library's advice names its `key` argument; the CLI adds the flag.
    let o = Command::new(bin)
        .args(["convert"])
        .arg(pth("nested.pth"))
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("key state_dict") && stderr.contains("(on the command line: --key NAME)"),
        "{stderr}"
    );
    let o = Command::new(bin)
        .args(["convert"])
        .arg(pth("resnet18.pth"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrote"));
    assert_same_tensors(&out, &common::fixture("resnet18.safetensors"));
    assert!(std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp")));
}

/// `convert --strip-prefix module.`: the names lose the prefix, the values are unchanged.
#[test]
fn convert_strips_a_prefix() {
    if common::skip_without_fixtures() {
        return;
    }
    let dir = out_dir("strip");
    let plain = dir.join("plain.safetensors");
    let stripped = dir.join("stripped.safetensors");
    let run = |out: &Path, more: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
            .arg("convert")
            .arg(pth("resnet18.pth"))
            .arg(out)
            .args(more)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(&plain, &[]);
    // The fixture's names start with `layer1.`, `conv1.`, ...: strip `layer1.` from those that have it.
    run(&stripped, &["--strip-prefix", "layer1."]);
    let a = candle_core::safetensors::load(&plain, &Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(&stripped, &Device::Cpu).unwrap();
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let new = name.strip_prefix("layer1.").unwrap_or(name);
        assert_eq!(values(t), values(&b[new]), "{name}");
    }
    assert!(b.contains_key("0.conv1.weight") && !b.contains_key("layer1.0.conv1.weight"));
}
