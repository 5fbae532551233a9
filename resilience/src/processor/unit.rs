//! The worker: one of `concurrency` tasks, each running units of work
//! (a record, or a batch of one lane's records) until no lane is ready.
//! A unit goes from start to finish: skip what may not start or is already
//! done, wait out a quarantine or a retry topic's delay, call the handler
//! with its deadline, and hand a failure to the failure executor
//! (`crate::failure::executor`), whose effects here are: wait without a
//! permit, call again, forward to a retry topic or the DLT until the write
//! is acknowledged. Every record ends reported to the runtime as an
//! [`Outcome`].
//!
//! The handler's type is known here (`Worker<H, C>`), so a handler call's
//! future lives in the worker's and is never boxed; the runtime starts a
//! worker through [`StartWorker`], the one place that type is erased.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use consumer_core::TopicPartition;
use kafka_wire::records::Record;
use kafka_wire::ProducerRecord;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

use super::completion::{Completion, Outcome};
use super::handler::CallHandler;
use super::runtime::{Count, Runtime, StartWorker, Unit, WorkerFuture};
use crate::failure::executor::{settle, Effects, Failed, Forward, Settled};
use crate::observe::Event;
use crate::retry::HandlerError;
use crate::retry_topics;

/// A unit of a one-record handler gives its lane back after this long, so
/// other lanes get a worker too (records not started go back in front).
const UNIT_TIME_BUDGET: Duration = Duration::from_millis(5);

/// Every handler starts workers of its own type.
impl<H: CallHandler, C: Completion> StartWorker<C> for H {
    fn batched(&self) -> bool {
        H::BATCH
    }

    fn worker(
        self: Arc<Self>,
        rt: Arc<Runtime<C>>,
        unit: Unit,
        permit: OwnedSemaphorePermit,
    ) -> WorkerFuture {
        // Boxed: a worker's future is several KB (retries, DLT writes,
        // the handler's own future) and spawning moves a future several
        // times; a box moves a pointer.
        Box::pin(Worker { rt, handler: self }.run(unit, permit))
    }
}

/// A worker task: the runtime and the handler, typed.
struct Worker<H, C: Completion> {
    rt: Arc<Runtime<C>>,
    handler: Arc<H>,
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

impl<H: CallHandler, C: Completion> Worker<H, C> {
    /// Run `unit`, then the next ready ones, until no lane is ready (see
    /// `Runtime::pump`). The permit is given back while a unit waits.
    async fn run(self, unit: Unit, permit: OwnedSemaphorePermit) {
        let mut permit = Some(permit);
        let mut next = Some(unit);
        while let Some(unit) = next {
            let (lane, epoch) = (unit.lane.clone(), unit.epoch);
            let not_started = self.run_unit(unit, &mut permit).await;
            next = self.rt.unit_done(&lane, epoch, not_started, &mut permit);
        }
    }

    /// Give up this worker's permit while it waits (a retry's backoff, a
    /// quarantine), so other lanes go on meanwhile.
    fn release(&self, permit: &mut Option<OwnedSemaphorePermit>) {
        if permit.take().is_some() {
            self.rt.pump();
        }
    }

    /// Take a permit back after [`Worker::release`].
    async fn reacquire(&self, permit: &mut Option<OwnedSemaphorePermit>) {
        if permit.is_none() {
            *permit = Some(self.rt.permit().await);
        }
    }

    /// Run `unit`: call the handler for each record in turn (a one-record
    /// handler) or once for them all (a batch handler). Returns the records
    /// not started when the unit's time budget ran out, for the lane's front.
    async fn run_unit(&self, unit: Unit, permit: &mut Option<OwnedSemaphorePermit>) -> Vec<Record> {
        let Unit {
            lane,
            epoch,
            records,
            stop,
        } = unit;
        let tp: &TopicPartition = &lane.0;
        if !self.rt.may_continue(tp, epoch) {
            self.rt.finish_all(tp, epoch, &records, Outcome::Released);
            return Vec::new();
        }
        let Some((slab, later)) = self.skip_duplicates(tp, epoch, records).await else {
            return Vec::new();
        };
        let per_call = if H::BATCH { slab.len().max(1) } else { 1 };
        let len = slab.len();
        let from_retry_topic = self.rt.forwarding().is_retry_topic(&tp.topic);
        let started = std::time::Instant::now();
        // Compared per record: a comparison, where `now - started` is a
        // checked subtraction (2 % of a no-op handler's profile).
        let budget_end = started + UNIT_TIME_BUDGET;
        let seconds = &self.rt.metrics().handler_seconds;
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
                    if !self.rt.sleep_unless_stopped(tp, epoch, until).await {
                        break;
                    }
                    self.reacquire(permit).await;
                    clock.read(seconds);
                }
            }
            let keys = slab.keys(i, j);
            let first = self.first_attempt(tp, epoch, slab.records(i, j));
            let result = self.attempt(tp, slab.records(i, j), first).await;
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
                    self.after_failure(tp, epoch, records, keys, err, permit)
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
            self.rt.finish_all(tp, epoch, skipped, Outcome::Released);
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
        self.rt.count(Count::Handled, records.len() as u64);
        self.rt.finish_all(tp, epoch, records, Outcome::Handled);
    }

    /// Call the handler once (attempt number `attempt`), with its deadline
    /// and a span. The caller times it (`resilience_handler_seconds`) and
    /// counts what it handled ([`Self::finish_handled`]).
    async fn attempt(
        &self,
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
            self.call_handler(tp, records).await
        } else {
            self.call_handler(tp, records).instrument(span).await
        }
    }

    /// The attempt a call of `records` is: 1, or where the group
    /// redelivers (a share group) the highest delivery count among them.
    fn first_attempt(&self, tp: &TopicPartition, epoch: u64, records: &[Record]) -> u32 {
        if C::REDELIVERS {
            self.rt.attempt_of(tp, epoch, records)
        } else {
            1
        }
    }

    /// The first attempt at `records` failed with `err`: the failure
    /// policy's executor decides and carries out the rest (see
    /// [`Failing`]). Every record is finished on return.
    async fn after_failure(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        records: &[Record],
        keys: &[Option<String>],
        err: HandlerError,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) {
        let first = self.first_attempt(tp, epoch, records);
        let (source, step) = self.rt.forwarding().source_of(&tp.topic);
        let failed = Failed {
            tp,
            offset: records[0].offset,
            source,
            step,
            attempt: first,
        };
        let mut failing = Failing {
            worker: self,
            tp,
            epoch,
            records,
            permit,
        };
        match settle(self.rt.policy(), failed, &mut failing, err).await {
            Settled::Handled(()) => {
                self.mark_done(keys).await;
                self.finish_handled(tp, epoch, records);
            }
            Settled::Forwarded(()) => {} // each record finished as its write was acknowledged
            Settled::Released | Settled::Stopped => {
                // The next owner (or the broker's next delivery) has them.
                self.rt.finish_all(tp, epoch, records, Outcome::Released);
            }
        }
    }

    /// Call the handler once, with the deadline (`handler_timeout`). Its
    /// future is polled in place, inside this one's: no allocation.
    async fn call_handler(
        &self,
        tp: &TopicPartition,
        records: &[Record],
    ) -> Result<(), HandlerError> {
        // A panic fails this call (non-retryable: the DLT), never the
        // worker: see panics.rs.
        let call = crate::panics::call("the handler", || self.handler.call(tp, records));
        match self.rt.cfg().handler_timeout {
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
        let quarantine = self.rt.quarantined_until(tp);
        let due = match self.rt.forwarding().source_of(&tp.topic) {
            (_, Some(step)) => {
                // A hop is due at most its topic's delay from now: a
                // forged far-off (or out-of-range) due time cannot hold
                // the partition longer, nor overflow.
                let delay = self
                    .rt
                    .cfg()
                    .retry_topics
                    .as_ref()
                    .and_then(|c| c.delays.get(step));
                let at_most = delay.copied().unwrap_or(Duration::ZERO);
                let now = now_ms();
                records
                    .iter()
                    .filter_map(retry_topics::due_ms)
                    .max()
                    .map(|due| {
                        retry_topics::wait_for(due, now, at_most).unwrap_or_else(|e| {
                            tracing::warn!(%tp, error = %e, "treating the retry record as due now");
                            Duration::ZERO
                        })
                    })
                    .filter(|wait| !wait.is_zero())
                    .and_then(|wait| Instant::now().checked_add(wait))
            }
            (_, None) => None,
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
                    if !self.rt.sleep_unless_stopped(tp, epoch, until).await {
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
        let Some(idem) = &self.rt.cfg().idempotency else {
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
                    self.rt.finish_all(tp, epoch, rest, Outcome::Released);
                    return None;
                }
                Some(Some(true)) => {
                    self.rt.count(Count::Deduplicated, 1);
                    self.rt.finish(tp, epoch, &r, Outcome::Handled);
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
        let Some(idem) = &self.rt.cfg().idempotency else {
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

    /// The records failed for good here: each goes where `to` says (its
    /// next retry topic or the DLT), and completes once the write is
    /// acknowledged; one revoked meanwhile is released instead.
    async fn forward_failed(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        records: &[Record],
        to: Forward<'_>,
        err: &HandlerError,
        attempts: u32,
    ) {
        if matches!(to, Forward::DeadLetter { .. }) && self.rt.rejects_dead_letters() {
            // A share group without the runtime's DLT: REJECT, and the
            // group's own DLQ (KIP-1191) takes it, if it has one.
            for record in records {
                tracing::warn!(%tp, offset = record.offset, error = %err, attempts,
                    "failed for good: rejected (the share group's dead-letter queue gets it if the group has one; else the broker archives it)");
                self.rt.count(Count::DeadLettered, 1);
                self.rt.finish(tp, epoch, record, Outcome::Rejected);
            }
            return;
        }
        let forwarding = self.rt.forwarding();
        let (source, _) = forwarding.source_of(&tp.topic);
        let dlt = self.rt.cfg().dlt_topic_of(source);
        let mut quarantine = false;
        for record in records {
            // `to` for this record: a forged retry header sends it to the DLT.
            let (out, target, to) = forwarding.copy(to, &dlt, tp, record, err, attempts, now_ms());
            quarantine |= matches!(
                to,
                Forward::DeadLetter {
                    counts_toward_quarantine: true
                }
            );
            if !self
                .write_until_acked(tp, epoch, record.offset, target, out)
                .await
            {
                self.rt.finish(tp, epoch, record, Outcome::Released);
                continue;
            }
            let offset = record.offset;
            match to {
                Forward::RetryTopic { topic, .. } => {
                    self.rt.count(Count::SentToRetryTopic, 1);
                    self.rt.observe(Event::SentToRetryTopic {
                        tp: tp.clone(),
                        offset,
                        topic: topic.to_string(),
                    });
                }
                Forward::DeadLetter { .. } => {
                    tracing::info!(%tp, offset, dlt = %target, attempts, reason = %err, "dead-lettered (its dead letter is acknowledged; the record will be committed)");
                    self.rt.count(Count::DeadLettered, 1);
                    self.rt.observe(Event::DeadLettered {
                        tp: tp.clone(),
                        offset,
                    });
                }
            }
            self.rt.finish(tp, epoch, record, Outcome::Forwarded);
        }
        if quarantine {
            self.rt.dead_lettered_in_row(tp);
        }
    }

    /// Write `out` and wait for the acknowledgement, retrying: the
    /// partition stalls (and says so) rather than commit past an unwritten
    /// record. A copy too large for its target is written again without
    /// its value (see `Forwarding::write_once`). `false` if the partition
    /// went away meanwhile.
    async fn write_until_acked(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        offset: i64,
        target: &str,
        out: ProducerRecord,
    ) -> bool {
        let out = std::sync::Mutex::new(out);
        let forwarding = self.rt.forwarding();
        let write = || forwarding.write_once(&out, tp, offset, target);
        let failed = |e: &String| {
            self.rt.count(Count::DltWriteFailures, 1);
            tracing::error!(%tp, offset, error = %e, target, "could not write the failed record; its partition waits and nothing past it commits");
        };
        self.until_ok(Some((tp, epoch)), write, failed)
            .await
            .is_some()
    }
}

/// How the Processor carries out its failure policy's decisions for a
/// unit's failed records (see `crate::failure::executor`): a retry waits
/// without the worker's permit (only this lane waits) and wakes on
/// revoke; forwarding writes each record until acknowledged.
struct Failing<'a, H, C: Completion> {
    worker: &'a Worker<H, C>,
    tp: &'a TopicPartition,
    epoch: u64,
    records: &'a [Record],
    permit: &'a mut Option<OwnedSemaphorePermit>,
}

impl<H: CallHandler, C: Completion> Effects for Failing<'_, H, C> {
    type Output = ();
    type Forwarded = ();

    fn may_go_on(&self) -> bool {
        self.worker.rt.may_continue(self.tp, self.epoch)
    }

    fn retrying(&mut self) {
        self.worker.rt.count(Count::Retried, 1);
    }

    async fn wait(&mut self, delay: Duration) -> bool {
        self.worker.release(self.permit); // only this lane waits
        let until = Instant::now() + delay;
        if !self
            .worker
            .rt
            .sleep_unless_stopped(self.tp, self.epoch, until)
            .await
        {
            return false;
        }
        self.worker.reacquire(self.permit).await;
        true
    }

    async fn call(&mut self, attempt: u32) -> Result<(), HandlerError> {
        let started = std::time::Instant::now();
        let result = self.worker.attempt(self.tp, self.records, attempt).await;
        let seconds = &self.worker.rt.metrics().handler_seconds;
        seconds.record(started.elapsed().as_secs_f64());
        result
    }

    async fn forward(&mut self, to: Forward<'_>, error: &HandlerError, attempts: u32) {
        let (tp, epoch, records) = (self.tp, self.epoch, self.records);
        self.worker
            .forward_failed(tp, epoch, records, to, error, attempts)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use bytes::Bytes;
    use consumer_core::{ConsumerConfig, PartitionRecords};

    use super::super::completion::offsets::Offsets;
    use super::super::handler::OneRecord;
    use super::super::stats::Stats;
    use crate::{Handler, ProcessorConfig};

    fn config(concurrency: usize) -> ProcessorConfig {
        let consumer = ConsumerConfig::builder()
            .bootstrap("127.0.0.1:9092")
            .unwrap()
            .build()
            .unwrap();
        ProcessorConfig::new(consumer, &["t"]).concurrency(concurrency)
    }

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
        let handler = Arc::new(OneRecord(Big));
        let rt = Arc::new(Runtime::<Offsets>::new(
            config(1),
            handler.clone(),
            Arc::new(Stats::default()),
            None,
        ));
        let worker = Worker { rt, handler };
        let tp = TopicPartition::new("t", 0);
        let records = [Record {
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers: Vec::new(),
        }];
        let call = worker.attempt(&tp, &records, 1);
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

    struct Noop;
    impl Handler for Noop {
        async fn handle(&self, _: &TopicPartition, _: &Record) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    fn record(offset: i64) -> Record {
        Record {
            offset,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
        }
    }

    /// Workers already running take a poll's records the moment they are
    /// queued, so the records must count in flight before that: counted
    /// after (as before), a worker could finish them first, the counters
    /// went below zero for a moment, and a debug build panicked on the
    /// overflow (the order-saga seed test caught it once).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_count_in_flight_before_a_worker_can_take_them() {
        let stats = Arc::new(Stats::default());
        let rt = Arc::new(Runtime::<Offsets>::new(
            config(4),
            Arc::new(OneRecord(Noop)),
            stats.clone(),
            None,
        ));
        let polls: i64 = 20_000;
        for offset in 0..polls {
            rt.dispatch(PartitionRecords {
                tp: TopicPartition::new("t", (offset % 4) as i32),
                records: vec![record(offset / 4)],
                high_watermark: -1,
                last_stable_offset: -1,
            });
            if offset % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while stats.handled.load(Ordering::Relaxed) < polls as u64 {
            assert!(
                std::time::Instant::now() < deadline,
                "handled {} of {polls}: a worker died",
                stats.handled.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(rt.in_flight(), (0, 0));
    }
}
