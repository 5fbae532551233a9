//! The seed's naive payment listener, as a plain consumer loop: auto-commit
//! on, every record handled inline between two polls, no inbox.
//!
//! ```text
//! poll ──> charge, INSERT payment ──> charge, INSERT payment ──> … ──> poll (auto-commit)
//!          └──────────── longer than max.poll.interval.ms ───────────┘
//!          the member is dropped; its partitions go to the other member,
//!          which starts from the last commit and pays the same orders again
//! ```
//!
//! A failing payment is logged and skipped, as Spring's default error
//! handler does once its retries run out: the order is never paid, and
//! nothing says so but a log line. Do not copy this file; it is the
//! "before" picture.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use resilience::consumer_core::{Consumer, ConsumerConfig};
use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::order::OrderCreated;
use crate::payments::{self, Pool};

/// The naive listener's settings on top of [`crate::PAYMENT_CONSUMER`]:
/// auto-commit (what poll returned, every 500 ms, at the next poll) and
/// 10 records per poll.
pub const NAIVE_CONSUMER: &[(&str, &str)] = &[
    ("enable.auto.commit", "true"),
    ("auto.commit.interval.ms", "500"),
    ("max.poll.records", "10"),
];

/// The consumer config of a naive instance.
///
/// # Errors
/// A bad property.
pub fn consumer_config(bootstrap: &str, group: &str) -> anyhow::Result<ConsumerConfig> {
    let props: Vec<_> = crate::PAYMENT_CONSUMER
        .iter()
        .chain(NAIVE_CONSUMER)
        .copied()
        .collect();
    crate::consumer_config(bootstrap, group, &props)
}

/// Consume `topic` and pay each order inline until `stop` turns true
/// (checked between records). Returns how many payments it made.
///
/// # Errors
/// Connecting to Kafka, or subscribing.
pub async fn run(
    cfg: ConsumerConfig,
    topic: &str,
    db: Arc<Pool>,
    gateway: Arc<Gateway>,
    instance: &str,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<u64> {
    let mut consumer = Consumer::connect(cfg)
        .await
        .context("connecting the naive payment consumer")?;
    consumer.subscribe(&[topic])?;
    let mut paid = 0;
    'poll: while !*stop.borrow() {
        let batches = tokio::select! {
            polled = consumer.poll(Duration::from_millis(200)) => match polled {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(instance, error = %e, "poll failed");
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        for batch in batches {
            for record in &batch.records {
                if *stop.borrow() {
                    break 'poll;
                }
                let order = match OrderCreated::from_record(record) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(instance, offset = record.offset, error = %e, "skipping a bad record");
                        continue;
                    }
                };
                let result = match gateway.charge(&order).await {
                    Ok(()) => pay(&db, &order, instance).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        paid += 1;
                        tracing::info!(instance, event_id = %order.event_id, partition = batch.tp.partition, offset = record.offset, "PROCESSED");
                    }
                    Err(e) => {
                        tracing::error!(instance, event_id = %order.event_id, error = %e, "payment failed: skipped")
                    }
                }
            }
        }
    }
    consumer.close(Duration::from_secs(5)).await;
    Ok(paid)
}

/// Insert the payment on one of the pool's connections.
async fn pay(db: &Pool, order: &OrderCreated, instance: &str) -> Result<(), String> {
    let conn = db.get().await.map_err(|e| e.to_string())?;
    payments::insert(&**conn, order, instance)
        .await
        .map_err(|e| e.to_string())
}
