//! `classify --format text|json|jsonl|csv`: results written as each batch is computed.
//!
//! `json` is one array whose elements are written as they come; the closing bracket is written
//! whatever happens after the opening one ([`Sink::end`]), so the output stays valid JSON when an
//! image, or the model itself, fails later. `jsonl` is one object per line, `csv` a header and one
//! row per image and rank (RFC 4180 quoting).

use std::io::Write;

use resnet_zoo::imagenet::Prediction;

/// How results are printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// The image's name, then one line per class: probability, label, (class index).
    #[default]
    Text,
    /// One JSON array, an element per image.
    Json,
    /// One JSON object per line, an image each (the elements of `json`).
    Jsonl,
    /// A header, then one row per image and rank: image,rank,class,label,probability.
    Csv,
}

/// What is printed for one image.
#[derive(serde::Serialize)]
pub struct ImageResult {
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<Prediction>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The recipe the image went through (the same for every image of a run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<serde_json::Value>,
    /// The class-activation map written for the top class (`--cam`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cam: Option<String>,
}

/// The CSV header.
pub const CSV_HEADER: &str = "image,rank,class,label,probability";

/// Writes results in one [`Format`].
pub struct Sink<W: Write> {
    format: Format,
    out: W,
    /// Images written so far (for the JSON separators).
    written: usize,
}

impl<W: Write> Sink<W> {
    /// Starts the output: nothing for text and jsonl, `[` for json, the header for csv.
    pub fn begin(format: Format, mut out: W) -> std::io::Result<Self> {
        match format {
            Format::Json => write!(out, "[")?,
            Format::Csv => writeln!(out, "{CSV_HEADER}")?,
            Format::Text | Format::Jsonl => {}
        }
        Ok(Self {
            format,
            out,
            written: 0,
        })
    }

    /// One image. In text and csv a failed image writes nothing here (its error goes to stderr).
    pub fn write(&mut self, r: &ImageResult) -> anyhow::Result<()> {
        let out = &mut self.out;
        match self.format {
            Format::Json => {
                let sep = if self.written == 0 { "\n" } else { ",\n" };
                let element = serde_json::to_string_pretty(r)?;
                // Indented one level, as a pretty-printed array holds its elements.
                write!(out, "{sep}  {}", element.replace('\n', "\n  "))?;
            }
            Format::Jsonl => writeln!(out, "{}", serde_json::to_string(r)?)?,
            Format::Text => {
                if let Some(top) = &r.top {
                    writeln!(out, "{}", r.image)?;
                    for p in top {
                        writeln!(
                            out,
                            "  {:>6.2}%  {} ({})",
                            p.probability * 100.0,
                            p.label,
                            p.index
                        )?;
                    }
                    if let Some(cam) = &r.cam {
                        writeln!(out, "  class-activation map: {cam}")?;
                    }
                }
            }
            Format::Csv => {
                for (rank, p) in r.top.iter().flatten().enumerate() {
                    writeln!(
                        out,
                        "{},{},{},{},{}",
                        csv_field(&r.image),
                        rank + 1,
                        p.index,
                        csv_field(&p.label),
                        p.probability
                    )?;
                }
            }
        }
        self.written += 1;
        Ok(())
    }

    /// Hands what is written so far to the reader (after each batch).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Ends the output (json: `]`) and flushes it.
    pub fn end(mut self) -> std::io::Result<()> {
        if self.format == Format::Json {
            let close = if self.written == 0 { "]" } else { "\n]" };
            writeln!(self.out, "{close}")?;
        }
        self.out.flush()
    }
}

/// A CSV field, quoted when it holds a comma, a quote, a line break or edge spaces (quotes
/// doubled inside), as RFC 4180 has it.
fn csv_field(text: &str) -> String {
    let needs_quotes =
        text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn result(image: &str, ok: bool) -> ImageResult {
        ImageResult {
            image: image.into(),
            top: ok.then(|| {
                vec![Prediction {
                    index: 281,
                    label: "tabby, tabby cat".into(),
                    probability: 0.5,
                }]
            }),
            error: (!ok).then(|| "cannot decode image".into()),
            preprocess: None,
            cam: None,
        }
    }

    fn render(format: Format, results: &[ImageResult]) -> String {
        let mut out = Vec::new();
        let mut sink = Sink::begin(format, &mut out).unwrap();
        for r in results {
            sink.write(r).unwrap();
        }
        sink.end().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_is_one_array_whatever_fails() {
        for results in [vec![], vec![result("a", true), result("b", false)]] {
            let text = render(Format::Json, &results);
            let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed.as_array().unwrap().len(), results.len(), "{text}");
        }
        // The same layout as a pretty-printed array.
        let results = [result("a", true), result("b", false)];
        let expected = serde_json::to_string_pretty(&results).unwrap() + "\n";
        assert_eq!(render(Format::Json, &results), expected);
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let text = render(
            Format::Csv,
            &[result("x,\"y\".png", true), result("z", false)],
        );
        assert_eq!(
            text,
            "image,rank,class,label,probability\n\"x,\"\"y\"\".png\",1,281,\"tabby, tabby cat\",0.5\n"
        );
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(" edge"), "\" edge\"");
    }

    #[test]
    fn jsonl_has_a_line_per_image() {
        let text = render(Format::Jsonl, &[result("a", true), result("b", false)]);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["error"], "cannot decode image");
    }
}
