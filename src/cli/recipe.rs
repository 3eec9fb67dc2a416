//! `--preprocess TAG`, `--resize`, `--crop`, `--interpolation`, `--mean`, `--std`: which
//! preprocessing recipe a model runs with, and where it came from.
//!
//! A model from the weights table (`--model`) has its row's recipe. A local file (`--arch A
//! --weights F`) takes the recipe of the arch's default row (timm's bicubic 235/224 for a
//! `resnet50d`, torchvision's 232/224 for a `resnet50`), since the file most likely holds those
//! weights or their fine-tuning; `--preprocess` names another row, and the single-value flags
//! override one setting each.

use resnet_zoo::hub;
use resnet_zoo::transforms::{Interpolation, Preprocess};

use super::Usage;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct RecipeArgs {
    /// Preprocess as this weights row does: a name from `resnet-zoo list --pretrained`
    /// (resnet50.a1_in1k) or its tag for this arch (a1_in1k) [default: the model's own row;
    /// for --arch --weights, the arch's default row].
    #[arg(long, value_name = "TAG")]
    pub preprocess: Option<String>,
    /// Shorter side after resizing [default: the recipe's, e.g. 232 for tv2, 256 for tv].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub resize: Option<u16>,
    /// Side of the center crop fed to the model [default: the recipe's, 224].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub crop: Option<u16>,
    /// Resampling filter of the resize [default: the recipe's].
    #[arg(long, value_parser = interpolation_parser())]
    pub interpolation: Option<Interpolation>,
    /// Per-channel mean subtracted after scaling to [0, 1] [default: the recipe's, ImageNet's].
    #[arg(long, value_name = "R,G,B", value_parser = parse_rgb)]
    pub mean: Option<[f32; 3]>,
    /// Per-channel standard deviation divided by [default: the recipe's, ImageNet's].
    #[arg(long, value_name = "R,G,B", value_parser = parse_rgb)]
    pub std: Option<[f32; 3]>,
}

/// `bilinear` or `bicubic`, listed in `--help` and parsed by [`Interpolation`] itself.
fn interpolation_parser() -> impl clap::builder::TypedValueParser<Value = Interpolation> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Interpolation::ALL.map(Interpolation::name))
        .try_map(|name| name.parse::<Interpolation>())
}

/// A recipe and what it came from, for `--verbose` and JSON.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub preprocess: Preprocess,
    /// e.g. `weights row resnet50d.a1_in1k (the default of arch resnet50d)`, `... + --resize 256`.
    pub source: String,
}

impl Recipe {
    /// One line: `resize 235 bicubic, crop 224, mean [..], std [..] (from ...)`.
    pub fn describe(&self) -> String {
        let p = &self.preprocess;
        format!(
            "resize {} {}, crop {}, mean {:?}, std {:?} (from {})",
            p.resize_size,
            p.interpolation.name(),
            p.crop_size,
            p.mean,
            p.std,
            self.source
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        let p = &self.preprocess;
        serde_json::json!({
            "resize": p.resize_size,
            "crop": p.crop_size,
            "interpolation": p.interpolation.name(),
            "mean": p.mean,
            "std": p.std,
            "source": self.source,
        })
    }
}

fn parse_rgb(text: &str) -> Result<[f32; 3], String> {
    let values: Vec<f32> = text
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("expected three numbers R,G,B: {e}"))?;
    match values.as_slice() {
        &[r, g, b] if values.iter().all(|v| v.is_finite()) => Ok([r, g, b]),
        _ => Err(format!(
            "expected three finite numbers R,G,B, got {}",
            values.len()
        )),
    }
}

impl RecipeArgs {
    /// The recipe for `arch`, starting from `base` (the weights' own, with its source), then
    /// `--preprocess`, then the single-value overrides.
    pub fn resolve(&self, arch: &str, base: Recipe) -> anyhow::Result<Recipe> {
        let mut recipe = match &self.preprocess {
            None => base,
            Some(tag) => {
                let qualified = format!("{arch}.{tag}");
                let row = hub::registry::find(&qualified)
                    .or_else(|_| hub::registry::find(tag))
                    .map_err(|e| Usage(format!("--preprocess: {e}")))?;
                Recipe {
                    preprocess: row.preprocess(),
                    source: format!("weights row {} (--preprocess)", row.name),
                }
            }
        };
        let p = &mut recipe.preprocess;
        let mut changed = Vec::new();
        if let Some(r) = self.resize {
            p.resize_size = r.into();
            changed.push(format!("--resize {r}"));
        }
        if let Some(c) = self.crop {
            p.crop_size = c.into();
            changed.push(format!("--crop {c}"));
        }
        if let Some(i) = self.interpolation {
            p.interpolation = i;
            changed.push(format!("--interpolation {}", p.interpolation.name()));
        }
        if let Some(m) = self.mean {
            p.mean = m;
            changed.push("--mean".into());
        }
        if let Some(s) = self.std {
            if s.contains(&0.0) {
                return Err(
                    Usage("--std: a standard deviation of 0 divides by zero".into()).into(),
                );
            }
            p.std = s;
            changed.push("--std".into());
        }
        if !changed.is_empty() {
            recipe.source = format!("{}, with {}", recipe.source, changed.join(", "));
        }
        Ok(recipe)
    }
}

/// The recipe of a local file of architecture `arch`: its default weights row's, or, for an arch
/// without pretrained weights in the table (the CIFAR nets), ImageNet V1's resized to the arch's
/// own input size.
pub fn for_local_file(arch: &str, default_input: usize) -> Recipe {
    match hub::registry::all()
        .ok()
        .and_then(|rows| rows.iter().find(|w| w.arch == arch && w.default))
    {
        Some(row) => Recipe {
            preprocess: row.preprocess(),
            source: format!("weights row {} (the default of arch {arch})", row.name),
        },
        None => {
            let mut p = Preprocess::imagenet_v1();
            if default_input != p.crop_size {
                p.resize_size = default_input;
                p.crop_size = default_input;
            }
            Recipe {
                preprocess: p,
                source: format!(
                    "ImageNet V1 at {default_input}x{default_input} (arch {arch} has no pretrained weights row)"
                ),
            }
        }
    }
}
