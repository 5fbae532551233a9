//! The processing runtime: one poll task owns the consumer; per-partition
//! workers handle records in order; offsets are committed only after a
//! record was handled or its dead-letter write was acknowledged.
//!
//! ```text
//!  poll task ──records──▶ per-partition worker (in order, ≤ concurrency at once)
//!     │  ▲                    │ retry with backoff (only this partition waits)
//!     │  └── pause/resume ◀── in-flight records/bytes (high/low watermarks)
//!     │                       │ handled, or dead-lettered + acked
//!     └── commit (interval) ◀─ OffsetTracker (epoch-fenced completions)
//! ```
//!
//! On revoke the listener (inside `poll`) stops the revoked partitions'
//! workers from starting queued records, waits up to `drain_timeout` for the
//! records already running, commits the completed prefix, and forgets the
//! partitions: completions that arrive later carry a dead epoch and never
//! commit. The queued records go to the next owner, from that offset.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consumer_core::consumer::ListenerFuture;
use consumer_core::{
    Committer, Consumer, ConsumerConfig, ConsumerError, RebalanceListener, TopicPartition,
};
use kafka_wire::records::Record;
use kafka_wire::{Producer, ProducerConfig};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;

use crate::dlt;
use crate::offset_tracker::OffsetTracker;
use crate::retry::{BackoffPolicy, Decision, HandlerError};

/// A boxed future returned by [`Handler::handle`].
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// The application's code for one record.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, tp: &'a TopicPartition, record: &'a Record) -> HandlerFuture<'a>;
}

/// Runtime settings; see [`ProcessorConfig::new`] for defaults.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub consumer: ConsumerConfig,
    pub topics: Vec<String>,
    /// Records handled at once across all partitions. Default 8.
    pub concurrency: usize,
    /// Pause fetching above this many in-flight bytes; resume below half. Default 64 MiB.
    pub max_in_flight_bytes: usize,
    /// Pause fetching above this many in-flight records; resume below half. Default 10,000.
    pub max_in_flight_records: usize,
    /// Commit completed offsets this often. Default 1 s.
    pub commit_interval: Duration,
    pub backoff: BackoffPolicy,
    /// Producer for dead-letter writes; `None`: failures stall the partition.
    pub dlt_producer: Option<ProducerConfig>,
    /// How long a revoke or shutdown waits for in-flight work. Default 30 s.
    pub drain_timeout: Duration,
}

impl ProcessorConfig {
    pub fn new(consumer: ConsumerConfig, topics: &[&str]) -> Self {
        Self {
            consumer,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            concurrency: 8,
            max_in_flight_bytes: 64 * 1024 * 1024,
            max_in_flight_records: 10_000,
            commit_interval: Duration::from_secs(1),
            backoff: BackoffPolicy::default(),
            dlt_producer: None,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters a run reports.
#[derive(Debug, Default)]
pub struct Stats {
    pub handled: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub commits: AtomicU64,
    pub pauses: AtomicU64,
    pub peak_in_flight_bytes: AtomicUsize,
}

/// One assigned partition in the runtime.
struct PartRuntime {
    tracker: OffsetTracker,
    /// Dispatched to the worker and not yet finished or skipped.
    queued: usize,
    /// Being revoked: queued records are skipped, not started.
    revoking: bool,
}

struct Shared {
    parts: Mutex<HashMap<TopicPartition, PartRuntime>>,
    changed: Notify,
    in_flight_bytes: AtomicUsize,
    in_flight_records: AtomicUsize,
    next_epoch: AtomicU64,
    stats: Arc<Stats>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TopicPartition, PartRuntime>> {
        self.parts.lock().expect("runtime partitions lock")
    }

    /// A worker is done with a record: `handled` (or dead-lettered) records
    /// complete in the tracker; skipped ones do not, so they are never committed.
    fn finish(&self, tp: &TopicPartition, epoch: u64, offset: i64, bytes: usize, handled: bool) {
        if let Some(p) = self
            .lock()
            .get_mut(tp)
            .filter(|p| p.tracker.epoch() == epoch)
        {
            if handled {
                let _ = p.tracker.complete(epoch, offset);
            }
            p.queued = p.queued.saturating_sub(1);
        }
        // A stale epoch (revoked, maybe reassigned since) touches no tracker.
        self.in_flight_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.in_flight_records.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// May a worker start this record? Not if its partition was revoked,
    /// reassigned, or is being revoked.
    fn may_start(&self, tp: &TopicPartition, epoch: u64) -> bool {
        self.lock()
            .get(tp)
            .is_some_and(|p| p.tracker.epoch() == epoch && !p.revoking)
    }

    /// Offsets ready to commit for `tps` (all if `None`).
    fn commit_points(&self, only: Option<&[TopicPartition]>) -> Vec<(TopicPartition, i64)> {
        self.lock()
            .iter_mut()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| p.tracker.take_commit().map(|o| (tp.clone(), o)))
            .collect()
    }

    fn queued_of(&self, tps: &[TopicPartition]) -> usize {
        let parts = self.lock();
        tps.iter()
            .filter_map(|tp| parts.get(tp))
            .map(|p| p.queued)
            .sum()
    }
}

/// Drains revoked partitions inside `poll`, then commits them.
struct DrainOnRevoke {
    shared: Arc<Shared>,
    drain_timeout: Duration,
}

impl DrainOnRevoke {
    /// Stop starting records of `parts`, then wait (bounded) for the ones
    /// already running. Queued records are skipped: the next owner gets them.
    async fn drain(&self, parts: &[TopicPartition]) {
        for tp in parts {
            if let Some(p) = self.shared.lock().get_mut(tp) {
                p.revoking = true;
            }
        }
        let deadline = Instant::now() + self.drain_timeout;
        while self.shared.queued_of(parts) > 0 && Instant::now() < deadline {
            let wait = self.shared.changed.notified();
            let _ = tokio::time::timeout(Duration::from_millis(50), wait).await;
        }
    }

    fn forget(&self, parts: &[TopicPartition]) {
        let mut all = self.shared.lock();
        for tp in parts {
            all.remove(tp); // later completions find no epoch: discarded
        }
    }
}

impl RebalanceListener for DrainOnRevoke {
    fn on_revoked<'a>(
        &'a self,
        c: &'a Committer,
        parts: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async move {
            self.drain(parts).await;
            let offsets = self.shared.commit_points(Some(parts));
            if !offsets.is_empty() && c.commit(&offsets).await.is_ok() {
                self.shared.stats.commits.fetch_add(1, Ordering::Relaxed);
            }
            self.forget(parts);
        })
    }

    fn on_lost<'a>(&'a self, _c: &'a Committer, parts: &'a [TopicPartition]) -> ListenerFuture<'a> {
        self.forget(parts); // never commit lost partitions
        Box::pin(async {})
    }
}

struct Work {
    record: Record,
    epoch: u64,
    bytes: usize,
}

/// The runtime. Build it with a [`ProcessorConfig`] and a [`Handler`].
pub struct Processor<H: Handler> {
    cfg: ProcessorConfig,
    handler: Arc<H>,
    stats: Arc<Stats>,
}

impl<H: Handler> std::fmt::Debug for Processor<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("topics", &self.cfg.topics)
            .finish_non_exhaustive()
    }
}

fn record_bytes(r: &Record) -> usize {
    64 + r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())
}

impl<H: Handler> Processor<H> {
    pub fn new(cfg: ProcessorConfig, handler: H) -> Self {
        Self {
            cfg,
            handler: Arc::new(handler),
            stats: Arc::default(),
        }
    }

    /// Live counters (shared with the running processor).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Consume and process until `shutdown` completes; then drain in-flight
    /// work (up to `drain_timeout`), commit, and leave the group.
    ///
    /// # Errors
    /// Fatal consumer errors (fenced, no offset with reset=none, …).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumerError> {
        let cfg = self.cfg;
        let group = cfg.consumer.group_id.clone().unwrap_or_default();
        let shared = Arc::new(Shared {
            parts: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            in_flight_bytes: AtomicUsize::new(0),
            in_flight_records: AtomicUsize::new(0),
            next_epoch: AtomicU64::new(1),
            stats: self.stats.clone(),
        });
        let mut consumer = Consumer::connect(cfg.consumer.clone()).await?;
        consumer.set_listener(Arc::new(DrainOnRevoke {
            shared: shared.clone(),
            drain_timeout: cfg.drain_timeout,
        }));
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let dlt = match &cfg.dlt_producer {
            Some(p) => Some(Producer::connect(p.clone()).await?),
            None => None,
        };
        let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        let mut workers: HashMap<TopicPartition, mpsc::UnboundedSender<Work>> = HashMap::new();
        let mut paused = false;
        let mut last_commit = Instant::now();
        tokio::pin!(shutdown);

        loop {
            let batches = tokio::select! {
                _ = &mut shutdown => break,
                r = consumer.poll(Duration::from_millis(100)) => r?,
            };
            for batch in batches {
                let epoch = {
                    let mut parts = shared.lock();
                    let p = parts
                        .entry(batch.tp.clone())
                        .or_insert_with(|| PartRuntime {
                            tracker: OffsetTracker::new(
                                shared.next_epoch.fetch_add(1, Ordering::Relaxed),
                                batch.records.first().map_or(0, |r| r.offset),
                            ),
                            queued: 0,
                            revoking: false,
                        });
                    for r in &batch.records {
                        p.tracker.dispatch(r.offset);
                    }
                    p.queued += batch.records.len();
                    p.tracker.epoch()
                };
                let tx = workers.entry(batch.tp.clone()).or_insert_with(|| {
                    spawn_worker(
                        batch.tp.clone(),
                        self.handler.clone(),
                        shared.clone(),
                        permits.clone(),
                        cfg.backoff,
                        dlt.clone(),
                        group.clone(),
                    )
                });
                for record in batch.records {
                    let bytes = record_bytes(&record);
                    let now = shared.in_flight_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
                    shared.in_flight_records.fetch_add(1, Ordering::AcqRel);
                    self.stats
                        .peak_in_flight_bytes
                        .fetch_max(now, Ordering::Relaxed);
                    let _ = tx.send(Work {
                        record,
                        epoch,
                        bytes,
                    });
                }
            }
            // Backpressure: pause every partition at the high watermark,
            // resume below half of it. Polling continues either way.
            let bytes = shared.in_flight_bytes.load(Ordering::Acquire);
            let records = shared.in_flight_records.load(Ordering::Acquire);
            let high = bytes >= cfg.max_in_flight_bytes || records >= cfg.max_in_flight_records;
            let low =
                bytes <= cfg.max_in_flight_bytes / 2 && records <= cfg.max_in_flight_records / 2;
            if high && !paused {
                consumer.pause(&consumer.assignment());
                paused = true;
                self.stats.pauses.fetch_add(1, Ordering::Relaxed);
            } else if low && paused {
                consumer.resume(&consumer.assignment());
                paused = false;
            }
            if last_commit.elapsed() >= cfg.commit_interval {
                last_commit = Instant::now();
                commit(&consumer, &shared).await;
            }
        }

        // Shutdown: stop polling, drain, commit, leave.
        let deadline = Instant::now() + cfg.drain_timeout;
        while shared.in_flight_records.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), shared.changed.notified()).await;
        }
        commit(&consumer, &shared).await;
        drop(workers);
        if let Some(p) = dlt {
            p.close().await;
        }
        consumer.close(cfg.drain_timeout).await;
        Ok(())
    }
}

async fn commit(consumer: &Consumer, shared: &Shared) {
    let offsets = shared.commit_points(None);
    if offsets.is_empty() {
        return;
    }
    match consumer.commit(&offsets).await {
        Ok(()) => {
            shared.stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %e, "commit failed; the next interval retries"),
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn_worker<H: Handler>(
    tp: TopicPartition,
    handler: Arc<H>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    backoff: BackoffPolicy,
    dlt: Option<Producer>,
    group: String,
) -> mpsc::UnboundedSender<Work> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Work>();
    tokio::spawn(async move {
        while let Some(work) = rx.recv().await {
            let _permit = permits.acquire().await.expect("semaphore open");
            if !shared.may_start(&tp, work.epoch) {
                // Revoked (or being revoked) since dispatch: the next owner
                // processes it from the committed offset.
                shared.finish(&tp, work.epoch, work.record.offset, work.bytes, false);
                continue;
            }
            let mut delays = backoff.delays(rand_unit);
            let mut attempt = 1;
            loop {
                let span = tracing::debug_span!("record", topic = %tp.topic, partition = tp.partition, offset = work.record.offset, attempt);
                let _enter = span.enter();
                let err = match handler.handle(&tp, &work.record).await {
                    Ok(()) => {
                        shared.stats.handled.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => e,
                };
                match backoff.decide(attempt, &err, delays.next()) {
                    Decision::RetryAfter(d) => {
                        shared.stats.retried.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(d).await; // only this partition waits
                        attempt += 1;
                    }
                    Decision::DeadLetter => {
                        dead_letter_until_acked(
                            &tp,
                            &work.record,
                            &err,
                            attempt,
                            dlt.as_ref(),
                            &group,
                        )
                        .await;
                        shared.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            shared.finish(&tp, work.epoch, work.record.offset, work.bytes, true);
        }
    });
    tx
}

/// Write to the DLT and wait for the acknowledgement, retrying forever: the
/// partition stalls (and says so) rather than commit past an unwritten record.
async fn dead_letter_until_acked(
    tp: &TopicPartition,
    record: &Record,
    err: &HandlerError,
    attempts: u32,
    producer: Option<&Producer>,
    group: &str,
) {
    let topic = dlt::dlt_topic(&tp.topic);
    let mut delay = Duration::from_millis(100);
    loop {
        let result = match producer {
            Some(p) => {
                let rec = dlt::dead_letter(
                    &topic,
                    &tp.topic,
                    tp.partition,
                    group,
                    record,
                    err,
                    attempts,
                );
                match p.send(rec).await {
                    Ok(d) => d.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            None => Err("no dead-letter producer configured".to_string()),
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(%tp, offset = record.offset, error = %e, dlt = %topic, "dead-letter write failed; partition stalled until it succeeds");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn rand_unit() -> f64 {
    rand::random::<f64>()
}
