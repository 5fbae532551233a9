//! Turning one partition's fetch response into records (pure).
//!
//! - CRC-checked lazy decoding ([`kafka_wire::records`]); a corrupt batch is
//!   an error naming topic, partition and offset, and none of its records
//!   are returned.
//! - Records below the fetch position are dropped (a compressed batch can
//!   start before it).
//! - `read_committed`: batches of aborted transactions are skipped using the
//!   response's aborted-transaction list, and control batches (markers) are
//!   never returned. The position still moves past them.

use std::collections::{BTreeMap, HashSet};

use kafka_wire::messages::fetch_response::PartitionData;
use kafka_wire::records::{BatchReader, ControlType, Record};
use kafka_wire::Error;

use crate::config::IsolationLevel;
use crate::tp::TopicPartition;

/// Records decoded from one partition's fetch.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    pub records: Vec<Record>,
    /// Where the next fetch starts: past every batch seen, including
    /// control and aborted ones.
    pub next_offset: i64,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// Leader epoch of the last batch seen (-1 if none): sent back as
    /// `last_fetched_epoch` so the broker can detect divergence (KIP-320).
    pub last_epoch: i32,
}

/// KIP-320: the broker says our log diverged from the leader's (the leader
/// changed and truncated). Returns the offset to truncate our position to,
/// when the divergence point is below it.
pub fn truncation_point(
    position: i64,
    diverging_epoch: i32,
    diverging_end_offset: i64,
) -> Option<i64> {
    (diverging_epoch >= 0 && diverging_end_offset >= 0 && diverging_end_offset < position)
        .then_some(diverging_end_offset)
}

/// Decode `data` fetched from `position`.
///
/// # Errors
/// [`Error::CorruptBatch`] naming the partition and the batch's offset.
pub fn decode_partition(
    tp: &TopicPartition,
    data: &PartitionData,
    position: i64,
    isolation: IsolationLevel,
    max_decompressed: usize,
) -> Result<Decoded, Error> {
    let mut out = Decoded {
        records: Vec::new(),
        next_offset: position,
        high_watermark: data.high_watermark,
        last_stable_offset: data.last_stable_offset,
        last_epoch: -1,
    };
    // Aborted transactions: producer id → first offsets, sorted.
    let mut aborted: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    if isolation == IsolationLevel::ReadCommitted {
        for a in data.aborted_transactions.iter().flatten() {
            aborted
                .entry(a.producer_id.0)
                .or_default()
                .push(a.first_offset);
        }
        for offsets in aborted.values_mut() {
            offsets.sort_unstable();
        }
    }
    // Producers whose current transaction (at this point of the log) aborted.
    let mut active_aborts: HashSet<i64> = HashSet::new();

    let Some(bytes) = data.records.clone() else {
        return Ok(out);
    };
    let mut reader = BatchReader::new(bytes);
    loop {
        let base = reader.peek_base_offset();
        let batch = match reader.next() {
            None => break,
            Some(Ok(b)) => b,
            Some(Err(source)) => {
                return Err(Error::CorruptBatch {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: base.unwrap_or(out.next_offset),
                    source,
                })
            }
        };
        if batch.next_offset() <= position {
            continue; // entirely before our position
        }
        out.last_epoch = batch.partition_leader_epoch;
        let corrupt = |source| Error::CorruptBatch {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset: batch.base_offset,
            source,
        };
        if isolation == IsolationLevel::ReadCommitted && batch.is_transactional() {
            // A transaction starting at or before this batch that later aborted?
            if let Some(firsts) = aborted.get_mut(&batch.producer_id) {
                while firsts.first().is_some_and(|f| *f <= batch.base_offset) {
                    firsts.remove(0);
                    active_aborts.insert(batch.producer_id);
                }
            }
            if batch.is_control() {
                for r in batch.records(max_decompressed).map_err(corrupt)? {
                    let r = r.map_err(corrupt)?;
                    if matches!(
                        r.control_type(),
                        Some(ControlType::Abort | ControlType::Commit)
                    ) {
                        active_aborts.remove(&batch.producer_id);
                    }
                }
                out.next_offset = batch.next_offset();
                continue;
            }
            if active_aborts.contains(&batch.producer_id) {
                out.next_offset = batch.next_offset();
                continue;
            }
        }
        if batch.is_control() {
            out.next_offset = batch.next_offset();
            continue; // markers are never delivered
        }
        for r in batch.records(max_decompressed).map_err(corrupt)? {
            let r = r.map_err(corrupt)?;
            if r.offset >= position {
                out.records.push(r);
            }
        }
        out.next_offset = batch.next_offset();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_wire::messages::fetch_response::AbortedTransaction;
    use kafka_wire::messages::ProducerId;
    use kafka_wire::records::{encode_batch, BatchOptions, NewRecord};

    fn rec(v: &str) -> NewRecord {
        NewRecord {
            value: Some(Bytes::from(v.to_string())),
            ..NewRecord::default()
        }
    }

    fn marker(commit: bool) -> NewRecord {
        NewRecord {
            key: Some(Bytes::from_static(if commit {
                &[0, 0, 0, 1]
            } else {
                &[0, 0, 0, 0]
            })),
            value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
            ..NewRecord::default()
        }
    }

    /// Offsets: 0-1 txn A (pid 1, committed), 2 commit marker, 3-4 txn B
    /// (pid 1, aborted), 5 abort marker, 6 plain record.
    fn log() -> Bytes {
        let mut b = BytesMut::new();
        let txn = |base, control| BatchOptions {
            base_offset: base,
            producer_id: 1,
            producer_epoch: 0,
            base_sequence: 0,
            transactional: true,
            control,
            ..BatchOptions::default()
        };
        encode_batch(&mut b, &txn(0, false), &[rec("a0"), rec("a1")]);
        encode_batch(&mut b, &txn(2, true), &[marker(true)]);
        encode_batch(&mut b, &txn(3, false), &[rec("b0"), rec("b1")]);
        encode_batch(&mut b, &txn(5, true), &[marker(false)]);
        encode_batch(
            &mut b,
            &BatchOptions {
                base_offset: 6,
                ..BatchOptions::default()
            },
            &[rec("c")],
        );
        b.freeze()
    }

    fn data(aborted: Vec<(i64, i64)>) -> PartitionData {
        PartitionData::default()
            .with_high_watermark(7)
            .with_records(Some(log()))
            .with_aborted_transactions(Some(
                aborted
                    .into_iter()
                    .map(|(pid, first)| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(pid))
                            .with_first_offset(first)
                    })
                    .collect(),
            ))
    }

    fn values(d: &Decoded) -> Vec<String> {
        d.records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect()
    }

    /// Decode the test log (aborted transactions `aborted`) from `position`.
    fn decode_log(aborted: Vec<(i64, i64)>, position: i64, isolation: IsolationLevel) -> Decoded {
        let tp = TopicPartition::new("t", 0);
        decode_partition(&tp, &data(aborted), position, isolation, 1 << 20).unwrap()
    }

    #[test]
    fn read_committed_skips_aborted_and_markers() {
        let d = decode_log(vec![(1, 3)], 0, IsolationLevel::ReadCommitted);
        assert_eq!(values(&d), ["a0", "a1", "c"]);
        assert_eq!(d.next_offset, 7);
    }

    #[test]
    fn read_uncommitted_returns_all_data_but_never_markers() {
        let d = decode_log(vec![], 0, IsolationLevel::ReadUncommitted);
        assert_eq!(values(&d), ["a0", "a1", "b0", "b1", "c"]);
        assert_eq!(d.next_offset, 7);
    }

    #[test]
    fn records_before_the_position_are_dropped() {
        let d = decode_log(vec![], 1, IsolationLevel::ReadUncommitted);
        assert_eq!(values(&d)[0], "a1");
    }

    #[test]
    fn truncation_is_detected_only_below_the_position() {
        // The new leader's log for our last epoch ends at 90: we read to 100.
        assert_eq!(truncation_point(100, 4, 90), Some(90));
        assert_eq!(
            truncation_point(100, 4, 100),
            None,
            "no divergence below us"
        );
        assert_eq!(truncation_point(100, -1, -1), None, "the broker sent none");
    }

    #[test]
    fn last_epoch_comes_from_the_batches() {
        let tp = TopicPartition::new("t", 0);
        let mut b = BytesMut::new();
        encode_batch(
            &mut b,
            &BatchOptions {
                partition_leader_epoch: 7,
                ..BatchOptions::default()
            },
            &[rec("x")],
        );
        let d = PartitionData::default().with_records(Some(b.freeze()));
        let out = decode_partition(&tp, &d, 0, IsolationLevel::ReadUncommitted, 1 << 20).unwrap();
        assert_eq!(out.last_epoch, 7);
    }

    #[test]
    fn corrupt_batch_names_partition_and_offset_and_returns_nothing() {
        let tp = TopicPartition::new("orders", 3);
        let mut bytes = BytesMut::from(&log()[..]);
        let n = bytes.len();
        bytes[n - 2] ^= 0xff; // damage the last batch
        let d = PartitionData::default().with_records(Some(bytes.freeze()));
        let err =
            decode_partition(&tp, &d, 0, IsolationLevel::ReadUncommitted, 1 << 20).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("orders-3") && text.contains("offset 6"),
            "{text}"
        );
    }
}
