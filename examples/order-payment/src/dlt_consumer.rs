//! The DLT consumer: reads `orders.created.DLT` and logs each dead letter
//! with where it came from and why it died, from the `kafka_dlt-*` headers
//! the Processor writes (Spring Kafka's names, so Spring's tools read them
//! too). It commits after logging, so a restart logs each one once more at
//! most.

use std::time::Duration;

use anyhow::Context;
use kafka_wire::records::Record;
use resilience::consumer_core::{Consumer, ConsumerConfig};
use resilience::dlt;
use tokio::sync::watch;

use crate::order::EVENT_ID_HEADER;

/// The DLT consumer's group.
pub const GROUP: &str = "payment-dlt-consumer";

/// A dead letter as the headers describe it. `None`: the header is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The `event-id` header the order service wrote.
    pub event_id: Option<String>,
    /// `kafka_dlt-original-topic`.
    pub original_topic: Option<String>,
    /// `kafka_dlt-original-partition`.
    pub original_partition: Option<i64>,
    /// `kafka_dlt-original-offset`.
    pub original_offset: Option<i64>,
    /// `kafka_dlt-original-timestamp` (ms since the epoch).
    pub original_timestamp: Option<i64>,
    /// `kafka_dlt-original-consumer-group`.
    pub consumer_group: Option<String>,
    /// `kafka_dlt-exception-fqcn`: `Retryable`, `NonRetryable`, `Deserialization`.
    pub error_class: Option<String>,
    /// `kafka_dlt-exception-message`.
    pub error_message: Option<String>,
    /// `retry_topic-attempts`: attempts made, the first one included.
    pub attempts: Option<i64>,
}

fn text(record: &Record, name: &str) -> Option<String> {
    record
        .headers
        .iter()
        .rev()
        .find(|h| h.key.as_ref() == name.as_bytes())
        .and_then(|h| h.value.as_deref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

impl DeadLetter {
    /// Read the headers of a record of the DLT.
    pub fn from_record(record: &Record) -> DeadLetter {
        DeadLetter {
            event_id: text(record, EVENT_ID_HEADER),
            original_topic: text(record, dlt::ORIGINAL_TOPIC),
            original_partition: dlt::int_header(record, dlt::ORIGINAL_PARTITION),
            original_offset: dlt::int_header(record, dlt::ORIGINAL_OFFSET),
            original_timestamp: dlt::int_header(record, dlt::ORIGINAL_TIMESTAMP),
            consumer_group: text(record, dlt::ORIGINAL_CONSUMER_GROUP),
            error_class: text(record, dlt::EXCEPTION_FQCN),
            error_message: text(record, dlt::EXCEPTION_MESSAGE),
            attempts: dlt::int_header(record, dlt::ATTEMPTS),
        }
    }

    /// Does it say where it came from and why it failed (every `kafka_dlt-*`
    /// header present)?
    pub fn has_provenance(&self) -> bool {
        self.original_topic.is_some()
            && self.original_partition.is_some()
            && self.original_offset.is_some()
            && self.original_timestamp.is_some()
            && self.consumer_group.is_some()
            && self.error_class.is_some()
            && self.error_message.is_some()
    }
}

/// The DLT consumer's settings: from the beginning of the DLT.
///
/// # Errors
/// A bad property.
pub fn consumer_config(bootstrap: &str, group: &str) -> anyhow::Result<ConsumerConfig> {
    crate::consumer_config(bootstrap, group, &[("auto.offset.reset", "earliest")])
}

/// Log every record of `dlt_topic` and hand it to `on_dead_letter`, until
/// `stop` turns true.
///
/// # Errors
/// Connecting or subscribing.
pub async fn run(
    cfg: ConsumerConfig,
    dlt_topic: &str,
    mut on_dead_letter: impl FnMut(DeadLetter),
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut consumer = Consumer::connect(cfg)
        .await
        .context("connecting the DLT consumer")?;
    consumer.subscribe(&[dlt_topic])?;
    while !*stop.borrow() {
        let batches = tokio::select! {
            polled = consumer.poll(Duration::from_millis(200)) => polled,
            _ = stop.changed() => break,
        };
        let batches = match batches {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "DLT poll failed");
                continue;
            }
        };
        for record in batches.iter().flat_map(|b| &b.records) {
            let dead = DeadLetter::from_record(record);
            let at = |t: &Option<String>| t.as_deref().unwrap_or("?").to_string();
            tracing::warn!(
                event_id = %at(&dead.event_id),
                original = %format!(
                    "{}/{}@{}",
                    at(&dead.original_topic),
                    dead.original_partition.unwrap_or(-1),
                    dead.original_offset.unwrap_or(-1)
                ),
                group = %at(&dead.consumer_group),
                attempts = dead.attempts.unwrap_or(0),
                error = %format!("{}: {}", at(&dead.error_class), at(&dead.error_message)),
                "DEAD LETTER"
            );
            on_dead_letter(dead);
        }
        if let Err(e) = consumer.commit_positions().await {
            tracing::warn!(error = %e, "DLT commit failed (the records will be logged again)");
        }
    }
    consumer.close(Duration::from_secs(5)).await;
    Ok(())
}
