//! One partition of a ShareFetch answer → its acquired offsets (pure).
//!
//! The broker sends whole record batches (KIP-932: it does not look
//! inside them) and, separately, the ranges it acquired for this member,
//! each with a delivery count. Only records inside those ranges are this
//! member's; acquired offsets with no record (a control record, an offset
//! compaction removed) are gaps the member acknowledges as GAP so the
//! broker stops tracking them. Batches are CRC-checked: a corrupt one
//! ends decoding, and the acquired offsets not decoded are reported as
//! such (the fetcher releases them).

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_wire::messages::share_fetch_response::AcquiredRecords;
use kafka_wire::records::{BatchReader, Record};

use super::TopicIdPartition;

/// Acquired offsets one partition of one answer may name: a broker holds
/// at most `group.share.partition.max.record.locks` (default 2000, at most
/// 10000 by its own validation). A range beyond this is malformed and
/// dropped, so a hostile range cannot make decoding loop over 2^63
/// offsets.
const MAX_ACQUIRED_PER_PARTITION: i64 = 100_000;

/// What an acquired offset holds.
#[derive(Debug)]
pub(crate) enum Found {
    Record(Record),
    /// No record at this offset.
    Gap,
    /// After a corrupt batch: not known.
    Undecoded,
}

/// Each acquired offset of `tip`, ascending, with its delivery count (at
/// least 1) and what `records` hold there.
pub(crate) fn decode(
    tip: &TopicIdPartition,
    records: Option<Bytes>,
    ranges: &[AcquiredRecords],
    max_decompressed: usize,
) -> Vec<(i64, u16, Found)> {
    let mut wanted: BTreeMap<i64, u16> = BTreeMap::new();
    let mut total = 0i64;
    for r in ranges {
        let len = r
            .last_offset
            .saturating_sub(r.first_offset)
            .saturating_add(1);
        if r.first_offset < 0 || len <= 0 || total + len > MAX_ACQUIRED_PER_PARTITION {
            tracing::warn!(%tip, first = r.first_offset, last = r.last_offset,
                "ignoring a malformed acquired-records range");
            continue;
        }
        total += len;
        let count = u16::try_from(r.delivery_count.max(1)).unwrap_or(1);
        for off in r.first_offset..=r.last_offset {
            wanted.insert(off, count);
        }
    }
    let (Some(&lo), Some(&hi)) = (wanted.keys().next(), wanted.keys().next_back()) else {
        return Vec::new();
    };
    let mut found: BTreeMap<i64, Record> = BTreeMap::new();
    let mut corrupt = None;
    'batches: for batch in BatchReader::new(records.unwrap_or_default()) {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                corrupt = Some(e);
                break;
            }
        };
        if batch.last_offset() < lo {
            continue;
        }
        if batch.base_offset > hi {
            break;
        }
        if batch.is_control() {
            continue; // its offsets stay unfound: gaps
        }
        let iter = match batch.records(max_decompressed) {
            Ok(i) => i,
            Err(e) => {
                corrupt = Some(e);
                break;
            }
        };
        for r in iter {
            match r {
                Ok(r) if wanted.contains_key(&r.offset) => {
                    found.insert(r.offset, r);
                }
                Ok(_) => {}
                Err(e) => {
                    corrupt = Some(e);
                    break 'batches;
                }
            }
        }
    }
    if let Some(e) = &corrupt {
        tracing::warn!(%tip, error = %e,
            "corrupt record batch in a ShareFetch answer; releasing the records not decoded");
    }
    wanted
        .into_iter()
        .map(|(off, count)| {
            let what = match found.remove(&off) {
                Some(r) => Found::Record(r),
                None if corrupt.is_some() => Found::Undecoded,
                None => Found::Gap,
            };
            (off, count, what)
        })
        .collect()
}

/// Acknowledgements (ascending offsets, wire types) as batches: each
/// maximal run of consecutive offsets is one batch, with one type when
/// the run is uniform, else one type per offset (KIP-932's two forms).
pub(crate) fn batches(acks: &[(i64, i8)]) -> Vec<(i64, i64, Vec<i8>)> {
    let mut out: Vec<(i64, i64, Vec<i8>)> = Vec::new();
    for &(off, ty) in acks {
        match out.last_mut() {
            Some((_, last, types)) if *last + 1 == off => {
                *last = off;
                types.push(ty);
            }
            _ => out.push((off, off, vec![ty])),
        }
    }
    for (_, _, types) in &mut out {
        if types.iter().all(|t| *t == types[0]) {
            types.truncate(1);
        }
    }
    out
}
