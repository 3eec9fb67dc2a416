//! "Did you mean" suggestions for mistyped names.

/// Edit distance between two strings, by characters: insertions, deletions, substitutions and
/// transpositions of neighbours (optimal string alignment), so `resnet05` is 1 from `resnet50`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j] = distance between a[..i] and b[..j]
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The known names closest to `name` (at most 3, within a distance of a third of the name's
/// length, at least 2), best first.
pub fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = known
        .map(|k| (edit_distance(&name.to_lowercase(), k), k))
        .filter(|&(d, _)| d <= limit)
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, k)| k).collect()
}

/// `" (did you mean 'a' or 'b'?)"`, or an empty string when nothing is close.
pub fn did_you_mean<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let close = closest(name, known);
    if close.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = close.iter().map(|k| format!("'{k}'")).collect();
        format!(" (did you mean {}?)", quoted.join(" or "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(edit_distance("resnet50", "resnet50"), 0);
        assert_eq!(edit_distance("resnt50", "resnet50"), 1);
        assert_eq!(edit_distance("resnet05", "resnet50"), 1);
        assert_eq!(edit_distance("abc", "ca"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn suggests_nearest_names_only() {
        let known = ["resnet18", "resnet34", "resnet50", "resnet101"];
        assert_eq!(closest("resnet51", known.iter().copied())[0], "resnet50");
        assert_eq!(did_you_mean("vgg", known.iter().copied()), "");
        assert!(did_you_mean("ResNet50", known.iter().copied()).contains("'resnet50'"));
    }
}
