//! The seed's producer: random orders, Avro-serialized through the
//! registry (schema registered under `<topic>-value` on first use), keyed
//! by order id; each delivery printed with its partition and offset.

use std::time::Duration;

use kafka_wire::{Producer, ProducerRecord, RecordMetadata};
use schema_registry::AvroSerializer;

use crate::order::{Order, OrderGenerator};
use crate::settings::Settings;

/// One order as it was produced.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub order: Order,
    pub partition: i32,
    pub offset: i64,
}

/// The record for `order`: key the order id, value the framed Avro body.
async fn record(
    ser: &AvroSerializer,
    topic: &str,
    order: &Order,
) -> anyhow::Result<ProducerRecord> {
    let value = ser.serialize_ser(topic, order).await?;
    Ok(ProducerRecord::new(topic)
        .key(order.order_id.clone())
        .value(value))
}

/// The seed's loop: one order every `1 / rate` seconds, each delivery
/// awaited and printed, until `stop` resolves.
///
/// # Errors
/// Registry, serialization or delivery failures.
pub async fn run_live(
    settings: &Settings,
    ser: &AvroSerializer,
    rate: f64,
    seed: u64,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<u64> {
    let producer = Producer::connect(settings.producer()?).await?;
    let mut orders = OrderGenerator::seeded(seed);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let mut sent = 0u64;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let order = orders.next_order();
        sent += 1;
        println!(
            "\n📦 [Message #{sent}] {} {} ${:.2}",
            order.order_id, order.product, order.price
        );
        let md: RecordMetadata = producer
            .send(record(ser, &settings.topic, &order).await?)
            .await?
            .await?;
        println!(
            "✅ delivered to {} [partition {}] at offset {}",
            md.topic, md.partition, md.offset
        );
    }
    producer.close().await;
    Ok(sent)
}

/// `count` orders as fast as the producer takes them (the demo): all
/// sent, then all deliveries awaited.
///
/// # Errors
/// Registry, serialization or delivery failures.
pub async fn produce(
    settings: &Settings,
    ser: &AvroSerializer,
    count: u64,
    seed: u64,
) -> anyhow::Result<Vec<Delivered>> {
    let producer = Producer::connect(settings.producer()?).await?;
    let mut orders = OrderGenerator::seeded(seed);
    let mut pending = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let order = orders.next_order();
        let delivery = producer
            .send(record(ser, &settings.topic, &order).await?)
            .await?;
        pending.push((order, delivery));
    }
    let mut delivered = Vec::with_capacity(pending.len());
    for (order, delivery) in pending {
        let md = delivery.await?;
        delivered.push(Delivered {
            order,
            partition: md.partition,
            offset: md.offset,
        });
    }
    producer.close().await;
    Ok(delivered)
}
