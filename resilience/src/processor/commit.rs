//! Commits: each partition's completed prefix, with the completed-beyond
//! map as metadata, fenced by the position incarnation; one at a time; on
//! the configured policy's schedule (the commit loop), on revoke and at
//! shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use consumer_core::{Committer, ConsumerError, OffsetToCommit, TopicPartition};
use kafka_wire::KafkaCode;
use tokio::sync::MutexGuard;
use tokio::task::AbortHandle;

use super::runtime::{Count, Runtime};
use crate::commit_metadata::{encode_ranges, merge_ranges, ranges_of};
use crate::config::CommitPolicy;
use crate::observe::Event;

/// What keeps commits in order (only this file touches it).
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

impl Commits {
    pub(super) fn new(metadata_limit: usize) -> Self {
        Self {
            lock: tokio::sync::Mutex::new(()),
            metadata_limit: AtomicUsize::new(metadata_limit),
        }
    }
}

/// The coordinator refused a commit's metadata as too long; the longest
/// metadata string the commit carried (bytes).
struct MetadataTooLarge {
    longest: usize,
}

/// Is `e` the coordinator refusing commit metadata as too long?
fn metadata_too_large(e: &ConsumerError) -> bool {
    matches!(e, ConsumerError::Wire(w) if w.code() == Some(KafkaCode::OffsetMetadataTooLarge))
}

impl Runtime {
    /// Start the commit loop of the configured [`CommitPolicy`] (none for
    /// `OnRevokeAndShutdown`); the runtime owns it (see
    /// [`Runtime::spawn`]), and the poll loop aborts it before the final
    /// commit.
    pub(super) fn start_commit_loop(
        self: &Arc<Self>,
        committer: &Committer,
    ) -> Option<AbortHandle> {
        match self.cfg().commit_policy {
            CommitPolicy::Interval(every) => {
                let (rt, c) = (self.clone(), committer.clone());
                Some(self.spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        rt.commit(&c, None).await;
                    }
                }))
            }
            CommitPolicy::AfterEachCompletion => {
                let (rt, c) = (self.clone(), committer.clone());
                Some(self.spawn(async move {
                    loop {
                        let changed = rt.work_finished();
                        let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
                        rt.commit(&c, None).await;
                    }
                }))
            }
            CommitPolicy::OnRevokeAndShutdown => None,
        }
    }

    /// Wait for the commit in flight, if any, and hold off the next one
    /// until the guard is dropped: the listener commits and forgets a
    /// revoked partition (or forgets a lost one) with no commit in flight
    /// for it. Commit meanwhile with [`Runtime::commit_locked`].
    pub(super) async fn one_commit_at_a_time(&self) -> MutexGuard<'_, ()> {
        self.commits.lock.lock().await
    }

    /// Commit the completed prefix (and the completed-beyond map as
    /// metadata) of `only` (all if `None`), if it changed.
    pub(super) async fn commit(&self, committer: &Committer, only: Option<&[TopicPartition]>) {
        let _one_at_a_time = self.one_commit_at_a_time().await;
        self.commit_locked(committer, only).await;
    }

    /// [`Runtime::commit`] for a caller already holding the commit lock
    /// (see [`Runtime::one_commit_at_a_time`]).
    pub(super) async fn commit_locked(
        &self,
        committer: &Committer,
        only: Option<&[TopicPartition]>,
    ) {
        // A refusal of the metadata's size is a limit learned, never a
        // reason to stop committing: the offsets go again at once with
        // metadata that fits (the broker's own limit if it says, else half
        // of what it refused, then none), at most two refusals.
        for refused in 0..3 {
            match self.commit_once(committer, only).await {
                Some(MetadataTooLarge { longest }) if refused < 2 => {
                    let was = self.commits.metadata_limit.load(Ordering::Relaxed);
                    let learned = if refused == 0 {
                        match committer.metadata_limit().await {
                            Some(broker) => broker,
                            None => was.min(longest) / 2,
                        }
                    } else {
                        0 // an offset with no metadata always fits
                    };
                    let learned = learned.min(was.saturating_sub(1));
                    self.commits
                        .metadata_limit
                        .store(learned, Ordering::Relaxed);
                    tracing::warn!(was, now = learned, "the group coordinator refused the commit metadata as too large (offset.metadata.max.bytes); committing again with metadata that fits");
                }
                _ => return,
            }
        }
    }

    /// One commit attempt. A failure is logged and left to the next commit,
    /// except a refusal of the metadata's size, returned.
    async fn commit_once(
        &self,
        committer: &Committer,
        only: Option<&[TopicPartition]>,
    ) -> Option<MetadataTooLarge> {
        let offsets = self.commit_points(only);
        if offsets.is_empty() {
            return None;
        }
        let started = std::time::Instant::now();
        let fenced: Vec<OffsetToCommit> = offsets
            .iter()
            .map(|(tp, o, m, incarnation)| OffsetToCommit {
                tp: tp.clone(),
                offset: *o,
                metadata: m.clone(),
                incarnation: Some(*incarnation),
            })
            .collect();
        let result = committer.commit_offsets(&fenced).await;
        self.metrics()
            .commit_seconds
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                {
                    let mut st = self.lock();
                    for (tp, o, m, _) in &offsets {
                        if let Some(p) = st.part_mut(tp) {
                            p.last_commit = Some((*o, m.clone().unwrap_or_default()));
                        }
                    }
                }
                self.count(Count::Commits, 1);
                self.observe(Event::Committed(
                    offsets
                        .into_iter()
                        .map(|(tp, o, m, _)| (tp, o, m.unwrap_or_default()))
                        .collect(),
                ));
                None
            }
            Err(e) => {
                self.count(Count::CommitFailures, 1);
                if metadata_too_large(&e) {
                    let longest = offsets.iter().filter_map(|o| o.2.as_ref()).map(String::len);
                    return Some(MetadataTooLarge {
                        longest: longest.max().unwrap_or(0),
                    });
                }
                tracing::warn!(error = %e, "commit failed; the next one retries (nothing is lost: uncommitted work is redone)");
                None
            }
        }
    }

    fn commit_points(
        &self,
        only: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, i64, Option<String>, u64)> {
        let limit = self.commits.metadata_limit.load(Ordering::Relaxed);
        let mut st = self.lock();
        let mut out = Vec::new();
        for (tp, p) in st.parts_mut() {
            if only.is_some_and(|o| !o.contains(tp)) {
                continue;
            }
            let point = p.tracker.commit_point();
            let end = p.tracker.end();
            // Done beyond the point: this run's completions, plus loaded
            // ones not dispatched yet.
            let mut ranges = ranges_of(p.tracker.done_beyond_commit_point());
            ranges.extend(
                p.loaded_done
                    .iter()
                    .filter(|(_, e)| *e > end)
                    .map(|(s, e)| ((*s).max(end), *e)),
            );
            let ranges = merge_ranges(ranges);
            let (meta, fitted) = encode_ranges(point, &ranges, limit);
            p.metadata_full = fitted < ranges.len();
            let next = (point, meta);
            if p.last_commit.as_ref() != Some(&next) {
                out.push((tp.clone(), next.0, Some(next.1), p.incarnation));
            }
        }
        out
    }
}
