//! One unit of work (a record, or a batch of one lane's records) from
//! start to finish: skip what may not start or is already done, wait out a
//! quarantine or a retry topic's delay, call the handler with its deadline,
//! retry with backoff, and forward failures to a retry topic or the DLT,
//! completing the offsets only once the write is acknowledged.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use consumer_core::TopicPartition;
use kafka_wire::records::Record;
use kafka_wire::{Producer, ProducerRecord};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

use super::runtime::{Count, Done, Runtime};
use super::{BatchHandler, Handler};
use crate::config::{Idempotency, ProcessorConfig};
use crate::observe::Event;
use crate::retry::{Decision, HandlerError};
use crate::retry_topics::{self, NextHop};
use crate::scheduler::LaneId;

/// Up to this many records of one lane make a unit of work for a
/// one-record handler: the worker calls the handler for each in turn, so
/// the scheduling and bookkeeping cost is paid once per unit. Above the
/// consumer's default `max.poll.records` (500), so a poll's records for a
/// partition stay one vector from the fetch to the handler.
pub(super) const UNIT_RECORDS: usize = 512;

/// A unit of a one-record handler gives its lane back after this long, so
/// other lanes get a worker too (records not started go back in front).
pub(super) const UNIT_TIME_BUDGET: Duration = Duration::from_millis(5);

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

/// How a unit calls the application's handler: a [`Handler`] once per
/// record ([`OneRecord`]), a [`BatchHandler`] once for the unit's records
/// ([`Batched`]). Calls are static: each call's future is part of the
/// worker's, with no allocation per call. The handler's type is erased
/// once per worker task instead (see `StartWorker` in workers.rs).
pub(super) trait CallHandler: Send + Sync + 'static {
    /// Whether one call takes all the records of a unit (a batch handler).
    const BATCH: bool;

    /// Call the handler with `records` (one, unless [`Self::BATCH`]).
    fn call<'a>(
        &'a self,
        tp: &'a TopicPartition,
        records: &'a [Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;
}

/// A [`Handler`]: one record per call.
pub(super) struct OneRecord<H>(pub(super) H);

impl<H: Handler> CallHandler for OneRecord<H> {
    const BATCH: bool = false;

    fn call<'a>(
        &'a self,
        tp: &'a TopicPartition,
        records: &'a [Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        self.0.handle(tp, &records[0])
    }
}

/// A [`BatchHandler`]: a unit's records (at most `max_batch`) per call.
pub(super) struct Batched<B>(pub(super) B);

impl<B: BatchHandler> CallHandler for Batched<B> {
    const BATCH: bool = true;

    fn call<'a>(
        &'a self,
        tp: &'a TopicPartition,
        records: &'a [Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        self.0.handle_batch(tp, records)
    }
}

/// Where records that fail go (only this file touches it). The handler
/// itself is passed down from the worker (workers.rs), typed.
pub(super) struct Handling {
    /// Writes to the DLT and the retry topics.
    producer: Option<Producer>,
    /// The consumer group, named in the headers of forwarded records.
    group: String,
    /// Retry topic → (source topic, step).
    retry_index: HashMap<String, (String, usize)>,
}

impl Handling {
    pub(super) fn new(cfg: &ProcessorConfig, producer: Option<Producer>, group: String) -> Self {
        let retry_index = cfg
            .retry_topics
            .as_ref()
            .map(|r| r.index(&cfg.topics))
            .unwrap_or_default();
        Self {
            producer,
            group,
            retry_index,
        }
    }
}

/// Times a unit's handler calls, for `resilience_handler_seconds` and the
/// unit's time budget. A clock read costs about as much as a trivial
/// handler call, so calls that take under [`CallClock::FAST`] are timed in
/// groups (one read per group of up to [`CallClock::MAX_GROUP`] calls, each
/// call recorded at the group's mean). A group whose mean is slower sets
/// the group back to one call, so slow handlers are timed call by call.
/// Time outside handler calls (a wait, the idempotency store, a retry) is
/// left out by a [`CallClock::read`] on both sides of it.
struct CallClock {
    /// When the current group of calls started.
    group_start: std::time::Instant,
    /// Calls ended in the current group.
    calls: u32,
    /// Calls per group at present (1 ..= MAX_GROUP).
    group: u32,
    /// The last clock read.
    now: std::time::Instant,
}

impl CallClock {
    const FAST: Duration = Duration::from_micros(2);
    const MAX_GROUP: u32 = 32;

    fn new(now: std::time::Instant) -> Self {
        CallClock {
            group_start: now,
            calls: 0,
            group: 1,
            now,
        }
    }

    /// A call ended: the clock is read once its group is complete.
    fn call_ended(&mut self, seconds: &metrics::Histogram) {
        self.calls += 1;
        if self.calls >= self.group {
            self.read(seconds);
        }
    }

    /// Read the clock, record the calls of the group so far, and time the
    /// next call from now.
    fn read(&mut self, seconds: &metrics::Histogram) {
        let now = std::time::Instant::now();
        if self.calls > 0 {
            let mean = (now - self.group_start) / self.calls;
            seconds.record_many(mean.as_secs_f64(), self.calls as usize);
            self.group = if mean < Self::FAST {
                (self.group * 2).min(Self::MAX_GROUP)
            } else {
                1
            };
        }
        self.calls = 0;
        self.group_start = now;
        self.now = now;
    }
}

/// A `DedupStore` call that panicked: an error of the store (retried).
fn store_panicked(message: &str) -> HandlerError {
    HandlerError::Retryable(format!("the DedupStore panicked: {message}"))
}

/// A store error that retrying cannot fix (an id the store can never hold).
fn never_stored(e: &HandlerError) -> bool {
    !e.is_retryable()
}

fn rand_unit() -> f64 {
    rand::random::<f64>()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A unit's records with their idempotency keys, index by index.
struct Slab {
    records: Vec<Record>,
    /// One per record, or none at all without an idempotency store.
    keys: Vec<Option<String>>,
}

impl Slab {
    fn len(&self) -> usize {
        self.records.len()
    }

    /// Records `i..j`.
    fn records(&self, i: usize, j: usize) -> &[Record] {
        &self.records[i..j]
    }

    /// The idempotency keys of records `i..j` (empty without a store).
    fn keys(&self, i: usize, j: usize) -> &[Option<String>] {
        self.keys.get(i..j).unwrap_or_default()
    }

    /// The records from `i` on.
    fn into_rest(mut self, i: usize) -> Vec<Record> {
        self.records.split_off(i)
    }
}

impl Runtime {
    /// The producer that writes to the DLT and the retry topics, if one is
    /// configured (the poll loop closes it at shutdown).
    pub(super) fn producer(&self) -> Option<&Producer> {
        self.handling.producer.as_ref()
    }

    fn idempotency(&self) -> Option<&Idempotency> {
        self.cfg().idempotency.as_ref()
    }

    /// The source topic of `topic` (itself, unless it is a retry topic),
    /// and its step in the retry chain.
    fn source_of<'a>(&'a self, topic: &'a str) -> (&'a str, Option<usize>) {
        match self.handling.retry_index.get(topic) {
            Some((src, step)) => (src.as_str(), Some(*step)),
            None => (topic, None),
        }
    }

    /// Run `unit`: call `handler` for each record in turn (a one-record
    /// handler) or once for them all (a batch handler). Returns the records
    /// not started when the unit's time budget ran out, for the lane's front.
    pub(super) async fn run_unit<C: CallHandler>(
        self: &Arc<Self>,
        handler: &C,
        unit: Unit,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Vec<Record> {
        let Unit {
            lane,
            epoch,
            records,
            stop,
        } = unit;
        let tp: &TopicPartition = &lane.0;
        if !self.may_continue(tp, epoch) {
            self.finish_all(tp, epoch, &records, Done::Skipped);
            return Vec::new();
        }
        let Some((slab, later)) = self.skip_duplicates(tp, epoch, records).await else {
            return Vec::new();
        };
        let per_call = if C::BATCH { slab.len().max(1) } else { 1 };
        let len = slab.len();
        let from_retry_topic = self.handling.retry_index.contains_key(&tp.topic);
        let started = std::time::Instant::now();
        // Compared per record: a comparison, where `now - started` is a
        // checked subtraction (2 % of a no-op handler's profile).
        let budget_end = started + UNIT_TIME_BUDGET;
        let seconds = &self.metrics().handler_seconds;
        let mut clock = CallClock::new(started);
        // Records `handled..i` were handled and are not finished yet: they
        // are finished together, under one lock.
        let mut handled = 0;
        let mut failed_before = false;
        let mut i = 0;
        while i < len {
            let j = (i + per_call).min(len);
            if i > 0 {
                if stop.load(Ordering::Acquire) {
                    break; // revoked: the rest is the next owner's
                }
                if clock.now >= budget_end {
                    self.finish_handled(tp, epoch, slab.records(handled, i));
                    let mut rest = slab.into_rest(i);
                    rest.extend(later);
                    return rest;
                }
            }
            // Wait without a permit: the other lanes go on meanwhile.
            if i == 0 || failed_before || from_retry_topic {
                if let Some(until) = self.wait_until(tp, slab.records(i, j)) {
                    clock.read(seconds);
                    self.finish_handled(tp, epoch, slab.records(handled, i));
                    handled = i;
                    self.release(permit);
                    if !self.sleep_unless_stopped(tp, epoch, until).await {
                        break;
                    }
                    self.reacquire(permit).await;
                    clock.read(seconds);
                }
            }
            let keys = slab.keys(i, j);
            let result = self.attempt(handler, tp, slab.records(i, j), 1).await;
            clock.call_ended(seconds);
            match result {
                Ok(()) => {
                    if !keys.is_empty() {
                        clock.read(seconds);
                        self.mark_done(keys).await;
                        clock.read(seconds);
                    }
                }
                Err(err) => {
                    clock.read(seconds);
                    self.finish_handled(tp, epoch, slab.records(handled, i));
                    failed_before = true;
                    let records = slab.records(i, j);
                    self.after_failure(handler, tp, epoch, records, keys, err, permit)
                        .await;
                    handled = j; // finished by after_failure
                    clock.read(seconds);
                }
            }
            i = j;
        }
        self.finish_handled(tp, epoch, slab.records(handled, i));
        if i < len {
            // Stopped early: the rest is the next owner's.
            let skipped = slab.records(i, len).iter().chain(&later);
            self.finish_all(tp, epoch, skipped, Done::Skipped);
            return Vec::new();
        }
        later
    }

    /// Records the handler took successfully: count them (once per unit,
    /// not per record: a shared counter bumped per record by every worker
    /// cost a sixth of a call's own time in the profile) and complete them.
    fn finish_handled(&self, tp: &TopicPartition, epoch: u64, records: &[Record]) {
        if records.is_empty() {
            return;
        }
        self.count(Count::Handled, records.len() as u64);
        self.finish_all(tp, epoch, records, Done::Handled);
    }

    /// Call the handler once (attempt number `attempt`), with its deadline
    /// and a span. The caller times it (`resilience_handler_seconds`) and
    /// counts what it handled ([`Self::finish_handled`]).
    async fn attempt<C: CallHandler>(
        &self,
        handler: &C,
        tp: &TopicPartition,
        records: &[Record],
        attempt: u32,
    ) -> Result<(), HandlerError> {
        let span = tracing::info_span!(
            "handle",
            topic = %tp.topic,
            partition = tp.partition,
            offset = records[0].offset,
            records = records.len(),
            attempt,
        );
        // Entering a disabled span on every poll costs more than the check.
        if span.is_disabled() {
            self.call_handler(handler, tp, records).await
        } else {
            self.call_handler(handler, tp, records)
                .instrument(span)
                .await
        }
    }

    /// The first attempt at `records` failed with `err`: retry with backoff
    /// (only this lane waits), then forward them to a retry topic or the
    /// DLT. Every record is finished on return.
    #[allow(clippy::too_many_arguments)]
    async fn after_failure<C: CallHandler>(
        self: &Arc<Self>,
        handler: &C,
        tp: &TopicPartition,
        epoch: u64,
        records: &[Record],
        keys: &[Option<String>],
        mut err: HandlerError,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) {
        let mut delays = self.cfg().backoff.delays(rand_unit);
        let mut attempt = 1u32;
        loop {
            if !self.may_continue(tp, epoch) {
                // Revoked meanwhile: the next owner handles these records.
                return self.finish_all(tp, epoch, records, Done::Skipped);
            }
            if self.cfg().retry_topics.is_some() && !matches!(err, HandlerError::Unavailable(_)) {
                break; // no blocking retry: the retry topic is the retry
            }
            match self.cfg().backoff.decide(attempt, &err, delays.next()) {
                Decision::RetryAfter(d) => {
                    self.count(Count::Retried, 1);
                    if matches!(err, HandlerError::Unavailable(_))
                        && attempt >= self.cfg().backoff.max_attempts
                    {
                        tracing::warn!(%tp, offset = records[0].offset, attempt, error = %err, delay = ?d,
                            "a dependency is unavailable; waiting for it (never dead-lettered)");
                    } else {
                        tracing::debug!(%tp, offset = records[0].offset, attempt, error = %err, delay = ?d, "retrying");
                    }
                    self.release(permit); // only this lane waits
                    if !self
                        .sleep_unless_stopped(tp, epoch, Instant::now() + d)
                        .await
                    {
                        return self.finish_all(tp, epoch, records, Done::Skipped);
                    }
                    self.reacquire(permit).await;
                    attempt += 1;
                    let started = std::time::Instant::now();
                    let result = self.attempt(handler, tp, records, attempt).await;
                    self.metrics()
                        .handler_seconds
                        .record(started.elapsed().as_secs_f64());
                    match result {
                        Ok(()) => {
                            self.mark_done(keys).await;
                            return self.finish_handled(tp, epoch, records);
                        }
                        Err(e) => err = e,
                    }
                }
                Decision::DeadLetter => break,
            }
        }
        self.forward_failed(tp, epoch, records, &err, attempt).await;
    }

    /// Call `handler` once, with the deadline (`handler_timeout`). Its
    /// future is polled in place, inside this one's: no allocation.
    async fn call_handler<C: CallHandler>(
        &self,
        handler: &C,
        tp: &TopicPartition,
        records: &[Record],
    ) -> Result<(), HandlerError> {
        // A panic fails this call (non-retryable: the DLT), never the
        // worker: see panics.rs.
        let call = crate::panics::call("the handler", || handler.call(tp, records));
        match self.cfg().handler_timeout {
            Some(d) => tokio::time::timeout(d, call).await.unwrap_or_else(|_| {
                Err(HandlerError::Retryable(format!(
                    "handler exceeded its {d:?} deadline"
                )))
            }),
            None => call.await,
        }
    }

    /// When this unit may start: after a quarantine, and (for a retry
    /// topic's records) when the last of them is due.
    fn wait_until(&self, tp: &TopicPartition, records: &[Record]) -> Option<Instant> {
        let quarantine = self
            .lock()
            .part(tp)
            .and_then(|p| p.quarantined_until)
            .filter(|u| *u > Instant::now());
        let due = if self.handling.retry_index.contains_key(&tp.topic) {
            records
                .iter()
                .filter_map(retry_topics::due_ms)
                .max()
                .map(|due| due - now_ms())
                .filter(|ms| *ms > 0)
                .map(|ms| Instant::now() + Duration::from_millis(ms as u64))
        } else {
            None
        };
        quarantine.max(due)
    }

    /// Retry `op` until it succeeds, pausing 50 ms, doubling up to 5 s, and
    /// telling `failed` about each error. With a `fence` (partition, epoch),
    /// give up (`None`) once that work may not go on; without one, never.
    async fn until_ok<T, E, Fut>(
        &self,
        fence: Option<(&TopicPartition, u64)>,
        mut op: impl FnMut() -> Fut,
        failed: impl Fn(&E),
    ) -> Option<T>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut delays = crate::retry::runtime_delays();
        loop {
            match op().await {
                Ok(v) => return Some(v),
                Err(e) => failed(&e),
            }
            let until = Instant::now() + delays.next().unwrap_or(Duration::from_secs(5));
            match fence {
                Some((tp, epoch)) => {
                    if !self.sleep_unless_stopped(tp, epoch, until).await {
                        return None;
                    }
                }
                None => tokio::time::sleep_until(until).await,
            }
        }
    }

    /// Drop records whose side effects were already applied (idempotency
    /// store), completing them. Returns the rest with their idempotency
    /// keys (none at all without a store), and the records from the first
    /// one whose key repeats a key kept here on: those wait for a later
    /// unit, after this one has marked its keys done, or both copies would
    /// pass the check. `None` if the partition went away meanwhile (every
    /// record is then given back).
    async fn skip_duplicates(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        records: Vec<Record>,
    ) -> Option<(Slab, Vec<Record>)> {
        let Some(idem) = self.idempotency() else {
            let keys = Vec::new();
            return Some((Slab { records, keys }, Vec::new()));
        };
        let mut keep = Vec::with_capacity(records.len());
        let mut keys = Vec::with_capacity(records.len());
        let mut kept_keys = std::collections::HashSet::new();
        let mut records = records.into_iter();
        while let Some(r) = records.next() {
            let Some(key) = idem.key.key_of(tp, &r) else {
                keep.push(r);
                keys.push(None);
                continue;
            };
            if kept_keys.contains(&key) {
                let later = std::iter::once(r).chain(records).collect();
                return Some((
                    Slab {
                        records: keep,
                        keys,
                    },
                    later,
                ));
            }
            let seen = self
                .until_ok(
                    Some((tp, epoch)),
                    || async {
                        match crate::panics::call_with(|| idem.store.seen(&key), store_panicked).await {
                            Err(e) if never_stored(&e) => Ok(None),
                            other => other.map(Some),
                        }
                    },
                    |e| tracing::error!(%tp, offset = r.offset, error = %e, "idempotency store unavailable; partition waits"),
                )
                .await;
            match seen {
                Some(None) => {
                    // The store can never hold this id: handled without
                    // the check, and not marked (DedupStore's errors).
                    tracing::error!(%tp, offset = r.offset, key, "the idempotency store refuses this event id for good; handling it without the duplicate check");
                    keep.push(r);
                    keys.push(None);
                }
                None => {
                    let rest = std::iter::once(&r).chain(&keep).chain(records.as_slice());
                    self.finish_all(tp, epoch, rest, Done::Skipped);
                    return None;
                }
                Some(Some(true)) => {
                    self.count(Count::Deduplicated, 1);
                    self.finish(tp, epoch, &r, Done::Handled);
                }
                Some(Some(false)) => {
                    kept_keys.insert(key.clone());
                    keep.push(r);
                    keys.push(Some(key));
                }
            }
        }
        Some((
            Slab {
                records: keep,
                keys,
            },
            Vec::new(),
        ))
    }

    /// Record the side effects as applied, before the offsets may commit.
    /// Retries until the store answers: giving up would redo side effects.
    async fn mark_done(&self, keys: &[Option<String>]) {
        let Some(idem) = self.idempotency() else {
            return;
        };
        for key in keys.iter().flatten() {
            self.until_ok(
                None,
                || async {
                    match crate::panics::call_with(|| idem.store.mark(key), store_panicked).await {
                        Err(e) if never_stored(&e) => {
                            tracing::error!(key, error = %e, "the idempotency store refuses this event id for good; its offset commits unmarked (a redelivery would apply it again)");
                            Ok(())
                        }
                        other => other,
                    }
                },
                |e| tracing::error!(key, error = %e, "could not mark an event processed; retrying before its offset may commit"),
            )
            .await;
        }
    }

    /// The records failed for good here: each goes to its next retry topic
    /// or the DLT, and completes once the write is acknowledged.
    async fn forward_failed(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        records: &[Record],
        err: &HandlerError,
        attempts: u32,
    ) {
        let (source, step) = self.source_of(&tp.topic);
        let hop = match &self.cfg().retry_topics {
            Some(chain) => retry_topics::next_hop(chain, source, step, err),
            None => NextHop::DeadLetter,
        };
        let dlt = self.cfg().dlt_topic_of(source);
        for record in records {
            let (out, target) = match &hop {
                NextHop::Retry { topic, delay } => (
                    retry_topics::to_retry_topic(
                        topic,
                        *delay,
                        now_ms(),
                        &tp.topic,
                        tp.partition,
                        &self.handling.group,
                        record,
                        err,
                    ),
                    topic.as_str(),
                ),
                NextHop::DeadLetter => (
                    crate::dlt::dead_letter(
                        &dlt,
                        &tp.topic,
                        tp.partition,
                        &self.handling.group,
                        record,
                        err,
                        crate::dlt::attempts_so_far(record) + attempts,
                    ),
                    dlt.as_str(),
                ),
            };
            if !self
                .write_until_acked(tp, epoch, record.offset, target, out)
                .await
            {
                self.finish(tp, epoch, record, Done::Skipped);
                continue;
            }
            let offset = record.offset;
            match &hop {
                NextHop::Retry { topic, .. } => {
                    self.count(Count::SentToRetryTopic, 1);
                    let topic = topic.clone();
                    self.observe(Event::SentToRetryTopic {
                        tp: tp.clone(),
                        offset,
                        topic,
                    });
                }
                NextHop::DeadLetter => {
                    self.count(Count::DeadLettered, 1);
                    self.observe(Event::DeadLettered {
                        tp: tp.clone(),
                        offset,
                    });
                }
            }
            self.finish(tp, epoch, record, Done::Forwarded);
        }
        // Poison (non-retryable) records are the DLT's job and never
        // quarantine; retryable ones that ran out of retries suggest an
        // outage, and a run of them pauses the partition.
        if err.is_retryable() && matches!(hop, NextHop::DeadLetter) {
            self.count_failure(tp);
        }
    }

    /// Write `out` and wait for the acknowledgement, retrying: the
    /// partition stalls (and says so) rather than commit past an unwritten
    /// record. `false` if the partition went away meanwhile.
    ///
    /// A write that can never succeed is not retried as is: a record too
    /// large for the target (its copy carries the provenance headers on
    /// top of the original, so a record near `max.message.bytes` grows
    /// past it) is written again without its value, a header saying so
    /// (`kafka_dlt-value-dropped`: the value's size), so the partition
    /// moves on; the provenance headers point at the original record.
    async fn write_until_acked(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        offset: i64,
        target: &str,
        out: ProducerRecord,
    ) -> bool {
        let out = std::sync::Mutex::new(out);
        let write = || async {
            let Some(p) = &self.handling.producer else {
                return Err(
                    "no dead-letter producer configured (ProcessorConfig::dead_letter)".to_string(),
                );
            };
            let record = out.lock().expect("record lock").clone();
            let sent = match p.send(record).await {
                Ok(delivery) => delivery.await.map(|_| ()),
                Err(e) => Err(e),
            };
            match sent {
                Err(e) if crate::dlt::too_large(&e) => {
                    let mut out = out.lock().expect("record lock");
                    if crate::dlt::drop_value(&mut out) {
                        tracing::warn!(%tp, offset, target, error = %e, "the forwarded record is too large for its target; writing it again without its value (kafka_dlt-value-dropped)");
                    }
                    Err(e.to_string())
                }
                other => other.map_err(|e| e.to_string()),
            }
        };
        let failed = |e: &String| {
            self.count(Count::DltWriteFailures, 1);
            tracing::error!(%tp, offset, error = %e, target, "could not write the failed record; its partition waits and nothing past it commits");
        };
        self.until_ok(Some((tp, epoch)), write, failed)
            .await
            .is_some()
    }

    /// One more failure in a row; quarantine the partition at the threshold.
    fn count_failure(&self, tp: &TopicPartition) {
        let q = self.cfg().quarantine;
        if q.after_failures == 0 {
            return;
        }
        let quarantined = {
            let mut st = self.lock();
            let Some(p) = st.part_mut(tp) else {
                return;
            };
            p.failures_in_row += 1;
            if p.failures_in_row >= q.after_failures {
                p.failures_in_row = 0;
                p.quarantined_until = Some(Instant::now() + q.pause);
                true
            } else {
                false
            }
        };
        if quarantined {
            self.count(Count::Quarantines, 1);
            tracing::warn!(%tp, pause = ?q.pause, failures = q.after_failures, "partition quarantined after failures in a row; the others go on");
            self.observe(Event::Quarantined(tp.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use consumer_core::ConsumerConfig;

    use crate::processor::Stats;

    /// A handler whose future keeps 4 KiB across an await.
    struct Big;
    impl Handler for Big {
        async fn handle(&self, _: &TopicPartition, r: &Record) -> Result<(), HandlerError> {
            let buf = [r.offset as u8; 4096];
            tokio::task::yield_now().await;
            std::hint::black_box(&buf);
            Ok(())
        }
    }

    /// A call's future holds the handler's own, in place: a boxed one (a
    /// `malloc` and a `free` per record, 8 % of the runtime's instructions
    /// with a no-op handler) would leave only a pointer here.
    #[test]
    fn a_handler_call_holds_the_handlers_future_in_place() {
        let consumer = ConsumerConfig::builder()
            .bootstrap("127.0.0.1:9092")
            .unwrap()
            .build()
            .unwrap();
        let handler = Arc::new(OneRecord(Big));
        let rt = Runtime::new(
            ProcessorConfig::new(consumer, &["t"]),
            handler.clone(),
            Arc::new(Stats::default()),
            None,
        );
        let tp = TopicPartition::new("t", 0);
        let records = [Record {
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers: Vec::new(),
        }];
        let call = rt.attempt(&*handler, &tp, &records, 1);
        assert!(
            size_of_val(&call) >= 4096,
            "the handler's future is not inside the call's: {} bytes",
            size_of_val(&call)
        );
    }

    #[derive(Default)]
    struct Recorded(Mutex<Vec<f64>>);

    impl metrics::HistogramFn for Recorded {
        fn record(&self, value: f64) {
            self.0.lock().unwrap().push(value);
        }
    }

    #[test]
    fn fast_calls_are_timed_in_groups_and_slow_ones_alone_and_every_call_is_recorded() {
        let recorded = Arc::new(Recorded::default());
        let seconds = metrics::Histogram::from_arc(recorded.clone());
        let mut clock = CallClock::new(std::time::Instant::now());
        for _ in 0..1000 {
            clock.call_ended(&seconds); // as fast as a call can be
        }
        assert_eq!(
            clock.group,
            CallClock::MAX_GROUP,
            "fast calls share a clock read"
        );
        clock.read(&seconds);
        assert_eq!(recorded.0.lock().unwrap().len(), 1000, "one value per call");

        for _ in 0..CallClock::MAX_GROUP {
            std::thread::sleep(Duration::from_micros(100));
            clock.call_ended(&seconds);
        }
        assert_eq!(
            clock.group, 1,
            "a slow group sets the group back to one call"
        );
        std::thread::sleep(Duration::from_micros(100));
        let before = clock.now;
        clock.call_ended(&seconds);
        assert!(clock.now > before, "a slow handler's call is timed alone");
        let values = recorded.0.lock().unwrap();
        assert_eq!(values.len(), 1000 + 32 + 1);
        assert!(
            values[1000..].iter().all(|v| *v >= 100e-6),
            "{:?}",
            &values[1000..]
        );
    }

    #[test]
    fn a_wait_between_reads_is_charged_to_no_call() {
        let recorded = Arc::new(Recorded::default());
        let seconds = metrics::Histogram::from_arc(recorded.clone());
        let mut clock = CallClock::new(std::time::Instant::now());
        for _ in 0..100 {
            clock.call_ended(&seconds); // the group grows
        }
        clock.call_ended(&seconds); // one call still in its group
        clock.read(&seconds); // a wait begins (quarantine, retry-topic delay)
        std::thread::sleep(Duration::from_millis(20));
        clock.read(&seconds); // and ends
        clock.call_ended(&seconds);
        clock.read(&seconds);
        let values = recorded.0.lock().unwrap();
        assert_eq!(values.len(), 102);
        assert!(
            values.iter().all(|v| *v < 0.01),
            "the 20 ms wait was charged to a call"
        );
    }
}
