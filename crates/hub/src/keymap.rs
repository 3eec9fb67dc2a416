//! Foreign tensor names, mapped onto ours (torchvision's) in one table per scheme.
//!
//! The model only ever sees torchvision names. A checkpoint's scheme is detected from its keys;
//! each scheme is an ordered list of rules `(pattern, replacement)` over dot-separated names, where
//! `{s}`, `{b}`, `{k}` capture integers (`{s+1}`, `{k+1}` write them shifted) and a trailing `*`
//! captures the rest of the name.

/// How a checkpoint names its tensors: detected from a file's names by [`detect`], and written in
/// the weights table as a row's `keymap` (`"torchvision"`, `"transformers"`, `"timm_resnetv2"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// torchvision `state_dict` names, shared by timm's ResNet, ResNeXt and Wide ResNet: no mapping.
    Torchvision,
    /// Hugging Face transformers `ResNetForImageClassification` (`resnet.` prefix, `classifier.1`) or
    /// a bare `ResNetModel` (no prefix): `microsoft/resnet-*`.
    Transformers,
    /// timm's `ResNetV2` (`resnetv2_*`, BiT `resnetv2_*_bit`): `stem.conv`, `stages.N.blocks.M`,
    /// `downsample.conv`, `norm`, `head.fc`. BiT and the BatchNorm V2 share these names.
    #[serde(rename = "timm_resnetv2")]
    TimmResNetV2,
}

impl Scheme {
    /// The scheme in words, for reports (`timm ResNetV2`).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Torchvision => "torchvision",
            Scheme::Transformers => "transformers",
            Scheme::TimmResNetV2 => "timm ResNetV2",
        }
    }

    fn rules(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Scheme::Torchvision => &[],
            Scheme::Transformers => TRANSFORMERS,
            Scheme::TimmResNetV2 => TIMM_RESNETV2,
        }
    }
}

/// transformers `modeling_resnet.py` -> torchvision. Stages and convs count from 0 there, from 1 here.
const TRANSFORMERS: &[(&str, &str)] = &[
    ("embedder.embedder.convolution.weight", "conv1.weight"),
    ("embedder.embedder.normalization.*", "bn1.*"),
    (
        "encoder.stages.{s}.layers.{b}.layer.{k}.convolution.weight",
        "layer{s+1}.{b}.conv{k+1}.weight",
    ),
    (
        "encoder.stages.{s}.layers.{b}.layer.{k}.normalization.*",
        "layer{s+1}.{b}.bn{k+1}.*",
    ),
    (
        "encoder.stages.{s}.layers.{b}.shortcut.convolution.weight",
        "layer{s+1}.{b}.downsample.0.weight",
    ),
    (
        "encoder.stages.{s}.layers.{b}.shortcut.normalization.*",
        "layer{s+1}.{b}.downsample.1.*",
    ),
    // `classifier.0` is a Flatten (no parameters).
    ("classifier.1.*", "fc.*"),
];

/// timm `resnetv2.py` -> ours. Our pre-activation blocks keep timm's `norm1..3`/`conv1..3`; the
/// classifier `head.fc` is a 1x1 convolution there and stays `[n, C, 1, 1]` (the model reshapes it).
const TIMM_RESNETV2: &[(&str, &str)] = &[
    ("stem.conv.weight", "conv1.weight"),
    (
        "stages.{s}.blocks.{b}.downsample.conv.weight",
        "layer{s+1}.{b}.downsample.0.weight",
    ),
    // norm1..3 and conv1..3 keep their names (a rule above wins: rules apply in order).
    ("stages.{s}.blocks.{b}.*", "layer{s+1}.{b}.*"),
    ("norm.*", "norm.*"),
    ("head.fc.*", "fc.*"),
];

/// The scheme of a checkpoint with these tensor names.
pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> Scheme {
    let mut scheme = Scheme::Torchvision;
    for n in names {
        if n.starts_with("resnet.embedder.")
            || n.starts_with("embedder.embedder.")
            || n.starts_with("resnet.encoder.")
        {
            return Scheme::Transformers;
        }
        if n.starts_with("stem.conv.") || n.starts_with("stages.") {
            scheme = Scheme::TimmResNetV2;
        }
    }
    scheme
}

/// Our (torchvision) name for a checkpoint tensor, or `None` when no rule of the scheme maps it.
pub fn map_name(scheme: Scheme, name: &str) -> Option<String> {
    let rules = scheme.rules();
    if rules.is_empty() {
        return Some(name.to_string());
    }
    // transformers' classification model prefixes its backbone with `resnet.`.
    let name = name.strip_prefix("resnet.").unwrap_or(name);
    rules
        .iter()
        .find_map(|(pattern, replacement)| apply(pattern, replacement, name))
}

fn apply(pattern: &str, replacement: &str, name: &str) -> Option<String> {
    let mut ints: Vec<(char, usize)> = Vec::new();
    let mut rest = None;
    let mut parts = name.split('.');
    for p in pattern.split('.') {
        if p == "*" {
            let tail: Vec<&str> = parts.by_ref().collect();
            if tail.is_empty() {
                return None;
            }
            rest = Some(tail.join("."));
            break;
        }
        let seg = parts.next()?;
        match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(var) => {
                let value: usize = seg.parse().ok()?;
                ints.push((var.chars().next()?, value));
            }
            None if p == seg => {}
            None => return None,
        }
    }
    if rest.is_none() && parts.next().is_some() {
        return None;
    }
    let mut out = replacement.to_string();
    for (var, value) in ints {
        out = out.replace(&format!("{{{var}+1}}"), &(value + 1).to_string());
        out = out.replace(&format!("{{{var}}}"), &value.to_string());
    }
    if let Some(rest) = rest {
        out = out.replace('*', &rest);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transformers_names_map_to_torchvision() {
        let cases = [
            (
                "resnet.embedder.embedder.convolution.weight",
                "conv1.weight",
            ),
            (
                "resnet.embedder.embedder.normalization.running_var",
                "bn1.running_var",
            ),
            (
                "resnet.encoder.stages.0.layers.0.layer.2.convolution.weight",
                "layer1.0.conv3.weight",
            ),
            (
                "resnet.encoder.stages.3.layers.2.layer.0.normalization.bias",
                "layer4.2.bn1.bias",
            ),
            (
                "resnet.encoder.stages.1.layers.0.shortcut.convolution.weight",
                "layer2.0.downsample.0.weight",
            ),
            (
                "resnet.encoder.stages.1.layers.0.shortcut.normalization.num_batches_tracked",
                "layer2.0.downsample.1.num_batches_tracked",
            ),
            ("classifier.1.weight", "fc.weight"),
            (
                "encoder.stages.2.layers.5.layer.1.convolution.weight",
                "layer3.5.conv2.weight",
            ),
        ];
        for (hf, tv) in cases {
            assert_eq!(
                map_name(Scheme::Transformers, hf).as_deref(),
                Some(tv),
                "{hf}"
            );
        }
        for unmapped in [
            "resnet.pooler.weight",
            "classifier.2.weight",
            "resnet.encoder.stages.x.layers.0.layer.0.convolution.weight",
            "resnet.embedder.embedder.convolution.weight.extra",
        ] {
            assert_eq!(map_name(Scheme::Transformers, unmapped), None, "{unmapped}");
        }
    }

    #[test]
    fn timm_resnetv2_names_map_to_ours() {
        let cases = [
            ("stem.conv.weight", "conv1.weight"),
            (
                "stages.0.blocks.0.downsample.conv.weight",
                "layer1.0.downsample.0.weight",
            ),
            (
                "stages.3.blocks.2.norm1.running_var",
                "layer4.2.norm1.running_var",
            ),
            ("stages.2.blocks.22.conv3.weight", "layer3.22.conv3.weight"),
            (
                "stages.1.blocks.0.norm3.num_batches_tracked",
                "layer2.0.norm3.num_batches_tracked",
            ),
            ("norm.weight", "norm.weight"),
            ("head.fc.bias", "fc.bias"),
        ];
        for (timm, ours) in cases {
            assert_eq!(
                map_name(Scheme::TimmResNetV2, timm).as_deref(),
                Some(ours),
                "{timm}"
            );
        }
        // A non-pre-activation ResNetV2 has a norm in its stem; we have no such model, so it stays
        // unmapped (and its `downsample.norm` maps to a name we do not expect): the load reports both.
        for unmapped in [
            "stem.norm.weight",
            "stages.x.blocks.0.conv1.weight",
            "head.weight",
        ] {
            assert_eq!(map_name(Scheme::TimmResNetV2, unmapped), None, "{unmapped}");
        }
        assert_eq!(
            detect(["stem.conv.weight", "stages.0.blocks.0.norm1.weight"]),
            Scheme::TimmResNetV2
        );
    }

    #[test]
    fn detection_looks_at_the_keys() {
        assert_eq!(detect(["conv1.weight", "fc.bias"]), Scheme::Torchvision);
        assert_eq!(
            detect(["resnet.embedder.embedder.convolution.weight"]),
            Scheme::Transformers
        );
        assert_eq!(
            detect(["embedder.embedder.convolution.weight"]),
            Scheme::Transformers
        );
        assert_eq!(
            map_name(Scheme::Torchvision, "layer1.0.conv1.weight").as_deref(),
            Some("layer1.0.conv1.weight")
        );
    }
}
