//! PyTorch `.pth` checkpoints (the `torch.save` zip format) to safetensors, without Python and
//! without executing pickle code.
//!
//! The pickle is only *parsed* (candle's opcode interpreter builds a tree of objects; `GLOBAL` and
//! `REDUCE` become data, nothing is called). The tree must then be a dict of plain tensors: every
//! value must be `torch._utils._rebuild_tensor_v2` (optionally wrapped in `_rebuild_parameter`) of a
//! `torch.*Storage`; anything else (another class, a number, a string, `os.system`) refuses the whole
//! file and names the entry. Strides and storage offsets are honoured, with bounds checks.

use std::io::{Cursor, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use safetensors::Dtype;

use crate::error::LoadError;

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

fn refuse(path: &Path, reason: impl Into<String>) -> LoadError {
    LoadError::Pth {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn describe(obj: &Object) -> String {
    match obj {
        Object::Reduce { callable, .. } | Object::Build { callable, .. } => match callable.as_ref()
        {
            Object::Class {
                module_name,
                class_name,
            } => format!("an object built by {module_name}.{class_name}"),
            other => describe(other),
        },
        Object::Class {
            module_name,
            class_name,
        } => format!("a reference to {module_name}.{class_name}"),
        Object::Int(_) | Object::Long(_) | Object::Float(_) => "a number".into(),
        Object::Unicode(_) => "a string".into(),
        Object::Bool(_) => "a bool".into(),
        Object::None => "None".into(),
        Object::Dict(_) => "a dict".into(),
        Object::Tuple(_) | Object::List(_) => "a sequence".into(),
        Object::Mark | Object::PersistentLoad(_) => "a pickle internal".into(),
    }
}

fn is_class(obj: &Object, module: &str, class: &str) -> bool {
    matches!(obj, Object::Class { module_name, class_name } if module_name == module && class_name == class)
}

fn int(obj: &Object) -> Option<i64> {
    match obj {
        Object::Int(i) => Some(i64::from(*i)),
        Object::Long(l) => Some(*l),
        _ => None,
    }
}

fn ints(obj: &Object) -> Option<Vec<usize>> {
    match obj {
        Object::Tuple(v) | Object::List(v) => v
            .iter()
            .map(|o| int(o).and_then(|i| usize::try_from(i).ok()))
            .collect(),
        _ => None,
    }
}

/// Where a tensor's data lives and how to read it.
struct TensorRef {
    storage_key: String,
    dtype: Dtype,
    storage_numel: usize,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn storage_dtype(class: &str) -> Option<Dtype> {
    Some(match class {
        "FloatStorage" => Dtype::F32,
        "DoubleStorage" => Dtype::F64,
        "HalfStorage" => Dtype::F16,
        "BFloat16Storage" => Dtype::BF16,
        "LongStorage" => Dtype::I64,
        "IntStorage" => Dtype::I32,
        "ShortStorage" => Dtype::I16,
        "CharStorage" => Dtype::I8,
        "ByteStorage" => Dtype::U8,
        "BoolStorage" => Dtype::BOOL,
        _ => return None,
    })
}

/// A tensor reference, or why the value is not one.
fn tensor_ref(value: &Object) -> Result<TensorRef, String> {
    let Object::Reduce { callable, args } = value else {
        return Err(format!("is {}, not a tensor", describe(value)));
    };
    if is_class(callable, "torch._utils", "_rebuild_parameter") {
        return match args.as_ref() {
            Object::Tuple(a) if !a.is_empty() => tensor_ref(&a[0]),
            _ => Err("is a malformed nn.Parameter".into()),
        };
    }
    if !is_class(callable, "torch._utils", "_rebuild_tensor_v2") {
        return Err(format!("is {}, not a tensor", describe(value)));
    }
    let Object::Tuple(a) = args.as_ref() else {
        return Err("is a malformed tensor".into());
    };
    let bad = || "is a malformed tensor".to_string();
    let (storage, offset, shape, stride) = match a.as_slice() {
        [Object::PersistentLoad(s), offset, shape, stride, ..] => (s, offset, shape, stride),
        _ => return Err(bad()),
    };
    let Object::Tuple(s) = storage.as_ref() else {
        return Err(bad());
    };
    let (class, key, numel) = match s.as_slice() {
        [Object::Unicode(kind), class, Object::Unicode(key), _location, numel]
            if kind == "storage" =>
        {
            (class, key, numel)
        }
        _ => return Err(bad()),
    };
    let dtype = match class {
        Object::Class {
            module_name,
            class_name,
        } if module_name == "torch" => storage_dtype(class_name)
            .ok_or_else(|| format!("has an unsupported storage type torch.{class_name}"))?,
        other => return Err(format!("has storage of {}", describe(other))),
    };
    let storage_numel = int(numel)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(bad)?;
    let offset = int(offset)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(bad)?;
    let shape = ints(shape).ok_or_else(bad)?;
    let stride = ints(stride).ok_or_else(bad)?;
    if shape.len() != stride.len() || key.contains(['/', '\\']) || key.contains("..") {
        return Err(bad());
    }
    Ok(TensorRef {
        storage_key: key.clone(),
        dtype,
        storage_numel,
        offset,
        shape,
        stride,
    })
}

/// Copies the elements of `r` out of its storage bytes in row-major order, checking every index.
fn gather(r: &TensorRef, storage: &[u8]) -> Result<Vec<u8>, String> {
    let size = r.dtype.bitsize() / 8;
    let numel = r
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("has an overflowing shape")?;
    if storage.len() < r.storage_numel.saturating_mul(size) {
        return Err(format!(
            "storage {} holds {} bytes, fewer than the {} elements declared",
            r.storage_key,
            storage.len(),
            r.storage_numel
        ));
    }
    if numel == 0 {
        return Ok(Vec::new());
    }
    // Largest element index the view touches.
    let last = r
        .shape
        .iter()
        .zip(&r.stride)
        .try_fold(r.offset, |acc, (&d, &s)| {
            (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
        });
    match last {
        Some(last) if last < r.storage_numel => {}
        _ => return Err(format!("views outside its storage {}", r.storage_key)),
    }
    let mut out = Vec::with_capacity(numel * size);
    let mut idx = vec![0usize; r.shape.len()];
    for _ in 0..numel {
        let e = r.offset + idx.iter().zip(&r.stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&storage[e * size..(e + 1) * size]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < r.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// Reads every tensor of a `torch.save` zip checkpoint. `key` selects a nested dict (for training
/// checkpoints such as `{"state_dict": ..., "epoch": 3}`).
pub fn read_pth(path: &Path, key: Option<&str>) -> Result<Vec<PthTensor>, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
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
    if let Ok(mut order) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        let _ = order.read_to_string(&mut s);
        if s.trim() != "little" {
            return Err(refuse(
                path,
                format!("tensors are stored {s:?}-endian; only little-endian is supported"),
            ));
        }
    }
    let mut pickle = Vec::new();
    zip.by_name(pkl)
        .map_err(|e| refuse(path, e.to_string()))?
        .take(MAX_PICKLE)
        .read_to_end(&mut pickle)
        .map_err(|e| refuse(path, e.to_string()))?;
    // Parsing only; the interpreter has no way to call anything. catch_unwind guards its indexing.
    let parsed = std::panic::catch_unwind(|| {
        let mut stack = Stack::empty();
        stack.read_loop(&mut Cursor::new(&pickle))?;
        stack.finalize()
    });
    let root = match parsed {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => return Err(refuse(path, format!("unreadable pickle: {e}"))),
        Err(_) => return Err(refuse(path, "unreadable pickle")),
    };
    let dict = select(path, root, key)?;
    // Nested dicts, for the hint on a training checkpoint ({"state_dict": {...}, "epoch": 3}).
    let nested: Vec<&str> = dict
        .iter()
        .filter_map(|(k, v)| match (k, v) {
            (Object::Unicode(k), Object::Dict(_)) if k != "_metadata" => Some(k.as_str()),
            _ => None,
        })
        .collect();
    let mut refs = Vec::with_capacity(dict.len());
    for (k, v) in &dict {
        let Object::Unicode(name) = k else {
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
                let hint = match nested.as_slice() {
                    [] => String::new(),
                    keys => format!(
                        "; the tensors may be under --key {}",
                        keys.join(" or --key ")
                    ),
                };
                return Err(refuse(
                    path,
                    format!("entry '{name}' {why}; only plain tensors are converted, nothing was executed{hint}"),
                ));
            }
        }
    }
    let mut out = Vec::with_capacity(refs.len());
    for (name, r) in refs {
        let entry = format!("{prefix}data/{}", r.storage_key);
        let mut storage = Vec::new();
        zip.by_name(&entry)
            .map_err(|e| refuse(path, format!("tensor '{name}': storage {entry}: {e}")))?
            .read_to_end(&mut storage)
            .map_err(|e| refuse(path, format!("tensor '{name}': {e}")))?;
        let data =
            gather(&r, &storage).map_err(|why| refuse(path, format!("tensor '{name}' {why}")))?;
        out.push(PthTensor {
            name,
            dtype: r.dtype,
            shape: r.shape,
            data,
        });
    }
    Ok(out)
}

/// Dicts, strings, numbers and None only: no class reference anywhere.
fn is_plain_data(obj: &Object) -> bool {
    match obj {
        Object::Dict(kv) => kv.iter().all(|(k, v)| is_plain_data(k) && is_plain_data(v)),
        Object::Tuple(v) | Object::List(v) => v.iter().all(is_plain_data),
        Object::Int(_)
        | Object::Long(_)
        | Object::Float(_)
        | Object::Unicode(_)
        | Object::Bool(_)
        | Object::None => true,
        _ => false,
    }
}

/// The dict of tensors: the root, or the dict under `key`.
fn select(
    path: &Path,
    root: Object,
    key: Option<&str>,
) -> Result<Vec<(Object, Object)>, LoadError> {
    let Object::Dict(entries) = root else {
        return Err(refuse(
            path,
            format!(
                "the checkpoint is {}, not a dict of tensors",
                describe(&root)
            ),
        ));
    };
    let Some(key) = key else { return Ok(entries) };
    let keys: Vec<String> = entries
        .iter()
        .filter_map(|(k, _)| match k {
            Object::Unicode(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    match entries
        .into_iter()
        .find(|(k, _)| matches!(k, Object::Unicode(s) if s == key))
    {
        Some((_, Object::Dict(inner))) => Ok(inner),
        Some((_, other)) => Err(refuse(
            path,
            format!(
                "--key {key}: that entry is {}, not a dict",
                describe(&other)
            ),
        )),
        None => Err(refuse(
            path,
            format!("--key {key}: no such entry (keys: {})", keys.join(", ")),
        )),
    }
}

/// Converts `input` (`.pth`) to `output` (`.safetensors`), written atomically: a temporary file next
/// to `output`, renamed over it once complete, so a failure leaves the old file or none. Returns the
/// number of tensors written.
pub fn convert_pth(input: &Path, output: &Path, key: Option<&str>) -> Result<usize, LoadError> {
    let tensors = read_pth(input, key)?;
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
    crate::atomic::write(output, &bytes).map_err(|source| LoadError::Io {
        path: output.to_path_buf(),
        source,
    })?;
    Ok(tensors.len())
}
