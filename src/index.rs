//! Embedding index files: what `resnet-zoo embed` writes and `similar` and `embed-merge` read.
//!
//! One safetensors file: the tensor `embeddings`, `[N, D]` f32, one row per embedded image, and in
//! the metadata the image paths in row order (`paths`, a JSON array), the inputs that could not be
//! embedded (`failed`, a JSON array of `[path, error]`; they have no row), and how the rows were made
//! (`model`, `arch`, `weights`, `preprocess`, `normalized`, `inputs`, `inputs_sha256`,
//! `chunk_size`, and `shard` for one machine's slice). The bytes are a function of the content
//! alone (metadata keys sorted), so two runs that compute the same rows write the same file.
//!
//! Paths are kept as [`PathBuf`] and stored losslessly: a path that is valid UTF-8 is a JSON string,
//! any other (Unix file names are bytes) is `{"bytes": "HEX"}`, its raw bytes in hexadecimal.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

mod paths;

pub use paths::{file_kind, path_bytes};
use paths::{path_from_json, path_to_json};

/// `format` metadata value of every index file.
pub const FORMAT: &str = "resnet-zoo-embeddings/1";

/// Largest safetensors header read (safetensors' own limit): the paths of about a million images.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// An input that could not be embedded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub path: PathBuf,
    pub error: String,
}

/// The content of an index file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbeddingIndex {
    /// Length of each row.
    pub dim: usize,
    /// Row-major `[paths.len(), dim]`.
    pub embeddings: Vec<f32>,
    /// The image of each row.
    pub paths: Vec<PathBuf>,
    /// Inputs without a row.
    pub failed: Vec<Failure>,
    /// Every other metadata entry (`model`, `normalized`, `inputs_sha256`, ...).
    pub meta: BTreeMap<String, String>,
}

/// Why an index file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an embeddings file written by resnet-zoo embed: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path} is {kind}, not an embeddings file; give the .safetensors file `resnet-zoo embed --out` wrote")]
    NotRegular { path: PathBuf, kind: &'static str },
}

impl EmbeddingIndex {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Appends `other`'s rows, paths and failures (the next chunk or shard, in order).
    pub fn append(&mut self, other: EmbeddingIndex) {
        self.embeddings.extend(other.embeddings);
        self.paths.extend(other.paths);
        self.failed.extend(other.failed);
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.embeddings[i * self.dim..(i + 1) * self.dim]
    }

    /// The safetensors bytes: header with sorted keys, then the f32 data (little-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut meta: BTreeMap<String, String> = self.meta.clone();
        meta.insert("format".into(), FORMAT.into());
        let paths: Vec<serde_json::Value> = self.paths.iter().map(|p| path_to_json(p)).collect();
        meta.insert(
            "paths".into(),
            serde_json::to_string(&paths).unwrap_or_default(),
        );
        let failed: Vec<(serde_json::Value, &str)> = self
            .failed
            .iter()
            .map(|f| (path_to_json(&f.path), f.error.as_str()))
            .collect();
        meta.insert(
            "failed".into(),
            serde_json::to_string(&failed).unwrap_or_default(),
        );
        let bytes = self.embeddings.len() * 4;
        let header = serde_json::json!({
            "__metadata__": meta,
            "embeddings": {
                "dtype": "F32",
                "shape": [self.paths.len(), self.dim],
                "data_offsets": [0, bytes],
            },
        });
        // serde_json's map is a BTreeMap (no `preserve_order`): keys come out sorted.
        let mut text = header.to_string().into_bytes();
        text.resize(text.len().next_multiple_of(8), b' ');
        let mut out = Vec::with_capacity(8 + text.len() + bytes);
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        out.extend_from_slice(&text);
        for v in &self.embeddings {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses index bytes; `path` names the file in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, IndexError> {
        let invalid = |reason: String| IndexError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let (_, metadata) =
            SafeTensors::read_metadata(bytes).map_err(|e| invalid(e.to_string()))?;
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string()))?;
        let mut meta: BTreeMap<String, String> = metadata
            .metadata()
            .clone()
            .unwrap_or_else(HashMap::new)
            .into_iter()
            .collect();
        if meta.remove("format").as_deref() != Some(FORMAT) {
            return Err(invalid(format!("no `format: {FORMAT}` metadata")));
        }
        let json = |meta: &mut BTreeMap<String, String>, key: &str| {
            meta.remove(key)
                .ok_or_else(|| invalid(format!("no `{key}` metadata")))
        };
        let paths: Vec<serde_json::Value> = serde_json::from_str(&json(&mut meta, "paths")?)
            .map_err(|e| invalid(format!("`paths`: {e}")))?;
        let paths = paths
            .iter()
            .map(path_from_json)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("`paths`: {e}")))?;
        let failed: Vec<(serde_json::Value, String)> =
            serde_json::from_str(&json(&mut meta, "failed")?)
                .map_err(|e| invalid(format!("`failed`: {e}")))?;
        let failed = failed
            .into_iter()
            .map(|(path, error)| {
                Ok(Failure {
                    path: path_from_json(&path)?,
                    error,
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| invalid(format!("`failed`: {e}")))?;
        let view = tensors
            .tensor("embeddings")
            .map_err(|_| invalid("no `embeddings` tensor".into()))?;
        let (rows, dim) = match (view.dtype(), view.shape()) {
            (safetensors::Dtype::F32, &[rows, dim]) => (rows, dim),
            (dtype, shape) => {
                return Err(invalid(format!(
                    "`embeddings` is {dtype:?} {shape:?}, expected F32 [N, D]"
                )))
            }
        };
        if rows != paths.len() {
            return Err(invalid(format!("{rows} rows but {} paths", paths.len())));
        }
        let embeddings = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Self {
            dim,
            embeddings,
            paths,
            failed,
            meta,
        })
    }

    /// Reads an index file: a regular file only (a FIFO or a device is refused unread), whose
    /// size is the one its header declares (checked before the data is read).
    pub fn read(path: &Path) -> Result<Self, IndexError> {
        let io = |source| IndexError::Read {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |reason: String| IndexError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let stat = std::fs::metadata(path).map_err(io)?;
        if !stat.is_file() {
            return Err(IndexError::NotRegular {
                path: path.to_path_buf(),
                kind: file_kind(&stat),
            });
        }
        let mut file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut head = [0u8; 8];
        file.read_exact(&mut head)
            .map_err(|_| invalid(format!("{size} bytes, too short for a safetensors header")))?;
        let header_len = u64::from_le_bytes(head);
        if header_len > MAX_HEADER_BYTES || 8 + header_len > size {
            return Err(invalid(format!(
                "its header claims {header_len} bytes, but the file has {size}"
            )));
        }
        let mut bytes = head.to_vec();
        (&mut file)
            .take(header_len)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..])
            .map_err(|e| invalid(format!("the header is not JSON: {e}")))?;
        let data = header
            .pointer("/embeddings/data_offsets/1")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| invalid("no `embeddings` tensor".into()))?;
        if 8u64.saturating_add(header_len).saturating_add(data) != size {
            return Err(invalid(format!(
                "its header declares {data} bytes of embeddings after a {header_len}-byte header, \
                 but the file has {size} bytes"
            )));
        }
        (&mut file).take(data).read_to_end(&mut bytes).map_err(io)?;
        Self::from_bytes(&bytes, path)
    }

    /// Writes the file atomically: a crash leaves the previous file or none, never half of one.
    pub fn write(&self, path: &Path) -> Result<(), IndexError> {
        crate::fswrite::write_atomic(path, &self.to_bytes()).map_err(|source| IndexError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Whether every input of `expected`, in order, is either the next row or the next failure:
    /// the rows and failures of a chunk are exactly its inputs, none missing, added or moved.
    pub fn covers_exactly(&self, expected: &[PathBuf]) -> bool {
        let (mut rows, mut failed) = (self.paths.iter().peekable(), self.failed.iter().peekable());
        for want in expected {
            if rows.peek() == Some(&want) {
                rows.next();
            } else if failed.peek().map(|f| &f.path) == Some(want) {
                failed.next();
            } else {
                return false;
            }
        }
        rows.next().is_none() && failed.next().is_none()
    }

    /// The `k` rows most similar to `query` by cosine similarity, best first, as `(row, score)`.
    pub fn nearest(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let norm = |v: &[f32]| {
            v.iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE)
        };
        let qn = norm(query);
        let mut scored: Vec<(usize, f32)> = (0..self.len())
            .map(|i| {
                let row = self.row(i);
                let dot: f32 = row.iter().zip(query).map(|(a, b)| a * b).sum();
                (i, dot / (norm(row) * qn))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(k);
        scored
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_is_exact_and_deterministic() {
        let index = EmbeddingIndex {
            dim: 2,
            embeddings: vec![1.0, 0.0, 0.6, 0.8, -1.0, 0.0],
            paths: vec!["a.jpg".into(), "dir/b \"q\".png".into(), "c.jpg".into()],
            failed: vec![Failure {
                path: "bad.jpg".into(),
                error: "truncated".into(),
            }],
            meta: [("model".to_string(), "resnet18".to_string())].into(),
        };
        let bytes = index.to_bytes();
        assert_eq!(bytes, index.clone().to_bytes());
        let back = EmbeddingIndex::from_bytes(&bytes, Path::new("x")).unwrap();
        assert_eq!(back, index);
        // candle reads it as an ordinary safetensors file.
        let t = candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu).unwrap();
        assert_eq!(t["embeddings"].dims(), &[3, 2]);
        let near = index.nearest(&[1.0, 0.1], 2);
        assert_eq!(near.iter().map(|n| n.0).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn other_files_are_refused_by_name() {
        let err = EmbeddingIndex::from_bytes(b"not safetensors", Path::new("emb.bin")).unwrap_err();
        assert!(err.to_string().contains("emb.bin"), "{err}");
    }
}
