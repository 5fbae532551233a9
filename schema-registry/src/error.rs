//! One error type per layer: the registry's REST API ([`RegistryError`]),
//! and the serdes on top ([`SerializeError`], [`DeserializeError`]).

use crate::guard::Corrupt;
use crate::wire::WireError;
use crate::SchemaId;

/// Error codes the Confluent schema registry puts in its error body
/// (`{"error_code": 40401, "message": "Subject 'x' not found."}`), as
/// documented for its REST API.
pub mod codes {
    /// The subject does not exist.
    pub const SUBJECT_NOT_FOUND: i32 = 40401;
    /// The subject exists, the version does not.
    pub const VERSION_NOT_FOUND: i32 = 40402;
    /// No schema has this id.
    pub const SCHEMA_NOT_FOUND: i32 = 40403;
    /// The schema is incompatible with the subject's earlier versions
    /// (the HTTP status is 409 too).
    pub const INCOMPATIBLE_SCHEMA: i32 = 409;
    /// The schema does not parse.
    pub const INVALID_SCHEMA: i32 = 42201;
    /// The version is neither a positive number nor `latest`.
    pub const INVALID_VERSION: i32 = 42202;
    /// The registry's backing store failed (HTTP 500).
    pub const BACKEND_STORE: i32 = 50001;
}

/// A call to the registry failed. `operation` names the REST call
/// (`"register"`, `"schema by id"`, …).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry answered with an error body: its `error_code` and
    /// `message`, verbatim (see [`codes`]).
    #[error("schema registry {operation}: HTTP {status}, error_code {error_code}: {message}")]
    Api {
        operation: &'static str,
        status: u16,
        error_code: i32,
        message: String,
    },
    /// A non-2xx answer without a registry error body (a proxy, a load
    /// balancer): the status and the start of the body.
    #[error("schema registry {operation}: HTTP {status}: {body}")]
    Http {
        operation: &'static str,
        status: u16,
        body: String,
    },
    /// Connecting, sending or reading failed, or the answer did not come
    /// within the request timeout. Worth retrying.
    #[error("schema registry {operation}: {reason}")]
    Transport {
        operation: &'static str,
        reason: String,
    },
    /// A 2xx answer whose body is not what the API documents.
    #[error("schema registry {operation}: unexpected answer: {reason}")]
    InvalidResponse {
        operation: &'static str,
        reason: String,
    },
    /// The client's configuration is unusable (no URL, an unknown
    /// property, Basic auth over `http://` without the insecure opt-in,
    /// credentials in a URL, an `ssl.*` file that cannot be read).
    #[error("schema registry config: {0}")]
    Config(String),
}

impl RegistryError {
    /// The registry's `error_code`, when it sent one.
    pub fn error_code(&self) -> Option<i32> {
        match self {
            RegistryError::Api { error_code, .. } => Some(*error_code),
            _ => None,
        }
    }

    /// Subject, version or schema not found (`404xx`).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.error_code(),
            Some(codes::SUBJECT_NOT_FOUND | codes::VERSION_NOT_FOUND | codes::SCHEMA_NOT_FOUND)
        )
    }

    /// Could the same call succeed later: transport failures, timeouts and
    /// 5xx answers. A 4xx answer will not change by itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Transport { .. } => true,
            RegistryError::Api { status, .. } | RegistryError::Http { status, .. } => {
                *status >= 500 || *status == 429
            }
            RegistryError::InvalidResponse { .. } | RegistryError::Config(_) => false,
        }
    }
}

/// A value could not be serialized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SerializeError {
    /// Registering or looking up the schema failed.
    #[error("subject {subject}: {source}")]
    Registry {
        subject: String,
        #[source]
        source: RegistryError,
    },
    /// The value does not match the schema (a missing field, a wrong type).
    #[error("value does not match the schema: {0}")]
    Schema(String),
}

impl SerializeError {
    /// Could serializing succeed later (the registry is unreachable)?
    pub fn is_retryable(&self) -> bool {
        matches!(self, SerializeError::Registry { source, .. } if source.is_retryable())
    }
}

/// A payload could not be deserialized. Apart from
/// [`Registry`](DeserializeError::Registry) with a retryable cause (the
/// registry is down), retrying cannot help: dead-letter the record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeserializeError {
    /// Not Confluent-framed: short, or the wrong magic byte.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The registry knows no schema with this id (`40403`).
    #[error("unknown schema id {id}: {source}")]
    UnknownSchema {
        id: SchemaId,
        #[source]
        source: RegistryError,
    },
    /// Fetching the writer schema failed for another reason.
    #[error("fetching schema id {id}: {source}")]
    Registry {
        id: SchemaId,
        #[source]
        source: RegistryError,
    },
    /// The registry's schema for this id is not a valid Avro schema.
    #[error("schema id {id} is not a valid Avro schema: {reason}")]
    WriterSchema { id: SchemaId, reason: String },
    /// The body is not a datum of its writer schema: cut short, lengths
    /// beyond the payload, bad UTF-8, a union branch or enum symbol that
    /// does not exist, too deep, or bytes left over.
    #[error("corrupt Avro body (schema id {id}): {source}")]
    Corrupt {
        id: SchemaId,
        #[source]
        source: Corrupt,
    },
    /// The datum decoded but does not fit the reader's schema or type.
    #[error("schema id {id}: does not fit the reader: {reason}")]
    Mismatch { id: SchemaId, reason: String },
}

impl DeserializeError {
    /// Only a registry that is down or overloaded; all else is permanent.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DeserializeError::Registry { source, .. } if source.is_retryable())
    }
}

#[cfg(feature = "resilience")]
mod handler_error {
    use super::{DeserializeError, SerializeError};
    use resilience::HandlerError;

    /// A registry outage is [`HandlerError::Retryable`] (the record is
    /// fine, it is tried again); every other failure is
    /// [`HandlerError::Deserialization`]: dead-lettered at once, like
    /// [`HandlerError::fatal`], with the cause as the DLT's exception
    /// message. A poison payload never blocks its partition.
    impl From<DeserializeError> for HandlerError {
        fn from(e: DeserializeError) -> Self {
            if e.is_retryable() {
                HandlerError::retryable(e)
            } else {
                HandlerError::Deserialization(e.to_string())
            }
        }
    }

    /// A registry outage is retryable; a value that does not match its
    /// schema is [`HandlerError::fatal`].
    impl From<SerializeError> for HandlerError {
        fn from(e: SerializeError) -> Self {
            if e.is_retryable() {
                HandlerError::retryable(e)
            } else {
                HandlerError::fatal(e)
            }
        }
    }
}
