//! "Did you mean": the known name nearest to a misspelled one, for the
//! configuration errors of every crate and the CLI (one copy).

/// The name in `known` nearest to `name`, if it is a near miss: at most
/// a quarter of the candidate's length (at least 2) letters swapped,
/// missing, extra or changed. `None` when nothing is that close (or
/// `name` is itself known: then it was not a misspelling).
///
/// ```
/// let known = ["bootstrap.servers", "group.id", "client.id"];
/// assert_eq!(kafka_wire::suggest::nearest("bootstrap.server", known), Some("bootstrap.servers"));
/// assert_eq!(kafka_wire::suggest::nearest("grpu.id", known), Some("group.id"));
/// assert_eq!(kafka_wire::suggest::nearest("linger.ms", known), None);
/// ```
pub fn nearest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &'a str)> = None;
    for k in known {
        let d = edit_distance(name, k);
        if d == 0 {
            return None; // known: not a misspelling
        }
        if d <= (k.len() / 4).max(2) && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k)
}

/// Levenshtein distance between `a` and `b` in characters, with a
/// transposition of two neighbours costing 1 (optimal string alignment).
/// Quadratic in the lengths: meant for property names, not documents.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
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
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("acb", "abc"), 1, "a transposition costs 1");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn a_known_name_is_no_suggestion() {
        assert_eq!(nearest("group.id", ["group.id", "group.ids"]), None);
    }
}
