//! Reading a weights file: a regular file only, bounded by [`MAX_WEIGHTS_BYTES`] before a byte is
//! read, and refused if it changes while it is read ([`resnet_zoo_resnet::fsread`]).

use std::path::Path;

use resnet_zoo_resnet::fsread::{read_regular, read_regular_pieces, ReadError};

use crate::error::LoadError;

/// Largest weights file (`.safetensors` or `.pth`) read: 4 GiB. The largest ResNet checkpoint
/// (wide_resnet101_2 in f64) is about 1 GB.
pub const MAX_WEIGHTS_BYTES: u64 = 4 << 30;

/// The bytes of the weights file at `path` (see the module doc).
pub(crate) fn read_weights(path: &Path) -> Result<Vec<u8>, LoadError> {
    read_regular(path, MAX_WEIGHTS_BYTES).map_err(|e| load_error(path, e))
}

/// [`read_weights`] in pieces as long as `split` says ([`read_regular_pieces`]).
pub(crate) fn read_weights_pieces(
    path: &Path,
    split: impl FnMut(&[Vec<u8>], u64) -> Option<u64>,
) -> Result<Vec<Vec<u8>>, LoadError> {
    read_regular_pieces(path, MAX_WEIGHTS_BYTES, split).map_err(|e| load_error(path, e))
}

fn load_error(path: &Path, e: ReadError) -> LoadError {
    let path = path.to_path_buf();
    match e {
        ReadError::Io(source) => LoadError::Io { path, source },
        ReadError::NotRegular { kind } => LoadError::NotRegularFile { path, kind },
        ReadError::TooLarge { size, limit } => LoadError::TooLarge { path, size, limit },
        ReadError::Changed { what } => LoadError::ChangedWhileReading { path, what },
    }
}

/// What `bytes` are when they are a PyTorch checkpoint rather than safetensors.
pub(crate) fn pytorch_format(bytes: &[u8]) -> Option<&'static str> {
    /// `torch.save` before 1.6: protocol 2, then the magic number 0x1950a86a20f9469cfc6c as a LONG1.
    const LEGACY: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
    if bytes.starts_with(b"PK\x03\x04") {
        let head = &bytes[..bytes.len().min(4096)];
        Some(if head.windows(8).any(|w| w == b"data.pkl") {
            "a PyTorch .pth checkpoint (torch.save's zip archive holding a pickle)"
        } else {
            "a zip archive, the format of PyTorch .pth checkpoints (torch.save)"
        })
    } else if bytes.starts_with(LEGACY) {
        Some("a legacy PyTorch .pth checkpoint (a pickle written by torch.save before PyTorch 1.6)")
    } else {
        None
    }
}
