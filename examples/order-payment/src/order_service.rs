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
    let mut acks = Vec::with_capacity(orders.len());
    for order in orders {
        acks.push(producer.send(record(topic, order)).await?);
    }
    for (ack, order) in acks.into_iter().zip(orders) {
        let at = ack
            .await
            .with_context(|| format!("publishing {}", order.order_id))?;
        tracing::debug!(order = %order.order_id, event_id = %order.event_id, ?at, "OrderCreated published");
    }
    producer.close().await;
    tracing::info!(orders = orders.len(), topic, "orders published");
    Ok(())
}
