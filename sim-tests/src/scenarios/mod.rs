//! The classic consumer failures, each run twice: by a naive consumer
//! (auto-commit, processing inline or handed off blindly, as the seeds
//! start from) and by the resilience runtime. Each run returns a
//! [`Report`] of counts; the tests assert the naive run shows the failure
//! and the resilient run does not, and `kafka-lab scenario` prints them.
//!
//! | file | scenarios |
//! |---|---|
//! | `classic.rs` | 1 rebalance duplicates, 2 crash with auto-commit, 3 poison + transient, 11 DLT unavailable |
//! | `load.rs` | 4 burst vs a slow downstream, 5 restart and rebalance under load, 6 scaling out under lag |
//! | `network.rs` | 7 startup race, 9 connection chaos, 10 ambiguous commit, 12 slow and lossy network |
//! | `broker.rs` | 7 with the real broker down, 8 broker restart (these stop the shared broker) |

mod broker;
mod classic;
mod load;
mod network;

pub use broker::{broker_restart, consumer_before_broker};
pub use classic::{
    crash_with_auto_commit, dlt_unavailable, poison_and_transient, rebalance_duplicates,
};
pub use load::{burst_with_slow_downstream, restart_under_load, scale_out_under_lag};
pub use network::{
    ambiguous_commit, connection_chaos, corrupt_batches, slow_lossy_network, startup_race,
};

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_core::{Consumer, ConsumerConfig};
use kafka_wire::records::Record;
use kafka_wire::Client;
use resilience::{CommitPolicy, Processor, ProcessorConfig};

use crate::support::{self, eventually, number, Behaviour, Running, Sink, SinkHandler};

/// The counts of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub scenario: &'static str,
    pub mode: &'static str,
    pub produced: u64,
    /// Distinct records whose side effect was applied.
    pub handled: u64,
    /// Side effects applied in all (handled + duplicates).
    pub side_effects: u64,
    pub duplicates: u64,
    /// Produced, and neither handled nor dead-lettered.
    pub lost: u64,
    pub dead_lettered: u64,
    pub rebalances: u64,
    /// Most record bytes held in memory at once (queued or being handled).
    pub peak_in_flight_bytes: u64,
    /// Scenario-specific measurements by name, e.g. ("commits regressed",
    /// 0): what the tests assert (see [`Report::get`]).
    pub facts: Vec<(&'static str, u64)>,
    /// Free text for the reader, e.g. the error a naive consumer exited with.
    pub notes: Vec<String>,
}

impl Report {
    /// The counts of `sink` after a run of `produced` records.
    pub(crate) fn of(
        scenario: &'static str,
        mode: &'static str,
        produced: u32,
        sink: &Sink,
        dead: u64,
    ) -> Self {
        let (distinct, dups) = sink.distinct_and_duplicates();
        let handled = distinct.len() as u64;
        Report {
            scenario,
            mode,
            produced: produced.into(),
            handled,
            side_effects: handled + dups as u64,
            duplicates: dups as u64,
            lost: u64::from(produced).saturating_sub(handled + dead),
            dead_lettered: dead,
            rebalances: 0,
            peak_in_flight_bytes: 0,
            facts: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn fact(mut self, name: &'static str, value: impl TryInto<u64>) -> Self {
        self.facts
            .push((name, value.try_into().unwrap_or(u64::MAX)));
        self
    }

    /// A duration fact, in milliseconds (named "… ms").
    pub(crate) fn millis(self, name: &'static str, d: Duration) -> Self {
        self.fact(name, d.as_millis())
    }

    /// The fact called `name`.
    ///
    /// # Panics
    /// If the run did not record it (a scenario that did not get that far),
    /// naming the facts it did record.
    pub fn get(&self, name: &str) -> u64 {
        self.facts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| {
                panic!(
                    "{} ({}) recorded no {name:?}: {self}",
                    self.scenario, self.mode
                )
            })
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// A markdown table of `reports`, header first.
    pub fn table<'a>(reports: impl IntoIterator<Item = &'a Report>) -> String {
        let mut t = Report::header().to_string();
        for r in reports {
            t.push('\n');
            t.push_str(&r.to_string());
        }
        t
    }

    pub fn header() -> &'static str {
        "| scenario | mode | produced | handled | side effects | duplicates | lost | DLT | rebalances | peak in-flight bytes | notes |\n|---|---|---|---|---|---|---|---|---|---|---|"
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.mode,
            self.produced,
            self.handled,
            self.side_effects,
            self.duplicates,
            self.lost,
            self.dead_lettered,
            self.rebalances,
            self.peak_in_flight_bytes,
            self.facts
                .iter()
                .map(|(n, v)| format!("{n}: {v}"))
                .chain(self.notes.iter().cloned())
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

/// The seeds' consumer: auto-commit every 100 ms, plus `props`.
pub(crate) fn naive_config(
    b: &testkit::BrokerEnv,
    group: &str,
    props: &[(&str, &str)],
) -> ConsumerConfig {
    let mut all = vec![
        ("enable.auto.commit", "true"),
        ("auto.commit.interval.ms", "100"),
    ];
    all.extend_from_slice(props);
    support::group_consumer_with(b, group, &all)
}

/// The seeds' loop: poll, then handle every record inline, retrying a
/// failure forever. Returns how often its assignment changed.
pub(crate) async fn naive_inline_loop(
    cfg: ConsumerConfig,
    topic: String,
    sink: Arc<Sink>,
    behaviour: Behaviour,
    until: Instant,
) -> u64 {
    let mut c = Consumer::connect(cfg).await.expect("connect");
    c.subscribe(&[&topic]).expect("subscribe");
    let mut rebalances = 0;
    let mut last_assignment = Vec::new();
    while Instant::now() < until {
        let Ok(batches) = c.poll(Duration::from_millis(100)).await else {
            continue;
        };
        let now = c.assignment();
        if now != last_assignment {
            rebalances += 1;
            last_assignment = now;
        }
        for batch in batches {
            for r in &batch.records {
                // A poison record blocks here until the run ends.
                while sink
                    .handle(&behaviour, batch.tp.partition, number(r))
                    .await
                    .is_err()
                    && Instant::now() < until
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    c.close(Duration::from_secs(5)).await;
    rebalances
}

/// The runtime as the scenarios run it: commits every 100 ms.
pub(crate) fn resilient(b: &testkit::BrokerEnv, group: &str, topic: &str) -> ProcessorConfig {
    ProcessorConfig::new(support::group_consumer(b, group), &[topic])
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)))
}

pub(crate) fn start(cfg: ProcessorConfig, sink: &Arc<Sink>, behaviour: &Behaviour) -> Running {
    support::start(Processor::new(
        cfg,
        SinkHandler::new(sink, behaviour.clone()),
    ))
}

pub(crate) async fn numbered(
    b: &testkit::BrokerEnv,
    admin: &Client,
    prefix: &str,
    partitions: i32,
    n: u32,
) -> String {
    support::numbered_topic(b, admin, prefix, partitions, n, |i| format!("k{i}")).await
}

/// Wait until `sink` holds `n` distinct records; then let a commit land.
pub(crate) async fn drained(sink: &Sink, n: u32, timeout: Duration) {
    eventually(timeout, || sink.distinct() >= n as usize).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The seeds' start-up: connect once, and exit if that fails. Records
/// "exited at start" (1 or 0) and the error.
pub(crate) async fn naive_start(name: &'static str, n: u32, cfg: ConsumerConfig) -> Report {
    let report = Report::of(name, "naive", n, &Sink::default(), 0);
    match Consumer::connect(cfg).await {
        Ok(_) => report.fact("exited at start", 0u64),
        Err(e) => report.fact("exited at start", 1u64).note(e.to_string()),
    }
}

/// The seeds' "async" consumer: poll hands every record to one worker over
/// an unbounded channel, and auto-commit commits what was polled. Nothing
/// bounds the queue, and a stop or crash loses what it held.
pub(crate) struct NaiveHandoff {
    poller: tokio::task::JoinHandle<()>,
    worker: tokio::task::JoinHandle<()>,
    stop: Arc<AtomicBool>,
    /// Most record bytes queued at once (counted as the runtime counts them).
    peak_queued_bytes: Arc<AtomicUsize>,
}

impl NaiveHandoff {
    pub(crate) fn start(
        cfg: ConsumerConfig,
        topic: &str,
        sink: &Arc<Sink>,
        behaviour: &Behaviour,
    ) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Record>();
        let queued = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (sink, behaviour, q) = (sink.clone(), behaviour.clone(), queued.clone());
        let worker = tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                q.fetch_sub(
                    resilience::processor::record_bytes(&r),
                    AtomicOrdering::SeqCst,
                );
                let _ = sink.handle(&behaviour, 0, number(&r)).await; // failures ignored
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (topic, stopping, p) = (topic.to_string(), stop.clone(), peak.clone());
        let poller = tokio::spawn(async move {
            let mut c = Consumer::connect(cfg).await.expect("connect");
            c.subscribe(&[&topic]).expect("subscribe");
            while !stopping.load(AtomicOrdering::SeqCst) {
                for batch in c.poll(Duration::from_millis(100)).await.unwrap_or_default() {
                    for r in batch.records {
                        let now = queued.fetch_add(
                            resilience::processor::record_bytes(&r),
                            AtomicOrdering::SeqCst,
                        );
                        p.fetch_max(now, AtomicOrdering::SeqCst);
                        let _ = tx.send(r);
                    }
                }
            }
            c.close(Duration::from_secs(5)).await; // auto-commits what was polled
        });
        NaiveHandoff {
            poller,
            worker,
            stop,
            peak_queued_bytes: peak,
        }
    }

    /// "Graceful": close the consumer (its last auto-commit covers every
    /// polled record), then drop the queue.
    pub(crate) async fn stop(self) {
        self.stop.store(true, AtomicOrdering::SeqCst);
        let _ = self.poller.await;
        self.worker.abort();
        let _ = self.worker.await;
    }

    /// The process dies.
    pub(crate) async fn crash(self) {
        self.poller.abort();
        self.worker.abort();
        let _ = (self.poller.await, self.worker.await);
    }

    pub(crate) fn peak(&self) -> u64 {
        self.peak_queued_bytes.load(AtomicOrdering::SeqCst) as u64
    }
}

/// Every scenario's name, for `kafka-lab scenario`, in number order.
pub const NAMES: [&str; 14] = [
    "rebalance",
    "crash",
    "poison",
    "burst",
    "restart-under-load",
    "scale-out",
    "startup-race",
    "broker-down-at-start",
    "broker-restart",
    "chaos",
    "ambiguous-commit",
    "dlt-unavailable",
    "slow-network",
    "corrupt-batch",
];

/// Scenarios that stop or restart the shared broker: run them alone.
pub const STOPS_THE_BROKER: [&str; 2] = ["broker-down-at-start", "broker-restart"];

/// Run one scenario by name; its reports.
pub async fn run_by_name(b: &testkit::BrokerEnv, name: &str) -> Option<Vec<Report>> {
    fn two((a, b): (Report, Report)) -> Vec<Report> {
        vec![a, b]
    }
    Some(match name {
        "rebalance" => two(rebalance_duplicates(b).await),
        "crash" => two(crash_with_auto_commit(b).await),
        "poison" => two(poison_and_transient(b).await),
        "burst" => two(burst_with_slow_downstream(b).await),
        "restart-under-load" => restart_under_load(b).await.to_vec(),
        "scale-out" => two(scale_out_under_lag(b).await),
        "startup-race" => two(startup_race(b).await),
        "broker-down-at-start" => two(consumer_before_broker(b).await),
        "broker-restart" => two(broker_restart(b).await),
        "chaos" => vec![connection_chaos(b, 42, Duration::from_secs(10)).await],
        "ambiguous-commit" => vec![ambiguous_commit(b, 42).await],
        "dlt-unavailable" => two(dlt_unavailable(b).await),
        "slow-network" => vec![slow_lossy_network(b, 42).await],
        "corrupt-batch" => vec![corrupt_batches(b, 42).await],
        _ => return None,
    })
}
