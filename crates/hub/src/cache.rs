//! The Hugging Face cache layout, shared with Python's `huggingface_hub`:
//!
//! ```text
//! {cache}/models--{owner}--{name}/blobs/{sha256}                 the verified file
//!                                /snapshots/{commit}/{file}     relative symlink to the blob
//!                                /refs/{revision}               the commit a branch pointed to
//! {cache}/.locks/models--{owner}--{name}/{sha256}.lock           one downloader at a time
//! ```
//!
//! Files downloaded by Python tools are found here and the other way round. Every path piece that
//! comes from a user or a server is validated before it becomes a path.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::HubError;

/// The cache root from the environment, as `huggingface_hub` resolves it: `HF_HUB_CACHE`, else
/// `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn default_cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
        .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A 40-hex git commit id.
pub fn is_commit(s: &str) -> bool {
    is_hex(s, 40)
}

/// A 64-hex sha256.
pub fn is_sha256(s: &str) -> bool {
    is_hex(s, 64)
}

fn invalid(what: &'static str, value: &str, reason: &'static str) -> HubError {
    HubError::InvalidName {
        what,
        value: value.to_string(),
        reason,
    }
}

fn check_segment(what: &'static str, whole: &str, seg: &str) -> Result<(), HubError> {
    if seg.is_empty() || seg == "." || seg == ".." {
        return Err(invalid(what, whole, "empty, '.' or '..' path segment"));
    }
    if seg.contains(['\\', '\0']) || seg.contains(':') {
        return Err(invalid(what, whole, "contains '\\', ':' or NUL"));
    }
    Ok(())
}

/// `owner/name` with the characters the Hub allows.
pub fn check_repo(repo: &str) -> Result<(), HubError> {
    let ok_chars = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match repo.split_once('/') {
        Some((owner, name))
            if !owner.is_empty()
                && !name.is_empty()
                && ok_chars(owner)
                && ok_chars(name)
                && !name.starts_with('.')
                && !owner.starts_with('.') =>
        {
            Ok(())
        }
        _ => Err(invalid(
            "repository id",
            repo,
            "expected owner/name of letters, digits, '-', '_', '.'",
        )),
    }
}

/// A relative file path inside a repository (`model.safetensors`, `sub/dir/file`).
pub fn check_file(file: &str) -> Result<(), HubError> {
    if file.starts_with('/') {
        return Err(invalid("file name", file, "absolute path"));
    }
    file.split('/')
        .try_for_each(|s| check_segment("file name", file, s))
}

/// A branch or tag name (may contain '/': `refs/pr/1`) or a commit.
pub fn check_revision(rev: &str) -> Result<(), HubError> {
    rev.split('/')
        .try_for_each(|s| check_segment("revision", rev, s))
}

/// A cache rooted at `root`.
#[derive(Debug, Clone)]
pub struct HubCache {
    root: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Cache {
        path: path.to_path_buf(),
        source,
    }
}

impl HubCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `models--owner--name` (the repo id must be checked already).
    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    pub(crate) fn blob_path(&self, repo: &str, sha256: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(sha256)
    }

    pub(crate) fn snapshot_path(&self, repo: &str, commit: &str, file: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("snapshots")
            .join(commit)
            .join(file)
    }

    pub(crate) fn lock_path(&self, repo: &str, sha256: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(format!("models--{}", repo.replace('/', "--")))
            .join(format!("{sha256}.lock"))
    }

    /// The commit `revision` points to: itself if it is a commit, else the content of `refs/{revision}`
    /// when that is a valid commit id.
    pub fn resolve_ref(&self, repo: &str, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        let text = fs::read_to_string(self.repo_dir(repo).join("refs").join(revision)).ok()?;
        let commit = text.trim();
        is_commit(commit).then(|| commit.to_string())
    }

    /// The cached file for `repo@revision/file`, if present (a dangling symlink is not present).
    pub fn get(&self, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
        let commit = self.resolve_ref(repo, revision)?;
        let path = self.snapshot_path(repo, &commit, file);
        path.is_file().then_some(path)
    }

    /// Points `refs/{revision}` at `commit`, unless it already does. Writes a temporary file and
    /// renames it, so a reader never sees half a ref.
    pub(crate) fn set_ref(&self, repo: &str, revision: &str, commit: &str) -> Result<(), HubError> {
        if is_commit(revision) || self.resolve_ref(repo, revision).as_deref() == Some(commit) {
            return Ok(());
        }
        let path = self.repo_dir(repo).join("refs").join(revision);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        resnet_zoo_resnet::fswrite::write_atomic(&path, commit.as_bytes()).map_err(io_err(&path))
    }

    /// Moves a verified download into `blobs/{sha256}` and links `snapshots/{commit}/{file}` to it.
    pub(crate) fn commit_blob(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
        sha256: &str,
        verified_tmp: &Path,
    ) -> Result<PathBuf, HubError> {
        let blob = self.blob_path(repo, sha256);
        fs::rename(verified_tmp, &blob).map_err(io_err(&blob))?;
        self.link_snapshot(repo, commit, file, sha256)
    }

    /// Creates (or repairs) the snapshot symlink to an existing blob.
    pub(crate) fn link_snapshot(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
        sha256: &str,
    ) -> Result<PathBuf, HubError> {
        let snap = self.snapshot_path(repo, commit, file);
        if snap.is_file() {
            return Ok(snap);
        }
        let dir = snap.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        // snapshots/{commit}/{a/b/file} -> ../../(../..)blobs/{sha}
        let depth = file.split('/').count() + 1;
        let target = PathBuf::from("../".repeat(depth))
            .join("blobs")
            .join(sha256);
        let _ = fs::remove_file(&snap); // a dangling link from an interrupted run
        link(&target, &snap).map_err(io_err(&snap))?;
        Ok(snap)
    }

    /// A fresh temporary path for downloading `sha256`; never the name of a finished file.
    pub(crate) fn temp_path(&self, repo: &str, sha256: &str) -> Result<PathBuf, HubError> {
        let dir = self.repo_dir(repo).join("blobs");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(dir.join(format!(
            "{sha256}.{}.incomplete",
            resnet_zoo_resnet::fswrite::unique_suffix()
        )))
    }

    /// Removes `{sha256}.*.incomplete` files left by killed downloads. Called with the file's lock
    /// held, so no live download owns them.
    pub(crate) fn remove_stale_temps(&self, repo: &str, sha256: &str) {
        let dir = self.repo_dir(repo).join("blobs");
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!("{sha256}.")) && name.ends_with(".incomplete") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(unix)]
fn link(target: &Path, at: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

/// Windows needs a privilege for symlinks; a copy of the blob is what `huggingface_hub` falls back to.
#[cfg(not(unix))]
fn link(target: &Path, at: &Path) -> std::io::Result<()> {
    let blob = at
        .parent()
        .map(|p| p.join(target))
        .unwrap_or_else(|| target.to_path_buf());
    fs::copy(blob, at).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(check_repo("timm/resnet50.tv_in1k").is_ok());
        for bad in ["timm", "/x", "a/b/c", "../x", "a/..", "a/b c", ".a/b"] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
        assert!(
            check_file("model.safetensors").is_ok() && check_file("sub/model.safetensors").is_ok()
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a\\b",
            "c:x",
        ] {
            assert!(check_file(bad).is_err(), "{bad}");
        }
        assert!(check_revision("refs/pr/1").is_ok() && check_revision("../main").is_err());
        assert!(is_commit(&"a".repeat(40)) && !is_commit(&"A".repeat(40)) && !is_commit("../../x"));
        assert!(is_sha256(&"0".repeat(64)) && !is_sha256("../../../../tmp/pwned"));
    }
}
