//! `--device`: picking a Candle device from a command-line name.

use candle_core::Device;

/// The devices `--device` accepts.
pub const DEVICE_NAMES: &[&str] = &["auto", "cpu", "cuda", "metal"];

/// The best device this build and machine have: CUDA device 0 if the `cuda` feature is compiled
/// in and a GPU answers, then Metal device 0 likewise, then the CPU.
pub fn auto_device() -> Device {
    if candle_core::utils::cuda_is_available() {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
    }
    if candle_core::utils::metal_is_available() {
        if let Ok(d) = Device::new_metal(0) {
            return d;
        }
    }
    Device::Cpu
}

/// A short name of a device for messages and reports: `cpu`, `cuda:0`, `metal:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The device called `name` (`auto`, `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N`). A device whose
/// cargo feature is not compiled in is an error that names the feature; `auto` never fails.
pub fn parse_device(name: &str) -> Result<Device, String> {
    if name == "auto" {
        return Ok(auto_device());
    }
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
