//! `OUT.partial/`: the finished chunks of an unfinished `embed` run, and the marker that proves
//! resnet-zoo made the folder.
//!
//! `run.json` names the run (the SHA-256 of its metadata: inputs, model, options) and is written
//! before anything else, into a fresh folder that is then renamed into place. A folder without it,
//! or with another run's, is refused untouched. Each `chunk-K.safetensors` carries its run, its
//! index `K` and its number of inputs, and on every read must also have the model's width and
//! exactly the inputs of chunk `K`, in order; any mismatch is refused by name and nothing is
//! deleted. When the run is complete, only the files named here are removed, then the folder if
//! nothing else is in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use resnet_zoo::index::{file_kind, EmbeddingIndex};

use crate::cli::Usage;

/// The marker file.
const MARKER: &str = "run.json";
/// Its `format`.
const MARKER_FORMAT: &str = "resnet-zoo-embed-partial/1";
/// Largest marker read.
const MAX_MARKER_BYTES: u64 = 1 << 20;

pub(crate) struct Partial {
    dir: PathBuf,
    run: String,
}

/// The `run` a marker names, or why the file is no marker.
fn marker_run(path: &Path) -> Result<String, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("no {MARKER} ({e})"))?;
    if !meta.is_file() || meta.len() > MAX_MARKER_BYTES {
        return Err(format!("{MARKER} is not a marker file"));
    }
    let text = std::fs::read(path).map_err(|e| format!("{MARKER}: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|_| format!("{MARKER} is not JSON"))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(MARKER_FORMAT) {
        return Err(format!("{MARKER} has no `format: {MARKER_FORMAT}`"));
    }
    value
        .get("run")
        .and_then(|r| r.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{MARKER} names no run"))
}

impl Partial {
    /// Resumes `dir` if its marker names `run`, creates it (with the marker) if it does not exist,
    /// and refuses anything else without touching it.
    pub(crate) fn open(
        dir: PathBuf,
        run: String,
        meta: &BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => match marker_run(&dir.join(MARKER)) {
                Ok(found) if found == run => Ok(Self { dir, run }),
                Ok(found) => Err(Usage(format!(
                    "{} holds an unfinished run with other inputs or options (run {found:.12}, this \
                     one is {run:.12}); nothing in it was used or deleted: delete it to start over, \
                     or choose another --out",
                    dir.display()
                ))
                .into()),
                Err(why) => Err(Usage(format!(
                    "{} exists but was not made by resnet-zoo embed ({why}); nothing in it was used \
                     or deleted: move it away, or choose another --out",
                    dir.display()
                ))
                .into()),
            },
            Ok(m) => Err(Usage(format!(
                "{} exists and is {}, not a folder resnet-zoo embed made; move it away, or choose \
                 another --out",
                dir.display(),
                if m.file_type().is_symlink() { "a symbolic link" } else { file_kind(&m) }
            ))
            .into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(dir, run, meta),
            Err(e) => Err(e).with_context(|| format!("cannot inspect {}", dir.display())),
        }
    }

    /// A fresh folder holding the marker, renamed into place: `dir` never exists without it.
    fn create(dir: PathBuf, run: String, meta: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".new-{}", std::process::id()));
        let fresh = parent.join(name);
        std::fs::create_dir(&fresh)
            .with_context(|| format!("cannot create {}", fresh.display()))?;
        let marker = serde_json::json!({ "format": MARKER_FORMAT, "run": run, "meta": meta });
        let written = std::fs::write(fresh.join(MARKER), serde_json::to_string_pretty(&marker)?)
            .and_then(|()| std::fs::rename(&fresh, &dir));
        if let Err(e) = written {
            let _ = std::fs::remove_file(fresh.join(MARKER));
            let _ = std::fs::remove_dir(&fresh);
            return Err(e).with_context(|| format!("cannot create {}", dir.display()));
        }
        Ok(Self { dir, run })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn chunk_file(&self, k: usize) -> PathBuf {
        self.dir.join(format!("chunk-{k:08}.safetensors"))
    }

    /// Chunk `k` if it is finished, checked against this run, `inputs` and `dim`.
    pub(crate) fn read_chunk(
        &self,
        k: usize,
        inputs: &[PathBuf],
        dim: usize,
    ) -> anyhow::Result<Option<EmbeddingIndex>> {
        let path = self.chunk_file(k);
        if let Err(e) = std::fs::symlink_metadata(&path) {
            if e.kind() == std::io::ErrorKind::NotFound {
                return Ok(None);
            }
        }
        let hint = format!(
            "nothing was deleted: remove {} to compute chunk {k} again, or {} to start over",
            path.display(),
            self.dir.display()
        );
        let chunk = EmbeddingIndex::read(&path)
            .with_context(|| format!("chunk {k} of {} is damaged; {hint}", self.dir.display()))?;
        let field = |key: &str| chunk.meta.get(key).map_or("none", String::as_str);
        let problem = if field("run") != self.run {
            format!(
                "it belongs to run {:.12}, not to this run {:.12}",
                field("run"),
                self.run
            )
        } else if field("chunk") != k.to_string() {
            format!("it says it is chunk {}", field("chunk"))
        } else if field("inputs") != inputs.len().to_string() || !chunk.covers_exactly(inputs) {
            format!(
                "its {} rows and {} failures are not the {} inputs of chunk {k}",
                chunk.len(),
                chunk.failed.len(),
                inputs.len()
            )
        } else if chunk.dim != dim {
            format!("its rows are {} wide, the model's are {dim}", chunk.dim)
        } else {
            return Ok(Some(chunk));
        };
        bail!(
            "{} is not chunk {k} of this run: {problem}; {hint}",
            path.display()
        )
    }

    /// Writes chunk `k` (atomically), stamped with this run, `k` and its number of inputs.
    pub(crate) fn write_chunk(&self, k: usize, mut rows: EmbeddingIndex) -> anyhow::Result<()> {
        rows.meta.insert("run".into(), self.run.clone());
        rows.meta.insert("chunk".into(), k.to_string());
        let inputs = rows.len() + rows.failed.len();
        rows.meta.insert("inputs".into(), inputs.to_string());
        Ok(rows.write(&self.chunk_file(k))?)
    }

    /// Removes the chunk files of `chunks` and the marker, then the folder if that emptied it.
    pub(crate) fn remove(self, chunks: std::ops::Range<usize>) -> anyhow::Result<()> {
        for path in chunks
            .map(|k| self.chunk_file(k))
            .chain([self.dir.join(MARKER)])
        {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()))
                }
                _ => {}
            }
        }
        if std::fs::remove_dir(&self.dir).is_err() {
            eprintln!(
                "note: {} is left in place: it holds files resnet-zoo did not write",
                self.dir.display()
            );
        }
        Ok(())
    }
}
