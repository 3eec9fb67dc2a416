//! `resnet-zoo classify`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use resnet_zoo::classify::{classify, Prediction};
use resnet_zoo::transforms::load_rgb;

use super::model::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Number of classes to print per image.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub top_k: u16,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch_size: u16,
    /// Print one JSON array, an element per image, instead of text.
    #[arg(long)]
    pub json: bool,
    /// Say on stderr which model and preprocessing recipe run (and where the recipe came from).
    #[arg(long, short)]
    pub verbose: bool,
    /// Class names, one per line in class order (as many lines as the model has classes)
    /// [default: ImageNet's for a 1000-class model, `class N` otherwise].
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Image files to classify.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(serde::Serialize)]
struct ImageResult {
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    top: Option<Vec<Prediction>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The recipe the image went through (the same for every image of a run).
    #[serde(skip_serializing_if = "Option::is_none")]
    preprocess: Option<serde_json::Value>,
}

pub fn run(args: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.model.load()?;
    let preprocess = loaded.preprocess.clone();
    if args.verbose {
        eprintln!("model: {} ({})", loaded.name, loaded.arch);
        eprintln!("preprocessing: {}", loaded.recipe.describe());
    }
    let labels = match &args.labels {
        Some(path) => Some(read_labels(path, loaded.model.config().num_classes)?),
        None => {
            match loaded.model.config().num_classes {
                Some(1000) => {}
                Some(n) => eprintln!(
                    "note: {} has {n} classes, not ImageNet's 1000: printing class numbers \
                     (give --labels FILE, one name per line, for names)",
                    loaded.name
                ),
                None => {}
            }
            None
        }
    };
    let device = loaded.model.device().clone();
    let mut results: Vec<ImageResult> = Vec::with_capacity(args.images.len());
    for chunk in args.images.chunks(args.batch_size.into()) {
        let mut inputs = Vec::new();
        let mut slots = Vec::new();
        for path in chunk {
            let image = path.display().to_string();
            let input = load_rgb(path, &preprocess.limits)
                .map_err(anyhow::Error::from)
                .and_then(|rgb| Ok(preprocess.apply(&rgb, &device)?));
            match input {
                Ok(t) => {
                    inputs.push(t);
                    slots.push(results.len());
                    results.push(ImageResult {
                        image,
                        top: None,
                        error: None,
                        preprocess: None,
                    });
                }
                Err(e) => results.push(ImageResult {
                    image,
                    top: None,
                    error: Some(super::error_chain(e.as_ref())),
                    preprocess: None,
                }),
            }
        }
        if inputs.is_empty() {
            continue;
        }
        let tops = classify(&loaded.model, &inputs, args.top_k.into(), labels.as_deref())
            .with_context(|| format!("running {}", loaded.name))?;
        for (slot, top) in slots.into_iter().zip(tops) {
            results[slot].top = Some(top);
        }
    }
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    if args.json {
        let recipe = loaded.recipe.to_json();
        for r in results.iter_mut().filter(|r| r.top.is_some()) {
            r.preprocess = Some(recipe.clone());
        }
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            if let Some(top) = &r.top {
                println!("{}", r.image);
                for p in top {
                    println!(
                        "  {:>6.2}%  {} ({})",
                        p.probability * 100.0,
                        p.label,
                        p.index
                    );
                }
            }
        }
    }
    for e in results.iter().filter_map(|r| r.error.as_ref()) {
        eprintln!("error: {e}");
    }
    if failed > 0 {
        eprintln!("{failed} of {} images failed", results.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
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
