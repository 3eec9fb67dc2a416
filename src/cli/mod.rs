//! Subcommands of the `resnet-zoo` binary.

pub mod bench;
pub mod classify;
pub mod convert;
pub mod embed;
pub mod info;
pub mod list;
pub mod model;
pub mod recipe;

/// A usage error (bad flag value, unknown name): exit code 2, like clap's own.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// An error and its causes on one line, `outer: cause: cause`, skipping a cause whose text the
/// previous message already contains (some libraries print their source in their own message).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        source = cause.source();
    }
    out
}
