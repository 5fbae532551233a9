//! [`Snapshot`]: what a running processor holds and how far behind it is,
//! as of one moment, for a status line, a health endpoint or a test.
//!
//! The poll task publishes one at most every [`SNAPSHOT_INTERVAL`] (and a
//! last one after the shutdown's final commit) into a `tokio::sync::watch`
//! channel; [`Processor::snapshots`](crate::Processor::snapshots) hands out
//! receivers. Reading one never touches the runtime's lock. The same
//! numbers go to the metrics (see the module docs of
//! [`observe`](crate::observe)); the snapshot is for code in the same
//! process that wants them without installing a recorder.
//!
//! ```no_run
//! # async fn show(p: &resilience::Processor) {
//! let mut snapshots = p.snapshots();
//! while snapshots.changed().await.is_ok() {
//!     let s = snapshots.borrow().clone();
//!     println!(
//!         "in flight {} records / {} bytes, {} of {} partitions paused, commit lag {} records",
//!         s.in_flight_records, s.in_flight_bytes, s.paused(), s.partitions.len(), s.commit_lag()
//!     );
//! }
//! # }
//! ```

use std::time::Duration;

use consumer_core::TopicPartition;

/// How often, at most, the poll task publishes a [`Snapshot`].
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(100);

/// One moment of a running processor. `Default` (all zero, no partitions)
/// until the first poll after joining.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Records polled and not yet finished (queued or running), in
    /// records. What `max_in_flight_records` bounds.
    pub in_flight_records: usize,
    /// What those records hold, in bytes (as
    /// [`record_bytes`](crate::processor::record_bytes) counts them). What
    /// `max_in_flight_bytes` bounds.
    pub in_flight_bytes: usize,
    /// The group generation this member last joined, if it is in a group.
    pub generation: Option<i32>,
    /// Every partition assigned to this member, sorted by topic and
    /// partition.
    pub partitions: Vec<PartitionSnapshot>,
}

/// One assigned partition in a [`Snapshot`]. Offsets are Kafka offsets
/// (the next one to read or commit); lags are in records, measured from
/// the readable end as of the last fetch (see "Two lags" in
/// [`observe`](crate::observe)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSnapshot {
    pub tp: TopicPartition,
    /// Fetching is paused (the global in-flight bound, this partition's
    /// queue bound, quarantine, or a full completed-offset map).
    pub paused: bool,
    /// Records of this partition dispatched and not yet finished.
    pub queued: usize,
    /// The consumer's fetch position, once known.
    pub position: Option<i64>,
    /// The readable end as of the last fetch, once one answered.
    pub log_end: Option<i64>,
    /// The group's committed offset as this member knows it: found on
    /// assignment, or its own last accepted commit.
    pub committed: Option<i64>,
    /// `log_end - position`: records not fetched yet.
    pub consumer_lag: Option<i64>,
    /// `log_end - committed`: what a restart would redo or read.
    pub commit_lag: Option<i64>,
}

impl Snapshot {
    /// Partitions whose fetching is paused.
    pub fn paused(&self) -> usize {
        self.partitions.iter().filter(|p| p.paused).count()
    }

    /// Consumer lag summed over the partitions that have one, in records.
    pub fn consumer_lag(&self) -> i64 {
        self.partitions.iter().filter_map(|p| p.consumer_lag).sum()
    }

    /// Commit lag summed over the partitions that have one, in records.
    pub fn commit_lag(&self) -> i64 {
        self.partitions.iter().filter_map(|p| p.commit_lag).sum()
    }
}
