//! The counters of a run, shared with the running processor.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters of a run (shared with the running processor).
#[derive(Debug, Default)]
pub struct Stats {
    /// Records whose handler succeeded. Counted as a unit of work
    /// finishes (at most 512 records or about 5 ms after the calls), just
    /// before their offsets may commit, not per call.
    pub handled: AtomicU64,
    /// Blocking retries (attempts after the first).
    pub retried: AtomicU64,
    /// Records written to the DLT (acknowledged).
    pub dead_lettered: AtomicU64,
    /// Records written to a retry topic (acknowledged).
    pub sent_to_retry: AtomicU64,
    /// Records skipped because the DedupStore had their key.
    pub deduplicated: AtomicU64,
    /// Skipped because the committed metadata said they were done.
    pub already_done: AtomicU64,
    /// Commits the broker accepted.
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    /// Failed DLT or retry-topic writes (each is retried).
    pub dlt_write_failures: AtomicU64,
    /// Times the global in-flight bound paused every partition.
    pub pauses: AtomicU64,
    /// Times one partition was paused because its own queue was full
    /// (`max_queued_per_partition`, or its share of the global bound).
    pub partition_pauses: AtomicU64,
    pub quarantines: AtomicU64,
    pub peak_in_flight_bytes: AtomicUsize,
    pub peak_in_flight_records: AtomicUsize,
    /// Polls that failed with a retriable error and were retried.
    pub poll_errors: AtomicU64,
    /// A share group's records the broker answered ACCEPT for: handled,
    /// or written to the runtime's DLT.
    pub accepted: AtomicU64,
    /// A share group's records given back (RELEASE) and applied: a
    /// retryable failure, or a shutdown before they started.
    pub released: AtomicU64,
    /// A share group's records rejected (REJECT) and applied: failed for
    /// good, to the group's own DLQ.
    pub rejected: AtomicU64,
    /// A share group's acquisition locks renewed (RENEW) and applied.
    pub renewed: AtomicU64,
    /// A share group's acknowledgements refused (locally or by the
    /// broker): those records are delivered again.
    pub ack_failures: AtomicU64,
}

impl Stats {
    /// Records that reached an end: handled, dead-lettered, sent to a retry
    /// topic, skipped as duplicates or as already done.
    pub fn finished(&self) -> u64 {
        [
            &self.handled,
            &self.dead_lettered,
            &self.sent_to_retry,
            &self.deduplicated,
            &self.already_done,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}
