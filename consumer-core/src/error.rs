//! Consumer errors.

use kafka_wire::ErrorAction;

use crate::tp::TopicPartition;

/// Errors from the consumer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// From the protocol client (connection, broker code, corrupt batch, …).
    #[error(transparent)]
    Wire(#[from] kafka_wire::Error),
    /// `auto.offset.reset=none` and there is no valid offset to start from.
    #[error("no valid offset for {tp} ({reason}) and auto.offset.reset=none; seek() to a position or set auto.offset.reset")]
    NoOffset { tp: TopicPartition, reason: String },
    /// A commit for a partition this member does not own in the current
    /// generation; refused before it reached the broker.
    #[error("refusing to commit {tp}: not owned by this member in the current generation ({generation}); it was revoked or lost in a rebalance")]
    NotOwned { tp: TopicPartition, generation: i32 },
    /// The group membership failed for good (fenced, group full, …).
    #[error("group membership failed: {0}")]
    Fatal(String),
    /// An operation that needs a `group.id` (subscribe, commit) without one.
    #[error("{0} needs group.id")]
    NoGroup(&'static str),
    /// The consumer was closed.
    #[error("the consumer is closed")]
    Closed,
    /// The cluster could not be reached within a start-up deadline
    /// (`resilience`'s `startup_timeout`); `source` is the last failure,
    /// which names the address tried.
    #[error(
        "{what} could not reach the Kafka cluster in {waited_ms} ms ({attempts} attempts): \
         {source}. Check bootstrap.servers (host and port), that the brokers are up, and that \
         the addresses they advertise (advertised.listeners) are reachable from here"
    )]
    Unreachable {
        /// Which client: `consumer`, `dead-letter producer`, …
        what: String,
        /// Connection attempts made.
        attempts: u32,
        /// Time spent trying (ms).
        waited_ms: u64,
        /// The last failure.
        source: Box<ConsumerError>,
    },
}

impl ConsumerError {
    /// What to do next.
    pub fn action(&self) -> ErrorAction {
        match self {
            ConsumerError::Wire(e) => e.action(),
            ConsumerError::Unreachable { source, .. } => source.action(),
            ConsumerError::NotOwned { .. } => ErrorAction::Rejoin,
            ConsumerError::NoOffset { .. }
            | ConsumerError::Fatal(_)
            | ConsumerError::NoGroup(_)
            | ConsumerError::Closed => ErrorAction::Fatal,
        }
    }

    /// Is retrying (after the action's preparation) worthwhile?
    pub fn is_retriable(&self) -> bool {
        self.action() != ErrorAction::Fatal
    }
}

/// A `Result` with [`ConsumerError`].
pub type Result<T, E = ConsumerError> = std::result::Result<T, E>;
