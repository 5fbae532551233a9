//! # log-pipeline
//!
//! Seed 004 (a Spring Kafka "consumer log processing system") rebuilt on
//! this workspace:
//!
//! ```text
//! client ──HTTP──▶ gateway ──acks=all──▶ application-logs (12 partitions, key = service)
//!                                              │
//!                     consumer group: 3 instances × 10 workers (Processor::batched)
//!                                              │ enrich
//!                              ┌───────────────┴───────────────┐
//!                 PostgreSQL (batch INSERT … ON CONFLICT DO NOTHING)   Redis (SADD event id per service/level/minute)
//!                                              │ on failure: retry after 1, 2, 4 s, then logs-dlq
//! ```
//!
//! - **A 2xx means stored**: the gateway answers after the broker
//!   acknowledged every record of the request (`acks=all`, idempotent
//!   producer).
//! - **Redelivery never duplicates**: rows are keyed by event id
//!   (`ON CONFLICT DO NOTHING`), and Redis counts are sets of event ids
//!   (see [`aggregates`] for why not `HINCRBY` of the rows `RETURNING` gave).
//! - **Outages wait**: a failing batch is retried after 1, 2 and 4 s (the
//!   partition waits meanwhile, the others go on), then dead-lettered to
//!   `logs-dlq`; dead-letters in a row quarantine the partition.
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`event`] | the log event: what clients send, what travels on Kafka, the enriched row |
//! | [`gateway`] | axum: `POST /logs`, `POST /logs/batch`, `GET /health` |
//! | [`consumer`] | the batch handler and the `Processor` settings (concurrency, retries, DLQ, quarantine) |
//! | [`dlq`] | reading the event ids in `logs-dlq` back |
//! | [`store`] | PostgreSQL: the table, the idempotent batch insert, a deadpool-postgres pool (resilience's `dedup::postgres::pool_from`) |
//! | [`aggregates`] | Redis: per service, level and minute counts |
//! | [`metrics`] | the pipeline's own Prometheus metrics beside the runtime's |
//! | [`pipeline`] | the gateway and N consumer instances in one process (demo, load test, test) |
//! | [`load`] | the seed's load test: burst, sustained rate, latency and throughput from PostgreSQL |
//!
//! ## Configuration
//!
//! Kafka settings are Kafka property names ([`consumer_config`],
//! [`producer_config`]). The binary reads `KAFKA_BOOTSTRAP`, `PG_URL`
//! (libpq style) and `REDIS_URL` (`redis://127.0.0.1:6379`).

#![forbid(unsafe_code)]

pub mod aggregates;
pub mod consumer;
pub mod dlq;
pub mod event;
pub mod gateway;
pub mod load;
pub mod metrics;
pub mod pipeline;
pub mod store;

use anyhow::Context;
use kafka_wire::{Client, ClientConfig, KafkaCode, NewTopic, ProducerConfig};
use resilience::consumer_core::ConsumerConfig;

/// The seed's topic (the demo and the test prefix it per run).
pub const TOPIC: &str = "application-logs";
/// The seed's dead-letter topic.
pub const DLQ: &str = "logs-dlq";
/// The seed's partition count.
pub const PARTITIONS: i32 = 12;
/// The seed's DLQ partition count.
pub const DLQ_PARTITIONS: i32 = 3;
/// The seed's consumer group.
pub const GROUP: &str = "log-processor-group";

/// Consumer settings every instance shares (Kafka property names; the
/// seed's `application.yml`, with a shorter session for quick failover).
pub const CONSUMER: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    ("max.poll.records", "500"),
    ("max.poll.interval.ms", "300000"),
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "1000"),
    ("fetch.max.wait.ms", "50"),
];

/// Producer settings: every write acknowledged by all in-sync replicas, no
/// duplicates from the producer's own retries.
pub const PRODUCER: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("linger.ms", "2"),
];

/// A consumer config from `bootstrap.servers`, `group.id` and more Kafka
/// properties.
///
/// # Errors
/// An unknown property or a bad value, naming it.
pub fn consumer_config(
    bootstrap: &str,
    group: &str,
    props: &[(&str, &str)],
) -> anyhow::Result<ConsumerConfig> {
    let base = [("bootstrap.servers", bootstrap), ("group.id", group)];
    Ok(ConsumerConfig::builder()
        .properties(base.iter().chain(props).copied())
        .context("consumer properties")?
        .build()?)
}

/// A producer config from `bootstrap.servers` and more Kafka properties.
///
/// # Errors
/// An unknown property or a bad value, naming it.
pub fn producer_config(bootstrap: &str, props: &[(&str, &str)]) -> anyhow::Result<ProducerConfig> {
    Ok(ProducerConfig::builder()
        .properties(
            [("bootstrap.servers", bootstrap)]
                .iter()
                .chain(props)
                .copied(),
        )
        .context("producer properties")?
        .build()?)
}

/// Create each `(topic, partitions)` unless it exists.
///
/// # Errors
/// Kafka is unreachable, or refused a topic (other than "already exists").
pub async fn ensure_topics(bootstrap: &str, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    let cfg = ClientConfig::builder()
        .set("bootstrap.servers", bootstrap)?
        .build()?;
    let admin = Client::connect(cfg)
        .await
        .with_context(|| format!("connecting to Kafka at {bootstrap}"))?;
    for (topic, partitions) in topics {
        match admin.create_topic(NewTopic::new(*topic, *partitions)).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(KafkaCode::TopicAlreadyExists) => {}
            Err(e) => return Err(e).with_context(|| format!("creating topic {topic}")),
        }
    }
    Ok(())
}

/// A required environment variable, with what to run when it is missing.
///
/// # Errors
/// It is unset.
pub fn env(key: &str) -> anyhow::Result<String> {
    let hint = match key {
        "KAFKA_BOOTSTRAP" => "run `cargo xtask broker up` and `source target/broker/env`",
        "PG_URL" => "run `cargo xtask postgres up` and export the PG_URL it prints",
        "REDIS_URL" => "run `cargo xtask redis up` and export the REDIS_URL it prints",
        _ => "export it",
    };
    std::env::var(key).with_context(|| format!("{key} is not set: {hint}"))
}

/// Microseconds since the Unix epoch (the clock both the gateway's accept
/// time and PostgreSQL's insert time are read from: one machine here).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
