//! Peak memory: a decompression bomb and a file claiming a huge header are refused before anything
//! large is allocated, and loading ResNet-50 holds about one copy of its weights at a time. Its own
//! test binary, so no other test moves this process's peak (VmHWM); the tests here take turns and
//! reset the peak first.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use resnet_zoo::hub::{self, LoadOptions};
use resnet_zoo::transforms::{decode_rgb, ImageLimits};
use resnet_zoo::ResNetConfig;

/// A memory figure of this process from /proc/self/status, in KiB: `VmHWM` (the peak resident
/// memory so far) or `VmRSS` (resident now).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn peak_kib() -> u64 {
    status_kib("VmHWM")
}

fn rss_kib() -> u64 {
    status_kib("VmRSS")
}

/// The tests of this binary run one at a time, each from a peak reset to the memory in use.
fn measured() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    // "5" resets VmHWM to VmRSS (Linux 4.0 and later).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    turn
}

/// ResNet-50's weights file is read tensor by tensor and each tensor's bytes are freed as the
/// model packs it: the load's peak is about the packed model (the file's 98 MiB, 16% more for the
/// Winograd weights), where holding the whole file as well took over twice the file.
#[test]
fn loading_holds_one_copy_of_the_weights() {
    if common::skip_without_fixtures() {
        return;
    }
    let path = common::fixture("resnet50.safetensors");
    let file_mib = std::fs::metadata(&path).unwrap().len() / (1 << 20);
    let _turn = measured();
    let before = rss_kib();
    let model =
        hub::load_safetensors(&path, &ResNetConfig::resnet50(), DType::F32, &Device::Cpu).unwrap();
    let (peak_mib, held_mib) = ((peak_kib() - before) / 1024, (rss_kib() - before) / 1024);
    println!("loading a {file_mib} MiB file: peak +{peak_mib} MiB, held +{held_mib} MiB");
    assert!(
        peak_mib < file_mib * 3 / 2,
        "peak +{peak_mib} MiB loading a {file_mib} MiB file (held after: +{held_mib} MiB)"
    );
    drop(model);
}

#[test]
fn bombs_are_refused_before_allocating() {
    let _turn = measured();
    let before = peak_kib();
    let bomb = common::png_bomb(30000, 30000);
    // Even with a generous side limit the allocation limit refuses it from the header.
    let limits = ImageLimits {
        max_side: 65535,
        ..ImageLimits::default()
    };
    let err = decode_rgb(&bomb, Path::new("bomb.png"), &limits).unwrap_err();
    assert!(err.to_string().contains("bomb.png"), "{err}");

    // A weights file whose header length claims 1 TiB, and one whose header claims a 1 TiB tensor.
    let mut huge_header = (1u64 << 40).to_le_bytes().to_vec();
    huge_header.extend_from_slice(b"{}");
    let header = r#"{"conv1.weight":{"dtype":"F32","shape":[1048576,1048576],"data_offsets":[0,4398046511104]}}"#;
    let mut huge_tensor = (header.len() as u64).to_le_bytes().to_vec();
    huge_tensor.extend_from_slice(header.as_bytes());
    for bytes in [&huge_header, &huge_tensor] {
        let cfg = ResNetConfig::resnet20();
        let opts = LoadOptions::default();
        let path = Path::new("huge.safetensors");
        assert!(
            hub::load_safetensors_bytes(bytes, path, &cfg, DType::F32, &Device::Cpu, opts).is_err()
        );
    }
    let grown_mib = (peak_kib() - before) / 1024;
    println!("peak resident memory grew by {grown_mib} MiB");
    assert!(grown_mib < 32, "peak memory grew by {grown_mib} MiB");
}
