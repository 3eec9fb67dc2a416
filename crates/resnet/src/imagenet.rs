//! The 1000 ImageNet-1k class names, as torchvision's `weights.meta["categories"]` lists them, and
//! the top-k classes of logits labelled with them ([`top_k`]) or with a caller's own labels.

use std::sync::LazyLock;

use candle_core::{DType, Result, Tensor};

static CLASSES: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| include_str!("imagenet_classes.txt").lines().collect());

/// The 1000 class names, index = class id.
pub fn classes() -> &'static [&'static str] {
    &CLASSES
}

/// The name of class `index`, or `None` past 999.
pub fn label(index: usize) -> Option<&'static str> {
    CLASSES.get(index).copied()
}

/// One class of a top-k answer.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Prediction {
    pub index: usize,
    pub label: String,
    pub probability: f32,
}

/// The `k` most probable classes of each row of `logits` (`[N, classes]`), best first, with softmax
/// probabilities computed in f32. Ties keep the lower class index first. Labels are ImageNet's
/// when there are 1000 classes, `class N` otherwise (a CIFAR head's class 1 is not a goldfish).
pub fn top_k(logits: &Tensor, k: usize) -> Result<Vec<Vec<Prediction>>> {
    let imagenet = logits.dims().last() == Some(&classes().len());
    top_k_labeled(logits, k, |index| {
        imagenet
            .then(|| label(index))
            .flatten()
            .map_or_else(|| format!("class {index}"), str::to_string)
    })
}

/// [`top_k`] with one label per class, in class order: `labels.len()` must equal the number of
/// classes (columns of `logits`).
pub fn top_k_with_labels(
    logits: &Tensor,
    k: usize,
    labels: &[String],
) -> Result<Vec<Vec<Prediction>>> {
    let classes = logits.dims().last().copied().unwrap_or(0);
    if labels.len() != classes {
        candle_core::bail!(
            "{} labels for a model with {classes} classes: give one label per class",
            labels.len()
        );
    }
    top_k_labeled(logits, k, |index| labels[index].clone())
}

fn top_k_labeled(
    logits: &Tensor,
    k: usize,
    label: impl Fn(usize) -> String,
) -> Result<Vec<Vec<Prediction>>> {
    let probs = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
    let rows = probs.to_vec2::<f32>()?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            order
                .into_iter()
                .take(k)
                .map(|index| Prediction {
                    index,
                    label: label(index),
                    probability: row[index],
                })
                .collect()
        })
        .collect())
}

/// [`top_k_with_labels`] with `Some(labels)`, [`top_k`] with `None`.
pub fn top_k_labelled(
    logits: &Tensor,
    k: usize,
    labels: Option<&[String]>,
) -> Result<Vec<Vec<Prediction>>> {
    match labels {
        Some(labels) => top_k_with_labels(logits, k, labels),
        None => top_k(logits, k),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use candle_core::Device;

    use super::*;

    #[test]
    fn has_the_thousand_torchvision_names() {
        assert_eq!(classes().len(), 1000);
        assert_eq!(label(0), Some("tench"));
        assert_eq!(label(281), Some("tabby"));
        assert_eq!(label(999), Some("toilet tissue"));
        assert_eq!(label(1000), None);
    }

    #[test]
    fn labels_are_imagenet_only_for_1000_classes() {
        let ten = Tensor::arange(0f32, 10., &Device::Cpu)
            .unwrap()
            .reshape((1, 10))
            .unwrap();
        let top = top_k(&ten, 2).unwrap();
        assert_eq!(top[0][0].index, 9);
        assert_eq!(top[0][0].label, "class 9");
        let mut v = vec![0f32; 1000];
        v[1] = 5.0;
        let thousand = Tensor::from_vec(v, (1, 1000), &Device::Cpu).unwrap();
        assert_eq!(top_k(&thousand, 1).unwrap()[0][0].label, "goldfish");
        let labels: Vec<String> = (0..10).map(|i| format!("digit {i}")).collect();
        let named = top_k_with_labels(&ten, 1, &labels).unwrap();
        assert_eq!(named[0][0].label, "digit 9");
        let err = top_k_with_labels(&ten, 1, &labels[..3]).unwrap_err();
        assert!(
            err.to_string()
                .contains("3 labels for a model with 10 classes"),
            "{err}"
        );
    }
}
