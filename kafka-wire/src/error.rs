//! Errors, and what to do about each one.
//!
//! Every [`Error`] answers [`Error::action`]: the one next step a caller should
//! take (retry, refresh metadata, find the coordinator, rejoin, abort the
//! transaction, reset the producer id, reconnect, or give up). Whether a
//! request *may have been written* is tracked separately by
//! [`Error::maybe_written`], because it is what makes a produce or commit
//! ambiguous.
//!
//! Transactional errors fall in KIP-1050's classes, each one action:
//!
//! | KIP-1050 class | [`ErrorAction`] | transactional codes |
//! |---|---|---|
//! | retriable | `Retry`, `Reconnect` | CONCURRENT_TRANSACTIONS, COORDINATOR_LOAD_IN_PROGRESS, NOT_ENOUGH_REPLICAS(_AFTER_APPEND), REQUEST_TIMED_OUT, NETWORK_EXCEPTION |
//! | refresh-retriable | `FindCoordinatorAndRetry`, `RefreshMetadataAndRetry` | NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE; NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION |
//! | abortable | `AbortTransaction` | TRANSACTION_ABORTABLE (120) |
//! | application-recoverable | `ResetProducerId` | PRODUCER_FENCED, INVALID_PRODUCER_EPOCH, INVALID_PRODUCER_ID_MAPPING, UNKNOWN_PRODUCER_ID, OUT_OF_ORDER_SEQUENCE_NUMBER |
//! | fatal | `Fatal` | TRANSACTIONAL_ID_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED, INVALID_TXN_STATE, UNSUPPORTED_VERSION, UNSUPPORTED_FOR_MESSAGE_FORMAT, TRANSACTION_COORDINATOR_FENCED |
//!
//! The producer retries the first two classes itself (a coordinator
//! request for up to 30 s, a record until `delivery.timeout.ms`); what
//! reaches the caller is the rest. Inside a transaction the producer also
//! decides the transaction's fate: fencing (PRODUCER_FENCED,
//! INVALID_PRODUCER_EPOCH, INVALID_PRODUCER_ID_MAPPING) and
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED leave the producer unusable, and
//! its calls fail with [`Error::Transaction`] saying so; any other failure
//! of a record, the partitions or the offsets, and TRANSACTION_ABORTABLE
//! wherever it comes from, leaves the transaction abortable: only
//! `abort_transaction` is allowed (DESIGN.md, "Transactions V2", says
//! what the exactly-once processor does with each).

use std::fmt;

pub use kafka_protocol::error::ResponseError as KafkaCode;
use kafka_protocol::messages::ApiKey;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller should do next about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Try the same request again after a backoff.
    Retry,
    /// Refresh metadata (leader moved, topic unknown), then retry.
    RefreshMetadataAndRetry,
    /// Find the group or transaction coordinator again, then retry.
    FindCoordinatorAndRetry,
    /// The group moved on: rejoin before committing or fetching for it.
    Rejoin,
    /// The open transaction cannot commit: abort it, then do its work again
    /// in a new one (KIP-1050's abortable: TRANSACTION_ABORTABLE). The
    /// producer stays usable; an abort that fails this way is tried again.
    AbortTransaction,
    /// The producer's id or epoch is no longer valid: get a new one. An
    /// idempotent producer does it itself. A transactional one is
    /// unusable (KIP-1050's application-recoverable: fenced by a newer
    /// instance with its `transactional.id`, or its producer id expired):
    /// drop it, and build a new one only if this instance still owns the
    /// work (its consumer group says so).
    ResetProducerId,
    /// The connection is gone: reconnect (with backoff), then retry.
    Reconnect,
    /// Not recoverable by retrying: fix configuration, permissions or code.
    Fatal,
}

/// Why decoding bytes from the network failed. Bytes from the network are
/// hostile: every malformed input maps to one of these, never to a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("frame length {0} is negative")]
    NegativeLength(i64),
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("input ended early: needed {needed} more bytes while reading {what}")]
    Truncated { what: &'static str, needed: usize },
    #[error("malformed varint while reading {0}")]
    Varint(&'static str),
    #[error("CRC mismatch: batch says {expected:#010x}, bytes give {actual:#010x}")]
    Crc { expected: u32, actual: u32 },
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    Magic(i8),
    #[error("unknown compression codec id {0}")]
    UnknownCodec(u8),
    /// The batch is compressed with a codec whose cargo feature this build
    /// of `kafka-wire` left out (the name is the codec's and the feature's).
    #[error("records are compressed with {0}, but kafka-wire was built without its `{0}` feature: enable it (it is on by default)")]
    CodecNotBuilt(&'static str),
    #[error("{codec} payload is corrupt: {reason}")]
    Decompress { codec: &'static str, reason: String },
    #[error(
        "{codec} payload decompresses past the {limit}-byte ceiling (possible compression bomb)"
    )]
    DecompressLimit { codec: &'static str, limit: usize },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// The first bytes are a TLS record (an alert or a handshake), not a
    /// Kafka frame: a plaintext client reached a TLS listener.
    #[error(
        "the server is speaking TLS, not plaintext Kafka (set security.protocol=SSL, or SASL_SSL)"
    )]
    Tls,
    /// The first bytes are an HTTP response: the address is not a Kafka
    /// broker (a web server, a proxy, a console or a schema registry).
    #[error("the server is not a Kafka broker (it answered HTTP: {0:?}); check bootstrap.servers")]
    Http(String),
}

/// Errors from this crate. `Clone`, because one failure completes every
/// record of a batch.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Could not connect, or the connection broke. Everything in flight on it
    /// failed with this error; whether each request reached the broker is
    /// unknown (see [`Error::maybe_written`]).
    #[error("connection to {broker} failed: {reason}")]
    Connection {
        broker: String,
        reason: String,
        /// True when the request may have been sent before the failure.
        maybe_written: bool,
    },
    /// No response within the request timeout; the connection was dropped.
    #[error("{api:?} to {broker} timed out after {timeout_ms} ms")]
    Timeout {
        api: ApiKey,
        broker: String,
        timeout_ms: u64,
    },
    /// TLS set-up or verification failed. Not retried: fix the certificates.
    #[error("TLS with {broker} failed: {reason}")]
    Tls { broker: String, reason: String },
    /// Authentication failed. Not retried: fix the credentials or mechanism.
    #[error("SASL {mechanism} authentication with {broker} failed: {reason}")]
    Auth {
        mechanism: String,
        broker: String,
        reason: String,
    },
    /// The broker answered with an error code (and, in the responses that
    /// carry one, its own message, which usually names the exact cause).
    #[error("{api:?} failed{}: {code} ({}){}", scope_suffix(topic, *partition), code_hint(code), message_suffix(message))]
    Broker {
        api: ApiKey,
        code: KafkaCode,
        topic: Option<String>,
        /// `None` (or a negative number) for a topic-wide error.
        partition: Option<i32>,
        /// The broker's `error_message`, when the response has one.
        message: Option<String>,
    },
    /// An admin request the broker refused, with the broker's own
    /// explanation when it sent one (CreatePartitions: "Topic currently has
    /// 3 partitions, which is higher than the requested 2.").
    #[error("{api:?} for {resource} failed: {code}{}", refusal_suffix(message))]
    Refused {
        api: ApiKey,
        code: KafkaCode,
        /// The topic (or other resource) the request was about.
        resource: String,
        /// The broker's `error_message`, if any.
        message: Option<String>,
    },
    /// The broker does not support any version of an API that we can speak.
    #[error("the broker at {broker} supports no version of {api:?} this client speaks (we speak {ours}, it speaks {theirs})")]
    UnsupportedVersion {
        api: ApiKey,
        broker: String,
        ours: String,
        theirs: String,
    },
    /// Bytes from the network could not be decoded.
    #[error("could not decode {context}: {source}")]
    Decode {
        context: String,
        #[source]
        source: DecodeError,
    },
    /// A record batch failed validation; it is never delivered.
    #[error("corrupt record batch in {topic}-{partition} at offset {offset}: {source}")]
    CorruptBatch {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: DecodeError,
    },
    /// The request could not be encoded (a bug or an invalid argument).
    #[error("could not encode {api:?}: {reason}")]
    Encode { api: ApiKey, reason: String },
    /// A record was not acknowledged within `delivery.timeout.ms`. With
    /// `maybe_written`, it was sent and may be in the log: the outcome is
    /// ambiguous, not failed.
    #[error("delivery to {topic}-{partition} timed out after {timeout_ms} ms{}", if *maybe_written { " (it was sent and may have been written)" } else { " (never sent)" })]
    DeliveryTimeout {
        topic: String,
        partition: i32,
        timeout_ms: u64,
        maybe_written: bool,
    },
    /// A record is larger than `max.request.size` or `buffer.memory`.
    #[error("record of {size} bytes exceeds {limit_name}={limit}")]
    RecordTooLarge {
        size: usize,
        limit_name: &'static str,
        limit: usize,
    },
    /// The broker refused a record as too large even alone in its batch:
    /// batches holding more records were split until this one stood alone
    /// (as Java's producer does). `size` is the encoded one-record batch,
    /// the figure the broker compares with its limit: the topic's
    /// `max.message.bytes` (default the broker's `message.max.bytes`, 1 MiB)
    /// for MESSAGE_TOO_LARGE, its `segment.bytes` for RECORD_LIST_TOO_LARGE.
    /// Not retriable. Only this record fails: the partition's other records
    /// are delivered, in order, and the producer stays usable (in a
    /// transaction, the transaction must be aborted).
    #[error("record for {topic}-{partition} is too large for the broker: {size} bytes as a batch of one ({code}); the limit is {}", broker_limit_name(code))]
    RecordTooLargeForBroker {
        topic: String,
        partition: i32,
        size: usize,
        code: KafkaCode,
    },
    /// A transactional call out of order, or on a failed transaction; the
    /// message says which call is allowed next.
    #[error("transaction: {0}")]
    Transaction(String),
    /// Invalid configuration; the message names the key.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Metadata has no answer (topic or partition or broker unknown).
    #[error("metadata: {0}")]
    Metadata(String),
    /// The client was shut down.
    #[error("the client is closed")]
    Closed,
    /// Records [`Producer::flush`](crate::Producer::flush) waited for and
    /// could not deliver, each with its own error (and action): send them
    /// again, or give up on them. So that `flush().await?` works in a
    /// function returning this crate's [`Result`].
    #[error(transparent)]
    Undelivered(Box<crate::producer::Undelivered>),
}

fn scope_suffix(topic: &Option<String>, partition: Option<i32>) -> String {
    match (topic, partition) {
        // -1 is "no partition" on the wire: never print `topic--1`.
        (Some(t), Some(p)) if p >= 0 => format!(" for {t}-{p}"),
        (Some(t), _) => format!(" for {t}"),
        _ => String::new(),
    }
}

fn message_suffix(message: &Option<String>) -> String {
    match message.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() => format!("; the broker says: {m}"),
        _ => String::new(),
    }
}

fn broker_limit_name(code: &KafkaCode) -> &'static str {
    match code {
        KafkaCode::RecordListTooLarge => {
            "the topic's segment.bytes (default the broker's log.segment.bytes)"
        }
        _ => "the topic's max.message.bytes (default the broker's message.max.bytes)",
    }
}

fn refusal_suffix(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

fn code_hint(code: &KafkaCode) -> &'static str {
    // Codes whose usual cause is not what the generic action suggests.
    match code {
        KafkaCode::UnknownTopicOrPartition => {
            return "the topic or partition does not exist: create it or check the name; \
                    a topic created a moment ago may not be known to every broker yet"
        }
        KafkaCode::TopicAuthorizationFailed => {
            return "not allowed to access the topic: check the ACLs of this principal"
        }
        KafkaCode::GroupAuthorizationFailed => {
            return "not allowed to use the group: check the ACLs of this principal"
        }
        KafkaCode::GroupIdNotFound => return "the group does not exist",
        KafkaCode::UnknownTopicId => {
            return "the broker knows no topic with this id: the topic was deleted (or deleted \
                    and recreated under a new id), or the broker has not learned of it yet; \
                    refresh metadata: a recreated topic is read under its new id"
        }
        KafkaCode::InconsistentTopicId => {
            return "the partition's log belongs to another topic id than the one asked for: \
                    the topic was recreated; refresh metadata and retry under the new id"
        }
        KafkaCode::InvalidRecordState => {
            return "the record is no longer acquired by this share consumer (its acquisition \
                    lock, group.share.record.lock.duration.ms, expired, or it was acknowledged \
                    already): this acknowledgement is lost and the record is delivered again; \
                    acknowledge sooner, or RENEW the lock while processing"
        }
        KafkaCode::ShareSessionNotFound | KafkaCode::InvalidShareSessionEpoch => {
            return "the broker's share session for this member is gone or out of step: the \
                    share consumer opens a new one (epoch 0), and the records it had acquired \
                    are delivered again"
        }
        KafkaCode::ShareSessionLimitReached => {
            return "the broker holds group.share.max.share.sessions share sessions already: \
                    retry later, or raise that broker setting"
        }
        KafkaCode::TransactionAbortable => {
            return "the transaction cannot commit (KIP-890): abort it and do its work again in \
                    a new transaction; the producer stays usable"
        }
        KafkaCode::ProducerFenced => {
            return "another producer with this transactional.id started (or this one's \
                    transaction outlived transaction.timeout.ms): this producer is unusable; \
                    drop it"
        }
        KafkaCode::RebootstrapRequired => {
            return "the broker says this client's metadata is stale: ask bootstrap.servers \
                    again (metadata.recovery.strategy=rebootstrap does it at the next refresh)"
        }
        _ => {}
    }
    match action_for_code(*code) {
        ErrorAction::Retry => "retriable",
        ErrorAction::RefreshMetadataAndRetry => "refresh metadata and retry",
        ErrorAction::FindCoordinatorAndRetry => "find the coordinator and retry",
        ErrorAction::Rejoin => "rejoin the group",
        ErrorAction::AbortTransaction => "abort the transaction and retry its work",
        ErrorAction::ResetProducerId => "reset the producer id",
        ErrorAction::Reconnect => "reconnect",
        ErrorAction::Fatal => "not retriable",
    }
}

/// The reaction to a Kafka error code. One table, used by every layer.
pub(crate) fn action_for_code(code: KafkaCode) -> ErrorAction {
    use KafkaCode as C;
    match code {
        C::NotLeaderOrFollower
        | C::UnknownTopicOrPartition
        | C::LeaderNotAvailable
        | C::FencedLeaderEpoch
        | C::UnknownLeaderEpoch
        | C::KafkaStorageError
        | C::ReplicaNotAvailable
        | C::OffsetNotAvailable
        | C::UnknownTopicId
        | C::InconsistentTopicId
        // KIP-516: a fetch session mixed topic ids and names; the next
        // fetch starts a new one, by what the refreshed metadata says.
        | C::FetchSessionTopicIdError
        | C::NotController => ErrorAction::RefreshMetadataAndRetry,
        // KIP-1102. Not retriable by the protocol's table, but the refresh
        // is the cure: under metadata.recovery.strategy=rebootstrap it asks
        // the bootstrap addresses (client.rs, `recovery`).
        C::RebootstrapRequired => ErrorAction::RefreshMetadataAndRetry,
        C::NotCoordinator | C::CoordinatorNotAvailable => ErrorAction::FindCoordinatorAndRetry,
        C::IllegalGeneration
        | C::UnknownMemberId
        | C::RebalanceInProgress
        | C::MemberIdRequired
        | C::StaleMemberEpoch
        | C::FencedMemberEpoch => ErrorAction::Rejoin,
        // KIP-1050's application-recoverable (ProducerFenced among them):
        // this producer id or epoch is done; an idempotent producer takes a
        // new one itself, a transactional one is unusable.
        C::UnknownProducerId
        | C::InvalidProducerEpoch
        | C::OutOfOrderSequenceNumber
        | C::InvalidProducerIdMapping
        | C::ProducerFenced => ErrorAction::ResetProducerId,
        // KIP-890/KIP-1050's abortable: not retriable by the protocol's
        // table, but not fatal either.
        C::TransactionAbortable => ErrorAction::AbortTransaction,
        C::NetworkException => ErrorAction::Reconnect,
        // Not marked retriable by the protocol, but every client retries it:
        // the coordinator is still finishing the previous transaction.
        C::ConcurrentTransactions => ErrorAction::Retry,
        C::TransactionalIdAuthorizationFailed
        | C::FencedInstanceId
        | C::GroupMaxSizeReached => ErrorAction::Fatal,
        // KIP-932. A share session out of step or evicted: start a new one
        // (epoch 0) and fetch again; the broker releases what the old one
        // had acquired. A full session cache clears as members leave.
        C::ShareSessionNotFound
        | C::InvalidShareSessionEpoch
        | C::ShareSessionLimitReached => ErrorAction::Retry,
        // An acknowledgement of a record no longer acquired (lock expired,
        // acknowledged already): sending it again cannot succeed; the record
        // is redelivered.
        C::InvalidRecordState => ErrorAction::Fatal,
        other if other.is_retriable() => ErrorAction::Retry,
        _ => ErrorAction::Fatal,
    }
}

impl Error {
    /// What the caller should do next.
    pub fn action(&self) -> ErrorAction {
        match self {
            Error::Connection { .. } | Error::Timeout { .. } => ErrorAction::Reconnect,
            Error::Broker { code, .. } | Error::Refused { code, .. } => action_for_code(*code),
            Error::Metadata(_) => ErrorAction::RefreshMetadataAndRetry,
            // A corrupt batch can be a transient network corruption: refetch.
            Error::CorruptBatch { .. } => ErrorAction::Retry,
            Error::Decode { .. } => ErrorAction::Reconnect,
            Error::DeliveryTimeout { .. } => ErrorAction::Retry,
            Error::Tls { .. }
            | Error::RecordTooLarge { .. }
            | Error::RecordTooLargeForBroker { .. }
            | Error::Transaction(_)
            | Error::Auth { .. }
            | Error::UnsupportedVersion { .. }
            | Error::Encode { .. }
            | Error::Config(_)
            | Error::Closed => ErrorAction::Fatal,
            // Flushing again delivers nothing: the records are in it.
            Error::Undelivered(_) => ErrorAction::Fatal,
        }
    }

    /// Is retrying (after the action's preparation) worthwhile?
    pub fn is_retriable(&self) -> bool {
        self.action() != ErrorAction::Fatal
    }

    /// May the request have reached the broker? True for connection losses
    /// and timeouts after the frame was handed to the socket: the outcome of
    /// a produce or commit is then unknown ("ambiguous"), not failed.
    pub fn maybe_written(&self) -> bool {
        match self {
            Error::Connection { maybe_written, .. } => *maybe_written,
            Error::Timeout { .. } => true,
            Error::DeliveryTimeout { maybe_written, .. } => *maybe_written,
            _ => false,
        }
    }

    /// The Kafka error code, if the broker sent one.
    pub fn code(&self) -> Option<KafkaCode> {
        match self {
            Error::Broker { code, .. }
            | Error::RecordTooLargeForBroker { code, .. }
            | Error::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A broker error code without a topic or partition scope.
    pub fn broker(api: ApiKey, code: KafkaCode) -> Self {
        Error::Broker {
            api,
            code,
            topic: None,
            partition: None,
            message: None,
        }
    }

    /// This error with the broker's own message attached (for
    /// [`Error::Broker`]; other errors are returned as they are). An empty
    /// or missing message changes nothing.
    pub fn with_message(mut self, msg: Option<&str>) -> Self {
        if let Error::Broker { message, .. } = &mut self {
            if let Some(m) = msg.map(str::trim).filter(|m| !m.is_empty()) {
                *message = Some(m.to_string());
            }
        }
        self
    }

    /// A broker error code with the broker's own message (from the
    /// response's `error_message`; empty or missing is `None`).
    pub fn broker_with_message(
        api: ApiKey,
        code: KafkaCode,
        topic: Option<&str>,
        message: Option<&str>,
    ) -> Self {
        Error::Broker {
            api,
            code,
            topic: topic.map(str::to_string),
            partition: None,
            message: message
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string),
        }
    }

    /// A broker error code scoped to a topic-partition.
    pub fn broker_for(api: ApiKey, code: KafkaCode, topic: &str, partition: i32) -> Self {
        Error::Broker {
            api,
            code,
            topic: Some(topic.to_string()),
            partition: Some(partition),
            message: None,
        }
    }
}

/// Turn a Kafka error code into `Ok(())` or an [`Error::Broker`].
pub(crate) fn check_code(api: ApiKey, code: i16) -> Result<()> {
    match KafkaCode::try_from_code(code) {
        None => Ok(()),
        Some(code) => Err(Error::broker(api, code)),
    }
}

impl From<crate::producer::Undelivered> for Error {
    fn from(u: crate::producer::Undelivered) -> Self {
        Error::Undelivered(Box::new(u))
    }
}

impl fmt::Display for ErrorAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_wide_error_never_prints_partition_minus_one() {
        let e = Error::broker_for(
            ApiKey::ListOffsets,
            KafkaCode::UnknownTopicOrPartition,
            "t",
            -1,
        );
        let text = e.to_string();
        assert!(text.contains("for t:"), "{text}");
        assert!(!text.contains("t--1"), "{text}");
        assert!(text.contains("does not exist"), "{text}");
        assert!(!text.contains("refresh metadata"), "{text}");
    }

    #[test]
    fn the_brokers_own_message_is_shown_next_to_the_code() {
        let e = Error::broker_with_message(
            ApiKey::CreateTopics,
            KafkaCode::InvalidReplicationFactor,
            Some("t"),
            Some("Unable to replicate the partition 3 time(s)"),
        );
        let text = e.to_string();
        assert!(text.contains("InvalidReplicationFactor"), "{text}");
        assert!(
            text.contains("the broker says: Unable to replicate"),
            "{text}"
        );
        let plain =
            Error::broker(ApiKey::Produce, KafkaCode::InvalidRecord).with_message(Some(" "));
        assert!(!plain.to_string().contains("the broker says"), "{plain}");
    }

    #[test]
    fn topic_id_errors_refresh_metadata_and_say_why() {
        for code in [
            KafkaCode::UnknownTopicId,
            KafkaCode::InconsistentTopicId,
            KafkaCode::FetchSessionTopicIdError,
        ] {
            assert_eq!(
                action_for_code(code),
                ErrorAction::RefreshMetadataAndRetry,
                "{code:?}"
            );
        }
        let e = Error::broker_for(ApiKey::Fetch, KafkaCode::UnknownTopicId, "t", 0);
        let text = e.to_string();
        assert!(text.contains("for t-0"), "{text}");
        assert!(text.contains("deleted"), "{text}");
    }

    #[test]
    fn every_code_has_one_action_and_group_codes_rejoin() {
        for code in -1i16..=130 {
            let Some(c) = KafkaCode::try_from_code(code) else {
                continue;
            };
            let _ = action_for_code(c); // exhaustive: never panics
        }
        assert_eq!(
            action_for_code(KafkaCode::IllegalGeneration),
            ErrorAction::Rejoin
        );
        assert_eq!(
            action_for_code(KafkaCode::NotCoordinator),
            ErrorAction::FindCoordinatorAndRetry
        );
        assert_eq!(
            action_for_code(KafkaCode::NotLeaderOrFollower),
            ErrorAction::RefreshMetadataAndRetry
        );
        assert_eq!(
            action_for_code(KafkaCode::FencedInstanceId),
            ErrorAction::Fatal
        );
        assert_eq!(
            action_for_code(KafkaCode::RequestTimedOut),
            ErrorAction::Retry
        );
        assert_eq!(
            action_for_code(KafkaCode::RebootstrapRequired),
            ErrorAction::RefreshMetadataAndRetry,
            "KIP-1102: the refresh rebootstraps"
        );
        assert_eq!(KafkaCode::RebootstrapRequired.code(), 129);
    }

    /// KIP-1050's classes for every error a transactional request can
    /// answer: one action each (the module docs' table).
    #[test]
    fn every_transactional_code_has_its_kip_1050_class() {
        use ErrorAction as A;
        use KafkaCode as C;
        let table = [
            // retriable
            (C::ConcurrentTransactions, A::Retry),
            (C::CoordinatorLoadInProgress, A::Retry),
            (C::NotEnoughReplicas, A::Retry),
            (C::NotEnoughReplicasAfterAppend, A::Retry),
            (C::RequestTimedOut, A::Retry),
            (C::NetworkException, A::Reconnect),
            // refresh-retriable
            (C::NotCoordinator, A::FindCoordinatorAndRetry),
            (C::CoordinatorNotAvailable, A::FindCoordinatorAndRetry),
            (C::NotLeaderOrFollower, A::RefreshMetadataAndRetry),
            (C::UnknownTopicOrPartition, A::RefreshMetadataAndRetry),
            // abortable
            (C::TransactionAbortable, A::AbortTransaction),
            // application-recoverable
            (C::ProducerFenced, A::ResetProducerId),
            (C::InvalidProducerEpoch, A::ResetProducerId),
            (C::InvalidProducerIdMapping, A::ResetProducerId),
            (C::UnknownProducerId, A::ResetProducerId),
            (C::OutOfOrderSequenceNumber, A::ResetProducerId),
            // fatal
            (C::TransactionalIdAuthorizationFailed, A::Fatal),
            (C::ClusterAuthorizationFailed, A::Fatal),
            (C::InvalidTxnState, A::Fatal),
            (C::UnsupportedVersion, A::Fatal),
            (C::UnsupportedForMessageFormat, A::Fatal),
            (C::TransactionCoordinatorFenced, A::Fatal),
        ];
        for (code, action) in table {
            assert_eq!(action_for_code(code), action, "{code:?}");
        }
        assert_eq!(C::TransactionAbortable.code(), 120);
        let e = Error::broker(ApiKey::EndTxn, C::TransactionAbortable);
        assert!(e.is_retriable(), "abortable is not fatal");
        assert!(e.to_string().contains("abort it"), "{e}");
        let e = Error::broker(ApiKey::Produce, C::ProducerFenced);
        assert!(e.to_string().contains("drop it"), "{e}");
    }

    #[test]
    fn share_group_codes_say_what_happens_to_the_records() {
        for code in [
            KafkaCode::ShareSessionNotFound,
            KafkaCode::InvalidShareSessionEpoch,
            KafkaCode::ShareSessionLimitReached,
        ] {
            assert_eq!(action_for_code(code), ErrorAction::Retry, "{code:?}");
        }
        assert_eq!(
            action_for_code(KafkaCode::InvalidRecordState),
            ErrorAction::Fatal,
            "resending an acknowledgement of a released record cannot succeed"
        );
        let e = Error::broker_for(
            ApiKey::ShareAcknowledge,
            KafkaCode::InvalidRecordState,
            "t",
            0,
        );
        let text = e.to_string();
        assert!(
            text.contains("group.share.record.lock.duration.ms"),
            "{text}"
        );
        assert!(text.contains("delivered again"), "{text}");
        let e = Error::broker(ApiKey::ShareFetch, KafkaCode::InvalidShareSessionEpoch);
        assert!(e.to_string().contains("new one (epoch 0)"), "{e}");
    }

    #[test]
    fn messages_name_scope_and_next_step() {
        let e = Error::broker_for(ApiKey::Produce, KafkaCode::NotLeaderOrFollower, "orders", 3);
        let text = e.to_string();
        assert!(text.contains("orders-3"), "{text}");
        assert!(text.contains("refresh metadata"), "{text}");
    }
}
