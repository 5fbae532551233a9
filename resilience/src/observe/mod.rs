//! What the runtime tells the outside: metrics through the `metrics`
//! facade (install any recorder to collect them; with feature `prometheus`,
//! `prometheus::install` serves them on `GET /metrics`), and an
//! [`Observer`] hook that sees every commit and rebalance (tests and
//! fault-injection suites use it to prove "no commit after revoke"), and a
//! [`Snapshot`] of the same numbers for code in the process (a status line:
//! `Processor::snapshots`).
//!
//! ## Metrics
//!
//! Every metric carries `group` (the consumer group id, when there is
//! one); the per-partition ones also `topic` and `partition`.
//! [`describe`] gives each its help text and unit (`# HELP` and `# TYPE`
//! in Prometheus); the runtime calls it when it starts.
//!
//! | metric | kind | unit | labels beside `group` |
//! |---|---|---|---|
//! | `resilience_records_handled_total` | counter | records | |
//! | `resilience_records_retried_total` | counter | attempts | |
//! | `resilience_records_dead_lettered_total` | counter | records | |
//! | `resilience_records_sent_to_retry_topic_total` | counter | records | |
//! | `resilience_records_deduplicated_total` | counter | records | |
//! | `resilience_handler_seconds` | histogram | seconds | |
//! | `resilience_in_flight_records` | gauge | records | |
//! | `resilience_in_flight_bytes` | gauge | bytes | |
//! | `resilience_paused_partitions` | gauge | partitions | |
//! | `resilience_quarantined_partitions_total` | counter | quarantines | |
//! | `resilience_consumer_lag_records` | gauge | records | topic, partition |
//! | `resilience_commit_lag_records` | gauge | records | topic, partition |
//! | `resilience_commits_total`, `resilience_commit_failures_total` | counter | commits | |
//! | `resilience_commit_seconds` | histogram | seconds | |
//! | `resilience_rebalances_total` | counter | rebalances | kind = assigned, revoked, lost |
//! | `resilience_dlt_write_failures_total` | counter | writes | |
//! | `resilience_poll_errors_total` | counter | polls | |
//!
//! ## Two lags
//!
//! Both are measured from the partition's readable end: the high
//! watermark, or the last stable offset under `read_committed`, as of the
//! last fetch (a paused partition is not fetched: its end is as of before
//! the pause). Both are set once a second for every assigned partition.
//!
//! ```text
//!   committed offset       fetch position            log end
//!  ──────┼───────────────────────┼─────────────────────────┼──▶ offsets
//!        │◀─ polled, unfinished ▶│◀──── not fetched ──────▶│
//!        │   or done out of order│                         │
//!        │◀──────────────────── commit lag ───────────────▶│
//!                                │◀──── consumer lag ─────▶│
//! ```
//!
//! - **consumer lag** (`resilience_consumer_lag_records`): log end minus
//!   the consumer's fetch position. Records the runtime has not fetched
//!   yet. It is 0 while thousands of polled records wait for a worker.
//! - **commit lag** (`resilience_commit_lag_records`): log end minus the
//!   group's committed offset for the partition (the last commit this
//!   member made, or the one it found on assignment). What `kafka-lab
//!   groups describe`, `kafka-consumer-groups.sh` and operators call lag,
//!   and what a restart would have to redo or read. Absent until the
//!   partition has a committed offset.
//!
//! Commit lag minus consumer lag is the work in the runtime: polled, not
//! yet committed. When a partition leaves this member its series are no
//! longer set; the Prometheus exporter drops gauges not set for a while
//! (`prometheus::Exporter::gauge_idle_timeout`).

use consumer_core::TopicPartition;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

#[cfg(feature = "prometheus")]
pub mod prometheus;

mod handles;
mod snapshot;
pub(crate) use handles::{poll_errors, LagGauges, RuntimeMetrics};
pub use snapshot::{PartitionSnapshot, Snapshot, SNAPSHOT_INTERVAL};

/// Records whose handler succeeded.
pub const HANDLED: &str = "resilience_records_handled_total";
/// Blocking retries: handler attempts after the first.
pub const RETRIED: &str = "resilience_records_retried_total";
/// Records written to the dead-letter topic (acknowledged).
pub const DEAD_LETTERED: &str = "resilience_records_dead_lettered_total";
/// Records written to a retry topic (acknowledged).
pub const SENT_TO_RETRY_TOPIC: &str = "resilience_records_sent_to_retry_topic_total";
/// Records skipped because the idempotency store had their key.
pub const DEDUPLICATED: &str = "resilience_records_deduplicated_total";
/// One handler call (a record, or a batch), in seconds.
pub const HANDLER_SECONDS: &str = "resilience_handler_seconds";
/// Records polled and not yet finished (queued or running).
pub const IN_FLIGHT_RECORDS: &str = "resilience_in_flight_records";
/// Bytes those records hold (see [`crate::processor::record_bytes`]).
pub const IN_FLIGHT_BYTES: &str = "resilience_in_flight_bytes";
/// Partitions whose fetching is paused (backpressure, quarantine).
pub const PAUSED_PARTITIONS: &str = "resilience_paused_partitions";
/// Times a partition was quarantined after failures in a row.
pub const QUARANTINED: &str = "resilience_quarantined_partitions_total";
/// Log end minus the fetch position, per partition (see "Two lags").
pub const CONSUMER_LAG: &str = "resilience_consumer_lag_records";
/// Log end minus the committed offset, per partition (see "Two lags").
pub const COMMIT_LAG: &str = "resilience_commit_lag_records";
/// Commits the broker accepted.
pub const COMMITS: &str = "resilience_commits_total";
/// Commits that failed (the next one retries).
pub const COMMIT_FAILURES: &str = "resilience_commit_failures_total";
/// One offset commit's round trip, in seconds.
pub const COMMIT_SECONDS: &str = "resilience_commit_seconds";
/// Rebalance callbacks, by `kind`: assigned, revoked, lost.
pub const REBALANCES: &str = "resilience_rebalances_total";
/// Failed dead-letter or retry-topic writes (each is retried).
pub const DLT_WRITE_FAILURES: &str = "resilience_dlt_write_failures_total";
/// Polls that failed with a retriable error (a corrupt batch, a lost
/// connection): the loop backs off and polls again.
pub const POLL_ERRORS: &str = "resilience_poll_errors_total";

/// Give every metric above its help text and unit in the installed
/// recorder (Prometheus: the `# HELP` line). Cheap and idempotent; the
/// runtime calls it when it starts, `prometheus::install` when it
/// installs. Call it yourself after installing another recorder later.
pub fn describe() {
    describe_counter!(HANDLED, Unit::Count, "Records whose handler succeeded.");
    describe_counter!(
        RETRIED,
        Unit::Count,
        "Blocking retries: handler attempts after the first."
    );
    describe_counter!(
        DEAD_LETTERED,
        Unit::Count,
        "Records written to the dead-letter topic (acknowledged)."
    );
    describe_counter!(
        SENT_TO_RETRY_TOPIC,
        Unit::Count,
        "Records written to a retry topic (acknowledged)."
    );
    describe_counter!(
        DEDUPLICATED,
        Unit::Count,
        "Records skipped because the idempotency store had their key."
    );
    describe_histogram!(
        HANDLER_SECONDS,
        Unit::Seconds,
        "One handler call (a record, or a batch), in seconds."
    );
    describe_gauge!(
        IN_FLIGHT_RECORDS,
        Unit::Count,
        "Records polled and not yet finished (queued or running)."
    );
    describe_gauge!(
        IN_FLIGHT_BYTES,
        Unit::Bytes,
        "Bytes held by the records in flight."
    );
    describe_gauge!(
        PAUSED_PARTITIONS,
        Unit::Count,
        "Partitions whose fetching is paused (backpressure, quarantine)."
    );
    describe_counter!(
        QUARANTINED,
        Unit::Count,
        "Times a partition was quarantined after failures in a row."
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Records not fetched yet: log end (high watermark, or last stable offset under read_committed) minus the fetch position."
    );
    describe_gauge!(
        COMMIT_LAG,
        Unit::Count,
        "Records not committed yet: log end (high watermark, or last stable offset under read_committed) minus the committed offset."
    );
    describe_counter!(COMMITS, Unit::Count, "Offset commits the broker accepted.");
    describe_counter!(
        COMMIT_FAILURES,
        Unit::Count,
        "Offset commits that failed (the next one retries)."
    );
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "One offset commit's round trip, in seconds."
    );
    describe_counter!(
        REBALANCES,
        Unit::Count,
        "Rebalance callbacks, by kind: assigned, revoked, lost."
    );
    describe_counter!(
        DLT_WRITE_FAILURES,
        Unit::Count,
        "Failed dead-letter or retry-topic writes (each is retried)."
    );
    describe_counter!(
        POLL_ERRORS,
        Unit::Count,
        "Polls that failed with a retriable error and were retried."
    );
}

/// Something the runtime did, as it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Assigned(Vec<TopicPartition>),
    /// The revocation finished: no commit for these partitions follows
    /// until they are assigned again.
    Revoked(Vec<TopicPartition>),
    Lost(Vec<TopicPartition>),
    /// A commit the broker accepted: (partition, next offset, metadata).
    Committed(Vec<(TopicPartition, i64, String)>),
    Paused(Vec<TopicPartition>),
    Resumed(Vec<TopicPartition>),
    DeadLettered {
        tp: TopicPartition,
        offset: i64,
    },
    SentToRetryTopic {
        tp: TopicPartition,
        offset: i64,
        topic: String,
    },
    Quarantined(TopicPartition),
}

/// Sees every [`Event`]. Called inline: keep it quick and non-blocking.
pub trait Observer: Send + Sync {
    fn on_event(&self, event: &Event);
}

/// An observer that keeps every event (for tests and the lab).
#[derive(Debug, Default)]
pub struct EventLog(pub std::sync::Mutex<Vec<Event>>);

impl Observer for EventLog {
    fn on_event(&self, event: &Event) {
        self.0.lock().expect("event log lock").push(event.clone());
    }
}

impl EventLog {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().expect("event log lock").clone()
    }

    /// How many times partitions were assigned (one per rebalance taken part in).
    pub fn assignments(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::Assigned(_)))
            .count()
    }

    /// How many times partitions were lost (not revoked).
    pub fn losses(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::Lost(_)))
            .count()
    }

    /// Commits that moved a partition's offset backwards. The runtime promises zero.
    pub fn commit_regressions(&self) -> usize {
        let mut last: std::collections::HashMap<TopicPartition, i64> = Default::default();
        let mut bad = 0;
        for e in self.events() {
            if let Event::Committed(offsets) = e {
                for (tp, o, _) in offsets {
                    if last.insert(tp, o).is_some_and(|prev| prev > o) {
                        bad += 1;
                    }
                }
            }
        }
        bad
    }

    /// Commits that landed for a partition after its revocation (or loss)
    /// and before it was assigned again. The runtime promises zero.
    pub fn commits_after_revoke(&self) -> Vec<(TopicPartition, i64)> {
        let mut owned: std::collections::HashSet<TopicPartition> = Default::default();
        let mut bad = Vec::new();
        for e in self.events() {
            match e {
                Event::Assigned(tps) => owned.extend(tps),
                Event::Revoked(tps) | Event::Lost(tps) => {
                    for tp in tps {
                        owned.remove(&tp);
                    }
                }
                Event::Committed(offsets) => bad.extend(
                    offsets
                        .into_iter()
                        .filter(|(tp, _, _)| !owned.contains(tp))
                        .map(|(tp, o, _)| (tp, o)),
                ),
                _ => {}
            }
        }
        bad
    }
}
