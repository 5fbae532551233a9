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
//! | `config` | [`ClientConfig`]: every default in one place; accepts Kafka property names |
//! | `client` | [`Client`]: connections per (broker, [`Lane`]), metadata refresh, routing |
//! | `connection` | one task owns each socket; callers hold a cheap [`Connection`] handle |
//! | `connector` | the [`Connector`] seam every dial goes through (fault proxies plug in here) |
//! | `frame` | length-prefixed frames, bounded before allocation |
//! | `versions` | the one table of API versions this client speaks, and negotiation |
//! | `metadata` | the [`Metadata`] cache (pure) |
//! | [`records`] | record batches v2: lazy zero-copy decode, CRC32C, gzip/snappy/lz4/zstd |
//! | `producer` | [`Producer`]: accumulator (pure), sender task, partitioner, transactions; [`Topic`] handles; delivery futures and the failure log `flush` reports ([`Undelivered`]) |
//! | `coordinator` | FindCoordinator for groups and transactions ([`CoordinatorKind`]) |
//! | `admin` | topics, offsets, groups, configs, cluster, replica reassignment and leader elections (methods on [`Client`]) |
//! | `tls`, `sasl` | [`TlsConfig`] (rustls, graviola provider); [`SaslConfig`]: PLAIN, SCRAM, OAUTHBEARER |
//! | `error` | [`Error`] and its [`ErrorAction`]: what to do next |
//! | [`suggest`] | "did you mean": the known name nearest a misspelled one (config errors, the CLI) |
//! | `backoff` | [`Backoff`]: capped exponential retry delays with jitter, for every retry loop |
//! | `telemetry` | [`Telemetry`]: client metrics pushed to the broker as OTLP (KIP-714, `enable.metrics.push`) |
//! | `throttle` | [`Throttle`] (a response's `throttle_time_ms`, KIP-219, [`ThrottleTime`]): connections and planners hold requests back |
//!
//! Modules are private: the types above are re-exported at the crate root,
//! and that list is the API. `records`, `suggest` and `messages` are public whole.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tls` | on | `security.protocol=SSL`/`SASL_SSL` (rustls + graviola, pure Rust) |
//! | `scram` | on | `sasl.mechanism=SCRAM-SHA-256`/`512` |
//! | `gzip`, `snappy`, `lz4`, `zstd` | on | reading and writing batches in that codec |
//! | `unstable-internals` | off | `frame`, for the fuzz targets; no stability promise |
//!
//! Without a feature, the configuration that needs it fails with an
//! [`Error::Config`] naming the feature, and a batch in a left-out codec is
//! [`DecodeError::CodecNotBuilt`].
//!
//! ## Example: produce
//!
//! Send in bulk without awaiting each record, then `flush` once: it fails
//! with [`Undelivered`], handing back every record that failed and why, so
//! no failure is lost. A record's [`DeliveryFuture`] is there for when its
//! offset matters; dropping it is fine (its failure then goes to `flush`).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kafka_wire::{Producer, ProducerConfig, ProducerRecord, Topic};
//!
//! // Kafka's own property names work, so existing configs can be pasted.
//! let config = ProducerConfig::builder()
//!     .set("bootstrap.servers", "127.0.0.1:9092")?
//!     .set("compression.type", "lz4")?
//!     .set("linger.ms", "5")?
//!     .build()?; // acks=all and idempotence are the defaults
//! let producer = Producer::connect(config).await?;
//!
//! let orders = Topic::new("orders"); // once: records share the name, no copy each
//! for customer in 0..10_000 {
//!     let record = ProducerRecord::new(&orders)
//!         .key(format!("customer-{customer}"))
//!         .value("{\"total\": 99}");
//!     producer.send(record).await?; // queued (waits only if buffer.memory is full)
//! }
//! if let Err(undelivered) = producer.flush().await {
//!     for failed in &undelivered.records {
//!         eprintln!("not delivered: {:?}: {}", failed.record.key, failed.error);
//!     }
//!     return Err(undelivered.into());
//! }
//!
//! // One record whose offset matters: await its delivery.
//! let md = producer.send(ProducerRecord::new(&orders).value("{}")).await?.await?;
//! println!("stored at {}-{} offset {}", md.topic, md.partition, md.offset);
//! producer.close().await;
//! # Ok(()) }
//! ```

#![deny(clippy::disallowed_methods)]
#![forbid(unsafe_code)]
#![warn(
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    unused_qualifications,
    clippy::dbg_macro,
    clippy::todo
)]

// Private modules: what an embedder can reach is the re-exports below (a
// promise), plus `records` (the batch codec) and `messages` (the protocol).
mod admin;
mod backoff;
mod client;
mod config;
mod connection;
mod connector;
mod coordinator;
mod error;
#[cfg(test)]
mod fake_broker;
#[cfg(not(feature = "unstable-internals"))]
mod frame;
/// Length-prefixed frames. Not a stable API: public only with the
/// `unstable-internals` feature, for the fuzz targets.
#[cfg(feature = "unstable-internals")]
pub mod frame;
mod metadata;
mod producer;
pub mod records;
mod sasl;
mod segments;
pub mod suggest;
mod telemetry;
mod throttle;
mod tls;
mod topic_partition;
mod versions;

pub use admin::{
    ConfigEntry, ConfigResource, ElectionType, GroupDescription, GroupListing, GroupMember,
    LeaderElection, NewTopic, OffsetSpec, OngoingReassignment, PartitionReassignment,
    ShareGroupDescription, ShareGroupMember, ShareGroupOffset, DELETE_TO_END,
};
pub use backoff::{Backoff, Delays};
pub use client::{Client, Lane};
pub use config::{ClientConfig, ClientConfigBuilder, MetadataRecoveryStrategy, SecurityProtocol};
pub use connection::{Connection, ConnectionInfo, PendingResponse};
pub use connector::{
    BoxTransport, BrokerAddress, ConnectFuture, Connector, TcpConnector, Transport,
};
pub use coordinator::CoordinatorKind;
pub use error::{DecodeError, Error, ErrorAction, KafkaCode, Result};
pub use metadata::{
    BrokerInfo, HintsApplied, LeaderHint, LeaderHints, Metadata, PartitionInfo, TopicInfo,
};
pub use producer::partitioner::partition_for_key;
pub use producer::{
    Acks, DeliveryFuture, FailedRecord, GroupMetadata, Producer, ProducerConfig,
    ProducerConfigBuilder, ProducerRecord, RecordMetadata, Topic, TrySendError, Undelivered,
};
pub use records::{Compression, Header, Record};
pub use sasl::{SaslConfig, TokenFuture, TokenProvider, UnsecuredJwt};
pub use telemetry::{
    Telemetry, TelemetryMetrics, TelemetryRole, TelemetryStats, BYTES_CONSUMED_TOTAL,
    FETCH_LATENCY_AVG, FETCH_LATENCY_MAX, FETCH_TOTAL, RECORDS_CONSUMED_TOTAL, RECORDS_LAG_MAX,
    RECORD_SEND_TOTAL,
};
pub use throttle::{Throttle, ThrottleTime};
pub use tls::TlsConfig;
pub use topic_partition::{IsolationLevel, TopicPartition};
pub use versions::ApiVersionTable;

/// The generated protocol messages this crate speaks, re-exported so
/// callers need not depend on `kafka-protocol` themselves.
pub use kafka_protocol::messages;
pub use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// For this project's own crates (consumer-core parses Kafka properties with
/// the same helpers). Not a stable API: not covered by semver.
#[doc(hidden)]
pub mod __private {
    pub use crate::config::parse;
}

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
