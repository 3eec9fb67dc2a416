//! Any bytes as a `torch.save` checkpoint: the zip reader, the pickle parser (which must never
//! execute anything) and the tensor gatherer, with and without a nested key.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use resnet_zoo::hub::read_pth_bytes;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.pth");
    let _ = read_pth_bytes(data, path, None);
    let _ = read_pth_bytes(data, path, Some("state_dict"));
});
