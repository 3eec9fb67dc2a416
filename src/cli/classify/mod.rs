//! `resnet-zoo classify`: the top classes of images, files, folders and stdin, printed batch by
//! batch as they are computed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use candle_core::{Module, Tensor};
use rayon::prelude::*;
use resnet_zoo::cam::{self, Map};
use resnet_zoo::imagenet::{top_k_labelled, Prediction};
use resnet_zoo::transforms::ImageLimits;
use resnet_zoo::ResNet;

use super::model::{Loaded, ModelArgs};
use super::Usage;

mod heatmap;
mod output;
mod sources;

use heatmap::CamWriter;
pub use output::Format;
use output::{ImageResult, Sink};
use sources::{Input, Inputs};

#[derive(clap::Args, Debug)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Number of classes to print per image.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub top_k: u16,
    /// Images per forward pass; each batch's results are printed as soon as it is done.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch_size: u16,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Write each image's class-activation map for its top class, blended over the crop, as
    /// OUT_DIR/<image stem>.<class index>.png (created if missing; `stem-2` for a second image of
    /// the same stem).
    #[arg(long, value_name = "OUT_DIR")]
    pub cam: Option<PathBuf>,
    /// Say on stderr which model and preprocessing recipe run (and where the recipe came from).
    #[arg(long, short)]
    pub verbose: bool,
    /// Class names, one per line in class order (as many lines as the model has classes)
    /// [default: ImageNet's for a 1000-class model, `class N` otherwise].
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Image files; folders, searched recursively for .jpg .jpeg .png .webp .gif .bmp .tif
    /// .tiff (as `embed` does); `-` for standard input: one image's bytes, or a list of paths,
    /// one a line.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

impl ClassifyArgs {
    fn output_format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.format
        }
    }
}

/// What a run has seen.
#[derive(Default)]
struct Tally {
    images: usize,
    failed: usize,
}

/// Everything a batch needs besides its inputs.
struct Run<'a> {
    loaded: &'a Loaded,
    labels: Option<Vec<String>>,
    top_k: usize,
    /// The recipe in each JSON element.
    recipe: Option<serde_json::Value>,
    cams: Option<CamWriter>,
}

pub fn run(args: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    sources::check(&args.images)?;
    // Before the model loads (or downloads): a bad --cam, or inputs without a single image, are
    // usage errors found at once. (With `-` first this waits for stdin's first line or image.)
    let cams = args.cam.as_deref().map(CamWriter::create).transpose()?;
    let limits = ImageLimits::default();
    let mut inputs = Inputs::new(&args.images, limits.max_file_bytes).peekable();
    if inputs.peek().is_none() {
        return Err(Usage(
            "no images found in the inputs (folders are searched for .jpg .jpeg .png .webp .gif \
             .bmp .tif .tiff; - reads one image or a list of paths from stdin)"
                .into(),
        )
        .into());
    }
    let loaded = args.model.load()?;
    if args.verbose {
        eprintln!("model: {} ({})", loaded.name, loaded.arch);
        eprintln!("preprocessing: {}", loaded.recipe.describe());
    }
    let format = args.output_format();
    let mut run = Run {
        labels: labels(args, &loaded)?,
        top_k: args.top_k.into(),
        recipe: matches!(format, Format::Json | Format::Jsonl).then(|| loaded.recipe.to_json()),
        cams,
        loaded: &loaded,
    };
    let stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut sink = Sink::begin(format, stdout).context("writing to stdout")?;
    let mut tally = Tally::default();
    let streamed = (|| -> anyhow::Result<()> {
        loop {
            let batch: Vec<Input> = inputs.by_ref().take(args.batch_size.into()).collect();
            if batch.is_empty() {
                return Ok(());
            }
            run.batch(&batch, &mut sink, &mut tally)?;
            sink.flush().context("writing to stdout")?;
        }
    })();
    // Closed whatever happened above: JSON output stays one valid array.
    let ended = sink.end().context("writing to stdout");
    streamed?;
    ended?;
    if tally.failed > 0 {
        eprintln!("{} of {} images failed", tally.failed, tally.images);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--labels` names, or `None` for the default (with a note when they are class numbers).
fn labels(args: &ClassifyArgs, loaded: &Loaded) -> anyhow::Result<Option<Vec<String>>> {
    let classes = loaded.model.config().num_classes;
    if let Some(path) = &args.labels {
        return Ok(Some(read_labels(path, classes)?));
    }
    if let Some(n) = classes.filter(|&n| n != 1000) {
        eprintln!(
            "note: {} has {n} classes, not ImageNet's 1000: printing class numbers \
             (give --labels FILE, one name per line, for names)",
            loaded.name
        );
    }
    Ok(None)
}

impl Run<'_> {
    /// Decodes, classifies and writes one batch; an image that cannot be read is reported (on
    /// stderr, and in JSON) without stopping the others.
    fn batch(
        &mut self,
        batch: &[Input],
        sink: &mut Sink<impl std::io::Write>,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let preprocess = &self.loaded.preprocess;
        let device = self.loaded.model.device();
        let decoded: Vec<anyhow::Result<Tensor>> = batch
            .par_iter()
            .map(|input| Ok(preprocess.apply(&input.read(&preprocess.limits)?, device)?))
            .collect();
        let ok: Vec<Tensor> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .cloned()
            .collect();
        let (tops, maps) = if ok.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.predict(&ok)
                .with_context(|| format!("running {}", self.loaded.name))?
        };
        let mut tops = tops.into_iter();
        let mut maps = maps.into_iter();
        for (input, d) in batch.iter().zip(&decoded) {
            tally.images += 1;
            let mut result = ImageResult {
                image: input.name.clone(),
                top: None,
                error: None,
                preprocess: None,
                cam: None,
            };
            match d {
                Ok(x) => {
                    let top = tops
                        .next()
                        .context("a batch gave fewer predictions than inputs")?;
                    if let (Some(cams), Some(map)) = (&mut self.cams, maps.next()) {
                        let path = cams.write(&input.stem, top[0].index, x, &map, preprocess)?;
                        result.cam = Some(path.display().to_string());
                    }
                    result.top = Some(top);
                    result.preprocess = self.recipe.clone();
                }
                Err(e) => {
                    tally.failed += 1;
                    let message = super::error_chain(e.as_ref());
                    eprintln!("error: {message}");
                    result.error = Some(message);
                }
            }
            sink.write(&result)?;
        }
        Ok(())
    }

    /// Top-k of each input, and with `--cam` each one's map for its top class.
    fn predict(&self, inputs: &[Tensor]) -> anyhow::Result<(Vec<Vec<Prediction>>, Vec<Map>)> {
        let model: &ResNet = &self.loaded.model;
        let batch = Tensor::stack(inputs, 0)?.to_dtype(model.dtype())?;
        let labels = self.labels.as_deref();
        if self.cams.is_none() {
            let tops = top_k_labelled(&model.forward(&batch)?, self.top_k, labels)?;
            return Ok((tops, Vec::new()));
        }
        // The forward pass in two halves, to keep the feature map: the same logits.
        let features = model.forward_features(&batch)?;
        let logits = model.forward_head(&features, false)?;
        let tops = top_k_labelled(&logits, self.top_k, labels)?;
        let classes: Vec<usize> = tops.iter().map(|t| t[0].index).collect();
        let maps = cam::class_activation_maps(model, &features, &classes)?;
        Ok((tops, maps))
    }
}

/// `--labels FILE`: one name per line (a trailing empty line ignored), exactly one per class.
fn read_labels(path: &std::path::Path, classes: Option<usize>) -> anyhow::Result<Vec<String>> {
    let usage = |msg: String| anyhow::Error::from(super::Usage(msg));
    let Some(classes) = classes else {
        return Err(usage(format!(
            "--labels {}: the model has no classifier to label",
            path.display()
        )));
    };
    let meta = std::fs::metadata(path)
        .with_context(|| format!("--labels {}: cannot read the labels file", path.display()))?;
    // A label file is a few kB; refuse what cannot be one before reading it.
    if !meta.is_file() || meta.len() > 16 << 20 {
        return Err(usage(format!(
            "--labels {}: not a text file of class names (a regular file of at most 16 MiB)",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "--labels {}: cannot read it as UTF-8 text, one class name per line",
            path.display()
        )
    })?;
    let labels: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    if labels.len() != classes {
        return Err(usage(format!(
            "--labels {}: {} lines, but the model has {classes} classes; give one name per line, in class order",
            path.display(),
            labels.len()
        )));
    }
    Ok(labels)
}
