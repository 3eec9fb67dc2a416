use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use resnet_zoo_resnet::{ResNet, ResNetConfig, PRESETS};
use safetensors::{Dtype, SafeTensors};

use crate::error::{LoadError, MismatchReport, ShapeMismatch};
use crate::keymap::{self, Scheme};

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

/// The header of a checkpoint in our names: `torchvision name -> (dtype, shape, name in the file)`,
/// plus the file's names that the detected scheme does not map.
struct Header {
    scheme: Scheme,
    table: BTreeMap<String, (Dtype, Vec<usize>, String)>,
    unmapped: Vec<String>,
}

fn header_table(tensors: &SafeTensors) -> Header {
    let scheme = keymap::detect(tensors.names());
    let mut table = BTreeMap::new();
    let mut unmapped = Vec::new();
    for (name, view) in tensors.iter() {
        match keymap::map_name(scheme, name) {
            // Two file tensors for one of ours: keep the first, report the second.
            Some(ours) if table.contains_key(&ours) => unmapped.push(name.to_string()),
            Some(ours) => {
                table.insert(
                    ours,
                    (view.dtype(), view.shape().to_vec(), name.to_string()),
                );
            }
            None => unmapped.push(name.to_string()),
        }
    }
    unmapped.sort();
    Header {
        scheme,
        table,
        unmapped,
    }
}

/// What a load may leave out of the file, by name. The default leaves out nothing: every tensor of
/// the file must be one the model reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Load a headless backbone (`num_classes: None`) from a file that has a classifier: exactly
    /// `fc.weight` and `fc.bias` (our names; transformers' `classifier.1.*`, timm V2's `head.fc.*`)
    /// are skipped. Any other extra tensor is still an error.
    pub skip_classifier: bool,
}

/// The classifier tensors [`LoadOptions::skip_classifier`] allows, in our names.
const CLASSIFIER: [&str; 2] = ["fc.weight", "fc.bias"];

/// Everything in `header` that `cfg` does not match exactly, or an empty report.
fn compare(header: &Header, cfg: &ResNetConfig, options: LoadOptions) -> MismatchReport {
    let table = &header.table;
    let specs = ResNet::tensor_specs(cfg);
    let mut report = MismatchReport::default();
    let expected: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for spec in &specs {
        match table.get(&spec.name) {
            None => report.missing.push((spec.name.clone(), spec.shape.clone())),
            Some((dtype, shape, _)) => {
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
        .iter()
        .filter(|(n, _)| !expected.contains(n.as_str()) && !is_ignored(n))
        .filter(|(n, _)| !(options.skip_classifier && CLASSIFIER.contains(&n.as_str())))
        .map(|(_, (_, _, file_name))| file_name.clone())
        .collect();
    report.unmapped = header
        .unmapped
        .iter()
        .filter(|n| !is_ignored(n))
        .cloned()
        .collect();
    report.scheme = header.scheme.name();
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
    checked_header(path, tensors, cfg, arch, LoadOptions::default()).map(|_| ())
}

/// [`check_header`], returning the mapped header for the load that follows.
fn checked_header(
    path: &Path,
    tensors: &SafeTensors,
    cfg: &ResNetConfig,
    arch: &str,
    options: LoadOptions,
) -> Result<Header, LoadError> {
    let header = header_table(tensors);
    let mut report = compare(&header, cfg, options);
    if report.is_empty() {
        return Ok(header);
    }
    report.path = path.to_path_buf();
    report.arch = arch.to_string();
    report.matching_presets = PRESETS
        .iter()
        .filter(|(_, build)| {
            compare(&header, &build().with_num_classes(cfg.num_classes), options).is_empty()
                || compare(&header, &build(), options).is_empty()
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
    load_safetensors_with(path, cfg, dtype, device, LoadOptions::default())
}

/// [`load_safetensors`] with [`LoadOptions`], e.g. a headless backbone from a classifier's file:
/// `load_safetensors_with(path, &cfg.with_num_classes(None), dtype, device,
/// LoadOptions { skip_classifier: true })`.
pub fn load_safetensors_with(
    path: impl AsRef<Path>,
    cfg: &ResNetConfig,
    dtype: DType,
    device: &Device,
    options: LoadOptions,
) -> Result<ResNet, LoadError> {
    let path = path.as_ref();
    let arch = resnet_zoo_resnet::presets::name_of(cfg).unwrap_or("the given ResNetConfig");
    let candle = |source| LoadError::Candle {
        path: path.to_path_buf(),
        source,
    };
    cfg.validate().map_err(candle)?;
    if options.skip_classifier && cfg.num_classes.is_some() {
        return Err(candle(candle_core::Error::Msg(
            "skip_classifier loads a headless backbone: use a config with num_classes: None".into(),
        )));
    }
    let bytes = read_weights_file(path)?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|source| LoadError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    let header = checked_header(path, &tensors, cfg, arch, options)?;
    let vb = VarBuilder::from_slice_safetensors(&bytes, dtype, device).map_err(candle)?;
    let vb = match header.scheme {
        Scheme::Torchvision => vb,
        // The model asks for torchvision names; read the file's own.
        _ => {
            let to_file: std::collections::HashMap<String, String> = header
                .table
                .into_iter()
                .map(|(ours, (_, _, theirs))| (ours, theirs))
                .collect();
            vb.rename_f(move |ours: &str| {
                to_file
                    .get(ours)
                    .cloned()
                    .unwrap_or_else(|| ours.to_string())
            })
        }
    };
    ResNet::new(cfg, vb).map_err(candle)
}
