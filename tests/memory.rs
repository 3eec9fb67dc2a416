//! Peak memory: a decompression bomb and a file claiming a huge header are refused before anything
//! large is allocated. Its own test binary, so no other test moves this process's peak (VmHWM).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
#![cfg(target_os = "linux")]

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

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A few-KB PNG whose header says `side` x `side` RGB (2.7 GB decoded at 30000).
fn png_bomb(side: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    };
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    let mut idat = vec![0x78, 0x9c];
    idat.extend(std::iter::repeat_n(0u8, 4096));
    chunk(b"IDAT", &idat);
    chunk(b"IEND", &[]);
    out
}

#[test]
fn bombs_are_refused_before_allocating() {
    let before = peak_kib();
    let bomb = png_bomb(30000);
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
