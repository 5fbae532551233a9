//! Offsets and memory against the real broker: completed offsets beyond a
//! stuck record travel in the commit metadata and are not redone after a
//! crash; a DedupStore turns the redelivery after a crash into zero
//! duplicate side effects; in-flight bytes stay within the bound; a
//! partition whose completed-offset map outgrows the metadata limit, or
//! whose queue is full, pauses alone; each commit policy commits when it says.

use crate::common;

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use consumer_core::{Consumer, TopicPartition};
use kafka_wire::ProducerRecord;
use resilience::dedup::{DedupStore, FileDedup, InMemoryDedup};
use resilience::{CommitPolicy, HandlerError, KeySource, Ordering, Processor, ProcessorConfig};

#[tokio::test]
async fn completed_offsets_travel_in_commit_metadata_and_are_not_redone_after_a_crash() {
    const N: u32 = 200;
    let b = testkit::require_broker!();
    let (_admin, topic) = topic_with_records(&b, "metadata", 1, N).await;
    let group = testkit::unique_name("metadata");
    let tp = TopicPartition::new(&topic, 0);
    // Record 0 hangs: the commit point stays at 0 while 1..N complete.
    let first = Arc::new(Sink::default());
    let hang_on_0: Behaviour = Arc::new(|n, _| {
        Ok(if n == 0 {
            Duration::from_secs(3600)
        } else {
            Duration::ZERO
        })
    });
    let cfg = || {
        ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
            .ordering(Ordering::Unordered)
            .concurrency(16)
            .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)))
    };
    let run = start(Processor::new(cfg(), SinkHandler::new(&first, hang_on_0)));
    assert!(
        testkit::eventually(Duration::from_secs(30), || first.applied_numbers().len()
            == N as usize - 1)
        .await
    );
    // Until a commit carries every completed offset (1..N) in its metadata.
    let done_beyond_0 = [(1, i64::from(N))];
    let landed = committed_with(&b, &group, &tp, |c| {
        c.offset == 0 && resilience::commit_metadata::decode(0, &c.metadata) == done_beyond_0
    })
    .await;
    assert!(landed, "no commit carried the completed offsets");
    run.crash().await;

    let checker = Consumer::connect(group_consumer(&b, &group)).await.unwrap();
    let committed = checker
        .committer()
        .committed(std::slice::from_ref(&tp))
        .await
        .unwrap();
    let c = committed.get(&tp).expect("a commit landed");
    assert_eq!(c.offset, 0, "never past the stuck record");
    assert!(
        c.metadata.starts_with("rs1:"),
        "completed offsets in the metadata: {:?}",
        c.metadata
    );
    drop(checker);

    let second = Arc::new(Sink::default());
    let run = start(Processor::new(cfg(), SinkHandler::new(&second, instant())));
    let stats = run.stats.clone();
    run.wait_finished(u64::from(N), Duration::from_secs(30))
        .await;
    run.stop().await;
    assert_eq!(
        second.applied_numbers(),
        [0],
        "only the unfinished record is redone"
    );
    assert_eq!(
        stats.already_done.load(AtomicOrdering::Relaxed),
        u64::from(N) - 1
    );
}

#[tokio::test]
async fn a_dedup_store_makes_the_redelivery_after_a_crash_harmless() {
    const N: u32 = 300;
    let b = testkit::require_broker!();
    let (_admin, topic) = topic_with_records(&b, "dedup", 3, N).await;
    let dir = std::env::temp_dir().join(testkit::unique_name("dedup"));
    std::fs::create_dir_all(&dir).unwrap();

    // Two crashes after handling everything without committing: with and
    // without the store. The control run shows what the store prevents.
    let mut duplicates = Vec::new();
    for with_store in [false, true] {
        let group = testkit::unique_name("dedup");
        let sink = Arc::new(Sink::default());
        let store_path = dir.join(format!("{with_store}.log"));
        let cfg = || {
            let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
                .commit_policy(CommitPolicy::OnRevokeAndShutdown);
            if with_store {
                let store: Arc<dyn DedupStore> =
                    Arc::new(FileDedup::open(&store_path, 10_000).unwrap());
                cfg.idempotency(KeySource::Position, store)
            } else {
                cfg
            }
        };
        let run = start(Processor::new(cfg(), SinkHandler::new(&sink, instant())));
        run.wait_finished(u64::from(N), Duration::from_secs(30))
            .await;
        run.crash().await; // nothing committed: everything comes again
        let run = start(Processor::new(cfg(), SinkHandler::new(&sink, instant())));
        let stats = run.stats.clone();
        run.wait_finished(u64::from(N), Duration::from_secs(60))
            .await;
        run.stop().await;
        let (distinct, dups) = sink.distinct_and_duplicates();
        assert_eq!(
            distinct.len() as u32,
            N,
            "lost records (store: {with_store})"
        );
        if with_store {
            assert_eq!(
                stats.deduplicated.load(AtomicOrdering::Relaxed),
                u64::from(N)
            );
        }
        duplicates.push(dups);
    }
    assert_eq!(
        duplicates[0], N as usize,
        "control: without a store every record repeats"
    );
    assert_eq!(duplicates[1], 0, "with the store: no side effect twice");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The runtime takes up to 256 records of a lane per unit of work: two
/// copies of an event in one fetch must still apply once (the unit stops
/// at a key it already holds, so the second copy sees the first marked).
#[tokio::test]
async fn copies_of_an_event_side_by_side_apply_once() {
    const EVENTS: u32 = 300;
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "adjacent-dups", 1).await;
    let records = (0..EVENTS).flat_map(|i| {
        let rec = ProducerRecord::new(&topic)
            .value(i.to_string())
            .header("event-id", format!("e-{i}"));
        [rec.clone(), rec]
    });
    testkit::produce(&admin, &b, records).await;
    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("adjacent-dups");
    let store: Arc<dyn DedupStore> = Arc::new(InMemoryDedup::new(10_000));
    let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .idempotency(KeySource::Header("event-id".into()), store);
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, instant())));
    let finished = run
        .wait_finished(u64::from(EVENTS) * 2, Duration::from_secs(60))
        .await;
    let deduplicated = run.stats.deduplicated.load(AtomicOrdering::Relaxed);
    run.stop().await;
    assert_eq!(finished, u64::from(EVENTS) * 2);
    let (distinct, dups) = sink.distinct_and_duplicates();
    assert_eq!((distinct.len(), dups), (EVENTS as usize, 0));
    assert_eq!(deduplicated, u64::from(EVENTS), "each second copy skipped");
}

#[tokio::test]
async fn in_flight_bytes_stay_within_the_bound_under_a_burst() {
    const N: u32 = 1_500;
    const VALUE: usize = 10 * 1024;
    const BOUND: usize = 1024 * 1024;
    const MAX_POLL: usize = 50;
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "burst", 2).await;
    let p = kafka_wire::Producer::with_client(admin.clone(), testkit::producer_config(&b));
    for i in 0..N {
        let mut value = format!("{i}:").into_bytes();
        value.resize(VALUE, b'x');
        p.send(
            ProducerRecord::new(&topic)
                .key(format!("k{i}"))
                .value(value),
        )
        .await
        .unwrap();
    }
    p.flush().await.expect("every record delivered");

    let group = testkit::unique_name("burst");
    let max_poll = MAX_POLL.to_string();
    let consumer = group_consumer_with(&b, &group, &[("max.poll.records", &max_poll)]);
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let handler = BurstHandler(seen.clone());
    let cfg = ProcessorConfig::new(consumer, &[&topic]).max_in_flight(100_000, BOUND);
    let run = start(Processor::new(cfg, handler));
    let stats = run.stats.clone();
    run.wait_finished(u64::from(N), Duration::from_secs(60))
        .await;
    run.stop().await;
    assert_eq!(seen.lock().unwrap().len() as u32, N, "every record handled");
    let peak = stats.peak_in_flight_bytes.load(AtomicOrdering::Relaxed);
    // The bound holds to within one poll of records.
    let slack = MAX_POLL * (VALUE + 256);
    assert!(
        peak <= BOUND + slack,
        "peak {peak} bytes in flight > bound {BOUND} + one poll {slack}"
    );
    assert!(
        stats.pauses.load(AtomicOrdering::Relaxed) > 0,
        "the burst never paused fetching"
    );
    println!(
        "peak in flight: {peak} bytes (bound {BOUND}); total data {} bytes",
        N as usize * VALUE
    );
}

/// Slow enough (2 ms a record, one at a time per partition) for a backlog.
struct BurstHandler(Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl resilience::Handler for BurstHandler {
    async fn handle(
        &self,
        _tp: &TopicPartition,
        r: &kafka_wire::records::Record,
    ) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let v = r.value.as_deref().unwrap_or_default();
        let id = String::from_utf8_lossy(v.split(|b| *b == b':').next().unwrap_or_default())
            .into_owned();
        self.0.lock().unwrap().insert(id);
        Ok(())
    }
}

/// Records below 1000 never finish (a hung dependency); the rest are instant.
fn hang_below_1000() -> Behaviour {
    Arc::new(|n, _| {
        Ok(if n < 1000 {
            Duration::from_secs(3600)
        } else {
            Duration::ZERO
        })
    })
}

/// Is `tp` paused after the last pause/resume the log shows?
fn paused(log: &resilience::observe::EventLog, tp: &TopicPartition) -> bool {
    use resilience::observe::Event;
    log.events()
        .iter()
        .filter_map(|e| match e {
            Event::Paused(tps) if tps.contains(tp) => Some(true),
            Event::Resumed(tps) if tps.contains(tp) => Some(false),
            _ => None,
        })
        .next_back()
        .unwrap_or(false)
}

#[tokio::test]
async fn a_full_partition_queue_pauses_that_partition_only() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "queue-bound", 2).await;
    let records = (0..200u32).flat_map(|i| {
        [
            ProducerRecord::new(&topic)
                .partition(0)
                .value(i.to_string()),
            ProducerRecord::new(&topic)
                .partition(1)
                .value((1000 + i).to_string()),
        ]
    });
    testkit::produce(&admin, &b, records).await;
    let group = testkit::unique_name("queue-bound");
    let log = Arc::new(resilience::observe::EventLog::default());
    let consumer = group_consumer_with(&b, &group, &[("max.poll.records", "20")]);
    let mut cfg = ProcessorConfig::new(consumer, &[&topic])
        .observer(log.clone())
        .drain_timeout(Duration::from_secs(1));
    cfg.max_queued_per_partition = 20;
    let sink = Arc::new(Sink::default());
    let run = start(Processor::new(
        cfg,
        SinkHandler::new(&sink, hang_below_1000()),
    ));
    let stats = run.stats.clone();
    let other_done = testkit::eventually(Duration::from_secs(30), || sink.distinct() == 200).await;
    testkit::eventually(Duration::from_secs(10), || {
        paused(&log, &TopicPartition::new(&topic, 0))
    })
    .await;
    // The healthy partition may pause for a moment when one fetch fills its
    // queue; once its backlog is handled it must be running again.
    testkit::eventually(Duration::from_secs(10), || {
        !paused(&log, &TopicPartition::new(&topic, 1))
    })
    .await;
    run.stop().await;
    assert!(other_done, "the healthy partition did not finish");
    assert!(
        paused(&log, &TopicPartition::new(&topic, 0)),
        "the stuck partition never paused"
    );
    assert!(
        !paused(&log, &TopicPartition::new(&topic, 1)),
        "the healthy partition stayed paused after its backlog was handled"
    );
    let peak = stats.peak_in_flight_records.load(AtomicOrdering::Relaxed);
    assert!(
        peak < 200 + 200,
        "the stuck partition's whole backlog was fetched ({peak})"
    );
}

#[tokio::test]
async fn an_outgrown_completed_offset_map_is_cut_to_the_limit_and_pauses_its_partition() {
    const N: u32 = 200;
    const LIMIT: usize = 24;
    let b = testkit::require_broker!();
    let (_admin, topic) = topic_with_records(&b, "metadata-limit", 1, N).await;
    let group = testkit::unique_name("metadata-limit");
    let tp = TopicPartition::new(&topic, 0);
    let log = Arc::new(resilience::observe::EventLog::default());
    let mut cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .ordering(Ordering::Unordered)
        .concurrency(64)
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)))
        .observer(log.clone());
    cfg.metadata_limit = LIMIT;
    // Every 10th record hangs: 20 separate runs of done offsets.
    let every_tenth: Behaviour = Arc::new(|n, _| {
        Ok(if n % 10 == 0 {
            Duration::from_secs(3600)
        } else {
            Duration::ZERO
        })
    });
    let sink = Arc::new(Sink::default());
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, every_tenth)));
    assert!(testkit::eventually(Duration::from_secs(30), || sink.distinct() == 180).await);
    // Until the cut map is committed and the partition paused for it.
    committed_with(&b, &group, &tp, |c| {
        !resilience::commit_metadata::decode(0, &c.metadata).is_empty()
    })
    .await;
    testkit::eventually(Duration::from_secs(10), || paused(&log, &tp)).await;
    run.crash().await;
    let checker = Consumer::connect(group_consumer(&b, &group)).await.unwrap();
    let c = checker
        .committer()
        .committed(std::slice::from_ref(&tp))
        .await
        .unwrap()
        .remove(&tp)
        .expect("a commit landed");
    assert_eq!(c.offset, 0);
    assert!(
        c.metadata.len() <= LIMIT,
        "metadata {} bytes > {LIMIT}",
        c.metadata.len()
    );
    let kept = resilience::commit_metadata::decode(0, &c.metadata);
    assert!(!kept.is_empty(), "the lowest runs that fit are kept");
    assert_eq!(kept[0], (1, 10), "lowest first");
    assert!(paused(&log, &tp), "the partition did not pause");
}

/// Issue 29, case 4: the runtime's metadata limit (here 64 KiB) above the
/// broker's `offset.metadata.max.bytes` (4096 by default), and a map of
/// completed offsets that outgrows the broker's (2,000 gaps): the first
/// refusal teaches the runtime the broker's limit, the offset commits with
/// metadata that fits (not 19 refusals and no commit), and after a crash
/// the finished work that fit is not redone.
#[tokio::test]
async fn commit_metadata_refused_as_too_large_commits_what_fits_and_learns_the_limit() {
    const N: u32 = 4_000;
    let b = testkit::require_broker!();
    let (_admin, topic) = topic_with_records(&b, "metadata-refused", 1, N).await;
    let group = testkit::unique_name("metadata-refused");
    let tp = TopicPartition::new(&topic, 0);
    let cfg = || {
        let mut cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
            .ordering(Ordering::Unordered)
            .concurrency(16)
            .max_in_flight(2 * N as usize, 64 << 20)
            .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)))
            // A failed record waits an hour for its retry, without a worker.
            .backoff(resilience::retry::BackoffPolicy {
                initial: Duration::from_secs(3600),
                max_delay: Duration::from_secs(3600),
                ..Default::default()
            });
        cfg.metadata_limit = 64 << 10;
        cfg.max_queued_per_partition = 2 * N as usize;
        cfg
    };
    let even_ones_fail: Behaviour = Arc::new(|n, _| {
        if n % 2 == 0 {
            Err(resilience::HandlerError::retryable("later"))
        } else {
            Ok(Duration::ZERO)
        }
    });
    let first = Arc::new(Sink::default());
    let run = start(Processor::new(
        cfg(),
        SinkHandler::new(&first, even_ones_fail),
    ));
    let stats = run.stats.clone();
    // (The partition pauses once its map fills the learned limit.)
    assert!(testkit::eventually(Duration::from_secs(60), || first.distinct() >= 1_000).await);
    let landed = committed_with(&b, &group, &tp, |c| {
        c.offset == 0 && !resilience::commit_metadata::decode(0, &c.metadata).is_empty()
    })
    .await;
    assert!(landed, "no commit with metadata landed");
    // More commits go by (every 100 ms): none of them is refused any more.
    let refused = || stats.commit_failures.load(AtomicOrdering::Relaxed);
    assert!(
        testkit::stays_for(Duration::from_millis(500), || refused() <= 2).await,
        "{} commits refused",
        refused()
    );
    run.crash().await;

    let checker = Consumer::connect(group_consumer(&b, &group)).await.unwrap();
    let c = checker
        .committer()
        .committed(std::slice::from_ref(&tp))
        .await
        .unwrap()
        .remove(&tp)
        .expect("a commit landed");
    drop(checker);
    assert!(c.metadata.len() <= 4096, "{} bytes", c.metadata.len());
    let kept: u64 = resilience::commit_metadata::decode(0, &c.metadata)
        .iter()
        .map(|(s, e)| (e - s) as u64)
        .sum();
    assert!(kept > 100, "the runs that fit are kept: {kept}");

    let second = Arc::new(Sink::default());
    let run = start(Processor::new(cfg(), SinkHandler::new(&second, instant())));
    let stats = run.stats.clone();
    run.wait_finished(u64::from(N), Duration::from_secs(60))
        .await;
    run.stop().await;
    assert_eq!(stats.already_done.load(AtomicOrdering::Relaxed), kept);
    assert_eq!(
        second.distinct() as u64,
        u64::from(N) - kept,
        "only unfinished records redone"
    );
}

#[tokio::test]
async fn each_commit_policy_commits_when_it_says() {
    const N: u32 = 50;
    let b = testkit::require_broker!();
    let (_admin, topic) = topic_with_records(&b, "commit-policy", 1, N).await;
    let tp = TopicPartition::new(&topic, 0);
    for policy in [
        CommitPolicy::AfterEachCompletion,
        CommitPolicy::OnRevokeAndShutdown,
    ] {
        let group = testkit::unique_name("commit-policy");
        let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic]).commit_policy(policy);
        let sink = Arc::new(Sink::default());
        let run = start(Processor::new(cfg, SinkHandler::new(&sink, instant())));
        run.wait_finished(u64::from(N), Duration::from_secs(30))
            .await;
        match policy {
            // Until the last completion's commit lands.
            CommitPolicy::AfterEachCompletion => {
                testkit::eventually_async(Duration::from_secs(10), || async {
                    committed_offset(&b, &group, &tp).await == Some(i64::from(N))
                })
                .await;
            }
            // The point: a while in which no commit may land.
            _ => tokio::time::sleep(Duration::from_millis(1_500)).await,
        }
        let while_running = committed_offset(&b, &group, &tp).await;
        run.stop().await;
        let after_stop = committed_offset(&b, &group, &tp).await;
        match policy {
            CommitPolicy::AfterEachCompletion => {
                assert_eq!(
                    while_running,
                    Some(i64::from(N)),
                    "committed as records completed"
                )
            }
            _ => assert_eq!(while_running, None, "nothing committed before shutdown"),
        }
        assert_eq!(
            after_stop,
            Some(i64::from(N)),
            "{policy:?}: committed on shutdown"
        );
    }
}

/// Dropping `run`'s future (a crash, or a `select!` that picked another
/// branch) stops everything the runtime spawned: no handler call starts and
/// no commit lands afterwards. A leaked commit loop would keep committing
/// for a member that is gone.
#[tokio::test]
async fn a_dropped_processor_stops_handling_and_committing_at_once() {
    const N: u32 = 2_000;
    let b = testkit::require_broker!();
    let (_admin, topic) = topic_with_records(&b, "dropped", 2, N).await;
    let group = testkit::unique_name("dropped");
    let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(50)));
    let sink = Arc::new(Sink::default());
    let run = start(Processor::new(
        cfg,
        SinkHandler::new(&sink, taking(Duration::from_millis(5))),
    ));
    testkit::eventually(Duration::from_secs(30), || sink.distinct() >= 200).await;
    run.crash().await;
    let applied_at_crash = sink.applied().len();
    let committed_at_crash = [0, 1].map(|p| TopicPartition::new(&topic, p));
    let before = committed_offsets(&b, &group, &committed_at_crash).await;
    // For ten commit intervals: units already inside the handler when the
    // task died may not finish; none may start or complete after it.
    assert!(
        testkit::stays_for(Duration::from_millis(500), || sink.applied().len()
            == applied_at_crash)
        .await,
        "side effects after the crash"
    );
    assert_eq!(
        committed_offsets(&b, &group, &committed_at_crash).await,
        before,
        "commits landed after the crash"
    );
}

async fn committed_offsets(
    b: &testkit::BrokerEnv,
    group: &str,
    tps: &[TopicPartition],
) -> Vec<Option<i64>> {
    let mut out = Vec::new();
    for tp in tps {
        out.push(committed_offset(b, group, tp).await);
    }
    out
}

/// Wait (up to 10 s) until `group`'s commit for `tp` satisfies `ok`;
/// returns whether it did.
async fn committed_with(
    b: &testkit::BrokerEnv,
    group: &str,
    tp: &TopicPartition,
    ok: impl Fn(&consumer_core::CommittedOffset) -> bool,
) -> bool {
    let checker = Consumer::connect(group_consumer(b, group)).await.unwrap();
    testkit::eventually_async(Duration::from_secs(10), || async {
        checker
            .committer()
            .committed(std::slice::from_ref(tp))
            .await
            .ok()
            .and_then(|mut c| c.remove(tp))
            .is_some_and(|c| ok(&c))
    })
    .await
}
