//! `resnet-zoo info --arch NAME [--json]`: model facts computed from the config, no weights needed.

use std::process::ExitCode;

use resnet_zoo::{ResNet, ResNetConfig};

use super::Usage;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Architecture (see `resnet-zoo list`).
    #[arg(long)]
    pub arch: String,
    /// Input side for the multiply-accumulate count [default: 224, 32 for the CIFAR nets].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub size: Option<u16>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &InfoArgs) -> anyhow::Result<ExitCode> {
    let cfg = ResNetConfig::preset(&args.arch).map_err(|e| Usage(format!("--arch: {e}")))?;
    let size = args
        .size
        .map_or_else(|| cfg.default_input_size(), usize::from);
    let params = ResNet::num_params(&cfg);
    let macs = ResNet::macs(&cfg, size, size);
    let features = ResNet::feature_info_for(&cfg);
    let output_stride = features.last().map_or(1, |f| f.reduction);
    if args.json {
        let stages: Vec<_> = features
            .iter()
            .map(|f| serde_json::json!({"name": f.name, "channels": f.channels, "reduction": f.reduction}))
            .collect();
        let value = serde_json::json!({
            "arch": args.arch,
            "params": params,
            "macs": macs,
            "input_size": size,
            "output_stride": output_stride,
            "num_features": cfg.num_features(),
            "layout": cfg.summary(),
            "features": stages,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{}: {}", args.arch, cfg.summary());
        println!("  parameters     {params}");
        println!("  MACs at {size}x{size} {:.3} G", macs as f64 / 1e9);
        println!("  output stride  {output_stride}");
        println!("  embedding      {}", cfg.num_features());
        for f in &features {
            println!(
                "  {:<8} {:>5} channels, stride {}",
                f.name, f.channels, f.reduction
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
