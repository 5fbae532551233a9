//! # kafka-wire
//!
//! A pure-Rust Kafka protocol client: connections (TCP, rustls TLS, SASL),
//! ApiVersions negotiation, metadata and routing. No librdkafka, no C
//! toolchain: it builds with `CC=/bin/false`.
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
//! | [`tls`], [`sasl`] | rustls with the graviola provider; PLAIN, SCRAM, OAUTHBEARER |
//! | [`error`] | [`Error`] and its [`ErrorAction`]: what to do next |
//!
//! ## Example
//!
//! ```no_run
//! # async fn demo() -> kafka_wire::Result<()> {
//! use kafka_wire::{Client, ClientConfig};
//!
//! let config = ClientConfig::builder()
//!     .set("bootstrap.servers", "127.0.0.1:9092")?
//!     .set("client.id", "inventory-service")?
//!     .build()?;
//! let client = Client::connect(config).await?;
//! let metadata = client.refresh_metadata(None).await?;
//! for (name, topic) in &metadata.topics {
//!     println!("{name}: {} partitions", topic.partitions.len());
//! }
//! # Ok(()) }
//! ```

#![deny(clippy::disallowed_methods)]

pub mod admin;
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
pub mod versions;

pub use admin::{ConfigResource, NewTopic, OffsetSpec};
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

/// The generated protocol messages this crate speaks, re-exported so
/// callers need not depend on `kafka-protocol` themselves.
pub use kafka_protocol::messages;
pub use kafka_protocol::protocol::StrBytes;
