//! Subcommands of the `resnet-zoo` binary.

pub mod bench;
pub mod classify;
pub mod convert;
pub mod device;
pub mod embed;
pub mod flags;
pub mod help;
pub mod info;
pub mod inputs;
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
/// previous message already contains (some libraries print their source in their own message),
/// then a line with the command-line flag for each library option the message names
/// ([`flags::hints`]: `LoadOptions::allow_non_finite` is `--allow-non-finite` here).
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
    let mut out = collapse_repeats(&out);
    for line in flags::hints(e, &out) {
        out.push('\n');
        out.push_str(&line);
    }
    out
}

/// `... for url (U) (U): ...` -> `... for url (U): ...`: HTTP errors name their URL once per layer.
fn collapse_repeats(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('(') {
        let Some(len) = rest[open..].find(')') else {
            break;
        };
        let group = &rest[open..=open + len];
        out.push_str(&rest[..=open + len]);
        rest = &rest[open + len + 1..];
        while let Some(after) = rest.strip_prefix(' ').and_then(|r| r.strip_prefix(group)) {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeated_parentheses_collapse() {
        let text =
            "error sending request for url (https://h/x) (https://h/x): client error (Connect)";
        assert_eq!(
            super::collapse_repeats(text),
            "error sending request for url (https://h/x): client error (Connect)"
        );
        assert_eq!(super::collapse_repeats("a (b) (c) (c"), "a (b) (c) (c");
        assert_eq!(super::collapse_repeats("no parens"), "no parens");
    }
}
