//! The state shared by the poll task, the workers, the commit task and the
//! rebalance listener, and the operations on it: dispatch, finish, stop,
//! forget. One `std` mutex guards [`State`]; nothing awaits while holding
//! it. The other concerns' fields live in their own files (see the
//! module's layout): [`Workers`], [`Handling`], [`Commits`], [`InFlight`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use consumer_core::{PartitionPosition, PartitionRecords, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::Producer;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::backpressure::InFlight;
use super::commit::Commits;
use super::unit::{Handling, UNIT_RECORDS};
use super::workers::{StartWorker, Workers};
use super::Stats;
use crate::commit_metadata;
use crate::config::ProcessorConfig;
use crate::observe::{Event, RuntimeMetrics};
use crate::offset_tracker::OffsetTracker;
use crate::scheduler::Scheduler;

/// What [`Runtime::count`] counts: each is a [`Stats`] field and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Count {
    Handled,
    Retried,
    Deduplicated,
    SentToRetryTopic,
    DeadLettered,
    DltWriteFailures,
    Quarantines,
    Commits,
    CommitFailures,
}

/// How a record's work ended, for [`Runtime::finish_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Done {
    /// The handler succeeded: complete it, and end a run of failures.
    Handled,
    /// Written to a retry topic or the DLT and acknowledged: complete it.
    Forwarded,
    /// Not done here (revoked, shutting down): never complete it, so it is
    /// never committed and the next owner handles it.
    Skipped,
}

/// What the committed metadata said was already done beyond the offset.
#[derive(Debug, Clone)]
pub(super) struct Loaded {
    /// The consumer's position incarnation when it was read: a reset since
    /// (a recreated topic) makes it describe another log.
    pub(super) incarnation: u64,
    pub(super) committed: i64,
    pub(super) metadata: String,
    pub(super) done: Vec<(i64, i64)>,
}

/// One assigned partition in the runtime. Created and removed only here
/// (see [`State::part`]); the other files read and update it under the
/// state lock, each its own fields.
#[derive(Debug)]
pub(super) struct PartRuntime {
    pub(super) tracker: OffsetTracker,
    /// The consumer's position incarnation this tracker follows (see
    /// [`PartitionPosition::incarnation`]): its commits are fenced by it.
    pub(super) incarnation: u64,
    /// Dispatched and not yet finished or skipped.
    pub(super) queued: usize,
    /// Paused because `queued` reached the per-partition bound
    /// (backpressure.rs).
    pub(super) full: bool,
    /// While `full`: the `queued` count at or below which it resumes.
    pub(super) resume_at: usize,
    /// The last (offset, metadata) the broker accepted, to skip no-op
    /// commits (commit.rs).
    pub(super) last_commit: Option<(i64, String)>,
    /// Done offsets from the committed metadata (not redone).
    pub(super) loaded_done: Vec<(i64, i64)>,
    /// The completed-offset map no longer fits the metadata limit
    /// (commit.rs).
    pub(super) metadata_full: bool,
    /// Records that failed for good in a row (unit.rs).
    pub(super) failures_in_row: u32,
    /// Paused until then after `failures_in_row` reached the threshold
    /// (unit.rs).
    pub(super) quarantined_until: Option<Instant>,
    /// Set once this epoch stops (revoke, loss, shutdown): nothing new
    /// starts. Shared with its units (see [`Unit::stop`](super::unit::Unit)).
    pub(super) stop: Arc<AtomicBool>,
}

/// Per-partition maps, with a fast hasher: the keys are the group's
/// assigned partitions, looked up for every poll and every unit.
pub(super) type PartMap<V> = HashMap<TopicPartition, V, foldhash::fast::RandomState>;

/// Everything behind the runtime's one lock.
pub(super) struct State {
    /// The assigned partitions; reached from other files one at a time
    /// through [`State::part`] and [`State::part_mut`].
    parts: PartMap<PartRuntime>,
    /// The consumer's position incarnation per partition, as of the last poll.
    incarnations: HashMap<TopicPartition, u64>,
    /// Records waiting for a worker, by lane, tagged with the assignment
    /// epoch they were dispatched in (workers.rs takes units from it).
    pub(super) sched: Scheduler<Record>,
    /// Committed metadata read on assignment, until the partition's first
    /// records arrive.
    loaded: HashMap<TopicPartition, Loaded>,
}

impl State {
    /// The runtime state of `tp`, if it has any.
    pub(super) fn part(&self, tp: &TopicPartition) -> Option<&PartRuntime> {
        self.parts.get(tp)
    }

    /// The runtime state of `tp`, to update, if it has any.
    pub(super) fn part_mut(&mut self, tp: &TopicPartition) -> Option<&mut PartRuntime> {
        self.parts.get_mut(tp)
    }

    /// Every partition with runtime state, to update.
    pub(super) fn parts_mut(
        &mut self,
    ) -> impl Iterator<Item = (&TopicPartition, &mut PartRuntime)> {
        self.parts.iter_mut()
    }
}

/// What the poll task reports of one partition (see
/// [`Runtime::part_status`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PartStatus {
    /// The offset of the last commit the broker accepted (or the committed
    /// offset found on assignment).
    pub(super) committed: Option<i64>,
    /// Dispatched and not yet finished or skipped.
    pub(super) queued: usize,
}

/// Everything the runtime's tasks share.
pub(super) struct Runtime {
    cfg: ProcessorConfig,
    /// The run's counters. Those with a metric beside them go through
    /// [`Runtime::count`]; backpressure.rs bumps its pause counts and peaks.
    pub(super) stats: Arc<Stats>,
    /// This run's metric handles (labelled with the group).
    metrics: RuntimeMetrics,
    state: Mutex<State>,
    /// Signalled whenever work finishes (drains wait on it).
    changed: Notify,
    /// Signalled when partitions stop (revoke, loss, shutdown): sleeping
    /// retries and quarantines wake up and give their records back.
    stopped: Notify,
    next_epoch: AtomicU64,
    /// Where failed records go (unit.rs).
    pub(super) handling: Handling,
    /// The handler, worker permits and every spawned task (workers.rs).
    pub(super) workers: Workers,
    /// One commit at a time (commit.rs).
    pub(super) commits: Commits,
    /// In-flight totals and the global pause (backpressure.rs).
    pub(super) in_flight: InFlight,
}

/// A record's key: its lane under [`crate::Ordering::PerKey`].
fn key_of(r: &Record) -> Option<&[u8]> {
    r.key.as_deref()
}

/// Bytes a record holds in memory (payloads plus a fixed overhead): what
/// `max_in_flight_bytes` counts.
pub fn record_bytes(r: &Record) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    96 + headers + r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())
}

impl Runtime {
    pub(super) fn new(
        cfg: ProcessorConfig,
        handler: Arc<dyn StartWorker>,
        stats: Arc<Stats>,
        producer: Option<Producer>,
    ) -> Self {
        let max_batch = if handler.batched() {
            cfg.max_batch.max(1)
        } else {
            UNIT_RECORDS
        };
        let group = cfg.consumer.group_id.clone().unwrap_or_default();
        Self {
            metrics: RuntimeMetrics::new(&group),
            handling: Handling::new(&cfg, producer, group),
            workers: Workers::new(cfg.concurrency, handler),
            commits: Commits::new(cfg.metadata_limit),
            in_flight: InFlight::new(),
            state: Mutex::new(State {
                parts: PartMap::default(),
                incarnations: HashMap::new(),
                sched: Scheduler::new(cfg.ordering, max_batch),
                loaded: HashMap::new(),
            }),
            cfg,
            stats,
            changed: Notify::new(),
            stopped: Notify::new(),
            next_epoch: AtomicU64::new(1),
        }
    }

    /// The run's configuration (the poll loop, the listener and every
    /// concern read it; nothing changes it).
    pub(super) fn cfg(&self) -> &ProcessorConfig {
        &self.cfg
    }

    /// This run's metric handles (labelled with the group): the poll loop
    /// takes its lag gauges and poll-error counter from here, the listener
    /// counts rebalances.
    pub(super) fn metrics(&self) -> &RuntimeMetrics {
        &self.metrics
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("runtime state lock")
    }

    /// Add `n` to one count: its [`Stats`] field and its metric together,
    /// so the two never disagree.
    pub(super) fn count(&self, what: Count, n: u64) {
        let (stat, metric) = match what {
            Count::Handled => (&self.stats.handled, &self.metrics.handled),
            Count::Retried => (&self.stats.retried, &self.metrics.retried),
            Count::Deduplicated => (&self.stats.deduplicated, &self.metrics.deduplicated),
            Count::SentToRetryTopic => {
                (&self.stats.sent_to_retry, &self.metrics.sent_to_retry_topic)
            }
            Count::DeadLettered => (&self.stats.dead_lettered, &self.metrics.dead_lettered),
            Count::DltWriteFailures => (
                &self.stats.dlt_write_failures,
                &self.metrics.dlt_write_failures,
            ),
            Count::Quarantines => (&self.stats.quarantines, &self.metrics.quarantined),
            Count::Commits => (&self.stats.commits, &self.metrics.commits),
            Count::CommitFailures => (&self.stats.commit_failures, &self.metrics.commit_failures),
        };
        stat.fetch_add(n, Ordering::Relaxed);
        metric.increment(n);
    }

    pub(super) fn observe(&self, e: Event) {
        if let Some(o) = &self.cfg.observer {
            crate::panics::call_hook("an Observer", || o.on_event(&e));
        }
    }

    /// Every partition with runtime state (the shutdown stops them all).
    pub(super) fn partitions(&self) -> Vec<TopicPartition> {
        self.lock().parts.keys().cloned().collect()
    }

    /// The last accepted commit and the queue length of each of `tps`, in
    /// order, for the poll task's lag gauges and snapshots (zero and
    /// nothing for a partition without runtime state).
    pub(super) fn part_status(&self, tps: &[TopicPartition]) -> Vec<PartStatus> {
        let st = self.lock();
        tps.iter()
            .map(|tp| {
                st.parts
                    .get(tp)
                    .map_or_else(PartStatus::default, |p| PartStatus {
                        committed: p.last_commit.as_ref().map(|(offset, _)| *offset),
                        queued: p.queued,
                    })
            })
            .collect()
    }

    /// Keep what the committed metadata says is done (the listener reads it
    /// on assignment), until each partition's first records arrive.
    pub(super) fn load(&self, loaded: impl IntoIterator<Item = (TopicPartition, Loaded)>) {
        let mut st = self.lock();
        for (tp, l) in loaded {
            st.loaded.insert(tp, l);
        }
    }

    /// Completes the next time work finishes (any record of any partition).
    /// Only waiters that exist are woken: create it before checking what it
    /// waits for.
    pub(super) fn work_finished(&self) -> Notified<'_> {
        self.changed.notified()
    }

    /// Hand polled records to the scheduler (skipping those the committed
    /// metadata says are done), then start what may start.
    pub(super) fn dispatch(self: &Arc<Self>, batch: PartitionRecords) {
        let Some(first) = batch.records.first().map(|r| r.offset) else {
            return;
        };
        let tp = batch.tp;
        {
            let mut st = self.lock();
            let st = &mut *st;
            let p = self.part_entry(&mut st.parts, &mut st.loaded, &st.incarnations, &tp, first);
            let epoch = p.tracker.epoch();
            let mut already_done = 0;
            let mut records = batch.records;
            for r in &records {
                p.tracker.dispatch(r.offset);
            }
            if !p.loaded_done.is_empty() {
                // Done before a restart (the committed metadata says so):
                // complete here instead.
                records.retain(|r| {
                    if commit_metadata::is_done(&p.loaded_done, r.offset) {
                        let _ = p.tracker.complete(epoch, r.offset);
                        already_done += 1;
                        false
                    } else {
                        true
                    }
                });
            }
            let added_bytes = records.iter().map(record_bytes).sum();
            let added = records.len();
            // Counted in flight before they are queued: a running worker
            // takes them as soon as the lock is released, and could finish
            // them before this task counted them.
            self.admit(added, added_bytes);
            // The poll's vector goes to the lanes as it is: per partition
            // it is the lane's next chunk, with no record moved (the poll
            // task's time is the runtime's critical path).
            st.sched.push_all(&tp, epoch, records, key_of);
            p.queued += added;
            if already_done > 0 {
                self.stats
                    .already_done
                    .fetch_add(already_done, Ordering::Relaxed);
            }
        }
        self.pump();
    }

    /// The runtime state of `tp`, created at `start` (the first offset
    /// seen in this incarnation) if it has none.
    fn part_entry<'a>(
        &self,
        parts: &'a mut PartMap<PartRuntime>,
        loaded: &mut HashMap<TopicPartition, Loaded>,
        incarnations: &HashMap<TopicPartition, u64>,
        tp: &TopicPartition,
        start: i64,
    ) -> &'a mut PartRuntime {
        parts.entry(tp.clone()).or_insert_with(|| {
            let incarnation = incarnations.get(tp).copied().unwrap_or_default();
            // Metadata read before a reset describes the old log.
            let l = loaded.remove(tp).filter(|l| l.incarnation == incarnation);
            PartRuntime {
                tracker: OffsetTracker::new(self.next_epoch.fetch_add(1, Ordering::Relaxed), start),
                incarnation,
                queued: 0,
                full: false,
                resume_at: 0,
                last_commit: l.as_ref().map(|l| (l.committed, l.metadata.clone())),
                loaded_done: l.map(|l| l.done).unwrap_or_default(),
                metadata_full: false,
                failures_in_row: 0,
                quarantined_until: None,
                stop: Arc::new(AtomicBool::new(false)),
            }
        })
    }

    /// Before dispatching a poll's records: a partition whose position was
    /// reset since its tracker began (out of range, truncation, recreated
    /// topic) drops that tracker: its queued records are skipped, running
    /// ones finish into a dead epoch, and nothing of it is committed.
    pub(super) fn sync_incarnations(&self, positions: &[PartitionPosition]) {
        let mut stale = Vec::new();
        {
            let mut st = self.lock();
            for pos in positions {
                st.incarnations.insert(pos.tp.clone(), pos.incarnation);
                if st
                    .parts
                    .get(&pos.tp)
                    .is_some_and(|p| p.incarnation != pos.incarnation)
                {
                    stale.push(pos.tp.clone());
                }
            }
        }
        if !stale.is_empty() {
            tracing::info!(partitions = ?stale, "positions were reset: their offsets start over");
            self.stop_partitions(&stale);
            let mut st = self.lock();
            for tp in &stale {
                if let Some(p) = st.parts.remove(tp) {
                    p.stop.store(true, Ordering::Release);
                }
            }
        }
    }

    /// After dispatching a poll's records: the consumer's positions have
    /// also moved past offsets that are not records (transaction markers,
    /// aborted data, compaction gaps), with or without records returned.
    /// The commit point follows them, so lag drains to zero.
    pub(super) fn advance(&self, positions: &[PartitionPosition]) {
        let mut st = self.lock();
        let st = &mut *st;
        for pos in positions {
            let p = self.part_entry(
                &mut st.parts,
                &mut st.loaded,
                &st.incarnations,
                &pos.tp,
                pos.position,
            );
            if p.incarnation == pos.incarnation && !p.stop.load(Ordering::Acquire) {
                p.tracker.advance_to(pos.position);
            }
        }
    }

    /// A worker is done with a record of `tp` dispatched in `epoch` (see
    /// [`Done`]).
    pub(super) fn finish(&self, tp: &TopicPartition, epoch: u64, record: &Record, done: Done) {
        self.finish_all(tp, epoch, [record], done);
    }

    /// A worker is done with these records of `tp`, dispatched in `epoch`:
    /// handled or forwarded ones complete in the tracker; skipped ones do
    /// not, so they are never committed. A stale epoch touches no tracker.
    /// Their in-flight bytes are [`record_bytes`] again, as at dispatch
    /// (three lengths: cheaper than carrying the figure through the lanes).
    pub(super) fn finish_all<'r>(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        finished: impl IntoIterator<Item = &'r Record>,
        done: Done,
    ) {
        let (mut records, mut bytes) = (0, 0);
        let mut resume = false;
        {
            let mut st = self.lock();
            let mut part = st.parts.get_mut(tp);
            // A stale epoch (revoked, maybe reassigned since) touches no tracker.
            let mut current = part.as_deref_mut().filter(|p| p.tracker.epoch() == epoch);
            for r in finished {
                records += 1;
                bytes += record_bytes(r);
                if let Some(p) = current.as_deref_mut() {
                    if done != Done::Skipped {
                        let _ = p.tracker.complete(epoch, r.offset);
                    }
                }
            }
            if let Some(p) = current {
                p.queued = p.queued.saturating_sub(records);
            }
            if let Some(p) = part {
                if done == Done::Handled && records > 0 {
                    p.failures_in_row = 0;
                }
                resume = p.full && p.queued <= p.resume_at;
            }
        }
        if records == 0 {
            return;
        }
        self.release_in_flight(records, bytes, resume);
        self.changed.notify_waiters();
    }

    /// May work of this epoch start or go on (retry, forward)? Not once
    /// the partition is revoked, reassigned, lost, or being revoked.
    pub(super) fn may_continue(&self, tp: &TopicPartition, epoch: u64) -> bool {
        self.lock()
            .parts
            .get(tp)
            .is_some_and(|p| p.tracker.epoch() == epoch && !p.stop.load(Ordering::Acquire))
    }

    /// Sleep until `until`, waking early when the partition is revoked or
    /// the runtime stops; `false` if work of `epoch` may not go on.
    pub(super) async fn sleep_unless_stopped(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        until: Instant,
    ) -> bool {
        loop {
            // Created before the check, so a stop in between is not missed.
            let stopped = self.stopped.notified();
            if !self.may_continue(tp, epoch) {
                return false;
            }
            if Instant::now() >= until {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = stopped => {}
            }
        }
    }

    /// Stop starting records of `tps` (revoke or shutdown): queued records
    /// are skipped (the next owner gets them) and running ones may finish.
    pub(super) fn stop_partitions(&self, tps: &[TopicPartition]) {
        for tp in tps {
            let removed = {
                let mut st = self.lock();
                if let Some(p) = st.parts.get_mut(tp) {
                    p.stop.store(true, Ordering::Release);
                }
                st.sched.remove_partition(tp)
            };
            for (epoch, records) in removed {
                self.finish_all(tp, epoch, &records, Done::Skipped);
            }
        }
        self.stopped.notify_waiters();
    }

    /// Wait (up to `timeout`) until no record of `tps` (all if `None`) runs.
    pub(super) async fn wait_idle(
        &self,
        tps: Option<&[TopicPartition]>,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let busy: usize = {
                let st = self.lock();
                st.parts
                    .iter()
                    .filter(|(tp, _)| tps.is_none_or(|t| t.contains(tp)))
                    .map(|(_, p)| p.queued)
                    .sum()
            };
            if busy == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                // `busy` counts records handed to workers and not finished:
                // the running ones and those behind them in the same unit.
                tracing::warn!(
                    unfinished = busy,
                    ?timeout,
                    "drain deadline passed with records unfinished (running, or waiting behind \
                     a running one); their results will be discarded and the partitions' next \
                     owner handles them (raise drain_timeout, or shorten the handler)"
                );
                return false;
            }
            let wait = self.changed.notified();
            let _ = tokio::time::timeout(Duration::from_millis(50), wait).await;
        }
    }

    /// Forget `tps`: later completions find no epoch and are discarded.
    pub(super) fn forget(&self, tps: &[TopicPartition]) {
        let mut st = self.lock();
        for tp in tps {
            if let Some(p) = st.parts.remove(tp) {
                p.stop.store(true, Ordering::Release);
            }
            st.loaded.remove(tp);
            st.incarnations.remove(tp);
        }
    }
}
