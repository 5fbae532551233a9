//! The runtime's metric handles, registered once per run with the `group`
//! label, so that recording on the per-record path is an atomic add: no
//! key is built and no registry is searched.
//!
//! Gauges are the exception, on purpose. An exporter may drop a gauge that
//! has not been set for a while (the Prometheus exporter does, so a
//! partition that left this member stops being reported), and a handle
//! kept across that would write into a series nobody exports any more. So
//! gauges go through the registry each time they are set (once per poll,
//! or once a second per partition: never per record), with their labels
//! built once and shared.

use std::collections::HashMap;
use std::sync::Arc;

use consumer_core::TopicPartition;
use metrics::{Counter, Histogram, Label, SharedString};

use super::*;

/// Counters and histograms of one run, plus the labels its gauges share.
pub(crate) struct RuntimeMetrics {
    /// `group`, when there is one; empty otherwise.
    labels: Vec<Label>,
    pub(crate) handled: Counter,
    pub(crate) retried: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) sent_to_retry_topic: Counter,
    pub(crate) deduplicated: Counter,
    pub(crate) quarantined: Counter,
    pub(crate) handler_seconds: Histogram,
    pub(crate) commits: Counter,
    pub(crate) commit_failures: Counter,
    pub(crate) commit_seconds: Histogram,
    pub(crate) assigned: Counter,
    pub(crate) revoked: Counter,
    pub(crate) lost: Counter,
    pub(crate) dlt_write_failures: Counter,
    pub(crate) poll_errors: Counter,
}

/// A label value whose clones share one allocation.
fn shared(s: &str) -> SharedString {
    SharedString::from(Arc::<str>::from(s))
}

/// The `group` label of a consumer group id (none without a group).
fn group_labels(group: &str) -> Vec<Label> {
    if group.is_empty() {
        Vec::new()
    } else {
        vec![Label::new("group", shared(group))]
    }
}

/// `resilience_poll_errors_total` of `group` (for a loop that records
/// nothing else, the exactly-once processor's).
pub(crate) fn poll_errors(group: &str) -> Counter {
    metrics::counter!(POLL_ERRORS, group_labels(group))
}

impl RuntimeMetrics {
    /// Register every handle in the recorder installed now (install the
    /// recorder before the run starts: a handle registered earlier records
    /// nowhere).
    pub(crate) fn new(group: &str) -> Self {
        let labels = group_labels(group);
        let counter = |name: &'static str| metrics::counter!(name, labels.clone());
        let histogram = |name: &'static str| metrics::histogram!(name, labels.clone());
        let rebalance = |kind: &'static str| {
            let mut l = labels.clone();
            l.push(Label::from_static_parts("kind", kind));
            metrics::counter!(REBALANCES, l)
        };
        Self {
            handled: counter(HANDLED),
            retried: counter(RETRIED),
            dead_lettered: counter(DEAD_LETTERED),
            sent_to_retry_topic: counter(SENT_TO_RETRY_TOPIC),
            deduplicated: counter(DEDUPLICATED),
            quarantined: counter(QUARANTINED),
            handler_seconds: histogram(HANDLER_SECONDS),
            commits: counter(COMMITS),
            commit_failures: counter(COMMIT_FAILURES),
            commit_seconds: histogram(COMMIT_SECONDS),
            assigned: rebalance("assigned"),
            revoked: rebalance("revoked"),
            lost: rebalance("lost"),
            dlt_write_failures: counter(DLT_WRITE_FAILURES),
            poll_errors: counter(POLL_ERRORS),
            labels,
        }
    }

    /// Set the in-flight gauges (once per poll).
    pub(crate) fn in_flight(&self, records: usize, bytes: usize) {
        metrics::gauge!(IN_FLIGHT_RECORDS, self.labels.clone()).set(records as f64);
        metrics::gauge!(IN_FLIGHT_BYTES, self.labels.clone()).set(bytes as f64);
    }

    /// Set the paused-partitions gauge (once per poll).
    pub(crate) fn paused(&self, partitions: usize) {
        metrics::gauge!(PAUSED_PARTITIONS, self.labels.clone()).set(partitions as f64);
    }

    /// The per-partition lag gauges, for the poll task.
    pub(crate) fn lag_gauges(&self) -> LagGauges {
        LagGauges {
            group: self.labels.clone(),
            parts: HashMap::new(),
        }
    }
}

/// The two lag gauges of every assigned partition, owned by the poll task:
/// each partition's labels (`topic`, `partition`, `group`) are built once
/// per assignment.
pub(crate) struct LagGauges {
    group: Vec<Label>,
    parts: HashMap<TopicPartition, Vec<Label>>,
}

impl LagGauges {
    /// Set `tp`'s consumer lag and commit lag (either when known).
    pub(crate) fn set(
        &mut self,
        tp: &TopicPartition,
        consumer_lag: Option<i64>,
        commit_lag: Option<i64>,
    ) {
        if !self.parts.contains_key(tp) {
            let mut l = vec![
                Label::new("topic", shared(&tp.topic)),
                Label::new("partition", shared(&tp.partition.to_string())),
            ];
            l.extend(self.group.iter().cloned());
            self.parts.insert(tp.clone(), l);
        }
        let labels = &self.parts[tp];
        if let Some(lag) = consumer_lag {
            metrics::gauge!(CONSUMER_LAG, labels.clone()).set(lag as f64);
        }
        if let Some(lag) = commit_lag {
            metrics::gauge!(COMMIT_LAG, labels.clone()).set(lag as f64);
        }
    }

    /// Forget the labels of partitions no longer assigned.
    pub(crate) fn retain(&mut self, assigned: &[TopicPartition]) {
        self.parts.retain(|tp, _| assigned.contains(tp));
    }
}
