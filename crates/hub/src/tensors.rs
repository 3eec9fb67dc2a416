//! A safetensors file's tensors as the model's builder takes them, and the file read in pieces, one
//! per tensor.
//!
//! A model takes each tensor once and keeps its own copy (packed for the CPU kernels, or on the
//! device), so [`FileTensors`] hands a tensor out and drops its bytes. Read in pieces
//! ([`split_file`]), a file's bytes then go as the model fills: loading ResNet-50 peaks near one copy
//! of its weights (the packed ones) rather than two (the whole file's bytes as well).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use safetensors::tensor::{Metadata, TensorView};
use safetensors::Dtype;

/// The longest header the safetensors crate parses (its own limit, not exported).
const MAX_HEADER: u64 = 100_000_000;

/// One tensor of a parsed file: its name in the file, dtype, shape and bytes.
#[derive(Debug)]
pub(crate) struct FileTensor<'a> {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Cow<'a, [u8]>,
}

impl<'a> FileTensor<'a> {
    /// The tensor `name` of a parsed file, borrowing its bytes.
    pub(crate) fn borrowed(name: &str, view: &TensorView<'a>) -> Self {
        Self {
            name: name.to_string(),
            dtype: view.dtype(),
            shape: view.shape().to_vec(),
            data: Cow::Borrowed(view.data()),
        }
    }
}

/// A tensor as the header lists it: name, dtype, shape and byte length.
type Entry = (String, Dtype, Vec<usize>, u64);

/// A file read in pieces, split into its head (for sniffing) and its tensors.
pub(crate) type Parts = (Vec<u8>, Vec<FileTensor<'static>>);

/// How a safetensors file splits into pieces: the 8-byte header length, the header, then each
/// tensor's bytes in the order of their offsets.
#[derive(Default)]
pub(crate) struct Split {
    /// The tensors in offset order (name, dtype, shape, byte length), once the header is parsed
    /// and valid for the file's length.
    parsed: Option<Vec<Entry>>,
}

impl Split {
    /// The length of the next piece after `pieces`, with `left` bytes after them (`None`: the
    /// rest). Anything that is not a valid safetensors file of this length is read as one last
    /// piece; the whole file's parser then says what is wrong.
    pub(crate) fn next(&mut self, pieces: &[Vec<u8>], left: u64) -> Option<u64> {
        match pieces {
            [] => Some(8),
            [len] => {
                let n = u64::from_le_bytes(len.as_slice().try_into().ok()?);
                (n <= MAX_HEADER && n <= left).then_some(n)
            }
            [_, header] => {
                self.parsed = parse(header, left);
                self.parsed.as_ref()?.first().map(|t| t.3)
            }
            [_, _, data @ ..] => self.parsed.as_ref()?.get(data.len()).map(|t| t.3),
        }
    }

    /// The file's head (the length, the whole header, and data up to 4 KiB from the start, for
    /// sniffing) and its tensors owning their pieces; or the pieces back, for the whole file's
    /// parser, when they are not a valid file's.
    pub(crate) fn tensors(
        self,
        mut pieces: Vec<Vec<u8>>,
    ) -> std::result::Result<Parts, Vec<Vec<u8>>> {
        let Some(parsed) = self.parsed else {
            return Err(pieces);
        };
        // A zero-length tensor at the end has no piece (nothing was left to read).
        let sizes_match = pieces.len() >= 2
            && pieces.len() <= parsed.len() + 2
            && parsed
                .iter()
                .enumerate()
                .all(|(i, t)| pieces.get(i + 2).map_or(0, Vec::len) as u64 == t.3);
        if !sizes_match {
            return Err(pieces);
        }
        let mut head = pieces[..2].concat();
        for piece in &pieces[2..] {
            let room = 4096usize.saturating_sub(head.len());
            if room == 0 {
                break;
            }
            head.extend_from_slice(&piece[..piece.len().min(room)]);
        }
        let mut data = pieces.drain(2..);
        let tensors = parsed
            .into_iter()
            .map(|(name, dtype, shape, _)| FileTensor {
                name,
                dtype,
                shape,
                data: Cow::Owned(data.next().unwrap_or_default()),
            })
            .collect();
        Ok((head, tensors))
    }
}

/// The tensors in offset order, if `header` is a valid safetensors header for `data_len` bytes of
/// data (what `SafeTensors::deserialize` checks of a whole file).
fn parse(header: &[u8], data_len: u64) -> Option<Vec<Entry>> {
    let metadata = serde_json::from_str::<Metadata>(std::str::from_utf8(header).ok()?).ok()?;
    if metadata.data_len() as u64 != data_len {
        return None;
    }
    metadata
        .offset_keys()
        .into_iter()
        .map(|name| {
            let info = metadata.info(&name)?;
            let (start, end) = info.data_offsets;
            Some((name, info.dtype, info.shape.clone(), (end - start) as u64))
        })
        .collect()
}

/// A file's tensors for a `VarBuilder`: each is handed out once (a second request is an error
/// naming it) and its bytes are dropped then.
pub(crate) struct FileTensors<'a> {
    left: Mutex<HashMap<String, FileTensor<'a>>>,
    taken: Mutex<HashSet<String>>,
}

impl<'a> FileTensors<'a> {
    pub(crate) fn new(tensors: Vec<FileTensor<'a>>) -> Self {
        Self {
            left: Mutex::new(tensors.into_iter().map(|t| (t.name.clone(), t)).collect()),
            taken: Mutex::new(HashSet::new()),
        }
    }

    fn take(&self, name: &str, dev: &Device) -> Result<Tensor> {
        let tensor = self
            .left
            .lock()
            .map_err(|_| candle_core::Error::Msg("weights: a loader thread panicked".into()))?
            .remove(name);
        let Some(t) = tensor else {
            let taken = self.taken.lock().is_ok_and(|t| t.contains(name));
            return Err(if taken {
                candle_core::Error::Msg(format!(
                    "weights: tensor {name} was requested twice (a model reads each once)"
                ))
            } else {
                candle_core::Error::CannotFindTensor {
                    path: name.to_string(),
                }
            }
            .bt());
        };
        if let Ok(mut taken) = self.taken.lock() {
            taken.insert(name.to_string());
        }
        let view = TensorView::new(t.dtype, t.shape, &t.data)
            .map_err(|e| candle_core::Error::Msg(format!("weights: tensor {name}: {e}")))?;
        view.load(dev)
    }
}

impl SimpleBackend for FileTensors<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let tensor = self.take(name, dev)?.to_dtype(dtype)?;
        if tensor.shape() != &s {
            Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: tensor.shape().clone(),
            }
            .bt())?
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.take(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.left.lock().is_ok_and(|l| l.contains_key(name))
            || self.taken.lock().is_ok_and(|t| t.contains(name))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};
    use safetensors::SafeTensors;

    use super::*;

    /// A safetensors file of `tensors`, written to a fresh temporary path.
    fn file(tag: &str, tensors: &[(&str, Tensor)]) -> (std::path::PathBuf, Vec<u8>) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        let bytes = safetensors::serialize(map.iter().map(|(k, v)| (k.as_str(), v)), None).unwrap();
        let path = std::env::temp_dir().join(format!(
            "resnet-zoo-pieces-{}-{tag}.safetensors",
            std::process::id()
        ));
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    }

    fn read(path: &std::path::Path) -> (Split, Vec<Vec<u8>>) {
        let mut split = Split::default();
        let pieces = crate::read::read_weights_pieces(path, |p, left| split.next(p, left)).unwrap();
        (split, pieces)
    }

    #[test]
    fn a_file_reads_as_one_piece_per_tensor() {
        let dev = Device::Cpu;
        let tensors = [
            (
                "a",
                Tensor::arange(0f32, 12., &dev)
                    .unwrap()
                    .reshape((3, 4))
                    .unwrap(),
            ),
            ("empty", Tensor::zeros((0, 5), DType::F32, &dev).unwrap()),
            ("b", Tensor::arange(0f64, 3., &dev).unwrap()),
            ("z_empty_last", Tensor::zeros(0, DType::F16, &dev).unwrap()),
        ];
        let (path, bytes) = file("valid", &tensors);
        let (split, pieces) = read(&path);
        assert_eq!(pieces.concat(), bytes, "the pieces are the file");
        let whole = SafeTensors::deserialize(&bytes).unwrap();
        let (head, got) = split.tensors(pieces).unwrap();
        assert_eq!(head, bytes[..bytes.len().min(4096)]);
        assert_eq!(got.len(), 4);
        for t in &got {
            let view = whole.tensor(&t.name).unwrap();
            assert_eq!(
                (t.dtype, &t.shape[..]),
                (view.dtype(), view.shape()),
                "{}",
                t.name
            );
            assert_eq!(&t.data[..], view.data(), "{}", t.name);
        }
        // Each tensor is handed out once, equal to what Candle reads from the whole file.
        let backend = FileTensors::new(got);
        let a = backend.get_unchecked("a", DType::F32, &dev).unwrap();
        let diff = (a - &tensors[0].1)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        assert!(backend.contains_tensor("a"));
        let again = backend.get_unchecked("a", DType::F32, &dev).unwrap_err();
        assert!(
            again.to_string().contains("tensor a was requested twice"),
            "{again}"
        );
        let missing = backend.get_unchecked("c", DType::F32, &dev).unwrap_err();
        assert!(missing.to_string().contains('c'), "{missing}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn an_invalid_file_comes_back_whole() {
        let dev = Device::Cpu;
        let (path, mut bytes) = file(
            "short",
            &[("a", Tensor::ones(4, DType::F32, &dev).unwrap())],
        );
        // Data one byte short of what the header says, a header length past the end, and text.
        bytes.pop();
        let mut past_end = bytes.clone();
        past_end[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        for (i, case) in [bytes, past_end, b"version https://git-lfs".to_vec()]
            .iter()
            .enumerate()
        {
            std::fs::write(&path, case).unwrap();
            let (split, pieces) = read(&path);
            let back = split.tensors(pieces).unwrap_err();
            assert_eq!(back.concat(), *case, "case {i}");
            assert!(back.len() <= 3, "case {i}: {} pieces", back.len());
        }
        std::fs::remove_file(path).unwrap();
    }
}
