//! Commits: one at a time, each partition's commit point with its
//! completed-beyond map as metadata, fenced by the position incarnation.
//! The runtime says what to commit (its partitions' [`Offsets`]) and hears
//! how each attempt went; this file keeps commits in order and learns the
//! coordinator's metadata limit.
//!
//! [`Offsets`]: super::completion::offsets::Offsets

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use consumer_core::{Committer, ConsumerError, OffsetToCommit, TopicPartition};
use kafka_wire::KafkaCode;
use tokio::sync::MutexGuard;

/// One partition's offset to commit.
#[derive(Debug, Clone)]
pub(super) struct CommitPoint {
    pub(super) tp: TopicPartition,
    /// The next offset to read.
    pub(super) offset: i64,
    /// The offsets done beyond it (`commit_metadata`).
    pub(super) metadata: String,
    /// The consumer's position incarnation the point belongs to: a commit
    /// of another one is refused.
    pub(super) incarnation: u64,
}

/// How one commit attempt went, and how long it took.
#[derive(Debug)]
pub(super) enum Attempt<'a> {
    /// The broker accepted these.
    Accepted(&'a [CommitPoint], Duration),
    /// It failed (logged; the next commit retries).
    Failed(Duration),
}

/// What keeps commits in order.
pub(super) struct Commits {
    /// One commit at a time, so commits never reorder and a revoke can
    /// finish with no commit in flight for its partitions.
    lock: tokio::sync::Mutex<()>,
    /// Bytes of commit metadata per partition the group's coordinator
    /// keeps: `ProcessorConfig::metadata_limit` until a commit is refused
    /// with OFFSET_METADATA_TOO_LARGE, then what the broker says
    /// (`offset.metadata.max.bytes`), or half of what it refused.
    metadata_limit: AtomicUsize,
}

/// Is `e` the coordinator refusing commit metadata as too long?
fn metadata_too_large(e: &ConsumerError) -> bool {
    matches!(e, ConsumerError::Wire(w) if w.code() == Some(KafkaCode::OffsetMetadataTooLarge))
}

/// The metadata limit to try after refusal number `refused` (0 for the
/// first) of metadata up to `longest` bytes, under limit `was`: the
/// broker's own limit if it said, else half of what it refused; after a
/// second refusal none (an offset with no metadata always fits). Always
/// below `was`.
fn learned_limit(refused: u32, was: usize, broker: Option<usize>, longest: usize) -> usize {
    let learned = match (refused, broker) {
        (0, Some(broker)) => broker,
        (0, None) => was.min(longest) / 2,
        _ => 0,
    };
    learned.min(was.saturating_sub(1))
}

impl Commits {
    pub(super) fn new(metadata_limit: usize) -> Self {
        Self {
            lock: tokio::sync::Mutex::new(()),
            metadata_limit: AtomicUsize::new(metadata_limit),
        }
    }

    /// Wait for the commit in flight, if any, and hold off the next one
    /// until the guard is dropped: the listener commits and forgets a
    /// revoked partition (or forgets a lost one) with no commit in flight
    /// for it. Commit meanwhile with [`Commits::commit_locked`].
    ///
    /// # Cancel safety
    /// Cancel safe (tokio's `Mutex::lock`).
    pub(super) async fn one_at_a_time(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Commit `points(limit)`: the points that changed, their metadata
    /// within `limit` bytes. `attempted` hears how each attempt went. A
    /// failure is logged and left to the next commit, except a refusal of
    /// the metadata's size: a limit learned, never a reason to stop
    /// committing. The offsets go again at once with metadata that fits,
    /// after at most two refusals. For a caller holding
    /// [`Commits::one_at_a_time`].
    ///
    /// # Cancel safety
    /// Not cancel safe: a commit cancelled mid-way may have reached the
    /// coordinator without `attempted` hearing of it (the next commit
    /// then sends the same points again, which changes nothing).
    pub(super) async fn commit_locked(
        &self,
        committer: &Committer,
        mut points: impl FnMut(usize) -> Vec<CommitPoint>,
        mut attempted: impl FnMut(Attempt<'_>),
    ) {
        for refused in 0..3 {
            let points = points(self.metadata_limit.load(Ordering::Relaxed));
            if points.is_empty() {
                return;
            }
            let fenced: Vec<OffsetToCommit> = points
                .iter()
                .map(|p| OffsetToCommit {
                    tp: p.tp.clone(),
                    offset: p.offset,
                    metadata: Some(p.metadata.clone()),
                    incarnation: Some(p.incarnation),
                })
                .collect();
            let started = Instant::now();
            let result = committer.commit_offsets(&fenced).await;
            let took = started.elapsed();
            let e = match result {
                Ok(()) => return attempted(Attempt::Accepted(&points, took)),
                Err(e) => e,
            };
            attempted(Attempt::Failed(took));
            if !metadata_too_large(&e) {
                tracing::warn!(error = %e, "commit failed; the next one retries (nothing is lost: uncommitted work is redone)");
                return;
            }
            if refused == 2 {
                return; // refused twice already: left to the next commit
            }
            let was = self.metadata_limit.load(Ordering::Relaxed);
            let broker = match refused {
                0 => committer.metadata_limit().await,
                _ => None,
            };
            let longest = points.iter().map(|p| p.metadata.len()).max().unwrap_or(0);
            let learned = learned_limit(refused, was, broker, longest);
            self.metadata_limit.store(learned, Ordering::Relaxed);
            tracing::warn!(was, now = learned, "the group coordinator refused the commit metadata as too large (offset.metadata.max.bytes); committing again with metadata that fits");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_metadata_size_teaches_a_smaller_limit_each_time() {
        assert_eq!(
            learned_limit(0, 4096, Some(1024), 3000),
            1024,
            "the broker's"
        );
        assert_eq!(learned_limit(0, 4096, None, 3000), 1500, "half the refused");
        assert_eq!(learned_limit(0, 1000, None, 3000), 500, "half the limit");
        assert_eq!(learned_limit(0, 512, Some(4096), 300), 511, "always lower");
        assert_eq!(learned_limit(1, 512, None, 300), 0, "then none");
    }
}
