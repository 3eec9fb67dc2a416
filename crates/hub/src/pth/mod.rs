//! PyTorch `.pth` checkpoints (the `torch.save` zip format) to safetensors, without Python and
//! without executing pickle code.
//!
//! The pickle is only *parsed* ([`pickle`]: a tree of objects, `GLOBAL` and `REDUCE` become data,
//! nothing is called; declared lengths, object counts and nesting are limited). The tree must then be a dict of plain tensors: every
//! value must be `torch._utils._rebuild_tensor_v2` (optionally wrapped in `_rebuild_parameter`) of a
//! `torch.*Storage`; anything else (another class, a number, a string, `os.system`) refuses the whole
//! file and names the entry. A name may appear once. Strides and storage offsets are honoured, with
//! every size product checked; the tensors together may not exceed what the archive holds (a
//! stride-0 view cannot expand a few bytes into terabytes), and each storage is read once however
//! many tensors view it.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use safetensors::Dtype;

use crate::error::LoadError;

pub mod pickle;
mod tensor;

use pickle::{Obj, Value};
use tensor::{gather, tensor_ref, TensorRef};

/// One tensor read from a checkpoint, contiguous, little-endian.
#[derive(Debug, Clone, PartialEq)]
pub struct PthTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Largest `data.pkl` we parse (a state_dict's pickle is a few hundred KB).
const MAX_PICKLE: u64 = 64 << 20;

/// Tensors may expand their storage (stride-0 views) by this much in all, beyond the bytes the
/// archive holds.
const BROADCAST_SLACK: u64 = 16 << 20;

fn refuse(path: &Path, reason: impl Into<String>) -> LoadError {
    LoadError::Pth {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// At most `max` characters of `s`, for error messages.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

pub(crate) fn describe(obj: &Obj) -> String {
    match &obj.value {
        Value::Reduce { callable, .. } | Value::Build { callable, .. } => match &callable.value {
            Value::Class { module, name } => {
                format!("an object built by {}.{}", clip(module, 80), clip(name, 80))
            }
            _ => "an object built by a call".into(),
        },
        Value::Class { module, name } => {
            format!("a reference to {}.{}", clip(module, 80), clip(name, 80))
        }
        Value::Int(_) | Value::Float(_) => "a number".into(),
        Value::Unicode(_) => "a string".into(),
        Value::Bytes(_) => "a bytes object".into(),
        Value::Bool(_) => "a bool".into(),
        Value::None => "None".into(),
        Value::Dict(_) => "a dict".into(),
        Value::Tuple(_) | Value::List(_) => "a sequence".into(),
        Value::PersistentLoad(_) => "a pickle internal".into(),
    }
}

pub(crate) fn is_class(obj: &Obj, module: &str, class: &str) -> bool {
    matches!(&obj.value, Value::Class { module: m, name } if m == module && name == class)
}

/// Up to 8 names, clipped, for error messages.
fn some_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    let mut out: Vec<String> = names.iter().take(8).map(|n| clip(n, 80)).collect();
    if names.len() > 8 {
        out.push(format!("... ({} in all)", names.len()));
    }
    out.join(", ")
}

/// Reads every tensor of a `torch.save` zip checkpoint. `key` selects a nested dict (for training
/// checkpoints such as `{"state_dict": ..., "epoch": 3}`). The file is read like weights
/// ([`crate::MAX_WEIGHTS_BYTES`], a regular file, unchanged while read).
pub fn read_pth(path: &Path, key: Option<&str>) -> Result<Vec<PthTensor>, LoadError> {
    let bytes = crate::read::read_weights(path)?;
    read_pth_bytes(&bytes, path, key)
}

/// [`read_pth`] on bytes already in memory; `path` only names the file in errors.
pub fn read_pth_bytes(
    bytes: &[u8],
    path: &Path,
    key: Option<&str>,
) -> Result<Vec<PthTensor>, LoadError> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return Err(refuse(
            path,
            if bytes.first() == Some(&0x80) {
                "this is the legacy (pre-1.6, non-zip) torch.save format; re-save it with a current PyTorch"
            } else {
                "not a PyTorch checkpoint (torch.save writes a zip archive)"
            },
        ));
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| refuse(path, format!("corrupt zip archive: {e}")))?;
    let pickles: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .filter(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .collect();
    let [pkl] = pickles.as_slice() else {
        return Err(refuse(
            path,
            format!(
                "expected one data.pkl in the archive, found {}",
                pickles.len()
            ),
        ));
    };
    let prefix = pkl.strip_suffix("data.pkl").unwrap_or("").to_string();
    if let Ok(order) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        let _ = order.take(64).read_to_string(&mut s);
        if s.trim() != "little" {
            return Err(refuse(
                path,
                format!(
                    "tensors are stored {:?}-endian; only little-endian is supported",
                    clip(&s, 20)
                ),
            ));
        }
    }
    let mut pickle = Vec::new();
    zip.by_name(pkl)
        .map_err(|e| refuse(path, e.to_string()))?
        .take(MAX_PICKLE)
        .read_to_end(&mut pickle)
        .map_err(|e| refuse(path, e.to_string()))?;
    // Parsing only: the parser has no way to call anything, and refuses what is over its limits.
    let root = pickle::parse(&pickle).map_err(|error| LoadError::PthPickle {
        path: path.to_path_buf(),
        error,
    })?;
    let dict = select(path, &root, key)?;
    let refs = tensor_refs(path, dict)?;
    read_tensors(path, &mut zip, &prefix, refs, bytes.len() as u64)
}

/// The tensors of `dict`, each refused by name if it is anything but a plain tensor.
fn tensor_refs(path: &Path, dict: &[(Obj, Obj)]) -> Result<Vec<(String, TensorRef)>, LoadError> {
    // Nested dicts, for the hint on a training checkpoint ({"state_dict": {...}, "epoch": 3}).
    let nested = dict.iter().filter_map(|(k, v)| match (&k.value, &v.value) {
        (Value::Unicode(k), Value::Dict(_)) if k != "_metadata" => Some(k.as_str()),
        _ => None,
    });
    let nested = some_names(nested);
    let mut refs = Vec::with_capacity(dict.len());
    for (k, v) in dict {
        let Value::Unicode(name) = &k.value else {
            return Err(refuse(
                path,
                format!("a key is {}, not a tensor name", describe(k)),
            ));
        };
        // `state_dict()` carries its module versions in `_metadata`: plain data, dropped.
        if name == "_metadata" && is_plain_data(v) {
            continue;
        }
        match tensor_ref(v) {
            Ok(r) => refs.push((name.clone(), r)),
            Err(why) => {
                let hint = if nested.is_empty() {
                    String::new()
                } else {
                    format!("; the tensors may be under key {nested} (the `key` argument of read_pth / convert_pth)")
                };
                return Err(refuse(
                    path,
                    format!("entry '{}' {why}; only plain tensors are converted, nothing was executed{hint}", clip(name, 200)),
                ));
            }
        }
    }
    let dups = duplicates(refs.iter().map(|(n, _)| n.as_str()));
    if !dups.is_empty() {
        return Err(LoadError::PthDuplicateKey {
            path: path.to_path_buf(),
            names: some_names(dups.into_iter()),
        });
    }
    Ok(refs)
}

/// Reads each storage once and copies every tensor out of it; the tensors together may hold no
/// more than the archive's `archive_len` bytes (plus [`BROADCAST_SLACK`]), checked before any
/// tensor is allocated.
fn read_tensors(
    path: &Path,
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    prefix: &str,
    refs: Vec<(String, TensorRef)>,
    archive_len: u64,
) -> Result<Vec<PthTensor>, LoadError> {
    let limit = archive_len.saturating_add(BROADCAST_SLACK);
    let mut total = 0u64;
    for (name, r) in &refs {
        let bytes = r.bytes().map(|b| b as u64);
        total = total.saturating_add(bytes.unwrap_or(u64::MAX));
        if total > limit {
            return Err(LoadError::PthTensorTooLarge {
                path: path.to_path_buf(),
                tensor: clip(name, 200),
                shape: r.shape.clone(),
                bytes,
                limit,
            });
        }
    }
    // Storages in order of first use, each with the tensors that view it.
    let mut order: Vec<&str> = Vec::new();
    let mut users: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (_, r)) in refs.iter().enumerate() {
        let list = users.entry(r.storage_key.as_str()).or_default();
        if list.is_empty() {
            order.push(r.storage_key.as_str());
        }
        list.push(i);
    }
    let mut data: Vec<Option<Vec<u8>>> = vec![None; refs.len()];
    for key in order {
        let entry = format!("{prefix}data/{key}");
        let first = &refs[users[key][0]].0;
        let mut storage = Vec::new();
        zip.by_name(&entry)
            .map_err(|e| {
                refuse(
                    path,
                    format!("tensor '{}': storage {entry}: {e}", clip(first, 200)),
                )
            })?
            .take(archive_len)
            .read_to_end(&mut storage)
            .map_err(|e| refuse(path, format!("tensor '{}': {e}", clip(first, 200))))?;
        for &i in &users[key] {
            let (name, r) = &refs[i];
            let bytes = gather(r, &storage)
                .map_err(|why| refuse(path, format!("tensor '{}' {why}", clip(name, 200))))?;
            data[i] = Some(bytes);
        }
    }
    Ok(refs
        .into_iter()
        .zip(data)
        .map(|((name, r), data)| PthTensor {
            name,
            dtype: r.dtype,
            shape: r.shape,
            data: data.unwrap_or_default(),
        })
        .collect())
}

/// Dicts, strings, numbers and None only: no class reference anywhere.
fn is_plain_data(obj: &Obj) -> bool {
    match &obj.value {
        Value::Dict(kv) => kv.iter().all(|(k, v)| is_plain_data(k) && is_plain_data(v)),
        Value::Tuple(v) | Value::List(v) => v.iter().all(is_plain_data),
        Value::Int(_) | Value::Float(_) | Value::Unicode(_) | Value::Bool(_) | Value::None => true,
        _ => false,
    }
}

/// The dict of tensors: the root, or the dict under `key`.
fn select<'a>(
    path: &Path,
    root: &'a Obj,
    key: Option<&str>,
) -> Result<&'a [(Obj, Obj)], LoadError> {
    let Value::Dict(entries) = &root.value else {
        return Err(refuse(
            path,
            format!(
                "the checkpoint is {}, not a dict of tensors",
                describe(root)
            ),
        ));
    };
    let Some(key) = key else { return Ok(entries) };
    let found = entries
        .iter()
        .find(|(k, _)| matches!(&k.value, Value::Unicode(s) if s == key));
    match found.map(|(_, v)| &v.value) {
        Some(Value::Dict(inner)) => Ok(inner),
        Some(_) => Err(refuse(
            path,
            format!(
                "key '{key}': that entry is {}, not a dict",
                found.map_or_else(String::new, |(_, v)| describe(v))
            ),
        )),
        None => {
            let keys = entries.iter().filter_map(|(k, _)| match &k.value {
                Value::Unicode(s) => Some(s.as_str()),
                _ => None,
            });
            Err(refuse(
                path,
                format!("key '{key}': no such entry (keys: {})", some_names(keys)),
            ))
        }
    }
}

/// Converts `input` (`.pth`) to `output` (`.safetensors`), written atomically: a temporary file next
/// to `output`, renamed over it once complete, so a failure leaves the old file or none. Returns the
/// number of tensors written.
pub fn convert_pth(input: &Path, output: &Path, key: Option<&str>) -> Result<usize, LoadError> {
    convert_pth_with(input, output, key, None)
}

/// The names that occur more than once, sorted, each once.
fn duplicates<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    let mut dups: Vec<&str> = names
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    dups.dedup();
    dups
}

/// [`convert_pth`], removing `strip_prefix` from every tensor name that has it (`module.` of a
/// checkpoint saved from `DistributedDataParallel`). Names that become equal are refused.
pub fn convert_pth_with(
    input: &Path,
    output: &Path,
    key: Option<&str>,
    strip_prefix: Option<&str>,
) -> Result<usize, LoadError> {
    let mut tensors = read_pth(input, key)?;
    if let Some(prefix) = strip_prefix {
        for t in &mut tensors {
            if let Some(rest) = t.name.strip_prefix(prefix) {
                t.name = rest.to_string();
            }
        }
        let dups = duplicates(tensors.iter().map(|t| t.name.as_str()));
        if !dups.is_empty() {
            return Err(LoadError::PthDuplicateKey {
                path: input.to_path_buf(),
                names: some_names(dups.into_iter()),
            });
        }
    }
    let views = tensors
        .iter()
        .map(|t| {
            safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| refuse(input, format!("tensor '{}': {e}", t.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bytes =
        safetensors::tensor::serialize(views, None).map_err(|e| refuse(input, e.to_string()))?;
    resnet_zoo_resnet::fswrite::write_atomic(output, &bytes).map_err(|source| LoadError::Io {
        path: output.to_path_buf(),
        source,
    })?;
    Ok(tensors.len())
}
