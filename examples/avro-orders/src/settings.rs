//! The pipeline's settings: topics, group, retry schedule, and the Kafka
//! clients' configuration by Kafka's own property names (so a Java or
//! librdkafka config can be pasted with `-X key=value`).

use std::time::Duration;

use kafka_wire::{ClientConfigBuilder, ProducerConfig};
use resilience::consumer_core::ConsumerConfig;
use resilience::retry::BackoffPolicy;

/// Everything the producer and the consumer share. Defaults are the seed's
/// `config.py`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `bootstrap.servers` (env `KAFKA_BOOTSTRAP`; default `localhost:9092`).
    pub bootstrap: String,
    /// `schema.registry.url` (env `SCHEMA_REGISTRY_URL`). `None` in `demo`:
    /// a `testkit::StandInSchemaRegistry` in process.
    pub registry_url: Option<String>,
    /// Orders topic (default `orders`).
    pub topic: String,
    /// Dead-letter topic (default `orders_dlq`).
    pub dlq: String,
    /// `group.id` (default `order-processor-group`).
    pub group: String,
    /// First retry delay; each next one doubles (default 1 s: 1, 2, 4 s).
    pub retry_backoff: Duration,
    /// Retries after the first attempt before the DLQ (default 3).
    pub max_retries: u32,
    /// Extra Kafka client properties for the consumer and both producers.
    pub properties: Vec<(String, String)>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bootstrap: std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "localhost:9092".into()),
            registry_url: std::env::var("SCHEMA_REGISTRY_URL").ok(),
            topic: "orders".into(),
            dlq: "orders_dlq".into(),
            group: "order-processor-group".into(),
            retry_backoff: Duration::from_secs(1),
            max_retries: 3,
            properties: Vec::new(),
        }
    }
}

impl Settings {
    /// The seed's schedule: `retry_backoff × 2^(n-1)` before retry n, no
    /// jitter, `max_retries` retries (Spring's `ExponentialBackOff`).
    pub fn backoff(&self) -> BackoffPolicy {
        BackoffPolicy::exponential(self.retry_backoff, self.max_retries)
    }

    /// The consumer: `bootstrap.servers`, `group.id`,
    /// `auto.offset.reset=earliest`, then [`Settings::properties`].
    pub fn consumer(&self) -> anyhow::Result<ConsumerConfig> {
        let mut b = ConsumerConfig::builder()
            .set("bootstrap.servers", &self.bootstrap)?
            .set("group.id", &self.group)?
            .set("auto.offset.reset", "earliest")?;
        for (k, v) in &self.properties {
            b = b.set(k, v)?;
        }
        Ok(b.build()?)
    }

    /// A producer (orders, and the DLQ writes): `bootstrap.servers`,
    /// `acks=all`, then [`Settings::properties`].
    pub fn producer(&self) -> anyhow::Result<ProducerConfig> {
        let mut b = ProducerConfig::builder()
            .set("bootstrap.servers", &self.bootstrap)?
            .set("acks", "all")?;
        for (k, v) in &self.properties {
            b = b.set(k, v)?;
        }
        Ok(b.build()?)
    }

    /// The plain client (admin calls, DLQ replay): `bootstrap.servers` and
    /// those of [`Settings::properties`] a client takes (security, timeouts).
    pub fn client(&self) -> anyhow::Result<ClientConfigBuilder> {
        let mut b =
            kafka_wire::ClientConfig::builder().set("bootstrap.servers", &self.bootstrap)?;
        for (k, v) in &self.properties {
            if let Ok(next) = b.clone().set(k, v) {
                b = next;
            }
        }
        Ok(b)
    }
}
