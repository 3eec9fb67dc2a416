use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use resnet_zoo_resnet::{ResNet, ResNetConfig, PRESETS};
use safetensors::{Dtype, SafeTensors};

use crate::error::{LoadError, MismatchReport, ShapeMismatch};
use crate::keymap::{self, Scheme};
use crate::tensors::{FileTensor, FileTensors, Split};

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
/// Only a regular file of at most [`crate::MAX_WEIGHTS_BYTES`] is read, and a file that changes
/// while it is read is refused ([`LoadError::ChangedWhileReading`]).
pub fn read_weights_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    let bytes = crate::read::read_weights(path)?;
    sniff(&bytes, path)?;
    Ok(bytes)
}

/// Refuses bytes that are obviously not safetensors: empty, a Git LFS pointer, an HTML page.
fn sniff(bytes: &[u8], path: &Path) -> Result<(), LoadError> {
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
    if let Some(what) = crate::read::pytorch_format(bytes) {
        return Err(LoadError::PyTorchCheckpoint {
            path: path.to_path_buf(),
            what,
        });
    }
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with("<!doctype html") || lower.starts_with("<html") {
        return Err(LoadError::Html {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Tensor names that the safetensors header of `bytes` lists more than once. A JSON object may
/// repeat a key and `serde` keeps only one, so the header is read once more key by key.
fn duplicate_names(bytes: &[u8]) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(k) = map.next_key::<String>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(Visitor)
        }
    }
    let Some(len) = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
        return Vec::new();
    };
    let end = usize::try_from(u64::from_le_bytes(len)).map_or(usize::MAX, |n| n.saturating_add(8));
    let Some(header) = bytes.get(8..end) else {
        return Vec::new(); // not safetensors: the parser says so
    };
    let Ok(Keys(mut keys)) = serde_json::from_slice::<Keys>(header) else {
        return Vec::new();
    };
    keys.sort();
    let mut dups: Vec<String> = keys
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0].clone())
        .collect();
    dups.dedup();
    dups
}

/// The header of a checkpoint in our names: `torchvision name -> (dtype, shape, name in the file)`,
/// plus the file's names that the detected scheme does not map.
struct Header {
    scheme: Scheme,
    table: BTreeMap<String, (Dtype, Vec<usize>, String)>,
    unmapped: Vec<String>,
}

fn header_table(tensors: &[FileTensor], strip: Option<&str>) -> Header {
    let strip = |name: &'_ str| -> String {
        strip
            .and_then(|p| name.strip_prefix(p))
            .unwrap_or(name)
            .to_string()
    };
    let stripped: Vec<String> = tensors.iter().map(|t| strip(&t.name)).collect();
    let scheme = keymap::detect(stripped.iter().map(String::as_str));
    let mut table = BTreeMap::new();
    let mut unmapped = Vec::new();
    for t in tensors {
        match keymap::map_name(scheme, &strip(&t.name)) {
            // Two file tensors for one of ours: keep the first, report the second.
            Some(ours) if table.contains_key(&ours) => unmapped.push(t.name.clone()),
            Some(ours) => {
                table.insert(ours, (t.dtype, t.shape.clone(), t.name.clone()));
            }
            None => unmapped.push(t.name.clone()),
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Load a headless backbone (`num_classes: None`) from a file that has a classifier: exactly
    /// `fc.weight` and `fc.bias` (our names; transformers' `classifier.1.*`, timm V2's `head.fc.*`)
    /// are skipped. Any other extra tensor is still an error.
    pub skip_classifier: bool,
    /// Load tensors that hold NaN or infinite values. By default such a file is refused with
    /// [`LoadError::NonFinite`] naming the tensors: a model built from it would answer garbage.
    pub allow_non_finite: bool,
    /// Remove this prefix from every tensor name of the file that has it before matching, e.g.
    /// `module.` of a checkpoint saved from `DistributedDataParallel` / `DataParallel`. A file
    /// whose names all carry a prefix that makes it match is refused with a hint naming it.
    pub strip_prefix: Option<String>,
}

/// Whether the little-endian float at the start of `b` (`width` bytes) is NaN or infinite: its
/// exponent bits are all ones.
fn non_finite(dtype: Dtype, b: &[u8]) -> bool {
    match dtype {
        Dtype::F16 => u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00,
        Dtype::BF16 => u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80,
        Dtype::F32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 == 0x7f80_0000,
        Dtype::F64 => {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[..8]);
            u64::from_le_bytes(x) & 0x7ff0_0000_0000_0000 == 0x7ff0_0000_0000_0000
        }
        _ => false,
    }
}

/// The tensors of `names` (file names) that hold NaN or infinite values, with their counts.
fn non_finite_tensors(tensors: &[FileTensor], names: &HashSet<&str>) -> Vec<(String, usize)> {
    tensors
        .iter()
        .filter(|t| names.contains(t.name.as_str()))
        .filter_map(|t| {
            let width = t.dtype.bitsize() / 8;
            if !is_float(t.dtype) || width == 0 {
                return None;
            }
            let bad = t
                .data
                .chunks_exact(width)
                .filter(|b| non_finite(t.dtype, b))
                .count();
            (bad > 0).then(|| (t.name.clone(), bad))
        })
        .collect()
}

/// The first dot-terminated segment every name starts with (`module.` in `module.conv1.weight`),
/// if all names share it.
fn common_prefix<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut names = names.into_iter();
    let first = names.next()?;
    let prefix = &first[..=first.find('.')?];
    names
        .all(|n| n.starts_with(prefix) && n.len() > prefix.len())
        .then(|| prefix.to_string())
}

/// The classifier tensors [`LoadOptions::skip_classifier`] allows, in our names.
const CLASSIFIER: [&str; 2] = ["fc.weight", "fc.bias"];

/// Everything in `header` that `cfg` does not match exactly, or an empty report.
fn compare(header: &Header, cfg: &ResNetConfig, options: &LoadOptions) -> MismatchReport {
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

/// Checks a parsed safetensors file against `cfg` without loading any tensor (`arch` names the
/// architecture in the report) and returns the mapped header for the load that follows.
fn checked_header(
    path: &Path,
    tensors: &[FileTensor],
    cfg: &ResNetConfig,
    arch: &str,
    options: &LoadOptions,
) -> Result<Header, LoadError> {
    let header = header_table(tensors, options.strip_prefix.as_deref());
    let mut report = compare(&header, cfg, options);
    if report.is_empty() {
        return Ok(header);
    }
    report.path = path.to_path_buf();
    report.arch = arch.to_string();
    if options.strip_prefix.is_none() {
        if let Some(prefix) = common_prefix(tensors.iter().map(|t| t.name.as_str())) {
            let stripped = header_table(tensors, Some(&prefix));
            if compare(&stripped, cfg, options).is_empty() {
                report.strip_prefix = Some(prefix);
            }
        }
    }
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
/// first, before any tensor is read, so a wrong file or architecture gives one report of every problem.
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
/// LoadOptions { skip_classifier: true, ..LoadOptions::default() })`.
///
/// The file is read tensor by tensor into separate buffers, each freed once the model holds the
/// tensor, so the load's peak memory stays near one copy of the weights.
pub fn load_safetensors_with(
    path: impl AsRef<Path>,
    cfg: &ResNetConfig,
    dtype: DType,
    device: &Device,
    options: LoadOptions,
) -> Result<ResNet, LoadError> {
    let path = path.as_ref();
    let mut split = Split::default();
    let pieces = crate::read::read_weights_pieces(path, |pieces, left| split.next(pieces, left))?;
    match split.tensors(pieces) {
        Ok((head, tensors)) => {
            precheck(path, cfg, &options)?;
            sniff(&head, path)?;
            refuse_duplicates(&head, path)?;
            load_tensors(tensors, path, cfg, dtype, device, options)
        }
        // Not a valid safetensors file: the whole-file parser says why.
        Err(pieces) => load_safetensors_bytes(&pieces.concat(), path, cfg, dtype, device, options),
    }
}

/// [`load_safetensors_with`] on the bytes of a file already in memory; `path` only names the file
/// in errors. Every check of a file load applies (what is fuzzed and property-tested).
pub fn load_safetensors_bytes(
    bytes: &[u8],
    path: &Path,
    cfg: &ResNetConfig,
    dtype: DType,
    device: &Device,
    options: LoadOptions,
) -> Result<ResNet, LoadError> {
    precheck(path, cfg, &options)?;
    sniff(bytes, path)?;
    refuse_duplicates(bytes, path)?;
    let file = SafeTensors::deserialize(bytes).map_err(|source| LoadError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    let tensors = file
        .iter()
        .map(|(name, view)| FileTensor::borrowed(name, &view))
        .collect();
    load_tensors(tensors, path, cfg, dtype, device, options)
}

fn candle_error(path: &Path) -> impl Fn(candle_core::Error) -> LoadError + '_ {
    move |source| LoadError::Candle {
        path: path.to_path_buf(),
        source,
    }
}

/// The checks of `cfg` and `options` made before the file is looked at.
fn precheck(path: &Path, cfg: &ResNetConfig, options: &LoadOptions) -> Result<(), LoadError> {
    cfg.validate().map_err(candle_error(path))?;
    if options.skip_classifier && cfg.num_classes.is_some() {
        return Err(candle_error(path)(candle_core::Error::Msg(
            "skip_classifier loads a headless backbone: use a config with num_classes: None".into(),
        )));
    }
    Ok(())
}

/// Refuses a header (in `bytes`, from the file's start) that names a tensor twice.
fn refuse_duplicates(bytes: &[u8], path: &Path) -> Result<(), LoadError> {
    let duplicates = duplicate_names(bytes);
    if duplicates.is_empty() {
        return Ok(());
    }
    Err(LoadError::DuplicateNames {
        path: path.to_path_buf(),
        names: duplicates,
    })
}

/// Checks a parsed file's tensors against `cfg` and builds the model from them.
fn load_tensors(
    tensors: Vec<FileTensor<'_>>,
    path: &Path,
    cfg: &ResNetConfig,
    dtype: DType,
    device: &Device,
    options: LoadOptions,
) -> Result<ResNet, LoadError> {
    let arch = resnet_zoo_resnet::presets::name_of(cfg).unwrap_or("the given ResNetConfig");
    let header = checked_header(path, &tensors, cfg, arch, &options)?;
    if !options.allow_non_finite {
        let names = header.table.values().map(|(_, _, f)| f.as_str()).collect();
        let mut bad = non_finite_tensors(&tensors, &names);
        if !bad.is_empty() {
            bad.sort();
            return Err(LoadError::NonFinite {
                path: path.to_path_buf(),
                tensors: bad,
            });
        }
    }
    let vb = VarBuilder::from_backend(Box::new(FileTensors::new(tensors)), dtype, device.clone());
    let vb = match header.scheme {
        Scheme::Torchvision if options.strip_prefix.is_none() => vb,
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
    ResNet::new(cfg, vb).map_err(candle_error(path))
}
