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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::error::Error;
use crate::records::NewRecord;

use super::RecordMetadata;

/// A topic and partition.
pub type TopicPartition = (Arc<str>, i32);

pub(crate) type Reply = oneshot::Sender<Result<RecordMetadata, Error>>;

/// A batch of records for one partition.
pub(crate) struct Batch {
    pub tp: TopicPartition,
    pub records: Vec<NewRecord>,
    pub replies: Vec<Reply>,
    /// Buffer memory held until the batch completes.
    pub memory: Option<OwnedSemaphorePermit>,
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
}

impl Batch {
    /// Complete every record with its offset.
    pub fn succeed(self, base_offset: i64, log_append_time: i64) {
        let topic = self.tp.0.to_string();
        for (i, (reply, rec)) in self.replies.into_iter().zip(&self.records).enumerate() {
            let _ = reply.send(Ok(RecordMetadata {
                topic: topic.clone(),
                partition: self.tp.1,
                offset: if base_offset >= 0 {
                    base_offset + i as i64
                } else {
                    -1
                },
                timestamp: if log_append_time >= 0 {
                    log_append_time
                } else {
                    rec.timestamp
                },
            }));
        }
    }

    /// Fail every record with `err`.
    pub fn fail(self, err: &Error) {
        for reply in self.replies {
            let _ = reply.send(Err(err.clone()));
        }
    }
}

#[derive(Default)]
struct PartitionQueue {
    queued: VecDeque<Batch>,
    in_flight: usize,
    next_sequence: i32,
    /// A batch of this producer id has been acknowledged on this partition.
    /// Until then only one batch may be in flight: a broker with no state
    /// for a producer accepts any first sequence, so if batch 0 failed while
    /// batch 1 went through, the log would hold them out of order.
    confirmed: bool,
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
    queues: HashMap<TopicPartition, PartitionQueue>,
    /// Records accepted and not yet completed (for `flush`).
    pub pending_records: usize,
}

/// What `append` did.
pub(crate) struct Appended {
    /// A batch became full (wake the sender now).
    pub batch_full: bool,
    /// The record opened a new batch (the sender must arm a linger timer).
    pub new_batch: bool,
}

impl Accumulator {
    pub fn new(cfg: AccumulatorConfig) -> Self {
        Self {
            cfg,
            queues: HashMap::new(),
            pending_records: 0,
        }
    }

    pub fn append(
        &mut self,
        tp: TopicPartition,
        record: NewRecord,
        size: usize,
        reply: Reply,
        memory: OwnedSemaphorePermit,
        now: impl FnOnce() -> Instant,
    ) -> Appended {
        let batch_size = self.cfg.batch_size;
        let q = self.queues.entry(tp.clone()).or_default();
        self.pending_records += 1;
        let open = q
            .queued
            .back_mut()
            .filter(|b| !b.sealed && !b.ever_sent && b.bytes + size <= batch_size);
        let (batch, new_batch) = match open {
            Some(b) => (b, false),
            None => {
                if let Some(last) = q.queued.back_mut() {
                    last.sealed = true;
                }
                q.queued.push_back(Batch {
                    tp,
                    records: Vec::new(),
                    replies: Vec::new(),
                    memory: None,
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
                });
                (q.queued.back_mut().expect("just pushed"), true)
            }
        };
        batch.records.push(record);
        batch.replies.push(reply);
        batch.bytes += size;
        match &mut batch.memory {
            Some(m) => m.merge(memory),
            None => batch.memory = Some(memory),
        }
        if batch.bytes >= batch_size {
            batch.sealed = true;
        }
        Appended {
            batch_full: batch.sealed,
            new_batch,
        }
    }

    /// Is the front batch of `q` ready to go at `now`?
    fn front_ready(&self, q: &PartitionQueue, now: Instant, flush: bool) -> bool {
        let Some(b) = q.queued.front() else {
            return false;
        };
        if b.ever_sent {
            // A retry: only once everything earlier has come back, and after backoff.
            return q.in_flight == 0 && b.retry_at.is_none_or(|t| t <= now);
        }
        let any_retry_pending = q.queued.iter().any(|b| b.ever_sent);
        let capacity = if self.cfg.idempotent && !q.confirmed {
            q.in_flight == 0
        } else if self.cfg.idempotent {
            q.in_flight < self.cfg.max_in_flight.min(5)
        } else {
            q.in_flight < self.cfg.max_in_flight
        };
        !any_retry_pending && capacity && (b.sealed || flush || now >= b.created + self.cfg.linger)
    }

    /// Partitions whose front batch can be sent now.
    pub fn ready(&self, now: Instant, flush: bool) -> Vec<TopicPartition> {
        self.queues
            .iter()
            .filter(|(_, q)| self.front_ready(q, now, flush))
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Take the front batch of `tp` for sending, assigning its sequence.
    pub fn take(&mut self, tp: &TopicPartition, producer: (i64, i16)) -> Option<Batch> {
        let idempotent = self.cfg.idempotent;
        let q = self.queues.get_mut(tp)?;
        let mut b = q.queued.pop_front()?;
        b.sealed = true;
        if idempotent && b.base_sequence < 0 {
            b.base_sequence = q.next_sequence;
            b.producer_id = producer.0;
            b.producer_epoch = producer.1;
            q.next_sequence = q.next_sequence.wrapping_add(b.records.len() as i32);
            if q.next_sequence < 0 {
                q.next_sequence = 0; // sequences wrap at i32::MAX
            }
        }
        q.in_flight += 1;
        Some(b)
    }

    /// A request carrying `tp`'s batch came back (whatever the outcome).
    pub fn returned(&mut self, tp: &TopicPartition) {
        if let Some(q) = self.queues.get_mut(tp) {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
    }

    /// A batch of `tp` was acknowledged under the current producer id.
    pub fn confirm(&mut self, tp: &TopicPartition) {
        if let Some(q) = self.queues.get_mut(tp) {
            q.confirmed = true;
        }
    }

    /// Records completed (success or failure).
    pub fn completed(&mut self, records: usize) {
        self.pending_records = self.pending_records.saturating_sub(records);
    }

    /// Put a failed batch back at the front, in sequence order among retries.
    pub fn requeue(&mut self, mut b: Batch, retry_at: Instant) {
        b.attempts += 1;
        b.ever_sent = true;
        b.retry_at = Some(retry_at);
        let q = self.queues.entry(b.tp.clone()).or_default();
        let pos = q
            .queued
            .iter()
            .position(|x| !x.ever_sent || x.base_sequence > b.base_sequence)
            .unwrap_or(q.queued.len());
        q.queued.insert(pos, b);
    }

    /// Is a batch of `tp` with a sequence below `seq` waiting for a retry?
    /// Then an OUT_OF_ORDER_SEQUENCE_NUMBER for `seq` is expected, not fatal.
    pub fn earlier_retry_pending(&self, tp: &TopicPartition, seq: i32) -> bool {
        self.queues.get(tp).is_some_and(|q| {
            q.queued
                .iter()
                .any(|b| b.ever_sent && b.base_sequence < seq)
        })
    }

    /// Remove batches older than `timeout` that are not in flight.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Batch> {
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
    pub fn reset_sequences(&mut self) {
        for q in self.queues.values_mut() {
            q.next_sequence = 0;
            q.confirmed = false;
            for b in &mut q.queued {
                b.base_sequence = -1;
                b.encoded = None;
            }
        }
    }

    /// The earliest instant a queued batch becomes ready by time.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|q| q.queued.front())
            .map(|b| b.retry_at.unwrap_or(b.created + self.cfg.linger))
            .min()
    }

    /// Nothing queued and nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.queues
            .values()
            .all(|q| q.queued.is_empty() && q.in_flight == 0)
    }

    pub fn in_flight_total(&self) -> usize {
        self.queues.values().map(|q| q.in_flight).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(idempotent: bool) -> Accumulator {
        Accumulator::new(AccumulatorConfig {
            batch_size: 100,
            linger: Duration::from_millis(5),
            max_in_flight: 5,
            idempotent,
        })
    }

    fn push(a: &mut Accumulator, tp: &TopicPartition, size: usize, now: Instant) {
        let sem = Arc::new(tokio::sync::Semaphore::new(1 << 20));
        let permit = sem.try_acquire_many_owned(size as u32).unwrap();
        let (tx, _rx) = oneshot::channel();
        a.append(tp.clone(), NewRecord::default(), size, tx, permit, || now);
    }

    #[tokio::test]
    async fn linger_then_ready_and_full_batches_ready_at_once() {
        let tp: TopicPartition = (Arc::from("t"), 0);
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
        let tp: TopicPartition = (Arc::from("t"), 0);
        let mut a = acc(true);
        let t0 = Instant::now();
        for _ in 0..3 {
            push(&mut a, &tp, 100, t0); // each fills a batch
        }
        let b0 = a.take(&tp, (7, 0)).unwrap();
        assert_eq!(b0.base_sequence, 0);
        assert!(a.ready(t0, false).is_empty(), "first batch unconfirmed");
        a.returned(&tp);
        a.confirm(&tp);
        let b1 = a.take(&tp, (7, 0)).unwrap();
        assert!(
            !a.ready(t0, false).is_empty(),
            "confirmed: pipelining allowed"
        );
        let b2 = a.take(&tp, (7, 0)).unwrap();
        assert_eq!((b1.base_sequence, b2.base_sequence), (1, 2));
    }

    #[tokio::test]
    async fn retries_go_back_in_sequence_order_after_everything_returned() {
        let tp: TopicPartition = (Arc::from("t"), 0);
        let mut a = acc(true);
        let t0 = Instant::now();
        for _ in 0..3 {
            push(&mut a, &tp, 100, t0);
        }
        let b0 = a.take(&tp, (7, 0)).unwrap();
        a.returned(&tp);
        a.confirm(&tp);
        let b1 = a.take(&tp, (7, 0)).unwrap();
        let b2 = a.take(&tp, (7, 0)).unwrap();
        drop(b0);
        // b2 comes back first (out of order), then b1.
        a.returned(&tp);
        a.requeue(b2, t0);
        assert!(a.ready(t0, false).is_empty(), "b1 still in flight");
        a.returned(&tp);
        a.requeue(b1, t0);
        let first = a.take(&tp, (7, 0)).unwrap();
        assert_eq!(first.base_sequence, 1, "lowest sequence first");
        assert!(first.encoded.is_none() || first.ever_sent);
    }
}
