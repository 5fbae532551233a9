//! Dead-letter records: the original key, value and headers, plus
//! provenance headers under the `kafka_dlt-*` names Spring Kafka uses, so
//! existing DLT tooling can read them. Numbers are big-endian binary, as
//! Spring writes them (partition: 4 bytes; offset and timestamp: 8 bytes).
//!
//! - [`dead_record`]: a DLT record read back ([`DeadRecord`]) and a
//!   [`Filter`] over its provenance;
//! - [`replay`]: send dead records back once their cause is fixed, exactly
//!   once ([`replay::replay`], `kafka-lab dlt replay`).

pub mod dead_record;
pub mod replay;

pub use dead_record::{DeadRecord, Filter};

use bytes::Bytes;
use kafka_wire::records::Record;
use kafka_wire::ProducerRecord;

use crate::retry::HandlerError;
use crate::retry_topics::RetryHeaderError;

pub const ORIGINAL_TOPIC: &str = "kafka_dlt-original-topic";
pub const ORIGINAL_PARTITION: &str = "kafka_dlt-original-partition";
pub const ORIGINAL_OFFSET: &str = "kafka_dlt-original-offset";
pub const ORIGINAL_TIMESTAMP: &str = "kafka_dlt-original-timestamp";
pub const ORIGINAL_CONSUMER_GROUP: &str = "kafka_dlt-original-consumer-group";
pub const EXCEPTION_FQCN: &str = "kafka_dlt-exception-fqcn";
pub const EXCEPTION_MESSAGE: &str = "kafka_dlt-exception-message";
/// Attempts made before dead-lettering (Spring's retry-topic header name).
pub const ATTEMPTS: &str = "retry_topic-attempts";

/// Set on a dead letter (or retry-topic copy) written without its value,
/// because the copy was too large for its target: the value's size in
/// bytes (decimal text). The record itself is where the provenance
/// headers point.
pub const VALUE_DROPPED: &str = "kafka_dlt-value-dropped";

/// Is `e` a refusal that the same record can never get past: too large
/// for `max.request.size`/`buffer.memory` here, or for the topic's
/// `max.message.bytes` at the broker?
pub(crate) fn too_large(e: &kafka_wire::Error) -> bool {
    use kafka_wire::{Error, KafkaCode};
    matches!(
        e,
        Error::RecordTooLarge { .. } | Error::RecordTooLargeForBroker { .. }
    ) || matches!(
        e.code(),
        Some(KafkaCode::MessageTooLarge | KafkaCode::RecordListTooLarge)
    )
}

/// Drop `out`'s value, once, and say so in a [`VALUE_DROPPED`] header.
/// `false` if it had none left to drop.
pub(crate) fn drop_value(out: &mut ProducerRecord) -> bool {
    let Some(value) = out.value.take() else {
        return false;
    };
    out.headers.push((
        VALUE_DROPPED.to_string(),
        Some(Bytes::from(value.len().to_string())),
    ));
    true
}

/// When a record in a retry topic is due (big-endian epoch millis).
pub const BACKOFF_TIMESTAMP: &str = "retry_topic-backoff-timestamp";

/// The default DLT name for `topic`.
pub fn dlt_topic(topic: &str) -> String {
    format!("{topic}.DLT")
}

/// Where a record first came from. A record that already went through a
/// retry topic carries its origin in headers; the DLT keeps that origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
}

pub(crate) fn header<'a>(record: &'a Record, name: &str) -> Option<&'a [u8]> {
    record
        .headers
        .iter()
        .rev()
        .find(|h| h.key.as_ref() == name.as_bytes())
        .and_then(|h| h.value.as_deref())
}

/// A big-endian integer header (as Spring writes them).
pub fn int_header(record: &Record, name: &str) -> Option<i64> {
    let v = header(record, name)?;
    match v.len() {
        4 => Some(i64::from(i32::from_be_bytes(v.try_into().ok()?))),
        8 => Some(i64::from_be_bytes(v.try_into().ok()?)),
        _ => None,
    }
}

impl Provenance {
    /// The origin `record`'s own `kafka_dlt-original-*` headers claim, or,
    /// without them, partition `tp_partition` of `tp_topic` at the
    /// record's offset.
    ///
    /// This believes the headers: it is for reading a dead-letter topic
    /// ([`DeadRecord`]), where they are only as trustworthy as whoever may
    /// write to that topic. The runtime, building a dead letter or a
    /// retry-topic hop, takes the origin from [`ReadFrom::origin`], which
    /// does not believe headers on a record of a source topic.
    pub fn of(tp_topic: &str, tp_partition: i32, record: &Record) -> Provenance {
        Provenance::claimed(record)
            .unwrap_or_else(|| Provenance::read_at(tp_topic, tp_partition, record))
    }

    /// The origin `record`'s headers claim, if they name one.
    fn claimed(record: &Record) -> Option<Provenance> {
        Some(Provenance {
            topic: String::from_utf8(header(record, ORIGINAL_TOPIC)?.to_vec()).ok()?,
            partition: i32::try_from(int_header(record, ORIGINAL_PARTITION)?).ok()?,
            offset: int_header(record, ORIGINAL_OFFSET)?,
            timestamp: int_header(record, ORIGINAL_TIMESTAMP).unwrap_or(record.timestamp),
        })
    }

    /// Partition `partition` of `topic`, at `record`'s offset and timestamp.
    fn read_at(topic: &str, partition: i32, record: &Record) -> Provenance {
        Provenance {
            topic: topic.to_string(),
            partition,
            offset: record.offset,
            timestamp: record.timestamp,
        }
    }
}

/// Where the runtime read a failed record, which decides which of the
/// record's `kafka_dlt-*` and `retry_topic-*` headers are its own.
///
/// Anyone who may produce to a source topic may attach those headers
/// (`kafka_dlt-original-topic: payments` on a record of `orders`, say), so
/// on a record read from a source topic the runtime believes none of them:
/// its origin is where it was read, its attempts so far 0, and the copy it
/// writes replaces them (a confused deputy otherwise: `dlt replay` would
/// send that dead letter into `payments`). A retry topic is the runtime's
/// own (it wrote every hop there): there the headers count when their
/// origin is the retry topic's source; a record there naming another
/// topic is treated as read from the retry topic itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadFrom<'a> {
    /// The topic the record was read from.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// `Some(source)` when `topic` is one of the runtime's retry topics
    /// for `source`; `None` for a source topic.
    pub retry_of: Option<&'a str>,
}

impl<'a> ReadFrom<'a> {
    /// A record of partition `partition` of source topic `topic`.
    pub fn source(topic: &'a str, partition: i32) -> Self {
        ReadFrom {
            topic,
            partition,
            retry_of: None,
        }
    }

    /// A record of partition `partition` of `topic`, a retry topic of `source`.
    pub fn retry_topic(topic: &'a str, partition: i32, source: &'a str) -> Self {
        ReadFrom {
            topic,
            partition,
            retry_of: Some(source),
        }
    }

    /// The provenance headers of `record` when they are the runtime's own.
    fn trusted(&self, record: &Record) -> Option<Provenance> {
        let source = self.retry_of?;
        Provenance::claimed(record).filter(|o| o.topic == source)
    }

    /// Where `record` first came from, as far as the runtime knows.
    pub fn origin(&self, record: &Record) -> Provenance {
        self.trusted(record)
            .unwrap_or_else(|| Provenance::read_at(self.topic, self.partition, record))
    }

    /// Attempts made at `record` before it was read here: its
    /// `retry_topic-attempts` when its headers are the runtime's own, else 0.
    pub fn attempts_so_far(&self, record: &Record) -> u32 {
        if self.trusted(record).is_some() {
            attempts_so_far(record)
        } else {
            0
        }
    }

    /// [`Self::attempts_so_far`] plus `more` made here.
    ///
    /// # Errors
    /// [`RetryHeaderError::AttemptsOverflow`]: the sum overflows a `u32`
    /// (a forged `retry_topic-attempts`).
    pub fn attempts_after(&self, record: &Record, more: u32) -> Result<u32, RetryHeaderError> {
        let so_far = self.attempts_so_far(record);
        so_far
            .checked_add(more)
            .ok_or(RetryHeaderError::AttemptsOverflow { so_far, more })
    }
}

/// Attempts made so far, as the record's headers tell (0 for a first delivery).
pub fn attempts_so_far(record: &Record) -> u32 {
    int_header(record, ATTEMPTS)
        .and_then(|a| u32::try_from(a).ok())
        .unwrap_or(0)
}

/// Copy `record` to `target` with its original key, value, timestamp and
/// headers (minus this module's own), plus provenance and failure headers.
pub fn forward(
    target: &str,
    origin: &Provenance,
    group: &str,
    record: &Record,
    err: &HandlerError,
    attempts: u32,
) -> ProducerRecord {
    let mut out = ProducerRecord::new(target);
    out.key = record.key.clone();
    out.value = record.value.clone();
    out.timestamp = Some(record.timestamp);
    out.headers = record
        .headers
        .iter()
        .filter(|h| !(h.key.starts_with(b"kafka_dlt-") || h.key.starts_with(b"retry_topic-")))
        .map(|h| (h.key_str().into_owned(), h.value.clone()))
        .collect();
    let mut add = |k: &str, v: Bytes| out.headers.push((k.to_string(), Some(v)));
    add(ORIGINAL_TOPIC, Bytes::from(origin.topic.clone()));
    add(
        ORIGINAL_PARTITION,
        Bytes::copy_from_slice(&origin.partition.to_be_bytes()),
    );
    add(
        ORIGINAL_OFFSET,
        Bytes::copy_from_slice(&origin.offset.to_be_bytes()),
    );
    add(
        ORIGINAL_TIMESTAMP,
        Bytes::copy_from_slice(&origin.timestamp.to_be_bytes()),
    );
    add(ORIGINAL_CONSUMER_GROUP, Bytes::from(group.to_string()));
    add(EXCEPTION_FQCN, Bytes::from(err.class().to_string()));
    add(EXCEPTION_MESSAGE, Bytes::from(err.message().to_string()));
    add(
        ATTEMPTS,
        Bytes::copy_from_slice(&(attempts.min(i32::MAX as u32) as i32).to_be_bytes()),
    );
    out
}

/// Build the dead-letter record for `record` of source topic
/// `topic`/`partition` that failed with `err` after `attempts` attempts.
/// Its origin is where it was read: any `kafka_dlt-*`/`retry_topic-*`
/// headers it arrived with are replaced, never believed (see [`ReadFrom`]).
pub fn dead_letter(
    dlt: &str,
    topic: &str,
    partition: i32,
    group: &str,
    record: &Record,
    err: &HandlerError,
    attempts: u32,
) -> ProducerRecord {
    let origin = ReadFrom::source(topic, partition).origin(record);
    forward(dlt, &origin, group, record, err, attempts)
}

/// Build the dead-letter record for `record`, read where `from` says, that
/// failed with `err` after `attempts` attempts made here (on top of those
/// its headers carry when `from` trusts them).
///
/// # Errors
/// [`RetryHeaderError::AttemptsOverflow`]: the attempts overflow a `u32`
/// (a forged `retry_topic-attempts`).
pub fn dead_letter_from(
    dlt: &str,
    from: ReadFrom<'_>,
    group: &str,
    record: &Record,
    err: &HandlerError,
    attempts: u32,
) -> Result<ProducerRecord, RetryHeaderError> {
    let total = from.attempts_after(record, attempts)?;
    Ok(forward(
        dlt,
        &from.origin(record),
        group,
        record,
        err,
        total,
    ))
}

/// `out` as a consumer reads it back at `offset` (tests of multi-hop headers).
#[cfg(test)]
pub(crate) fn consumed(out: &ProducerRecord, offset: i64) -> Record {
    Record {
        offset,
        timestamp: out.timestamp.unwrap_or(0),
        key: out.key.clone(),
        value: out.value.clone(),
        headers: out
            .headers
            .iter()
            .map(|(k, v)| kafka_wire::records::Header {
                key: Bytes::from(k.clone()),
                value: v.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_wire::records::Header;

    #[test]
    fn keeps_the_original_and_adds_complete_provenance() {
        let rec = Record {
            offset: 42,
            timestamp: 1_700_000_000_123,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![Header {
                key: Bytes::from_static(b"trace"),
                value: Some(Bytes::from_static(b"t1")),
            }],
        };
        let d = dead_letter(
            "orders.DLT",
            "orders",
            3,
            "billing",
            &rec,
            &HandlerError::NonRetryable("bad total".into()),
            1,
        );
        assert_eq!(d.topic, "orders.DLT");
        assert_eq!(
            (d.key.as_deref(), d.value.as_deref()),
            (Some(&b"k"[..]), Some(&b"v"[..]))
        );
        let get = |k: &str| {
            d.headers
                .iter()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("trace").as_ref(), b"t1", "original headers kept");
        assert_eq!(get(ORIGINAL_TOPIC).as_ref(), b"orders");
        assert_eq!(get(ORIGINAL_PARTITION).as_ref(), 3i32.to_be_bytes());
        assert_eq!(get(ORIGINAL_OFFSET).as_ref(), 42i64.to_be_bytes());
        assert_eq!(
            get(ORIGINAL_TIMESTAMP).as_ref(),
            1_700_000_000_123i64.to_be_bytes()
        );
        assert_eq!(get(ORIGINAL_CONSUMER_GROUP).as_ref(), b"billing");
        assert_eq!(get(EXCEPTION_FQCN).as_ref(), b"NonRetryable");
        assert_eq!(get(EXCEPTION_MESSAGE).as_ref(), b"bad total");
        assert_eq!(get(ATTEMPTS).as_ref(), 1i32.to_be_bytes());
        assert_eq!(dlt_topic("orders"), "orders.DLT");
    }

    #[test]
    fn a_second_hop_keeps_the_first_origin_and_no_duplicate_headers() {
        let rec = Record {
            offset: 7,
            timestamp: 5,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
        };
        let err = HandlerError::Retryable("down".into());
        let hop = forward(
            "orders.retry.1s",
            &Provenance::of("orders", 2, &rec),
            "g",
            &rec,
            &err,
            1,
        );
        let again = consumed(&hop, 99);
        assert_eq!(attempts_so_far(&again), 1);
        let from = ReadFrom::retry_topic("orders.retry.1s", 0, "orders");
        let d = dead_letter_from("orders.DLT", from, "g", &again, &err, 2).unwrap();
        assert_eq!(attempts_so_far(&consumed(&d, 0)), 3, "1 before, 2 here");
        let count = |k: &str| d.headers.iter().filter(|(n, _)| n == k).count();
        assert_eq!(count(ORIGINAL_TOPIC), 1);
        assert_eq!(count(ATTEMPTS), 1);
        let origin = Provenance::of("x", 0, &consumed(&d, 0));
        assert_eq!(
            origin,
            Provenance {
                topic: "orders".into(),
                partition: 2,
                offset: 7,
                timestamp: 5
            }
        );
    }

    fn forged(offset: i64, headers: &[(&str, &[u8])]) -> Record {
        Record {
            offset,
            timestamp: 5,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: headers
                .iter()
                .map(|(k, v)| Header {
                    key: Bytes::from(k.to_string()),
                    value: Some(Bytes::copy_from_slice(v)),
                })
                .collect(),
        }
    }

    fn one(d: &ProducerRecord, k: &str) -> Bytes {
        let found: Vec<_> = d.headers.iter().filter(|(n, _)| n == k).collect();
        assert_eq!(found.len(), 1, "one {k} header");
        found[0].1.clone().unwrap()
    }

    #[test]
    fn forged_provenance_on_a_source_topic_is_replaced_not_believed() {
        // A producer on `orders` attaches provenance naming `payments`.
        let rec = forged(
            11,
            &[
                (ORIGINAL_TOPIC, b"payments"),
                (ORIGINAL_PARTITION, &7i32.to_be_bytes()),
                (ORIGINAL_OFFSET, &99i64.to_be_bytes()),
                (ORIGINAL_TIMESTAMP, &1i64.to_be_bytes()),
                (ORIGINAL_CONSUMER_GROUP, b"admins"),
                (ATTEMPTS, &1000i32.to_be_bytes()),
                ("trace", b"t"),
            ],
        );
        let err = HandlerError::NonRetryable("bad".into());
        let d = dead_letter("orders.DLT", "orders", 2, "billing", &rec, &err, 1);
        assert_eq!(one(&d, ORIGINAL_TOPIC).as_ref(), b"orders");
        assert_eq!(one(&d, ORIGINAL_PARTITION).as_ref(), 2i32.to_be_bytes());
        assert_eq!(one(&d, ORIGINAL_OFFSET).as_ref(), 11i64.to_be_bytes());
        assert_eq!(one(&d, ORIGINAL_TIMESTAMP).as_ref(), 5i64.to_be_bytes());
        assert_eq!(one(&d, ORIGINAL_CONSUMER_GROUP).as_ref(), b"billing");
        assert_eq!(one(&d, ATTEMPTS).as_ref(), 1i32.to_be_bytes());
        assert_eq!(one(&d, "trace").as_ref(), b"t", "its own headers kept");
        // The same through the general path, and on a retry topic whose
        // hop names another source.
        let from = ReadFrom::source("orders", 2);
        assert_eq!(
            dead_letter_from("orders.DLT", from, "billing", &rec, &err, 1).unwrap(),
            d
        );
        let retry = ReadFrom::retry_topic("orders.retry.1s", 0, "orders");
        let r = dead_letter_from("orders.DLT", retry, "billing", &rec, &err, 1).unwrap();
        assert_eq!(one(&r, ORIGINAL_TOPIC).as_ref(), b"orders.retry.1s");
        assert_eq!(one(&r, ATTEMPTS).as_ref(), 1i32.to_be_bytes());
        assert_eq!(retry.attempts_so_far(&rec), 0);
    }

    #[test]
    fn attempts_that_overflow_are_a_typed_error() {
        let rec = forged(
            i64::MAX,
            &[
                (ORIGINAL_TOPIC, b"orders"),
                (ORIGINAL_PARTITION, &0i32.to_be_bytes()),
                (ORIGINAL_OFFSET, &i64::MAX.to_be_bytes()),
                (ATTEMPTS, &i64::from(u32::MAX).to_be_bytes()),
            ],
        );
        let from = ReadFrom::retry_topic("orders.retry.1s", 0, "orders");
        assert_eq!(from.attempts_so_far(&rec), u32::MAX);
        let e = dead_letter_from(
            "o.DLT",
            from,
            "g",
            &rec,
            &HandlerError::Retryable("x".into()),
            2,
        )
        .unwrap_err();
        assert_eq!(
            e,
            RetryHeaderError::AttemptsOverflow {
                so_far: u32::MAX,
                more: 2
            }
        );
        assert_eq!(from.origin(&rec).offset, i64::MAX);
    }
}
