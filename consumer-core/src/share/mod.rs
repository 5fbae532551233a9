//! Share groups (KIP-932; GA in Kafka 4.2): queue-like consumption.
//! Members of a share group read the same partitions; the broker hands
//! each record to one member at a time, under an acquisition lock, and
//! the member acknowledges it.
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | `config` | [`ShareConsumerConfig`]: Kafka property names (`share.acknowledgement.mode`, `share.acquire.mode`, `max.poll.records`, …) |
//! | `session` | one broker's share session: epochs 0 (open), 1.. , -1 (close); starting over (pure) |
//! | `acquired` | one partition of a ShareFetch answer → acquired offsets (record, GAP, or undecodable), and acknowledgement batches (pure) |
//! | `fetcher` | the share fetch path (pure): acquired records, their delivery counts and lock deadlines, acknowledgements, when a ShareFetch or ShareAcknowledge goes |
//! | `driver` | the thin task running the fetcher's actions (leaders, connections, requests) |
//! | `member` | the member task: the one group driver running the share protocol (`crate::group::share_protocol`), and the hand-over of its events to the fetch path |
//! | `probe` | does the cluster offer share groups? (else an error naming the broker version and the setting) |
//! | `consumer` | [`ShareConsumer`]: subscribe/assign, poll, acknowledge, commit, close |
//! | [`error`] | [`ShareError`] |
//!
//! ## The seam with membership
//!
//! Membership is the group driver's, as for every group protocol: a pure
//! share member (`group/share_protocol/member.rs`) heartbeats
//! (ShareGroupHeartbeat) and hands out the group's events. The fetch path
//! hears them through the member task: Assigned (fetch these too),
//! Revoked (stop fetching these; RELEASE their buffered records and send
//! every acknowledgement held for them; the driver waits until they are
//! answered before the heartbeat that ends the reconciliation), Lost (the
//! same, and the records the application holds are RELEASEd too: a
//! member that stopped polling for `max.poll.interval.ms` gives its
//! records back; but when the coordinator removed the member, fenced or
//! its `share.session.timeout.ms` run out with no heartbeat answered, the
//! broker has released those records already, so the fetch path forgets
//! them instead and acknowledges none on the stale membership), Fatal.
//! The member id is the consumer's own (generated
//! at start, KIP-932 v1) and given to both. `ShareConsumer::assign` sets
//! the whole assignment directly.
//!
//! ## Acknowledgement flow
//!
//! ```text
//!  poll() ─▶ implicit: ACCEPT the last poll's records; explicit: all acknowledged?
//!    │       every acknowledgement so far is released for sending
//!    ├─▶ ShareFetch per leader (the share session's epoch), released
//!    │   acknowledgements of that broker's partitions piggy-backed
//!    └─▶ up to max.poll.records acquired records, each with its delivery count
//!  acknowledge(record, ACCEPT | RELEASE | REJECT) ─▶ held until the next poll or commit
//!  acknowledge(record, RENEW) ─▶ ShareAcknowledge at once (v2); the lock restarts
//!  commit_sync()/commit_async() ─▶ ShareAcknowledge where no ShareFetch is due
//!  close() ─▶ ShareAcknowledge epoch -1 per session, then leave the group
//! ```

mod acquired;
mod config;
mod consumer;
mod driver;
pub mod error;
mod fetcher;
mod member;
mod probe;
mod session;

#[cfg(test)]
mod codec_tests;
#[cfg(test)]
mod tests;

use std::fmt;

use kafka_wire::records::Record;
use uuid::Uuid;

use crate::tp::TopicPartition;

pub use config::{
    AcknowledgementMode, AcquireMode, ShareConsumerConfig, ShareConsumerConfigBuilder,
};
pub use consumer::ShareConsumer;
pub use error::ShareError;

/// A partition and its topic's id: share requests name topics by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicIdPartition {
    pub topic_id: Uuid,
    pub tp: TopicPartition,
}

impl TopicIdPartition {
    pub fn new(topic_id: Uuid, tp: TopicPartition) -> Self {
        Self { topic_id, tp }
    }
}

impl fmt::Display for TopicIdPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.tp)
    }
}

/// How a record was handled (KIP-932; RENEW from KIP-1222).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AcknowledgeType {
    /// Processed: never delivered again.
    Accept,
    /// Not processed: delivered again (to any member), its delivery count
    /// up by one, until the group's delivery count limit
    /// (`group.share.delivery.count.limit`, default 5) archives it.
    Release,
    /// Unprocessable: archived, never delivered again.
    Reject,
    /// Still being processed: the acquisition lock starts again
    /// (`group.share.record.lock.duration.ms`); the record stays with the
    /// application, which acknowledges it later. Needs Kafka 4.2+
    /// (ShareAcknowledge v2) and the group config
    /// `share.renew.acknowledge.enable` (default true on Kafka 4.4).
    Renew,
}

impl AcknowledgeType {
    /// The wire value: 1 ACCEPT, 2 RELEASE, 3 REJECT, 4 RENEW (0 is GAP,
    /// which only this client sends, for offsets without a record).
    pub fn wire(self) -> i8 {
        match self {
            AcknowledgeType::Accept => 1,
            AcknowledgeType::Release => 2,
            AcknowledgeType::Reject => 3,
            AcknowledgeType::Renew => 4,
        }
    }
}

/// A record a share group delivered to this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    pub tp: TopicPartition,
    pub topic_id: Uuid,
    /// Offset, timestamp (ms), key, value, headers.
    pub record: Record,
    /// How many times the share group has delivered this record: 1 the
    /// first time, more after a RELEASE, a lock that ran out, or a member
    /// that left.
    pub delivery_count: u16,
}

impl ShareRecord {
    pub fn offset(&self) -> i64 {
        self.record.offset
    }
}

/// The broker's answer to acknowledgements of one type on one partition.
#[derive(Debug, Clone)]
pub struct AckOutcome {
    pub tp: TopicPartition,
    pub ack: AcknowledgeType,
    /// Ascending.
    pub offsets: Vec<i64>,
    /// `None`: applied. Otherwise why not: INVALID_RECORD_STATE (the lock
    /// ran out or the record was acknowledged already), a share session
    /// that ended, a lost connection; the records are then delivered
    /// again.
    pub error: Option<kafka_wire::Error>,
}
