//! The order service: publishes `OrderCreated` to `orders.created`, keyed
//! by customer (one customer's orders stay in order on one partition).

use anyhow::Context;
use kafka_wire::{Producer, ProducerConfig, ProducerRecord};

use crate::order::{OrderCreated, EVENT_ID_HEADER};

/// Producer settings (Kafka property names): every write acknowledged by
/// all in-sync replicas, and no duplicates from the producer's own retries.
pub const PRODUCER: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("linger.ms", "5"),
];

/// The record for `order` on `topic`.
pub fn record(topic: &str, order: &OrderCreated) -> ProducerRecord {
    ProducerRecord::new(topic)
        .key(order.customer_id.clone())
        .value(serde_json::to_vec(order).expect("an OrderCreated always serializes"))
        .header(EVENT_ID_HEADER, order.event_id.clone())
}

/// Publish `orders` to `topic` and wait until the broker acknowledged each.
///
/// # Errors
/// Connecting, or a record the broker did not take.
pub async fn publish(
    cfg: ProducerConfig,
    topic: &str,
    orders: &[OrderCreated],
) -> anyhow::Result<()> {
    let producer = Producer::connect(cfg)
        .await
        .context("connecting the order service's producer")?;
    for order in orders {
        producer.send(record(topic, order)).await?;
    }
    // Every record acknowledged, or the ones that were not (with why).
    producer
        .flush()
        .await
        .with_context(|| format!("publishing {} orders to {topic}", orders.len()))?;
    producer.close().await;
    tracing::info!(orders = orders.len(), topic, "orders published");
    Ok(())
}
