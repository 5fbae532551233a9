//! # kafka-wire
//!
//! A pure-Rust Kafka protocol client: connections (TCP, rustls TLS, SASL),
//! ApiVersions negotiation, metadata and routing, record batches with all
//! four codecs, an idempotent and transactional producer, and admin calls.
//! No librdkafka, no C toolchain: it builds with `CC=/bin/false`.
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`config`] | [`ClientConfig`]: every default in one place; accepts Kafka property names |
//! | [`client`] | [`Client`]: connections per (broker, [`Lane`]), metadata refresh, routing |
//! | [`connection`] | one task owns each socket; callers hold a cheap [`Connection`] handle |
//! | [`connector`] | the [`Connector`] seam every dial goes through (fault proxies plug in here) |
//! | [`frame`] | length-prefixed frames, bounded before allocation |
//! | [`versions`] | the one table of API versions this client speaks, and negotiation |
//! | [`metadata`] | the metadata cache (pure) |
//! | [`records`] | record batches v2: lazy zero-copy decode, CRC32C, gzip/snappy/lz4/zstd |
//! | [`producer`] | [`Producer`]: accumulator (pure), sender task, partitioner, transactions |
//! | [`coordinator`] | FindCoordinator for groups and transactions |
//! | [`admin`] | topics, offsets, groups, configs, cluster |
//! | [`tls`], [`sasl`] | rustls with the graviola provider; PLAIN, SCRAM, OAUTHBEARER |
//! | [`error`] | [`Error`] and its [`ErrorAction`]: what to do next |
//! | [`backoff`] | [`Backoff`] (capped exponential retry delays with jitter) and [`Throttle`] (a response's `throttle_time_ms`) |
//!
//! ## Example: produce
//!
//! ```no_run
//! # async fn demo() -> kafka_wire::Result<()> {
//! use kafka_wire::{Producer, ProducerConfig, ProducerRecord};
//!
//! // Kafka's own property names work, so existing configs can be pasted.
//! let config = ProducerConfig::builder()
//!     .set("bootstrap.servers", "127.0.0.1:9092")?
//!     .set("compression.type", "lz4")?
//!     .set("linger.ms", "5")?
//!     .build()?; // acks=all and idempotence are the defaults
//! let producer = Producer::connect(config).await?;
//!
//! let delivery = producer
//!     .send(ProducerRecord::new("orders").key("customer-42").value("{\"total\": 99}"))
//!     .await?; // queued (waits only if buffer.memory is full)
//! let md = delivery.await?; // acknowledged by every in-sync replica
//! println!("stored at {}-{} offset {}", md.topic, md.partition, md.offset);
//! producer.close().await;
//! # Ok(()) }
//! ```

#![deny(clippy::disallowed_methods)]

pub mod admin;
pub mod backoff;
pub mod client;
pub mod config;
pub mod connection;
pub mod connector;
pub mod coordinator;
pub mod error;
pub mod frame;
pub mod metadata;
pub mod producer;
pub mod records;
pub mod sasl;
pub mod tls;
mod topic_partition;
pub mod versions;

pub use admin::{ConfigResource, NewTopic, OffsetSpec, DELETE_TO_END};
pub use backoff::{Backoff, Delays, Throttle};
pub use client::{Client, Lane};
pub use config::{ClientConfig, ClientConfigBuilder, SecurityProtocol};
pub use connection::Connection;
pub use connector::{BrokerAddress, Connector, TcpConnector};
pub use error::{Error, ErrorAction, KafkaCode, Result};
pub use producer::{
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use sasl::{SaslConfig, TokenProvider, UnsecuredJwt};
pub use tls::TlsConfig;
pub use topic_partition::{IsolationLevel, TopicPartition};

/// The generated protocol messages this crate speaks, re-exported so
/// callers need not depend on `kafka-protocol` themselves.
pub use kafka_protocol::messages;
pub use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
