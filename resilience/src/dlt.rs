//! Dead-letter records: the original key, value and headers, plus
//! provenance headers under the `kafka_dlt-*` names Spring Kafka uses, so
//! existing DLT tooling can read them. Numbers are big-endian binary, as
//! Spring writes them (partition: 4 bytes; offset and timestamp: 8 bytes).

use bytes::Bytes;
use kafka_wire::records::Record;
use kafka_wire::ProducerRecord;

use crate::retry::HandlerError;

pub const ORIGINAL_TOPIC: &str = "kafka_dlt-original-topic";
pub const ORIGINAL_PARTITION: &str = "kafka_dlt-original-partition";
pub const ORIGINAL_OFFSET: &str = "kafka_dlt-original-offset";
pub const ORIGINAL_TIMESTAMP: &str = "kafka_dlt-original-timestamp";
pub const ORIGINAL_CONSUMER_GROUP: &str = "kafka_dlt-original-consumer-group";
pub const EXCEPTION_FQCN: &str = "kafka_dlt-exception-fqcn";
pub const EXCEPTION_MESSAGE: &str = "kafka_dlt-exception-message";
/// Attempts made before dead-lettering (Spring's retry-topic header name).
pub const ATTEMPTS: &str = "retry_topic-attempts";

/// The default DLT name for `topic`.
pub fn dlt_topic(topic: &str) -> String {
    format!("{topic}.DLT")
}

/// Build the dead-letter record for `record` that failed with `err`.
pub fn dead_letter(
    dlt: &str,
    topic: &str,
    partition: i32,
    group: &str,
    record: &Record,
    err: &HandlerError,
    attempts: u32,
) -> ProducerRecord {
    let mut out = ProducerRecord::new(dlt);
    out.key = record.key.clone();
    out.value = record.value.clone();
    out.timestamp = Some(record.timestamp);
    out.headers = record
        .headers
        .iter()
        .map(|h| (h.key_str().into_owned(), h.value.clone()))
        .collect();
    let mut add = |k: &str, v: Bytes| out.headers.push((k.to_string(), Some(v)));
    add(ORIGINAL_TOPIC, Bytes::from(topic.to_string()));
    add(
        ORIGINAL_PARTITION,
        Bytes::copy_from_slice(&partition.to_be_bytes()),
    );
    add(
        ORIGINAL_OFFSET,
        Bytes::copy_from_slice(&record.offset.to_be_bytes()),
    );
    add(
        ORIGINAL_TIMESTAMP,
        Bytes::copy_from_slice(&record.timestamp.to_be_bytes()),
    );
    add(ORIGINAL_CONSUMER_GROUP, Bytes::from(group.to_string()));
    add(EXCEPTION_FQCN, Bytes::from(err.class().to_string()));
    add(EXCEPTION_MESSAGE, Bytes::from(err.message().to_string()));
    add(
        ATTEMPTS,
        Bytes::copy_from_slice(&(attempts as i32).to_be_bytes()),
    );
    out
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
}
