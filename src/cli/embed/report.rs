//! `OUT.failures.tsv` and the exit code of `embed` and `embed-merge`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use resnet_zoo::index::{EmbeddingIndex, Failure};

use super::with_suffix;

fn write_report(path: &Path, failed: &[Failure]) -> anyhow::Result<()> {
    let text: String = failed
        .iter()
        .map(|f| format!("{}\t{}\n", f.path, f.error.replace(['\n', '\t'], " ")))
        .collect();
    resnet_zoo::hub::atomic::write(path, text.as_bytes())
        .with_context(|| format!("cannot write report {}", path.display()))
}

/// Reports the failures (to `report`, default `OUT.failures.tsv`) and picks the exit code.
pub(crate) fn finish(
    index: &EmbeddingIndex,
    inputs: usize,
    out: &Path,
    report: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let report = report.map_or_else(|| with_suffix(out, ".failures.tsv"), Path::to_path_buf);
    let report = report.as_path();
    write_report(report, &index.failed)?;
    if index.failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} of {inputs} images could not be embedded (listed in {}); the other {} rows are written",
        index.failed.len(),
        report.display(),
        index.len()
    );
    Ok(ExitCode::from(1))
}
