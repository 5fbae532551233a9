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
    /// their peaks).
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
