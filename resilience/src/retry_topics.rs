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

use crate::dlt::{self, ReadFrom};
use crate::retry::HandlerError;

/// A retry header whose value the runtime cannot do arithmetic with: a
/// forged or corrupt `retry_topic-*` header. Never a panic, never a wrap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryHeaderError {
    /// `retry_topic-attempts` says `so_far` attempts were made; `more` on
    /// top overflows the count (`u32`).
    #[error(
        "retry_topic-attempts says {so_far} attempts were made; {more} more overflows the count"
    )]
    AttemptsOverflow { so_far: u32, more: u32 },
    /// `retry_topic-backoff-timestamp` (`due_ms`, epoch ms) is so far from
    /// `now_ms` that the time until it overflows an `i64` of milliseconds.
    #[error(
        "retry_topic-backoff-timestamp {due_ms} is out of range (now {now_ms} ms since the epoch)"
    )]
    DueOutOfRange { due_ms: i64, now_ms: i64 },
}

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

/// The record to write to retry topic `target`, due at `now_ms + delay`,
/// for `record` read where `from` says: its origin and attempts so far are
/// the ones `from` trusts (see [`ReadFrom`]), plus this attempt.
///
/// # Errors
/// [`RetryHeaderError::AttemptsOverflow`]: the record's own
/// `retry_topic-attempts` leaves no room for one more (a forged header);
/// the caller dead-letters it instead.
#[allow(clippy::too_many_arguments)]
pub fn to_retry_topic(
    target: &str,
    delay: Duration,
    now_ms: i64,
    from: ReadFrom<'_>,
    group: &str,
    record: &Record,
    err: &HandlerError,
) -> Result<ProducerRecord, RetryHeaderError> {
    let origin = from.origin(record);
    let attempts = from.attempts_after(record, 1)?;
    let mut out = dlt::forward(target, &origin, group, record, err, attempts);
    let due = now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    out.headers.push((
        dlt::BACKOFF_TIMESTAMP.to_string(),
        Some(bytes::Bytes::copy_from_slice(&due.to_be_bytes())),
    ));
    Ok(out)
}

/// When a retry-topic record is due (epoch ms), if it says.
pub fn due_ms(record: &Record) -> Option<i64> {
    dlt::int_header(record, dlt::BACKOFF_TIMESTAMP)
}

/// How long until `due_ms` (epoch ms) from `now_ms`: zero once due, and
/// at most `at_most` (the retry topic's delay: a hop is written due that
/// long after it failed, so a later due time is a forged header or a
/// clock far ahead, and must not hold the retry partition longer).
///
/// # Errors
/// [`RetryHeaderError::DueOutOfRange`]: `due_ms - now_ms` overflows (a
/// header near `i64::MIN`); never a panic or a wrap.
pub fn wait_for(due_ms: i64, now_ms: i64, at_most: Duration) -> Result<Duration, RetryHeaderError> {
    let ms = due_ms
        .checked_sub(now_ms)
        .ok_or(RetryHeaderError::DueOutOfRange { due_ms, now_ms })?;
    let ms = u64::try_from(ms).unwrap_or(0);
    Ok(Duration::from_millis(ms).min(at_most))
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
            ReadFrom::source("o", 0),
            "g",
            &rec,
            &err,
        )
        .unwrap();
        let back = dlt::consumed(&hop, 0);
        assert_eq!(due_ms(&back), Some(11_000));
        assert_eq!(dlt::attempts_so_far(&back), 1);
        let hop2 = to_retry_topic(
            "o.retry.10s",
            Duration::from_secs(10),
            20_000,
            ReadFrom::retry_topic("o.retry.1s", 0, "o"),
            "g",
            &back,
            &err,
        )
        .unwrap();
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

    fn with_headers(headers: &[(&str, Vec<u8>)]) -> Record {
        Record {
            offset: i64::MAX,
            timestamp: 1,
            key: None,
            value: None,
            headers: headers
                .iter()
                .map(|(k, v)| kafka_wire::records::Header {
                    key: Bytes::from(k.to_string()),
                    value: Some(Bytes::from(v.clone())),
                })
                .collect(),
        }
    }

    #[test]
    fn a_retry_header_claiming_the_most_attempts_is_an_error_not_a_wrap() {
        // A hop of `o.retry.1s` (its origin names `o`, so its headers count)
        // claiming u32::MAX attempts: one more overflows.
        let rec = with_headers(&[
            (dlt::ORIGINAL_TOPIC, b"o".to_vec()),
            (dlt::ORIGINAL_PARTITION, 0i32.to_be_bytes().to_vec()),
            (dlt::ORIGINAL_OFFSET, i64::MAX.to_be_bytes().to_vec()),
            (dlt::ATTEMPTS, i64::from(u32::MAX).to_be_bytes().to_vec()),
        ]);
        let from = ReadFrom::retry_topic("o.retry.1s", 0, "o");
        let err = HandlerError::Retryable("x".into());
        let e = to_retry_topic(
            "o.retry.10s",
            Duration::from_secs(10),
            0,
            from,
            "g",
            &rec,
            &err,
        )
        .unwrap_err();
        assert_eq!(
            e,
            RetryHeaderError::AttemptsOverflow {
                so_far: u32::MAX,
                more: 1
            }
        );
        assert!(e.to_string().contains("retry_topic-attempts"), "{e}");
        // The same headers on a source topic are not ours: ignored.
        let hop = to_retry_topic(
            "o.retry.1s",
            Duration::from_secs(1),
            0,
            ReadFrom::source("o", 0),
            "g",
            &rec,
            &err,
        )
        .unwrap();
        assert_eq!(dlt::attempts_so_far(&dlt::consumed(&hop, 0)), 1);
    }

    #[test]
    fn due_times_near_the_ends_of_i64_neither_panic_nor_wrap() {
        let delay = Duration::from_secs(10);
        assert_eq!(
            wait_for(i64::MIN, 1_000, delay),
            Err(RetryHeaderError::DueOutOfRange {
                due_ms: i64::MIN,
                now_ms: 1_000
            })
        );
        // Far in the future: held at most the topic's delay.
        assert_eq!(wait_for(i64::MAX, 1_000, delay), Ok(delay));
        assert!(wait_for(i64::MAX, i64::MIN, delay).is_err());
        assert_eq!(wait_for(500, 1_000, delay), Ok(Duration::ZERO));
        assert_eq!(wait_for(3_000, 1_000, delay), Ok(Duration::from_secs(2)));
        // A hop written at the end of time stays due at i64::MAX.
        let rec = with_headers(&[]);
        let hop = to_retry_topic(
            "o.retry.1s",
            delay,
            i64::MAX,
            ReadFrom::source("o", 0),
            "g",
            &rec,
            &HandlerError::Retryable("x".into()),
        )
        .unwrap();
        assert_eq!(due_ms(&dlt::consumed(&hop, 0)), Some(i64::MAX));
    }
}
