//! The pretrained-weights table (`crates/hub/registry.toml`, compiled in; `weights/registry.toml` is a
//! link to it): one row per `arch.tag`.

use std::str::FromStr;
use std::sync::LazyLock;

use resnet_zoo_resnet::transforms::{Interpolation, Preprocess};
use resnet_zoo_resnet::ResNetConfig;
use serde::Deserialize;

use crate::error::HubError;
use crate::keymap::Scheme;

/// One pretrained checkpoint: where it lives, what it is, and how to feed it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsInfo {
    /// `arch.tag`, e.g. `resnet50.tv2_in1k`.
    pub name: String,
    /// Preset name, e.g. `resnet50`.
    pub arch: String,
    /// Hugging Face Hub repository, `owner/name`.
    pub repo: String,
    /// Branch, tag or 40-hex commit.
    pub revision: String,
    /// File in the repository.
    pub file: String,
    /// How the file names its tensors. The loader detects the scheme from the file itself
    /// ([`crate::keymap::detect`]); this column says what the row's file is, and a test checks it
    /// against the arch and the repository.
    pub keymap: Scheme,
    pub num_classes: usize,
    /// Side of the center crop.
    pub input_size: usize,
    /// `input_size / resize`: the shorter side is resized to `floor(input_size / crop_pct)`.
    pub crop_pct: f64,
    #[serde(deserialize_with = "interpolation")]
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// ImageNet-1k top-1 (%) published by the source at this preprocessing, where published.
    #[serde(default)]
    pub top1: Option<f64>,
    /// ImageNet-1k top-5 (%), where published.
    #[serde(default)]
    pub top5: Option<f64>,
    pub license: String,
    /// Where the weights come from (recipe, paper).
    pub source: String,
    /// Whether `--model ARCH` picks this row.
    #[serde(default)]
    pub default: bool,
}

/// `interpolation = "bilinear"` or `"bicubic"`, read with [`Interpolation`]'s own names.
fn interpolation<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Interpolation, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(serde::de::Error::custom)
}

impl WeightsInfo {
    /// The architecture these weights are for, with this row's classifier size.
    pub fn config(&self) -> Result<ResNetConfig, HubError> {
        let cfg = ResNetConfig::preset(&self.arch).map_err(|e| HubError::Registry {
            row: self.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(cfg.with_num_classes(Some(self.num_classes)))
    }

    /// The shorter side before the crop, as timm computes it: `floor(input_size / crop_pct)`.
    pub fn resize_size(&self) -> usize {
        // A tiny epsilon keeps exact quotients (224 / 0.875 = 256) from flooring to 255 through
        // binary rounding; timm's Python gets 256.0 exactly here too.
        (self.input_size as f64 / self.crop_pct + 1e-9).floor() as usize
    }

    /// The preprocessing that belongs to these weights.
    pub fn preprocess(&self) -> Preprocess {
        Preprocess {
            resize_size: self.resize_size(),
            crop_size: self.input_size,
            interpolation: self.interpolation,
            mean: self.mean,
            std: self.std,
            ..Preprocess::imagenet_v1()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    weights: Vec<WeightsInfo>,
}

static TABLE: LazyLock<Result<Vec<WeightsInfo>, String>> = LazyLock::new(|| {
    toml::from_str::<Table>(include_str!("../registry.toml"))
        .map(|t| t.weights)
        .map_err(|e| e.to_string())
});

/// Every row of the weights table, in file order.
pub fn all() -> Result<&'static [WeightsInfo], HubError> {
    TABLE.as_deref().map_err(|e| HubError::Registry {
        row: "registry.toml (resnet-zoo-hub)".into(),
        reason: e.clone(),
    })
}

/// The row called `name` (`resnet50.tv2_in1k`), or the default row of an arch (`resnet50`).
/// Unknown names are an error with the closest known names.
pub fn find(name: &str) -> Result<&'static WeightsInfo, HubError> {
    let rows = all()?;
    let found = rows
        .iter()
        .find(|w| w.name == name)
        .or_else(|| rows.iter().find(|w| w.arch == name && w.default));
    found.ok_or_else(|| {
        let names = rows
            .iter()
            .map(|w| w.name.as_str())
            .chain(rows.iter().filter(|w| w.default).map(|w| w.arch.as_str()));
        HubError::UnknownModel {
            name: name.to_string(),
            suggestion: resnet_zoo_resnet::suggest::did_you_mean(name, names),
        }
    })
}

impl FromStr for WeightsInfo {
    type Err = HubError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        find(s).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_consistent() {
        let rows = all().unwrap();
        assert!(!rows.is_empty());
        for w in rows {
            let cfg = w.config().unwrap();
            assert_eq!(cfg.num_classes, Some(w.num_classes));
            // `arch.tag`, or the Hub repo id itself for repos outside timm's naming.
            assert!(
                w.name.starts_with(&format!("{}.", w.arch)) || w.name == w.repo,
                "{}",
                w.name
            );
            assert!(w.repo.split('/').count() == 2, "{}", w.repo);
            assert!((0.5..=1.0).contains(&w.crop_pct));
            assert!(
                w.top1.is_none_or(|t| (0.0..=100.0).contains(&t)),
                "{}",
                w.name
            );
            assert_eq!(
                rows.iter().filter(|o| o.name == w.name).count(),
                1,
                "duplicate {}",
                w.name
            );
        }
        // Each arch with rows has exactly one default.
        for w in rows {
            let defaults = rows
                .iter()
                .filter(|o| o.arch == w.arch && o.default)
                .count();
            assert_eq!(defaults, 1, "{} has {defaults} default rows", w.arch);
        }
    }

    /// A row's `keymap` follows from where its file comes from: timm's ResNetV2 names for the
    /// `resnetv2_*` archs, transformers' for `microsoft/resnet-*`, torchvision's for the rest.
    #[test]
    fn every_row_names_its_files_scheme() {
        for w in all().unwrap() {
            let want = if w.repo.starts_with("microsoft/") {
                Scheme::Transformers
            } else if w.arch.starts_with("resnetv2_") {
                Scheme::TimmResNetV2
            } else {
                Scheme::Torchvision
            };
            assert_eq!(w.keymap, want, "{}", w.name);
        }
    }

    #[test]
    fn interpolation_is_read_with_its_own_names() {
        let bicubic = find("resnet50.a1_in1k").unwrap();
        assert_eq!(bicubic.interpolation, Interpolation::Bicubic);
        assert_eq!(bicubic.preprocess().interpolation, Interpolation::Bicubic);
        let row = |interpolation: &str| {
            let toml = include_str!("../registry.toml");
            let start = toml.find("[[weights]]").unwrap();
            let end = toml[start + 1..].find("[[weights]]").unwrap() + start + 1;
            let first = &toml[start..end];
            let line = first
                .lines()
                .find(|l| l.starts_with("interpolation"))
                .unwrap();
            toml::from_str::<Table>(
                &first.replace(line, &format!("interpolation = \"{interpolation}\"")),
            )
        };
        assert!(row("bicubic").is_ok());
        let err = row("nearest").err().unwrap().to_string();
        assert!(err.contains("unknown interpolation `nearest`"), "{err}");
    }

    /// Presets with no public weights, by design. Every other preset must have a default row.
    /// The CIFAR nets have no weights on the Hub in a layout we could verify.
    const UNTRAINED: &[&str] = &[
        "resnet50_v1",
        "resnet101_v1",
        "resnet152_v1",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "resnet20_b",
        "resnet32_b",
        "resnet44_b",
        "resnet56_b",
        "resnet110_b",
    ];

    #[test]
    fn every_preset_has_weights_or_is_listed_untrained() {
        let rows = all().unwrap();
        for name in resnet_zoo_resnet::preset_names() {
            let has = rows.iter().any(|w| w.arch == name && w.default);
            assert_eq!(has, !UNTRAINED.contains(&name), "{name}");
            assert_eq!(resnet_zoo_resnet::ResNetConfig::preset(name).unwrap(), {
                let row_cfg = rows
                    .iter()
                    .find(|w| w.arch == name)
                    .map(|w| w.config().unwrap());
                row_cfg.unwrap_or_else(|| resnet_zoo_resnet::ResNetConfig::preset(name).unwrap())
            });
        }
    }

    #[test]
    fn lookup_by_name_arch_and_typo() {
        assert_eq!(find("resnet50.tv_in1k").unwrap().resize_size(), 256);
        let tv2 = find("resnet50").unwrap();
        assert_eq!(tv2.name, "resnet50.tv2_in1k");
        assert_eq!(tv2.resize_size(), 232);
        assert_eq!(find("resnet50.a1_in1k").unwrap().resize_size(), 235);
        let err = find("resnet50.tv3_in1k").unwrap_err().to_string();
        assert!(err.contains("resnet50.tv2_in1k"), "{err}");
        let parsed: WeightsInfo = "resnet18.tv_in1k".parse().unwrap();
        assert_eq!(parsed.arch, "resnet18");
        let hf = find("microsoft/resnet-50").unwrap();
        assert_eq!(
            (hf.arch.as_str(), hf.keymap),
            ("resnet50", Scheme::Transformers)
        );
        let bit = find("resnetv2_50x1_bit").unwrap();
        assert_eq!(
            (bit.name.as_str(), bit.keymap, bit.resize_size()),
            (
                "resnetv2_50x1_bit.goog_in21k_ft_in1k",
                Scheme::TimmResNetV2,
                448
            )
        );
    }
}
