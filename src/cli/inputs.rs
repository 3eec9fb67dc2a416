//! Inputs of `embed` and `classify`: files as given, folders walked in sorted order, and the
//! hash of the list (`embed`'s run identity).
//!
//! Paths stay [`PathBuf`]s from the command line to the index file: a file name that is not UTF-8
//! is opened, hashed and stored by its bytes. A folder is walked depth first in sorted path order.
//! Symbolic links are followed (to files and to folders), but every real folder (device and inode)
//! is walked at most once per input, the first time it is reached in that order: a link to an
//! ancestor or two links to each other end the walk instead of looping. Where there are no inodes
//! (not Unix), links to folders are not followed at all.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use resnet_zoo::index::path_bytes;
use sha2::{Digest, Sha256};

use crate::cli::Usage;

/// File extensions picked up inside folders (files named on the command line are always taken).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The sorted entries of `dir`.
fn list(dir: &Path) -> anyhow::Result<std::vec::IntoIter<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort();
    Ok(entries.into_iter())
}

/// What identifies a real folder: device and inode.
#[cfg(unix)]
fn folder_id(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn folder_id(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// Appends the images under `root` in depth-first sorted order (see the module doc for links).
fn walk(root: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    if let Some(id) = std::fs::metadata(root).ok().as_ref().and_then(folder_id) {
        seen.insert(id);
    }
    let mut stack = vec![list(root)?];
    while let Some(entries) = stack.last_mut() {
        let Some(path) = entries.next() else {
            stack.pop();
            continue;
        };
        let Ok(own) = std::fs::symlink_metadata(&path) else {
            continue; // removed while we walk
        };
        let target = if own.file_type().is_symlink() {
            std::fs::metadata(&path).ok() // None: a dangling link
        } else {
            Some(own.clone())
        };
        match target {
            Some(meta) if meta.is_dir() => {
                let walk_it = match folder_id(&meta) {
                    Some(id) => seen.insert(id),
                    None => !own.file_type().is_symlink(),
                };
                if walk_it {
                    stack.push(list(&path)?);
                }
            }
            // Regular files, but also FIFOs, devices or dangling links named like images: they
            // are listed, and fail by name when they are decoded (they are never opened).
            _ if is_image(&path) => out.push(path),
            _ => {}
        }
    }
    Ok(())
}

/// Appends one input: a folder's images (walked as the module doc says), anything else as itself
/// (a missing file too: it fails by name when it is read).
pub fn expand(input: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if input.is_dir() {
        walk(input, out)
    } else {
        out.push(input.to_path_buf());
        Ok(())
    }
}

/// The inputs in order: files as given, folders expanded recursively in sorted path order. A
/// path that does not exist is a usage error.
pub fn collect_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() || input.exists() {
            expand(input, &mut files)?;
        } else {
            return Err(Usage(format!(
                "input {} does not exist (give image files or folders)",
                input.display()
            ))
            .into());
        }
    }
    #[cfg(not(unix))]
    if let Some(bad) = files.iter().find(|p| p.to_str().is_none()) {
        return Err(Usage(format!(
            "file name {} is not valid Unicode; rename it (only Unix file names are stored as bytes)",
            bad.display()
        ))
        .into());
    }
    Ok(files)
}

/// SHA-256 of the paths, each as its byte length (u64, little-endian) and then its bytes: no two
/// lists hash alike (joining with newlines would let a name containing a newline stand for two).
pub(crate) fn inputs_sha256(paths: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    for p in paths {
        let bytes = path_bytes(p);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    hex(&h.finalize())
}

/// Lowercase hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_newlines_do_not_collide() {
        let a: Vec<PathBuf> = ["d/x.jpg", "d/y.jpg", "e.jpg\ne/z.jpg"]
            .map(PathBuf::from)
            .into();
        let b: Vec<PathBuf> = ["d/x.jpg\nd/y.jpg", "e.jpg", "e/z.jpg"]
            .map(PathBuf::from)
            .into();
        assert_ne!(inputs_sha256(&a), inputs_sha256(&b));
        assert_eq!(inputs_sha256(&a), inputs_sha256(&a.clone()));
    }
}
