//! The processing runtime: one poll task owns the consumer; workers handle
//! records by ordering lane; offsets are committed only after a record was
//! handled, or its dead-letter (or retry-topic) write was acknowledged.
//!
//! ```text
//!  poll task ──records──▶ scheduler (lanes by ordering) ──▶ units of work (≤ concurrency)
//!     │  ▲                                                  │ dedup · deadline
//!     │  └── pause/resume ◀── in-flight records/bytes,      │ failure ─▶ FailurePolicy ─▶ executor:
//!     │                       per-partition queue, quarantine   retry, retry topic / DLT (acked), release
//!     └── rebalance listener         commit task ◀── Completion per partition ◀── Outcome of each record
//!          (drain, commit, forget)      (offsets: fenced, with completed-offset metadata)
//! ```
//!
//! The poll loop never waits for a handler, so heartbeats and
//! `max.poll.interval.ms` never starve. On revoke the listener stops the
//! revoked partitions from starting queued records, waits up to
//! `drain_timeout` for the running ones, commits, and forgets the
//! partitions: completions that arrive later carry a dead epoch and never
//! commit. Queued records go to the next owner, from the committed offset.
//!
//! # Layout
//!
//! One file per concern. A concern's type owns its state and does not know
//! `Runtime`; `runtime.rs` composes them behind its one state lock. The
//! files that drive the runtime (this one, the worker, the listener) call
//! it; it starts workers only through `StartWorker`. Imports point one
//! way:
//!
//! ```text
//!  mod.rs ─▶ listener.rs, share_poll.rs, start.rs ─▶ runtime.rs ─▶ completion/ backpressure.rs commit.rs forward.rs workers.rs stats.rs
//!    └─────▶ unit.rs ──────────┘  ▲        (and crate::failure: FailurePolicy, FailureRun, the executor)
//!    └─────▶ handler.rs ◀─ unit.rs
//!
//!  mod.rs           Processor; the poll loop (pauses from Runtime::to_pause), lag and snapshots
//!  share_poll.rs    the poll loop on a share group (ShareConsumer): acknowledge, RENEW, poll
//!  start.rs         what both poll loops start with: until_connected, refused settings, the
//!                   failure topics, PollBackoff, the abort guard
//!  handler.rs       Handler, BatchHandler; CallHandler (OneRecord / Batched: one record or a unit per call)
//!  stats.rs         Stats: the counters of a run
//!  runtime.rs       Runtime<C: Completion>: config, counters, the state lock and State; dispatch,
//!                   finish (to the Completion), stop, forget, pump, to_pause; commits (Runtime<Offsets>)
//!  unit.rs          the worker (StartWorker for every handler): units of work start to finish; the
//!                   failure executor's effects (wait without a permit, forward until acknowledged)
//!  completion/      Completion (the seam: Outcome of each record → the group), offsets.rs (Offsets:
//!                   OffsetTracker, commit point with metadata, last commit), share.rs (Acks:
//!                   one acknowledgement per record, delivery counts as attempts)
//!  forward.rs       Forwarding: the DLT/retry-topic producer, the retry-topic index, one write
//!  workers.rs       Workers: permits and every spawned task
//!  commit.rs        Commits: one commit at a time; the metadata limit learned
//!  backpressure.rs  InFlight (totals, the global pause), QueueBound, poll_wait
//!  listener.rs      the rebalance listener: load on assign, drain+commit+forget on revoke
//! ```

mod backpressure;
mod commit;
mod completion;
mod forward;
mod handler;
mod listener;
mod runtime;
mod share_poll;
mod start;
mod stats;
mod unit;
mod workers;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use consumer_core::{Consumer, ConsumerError, TopicPartition};
use kafka_wire::Producer;
use tokio::time::Instant;

use crate::config::ProcessorConfig;
use crate::observe::{self, Event, LagGauges, PartitionSnapshot, Snapshot, SNAPSHOT_INTERVAL};
use backpressure::poll_wait;
use completion::offsets::Offsets;
use completion::share::Acks;
use handler::{Batched, OneRecord};
use listener::RuntimeListener;
use runtime::{Runtime, StartWorker};

pub use crate::retry::HandlerError;
pub use handler::{BatchHandler, Handler};
pub use runtime::record_bytes;
pub use stats::Stats;

use start::{create_failure_topics, AbortTasksOnDrop};
pub(crate) use start::{refuse_settings_that_defeat_the_runtime, until_connected, PollBackoff};

/// The runtime. Configure with [`ProcessorConfig`], give it a handler, `run`.
pub struct Processor {
    cfg: ProcessorConfig,
    /// The handler, typed inside each worker task (see unit.rs).
    handler: Arc<dyn StartWorker<Offsets>>,
    /// The same handler, for a share group's runtime.
    share_handler: Arc<dyn StartWorker<Acks>>,
    stats: Arc<Stats>,
    snapshots: tokio::sync::watch::Sender<Snapshot>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Processor {
    /// A processor calling `handler` for each record.
    pub fn new(cfg: ProcessorConfig, handler: impl Handler) -> Self {
        let handler = Arc::new(OneRecord(handler));
        Self {
            cfg,
            share_handler: handler.clone(),
            handler,
            stats: Arc::default(),
            snapshots: tokio::sync::watch::Sender::default(),
        }
    }

    /// A processor calling `handler` with up to `max_batch` records of one
    /// lane at a time (in per-partition ordering: consecutive records of a
    /// partition).
    pub fn batched(mut cfg: ProcessorConfig, handler: impl BatchHandler, max_batch: usize) -> Self {
        cfg.max_batch = max_batch.max(1);
        let handler = Arc::new(Batched(handler));
        Self {
            cfg,
            share_handler: handler.clone(),
            handler,
            stats: Arc::default(),
            snapshots: tokio::sync::watch::Sender::default(),
        }
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Live state: in-flight records and bytes, paused partitions, both
    /// lags and the committed offset of every assigned partition (see
    /// [`Snapshot`]). Take receivers before `run`; the poll task
    /// publishes at most every [`SNAPSHOT_INTERVAL`] (100 ms), and once
    /// more after the shutdown's final commit. A receiver outliving the run
    /// keeps that last snapshot, and `changed()` then returns an error.
    pub fn snapshots(&self) -> tokio::sync::watch::Receiver<Snapshot> {
        self.snapshots.subscribe()
    }

    /// Consume and process until `shutdown` completes; then stop starting
    /// records, wait for running ones (up to `drain_timeout`), commit, and
    /// leave the group.
    ///
    /// # Errors
    /// `enable.auto.commit=true` (refused before connecting: see
    /// `refuse_settings_that_defeat_the_runtime`). Fatal consumer errors (authentication or authorization refused, a
    /// fenced static member, no offset with `auto.offset.reset=none`, …).
    /// A cluster that cannot be reached at start is *not* an error by
    /// default: with `startup_timeout = None` (the default) `run` retries
    /// with backoff, logging each attempt, until the cluster answers or
    /// `shutdown` completes (then it returns `Ok(())`). With
    /// [`ProcessorConfig::startup_timeout`] set, it returns the last
    /// connection error once that time has passed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumerError> {
        let cfg = self.cfg;
        if cfg.share.is_some() {
            return share_poll::run(cfg, self.share_handler, self.stats, shutdown).await;
        }
        refuse_settings_that_defeat_the_runtime(&cfg.consumer, "the Processor")?;
        if cfg.topic_pattern.is_some() && cfg.retry_topics.is_some() {
            return Err(kafka_wire::Error::Config(
                "retry topics need named topics: they cannot be combined with topic_pattern".into(),
            )
            .into());
        }
        tokio::pin!(shutdown);
        observe::describe();
        let started = Instant::now();
        let deadline = cfg.startup_timeout.map(|t| started + t);
        let producer = match &cfg.dlt_producer {
            Some(p) => {
                let connect = || Producer::connect(p.clone());
                match until_connected("dead-letter producer", connect, &mut shutdown, deadline)
                    .await?
                {
                    Some(p) => Some(p),
                    None => return Ok(()), // shut down before the cluster came up
                }
            }
            None => None,
        };
        let connect = || Consumer::connect(cfg.consumer.clone());
        let Some(mut consumer) =
            until_connected("consumer", connect, &mut shutdown, deadline).await?
        else {
            return Ok(());
        };
        if started.elapsed() > Duration::from_secs(1) {
            tracing::info!(
                waited_ms = started.elapsed().as_millis() as u64,
                "connected to the Kafka cluster"
            );
        }
        if cfg.topic_pattern.is_none() {
            start::warn_about_missing_topics(&cfg.consumer.client, &cfg.topics).await;
        }
        if cfg.create_topics {
            if let Some(p) = &producer {
                create_failure_topics(p.client(), &cfg).await;
            }
        }
        let mut topics: Vec<String> = cfg.topics.clone();
        if let Some(chain) = &cfg.retry_topics {
            for t in &cfg.topics {
                topics.extend(chain.topics_for(t));
            }
        }
        let rt = Arc::new(Runtime::new(
            cfg,
            self.handler,
            self.stats.clone(),
            producer,
        ));
        let _abort_on_drop = AbortTasksOnDrop(rt.clone());
        consumer.set_listener(Arc::new(RuntimeListener(rt.clone())));
        match &rt.cfg().topic_pattern {
            Some(pattern) => consumer.subscribe_pattern(pattern)?,
            None => {
                let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
                consumer.subscribe(&topic_refs)?;
            }
        }

        let committer = consumer.committer().clone();
        let commit_task = rt.start_commit_loop(&committer);

        let mut paused: HashSet<TopicPartition> = HashSet::new();
        let mut globally_paused = false;
        // Paused until workers drain (global bound, a full partition queue):
        // poll briefly, so fetching resumes as soon as they have.
        let mut draining = false;
        let mut last_lag = Instant::now();
        let mut last_snapshot = Instant::now();
        let mut lag_gauges = rt.metrics().lag_gauges();
        let mut poll_backoff = PollBackoff::new(rt.metrics().poll_errors.clone());
        let result = loop {
            let batches = tokio::select! {
                _ = &mut shutdown => break Ok(()),
                r = consumer.poll(poll_wait(draining)) => match r {
                    Ok(b) => {
                        poll_backoff.reset();
                        b
                    }
                    Err(e) if e.is_retriable() => {
                        self.stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                        tokio::select! {
                            _ = &mut shutdown => break Ok(()),
                            _ = tokio::time::sleep(poll_backoff.failed(&e)) => {}
                        }
                        Vec::new()
                    }
                    Err(e) => break Err(e),
                },
                // Workers made room: resume now (the poll is cancel safe).
                _ = rt.capacity_freed(), if draining => Vec::new(),
            };
            // Positions after this poll: resets first (so its records go to
            // a fresh tracker), then the records, then the ends (markers).
            let positions = consumer.positions();
            rt.sync_incarnations(&positions);
            for batch in batches {
                rt.dispatch(batch);
            }
            rt.advance(&positions);
            draining = apply_backpressure(&rt, &mut consumer, &mut paused, &mut globally_paused);
            if last_lag.elapsed() >= Duration::from_secs(1) {
                last_lag = Instant::now();
                report_lag(&rt, &consumer, &mut lag_gauges);
            }
            if last_snapshot.elapsed() >= SNAPSHOT_INTERVAL {
                last_snapshot = Instant::now();
                self.snapshots
                    .send_replace(snapshot(&rt, &consumer, &paused));
            }
        };

        // Shutdown: stop polling and starting records, drain, commit, leave.
        let all = rt.partitions();
        rt.stop_partitions(&all);
        rt.wait_idle(None, rt.cfg().drain_timeout).await;
        if let Some(t) = commit_task {
            t.abort();
        }
        rt.commit(&committer, None).await;
        self.snapshots
            .send_replace(snapshot(&rt, &consumer, &paused));
        if let Some(p) = rt.producer() {
            p.close().await;
        }
        consumer.close(rt.cfg().drain_timeout).await;
        result
    }
}

/// Pause what should not be fetched now, resume what may be again (see
/// [`Runtime::to_pause`]). Returns whether a pause waits only for workers
/// to drain (the global bound or a full queue).
fn apply_backpressure(
    rt: &Runtime<Offsets>,
    consumer: &mut Consumer,
    paused: &mut HashSet<TopicPartition>,
    globally: &mut bool,
) -> bool {
    let (want, draining) = rt.to_pause(consumer.assignment(), globally);
    let to_pause: Vec<TopicPartition> = want.difference(paused).cloned().collect();
    let to_resume: Vec<TopicPartition> = paused.difference(&want).cloned().collect();
    if !to_pause.is_empty() {
        consumer.pause(&to_pause);
        rt.observe(Event::Paused(to_pause));
    }
    if !to_resume.is_empty() {
        consumer.resume(&to_resume);
        rt.observe(Event::Resumed(to_resume));
    }
    *paused = want;
    rt.metrics().paused(paused.len());
    draining
}

/// Both lags of every assigned partition (see [`observe`]'s "Two lags"):
/// log end minus the fetch position, and log end minus the committed
/// offset this runtime knows (found on assignment, or its last commit).
fn report_lag(rt: &Runtime<Offsets>, consumer: &Consumer, gauges: &mut LagGauges) {
    let assigned = consumer.assignment();
    let status = rt.part_status(&assigned);
    for (tp, status) in assigned.iter().zip(status) {
        let Some(end) = consumer.log_end(tp) else {
            continue; // no fetch answered yet
        };
        let commit_lag = status.committed.map(|c| (end - c).max(0));
        gauges.set(tp, consumer.lag(tp), commit_lag);
    }
    gauges.retain(&assigned);
}

/// The state the poll task publishes (see [`Snapshot`]).
fn snapshot(
    rt: &Runtime<Offsets>,
    consumer: &Consumer,
    paused: &HashSet<TopicPartition>,
) -> Snapshot {
    let mut assigned = consumer.assignment();
    assigned.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let status = rt.part_status(&assigned);
    let partitions = assigned
        .into_iter()
        .zip(status)
        .map(|(tp, status)| {
            let committed = status.committed;
            let log_end = consumer.log_end(&tp);
            PartitionSnapshot {
                paused: paused.contains(&tp),
                queued: status.queued,
                position: consumer.position(&tp),
                log_end,
                committed,
                consumer_lag: consumer.lag(&tp),
                commit_lag: log_end.zip(committed).map(|(e, c)| (e - c).max(0)),
                tp,
            }
        })
        .collect();
    let (in_flight_records, in_flight_bytes) = rt.in_flight();
    Snapshot {
        in_flight_records,
        in_flight_bytes,
        generation: consumer.generation(),
        partitions,
    }
}
