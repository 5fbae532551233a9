//! Backpressure: what is in flight, and pausing fetching when there is too
//! much. Every partition pauses above the global in-flight bound (until
//! below half); one partition pauses when its own queue is full,
//! quarantined, or its completed-offset map no longer fits the commit
//! metadata. Finishing work that makes room wakes the poll loop, so
//! fetching resumes at once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use consumer_core::{Consumer, TopicPartition};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::runtime::Runtime;
use crate::observe::Event;

/// Records and bytes in flight (dispatched, not finished), and the global
/// pause (only this file touches them).
pub(super) struct InFlight {
    bytes: AtomicUsize,
    records: AtomicUsize,
    /// Set while fetching is paused at the global bound.
    globally_paused: AtomicBool,
    /// Signalled when finished work takes a paused partition (or the
    /// global bound) down to where fetching resumes: the poll loop, waiting
    /// in a poll while paused, goes back to resume at once instead of when
    /// its poll times out, so workers never sit idle while fetched records
    /// wait behind a pause.
    capacity: Notify,
}

impl InFlight {
    pub(super) fn new() -> Self {
        Self {
            bytes: AtomicUsize::new(0),
            records: AtomicUsize::new(0),
            globally_paused: AtomicBool::new(false),
            capacity: Notify::new(),
        }
    }
}

impl Runtime {
    /// `records` dispatched, holding `bytes`: count them in flight (and
    /// their peaks). Called before the records are queued, so no worker can
    /// finish them first (the counters would go below zero).
    #[inline]
    pub(super) fn admit(&self, records: usize, bytes: usize) {
        let now = self.in_flight.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let records = self.in_flight.records.fetch_add(records, Ordering::AcqRel) + records;
        self.stats
            .peak_in_flight_bytes
            .fetch_max(now, Ordering::Relaxed);
        self.stats
            .peak_in_flight_records
            .fetch_max(records, Ordering::Relaxed);
    }

    /// `records` holding `bytes` finished: no longer in flight. Wakes the
    /// poll loop if their partition may resume (`part_resumes`: its queue
    /// drained to where it resumes) or the global pause may lift.
    #[inline]
    pub(super) fn release_in_flight(&self, records: usize, bytes: usize, part_resumes: bool) {
        let cfg = self.cfg();
        let bytes_left = self.in_flight.bytes.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        let records_left = self.in_flight.records.fetch_sub(records, Ordering::AcqRel) - records;
        let mut resume = part_resumes;
        resume |= self.in_flight.globally_paused.load(Ordering::Acquire)
            && bytes_left <= cfg.max_in_flight_bytes / 2
            && records_left <= cfg.max_in_flight_records / 2;
        if resume {
            self.in_flight.capacity.notify_one();
        }
    }

    /// Completes when finished work has made room for a paused partition
    /// (or under the global bound): the poll loop, paused until workers
    /// drain, stops waiting in its poll and resumes fetching at once.
    pub(super) fn capacity_freed(&self) -> Notified<'_> {
        self.in_flight.capacity.notified()
    }

    /// Records and bytes in flight now, for the poll task's snapshots.
    pub(super) fn in_flight(&self) -> (usize, usize) {
        (
            self.in_flight.records.load(Ordering::Acquire),
            self.in_flight.bytes.load(Ordering::Acquire),
        )
    }
}

/// How long one poll may wait. While fetching is paused until workers
/// drain, the loop must come back soon to resume it: a paused consumer has
/// nothing to return, so a long wait idles the workers once they are done
/// (measured: a 100 ms wait capped the runtime at one in-flight bound per
/// 100 ms, about 100k records/s). Pauses that wait on time (quarantine) or
/// on a commit (metadata full) keep the normal wait.
pub(super) fn poll_wait(draining: bool) -> Duration {
    if draining {
        Duration::from_millis(2)
    } else {
        Duration::from_millis(100)
    }
}

/// Pause what should not be fetched now, resume what may be again:
/// everything above the global in-flight bound (until below half), and
/// single partitions that are full, quarantined, or whose completed-offset
/// map no longer fits the commit metadata. Returns whether a pause waits
/// only for workers to drain (the global bound or a full queue).
pub(super) fn apply_backpressure(
    rt: &Runtime,
    consumer: &mut Consumer,
    paused: &mut HashSet<TopicPartition>,
    globally: &mut bool,
) -> bool {
    let cfg = rt.cfg();
    let bytes = rt.in_flight.bytes.load(Ordering::Acquire);
    let records = rt.in_flight.records.load(Ordering::Acquire);
    rt.metrics().in_flight(records, bytes);
    if bytes >= cfg.max_in_flight_bytes || records >= cfg.max_in_flight_records {
        if !*globally {
            rt.stats.pauses.fetch_add(1, Ordering::Relaxed);
        }
        *globally = true;
    } else if bytes <= cfg.max_in_flight_bytes / 2 && records <= cfg.max_in_flight_records / 2 {
        *globally = false;
    }
    rt.in_flight
        .globally_paused
        .store(*globally, Ordering::Release);
    let assigned = consumer.assignment();
    let mut queue_full = false;
    let want: HashSet<TopicPartition> = if *globally {
        assigned.into_iter().collect()
    } else {
        let now = Instant::now();
        // The configured bound, or the partition's fair share of the global
        // one when lower: one busy partition must not fill the global bound
        // (every partition paused) while the others' workers sit idle.
        let share = cfg.max_in_flight_records / assigned.len().max(1);
        let per_part = cfg.max_queued_per_partition.min(share).max(1);
        let mut st = rt.lock();
        assigned
            .into_iter()
            .filter(|tp| {
                let Some(p) = st.part_mut(tp) else {
                    return false;
                };
                if p.queued >= per_part {
                    if !p.full {
                        rt.stats.partition_pauses.fetch_add(1, Ordering::Relaxed);
                    }
                    p.full = true;
                    p.resume_at = per_part / 2;
                } else if p.queued <= per_part / 2 {
                    p.full = false;
                }
                queue_full |= p.full;
                p.full || p.metadata_full || p.quarantined_until.is_some_and(|u| u > now)
            })
            .collect()
    };
    let to_pause: Vec<TopicPartition> = want.difference(paused).cloned().collect();
    let to_resume: Vec<TopicPartition> = paused.difference(&want).cloned().collect();
    if !to_pause.is_empty() {
        consumer.pause(&to_pause);
        rt.observe(Event::Paused(to_pause));
    }
    if !to_resume.is_empty() {
        consumer.resume(&to_resume);
        rt.observe(Event::Resumed(to_resume));
    }
    *paused = want;
    rt.metrics().paused(paused.len());
    *globally || queue_full
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use consumer_core::{ConsumerConfig, PartitionRecords, TopicPartition};
    use kafka_wire::records::Record;

    use super::super::runtime::Runtime;
    use super::super::unit::OneRecord;
    use super::super::Stats;
    use crate::{Handler, HandlerError, ProcessorConfig};

    struct Noop;
    impl Handler for Noop {
        async fn handle(&self, _: &TopicPartition, _: &Record) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    fn record(offset: i64) -> Record {
        Record {
            offset,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
        }
    }

    /// Workers already running take a poll's records the moment they are
    /// queued, so the records must count in flight before that: counted
    /// after (as before), a worker could finish them first, the counters
    /// went below zero for a moment, and a debug build panicked on the
    /// overflow (the order-saga seed test caught it once).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_count_in_flight_before_a_worker_can_take_them() {
        let consumer = ConsumerConfig::builder()
            .bootstrap("127.0.0.1:9092")
            .unwrap()
            .build()
            .unwrap();
        let cfg = ProcessorConfig::new(consumer, &["t"]).concurrency(4);
        let rt = Arc::new(Runtime::new(
            cfg,
            Arc::new(OneRecord(Noop)),
            Arc::new(Stats::default()),
            None,
        ));
        let polls: i64 = 20_000;
        for offset in 0..polls {
            rt.dispatch(PartitionRecords {
                tp: TopicPartition::new("t", (offset % 4) as i32),
                records: vec![record(offset / 4)],
                high_watermark: -1,
                last_stable_offset: -1,
            });
            if offset % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while rt.stats.handled.load(Ordering::Relaxed) < polls as u64 {
            assert!(
                std::time::Instant::now() < deadline,
                "handled {} of {polls}: a worker died",
                rt.stats.handled.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(rt.in_flight.records.load(Ordering::Acquire), 0);
        assert_eq!(rt.in_flight.bytes.load(Ordering::Acquire), 0);
    }
}
