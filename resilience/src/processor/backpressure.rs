//! Backpressure: what is in flight, and when fetching pauses. Every
//! partition pauses above the global in-flight bound (until below half);
//! one partition pauses when its own queue is full, quarantined, or its
//! completion holds fetching (a completed-offset map that no longer fits
//! the commit metadata). Finishing work that makes room wakes the poll
//! loop, so fetching resumes at once. The runtime decides per partition
//! under its lock; the poll loop pauses and resumes the consumer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// The global in-flight bound (`max_in_flight_records`,
/// `max_in_flight_bytes`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound {
    pub(super) records: usize,
    pub(super) bytes: usize,
}

impl Bound {
    /// At or above either bound: pause everything.
    fn reached(&self, records: usize, bytes: usize) -> bool {
        bytes >= self.bytes || records >= self.records
    }

    /// At or below half of both: a global pause lifts.
    fn half_clear(&self, records: usize, bytes: usize) -> bool {
        bytes <= self.bytes / 2 && records <= self.records / 2
    }
}

/// Records and bytes in flight (dispatched, not finished), and the global
/// pause.
pub(super) struct InFlight {
    bound: Bound,
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
    pub(super) fn new(bound: Bound) -> Self {
        Self {
            bound,
            bytes: AtomicUsize::new(0),
            records: AtomicUsize::new(0),
            globally_paused: AtomicBool::new(false),
            capacity: Notify::new(),
        }
    }

    /// `records` holding `bytes` dispatched: count them in flight. Returns
    /// the totals now (records, bytes), for the peaks. Call it before the
    /// records are queued, so no worker can finish them first (the
    /// counters would go below zero).
    #[inline]
    pub(super) fn admit(&self, records: usize, bytes: usize) -> (usize, usize) {
        let bytes = self.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let records = self.records.fetch_add(records, Ordering::AcqRel) + records;
        (records, bytes)
    }

    /// `records` holding `bytes` finished: no longer in flight. Wakes the
    /// poll loop if their partition may resume (`part_resumes`: its queue
    /// drained to where it resumes) or the global pause may lift.
    #[inline]
    pub(super) fn release(&self, records: usize, bytes: usize, part_resumes: bool) {
        let bytes_left = self.bytes.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        let records_left = self.records.fetch_sub(records, Ordering::AcqRel) - records;
        let global_lifts = self.globally_paused.load(Ordering::Acquire)
            && self.bound.half_clear(records_left, bytes_left);
        if part_resumes || global_lifts {
            self.capacity.notify_one();
        }
    }

    /// Completes when finished work has made room for a paused partition
    /// (or under the global bound).
    pub(super) fn capacity_freed(&self) -> Notified<'_> {
        self.capacity.notified()
    }

    /// Records and bytes in flight now.
    pub(super) fn now(&self) -> (usize, usize) {
        (
            self.records.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
        )
    }

    /// Whether every partition pauses with `records` and `bytes` in flight
    /// (read by [`InFlight::now`]), given whether it did (`was`): from the
    /// bound until below half of it.
    pub(super) fn global_pause(&self, (records, bytes): (usize, usize), was: bool) -> bool {
        let paused = if self.bound.reached(records, bytes) {
            true
        } else if self.bound.half_clear(records, bytes) {
            false
        } else {
            was
        };
        self.globally_paused.store(paused, Ordering::Release);
        paused
    }
}

/// One partition's queue against its bound: full at the bound, clear again
/// at half of it.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct QueueBound {
    full: bool,
    /// While `full`: the queue length at or below which it resumes.
    resume_at: usize,
}

impl QueueBound {
    /// `queued` against `bound`. `true` when the queue just became full.
    pub(super) fn update(&mut self, queued: usize, bound: usize) -> bool {
        if queued >= bound {
            let newly = !self.full;
            self.full = true;
            self.resume_at = bound / 2;
            newly
        } else {
            if queued <= bound / 2 {
                self.full = false;
            }
            false
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.full
    }

    /// Whether a partition paused for its full queue may resume with
    /// `queued` records left.
    pub(super) fn resumes(&self, queued: usize) -> bool {
        self.full && queued <= self.resume_at
    }
}

/// The bound of one partition's queue: `configured`
/// (`max_queued_per_partition`), or the partition's fair share of the
/// global record bound when lower, so one busy partition cannot fill the
/// global bound (every partition paused) while the others' workers sit
/// idle.
pub(super) fn partition_bound(configured: usize, global_records: usize, assigned: usize) -> usize {
    let share = global_records / assigned.max(1);
    configured.min(share).max(1)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_global_pause_holds_from_the_bound_until_below_half() {
        let f = InFlight::new(Bound {
            records: 100,
            bytes: 1_000,
        });
        f.admit(99, 10);
        assert!(!f.global_pause(f.now(), false));
        f.admit(1, 10);
        assert!(f.global_pause(f.now(), false), "at the record bound");
        f.release(40, 10, false);
        assert!(f.global_pause(f.now(), true), "above half: still paused");
        f.release(10, 0, false);
        assert!(!f.global_pause(f.now(), true), "half: resumes");
        f.admit(0, 1_000);
        assert!(f.global_pause(f.now(), false), "at the byte bound");
    }

    #[test]
    fn a_full_queue_resumes_at_half_its_bound() {
        let mut q = QueueBound::default();
        assert!(!q.update(9, 10));
        assert!(q.update(10, 10), "just became full");
        assert!(!q.update(12, 10), "already full");
        assert!(!q.resumes(6));
        assert!(q.resumes(5));
        assert!(!q.update(6, 10) && q.is_full(), "above half: still full");
        q.update(5, 10);
        assert!(!q.is_full());
        assert_eq!(partition_bound(1_000, 10_000, 4), 1_000);
        assert_eq!(partition_bound(1_000, 1_000, 4), 250, "the fair share");
        assert_eq!(partition_bound(1_000, 1, 4), 1);
    }
}
