//! Reading a user-given file in bounded time and memory, and noticing when it changes meanwhile.
//!
//! [`read_regular`] refuses anything but a regular file *before* reading (a FIFO, `/dev/zero`, a
//! socket or a directory would block or never end), refuses a file over the caller's limit from its
//! size alone, reads at most the size it stat'ed, and compares the file's identity and modification
//! stamps before and after. A file modified within the last [`RECENT`] is read a second time and
//! compared byte for byte, because file timestamps are only as fine as the kernel's clock tick.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Files modified this recently are read twice (see the module doc).
pub const RECENT: Duration = Duration::from_secs(2);

/// Why [`read_regular`] gave no bytes.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening, stat'ing or reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Not a regular file: `kind` says what it is ("a FIFO", "a character device", ...). A
    /// directory is an [`ReadError::Io`] of kind `IsADirectory`.
    #[error("{kind}, not a regular file")]
    NotRegular { kind: &'static str },
    /// The file is larger than the caller's limit.
    #[error("{size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    /// Size, modification time, change time or content differed between the checks.
    #[error("it changed while it was being read ({what})")]
    Changed { what: &'static str },
}

/// What a file is, in words (`a FIFO (named pipe)`, `a directory`, ...), for
/// [`ReadError::NotRegular`] and other messages about a path that is not the file expected.
pub fn file_kind(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// The stamps compared before and after reading.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    ids: (u64, u64, i64, i64),
}

fn stamp(meta: &Metadata) -> Stamp {
    Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        ids: {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
        },
    }
}

/// Opens without blocking: a path swapped for a FIFO between the check and the open must not hang.
fn open(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(all(
        target_os = "linux",
        any(
            target_arch = "x86_64",
            target_arch = "x86",
            target_arch = "aarch64",
            target_arch = "arm",
            target_arch = "riscv64"
        )
    ))]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(0o4000); // O_NONBLOCK: no effect on a regular file's reads
    }
    options.open(path)
}

/// Allocates `len` bytes of capacity, or says it cannot.
fn buffer(len: u64) -> Result<Vec<u8>, ReadError> {
    let cap = usize::try_from(len).map_err(|_| ReadError::TooLarge {
        size: len,
        limit: usize::MAX as u64,
    })?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(cap).map_err(|_| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("cannot allocate {len} bytes"),
        )
    })?;
    Ok(bytes)
}

/// Reads exactly `len` bytes (the file's stat'ed size) in pieces whose lengths `split` gives
/// ([`read_regular_pieces`]), and checks nothing follows.
fn read_pieces(
    file: &mut File,
    len: u64,
    mut split: impl FnMut(&[Vec<u8>], u64) -> Option<u64>,
) -> Result<Vec<Vec<u8>>, ReadError> {
    let size_changed = ReadError::Changed {
        what: "its size changed",
    };
    let mut pieces = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = split(&pieces, left).map_or(left, |n| n.min(left));
        let mut piece = buffer(n)?;
        (&mut *file).take(n).read_to_end(&mut piece)?;
        if piece.len() as u64 != n {
            return Err(size_changed);
        }
        left -= n;
        pieces.push(piece);
    }
    if file.read(&mut [0u8; 1])? != 0 {
        return Err(size_changed);
    }
    Ok(pieces)
}

/// Reads the regular file at `path` if it holds at most `limit` bytes (see the module doc).
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut pieces = read_regular_pieces(path, limit, |_, _| None)?;
    Ok(pieces.pop().unwrap_or_default())
}

/// [`read_regular`] into consecutive pieces, so that a caller can free each once it is used: each
/// piece is as long as `split` says, given the pieces read so far and the bytes left after them
/// (`None`, or more than is left: the rest of the file). The pieces together are the file, with
/// every check of [`read_regular`]; an empty file gives no piece. `split` may ask for empty pieces
/// (an empty tensor), so it must end (the hub's safetensors split asks once per tensor).
pub fn read_regular_pieces(
    path: &Path,
    limit: u64,
    split: impl FnMut(&[Vec<u8>], u64) -> Option<u64>,
) -> Result<Vec<Vec<u8>>, ReadError> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        // What reading a directory has always said: an I/O error, not a refusal.
        return Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory").into());
    }
    if !meta.is_file() {
        return Err(ReadError::NotRegular {
            kind: file_kind(&meta),
        });
    }
    let mut file = open(path)?;
    let before = file.metadata()?;
    if !before.is_file() {
        return Err(ReadError::NotRegular {
            kind: file_kind(&before),
        });
    }
    if before.len() > limit {
        return Err(ReadError::TooLarge {
            size: before.len(),
            limit,
        });
    }
    let started = SystemTime::now();
    let pieces = read_pieces(&mut file, before.len(), split)?;
    let after = file.metadata()?;
    if stamp(&before) != stamp(&after) {
        return Err(ReadError::Changed {
            what: "its size or modification time changed",
        });
    }
    let aged = matches!(
        before.modified().map(|m| started.duration_since(m)),
        Ok(Ok(age)) if age >= RECENT
    );
    if !aged {
        verify_unchanged(&mut file, &pieces, &after)?;
    }
    Ok(pieces)
}

/// Reads the open file once more from its start and compares it with `pieces`, one after the
/// other, then checks its stamps again.
fn verify_unchanged(file: &mut File, pieces: &[Vec<u8>], meta: &Metadata) -> Result<(), ReadError> {
    use std::io::{Seek, SeekFrom};
    let changed = ReadError::Changed {
        what: "two reads gave different bytes",
    };
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 16];
    for piece in pieces {
        for expected in piece.chunks(buf.len()) {
            let got = &mut buf[..expected.len()];
            match file.read_exact(got) {
                Ok(()) if got == expected => {}
                Err(e) if e.kind() != io::ErrorKind::UnexpectedEof => return Err(e.into()),
                _ => return Err(changed),
            }
        }
    }
    if file.read(&mut buf)? != 0 || stamp(&file.metadata()?) != stamp(meta) {
        return Err(changed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    #[test]
    fn pieces_follow_the_split_and_make_up_the_file() {
        let path = std::env::temp_dir().join(format!("resnet-zoo-fsread-{}", std::process::id()));
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let mut asked = Vec::new();
        let pieces = read_regular_pieces(&path, 1000, |pieces, left| {
            asked.push((pieces.len(), left));
            // 10, 0, 500, then more than is left: the rest (490).
            [Some(10), Some(0), Some(500), Some(5000)]
                .get(pieces.len())
                .copied()
                .flatten()
        })
        .unwrap();
        let lens: Vec<usize> = pieces.iter().map(Vec::len).collect();
        assert_eq!(lens, [10, 0, 500, 490]);
        assert_eq!(asked, [(0, 1000), (1, 990), (2, 990), (3, 490)]);
        assert_eq!(pieces.concat(), bytes);
        assert_eq!(read_regular(&path, 1000).unwrap(), bytes);
        let err = read_regular_pieces(&path, 999, |_, _| None).unwrap_err();
        assert!(
            matches!(
                err,
                ReadError::TooLarge {
                    size: 1000,
                    limit: 999
                }
            ),
            "{err}"
        );
        std::fs::write(&path, b"").unwrap();
        assert!(read_regular_pieces(&path, 10, |_, _| Some(1))
            .unwrap()
            .is_empty());
        std::fs::remove_file(path).unwrap();
    }
}
