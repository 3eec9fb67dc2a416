//! The 1000 ImageNet-1k class names, as torchvision's `weights.meta["categories"]` lists them.

use std::sync::LazyLock;

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

#[cfg(test)]
mod tests {
    #[test]
    fn has_the_thousand_torchvision_names() {
        assert_eq!(super::classes().len(), 1000);
        assert_eq!(super::label(0), Some("tench"));
        assert_eq!(super::label(281), Some("tabby"));
        assert_eq!(super::label(999), Some("toilet tissue"));
        assert_eq!(super::label(1000), None);
    }
}
