//! The state shared by the poll task, the workers, the commit task and the
//! rebalance listener, and the operations on it: dispatch, finish, stop,
//! forget, start workers, decide pauses, commit. One `std` mutex guards
//! [`State`]; nothing awaits while holding it.
//!
//! Runtime composes the concerns, which own their state and do not know
//! it: [`Completion`] (what the group is told of finished records, one per
//! partition), [`FailurePolicy`] and [`FailureRun`] (crate::failure),
//! [`Forwarding`], [`Workers`], [`Commits`], [`InFlight`] and
//! [`QueueBound`]. The worker (unit.rs) and the listener call it; it calls
//! the worker only through [`StartWorker`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use consumer_core::share::AcknowledgeType;
use consumer_core::{Committer, PartitionPosition, PartitionRecords, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::Producer;
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::backpressure::{partition_bound, Bound, InFlight, QueueBound};
use super::commit::{Attempt, CommitPoint, Commits};
use super::completion::offsets::Offsets;
use super::completion::share::Acks;
use super::completion::{Completion, Outcome};
use super::forward::Forwarding;
use super::stats::Stats;
use super::workers::Workers;
use crate::config::{CommitPolicy, ProcessorConfig};
use crate::failure::{FailurePolicy, FailureRun};
use crate::observe::{Event, RuntimeMetrics};
use crate::scheduler::{LaneId, Scheduler};

/// Up to this many records of one lane make a unit of work for a
/// one-record handler: the worker calls the handler for each in turn, so
/// the scheduling and bookkeeping cost is paid once per unit. Above the
/// consumer's default `max.poll.records` (500), so a poll's records for a
/// partition stay one vector from the fetch to the handler.
pub(super) const UNIT_RECORDS: usize = 512;

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

/// Some records of one lane, taken by a worker.
pub(super) struct Unit {
    pub(super) lane: LaneId,
    /// The assignment epoch its records were dispatched in.
    pub(super) epoch: u64,
    pub(super) records: Vec<Record>,
    /// Set when the partition's epoch stops (revoke, loss, shutdown), so
    /// a unit stops starting records without taking the lock per record.
    pub(super) stop: Arc<AtomicBool>,
}

/// A worker task's future, boxed (see [`Runtime::pump`]).
pub(super) type WorkerFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The application's handler with its type erased: what the runtime
/// holds, and calls once per worker task it starts. The worker and
/// everything it calls know the handler's type (unit.rs implements this
/// for every handler), so a handler call's future lives in the worker's
/// and is never boxed: one dynamic call and one boxed future per worker
/// task, which runs units until no lane is ready.
pub(super) trait StartWorker<C: Completion>: Send + Sync + 'static {
    /// Whether one call takes all the records of a unit (a batch handler).
    fn batched(&self) -> bool;

    /// A worker that runs `unit` and then the next ready ones (see
    /// [`Runtime::pump`]), calling this handler.
    fn worker(
        self: Arc<Self>,
        rt: Arc<Runtime<C>>,
        unit: Unit,
        permit: OwnedSemaphorePermit,
    ) -> WorkerFuture;
}

/// What the group said was done, read on assignment, with the position
/// incarnation it belongs to (a reset since makes it describe another log).
struct LoadedAt<L> {
    incarnation: u64,
    loaded: L,
}

/// One assigned partition in the runtime, in one assignment epoch.
#[derive(Debug)]
struct PartRuntime<C> {
    /// The assignment epoch: work of another epoch touches nothing here.
    epoch: u64,
    /// What the group is told of finished records.
    completion: C,
    /// The consumer's position incarnation this epoch follows (see
    /// [`PartitionPosition::incarnation`]): its commits are fenced by it.
    incarnation: u64,
    /// Dispatched and not yet finished or skipped.
    queued: usize,
    /// Whether `queued` paused the partition.
    bound: QueueBound,
    /// Records that failed for good in a row, and the quarantine.
    failures: FailureRun,
    /// Set once this epoch stops (revoke, loss, shutdown): nothing new
    /// starts. Shared with its units (see [`Unit::stop`]).
    stop: Arc<AtomicBool>,
}

/// Per-partition maps, with a fast hasher: the keys are the group's
/// assigned partitions, looked up for every poll and every unit.
type PartMap<V> = HashMap<TopicPartition, V, foldhash::fast::RandomState>;

/// Everything behind the runtime's one lock.
struct State<C: Completion> {
    /// The assigned partitions.
    parts: PartMap<PartRuntime<C>>,
    /// The consumer's position incarnation per partition, as of the last poll.
    incarnations: HashMap<TopicPartition, u64>,
    /// Records waiting for a worker, by lane, tagged with the assignment
    /// epoch they were dispatched in.
    sched: Scheduler<Record>,
    /// Read on assignment, until the partition's first records arrive.
    loaded: HashMap<TopicPartition, LoadedAt<C::Loaded>>,
}

impl<C: Completion> State<C> {
    /// The next ready lane's unit, with its partition's stop flag.
    fn take_unit(&mut self) -> Option<Unit> {
        let taken = self.sched.next_unit()?;
        let stop = match self.parts.get(&taken.lane.0) {
            Some(p) => p.stop.clone(),
            None => Arc::new(AtomicBool::new(true)), // forgotten: nothing starts
        };
        Some(Unit {
            lane: taken.lane,
            epoch: taken.tag,
            records: taken.items,
            stop,
        })
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
pub(super) struct Runtime<C: Completion> {
    cfg: ProcessorConfig,
    /// The run's counters. Those with a metric beside them go through
    /// [`Runtime::count`].
    stats: Arc<Stats>,
    /// This run's metric handles (labelled with the group).
    metrics: RuntimeMetrics,
    state: Mutex<State<C>>,
    /// Signalled whenever work finishes (drains wait on it).
    changed: Notify,
    /// Signalled when partitions stop (revoke, loss, shutdown): sleeping
    /// retries and quarantines wake up and give their records back.
    stopped: Notify,
    next_epoch: AtomicU64,
    /// What a failure leads to (the worker executes it).
    policy: FailurePolicy,
    /// Where failed records go.
    forwarding: Forwarding,
    /// The application's handler (see [`StartWorker`]).
    handler: Arc<dyn StartWorker<C>>,
    /// Worker permits and every spawned task.
    workers: Workers,
    /// One commit at a time.
    commits: Commits,
    /// In-flight totals and the global pause.
    in_flight: InFlight,
    /// The share group has its own dead-letter queue (KIP-1191): records
    /// failed for good are REJECTed for the broker to write there.
    group_dlq: bool,
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

impl<C: Completion> Runtime<C> {
    pub(super) fn new(
        cfg: ProcessorConfig,
        handler: Arc<dyn StartWorker<C>>,
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
            policy: FailurePolicy::of(&cfg).redelivery(C::REDELIVERS),
            forwarding: Forwarding::new(&cfg, producer, group),
            handler,
            workers: Workers::new(cfg.concurrency),
            commits: Commits::new(cfg.metadata_limit),
            in_flight: InFlight::new(Bound {
                records: cfg.max_in_flight_records,
                bytes: cfg.max_in_flight_bytes,
            }),
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
            group_dlq: false,
        }
    }

    /// The group writes its own dead letters (a share group's DLQ topic,
    /// KIP-1191): see [`Runtime::rejects_dead_letters`].
    pub(super) fn group_dlq(mut self, has_one: bool) -> Self {
        self.group_dlq = has_one;
        self
    }

    /// The run's configuration (nothing changes it).
    pub(super) fn cfg(&self) -> &ProcessorConfig {
        &self.cfg
    }

    /// This run's metric handles (labelled with the group).
    pub(super) fn metrics(&self) -> &RuntimeMetrics {
        &self.metrics
    }

    /// What a failure leads to.
    pub(super) fn policy(&self) -> &FailurePolicy {
        &self.policy
    }

    /// Where failed records go.
    pub(super) fn forwarding(&self) -> &Forwarding {
        &self.forwarding
    }

    /// The producer that writes to the DLT and the retry topics, if one is
    /// configured (the poll loop closes it at shutdown).
    pub(super) fn producer(&self) -> Option<&Producer> {
        self.forwarding.producer()
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
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

    /// Keep what the group says is done (the listener reads it on
    /// assignment, with the position incarnation it belongs to), until
    /// each partition's first records arrive.
    pub(super) fn load(&self, loaded: impl IntoIterator<Item = (TopicPartition, u64, C::Loaded)>) {
        let mut st = self.lock();
        for (tp, incarnation, loaded) in loaded {
            st.loaded.insert(
                tp,
                LoadedAt {
                    incarnation,
                    loaded,
                },
            );
        }
    }

    /// Completes the next time work finishes (any record of any partition).
    /// Only waiters that exist are woken: create it before checking what it
    /// waits for.
    pub(super) fn work_finished(&self) -> Notified<'_> {
        self.changed.notified()
    }

    /// Hand polled records to the scheduler (the completion takes out those
    /// the group says are done), then start what may start.
    pub(super) fn dispatch(self: &Arc<Self>, batch: PartitionRecords) {
        self.dispatch_with(batch, |_| {});
    }

    /// [`Runtime::dispatch`], telling the partition's completion about the
    /// records first (`note`, under the lock).
    pub(super) fn dispatch_with(
        self: &Arc<Self>,
        batch: PartitionRecords,
        note: impl FnOnce(&mut C),
    ) {
        let Some(first) = batch.records.first().map(|r| r.offset) else {
            return;
        };
        let tp = batch.tp;
        {
            let mut st = self.lock();
            let st = &mut *st;
            let p = self.part_entry(&mut st.parts, &mut st.loaded, &st.incarnations, &tp, first);
            let epoch = p.epoch;
            note(&mut p.completion);
            let mut records = batch.records;
            let already_done = p.completion.dispatched(&mut records);
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

    /// `records` dispatched, holding `bytes`: count them in flight, and
    /// their peaks.
    #[inline]
    fn admit(&self, records: usize, bytes: usize) {
        let (records, bytes) = self.in_flight.admit(records, bytes);
        self.stats
            .peak_in_flight_bytes
            .fetch_max(bytes, Ordering::Relaxed);
        self.stats
            .peak_in_flight_records
            .fetch_max(records, Ordering::Relaxed);
    }

    /// The runtime state of `tp`, created at `start` (the first offset
    /// seen in this incarnation) if it has none.
    fn part_entry<'a>(
        &self,
        parts: &'a mut PartMap<PartRuntime<C>>,
        loaded: &mut HashMap<TopicPartition, LoadedAt<C::Loaded>>,
        incarnations: &HashMap<TopicPartition, u64>,
        tp: &TopicPartition,
        start: i64,
    ) -> &'a mut PartRuntime<C> {
        parts.entry(tp.clone()).or_insert_with(|| {
            let incarnation = incarnations.get(tp).copied().unwrap_or_default();
            // What was read before a reset describes the old log.
            let loaded = loaded
                .remove(tp)
                .filter(|l| l.incarnation == incarnation)
                .map(|l| l.loaded);
            let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
            PartRuntime {
                epoch,
                completion: C::new(epoch, start, loaded),
                incarnation,
                queued: 0,
                bound: QueueBound::default(),
                failures: FailureRun::default(),
                stop: Arc::new(AtomicBool::new(false)),
            }
        })
    }

    /// Before dispatching a poll's records: a partition whose position was
    /// reset since its epoch began (out of range, truncation, recreated
    /// topic) drops that epoch: its queued records are skipped, running
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
    /// The completion follows them, so lag drains to zero.
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
                p.completion.passed(pos.position);
            }
        }
    }

    /// A worker is done with a record of `tp` dispatched in `epoch`.
    pub(super) fn finish(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        record: &Record,
        outcome: Outcome,
    ) {
        self.finish_all(tp, epoch, [record], outcome);
    }

    /// A worker is done with these records of `tp`, dispatched in `epoch`:
    /// each is reported to the partition's [`Completion`] as `outcome`. A
    /// stale epoch reports nothing. Their in-flight bytes are
    /// [`record_bytes`] again, as at dispatch (three lengths: cheaper than
    /// carrying the figure through the lanes).
    pub(super) fn finish_all<'r>(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        finished: impl IntoIterator<Item = &'r Record>,
        outcome: Outcome,
    ) {
        let (mut records, mut bytes) = (0, 0);
        let mut resume = false;
        {
            let mut st = self.lock();
            let mut part = st.parts.get_mut(tp);
            // A stale epoch (revoked, maybe reassigned since) reports nothing.
            let mut current = part.as_deref_mut().filter(|p| p.epoch == epoch);
            for r in finished {
                records += 1;
                bytes += record_bytes(r);
                if let Some(p) = current.as_deref_mut() {
                    p.completion.finished(r.offset, outcome);
                }
            }
            if let Some(p) = current {
                p.queued = p.queued.saturating_sub(records);
            }
            if let Some(p) = part {
                if outcome == Outcome::Handled && records > 0 {
                    p.failures.handled();
                }
                resume = p.bound.resumes(p.queued);
            }
        }
        if records == 0 {
            return;
        }
        self.in_flight.release(records, bytes, resume);
        self.changed.notify_waiters();
    }

    /// The attempt a call of `records` (of `tp`, dispatched in `epoch`)
    /// is: the highest their completion gives (see
    /// [`Completion::attempt`]); 1 for a stale epoch.
    pub(super) fn attempt_of(&self, tp: &TopicPartition, epoch: u64, records: &[Record]) -> u32 {
        let st = self.lock();
        let Some(p) = st.parts.get(tp).filter(|p| p.epoch == epoch) else {
            return 1;
        };
        records
            .iter()
            .map(|r| p.completion.attempt(r.offset))
            .max()
            .unwrap_or(1)
    }

    /// Whether a record failed for good is REJECTed instead of written to
    /// the runtime's DLT: a share group (the broker redelivers) with its
    /// own DLQ (KIP-1191), which the broker writes, or without a
    /// dead-letter producer (then the broker archives it).
    pub(super) fn rejects_dead_letters(&self) -> bool {
        C::REDELIVERS && (self.group_dlq || self.forwarding.producer().is_none())
    }

    /// May work of this epoch start or go on (retry, forward)? Not once
    /// the partition is revoked, reassigned, lost, or being revoked.
    pub(super) fn may_continue(&self, tp: &TopicPartition, epoch: u64) -> bool {
        self.lock()
            .parts
            .get(tp)
            .is_some_and(|p| p.epoch == epoch && !p.stop.load(Ordering::Acquire))
    }

    /// Sleep until `until`, waking early when the partition is revoked or
    /// the runtime stops; `false` if work of `epoch` may not go on.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
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
    /// are released (the next owner gets them) and running ones may finish.
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
                self.finish_all(tp, epoch, &records, Outcome::Released);
            }
        }
        self.stopped.notify_waiters();
    }

    /// Wait (up to `timeout`) until no record of `tps` (all if `None`) runs.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
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

    /// Records dispatched and not yet finished, over every partition.
    pub(super) fn busy(&self) -> usize {
        self.lock().parts.values().map(|p| p.queued).sum()
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

    /// Until when `tp` is quarantined, if it is now.
    pub(super) fn quarantined_until(&self, tp: &TopicPartition) -> Option<Instant> {
        let now = Instant::now();
        self.lock()
            .parts
            .get(tp)
            .and_then(|p| p.failures.quarantined_until(now))
    }

    /// A record of `tp` whose decision counted toward quarantine was
    /// dead-lettered: quarantine the partition at the policy's threshold.
    pub(super) fn dead_lettered_in_row(&self, tp: &TopicPartition) {
        let quarantined = {
            let mut st = self.lock();
            let Some(p) = st.parts.get_mut(tp) else {
                return;
            };
            self.policy.dead_lettered(&mut p.failures, Instant::now())
        };
        if quarantined {
            let q = self.cfg.quarantine;
            self.count(Count::Quarantines, 1);
            tracing::warn!(%tp, pause = ?q.pause, failures = q.after_failures, "partition quarantined after failures in a row; the others go on");
            self.observe(Event::Quarantined(tp.clone()));
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
            let Some(permit) = self.workers.try_permit() else {
                return;
            };
            let Some(unit) = st.take_unit() else {
                return; // the permit is released under the lock
            };
            let worker = self.handler.clone().worker(self.clone(), unit, permit);
            self.workers.spawn(worker);
        }
    }

    /// A worker finished a unit of `lane` (dispatched in `epoch`): the
    /// records it did not start go back to the lane's front, and the lane
    /// may be taken again. Returns the worker's next unit; `None` when no
    /// lane is ready (its permit is then released under the lock) or when
    /// it holds no permit (it waited without one: [`Runtime::pump`]
    /// decides who runs next).
    pub(super) fn unit_done(
        self: &Arc<Self>,
        lane: &LaneId,
        epoch: u64,
        not_started: Vec<Record>,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Option<Unit> {
        let mut st = self.lock();
        st.sched.give_back(lane, epoch, not_started);
        st.sched.done(lane);
        if permit.is_none() {
            drop(st);
            self.pump();
            return None;
        }
        let next = st.take_unit();
        if next.is_none() {
            *permit = None; // released under the lock: see pump
        }
        next
    }

    /// A worker permit, once one is free (a worker taking one back after
    /// waiting without it).
    pub(super) async fn permit(&self) -> OwnedSemaphorePermit {
        self.workers.permit().await
    }

    /// Spawn a task owned by this runtime (see [`Workers`]).
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> AbortHandle {
        self.workers.spawn(task)
    }

    /// Abort every task this runtime spawned.
    pub(super) fn abort_tasks(&self) {
        self.workers.abort_all();
    }

    /// Completes when finished work has made room for a paused partition
    /// (or under the global bound): the poll loop, paused until workers
    /// drain, stops waiting in its poll and resumes fetching at once.
    pub(super) fn capacity_freed(&self) -> Notified<'_> {
        self.in_flight.capacity_freed()
    }

    /// Records and bytes in flight now, for the poll task's snapshots.
    pub(super) fn in_flight(&self) -> (usize, usize) {
        self.in_flight.now()
    }

    /// Which of `assigned` must not be fetched now: all of them at the
    /// global in-flight bound (until below half; `globally` says whether
    /// that pause held, and is updated), else those whose queue is full,
    /// that are quarantined, or whose completion holds fetching. The
    /// second value: whether a pause waits only for workers to drain (the
    /// global bound or a full queue).
    pub(super) fn to_pause(
        &self,
        assigned: Vec<TopicPartition>,
        globally: &mut bool,
    ) -> (HashSet<TopicPartition>, bool) {
        let in_flight = self.in_flight.now();
        self.metrics.in_flight(in_flight.0, in_flight.1);
        let paused = self.in_flight.global_pause(in_flight, *globally);
        if paused && !*globally {
            self.stats.pauses.fetch_add(1, Ordering::Relaxed);
        }
        *globally = paused;
        if paused {
            return (assigned.into_iter().collect(), true);
        }
        let now = Instant::now();
        let bound = partition_bound(
            self.cfg.max_queued_per_partition,
            self.cfg.max_in_flight_records,
            assigned.len(),
        );
        let mut queue_full = false;
        let mut st = self.lock();
        let want = assigned
            .into_iter()
            .filter(|tp| {
                let Some(p) = st.parts.get_mut(tp) else {
                    return false;
                };
                if p.bound.update(p.queued, bound) {
                    self.stats.partition_pauses.fetch_add(1, Ordering::Relaxed);
                }
                queue_full |= p.bound.is_full();
                p.bound.is_full()
                    || p.completion.holds_fetching()
                    || p.failures.quarantined_until(now).is_some()
            })
            .collect();
        (want, queue_full)
    }
}

/// What a share group adds: acknowledgements, which the poll task takes
/// and hands to its `ShareConsumer`.
impl Runtime<Acks> {
    /// Every partition's acknowledgements not taken yet.
    pub(super) fn take_acks(&self) -> Vec<(TopicPartition, i64, AcknowledgeType)> {
        let mut st = self.lock();
        let mut out = Vec::new();
        for (tp, p) in st.parts.iter_mut() {
            out.extend(
                p.completion
                    .take()
                    .into_iter()
                    .map(|(o, a)| (tp.clone(), o, a)),
            );
        }
        out
    }
}

/// What a consumer group adds: offsets, committed.
impl Runtime<Offsets> {
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
                        committed: p.completion.last_committed(),
                        queued: p.queued,
                    })
            })
            .collect()
    }

    /// Start the commit loop of the configured [`CommitPolicy`] (none for
    /// `OnRevokeAndShutdown`); the runtime owns it (see
    /// [`Runtime::spawn`]), and the poll loop aborts it before the final
    /// commit.
    pub(super) fn start_commit_loop(
        self: &Arc<Self>,
        committer: &Committer,
    ) -> Option<AbortHandle> {
        match self.cfg.commit_policy {
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
    /// until the guard is dropped (see [`Commits::one_at_a_time`]).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(super) async fn one_commit_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.commits.one_at_a_time().await
    }

    /// Commit the commit point (and the completed-beyond map as metadata)
    /// of `only` (all if `None`), where it changed.
    ///
    /// # Cancel safety
    /// Not cancel safe (see [`Commits::commit_locked`]).
    pub(super) async fn commit(&self, committer: &Committer, only: Option<&[TopicPartition]>) {
        let _one_at_a_time = self.one_commit_at_a_time().await;
        self.commit_locked(committer, only).await;
    }

    /// [`Runtime::commit`] for a caller already holding the commit lock
    /// (see [`Runtime::one_commit_at_a_time`]).
    ///
    /// # Cancel safety
    /// Not cancel safe (see [`Commits::commit_locked`]).
    pub(super) async fn commit_locked(
        &self,
        committer: &Committer,
        only: Option<&[TopicPartition]>,
    ) {
        let points = |limit| self.commit_points(only, limit);
        let attempted = |attempt: Attempt<'_>| self.commit_attempted(attempt);
        self.commits
            .commit_locked(committer, points, attempted)
            .await;
    }

    /// The commit points of `only` (all if `None`) that changed, their
    /// metadata within `limit` bytes.
    fn commit_points(&self, only: Option<&[TopicPartition]>, limit: usize) -> Vec<CommitPoint> {
        let mut st = self.lock();
        st.parts
            .iter_mut()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| {
                let (offset, metadata) = p.completion.commit_point(limit)?;
                Some(CommitPoint {
                    tp: tp.clone(),
                    offset,
                    metadata,
                    incarnation: p.incarnation,
                })
            })
            .collect()
    }

    /// A commit attempt ended: count and time it; an accepted one is the
    /// partitions' last commit.
    fn commit_attempted(&self, attempt: Attempt<'_>) {
        match attempt {
            Attempt::Accepted(points, took) => {
                self.metrics.commit_seconds.record(took.as_secs_f64());
                {
                    let mut st = self.lock();
                    for c in points {
                        if let Some(p) = st.parts.get_mut(&c.tp) {
                            p.completion.committed(c.offset, c.metadata.clone());
                        }
                    }
                }
                self.count(Count::Commits, 1);
                self.observe(Event::Committed(
                    points
                        .iter()
                        .map(|c| (c.tp.clone(), c.offset, c.metadata.clone()))
                        .collect(),
                ));
            }
            Attempt::Failed(took) => {
                self.metrics.commit_seconds.record(took.as_secs_f64());
                self.count(Count::CommitFailures, 1);
            }
        }
    }
}
