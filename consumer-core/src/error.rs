//! Consumer errors.

use kafka_wire::ErrorAction;

use crate::share::ShareError;
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
    /// From the [`ShareConsumer`](crate::share::ShareConsumer), where
    /// [`ShareError`] has no consumer counterpart (unacknowledged records,
    /// a refused acknowledgement, share groups off on the cluster, …);
    /// its [`ShareError::action`] is kept. See the `From<ShareError>`
    /// impl.
    #[error(transparent)]
    Share(ShareError),
}

/// A [`ShareError`] as a [`ConsumerError`], so `?` works in code that uses
/// a [`Consumer`](crate::Consumer) and a
/// [`ShareConsumer`](crate::share::ShareConsumer) together. The variants
/// both have map onto each other ([`ShareError::Wire`] →
/// [`ConsumerError::Wire`], [`ShareError::Closed`] →
/// [`ConsumerError::Closed`]); every other one is wrapped in
/// [`ConsumerError::Share`]. [`ConsumerError::action`] is the share
/// error's own [`ShareError::action`] either way (a record left
/// unacknowledged stays `Retry`, share groups off stay `Fatal`).
impl From<ShareError> for ConsumerError {
    fn from(e: ShareError) -> Self {
        match e {
            ShareError::Wire(w) => ConsumerError::Wire(w),
            ShareError::Closed => ConsumerError::Closed,
            other => ConsumerError::Share(other),
        }
    }
}

impl ConsumerError {
    /// What to do next.
    pub fn action(&self) -> ErrorAction {
        match self {
            ConsumerError::Wire(e) => e.action(),
            ConsumerError::Unreachable { source, .. } => source.action(),
            ConsumerError::NotOwned { .. } => ErrorAction::Rejoin,
            ConsumerError::Share(e) => e.action(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `?` from share-consumer code into consumer code: the shared
    /// variants map across, the rest keep their own action.
    #[test]
    fn a_share_error_becomes_a_consumer_error_with_its_action() {
        fn mixed() -> Result<()> {
            Err(ShareError::Unacknowledged {
                count: 2,
                tp: TopicPartition::new("t", 0),
                offset: 7,
            })?;
            Ok(())
        }
        let e = mixed().unwrap_err();
        assert!(matches!(
            e,
            ConsumerError::Share(ShareError::Unacknowledged { .. })
        ));
        assert_eq!(e.action(), ErrorAction::Retry);
        assert!(e.to_string().contains("not acknowledged"), "{e}");

        let closed: ConsumerError = ShareError::Closed.into();
        assert!(matches!(closed, ConsumerError::Closed));
        let wire: ConsumerError = ShareError::Wire(kafka_wire::Error::Config("x".into())).into();
        assert!(matches!(wire, ConsumerError::Wire(_)));
        let off: ConsumerError = ShareError::Unsupported {
            broker: "b".into(),
            detail: "d".into(),
        }
        .into();
        assert_eq!(off.action(), ErrorAction::Fatal);
    }
}
