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
    /// Shorter side after resizing [default: the weights' own, e.g. 232 for tv2, 256 for tv].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub resize: Option<u16>,
    /// Side of the center crop fed to the model [default: the weights' own, 224].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub crop: Option<u16>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch_size: u16,
    /// Print one JSON array, an element per image, instead of text.
    #[arg(long)]
    pub json: bool,
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
}

pub fn run(args: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.model.load()?;
    let mut preprocess = loaded.preprocess;
    if let Some(r) = args.resize {
        preprocess.resize_size = r.into();
    }
    if let Some(c) = args.crop {
        preprocess.crop_size = c.into();
    }
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
                    });
                }
                Err(e) => results.push(ImageResult {
                    image,
                    top: None,
                    error: Some(super::error_chain(e.as_ref())),
                }),
            }
        }
        if inputs.is_empty() {
            continue;
        }
        let tops = classify(&loaded.model, &inputs, args.top_k.into())
            .with_context(|| format!("running {}", loaded.name))?;
        for (slot, top) in slots.into_iter().zip(tops) {
            results[slot].top = Some(top);
        }
    }
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    if args.json {
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
