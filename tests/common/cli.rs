//! Helpers for the tests of the `resnet-zoo` binary (`tests/cli*.rs`): running it offline, the
//! test images, the resnet18 fixture and its stderr.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub fn run(args: &[&str]) -> Output {
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

pub fn image(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/images")
        .join(name)
        .display()
        .to_string()
}

pub fn weights() -> String {
    super::fixture("resnet18.safetensors").display().to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn assert_stderr_has(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
}

/// Writes one tensor under `name` to a .safetensors file.
pub fn save_one(path: &Path, name: &str, t: &candle_core::Tensor) {
    candle_core::safetensors::save(
        &std::collections::HashMap::from([(name.to_string(), t.clone())]),
        path,
    )
    .unwrap();
}
