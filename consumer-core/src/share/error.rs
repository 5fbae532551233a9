//! Share consumer errors, and what to do about each.

use kafka_wire::ErrorAction;

use crate::tp::TopicPartition;

/// Errors from the [`ShareConsumer`](super::ShareConsumer).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ShareError {
    /// From the protocol client: connection, broker code (the share-group
    /// codes among them: INVALID_RECORD_STATE, SHARE_SESSION_NOT_FOUND,
    /// INVALID_SHARE_SESSION_EPOCH, each with its hint), configuration.
    #[error(transparent)]
    Wire(#[from] kafka_wire::Error),
    /// The cluster has no share groups (KIP-932): `detail` names the
    /// broker's version and the setting or upgrade that brings them.
    #[error("share groups are not available on the broker at {broker}: {detail}")]
    Unsupported { broker: String, detail: String },
    /// `share.acknowledgement.mode=explicit` and the last poll's records
    /// are not all acknowledged; nothing was fetched.
    #[error(
        "{count} record(s) from the last poll are not acknowledged (the first: {tp} offset \
         {offset}); with share.acknowledgement.mode=explicit, acknowledge() every record \
         (ACCEPT, RELEASE or REJECT, or RENEW while still working on it) before polling again"
    )]
    Unacknowledged {
        count: usize,
        tp: TopicPartition,
        offset: i64,
    },
    /// An acknowledgement refused before it reached the broker.
    #[error("cannot acknowledge {tp} offset {offset}: {reason}")]
    InvalidAcknowledge {
        tp: TopicPartition,
        offset: i64,
        reason: String,
    },
    /// `commit_sync` gave up with acknowledgements still unanswered; they
    /// are still sent, and their outcomes come with the next call.
    #[error("{pending} acknowledgement(s) still unanswered after {timeout_ms} ms")]
    CommitTimeout { pending: usize, timeout_ms: u64 },
    /// The share group membership failed for good; the message says why
    /// and what to change.
    #[error("share group membership failed: {0}")]
    Membership(String),
    /// The share consumer was closed.
    #[error("the share consumer is closed")]
    Closed,
}

impl ShareError {
    /// What to do next.
    pub fn action(&self) -> ErrorAction {
        match self {
            ShareError::Wire(e) => e.action(),
            // Acknowledge the records, then poll again.
            ShareError::Unacknowledged { .. } => ErrorAction::Retry,
            ShareError::CommitTimeout { .. } => ErrorAction::Retry,
            ShareError::Unsupported { .. }
            | ShareError::InvalidAcknowledge { .. }
            | ShareError::Membership(_)
            | ShareError::Closed => ErrorAction::Fatal,
        }
    }
}

/// A `Result` with [`ShareError`].
pub type Result<T, E = ShareError> = std::result::Result<T, E>;
