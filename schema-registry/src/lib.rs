//! # schema-registry
//!
//! A client for the Confluent schema registry's REST API and Avro serdes
//! in the Confluent wire format, in pure Rust (apache-avro without its
//! C-backed codecs; hyper over TCP or rustls TLS).
//!
//! What "Confluent-compatible" means here, and how it is checked:
//!
//! - **the REST API**: the four documented calls in [`RegistryClient`],
//!   `application/vnd.schemaregistry.v1+json`, error bodies as
//!   [`RegistryError::Api`] with the registry's `error_code` and
//!   `message`. Tested against `testkit::StandInSchemaRegistry`, an
//!   in-process server implementing only that documented subset (no
//!   Confluent registry can be installed where these tests run);
//! - **the bytes**: [`AvroSerializer`] and [`AvroDeserializer`] produce and
//!   read exactly what confluent-kafka's Python `AvroSerializer` and
//!   `AvroDeserializer` do, both ways, byte for byte
//!   (`tests/it/confluent_wire.rs` runs them, via `CONFLUENT_PYTHON`).
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`wire`] | the framing: magic byte `0`, 4-byte big-endian schema id, body (sans-IO) |
//! | [`client`] | [`RegistryClient`]: register, by id, by subject and version, compatibility; id and schema caches |
//! | `connector` | the transport: TCP, then TLS (tokio-rustls) for `https://` |
//! | [`avro`] | [`AvroSerializer`] (registers on first use, `<topic>-value`), [`AvroDeserializer`] |
//! | [`guard`] | the bounded walk that vets hostile bytes before apache-avro decodes them (sans-IO) |
//! | [`error`] | [`RegistryError`], [`SerializeError`], [`DeserializeError`]; with feature `resilience`, both convert into `resilience::HandlerError` |
//!
//! ## In a handler
//!
//! ```no_run
//! use schema_registry::{AvroDeserializer, AvroSerializer, RegistryClient};
//! use schema_registry::apache_avro::types::Value;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! const ORDER: &str = r#"{"type":"record","name":"Order","fields":[
//!     {"name":"id","type":"string"},{"name":"price","type":"double"}]}"#;
//! let registry = RegistryClient::from_url("http://localhost:8081")?;
//! let ser = AvroSerializer::new(registry.clone(), ORDER)?;
//! let de = AvroDeserializer::new(registry);
//!
//! let order = Value::Record(vec![
//!     ("id".into(), Value::String("a".into())),
//!     ("price".into(), Value::Double(9.99)),
//! ]);
//! // Registers ORDER under "orders-value" on first use: 00 <id> 02 61 7b14ae47e1fa2340
//! let bytes = ser.serialize("orders", order).await?;
//! // In a resilience handler, `?` turns a bad payload into a dead-lettered record.
//! let back = de.deserialize(&bytes).await?;
//! # let _ = back; Ok(()) }
//! ```
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `resilience` | on | `From<DeserializeError>`/`From<SerializeError>` for `resilience::HandlerError`: a registry outage is retryable, everything else dead-letters at once |
//!
//! HTTPS: an `https://` URL is TLS with rustls on kafka-wire's graviola
//! provider (pure Rust), the registry's certificate checked against
//! `ssl.ca.location` or the Mozilla roots. Basic auth
//! (`basic.auth.user.info`) is refused over `http://` unless
//! [`RegistryConfig::insecure_allow_basic_auth_over_http`] says otherwise.

#![forbid(unsafe_code)]
#![warn(
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    unused_qualifications,
    clippy::dbg_macro,
    clippy::todo
)]

pub mod avro;
pub mod client;
mod connector;
pub mod error;
pub mod guard;
pub mod wire;

pub use apache_avro;
pub use avro::{AvroDeserializer, AvroSerializer, Part, SubjectNameStrategy};
pub use client::{RegistryClient, RegistryConfig, SubjectVersion, Version};
pub use error::{DeserializeError, RegistryError, SerializeError};

/// A schema's id in the registry: global, assigned at first registration,
/// never reused for another schema. On the wire, 4 bytes big-endian.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct SchemaId(pub u32);

impl std::fmt::Display for SchemaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
