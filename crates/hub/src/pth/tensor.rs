//! `torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, ...)` calls, as data: where a
//! tensor's elements live, and copying them out with every size and index checked.

use safetensors::Dtype;

use super::pickle::{Obj, Value};
use super::{describe, is_class};

/// Where a tensor's data lives and how to read it.
pub(crate) struct TensorRef {
    pub storage_key: String,
    pub dtype: Dtype,
    pub storage_numel: usize,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
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

fn uint(obj: &Obj) -> Option<usize> {
    match obj.value {
        Value::Int(i) => usize::try_from(i).ok(),
        _ => None,
    }
}

fn uints(obj: &Obj) -> Option<Vec<usize>> {
    match &obj.value {
        Value::Tuple(v) | Value::List(v) => v.iter().map(uint).collect(),
        _ => None,
    }
}

/// A tensor reference, or why the value is not one.
pub(crate) fn tensor_ref(value: &Obj) -> Result<TensorRef, String> {
    let Value::Reduce { callable, args } = &value.value else {
        return Err(format!("is {}, not a tensor", describe(value)));
    };
    if is_class(callable, "torch._utils", "_rebuild_parameter") {
        return match &args.value {
            Value::Tuple(a) if !a.is_empty() => tensor_ref(&a[0]),
            _ => Err("is a malformed nn.Parameter".into()),
        };
    }
    if !is_class(callable, "torch._utils", "_rebuild_tensor_v2") {
        return Err(format!("is {}, not a tensor", describe(value)));
    }
    let bad = || "is a malformed tensor".to_string();
    let Value::Tuple(a) = &args.value else {
        return Err(bad());
    };
    let [storage, offset, shape, stride, ..] = a.as_slice() else {
        return Err(bad());
    };
    let Value::PersistentLoad(storage) = &storage.value else {
        return Err(bad());
    };
    let Value::Tuple(s) = &storage.value else {
        return Err(bad());
    };
    let [kind, class, key, _location, numel] = s.as_slice() else {
        return Err(bad());
    };
    let (Value::Unicode(kind), Value::Unicode(key)) = (&kind.value, &key.value) else {
        return Err(bad());
    };
    if kind != "storage" {
        return Err(bad());
    }
    let dtype = match &class.value {
        Value::Class { module, name } if module == "torch" => storage_dtype(name)
            .ok_or_else(|| format!("has an unsupported storage type torch.{name}"))?,
        _ => return Err(format!("has storage of {}", describe(class))),
    };
    let storage_numel = uint(numel).ok_or_else(bad)?;
    let offset = uint(offset).ok_or_else(bad)?;
    let shape = uints(shape).ok_or_else(bad)?;
    let stride = uints(stride).ok_or_else(bad)?;
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

impl TensorRef {
    /// Bytes of the tensor once contiguous; `None` if the size overflows.
    pub fn bytes(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(self.dtype.bitsize() / 8, |a, &d| a.checked_mul(d))
    }

    /// Whether the view is row-major contiguous (a slice of its storage).
    fn contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected = expected.saturating_mul(d);
        }
        true
    }
}

/// Copies the elements of `r` out of its storage bytes in row-major order, checking every index.
/// The caller has checked [`TensorRef::bytes`] against what the archive holds.
pub(crate) fn gather(r: &TensorRef, storage: &[u8]) -> Result<Vec<u8>, String> {
    let size = r.dtype.bitsize() / 8;
    let overflow = || "has an overflowing shape".to_string();
    let numel = r
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(overflow)?;
    let out_bytes = numel.checked_mul(size).ok_or_else(overflow)?;
    let declared = r.storage_numel.checked_mul(size);
    if declared.is_none_or(|d| storage.len() < d) {
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
    let outside = || format!("views outside its storage {}", r.storage_key);
    match last {
        Some(last) if last < r.storage_numel => {}
        _ => return Err(outside()),
    }
    let element = |e: usize| storage.get(e * size..(e + 1) * size).ok_or_else(outside);
    if r.contiguous() {
        let start = r.offset * size;
        return Ok(storage
            .get(start..start + out_bytes)
            .ok_or_else(outside)?
            .to_vec());
    }
    let mut out = Vec::new();
    out.try_reserve_exact(out_bytes)
        .map_err(|_| format!("needs {out_bytes} bytes, more than can be allocated"))?;
    let mut idx = vec![0usize; r.shape.len()];
    for _ in 0..numel {
        // In bounds: every index is at most `last`, checked above.
        let e = r.offset + idx.iter().zip(&r.stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(element(e)?);
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
