//! Any bytes as an image: format sniffing, decoders (libjpeg-turbo, image crate), limits, EXIF
//! orientation, PIL-style conversion, then resize, crop and normalise.
#![no_main]

use std::path::Path;

use candle_core::Device;
use libfuzzer_sys::fuzz_target;
use resnet_zoo::transforms::{decode_rgb, ImageLimits, Preprocess};

fuzz_target!(|data: &[u8]| {
    // Limits low enough for the fuzzer's memory budget.
    let limits = ImageLimits {
        max_side: 2048,
        max_alloc: 32 << 20,
        ..ImageLimits::default()
    };
    if let Ok(rgb) = decode_rgb(data, Path::new("fuzz.img"), &limits) {
        let mut p = Preprocess::imagenet_v2();
        p.limits = limits;
        let _ = p.apply(&rgb, &Device::Cpu);
    }
});
