//! `resnet-zoo list [--pretrained]`.

use std::process::ExitCode;

use resnet_zoo::{hub, ResNet, ResNetConfig};

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// List the pretrained weights (the weights table) instead of the architectures.
    #[arg(long)]
    pub pretrained: bool,
    /// One JSON array instead of the table (an object per row, the same columns).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ListArgs) -> anyhow::Result<ExitCode> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows(args.pretrained)?)?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.pretrained {
        println!(
            "{:<26} {:<30} {:>6} {:>6} {:>10} {:<13} default",
            "name", "hub repo", "top-1", "top-5", "resize/crop", "interp"
        );
        for w in hub::registry::all()? {
            let top1 = w.top1.map_or("-".to_string(), |t| format!("{t:.3}"));
            let top5 = w.top5.map_or("-".to_string(), |t| format!("{t:.3}"));
            println!(
                "{:<26} {:<30} {:>6} {:>6} {:>6}/{:<3} {:<13} {}",
                w.name,
                w.repo,
                top1,
                top5,
                w.resize_size(),
                w.input_size,
                w.interpolation.name(),
                if w.default { "yes" } else { "" }
            );
        }
    } else {
        println!(
            "{:<18} {:>12} {:>7} {:>5} {:>7}  layout",
            "arch", "params", "GMACs", "input", "classes"
        );
        for name in resnet_zoo::presets::preset_names() {
            let cfg = ResNetConfig::preset(name)?;
            let size = cfg.default_input_size();
            println!(
                "{name:<18} {:>12} {:>7.3} {:>5} {:>7}  {}",
                ResNet::num_params(&cfg),
                ResNet::macs(&cfg, size, size) as f64 / 1e9,
                size,
                cfg.num_classes.unwrap_or(0),
                cfg.summary()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The rows of the table as JSON objects.
fn rows(pretrained: bool) -> anyhow::Result<serde_json::Value> {
    let mut out = Vec::new();
    if pretrained {
        for w in hub::registry::all()? {
            out.push(serde_json::json!({
                "name": w.name,
                "arch": w.arch,
                "repo": w.repo,
                "top1": w.top1,
                "top5": w.top5,
                "resize": w.resize_size(),
                "crop": w.input_size,
                "interpolation": w.interpolation.name(),
                "default": w.default,
            }));
        }
    } else {
        for name in resnet_zoo::presets::preset_names() {
            let cfg = ResNetConfig::preset(name)?;
            let size = cfg.default_input_size();
            out.push(serde_json::json!({
                "arch": name,
                "params": ResNet::num_params(&cfg),
                "macs": ResNet::macs(&cfg, size, size),
                "input_size": size,
                "num_classes": cfg.num_classes,
                "layout": cfg.summary(),
            }));
        }
    }
    Ok(serde_json::Value::Array(out))
}
