//! "Did you mean …?" for misspelt keys, keywords and names.
//!
//! Owns one thing: picking the closest candidate to a word the user wrote,
//! by optimal-string-alignment distance (Levenshtein plus adjacent
//! transpositions, so `restrat` is one edit from `restart`). Pure; no I/O.

use std::cmp::Reverse;

/// The candidate closest to `word`, when it is close enough to be a likely
/// typo.
pub(super) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let word = word.to_ascii_lowercase();
    // Short words tolerate one edit; longer ones a third of their length, at most 3.
    let limit = (word.chars().count() / 3).clamp(1, 3);
    // Ties go to the longer common prefix: "htp" is "http" more than "ftp".
    candidates
        .iter()
        .map(|c| {
            let c_lower = c.to_ascii_lowercase();
            let prefix = word
                .chars()
                .zip(c_lower.chars())
                .take_while(|(a, b)| a == b)
                .count();
            (distance(&word, &c_lower), Reverse(prefix), *c)
        })
        .filter(|(d, _, _)| *d <= limit)
        .min_by_key(|(d, prefix, _)| (*d, *prefix))
        .map(|(_, _, c)| c)
}

/// ` (did you mean "x"?)` or an empty string.
pub(super) fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    match closest(word, candidates) {
        Some(c) => format!(" (did you mean \"{c}\"?)"),
        None => String::new(),
    }
}

/// `"a", "b", "c"`: a list for messages.
pub(super) fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Optimal string alignment distance between `a` and `b`, in chars.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposition_is_one_edit() {
        assert_eq!(distance("restrat", "restart"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["name", "command", "restart", "instances"];
        assert_eq!(closest("restrat", &keys), Some("restart"));
        assert_eq!(closest("instance", &keys), Some("instances"));
        assert_eq!(closest("Name", &keys), Some("name"));
        assert_eq!(closest("htp", &["ftp", "http"]), Some("http"));
        assert_eq!(closest("frobnicate", &keys), None);
        assert_eq!(
            did_you_mean("comand", &keys),
            " (did you mean \"command\"?)"
        );
        assert_eq!(did_you_mean("zzz", &keys), "");
    }
}
