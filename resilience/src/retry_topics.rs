//! Non-blocking retries: a failed record moves to a chain of delay topics
//! (`orders.retry.1s`, `orders.retry.10s`, …) and finally to the DLT,
//! while its source partition goes on. Throughput over order: a record
//! retried this way is handled after records that came later.
//!
//! Which hop a failure takes is the failure policy's decision
//! ([`crate::failure::FailurePolicy`]); this file names the topics and
//! builds the copies. Each hop carries the origin (`kafka_dlt-original-*`),
//! the attempts so far (`retry_topic-attempts`) and when it is due
//! (`retry_topic-backoff-timestamp`). A retry partition's worker waits
//! until the head record is due; records of one retry topic share a delay,
//! so they become due in order.

use std::collections::HashMap;
use std::time::Duration;

use kafka_wire::records::Record;
use kafka_wire::ProducerRecord;

use crate::dlt::{self, Provenance};
use crate::retry::HandlerError;

/// The chain of delays; one retry topic per delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryTopics {
    pub delays: Vec<Duration>,
}

impl RetryTopics {
    pub fn new(delays: &[Duration]) -> Self {
        Self {
            delays: delays.to_vec(),
        }
    }

    /// The retry topic names for `topic`, in chain order.
    pub fn topics_for(&self, topic: &str) -> Vec<String> {
        self.delays.iter().map(|d| topic_name(topic, *d)).collect()
    }

    /// Retry topic name → (source topic, step in the chain), for `sources`.
    pub fn index(&self, sources: &[String]) -> HashMap<String, (String, usize)> {
        sources
            .iter()
            .flat_map(|s| {
                self.topics_for(s)
                    .into_iter()
                    .enumerate()
                    .map(move |(i, t)| (t, (s.clone(), i)))
            })
            .collect()
    }
}

/// `orders` + 1 s → `orders.retry.1s`; 1.5 s → `orders.retry.1500ms`.
pub fn topic_name(topic: &str, delay: Duration) -> String {
    let ms = delay.as_millis();
    let label = if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1_000 == 0 && ms > 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    };
    format!("{topic}.retry.{label}")
}

/// The record to write to retry topic `target`, due at `now_ms + delay`.
#[allow(clippy::too_many_arguments)]
pub fn to_retry_topic(
    target: &str,
    delay: Duration,
    now_ms: i64,
    tp_topic: &str,
    tp_partition: i32,
    group: &str,
    record: &Record,
    err: &HandlerError,
) -> ProducerRecord {
    let origin = Provenance::of(tp_topic, tp_partition, record);
    let attempts = dlt::attempts_so_far(record) + 1;
    let mut out = dlt::forward(target, &origin, group, record, err, attempts);
    let due = now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    out.headers.push((
        dlt::BACKOFF_TIMESTAMP.to_string(),
        Some(bytes::Bytes::copy_from_slice(&due.to_be_bytes())),
    ));
    out
}

/// When a retry-topic record is due (epoch ms), if it says.
pub fn due_ms(record: &Record) -> Option<i64> {
    dlt::int_header(record, dlt::BACKOFF_TIMESTAMP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn names_and_chain() {
        let chain = RetryTopics::new(&[Duration::from_secs(1), Duration::from_secs(10)]);
        assert_eq!(
            chain.topics_for("orders"),
            ["orders.retry.1s", "orders.retry.10s"]
        );
        assert_eq!(
            topic_name("o", Duration::from_millis(1500)),
            "o.retry.1500ms"
        );
        assert_eq!(topic_name("o", Duration::from_secs(120)), "o.retry.2m");
        let idx = chain.index(&["orders".to_string()]);
        assert_eq!(idx["orders.retry.10s"], ("orders".to_string(), 1));
        assert_eq!(idx["orders.retry.1s"], ("orders".to_string(), 0));
    }

    #[test]
    fn hops_carry_attempts_and_due_time() {
        let rec = Record {
            offset: 3,
            timestamp: 1,
            key: Some(Bytes::from_static(b"k")),
            value: None,
            headers: vec![],
        };
        let err = HandlerError::Retryable("x".into());
        let hop = to_retry_topic(
            "o.retry.1s",
            Duration::from_secs(1),
            10_000,
            "o",
            0,
            "g",
            &rec,
            &err,
        );
        let back = dlt::consumed(&hop, 0);
        assert_eq!(due_ms(&back), Some(11_000));
        assert_eq!(dlt::attempts_so_far(&back), 1);
        let hop2 = to_retry_topic(
            "o.retry.10s",
            Duration::from_secs(10),
            20_000,
            "o.retry.1s",
            0,
            "g",
            &back,
            &err,
        );
        let n = hop2
            .headers
            .iter()
            .filter(|(k, _)| k == dlt::BACKOFF_TIMESTAMP)
            .count();
        assert_eq!(n, 1, "one due time per hop");
        let origin = hop2
            .headers
            .iter()
            .find(|(k, _)| k == dlt::ORIGINAL_TOPIC)
            .and_then(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(origin.as_ref(), b"o", "the origin survives hops");
    }
}
