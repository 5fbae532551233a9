//! Per-partition batching (pure: no I/O, `now` passed in).
//!
//! ```text
//! append ──▶ PartitionQueue.queued: [open batch] [sealed] [sealed] …
//!                     drain (ready + capacity) ──▶ in flight ──▶ done
//!                                                     │ retriable failure
//!                     requeue at the front, in sequence order ◀┘
//! ```
//!
//! Ordering with idempotence: each batch gets its base sequence when it is
//! first drained, and keeps it (and its encoded bytes) across retries. After
//! a failure the partition sends nothing new until every earlier request has
//! come back, then resends the failed batches in sequence order, so the
//! broker never sees a gap.
//!
//! A batch the broker refuses as too large (MESSAGE_TOO_LARGE,
//! RECORD_LIST_TOO_LARGE) was not written: [`Accumulator::split`] cuts it in
//! two halves that cover the same sequence range, in order, and they go back
//! like retries. A single record that is too large fails alone; its sequence
//! range becomes a *hole* ([`Accumulator::skip_sequences`]) and, once
//! nothing of the partition is in flight, every later batch is renumbered
//! down over it (as Java's `adjustSequencesDueToFailedBatch`), so the broker
//! sees no gap and the producer id stays valid.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::Error;
use crate::records::NewRecord;

use super::delivery::{Deliveries, DeliveryFuture, FailureLog};
use super::{estimated_size, ProducerIdEpoch};

/// A hash map with a fast non-cryptographic hasher: the accumulator's keys
/// come from the application, not from the network.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The accumulator's key for one partition's queue: (topic, partition), with
/// one shared `Arc<str>` per topic so queuing a record allocates nothing.
/// Internal; the public name for a partition is [`crate::TopicPartition`].
///
/// Every `QueueKey` of a topic holds the producer's one interned name for
/// it (`TopicEntry::name`, made once per producer and topic): the
/// accumulator finds a queue by the name's address ([`Slot`]).
pub(crate) type QueueKey = (Arc<str>, i32);

/// Where a partition's queue is in the map: the address of its topic's
/// interned name, and the partition. Hashing two integers instead of the
/// name, and comparing addresses instead of strings, was a tenth of
/// `send`'s instructions. Sound because one topic's keys share one
/// `Arc<str>` ([`QueueKey`]), and its queue holds a clone of it, so the
/// address cannot be reused by another name while the queue exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot(usize, i32);

impl Slot {
    fn of(tp: &QueueKey) -> Slot {
        Slot::at(&tp.0, tp.1)
    }

    fn at(topic: &Arc<str>, partition: i32) -> Slot {
        Slot(Arc::as_ptr(topic).cast::<u8>() as usize, partition)
    }
}

/// `buffer.memory` bytes a batch holds, given back to the producer's
/// semaphore when the batch is dropped (delivered, failed or expired).
/// `send` takes its record's bytes from the semaphore and forgets the
/// permit; the batch counts them here, so queuing a record costs one
/// atomic operation on the semaphore and no reference count.
pub(crate) struct MemoryHold {
    memory: Arc<Semaphore>,
    bytes: usize,
}

impl MemoryHold {
    #[cfg(test)]
    pub(crate) fn num_permits(&self) -> usize {
        self.bytes
    }

    /// Move `n` bytes (at most all) into a hold of their own.
    fn split(&mut self, n: usize) -> MemoryHold {
        let n = n.min(self.bytes);
        self.bytes -= n;
        MemoryHold {
            memory: self.memory.clone(),
            bytes: n,
        }
    }
}

impl Drop for MemoryHold {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.memory.add_permits(self.bytes);
        }
    }
}

/// A batch of records for one partition.
pub(crate) struct Batch {
    pub tp: QueueKey,
    pub records: Vec<NewRecord>,
    /// Its records' delivery reports.
    pub deliveries: Deliveries,
    /// Buffer memory held until the batch completes.
    pub memory: MemoryHold,
    pub bytes: usize,
    pub created: Instant,
    pub sealed: bool,
    /// Assigned on first drain; -1 without idempotence.
    pub base_sequence: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The wire bytes, kept so a retry resends exactly the same batch.
    pub encoded: Option<Bytes>,
    pub attempts: u32,
    pub ever_sent: bool,
    pub retry_at: Option<Instant>,
    /// The leader its last request went to (`None`: never sent). A retry
    /// whose partition has another leader now skips its backoff
    /// ([`Accumulator::end_backoff`], KIP-951).
    pub sent_to: Option<i32>,
}

impl Batch {
    /// Complete every record with its offset (`base_offset` + its index;
    /// -1 with acks=0) and, under LogAppendTime, the broker's timestamp.
    pub(super) fn succeed(self, base_offset: i64, log_append_time: i64) {
        self.deliveries.succeed(base_offset, log_append_time);
    }

    /// Fail every record with `err`. The records whose futures were
    /// dropped go to the producer's failure log, for `flush`.
    pub(super) fn fail(self, err: &Error) {
        self.deliveries.fail(err, self.records);
    }
}

/// `seq + n` as Kafka counts: sequences wrap from `i32::MAX` to 0.
fn seq_add(seq: i32, n: i32) -> i32 {
    if seq > i32::MAX - n {
        n - (i32::MAX - seq) - 1
    } else {
        seq + n
    }
}

/// `seq - n`, the inverse of [`seq_add`].
fn seq_sub(seq: i32, n: i32) -> i32 {
    if seq < n {
        i32::MAX - (n - seq) + 1
    } else {
        seq - n
    }
}

struct PartitionQueue {
    /// The partition (its topic the producer's interned name).
    tp: QueueKey,
    queued: VecDeque<Batch>,
    /// Base sequences of the batches in flight (-1 without idempotence).
    in_flight: Vec<i32>,
    next_sequence: i32,
    /// Sequence ranges `(base, count)` of records that failed alone and
    /// were never written. Later batches are renumbered over them once
    /// nothing of the partition is in flight (see [`close_holes`]).
    holes: Vec<(i32, i32)>,
    /// Estimated bytes the broker refused in one batch, halved: new
    /// batches close at this size instead of `batch.size`, so a steady
    /// stream to a topic with a small `max.message.bytes` is not refused
    /// and split batch after batch. Only ever lowered.
    size_cap: Option<usize>,
    /// A batch of this producer id has been acknowledged on this partition.
    /// Until then only one batch may be in flight: a broker with no state
    /// for a producer accepts any first sequence, so if batch 0 failed while
    /// batch 1 went through, the log would hold them out of order.
    confirmed: bool,
    /// The most records of the recent batches taken for sending (each
    /// batch taken lowers it by an eighth, then raises it to its own
    /// count): the next batch reserves room for as many (0: none taken
    /// yet).
    recent_peak_records: usize,
}

impl PartitionQueue {
    fn new(tp: &QueueKey) -> Self {
        Self {
            tp: tp.clone(),
            queued: VecDeque::new(),
            in_flight: Vec::new(),
            next_sequence: 0,
            holes: Vec::new(),
            size_cap: None,
            confirmed: false,
            recent_peak_records: 0,
        }
    }
}

/// Settings the accumulator needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccumulatorConfig {
    pub batch_size: usize,
    pub linger: Duration,
    pub max_in_flight: usize,
    pub idempotent: bool,
}

/// All partitions' queues.
pub(crate) struct Accumulator {
    cfg: AccumulatorConfig,
    queues: FastMap<Slot, PartitionQueue>,
    /// `buffer.memory`, shared with `send`.
    memory: Arc<Semaphore>,
    /// Where failures that no delivery future reports go (for `flush`).
    log: Arc<FailureLog>,
    /// Records accepted and not yet completed (for `flush`).
    pub pending_records: usize,
    /// Records accepted so far: the next one's number
    /// ([`super::FailedRecord::number`]).
    accepted: u64,
}

/// What `append` did.
pub(crate) struct Appended {
    /// A batch became full (wake the sender now).
    pub batch_full: bool,
    /// The record opened a new batch (the sender must arm a linger timer).
    pub new_batch: bool,
}

impl Accumulator {
    pub(super) fn new(
        cfg: AccumulatorConfig,
        memory: Arc<Semaphore>,
        log: Arc<FailureLog>,
    ) -> Self {
        Self {
            cfg,
            queues: FastMap::default(),
            memory,
            log,
            pending_records: 0,
            accepted: 0,
        }
    }

    /// Queue `record`, whose `size` bytes of `buffer.memory` the caller
    /// already took from the semaphore (and forgot): the batch gives them
    /// back when it completes.
    /// `topic` is the producer's interned name ([`QueueKey`]).
    pub(super) fn append(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        record: NewRecord,
        size: usize,
        now: impl FnOnce() -> Instant,
    ) -> (Appended, DeliveryFuture) {
        let slot = Slot::at(topic, partition);
        let q = match self.queues.get_mut(&slot) {
            Some(q) => q,
            None => {
                let tp = (topic.clone(), partition);
                debug_assert!(
                    !self.queues.values().any(|q| q.tp == tp),
                    "{tp:?}: a second queue for one partition (a key not made from the interned name)"
                );
                self.queues
                    .entry(slot)
                    .or_insert_with(|| PartitionQueue::new(&tp))
            }
        };
        let batch_size = q
            .size_cap
            .map_or(self.cfg.batch_size, |cap| cap.min(self.cfg.batch_size));
        self.pending_records += 1;
        let open = q
            .queued
            .back_mut()
            .filter(|b| !b.sealed && !b.ever_sent && b.bytes + size <= batch_size);
        let (batch, new_batch) = match open {
            Some(b) => (b, false),
            None => {
                let mut previous = 0;
                if let Some(last) = q.queued.back_mut() {
                    last.sealed = true;
                    previous = last.records.len();
                }
                // Room for as many records as the partition's recent
                // batches carried at most, taken or still queued (at most
                // what fills it at this size), or for up to 64 before its
                // first: a batch that leaves with one record
                // (`linger.ms=0`) does not reserve a full batch's room, and
                // a full one is not grown record by record. The recent
                // peak, not the last count: batch sizes swing (one fills
                // while a request is out, the next leaves early), and room
                // for only the last count made `realloc` move every record
                // of each batch that grew: 4 % of a bulk run's instructions.
                let fills = (batch_size / size.max(1)).max(1);
                let expected = match q.recent_peak_records.max(previous) {
                    0 => fills.min(64),
                    peak => fills.min(peak),
                };
                q.queued.push_back(Batch {
                    tp: q.tp.clone(),
                    records: Vec::with_capacity(expected),
                    deliveries: Deliveries::new(
                        q.tp.0.clone(),
                        partition,
                        self.log.clone(),
                        expected,
                    ),
                    memory: MemoryHold {
                        memory: self.memory.clone(),
                        bytes: 0,
                    },
                    bytes: 0,
                    created: now(),
                    sealed: false,
                    base_sequence: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    encoded: None,
                    attempts: 0,
                    ever_sent: false,
                    retry_at: None,
                    sent_to: None,
                });
                (q.queued.back_mut().expect("just pushed"), true)
            }
        };
        let delivery = batch.deliveries.push(record.timestamp, self.accepted);
        self.accepted += 1;
        batch.records.push(record);
        batch.bytes += size;
        batch.memory.bytes += size;
        if batch.bytes >= batch_size {
            batch.sealed = true;
        }
        (
            Appended {
                batch_full: batch.sealed,
                new_batch,
            },
            delivery,
        )
    }

    /// Is the front batch of `q` ready to go at `now`?
    fn front_ready(&self, q: &PartitionQueue, now: Instant, flush: bool) -> bool {
        let Some(b) = q.queued.front() else {
            return false;
        };
        if b.ever_sent {
            // A retry: only once everything earlier has come back, and after backoff.
            return q.in_flight.is_empty() && b.retry_at.is_none_or(|t| t <= now);
        }
        let any_retry_pending = q.queued.iter().any(|b| b.ever_sent);
        let in_flight = q.in_flight.len();
        let capacity = if self.cfg.idempotent && (!q.confirmed || !q.holes.is_empty()) {
            // Unconfirmed: see `confirmed`. Holes: later sequences are
            // renumbered only once every request of the partition is back.
            in_flight == 0
        } else if self.cfg.idempotent {
            in_flight < self.cfg.max_in_flight.min(5)
        } else {
            in_flight < self.cfg.max_in_flight
        };
        !any_retry_pending && capacity && (b.sealed || flush || now >= b.created + self.cfg.linger)
    }

    /// Can the front batch of `tp` still take records: not full, not yet
    /// sent, and no newer batch behind it? (False without a batch.)
    pub(super) fn front_open(&self, tp: &QueueKey) -> bool {
        self.queues
            .get(&Slot::of(tp))
            .and_then(|q| q.queued.front())
            .is_some_and(|b| !b.sealed)
    }

    /// Partitions whose front batch can be sent now.
    pub(super) fn ready(&self, now: Instant, flush: bool) -> Vec<QueueKey> {
        self.queues
            .values()
            .filter(|q| self.front_ready(q, now, flush))
            .map(|q| q.tp.clone())
            .collect()
    }

    /// Take the front batch of `tp` for sending, assigning its sequence.
    pub(super) fn take(&mut self, tp: &QueueKey, producer: ProducerIdEpoch) -> Option<Batch> {
        let idempotent = self.cfg.idempotent;
        let q = self.queues.get_mut(&Slot::of(tp))?;
        close_holes(q);
        let mut b = q.queued.pop_front()?;
        b.sealed = true;
        q.recent_peak_records =
            (q.recent_peak_records - q.recent_peak_records / 8).max(b.records.len());
        if idempotent && b.base_sequence < 0 {
            b.base_sequence = q.next_sequence;
            b.producer_id = producer.id;
            b.producer_epoch = producer.epoch;
            q.next_sequence = seq_add(q.next_sequence, b.records.len() as i32);
        }
        q.in_flight.push(b.base_sequence);
        Some(b)
    }

    /// A request carrying `b` came back (whatever the outcome).
    pub(super) fn returned(&mut self, b: &Batch) {
        if let Some(q) = self.queues.get_mut(&Slot::of(&b.tp)) {
            if let Some(i) = q.in_flight.iter().position(|s| *s == b.base_sequence) {
                q.in_flight.swap_remove(i);
            }
        }
    }

    /// `b` was acknowledged under the current producer id. A hole below it
    /// is then already bridged on the broker (it accepted the gap: it had
    /// no state for this producer), so it is no longer closed.
    pub(super) fn confirm(&mut self, b: &Batch) {
        if let Some(q) = self.queues.get_mut(&Slot::of(&b.tp)) {
            q.confirmed = true;
            q.holes.retain(|(start, _)| *start > b.base_sequence);
        }
    }

    /// Split a batch the broker refused as too large into two halves by
    /// estimated bytes (each with at least one record) and put them back
    /// at the front like retries, in sequence order. The halves cover
    /// exactly the original sequence range (`base..base+k`, `base+k..base+n`),
    /// are re-encoded on their next send, keep the original creation time
    /// (so `delivery.timeout.ms` still counts from `send`), and share its
    /// `buffer.memory` permit between them (each half releases its part).
    /// Later batches of the partition close at half the refused size.
    ///
    /// Returns `None` when it was split, or the batch itself when it holds
    /// a single record (it cannot be split: that record fails alone).
    pub(super) fn split(&mut self, mut b: Batch, now: Instant) -> Option<Batch> {
        let n = b.records.len();
        if n < 2 {
            return Some(b);
        }
        let sizes: Vec<usize> = b
            .records
            .iter()
            .map(|r| estimated_size(r.key.as_ref(), r.value.as_ref(), &r.headers))
            .collect();
        let total: usize = sizes.iter().sum();
        let mut k = 0;
        let mut head = 0;
        while k < n - 1 && (k == 0 || head * 2 < total) {
            head += sizes[k];
            k += 1;
        }
        let tail_bytes = total - head;
        let tail_memory = b.memory.split(tail_bytes);
        let tail = Batch {
            tp: b.tp.clone(),
            records: b.records.split_off(k),
            deliveries: b.deliveries.split_off(k),
            memory: tail_memory,
            bytes: b.bytes.saturating_sub(head),
            created: b.created,
            sealed: true,
            base_sequence: if b.base_sequence >= 0 {
                seq_add(b.base_sequence, k as i32)
            } else {
                -1
            },
            producer_id: b.producer_id,
            producer_epoch: b.producer_epoch,
            encoded: None,
            attempts: b.attempts,
            ever_sent: true,
            retry_at: Some(now),
            sent_to: b.sent_to,
        };
        b.bytes = head.min(b.bytes);
        b.encoded = None;
        b.ever_sent = true;
        b.retry_at = Some(now);
        let q = self
            .queues
            .entry(Slot::of(&b.tp))
            .or_insert_with(|| PartitionQueue::new(&b.tp));
        let cap = (total / 2).max(1);
        q.size_cap = Some(q.size_cap.map_or(cap, |c| c.min(cap)));
        let pos = retry_position(q, b.base_sequence);
        q.queued.insert(pos, tail);
        q.queued.insert(pos, b);
        None
    }

    /// `b` failed for good and was never written (the broker refused it):
    /// its sequence range becomes a hole that later batches of the
    /// partition are renumbered over. No-op without idempotence.
    pub(super) fn skip_sequences(&mut self, b: &Batch) {
        if !self.cfg.idempotent || b.base_sequence < 0 {
            return;
        }
        if let Some(q) = self.queues.get_mut(&Slot::of(&b.tp)) {
            q.holes.push((b.base_sequence, b.records.len() as i32));
        }
    }

    /// Records completed (success or failure).
    pub(super) fn completed(&mut self, records: usize) {
        self.pending_records = self.pending_records.saturating_sub(records);
    }

    /// Put a failed batch back at the front, in sequence order among retries.
    pub(super) fn requeue(&mut self, mut b: Batch, retry_at: Instant) {
        b.attempts += 1;
        b.ever_sent = true;
        b.retry_at = Some(retry_at);
        let q = self
            .queues
            .entry(Slot::of(&b.tp))
            .or_insert_with(|| PartitionQueue::new(&b.tp));
        let pos = retry_position(q, b.base_sequence);
        q.queued.insert(pos, b);
    }

    /// Partitions whose front batch is a retry waiting out its backoff at
    /// `now` (nothing of the partition in flight), with the leader its
    /// last request went to.
    pub(super) fn retries_waiting(&self, now: Instant) -> Vec<(QueueKey, i32)> {
        self.queues
            .values()
            .filter(|q| q.in_flight.is_empty())
            .filter_map(|q| {
                let b = q.queued.front()?;
                let waiting = b.ever_sent && b.retry_at.is_some_and(|t| t > now);
                Some((q.tp.clone(), b.sent_to.filter(|_| waiting)?))
            })
            .collect()
    }

    /// End the backoff of `tps`' waiting retries: they go at `now`. For
    /// KIP-951, as Java's accumulator: a partition whose leader is no
    /// longer the one its retry's last request went to (a leader hint, or
    /// a metadata refresh, found the new one: the backoff was for the old).
    pub(super) fn end_backoff(&mut self, tps: &[QueueKey], now: Instant) {
        for tp in tps {
            let front = self
                .queues
                .get_mut(&Slot::of(tp))
                .and_then(|q| q.queued.front_mut());
            if let Some(b) = front.filter(|b| b.ever_sent) {
                b.retry_at = Some(now);
            }
        }
    }

    /// Does something below `seq` on `tp` explain an
    /// OUT_OF_ORDER_SEQUENCE_NUMBER for `seq`? An earlier batch waiting for
    /// a retry, one still in flight (its response may not be settled yet:
    /// responses of one connection can settle out of order), or a hole to
    /// be renumbered over. Then the error is expected and the batch is
    /// retried, not fatal.
    pub(super) fn gap_expected(&self, tp: &QueueKey, seq: i32) -> bool {
        self.queues.get(&Slot::of(tp)).is_some_and(|q| {
            q.queued
                .iter()
                .any(|b| b.ever_sent && b.base_sequence < seq)
                || q.in_flight.iter().any(|s| *s < seq)
                || q.holes.iter().any(|(start, _)| *start < seq)
        })
    }

    /// Remove batches older than `timeout` that are not in flight.
    pub(super) fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Batch> {
        let mut expired = Vec::new();
        for q in self.queues.values_mut() {
            while q.queued.front().is_some_and(|b| now >= b.created + timeout) {
                expired.push(q.queued.pop_front().expect("front exists"));
            }
        }
        expired
    }

    /// Forget all sequence state (after a new producer id): queued batches
    /// get fresh sequences from 0 when next drained.
    pub(super) fn reset_sequences(&mut self) {
        for q in self.queues.values_mut() {
            q.next_sequence = 0;
            q.confirmed = false;
            q.holes.clear();
            for b in &mut q.queued {
                b.base_sequence = -1;
                b.encoded = None;
            }
        }
    }

    /// The earliest instant a queued batch becomes ready by time.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|q| q.queued.front())
            .map(|b| b.retry_at.unwrap_or(b.created + self.cfg.linger))
            .min()
    }

    /// Nothing queued and nothing in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.queues
            .values()
            .all(|q| q.queued.is_empty() && q.in_flight.is_empty())
    }

    pub(super) fn in_flight_total(&self) -> usize {
        self.queues.values().map(|q| q.in_flight.len()).sum()
    }
}

/// Where a retried batch with `seq` goes: after the retries below it,
/// before every other queued batch.
fn retry_position(q: &PartitionQueue, seq: i32) -> usize {
    q.queued
        .iter()
        .position(|x| !x.ever_sent || x.base_sequence > seq)
        .unwrap_or(q.queued.len())
}

/// Renumber the partition's queued batches down over its holes, once no
/// request of it is in flight. Safe: a batch above a hole was refused by
/// the broker (OUT_OF_ORDER_SEQUENCE_NUMBER, or never reached it), because
/// the broker has state for this producer and rejects a gap. Where it had
/// none (one batch in flight until confirmed), the batch above it was
/// never sent, or its success removed the hole (`confirm`). The renumbered
/// batches are re-encoded on their next send.
fn close_holes(q: &mut PartitionQueue) {
    if q.holes.is_empty() || !q.in_flight.is_empty() {
        return;
    }
    for b in q.queued.iter_mut().filter(|b| b.base_sequence >= 0) {
        let shift: i32 = q
            .holes
            .iter()
            .filter(|(start, _)| *start < b.base_sequence)
            .map(|(_, n)| n)
            .sum();
        if shift > 0 {
            b.base_sequence = seq_sub(b.base_sequence, shift);
            b.encoded = None;
        }
    }
    let total: i32 = q.holes.iter().map(|(_, n)| n).sum();
    q.next_sequence = seq_sub(q.next_sequence, total);
    q.holes.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(id: i64, epoch: i16) -> ProducerIdEpoch {
        ProducerIdEpoch { id, epoch }
    }

    fn acc(idempotent: bool) -> Accumulator {
        acc_with(idempotent, &Arc::new(Semaphore::new(1 << 20)))
    }

    fn acc_with(idempotent: bool, sem: &Arc<Semaphore>) -> Accumulator {
        Accumulator::new(
            AccumulatorConfig {
                batch_size: 100,
                linger: Duration::from_millis(5),
                max_in_flight: 5,
                idempotent,
            },
            sem.clone(),
            Arc::new(FailureLog::new(1 << 20)),
        )
    }

    fn push(a: &mut Accumulator, tp: &QueueKey, size: usize, now: Instant) {
        a.memory.try_acquire_many(size as u32).unwrap().forget();
        a.append(&tp.0, tp.1, NewRecord::default(), size, || now);
    }

    #[tokio::test]
    async fn linger_then_ready_and_full_batches_ready_at_once() {
        let tp: QueueKey = (Arc::from("t"), 0);
        let mut a = acc(false);
        let t0 = Instant::now();
        push(&mut a, &tp, 10, t0);
        assert!(a.ready(t0, false).is_empty(), "lingering");
        assert_eq!(
            a.ready(t0 + Duration::from_millis(5), false),
            vec![tp.clone()]
        );
        assert_eq!(a.ready(t0, true), vec![tp.clone()], "flush ignores linger");
        push(&mut a, &tp, 95, t0); // does not fit: seals the first batch
        assert_eq!(a.ready(t0, false), vec![tp.clone()]);
    }

    #[tokio::test]
    async fn unconfirmed_partition_allows_one_batch_in_flight() {
        let tp: QueueKey = (Arc::from("t"), 0);
        let mut a = acc(true);
        let t0 = Instant::now();
        for _ in 0..3 {
            push(&mut a, &tp, 100, t0); // each fills a batch
        }
        let b0 = a.take(&tp, pid(7, 0)).unwrap();
        assert_eq!(b0.base_sequence, 0);
        assert!(a.ready(t0, false).is_empty(), "first batch unconfirmed");
        a.returned(&b0);
        a.confirm(&b0);
        let b1 = a.take(&tp, pid(7, 0)).unwrap();
        assert!(
            !a.ready(t0, false).is_empty(),
            "confirmed: pipelining allowed"
        );
        let b2 = a.take(&tp, pid(7, 0)).unwrap();
        assert_eq!((b1.base_sequence, b2.base_sequence), (1, 2));
    }

    #[tokio::test]
    async fn retries_go_back_in_sequence_order_after_everything_returned() {
        let tp: QueueKey = (Arc::from("t"), 0);
        let mut a = acc(true);
        let t0 = Instant::now();
        for _ in 0..3 {
            push(&mut a, &tp, 100, t0);
        }
        let b0 = a.take(&tp, pid(7, 0)).unwrap();
        a.returned(&b0);
        a.confirm(&b0);
        let b1 = a.take(&tp, pid(7, 0)).unwrap();
        let b2 = a.take(&tp, pid(7, 0)).unwrap();
        // b2 comes back first (out of order), then b1.
        a.returned(&b2);
        a.requeue(b2, t0);
        assert!(a.ready(t0, false).is_empty(), "b1 still in flight");
        a.returned(&b1);
        a.requeue(b1, t0);
        let first = a.take(&tp, pid(7, 0)).unwrap();
        assert_eq!(first.base_sequence, 1, "lowest sequence first");
        assert!(first.encoded.is_none() || first.ever_sent);
    }

    #[tokio::test]
    async fn a_waiting_retry_is_known_with_its_leader_and_its_backoff_can_end() {
        let tp: QueueKey = (Arc::from("t"), 0);
        let other: QueueKey = (Arc::from("t"), 1);
        let mut a = acc(false);
        let t0 = Instant::now();
        push(&mut a, &tp, 100, t0);
        push(&mut a, &other, 10, t0); // not full: lingers
        let mut b = a.take(&tp, ProducerIdEpoch::NONE).unwrap();
        b.sent_to = Some(1);
        a.returned(&b);
        a.requeue(b, t0 + Duration::from_secs(60));
        assert!(!a.ready(t0, false).contains(&tp), "backing off");
        assert_eq!(a.retries_waiting(t0), vec![(tp.clone(), 1)]);

        a.end_backoff(&[tp.clone(), other.clone()], t0);
        assert!(a.ready(t0, false).contains(&tp), "goes at once");
        assert!(a.retries_waiting(t0).is_empty());
        assert!(
            !a.ready(t0, false).contains(&other),
            "a batch never sent has no backoff to end: still lingering"
        );
    }

    /// Queue one record with a value of `len` bytes, its permit from `sem`.
    fn push_value(
        a: &mut Accumulator,
        tp: &QueueKey,
        len: usize,
        sem: &Arc<Semaphore>,
        now: Instant,
    ) -> DeliveryFuture {
        assert!(Arc::ptr_eq(sem, &a.memory), "one buffer.memory");
        let record = NewRecord {
            value: Some(Bytes::from(vec![b'x'; len])),
            ..NewRecord::default()
        };
        let size = estimated_size(None, record.value.as_ref(), &[]);
        sem.try_acquire_many(size as u32).unwrap().forget();
        a.append(&tp.0, tp.1, record, size, || now).1
    }

    fn big_batches(sem: &Arc<Semaphore>) -> Accumulator {
        Accumulator::new(
            AccumulatorConfig {
                batch_size: 1 << 20,
                linger: Duration::from_millis(5),
                max_in_flight: 5,
                idempotent: true,
            },
            sem.clone(),
            Arc::new(FailureLog::new(1 << 20)),
        )
    }

    /// Stand-in for the encoded bytes a sent batch keeps.
    fn sent(mut b: Batch) -> Batch {
        b.encoded = Some(Bytes::from_static(b"wire"));
        b
    }

    #[tokio::test]
    async fn a_split_covers_the_same_sequences_in_order_and_divides_the_permit() {
        let tp: QueueKey = (Arc::from("t"), 0);
        let sem = Arc::new(Semaphore::new(1 << 20));
        let mut a = big_batches(&sem);
        let t0 = Instant::now();
        // Sizes 116, 16, 16, 216, 116: the head takes records until half the bytes.
        let rxs: Vec<_> = [100, 0, 0, 200, 100]
            .into_iter()
            .map(|len| push_value(&mut a, &tp, len, &sem, t0))
            .collect();
        let b = sent(a.take(&tp, pid(7, 0)).unwrap());
        assert_eq!((b.base_sequence, b.records.len(), b.bytes), (0, 5, 480));
        assert_eq!(sem.available_permits(), (1 << 20) - 480);
        a.returned(&b);
        let now = t0 + Duration::from_millis(1);
        assert!(a.split(b, now).is_none());
        let head = a.take(&tp, pid(7, 0)).unwrap();
        assert!(a.ready(now, true).is_empty(), "one retry at a time");
        assert_eq!(
            (head.base_sequence, head.records.len(), head.bytes),
            (0, 4, 364)
        );
        assert!(head.encoded.is_none(), "re-encoded: it holds fewer records");
        assert_eq!(head.created, t0, "delivery.timeout.ms counts from send");
        assert_eq!(head.memory.num_permits(), 364);
        a.returned(&head);
        a.confirm(&head);
        let tail = a.take(&tp, pid(7, 0)).unwrap();
        assert_eq!(
            (tail.base_sequence, tail.records.len(), tail.bytes),
            (4, 1, 116)
        );
        assert_eq!(tail.memory.num_permits(), 116);
        a.returned(&tail);
        head.succeed(10, -1);
        tail.succeed(14, -1);
        // Every permit came back exactly once, every record has its offset.
        assert_eq!(sem.available_permits(), 1 << 20);
        let offsets: Vec<i64> = rxs
            .into_iter()
            .map(|f| futures_now(f).unwrap().offset)
            .collect();
        assert_eq!(offsets, vec![10, 11, 12, 13, 14]);
        // New records continue after the whole original range, in batches
        // of at most half the refused size (240 bytes) now, not batch.size.
        for _ in 0..3 {
            push_value(&mut a, &tp, 100, &sem, now);
        }
        let next = a.take(&tp, pid(7, 0)).unwrap();
        assert_eq!((next.base_sequence, next.records.len()), (5, 2));
    }

    #[tokio::test]
    async fn a_batch_of_one_record_cannot_be_split() {
        let tp: QueueKey = (Arc::from("t"), 0);
        let sem = Arc::new(Semaphore::new(1 << 20));
        let mut a = big_batches(&sem);
        let t0 = Instant::now();
        push_value(&mut a, &tp, 10, &sem, t0);
        let b = a.take(&tp, pid(7, 0)).unwrap();
        a.returned(&b);
        let back = a.split(b, t0).expect("one record: handed back");
        assert_eq!(back.records.len(), 1);
        assert!(a.is_idle());
    }

    #[tokio::test]
    async fn halves_go_before_later_batches_that_came_back_out_of_order() {
        let tp: QueueKey = (Arc::from("t"), 0);
        let sem = Arc::new(Semaphore::new(1 << 20));
        let mut a = acc_with(true, &sem); // batch.size 100: one 84-byte record per batch
        let t0 = Instant::now();
        push_value(&mut a, &tp, 68, &sem, t0); // 84 bytes: batch 0
        let b0 = a.take(&tp, pid(7, 0)).unwrap();
        a.returned(&b0);
        a.confirm(&b0);
        push_value(&mut a, &tp, 20, &sem, t0); // batch 1: two records of 36
        push_value(&mut a, &tp, 20, &sem, t0);
        push_value(&mut a, &tp, 68, &sem, t0); // batch 2
        let b1 = sent(a.take(&tp, pid(7, 0)).unwrap());
        let b2 = sent(a.take(&tp, pid(7, 0)).unwrap());
        assert_eq!((b1.base_sequence, b2.base_sequence), (1, 3));
        // b2's OUT_OF_ORDER_SEQUENCE_NUMBER may settle before b1's answer.
        a.returned(&b2);
        assert!(a.gap_expected(&tp, b2.base_sequence), "b1 still in flight");
        a.requeue(b2, t0);
        a.returned(&b1);
        assert!(a.split(b1, t0).is_none());
        let order: Vec<(i32, usize)> = std::iter::from_fn(|| {
            let b = a.take(&tp, pid(7, 0))?;
            a.returned(&b);
            Some((b.base_sequence, b.records.len()))
        })
        .collect();
        assert_eq!(order, vec![(1, 1), (2, 1), (3, 1)]);
    }

    #[tokio::test]
    async fn later_batches_are_renumbered_over_a_record_that_failed_alone() {
        let tp: QueueKey = (Arc::from("t"), 0);
        let sem = Arc::new(Semaphore::new(1 << 20));
        let mut a = acc_with(true, &sem);
        let t0 = Instant::now();
        push_value(&mut a, &tp, 68, &sem, t0);
        let b0 = a.take(&tp, pid(7, 0)).unwrap();
        a.returned(&b0);
        a.confirm(&b0);
        for _ in 0..4 {
            push_value(&mut a, &tp, 68, &sem, t0);
        }
        // b1 (seq 1) is the record too large; b2 and b3 are in flight behind it.
        let b1 = sent(a.take(&tp, pid(7, 0)).unwrap());
        let b2 = sent(a.take(&tp, pid(7, 0)).unwrap());
        let b3 = sent(a.take(&tp, pid(7, 0)).unwrap());
        assert_eq!(
            (b1.base_sequence, b2.base_sequence, b3.base_sequence),
            (1, 2, 3)
        );
        a.returned(&b1);
        let b1 = a.split(b1, t0).expect("one record");
        a.skip_sequences(&b1);
        b1.fail(&Error::Closed);
        assert!(
            a.ready(t0, true).is_empty(),
            "nothing new while b2 and b3 are out: they carry old numbers"
        );
        for b in [b2, b3] {
            a.returned(&b);
            assert!(a.gap_expected(&tp, b.base_sequence), "the hole explains it");
            a.requeue(b, t0);
        }
        assert_eq!(a.ready(t0, true), vec![tp.clone()]);
        let r2 = a.take(&tp, pid(7, 0)).unwrap();
        assert_eq!(r2.base_sequence, 1, "renumbered over the hole");
        assert!(r2.encoded.is_none(), "re-encoded with its new sequence");
        a.returned(&r2);
        a.confirm(&r2);
        let r3 = a.take(&tp, pid(7, 0)).unwrap();
        assert_eq!(r3.base_sequence, 2);
        a.returned(&r3);
        let b4 = a.take(&tp, pid(7, 0)).unwrap();
        assert_eq!(b4.base_sequence, 3, "fresh batches continue without a gap");
        a.returned(&b4);
        assert!(!a.gap_expected(&tp, 4), "nothing explains a later gap now");
    }

    #[tokio::test]
    async fn a_hole_the_broker_already_bridged_is_not_closed_again() {
        // A broker without state for the producer accepted the batch above
        // the hole: its numbering is the broker's now, so nothing shifts.
        let tp: QueueKey = (Arc::from("t"), 0);
        let sem = Arc::new(Semaphore::new(1 << 20));
        let mut a = acc_with(true, &sem);
        let t0 = Instant::now();
        for _ in 0..3 {
            push_value(&mut a, &tp, 68, &sem, t0);
        }
        let b0 = a.take(&tp, pid(7, 0)).unwrap();
        a.returned(&b0);
        a.confirm(&b0);
        let b1 = a.take(&tp, pid(7, 0)).unwrap();
        let b2 = a.take(&tp, pid(7, 0)).unwrap();
        a.returned(&b1);
        a.skip_sequences(&b1);
        a.returned(&b2);
        a.confirm(&b2);
        push_value(&mut a, &tp, 68, &sem, t0);
        assert_eq!(a.take(&tp, pid(7, 0)).unwrap().base_sequence, 3);
    }

    /// A delivery future's outcome, which must be there already.
    fn futures_now(f: DeliveryFuture) -> Result<super::super::RecordMetadata, Error> {
        use std::future::Future;
        let mut f = std::pin::pin!(f);
        match f
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => panic!("not delivered yet"),
        }
    }

    #[test]
    fn sequences_wrap_like_kafkas() {
        assert_eq!(seq_add(i32::MAX, 1), 0);
        assert_eq!(seq_add(i32::MAX - 1, 3), 1);
        assert_eq!(seq_sub(1, 3), i32::MAX - 1);
        for (s, n) in [(0, 1), (5, 5), (i32::MAX, 7), (3, 10)] {
            assert_eq!(seq_sub(seq_add(s, n), n), s);
        }
    }
}
