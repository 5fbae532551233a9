//! Delivery reports: one shared outcome per batch, not a channel per record,
//! and a failure log for the records nobody awaits.
//!
//! ```text
//!  send ──▶ Deliveries::push ──▶ DeliveryFuture { batch outcome, index }
//!                                   │ poll: is my index in a done range?
//!                                   │ drop before the outcome: mark my index an orphan
//!  sender: Deliveries::succeed / fail ─▶ Outcome: done ranges, wakers
//!                                   │ a failed orphan (or a failed record whose
//!                                   ▼ future is dropped unread): its record
//!                              FailureLog ──▶ Producer::flush ─▶ Err(Undelivered)
//! ```
//!
//! Every record of a batch gets a [`DeliveryFuture`] that points into the
//! batch's [`Outcome`] by index, so queuing a record allocates nothing for
//! its report (a oneshot channel per record cost an allocation, a free and
//! several atomic operations). A batch split in two (too large for the
//! broker) splits its [`Deliveries`] too: each half completes its own index
//! range. A batch dropped without an outcome (the producer went away)
//! fails its records with [`Error::Closed`].
//!
//! A failure is reported exactly once: to the record's future if the
//! application reads it, otherwise to the next
//! [`Producer::flush`](super::Producer::flush). A future dropped before its outcome makes
//! its index an *orphan*: if that record fails, the batch moves it into the
//! producer's [`FailureLog`]. A future still held when its record fails
//! keeps the record in the outcome; read, the record is dropped; dropped
//! unread, the record goes to the log then. So `send(..).await?` in a loop
//! and one `flush().await?` at the end loses no failure.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};
use crate::records::NewRecord;

use super::{estimated_size, ProducerRecord, RecordMetadata, Topic};

/// A record that failed for good and whose [`DeliveryFuture`] nobody read:
/// what [`Producer::flush`](super::Producer::flush) hands back in
/// [`Undelivered`]. The record can be sent again as it is.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FailedRecord {
    /// The record: its topic, the partition it was sent to (always
    /// `Some`), key, value, headers and timestamp (ms since the epoch).
    pub record: ProducerRecord,
    /// How many records this producer had queued before this one: its
    /// place in `send` order, from 0 (with several tasks sending, in the
    /// order their `send`s queued them).
    pub number: u64,
    /// Why it failed: [`Error::DeliveryTimeout`],
    /// [`Error::RecordTooLargeForBroker`], the broker's error for its batch,
    /// or [`Error::Closed`].
    pub error: Error,
}

/// What [`Producer::flush`](super::Producer::flush) returns when records
/// failed: every record that failed since the previous `flush` whose
/// [`DeliveryFuture`] was dropped without being read, in the order they
/// failed. The other records were delivered.
///
/// The failed records are kept up to `buffer.memory` bytes (their estimated
/// size); failures past that (or of records the producer dropped as it
/// went away) are counted in [`Undelivered::not_kept`], with the first of
/// their errors, so no failure goes unreported.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} record(s) not delivered; the first: {}", self.len(), self.first_error())]
#[non_exhaustive]
pub struct Undelivered {
    /// The failed records with their errors.
    pub records: Vec<FailedRecord>,
    /// Further failures whose records were not kept: how many, and the
    /// first one's error. `None` when every failed record is in `records`.
    pub not_kept: Option<(u64, Error)>,
}

impl Undelivered {
    /// How many records failed (kept or not).
    pub fn len(&self) -> u64 {
        self.records.len() as u64 + self.not_kept.as_ref().map_or(0, |(n, _)| *n)
    }

    /// Always false: an `Undelivered` reports at least one failure.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The error of the first failure reported.
    pub fn first_error(&self) -> &Error {
        self.records
            .first()
            .map(|f| &f.error)
            .or(self.not_kept.as_ref().map(|(_, e)| e))
            .unwrap_or(&Error::Closed)
    }
}

/// The producer's failed records that no future reported, until `flush`
/// takes them. Bounded: records past `limit` bytes are only counted.
#[derive(Debug)]
pub(crate) struct FailureLog {
    state: Mutex<LogState>,
    limit: usize,
}

#[derive(Debug, Default)]
struct LogState {
    records: Vec<FailedRecord>,
    bytes: usize,
    not_kept: Option<(u64, Error)>,
}

impl FailureLog {
    /// A log keeping failed records up to `limit` bytes (estimated size).
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(LogState::default()),
            limit,
        }
    }

    fn add(&self, failed: impl IntoIterator<Item = FailedRecord>) {
        let mut st = self.state.lock().expect("failure log lock");
        for f in failed {
            let r = &f.record;
            let size = estimated_size(r.key.as_ref(), r.value.as_ref(), &r.headers);
            if st.bytes + size <= self.limit {
                st.bytes += size;
                st.records.push(f);
            } else {
                count_not_kept(&mut st, 1, &f.error);
            }
        }
    }

    fn add_not_kept(&self, n: u64, err: &Error) {
        if n > 0 {
            count_not_kept(&mut self.state.lock().expect("failure log lock"), n, err);
        }
    }

    /// Everything logged so far, or `None` when nothing failed.
    pub(crate) fn take(&self) -> Option<Undelivered> {
        let mut st = self.state.lock().expect("failure log lock");
        if st.records.is_empty() && st.not_kept.is_none() {
            return None;
        }
        let st = std::mem::take(&mut *st);
        Some(Undelivered {
            records: st.records,
            not_kept: st.not_kept,
        })
    }
}

fn count_not_kept(st: &mut LogState, n: u64, err: &Error) {
    match &mut st.not_kept {
        Some((count, _)) => *count += n,
        None => st.not_kept = Some((n, err.clone())),
    }
}

impl Drop for FailureLog {
    fn drop(&mut self) {
        let st = self.state.get_mut().map(std::mem::take).unwrap_or_default();
        if !st.records.is_empty() || st.not_kept.is_some() {
            let report = Undelivered {
                records: st.records,
                not_kept: st.not_kept,
            };
            tracing::error!(
                error = %report,
                "the producer went away with failed records that no flush() reported"
            );
        }
    }
}

/// The outcome of one batch (and of its split halves), shared by the
/// delivery futures of its records.
struct Outcome {
    topic: Arc<str>,
    partition: i32,
    log: Arc<FailureLog>,
    /// Every index below this had its future dropped unread. The bulk
    /// idiom drops each future right after `send`, in index order, so
    /// marking one is a compare-and-swap here, no lock; a drop out of
    /// order sets its bit in [`OutcomeState::orphans`] under the lock.
    dropped_below: AtomicU32,
    /// A range failed: a future dropped unread after this is set looks
    /// under the lock for its record among the kept ones. Stored before
    /// the failing range reads `dropped_below`, read after a drop moved
    /// it (both `SeqCst`), so one side always sees the other: a failure
    /// is never missed by both.
    failed: AtomicBool,
    state: Mutex<OutcomeState>,
}

/// Completed record indices `start..end`: the offset of `start` and the
/// log append time (-1: the record's own timestamp), or the error.
type DoneRange = (u32, u32, Result<(i64, i64)>);

#[derive(Default)]
struct OutcomeState {
    done: Vec<DoneRange>,
    /// Futures waiting for an index not yet completed.
    wakers: Vec<Waker>,
    /// Bumped each time `wakers` is drained, so a future knows whether its
    /// slot is still there.
    round: u32,
    /// One bit per index whose future was dropped unread out of order
    /// (at or above `dropped_below` then).
    orphans: Vec<u64>,
    /// Failed records whose futures were alive at the failure, by index
    /// (ascending): dropped when the future reads its error, logged when
    /// it is dropped unread. `None`: a record dropped with its batch
    /// (nothing to hand back; only counted).
    kept: Vec<(u32, Option<Numbered>)>,
}

/// A record and its number ([`FailedRecord::number`]).
type Numbered = (u64, NewRecord);

impl OutcomeState {
    fn set_orphan_bit(&mut self, index: u32) {
        let word = (index / 64) as usize;
        if self.orphans.len() <= word {
            self.orphans.resize(word + 1, 0);
        }
        self.orphans[word] |= 1 << (index % 64);
    }

    fn orphan_bit(&self, index: u32) -> bool {
        self.orphans
            .get((index / 64) as usize)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// The kept record of `index`: `Some(None)` for one dropped with its
    /// batch, `None` when nothing is kept for it.
    fn take_kept(&mut self, index: u32) -> Option<Option<Numbered>> {
        let at = self.kept.binary_search_by_key(&index, |(i, _)| *i).ok()?;
        Some(self.kept.remove(at).1)
    }

    fn outcome_of(&self, index: u32) -> Option<&DoneRange> {
        self.done.iter().find(|(s, e, _)| (*s..*e).contains(&index))
    }
}

impl Outcome {
    /// `index`'s future was dropped unread. Lock-free when it is the next
    /// index in order; else its bit, and `dropped_below` moved past the
    /// bits now contiguous with it.
    fn mark_dropped(&self, index: u32) {
        if self
            .dropped_below
            .compare_exchange(index, index + 1, SeqCst, Relaxed)
            .is_ok()
        {
            if self.failed.load(SeqCst) {
                let mut st = self.state.lock().expect("delivery lock");
                self.report_if_failed(&mut st, index);
            }
            return;
        }
        let mut st = self.state.lock().expect("delivery lock");
        st.set_orphan_bit(index);
        let mut below = self.dropped_below.load(SeqCst);
        while st.orphan_bit(below) {
            match self
                .dropped_below
                .compare_exchange(below, below + 1, SeqCst, SeqCst)
            {
                Ok(_) => below += 1,
                Err(now) => below = now,
            }
        }
        if self.failed.load(SeqCst) {
            self.report_if_failed(&mut st, index);
        }
    }

    /// If `index` failed and its record is still kept (its future was
    /// alive at the failure, or the failing range did not see the drop),
    /// hand it to the log now.
    fn report_if_failed(&self, st: &mut MutexGuard<'_, OutcomeState>, index: u32) {
        let Some((_, _, Err(err))) = st.outcome_of(index) else {
            return; // delivered, or not failed yet (that range will see the mark)
        };
        let err = err.clone();
        match st.take_kept(index) {
            None => {} // the failing range logged it already
            Some(Some(numbered)) => {
                let topic = Topic::from(self.topic.clone());
                self.log
                    .add([failed_record(&topic, self.partition, numbered, &err)]);
            }
            Some(None) => self.log.add_not_kept(1, &err),
        }
    }

    fn is_orphan(&self, st: &OutcomeState, index: u32, dropped_below: u32) -> bool {
        index < dropped_below || st.orphan_bit(index)
    }
}

/// The records of one batch (or of one half of a split batch): indices
/// `first..first + len` of their outcome.
pub(crate) struct Deliveries {
    outcome: Arc<Outcome>,
    first: u32,
    len: u32,
    /// Each record's number ([`FailedRecord::number`]), in index order.
    numbers: Vec<u64>,
}

impl Deliveries {
    /// The deliveries of a new batch for `topic`-`partition`, with room
    /// for `capacity` records; failures no future reports go to `log`.
    pub(crate) fn new(
        topic: Arc<str>,
        partition: i32,
        log: Arc<FailureLog>,
        capacity: usize,
    ) -> Self {
        Self {
            outcome: Arc::new(Outcome {
                topic,
                partition,
                log,
                dropped_below: AtomicU32::new(0),
                failed: AtomicBool::new(false),
                state: Mutex::new(OutcomeState::default()),
            }),
            first: 0,
            len: 0,
            numbers: Vec::with_capacity(capacity),
        }
    }

    /// The future of the next record appended to this batch, whose own
    /// timestamp is `timestamp` (ms since the epoch) and whose number is
    /// `number` ([`FailedRecord::number`]).
    pub(crate) fn push(&mut self, timestamp: i64, number: u64) -> DeliveryFuture {
        let index = self.first + self.len;
        self.len += 1;
        self.numbers.push(number);
        DeliveryFuture {
            outcome: self.outcome.clone(),
            index,
            timestamp,
            slot: None,
            read: false,
        }
    }

    /// Keep the first `k` records; the rest become their own deliveries
    /// (the tail half of a split batch).
    pub(crate) fn split_off(&mut self, k: usize) -> Deliveries {
        let k = (k as u32).min(self.len);
        let tail = Deliveries {
            outcome: self.outcome.clone(),
            first: self.first + k,
            len: self.len - k,
            numbers: self.numbers.split_off(k as usize),
        };
        self.len = k;
        tail
    }

    /// Every record delivered: the first at `base_offset` (-1 when unknown,
    /// acks=0), stamped `log_append_time` (ms; -1 under CreateTime).
    pub(crate) fn succeed(mut self, base_offset: i64, log_append_time: i64) {
        self.complete(Ok((base_offset, log_append_time)), None);
    }

    /// Every record failed with `err`; `records` are this range's records,
    /// in order, handed to the failure log for the futures nobody reads.
    pub(crate) fn fail(mut self, err: &Error, records: Vec<NewRecord>) {
        self.complete(Err(err.clone()), Some(records));
    }

    /// Complete this range. On failure, each record whose future was
    /// dropped unread goes to the log (`records` `None`: the batch was
    /// dropped, so they are only counted); the others are kept for their
    /// futures.
    fn complete(&mut self, outcome: Result<(i64, i64)>, records: Option<Vec<NewRecord>>) {
        if self.len == 0 {
            return;
        }
        let (start, end) = (self.first, self.first + self.len);
        self.len = 0;
        let o = &*self.outcome;
        let err = outcome.as_ref().err().cloned();
        let mut orphaned = Vec::new();
        let mut orphans_not_kept = 0u64;
        let wakers = {
            let mut st = o.state.lock().expect("delivery lock");
            if err.is_some() {
                o.failed.store(true, SeqCst);
                let below = o.dropped_below.load(SeqCst);
                let before = st.kept.len();
                let mut records = records.map(Vec::into_iter);
                let numbers = std::mem::take(&mut self.numbers);
                for (index, number) in (start..end).zip(numbers) {
                    let record = records.as_mut().and_then(Iterator::next);
                    let record = record.map(|r| (number, r));
                    match (o.is_orphan(&st, index, below), record) {
                        (true, Some(r)) => orphaned.push(r),
                        (true, None) => orphans_not_kept += 1,
                        (false, r) => st.kept.push((index, r)),
                    }
                }
                if st.kept[..before].last().is_some_and(|(i, _)| *i > start) {
                    st.kept.sort_unstable_by_key(|(i, _)| *i);
                }
            }
            st.done.push((start, end, outcome));
            st.round = st.round.wrapping_add(1);
            std::mem::take(&mut st.wakers)
        };
        for w in wakers {
            w.wake();
        }
        if let Some(err) = err {
            let topic = Topic::from(o.topic.clone());
            o.log.add(
                orphaned
                    .into_iter()
                    .map(|r| failed_record(&topic, o.partition, r, &err)),
            );
            o.log.add_not_kept(orphans_not_kept, &err);
        }
    }
}

/// `record` of `topic`-`partition` as the application sent it, with `err`.
fn failed_record(
    topic: &Topic,
    partition: i32,
    (number, record): Numbered,
    err: &Error,
) -> FailedRecord {
    FailedRecord {
        number,
        record: ProducerRecord {
            topic: topic.clone(),
            partition: Some(partition),
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp: Some(record.timestamp),
        },
        error: err.clone(),
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        self.complete(Err(Error::Closed), None);
    }
}

/// Resolves when the record is acknowledged, or fails: with
/// [`Error::DeliveryTimeout`] after `delivery.timeout.ms`, with
/// [`Error::RecordTooLargeForBroker`] when the record alone exceeds the
/// topic's `max.message.bytes`, with the broker's error for its batch, or
/// with [`Error::Closed`] when the producer stopped before an answer.
///
/// Cheap: the records of one batch share one outcome, so a future is an
/// index into it, not a channel of its own. Dropping it does not cancel
/// the delivery, and does not lose a failure: a record whose future was
/// dropped unread reports its failure to the next
/// [`Producer::flush`](super::Producer::flush) instead (in [`Undelivered`]).
/// So await it when you need the record's offset; drop it and check
/// `flush` when sending in bulk.
pub struct DeliveryFuture {
    outcome: Arc<Outcome>,
    index: u32,
    timestamp: i64,
    /// `(round, index)` of this future's waker in the outcome's list.
    slot: Option<(u32, usize)>,
    /// It returned its outcome (its failure, if any, is reported).
    read: bool,
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("topic", &self.outcome.topic)
            .field("partition", &self.outcome.partition)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl std::future::Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut st = this.outcome.state.lock().expect("delivery lock");
        let index = this.index;
        if let Some((start, _, outcome)) = st.outcome_of(index) {
            let ready = match outcome {
                Ok((base_offset, log_append_time)) => Ok(RecordMetadata {
                    topic: this.outcome.topic.clone(),
                    partition: this.outcome.partition,
                    offset: if *base_offset >= 0 {
                        base_offset + i64::from(index - start)
                    } else {
                        -1
                    },
                    timestamp: if *log_append_time >= 0 {
                        *log_append_time
                    } else {
                        this.timestamp
                    },
                }),
                Err(e) => Err(e.clone()),
            };
            if ready.is_err() {
                st.take_kept(index); // reported here, not to flush
            }
            this.read = true;
            return Poll::Ready(ready);
        }
        let round = st.round;
        match this.slot {
            Some((r, i)) if r == round => {
                if !st.wakers[i].will_wake(cx.waker()) {
                    st.wakers[i] = cx.waker().clone();
                }
            }
            _ => {
                this.slot = Some((round, st.wakers.len()));
                st.wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for DeliveryFuture {
    /// Unread: the record becomes an orphan, so its failure (now or later)
    /// goes to the log (`Outcome::mark_dropped`).
    fn drop(&mut self) {
        if !self.read {
            self.outcome.mark_dropped(self.index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;

    fn now(f: &mut DeliveryFuture) -> Poll<Result<RecordMetadata>> {
        let waker = Waker::noop();
        pin!(f).poll(&mut Context::from_waker(waker))
    }

    fn log() -> Arc<FailureLog> {
        Arc::new(FailureLog::new(1 << 20))
    }

    /// Records whose values are `0`, `1`, … (one byte each).
    fn records(n: u8) -> Vec<NewRecord> {
        (0..n)
            .map(|i| NewRecord {
                value: Some(bytes::Bytes::from(vec![i])),
                timestamp: 1000 + i64::from(i),
                ..NewRecord::default()
            })
            .collect()
    }

    /// The first value byte of each logged record, and the log's not-kept count.
    fn logged(log: &FailureLog) -> (Vec<u8>, u64) {
        match log.take() {
            None => (vec![], 0),
            Some(u) => (
                u.records
                    .iter()
                    .map(|f| f.record.value.as_ref().unwrap()[0])
                    .collect(),
                u.not_kept.map_or(0, |(n, _)| n),
            ),
        }
    }

    fn too_large() -> Error {
        Error::RecordTooLargeForBroker {
            topic: "t".into(),
            partition: 3,
            size: 2_000_000,
            code: crate::error::KafkaCode::MessageTooLarge,
        }
    }

    #[test]
    fn a_failure_goes_to_the_future_that_reads_it_or_else_to_the_log_once() {
        let log = log();
        let mut d = Deliveries::new(Arc::from("t"), 3, log.clone(), 0);
        let mut fs: Vec<Option<DeliveryFuture>> = (0..5)
            .map(|i| Some(d.push(1000 + i, 40 + i as u64)))
            .collect();
        // 0 and 2: dropped before the outcome (send(..).await? in a loop).
        fs[0] = None;
        fs[2] = None;
        d.fail(&too_large(), records(5));
        // 1: read; 3: dropped unread after the failure; 4: still held.
        assert!(matches!(
            now(fs[1].as_mut().unwrap()),
            Poll::Ready(Err(Error::RecordTooLargeForBroker { .. }))
        ));
        fs[1] = None;
        fs[3] = None;
        let report = log.take().expect("two orphans and one dropped unread");
        let got: Vec<(u64, u8, i32, i64)> = report
            .records
            .iter()
            .map(|f| {
                assert!(matches!(f.error, Error::RecordTooLargeForBroker { .. }));
                let r = &f.record;
                assert_eq!(r.topic, "t");
                let value = r.value.as_ref().unwrap()[0];
                (f.number, value, r.partition.unwrap(), r.timestamp.unwrap())
            })
            .collect();
        assert_eq!(
            got,
            vec![(40, 0, 3, 1000), (42, 2, 3, 1002), (43, 3, 3, 1003)],
            "the records as sent, numbered, to the partition they went to"
        );
        assert_eq!(report.len(), 3);
        assert!(report
            .to_string()
            .starts_with("3 record(s) not delivered; the first: "));
        assert!(log.take().is_none(), "each failure reported once");
        // The held future still reports its own failure; read, it is not logged.
        assert!(now(fs[4].as_mut().unwrap()).is_ready());
        fs.clear();
        assert_eq!(logged(&log), (vec![], 0));
    }

    #[test]
    fn futures_dropped_out_of_order_still_hand_their_failures_to_the_log() {
        let log = log();
        let mut d = Deliveries::new(Arc::from("t"), 0, log.clone(), 0);
        let mut fs: Vec<Option<DeliveryFuture>> = (0..6).map(|_| Some(d.push(0, 0))).collect();
        // 1 and 2 before 0 (their bits), then 0 (the prefix moves past all
        // three), then 3 in order again; 5 is kept and read, 4 dropped late.
        for i in [1, 2, 0, 3] {
            fs[i] = None;
        }
        assert_eq!(d.outcome.dropped_below.load(SeqCst), 4);
        d.fail(&Error::Closed, records(6));
        assert!(now(fs[5].as_mut().unwrap()).is_ready());
        fs.clear();
        assert_eq!(logged(&log), (vec![0, 1, 2, 3, 4], 0));
    }

    /// Futures dropped on other threads while the batch fails: every
    /// record is reported exactly once, whichever side comes first.
    #[test]
    fn drops_racing_the_failure_report_each_record_once() {
        for round in 0..200u8 {
            let log = log();
            let mut d = Deliveries::new(Arc::from("t"), 0, log.clone(), 0);
            let n = 64u8;
            let fs: Vec<DeliveryFuture> = (0..n).map(|_| d.push(0, 0)).collect();
            let (a, b): (Vec<_>, Vec<_>) = fs.into_iter().enumerate().partition(|(i, _)| {
                // Mostly in order on one thread, some out of order on another.
                (*i + usize::from(round)) % 5 != 0
            });
            let t1 = std::thread::spawn(move || drop(a));
            let t2 = std::thread::spawn(move || b.into_iter().rev().for_each(drop));
            d.fail(&Error::Closed, records(n));
            t1.join().unwrap();
            t2.join().unwrap();
            let (mut got, not_kept) = logged(&log);
            got.sort_unstable();
            assert_eq!(not_kept, 0);
            assert_eq!(got, (0..n).collect::<Vec<_>>(), "round {round}");
        }
    }

    #[test]
    fn delivered_records_log_nothing_whether_or_not_their_futures_were_kept() {
        let log = log();
        let mut d = Deliveries::new(Arc::from("t"), 0, log.clone(), 0);
        let kept = d.push(0, 0);
        drop(d.push(0, 0));
        d.succeed(7, -1);
        drop(kept);
        assert_eq!(logged(&log), (vec![], 0));
    }

    #[test]
    fn split_halves_log_only_the_failed_half() {
        let log = log();
        let mut head = Deliveries::new(Arc::from("t"), 0, log.clone(), 0);
        for _ in 0..4 {
            drop(head.push(0, 0));
        }
        let tail = head.split_off(2);
        let mut recs = records(4);
        let tail_recs = recs.split_off(2);
        tail.fail(&Error::Closed, tail_recs);
        head.succeed(10, -1);
        drop(recs);
        assert_eq!(logged(&log), (vec![2, 3], 0));
    }

    #[test]
    fn the_log_keeps_records_up_to_its_limit_and_counts_the_rest() {
        // Each record of a one-byte value counts 17 bytes: two fit in 40.
        let log = Arc::new(FailureLog::new(40));
        let mut d = Deliveries::new(Arc::from("t"), 0, log.clone(), 0);
        for _ in 0..5 {
            drop(d.push(0, 0));
        }
        d.fail(&Error::Closed, records(5));
        let u = log.take().unwrap();
        assert_eq!(u.records.len(), 2);
        assert!(matches!(u.not_kept, Some((3, Error::Closed))));
        assert_eq!(u.len(), 5);
        assert_eq!(logged(&log), (vec![], 0), "taken: the limit is free again");
    }

    #[test]
    fn a_batch_dropped_without_an_outcome_counts_its_orphans_as_closed() {
        let log = log();
        let mut d = Deliveries::new(Arc::from("t"), 0, log.clone(), 0);
        drop(d.push(0, 0));
        let mut held = d.push(0, 0);
        drop(d); // the producer went away: no records to hand back
        assert!(matches!(now(&mut held), Poll::Ready(Err(Error::Closed))));
        let u = log.take().unwrap();
        assert!(u.records.is_empty());
        assert!(matches!(u.not_kept, Some((1, Error::Closed))));
        assert!(matches!(u.first_error(), Error::Closed));
    }

    #[test]
    fn each_record_gets_its_offset_and_timestamp() {
        let mut d = Deliveries::new(Arc::from("t"), 3, log(), 0);
        let mut fs: Vec<_> = (0..3).map(|i| d.push(1000 + i, 0)).collect();
        assert!(now(&mut fs[0]).is_pending());
        d.succeed(40, -1);
        let got: Vec<(i64, i64)> = fs
            .iter_mut()
            .map(|f| match now(f) {
                Poll::Ready(Ok(m)) => {
                    assert_eq!((&*m.topic, m.partition), ("t", 3));
                    (m.offset, m.timestamp)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, vec![(40, 1000), (41, 1001), (42, 1002)]);
    }

    #[test]
    fn split_halves_complete_separately_and_a_dropped_batch_reports_closed() {
        let mut head = Deliveries::new(Arc::from("t"), 0, log(), 0);
        let mut fs: Vec<_> = (0..4).map(|_| head.push(7, 0)).collect();
        let tail = head.split_off(1);
        head.succeed(10, 99);
        match now(&mut fs[0]) {
            Poll::Ready(Ok(m)) => assert_eq!((m.offset, m.timestamp), (10, 99)),
            other => panic!("{other:?}"),
        }
        assert!(now(&mut fs[1]).is_pending(), "the tail is not done yet");
        drop(tail);
        for f in &mut fs[1..] {
            assert!(matches!(now(f), Poll::Ready(Err(Error::Closed))));
        }
    }

    #[test]
    fn a_waiting_future_is_woken_once_its_range_completes() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, SeqCst);
            }
        }
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut d = Deliveries::new(Arc::from("t"), 0, log(), 0);
        let mut f = d.push(0, 0);
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(pin!(&mut f).poll(&mut cx).is_pending());
        }
        d.fail(&Error::Closed, vec![NewRecord::default()]);
        assert_eq!(count.0.load(SeqCst), 1);
        assert!(pin!(&mut f).poll(&mut cx).is_ready());
    }
}
