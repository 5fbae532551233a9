//! The state shared by the poll task, the workers, the commit task and the
//! rebalance listener, and the operations on it. One `std` mutex guards it;
//! nothing awaits while holding it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use consumer_core::{
    Committer, OffsetToCommit, PartitionPosition, PartitionRecords, TopicPartition,
};
use kafka_wire::records::Record;
use kafka_wire::Producer;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{AnyHandler, Stats};
use crate::commit_metadata::{self, encode_ranges, merge_ranges, ranges_of};
use crate::config::{Idempotency, ProcessorConfig};
use crate::observe::{Event, RuntimeMetrics};
use crate::offset_tracker::OffsetTracker;
use crate::scheduler::{LaneId, Scheduler};

/// One record on its way through the runtime.
#[derive(Debug)]
pub(crate) struct Work {
    pub record: Record,
    pub ticket: Ticket,
}

/// What finishing a record needs to know about it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    pub offset: i64,
    /// The assignment epoch it was dispatched in.
    pub epoch: u64,
    /// Its share of the in-flight bytes.
    pub bytes: usize,
}

/// What [`Runtime::count`] counts: each is a [`Stats`] field and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
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
pub(crate) enum Done {
    /// The handler succeeded: complete it, and end a run of failures.
    Handled,
    /// Written to a retry topic or the DLT and acknowledged: complete it.
    Forwarded,
    /// Not done here (revoked, shutting down): never complete it, so it is
    /// never committed and the next owner handles it.
    Skipped,
}

/// Up to this many records of one lane make a unit of work for a
/// one-record handler: the worker calls the handler for each in turn, so
/// the scheduling and bookkeeping cost is paid once per unit.
pub(crate) const UNIT_RECORDS: usize = 256;

/// A unit of a one-record handler gives its lane back after this long, so
/// other lanes get a worker too (records not started go back in front).
pub(crate) const UNIT_TIME_BUDGET: Duration = Duration::from_millis(5);

/// Some records of one lane, taken by a worker.
pub(crate) struct Unit {
    pub lane: LaneId,
    pub items: Vec<Work>,
    /// Set when the partition's epoch stops (revoke, loss, shutdown), so
    /// a unit stops starting records without taking the lock per record.
    pub stop: Arc<AtomicBool>,
}

/// What the committed metadata said was already done beyond the offset.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// The consumer's position incarnation when it was read: a reset since
    /// (a recreated topic) makes it describe another log.
    pub incarnation: u64,
    pub committed: i64,
    pub metadata: String,
    pub done: Vec<(i64, i64)>,
}

/// One assigned partition in the runtime.
#[derive(Debug)]
pub(crate) struct PartRuntime {
    pub tracker: OffsetTracker,
    /// The consumer's position incarnation this tracker follows (see
    /// [`PartitionPosition::incarnation`]): its commits are fenced by it.
    pub incarnation: u64,
    /// Dispatched and not yet finished or skipped.
    pub queued: usize,
    /// Paused because `queued` reached the per-partition bound.
    pub full: bool,
    /// While `full`: the `queued` count at or below which it resumes.
    pub resume_at: usize,
    /// The last (offset, metadata) the broker accepted, to skip no-op commits.
    pub last_commit: Option<(i64, String)>,
    /// Done offsets from the committed metadata (not redone).
    pub loaded_done: Vec<(i64, i64)>,
    /// The completed-offset map no longer fits the metadata limit.
    pub metadata_full: bool,
    pub failures_in_row: u32,
    pub quarantined_until: Option<Instant>,
    /// Set once this epoch stops (revoke, loss, shutdown): nothing new
    /// starts. Shared with its units (see [`Unit::stop`]).
    pub stop: Arc<AtomicBool>,
}

/// Per-partition maps, with a fast hasher: the keys are the group's
/// assigned partitions, looked up for every poll and every unit.
pub(crate) type PartMap<V> = HashMap<TopicPartition, V, foldhash::fast::RandomState>;

pub(crate) struct State {
    pub parts: PartMap<PartRuntime>,
    /// The consumer's position incarnation per partition, as of the last poll.
    pub incarnations: HashMap<TopicPartition, u64>,
    pub sched: Scheduler<Work>,
    pub loaded: HashMap<TopicPartition, Loaded>,
}

/// Everything the runtime's tasks share.
pub(crate) struct Runtime {
    pub cfg: ProcessorConfig,
    pub handler: AnyHandler,
    pub stats: Arc<Stats>,
    pub state: Mutex<State>,
    /// Signalled whenever work finishes (drains wait on it).
    pub changed: Notify,
    /// Signalled when finished work takes a paused partition (or the
    /// global bound) down to where fetching resumes: the poll loop, waiting
    /// in a poll while paused, goes back to resume at once instead of when
    /// its poll times out, so workers never sit idle while fetched records
    /// wait behind a pause.
    pub capacity: Notify,
    /// Set while fetching is paused at the global bound.
    pub globally_paused: AtomicBool,
    /// Signalled when partitions stop (revoke, loss, shutdown): sleeping
    /// retries and quarantines wake up and give their records back.
    pub stopped: Notify,
    pub in_flight_bytes: AtomicUsize,
    pub in_flight_records: AtomicUsize,
    next_epoch: AtomicU64,
    pub permits: Arc<Semaphore>,
    pub producer: Option<Producer>,
    pub group: String,
    /// This run's metric handles (labelled with the group).
    pub metrics: RuntimeMetrics,
    /// Retry topic → (source topic, step).
    pub retry_index: HashMap<String, (String, usize)>,
    /// One commit at a time, so commits never reorder and a revoke can
    /// finish with no commit in flight for its partitions.
    pub commit_lock: tokio::sync::Mutex<()>,
    /// Every task the runtime spawned (units of work, the commit loop):
    /// all are aborted when `run` ends or its future is dropped, so a
    /// dropped processor stops handling and committing at once, as a
    /// crashed process would.
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

/// A work item's record key: its lane under [`crate::Ordering::PerKey`].
fn key_of(w: &Work) -> Option<&[u8]> {
    w.record.key.as_deref()
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
        handler: AnyHandler,
        stats: Arc<Stats>,
        producer: Option<Producer>,
    ) -> Self {
        let max_batch = match handler {
            AnyHandler::One(_) => UNIT_RECORDS,
            AnyHandler::Batch(_) => cfg.max_batch.max(1),
        };
        let retry_index = cfg
            .retry_topics
            .as_ref()
            .map(|r| r.index(&cfg.topics))
            .unwrap_or_default();
        let group = cfg.consumer.group_id.clone().unwrap_or_default();
        Self {
            metrics: RuntimeMetrics::new(&group),
            group,
            permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            state: Mutex::new(State {
                parts: PartMap::default(),
                incarnations: HashMap::new(),
                sched: Scheduler::new(cfg.ordering, max_batch),
                loaded: HashMap::new(),
            }),
            cfg,
            handler,
            stats,
            changed: Notify::new(),
            capacity: Notify::new(),
            globally_paused: AtomicBool::new(false),
            stopped: Notify::new(),
            in_flight_bytes: AtomicUsize::new(0),
            in_flight_records: AtomicUsize::new(0),
            next_epoch: AtomicU64::new(1),
            producer,
            retry_index,
            commit_lock: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
        }
    }

    /// Spawn a task owned by this runtime (see `tasks`).
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> AbortHandle {
        let mut tasks = self.tasks.lock().expect("runtime tasks lock");
        while tasks.try_join_next().is_some() {} // reap finished ones
        tasks.spawn(task)
    }

    /// Abort every task this runtime spawned.
    pub(super) fn abort_tasks(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
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
            o.on_event(&e);
        }
    }

    pub(super) fn idempotency(&self) -> Option<&Idempotency> {
        self.cfg.idempotency.as_ref()
    }

    /// The source topic of `topic` (itself, unless it is a retry topic),
    /// and its step in the retry chain.
    pub(super) fn source_of<'a>(&'a self, topic: &'a str) -> (&'a str, Option<usize>) {
        match self.retry_index.get(topic) {
            Some((src, step)) => (src.as_str(), Some(*step)),
            None => (topic, None),
        }
    }

    /// Hand polled records to the scheduler (skipping those the committed
    /// metadata says are done), then start what may start.
    pub(super) fn dispatch(self: &Arc<Self>, batch: PartitionRecords) {
        let Some(first) = batch.records.first().map(|r| r.offset) else {
            return;
        };
        let tp = batch.tp;
        let mut added_bytes = 0;
        let added;
        {
            let mut st = self.lock();
            let st = &mut *st;
            let p = self.part_entry(&mut st.parts, &mut st.loaded, &st.incarnations, &tp, first);
            let epoch = p.tracker.epoch();
            let mut already_done = 0;
            if p.loaded_done.is_empty() {
                // The usual case: every record goes to the lanes, moved once.
                let tracker = &mut p.tracker;
                let work = |record: Record| {
                    tracker.dispatch(record.offset);
                    let bytes = record_bytes(&record);
                    added_bytes += bytes;
                    let ticket = Ticket {
                        offset: record.offset,
                        epoch,
                        bytes,
                    };
                    Work { record, ticket }
                };
                let n = batch.records.len();
                st.sched
                    .push_all(&tp, batch.records.into_iter().map(work), key_of);
                added = n;
            } else {
                // Some were done before a restart (committed metadata): skip those.
                let mut work = Vec::with_capacity(batch.records.len());
                for record in batch.records {
                    p.tracker.dispatch(record.offset);
                    if commit_metadata::is_done(&p.loaded_done, record.offset) {
                        let _ = p.tracker.complete(epoch, record.offset);
                        already_done += 1;
                        continue;
                    }
                    let bytes = record_bytes(&record);
                    added_bytes += bytes;
                    let ticket = Ticket {
                        offset: record.offset,
                        epoch,
                        bytes,
                    };
                    work.push(Work { record, ticket });
                }
                added = work.len();
                st.sched.push_all(&tp, work, key_of);
            }
            p.queued += added;
            if already_done > 0 {
                self.stats
                    .already_done
                    .fetch_add(already_done, Ordering::Relaxed);
            }
        }
        let now = self
            .in_flight_bytes
            .fetch_add(added_bytes, Ordering::AcqRel)
            + added_bytes;
        let records = self.in_flight_records.fetch_add(added, Ordering::AcqRel) + added;
        self.stats
            .peak_in_flight_bytes
            .fetch_max(now, Ordering::Relaxed);
        self.stats
            .peak_in_flight_records
            .fetch_max(records, Ordering::Relaxed);
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

    /// Start workers while permits and ready lanes last.
    ///
    /// A worker holds a permit and runs units until no lane is ready; then
    /// it releases the permit and ends. Permits are taken and released
    /// under the state lock, so a record pushed after a worker found
    /// nothing always finds a permit here.
    pub(super) fn pump(self: &Arc<Self>) {
        let mut st = self.lock();
        loop {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                return;
            };
            let Some(unit) = take_unit(&mut st) else {
                return; // the permit is released under the lock
            };
            // Boxed: a worker's future is several KB (retries, DLT writes)
            // and spawning moves a future several times; a box moves a pointer.
            self.spawn(Box::pin(self.clone().worker(unit, permit)));
        }
    }

    /// Run units until no lane is ready (see [`Runtime::pump`]).
    async fn worker(self: Arc<Self>, unit: Unit, permit: OwnedSemaphorePermit) {
        let mut permit = Some(permit);
        let mut next = Some(unit);
        while let Some(unit) = next {
            let lane = unit.lane.clone();
            let not_started = self.run_unit(unit, &mut permit).await;
            let mut st = self.lock();
            st.sched.give_back(&lane, not_started);
            st.sched.done(&lane);
            if permit.is_none() {
                // It waited without one (retry, quarantine): let pump decide.
                drop(st);
                return self.pump();
            }
            next = take_unit(&mut st);
            if next.is_none() {
                permit = None; // released under the lock: see pump
            }
        }
    }

    /// Give up this worker's permit while it waits (a retry's backoff, a
    /// quarantine), so other lanes go on meanwhile.
    pub(super) fn release(self: &Arc<Self>, permit: &mut Option<OwnedSemaphorePermit>) {
        if permit.take().is_some() {
            self.pump();
        }
    }

    /// Take a permit back after [`Runtime::release`].
    pub(super) async fn reacquire(&self, permit: &mut Option<OwnedSemaphorePermit>) {
        if permit.is_none() {
            let p = self.permits.clone().acquire_owned().await;
            *permit = Some(p.expect("the permits are never closed"));
        }
    }

    /// A worker is done with a record (see [`Done`]).
    pub(super) fn finish(&self, tp: &TopicPartition, t: Ticket, done: Done) {
        self.finish_all(tp, [t], done);
    }

    /// A worker is done with these records of `tp`: handled or forwarded
    /// ones complete in the tracker; skipped ones do not, so they are never
    /// committed. A stale epoch touches no tracker.
    pub(super) fn finish_all(
        &self,
        tp: &TopicPartition,
        tickets: impl IntoIterator<Item = Ticket>,
        done: Done,
    ) {
        let (mut records, mut bytes) = (0, 0);
        let mut resume = false;
        {
            let mut st = self.lock();
            let mut part = st.parts.get_mut(tp);
            for t in tickets {
                records += 1;
                bytes += t.bytes;
                // A stale epoch (revoked, maybe reassigned since) touches no tracker.
                if let Some(p) = part.as_deref_mut().filter(|p| p.tracker.epoch() == t.epoch) {
                    if done != Done::Skipped {
                        let _ = p.tracker.complete(t.epoch, t.offset);
                    }
                    p.queued = p.queued.saturating_sub(1);
                }
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
        let bytes_left = self.in_flight_bytes.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        let records_left = self.in_flight_records.fetch_sub(records, Ordering::AcqRel) - records;
        resume |= self.globally_paused.load(Ordering::Acquire)
            && bytes_left <= self.cfg.max_in_flight_bytes / 2
            && records_left <= self.cfg.max_in_flight_records / 2;
        if resume {
            self.capacity.notify_one();
        }
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
            self.finish_all(tp, removed.into_iter().map(|w| w.ticket), Done::Skipped);
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

    /// Commit the completed prefix (and the completed-beyond map as
    /// metadata) of `only` (all if `None`), if it changed.
    pub(super) async fn commit(&self, committer: &Committer, only: Option<&[TopicPartition]>) {
        let _one_at_a_time = self.commit_lock.lock().await;
        self.commit_locked(committer, only).await;
    }

    /// [`Runtime::commit`] for a caller already holding `commit_lock`.
    pub(super) async fn commit_locked(
        &self,
        committer: &Committer,
        only: Option<&[TopicPartition]>,
    ) {
        let offsets = self.commit_points(only);
        if offsets.is_empty() {
            return;
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
        self.metrics
            .commit_seconds
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                {
                    let mut st = self.lock();
                    for (tp, o, m, _) in &offsets {
                        if let Some(p) = st.parts.get_mut(tp) {
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
            }
            Err(e) => {
                self.count(Count::CommitFailures, 1);
                tracing::warn!(error = %e, "commit failed; the next one retries (nothing is lost: uncommitted work is redone)");
            }
        }
    }

    fn commit_points(
        &self,
        only: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, i64, Option<String>, u64)> {
        let limit = self.cfg.metadata_limit;
        let mut st = self.lock();
        let mut out = Vec::new();
        for (tp, p) in st.parts.iter_mut() {
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

/// The next ready lane's unit, with its partition's stop flag.
fn take_unit(st: &mut State) -> Option<Unit> {
    let (lane, items) = st.sched.next_unit()?;
    let stop = match st.parts.get(&*lane.0) {
        Some(p) => p.stop.clone(),
        None => Arc::new(AtomicBool::new(true)), // forgotten: nothing starts
    };
    Some(Unit { lane, items, stop })
}
