//! Any tensor names through scheme detection and every scheme's rule table.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resnet_zoo::hub::keymap::{detect, map_name, Scheme};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let names: Vec<&str> = text.split('\n').collect();
    let _ = detect(names.iter().copied());
    for name in &names {
        for scheme in [Scheme::Torchvision, Scheme::Transformers, Scheme::TimmResNetV2] {
            if let Some(ours) = map_name(scheme, name) {
                assert!(!ours.is_empty() || name.is_empty());
            }
        }
    }
});
