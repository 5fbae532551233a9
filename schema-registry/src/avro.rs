//! Avro serdes in the Confluent wire format, byte-compatible with
//! Confluent's `AvroSerializer` / `AvroDeserializer` (checked against
//! confluent-kafka's Python ones by `tests/it/confluent_wire.rs`).
//!
//! - [`AvroSerializer`]: one schema; registers it under the subject of
//!   [`SubjectNameStrategy`] on first use per topic (or only looks it up
//!   with `auto.register.schemas=false`), then frames each datum
//!   (`0x00`, id, Avro binary body).
//! - [`AvroDeserializer`]: any schema id; fetches the writer's schema once
//!   per id, checks the body with [`crate::guard`] (hostile bytes: no
//!   panic, allocation bounded by the payload's size), decodes, and
//!   optionally resolves to a reader schema.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apache_avro::types::Value;
use apache_avro::Schema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::RegistryClient;
use crate::error::{DeserializeError, RegistryError, SerializeError};
use crate::{guard, wire, SchemaId};

/// apache-avro's global cap on one allocation while decoding, set by the
/// first [`AvroDeserializer`] (apache-avro allows setting it once per
/// process; an application that set it earlier keeps its own). The guard
/// already refuses any length beyond the payload, so this is a second
/// line.
pub const MAX_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

/// Which half of a record a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Key,
    Value,
}

/// How a subject is named from the topic, as Confluent's serializers
/// (`key.subject.name.strategy` / `value.subject.name.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SubjectNameStrategy {
    /// `<topic>-key` / `<topic>-value`: Confluent's default.
    #[default]
    TopicName,
}

impl SubjectNameStrategy {
    /// The subject for `topic`'s `part`.
    pub fn subject(self, topic: &str, part: Part) -> String {
        match (self, part) {
            (SubjectNameStrategy::TopicName, Part::Key) => format!("{topic}-key"),
            (SubjectNameStrategy::TopicName, Part::Value) => format!("{topic}-value"),
        }
    }
}

/// Serializes values of one Avro schema, framed for the Confluent wire
/// format.
///
/// Settings by Confluent's property names ([`AvroSerializer::set`]):
/// `auto.register.schemas` (default `true`): on first use per subject,
/// `POST /subjects/{subject}/versions` (registers, or returns the id the
/// schema already has). With `false`, `GET
/// /subjects/{subject}/versions/latest` instead, whose schema must have
/// the same canonical form as ours, else [`SerializeError::Schema`].
#[derive(Debug)]
pub struct AvroSerializer {
    client: RegistryClient,
    schema: Schema,
    schema_text: String,
    part: Part,
    strategy: SubjectNameStrategy,
    auto_register: bool,
    ids: Mutex<HashMap<String, SchemaId>>,
}

impl AvroSerializer {
    /// A serializer of record values (`Part::Value`) of `schema`, an Avro
    /// schema in JSON.
    ///
    /// # Errors
    /// [`SerializeError::Schema`] when `schema` does not parse.
    pub fn new(client: RegistryClient, schema: &str) -> Result<Self, SerializeError> {
        let parsed = Schema::parse_str(schema)
            .map_err(|e| SerializeError::Schema(format!("invalid Avro schema: {e}")))?;
        Ok(Self {
            client,
            schema: parsed,
            schema_text: schema.to_string(),
            part: Part::Value,
            strategy: SubjectNameStrategy::TopicName,
            auto_register: true,
            ids: Mutex::new(HashMap::new()),
        })
    }

    /// Serialize keys instead of values (subject `<topic>-key`).
    pub fn for_keys(mut self) -> Self {
        self.part = Part::Key;
        self
    }

    /// One Confluent serializer property: `auto.register.schemas`
    /// (`true`/`false`, default `true`).
    ///
    /// # Errors
    /// [`RegistryError::Config`] for another property or a bad value.
    pub fn set(mut self, key: &str, value: &str) -> Result<Self, RegistryError> {
        match (key, value) {
            ("auto.register.schemas", "true") => self.auto_register = true,
            ("auto.register.schemas", "false") => self.auto_register = false,
            _ => {
                return Err(RegistryError::Config(format!(
                    "unsupported serializer property {key}={value:?}"
                )))
            }
        }
        Ok(self)
    }

    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The schema id for `topic`, registering on first use (see the type's
    /// doc); cached per subject.
    ///
    /// # Errors
    /// [`SerializeError::Registry`].
    pub async fn schema_id(&self, topic: &str) -> Result<SchemaId, SerializeError> {
        let subject = self.strategy.subject(topic, self.part);
        if let Some(id) = self.lock().get(&subject) {
            return Ok(*id);
        }
        let registry = |source| SerializeError::Registry {
            subject: subject.clone(),
            source,
        };
        let id = if self.auto_register {
            self.client
                .register(&subject, &self.schema_text)
                .await
                .map_err(registry)?
        } else {
            let latest = self
                .client
                .subject_version(&subject, crate::Version::Latest)
                .await
                .map_err(registry)?;
            let theirs = Schema::parse_str(&latest.schema).map_err(|e| {
                SerializeError::Schema(format!("{subject} latest schema does not parse: {e}"))
            })?;
            if theirs.canonical_form() != self.schema.canonical_form() {
                return Err(SerializeError::Schema(format!(
                    "auto.register.schemas=false and {subject}'s latest schema (id {}) differs",
                    latest.id
                )));
            }
            latest.id
        };
        self.lock().insert(subject, id);
        Ok(id)
    }

    /// Frame `value` for `topic`: `0x00`, schema id, Avro binary body.
    ///
    /// # Errors
    /// [`SerializeError::Schema`] when `value` does not match the schema;
    /// [`SerializeError::Registry`] when the id cannot be had.
    ///
    /// # Cancel safety
    /// Cancel safe (see [`RegistryClient::register`]).
    pub async fn serialize(&self, topic: &str, value: Value) -> Result<Vec<u8>, SerializeError> {
        let id = self.schema_id(topic).await?;
        self.serialize_with_id(id, value)
    }

    /// [`serialize`](Self::serialize) any `T: Serialize` (a struct whose
    /// fields match the record's, via apache-avro's serde support).
    ///
    /// # Errors
    /// As [`serialize`](Self::serialize).
    pub async fn serialize_ser<T: Serialize>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Vec<u8>, SerializeError> {
        let value =
            apache_avro::to_value(value).map_err(|e| SerializeError::Schema(e.to_string()))?;
        self.serialize(topic, value).await
    }

    /// Frame `value` under a known id, without the registry (sans-IO).
    ///
    /// # Errors
    /// [`SerializeError::Schema`] when `value` does not match the schema.
    pub fn serialize_with_id(&self, id: SchemaId, value: Value) -> Result<Vec<u8>, SerializeError> {
        // resolve() fits e.g. a Value::Record from serde (fields by name) or a
        // Long for an int field; to_avro_datum validates.
        let value = value
            .resolve(&self.schema)
            .map_err(|e| SerializeError::Schema(e.to_string()))?;
        let body = apache_avro::to_avro_datum(&self.schema, value)
            .map_err(|e| SerializeError::Schema(e.to_string()))?;
        Ok(wire::frame(id, &body))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SchemaId>> {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Deserializes Confluent-framed Avro payloads of any schema id.
#[derive(Debug)]
pub struct AvroDeserializer {
    client: RegistryClient,
    reader: Option<Schema>,
    schemas: Mutex<HashMap<SchemaId, Arc<Schema>>>,
}

impl AvroDeserializer {
    /// A deserializer that returns each datum as its writer wrote it.
    /// Sets apache-avro's [`MAX_ALLOCATION_BYTES`] (once per process).
    pub fn new(client: RegistryClient) -> Self {
        apache_avro::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        Self {
            client,
            reader: None,
            schemas: Mutex::new(HashMap::new()),
        }
    }

    /// Resolve every datum to `schema` (Avro schema resolution: fields
    /// added with defaults, removed, promoted), as Confluent's
    /// deserializer given a reader schema.
    ///
    /// # Errors
    /// `Err(reason)` when `schema` does not parse.
    pub fn with_reader_schema(mut self, schema: &str) -> Result<Self, String> {
        self.reader = Some(Schema::parse_str(schema).map_err(|e| e.to_string())?);
        Ok(self)
    }

    /// The writer's schema for `id`: cached, else fetched and parsed.
    ///
    /// # Errors
    /// [`DeserializeError::UnknownSchema`] (`40403`),
    /// [`DeserializeError::Registry`], [`DeserializeError::WriterSchema`].
    pub async fn writer_schema(&self, id: SchemaId) -> Result<Arc<Schema>, DeserializeError> {
        if let Some(s) = self.lock().get(&id) {
            return Ok(s.clone());
        }
        let text = self.client.schema_by_id(id).await.map_err(|source| {
            if source.is_not_found() {
                DeserializeError::UnknownSchema { id, source }
            } else {
                DeserializeError::Registry { id, source }
            }
        })?;
        let schema =
            Arc::new(
                Schema::parse_str(&text).map_err(|e| DeserializeError::WriterSchema {
                    id,
                    reason: e.to_string(),
                })?,
            );
        let mut cache = self.lock();
        if cache.len() >= crate::client::MAX_CACHED {
            cache.clear();
        }
        cache.insert(id, schema.clone());
        Ok(schema)
    }

    /// Decode one framed payload.
    ///
    /// # Errors
    /// [`DeserializeError::Wire`] (short, bad magic), `UnknownSchema`,
    /// `Registry`, `WriterSchema`, [`DeserializeError::Corrupt`] (the body
    /// is not one datum of the writer schema), `Mismatch` (reader schema
    /// resolution failed). Never panics on any input.
    ///
    /// # Cancel safety
    /// Cancel safe (reads only).
    pub async fn deserialize(&self, payload: &[u8]) -> Result<Value, DeserializeError> {
        let (id, body) = wire::split(payload)?;
        let writer = self.writer_schema(id).await?;
        decode(id, &writer, self.reader.as_ref(), body)
    }

    /// [`deserialize`](Self::deserialize) into any `T: DeserializeOwned`.
    ///
    /// # Errors
    /// As [`deserialize`](Self::deserialize); `Mismatch` when the value
    /// does not fit `T`.
    pub async fn deserialize_into<T: DeserializeOwned>(
        &self,
        payload: &[u8],
    ) -> Result<T, DeserializeError> {
        let (id, _) = wire::split(payload)?;
        let value = self.deserialize(payload).await?;
        apache_avro::from_value(&value).map_err(|e| DeserializeError::Mismatch {
            id,
            reason: e.to_string(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SchemaId, Arc<Schema>>> {
        self.schemas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Decode one Avro `body` written with `writer` (sans-IO): the guard
/// first, then apache-avro, then resolution to `reader` if given.
///
/// # Errors
/// [`DeserializeError::Corrupt`], [`DeserializeError::Mismatch`].
pub fn decode(
    id: SchemaId,
    writer: &Schema,
    reader: Option<&Schema>,
    body: &[u8],
) -> Result<Value, DeserializeError> {
    guard::check(writer, body).map_err(|source| DeserializeError::Corrupt { id, source })?;
    let mut rest = body;
    let value = apache_avro::from_avro_datum(writer, &mut rest, None).map_err(|e| {
        DeserializeError::Corrupt {
            id,
            source: guard::Corrupt {
                what: e.to_string(),
                offset: body.len() - rest.len(),
            },
        }
    })?;
    match reader {
        Some(reader) => value
            .resolve(reader)
            .map_err(|e| DeserializeError::Mismatch {
                id,
                reason: e.to_string(),
            }),
        None => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"price","type":"double"}]}"#;

    fn serializer() -> AvroSerializer {
        let client = RegistryClient::from_url("http://127.0.0.1:9").unwrap();
        AvroSerializer::new(client, ORDER).unwrap()
    }

    #[test]
    fn the_reference_order_bytes() {
        let v = Value::Record(vec![
            ("id".into(), Value::String("a".into())),
            ("price".into(), Value::Double(9.99)),
        ]);
        let bytes = serializer()
            .serialize_with_id(SchemaId(1), v.clone())
            .unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "000000000102617b14ae47e1fa2340");
        let schema = Schema::parse_str(ORDER).unwrap();
        assert_eq!(decode(SchemaId(1), &schema, None, &bytes[5..]).unwrap(), v);
    }

    #[test]
    fn a_value_that_does_not_fit_is_a_schema_error() {
        let v = Value::Record(vec![("id".into(), Value::String("a".into()))]);
        assert!(matches!(
            serializer().serialize_with_id(SchemaId(1), v),
            Err(SerializeError::Schema(_))
        ));
    }

    #[test]
    fn topic_name_strategy() {
        let s = SubjectNameStrategy::TopicName;
        assert_eq!(s.subject("orders", Part::Value), "orders-value");
        assert_eq!(s.subject("orders", Part::Key), "orders-key");
    }
}
