//! Peak memory: a decompression bomb and a file claiming a huge header are refused before anything
//! large is allocated. Its own test binary, so no other test moves this process's peak (VmHWM).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use resnet_zoo::hub::{self, LoadOptions};
use resnet_zoo::transforms::{decode_rgb, ImageLimits};
use resnet_zoo::ResNetConfig;

/// This process's peak resident memory so far, in KiB (`VmHWM` of /proc/self/status).
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn bombs_are_refused_before_allocating() {
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
