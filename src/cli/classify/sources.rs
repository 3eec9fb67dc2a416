//! What `classify` reads, in order: image files, folders (walked by the rules `embed` uses:
//! [`crate::cli::inputs`]), and `-`, standard input, which holds either one image's bytes or a list
//! of paths, one a line (each line taken as a command-line input: a file or a folder).
//!
//! Which one is decided from stdin's first bytes: an image format's signature (JPEG, PNG, GIF,
//! WebP, BMP, TIFF) or a NUL byte (no path holds one) make it an image; anything else is a list.
//! The list is read line by line as the batches need it, so `find ... | resnet-zoo classify -`
//! prints the first results before `find` is done.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};

use resnet_zoo::transforms::{decode_rgb, load_rgb, ImageLimits, Rgb8};

use crate::cli::{error_chain, inputs::expand, Usage};

/// How stdin is named in the output and in errors.
pub const STDIN_NAME: &str = "<stdin>";

/// The argument that reads standard input.
pub fn is_stdin(arg: &Path) -> bool {
    arg.as_os_str() == "-"
}

/// Where an input's bytes come from.
enum Source {
    File(PathBuf),
    /// An image read from stdin.
    Bytes(Vec<u8>),
    /// An input that failed before its bytes were reached (a folder that cannot be listed, ...).
    Failed(String),
}

/// One image to classify.
pub struct Input {
    /// The name in the output: the path as given or walked, or [`STDIN_NAME`].
    pub name: String,
    /// File name without extension, for the `--cam` file (`stdin` for stdin's image).
    pub stem: OsString,
    source: Source,
}

impl Input {
    fn file(path: PathBuf) -> Self {
        Self {
            name: path.display().to_string(),
            stem: path
                .file_stem()
                .map_or_else(|| OsString::from("image"), OsString::from),
            source: Source::File(path),
        }
    }

    fn failed(name: String, message: String) -> Self {
        Self {
            stem: OsString::from(&name),
            name,
            source: Source::Failed(message),
        }
    }

    /// The decoded image, or why it could not be read (naming the input).
    pub fn read(&self, limits: &ImageLimits) -> anyhow::Result<Rgb8> {
        match &self.source {
            Source::File(path) => Ok(load_rgb(path, limits)?),
            Source::Bytes(bytes) => Ok(decode_rgb(bytes, Path::new(STDIN_NAME), limits)?),
            Source::Failed(message) => Err(anyhow::anyhow!("{message}")),
        }
    }
}

/// Refuses, before anything is loaded, what cannot work: `-` twice, or `-` with a terminal
/// for stdin (it would wait for typing).
pub fn check(args: &[PathBuf]) -> anyhow::Result<()> {
    let dashes = args.iter().filter(|a| is_stdin(a)).count();
    if dashes > 1 {
        return Err(Usage(format!(
            "- (standard input) is given {dashes} times; it can be read once: give - once"
        ))
        .into());
    }
    if dashes == 1 && std::io::stdin().is_terminal() {
        return Err(Usage(
            "- reads standard input, but it is a terminal; pipe an image into it \
             (resnet-zoo classify ... - < cat.jpg) or a list of paths, one a line \
             (find photos -name '*.jpg' | resnet-zoo classify ... -)"
                .into(),
        )
        .into());
    }
    Ok(())
}

/// The inputs, in command-line order, produced as they are needed.
pub struct Inputs<'a> {
    args: std::slice::Iter<'a, PathBuf>,
    pending: VecDeque<Input>,
    /// Standard input as a list of paths, while it is being read.
    lines: Option<Box<dyn BufRead>>,
    line_number: usize,
    max_stdin_bytes: u64,
}

impl<'a> Inputs<'a> {
    /// `max_stdin_bytes`: the most an image on stdin may hold (`ImageLimits::max_file_bytes`).
    pub fn new(args: &'a [PathBuf], max_stdin_bytes: u64) -> Self {
        Self {
            args: args.iter(),
            pending: VecDeque::new(),
            lines: None,
            line_number: 0,
            max_stdin_bytes,
        }
    }

    /// A command-line input (or a listed path): a folder's images, or the path itself.
    fn push_path(&mut self, path: &Path) {
        let mut files = Vec::new();
        let walked = expand(path, &mut files);
        self.pending.extend(files.into_iter().map(Input::file));
        if let Err(e) = walked {
            let name = path.display().to_string();
            self.pending
                .push_back(Input::failed(name, error_chain(e.as_ref())));
        }
    }

    fn open_stdin(&mut self) {
        let mut stdin = std::io::stdin();
        match read_prefix(&mut stdin) {
            Err(e) => self.pending.push_back(stdin_failure(&e)),
            Ok(prefix) if sniff(&prefix, true) == Sniff::Image => {
                let limit = self.max_stdin_bytes;
                let mut bytes = prefix;
                let read = (&mut stdin)
                    .take((limit + 1).saturating_sub(bytes.len() as u64))
                    .read_to_end(&mut bytes);
                self.pending.push_back(match read {
                    Err(e) => stdin_failure(&e),
                    Ok(_) if bytes.len() as u64 > limit => Input::failed(
                        STDIN_NAME.into(),
                        format!(
                            "the image on standard input is over the limit of {limit} bytes for \
                             an image file; is this the right input?"
                        ),
                    ),
                    Ok(_) => Input {
                        name: STDIN_NAME.into(),
                        stem: OsString::from("stdin"),
                        source: Source::Bytes(bytes),
                    },
                });
            }
            Ok(prefix) => {
                let reader = std::io::Cursor::new(prefix).chain(stdin);
                self.lines = Some(Box::new(BufReader::new(reader)));
            }
        }
    }

    /// The next path of the stdin list into `pending`; false at its end.
    fn next_line(&mut self) -> bool {
        let Some(reader) = self.lines.as_mut() else {
            return false;
        };
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                self.lines = None;
                return false;
            }
            Ok(_) => {}
            Err(e) => {
                self.lines = None;
                self.pending.push_back(stdin_failure(&e));
                return true;
            }
        }
        self.line_number += 1;
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if line.is_empty() {
            return true;
        }
        match path_from_bytes(line) {
            Ok(path) => self.push_path(&path),
            Err(shown) => self.pending.push_back(Input::failed(
                shown.clone(),
                format!(
                    "line {} of standard input, {shown}, is not valid Unicode; rename the file \
                     (only Unix file names are read as bytes)",
                    self.line_number
                ),
            )),
        }
        true
    }
}

impl Iterator for Inputs<'_> {
    type Item = Input;

    fn next(&mut self) -> Option<Input> {
        loop {
            if let Some(input) = self.pending.pop_front() {
                return Some(input);
            }
            if self.next_line() {
                continue;
            }
            let arg = self.args.next()?;
            if is_stdin(arg) {
                self.open_stdin();
            } else {
                self.push_path(arg);
            }
        }
    }
}

fn stdin_failure(e: &std::io::Error) -> Input {
    Input::failed(
        STDIN_NAME.into(),
        format!("cannot read standard input: {e}"),
    )
}

#[cfg(unix)]
fn path_from_bytes(bytes: Vec<u8>) -> Result<PathBuf, String> {
    use std::os::unix::ffi::OsStringExt;
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: Vec<u8>) -> Result<PathBuf, String> {
    String::from_utf8(bytes)
        .map(PathBuf::from)
        .map_err(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Bytes enough to tell an image from a list: [`SNIFF_LEN`] of them, or fewer at the end of the
/// input or once a line has ended that no image signature can start with (a list streamed one
/// line at a time is not kept waiting).
fn read_prefix(reader: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut prefix = Vec::with_capacity(SNIFF_LEN);
    let mut buf = [0u8; SNIFF_LEN];
    while prefix.len() < SNIFF_LEN {
        let n = match reader.read(&mut buf[..SNIFF_LEN - prefix.len()]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        prefix.extend_from_slice(&buf[..n]);
        if prefix.contains(&b'\n') && sniff(&prefix, false) == Sniff::Text {
            break;
        }
    }
    Ok(prefix)
}

/// The longest signature checked (BMP: `BM`, the size, four reserved zero bytes).
const SNIFF_LEN: usize = 12;

/// Image signatures; `None` matches any byte.
const SIGNATURES: &[&[Option<u8>]] = &[
    &[Some(0xff), Some(0xd8), Some(0xff)],
    &[
        Some(0x89),
        Some(b'P'),
        Some(b'N'),
        Some(b'G'),
        Some(b'\r'),
        Some(b'\n'),
        Some(0x1a),
        Some(b'\n'),
    ],
    &[Some(b'G'), Some(b'I'), Some(b'F'), Some(b'8')],
    &[
        Some(b'R'),
        Some(b'I'),
        Some(b'F'),
        Some(b'F'),
        None,
        None,
        None,
        None,
        Some(b'W'),
        Some(b'E'),
        Some(b'B'),
        Some(b'P'),
    ],
    &[
        Some(b'B'),
        Some(b'M'),
        None,
        None,
        None,
        None,
        Some(0),
        Some(0),
        Some(0),
        Some(0),
    ],
    &[Some(b'I'), Some(b'I'), Some(b'*'), Some(0)],
    &[Some(b'M'), Some(b'M'), Some(0), Some(b'*')],
];

#[derive(Debug, PartialEq, Eq)]
enum Sniff {
    Image,
    Text,
    /// Too few bytes yet: they begin an image signature.
    Undecided,
}

/// What `prefix` (the first bytes of stdin) is; `at_end`: no more bytes follow, so a partial
/// signature counts as an image (the decoder then says what is wrong with it).
fn sniff(prefix: &[u8], at_end: bool) -> Sniff {
    if prefix.contains(&0) {
        return Sniff::Image;
    }
    let matches = |sig: &[Option<u8>]| {
        sig.iter()
            .zip(prefix)
            .all(|(want, &got)| want.is_none_or(|w| w == got))
    };
    let mut partial = false;
    for sig in SIGNATURES {
        if matches(sig) {
            if prefix.len() >= sig.len() {
                return Sniff::Image;
            }
            partial = true;
        }
    }
    match (partial && !prefix.is_empty(), at_end) {
        (true, true) => Sniff::Image,
        (true, false) => Sniff::Undecided,
        (false, _) => Sniff::Text,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn signatures_tell_images_from_path_lists() {
        for image in [
            &b"\xff\xd8\xff\xe0\x00\x10JFIF"[..],
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            b"GIF89a\x01\x00",
            b"RIFF\x24\x00\x00\x00WEBPVP8 ",
            b"BM\x36\x00\x0c\x00\x00\x00\x00\x00\x36\x00",
            b"II*\x00\x08\x00",
            b"MM\x00*\x00\x00",
            b"binary\x00junk",
        ] {
            assert_eq!(sniff(image, false), Sniff::Image, "{image:?}");
        }
        for text in [
            &b"photos/cat.jpg\n"[..],
            b"BMW/car.jpg\nGIF/x.gif\n",
            b"RIFFS/a.png\n",
            b"",
        ] {
            assert_eq!(sniff(text, true), Sniff::Text, "{text:?}");
        }
        // A PNG signature holds a newline at byte 5: not a finished line of text yet.
        assert_eq!(sniff(b"\x89PNG\r\n", false), Sniff::Undecided);
        assert_eq!(sniff(b"\xff\xd8", true), Sniff::Image);
    }

    #[test]
    fn a_streamed_list_is_not_kept_waiting() {
        // A reader that hands out one short line and would then block: read_prefix must stop.
        struct OneLine(Option<&'static [u8]>);
        impl Read for OneLine {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let line = self.0.take().expect("read again after a finished line");
                buf[..line.len()].copy_from_slice(line);
                Ok(line.len())
            }
        }
        let prefix = read_prefix(&mut OneLine(Some(b"a.jpg\n"))).unwrap();
        assert_eq!(prefix, b"a.jpg\n");
    }
}
