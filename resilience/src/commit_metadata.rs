//! Completed-beyond-the-commit-point offsets, carried in the commit's
//! metadata string so a restart or rebalance does not redo finished work.
//!
//! Format `rs1:<base64url>`: unsigned varints for alternating run lengths,
//! starting with a run of *not done* offsets counted from the committed
//! offset: `{12, 13, 16}` above commit point 10 is runs `[2, 2, 2, 1]`.
//! Decoding yields ranges (never a set sized by a number in the string), so
//! hostile metadata cannot make us allocate more than its own length.

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const PREFIX: &str = "rs1:";

/// Kafka's default `offset.metadata.max.bytes`.
pub const DEFAULT_METADATA_LIMIT: usize = 4096;

/// The encoding would not fit the broker's metadata limit: the runtime
/// should apply backpressure on the partition rather than drop the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the completed-offset map needs {needed} bytes of commit metadata; the limit is {limit}")]
pub struct TooLarge {
    pub needed: usize,
    pub limit: usize,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Encode the offsets `done` (all ≥ `commit_point`), within `limit` bytes.
///
/// # Errors
/// [`TooLarge`] when the string would exceed `limit`.
pub fn encode(commit_point: i64, done: &BTreeSet<i64>, limit: usize) -> Result<String, TooLarge> {
    let ranges = ranges_of(done.range(commit_point..).copied());
    let (s, fitted) = encode_ranges(commit_point, &ranges, usize::MAX);
    if s.len() > limit {
        return Err(TooLarge {
            needed: s.len(),
            limit,
        });
    }
    debug_assert_eq!(fitted, ranges.len());
    Ok(s)
}

/// Sorted offsets as half-open ranges of consecutive offsets.
pub fn ranges_of(sorted: impl IntoIterator<Item = i64>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for o in sorted {
        match out.last_mut() {
            Some((_, end)) if *end == o => *end += 1,
            _ => out.push((o, o + 1)),
        }
    }
    out
}

/// Sorted, possibly overlapping ranges → sorted, disjoint, non-adjacent ones.
pub fn merge_ranges(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges.into_iter().filter(|(s, e)| s < e) {
        match out.last_mut() {
            Some((_, end)) if s <= *end => *end = (*end).max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Encode as many of `ranges` (sorted, disjoint, all ≥ `commit_point`) as
/// fit in `limit` bytes, lowest first. Returns the string and how many
/// ranges it holds: leaving some out is safe (that work is merely redone
/// after a restart); the caller should apply backpressure when it happens.
pub fn encode_ranges(commit_point: i64, ranges: &[(i64, i64)], limit: usize) -> (String, usize) {
    // base64 without padding: 4 characters per 3 bytes, rounded up.
    let fits = |bytes: usize| PREFIX.len() + (bytes * 4).div_ceil(3) <= limit;
    let mut runs: Vec<u8> = Vec::new();
    let mut cursor = commit_point;
    let mut taken = 0;
    for &(start, end) in ranges {
        if start < cursor || end <= start {
            break; // not sorted/disjoint or below the point: stop, never corrupt
        }
        let before = runs.len();
        put_varint(&mut runs, (start - cursor) as u64);
        put_varint(&mut runs, (end - start) as u64);
        if !fits(runs.len()) {
            runs.truncate(before);
            break;
        }
        cursor = end;
        taken += 1;
    }
    if runs.is_empty() {
        return (String::new(), 0);
    }
    (format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&runs)), taken)
}

/// Offsets already done beyond `committed`, as half-open ranges. Unknown
/// or malformed metadata (another client's, or damaged) means "none".
pub fn decode(committed: i64, metadata: &str) -> Vec<(i64, i64)> {
    let Some(b64) = metadata.strip_prefix(PREFIX) else {
        return Vec::new();
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(b64) else {
        return Vec::new();
    };
    let mut input = bytes.as_slice();
    let mut ranges = Vec::new();
    let mut cursor = committed;
    while !input.is_empty() {
        let (Some(skip), Some(len)) = (get_varint(&mut input), get_varint(&mut input)) else {
            return Vec::new();
        };
        let (Ok(skip), Ok(len)) = (i64::try_from(skip), i64::try_from(len)) else {
            return Vec::new();
        };
        let Some(start) = cursor.checked_add(skip) else {
            return Vec::new();
        };
        let Some(end) = start.checked_add(len) else {
            return Vec::new();
        };
        if len == 0 {
            return Vec::new();
        }
        ranges.push((start, end));
        cursor = end;
    }
    ranges
}

/// Is `offset` inside one of `ranges` (sorted, as [`decode`] returns them)?
pub fn is_done(ranges: &[(i64, i64)], offset: i64) -> bool {
    let i = ranges.partition_point(|(_, end)| *end <= offset);
    ranges.get(i).is_some_and(|(start, _)| *start <= offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn example_runs() {
        let done: BTreeSet<i64> = [12, 13, 16].into_iter().collect();
        let s = encode(10, &done, 4096).unwrap();
        assert!(s.starts_with("rs1:"));
        assert_eq!(decode(10, &s), vec![(12, 14), (16, 17)]);
        assert!(is_done(&decode(10, &s), 13));
        assert!(!is_done(&decode(10, &s), 14));
        assert_eq!(encode(10, &BTreeSet::new(), 4096).unwrap(), "");
    }

    #[test]
    fn over_the_limit_is_an_error_not_a_truncation() {
        let done: BTreeSet<i64> = (0..10_000).map(|i| i * 2 + 1).collect();
        let err = encode(0, &done, 4096).unwrap_err();
        assert!(err.needed > 4096);
    }

    #[test]
    fn foreign_or_hostile_metadata_means_nothing_done() {
        assert!(decode(0, "some other client's note").is_empty());
        assert!(decode(0, "rs1:!!!").is_empty());
        // a run of u64::MAX would overflow: rejected without allocating
        let mut bytes = Vec::new();
        put_varint(&mut bytes, 0);
        put_varint(&mut bytes, u64::MAX);
        assert!(decode(5, &format!("rs1:{}", URL_SAFE_NO_PAD.encode(bytes))).is_empty());
    }

    proptest! {
        #[test]
        fn round_trips(point in 0i64..1_000_000, offs in prop::collection::btree_set(0i64..5_000, 0..300)) {
            let done: BTreeSet<i64> = offs.iter().map(|o| point + o).collect();
            let s = encode(point, &done, usize::MAX).unwrap();
            let ranges = decode(point, &s);
            for o in point..point + 5_000 {
                prop_assert_eq!(is_done(&ranges, o), done.contains(&o), "offset {}", o);
            }
        }

        #[test]
        fn truncated_encodings_stay_within_the_limit_and_keep_a_prefix(
            point in 0i64..1_000,
            offs in prop::collection::btree_set(0i64..20_000, 0..2_000),
            limit in 8usize..600,
        ) {
            let ranges = ranges_of(offs.iter().map(|o| point + o));
            let (s, taken) = encode_ranges(point, &ranges, limit);
            prop_assert!(s.len() <= limit);
            prop_assert_eq!(decode(point, &s), ranges[..taken].to_vec());
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,64}", committed in any::<i64>()) {
            let _ = decode(committed, &s);
            let _ = decode(committed, &format!("rs1:{s}"));
        }
    }
}
