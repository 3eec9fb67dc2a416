//! Shared by the hostile `embed` tests: a tiny generated model (CIFAR ResNet-20, random weights,
//! 64-wide rows), generated images, and running the binary with a deadline (a hang is a failure).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use resnet_zoo::{ResNet, ResNetConfig};

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-zoo-embedh-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Random resnet20 weights in `dir`, made once per test.
pub fn weights(dir: &Path) -> PathBuf {
    let path = dir.join("resnet20.safetensors");
    let tensors: std::collections::HashMap<String, Tensor> =
        ResNet::tensor_specs(&ResNetConfig::resnet20())
            .into_iter()
            .map(|s| {
                let shape = s.shape.as_slice();
                let t = if shape.len() > 1 {
                    // He-uniform: activations stay finite through all 20 layers.
                    let fan_in: usize = shape[1..].iter().product();
                    let a = (6.0 / fan_in as f64).sqrt() as f32;
                    Tensor::rand(-a, a, shape, &Device::Cpu).unwrap()
                } else if s.name.ends_with("running_var") || s.name.ends_with("weight") {
                    Tensor::ones(shape, candle_core::DType::F32, &Device::Cpu).unwrap()
                } else {
                    Tensor::rand(-0.1f32, 0.1, shape, &Device::Cpu).unwrap()
                };
                (s.name, t)
            })
            .collect();
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

/// A small PNG of one colour, `seed` picks it.
pub fn image(path: &Path, seed: u8) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let img = image::RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([seed.wrapping_mul(37), (x * 9) as u8 ^ seed, (y * 13) as u8])
    });
    img.save_with_format(path, image::ImageFormat::Png).unwrap();
}

/// `resnet-zoo embed` with the generated model.
pub fn embed(weights: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"));
    cmd.arg("embed")
        .args(["--arch", "resnet20", "--weights"])
        .arg(weights);
    cmd
}

/// `resnet-zoo SUBCOMMAND`.
pub fn zoo(subcommand: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"));
    cmd.arg(subcommand);
    cmd
}

/// Runs `cmd`, killing it after `limit`: a hang fails the test instead of stalling it.
pub fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?} (killed); stderr: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

pub fn run(cmd: Command) -> Output {
    run_within(cmd, Duration::from_secs(300))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().strip_prefix(dir).unwrap().to_path_buf())
        .collect();
    out.sort();
    out
}
