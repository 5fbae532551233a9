//! # order-saga
//!
//! Seed 003 (a KafkaJS "learning sandbox") rebuilt on this workspace: an
//! order placed over HTTP is paid, its stock reserved and the order
//! confirmed, by three services that only talk through Kafka. A
//! **choreography** saga: no orchestrator, each service reacts to the
//! previous one's event.
//!
//! ```text
//!  POST /orders ─▶ order ──OrderCreated──▶ [orders] ──▶ payment ──PaymentCharged──▶ [payments]
//!                   ▲  ▲                                  ▲   │                          │
//!                   │  └────────── PaymentCharged/Refunded ───┼──────────────────────────┤
//!                   │                                     │   └──PaymentRefunded─▶ [payments]
//!                   │                      StockInsufficient  (compensation)            │
//!                   │                                     │                              ▼
//!                   └── StockReserved ◀── [inventory] ◀───┴──────────────── inventory (stock in PostgreSQL)
//!                          (confirmed)                                      prod_ignore ─▶ [inventory.DLT]
//! ```
//!
//! Every record carries an `event-type` and a `correlation-id` header, and
//! every service handles a record inside a `tracing` span with that
//! `correlation_id`: `grep <correlation id>` over the three services' logs
//! follows one order's journey. The spans are `WARN`-level on purpose: a
//! span below the log filter's level is disabled, and its fields then
//! vanish from the lines logged inside it (the demo logs at `warn`).
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`event`] | the events, their headers, the poison product |
//! | [`db`] | the tables: orders, stock, reservations, the payment ledger |
//! | [`order_service`] | the HTTP API (axum) and the Processor that moves an order's status |
//! | [`payment_service`] | charges and refunds, exactly once through the PostgreSQL inbox |
//! | [`inventory_service`] | reserves stock; a poison record goes to the DLT; can be slowed down |
//! | [`http`] | a small HTTP/1.1 client for the API (the demo, the load generator, tests) |
//! | [`lag`] | the inventory group's consumer lag, as `kafka-consumer-groups --describe` computes it |
//! | [`system`] | the three services in one process, and scaling the inventory service |
//! | [`demo`] | the seed's four scenarios and the summary table |
//!
//! ## Configuration
//!
//! Kafka settings go through Kafka's own property names (see
//! [`consumer_config`], [`producer_config`]). The binary reads
//! `KAFKA_BOOTSTRAP` and `PG_URL` (libpq style,
//! `host=127.0.0.1 port=5432 user=postgres dbname=postgres`).
//!
//! ## Startup and connectivity
//!
//! A service started before the broker is up waits for it: the Processor
//! retries its first connection with backoff, logging each attempt, and
//! goes on once the broker answers. It gives up after
//! [`ServiceConfig::startup_timeout`] (default 60 s) with an error that
//! names the bootstrap address, so a wrong `KAFKA_BOOTSTRAP` ends the
//! process with a message instead of a silent wait.

#![forbid(unsafe_code)]

pub mod db;
pub mod demo;
pub mod event;
pub mod http;
pub mod inventory_service;
pub mod lag;
pub mod order_service;
pub mod payment_service;
pub mod system;

use std::time::Duration;

use anyhow::Context;
use kafka_wire::{Client, ClientConfig, KafkaCode, NewTopic, Producer, ProducerConfig};
use resilience::consumer_core::ConsumerConfig;
use resilience::HandlerError;

use crate::event::Event;

/// Partitions of the saga's topics when a service creates them.
pub const PARTITIONS: i32 = 6;

/// The saga's topic names, under a prefix (`<run>.orders`, …) so that
/// runs never see each other's records; no prefix: the seed's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    pub orders: String,
    pub payments: String,
    pub inventory: String,
    /// Where the inventory service dead-letters (`inventory.DLT`).
    pub inventory_dlt: String,
}

impl Topics {
    /// `prefix` empty: `orders`, `payments`, `inventory`, `inventory.DLT`.
    pub fn new(prefix: &str) -> Topics {
        let name = |t: &str| {
            if prefix.is_empty() {
                t.to_string()
            } else {
                format!("{prefix}.{t}")
            }
        };
        Topics {
            prefix: prefix.to_string(),
            orders: name("orders"),
            payments: name("payments"),
            inventory: name("inventory"),
            inventory_dlt: name("inventory.DLT"),
        }
    }

    /// The consumer group of `service`, under the same prefix.
    pub fn group(&self, service: &str) -> String {
        if self.prefix.is_empty() {
            service.to_string()
        } else {
            format!("{}.{service}", self.prefix)
        }
    }

    pub fn all(&self) -> [&str; 4] {
        [
            &self.orders,
            &self.payments,
            &self.inventory,
            &self.inventory_dlt,
        ]
    }
}

/// What every service needs to start.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// PostgreSQL, libpq style.
    pub pg_url: String,
    pub topics: Topics,
    /// How long a service waits for the broker at start before it fails
    /// with an error naming the address. Default 60 s.
    pub startup_timeout: Duration,
}

impl ServiceConfig {
    pub fn new(bootstrap: impl Into<String>, pg_url: impl Into<String>, topics: Topics) -> Self {
        ServiceConfig {
            bootstrap: bootstrap.into(),
            pg_url: pg_url.into(),
            topics,
            startup_timeout: Duration::from_secs(60),
        }
    }

    /// A consumer config for `service`'s group, from the beginning of its
    /// topics.
    ///
    /// # Errors
    /// A bad property.
    pub fn consumer(&self, service: &str) -> anyhow::Result<ConsumerConfig> {
        consumer_config(
            &self.bootstrap,
            &self.topics.group(service),
            &[
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", "6000"),
                ("heartbeat.interval.ms", "1000"),
            ],
        )
    }

    /// The producer every service publishes with: acknowledged by all
    /// in-sync replicas, idempotent.
    ///
    /// # Errors
    /// A bad property.
    pub fn producer(&self) -> anyhow::Result<ProducerConfig> {
        producer_config(
            &self.bootstrap,
            &[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("linger.ms", "2"),
            ],
        )
    }

    /// Connect a producer, waiting for the broker up to `startup_timeout`.
    ///
    /// # Errors
    /// The broker did not answer in time: the error names the address.
    pub async fn connect_producer(&self) -> anyhow::Result<Publisher> {
        let cfg = self.producer()?;
        let deadline = tokio::time::Instant::now() + self.startup_timeout;
        let mut wait = Duration::from_millis(100);
        loop {
            match Producer::connect(cfg.clone()).await {
                Ok(p) => return Ok(Publisher(p)),
                Err(e) if e.is_retriable() && tokio::time::Instant::now() + wait < deadline => {
                    tracing::warn!(bootstrap = %self.bootstrap, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "cannot reach the Kafka cluster yet; retrying. Check bootstrap.servers and that the brokers are up");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| unreachable(&self.bootstrap, self.startup_timeout))
                }
            }
        }
    }
}

/// The message for a broker that never answered.
pub fn unreachable(bootstrap: &str, waited: Duration) -> String {
    format!(
        "no Kafka broker answered at bootstrap.servers={bootstrap} within {} s: check the address \
         (KAFKA_BOOTSTRAP; `cargo xtask broker up` then `source target/broker/env`), that the broker \
         is running, and that its advertised listener is reachable from here",
        waited.as_secs()
    )
}

/// A producer publishing saga events, each awaited until acknowledged.
#[derive(Debug, Clone)]
pub struct Publisher(pub Producer);

impl Publisher {
    /// Publish `event` to `topic` and wait for the acknowledgement.
    ///
    /// # Errors
    /// Retryable: the handler's record is retried, and nothing is
    /// committed before the event is stored.
    pub async fn publish(&self, topic: &str, event: &Event) -> Result<(), HandlerError> {
        let ack = self
            .0
            .send(event.record(topic))
            .await
            .map_err(HandlerError::retryable)?;
        ack.await.map_err(HandlerError::retryable)?;
        tracing::info!(topic, event_type = %event.event_type, "published");
        Ok(())
    }
}

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
        .properties(base.iter().chain(props).copied())?
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
                .iter()
                .chain(props)
                .copied(),
        )?
        .build()?)
}

/// Create each of `topics` with `partitions` partitions unless it exists.
/// Services call it before subscribing: a consumer that subscribes to a
/// topic created later sees it only at its next metadata refresh.
///
/// # Errors
/// Kafka is unreachable (naming the address), or refused a topic.
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
