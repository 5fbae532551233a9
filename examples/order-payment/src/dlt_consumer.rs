//! The DLT consumer: reads `orders.created.DLT` and logs each dead letter
//! with where it came from and why it died, from the `kafka_dlt-*` headers
//! the Processor writes (Spring Kafka's names, so Spring's tools read them
//! too). It commits after logging, so a restart logs each one once more at
//! most.

use std::time::Duration;

use anyhow::Context;
use kafka_wire::records::Record;
use resilience::consumer_core::{Consumer, ConsumerConfig};
use resilience::dlt::DeadRecord;
use tokio::sync::watch;

use crate::order::EVENT_ID_HEADER;

/// The DLT consumer's group.
pub const GROUP: &str = "payment-dlt-consumer";

/// A dead letter: the framework's reading of its `kafka_dlt-*` headers
/// ([`DeadRecord`]: origin, group, error class and message, attempts) plus
/// this service's own `event-id` header.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The `event-id` header the order service wrote.
    pub event_id: Option<String>,
    /// Where it came from and why it died.
    pub dead: DeadRecord,
}

impl DeadLetter {
    /// Read a record of partition `partition` of the DLT.
    pub fn from_record(partition: i32, record: &Record) -> DeadLetter {
        let event_id = record
            .headers
            .iter()
            .rev()
            .find(|h| h.key.as_ref() == EVENT_ID_HEADER.as_bytes())
            .and_then(|h| h.value.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned());
        DeadLetter {
            event_id,
            dead: DeadRecord::parse(partition, record.clone()),
        }
    }

    /// Does it say where it came from, who dead-lettered it and why (every
    /// `kafka_dlt-*` header present)?
    pub fn has_provenance(&self) -> bool {
        let d = &self.dead;
        d.origin.is_some()
            && d.group.is_some()
            && d.error_class.is_some()
            && d.error_message.is_some()
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
        for batch in &batches {
            for record in &batch.records {
                let dead = DeadLetter::from_record(batch.tp.partition, record);
                let d = &dead.dead;
                let at = |t: &Option<String>| t.as_deref().unwrap_or("?").to_string();
                let origin = d.origin.as_ref().map_or("?".to_string(), |o| {
                    format!("{}/{}@{}", o.topic, o.partition, o.offset)
                });
                tracing::warn!(
                    event_id = %at(&dead.event_id),
                    original = %origin,
                    group = %at(&d.group),
                    attempts = d.attempts.unwrap_or(0),
                    error = %format!("{}: {}", at(&d.error_class), at(&d.error_message)),
                    "DEAD LETTER"
                );
                on_dead_letter(dead);
            }
        }
        if let Err(e) = consumer.commit_positions().await {
            tracing::warn!(error = %e, "DLT commit failed (the records will be logged again)");
        }
    }
    consumer.close(Duration::from_secs(5)).await;
    Ok(())
}
