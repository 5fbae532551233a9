//! Load: a burst against a slow downstream (4), members stopping, dying
//! and joining while records flow (5), and scaling out under lag (6).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_wire::ProducerRecord;
use resilience::dedup::InMemoryDedup;
use resilience::observe::{Event, EventLog};
use resilience::{KeySource, Processor};

use super::*;
use crate::support::{self, rate_limited, taking, Sink};

/// 4. A burst of 100,000 records (≈100-byte values) against a downstream
///    that takes 25,000 records/s. Naive: poll hands everything to an
///    unbounded queue, so memory holds the whole burst. Resilient: in-flight
///    bytes stay within the bound (to within one poll), partitions pause and
///    resume, nobody leaves the group, and the lag drains to 0.
pub async fn burst_with_slow_downstream(b: &testkit::BrokerEnv) -> (Report, Report) {
    const N: u32 = 100_000;
    const RATE: u32 = 25_000;
    const BOUND: usize = 1024 * 1024;
    const NAME: &str = "4 burst vs slow downstream";
    let admin = testkit::client(b).await;
    let topic = testkit::create_topic(&admin, "sc-burst", 4).await;
    let pad = "x".repeat(94);
    testkit::produce(
        &admin,
        b,
        (0..N).map(|i| {
            ProducerRecord::new(&topic)
                .key(format!("k{i}"))
                .value(format!("{i} {pad}"))
        }),
    )
    .await;

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-burst-naive");
    let naive = NaiveHandoff::start(
        naive_config(b, &group, &[]),
        &topic,
        &sink,
        &rate_limited(RATE),
    );
    testkit::eventually(Duration::from_secs(60), || sink.distinct() >= N as usize).await;
    let peak = naive.peak();
    naive.stop().await;
    let mut naive = Report::of(NAME, "naive", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await
        .verdict(format!(
            "poll hands everything to an unbounded queue: {:.1} MB of records sat in memory \
             at once, and memory grows with the size of the burst",
            peak as f64 / 1e6
        ));
    naive.peak_in_flight_bytes = Some(peak);

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-burst");
    let log = Arc::new(EventLog::default());
    let cfg = resilient(b, &group, &topic)
        .max_in_flight(usize::MAX, BOUND)
        .observer(log.clone());
    let run = start(cfg, &sink, &rate_limited(RATE));
    let stats = run.stats.clone();
    let started = Instant::now();
    run.wait_finished(u64::from(N), Duration::from_secs(60))
        .await;
    let took = started.elapsed();
    support::committed_to_end(b, &group, &topic, Duration::from_secs(10)).await;
    run.stop().await;
    let lagging = support::uncommitted_partitions(b, &admin, &group, &topic, 4).await;
    let resumes = log
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Resumed(_)))
        .count();
    let pauses = stats.pauses.load(AtomicOrdering::Relaxed);
    let peak = stats.peak_in_flight_bytes.load(AtomicOrdering::Relaxed) as u64;
    let mut res = Report::of(NAME, "resilient", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await
        .fact("bound bytes", BOUND)
        .fact("pauses", pauses)
        .fact("resumes", resumes)
        .fact("partitions with lag after the run", lagging.len())
        .millis("drained in ms", took)
        .verdict(format!(
            "memory stayed at the bound: at most {:.2} MB in flight for a {:.2} MB bound; \
             fetching paused {pauses} times instead of buffering; drained in {:.1} s, \
             {} partitions left with lag",
            peak as f64 / 1e6,
            BOUND as f64 / 1e6,
            took.as_secs_f64(),
            lagging.len()
        ));
    res.peak_in_flight_bytes = Some(peak);
    res.rebalances = Some(log.assignments() as u64);
    (naive, res)
}

/// A group member of scenario 5, naive or resilient.
enum Member {
    Naive(NaiveHandoff),
    Resilient(Running, Arc<EventLog>),
}

impl Member {
    async fn stop(self) {
        match self {
            Member::Naive(m) => m.stop().await,
            Member::Resilient(r, _) => r.stop().await,
        }
    }

    async fn crash(self) -> Option<Arc<EventLog>> {
        match self {
            Member::Naive(m) => {
                m.crash().await;
                None
            }
            Member::Resilient(r, log) => {
                r.crash().await;
                Some(log)
            }
        }
    }
}

/// What one run of scenario 5 saw.
struct Churn {
    produced: u32,
    /// The crashed member's events (resilient runs).
    crashed: Option<Arc<EventLog>>,
    /// Every member's events.
    logs: Vec<Arc<EventLog>>,
}

/// Three members share a group while a producer writes 2,000 records/s
/// for 8 s: one stops gracefully at 2.5 s, one is killed at 4.5 s, one
/// joins at 5 s. Then the survivors drain.
async fn churn(
    b: &testkit::BrokerEnv,
    group: &str,
    topic: &str,
    sink: &Arc<Sink>,
    lossy: bool,
    mut member: impl FnMut() -> Member,
) -> Churn {
    let stop_producing = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn(support::produce_steadily(
        testkit::producer_config(b),
        topic.to_string(),
        0,
        2_000,
        stop_producing.clone(),
    ));
    let mut logs = Vec::new();
    let mut keep = |m: Member| {
        if let Member::Resilient(_, log) = &m {
            logs.push(log.clone());
        }
        m
    };
    let (a, killed, c) = (keep(member()), keep(member()), keep(member()));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    a.stop().await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let crashed = killed.crash().await;
    let crashed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = keep(member());
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    stop_producing.store(true, AtomicOrdering::SeqCst);
    let produced = producer.await.expect("producer task");
    // The killed member's partitions move after its session times out (6 s).
    // A `lossy` run never handles what it lost: it is done when the handled
    // count has stood still for 3 s after that (it waited the whole 40 s
    // before, the longest wait of the test suite).
    let mut last_change = (sink.distinct(), Instant::now());
    testkit::eventually(Duration::from_secs(40), || {
        let handled = sink.distinct();
        if handled >= produced as usize {
            return true;
        }
        if handled != last_change.0 {
            last_change = (handled, Instant::now());
        }
        lossy
            && crashed_at.elapsed() > Duration::from_secs(8)
            && last_change.1.elapsed() > Duration::from_secs(3)
    })
    .await;
    support::committed_to_end(b, group, topic, Duration::from_secs(10)).await;
    c.stop().await;
    d.stop().await;
    Churn {
        produced,
        crashed,
        logs,
    }
}

/// 5. Restart mid-processing and rebalance under load. Naive (hand-off,
///    auto-commit): what the stopped and the killed member had queued is
///    lost. Resilient: 0 lost; without a DedupStore, redeliveries only from
///    the killed member's uncommitted window; with one, 0 duplicates.
pub async fn restart_under_load(b: &testkit::BrokerEnv) -> [Report; 3] {
    // The three runs share nothing (own topic, group and sink each), so
    // they run at once: the test waits on the broker, not the CPU, and
    // three in a row made it the longest test of the suite (over 60 s).
    let (naive, resilient, deduped) = tokio::join!(
        restart_under_load_naive(b),
        restart_under_load_resilient(b, false),
        restart_under_load_resilient(b, true),
    );
    [naive, resilient, deduped]
}

const RESTART_UNDER_LOAD: &str = "5 stop, kill, join";

async fn restart_under_load_naive(b: &testkit::BrokerEnv) -> Report {
    let admin = testkit::client(b).await;
    let work = taking(Duration::from_millis(1));
    let topic = testkit::create_topic(&admin, "sc-churn-naive", 4).await;
    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-churn-naive");
    let run = churn(b, &group, &topic, &sink, true, || {
        Member::Naive(NaiveHandoff::start(
            naive_config(b, &group, &[]),
            &topic,
            &sink,
            &work,
        ))
    })
    .await;
    let naive = Report::of(RESTART_UNDER_LOAD, "naive", run.produced, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await;
    let (lost, unhandled) = (naive.lost, naive.unhandled);
    naive.verdict(format!(
        "the stopped and the killed members' queues were dropped: {lost} records that \
         auto-commit had already committed were never processed{}",
        if unhandled > 0 {
            format!("; {unhandled} more not handled by the end")
        } else {
            String::new()
        }
    ))
}

async fn restart_under_load_resilient(b: &testkit::BrokerEnv, with_store: bool) -> Report {
    let admin = testkit::client(b).await;
    let work = taking(Duration::from_millis(1));
    let topic = testkit::create_topic(&admin, "sc-churn", 4).await;
    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-churn");
    // One store shared by every member, as a database would be.
    let store = Arc::new(InMemoryDedup::new(1_000_000));
    let run = churn(b, &group, &topic, &sink, false, || {
        let log = Arc::new(EventLog::default());
        let mut cfg = resilient(b, &group, &topic).observer(log.clone());
        if with_store {
            cfg = cfg.idempotency(KeySource::RecordKey, store.clone());
        }
        Member::Resilient(
            support::start(Processor::new(cfg, SinkHandler::new(&sink, work.clone()))),
            log,
        )
    })
    .await;
    let mode = if with_store {
        "resilient + DedupStore"
    } else {
        "resilient"
    };
    let outside = run
        .crashed
        .as_ref()
        .map_or(0, |log| outside_uncommitted_window(log, &topic, &sink));
    let late: usize = run
        .logs
        .iter()
        .map(|l| l.commits_after_revoke().len())
        .sum();
    let mut r = Report::of(RESTART_UNDER_LOAD, mode, run.produced, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await
        .fact(
            "redeliveries outside the killed member's uncommitted window",
            outside,
        )
        .fact("commits after revoke", late);
    let dups = r.duplicates;
    r = r.verdict(if with_store {
        format!(
            "nothing lost; the shared DedupStore skipped every redelivered record: \
             {dups} duplicate side effects"
        )
    } else {
        format!(
            "nothing lost: stops drain and commit, the killed member's records are \
             redelivered; {dups} duplicates, {outside} of them outside the killed member's \
             uncommitted window; {late} commits after a revoke"
        )
    });
    r.rebalances = Some(run.logs.iter().map(|l| l.assignments() as u64).sum());
    r
}

/// Duplicated records that the killed member (events in `log`) cannot
/// explain: on a partition it did not own when it died, or below the
/// offset it had committed there.
pub fn outside_uncommitted_window(log: &EventLog, topic: &str, sink: &Sink) -> usize {
    let mut owned: BTreeSet<i32> = BTreeSet::new();
    let mut committed: HashMap<i32, i64> = HashMap::new();
    for e in log.events() {
        match e {
            Event::Assigned(tps) => owned.extend(tps.iter().map(|tp| tp.partition)),
            Event::Revoked(tps) | Event::Lost(tps) => {
                for tp in tps {
                    owned.remove(&tp.partition);
                }
            }
            Event::Committed(offsets) => {
                for (tp, o, _) in offsets {
                    if tp.topic == topic {
                        committed.insert(tp.partition, o);
                    }
                }
            }
            _ => {}
        }
    }
    sink.duplicated()
        .into_iter()
        .filter(|(p, n)| {
            let at = sink.position_of(*n).map_or(-1, |(_, o)| o);
            !owned.contains(p) || at < committed.get(p).copied().unwrap_or(0)
        })
        .count()
}

/// One member for 3 s, then two more, until `sink` holds `n` records (or
/// 35 s): (records handled alone, time to drain after the join if it
/// drained, the members).
async fn one_then_three<M>(
    sink: &Sink,
    n: u32,
    mut member: impl FnMut() -> M,
) -> (usize, Option<Duration>, Vec<M>) {
    let mut members = vec![member()];
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (alone, joined) = (sink.distinct(), Instant::now());
    members.extend([member(), member()]);
    let drained =
        testkit::eventually(Duration::from_secs(35), || sink.distinct() >= n as usize).await;
    (alone, drained.then(|| joined.elapsed()), members)
}

/// The facts of one scale-out run.
fn scaled(r: Report, alone: usize, drained: Option<Duration>) -> Report {
    let r = r.fact("handled alone in 3 s", alone);
    match drained {
        Some(d) => r.millis("drained after two joined, ms", d).verdict(format!(
            "one member handled {alone} records in 3 s; the lag drained {:.1} s after \
                 two more joined",
            d.as_secs_f64()
        )),
        None => r.verdict(format!(
            "one member handled {alone} records in 3 s; NOT drained 35 s after two more joined"
        )),
    }
}

/// 6. Lag builds with one member (2 workers, 2 ms a record); two more
///    join. Reports how long the lag took to drain after they joined.
pub async fn scale_out_under_lag(b: &testkit::BrokerEnv) -> (Report, Report) {
    const N: u32 = 12_000;
    const NAME: &str = "6 scale out under lag";
    let admin = testkit::client(b).await;
    let work = taking(Duration::from_millis(2));

    let topic = numbered(b, &admin, "sc-scale-naive", 6, N).await;
    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-scale-naive");
    let until = Instant::now() + Duration::from_secs(40);
    let (alone, drained, members) = one_then_three(&sink, N, || {
        tokio::spawn(naive_inline_loop(
            naive_config(b, &group, &[]),
            topic.clone(),
            sink.clone(),
            work.clone(),
            until,
        ))
    })
    .await;
    let mut rebalances = 0;
    for m in members {
        rebalances += m.await.unwrap_or(0);
    }
    let naive = Report::of(NAME, "naive", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await;
    let mut naive = scaled(naive, alone, drained);
    naive.rebalances = Some(rebalances);

    let topic = numbered(b, &admin, "sc-scale", 6, N).await;
    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-scale");
    let mut logs: Vec<Arc<EventLog>> = Vec::new();
    let (alone, drained, members) = one_then_three(&sink, N, || {
        let log = Arc::new(EventLog::default());
        logs.push(log.clone());
        let cfg = resilient(b, &group, &topic).concurrency(2).observer(log);
        start(cfg, &sink, &work)
    })
    .await;
    support::committed_to_end(b, &group, &topic, Duration::from_secs(10)).await;
    for m in members {
        m.stop().await;
    }
    let lagging = support::uncommitted_partitions(b, &admin, &group, &topic, 6).await;
    let late: usize = logs.iter().map(|l| l.commits_after_revoke().len()).sum();
    let res = Report::of(NAME, "resilient", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await;
    let mut res = scaled(res, alone, drained)
        .fact("commits after revoke", late)
        .fact("partitions with lag after the run", lagging.len());
    res.rebalances = Some(logs.iter().map(|l| l.assignments() as u64).sum());
    (naive, res)
}
