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
//! | `network.rs` | 7 startup race, 9 connection chaos, 10 ambiguous commit, 12 slow and lossy network, 13 corrupt batches, 14 a fenced member |
//! | `broker.rs` | 7 with the real broker down, 8 broker restart (these stop the shared broker) |
//! | `share.rs` | 15 a slow handler on one partition: naive, the runtime in a consumer group, the runtime in a share group (KIP-932) |

mod broker;
mod classic;
mod load;
mod network;
mod share;

pub use broker::{broker_restart, consumer_before_broker};
pub use classic::{
    crash_with_auto_commit, dlt_unavailable, poison_and_transient, rebalance_duplicates,
};
pub use load::{
    burst_with_slow_downstream, outside_uncommitted_window, restart_under_load, scale_out_under_lag,
};
pub use network::{
    ambiguous_commit, connection_chaos, corrupt_batches, fenced_member, slow_lossy_network,
    startup_race,
};
pub use share::slow_handler;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_core::{Consumer, ConsumerConfig, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::Client;
use resilience::{CommitPolicy, Processor, ProcessorConfig};

use crate::support::{self, number, Behaviour, Running, Sink, SinkHandler};

/// The counts of one run.
///
/// Records that were produced but neither handled nor dead-lettered are
/// split in two, because they are different failures:
/// - [`lost`](Report::lost): the group committed past them (or they were
///   never written): nothing will ever process them;
/// - [`unhandled`](Report::unhandled): not committed past, so a restart of
///   the group would still process them (stuck, queued, never started).
///
/// Columns a scenario does not measure are `None` and print as "–".
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
    /// Neither handled nor dead-lettered, and committed past (or never
    /// written): really lost. Until [`Report::split_missing`] has looked at
    /// the group's committed offsets, every missing record counts here.
    pub lost: u64,
    /// Neither handled nor dead-lettered by the end of the run, but not
    /// committed past: a restart would still process them.
    pub unhandled: u64,
    /// Records written to the dead-letter topic; `None` without a DLT.
    pub dead_lettered: Option<u64>,
    /// Assignments seen by the members; `None` when not measured.
    pub rebalances: Option<u64>,
    /// Most record bytes held in memory at once (queued or being handled);
    /// `None` when not measured.
    pub peak_in_flight_bytes: Option<u64>,
    /// Scenario-specific measurements by name, e.g. ("commits regressed",
    /// 0): what the tests assert (see [`Report::get`]).
    pub facts: Vec<(&'static str, u64)>,
    /// In words: for a naive run what went wrong, for a resilient run what
    /// held (with the error a naive consumer exited with, if any). Printed
    /// under the table.
    pub verdict: String,
}

impl Report {
    /// The counts of `sink` after a run of `produced` records numbered
    /// `0..produced`, `dead` of them dead-lettered (`None`: no DLT in this
    /// run). Every missing record counts as lost until
    /// [`Report::split_missing`] looks at what was committed.
    pub fn of(
        scenario: &'static str,
        mode: &'static str,
        produced: u32,
        sink: &Sink,
        dead: Option<u64>,
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
            lost: u64::from(produced).saturating_sub(handled + dead.unwrap_or(0)),
            unhandled: 0,
            dead_lettered: dead,
            rebalances: None,
            peak_in_flight_bytes: None,
            facts: Vec::new(),
            verdict: String::new(),
        }
    }

    /// Split the missing records (counted as lost by [`Report::of`]) into
    /// lost and unhandled: a record at or past `group`'s committed offset
    /// of its partition is unhandled (a restart would process it); one
    /// below it was committed past and is lost, as is one that is not in
    /// the topic at all. Records are found by reading `topic` back.
    /// Dead-lettered records are taken to be committed past (the runtime
    /// commits a record once its DLT write is acknowledged).
    pub async fn split_missing(
        mut self,
        b: &testkit::BrokerEnv,
        group: &str,
        topic: &str,
        sink: &Sink,
    ) -> Self {
        if self.lost == 0 {
            return self;
        }
        let admin = testkit::client(b).await;
        let ends: Vec<(i32, i64)> = admin
            .list_offsets(topic, kafka_wire::OffsetSpec::Latest)
            .await
            .expect("list offsets");
        let tps: Vec<TopicPartition> = ends
            .iter()
            .map(|(p, _)| TopicPartition::new(topic, *p))
            .collect();
        let committed = Consumer::connect(support::group_consumer(b, group))
            .await
            .expect("connect")
            .committed(&tps)
            .await
            .expect("committed");
        if committed.is_empty() {
            // Nothing committed: a restart would start from the beginning.
            self.unhandled = self.lost;
            self.lost = 0;
            return self;
        }
        // Where each record sits.
        let mut reader = Consumer::connect(
            ConsumerConfig::builder()
                .bootstrap(&b.bootstrap)
                .expect("bootstrap")
                .set("auto.offset.reset", "earliest")
                .expect("reset")
                .build()
                .expect("config"),
        )
        .await
        .expect("connect");
        reader.assign(&tps);
        let want: i64 = ends.iter().map(|(_, e)| *e).sum();
        let mut position: HashMap<u32, (i32, i64)> = HashMap::new();
        let mut read = 0i64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while read < want && Instant::now() < deadline {
            for batch in reader
                .poll(Duration::from_millis(200))
                .await
                .unwrap_or_default()
            {
                for r in &batch.records {
                    read += 1;
                    position
                        .entry(number(r))
                        .or_insert((batch.tp.partition, r.offset));
                }
            }
        }
        let handled = sink.distinct_and_duplicates().0;
        let (mut below, mut at_or_past) = (0u64, 0u64);
        for n in 0..self.produced as u32 {
            if handled.contains(&n) {
                continue;
            }
            match position.get(&n) {
                Some((p, o)) => {
                    let c = committed
                        .get(&TopicPartition::new(topic, *p))
                        .copied()
                        .unwrap_or(0);
                    if *o < c {
                        below += 1;
                    } else {
                        at_or_past += 1;
                    }
                }
                None => below += 1, // never written
            }
        }
        self.lost = below.saturating_sub(self.dead_lettered.unwrap_or(0));
        self.unhandled = at_or_past;
        self
    }

    pub fn fact(mut self, name: &'static str, value: impl TryInto<u64>) -> Self {
        self.facts
            .push((name, value.try_into().unwrap_or(u64::MAX)));
        self
    }

    /// A duration fact, in milliseconds (named "… ms").
    pub fn millis(self, name: &'static str, d: Duration) -> Self {
        self.fact(name, d.as_millis())
    }

    /// The fact called `name`.
    ///
    /// # Panics
    /// If the run did not record it (a scenario that did not get that far),
    /// naming the facts it did record.
    pub fn get(&self, name: &str) -> u64 {
        self.find(name).unwrap_or_else(|| {
            panic!(
                "{} ({}) recorded no {name:?}: {self}",
                self.scenario, self.mode
            )
        })
    }

    /// The fact called `name`, if the run recorded it.
    pub fn find(&self, name: &str) -> Option<u64> {
        self.facts.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// What went wrong (naive) or what held (resilient), in words.
    pub fn verdict(mut self, verdict: impl Into<String>) -> Self {
        self.verdict = verdict.into();
        self
    }

    /// The table of `reports`: an aligned markdown table of the counts
    /// (under 120 columns), then one line per row saying in words what
    /// happened, with any notes.
    pub fn table<'a>(reports: impl IntoIterator<Item = &'a Report>) -> String {
        let reports: Vec<&Report> = reports.into_iter().collect();
        Self::table_with_848(&reports, &[])
    }

    /// [`Report::table`] of the runs under the classic protocol, with a
    /// column for the same runs under KIP-848 (`group.protocol=consumer`):
    /// their duplicates and lost records, "–" where there is no such run.
    /// `kip848[i]` is the run of `classic[i]`'s scenario and mode. A
    /// KIP-848 run whose counts differ from its classic run adds its own
    /// line under the classic run's.
    pub fn table_with_848(classic: &[&Report], kip848: &[&Report]) -> String {
        let dash = |v: Option<u64>| v.map_or_else(|| "–".to_string(), |v| v.to_string());
        let with_848 = !kip848.is_empty();
        let twin = |i: usize, r: &Report| {
            kip848
                .get(i)
                .copied()
                .filter(|k| k.scenario == r.scenario && k.mode == r.mode)
        };
        let mut header = vec![
            "#",
            "scenario",
            "mode",
            "produced",
            "handled",
            "dups",
            "lost",
            "unhandled",
            "DLT",
        ];
        if with_848 {
            header.push("848 dups/lost");
        }
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut last = "";
        for (i, r) in classic.iter().enumerate() {
            let scenario = if r.scenario == last {
                String::new()
            } else {
                r.scenario.to_string()
            };
            last = r.scenario;
            let mut row = vec![
                (i + 1).to_string(),
                scenario,
                r.mode.to_string(),
                r.produced.to_string(),
                r.handled.to_string(),
                r.duplicates.to_string(),
                r.lost.to_string(),
                r.unhandled.to_string(),
                dash(r.dead_lettered),
            ];
            if with_848 {
                row.push(twin(i, r).map_or_else(
                    || "–".to_string(),
                    |k| format!("{}/{}", k.duplicates, k.lost),
                ));
            }
            rows.push(row);
        }
        let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        // Text columns left-aligned, counts right-aligned.
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, (cell, w)) in cells.iter().zip(&width).enumerate() {
                let pad = w - cell.chars().count();
                if (1..=2).contains(&i) {
                    s.push_str(&format!(" {cell}{} |", " ".repeat(pad)));
                } else {
                    s.push_str(&format!(" {}{cell} |", " ".repeat(pad)));
                }
            }
            s
        };
        let header: Vec<String> = header.into_iter().map(String::from).collect();
        let mut t = line(&header);
        t.push('\n');
        t.push('|');
        for (i, w) in width.iter().enumerate() {
            let dashes = "-".repeat(*w);
            t.push_str(&if (1..=2).contains(&i) {
                format!(":{dashes}-|")
            } else {
                format!("-{dashes}:|")
            });
        }
        for row in &rows {
            t.push('\n');
            t.push_str(&line(row));
        }
        t.push_str("\n\n");
        let mut legend = String::from(
            "lost: committed past (or never written) and never handled: gone for good. \
             unhandled: not handled by the end of the run and not committed past: a restart \
             would process them. dups: side effects applied twice or more. DLT: \
             dead-lettered. \"–\": not measured in that run.",
        );
        if with_848 {
            legend.push_str(
                " 848 dups/lost: the same run with group.protocol=consumer (KIP-848); its own \
                 line follows the classic one where its counts differ.",
            );
        }
        t.push_str(&wrap(&legend, 118, ""));
        t.push('\n');
        for (i, r) in classic.iter().enumerate() {
            let text = format!("{}. {} ({}): {}", i + 1, r.scenario, r.mode, r.describe());
            t.push('\n');
            t.push_str(&wrap(&text, 118, "    "));
            if let Some(k) = twin(i, r) {
                let counts = |r: &Report| {
                    (
                        r.handled,
                        r.duplicates,
                        r.lost,
                        r.unhandled,
                        r.dead_lettered,
                    )
                };
                if counts(k) != counts(r) {
                    let text = format!(
                        "under KIP-848: handled {}, dups {}, lost {}, unhandled {}: {}",
                        k.handled,
                        k.duplicates,
                        k.lost,
                        k.unhandled,
                        k.describe()
                    );
                    t.push_str("\n    ");
                    t.push_str(&wrap(&text, 114, "      "));
                }
            }
        }
        t
    }

    /// The verdict, then the measurements that are not columns.
    fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.verdict.is_empty() {
            parts.push(self.verdict.clone());
        }
        if let Some(r) = self.rebalances {
            parts.push(format!("{r} assignments"));
        }
        if let Some(p) = self.peak_in_flight_bytes {
            parts.push(format!("peak in memory {:.2} MB", p as f64 / 1e6));
        }
        parts.join("; ")
    }
}

impl fmt::Display for Report {
    /// One line with every count and fact (for assertion messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): produced {}, handled {}, side effects {}, duplicates {}, lost {}, \
             unhandled {}, DLT {:?}, rebalances {:?}, peak in-flight bytes {:?}; {}",
            self.scenario,
            self.mode,
            self.produced,
            self.handled,
            self.side_effects,
            self.duplicates,
            self.lost,
            self.unhandled,
            self.dead_lettered,
            self.rebalances,
            self.peak_in_flight_bytes,
            self.facts
                .iter()
                .map(|(n, v)| format!("{n}: {v}"))
                .chain(std::iter::once(self.verdict.clone()))
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

/// `text` wrapped at `width` columns, continuation lines indented by `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = indent.to_string();
        } else if !line.is_empty() && line != indent {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out
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
    testkit::numbered_topic(b, admin, prefix, partitions, n, |i| format!("k{i}")).await
}

/// Wait until `sink` holds `n` distinct records; then until `group`'s
/// commits reach the end of `topic` (at most 10 s: the report says if not).
pub(crate) async fn drained(
    b: &testkit::BrokerEnv,
    (group, topic): (&str, &str),
    sink: &Sink,
    n: u32,
    timeout: Duration,
) {
    testkit::eventually(timeout, || sink.distinct() >= n as usize).await;
    support::committed_to_end(b, group, topic, Duration::from_secs(10)).await;
}

/// The seeds' start-up: connect once, and exit if that fails. Records
/// "exited at start" (1 or 0) and the error.
pub(crate) async fn naive_start(name: &'static str, n: u32, cfg: ConsumerConfig) -> Report {
    let mut report = Report::of(name, "naive", n, &Sink::default(), None);
    // It never joined, so nothing was committed: every record waits.
    report.unhandled = report.lost;
    report.lost = 0;
    match Consumer::connect(cfg).await {
        Ok(_) => report.fact("exited at start", 0u64),
        Err(e) => report.fact("exited at start", 1u64).verdict(format!(
            "connect failed once and the consumer exited: nothing consumed (error: {e})"
        )),
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
pub const NAMES: [&str; 16] = [
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
    "fenced",
    "slow-handler",
];

/// Scenarios with only a resilient run (the fault needs the runtime's
/// retries to be survivable at all; a naive run would only hang).
pub const RESILIENT_ONLY: [&str; 5] = [
    "chaos",
    "ambiguous-commit",
    "slow-network",
    "corrupt-batch",
    "fenced",
];

/// One line per scenario for `--help`: its name and what it shows.
pub const ABOUT: [(&str, &str); 16] = [
    (
        "rebalance",
        "1: a handler slower than max.poll.interval.ms (duplicates)",
    ),
    (
        "crash",
        "2: a crash with auto-commit and a worker queue (loss)",
    ),
    (
        "poison",
        "3: poison records (5 %) and transient failures (5 %)",
    ),
    (
        "burst",
        "4: a burst of 100,000 records against a 25,000/s downstream (memory)",
    ),
    (
        "restart-under-load",
        "5: members stop, die and join at 2,000 records/s",
    ),
    ("scale-out", "6: two members join a lagging group"),
    ("startup-race", "7: connections refused for the first 3 s"),
    (
        "broker-down-at-start",
        "7: the broker really down at start (restarts our broker)",
    ),
    (
        "broker-restart",
        "8: the broker restarts mid-run (restarts our broker)",
    ),
    (
        "chaos",
        "9: every connection reset every 0.5-1.5 s (resilient only)",
    ),
    (
        "ambiguous-commit",
        "10: connections cut right after OffsetCommit (resilient only)",
    ),
    (
        "dlt-unavailable",
        "11: the dead-letter topic cannot be written",
    ),
    (
        "slow-network",
        "12: 256 KiB/s, delayed heartbeats, a dropped Fetch (resilient only)",
    ),
    (
        "corrupt-batch",
        "13: every fetched batch corrupted until the link heals (resilient only)",
    ),
    (
        "fenced",
        "14: a member's heartbeats held past the session: fenced, rejoins (resilient only)",
    ),
    (
        "slow-handler",
        "15: a 20 ms handler, 3 members, 1 partition: consumer group vs share group (KIP-932)",
    ),
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
        "fenced" => vec![fenced_member(b, 42).await],
        "slow-handler" => slow_handler(b).await,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(mode: &'static str, lost: u64, unhandled: u64, dlt: Option<u64>) -> Report {
        Report {
            scenario: "3 poison + transient",
            mode,
            produced: 1000,
            handled: 1000 - lost - unhandled - dlt.unwrap_or(0),
            lost,
            unhandled,
            dead_lettered: dlt,
            verdict: "what happened".into(),
            ..Report::default()
        }
    }

    #[test]
    fn the_table_splits_lost_from_unhandled_dashes_what_was_not_measured_and_fits_120_columns() {
        let t = Report::table(&[
            report("naive", 3, 552, None),
            report("resilient", 0, 0, Some(50)),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("| dups | lost | unhandled |"), "{t}");
        assert!(lines[2].contains("|    3 |       552 |   – |"), "{t}");
        assert!(lines[3].contains("|    0 |         0 |  50 |"), "{t}");
        // The second row of a scenario does not repeat its name.
        assert!(!lines[3].contains("poison"), "{t}");
        for l in &lines[..4] {
            assert!(
                l.chars().count() <= 120,
                "{} columns: {l}",
                l.chars().count()
            );
        }
        assert!(
            t.contains("\n1. 3 poison + transient (naive): what happened"),
            "{t}"
        );
        assert!(t.lines().all(|l| l.chars().count() <= 120), "{t}");
    }

    #[test]
    fn the_848_column_shows_the_same_runs_under_kip_848_and_a_line_where_they_differ() {
        let classic = [
            report("naive", 3, 552, None),
            report("resilient", 0, 0, Some(50)),
        ];
        let mut naive_848 = report("naive", 0, 555, None);
        naive_848.duplicates = 7;
        naive_848.verdict = "stuck".into();
        let kip848 = [naive_848, report("resilient", 0, 0, Some(50))];
        let t = Report::table_with_848(
            &classic.iter().collect::<Vec<_>>(),
            &kip848.iter().collect::<Vec<_>>(),
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("| DLT | 848 dups/lost |"), "{t}");
        assert!(lines[2].ends_with("|   – |           7/0 |"), "{t}");
        assert!(lines[3].ends_with("|  50 |           0/0 |"), "{t}");
        // Only the run whose counts differ gets its own line.
        assert_eq!(t.matches("under KIP-848:").count(), 1, "{t}");
        assert!(
            t.contains("under KIP-848: handled 445, dups 7, lost 0, unhandled 555: stuck"),
            "{t}"
        );
        // The widest names the lab prints still fit 120 columns.
        let mut wide = report("+ DedupStore", 0, 0, None);
        wide.scenario = "4 burst vs slow downstream";
        wide.produced = 100_000;
        let t = Report::table_with_848(&[&wide], &[&wide]);
        assert!(t.lines().all(|l| l.chars().count() <= 120), "{t}");
        // A scenario without a KIP-848 run shows a dash.
        let t = Report::table_with_848(&[&wide], &[&classic[0]]);
        assert!(
            t.lines().nth(2).unwrap().ends_with("|             – |"),
            "{t}"
        );
    }

    #[test]
    fn every_scenario_has_a_line_of_help() {
        let names: Vec<&str> = ABOUT.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, NAMES);
        for n in RESILIENT_ONLY.iter().chain(&STOPS_THE_BROKER) {
            assert!(NAMES.contains(n), "{n}");
        }
    }
}
