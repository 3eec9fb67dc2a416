use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use resnet_zoo_resnet::{ResNet, ResNetConfig, PRESETS};
use safetensors::{Dtype, SafeTensors};

use crate::error::{LoadError, MismatchReport, ShapeMismatch};

/// Integer buffers that PyTorch BatchNorm saves and inference never reads.
fn is_ignored(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
}

fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

/// Reads a weights file into memory and rejects files that are obviously not safetensors.
///
/// The file is read, not memory-mapped: a file truncated or rewritten by another process while in use
/// cannot crash the process (a mapped file would raise SIGBUS), at the price of one copy.
pub fn read_weights_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let head = &bytes[..bytes.len().min(512)];
    let text = String::from_utf8_lossy(head);
    let trimmed = text.trim_start();
    if bytes.is_empty() {
        return Err(LoadError::Empty {
            path: path.to_path_buf(),
        });
    }
    if trimmed.starts_with("version https://git-lfs.github.com/spec") {
        return Err(LoadError::LfsPointer {
            path: path.to_path_buf(),
        });
    }
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with("<!doctype html") || lower.starts_with("<html") {
        return Err(LoadError::Html {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// `name -> (dtype, shape)` for every tensor of a safetensors header.
fn header_table(tensors: &SafeTensors) -> BTreeMap<String, (Dtype, Vec<usize>)> {
    tensors
        .iter()
        .map(|(name, view)| (name.to_string(), (view.dtype(), view.shape().to_vec())))
        .collect()
}

/// Names (and dtypes) of `table` that `cfg` does not match exactly, or an empty report.
fn compare(table: &BTreeMap<String, (Dtype, Vec<usize>)>, cfg: &ResNetConfig) -> MismatchReport {
    let specs = ResNet::tensor_specs(cfg);
    let mut report = MismatchReport::default();
    let expected: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for spec in &specs {
        match table.get(&spec.name) {
            None => report.missing.push((spec.name.clone(), spec.shape.clone())),
            Some((dtype, shape)) => {
                if !is_float(*dtype) {
                    report
                        .bad_dtypes
                        .push((spec.name.clone(), format!("{dtype:?}")));
                } else if *shape != spec.shape {
                    report.shape_mismatches.push(ShapeMismatch {
                        name: spec.name.clone(),
                        expected: spec.shape.clone(),
                        found: shape.clone(),
                    });
                }
            }
        }
    }
    report.unexpected = table
        .keys()
        .filter(|n| !expected.contains(n.as_str()) && !is_ignored(n))
        .cloned()
        .collect();
    report
}

/// Checks a parsed safetensors file against `cfg` without loading any tensor. `arch` names the
/// architecture in the report.
pub fn check_header(
    path: &Path,
    tensors: &SafeTensors,
    cfg: &ResNetConfig,
    arch: &str,
) -> Result<(), LoadError> {
    let table = header_table(tensors);
    let mut report = compare(&table, cfg);
    if report.is_empty() {
        return Ok(());
    }
    report.path = path.to_path_buf();
    report.arch = arch.to_string();
    report.matching_presets = PRESETS
        .iter()
        .filter(|(_, build)| {
            compare(&table, &build().with_num_classes(cfg.num_classes)).is_empty()
                || compare(&table, &build()).is_empty()
        })
        .map(|(name, _)| name.to_string())
        .collect();
    Err(LoadError::Mismatch(Box::new(report)))
}

/// Loads a ResNet from a local `.safetensors` file, strictly: the header is checked against `cfg`
/// first ([`check_header`]), so a wrong file or architecture gives one report of every problem.
pub fn load_safetensors(
    path: impl AsRef<Path>,
    cfg: &ResNetConfig,
    dtype: DType,
    device: &Device,
) -> Result<ResNet, LoadError> {
    let path = path.as_ref();
    let arch = resnet_zoo_resnet::presets::name_of(cfg).unwrap_or("the given ResNetConfig");
    let candle = |source| LoadError::Candle {
        path: path.to_path_buf(),
        source,
    };
    cfg.validate().map_err(candle)?;
    let bytes = read_weights_file(path)?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|source| LoadError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    check_header(path, &tensors, cfg, arch)?;
    let vb = VarBuilder::from_slice_safetensors(&bytes, dtype, device).map_err(candle)?;
    ResNet::new(cfg, vb).map_err(candle)
}
