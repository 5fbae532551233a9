//! What the runtime tells the outside: metrics through the `metrics`
//! facade (install any recorder, e.g. Prometheus, to collect them), and an
//! [`Observer`] hook that sees every commit and rebalance (tests and
//! fault-injection suites use it to prove "no commit after revoke").
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `resilience_records_handled_total` | counter | |
//! | `resilience_records_retried_total` | counter | |
//! | `resilience_records_dead_lettered_total` | counter | |
//! | `resilience_records_sent_to_retry_topic_total` | counter | |
//! | `resilience_records_deduplicated_total` | counter | |
//! | `resilience_handler_seconds` | histogram | |
//! | `resilience_in_flight_records`, `resilience_in_flight_bytes` | gauge | |
//! | `resilience_paused_partitions` | gauge | |
//! | `resilience_quarantined_partitions_total` | counter | |
//! | `resilience_partition_lag` | gauge | topic, partition |
//! | `resilience_commits_total`, `resilience_commit_failures_total` | counter | |
//! | `resilience_commit_seconds` | histogram | |
//! | `resilience_rebalances_total` | counter | kind = assigned, revoked, lost |
//! | `resilience_dlt_write_failures_total` | counter | |

use consumer_core::TopicPartition;

pub const HANDLED: &str = "resilience_records_handled_total";
pub const RETRIED: &str = "resilience_records_retried_total";
pub const DEAD_LETTERED: &str = "resilience_records_dead_lettered_total";
pub const SENT_TO_RETRY_TOPIC: &str = "resilience_records_sent_to_retry_topic_total";
pub const DEDUPLICATED: &str = "resilience_records_deduplicated_total";
pub const HANDLER_SECONDS: &str = "resilience_handler_seconds";
pub const IN_FLIGHT_RECORDS: &str = "resilience_in_flight_records";
pub const IN_FLIGHT_BYTES: &str = "resilience_in_flight_bytes";
pub const PAUSED_PARTITIONS: &str = "resilience_paused_partitions";
pub const QUARANTINED: &str = "resilience_quarantined_partitions_total";
pub const PARTITION_LAG: &str = "resilience_partition_lag";
pub const COMMITS: &str = "resilience_commits_total";
pub const COMMIT_FAILURES: &str = "resilience_commit_failures_total";
pub const COMMIT_SECONDS: &str = "resilience_commit_seconds";
pub const REBALANCES: &str = "resilience_rebalances_total";
pub const DLT_WRITE_FAILURES: &str = "resilience_dlt_write_failures_total";
/// Polls that failed with a retriable error (a corrupt batch, a lost
/// connection): the loop backs off and polls again.
pub const POLL_ERRORS: &str = "resilience_poll_errors_total";

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
