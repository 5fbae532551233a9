//! Turning one partition's fetch response into records (pure).
//!
//! - Decoded as taken, one batch at a time ([`PartitionCursor`]), so memory
//!   does not grow with the compression ratio.
//! - CRC-checked ([`kafka_wire::records`]); a corrupt batch is an error
//!   naming topic, partition and offset, and none of its records are
//!   returned.
//! - Records below the fetch position are dropped (a compressed batch can
//!   start before it).
//! - `read_committed`: batches of aborted transactions are skipped using the
//!   response's aborted-transaction list, and control batches (markers) are
//!   never returned. The position still moves past them.

use std::collections::{BTreeMap, HashSet, VecDeque};

use kafka_wire::messages::fetch_response::PartitionData;
use kafka_wire::records::{BatchReader, ControlType, Record};
use kafka_wire::Error;

use crate::config::IsolationLevel;
use crate::tp::TopicPartition;

/// Records reserved for one batch at most on its own claim (≈ 0.5 MB of
/// `Record`s): a hostile `record_count` cannot make the poll's vector
/// allocate more; a larger real batch grows it as it decodes.
const RESERVE_RECORDS: usize = 4096;

/// One partition's fetched data, decoded as it is taken.
///
/// Only one batch is decompressed and decoded at a time, so the memory a
/// buffered response holds is its compressed bytes plus one batch, however
/// well it compresses (eagerly inflating a whole 1 MB lz4 response of
/// repetitive values took hundreds of MB per partition). A batch's records
/// are decoded all at once before any is handed out, so a batch with a bad
/// record is never partly delivered.
#[derive(Debug)]
pub struct PartitionCursor {
    reader: BatchReader,
    /// The fetch position: records below it are dropped.
    position: i64,
    isolation: IsolationLevel,
    max_decompressed: usize,
    /// Aborted transactions: producer id → first offsets, sorted, consumed
    /// from the front as the log passes them (a deque: each is popped in
    /// O(1), so a response listing n aborts costs O(n log n), not the
    /// O(n²) of `Vec::remove(0)`).
    aborted: BTreeMap<i64, VecDeque<i64>>,
    /// Producers whose current transaction (at this point of the log) aborted.
    active_aborts: HashSet<i64>,
    /// The decoded records of the current batch not handed out yet.
    current: VecDeque<Record>,
    /// Past every batch decoded so far, including control and aborted ones.
    next_offset: i64,
    /// Leader epoch of the last batch seen (-1 if none): sent back as
    /// `last_fetched_epoch` so the broker can detect divergence (KIP-320).
    pub last_epoch: i32,
    /// A corrupt batch found after some records were taken: the next
    /// `take` returns it.
    failed: Option<Error>,
    /// Nothing more comes out (exhausted, or a corrupt batch reported):
    /// never read past a corrupt batch.
    done: bool,
}

impl PartitionCursor {
    /// A cursor over `data`, fetched from `position`.
    pub fn new(
        data: &PartitionData,
        position: i64,
        isolation: IsolationLevel,
        max_decompressed: usize,
    ) -> Self {
        let mut aborted: BTreeMap<i64, VecDeque<i64>> = BTreeMap::new();
        if isolation == IsolationLevel::ReadCommitted {
            let mut by_producer: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            for a in data.aborted_transactions.iter().flatten() {
                by_producer
                    .entry(a.producer_id.0)
                    .or_default()
                    .push(a.first_offset);
            }
            for (pid, mut offsets) in by_producer {
                offsets.sort_unstable();
                aborted.insert(pid, VecDeque::from(offsets));
            }
        }
        Self {
            reader: BatchReader::new(data.records.clone().unwrap_or_default()),
            position,
            isolation,
            max_decompressed,
            aborted,
            active_aborts: HashSet::new(),
            current: VecDeque::new(),
            next_offset: position,
            last_epoch: -1,
            failed: None,
            done: false,
        }
    }

    /// Whether the response held no bytes at all (nothing to buffer).
    pub fn is_empty_response(&self) -> bool {
        self.reader.peek_base_offset().is_none()
    }

    /// Everything was taken (and any error reported): drop it.
    pub fn is_finished(&self) -> bool {
        self.done && self.current.is_empty() && self.failed.is_none()
    }

    /// Where a fetch should resume after what was taken: the next record
    /// not handed out, or past every batch decoded.
    pub fn position(&self) -> i64 {
        self.current.front().map_or(self.next_offset, |r| r.offset)
    }

    /// Up to `max` records, in order. Empty when nothing is left.
    ///
    /// # Errors
    /// [`Error::CorruptBatch`] naming the partition and the batch's offset;
    /// the records of the good batches before it come first (taken with
    /// the next call), and [`PartitionCursor::position`] stays at the bad
    /// batch.
    pub fn take(&mut self, tp: &TopicPartition, max: usize) -> Result<Vec<Record>, Error> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        // What is left of the last batch first, then batches decoded
        // straight into `out`; the part of the last one past `max` waits.
        let n = max.min(self.current.len());
        let mut out: Vec<Record> = self.current.drain(..n).collect();
        while out.len() < max && !self.done {
            match self.decode_next_batch(tp, &mut out, max) {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(e) => {
                    self.done = true;
                    if out.is_empty() {
                        return Err(e);
                    }
                    self.failed = Some(e); // after the good records
                }
            }
        }
        if out.len() > max {
            // Move the smaller part: a batch is often several polls' worth
            // (2,000+ small records against `max.poll.records` 500), and
            // its tail then keeps `out`'s buffer as the leftover, in place.
            if out.len() - max <= max {
                self.current = out.split_off(max).into();
            } else {
                let mut rest = VecDeque::from(out);
                out = rest.drain(..max).collect();
                self.current = rest;
            }
        }
        Ok(out)
    }

    /// Decode the next batch with records to deliver onto the end of `out`
    /// (room for `max` records is reserved), skipping what is before the
    /// position, control batches and aborted data. `false` when the
    /// response is exhausted. On an error `out` is as it was: no record of
    /// a corrupt batch is delivered.
    fn decode_next_batch(
        &mut self,
        tp: &TopicPartition,
        out: &mut Vec<Record>,
        max: usize,
    ) -> Result<bool, Error> {
        loop {
            let base = self.reader.peek_base_offset();
            let batch = match self.reader.next() {
                None => return Ok(false),
                Some(Ok(b)) => b,
                Some(Err(source)) => {
                    return Err(Error::CorruptBatch {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset: base.unwrap_or(self.next_offset),
                        source,
                    })
                }
            };
            if batch.next_offset() <= self.position {
                continue; // entirely before our position
            }
            let corrupt = |source| Error::CorruptBatch {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: batch.base_offset,
                source,
            };
            if self.isolation == IsolationLevel::ReadCommitted && batch.is_transactional() {
                // A transaction starting at or before this batch that later aborted?
                if let Some(firsts) = self.aborted.get_mut(&batch.producer_id) {
                    while firsts.front().is_some_and(|f| *f <= batch.base_offset) {
                        firsts.pop_front();
                        self.active_aborts.insert(batch.producer_id);
                    }
                }
                if batch.is_control() {
                    for r in batch.records(self.max_decompressed).map_err(corrupt)? {
                        let r = r.map_err(corrupt)?;
                        if matches!(
                            r.control_type(),
                            Some(ControlType::Abort | ControlType::Commit)
                        ) {
                            self.active_aborts.remove(&batch.producer_id);
                        }
                    }
                }
                if batch.is_control() || self.active_aborts.contains(&batch.producer_id) {
                    self.last_epoch = batch.partition_leader_epoch;
                    self.next_offset = batch.next_offset();
                    continue;
                }
            }
            if batch.is_control() {
                self.last_epoch = batch.partition_leader_epoch;
                self.next_offset = batch.next_offset();
                continue; // markers are never delivered
            }
            let before = out.len();
            // A batch is taken whole, even past `max`, so room for all of
            // its records is reserved at once (not grown record by record);
            // the count is the batch's own claim, so trusted only up to
            // `max` or `RESERVE_RECORDS`, whichever is more.
            let claimed = usize::try_from(batch.record_count).unwrap_or(0);
            out.reserve(claimed.min(max.saturating_sub(before).max(RESERVE_RECORDS)));
            let decoded = (|| {
                for r in batch.records(self.max_decompressed)? {
                    let r = r?;
                    if r.offset >= self.position {
                        out.push(r);
                    }
                }
                Ok(())
            })();
            if let Err(source) = decoded {
                out.truncate(before);
                return Err(corrupt(source));
            }
            self.last_epoch = batch.partition_leader_epoch;
            self.next_offset = batch.next_offset();
            if out.len() > before {
                return Ok(true);
            }
        }
    }
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

    fn values(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect()
    }

    /// Take everything, `step` records at a time; the records and where
    /// the next fetch would start.
    fn take_all(c: &mut PartitionCursor, step: usize) -> (Vec<Record>, i64) {
        let tp = TopicPartition::new("t", 0);
        let mut out = Vec::new();
        loop {
            let got = c.take(&tp, step).unwrap();
            if got.is_empty() {
                assert!(c.is_finished());
                return (out, c.position());
            }
            assert!(got.len() <= step);
            out.extend(got);
        }
    }

    /// Decode the test log (aborted transactions `aborted`) from `position`.
    fn decode_log(
        aborted: Vec<(i64, i64)>,
        position: i64,
        isolation: IsolationLevel,
    ) -> (Vec<Record>, i64) {
        let mut c = PartitionCursor::new(&data(aborted), position, isolation, 1 << 20);
        take_all(&mut c, 100)
    }

    /// 200,000 aborted transactions of one producer, all passed at one
    /// batch: popping them from the front of a `Vec` moved 2·10¹⁰ offsets
    /// (minutes); from a deque it is 200,000 pops.
    #[test]
    fn a_long_aborted_transaction_list_is_consumed_in_linear_work() {
        let aborted = vec![(1, 3); 200_000];
        let (records, next) = decode_log(aborted, 0, IsolationLevel::ReadCommitted);
        assert_eq!(values(&records), ["a0", "a1", "c"]);
        assert_eq!(next, 7);
    }

    #[test]
    fn read_committed_skips_aborted_and_markers() {
        let (records, next) = decode_log(vec![(1, 3)], 0, IsolationLevel::ReadCommitted);
        assert_eq!(values(&records), ["a0", "a1", "c"]);
        assert_eq!(next, 7);
    }

    #[test]
    fn read_uncommitted_returns_all_data_but_never_markers() {
        let (records, next) = decode_log(vec![], 0, IsolationLevel::ReadUncommitted);
        assert_eq!(values(&records), ["a0", "a1", "b0", "b1", "c"]);
        assert_eq!(next, 7);
    }

    #[test]
    fn taking_in_small_steps_gives_the_same_records_and_positions() {
        for step in 1..=3 {
            let mut c = PartitionCursor::new(
                &data(vec![(1, 3)]),
                0,
                IsolationLevel::ReadCommitted,
                1 << 20,
            );
            let tp = TopicPartition::new("t", 0);
            let first = c.take(&tp, 1).unwrap();
            assert_eq!(values(&first), ["a0"]);
            assert_eq!(c.position(), 1, "the next record not handed out");
            let (rest, next) = take_all(&mut c, step);
            assert_eq!(values(&rest), ["a1", "c"]);
            assert_eq!(next, 7);
        }
    }

    #[test]
    fn only_one_batch_is_decoded_at_a_time() {
        let mut b = BytesMut::new();
        for base in 0..50 {
            let opts = BatchOptions {
                base_offset: base * 100,
                compression: kafka_wire::records::Compression::Lz4,
                ..BatchOptions::default()
            };
            let batch: Vec<NewRecord> = (0..100).map(|_| rec(&"x".repeat(1000))).collect();
            encode_batch(&mut b, &opts, &batch);
        }
        let d = PartitionData::default().with_records(Some(b.freeze()));
        let mut c = PartitionCursor::new(&d, 0, IsolationLevel::ReadUncommitted, 1 << 20);
        let tp = TopicPartition::new("t", 0);
        assert_eq!(c.take(&tp, 1).unwrap().len(), 1);
        assert_eq!(c.current.len(), 99, "the rest of the first batch, no more");
        let (rest, next) = take_all(&mut c, 500);
        assert_eq!(rest.len(), 4999);
        assert_eq!(next, 5000);
    }

    /// Batches larger and smaller than a poll, taken in steps of every
    /// size: each record once, in order (the leftover of a batch is kept
    /// by moving whichever part is smaller, `take`'s two branches).
    #[test]
    fn any_step_against_any_batch_size_gives_each_record_once_in_order() {
        let sizes = [1usize, 7, 30, 2, 64, 5];
        let mut b = BytesMut::new();
        let mut base = 0i64;
        for n in sizes {
            let opts = BatchOptions {
                base_offset: base,
                ..BatchOptions::default()
            };
            let batch: Vec<NewRecord> = (0..n)
                .map(|i| rec(&format!("{}", base + i as i64)))
                .collect();
            encode_batch(&mut b, &opts, &batch);
            base += n as i64;
        }
        let d = PartitionData::default().with_records(Some(b.freeze()));
        for step in 1..=70 {
            let mut c = PartitionCursor::new(&d, 0, IsolationLevel::ReadUncommitted, 1 << 20);
            let (records, next) = take_all(&mut c, step);
            let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, (0..base).collect::<Vec<_>>(), "step {step}");
            let expected: Vec<String> = (0..base).map(|o| o.to_string()).collect();
            assert_eq!(values(&records), expected, "step {step}");
            assert_eq!(next, base);
        }
    }

    #[test]
    fn records_before_the_position_are_dropped() {
        let (records, _) = decode_log(vec![], 1, IsolationLevel::ReadUncommitted);
        assert_eq!(values(&records)[0], "a1");
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
        let mut c = PartitionCursor::new(&d, 0, IsolationLevel::ReadUncommitted, 1 << 20);
        assert_eq!(c.take(&tp, 10).unwrap().len(), 1);
        assert_eq!(c.last_epoch, 7);
    }

    #[test]
    fn a_batch_with_a_valid_crc_and_a_bad_record_delivers_none_of_its_records() {
        let tp = TopicPartition::new("orders", 3);
        let mut b = BytesMut::new();
        encode_batch(&mut b, &BatchOptions::default(), &[rec("a0"), rec("a1")]);
        let good_len = b.len();
        let second = BatchOptions {
            base_offset: 2,
            ..BatchOptions::default()
        };
        encode_batch(&mut b, &second, &[rec("b0"), rec("b1")]);
        // The second batch claims a third record it does not hold, under a
        // CRC that matches (a broker that lies, not a damaged link).
        let batch = &mut b[good_len..];
        batch[57..61].copy_from_slice(&3i32.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        let d = PartitionData::default().with_records(Some(b.freeze()));
        let mut c = PartitionCursor::new(&d, 0, IsolationLevel::ReadUncommitted, 1 << 20);
        let got = c.take(&tp, 100).unwrap();
        assert_eq!(
            values(&got),
            ["a0", "a1"],
            "b0 and b1 decoded, then taken back"
        );
        let err = c.take(&tp, 100).unwrap_err().to_string();
        assert!(
            err.contains("orders-3") && err.contains("offset 2"),
            "{err}"
        );
        assert_eq!(c.position(), 2);
    }

    #[test]
    fn corrupt_batch_names_partition_and_offset_and_returns_nothing_of_it() {
        let tp = TopicPartition::new("orders", 3);
        let mut bytes = BytesMut::from(&log()[..]);
        let n = bytes.len();
        bytes[n - 2] ^= 0xff; // damage the last batch (offset 6)
        let d = PartitionData::default().with_records(Some(bytes.freeze()));
        let mut c = PartitionCursor::new(&d, 0, IsolationLevel::ReadUncommitted, 1 << 20);
        let good = c.take(&tp, 100).unwrap();
        assert_eq!(
            values(&good),
            ["a0", "a1", "b0", "b1"],
            "the good batches before it"
        );
        let err = c.take(&tp, 100).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("orders-3") && text.contains("offset 6"),
            "{text}"
        );
        assert_eq!(c.position(), 6, "a refetch starts at the bad batch");
        assert!(c.take(&tp, 100).unwrap().is_empty(), "never read past it");
        assert!(c.is_finished());
    }
}
