//! # order-payment
//!
//! Seed 000 (a Spring Kafka "consumer failure & resilience lab") rebuilt on
//! this workspace: an order service publishes `OrderCreated` events, a
//! payment service turns each into a row of `payments` in PostgreSQL, and a
//! DLT consumer logs what could not be paid.
//!
//! The seed's failure, both ways. Two payment instances share one group;
//! the payment gateway is slower than `max.poll.interval.ms` for a moment:
//!
//! - **naive** ([`naive`]): the seed's first listener. Auto-commit, records
//!   handled inline in the poll loop, no inbox. A member that handles a
//!   poll for longer than `max.poll.interval.ms` is dropped from the group,
//!   its partitions move, and the other member pays the same orders again:
//!   duplicated `payments` rows for one event id. A failing payment is
//!   logged and skipped: gone.
//! - **framework** ([`payment_service`]): the `resilience::Processor`. Polling
//!   never waits for handlers; offsets are committed after handling; the
//!   `payments` row and the `processed_events` row commit in one PostgreSQL
//!   transaction (`PgDedup::process_once`, the inbox), so a redelivered event
//!   pays nothing twice; a failing payment gets 3 retries 500 ms apart, then
//!   goes to `orders.created.DLT` with its provenance headers.
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`order`] | the `OrderCreated` event (JSON, `event-id` header) and which orders cannot be paid |
//! | [`order_service`] | publishes orders to `orders.created` |
//! | [`gateway`] | the payment gateway the services call: slow for a moment, refuses big amounts |
//! | [`payments`] | the `payments` table: create, insert, count duplicates |
//! | [`payment_service`] | the Processor handler: inbox, fixed-backoff retries, DLT |
//! | [`naive`] | the seed's naive listener: auto-commit, inline, no inbox |
//! | [`dlt_consumer`] | reads `orders.created.DLT` and logs each record's provenance |
//! | [`demo`] | both modes side by side, and the summary table |
//!
//! ## Configuration
//!
//! Kafka settings go through Kafka's own property names (`bootstrap.servers`,
//! `group.id`, `max.poll.interval.ms`, …): see [`consumer_config`] and
//! [`producer_config`]. The binary reads `KAFKA_BOOTSTRAP` and `PG_URL`
//! (a libpq-style string, `host=127.0.0.1 port=5432 user=postgres dbname=postgres`).

#![forbid(unsafe_code)]

pub mod demo;
pub mod dlt_consumer;
pub mod gateway;
pub mod naive;
pub mod order;
pub mod order_service;
pub mod payment_service;
pub mod payments;

use anyhow::Context;
use kafka_wire::{Client, ClientConfig, KafkaCode, NewTopic, ProducerConfig};
use resilience::consumer_core::ConsumerConfig;

/// The topic orders are published to (its DLT is `orders.created.DLT`).
pub const ORDERS_TOPIC: &str = "orders.created";

/// Partitions of the orders topic and its DLT, when a service creates them.
pub const PARTITIONS: i32 = 4;

/// Settings every payment instance shares, naive or not (Kafka property
/// names). `max.poll.interval.ms` is short so that the demo's slow moment
/// exceeds it; `session.timeout.ms` is 6000 because a stock broker refuses
/// less (`group.min.session.timeout.ms` defaults to 6000).
pub const PAYMENT_CONSUMER: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    ("max.poll.interval.ms", "3000"),
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1000"),
];

/// A consumer config from `bootstrap.servers`, `group.id` and further Kafka
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
        .properties(base.into_iter().chain(props.iter().copied()))?
        .build()?)
}

/// A producer config from `bootstrap.servers` and further Kafka properties.
///
/// # Errors
/// An unknown property or a bad value, naming it.
pub fn producer_config(bootstrap: &str, props: &[(&str, &str)]) -> anyhow::Result<ProducerConfig> {
    Ok(ProducerConfig::builder()
        .properties(
            [("bootstrap.servers", bootstrap)]
                .into_iter()
                .chain(props.iter().copied()),
        )?
        .build()?)
}

/// Create each of `topics` with `partitions` partitions unless it exists.
/// Services call it before subscribing, so the first records are not
/// waited for: a consumer subscribed to a missing topic looks for it every
/// second.
///
/// # Errors
/// Kafka is unreachable, or refused a topic (other than "already exists").
pub async fn ensure_topics(
    bootstrap: &str,
    topics: &[&str],
    partitions: i32,
) -> anyhow::Result<()> {
    let cfg = ClientConfig::builder()
        .set("bootstrap.servers", bootstrap)?
        .build()?;
    let admin = Client::connect(cfg)
        .await
        .with_context(|| format!("connecting to Kafka at {bootstrap}"))?;
    for topic in topics {
        match admin.create_topic(NewTopic::new(*topic, partitions)).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(KafkaCode::TopicAlreadyExists) => {}
            Err(e) => return Err(e).with_context(|| format!("creating topic {topic}")),
        }
    }
    Ok(())
}

/// `PG_URL` from the environment.
///
/// # Errors
/// It is unset.
pub fn pg_url() -> anyhow::Result<String> {
    std::env::var("PG_URL").context(
        "PG_URL is not set: start PostgreSQL with `cargo xtask postgres up` and export \
         the PG_URL it prints (e.g. PG_URL='host=127.0.0.1 port=5432 user=postgres dbname=postgres')",
    )
}
