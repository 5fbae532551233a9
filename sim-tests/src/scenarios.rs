//! The classic consumer failures, each run twice: by a naive consumer
//! (auto-commit, processing inline or handed off blindly, as the seeds
//! start from) and by the resilience runtime. Each run returns a
//! [`Report`] of counts; the tests assert the naive run shows the failure
//! and the resilient run does not, and `kafka-lab scenario` prints them.

use std::fmt;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_core::{Consumer, ConsumerConfig, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::{Client, NewTopic};
use resilience::observe::EventLog;
use resilience::retry::BackoffPolicy;
use resilience::{CommitPolicy, HandlerError, Processor, ProcessorConfig};

use crate::proxy::{FaultProxy, Faults};
use crate::support::{
    self, eventually, instant, number, taking, Behaviour, Running, Sink, SinkHandler,
};

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
    /// Scenario-specific facts, e.g. "commits regressed: 0".
    pub notes: Vec<String>,
}

impl Report {
    /// The counts of `sink` after a run of `produced` records.
    fn of(
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
            notes: Vec::new(),
        }
    }

    fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn header() -> &'static str {
        "| scenario | mode | produced | handled | side effects | duplicates | lost | DLT | rebalances | notes |\n|---|---|---|---|---|---|---|---|---|---|"
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.mode,
            self.produced,
            self.handled,
            self.side_effects,
            self.duplicates,
            self.lost,
            self.dead_lettered,
            self.rebalances,
            self.notes.join("; ")
        )
    }
}

/// The seeds' consumer: auto-commit every 100 ms, plus `props`.
fn naive_config(b: &testkit::BrokerEnv, group: &str, props: &[(&str, &str)]) -> ConsumerConfig {
    let mut all = vec![
        ("enable.auto.commit", "true"),
        ("auto.commit.interval.ms", "100"),
    ];
    all.extend_from_slice(props);
    support::group_consumer_with(b, group, &all)
}

/// The seeds' loop: poll, then handle every record inline, retrying a
/// failure forever. Returns how often its assignment changed.
async fn naive_inline_loop(
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
fn resilient(b: &testkit::BrokerEnv, group: &str, topic: &str) -> ProcessorConfig {
    ProcessorConfig::new(support::group_consumer(b, group), &[topic])
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)))
}

fn start(cfg: ProcessorConfig, sink: &Arc<Sink>, behaviour: &Behaviour) -> Running {
    support::start(Processor::new(
        cfg,
        SinkHandler::new(sink, behaviour.clone()),
    ))
}

async fn numbered(
    b: &testkit::BrokerEnv,
    admin: &Client,
    prefix: &str,
    partitions: i32,
    n: u32,
) -> String {
    support::numbered_topic(b, admin, prefix, partitions, n, |i| format!("k{i}")).await
}

/// Wait until `sink` holds `n` distinct records; then let a commit land.
async fn drained(sink: &Sink, n: u32, timeout: Duration) {
    eventually(timeout, || sink.distinct() >= n as usize).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// 1. Processing slower than `max.poll.interval.ms`: the naive member is
///    dropped, its partitions move, and records are processed again.
pub async fn rebalance_duplicates(b: &testkit::BrokerEnv) -> (Report, Report) {
    const N: u32 = 200;
    const NAME: &str = "1 rebalance duplicates";
    let admin = support::admin(b).await;
    let topic = numbered(b, &admin, "sc-rebalance", 2, N).await;
    let slow = taking(Duration::from_millis(40));
    // 100 records × 40 ms per poll > 3 s.
    let props = [
        ("max.poll.interval.ms", "3000"),
        ("max.poll.records", "100"),
    ];

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-rebalance-naive");
    let until = Instant::now() + Duration::from_secs(25);
    let members: Vec<_> = (0..2)
        .map(|_| {
            let cfg = naive_config(b, &group, &props);
            tokio::spawn(naive_inline_loop(
                cfg,
                topic.clone(),
                sink.clone(),
                slow.clone(),
                until,
            ))
        })
        .collect();
    let mut rebalances = 0;
    for m in members {
        rebalances += m.await.unwrap_or(0);
    }
    let mut naive = Report::of(NAME, "naive", N, &sink, 0);
    naive.rebalances = rebalances;

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-rebalance");
    let logs = [Arc::new(EventLog::default()), Arc::new(EventLog::default())];
    let runs: Vec<Running> = logs
        .iter()
        .map(|log| {
            let mut cfg = resilient(b, &group, &topic).observer(log.clone());
            cfg.consumer = support::group_consumer_with(b, &group, &props);
            start(cfg, &sink, &slow)
        })
        .collect();
    drained(&sink, N, Duration::from_secs(30)).await;
    for r in runs {
        r.stop().await;
    }
    let mut res = Report::of(NAME, "resilient", N, &sink, 0);
    res.rebalances = logs.iter().map(|l| l.assignments() as u64).sum();
    let lost: usize = logs.iter().map(|l| l.losses()).sum();
    let late: usize = logs.iter().map(|l| l.commits_after_revoke().len()).sum();
    let res = res
        .note(format!("partitions lost: {lost}"))
        .note(format!("commits after revoke: {late}"));
    (naive, res)
}

/// 2. Auto-commit with records handed to a worker: the crash loses what was
///    committed but never processed. The runtime commits only handled work.
pub async fn crash_with_auto_commit(b: &testkit::BrokerEnv) -> (Report, Report) {
    const N: u32 = 300;
    const NAME: &str = "2 crash with auto-commit";
    let admin = support::admin(b).await;
    let topic = numbered(b, &admin, "sc-crash", 1, N).await;
    let slow = taking(Duration::from_millis(10));

    // Naive: poll hands records to a worker; auto-commit commits positions.
    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-crash-naive");
    let cfg = naive_config(b, &group, &[]);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Record>();
    let (worker_sink, worker_slow) = (sink.clone(), slow.clone());
    let worker = tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            let _ = worker_sink.handle(&worker_slow, 0, number(&r)).await;
        }
    });
    let poller_topic = topic.clone();
    let poller = tokio::spawn(async move {
        let mut c = Consumer::connect(cfg).await.expect("connect");
        c.subscribe(&[&poller_topic]).expect("subscribe");
        loop {
            for batch in c.poll(Duration::from_millis(100)).await.unwrap_or_default() {
                for r in batch.records {
                    let _ = tx.send(r);
                }
            }
        }
    });
    eventually(Duration::from_secs(30), || sink.distinct() >= 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a few auto-commits
    poller.abort(); // the crash
    worker.abort();
    let _ = (poller.await, worker.await);
    // Restart in the same group and read to the end.
    let until = Instant::now() + Duration::from_secs(12);
    naive_inline_loop(
        naive_config(b, &group, &[]),
        topic.clone(),
        sink.clone(),
        instant(),
        until,
    )
    .await;
    let naive = Report::of(NAME, "naive", N, &sink, 0);

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-crash");
    let run = start(resilient(b, &group, &topic), &sink, &slow);
    eventually(Duration::from_secs(30), || sink.distinct() >= 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.crash().await;
    let run = start(resilient(b, &group, &topic), &sink, &instant());
    drained(&sink, N, Duration::from_secs(40)).await;
    run.stop().await;
    let res = Report::of(NAME, "resilient", N, &sink, 0)
        .note("duplicates are the uncommitted window redone (at-least-once)");
    (naive, res)
}

/// 3. Poison pills (5 %) and transient failures (5 %) against a running
///    average. Naive: the first poison record blocks its partition.
pub async fn poison_and_transient(b: &testkit::BrokerEnv) -> (Report, Report) {
    const N: u32 = 1_000;
    const NAME: &str = "3 poison + transient";
    let admin = support::admin(b).await;
    let topic = numbered(b, &admin, "sc-poison", 2, N).await;
    let behaviour: Behaviour = Arc::new(|n, attempt| match n % 20 {
        0 => Err(HandlerError::NonRetryable(format!("poison {n}"))),
        1 if attempt == 1 => Err(HandlerError::Retryable("transient".into())),
        _ => Ok(Duration::ZERO),
    });

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-poison-naive");
    let until = Instant::now() + Duration::from_secs(6);
    naive_inline_loop(
        naive_config(b, &group, &[]),
        topic.clone(),
        sink.clone(),
        behaviour.clone(),
        until,
    )
    .await;
    let naive = Report::of(NAME, "naive", N, &sink, 0)
        .note("stuck retrying the first poison record of each partition");

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-poison");
    let cfg = resilient(b, &group, &topic)
        .dead_letter(support::producer_config(b))
        .backoff(BackoffPolicy {
            initial: Duration::from_millis(20),
            ..BackoffPolicy::default()
        });
    let run = start(cfg, &sink, &behaviour);
    let stats = run.stats.clone();
    run.wait_finished(u64::from(N), Duration::from_secs(60))
        .await;
    run.stop().await;
    // The running average of the sink equals produced minus dead-lettered.
    let applied: Vec<u32> = sink.distinct_and_duplicates().0.into_iter().collect();
    let expected: Vec<u32> = (0..N).filter(|n| n % 20 != 0).collect();
    let avg = |v: &[u32]| v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len().max(1) as f64;
    let dead = stats.dead_lettered.load(AtomicOrdering::Relaxed);
    let res = Report::of(NAME, "resilient", N, &sink, dead).note(format!(
        "sink average {:.3} = expected {:.3}",
        avg(&applied),
        avg(&expected)
    ));
    (naive, res)
}

/// 9. Every connection reset at random every 0.5–1.5 s under load.
pub async fn connection_chaos(b: &testkit::BrokerEnv, seed: u64, duration: Duration) -> Report {
    const N: u32 = 3_000;
    let admin = support::admin(b).await;
    let topic = numbered(b, &admin, "sc-chaos", 3, N).await;
    let proxy = FaultProxy::new(seed);
    let group = testkit::unique_name("sc-chaos");
    let log = Arc::new(EventLog::default());
    let mut cfg = resilient(b, &group, &topic).observer(log.clone());
    cfg.consumer.client.connector = proxy.connector();
    let sink = Arc::new(Sink::default());
    let run = start(cfg, &sink, &taking(Duration::from_millis(1)));
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let wait = Duration::from_millis(500) + Duration::from_millis(1000).mul_f64(proxy.draw());
        tokio::time::sleep(wait).await;
        proxy.reset_all();
    }
    drained(&sink, N, Duration::from_secs(60)).await;
    run.stop().await;
    let mut r = Report::of("9 connection chaos", "resilient", N, &sink, 0)
        .note(format!(
            "connections reset {} times",
            proxy.stats.resets.load(AtomicOrdering::Relaxed)
        ))
        .note(format!(
            "order kept per partition: {}",
            sink.ordered_per_partition()
        ))
        .note(format!("commits regressed: {}", log.commit_regressions()));
    r.rebalances = log.assignments() as u64;
    r
}

/// 10. The connection is reset right after OffsetCommit is sent, often.
pub async fn ambiguous_commit(b: &testkit::BrokerEnv, seed: u64) -> Report {
    const N: u32 = 1_000;
    const OFFSET_COMMIT: i16 = 8;
    let admin = support::admin(b).await;
    let topic = numbered(b, &admin, "sc-ambiguous", 2, N).await;
    let proxy = FaultProxy::new(seed);
    proxy.set(Faults {
        reset_after_request: Some((OFFSET_COMMIT, 0.5)),
        ..Faults::default()
    });
    let group = testkit::unique_name("sc-ambiguous");
    let log = Arc::new(EventLog::default());
    let mut cfg = resilient(b, &group, &topic)
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(50)))
        .observer(log.clone());
    cfg.consumer.client.connector = proxy.connector();
    let sink = Arc::new(Sink::default());
    let run = start(cfg, &sink, &taking(Duration::from_millis(2)));
    drained(&sink, N, Duration::from_secs(60)).await;
    run.stop().await;
    let behind = support::uncommitted_partitions(b, &admin, &group, &topic, 2).await;
    Report::of("10 ambiguous commit", "resilient", N, &sink, 0)
        .note(format!(
            "commit requests cut: {}",
            proxy.stats.requests_cut.load(AtomicOrdering::Relaxed)
        ))
        .note(format!("commits regressed: {}", log.commit_regressions()))
        .note(format!(
            "partitions not committed to the end: {}",
            behind.len()
        ))
}

/// 11. The DLT cannot be written (missing, auto-create off). Naive: logs
///     and moves on, losing the record. Resilient: stalls without
///     committing past it, and resumes once the DLT exists.
pub async fn dlt_unavailable(b: &testkit::BrokerEnv) -> (Report, Report) {
    const N: u32 = 100;
    const NAME: &str = "11 DLT unavailable";
    let admin = support::admin(b).await;
    let topic = numbered(b, &admin, "sc-dlt", 1, N).await;
    let poison: Behaviour = Arc::new(|n, _| {
        if n == 5 {
            Err(HandlerError::NonRetryable("poison".into()))
        } else {
            Ok(Duration::ZERO)
        }
    });

    // Naive: a failed record is logged and skipped (its offset commits).
    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-dlt-naive");
    let mut c = Consumer::connect(naive_config(b, &group, &[]))
        .await
        .expect("connect");
    c.subscribe(&[&topic]).expect("subscribe");
    let end = Instant::now() + Duration::from_secs(10);
    while sink.distinct() + 1 < N as usize && Instant::now() < end {
        for batch in c.poll(Duration::from_millis(100)).await.unwrap_or_default() {
            for r in &batch.records {
                let _ = sink.handle(&poison, 0, number(r)).await; // errors ignored
            }
        }
    }
    c.close(Duration::from_secs(5)).await;
    let behind = support::uncommitted_partitions(b, &admin, &group, &topic, 1).await;
    let naive = Report::of(NAME, "naive", N, &sink, 0).note(format!(
        "committed to the end anyway: {}",
        behind.is_empty()
    ));

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-dlt");
    let mut cfg = resilient(b, &group, &topic).dead_letter(support::producer_config(b));
    cfg.create_topics = false;
    let run = start(cfg, &sink, &poison);
    let stats = run.stats.clone();
    eventually(Duration::from_secs(30), || {
        stats.dlt_write_failures.load(AtomicOrdering::Relaxed) >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled_at = support::committed_offset(b, &group, &TopicPartition::new(&topic, 0)).await;
    let handled_while_stalled = sink.distinct();
    admin
        .create_topic(NewTopic::new(resilience::dlt::dlt_topic(&topic), 1))
        .await
        .expect("create DLT");
    run.wait_finished(u64::from(N), Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;
    let behind = support::uncommitted_partitions(b, &admin, &group, &topic, 1).await;
    let dead = stats.dead_lettered.load(AtomicOrdering::Relaxed);
    let res = Report::of(NAME, "resilient", N, &sink, dead)
        .note(format!(
            "while the DLT was missing: committed {stalled_at:?}, handled {handled_while_stalled}"
        ))
        .note(format!(
            "partitions not committed to the end after the DLT appeared: {}",
            behind.len()
        ));
    (naive, res)
}

/// Every scenario's name, for `kafka-lab scenario`.
pub const NAMES: [&str; 6] = [
    "rebalance",
    "crash",
    "poison",
    "chaos",
    "ambiguous-commit",
    "dlt-unavailable",
];

/// Run one scenario by name; its reports.
pub async fn run_by_name(b: &testkit::BrokerEnv, name: &str) -> Option<Vec<Report>> {
    Some(match name {
        "rebalance" => Vec::from(<[Report; 2]>::from(rebalance_duplicates(b).await)),
        "crash" => Vec::from(<[Report; 2]>::from(crash_with_auto_commit(b).await)),
        "poison" => Vec::from(<[Report; 2]>::from(poison_and_transient(b).await)),
        "chaos" => vec![connection_chaos(b, 42, Duration::from_secs(10)).await],
        "ambiguous-commit" => vec![ambiguous_commit(b, 42).await],
        "dlt-unavailable" => Vec::from(<[Report; 2]>::from(dlt_unavailable(b).await)),
        _ => return None,
    })
}
