//! `OUT.failures.tsv` and the exit code of `embed` and `embed-merge`.
//!
//! One line per input that has no row: its path, a tab, the error, a newline. Both fields are
//! escaped so that neither can hold a tab or a newline: `\\` for a backslash, `\t`, `\n`, `\r`,
//! `\xNN` for any other control byte and for every byte of a file name that is not UTF-8. Unescaping
//! gives the exact bytes of the path back (`similar` prints paths the same way).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use resnet_zoo::index::{path_bytes, EmbeddingIndex, Failure};

use super::with_suffix;

/// `bytes` as one line of text, escaped as the module doc says.
pub(crate) fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, 0),
            Err(e) => (
                std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or_default(),
                e.error_len().unwrap_or(rest.len() - e.valid_up_to()),
            ),
        };
        for c in valid.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c < ' ' || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in &rest[valid.len()..valid.len() + bad] {
            out.push_str(&format!("\\x{b:02x}"));
        }
        rest = &rest[valid.len() + bad..];
    }
    out
}

/// A path for one line of output: [`escape`]d bytes.
pub(crate) fn escape_path(path: &Path) -> String {
    escape(&path_bytes(path))
}

fn write_report(path: &Path, failed: &[Failure]) -> anyhow::Result<()> {
    let text: String = failed
        .iter()
        .map(|f| format!("{}\t{}\n", escape_path(&f.path), escape(f.error.as_bytes())))
        .collect();
    resnet_zoo::fswrite::write_atomic(path, text.as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_field_can_hold_a_tab_or_newline() {
        assert_eq!(escape(b"a\tb\nc\rd\\e"), "a\\tb\\nc\\rd\\\\e");
        assert_eq!(
            escape(b"caf\xe9 \x01\x7f \xc3\xa9"),
            "caf\\xe9 \\x01\\x7f \u{e9}"
        );
        assert_eq!(escape(b"cut \xe2\x82"), "cut \\xe2\\x82");
    }
}
