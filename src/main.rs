//! The `resnet-zoo` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use candle_core::DType;
use clap::{Parser, Subcommand};
use resnet_zoo::classify::{classify, Prediction};
use resnet_zoo::transforms::{load_rgb, Preprocess};
use resnet_zoo::{device::parse_device, hub, ResNet, ResNetConfig};

#[derive(Parser)]
#[command(
    name = "resnet-zoo",
    version,
    about = "ResNet family on Candle: classify images with PyTorch-exact models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the top-k ImageNet classes of each image.
    Classify(ClassifyArgs),
    /// List the architectures (presets).
    List,
}

#[derive(clap::Args)]
struct ClassifyArgs {
    /// Architecture of the weights file (see `resnet-zoo list`).
    #[arg(long)]
    arch: String,
    /// Local `.safetensors` file with torchvision state_dict names.
    #[arg(long)]
    weights: PathBuf,
    /// Number of classes to print per image.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    top_k: u16,
    /// Shorter side after resizing (256 for torchvision V1 weights, 232 for V2).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=4096))]
    resize: u16,
    /// Side of the center crop fed to the model.
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u16).range(1..=4096))]
    crop: u16,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch_size: u16,
    /// Print one JSON array, an element per image, instead of text.
    #[arg(long)]
    json: bool,
    /// Image files to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// A usage error: exit code 2, like clap's own.
#[derive(Debug)]
struct Usage(String);
impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

#[derive(serde::Serialize)]
struct ImageResult {
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    top: Option<Vec<Prediction>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn run_classify(args: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    let cfg = ResNetConfig::preset(&args.arch).map_err(|e| Usage(format!("--arch: {e}")))?;
    let device = parse_device(&args.device).map_err(|e| Usage(format!("--device: {e}")))?;
    let model: ResNet = hub::load_safetensors(&args.weights, &cfg, DType::F32, &device)?;
    let preprocess = Preprocess {
        resize_size: args.resize.into(),
        crop_size: args.crop.into(),
        ..Preprocess::imagenet_v1()
    };
    let mut results = Vec::with_capacity(args.images.len());
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
                    error: Some(format!("{e:#}")),
                }),
            }
        }
        if inputs.is_empty() {
            continue;
        }
        let tops = classify(&model, &inputs, args.top_k.into()).context("running the model")?;
        for (slot, top) in slots.into_iter().zip(tops) {
            results[slot].top = Some(top);
        }
    }
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            match (&r.top, &r.error) {
                (Some(top), _) => {
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
                (None, Some(e)) => eprintln!("error: {e}"),
                (None, None) => {}
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} images failed", results.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Classify(args) => run_classify(args),
        Command::List => {
            for name in resnet_zoo::presets::preset_names() {
                let cfg = ResNetConfig::preset(name).map_err(anyhow::Error::from);
                match cfg {
                    Ok(cfg) => println!("{name:<12} {:>12} params", ResNet::num_params(&cfg)),
                    Err(e) => eprintln!("{e}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.is::<Usage>() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
