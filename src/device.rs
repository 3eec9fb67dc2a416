//! Picking a Candle device from a command-line name.

use candle_core::Device;

/// The devices `--device` accepts.
pub const DEVICE_NAMES: &[&str] = &["cpu", "cuda", "metal"];

/// The device called `name` (`cpu`, `cuda`, `cuda:N`, `metal`). A device whose cargo feature is not
/// compiled in is an error that names the feature.
pub fn parse_device(name: &str) -> Result<Device, String> {
    let (kind, ordinal) = match name.split_once(':') {
        Some((k, n)) => {
            let n = n.parse::<usize>().map_err(|_| {
                format!("invalid device ordinal in '{name}' (expected e.g. cuda:0)")
            })?;
            (k, n)
        }
        None => (name, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" if candle_core::utils::cuda_is_available() => {
            Device::new_cuda(ordinal).map_err(|e| format!("cannot open CUDA device {ordinal}: {e}"))
        }
        "cuda" => Err("CUDA support is not compiled in; rebuild with `--features cuda`".into()),
        "metal" if candle_core::utils::metal_is_available() => Device::new_metal(ordinal)
            .map_err(|e| format!("cannot open Metal device {ordinal}: {e}")),
        "metal" => Err("Metal support is not compiled in; rebuild with `--features metal`".into()),
        other => Err(format!(
            "unknown device '{other}'; expected one of: {}",
            DEVICE_NAMES.join(", ")
        )),
    }
}
