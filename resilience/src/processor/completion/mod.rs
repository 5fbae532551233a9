//! The completion seam: where the runtime reports each finished record,
//! and what the group is told of it. A consumer group is told offsets
//! ([`offsets::Offsets`]: the offset tracker, committed by the commit
//! task); a share group (KIP-932) is told acknowledgements, one per
//! record. Each is one file here implementing [`Completion`].
//!
//! ```text
//!  Outcome     consumer group (offsets.rs)              share group
//!  Handled     completed: the commit point may pass it  ACCEPT
//!  Forwarded   completed (retry topic / DLT acked)      ACCEPT
//!  Rejected    (never: a consumer group forwards)       REJECT: the group's DLQ (KIP-1191)
//!  Released    not completed: read again from the       RELEASE: the broker delivers it
//!              committed offset by the next owner       again, delivery count + 1
//! ```
//!
//! The runtime owns one `Completion` per assigned partition and epoch,
//! behind its state lock. It calls it without awaiting: everything here is
//! pure bookkeeping; what goes out to the group (a commit, an
//! acknowledgement request) is the caller's task.

pub(crate) mod offsets;
pub(crate) mod share;

use kafka_wire::records::Record;

/// How a record's work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handler succeeded, or the idempotency store says it already did.
    Handled,
    /// Written to a retry topic or the DLT, and acknowledged.
    Forwarded,
    /// Failed for good, and left to the group's own dead-letter queue: a
    /// share group's REJECT where the broker's DLQ is configured
    /// (KIP-1191). A consumer group never rejects.
    Rejected,
    /// Not done here: its partition was revoked or the runtime is stopping,
    /// or the failure policy gave it back ([`Decision::Release`]). It is
    /// delivered again and never counted as done.
    ///
    /// [`Decision::Release`]: crate::failure::Decision::Release
    Released,
}

/// One partition's finished work, as its group is told of it (see the
/// module's table).
pub(crate) trait Completion: Send + 'static {
    /// What the group said was already done when it assigned the partition
    /// (a consumer group: the committed offset and its metadata), kept
    /// until the partition's first records arrive.
    type Loaded: Send + 'static;

    /// Whether a [`Outcome::Released`] record comes back to this group
    /// soon (a share group: the broker redelivers it). A consumer group's
    /// does not: only the partition's next owner reads it again. The
    /// failure policy decides [`Decision::Release`] only where this holds.
    ///
    /// [`Decision::Release`]: crate::failure::Decision::Release
    const REDELIVERS: bool;

    /// The completions of a partition in assignment epoch `epoch`, whose
    /// first record is at `start`.
    fn new(epoch: u64, start: i64, loaded: Option<Self::Loaded>) -> Self;

    /// A poll's records of this partition (in offset order), about to go
    /// to the lanes: note them, and take out those already done (they
    /// complete here, never handled again). Returns how many were taken.
    fn dispatched(&mut self, records: &mut Vec<Record>) -> u64;

    /// The record at `offset` ended as `outcome`.
    fn finished(&mut self, offset: i64, outcome: Outcome);

    /// The consumer's position moved to `next` past offsets that are not
    /// records (transaction markers, aborted data, compaction gaps).
    fn passed(&mut self, next: i64);

    /// Whether fetching must pause until the group is told more (a
    /// consumer group: the completed-offset map no longer fits the commit
    /// metadata).
    fn holds_fetching(&self) -> bool;

    /// The attempt the record at `offset` starts at: 1, or (a share
    /// group) its delivery count.
    fn attempt(&self, _offset: i64) -> u32 {
        1
    }
}
