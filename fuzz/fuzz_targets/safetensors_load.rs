//! Any bytes as a weights file for CIFAR ResNet-20: every check of a file load (sniffing, duplicate
//! names, the safetensors parser, the header check against the architecture, the key maps, NaN/Inf
//! scan, model build). Must return, never panic or abort.
#![no_main]

use std::path::Path;

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use resnet_zoo::hub::{load_safetensors_bytes, LoadOptions};
use resnet_zoo::ResNetConfig;

fuzz_target!(|data: &[u8]| {
    let cfg = ResNetConfig::resnet20();
    let path = Path::new("fuzz.safetensors");
    for options in [
        LoadOptions::default(),
        LoadOptions {
            skip_classifier: false,
            allow_non_finite: true,
        },
    ] {
        let _ = load_safetensors_bytes(data, path, &cfg, DType::F32, &Device::Cpu, options);
    }
    let headless = cfg.with_num_classes(None);
    let skip = LoadOptions {
        skip_classifier: true,
        allow_non_finite: false,
    };
    let _ = load_safetensors_bytes(data, path, &headless, DType::F32, &Device::Cpu, skip);
});
